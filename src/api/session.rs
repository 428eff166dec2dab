//! `/v1/session/*`: sessions for locks and leader election, in Consul's
//! shapes. TTL sessions must be renewed; the leader destroys those that
//! are not (after twice their TTL, as Consul).

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::context::{read, write_cmd, Api};
use super::error::{bad, unexpected, ApiError};
use crate::env::Env;
use crate::format::parse_duration;
use crate::server::{Answer, ClientRequest, Query};
use crate::state::{Behavior, Command, Session};

/// Shortest and longest session TTL (Consul's bounds).
const TTL_MIN: Duration = Duration::from_secs(10);
const TTL_MAX: Duration = Duration::from_secs(24 * 3600);

/// Consul's default lock delay.
const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

/// A session in Consul's JSON shape.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ApiSession {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    node: String,
    /// Nanoseconds, as Consul encodes durations.
    lock_delay: u64,
    behavior: Behavior,
    #[serde(rename = "TTL")]
    ttl: String,
    node_checks: Vec<String>,
    service_checks: Vec<String>,
    create_index: u64,
    modify_index: u64,
}

impl From<Session> for ApiSession {
    fn from(s: Session) -> Self {
        ApiSession {
            id: s.id,
            name: s.name,
            node: s.node,
            lock_delay: s.lock_delay_ms.saturating_mul(1_000_000),
            behavior: s.behavior,
            ttl: s.ttl,
            node_checks: s.checks,
            service_checks: Vec::new(),
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// `PUT /v1/session/create`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CreateBody {
    name: String,
    node: String,
    /// The node's checks the session depends on (old name: `Checks`).
    #[serde(alias = "Checks")]
    node_checks: Option<Vec<String>>,
    /// `"15s"`, or nanoseconds as a number.
    lock_delay: Option<serde_json::Value>,
    behavior: Option<Behavior>,
    #[serde(rename = "TTL")]
    ttl: String,
}

fn lock_delay(v: Option<&serde_json::Value>) -> Result<Duration, ApiError> {
    match v {
        None => Ok(DEFAULT_LOCK_DELAY),
        Some(serde_json::Value::String(s)) => {
            parse_duration(s).map_err(|e| bad(format!("Invalid LockDelay: {e}")))
        }
        // A bare number is nanoseconds, or seconds below 1000 (Consul's
        // `lockDelayMinThreshold` rule).
        Some(serde_json::Value::Number(n)) => {
            let n = n.as_u64().ok_or_else(|| bad("Invalid LockDelay"))?;
            Ok(if n < 1000 {
                Duration::from_secs(n)
            } else {
                Duration::from_nanos(n)
            })
        }
        Some(_) => Err(bad("Invalid LockDelay: a duration like \"15s\"")),
    }
}

/// `PUT /v1/session/create`: `{"ID": ...}`.
pub async fn create<E: Env>(s: Api<E>, body: Bytes) -> Result<Json<serde_json::Value>, ApiError> {
    let session = session_of(&body, &s.info.node_name)?;
    let session = Session {
        id: s.new_id(),
        ..session
    };
    let id = session.id.clone();
    if !write_cmd(&s, Command::SessionCreate(session)).await? {
        return Err(super::error::internal(
            "the servers did not create the session",
        ));
    }
    Ok(Json(serde_json::json!({ "ID": id })))
}

/// The session a create body asks for (without its ID), checked; on
/// `node` (this agent's) unless it names another. Apart from the handler
/// so the fuzz target checks the same.
pub(super) fn session_of(body: &[u8], node: &str) -> Result<Session, ApiError> {
    let b: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        super::decode::body(body)?
    };
    if !b.ttl.is_empty() {
        let ttl =
            parse_duration(&b.ttl).map_err(|e| bad(format!("Request decode failed: TTL: {e}")))?;
        if !ttl.is_zero() && !(TTL_MIN..=TTL_MAX).contains(&ttl) {
            return Err(bad(format!(
                "Invalid Session TTL '{}', must be between [10s=24h0m0s]",
                b.ttl
            )));
        }
    }
    let delay = lock_delay(b.lock_delay.as_ref())?;
    Ok(Session {
        name: b.name,
        node: if b.node.is_empty() {
            node.to_string()
        } else {
            b.node
        },
        checks: b
            .node_checks
            .unwrap_or_else(|| vec![crate::server::SERF_CHECK.to_string()]),
        lock_delay_ms: delay.as_millis() as u64,
        behavior: b.behavior.unwrap_or_default(),
        ttl: b.ttl,
        ..Session::default()
    })
}

/// `PUT /v1/session/destroy/<id>`: `true` (also for an unknown session,
/// as Consul).
pub async fn destroy<E: Env>(s: Api<E>, Path(id): Path<String>) -> Result<Json<bool>, ApiError> {
    // Destroying a session that is gone already is no error, as in Consul.
    write_cmd(&s, Command::SessionDestroy { id }).await?;
    Ok(Json(true))
}

async fn list<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    query: Query,
) -> Result<Response, ApiError> {
    match read(s, params, query).await? {
        (h, Answer::Sessions(v)) => {
            let out: Vec<ApiSession> = v.into_iter().map(ApiSession::from).collect();
            Ok((h, Json(out)).into_response())
        }
        (_, other) => Err(unexpected(other)),
    }
}

/// `GET /v1/session/info/<id>`: a list of one, or empty.
pub async fn info<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(&s, &params, Query::Session(id)).await
}

/// `GET /v1/session/node/<node>`.
pub async fn node<E: Env>(
    s: Api<E>,
    Path(node): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(&s, &params, Query::NodeSessions(node)).await
}

/// `GET /v1/session/list`.
pub async fn all<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    list(&s, &params, Query::Sessions).await
}

/// `PUT /v1/session/renew/<id>`: the session, or 404 when it is gone.
pub async fn renew<E: Env>(s: Api<E>, Path(id): Path<String>) -> Result<Response, ApiError> {
    let reply = super::context::call(
        &s,
        ClientRequest::SessionRenew {
            id: id.clone(),
            hops: 0,
        },
    )
    .await;
    match reply.answer {
        Ok(Answer::Sessions(v)) if v.is_empty() => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("Session id '{id}' not found"),
        )),
        Ok(Answer::Sessions(v)) => {
            let out: Vec<ApiSession> = v.into_iter().map(ApiSession::from).collect();
            Ok(Json(out).into_response())
        }
        Ok(other) => Err(unexpected(other)),
        Err(e) => Err(super::error::refusal(e)),
    }
}

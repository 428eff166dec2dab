//! `/v1/kv/<key>` and `/v1/status/*`: the key/value store and the Raft
//! group's status, answered by the servers through the agent.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;

use super::{ApiError, ApiState};
use crate::env::Env;
use crate::format::parse_duration;
use crate::server::{Answer, ClientReply, ClientRequest, Consistency, Query, Read};
use crate::state::{Command, KvEntry, KvOp};

/// Largest value accepted (Consul's `kv_max_value_size` default).
pub const MAX_VALUE: usize = 512 * 1024;

/// A blocking query's wait when none is given, and the most allowed
/// (Consul's defaults).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// A KV entry in Consul's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiKv {
    /// Times a session acquired it.
    pub lock_index: u64,
    /// The key.
    pub key: String,
    /// Opaque flags.
    pub flags: u64,
    /// The value, base64 (null when empty, as Consul writes it).
    pub value: Option<String>,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
    /// Session holding its lock.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub session: Option<String>,
}

impl From<&KvEntry> for ApiKv {
    fn from(e: &KvEntry) -> Self {
        ApiKv {
            lock_index: e.lock_index,
            key: e.key.clone(),
            flags: e.flags,
            value: (!e.value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(&e.value)),
            create_index: e.create_index,
            modify_index: e.modify_index,
            session: e.session.clone(),
        }
    }
}

pub(super) fn bad(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, msg.into())
}

fn uint_param(params: &HashMap<String, String>, name: &str) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                bad(format!(
                    "Invalid {name} parameter {v:?}: not an unsigned integer"
                ))
            })
        })
        .transpose()
}

/// `?stale`, `?consistent`, `?index` and `?wait` as a [`Read`] of `query`.
pub(super) fn read_of(params: &HashMap<String, String>, query: Query) -> Result<Read, ApiError> {
    let consistency = match (
        params.contains_key("stale"),
        params.contains_key("consistent"),
    ) {
        (true, true) => {
            return Err(bad(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ))
        }
        (true, false) => Consistency::Stale,
        (false, true) => Consistency::Consistent,
        (false, false) => Consistency::Default,
    };
    let (min_index, wait) = blocking_of(params)?;
    Ok(Read {
        consistency,
        min_index,
        max_wait_ms: wait.as_millis() as u64,
        query,
    })
}

/// `?index` and `?wait` of a blocking query: the index seen, and how long
/// to wait for a change past it.
pub(super) fn blocking_of(params: &HashMap<String, String>) -> Result<(u64, Duration), ApiError> {
    let min_index = uint_param(params, "index")?.unwrap_or(0);
    let wait = match params.get("wait") {
        Some(w) => parse_duration(w).map_err(|e| bad(format!("Invalid wait time: {e}")))?,
        None => DEFAULT_WAIT,
    }
    .min(MAX_WAIT);
    // Consul adds up to wait/16 so that many watchers woken by one change
    // do not all come back at once.
    Ok((min_index, wait + wait / 16))
}

/// Consul's query metadata headers.
pub(super) fn meta_headers(r: &ClientReply) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    put("x-consul-index", r.index.to_string());
    put("x-consul-knownleader", r.known_leader.to_string());
    let contact = if r.last_contact_ms == u64::MAX {
        0
    } else {
        r.last_contact_ms
    };
    put("x-consul-lastcontact", contact.to_string());
    if r.filtered {
        put(super::acl::FILTERED_HEADER, "true".into());
    }
    h
}

/// The answer of a reply, or the servers' refusal: 403 for ACLs (see
/// [`super::acl::refusal`]), else a 500 (Consul's status for "no cluster
/// leader" and other RPC failures).
pub(super) fn answer_of(r: &ClientReply) -> Result<Answer, ApiError> {
    r.answer.clone().map_err(super::acl::refusal)
}

/// An answer of the wrong kind: a bug between agent and server.
pub(super) fn unexpected(a: Answer) -> ApiError {
    super::internal(format!("unexpected answer {a:?}"))
}

/// Runs a read of `query` with the request's parameters (`?stale`,
/// `?index`, ...); Consul's metadata headers and the answer.
pub(super) async fn read<E: Env>(
    s: &ApiState<E>,
    params: &HashMap<String, String>,
    query: Query,
) -> Result<(HeaderMap, Answer), ApiError> {
    let read = read_of(params, query)?;
    let reply = super::call(s, ClientRequest::Read { read, hops: 0 }).await;
    Ok((meta_headers(&reply), answer_of(&reply)?))
}

/// Writes `cmd` through the servers; whether it took effect.
pub(super) async fn write_cmd<E: Env>(s: &ApiState<E>, cmd: Command) -> Result<bool, ApiError> {
    let reply = super::call(
        s,
        ClientRequest::Write {
            cmd: Box::new(cmd),
            hops: 0,
        },
    )
    .await;
    match answer_of(&reply)? {
        Answer::Written(ok) => Ok(ok),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/kv/<key>` (`?recurse`, `?keys`, `?raw`, blocking).
pub async fn get<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    key: Option<Path<String>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // `/v1/kv/` itself: the root, for `?recurse` over every key.
    let key = key.map(|Path(k)| k).unwrap_or_default();
    let list = params.contains_key("recurse") || params.contains_key("keys");
    let query = if list {
        Query::KvList(key.clone())
    } else {
        Query::Kv(key.clone())
    };
    let (headers, answer) = read(&s, &params, query).await?;
    let entries: Vec<KvEntry> = match answer {
        Answer::Kv(e) => e.into_iter().collect(),
        Answer::KvList(v) => v,
        other => return Err(unexpected(other)),
    };
    if entries.is_empty() {
        return Ok((StatusCode::NOT_FOUND, headers).into_response());
    }
    if params.contains_key("keys") {
        let keys = keys_of(&entries, &key, params.get("separator").map(String::as_str));
        return Ok((headers, Json(keys)).into_response());
    }
    if params.contains_key("raw") && !list {
        return Ok((headers, entries[0].value.clone()).into_response());
    }
    let body: Vec<ApiKv> = entries.iter().map(ApiKv::from).collect();
    Ok((headers, Json(body)).into_response())
}

/// The keys under `prefix`, cut after the first `separator` past it (each
/// such folder listed once, ending in the separator), as Consul lists them.
fn keys_of(entries: &[KvEntry], prefix: &str, separator: Option<&str>) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entries {
        let key = match separator.filter(|s| !s.is_empty()) {
            Some(sep) => match e.key[prefix.len().min(e.key.len())..].find(sep) {
                Some(i) => e.key[..prefix.len() + i + sep.len()].to_string(),
                None => e.key.clone(),
            },
            None => e.key.clone(),
        };
        if out.last() != Some(&key) {
            out.push(key);
        }
    }
    out
}

/// `PUT /v1/kv/<key>` (`?flags`, `?cas`, `?acquire`, `?release`): answers
/// `true` or `false`.
pub async fn put<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    key: Option<Path<String>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // `/v1/kv/` itself: the root, for `?recurse` over every key.
    let key = key.map(|Path(k)| k).unwrap_or_default();
    if key.is_empty() {
        return Err(bad("Missing key name"));
    }
    if body.len() > MAX_VALUE {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE} bytes.",
                body.len()
            ),
        ));
    }
    let flags = uint_param(&params, "flags")?.unwrap_or(0);
    let op = match (
        uint_param(&params, "cas")?,
        params.get("acquire"),
        params.get("release"),
    ) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) | (_, Some(_), Some(_)) => {
            return Err(bad("Conflicting flags: only one of cas, acquire, release"))
        }
        (Some(index), None, None) => KvOp::Cas { index },
        (None, Some(session), None) => KvOp::Lock {
            session: session.clone(),
        },
        (None, None, Some(session)) => KvOp::Unlock {
            session: session.clone(),
        },
        (None, None, None) => KvOp::Set,
    };
    write(&s, op, key, body.to_vec(), flags).await
}

/// `DELETE /v1/kv/<key>` (`?recurse`, `?cas`).
pub async fn delete<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    key: Option<Path<String>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    // `/v1/kv/` itself: the root, for `?recurse` over every key.
    let key = key.map(|Path(k)| k).unwrap_or_default();
    let op = match (params.contains_key("recurse"), uint_param(&params, "cas")?) {
        (true, Some(_)) => return Err(bad("Conflicting flags: cas with recurse")),
        (true, None) => KvOp::DeleteTree,
        (false, Some(index)) => KvOp::DeleteCas { index },
        (false, None) => KvOp::Delete,
    };
    write(&s, op, key, Vec::new(), 0).await
}

async fn write<E: Env>(
    s: &ApiState<E>,
    op: KvOp,
    key: String,
    value: Vec<u8>,
    flags: u64,
) -> Result<Response, ApiError> {
    let cmd = Command::Kv {
        op,
        key,
        value,
        flags,
    };
    Ok(Json(write_cmd(s, cmd).await?).into_response())
}

pub(super) async fn status<E: Env>(
    s: &ApiState<E>,
) -> Result<(Option<String>, Vec<String>), ApiError> {
    let reply = super::call(s, ClientRequest::Status).await;
    match answer_of(&reply)? {
        Answer::Status { leader, peers } => Ok((leader, peers)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/status/leader`: the leader's RPC address, `""` when none.
pub async fn leader<E: Env>(State(s): State<Arc<ApiState<E>>>) -> Result<Json<String>, ApiError> {
    Ok(Json(status(&s).await?.0.unwrap_or_default()))
}

/// `GET /v1/status/peers`: the voters' RPC addresses.
pub async fn peers<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
) -> Result<Json<Vec<String>>, ApiError> {
    Ok(Json(status(&s).await?.1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str) -> KvEntry {
        KvEntry {
            key: key.into(),
            create_index: 1,
            modify_index: 1,
            lock_index: 0,
            flags: 0,
            value: Vec::new(),
            session: None,
        }
    }

    #[test]
    fn keys_fold_at_the_separator() {
        let e: Vec<KvEntry> = ["a/b", "a/c/d", "a/c/e", "a/f"]
            .into_iter()
            .map(entry)
            .collect();
        assert_eq!(keys_of(&e, "a/", Some("/")), ["a/b", "a/c/", "a/f"]);
        assert_eq!(keys_of(&e, "a/", None), ["a/b", "a/c/d", "a/c/e", "a/f"]);
        assert_eq!(keys_of(&e, "", Some("/")), ["a/"]);
    }

    #[test]
    fn read_parameters() {
        let p = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = read_of(&p(&[("index", "7"), ("wait", "16s")]), Query::Nodes).unwrap();
        assert_eq!((r.min_index, r.max_wait_ms), (7, 17_000));
        assert_eq!(r.consistency, Consistency::Default);
        let r = read_of(&p(&[("stale", "")]), Query::Nodes).unwrap();
        assert_eq!(r.consistency, Consistency::Stale);
        assert!(read_of(&p(&[("stale", ""), ("consistent", "")]), Query::Nodes).is_err());
        assert!(read_of(&p(&[("index", "x")]), Query::Nodes).is_err());
        assert!(read_of(&p(&[("wait", "forever")]), Query::Nodes).is_err());
        // Waits are capped at ten minutes (plus jitter).
        let r = read_of(&p(&[("wait", "1h")]), Query::Nodes).unwrap();
        assert_eq!(r.max_wait_ms, 637_500);
    }
}

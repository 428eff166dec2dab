//! `PUT /v1/acl/join-token` (cairn's own): a one-time join token for one
//! more agent of a `cairn agent -secure` cluster. The token carries the
//! servers' addresses, the gossip key, the agent CA's certificate and a
//! fresh secret; the servers keep only the secret's hash, with what it
//! admits (a client agent, or a server) and until when.

use std::time::Duration;

use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::acl::{acl_write, body, enabled};
use super::context::Api;
use super::error::{bad, internal, ApiError};
use crate::agent::secure::secret_hash;
use crate::env::Env;
use crate::gossip::MemberStatus;
use crate::state::join::JoinTicket;
use crate::state::Command;

/// How long a join token is good for unless asked otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(3600);

/// The longest a join token may be good for: it is a credential, and one
/// that is never used should not stay one for long.
const MAX_TTL: Duration = Duration::from_secs(30 * 86_400);

#[derive(Debug, Default, Deserialize)]
struct Body {
    /// How long it is good for (a Go duration: `"1h"`, `"30m"`).
    #[serde(rename = "TTL", default)]
    ttl: Option<String>,
    /// Whether it admits a server.
    #[serde(rename = "Server", default)]
    server: Option<bool>,
}

/// What a body asks for: how long the token is good for, and whether it
/// admits a server.
pub(super) fn asked(bytes: &[u8]) -> Result<(Duration, bool), ApiError> {
    let b = body::<Body>(bytes)?;
    let ttl = match b.ttl.as_deref().filter(|t| !t.is_empty()) {
        None => DEFAULT_TTL,
        Some(t) => crate::format::parse_duration(t).map_err(|e| bad(format!("TTL: {e}")))?,
    };
    if ttl.is_zero() || ttl > MAX_TTL {
        return Err(bad(format!(
            "TTL: a join token is good for more than 0 and at most {}",
            crate::format::go_duration(MAX_TTL)
        )));
    }
    Ok((ttl, b.server.unwrap_or(false)))
}

/// `PUT /v1/acl/join-token`: needs `acl = "write"`.
pub async fn create<E: Env>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let Some(issuer) = &s.join_issuer else {
        return Err(bad(
            "join tokens are for clusters started with `cairn agent -secure`; this agent was not",
        ));
    };
    let (ttl, server) = asked(&bytes)?;
    let members = s.gossip.members().await.map_err(internal)?;
    let servers: Vec<_> = members
        .iter()
        .filter(|m| m.status == MemberStatus::Alive)
        .filter_map(|m| {
            let sm = crate::server::member::server_of(m)?;
            (sm.dc == issuer.datacenter).then_some((sm.rpc, m.addr))
        })
        .collect();
    if servers.is_empty() {
        return Err(ApiError(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "no alive server is known to this agent".into(),
        ));
    }
    let gossip_key = s
        .keyrings
        .iter()
        .find(|k| k.pool == "lan")
        .and_then(|k| k.primary_key())
        .ok_or_else(|| internal("this agent's gossip is not encrypted"))?;
    let secret = s.new_id();
    let created_ms = crate::connect::ca::unix_ms(s.env.wall_clock());
    let expires_ms = created_ms.saturating_add(ttl.as_millis() as u64);
    let ticket = JoinTicket {
        server,
        created_ms,
        expires_ms,
        token_accessor: s.new_id(),
        token_secret: s.new_id(),
        used_by: None,
    };
    acl_write(
        &s,
        Command::JoinTicketCreate {
            hash: secret_hash(&secret),
            ticket: Box::new(ticket),
        },
    )
    .await?;
    let token = issuer.token(&servers, gossip_key, secret, server);
    Ok(Json(json!({
        "JoinToken": token.encode(),
        "Server": server,
        "Servers": token.servers,
        "ExpirationTime": crate::format::rfc3339(expires_ms),
    }))
    .into_response())
}

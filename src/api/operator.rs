//! `/v1/operator/*`, as Consul's API has it.
//!
//! `/v1/operator/keyring`: the gossip keyring. `GET` lists how many
//! members of each pool hold each key; `POST` installs a key, `PUT` makes
//! it primary and `DELETE` removes it, on this agent and then, gossiped, on
//! every member of its pools (the LAN pool, and on a server the WAN pool
//! too).
//!
//! `/v1/operator/usage`: how many nodes, services and service instances
//! the catalog holds, per datacenter.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use axum::body::Bytes;
use axum::extract::Query as UrlQuery;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{read, require_global, Api};
use super::error::{unexpected, ApiError};
use crate::acl::{Access, Global};
use crate::agent::keyring::{KeyringStatus, Op};
use crate::env::Env;
use crate::server::{Answer, ClientRequest, Query};

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct KeyBody {
    key: String,
}

fn not_encrypted() -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        "gossip encryption is not enabled on this agent (set encrypt)".into(),
    )
}

/// `GET /v1/operator/keyring`.
pub async fn list<E: Env>(s: Api<E>) -> Result<Json<Vec<KeyringStatus>>, ApiError> {
    if s.keyrings.is_empty() {
        return Err(not_encrypted());
    }
    let mut out = Vec::new();
    for k in &s.keyrings {
        out.push(
            k.status(&s.info.datacenter)
                .await
                .map_err(super::error::internal)?,
        );
    }
    Ok(Json(out))
}

/// The key a keyring body names, still base64 (apart from the handler so
/// the fuzz target decodes the same).
pub(super) fn key_of(body: &[u8]) -> Result<String, ApiError> {
    let b: KeyBody = super::decode::body(body)?;
    Ok(b.key)
}

async fn operate<E: Env>(s: &Api<E>, op: Op, body: &Bytes) -> Result<Json<bool>, ApiError> {
    let key = key_of(body)?;
    if s.keyrings.is_empty() {
        return Err(not_encrypted());
    }
    for k in &s.keyrings {
        k.operate(op, &key).await.map_err(|e| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("{} pool: {e}", k.pool.to_uppercase()),
            )
        })?;
    }
    Ok(Json(true))
}

/// `POST /v1/operator/keyring` with `{"Key": "..."}`: install a key.
pub async fn install<E: Env>(s: Api<E>, body: Bytes) -> Result<Json<bool>, ApiError> {
    operate(&s, Op::Install, &body).await
}

/// `PUT /v1/operator/keyring`: make a key primary.
pub async fn use_key<E: Env>(s: Api<E>, body: Bytes) -> Result<Json<bool>, ApiError> {
    operate(&s, Op::Use, &body).await
}

/// `DELETE /v1/operator/keyring`: remove a key.
pub async fn remove<E: Env>(s: Api<E>, body: Bytes) -> Result<Json<bool>, ApiError> {
    operate(&s, Op::Remove, &body).await
}

/// The kinds of service instance Consul's usage counts apart (Connect
/// proxies and gateways), none of them billable.
const CONNECT_KINDS: &[&str] = &[
    "api-gateway",
    "connect-native",
    "connect-proxy",
    "ingress-gateway",
    "mesh-gateway",
    "terminating-gateway",
];

/// One datacenter's usage in Consul's shape, and the read's headers.
async fn usage_in<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Value), ApiError> {
    let (headers, nodes) = match read(s, params, Query::Nodes).await? {
        (h, Answer::Nodes(n)) => (h, n.len()),
        (_, a) => return Err(unexpected(a)),
    };
    let instances = match read(s, params, Query::AllInstances).await? {
        (_, Answer::Instances(v)) => v,
        (_, a) => return Err(unexpected(a)),
    };
    let names: BTreeSet<&str> = instances
        .iter()
        .map(|i| i.service.service.as_str())
        .collect();
    let mut connect: BTreeMap<&str, usize> = CONNECT_KINDS.iter().map(|k| (*k, 0)).collect();
    let mut billable = 0;
    for i in &instances {
        match connect.get_mut(i.service.kind.as_str()) {
            Some(n) => *n += 1,
            None if i.service.service != crate::server::reconcile::CONSUL_SERVICE => billable += 1,
            None => {}
        }
    }
    let usage = json!({
        "Services": names.len(),
        "ServiceInstances": instances.len(),
        "ConnectServiceInstances": connect,
        "BillableServiceInstances": billable,
        "Nodes": nodes,
    });
    Ok((headers, usage))
}

/// `GET /v1/operator/usage` (`?global` for every datacenter, `?stale`).
pub async fn usage<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    let global = params.get("global").is_some_and(|v| v != "false");
    let dcs = if global {
        let reply = super::context::call(&s, ClientRequest::Datacenters).await;
        match super::context::answer_of(&reply)? {
            Answer::Datacenters(v) => v,
            other => return Err(unexpected(other)),
        }
    } else {
        vec![s
            .caller
            .dc
            .clone()
            .unwrap_or_else(|| s.info.datacenter.clone())]
    };
    let mut by_dc = serde_json::Map::new();
    let mut head = None;
    for dc in dcs {
        let at = s.in_dc((dc != s.info.datacenter).then(|| dc.clone()));
        let (headers, usage) = usage_in(&at, &params).await?;
        head.get_or_insert(headers);
        by_dc.insert(dc, usage);
    }
    let headers = head.unwrap_or_default();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let body = json!({
        "Usage": by_dc,
        "Index": header("x-consul-index").parse::<u64>().unwrap_or(0),
        "LastContact": header("x-consul-lastcontact").parse::<u64>().unwrap_or(0),
        "KnownLeader": header("x-consul-knownleader") == "true",
        "ResultsFilteredByACLs": false,
    });
    Ok((headers, Json(body)).into_response())
}

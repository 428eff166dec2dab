//! `/v1/operator/raft/*` and `/v1/operator/autopilot/*`, as Consul's API
//! has them: the Raft configuration, removing a peer, handing leadership
//! over, and autopilot's settings, health and state.
//!
//! Servers are named as Consul names them: by node ID (the Raft ID is its
//! first 64 bits) and node name, found in the LAN pool. A server the pool
//! does not know is shown by its Raft ID in hex, which `?id=` also takes.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::Query as UrlQuery;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::context::{answer_of, call, meta_headers, read, require_global, uint_param, Api};
use super::error::{bad, unexpected, ApiError};
use crate::acl::{Access, Global};
use crate::env::Env;
use crate::gossip::MemberStatus;
use crate::server::{
    format_raft_id, raft_id, server_of, Answer, ClientRequest, OperatorOp, Query, RaftView,
};
use crate::state::{AutopilotConfig, Command};

/// A server as the LAN pool knows it.
struct Known {
    node_id: String,
    name: String,
    status: MemberStatus,
}

/// The servers the LAN pool knows, by Raft ID.
async fn known_servers<E: Env>(s: &Api<E>) -> HashMap<u64, Known> {
    let members = s.gossip.members().await.unwrap_or_default();
    members
        .iter()
        .filter_map(|m| {
            let sm = server_of(m)?;
            let node_id = m.tags().get("id").cloned().unwrap_or_default();
            Some((
                sm.raft_id,
                Known {
                    node_id,
                    name: m.name.clone(),
                    status: m.status,
                },
            ))
        })
        .collect()
}

/// The Raft ID `?id=` names: a node ID (UUID), or a Raft ID in hex.
fn id_param(v: &str) -> Result<u64, ApiError> {
    if let Some(id) = raft_id(v) {
        return Ok(id);
    }
    u64::from_str_radix(v, 16).map_err(|_| {
        bad(format!(
            "Invalid id {v:?}: give the server's node ID (a UUID) as list-peers shows it"
        ))
    })
}

/// Asks the leader `op`; the group as it sees it, and the reply's headers.
async fn ask<E: Env>(
    s: &Api<E>,
    op: OperatorOp,
) -> Result<(axum::http::HeaderMap, RaftView), ApiError> {
    let reply = call(s, ClientRequest::Operator { op, hops: 0 }).await;
    match answer_of(&reply)? {
        Answer::Raft(view) => Ok((meta_headers(&reply), view)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/operator/raft/configuration`.
pub async fn configuration<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    let (headers, view) = ask(&s, OperatorOp::RaftConfiguration).await?;
    let known = known_servers(&s).await;
    let servers: Vec<Value> = view
        .servers
        .iter()
        .map(|p| {
            let k = known.get(&p.id);
            json!({
                "ID": k.map_or_else(|| format_raft_id(p.id), |k| k.node_id.clone()),
                "Node": k.map_or("", |k| k.name.as_str()),
                "Address": p.address,
                "Leader": p.leader,
                "ProtocolVersion": "3",
                "Voter": p.voter,
                "LastIndex": p.last_index,
            })
        })
        .collect();
    let body = json!({ "Servers": servers, "Index": view.index });
    Ok((headers, Json(body)).into_response())
}

/// `DELETE /v1/operator/raft/peer?id=` (or `?address=`).
pub async fn remove_peer<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Write).await?;
    let id = params.get("id").map(|v| id_param(v)).transpose()?;
    let address = params.get("address").cloned();
    if id.is_none() && address.is_none() {
        return Err(bad(
            "Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
        ));
    }
    let reply = call(
        &s,
        ClientRequest::Operator {
            op: OperatorOp::RemovePeer { id, address },
            hops: 0,
        },
    )
    .await;
    answer_of(&reply)?;
    Ok(StatusCode::OK.into_response())
}

/// `POST /v1/operator/raft/transfer-leader` (`?id=` for a chosen voter).
pub async fn transfer_leader<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Write).await?;
    let to = params.get("id").map(|v| id_param(v)).transpose()?;
    let reply = call(
        &s,
        ClientRequest::Operator {
            op: OperatorOp::TransferLeader { to, tries: 0 },
            hops: 0,
        },
    )
    .await;
    answer_of(&reply)?;
    Ok(Json(json!({ "Success": true })).into_response())
}

/// `GET /v1/operator/autopilot/configuration`.
pub async fn get_config<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    match read(&s, &params, Query::Autopilot).await? {
        (headers, Answer::Autopilot(config)) => Ok((headers, Json(config)).into_response()),
        (_, other) => Err(unexpected(other)),
    }
}

/// `PUT /v1/operator/autopilot/configuration` (`?cas=` to check and set):
/// `true` when it took effect.
pub async fn set_config<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<bool>, ApiError> {
    require_global(&s, Global::Operator, Access::Write).await?;
    let config = autopilot_config(&body)?;
    let cas = uint_param(&params, "cas")?;
    let cmd = Command::AutopilotSet {
        config: Box::new(config),
        cas,
    };
    super::context::write_cmd(&s, cmd).await.map(Json)
}

/// The autopilot configuration a body sets, checked (apart from the
/// handler so the fuzz target checks the same).
pub(super) fn autopilot_config(body: &[u8]) -> Result<AutopilotConfig, ApiError> {
    let config: AutopilotConfig = super::decode::body(body)?;
    config
        .validate()
        .map_err(|e| bad(format!("Invalid autopilot configuration: {e}")))?;
    Ok(config)
}

/// One server's health, as autopilot judges it.
struct ServerHealth {
    id: String,
    name: String,
    address: String,
    serf_status: &'static str,
    leader: bool,
    voter: bool,
    healthy: bool,
    last_contact: String,
    last_term: u64,
    last_index: u64,
}

/// Every server's health, and the group's failure tolerance.
async fn health_of<E: Env>(s: &Api<E>) -> Result<(Vec<ServerHealth>, usize), ApiError> {
    let config = match read(s, &HashMap::new(), Query::Autopilot).await? {
        (_, Answer::Autopilot(c)) => c,
        (_, other) => return Err(unexpected(other)),
    };
    let (_, view) = ask(s, OperatorOp::Health).await?;
    let known = known_servers(s).await;
    let servers: Vec<ServerHealth> = view
        .servers
        .iter()
        .map(|p| {
            let k = known.get(&p.id);
            let status = k.map_or(MemberStatus::Failed, |k| k.status);
            let contact = p.last_contact_ms.map(std::time::Duration::from_millis);
            // Consul's rules: alive in gossip, heard from the leader
            // lately, on the leader's term, and not too far behind.
            let healthy = status == MemberStatus::Alive
                && contact.is_some_and(|c| c <= config.last_contact())
                && p.last_term == view.term
                && view.last_index.saturating_sub(p.last_index) <= config.max_trailing_logs;
            ServerHealth {
                id: k.map_or_else(|| format_raft_id(p.id), |k| k.node_id.clone()),
                name: k.map_or_else(String::new, |k| k.name.clone()),
                address: p.address.clone(),
                serf_status: match status {
                    MemberStatus::Alive => "alive",
                    MemberStatus::Left => "left",
                    _ => "failed",
                },
                leader: p.leader,
                voter: p.voter,
                healthy,
                last_contact: contact.map_or_else(|| "-1ns".into(), crate::format::go_duration),
                last_term: p.last_term,
                last_index: p.last_index,
            }
        })
        .collect();
    let voters = servers.iter().filter(|h| h.voter).count();
    let healthy_voters = servers.iter().filter(|h| h.voter && h.healthy).count();
    let tolerance = healthy_voters.saturating_sub(voters / 2 + 1);
    Ok((servers, tolerance))
}

/// `GET /v1/operator/autopilot/health`: 200 when every server is
/// healthy, 429 (with the same body) when one is not.
pub async fn health<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    let (servers, tolerance) = health_of(&s).await?;
    let healthy = servers.iter().all(|h| h.healthy);
    let list: Vec<Value> = servers
        .iter()
        .map(|h| {
            json!({
                "ID": h.id,
                "Name": h.name,
                "Address": h.address,
                "SerfStatus": h.serf_status,
                "Version": s.info.version,
                "Leader": h.leader,
                "LastContact": h.last_contact,
                "LastTerm": h.last_term,
                "LastIndex": h.last_index,
                "Healthy": h.healthy,
                "Voter": h.voter,
                "StableSince": "0001-01-01T00:00:00Z",
            })
        })
        .collect();
    let body = json!({
        "Healthy": healthy,
        "FailureTolerance": tolerance,
        "Servers": list,
    });
    let status = if healthy {
        StatusCode::OK
    } else {
        StatusCode::TOO_MANY_REQUESTS
    };
    Ok((status, Json(body)).into_response())
}

/// `GET /v1/operator/autopilot/state`.
pub async fn state<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    require_global(&s, Global::Operator, Access::Read).await?;
    let (servers, tolerance) = health_of(&s).await?;
    let mut by_id = BTreeMap::new();
    for h in &servers {
        let status = match (h.leader, h.voter) {
            (true, _) => "leader",
            (false, true) => "voter",
            (false, false) => "non-voter",
        };
        by_id.insert(
            h.id.clone(),
            json!({
                "ID": h.id,
                "Name": h.name,
                "Address": h.address,
                "NodeStatus": h.serf_status,
                "Version": s.info.version,
                "LastContact": h.last_contact,
                "LastTerm": h.last_term,
                "LastIndex": h.last_index,
                "Healthy": h.healthy,
                "StableSince": "0001-01-01T00:00:00Z",
                "ReadReplica": false,
                "Status": status,
                "Meta": {},
                "NodeType": "voter",
            }),
        );
    }
    let leader = servers.iter().find(|h| h.leader).map(|h| h.id.clone());
    let voters: Vec<&str> = servers
        .iter()
        .filter(|h| h.voter)
        .map(|h| h.id.as_str())
        .collect();
    let body = json!({
        "Healthy": servers.iter().all(|h| h.healthy),
        "FailureTolerance": tolerance,
        "OptimisticFailureTolerance": servers.iter().filter(|h| h.voter).count().saturating_sub(1) / 2,
        "Servers": by_id,
        "Leader": leader.unwrap_or_default(),
        "Voters": voters,
    });
    Ok(Json(body).into_response())
}

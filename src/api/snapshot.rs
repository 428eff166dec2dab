//! `GET /v1/snapshot` and `PUT /v1/snapshot`: the servers' whole state in
//! Consul's archive format ([`crate::archive`]), saved from one consistent
//! point of the history and restored through Raft, so every server takes
//! it. Both need a token that may write ACLs, as Consul asks: the
//! archive holds every secret.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::Query as UrlQuery;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

use super::context::{answer_of, call, read, require_global, Api};
use super::error::{bad, unexpected, ApiError};
use crate::acl::{Access, Global};
use crate::archive::{ConfigServer, Configuration, SnapshotMeta};
use crate::env::Env;
use crate::server::{format_raft_id, Answer, ClientRequest, OperatorOp};
use crate::state::{Command, Store};

/// `GET /v1/snapshot` (`?stale` lets any server answer).
pub async fn save<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require_global(&s, Global::Acl, Access::Write).await?;
    let (mut headers, answer) = read(&s, &params, crate::server::Query::Snapshot).await?;
    let Answer::Snapshot { state, index, term } = answer else {
        return Err(unexpected(answer));
    };
    let configuration = configuration(&s).await?;
    let now_ms = crate::connect::ca::unix_ms(s.env.wall_clock());
    let meta = SnapshotMeta {
        version: 1,
        id: format!("{term}-{index}-{now_ms}"),
        index,
        term,
        peers: None,
        configuration: configuration.0,
        configuration_index: configuration.1,
        size: 0,
    };
    let archive = crate::archive::write(&meta, state.as_bytes());
    if let Ok(v) = index.to_string().parse() {
        headers.insert("x-consul-index", v);
    }
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    Ok((headers, archive).into_response())
}

/// The Raft configuration, for the archive's metadata, and its index.
async fn configuration<E: Env>(s: &Api<E>) -> Result<(Configuration, u64), ApiError> {
    let reply = call(
        s,
        ClientRequest::Operator {
            op: OperatorOp::RaftConfiguration,
            hops: 0,
        },
    )
    .await;
    let view = match answer_of(&reply)? {
        Answer::Raft(view) => view,
        other => return Err(unexpected(other)),
    };
    let servers = view
        .servers
        .iter()
        .map(|p| ConfigServer {
            suffrage: if p.voter { 0 } else { 1 },
            id: format_raft_id(p.id),
            address: p.address.clone(),
        })
        .collect();
    Ok((
        Configuration {
            servers: Some(servers),
        },
        view.index,
    ))
}

/// `PUT /v1/snapshot`: restores an archive. A damaged archive, or one
/// whose state does not read, is refused before anything changes.
pub async fn restore<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    require_global(&s, Global::Acl, Access::Write).await?;
    let snapshot = snapshot_of(&body)?;
    super::context::write_cmd(&s, Command::Restore { snapshot }).await?;
    Ok(StatusCode::OK.into_response())
}

/// The state an archive holds, once it reads back whole (apart from the
/// handler so the fuzz target checks the same).
pub(super) fn snapshot_of(body: &[u8]) -> Result<String, ApiError> {
    let (_, state) = crate::archive::read(body).map_err(|e| bad(e.to_string()))?;
    Store::restore(&state).map_err(|e| bad(format!("snapshot state: {e}")))?;
    String::from_utf8(state).map_err(|_| bad("snapshot state: not the text this version writes"))
}

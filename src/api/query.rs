//! Prepared queries (`/v1/query`): create, list, read, update, delete,
//! execute (with failover to other datacenters) and explain.

use std::collections::HashMap;

use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;

use super::context::{read, write_cmd, Api};
use super::error::{bad, unexpected, ApiError};
use crate::agent::prepared;
use crate::env::Env;
use crate::server::{Answer, Query};
use crate::state::{Command, PreparedQuery};

async fn all<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(axum::http::HeaderMap, Vec<PreparedQuery>), ApiError> {
    match read(s, params, Query::PreparedQueries).await? {
        (h, Answer::PreparedQueries(v)) => Ok((h, v)),
        (_, a) => Err(unexpected(a)),
    }
}

/// The prepared query a create or update body defines, checked (the
/// fuzz target checks the same).
pub(super) fn decode(body: &[u8]) -> Result<PreparedQuery, ApiError> {
    let q: PreparedQuery = serde_json::from_value(super::decode::value(body)?)
        .map_err(super::decode::decode_failed)?;
    q.validate().map_err(bad)?;
    Ok(q)
}

/// `POST /v1/query`: `{"ID": ...}`.
pub async fn create<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    let mut q = decode(&body)?;
    q.id = s.new_id();
    write_cmd(&s, Command::QuerySet(Box::new(q.clone()))).await?;
    Ok(Json(serde_json::json!({ "ID": q.id })).into_response())
}

/// `GET /v1/query`.
pub async fn list<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = all(&s, &params).await?;
    Ok((h, Json(v)).into_response())
}

fn not_found(key: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("Query not found: {key}"))
}

/// `GET /v1/query/<id>`: a list of one, as Consul answers.
pub async fn get<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = all(&s, &params).await?;
    let q = v
        .into_iter()
        .find(|q| q.id == id)
        .ok_or_else(|| not_found(&id))?;
    Ok((h, Json(vec![q])).into_response())
}

/// `PUT /v1/query/<id>`.
pub async fn update<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let (_, v) = all(&s, &HashMap::new()).await?;
    if !v.iter().any(|q| q.id == id) {
        return Err(not_found(&id));
    }
    let mut q = decode(&body)?;
    q.id = id;
    write_cmd(&s, Command::QuerySet(Box::new(q))).await?;
    Ok(StatusCode::OK.into_response())
}

/// `DELETE /v1/query/<id>`.
pub async fn delete<E: Env>(s: Api<E>, Path(id): Path<String>) -> Result<Response, ApiError> {
    write_cmd(&s, Command::QueryDelete { id }).await?;
    Ok(StatusCode::OK.into_response())
}

/// `GET /v1/query/<id or name>/execute` (`?limit=N`), and `/explain`.
pub async fn action<E: Env>(
    s: Api<E>,
    Path((key, verb)): Path<(String, String)>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    match verb.as_str() {
        "explain" => {
            // Explaining shows the definition: that needs `query` read.
            let (_, v) = all(&s, &HashMap::new()).await?;
            let q = prepared::resolve(&v, &key).ok_or_else(|| not_found(&key))?;
            let svc = prepared::render(q, &key).map_err(bad)?;
            let rendered = PreparedQuery {
                service: svc,
                ..q.clone()
            };
            Ok(Json(serde_json::json!({ "Query": rendered })).into_response())
        }
        "execute" => {
            // As in Consul, any token may run a query it can name; what
            // the query finds is filtered by the token.
            let dc = s.caller.dc.clone();
            let (q, mut e) = prepared::run(
                &s.servers,
                s.caller.token.as_deref(),
                &s.info.datacenter,
                dc.as_deref(),
                &key,
            )
            .await
            .map_err(super::error::refusal)?
            .ok_or_else(|| not_found(&key))?;
            let q = &q;
            {
                use rand::seq::SliceRandom;
                let mut rng = s.rng.lock().unwrap_or_else(|p| p.into_inner());
                e.nodes.shuffle(&mut *rng);
            }
            let mut nodes = serde_json::Value::Array(
                e.nodes
                    .into_iter()
                    .map(|i| serde_json::json!({ "Node": i.node, "Service": i.service, "Checks": i.checks }))
                    .collect(),
            );
            // `?near`, else the query's `Near` (`_agent`: this agent),
            // orders this datacenter's answers by estimated RTT; another
            // datacenter's instances are not near anything here.
            let near = params
                .get("near")
                .filter(|n| !n.is_empty())
                .unwrap_or(&q.service.near);
            if !near.is_empty() && e.datacenter == s.info.datacenter {
                let origin = if near == "_agent" {
                    &s.info.node_name
                } else {
                    near
                };
                if let Ok(coords) = s.gossip.coordinates().await {
                    super::coordinate::sort_near(&mut nodes, origin, &coords);
                }
            }
            if let (Some(limit), Some(v)) = (
                params.get("limit").and_then(|l| l.parse::<usize>().ok()),
                nodes.as_array_mut(),
            ) {
                v.truncate(limit);
            }
            Ok(Json(serde_json::json!({
                "Service": e.service,
                "Nodes": nodes,
                "DNS": q.dns,
                "Datacenter": e.datacenter,
                "Failovers": e.failovers,
            }))
            .into_response())
        }
        other => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown query action {other:?} (execute or explain)"),
        )),
    }
}

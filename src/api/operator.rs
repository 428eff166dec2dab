//! `/v1/operator/keyring`: the gossip keyring, as Consul's API has it.
//! `GET` lists how many members of each pool hold each key; `POST`
//! installs a key, `PUT` makes it primary and `DELETE` removes it, on this
//! agent and then, gossiped, on every member of its pools (the LAN pool,
//! and on a server the WAN pool too).

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;

use super::context::Api;
use super::error::ApiError;
use crate::agent::keyring::{KeyringStatus, Op};
use crate::env::Env;

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

async fn operate<E: Env>(s: &Api<E>, op: Op, body: &Bytes) -> Result<Json<bool>, ApiError> {
    let b: KeyBody = super::decode::body(body)?;
    if s.keyrings.is_empty() {
        return Err(not_encrypted());
    }
    for k in &s.keyrings {
        k.operate(op, &b.key).await.map_err(|e| {
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

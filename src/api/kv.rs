//! `/v1/kv/<key>` and `/v1/status/*`: the key/value store and the Raft
//! group's status, answered by the servers through the agent.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::Serialize;

use super::context::{answer_of, read, uint_param, write_cmd, Api};
use super::error::{bad, unexpected, ApiError};
use crate::env::Env;
use crate::server::{Answer, ClientRequest, Query};
use crate::state::{Command, KvEntry, KvOp};

/// Largest value accepted (Consul's `kv_max_value_size` default).
pub const MAX_VALUE: usize = 512 * 1024;

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

/// `GET /v1/kv/<key>` (`?recurse`, `?keys`, `?raw`, blocking).
pub async fn get<E: Env>(
    s: Api<E>,
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
    s: Api<E>,
    key: Option<Path<String>>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    // `/v1/kv/` itself: the root, for `?recurse` over every key.
    let key = key.map(|Path(k)| k).unwrap_or_default();
    if key.is_empty() {
        return Err(bad("Missing key name"));
    }
    let value = value_of(&body)?;
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
    write(&s, op, key, value, flags).await
}

/// A `PUT /v1/kv/<key>` body as the value stored: the raw bytes, at most
/// [`MAX_VALUE`] of them (apart from the handler so the fuzz target
/// checks the same).
pub(super) fn value_of(body: &[u8]) -> Result<Vec<u8>, ApiError> {
    if body.len() > MAX_VALUE {
        return Err(ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "Request body({} bytes) too large, max size: {MAX_VALUE} bytes.",
                body.len()
            ),
        ));
    }
    Ok(body.to_vec())
}

/// `DELETE /v1/kv/<key>` (`?recurse`, `?cas`).
pub async fn delete<E: Env>(
    s: Api<E>,
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
    s: &Api<E>,
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

pub(super) async fn status<E: Env>(s: &Api<E>) -> Result<(Option<String>, Vec<String>), ApiError> {
    let reply = super::context::call(s, ClientRequest::Status).await;
    match answer_of(&reply)? {
        Answer::Status { leader, peers } => Ok((leader, peers)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/status/leader`: the leader's RPC address, `""` when none.
pub async fn leader<E: Env>(s: Api<E>) -> Result<Json<String>, ApiError> {
    Ok(Json(status(&s).await?.0.unwrap_or_default()))
}

/// `GET /v1/status/peers`: the voters' RPC addresses.
pub async fn peers<E: Env>(s: Api<E>) -> Result<Json<Vec<String>>, ApiError> {
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
}

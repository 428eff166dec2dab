//! `PUT /v1/txn`: KV operations applied all or nothing (Consul's
//! transaction API). The body is a list of `{"KV": {"Verb": ..., "Key":
//! ..., "Value": base64, "Flags", "Index", "Session"}}`; the answer is 200
//! with `Results` (the entries read or written) or 409 with `Errors` (each
//! failed operation's position and why).

use axum::body::Bytes;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use serde::{Deserialize, Serialize};

use super::context::{answer_of, meta_headers, Api};
use super::error::{bad, unexpected, ApiError};
use super::kv::{ApiKv, MAX_VALUE};
use crate::env::Env;
use crate::server::{Answer, ClientRequest};
use crate::state::{Command, TxnOp, TxnVerb, MAX_TXN_OPS};

/// Largest transaction body (Consul's `txn_max_req_len`).
const MAX_TXN_BODY: usize = 512 * 1024;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct OpDef {
    #[serde(rename = "KV")]
    kv: Option<KvDef>,
    node: Option<serde_json::Value>,
    service: Option<serde_json::Value>,
    check: Option<serde_json::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct KvDef {
    verb: String,
    key: String,
    value: Option<String>,
    flags: u64,
    index: u64,
    session: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResult {
    #[serde(rename = "KV")]
    kv: ApiKv,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnErr {
    op_index: usize,
    what: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct TxnResponse {
    results: Option<Vec<TxnResult>>,
    errors: Option<Vec<TxnErr>>,
}

fn too_large(msg: String) -> ApiError {
    ApiError(StatusCode::PAYLOAD_TOO_LARGE, msg)
}

/// The operations of a request body, checked (the fuzz target checks
/// the same).
pub(super) fn parse(body: &[u8]) -> Result<Vec<TxnOp>, ApiError> {
    if body.len() > MAX_TXN_BODY {
        return Err(too_large(format!(
            "Request body({} bytes) too large, max size: {MAX_TXN_BODY} bytes.",
            body.len()
        )));
    }
    let defs: Vec<OpDef> = super::decode::body(body)?;
    if defs.len() > MAX_TXN_OPS {
        return Err(too_large(format!(
            "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
            defs.len()
        )));
    }
    defs.into_iter()
        .enumerate()
        .map(|(i, d)| {
            let kv = match d {
                OpDef { kv: Some(kv), .. } => kv,
                OpDef {
                    node,
                    service,
                    check,
                    ..
                } if node.is_some() || service.is_some() || check.is_some() => {
                    return Err(bad(format!(
                        "operation {i}: only KV operations are supported in transactions so far"
                    )))
                }
                _ => return Err(bad(format!("operation {i}: no KV operation given"))),
            };
            let verb = TxnVerb::parse(&kv.verb)
                .ok_or_else(|| bad(format!("operation {i}: unknown KV verb {:?}", kv.verb)))?;
            let value = match &kv.value {
                Some(v) => base64::engine::general_purpose::STANDARD
                    .decode(v)
                    .map_err(|e| bad(format!("operation {i}: Value is not base64: {e}")))?,
                None => Vec::new(),
            };
            if value.len() > MAX_VALUE {
                return Err(too_large(format!(
                    "operation {i}: value of {} bytes is over the {MAX_VALUE} byte limit",
                    value.len()
                )));
            }
            if kv.key.is_empty() && !matches!(verb, TxnVerb::GetTree | TxnVerb::DeleteTree) {
                return Err(bad(format!("operation {i}: missing key name")));
            }
            Ok(TxnOp {
                verb,
                key: kv.key,
                value,
                flags: kv.flags,
                index: kv.index,
                session: kv.session,
            })
        })
        .collect()
}

/// `PUT /v1/txn`.
pub async fn txn<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    let ops = parse(&body)?;
    let reply = super::context::call(
        &s,
        ClientRequest::Write {
            cmd: Box::new(Command::Txn(ops)),
            hops: 0,
        },
    )
    .await;
    let headers = meta_headers(&reply);
    match answer_of(&reply)? {
        Answer::Txn(Ok(entries)) => {
            let results = entries
                .iter()
                .map(|e| TxnResult { kv: ApiKv::from(e) })
                .collect();
            let body = TxnResponse {
                results: Some(results),
                errors: None,
            };
            Ok((headers, Json(body)).into_response())
        }
        Answer::Txn(Err(errors)) => {
            let errors = errors
                .into_iter()
                .map(|e| TxnErr {
                    op_index: e.op_index,
                    what: e.what,
                })
                .collect();
            let body = TxnResponse {
                results: None,
                errors: Some(errors),
            };
            Ok((StatusCode::CONFLICT, headers, Json(body)).into_response())
        }
        other => Err(unexpected(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_are_checked_before_anything_is_sent() {
        let ok = parse(br#"[{"KV": {"Verb": "set", "Key": "a", "Value": "aGk="}}, {"kv": {"verb": "get-tree", "key": ""}}]"#).unwrap();
        assert_eq!(ok[0].value, b"hi");
        assert_eq!(ok[1].verb, TxnVerb::GetTree);
        let err = |b: &[u8]| parse(b).unwrap_err();
        assert_eq!(
            err(br#"[{"KV": {"Verb": "frob", "Key": "a"}}]"#).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err(br#"[{"KV": {"Verb": "set", "Key": "a", "Value": "!!"}}]"#).0,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            err(br#"[{"KV": {"Verb": "set"}}]"#).0,
            StatusCode::BAD_REQUEST
        );
        assert!(err(br#"[{"Node": {"Verb": "set"}}]"#).1.contains("only KV"));
        assert_eq!(err(b"{").0, StatusCode::BAD_REQUEST);
        let many = format!(
            "[{}]",
            vec![r#"{"KV":{"Verb":"get","Key":"a"}}"#; 65].join(",")
        );
        let e = err(many.as_bytes());
        assert_eq!(e.0, StatusCode::PAYLOAD_TOO_LARGE);
        assert!(e.1.contains("65 > 64"), "{}", e.1);
    }
}

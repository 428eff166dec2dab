//! Request bodies read by Go's JSON rules, as Consul reads them: field
//! names in any case (see
//! [`normalize_keys`](crate::agent::definition::normalize_keys)), unknown
//! fields ignored, and `null` as the zero value ([`go_json`]).

use axum::http::StatusCode;
use serde_json::Value;

use super::error::ApiError;

/// Decodes a request body, whatever the case of its field names.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let v = value(bytes)?;
    crate::agent::definition::decode(v).map_err(decode_failed)
}

/// A request body as JSON, by Go's rules ([`go_json`]); a 400 when it is
/// not JSON.
pub fn value(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes)
        .map(go_json)
        .map_err(decode_failed)
}

/// Consul's 400 for a body it cannot decode.
pub fn decode_failed(e: serde_json::Error) -> ApiError {
    ApiError(
        StatusCode::BAD_REQUEST,
        format!("Request decode failed: {e}"),
    )
}

/// `v` as Go's `encoding/json` would fill a struct from it: a member whose
/// value is `null` leaves its field at the zero value, which for cairn's
/// bodies (every field defaulted) is the same as leaving it out. So such
/// members go, at every depth; `null` inside an array stays (it is an
/// element, and says where the others are).
pub fn go_json(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k, go_json(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(go_json).collect()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::agent::definition::{CheckDef, ServiceDef};

    /// Every path to an object member in `v`.
    fn member_paths(v: &Value, at: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    at.push(k.clone());
                    out.push(at.clone());
                    member_paths(v, at, out);
                    at.pop();
                }
            }
            Value::Array(items) => {
                for (i, v) in items.iter().enumerate() {
                    at.push(format!("[{i}]"));
                    member_paths(v, at, out);
                    at.pop();
                }
            }
            _ => {}
        }
    }

    /// `v` with the member at `path` set to `null` (`Some`) or removed.
    fn edit(v: &mut Value, path: &[String], null: bool) {
        let Some((last, parents)) = path.split_last() else {
            return;
        };
        let mut cur = v;
        for p in parents {
            cur = match p.strip_prefix('[').and_then(|i| i.strip_suffix(']')) {
                Some(i) => &mut cur[i.parse::<usize>().unwrap()],
                None => &mut cur[p.as_str()],
            };
        }
        if let Value::Object(m) = cur {
            if null {
                if m.contains_key(last) {
                    m.insert(last.clone(), Value::Null);
                }
            } else {
                m.remove(last);
            }
        }
    }

    /// Valid bodies with most fields set, as clients send them.
    fn examples() -> Vec<(&'static str, Value)> {
        vec![
            (
                "service",
                serde_json::json!({
                    "ID": "web-1", "Name": "web", "Tags": ["v1", "blue"],
                    "Address": "10.0.0.5", "Port": 8080,
                    "Meta": {"version": "1", "team": "a"},
                    "EnableTagOverride": true,
                    "Weights": {"Passing": 3, "Warning": 1},
                    "TaggedAddresses": {"lan": {"Address": "10.0.0.5", "Port": 8080}},
                    "Check": {"Name": "alive", "TTL": "30s", "Notes": "n"},
                    "Checks": [
                        {"Name": "http", "HTTP": "http://127.0.0.1:8080/health",
                         "Interval": "10s", "Timeout": 1000000000u64,
                         "Header": {"X-A": ["b"]}, "Method": "GET"},
                        {"CheckID": "tcp", "Name": "tcp", "TCP": "127.0.0.1:8080",
                         "Interval": "5s", "DeregisterCriticalServiceAfter": "90m"}
                    ],
                    "Connect": {"SidecarService": {"Port": 21000}}
                }),
            ),
            (
                "check",
                serde_json::json!({
                    "ID": "mem", "Name": "Memory", "Notes": "free memory",
                    "ServiceID": "web-1", "Status": "passing", "TTL": "15s",
                    "DeregisterCriticalServiceAfter": "1h"
                }),
            ),
        ]
    }

    fn decoded(kind: &str, v: &Value) -> Result<String, String> {
        let bytes = serde_json::to_vec(v).unwrap();
        let r = match kind {
            "service" => body::<ServiceDef>(&bytes).map(|d| format!("{d:?}")),
            _ => body::<CheckDef>(&bytes).map(|d| format!("{d:?}")),
        };
        r.map_err(|e| e.1)
    }

    proptest! {
        /// Go's rule, which Consul follows: a member set to `null` is
        /// decoded exactly as if it were left out.
        #[test]
        fn null_is_the_same_as_left_out(which in 0usize..2, picks in proptest::collection::vec(any::<bool>(), 64)) {
            let (kind, full) = examples().swap_remove(which);
            let mut paths = Vec::new();
            member_paths(&full, &mut Vec::new(), &mut paths);
            let (mut nulled, mut removed) = (full.clone(), full.clone());
            // Deepest first, so a parent's edit does not hide a child's.
            for (i, path) in paths.iter().enumerate().rev() {
                if picks[i % picks.len()] {
                    edit(&mut nulled, path, true);
                    edit(&mut removed, path, false);
                }
            }
            prop_assert_eq!(decoded(kind, &nulled), decoded(kind, &removed));
        }
    }

    #[test]
    fn the_examples_decode_and_nulls_go() {
        for (kind, v) in examples() {
            assert!(decoded(kind, &v).is_ok(), "{kind}: {:?}", decoded(kind, &v));
        }
        let v = go_json(
            serde_json::json!({"A": null, "B": {"C": null, "D": 1}, "E": [null, {"F": null}]}),
        );
        assert_eq!(v, serde_json::json!({"B": {"D": 1}, "E": [null, {}]}));
    }

    #[test]
    fn bad_json_is_a_400() {
        let e = body::<Value>(b"{nope").unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.starts_with("Request decode failed"));
    }
}

//! `/v1/txn` against a real agent: all-or-nothing KV transactions with
//! Consul's request and response shapes and status codes.

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{http, http_full, http_get, Agent};

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

fn txn(a: &Agent, ops: Value) -> (u16, String, Value) {
    let (status, head, body) =
        http_full(&a.http, "PUT", "/v1/txn", ops.to_string().as_bytes()).expect("HTTP");
    let v = serde_json::from_str(&body).unwrap_or(Value::Null);
    (status, head, v)
}

#[test]
fn transactions_apply_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "txn");

    let (status, head, v) = txn(
        &a,
        json!([
            {"KV": {"Verb": "set", "Key": "app/a", "Value": b64("1"), "Flags": 7}},
            {"KV": {"Verb": "cas", "Key": "app/b", "Value": b64("2"), "Index": 0}},
            // Field names in any spelling, as Consul takes them.
            {"kv": {"verb": "get", "key": "app/a"}},
        ]),
    );
    assert_eq!(status, 200, "{v}");
    assert!(
        head.to_ascii_lowercase().contains("x-consul-index"),
        "{head}"
    );
    assert!(v["Errors"].is_null(), "{v}");
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["KV"]["Key"], "app/a");
    assert!(
        results[0]["KV"]["Value"].is_null(),
        "writes answer without the value"
    );
    assert_eq!(results[2]["KV"]["Value"], b64("1"));
    assert_eq!(results[2]["KV"]["Flags"], 7);
    let index = results[1]["KV"]["ModifyIndex"].as_u64().unwrap();

    // One stale CAS and one missing key: 409, every failure named, and
    // the other operations (a write, a delete) did not happen.
    let (status, _, v) = txn(
        &a,
        json!([
            {"KV": {"Verb": "set", "Key": "app/c", "Value": b64("3")}},
            {"KV": {"Verb": "delete", "Key": "app/a"}},
            {"KV": {"Verb": "cas", "Key": "app/b", "Value": b64("x"), "Index": index + 100}},
            {"KV": {"Verb": "check-index", "Key": "nope", "Index": 1}},
        ]),
    );
    assert_eq!(status, 409, "{v}");
    assert!(v["Results"].is_null(), "{v}");
    let errors = v["Errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2, "{v}");
    assert_eq!(errors[0]["OpIndex"], 2);
    assert!(
        errors[0]["What"]
            .as_str()
            .unwrap()
            .contains("index is stale"),
        "{v}"
    );
    assert_eq!(errors[1]["OpIndex"], 3);
    assert_eq!(http(&a.http, "GET", "/v1/kv/app/c", b"").unwrap().0, 404);
    assert_eq!(http(&a.http, "GET", "/v1/kv/app/a", b"").unwrap().0, 200);

    // A CAS on the right index, a lock with a session, and a tree read.
    let (_, sess) = http(&a.http, "PUT", "/v1/session/create", b"{}").unwrap();
    let sess: Value = serde_json::from_str(&sess).unwrap();
    let id = sess["ID"].as_str().unwrap();
    let (status, _, v) = txn(
        &a,
        json!([
            {"KV": {"Verb": "cas", "Key": "app/b", "Value": b64("22"), "Index": index}},
            {"KV": {"Verb": "lock", "Key": "app/lock", "Value": b64("me"), "Session": id}},
            {"KV": {"Verb": "check-session", "Key": "app/lock", "Session": id}},
            {"KV": {"Verb": "get-tree", "Key": "app/"}},
        ]),
    );
    assert_eq!(status, 200, "{v}");
    let tree: Vec<&str> = v["Results"].as_array().unwrap()[3..]
        .iter()
        .map(|r| r["KV"]["Key"].as_str().unwrap())
        .collect();
    assert_eq!(tree, ["app/a", "app/b", "app/lock"]);
    let lock: Value = serde_json::from_str(&http_get(&a.http, "/v1/kv/app/lock")).unwrap();
    assert_eq!(lock[0]["Session"], id);

    // Requests that are wrong say so before anything is written.
    let (status, _, _) = txn(&a, json!([{"KV": {"Verb": "explode", "Key": "k"}}]));
    assert_eq!(status, 400);
    let (status, _, body) = http_full(&a.http, "PUT", "/v1/txn", b"[{").unwrap();
    assert_eq!(status, 400, "{body}");
    let many: Vec<Value> = (0..65)
        .map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}")}}))
        .collect();
    let (status, _, body) = http_full(
        &a.http,
        "PUT",
        "/v1/txn",
        Value::from(many).to_string().as_bytes(),
    )
    .unwrap();
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("65 > 64"), "{body}");
    assert_eq!(http(&a.http, "GET", "/v1/kv/k0", b"").unwrap().0, 404);
}

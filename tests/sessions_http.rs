//! Sessions over HTTP on a real agent: create, info, list, locks on KV
//! keys, destroy releasing them, and a TTL session that is not renewed
//! timing out and deleting what it held.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{http, http_get, wait_for, Agent};

fn json_of(a: &Agent, path: &str) -> Value {
    serde_json::from_str(&http_get(&a.http, path)).unwrap()
}

fn create(a: &Agent, body: &Value) -> std::io::Result<(u16, String)> {
    http(
        &a.http,
        "PUT",
        "/v1/session/create",
        body.to_string().as_bytes(),
    )
}

#[test]
fn sessions_hold_locks_until_destroyed_or_timed_out() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    // A session needs its node's serfHealth, which the leader registers.
    let id = wait_for(Duration::from_secs(20), "a session", || {
        let (s, body) = create(&a, &json!({"Name": "lock-holder"})).ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (s == 200).then(|| v["ID"].as_str().map(str::to_owned))?
    });
    let info = json_of(&a, &format!("/v1/session/info/{id}"));
    assert_eq!(info[0]["Node"], "solo");
    assert_eq!(info[0]["Name"], "lock-holder");
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(json_of(&a, "/v1/session/list").as_array().unwrap().len(), 1);
    assert_eq!(json_of(&a, "/v1/session/node/solo")[0]["ID"], id.as_str());
    assert_eq!(json_of(&a, "/v1/session/info/no-such"), json!([]));

    // The session takes the lock; another cannot.
    let (_, other) = create(&a, &json!({"LockDelay": "0s"})).unwrap();
    let other: Value = serde_json::from_str(&other).unwrap();
    let other = other["ID"].as_str().unwrap().to_owned();
    let acquire = |key: &str, s: &str| {
        http(&a.http, "PUT", &format!("/v1/kv/{key}?acquire={s}"), b"v").unwrap()
    };
    assert_eq!(acquire("lock", &id), (200, "true".into()));
    assert_eq!(acquire("lock", &other), (200, "false".into()));
    assert_eq!(json_of(&a, "/v1/kv/lock")[0]["Session"], id.as_str());
    assert_eq!(
        http(&a.http, "PUT", &format!("/v1/session/destroy/{id}"), b"").unwrap(),
        (200, "true".into())
    );
    let held = json_of(&a, "/v1/kv/lock");
    assert_eq!(held[0]["Session"], Value::Null, "released");
    // Consul's lock delay: the other may not take it for 15 s.
    assert_eq!(acquire("lock", &other), (200, "false".into()));

    // A TTL session that is renewed once and then forgotten.
    let (s, msg) = create(&a, &json!({"TTL": "5s"})).unwrap();
    assert_eq!(s, 400);
    assert!(msg.contains("Invalid Session TTL '5s'"), "{msg}");
    let (s, body) = create(
        &a,
        &json!({"TTL": "10s", "Behavior": "delete", "LockDelay": 0}),
    )
    .unwrap();
    assert_eq!(s, 200, "{body}");
    let ttl_id = serde_json::from_str::<Value>(&body).unwrap()["ID"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(acquire("ephemeral", &ttl_id), (200, "true".into()));
    let (s, renewed) = http(&a.http, "PUT", &format!("/v1/session/renew/{ttl_id}"), b"").unwrap();
    assert_eq!(s, 200);
    assert!(renewed.contains(&ttl_id));
    let renewed_at = Instant::now();
    wait_for(
        Duration::from_secs(40),
        "the TTL session to time out",
        || {
            let (s, _) = http(&a.http, "GET", "/v1/kv/ephemeral", b"").ok()?;
            (s == 404).then_some(())
        },
    );
    // Twice the TTL after the renewal, not before.
    assert!(
        renewed_at.elapsed() >= Duration::from_secs(19),
        "{:?}",
        renewed_at.elapsed()
    );
    let (s, msg) = http(&a.http, "PUT", &format!("/v1/session/renew/{ttl_id}"), b"").unwrap();
    assert_eq!(s, 404, "{msg}");
    assert!(msg.contains("not found"), "{msg}");
}

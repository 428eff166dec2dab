//! `cairn services register|deregister`, `cairn info` and `cairn watch`
//! against a real agent.

use std::process::{Command, Stdio};
use std::time::Duration;

#[path = "common/process.rs"]
mod process;
use process::{cli as cairn, http, http_get, wait_for, Agent, CAIRN};

fn services(a: &Agent) -> serde_json::Value {
    serde_json::from_str(&http_get(&a.http, "/v1/agent/services")).unwrap()
}

#[test]
fn services_register_and_deregister_from_flags_and_files() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (ok, out, err) = cairn(
        &a,
        &[
            "services",
            "register",
            "-name=web",
            "-id=web-1",
            "-tag=v1",
            "-tag=canary",
            "-port=8080",
            "-meta=team=payments",
        ],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "Registered service: web\n");
    let s = services(&a);
    assert_eq!(s["web-1"]["Service"], "web");
    assert_eq!(s["web-1"]["Tags"], serde_json::json!(["v1", "canary"]));
    assert_eq!(s["web-1"]["Port"], 8080);
    assert_eq!(s["web-1"]["Meta"]["team"], "payments");

    // A file in the agent's config format (HCL), with an embedded check.
    let file = dir.path().join("db.hcl");
    std::fs::write(
        &file,
        "services {\n  name = \"db\"\n  port = 5432\n  check {\n    ttl = \"30s\"\n  }\n}\n\
         services {\n  name = \"cache\"\n}\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let (ok, out, err) = cairn(&a, &["services", "register", f]);
    assert!(ok, "{err}");
    assert_eq!(out, "Registered service: db\nRegistered service: cache\n");
    let checks: serde_json::Value =
        serde_json::from_str(&http_get(&a.http, "/v1/agent/checks")).unwrap();
    assert_eq!(checks["service:db"]["Type"], "ttl");

    let (ok, out, _) = cairn(&a, &["services", "deregister", f]);
    assert!(ok);
    assert_eq!(
        out,
        "Deregistered service: db\nDeregistered service: cache\n"
    );
    let (ok, _, _) = cairn(&a, &["services", "deregister", "-id=web-1"]);
    assert!(ok);
    assert_eq!(services(&a), serde_json::json!({}));

    // Mistakes say what to fix and change nothing.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"services": [{"port": 1}]}"#).unwrap();
    for (args, why) in [
        (vec!["services", "register"], "-name"),
        (
            vec!["services", "register", "-meta=oops", "-name=x"],
            "key=value",
        ),
        (
            vec!["services", "register", bad.to_str().unwrap()],
            "Missing service name",
        ),
        (vec!["services", "deregister"], "-id"),
        (vec!["services", "deregister", "-id=nope"], "404"),
    ] {
        let (ok, _, err) = cairn(&a, &args);
        assert!(!ok, "{args:?} should fail");
        assert!(err.contains(why), "{args:?}: {err}");
    }
    assert_eq!(services(&a), serde_json::json!({}));
}

#[test]
fn info_prints_the_agents_stats() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (ok, out, err) = cairn(&a, &["info"]);
    assert!(ok, "{err}");
    assert!(out.contains("consul:\n"), "{out}");
    assert!(out.contains("\tserver = true\n"), "{out}");
    assert!(out.contains("serf_lan:\n\talive = 1\n"), "{out}");
}

#[test]
fn watch_runs_its_handler_on_every_change() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let seen = dir.path().join("seen");
    // The handler appends what it is given; three changes, then the watch
    // ends by itself.
    let mut watch = Command::new(CAIRN)
        .args([
            "watch",
            &format!("-http-addr={}", a.http),
            "-type=key",
            "-key=app/flag",
            "-max-changes=3",
            "sh",
            "-c",
            &format!("cat >> {}", seen.display()),
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let read = || std::fs::read_to_string(&seen).unwrap_or_default();
    // First the missing key (null), then each write.
    wait_for(Duration::from_secs(10), "the first call", || {
        read().contains("null").then_some(())
    });
    for (i, v) in ["on", "off"].iter().enumerate() {
        let (st, _) = http(&a.http, "PUT", "/v1/kv/app/flag", v.as_bytes()).unwrap();
        assert_eq!(st, 200);
        wait_for(
            Duration::from_secs(10),
            "the handler to see the write",
            || (read().matches("\"Key\": \"app/flag\"").count() == i + 1).then_some(()),
        );
    }
    let status = watch.wait().unwrap();
    assert!(status.success());
    let text = read();
    assert!(text.contains("\"Value\": \"b24=\""), "{text}"); // base64 "on"
    assert!(text.contains("\"Value\": \"b2Zm\""), "{text}"); // base64 "off"

    // A service watch hands on the health listing: none yet.
    let out = Command::new(CAIRN)
        .args([
            "watch",
            &format!("-http-addr={}", a.http),
            "-type=service",
            "-service=api",
            "-max-changes=1",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "[]");
    let (ok, _, err) = cairn(&a, &["watch", "-type=key"]);
    assert!(!ok && err.contains("-type=key needs -key"), "{err}");
}

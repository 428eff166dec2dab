//! Services and checks from config files (JSON and HCL, Consul's keys),
//! script checks, and `cairn reload` / SIGHUP replacing them.

use std::time::Duration;

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{cairn, http, wait_for, Agent, FAST_GOSSIP};

fn get(a: &Agent, path: &str) -> Value {
    let (s, body) = http(&a.http, "GET", path, b"").expect("HTTP");
    assert_eq!(s, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

/// Waits until `/v1/health/service/<name>` lists one instance whose checks
/// pass `ok`.
fn wait_check(a: &Agent, service: &str, what: &str, ok: impl Fn(&Value) -> bool) {
    wait_for(Duration::from_secs(20), what, || {
        let (s, body) = http(
            &a.http,
            "GET",
            &format!("/v1/health/service/{service}"),
            b"",
        )
        .ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (s == 200 && v.as_array()?.len() == 1 && ok(&v[0]["Checks"])).then_some(())
    });
}

fn status_of<'a>(checks: &'a Value, id: &str) -> Option<&'a str> {
    checks.as_array()?.iter().find(|c| c["CheckID"] == id)?["Status"].as_str()
}

#[test]
fn config_file_services_and_checks_run_and_reload_replaces_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf.d");
    std::fs::create_dir(&conf).unwrap();
    // A script check that warns (exit 1), in HCL with Consul's snake_case
    // keys and a nested check block.
    std::fs::write(
        conf.join("10-web.hcl"),
        r#"
service {
  name = "web"
  id   = "web-1"
  port = 8080
  tags = ["v1"]
  meta = { Owner = "ops" }
  check {
    id       = "web-script"
    args     = ["sh", "-c", "echo degraded; exit 1"]
    interval = "200ms"
  }
}
"#,
    )
    .unwrap();
    // JSON: a list of services and a node-level TTL check.
    std::fs::write(
        conf.join("20-more.json"),
        json!({
            "services": [{"Name": "db", "Port": 5432, "Checks": [{"TTL": "30s", "Status": "passing"}]}],
            "check": {"name": "node-ttl", "ttl": "1h", "status": "passing"}
        })
        .to_string(),
    )
    .unwrap();
    let a = Agent::start(
        dir.path(),
        "cfg",
        &format!("{FAST_GOSSIP}enable_local_script_checks = true\n"),
        &[
            "-server".into(),
            "-bootstrap-expect=1".into(),
            format!("-config-dir={}", conf.display()),
        ],
    );
    wait_for(Duration::from_secs(20), "the agent's HTTP API", || {
        http(&a.http, "GET", "/v1/agent/self", b"")
            .ok()
            .filter(|r| r.0 == 200)
    });
    let services = get(&a, "/v1/agent/services");
    assert_eq!(services["web-1"]["Port"], 8080);
    assert_eq!(services["web-1"]["Meta"]["Owner"], "ops");
    assert_eq!(services["db"]["Port"], 5432);
    assert_eq!(get(&a, "/v1/agent/checks")["node-ttl"]["Status"], "passing");
    // The script ran: exit 1 is a warning, and its output is kept.
    wait_check(&a, "web", "the script check to warn", |c| {
        status_of(c, "web-script") == Some("warning")
    });
    let checks = get(&a, "/v1/agent/checks");
    assert_eq!(checks["web-script"]["Output"], "degraded\n");
    assert_eq!(checks["web-script"]["Type"], "script");

    // Scripts from the API stay refused: only config files may run them.
    let (s, body) = http(
        &a.http,
        "PUT",
        "/v1/agent/check/register",
        json!({"Name": "x", "Args": ["true"], "Interval": "1s"})
            .to_string()
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(s, 400, "{body}");
    assert!(body.contains("Scripts are disabled"), "{body}");

    // A service registered through the API survives reloads.
    let (s, _) = http(
        &a.http,
        "PUT",
        "/v1/agent/service/register",
        br#"{"Name": "api-made", "Port": 1}"#,
    )
    .unwrap();
    assert_eq!(s, 200);

    // Reload: web's script now passes, db is gone, cache is new.
    std::fs::write(
        conf.join("10-web.hcl"),
        r#"
service {
  name = "web"
  id   = "web-1"
  port = 8081
  check {
    id       = "web-script"
    args     = ["sh", "-c", "exit 0"]
    interval = "200ms"
  }
}
"#,
    )
    .unwrap();
    std::fs::write(
        conf.join("20-more.json"),
        r#"{"service": {"name": "cache", "port": 6379}}"#,
    )
    .unwrap();
    let out = cairn(&["reload", &format!("-http-addr={}", a.http)]);
    assert!(out.status.success(), "{out:?}");
    let services = get(&a, "/v1/agent/services");
    assert_eq!(services["web-1"]["Port"], 8081);
    assert!(services.get("db").is_none(), "{services}");
    assert_eq!(services["cache"]["Port"], 6379);
    assert_eq!(services["api-made"]["Port"], 1);
    assert!(get(&a, "/v1/agent/checks").get("node-ttl").is_none());
    wait_check(&a, "web", "the new script to pass", |c| {
        status_of(c, "web-script") == Some("passing")
    });

    // A broken file: reload fails, says where, and changes nothing.
    std::fs::write(
        conf.join("30-bad.json"),
        r#"{"service": {"name": "x", "port": "eighty"}}"#,
    )
    .unwrap();
    let (s, body) = http(&a.http, "PUT", "/v1/agent/reload", b"").unwrap();
    assert_eq!(s, 500, "{body}");
    assert!(
        body.contains("30-bad.json") && body.contains("service"),
        "{body}"
    );
    assert_eq!(get(&a, "/v1/agent/services")["cache"]["Port"], 6379);

    // SIGHUP reloads too.
    std::fs::remove_file(conf.join("30-bad.json")).unwrap();
    std::fs::write(
        conf.join("20-more.json"),
        r#"{"service": {"name": "queue"}}"#,
    )
    .unwrap();
    a.signal("-HUP");
    wait_for(Duration::from_secs(10), "SIGHUP to reload", || {
        let s = get(&a, "/v1/agent/services");
        (s.get("queue").is_some() && s.get("cache").is_none()).then_some(())
    });
}

#[test]
fn bad_definitions_are_refused_at_start_naming_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "script.json",
            r#"{"check": {"name": "s", "args": ["true"], "interval": "1s"}}"#,
            "enable_local_script_checks",
        ),
        (
            "nointerval.json",
            r#"{"services": [{"name": "w", "check": {"http": "http://127.0.0.1:1/"}}]}"#,
            "Interval",
        ),
        (
            "noname.hcl",
            "service {\n  port = 1\n}\n",
            "Missing service name",
        ),
        (
            "notobject.json",
            r#"{"services": ["web"]}"#,
            "must be an object",
        ),
    ];
    for (file, text, says) in cases {
        let path = dir.path().join(file);
        std::fs::write(&path, text).unwrap();
        let out = cairn(&["agent", "-dev", &format!("-config-file={}", path.display())]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{file}: started");
        assert!(err.contains(file) && err.contains(says), "{file}: {err}");
    }
}

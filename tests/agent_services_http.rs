//! Services and TTL checks registered on a client agent reach the servers'
//! catalog through anti-entropy, and their health follows the check.

use std::time::Duration;

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{http, http_get, wait_for, Agent, FAST_GOSSIP};

fn put(a: &Agent, path: &str, body: &Value) -> (u16, String) {
    http(&a.http, "PUT", path, body.to_string().as_bytes()).expect("HTTP")
}

fn json_of(a: &Agent, path: &str) -> Value {
    serde_json::from_str(&http_get(&a.http, path)).unwrap()
}

/// Waits until `/v1/health/service/web` through `a` satisfies `ok`.
fn wait_health(a: &Agent, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    wait_for(Duration::from_secs(15), what, || {
        let (s, body) = http(&a.http, "GET", "/v1/health/service/web", b"").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (s == 200 && ok(&v)).then_some(v)
    })
}

#[test]
fn a_client_agents_services_and_ttl_checks_reach_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let s = Agent::solo_server(dir.path(), "srv");
    let c = Agent::start(
        dir.path(),
        "cli",
        FAST_GOSSIP,
        &[
            format!("-retry-join=127.0.0.1:{}", s.serf),
            "-retry-interval=200ms".into(),
        ],
    );
    for a in [&s, &c] {
        wait_for(Duration::from_secs(15), "the agent's HTTP API", || {
            http(&a.http, "GET", "/v1/agent/self", b"")
                .ok()
                .filter(|r| r.0 == 200)
        });
    }
    let reg = json!({
        "ID": "web-1", "Name": "web", "Port": 80, "Tags": ["blue"],
        "Check": {"TTL": "3s", "Notes": "heartbeat"}
    });
    assert_eq!(put(&c, "/v1/agent/service/register", &reg).0, 200);
    // Field names in any case, as Consul takes them.
    let lower =
        json!({"name": "db", "port": 5432, "meta": {"Tier": "gold"}, "check": {"ttl": "30s"}});
    assert_eq!(put(&c, "/v1/agent/service/register", &lower).0, 200);
    let local = json_of(&c, "/v1/agent/services");
    assert_eq!(local["db"]["Port"], 5432);
    assert_eq!(local["db"]["Meta"]["Tier"], "gold");
    assert_eq!(json_of(&c, "/v1/agent/checks")["service:db"]["Type"], "ttl");
    assert_eq!(
        http(&c.http, "PUT", "/v1/agent/service/deregister/db", b"")
            .unwrap()
            .0,
        200
    );
    assert_eq!(local["web-1"]["Service"], "web");
    assert_eq!(local["web-1"]["Datacenter"], "dc1");
    let checks = json_of(&c, "/v1/agent/checks");
    assert_eq!(
        checks["service:web-1"]["Status"], "critical",
        "Consul's initial status"
    );

    // Anti-entropy puts it in the catalog, critical at first.
    let v = wait_health(&s, "web in the catalog", |v| {
        v[0]["Service"]["ID"] == "web-1"
    });
    assert_eq!(v[0]["Node"]["Node"], "cli");
    assert!(v[0]["Checks"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "service:web-1" && c["Status"] == "critical"));

    // A pass makes it healthy; without another within its TTL it expires.
    let (st, _) = http(
        &c.http,
        "PUT",
        "/v1/agent/check/pass/service:web-1?note=fine",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200);
    let v = wait_health(&s, "web passing", |v| {
        v[0]["Checks"].as_array().is_some_and(|cs| {
            cs.iter()
                .any(|c| c["CheckID"] == "service:web-1" && c["Status"] == "passing")
        })
    });
    assert!(v[0]["Checks"].to_string().contains("fine"));
    let passing = json_of(&s, "/v1/health/service/web?passing");
    assert_eq!(passing.as_array().unwrap().len(), 1);
    wait_health(&s, "the TTL to expire", |v| {
        v[0]["Checks"].to_string().contains("TTL expired")
    });
    assert_eq!(json_of(&s, "/v1/health/service/web?passing"), json!([]));

    // update with an output, then the errors Consul gives.
    let up = json!({"Status": "warning", "Output": "slow disk"});
    assert_eq!(put(&c, "/v1/agent/check/update/service:web-1", &up).0, 200);
    let (st, msg) = http(&c.http, "PUT", "/v1/agent/check/pass/nope", b"").unwrap();
    assert_eq!(st, 404);
    assert!(msg.contains("Unknown check ID \"nope\""), "{msg}");
    let (st, msg) = put(
        &c,
        "/v1/agent/check/register",
        &json!({"Name": "h", "HTTP": "http://x"}),
    );
    assert_eq!(st, 400, "{msg}");
    let (st, msg) = http(&c.http, "PUT", "/v1/agent/service/register", b"{").unwrap();
    assert_eq!(st, 400);
    assert!(msg.contains("Request decode failed"), "{msg}");
    let (st, _) = put(&c, "/v1/agent/service/register", &json!({"Port": 1}));
    assert_eq!(st, 400);

    // A node-level TTL check, then deregistration of everything.
    let node_check = json!({"ID": "mem", "Name": "memory", "TTL": "30s", "Status": "passing"});
    assert_eq!(put(&c, "/v1/agent/check/register", &node_check).0, 200);
    wait_for(
        Duration::from_secs(15),
        "the node check in the catalog",
        || {
            let v = json_of(&s, "/v1/health/node/cli");
            v.as_array()?
                .iter()
                .any(|c| c["CheckID"] == "mem")
                .then_some(())
        },
    );
    let (st, _) = http(&c.http, "PUT", "/v1/agent/service/deregister/web-1", b"").unwrap();
    assert_eq!(st, 200);
    let (st, _) = http(&c.http, "PUT", "/v1/agent/check/deregister/mem", b"").unwrap();
    assert_eq!(st, 200);
    wait_health(&s, "web gone from the catalog", |v| v == &json!([]));
    wait_for(
        Duration::from_secs(15),
        "only serfHealth left on the node",
        || {
            let v = json_of(&s, "/v1/health/node/cli");
            let ids: Vec<&str> = v
                .as_array()?
                .iter()
                .filter_map(|c| c["CheckID"].as_str())
                .collect();
            (ids == ["serfHealth"]).then_some(())
        },
    );
    let (st, msg) = http(&c.http, "PUT", "/v1/agent/service/deregister/web-1", b"").unwrap();
    assert_eq!(st, 404, "{msg}");
}

/// A tiny HTTP server answering every request with the status in `code`.
fn health_endpoint(code: std::sync::Arc<std::sync::atomic::AtomicU16>) -> u16 {
    use std::io::{Read, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let c = code.load(std::sync::atomic::Ordering::SeqCst);
            let _ = write!(
                s,
                "HTTP/1.1 {c} X\r\nContent-Length: 7\r\nConnection: close\r\n\r\nstatus!"
            );
        }
    });
    port
}

#[test]
fn http_and_tcp_checks_probe_and_a_failing_one_hides_its_instance() {
    use std::sync::atomic::{AtomicU16, Ordering};
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    wait_for(Duration::from_secs(15), "the agent's HTTP API", || {
        http(&a.http, "GET", "/v1/agent/self", b"")
            .ok()
            .filter(|r| r.0 == 200)
    });
    let code = std::sync::Arc::new(AtomicU16::new(200));
    let port = health_endpoint(code.clone());
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let reg = json!({
        "Name": "api", "Port": port,
        "Checks": [
            {"CheckID": "api-http", "HTTP": format!("http://127.0.0.1:{port}/health"), "Interval": "500ms"},
        ]
    });
    assert_eq!(put(&a, "/v1/agent/service/register", &reg).0, 200);
    // A node-level critical check would hide every service of the node, so
    // the TCP check belongs to a service of its own.
    let tcp = json!({"Name": "db", "Check": {"TCP": format!("127.0.0.1:{closed}"), "Interval": "1s", "Timeout": "1s"}});
    assert_eq!(put(&a, "/v1/agent/service/register", &tcp).0, 200);
    let passing = |a: &Agent| {
        json_of(a, "/v1/health/service/api?passing")
            .as_array()
            .map_or(0, Vec::len)
    };
    wait_for(Duration::from_secs(15), "api passing", || {
        (passing(&a) == 1).then_some(())
    });
    let out = json_of(&a, "/v1/agent/checks");
    assert!(
        out["api-http"]["Output"]
            .as_str()
            .unwrap()
            .contains("status!"),
        "{out}"
    );
    assert_eq!(out["api-http"]["Type"], "http");

    // The endpoint starts failing: the instance leaves ?passing within
    // about one interval (the probe), plus the sync to the servers.
    code.store(500, Ordering::SeqCst);
    let flipped = std::time::Instant::now();
    wait_for(Duration::from_secs(10), "api hidden from ?passing", || {
        (passing(&a) == 0).then_some(())
    });
    let took = flipped.elapsed();
    println!("hidden from ?passing {took:?} after the endpoint failed (interval 500ms)");
    assert!(took < Duration::from_secs(3), "{took:?}");
    code.store(429, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "a warning on 429", || {
        (json_of(&a, "/v1/agent/checks")["api-http"]["Status"] == "warning").then_some(())
    });
    let db = &json_of(&a, "/v1/agent/checks")["service:db"];
    assert_eq!(db["Status"], "critical");
    assert!(db["Output"].as_str().unwrap().contains("dial tcp"), "{db}");

    // Maintenance: the service, then the whole node, leave healthy answers.
    code.store(200, Ordering::SeqCst);
    wait_for(Duration::from_secs(10), "api passing again", || {
        (passing(&a) == 1).then_some(())
    });
    let (st, _) = http(
        &a.http,
        "PUT",
        "/v1/agent/service/maintenance/api?enable=true&reason=upgrade",
        b"",
    )
    .unwrap();
    assert_eq!(st, 200);
    wait_for(Duration::from_secs(10), "api in maintenance", || {
        (passing(&a) == 0).then_some(())
    });
    let m = &json_of(&a, "/v1/agent/checks")["_service_maintenance:api"];
    assert_eq!(
        (m["Status"].as_str(), m["Notes"].as_str()),
        (Some("critical"), Some("upgrade"))
    );
    assert_eq!(
        http(
            &a.http,
            "PUT",
            "/v1/agent/service/maintenance/api?enable=false",
            b""
        )
        .unwrap()
        .0,
        200
    );
    wait_for(Duration::from_secs(10), "api back", || {
        (passing(&a) == 1).then_some(())
    });
    assert_eq!(
        http(&a.http, "PUT", "/v1/agent/maintenance?enable=true", b"")
            .unwrap()
            .0,
        200
    );
    wait_for(Duration::from_secs(10), "the node in maintenance", || {
        (passing(&a) == 0).then_some(())
    });
    assert_eq!(
        http(&a.http, "PUT", "/v1/agent/maintenance?enable=false", b"")
            .unwrap()
            .0,
        200
    );
    wait_for(Duration::from_secs(10), "the node back", || {
        (passing(&a) == 1).then_some(())
    });
    let (st, msg) = http(&a.http, "PUT", "/v1/agent/maintenance", b"").unwrap();
    assert_eq!((st, msg.as_str()), (400, "Missing value for enable"));
    let (st, _) = http(
        &a.http,
        "PUT",
        "/v1/agent/service/maintenance/nope?enable=true",
        b"",
    )
    .unwrap();
    assert_eq!(st, 404);

    // Definitions the agent cannot run are refused, saying why.
    for (body, want) in [
        (
            json!({"Name": "s", "Args": ["/bin/true"], "Interval": "1s"}),
            "Scripts are disabled",
        ),
        (
            json!({"Name": "h", "HTTP": "http://x"}),
            "Interval must be > 0",
        ),
        (
            json!({"Name": "n"}),
            "needs a TTL, or an HTTP, TCP or Args target",
        ),
    ] {
        let (st, msg) = put(&a, "/v1/agent/check/register", &body);
        assert_eq!(st, 400, "{body}: {msg}");
        assert!(msg.contains(want), "{msg}");
    }
}

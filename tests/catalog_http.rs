//! The catalog and health endpoints of a real `cairn agent` (a server that
//! bootstraps alone) over HTTP: registration, the Consul JSON shapes,
//! `?tag` and `?passing` filters, blocking queries that wake on change,
//! and Consul's errors.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{http, http_get, wait_for, Agent};

fn get_json(a: &Agent, path: &str) -> Value {
    serde_json::from_str(&http_get(&a.http, path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn put(a: &Agent, path: &str, body: &Value) -> (u16, String) {
    http(&a.http, "PUT", path, body.to_string().as_bytes()).expect("HTTP")
}

/// `X-Consul-Index` of a GET.
fn index_of(a: &Agent, path: &str) -> u64 {
    let (status, head) = process::http_head(&a.http, path).expect("HTTP");
    assert_eq!(status, 200, "{path}");
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-consul-index")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or_else(|| panic!("no X-Consul-Index on {path}: {head}"))
}

#[test]
fn catalog_and_health_endpoints_answer_like_consul() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    // The leader registers its own agent with a passing serfHealth.
    wait_for(Duration::from_secs(20), "the agent in its catalog", || {
        let (s, body) = http(&a.http, "GET", "/v1/health/node/solo", b"").ok()?;
        let checks: Value = serde_json::from_str(&body).ok()?;
        (s == 200 && checks[0]["CheckID"] == "serfHealth" && checks[0]["Status"] == "passing")
            .then_some(())
    });
    assert_eq!(get_json(&a, "/v1/catalog/datacenters"), json!(["dc1"]));
    // The common parameters: ?pretty indents, ?dc names this datacenter.
    let pretty = http_get(&a.http, "/v1/catalog/datacenters?pretty");
    assert_eq!(pretty, "[\n  \"dc1\"\n]\n");
    assert_eq!(get_json(&a, "/v1/catalog/nodes?dc=dc1")[0]["Node"], "solo");
    let (status, msg) = http(&a.http, "GET", "/v1/catalog/nodes?dc=mars", b"").unwrap();
    assert_eq!(
        (status, msg.as_str()),
        (500, "No path to datacenter \"mars\"")
    );
    // The agent sends its coordinate soon after start; the leader stores
    // coordinates in batches.
    wait_for(Duration::from_secs(20), "solo's stored coordinate", || {
        let (st, body) = http(&a.http, "GET", "/v1/coordinate/node/solo", b"").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (st == 200 && v[0]["Node"] == "solo").then_some(())
    });
    assert!(index_of(&a, "/v1/coordinate/nodes") > 0);
    let (st, _) = http(
        &a.http,
        "PUT",
        "/v1/coordinate/update",
        br#"{"Node": "solo", "Coord": {"Vec": [1, 2], "Error": 1.5}}"#,
    )
    .unwrap();
    assert_eq!(
        st, 400,
        "a coordinate of the wrong dimensionality is refused"
    );
    let (st, body) = http(
        &a.http,
        "PUT",
        "/v1/coordinate/update",
        br#"{"Node": "solo", "Coord": {"Vec": [0.5, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 0.00001}}"#,
    )
    .unwrap();
    assert_eq!((st, body.as_str()), (200, "true"));
    wait_for(Duration::from_secs(20), "the updated coordinate", || {
        let v = get_json(&a, "/v1/coordinate/node/solo");
        (v[0]["Coord"]["Vec"][0] == 0.5).then_some(())
    });
    assert_eq!(
        http(&a.http, "GET", "/v1/coordinate/node/nope", b"")
            .unwrap()
            .0,
        404
    );
    let nodes = get_json(&a, "/v1/catalog/nodes");
    assert_eq!(nodes[0]["Node"], "solo");
    assert_eq!(nodes[0]["Address"], "127.0.0.1");

    let reg = json!({
        "Node": "ext", "Address": "10.1.2.3", "NodeMeta": {"rack": "r1"},
        "Service": {"ID": "web-1", "Service": "web", "Port": 8080, "Tags": ["v1"]},
        "Check": {"CheckID": "web-alive", "Name": "web alive", "Status": "passing", "ServiceID": "web-1"}
    });
    assert_eq!(put(&a, "/v1/catalog/register", &reg), (200, "true".into()));
    let services = get_json(&a, "/v1/catalog/services");
    assert_eq!(services["web"], json!(["v1"]));
    // Servers are in the catalog as the "consul" service, port: RPC.
    assert_eq!(services["consul"], json!([]));
    let consul = get_json(&a, "/v1/catalog/service/consul");
    assert_eq!(consul[0]["Node"], "solo");
    assert!(consul[0]["ServicePort"].as_u64().unwrap() > 0);

    let web = get_json(&a, "/v1/catalog/service/web");
    assert_eq!(web.as_array().unwrap().len(), 1);
    assert_eq!(web[0]["ServiceID"], "web-1");
    assert_eq!(web[0]["ServicePort"], 8080);
    assert_eq!(web[0]["Address"], "10.1.2.3");
    assert_eq!(web[0]["NodeMeta"]["rack"], "r1");
    assert_eq!(get_json(&a, "/v1/catalog/service/web?tag=v2"), json!([]));

    let node = get_json(&a, "/v1/catalog/node/ext");
    assert_eq!(node["Services"]["web-1"]["Port"], 8080);
    assert_eq!(get_json(&a, "/v1/catalog/node/nope"), Value::Null);
    let listed = get_json(&a, "/v1/catalog/node-services/ext");
    assert_eq!(listed["Services"][0]["ID"], "web-1");
    assert_eq!(
        http(&a.http, "GET", "/v1/catalog/node-services/nope", b"")
            .unwrap()
            .0,
        404
    );

    let healthy = get_json(&a, "/v1/health/service/web?passing");
    assert_eq!(healthy[0]["Service"]["ID"], "web-1");
    assert_eq!(healthy[0]["Checks"][0]["CheckID"], "web-alive");

    // A blocking query on the service's health wakes when its check turns
    // critical, long before its wait runs out.
    let index = index_of(&a, "/v1/health/service/web");
    let http_addr = a.http.clone();
    let waiter = std::thread::spawn(move || {
        let started = Instant::now();
        let path = format!("/v1/health/service/web?index={index}&wait=20s");
        let (status, body) = http(&http_addr, "GET", &path, b"").expect("HTTP");
        (status, body, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    let mut critical = reg.clone();
    critical["Check"]["Status"] = json!("critical");
    critical["Check"]["Output"] = json!("connection refused");
    assert_eq!(put(&a, "/v1/catalog/register", &critical).0, 200);
    let (status, body, took) = waiter.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(10),
        "blocking query took {took:?}"
    );
    let woke: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(woke[0]["Checks"][0]["Status"], "critical");
    assert_eq!(get_json(&a, "/v1/health/service/web?passing"), json!([]));
    let crit = get_json(&a, "/v1/health/state/critical");
    assert!(crit
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["CheckID"] == "web-alive"));
    assert_eq!(
        get_json(&a, "/v1/health/checks/web")[0]["Output"],
        "connection refused"
    );

    // A blocking query with nothing changing returns after its wait.
    let index = index_of(&a, "/v1/catalog/services");
    let started = Instant::now();
    let (status, _) = http(
        &a.http,
        "GET",
        &format!("/v1/catalog/services?index={index}&wait=1s"),
        b"",
    )
    .unwrap();
    assert_eq!(status, 200);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900),
        "returned after {took:?}"
    );

    // Deregistering the service takes its checks with it.
    assert_eq!(
        put(
            &a,
            "/v1/catalog/deregister",
            &json!({"Node": "ext", "ServiceID": "web-1"})
        ),
        (200, "true".into())
    );
    assert_eq!(get_json(&a, "/v1/catalog/services")["web"], Value::Null);
    assert_eq!(get_json(&a, "/v1/health/checks/web"), json!([]));

    // Consul's errors.
    for (path, body, want) in [
        (
            "/v1/catalog/register",
            json!({"Address": "1.2.3.4"}),
            "Must provide node",
        ),
        (
            "/v1/catalog/register",
            json!({"Node": "x"}),
            "Must provide address",
        ),
        (
            "/v1/catalog/register",
            json!({"Node": "x", "Address": "1.2.3.4", "Service": {"Port": 1}}),
            "Must provide service name",
        ),
        ("/v1/catalog/deregister", json!({}), "Must provide node"),
    ] {
        let (status, text) = put(&a, path, &body);
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(text.contains(want), "{path}: {text}");
    }
    let (status, text) = http(&a.http, "PUT", "/v1/catalog/register", b"{not json").unwrap();
    assert_eq!(status, 400);
    assert!(text.contains("Request decode failed"), "{text}");
    let (status, text) = http(&a.http, "GET", "/v1/health/state/bogus", b"").unwrap();
    assert_eq!(status, 400, "{text}");
}

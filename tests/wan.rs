//! Two datacenters on 127.0.0.1: their servers federate over the WAN pool
//! (`<node>.<dc>` members, WAN coordinates), and the datacenter listings
//! come from it.

use std::time::Duration;

#[path = "common/process.rs"]
mod process;
use process::{cli, http_get, wait_for, Agent, FAST_GOSSIP};

const FAST_WAN: &str =
    "gossip_wan {\n  probe_interval = \"200ms\"\n  probe_timeout = \"100ms\"\n  gossip_interval = \"50ms\"\n}\n";

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

/// The WAN pool as `a` sees it, or `None` while its API is not up.
fn wan_members(a: &Agent) -> Option<Vec<(String, u64)>> {
    let (st, body) = process::http(&a.http, "GET", "/v1/agent/members?wan", b"").ok()?;
    if st != 200 {
        return None;
    }
    let mut out: Vec<(String, u64)> = json(&body)
        .as_array()?
        .iter()
        .map(|m| {
            (
                m["Name"].as_str().unwrap().to_string(),
                m["Status"].as_u64().unwrap(),
            )
        })
        .collect();
    out.sort();
    Some(out)
}

#[test]
fn servers_of_two_datacenters_federate_over_the_wan_pool() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!("{FAST_GOSSIP}{FAST_WAN}");
    let s1 = Agent::start(
        dir.path(),
        "s1",
        &config,
        &["-server".into(), "-bootstrap-expect=1".into()],
    );
    let s2 = Agent::start(
        dir.path(),
        "s2",
        &config,
        &[
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-datacenter=dc2".into(),
            format!("-retry-join-wan=127.0.0.1:{}", s1.wan),
            "-retry-interval=200ms".into(),
        ],
    );
    let both = vec![("s1.dc1".to_string(), 1), ("s2.dc2".to_string(), 1)];
    for a in [&s1, &s2] {
        wait_for(
            Duration::from_secs(20),
            "both servers in the WAN pool",
            || (wan_members(a)? == both).then_some(()),
        );
    }
    let (ok, out, err) = cli(&s2, &["members", "-wan"]);
    assert!(
        ok && out.contains("s1.dc1") && out.contains("s2.dc2"),
        "{out}{err}"
    );

    // Each server lists its own datacenter first (nearest), then the other.
    assert_eq!(
        json(&http_get(&s1.http, "/v1/catalog/datacenters")),
        serde_json::json!(["dc1", "dc2"])
    );
    assert_eq!(
        json(&http_get(&s2.http, "/v1/catalog/datacenters")),
        serde_json::json!(["dc2", "dc1"])
    );

    // WAN coordinates for every server, by datacenter.
    let dcs = wait_for(Duration::from_secs(20), "WAN coordinates of both", || {
        let v = json(&http_get(&s1.http, "/v1/coordinate/datacenters"));
        let full = v.as_array()?.len() == 2
            && v.as_array()?
                .iter()
                .all(|d| d["Coordinates"].as_array().is_some_and(|c| c.len() == 1));
        full.then_some(v)
    });
    assert_eq!(dcs[0]["Datacenter"], "dc1");
    assert_eq!(dcs[1]["Datacenter"], "dc2");
    assert_eq!(dcs[1]["Coordinates"][0]["Node"], "s2");
    assert_eq!(dcs[1]["AreaID"], "wan");

    // Estimated RTTs from WAN coordinates: a pair, and percentiles over
    // every server pair of two datacenters.
    let (ok, out, err) = cli(&s1, &["rtt", "-wan", "s2.dc2"]);
    assert!(
        ok && out.contains("s2.dc2 <-> s1.dc1") && out.contains("WAN"),
        "{out}{err}"
    );
    let p = json(&http_get(
        &s1.http,
        "/v1/coordinate/rtt?source=dc1&destination=dc2",
    ));
    assert_eq!(p["Pairs"], 1);
    let p50 = p["P50Ms"].as_f64().unwrap();
    assert!(p50 >= 0.0 && p50 <= p["P99Ms"].as_f64().unwrap(), "{p}");
    let (ok, out, err) = cli(&s1, &["rtt", "-datacenters", "dc1", "dc2"]);
    assert!(ok && out.contains("p99"), "{out}{err}");
    // Over all nodes: LAN legs (here none: each node is its own server)
    // plus the WAN estimate; dc2's LAN coordinates come from dc2.
    let all = wait_for(Duration::from_secs(30), "LAN coordinates of both", || {
        let (st, body) = process::http(
            &s1.http,
            "GET",
            "/v1/coordinate/rtt?source=dc1&destination=dc2&nodes=all",
            b"",
        )
        .ok()?;
        (st == 200).then(|| json(&body))
    });
    assert_eq!(
        (all["Pairs"].as_u64(), all["Nodes"].as_str()),
        (Some(1), Some("all"))
    );
    assert!(
        (all["P50Ms"].as_f64().unwrap() - p50).abs() < 1.0,
        "{all} vs {p}"
    );
    let (ok, out, err) = cli(&s1, &["rtt", "-datacenters", "-all-nodes", "dc1", "dc2"]);
    assert!(ok && out.contains("node pairs"), "{out}{err}");
    let (st, _) = process::http(&s1.http, "GET", "/v1/coordinate/rtt?source=dc1", b"").unwrap();
    assert_eq!(st, 400);

    // ?dc= goes to the other datacenter's servers: KV both ways, the
    // catalog, the leader, and DNS names of the other datacenter.
    let (st, out) = process::http(&s1.http, "PUT", "/v1/kv/where?dc=dc2", b"in dc2").unwrap();
    assert_eq!(st, 200, "{out}");
    assert_eq!(http_get(&s2.http, "/v1/kv/where?raw"), "in dc2");
    let (st, _) = process::http(&s1.http, "GET", "/v1/kv/where", b"").unwrap();
    assert_eq!(st, 404, "dc1 has no such key");
    assert_eq!(http_get(&s1.http, "/v1/kv/where?raw&dc=dc2"), "in dc2");
    let reg =
        r#"{"Node": "web-1", "Address": "10.9.0.1", "Service": {"Service": "web", "Port": 80}}"#;
    let (st, out) = process::http(
        &s1.http,
        "PUT",
        "/v1/catalog/register?dc=dc2",
        reg.as_bytes(),
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    let web = json(&http_get(&s1.http, "/v1/catalog/service/web?dc=dc2"));
    assert_eq!(web[0]["Node"], "web-1");
    assert_eq!(
        json(&http_get(&s1.http, "/v1/catalog/service/web")),
        serde_json::json!([])
    );
    let leader = json(&http_get(&s1.http, "/v1/status/leader?dc=dc2"));
    assert_eq!(leader, format!("127.0.0.1:{}", s2.rpc).as_str());
    let (st, body) = process::http(&s1.http, "GET", "/v1/kv/x?dc=nowhere", b"").unwrap();
    assert_eq!(st, 500);
    assert!(body.contains("No path to datacenter"), "{body}");
    let port = s1.dns.split(':').nth(1).unwrap().to_string();
    let dig = |name: &str| {
        let out = std::process::Command::new("dig")
            .args(["+short", "-p", &port, "@127.0.0.1", name, "A"])
            .output()
            .expect("dig (bind9-dnsutils)");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    assert_eq!(dig("web.service.dc2.consul"), "10.9.0.1");
    // A body naming another datacenter is registered there, as in Consul.
    let reg = r#"{"Datacenter": "dc2", "Node": "web-2", "Address": "10.9.0.2",
                  "Service": {"Service": "web", "Port": 80}}"#;
    let (st, out) = process::http(&s1.http, "PUT", "/v1/catalog/register", reg.as_bytes()).unwrap();
    assert_eq!(st, 200, "{out}");
    let web = json(&http_get(&s2.http, "/v1/catalog/service/web"));
    assert_eq!(web.as_array().map(Vec::len), Some(2), "{web}");
    assert_eq!(web[1]["Datacenter"], "dc2");
    let (st, out) = process::http(
        &s1.http,
        "PUT",
        "/v1/catalog/deregister",
        br#"{"Datacenter": "dc2", "Node": "web-2"}"#,
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    assert_eq!(dig("web.service.dc2.consul"), "10.9.0.1");

    // A prepared query fails over to the nearest other datacenter while
    // every local instance is critical.
    let api = |a: &Agent, node: &str, addr: &str, status: &str| {
        let reg = format!(
            r#"{{"Node": "{node}", "Address": "{addr}", "Service": {{"Service": "api", "Port": 9}},
                "Check": {{"CheckID": "api", "Name": "api", "ServiceID": "api", "Status": "{status}"}}}}"#
        );
        let (st, out) =
            process::http(&a.http, "PUT", "/v1/catalog/register", reg.as_bytes()).unwrap();
        assert_eq!(st, 200, "{out}");
    };
    api(&s1, "api-1", "10.1.0.1", "critical");
    api(&s2, "api-2", "10.2.0.1", "passing");
    let body = r#"{"Name": "api", "Service": {"Service": "api", "Failover": {"NearestN": 1}}}"#;
    let (st, out) = process::http(&s1.http, "POST", "/v1/query", body.as_bytes()).unwrap();
    assert_eq!(st, 200, "{out}");
    let id = json(&out)["ID"].as_str().unwrap().to_string();
    let run = json(&http_get(&s1.http, "/v1/query/api/execute"));
    assert_eq!(run["Datacenter"], "dc2", "{run}");
    assert_eq!(run["Failovers"], 1);
    assert_eq!(run["Nodes"][0]["Node"]["Node"], "api-2");
    // DNS runs prepared queries too: `<name>.query[.<dc>]`, failover
    // included; an unknown query is NXDOMAIN.
    assert_eq!(dig("api.query.consul"), "10.2.0.1");
    // Queries belong to their datacenter: `.dc2` runs dc2's.
    assert!(dig("api.query.dc2.consul").is_empty());
    let (st, out) = process::http(
        &s1.http,
        "POST",
        "/v1/query?dc=dc2",
        br#"{"Name": "api", "Service": {"Service": "api"}}"#,
    )
    .unwrap();
    assert_eq!(st, 200, "{out}");
    assert_eq!(dig("api.query.dc2.consul"), "10.2.0.1");
    let out = std::process::Command::new("dig")
        .args(["-p", &port, "@127.0.0.1", "nope.query.consul", "A"])
        .output()
        .expect("dig");
    assert!(String::from_utf8_lossy(&out.stdout).contains("NXDOMAIN"));
    // ?dc= runs it in the other datacenter, where the instance is local.
    let run = json(&http_get(&s1.http, "/v1/query/api/execute?dc=dc2"));
    assert_eq!(run["Datacenter"], "dc2", "{run}");
    assert_eq!(run["Failovers"], 0);
    // Healthy here again: the local instance answers.
    api(&s1, "api-1", "10.1.0.1", "passing");
    let run = json(&http_get(&s1.http, &format!("/v1/query/{id}/execute")));
    assert_eq!(run["Datacenter"], "dc1", "{run}");
    assert_eq!(run["Nodes"][0]["Node"]["Node"], "api-1");
    assert_eq!(dig("api.query.consul"), "10.1.0.1");
    // `?near` orders local answers by RTT from a node (`_agent`: this one).
    api(&s1, "api-3", "10.1.0.3", "passing");
    let run = json(&http_get(
        &s1.http,
        "/v1/query/api/execute?near=_agent&limit=1",
    ));
    assert_eq!(run["Nodes"].as_array().map(Vec::len), Some(1), "{run}");
    let listed = json(&http_get(&s1.http, "/v1/query"));
    assert_eq!(listed[0]["Service"]["Failover"]["NearestN"], 1);
    let (st, _) = process::http(&s1.http, "GET", "/v1/query/nope/execute", b"").unwrap();
    assert_eq!(st, 404);

    // A client agent is in no WAN pool, and may not join one.
    let client = Agent::client_of(dir.path(), "c1", &s1);
    wait_for(
        Duration::from_secs(20),
        "the client to see s1 as a server",
        || (wan_members(&client)? == [("s1.dc1".to_string(), 1)]).then_some(()),
    );
    let data = dir.path().join("x");
    let out = process::cairn(&[
        "agent",
        "-node=x",
        &format!("-data-dir={}", data.display()),
        "-bind=127.0.0.1",
        "-join-wan=127.0.0.1:1",
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("only servers join the WAN pool"),
        "{err}"
    );

    // A server that leaves shows as left in the other datacenter's pool.
    let (ok, _, err) = cli(&s2, &["leave"]);
    assert!(ok, "{err}");
    wait_for(Duration::from_secs(20), "s2.dc2 to have left", || {
        (wan_members(&s1)? == [("s1.dc1".to_string(), 1), ("s2.dc2".to_string(), 3)]).then_some(())
    });
}

/// ACLs at default deny with `primary_datacenter = "dc1"`, `root` as every
/// token the agent needs, and `extra` in the `acl` block.
fn acl_config(root: &str, extra: &str) -> String {
    format!(
        "{FAST_GOSSIP}{FAST_WAN}primary_datacenter = \"dc1\"\nacl {{\n  enabled = true\n  \
         default_policy = \"deny\"\n  {extra}\n  tokens {{\n    \
         initial_management = \"{root}\"\n    agent = \"{root}\"\n    replication = \"{root}\"\n  }}\n}}\n"
    )
}

/// A server of dc1 and one of dc2 joined over the WAN, both with `config`.
fn two_datacenters(dir: &std::path::Path, config: &str) -> (Agent, Agent) {
    let s1 = Agent::start(
        dir,
        "s1",
        config,
        &["-server".into(), "-bootstrap-expect=1".into()],
    );
    let s2 = Agent::start(
        dir,
        "s2",
        config,
        &[
            "-server".into(),
            "-bootstrap-expect=1".into(),
            "-datacenter=dc2".into(),
            format!("-retry-join-wan=127.0.0.1:{}", s1.wan),
            "-retry-interval=200ms".into(),
        ],
    );
    (s1, s2)
}

/// `method path` with `body` as `token`: the status and body (0 and
/// nothing when the agent did not answer).
fn call(a: &Agent, method: &str, path: &str, token: &str, body: &str) -> (u16, String) {
    let head = format!("X-Consul-Token: {token}\r\n");
    match process::http_with(&a.http, method, path, &head, body.as_bytes()) {
        Ok((st, _, out)) => (st, out),
        Err(_) => (0, String::new()),
    }
}

/// ACL replication: dc1 is the primary; dc2's server copies its policies,
/// roles and global tokens, resolves them itself (requests to dc2 with a
/// token made in dc1 work, directly and with `?dc=dc2`), sends a global
/// token made through dc2 to dc1 and can read it back at once, keeps its
/// local tokens to itself, and reports all this at `/v1/acl/replication`.
#[test]
fn a_secondary_datacenter_replicates_the_primarys_acls() {
    const ROOT: &str = "4c1b1d7e-0000-4000-8000-0000000r00t0";
    let dir = tempfile::tempdir().unwrap();
    let acl = acl_config(ROOT, "enable_token_replication = true");
    let (s1, s2) = two_datacenters(dir.path(), &acl);
    // A policy and a token in the primary.
    let policy = r#"{"Name":"app","Rules":"key_prefix \"app/\" { policy = \"write\" }"}"#;
    wait_for(Duration::from_secs(30), "the policy written in dc1", || {
        (call(&s1, "PUT", "/v1/acl/policy", ROOT, policy).0 == 200).then_some(())
    });
    let (st, out) = call(
        &s1,
        "PUT",
        "/v1/acl/token",
        ROOT,
        r#"{"Description":"app","Policies":[{"Name":"app"}]}"#,
    );
    assert_eq!(st, 200, "{out}");
    let app = json(&out)["SecretID"].as_str().unwrap().to_string();

    // dc2 resolves it itself once replicated: directly, and from dc1 with
    // ?dc=dc2 (dc2's servers judge requests for dc2).
    wait_for(Duration::from_secs(30), "the token working in dc2", || {
        (call(&s2, "PUT", "/v1/kv/app/x", &app, "2").0 == 200).then_some(())
    });
    let (st, _) = call(&s1, "PUT", "/v1/kv/app/y?dc=dc2", &app, "1");
    assert_eq!(st, 200);
    let (st, _) = call(&s2, "PUT", "/v1/kv/other", &app, "1");
    assert_eq!(st, 403, "the policy's limits hold in dc2");
    let status = json(&call(&s2, "GET", "/v1/acl/replication", ROOT, "").1);
    assert_eq!(status["Enabled"], true, "{status}");
    assert_eq!(status["Running"], true, "{status}");
    assert_eq!(status["SourceDatacenter"], "dc1", "{status}");
    assert_eq!(status["ReplicationType"], "tokens", "{status}");
    assert!(status["ReplicatedIndex"].as_u64().unwrap() > 0, "{status}");
    let primary = json(&call(&s1, "GET", "/v1/acl/replication", ROOT, "").1);
    assert_eq!(primary["Enabled"], false, "{primary}");

    // A global token made through dc2 is the primary's, and readable in
    // dc2 at once; a local one stays in dc2.
    let (st, out) = call(
        &s2,
        "PUT",
        "/v1/acl/token",
        ROOT,
        r#"{"Description":"made in dc2","Policies":[{"Name":"app"}]}"#,
    );
    assert_eq!(st, 200, "{out}");
    let global = json(&out)["AccessorID"].as_str().unwrap().to_string();
    let (st, _) = call(&s1, "GET", &format!("/v1/acl/token/{global}"), ROOT, "");
    assert_eq!(st, 200, "the global token is the primary's");
    let (st, out) = call(
        &s2,
        "PUT",
        "/v1/acl/token",
        ROOT,
        r#"{"Description":"dc2 only","Local":true,"Policies":[{"Name":"app"}]}"#,
    );
    assert_eq!(st, 200, "{out}");
    let local = json(&out)["AccessorID"].as_str().unwrap().to_string();
    let (st, _) = call(&s1, "GET", &format!("/v1/acl/token/{local}"), ROOT, "");
    assert_eq!(st, 403, "a local token stays in its datacenter");
    // An auth method of dc2 that would make global tokens: its logins are
    // refused in words (Consul's), not with a forwarded write's 403.
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let method = serde_json::json!({
        "Name": "idp", "Type": "jwt", "TokenLocality": "global",
        "Config": {"JWTValidationPubKeys": [key.public_key_pem()], "JWTSupportedAlgs": ["ES256"]},
    });
    let (st, out) = call(&s2, "PUT", "/v1/acl/auth-method", ROOT, &method.to_string());
    assert_eq!(st, 200, "{out}");
    let rule = r#"{"AuthMethod":"idp","BindType":"service","BindName":"web"}"#;
    let (st, out) = call(&s2, "PUT", "/v1/acl/binding-rule", ROOT, rule);
    assert_eq!(st, 200, "{out}");
    let signer = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
    let bearer = jsonwebtoken::encode(&header, &serde_json::json!({"exp": exp}), &signer).unwrap();
    let body = serde_json::json!({"AuthMethod": "idp", "BearerToken": bearer});
    let (st, out) = call(&s2, "POST", "/v1/acl/login", "", &body.to_string());
    assert!(
        st != 200 && out.contains("only permitted in the primary datacenter"),
        "{st} {out}"
    );

    // A policy deleted in the primary goes from dc2 too, and survives
    // replication there no longer.
    let (_, out) = call(&s1, "GET", "/v1/acl/policy/name/app", ROOT, "");
    let id = json(&out)["ID"].as_str().unwrap().to_string();
    let (st, _) = call(&s2, "DELETE", &format!("/v1/acl/policy/{id}"), ROOT, "");
    assert_eq!(st, 200);
    let (st, _) = call(&s1, "GET", &format!("/v1/acl/policy/{id}"), ROOT, "");
    assert_eq!(st, 404, "deleted through dc2, at the primary");
    let (st, _) = call(&s2, "PUT", "/v1/kv/app/z", &app, "1");
    assert_eq!(
        st, 403,
        "without its policy the token grants nothing in dc2"
    );
}

/// Without token replication (Consul's default), a secondary copies the
/// primary's policies but not its global tokens: it asks the primary to
/// resolve them, keeps each answer for `acl.token_ttl`, and while the
/// primary is gone the down policy (`extend-cache`) keeps what it saw. A
/// token it never saw is refused then.
#[test]
fn without_token_replication_a_secondary_resolves_global_tokens_at_the_primary() {
    const ROOT: &str = "4c1b1d7e-0000-4000-8000-0000000r00t1";
    const APP: &str = "4c1b1d7e-0000-4000-8000-000000000a99";
    const UNSEEN: &str = "4c1b1d7e-0000-4000-8000-000000000b99";
    let dir = tempfile::tempdir().unwrap();
    let acl = acl_config(ROOT, "token_ttl = \"1s\"");
    let (mut s1, s2) = two_datacenters(dir.path(), &acl);
    let policy = r#"{"Name":"app","Rules":"key_prefix \"app/\" { policy = \"write\" }"}"#;
    wait_for(Duration::from_secs(30), "the policy written in dc1", || {
        (call(&s1, "PUT", "/v1/acl/policy", ROOT, policy).0 == 200).then_some(())
    });
    for secret in [APP, UNSEEN] {
        let token = format!(r#"{{"SecretID":"{secret}","Policies":[{{"Name":"app"}}]}}"#);
        let (st, out) = call(&s1, "PUT", "/v1/acl/token", ROOT, &token);
        assert_eq!(st, 200, "{out}");
    }
    wait_for(
        Duration::from_secs(30),
        "the dc1 token working in dc2",
        || (call(&s2, "PUT", "/v1/kv/app/x", APP, "1").0 == 200).then_some(()),
    );
    let (st, _) = call(&s2, "PUT", "/v1/kv/other", APP, "1");
    assert_eq!(st, 403, "the policy's limits hold in dc2");
    let status = json(&call(&s2, "GET", "/v1/acl/replication", ROOT, "").1);
    assert_eq!(status["ReplicationType"], "policies", "{status}");
    let (st, out) = call(&s2, "GET", "/v1/acl/token/self", APP, "");
    assert_eq!(st, 200, "{out}");

    s1.kill();
    std::thread::sleep(Duration::from_millis(1500));
    let (st, out) = call(&s2, "PUT", "/v1/kv/app/y", APP, "2");
    assert_eq!(
        st, 200,
        "extend-cache: a token seen before still works: {out}"
    );
    let (st, _) = call(&s2, "PUT", "/v1/kv/app/z", UNSEEN, "3");
    assert_eq!(st, 403, "a token never seen cannot be resolved");
}

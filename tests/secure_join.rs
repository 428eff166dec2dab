//! `cairn agent -secure` on real processes: the first server makes the
//! cluster's gossip key, agent CA and bootstrap token; two more servers
//! and a client agent join with one-time join tokens and form one
//! cluster, encrypted, over mutual TLS, at default-deny ACLs. A token used
//! twice, an expired one, a forged one and one for the other role are
//! refused, each saying why, and leave nothing behind.

use std::path::Path;
use std::time::Duration;

#[path = "common/process.rs"]
mod process;

use process::{http_with, wait_for, Agent, FAST_GOSSIP};

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{e}: {s}"))
}

fn secure(extra: &[&str]) -> Vec<String> {
    ["-secure", "-retry-interval=200ms"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// `method path` on `a` with `token`: status and body.
fn call(a: &Agent, token: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let header = format!("X-Consul-Token: {token}\r\n");
    let (st, _, body) = http_with(&a.http, method, path, &header, body.as_bytes())
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    (st, body)
}

/// A new join token from `a`.
fn join_token(a: &Agent, token: &str, body: &str) -> String {
    let (st, out) = call(a, token, "PUT", "/v1/acl/join-token", body);
    assert_eq!(st, 200, "{out}");
    json(&out)["JoinToken"].as_str().unwrap().to_string()
}

/// Starts an agent that must fail to join; what it said.
fn refused(dir: &Path, name: &str, token: &str, server: bool) -> String {
    let t = format!("-join-token={token}");
    let mut args = vec![t.as_str()];
    if server {
        args.push("-server");
    }
    let mut a = Agent::start(dir, name, FAST_GOSSIP, &secure(&args));
    let code = a.wait_exit(Duration::from_secs(60));
    assert_ne!(code, Some(0), "{name} started");
    assert!(
        !dir.join(name).join("secure").exists(),
        "{name} kept material from a refused join"
    );
    a.log_text()
}

fn alive_members(a: &Agent, token: &str) -> Option<Vec<String>> {
    let (st, body) = call(a, token, "GET", "/v1/agent/members", "");
    if st != 200 {
        return None;
    }
    let mut names: Vec<String> = json(&body)
        .as_array()?
        .iter()
        .filter(|m| m["Status"] == 1)
        .map(|m| m["Name"].as_str().unwrap_or_default().to_string())
        .collect();
    names.sort();
    Some(names)
}

#[test]
fn agents_join_a_secure_cluster_once_each_with_one_time_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let s1 = Agent::start(d, "s1", FAST_GOSSIP, &secure(&["-server"]));
    let bootstrap_file = d.join("s1/secure/bootstrap-token");
    let mgmt = wait_for(Duration::from_secs(20), "the bootstrap token", || {
        std::fs::read_to_string(&bootstrap_file).ok()
    });
    let mgmt = mgmt.trim().to_string();
    wait_for(Duration::from_secs(20), "a leader", || {
        let (st, body) = call(&s1, "", "GET", "/v1/status/leader", "");
        (st == 200 && body.len() > 2).then_some(())
    });
    assert!(s1.log_text().contains("bootstrap"), "{}", s1.log_text());

    // Default deny: without a token, nothing to read, and no join tokens.
    let (st, _) = call(&s1, "", "GET", "/v1/kv/x", "");
    assert_eq!(st, 403);
    let (st, _) = call(&s1, "", "PUT", "/v1/acl/join-token", "");
    assert_eq!(st, 403);
    // Join tokens wait until the CA is in Raft (the leader stores it).
    let mk = |body: &str| {
        wait_for(Duration::from_secs(20), "a join token", || {
            let (st, out) = call(&s1, &mgmt, "PUT", "/v1/acl/join-token", body);
            (st == 200).then(|| json(&out)["JoinToken"].as_str().unwrap().to_string())
        })
    };
    let server_tokens = [mk(r#"{"Server": true}"#), mk(r#"{"Server": true}"#)];
    // The CLI makes the client's, as an operator would.
    let token_file = d.join("mgmt-token");
    std::fs::write(&token_file, &mgmt).unwrap();
    let out = std::process::Command::new(process::CAIRN)
        .args(["acl", "join-token", "create", "-ttl=10m"])
        .env("CAIRN_HTTP_ADDR", format!("http://{}", s1.http))
        .env("CONSUL_HTTP_TOKEN_FILE", &token_file)
        .output()
        .unwrap();
    let client_token = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        out.status.success() && client_token.starts_with("cairn-join-1."),
        "{client_token} {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let s2 = Agent::start(
        d,
        "s2",
        FAST_GOSSIP,
        &secure(&["-server", &format!("-join-token={}", server_tokens[0])]),
    );
    let s3 = Agent::start(
        d,
        "s3",
        FAST_GOSSIP,
        &secure(&["-server", &format!("-join-token={}", server_tokens[1])]),
    );
    let token_at = d.join("client-token");
    std::fs::write(&token_at, &client_token).unwrap();
    let mut c1 = Agent::start(
        d,
        "c1",
        FAST_GOSSIP,
        &secure(&[&format!("-join-token=@{}", token_at.display())]),
    );
    let all = ["c1", "s1", "s2", "s3"].map(String::from).to_vec();
    wait_for(Duration::from_secs(60), "four alive members", || {
        (alive_members(&s1, &mgmt)? == all).then_some(())
    });
    wait_for(Duration::from_secs(60), "three Raft voters", || {
        let (st, body) = call(&s1, &mgmt, "GET", "/v1/operator/raft/configuration", "");
        let v = json(&body);
        let voters = v["Servers"]
            .as_array()?
            .iter()
            .filter(|s| s["Voter"] == true)
            .count();
        (st == 200 && voters == 3).then_some(())
    });
    // Data written through the client reaches the servers, over TLS.
    let (st, body) = call(&c1, &mgmt, "PUT", "/v1/kv/hello", "world");
    assert_eq!((st, body.trim()), (200, "true"));
    wait_for(Duration::from_secs(10), "the key on s3", || {
        let (st, body) = call(&s3, &mgmt, "GET", "/v1/kv/hello?raw&stale", "");
        (st == 200 && body == "world").then_some(())
    });
    // Each joined agent has its own node-identity token, and is in the
    // catalog by its own doing.
    wait_for(Duration::from_secs(30), "c1 in the catalog", || {
        let (st, body) = call(&s1, &mgmt, "GET", "/v1/catalog/node/c1", "");
        (st == 200 && json(&body)["Node"]["Node"] == "c1").then_some(())
    });
    let agent_token = std::fs::read_to_string(d.join("c1/secure/agent-token")).unwrap();
    let (st, body) = call(&c1, agent_token.trim(), "GET", "/v1/acl/token/self", "");
    assert_eq!(st, 200, "{body}");
    assert_eq!(json(&body)["NodeIdentities"][0]["NodeName"], "c1", "{body}");

    // Every refusal says why, and admits nobody.
    let log = refused(d, "c2", &client_token, false);
    assert!(log.contains("already used"), "{log}");
    let short = join_token(&s1, &mgmt, r#"{"TTL": "1s"}"#);
    std::thread::sleep(Duration::from_millis(1500));
    let log = refused(d, "c3", &short, false);
    assert!(log.contains("expired"), "{log}");
    let log = refused(d, "c4", &forged(&client_token), false);
    assert!(log.contains("not recognised"), "{log}");
    let log = refused(d, "c5", &join_token(&s1, &mgmt, ""), true);
    assert!(log.contains("admits a client agent"), "{log}");
    assert_eq!(alive_members(&s1, &mgmt).unwrap(), all);

    // A restarted agent uses what it was given, not a token.
    c1.kill();
    c1.restart();
    wait_for(Duration::from_secs(30), "c1 back", || {
        let header = format!("X-Consul-Token: {mgmt}\r\n");
        let (st, _, body) = http_with(&c1.http, "GET", "/v1/kv/hello?raw", &header, b"").ok()?;
        (st == 200 && body == "world").then_some(())
    });
    let log = c1.log_text();
    assert!(log.contains("joined before"), "{log}");
    assert_eq!(log.matches("admitted to the cluster").count(), 1, "{log}");
    drop((s2, s3));
}

/// `token` with its secret replaced: everything else genuine.
fn forged(token: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let body = token.strip_prefix("cairn-join-1.").unwrap();
    let mut v: serde_json::Value = serde_json::from_slice(&b64.decode(body).unwrap()).unwrap();
    v["Secret"] = "3f2c8a0e-1b7d-4c55-9e61-0a9d2b7c4e10".into();
    format!(
        "cairn-join-1.{}",
        b64.encode(serde_json::to_vec(&v).unwrap())
    )
}

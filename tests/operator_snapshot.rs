//! Three servers, each a `cairn agent` process on 127.0.0.1 with ACLs on:
//! the operator API shows the Raft group and autopilot's view of it,
//! leadership moves to the server asked for, and a snapshot saved with
//! `cairn snapshot save` restores every table (KV, catalog, sessions,
//! ACLs, intentions, the CA) into a wiped cluster, on every server, while
//! a damaged archive is refused and changes nothing.

use std::time::Duration;

use serde_json::Value;

#[path = "common/process.rs"]
mod process;

use process::{http_with, wait_for, Agent, CAIRN, FAST_GOSSIP};

const ROOT: &str = "3c1f6b33-6f0e-4b7e-9a59-5e0f8f1e2d01";

fn config() -> String {
    format!(
        "{FAST_GOSSIP}\nacl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
         initial_management = \"{ROOT}\"\n    agent = \"{ROOT}\"\n  }}\n}}\n"
    )
}

fn node_id(i: usize) -> String {
    format!("a{i}a{i}a{i}a{i}-0000-4000-8000-00000000000{i}")
}

/// A request with the management token: status and body (`None` while
/// the agent does not answer).
fn try_call(a: &Agent, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let header = format!("X-Consul-Token: {ROOT}\r\n");
    let (status, _, body) = http_with(&a.http, method, path, &header, body.as_bytes()).ok()?;
    Some((status, body))
}

/// [`try_call`] to an agent that must answer.
fn call(a: &Agent, method: &str, path: &str, body: &str) -> (u16, String) {
    try_call(a, method, path, body)
        .unwrap_or_else(|| panic!("{method} {path} on {}: no answer", a.name))
}

fn json(a: &Agent, path: &str) -> Value {
    let (status, body) = call(a, "GET", path, "");
    assert_eq!(status, 200, "GET {path} on {}: {body}", a.name);
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {path}: {e}: {body}"))
}

/// The Raft configuration once it has three voters and a leader.
fn raft_of(a: &Agent) -> Value {
    wait_for(Duration::from_secs(40), "three voters and a leader", || {
        let (status, body) = try_call(a, "GET", "/v1/operator/raft/configuration", "")?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let servers = v["Servers"].as_array()?;
        let ready = status == 200
            && servers.len() == 3
            && servers.iter().all(|s| s["Voter"] == true)
            && servers.iter().any(|s| s["Leader"] == true);
        ready.then_some(v)
    })
}

fn leader_id(raft: &Value) -> String {
    raft["Servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["Leader"] == true))
        .and_then(|s| s["ID"].as_str())
        .expect("a leader")
        .to_string()
}

fn start_servers(dir: &std::path::Path) -> Vec<Agent> {
    let cfg = config();
    let mut servers: Vec<Agent> = Vec::new();
    for i in 1..=3 {
        let mut flags = vec![
            "-server".to_string(),
            "-bootstrap-expect=3".into(),
            format!("-node-id={}", node_id(i)),
        ];
        if let Some(first) = servers.first() {
            flags.push(format!("-retry-join=127.0.0.1:{}", first.serf));
            flags.push("-retry-interval=200ms".into());
        }
        servers.push(Agent::start(dir, &format!("s{i}"), &cfg, &flags));
    }
    servers
}

fn cairn(a: &Agent, args: &[&str]) -> (bool, String) {
    let out = std::process::Command::new(CAIRN)
        .args(args)
        .env("CAIRN_HTTP_ADDR", format!("http://{}", a.http))
        .env("CONSUL_HTTP_TOKEN", ROOT)
        .output()
        .expect("run cairn");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// What the snapshot must bring back, read through `a` from its own
/// store (`?stale`), so every server is checked, not only the leader.
fn state_of(a: &Agent) -> [String; 6] {
    let kv = call(a, "GET", "/v1/kv/app/config?raw&stale", "");
    let node = call(a, "GET", "/v1/catalog/node/ext?stale", "");
    let sessions = json(a, "/v1/session/list?stale");
    let intentions = json(a, "/v1/connect/intentions?stale");
    let policies = json(a, "/v1/acl/policies?stale");
    let roots = json(a, "/v1/connect/ca/roots?stale");
    [
        format!("{kv:?}"),
        format!("{}", node.0 == 200 && node.1.contains("\"db\"")),
        format!("{}", sessions.as_array().map_or(0, Vec::len)),
        format!(
            "{:?}",
            intentions
                .as_array()
                .into_iter()
                .flatten()
                .map(|i| (
                    i["SourceName"].to_string(),
                    i["DestinationName"].to_string()
                ))
                .collect::<Vec<_>>()
        ),
        format!(
            "{}",
            policies
                .as_array()
                .is_some_and(|p| p.iter().any(|p| p["Name"] == "snapshot-policy"))
        ),
        roots["ActiveRootID"].to_string(),
    ]
}

#[test]
fn operators_see_the_group_move_its_leader_and_restore_a_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let mut servers = start_servers(dir.path());
    let raft = raft_of(&servers[0]);
    let ids: Vec<&str> = raft["Servers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["ID"].as_str().unwrap())
        .collect();
    for i in 1..=3 {
        assert!(ids.contains(&node_id(i).as_str()), "{ids:?} names node IDs");
    }
    assert_eq!(raft["Servers"][0]["ProtocolVersion"], "3");

    // Autopilot: every server healthy once they have all heard the leader.
    let health = wait_for(Duration::from_secs(30), "a healthy group", || {
        let (status, body) = call(&servers[1], "GET", "/v1/operator/autopilot/health", "");
        (status == 200).then(|| serde_json::from_str::<Value>(&body).ok())?
    });
    assert_eq!(health["FailureTolerance"], 1, "{health}");
    assert_eq!(health["Servers"].as_array().map(Vec::len), Some(3));
    let state = json(&servers[2], "/v1/operator/autopilot/state");
    assert_eq!(state["Voters"].as_array().map(Vec::len), Some(3), "{state}");

    // Autopilot's settings: defaults, a stale CAS refused, a right one taken.
    let path = "/v1/operator/autopilot/configuration";
    let config = json(&servers[0], path);
    assert_eq!(config["CleanupDeadServers"], true);
    let modify = config["ModifyIndex"].as_u64().unwrap();
    let off = r#"{"CleanupDeadServers": false, "LastContactThreshold": "300ms"}"#;
    let stale = format!("{path}?cas={}", modify + 1000);
    assert_eq!(call(&servers[0], "PUT", &stale, off), (200, "false".into()));
    let right = format!("{path}?cas={modify}");
    assert_eq!(call(&servers[0], "PUT", &right, off), (200, "true".into()));
    let config = json(&servers[1], path);
    assert_eq!(config["CleanupDeadServers"], false);
    assert_eq!(config["LastContactThreshold"], "300ms");
    let (ok, text) = cairn(&servers[0], &["operator", "autopilot", "get-config"]);
    assert!(ok && text.contains("CleanupDeadServers = false"), "{text}");
    let (ok, text) = cairn(
        &servers[0],
        &[
            "operator",
            "autopilot",
            "set-config",
            "--cleanup-dead-servers=true",
        ],
    );
    assert!(ok && text.contains("Configuration updated!"), "{text}");
    assert_eq!(json(&servers[2], path)["CleanupDeadServers"], true);

    // Peers by CLI; a peer that is not there cannot be removed.
    let (ok, text) = cairn(&servers[0], &["operator", "raft", "list-peers"]);
    assert!(
        ok && text.contains("leader") && text.contains("s3"),
        "{text}"
    );
    let (status, body) = call(
        &servers[0],
        "DELETE",
        "/v1/operator/raft/peer?address=10.255.255.1:8300",
        "",
    );
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("not found in the Raft configuration"),
        "{body}"
    );

    // Leadership moves away from the leader on request.
    let before = leader_id(&raft);
    let (status, body) = call(&servers[0], "POST", "/v1/operator/raft/transfer-leader", "");
    assert_eq!(status, 200, "{body}");
    let after = wait_for(Duration::from_secs(20), "a new leader", || {
        let now = leader_id(&raft_of(&servers[0]));
        (now != before).then_some(now)
    });
    // To a server named: it leads when the request succeeds. The quiet
    // leader votes for the target alone, and the target campaigns at once
    // (asked with the operator's token: ACLs are on here).
    let target = ids.iter().find(|id| **id != after).unwrap().to_string();
    let path = format!("/v1/operator/raft/transfer-leader?id={target}");
    let (status, body) = call(&servers[0], "POST", &path, "");
    assert_eq!(status, 200, "transfer to {target}: {body}");
    wait_for(Duration::from_secs(20), "the named leader", || {
        (leader_id(&raft_of(&servers[0])) == target).then_some(())
    });

    // Something in every table a user would miss.
    let a = &servers[0];
    assert_eq!(
        call(a, "PUT", "/v1/kv/app/config", "before"),
        (200, "true".into())
    );
    let ext =
        r#"{"Node": "ext", "Address": "10.1.2.3", "Service": {"Service": "db", "Port": 5432}}"#;
    assert_eq!(call(a, "PUT", "/v1/catalog/register", ext).0, 200);
    let (status, body) = call(a, "PUT", "/v1/session/create", r#"{"Node": "s1"}"#);
    assert_eq!(status, 200, "{body}");
    let intention = r#"{"SourceName": "web", "DestinationName": "db", "Action": "allow"}"#;
    let (status, body) = call(a, "POST", "/v1/connect/intentions", intention);
    assert_eq!(status, 200, "{body}");
    let policy = r#"{"Name": "snapshot-policy", "Rules": "key_prefix \"\" { policy = \"read\" }"}"#;
    let (status, body) = call(a, "PUT", "/v1/acl/policy", policy);
    assert_eq!(status, 200, "{body}");
    json(a, "/v1/connect/ca/roots");
    let saved = wait_for(
        Duration::from_secs(20),
        "every server to have it all",
        || {
            let want = state_of(&servers[0]);
            servers.iter().all(|s| state_of(s) == want).then_some(want)
        },
    );
    assert!(saved[0].contains("before"), "{saved:?}");

    let file = dir.path().join("backup.snap");
    let file = file.to_str().unwrap();
    let (ok, text) = cairn(a, &["snapshot", "save", file]);
    assert!(ok && text.contains("Saved and verified snapshot"), "{text}");
    let (ok, text) = cairn(a, &["snapshot", "inspect", file]);
    assert!(
        ok && text.contains("Index") && text.contains("kv"),
        "{text}"
    );

    // Wipe the cluster: every server's data dir gone, started afresh.
    for s in &mut servers {
        s.kill();
    }
    for i in 1..=3 {
        std::fs::remove_dir_all(dir.path().join(format!("s{i}"))).unwrap();
    }
    for s in &mut servers {
        s.restart();
    }
    raft_of(&servers[0]);
    wait_for(Duration::from_secs(20), "a cluster that answers", || {
        let (status, _) = try_call(&servers[1], "GET", "/v1/kv/app/config", "")?;
        (status == 404).then_some(())
    });

    // A damaged archive is refused, naming the problem, and changes nothing.
    let mut bytes = std::fs::read(file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x55;
    let bad = dir.path().join("damaged.snap");
    std::fs::write(&bad, &bytes).unwrap();
    let (ok, text) = cairn(&servers[1], &["snapshot", "restore", bad.to_str().unwrap()]);
    assert!(!ok && text.contains("snapshot"), "{text}");
    let (status, body) = call(&servers[1], "PUT", "/v1/snapshot", "not an archive");
    assert_eq!(status, 400, "{body}");
    assert_eq!(call(&servers[1], "GET", "/v1/kv/app/config", "").0, 404);

    // Restored through Raft: every server has it all back.
    let (ok, text) = cairn(&servers[1], &["snapshot", "restore", file]);
    assert!(ok && text.contains("Restored snapshot"), "{text}");
    wait_for(Duration::from_secs(20), "every server restored", || {
        servers.iter().all(|s| state_of(s) == saved).then_some(())
    });
    // Without the management token, no snapshot.
    let (status, _, _) = http_with(&servers[0].http, "GET", "/v1/snapshot", "", b"").unwrap();
    assert_eq!(status, 403);
}

/// Snapshots taken while a client writes `seq/0001`, `seq/0002`, ... one
/// after another each restore to a state that existed: the keys present
/// are exactly the first N of the sequence, with no gap.
#[test]
fn a_snapshot_under_write_load_restores_a_state_that_existed() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server_with(dir.path(), "load", &config());
    wait_for(Duration::from_secs(20), "the management token", || {
        (try_call(&a, "GET", "/v1/acl/token/self", "")?.0 == 200).then_some(())
    });
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let (http, stop) = (a.http.clone(), stop.clone());
        std::thread::spawn(move || {
            let header = format!("X-Consul-Token: {ROOT}\r\n");
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) && n < 5000 {
                n += 1;
                let path = format!("/v1/kv/seq/{n:05}");
                let (status, _, _) = http_with(&http, "PUT", &path, &header, b"v").unwrap();
                assert_eq!(status, 200);
            }
            n
        })
    };
    let mut files = Vec::new();
    for i in 0..3 {
        std::thread::sleep(Duration::from_millis(150));
        let file = dir.path().join(format!("load-{i}.snap"));
        let (ok, text) = cairn(&a, &["snapshot", "save", file.to_str().unwrap()]);
        assert!(ok, "{text}");
        files.push(file);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let mut sizes = Vec::new();
    for file in &files {
        let (ok, text) = cairn(&a, &["snapshot", "restore", file.to_str().unwrap()]);
        assert!(ok, "{text}");
        let keys: Vec<String> =
            serde_json::from_str(&call(&a, "GET", "/v1/kv/seq/?keys", "").1).unwrap_or_default();
        let want: Vec<String> = (1..=keys.len()).map(|n| format!("seq/{n:05}")).collect();
        assert_eq!(keys, want, "a prefix of the writes, no gaps");
        sizes.push(keys.len());
    }
    assert!(sizes.windows(2).all(|w| w[0] <= w[1]), "{sizes:?}");
    assert!(
        sizes.iter().all(|&n| n as u32 <= written),
        "{sizes:?} of {written}"
    );
}

//! Three servers and two clients, each a `cairn agent` process on
//! 127.0.0.1: the servers find each other through gossip and bootstrap
//! once; writes go through any node; the leader is killed with SIGKILL and
//! a new one takes over within the election timeout with every
//! acknowledged write intact; the dead server is removed after its grace
//! and added back when it returns; and after every server is killed and
//! restarted from its data dir, the state is all there and nobody
//! bootstrapped again.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;

use process::{http, wait_for, Agent, FAST_GOSSIP};

/// Fast gossip, and a dead server removed 3 s after it is declared failed.
fn config() -> String {
    format!("{FAST_GOSSIP}autopilot {{\n  server_stabilization_time = \"3s\"\n}}\n")
}

fn leader_of(a: &Agent) -> Option<String> {
    let (status, body) = http(&a.http, "GET", "/v1/status/leader", b"").ok()?;
    let leader: String = serde_json::from_str(&body).ok()?;
    (status == 200 && !leader.is_empty()).then_some(leader)
}

fn peers_of(a: &Agent) -> Option<Vec<String>> {
    let (status, body) = http(&a.http, "GET", "/v1/status/peers", b"").ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// PUTs `key = value` through `a`: whether the cluster acknowledged it,
/// and what came back when it did not.
fn put(a: &Agent, key: &str, value: &str) -> Result<(), String> {
    match http(&a.http, "PUT", &format!("/v1/kv/{key}"), value.as_bytes()) {
        Ok((200, body)) if body.trim() == "true" => Ok(()),
        other => Err(format!("{other:?}")),
    }
}

/// Reads `key` through `a` with `?consistent`: its value, or `None` if
/// absent. Panics on errors other than absence.
fn get(a: &Agent, key: &str) -> Option<String> {
    let (status, body) =
        http(&a.http, "GET", &format!("/v1/kv/{key}?consistent&raw"), b"").expect("HTTP");
    match status {
        200 => Some(body),
        404 => None,
        _ => panic!("GET {key} through {}: {status} {body}", a.name),
    }
}

#[test]
fn servers_bootstrap_fail_over_and_restart_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = config();
    let server_flags = |join: Option<u16>| {
        let mut f = vec!["-server".to_string(), "-bootstrap-expect=3".to_string()];
        if let Some(p) = join {
            f.push(format!("-retry-join=127.0.0.1:{p}"));
            f.push("-retry-interval=200ms".into());
        }
        f
    };
    let s1 = Agent::start(dir.path(), "s1", &cfg, &server_flags(None));
    let join = |p: u16| {
        vec![
            format!("-retry-join=127.0.0.1:{p}"),
            "-retry-interval=200ms".to_string(),
        ]
    };
    let s2 = Agent::start(dir.path(), "s2", &cfg, &server_flags(Some(s1.serf)));
    let s3 = Agent::start(dir.path(), "s3", &cfg, &server_flags(Some(s1.serf)));
    let c1 = Agent::start(dir.path(), "c1", &cfg, &join(s1.serf));
    let c2 = Agent::start(dir.path(), "c2", &cfg, &join(s1.serf));
    let mut servers = [s1, s2, s3];
    let clients = [c1, c2];

    // One group of three, seen from every client: a client that has not
    // yet heard of a server through gossip has nowhere to send a write.
    for c in &clients {
        wait_for(Duration::from_secs(30), "three voters", || {
            peers_of(c).filter(|p| p.len() == 3)
        });
    }
    let bootstraps = |servers: &[Agent]| -> usize {
        servers
            .iter()
            .map(|s| s.log_text().matches("bootstrapping the Raft group").count())
            .sum()
    };
    assert!(bootstraps(&servers) >= 1);

    // Writes through every node, servers and clients alike.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    for i in 0..40 {
        let node = if i % 5 < 3 {
            &servers[i % 5]
        } else {
            &clients[i % 5 - 3]
        };
        let (k, v) = (format!("app/k{i:02}"), format!("v{i}"));
        if let Err(e) = put(node, &k, &v) {
            panic!("write {k} through {}: {e}", node.name);
        }
        acked.insert(k, v);
    }

    // kill -9 the leader; a new one within the election timeout.
    let old = wait_for(Duration::from_secs(10), "a leader", || {
        leader_of(&clients[0])
    });
    let victim = servers
        .iter()
        .position(|s| old.ends_with(&format!(":{}", s.rpc)))
        .expect("the leader is one of ours");
    servers[victim].kill();
    let killed_at = Instant::now();
    let survivor = (victim + 1) % 3;
    let new = wait_for(Duration::from_secs(15), "a new leader", || {
        leader_of(&servers[survivor]).filter(|l| *l != old)
    });
    let failover = killed_at.elapsed();
    println!("new leader {new} {failover:?} after the old one was killed");
    // A follower calls an election 1.5-2 s after the last heartbeat at
    // raft_multiplier 1 (leader lease plus election timeout); allow for a
    // busy machine, but not for a stuck election.
    assert!(
        failover < Duration::from_secs(5),
        "failover took {failover:?}"
    );

    // Writes go on through the rest, clients included.
    for i in 40..60 {
        let node = if i % 2 == 0 {
            &clients[i % 2]
        } else {
            &servers[survivor]
        };
        let (k, v) = (format!("app/k{i:02}"), format!("v{i}"));
        if let Err(e) = put(node, &k, &v) {
            panic!("write {k} through {} after failover: {e}", node.name);
        }
        acked.insert(k, v);
    }
    for (k, v) in &acked {
        assert_eq!(get(&clients[1], k).as_deref(), Some(v.as_str()), "{k}");
    }

    // The dead server leaves the group after its grace, and comes back.
    wait_for(Duration::from_secs(30), "the dead server removed", || {
        peers_of(&servers[survivor]).filter(|p| p.len() == 2)
    });
    servers[victim].restart();
    // s1 was started without a join address; whichever server it was, it
    // joins a survivor now rather than waiting for gossip to reconnect.
    let rejoin = format!("/v1/agent/join/127.0.0.1:{}", servers[survivor].serf);
    wait_for(
        Duration::from_secs(15),
        "the restarted server to rejoin",
        || {
            matches!(
                http(&servers[victim].http, "PUT", &rejoin, b""),
                Ok((200, _))
            )
            .then_some(())
        },
    );
    wait_for(
        Duration::from_secs(30),
        "the server back as a voter",
        || peers_of(&servers[survivor]).filter(|p| p.len() == 3),
    );
    // It caught up: a stale read from it alone has every write.
    let back = &servers[victim];
    wait_for(
        Duration::from_secs(15),
        "the returned server caught up",
        || {
            let (status, body) = http(&back.http, "GET", "/v1/kv/app/?recurse&stale", b"").ok()?;
            let n = serde_json::from_str::<Vec<serde_json::Value>>(&body)
                .ok()?
                .len();
            (status == 200 && n == acked.len()).then_some(())
        },
    );

    // Every server killed at once, then restarted from its data dir.
    let before = bootstraps(&servers);
    for s in servers.iter_mut() {
        s.kill();
    }
    for s in servers.iter_mut() {
        s.restart();
    }
    // The clients hold the servers as failed and would try them again only
    // in a while; an operator's `cairn join` brings them together now.
    let rejoin = format!("/v1/agent/join/127.0.0.1:{}", clients[0].serf);
    wait_for(Duration::from_secs(15), "s1 to rejoin the clients", || {
        matches!(http(&servers[0].http, "PUT", &rejoin, b""), Ok((200, _))).then_some(())
    });
    wait_for(
        Duration::from_secs(30),
        "a leader after the restart",
        || leader_of(&clients[0]),
    );
    for (k, v) in &acked {
        assert_eq!(
            get(&clients[0], k).as_deref(),
            Some(v.as_str()),
            "{k} after restart"
        );
    }
    assert_eq!(
        bootstraps(&servers),
        before,
        "a restarted cluster bootstrapped again"
    );
    if let Err(e) = put(&clients[1], "app/after", "restart") {
        panic!("write after the restart: {e}");
    }
}

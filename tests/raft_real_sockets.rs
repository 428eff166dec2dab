//! Three Raft servers on 127.0.0.1: openraft with cairn's redb storage and
//! RPC. Writes are acknowledged by a majority, survive the loss of the
//! leader, and survive a restart of every server from its data directory.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::consensus::{self, Request, Response, TypeConfig};
use cairn::env::{Env, Task, TokioEnv};
use cairn::state::{Command, KvOp};
use openraft::{BasicNode, Config, Raft};

struct Server {
    id: u64,
    raft: Raft<TypeConfig>,
    store: Arc<std::sync::RwLock<cairn::state::Store>>,
    _rpc: Task,
}

fn config() -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        ..Config::default()
    };
    Arc::new(c.validate().expect("a valid Raft config"))
}

async fn start(env: &TokioEnv, id: u64, dir: &Path, addr: SocketAddr) -> Server {
    let listener = env.bind_tcp(addr).await.expect("bind the RPC port");
    let (log, sm) = consensus::open(dir).expect("open the data dir");
    let store = sm.store();
    consensus::runtime::seed(env.seed(&format!("raft-{id}")));
    let raft = Raft::new(
        id,
        config(),
        consensus::Network::new(env.clone()),
        log.clone(),
        sm,
    )
    .await
    .expect("start Raft");
    let rpc = consensus::network::serve(env.clone(), listener, raft.clone(), log);
    Server {
        id,
        raft,
        store,
        _rpc: rpc,
    }
}

async fn leader(servers: &[&Server]) -> u64 {
    let m = servers[0]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(|m| m.current_leader.is_some(), "a leader")
        .await
        .expect("a leader within 10 s");
    m.current_leader.expect("checked above")
}

/// Writes `key` through `first`, following "the leader is elsewhere"
/// answers as a forwarding server would.
async fn put(servers: &[Server], first: u64, key: &str) {
    let req = Request {
        at_ms: 0,
        cmd: Command::Kv {
            op: KvOp::Set,
            key: key.into(),
            value: b"v".to_vec(),
            flags: 0,
        },
    };
    let mut target = first;
    for _ in 0..20 {
        let s = servers
            .iter()
            .find(|s| s.id == target)
            .expect("a live server");
        match s.raft.client_write(req.clone()).await {
            Ok(resp) => {
                assert_eq!(
                    resp.data,
                    Response(vec![Ok(cairn::state::Applied::Done(true))])
                );
                return;
            }
            Err(e) => {
                let hint = e.forward_to_leader().and_then(|f| f.leader_id);
                target = hint.unwrap_or(target);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    panic!("no server acknowledged the write of {key}");
}

async fn has_keys(s: &Server, keys: &[&str]) {
    for _ in 0..100 {
        let all = {
            let store = s.store.read().unwrap();
            keys.iter().all(|k| store.kv_get(k).is_some())
        };
        if all {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server {} lacks some of {keys:?}", s.id);
}

async fn free_addrs(env: &TokioEnv, n: usize) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    for _ in 0..n {
        let l = env.bind_tcp("127.0.0.1:0".parse().unwrap()).await.unwrap();
        out.push(l.local_addr().unwrap());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_the_leaders_death_and_a_full_restart() {
    let env = TokioEnv::new();
    let root = tempfile::tempdir().unwrap();
    let dirs: Vec<PathBuf> = (1..=3).map(|i| root.path().join(format!("s{i}"))).collect();
    let addrs = free_addrs(&env, 3).await;
    let mut servers = Vec::new();
    for i in 0..3 {
        servers.push(start(&env, i as u64 + 1, &dirs[i], addrs[i]).await);
    }
    let members: BTreeMap<u64, BasicNode> = (0..3)
        .map(|i| (i as u64 + 1, BasicNode::new(addrs[i].to_string())))
        .collect();
    servers[0]
        .raft
        .initialize(members)
        .await
        .expect("bootstrap once");

    let first = leader(&servers.iter().collect::<Vec<_>>()).await;
    put(&servers, first, "k1").await;
    for s in &servers {
        has_keys(s, &["k1"]).await;
    }

    // The leader dies; the others elect one of themselves and go on.
    let idx = servers.iter().position(|s| s.id == first).unwrap();
    let dead = servers.remove(idx);
    dead.raft.shutdown().await.unwrap();
    drop(dead);
    let rest: Vec<&Server> = servers.iter().collect();
    let second = rest[0]
        .raft
        .wait(Some(Duration::from_secs(10)))
        .metrics(
            |m| m.current_leader.is_some_and(|l| l != first),
            "a new leader",
        )
        .await
        .expect("a new leader")
        .current_leader
        .unwrap();
    put(&servers, second, "k2").await;
    for s in &servers {
        has_keys(s, &["k1", "k2"]).await;
    }

    // Everyone stops, and comes back from disk.
    for s in servers.drain(..) {
        s.raft.shutdown().await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    for i in 0..3 {
        servers.push(start(&env, i as u64 + 1, &dirs[i], addrs[i]).await);
    }
    let third = leader(&servers.iter().collect::<Vec<_>>()).await;
    put(&servers, third, "k3").await;
    for s in &servers {
        has_keys(s, &["k1", "k2", "k3"]).await;
    }
    // A restarted cluster does not bootstrap again.
    let again = servers[0]
        .raft
        .initialize(BTreeMap::from([(1, BasicNode::new(addrs[0].to_string()))]))
        .await;
    assert!(
        again.is_err(),
        "initialize on a formed cluster must be refused"
    );
}

//! Gossip over real UDP and TCP sockets on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cairn::env::{Env, Task, TokioEnv};
use cairn::gossip::{Config, EventKind, Gossip, GossipOptions, MemberEvent, MemberStatus};
use tokio::sync::mpsc::UnboundedReceiver;

/// Worst case for every member to declare a crashed member failed: a whole
/// probe round before anyone probes it, the probe itself, the longest
/// (unconfirmed) suspicion, and a few gossip rounds to spread the verdict.
fn detection_bound(cfg: &Config, n: usize) -> Duration {
    let min = cfg.suspicion_timeout(n);
    cfg.probe_interval * (n as u32 + 1)
        + min * cfg.suspicion_max_timeout_mult as u32
        + cfg.gossip_interval * 10
}

struct Node {
    gossip: Gossip,
    task: Option<Task>,
    events: UnboundedReceiver<MemberEvent>,
    seen: Vec<MemberEvent>,
}

impl Node {
    fn drain(&mut self) {
        while let Ok(ev) = self.events.try_recv() {
            self.seen.push(ev);
        }
    }
}

async fn start(env: &TokioEnv, i: usize, cfg: &Config) -> Node {
    // UDP takes an ephemeral port; TCP must get the same one, which another
    // process may hold: try again with a new port.
    for _ in 0..20 {
        let opts = GossipOptions::new(
            format!("node{i}"),
            "127.0.0.1:0".parse().unwrap(),
            cfg.clone(),
        );
        match Gossip::start(env.clone(), opts).await {
            Ok((gossip, task)) => {
                let events = gossip.subscribe().await.unwrap();
                return Node {
                    gossip,
                    task: Some(task),
                    events,
                    seen: Vec::new(),
                };
            }
            Err(e) => eprintln!("retrying bind: {e}"),
        }
    }
    panic!("could not bind a gossip port");
}

async fn statuses(node: &Node) -> BTreeMap<String, MemberStatus> {
    node.gossip
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.status))
        .collect()
}

async fn wait_for<F, Fut>(env: &TokioEnv, limit: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = env.now() + limit;
    while !check().await {
        assert!(env.now() < until, "timed out waiting for: {what}");
        env.sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every one of `observers` holds `member` as `status`.
async fn wait_all_see(
    env: &TokioEnv,
    limit: Duration,
    observers: &[Node],
    member: &str,
    status: MemberStatus,
) {
    let what = format!("{member} {status:?} everywhere");
    wait_for(env, limit, &what, || async {
        for n in observers {
            if statuses(n).await.get(member) != Some(&status) {
                return false;
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_agents_converge_detect_a_crash_and_see_a_leave() {
    let env = TokioEnv::new();
    let cfg = common::fast_config();
    let mut nodes = Vec::new();
    for i in 0..5 {
        nodes.push(start(&env, i, &cfg).await);
    }
    let seed: SocketAddr = nodes[0].gossip.addr();
    for n in &nodes[1..] {
        assert_eq!(n.gossip.join(vec![seed]).await.unwrap(), 1);
    }

    // Converge: everyone sees five alive members.
    wait_for(
        &env,
        Duration::from_secs(10),
        "5 alive everywhere",
        || async {
            for n in &nodes {
                let s = statuses(n).await;
                if s.len() != 5 || s.values().any(|v| *v != MemberStatus::Alive) {
                    return false;
                }
            }
            true
        },
    )
    .await;

    // Crash node 4 abruptly: its task (and sockets) vanish without a word.
    let crashed_at = env.now();
    if let Some(t) = nodes[4].task.take() {
        t.abort();
    }
    let bound = detection_bound(&cfg, 5);
    wait_all_see(
        &env,
        bound + Duration::from_secs(2),
        &nodes[..4],
        "node4",
        MemberStatus::Failed,
    )
    .await;
    for n in &mut nodes[..4] {
        n.drain();
        let failed = n
            .seen
            .iter()
            .find(|e| e.kind == EventKind::Failed && e.node.name == "node4")
            .expect("a failed event");
        let took = failed.at - crashed_at;
        assert!(
            took <= bound,
            "{} took {took:?}, bound {bound:?}",
            n.gossip.name()
        );
        eprintln!(
            "{} declared node4 failed after {took:?} (bound {bound:?})",
            n.gossip.name()
        );
    }

    // Node 3 leaves gracefully: the rest see it as left, not failed.
    nodes[3]
        .gossip
        .leave(&env, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        statuses(&nodes[3]).await.get("node3"),
        Some(&MemberStatus::Left)
    );
    wait_all_see(
        &env,
        Duration::from_secs(5),
        &nodes[..3],
        "node3",
        MemberStatus::Left,
    )
    .await;
    for n in &mut nodes[..3] {
        n.drain();
        assert!(
            !n.seen
                .iter()
                .any(|e| e.kind == EventKind::Failed && e.node.name == "node3"),
            "node3 must never be failed"
        );
    }
    for n in &nodes {
        n.gossip.shutdown().await;
    }
}

#[tokio::test]
async fn join_to_a_dead_address_fails_clearly() {
    let env = TokioEnv::new();
    let node = start(&env, 0, &common::fast_config()).await;
    // Bind and drop a listener to get a port nobody answers on.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = l.local_addr().unwrap();
    drop(l);
    let err = node.gossip.join(vec![dead]).await.unwrap_err();
    assert!(err.to_string().contains("could not join"), "{err}");
}

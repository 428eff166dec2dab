//! Serf's snapshot: the LAN members this agent last knew alive, kept in
//! `<data_dir>/serf/local.snapshot`, so that an agent that restarts
//! rejoins them, not only its configured join addresses.
//!
//! Without it, two agents that are each other's only join address and
//! restart together find only each other: the rest hold both failed and
//! reach them again only when Serf's reconnect loop (every 30 s, with a
//! probability) happens to try one. A server restarted while its join
//! addresses are cut off stays alone the same way. Consul closes this gap
//! with the snapshot, and so does cairn.
//!
//! The file holds lines `alive: NAME ADDR` (as Serf's snapshot does), and
//! `leave` after a graceful leave: an agent that left does not rejoin on
//! its next start (Consul's default, `rejoin_after_leave = false`). It is
//! rewritten, whole and atomically, when the alive members change, at most
//! once per interval.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::env::Env;
use crate::gossip::{Gossip, GossipError, MemberStatus};

/// Where an agent's snapshot lives.
#[derive(Debug, Clone)]
pub enum SnapshotStore {
    /// A file (`<data_dir>/serf/local.snapshot`).
    File(PathBuf),
    /// Memory that outlives the agent (the simulator's, per node).
    Memory(Arc<Mutex<String>>),
}

impl PartialEq for SnapshotStore {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (SnapshotStore::File(a), SnapshotStore::File(b)) => a == b,
            (SnapshotStore::Memory(a), SnapshotStore::Memory(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }
}

impl SnapshotStore {
    /// The snapshot's text, if there is one.
    fn read(&self) -> Option<String> {
        match self {
            SnapshotStore::File(p) => std::fs::read_to_string(p).ok(),
            SnapshotStore::Memory(m) => {
                Some(m.lock().unwrap_or_else(|p| p.into_inner()).clone()).filter(|s| !s.is_empty())
            }
        }
    }

    /// Replaces the snapshot: a crash leaves the old text or the new,
    /// never half of one.
    fn write(&self, text: &str) -> std::io::Result<()> {
        match self {
            SnapshotStore::File(p) => {
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                let tmp = p.with_extension("snapshot.tmp");
                std::fs::write(&tmp, text)?;
                std::fs::rename(&tmp, p)
            }
            SnapshotStore::Memory(m) => {
                *m.lock().unwrap_or_else(|p| p.into_inner()) = text.to_owned();
                Ok(())
            }
        }
    }
}

/// What a snapshot says.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// The members last known alive, other than this agent.
    pub alive: Vec<(String, SocketAddr)>,
    /// Whether the agent left gracefully after writing it.
    pub left: bool,
}

impl Snapshot {
    /// Reads a snapshot's text; lines it does not know (Serf's `clock:`
    /// and event lines, a torn last line) are skipped.
    pub fn parse(text: &str) -> Snapshot {
        let mut s = Snapshot::default();
        for line in text.lines() {
            if line.trim() == "leave" {
                s.left = true;
            } else if let Some(rest) = line.strip_prefix("alive: ") {
                if let Some((name, addr)) = rest.rsplit_once(' ') {
                    if let Ok(addr) = addr.parse() {
                        s.alive.push((name.to_owned(), addr));
                    }
                }
            }
        }
        s
    }

    /// The snapshot's text.
    pub fn render(&self) -> String {
        let mut out: String = self
            .alive
            .iter()
            .map(|(n, a)| format!("alive: {n} {a}\n"))
            .collect();
        if self.left {
            out.push_str("leave\n");
        }
        out
    }
}

/// The members to rejoin at start: what the snapshot knew alive, unless
/// the agent left gracefully.
pub fn rejoin_targets(store: &SnapshotStore) -> Vec<SocketAddr> {
    let Some(text) = store.read() else {
        return Vec::new();
    };
    let s = Snapshot::parse(&text);
    if s.left {
        return Vec::new();
    }
    s.alive.into_iter().map(|(_, a)| a).collect()
}

/// Joins the members the snapshot knew, once, as Serf does on start; the
/// configured `retry_join` goes on by itself.
pub async fn rejoin(gossip: Gossip, targets: Vec<SocketAddr>) {
    if targets.is_empty() {
        return;
    }
    match gossip.join(targets).await {
        Ok(n) => tracing::info!(joined = n, "rejoined members from the snapshot"),
        Err(e) => tracing::info!(error = %e, "no member from the snapshot answered"),
    }
}

/// Keeps the snapshot current: every `every`, the members alive now (this
/// agent aside), written when they changed.
pub async fn keep<E: Env>(env: E, gossip: Gossip, store: SnapshotStore, every: Duration) {
    let me = gossip.addr();
    let mut last = String::new();
    loop {
        env.sleep(every).await;
        let members = match gossip.members().await {
            Ok(m) => m,
            Err(GossipError::Shutdown) => return,
            Err(_) => continue,
        };
        let mut alive: Vec<(String, SocketAddr)> = members
            .into_iter()
            .filter(|m| m.status == MemberStatus::Alive && m.addr != me)
            .map(|m| (m.name, m.addr))
            .collect();
        alive.sort();
        let text = Snapshot { alive, left: false }.render();
        if text != last {
            match store.write(&text) {
                Ok(()) => last = text,
                Err(e) => tracing::warn!(error = %e, "cannot write the Serf snapshot"),
            }
        }
    }
}

/// Marks the snapshot after a graceful leave, so the next start does not
/// rejoin.
pub fn mark_left(store: &SnapshotStore) {
    let mut s = store
        .read()
        .map(|t| Snapshot::parse(&t))
        .unwrap_or_default();
    s.left = true;
    if let Err(e) = store.write(&s.render()) {
        tracing::warn!(error = %e, "cannot write the Serf snapshot");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_reads_back_and_skips_what_it_does_not_know() {
        let s = Snapshot {
            alive: vec![
                ("a".into(), "10.0.0.1:8301".parse().unwrap()),
                ("b c".into(), "[::1]:8301".parse().unwrap()),
            ],
            left: false,
        };
        assert_eq!(Snapshot::parse(&s.render()), s);
        let serf = "alive: a 10.0.0.1:8301\nclock: 7\nnot-alive: b\nalive: torn 10.0";
        let p = Snapshot::parse(serf);
        assert_eq!(p.alive.len(), 1);
        assert!(!p.left);
    }

    #[test]
    fn after_a_leave_nothing_is_rejoined() {
        let store = SnapshotStore::Memory(Arc::default());
        assert!(rejoin_targets(&store).is_empty());
        store.write("alive: a 10.0.0.1:8301\n").unwrap();
        assert_eq!(rejoin_targets(&store).len(), 1);
        mark_left(&store);
        assert!(rejoin_targets(&store).is_empty());
    }

    #[test]
    fn a_file_snapshot_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let store = SnapshotStore::File(dir.path().join("serf/local.snapshot"));
        assert!(rejoin_targets(&store).is_empty());
        store.write("alive: a 10.0.0.1:8301\n").unwrap();
        store.write("alive: b 10.0.0.2:8301\n").unwrap();
        assert_eq!(
            rejoin_targets(&store),
            vec!["10.0.0.2:8301".parse::<SocketAddr>().unwrap()]
        );
    }
}

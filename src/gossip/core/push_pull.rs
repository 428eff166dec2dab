//! Push/pull: anti-entropy over a stream. Now and then (and on a join),
//! a node sends its whole member table to one peer and merges the peer's
//! answer; what would repeat this node's own table is known without
//! merging (see the [`memo`]).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{PendingStream, Swim};
use crate::gossip::memo;
use crate::gossip::wire::{
    AliveRef, Dead, NodeStateKind, PushNodeState, PushPull, StreamMessage, Suspect,
};
use crate::time::Instant;

impl Swim {
    // ------------------------------------------------------------- push/pull

    /// Every member as this node sees it, by name: nodes that see the same
    /// pool send the same bytes (memberlist's own order, its shuffled probe
    /// list, says nothing the receiver uses; the member map's order
    /// depends on the order members were added). With the [`memo`] on,
    /// nodes whose tables agree share one state.
    pub(super) fn local_state(&self, join: bool) -> Arc<PushPull> {
        let build = || {
            let mut nodes: Vec<PushNodeState> = self
                .map
                .values()
                .map(|n| PushNodeState {
                    name: n.name.to_string(),
                    addr: n.addr,
                    meta: n.meta.clone(),
                    incarnation: n.incarnation,
                    state: n.state,
                    vsn: Some(n.vsn),
                })
                .collect();
            nodes.sort_unstable_by(|a, b| a.name.cmp(&b.name));
            PushPull::new(join, nodes, Vec::new())
        };
        if !memo::enabled() {
            return Arc::new(build());
        }
        let (digest, len) = self.map.digest();
        memo::state((digest, len, join), build, |pp| pp.nodes.len())
    }

    /// Whether merging `pp` would change nothing here, known without
    /// merging it: it holds exactly our table (by digest, with the [`memo`]
    /// on), so every alive, suspect, dead and left record in it repeats
    /// ours at our incarnation, and each handler returns at its first
    /// check. The one side effect those handlers could have, dropping a
    /// suspicion, needs a suspicion of a member not suspect here, and
    /// there is none.
    pub(super) fn holds_our_table(&self, pp: &PushPull) -> bool {
        if !memo::enabled() || pp.digest() != self.map.digest() {
            return false;
        }
        #[cfg(debug_assertions)]
        debug_assert_eq!(
            self.map.digest().0,
            self.map.digest_from_scratch(),
            "{}: the member digest drifted",
            self.me
        );
        self.suspicions.keys().all(|n| {
            self.map
                .get(n)
                .is_some_and(|s| s.state == NodeStateKind::Suspect)
        })
    }

    pub(super) fn merge_remote(&mut self, now: Instant, pp: &PushPull) -> Result<(), String> {
        if self.holds_our_table(pp) {
            // The check runs over the union of both tables, here one table:
            // its verdict is the state's own.
            pp.memo
                .verified
                .get_or_init(|| self.verify_protocol(&pp.nodes))
                .clone()?;
            self.stats.push_pulls += 1;
            return Ok(());
        }
        self.verify_protocol(&pp.nodes)?;
        self.stats.push_pulls += 1;
        for r in &pp.nodes {
            match r.state {
                NodeStateKind::Alive => {
                    let mut addr = r.addr;
                    if addr.port() == 0 {
                        addr.set_port(self.advertise.port());
                    }
                    let a = AliveRef {
                        incarnation: r.incarnation,
                        node: &r.name,
                        addr,
                        meta: &r.meta,
                        vsn: r.vsn,
                    };
                    self.alive_node(now, &a, false);
                }
                NodeStateKind::Left => {
                    let d = Dead {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: r.name.clone(),
                    };
                    self.dead_node(now, &d);
                }
                // A remote death is only a suspicion here: it must be
                // confirmed locally, or refuted. memberlist re-issues it in
                // its own name and gossips it, so every member that merely
                // synced with the suspector counts as an independent
                // confirmation and Lifeguard cuts the timeout short: one
                // node's stale suspicion (say, from while it was cut off)
                // confirms itself through its own echoes. Here it is
                // hearsay: held locally (our probes carry it to the suspect,
                // which refutes), but not gossiped and not counted.
                NodeStateKind::Dead | NodeStateKind::Suspect => {
                    let s = Suspect {
                        incarnation: r.incarnation,
                        node: r.name.clone(),
                        from: String::new(),
                    };
                    self.suspect_node(now, &s, false);
                }
            }
        }
        Ok(())
    }

    /// Checks that every live node, ours and theirs, speaks a protocol version
    /// every other live node understands (memberlist's `verifyProtocol`).
    pub(super) fn verify_protocol(&self, remote: &[PushNodeState]) -> Result<(), String> {
        let (mut maxpmin, mut minpmax, mut maxdmin, mut mindmax) = (0u8, u8::MAX, 0u8, u8::MAX);
        let remote_alive = remote
            .iter()
            .filter(|r| r.state == NodeStateKind::Alive)
            .filter_map(|r| r.vsn);
        let local_alive = self
            .map
            .values()
            .filter(|n| n.state == NodeStateKind::Alive)
            .map(|n| n.vsn);
        for v in remote_alive.chain(local_alive) {
            maxpmin = maxpmin.max(v[0]);
            minpmax = minpmax.min(v[1]);
            maxdmin = maxdmin.max(v[3]);
            mindmax = mindmax.min(v[4]);
        }
        let remote_all = remote
            .iter()
            .map(|r| (r.name.as_str(), r.vsn.unwrap_or_default()));
        let local_all = self.map.values().map(|n| (&*n.name, n.vsn));
        for (name, v) in remote_all.chain(local_all) {
            if v[2] < maxpmin || v[2] > minpmax {
                return Err(format!(
                    "node '{name}' speaks protocol version {}, outside the cluster's [{maxpmin}, {minpmax}]",
                    v[2]
                ));
            }
            if v[5] < maxdmin || v[5] > mindmax {
                return Err(format!(
                    "node '{name}' speaks delegate protocol version {}, outside the cluster's [{maxdmin}, {mindmax}]",
                    v[5]
                ));
            }
        }
        Ok(())
    }

    pub(super) fn push_pull(&mut self, now: Instant) {
        let me = self.me.clone();
        let peers = self.k_random_nodes(1, |n| *n.name == *me || n.state != NodeStateKind::Alive);
        if let Some(peer) = peers.into_iter().next() {
            self.push_pull_with(now, peer.addr);
        }
    }

    pub(super) fn push_pull_with(&mut self, now: Instant, addr: SocketAddr) {
        let data = StreamMessage::PushPull(self.local_state(false));
        self.open_stream(
            now,
            addr,
            data,
            now + self.cfg.tcp_timeout,
            true,
            PendingStream::PushPull,
        );
    }
}

//! The probe cycle: each probe interval, ping the next member of this
//! node's walk through the probe order; without an ack in time, ask a few
//! others to ping it (indirect probes, with nacks) and try a TCP ping; with
//! no ack by the deadline, suspect it. Lifeguard's health score follows
//! how probes go. The handlers for pings, indirect pings, acks and nacks
//! live here too, with relaying an indirect probe for another member.
//!
//! The probe's own state (the walk, the step, the probe in flight) is
//! [`state::Probe`]; everything else it touches is the node's.

use std::net::SocketAddr;
use std::sync::Arc;

use rand::Rng;

use self::state::{gcd, Fallback, ProbeRun, Walk};
use super::members::table::NodeState;
use super::{AckHandler, Output, PendingStream, Swim, Timer};
use crate::gossip::event::PingComplete;
use crate::gossip::wire::{
    self, Ack, IndirectPing, Message, Nack, NodeStateKind, Ping, StreamMessage, Suspect,
};
use crate::time::Instant;

pub(super) mod state;

impl Swim {
    pub(super) fn start_probe(&mut self, now: Instant) {
        let mut checked = 0;
        loop {
            if checked >= self.nodes.len() {
                return;
            }
            if self.probe.index >= self.nodes.len() {
                self.reset_nodes(now);
                self.probe.index = 0;
                checked += 1;
                continue;
            }
            let name = self.nodes[self.probe.slot(self.probe.index)].clone();
            self.probe.index += 1;
            let skip = *name == *self.me
                || self
                    .map
                    .get(&name)
                    .is_none_or(|n| n.state.is_dead_or_left());
            if skip {
                checked += 1;
                continue;
            }
            self.probe_node(now, name);
            return;
        }
    }

    pub(super) fn probe_node(&mut self, now: Instant, target: Arc<str>) {
        let Some(node) = self.map.get(&target).cloned() else {
            return;
        };
        self.stats.probes += 1;
        let interval = self.awareness.scale(self.cfg.probe_interval);
        let seq = self.next_seq();
        let ping = Message::Ping(Ping {
            seq_no: seq,
            node: node.name.to_string(),
            source_addr: Some(self.advertise),
            source_node: self.me.to_string(),
        });
        if node.state == NodeStateKind::Alive {
            self.send_msg(node.addr, Some(&node.name), &ping);
        } else {
            // Buddy system: tell a suspect it is suspected, in the probe
            // itself, so it can refute at once.
            let suspect = Message::Suspect(Suspect {
                incarnation: node.incarnation,
                node: node.name.to_string(),
                from: self.me.to_string(),
            });
            let parts = vec![self.part(&ping), self.part(&suspect)];
            self.raw_send(node.addr, Some(node.pmax()), parts);
        }
        self.acks.insert(seq, AckHandler::Probe);
        let timeout_key = self.schedule(now + self.cfg.probe_timeout, Timer::ProbeTimeout(seq));
        let deadline_key = self.schedule(now + interval, Timer::ProbeDeadline(seq));
        self.probe.run = Some(ProbeRun {
            seq,
            target: node.name.clone(),
            target_incarnation: node.incarnation,
            sent: now,
            indirect: false,
            expected_nacks: 0,
            nacks: 0,
            fallback: Fallback::NotTried,
            deadline_passed: false,
            timeout_key,
            deadline_key,
        });
    }

    pub(super) fn probe_timed_out(&mut self, now: Instant, seq: u32) {
        let Some(p) = self.probe.run.as_mut().filter(|p| p.seq == seq) else {
            return;
        };
        p.indirect = true;
        let target_name = p.target.clone();
        let deadline = p.deadline_key.0;
        let Some(target) = self.map.get(&target_name).cloned() else {
            return;
        };
        let me = self.me.clone();
        let peers = self.k_random_nodes(self.cfg.indirect_checks, |n| {
            *n.name == *me || *n.name == *target_name || n.state != NodeStateKind::Alive
        });
        let mut expected = 0;
        for peer in &peers {
            // Only protocol 4+ peers send nacks.
            let nack = peer.pmax() >= 4;
            expected += nack as usize;
            let ind = Message::IndirectPing(IndirectPing {
                seq_no: seq,
                target: target.addr,
                node: target.name.to_string(),
                nack,
                source_addr: Some(self.advertise),
                source_node: self.me.to_string(),
            });
            self.stats.indirect_probes += 1;
            self.send_msg(peer.addr, Some(&peer.name), &ind);
        }
        let tcp = !self.cfg.disable_tcp_pings && target.pmax() >= 3;
        if tcp {
            let ping = StreamMessage::Ping(Ping {
                seq_no: seq,
                node: target.name.to_string(),
                source_addr: Some(self.advertise),
                source_node: self.me.to_string(),
            });
            self.open_stream(
                now,
                target.addr,
                ping,
                deadline,
                true,
                PendingStream::FallbackPing { seq },
            );
        }
        if let Some(p) = self.probe.run.as_mut() {
            p.expected_nacks = expected;
            if tcp {
                p.fallback = Fallback::Pending;
            }
        }
    }

    /// Probe `seq` is out of time.
    pub(super) fn probe_deadline(&mut self, now: Instant, seq: u32) {
        let (pending, again) = match self.probe.run.as_mut() {
            Some(p) if p.seq == seq => {
                let again = std::mem::replace(&mut p.deadline_passed, true);
                (p.fallback == Fallback::Pending, again)
            }
            _ => return,
        };
        self.acks.remove(&seq);
        // A TCP fallback still in flight decides the probe when it
        // reports (the driver bounds it by the same deadline); if the
        // report never comes, a second deadline ends the probe anyway.
        if pending && !again {
            self.schedule(now + self.cfg.probe_timeout, Timer::ProbeDeadline(seq));
            return;
        }
        self.finish_probe(now);
    }

    /// The TCP fallback ping of probe `seq` reported: `ok` if acked.
    pub(super) fn fallback_done(&mut self, now: Instant, seq: u32, ok: bool) {
        let finish = match self.probe.run.as_mut() {
            Some(p) if p.seq == seq => {
                p.fallback = if ok {
                    Fallback::Succeeded
                } else {
                    Fallback::Failed
                };
                p.deadline_passed
            }
            _ => false,
        };
        if finish {
            self.finish_probe(now);
        }
    }

    pub(super) fn probe_acked(&mut self, now: Instant, payload: Vec<u8>) {
        let Some(p) = self.probe.run.take() else {
            return;
        };
        self.timers.remove(&p.timeout_key);
        self.timers.remove(&p.deadline_key);
        self.awareness.apply(-1);
        if !p.indirect {
            self.outputs.push_back(Output::PingComplete(PingComplete {
                node: p.target.to_string(),
                rtt: now - p.sent,
                payload,
            }));
        }
        self.probe_done(now);
    }

    /// Ends the current probe at its deadline with no UDP ack.
    pub(super) fn finish_probe(&mut self, now: Instant) {
        let Some(p) = self.probe.run.take() else {
            return;
        };
        self.timers.remove(&p.timeout_key);
        if p.fallback == Fallback::Succeeded {
            tracing::warn!(
                node = %self.me, peer = %p.target,
                "reached peer over TCP but not UDP; the network may be misconfigured"
            );
            self.awareness.apply(-1);
        } else {
            // With nack-capable helpers, missing nacks point at us rather
            // than at the target (Lifeguard); without them any failure counts.
            let delta = if p.expected_nacks > 0 {
                p.expected_nacks.saturating_sub(p.nacks) as i64
            } else {
                1
            };
            self.awareness.apply(delta);
            self.stats.probes_failed += 1;
            let s = Suspect {
                incarnation: p.target_incarnation,
                node: p.target.to_string(),
                from: self.me.to_string(),
            };
            self.suspect_node(now, &s, true);
        }
        self.probe_done(now);
    }

    pub(super) fn probe_done(&mut self, now: Instant) {
        if std::mem::take(&mut self.probe.tick_missed) {
            self.start_probe(now);
        }
    }

    /// At the end of each probe round: forget nodes dead for longer than
    /// `gossip_to_the_dead_time`, and shuffle the probe order.
    pub(super) fn reset_nodes(&mut self, now: Instant) {
        let keep_for = self.cfg.gossip_to_the_dead_time;
        let map = &self.map;
        let expired =
            |s: &NodeState| s.state == NodeStateKind::Dead && now - s.state_change > keep_for;
        // A shared order with nobody to forget stays shared: a fresh random
        // walk through it is this node's reshuffle.
        if self.probe.walk.is_some() && !self.nodes.iter().any(|n| map.get(n).is_none_or(&expired))
        {
            self.probe.walk = Some(self.random_walk());
            return;
        }
        let (mut keep, gone): (Vec<_>, Vec<_>) = self
            .nodes
            .iter()
            .cloned()
            .partition(|n| map.get(n).is_some_and(|s| !expired(s)));
        for n in gone {
            self.map.remove(&n);
            self.suspicions.remove(&n);
        }
        for i in (1..keep.len()).rev() {
            let j = self.rng.random_range(0..=i);
            keep.swap(i, j);
        }
        self.nodes = keep.into_iter().collect();
        self.probe.walk = None;
    }

    /// A random walk through the whole probe order: a random start and a
    /// random stride prime to the length visit every member once, and at
    /// any moment each member is probed by as many nodes as under private
    /// shuffles (each node lands on it with chance 1/N, independently).
    pub(super) fn random_walk(&mut self) -> Walk {
        let len = self.nodes.len();
        let stride = if len > 1 {
            loop {
                let a = self.rng.random_range(1..len);
                if gcd(a, len) == 1 {
                    break a;
                }
            }
        } else {
            1
        };
        let offset = if len > 0 {
            self.rng.random_range(0..len)
        } else {
            0
        };
        Walk {
            offset,
            stride,
            len,
        }
    }

    /// A fresh sequence number for a ping.
    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    // --------------------------------------------------------- ping handlers

    pub(super) fn handle_ping(&mut self, from: SocketAddr, p: Ping) {
        if !p.node.is_empty() && *p.node != *self.me {
            self.stats.misdirected_pings += 1;
            tracing::debug!(node = %self.me, %from, to = %p.node, "ping for another node");
            return;
        }
        let ack = Message::Ack(Ack {
            seq_no: p.seq_no,
            payload: self.ack_payload.clone(),
        });
        let to = p.source_addr.unwrap_or(from);
        let name = (!p.source_node.is_empty()).then_some(p.source_node);
        self.send_msg(to, name.as_deref(), &ack);
        // Beyond memberlist: a ping from a member we hold suspect or dead
        // proves it is alive and has not heard the accusation (say, it was
        // cut off while it was declared dead, and the notices are spent).
        // Tell it, so it refutes now rather than at the next reconnect.
        let accused = name
            .as_deref()
            .and_then(|n| self.map.get(n))
            .filter(|st| matches!(st.state, NodeStateKind::Suspect | NodeStateKind::Dead))
            .filter(|st| wire::canonical(st.addr) == wire::canonical(to))
            .map(|st| (st.pmax(), st.incarnation, st.name.to_string()));
        if let Some((pmax, incarnation, node)) = accused {
            self.stats.accusations_told += 1;
            let s = Message::Suspect(Suspect {
                incarnation,
                node,
                from: self.me.to_string(),
            });
            let parts = vec![self.part(&s)];
            self.raw_send(to, Some(pmax), parts);
        }
    }

    pub(super) fn handle_indirect_ping(
        &mut self,
        now: Instant,
        from: SocketAddr,
        ind: IndirectPing,
    ) {
        let local_seq = self.next_seq();
        let mut target = ind.target;
        if target.port() == 0 {
            target.set_port(self.advertise.port());
        }
        let reply_node =
            (!ind.source_node.is_empty()).then(|| Arc::<str>::from(ind.source_node.as_str()));
        self.acks.insert(
            local_seq,
            AckHandler::Relay {
                orig_seq: ind.seq_no,
                reply_to: ind.source_addr.unwrap_or(from),
                reply_node,
                nack: ind.nack,
            },
        );
        let key = self.schedule(now + self.cfg.probe_timeout, Timer::RelayExpire(local_seq));
        self.relay_timers.insert(local_seq, key);
        let ping = Message::Ping(Ping {
            seq_no: local_seq,
            node: ind.node.clone(),
            source_addr: Some(self.advertise),
            source_node: self.me.to_string(),
        });
        self.send_msg(target, Some(&ind.node), &ping);
    }

    /// An indirect probe we relay for someone expires (and may nack).
    pub(super) fn relay_expired(&mut self, seq: u32) {
        self.relay_timers.remove(&seq);
        if let Some(AckHandler::Relay {
            orig_seq,
            reply_to,
            reply_node,
            nack: true,
        }) = self.acks.remove(&seq)
        {
            let nack = Message::Nack(Nack { seq_no: orig_seq });
            self.send_msg(reply_to, reply_node.as_deref(), &nack);
        }
    }

    pub(super) fn handle_ack(&mut self, now: Instant, ack: Ack) {
        match self.acks.remove(&ack.seq_no) {
            Some(AckHandler::Probe) => self.probe_acked(now, ack.payload),
            Some(AckHandler::Verify(node)) => {
                if let Some(v) = self.verifying.get_mut(&node) {
                    v.1 = true;
                }
                // The suspect is alive, yet its refutation may never reach
                // us: if the others had declared *us* dead (we were the one
                // cut off), nobody gossips to us and our push/pull partners
                // are all suspects. Sync state with the suspect directly: we
                // learn its refutation, and of our own death to refute.
                if let Some(addr) = self.map.get(&node).map(|s| s.addr) {
                    self.push_pull_with(now, addr);
                }
            }
            Some(AckHandler::Relay {
                orig_seq,
                reply_to,
                reply_node,
                ..
            }) => {
                if let Some(key) = self.relay_timers.remove(&ack.seq_no) {
                    self.timers.remove(&key);
                }
                let fwd = Message::Ack(Ack {
                    seq_no: orig_seq,
                    payload: Vec::new(),
                });
                self.send_msg(reply_to, reply_node.as_deref(), &fwd);
            }
            None => {}
        }
    }

    pub(super) fn handle_nack(&mut self, nack: Nack) {
        if let Some(p) = self.probe.run.as_mut() {
            if p.seq == nack.seq_no
                && matches!(self.acks.get(&nack.seq_no), Some(AckHandler::Probe))
            {
                p.nacks += 1;
            }
        }
    }
}

//! The member table and how it changes: alive, suspect and dead notices
//! (from packets, from push/pull, and from this node's own probes), this
//! node refuting what is said about it, and what happens when a suspicion
//! runs out (Lifeguard's confirmations, and, beyond memberlist, a last
//! look before condemning a member on our word alone). The table itself,
//! with its running digest, is in `table.rs`.

use std::sync::Arc;

use rand::Rng;

use self::table::NodeState;
use super::{AckHandler, Output, Swim, Timer, LEAVE_TOKEN};
use crate::gossip::event::{EventKind, MemberEvent};
use crate::gossip::lifeguard::Suspicion;
use crate::gossip::memo;
use crate::gossip::wire::{Alive, AliveRef, Dead, Message, NodeStateKind, Ping, Suspect};
use crate::time::Instant;

pub(super) mod table;

impl Swim {
    /// An alive notice from a packet. Most repeat what we know (a join
    /// storm delivers each about a dozen times): those return here, before
    /// anything is copied, exactly where [`alive_node`](Self::alive_node)
    /// would return without a trace.
    pub(super) fn handle_alive(&mut self, now: Instant, mut a: AliveRef<'_>) {
        if a.addr.port() == 0 {
            a.addr.set_port(self.advertise.port());
        }
        let valid = a.vsn.is_none_or(|v| v[0] != 0 && v[1] != 0 && v[0] <= v[1]);
        let known = *a.node != *self.me
            && valid
            && self
                .map
                .get(a.node)
                .is_some_and(|s| s.addr == a.addr && a.incarnation <= s.incarnation);
        if !known {
            self.alive_node(now, &a, false);
        }
    }

    pub(super) fn next_incarnation(&mut self) -> u32 {
        self.incarnation = self.incarnation.saturating_add(1);
        self.incarnation
    }

    pub(super) fn event(&mut self, now: Instant, kind: EventKind, name: &str) {
        if let Some(n) = self.map.get(name) {
            let node = n.info();
            self.outputs.push_back(Output::Event(Box::new(MemberEvent {
                at: now,
                kind,
                node,
            })));
        }
    }

    pub(super) fn any_alive(&self) -> bool {
        self.map
            .values()
            .any(|n| *n.name != *self.me && !n.state.is_dead_or_left())
    }

    /// Bumps our incarnation past `accused` and gossips that we are alive.
    pub(super) fn refute(&mut self, now: Instant, accused: u32) {
        let mut inc = self.next_incarnation();
        if accused >= inc {
            inc = accused.saturating_add(1);
            self.incarnation = inc;
        }
        self.awareness.apply(1);
        self.stats.refutations += 1;
        let (name, alive) = {
            let Some(mut me) = self.map.state_mut(&self.me) else {
                return;
            };
            me.incarnation = inc;
            let alive = Message::Alive(Alive {
                incarnation: inc,
                node: me.name.to_string(),
                addr: me.addr,
                meta: me.meta.clone(),
                vsn: Some(me.vsn),
            });
            (me.name.clone(), alive)
        };
        self.broadcast(now, &name, &alive, None);
        self.event(now, EventKind::Refuted, &name);
    }

    pub(super) fn alive_node(&mut self, now: Instant, a: &AliveRef<'_>, bootstrap: bool) {
        let is_local = *a.node == *self.me;
        if self.left && is_local {
            return;
        }
        if let Some(v) = a.vsn {
            if v[0] == 0 || v[1] == 0 || v[0] > v[1] {
                tracing::warn!(node = %self.me, peer = %a.node, vsn = ?v, "ignoring alive message with invalid protocol versions");
                return;
            }
        }
        let mut updates_node = false;
        let name: Arc<str> = match self.map.get_key_value(a.node) {
            Some((name, state)) => {
                if state.addr != a.addr {
                    let reclaim = !self.cfg.dead_node_reclaim_time.is_zero()
                        && now - state.state_change > self.cfg.dead_node_reclaim_time;
                    if state.state == NodeStateKind::Left
                        || (state.state == NodeStateKind::Dead && reclaim)
                    {
                        tracing::info!(node = %self.me, peer = %a.node, old = %state.addr, new = %a.addr, "address of a departed node taken over");
                        updates_node = true;
                    } else {
                        self.stats.address_conflicts += 1;
                        tracing::error!(node = %self.me, peer = %a.node, ours = %state.addr, theirs = %a.addr, "conflicting address for node");
                        return;
                    }
                }
                // Most alive messages repeat what is known: done with one
                // lookup.
                if a.incarnation <= state.incarnation && !is_local && !updates_node {
                    return;
                }
                name.clone()
            }
            None => {
                let name = memo::name(a.node);
                self.map.insert(
                    name.clone(),
                    NodeState {
                        name: name.clone(),
                        addr: a.addr,
                        meta: a.meta.to_vec(),
                        incarnation: 0,
                        state: NodeStateKind::Dead,
                        state_change: now,
                        vsn: a.vsn.unwrap_or_default(),
                    },
                );
                // A random slot, not the end: appending would leave new nodes
                // unprobed for a whole round and stretch detection times.
                // Walking a shared order, though, moving a member would
                // break the walk: the newcomer goes after it, still this
                // round.
                let n = self.nodes.len();
                self.nodes.push_back(name.clone());
                if self.probe.walk.is_none() && n > 0 {
                    let offset = self.rng.random_range(0..n);
                    self.nodes.swap(offset, n);
                }
                name
            }
        };
        let Some(state) = self.map.get(&name) else {
            return;
        };
        if a.incarnation <= state.incarnation && !is_local && !updates_node {
            return;
        }
        if a.incarnation < state.incarnation && is_local {
            return;
        }
        let old_state = state.state;
        let old_meta_differs = state.meta[..] != *a.meta;
        let changed = old_meta_differs || a.vsn.is_some_and(|v| v != state.vsn);
        let identical =
            a.incarnation == state.incarnation && !old_meta_differs && a.vsn == Some(state.vsn);
        self.clear_suspicion(&name);
        if !bootstrap && is_local {
            // Someone gossips an alive message about us that is not ours
            // (we restarted, or our old self is remembered): outbid it unless
            // it says exactly what we would say.
            if identical {
                return;
            }
            self.refute(now, a.incarnation);
            return;
        }
        self.broadcast(now, &name, &Message::Alive(a.to_owned()), None);
        {
            let Some(mut state) = self.map.state_mut(&name) else {
                return;
            };
            if let Some(v) = a.vsn {
                state.vsn = v;
            }
            state.incarnation = a.incarnation;
            state.meta = a.meta.to_vec();
            state.addr = a.addr;
            if state.state != NodeStateKind::Alive {
                state.state = NodeStateKind::Alive;
                state.state_change = now;
            }
        }
        match old_state {
            NodeStateKind::Dead | NodeStateKind::Left => self.event(now, EventKind::Joined, &name),
            NodeStateKind::Suspect => {
                self.event(now, EventKind::Alive, &name);
                if changed {
                    self.event(now, EventKind::Updated, &name);
                }
            }
            NodeStateKind::Alive if changed => self.event(now, EventKind::Updated, &name),
            NodeStateKind::Alive => {}
        }
    }

    pub(super) fn clear_suspicion(&mut self, name: &Arc<str>) {
        self.suspicions.remove(name);
        if let Some((seq, _)) = self.verifying.remove(name) {
            self.acks.remove(&seq);
        }
    }

    /// Handles a suspicion. `witnessed` is false for suspicions learned from
    /// another member's state in push/pull: those are hearsay, so they are
    /// adopted locally but neither re-broadcast nor counted as Lifeguard
    /// confirmations (see `merge_remote`).
    pub(super) fn suspect_node(&mut self, now: Instant, s: &Suspect, witnessed: bool) {
        let Some((name, state)) = self.map.get_key_value(s.node.as_str()) else {
            return;
        };
        let name = name.clone();
        if s.incarnation < state.incarnation {
            return;
        }
        if *name == *self.me && s.incarnation == u32::MAX {
            // Nothing can outbid it: only a broken or hostile peer sends it.
            tracing::warn!(node = %self.me, from = %s.from, "ignoring a suspicion at the largest incarnation");
            return;
        }
        if let Some(susp) = self.suspicions.get_mut(&name) {
            if witnessed && susp.confirm(&s.from) {
                let deadline = susp.deadline;
                self.arm_suspicion(name.clone(), deadline);
                self.broadcast(now, &name, &Message::Suspect(s.clone()), None);
            }
            return;
        }
        if state.state != NodeStateKind::Alive {
            return;
        }
        if *name == *self.me {
            tracing::warn!(node = %self.me, from = %s.from, "refuting a suspicion about us");
            self.refute(now, s.incarnation);
            return;
        }
        if witnessed {
            self.broadcast(now, &name, &Message::Suspect(s.clone()), None);
        }
        if let Some(mut state) = self.map.state_mut(&name) {
            state.incarnation = s.incarnation;
            state.state = NodeStateKind::Suspect;
            state.state_change = now;
        }
        // Expect k independent confirmations, two probe intervals short of
        // the multiplier; none when the cluster is too small to give them.
        let n = self.nodes.len();
        let mut k = self.cfg.suspicion_mult as i64 - 2;
        if (n as i64) - 2 < k {
            k = 0;
        }
        let min = self.cfg.suspicion_timeout(n);
        let max = min * self.cfg.suspicion_max_timeout_mult as u32;
        let from = witnessed.then(|| memo::name(&s.from));
        let susp = Suspicion::new(from, k, min, max, now);
        let deadline = susp.deadline;
        self.suspicions.insert(name.clone(), susp);
        self.arm_suspicion(name.clone(), deadline);
        self.event(now, EventKind::Suspect, &name);
    }

    pub(super) fn arm_suspicion(&mut self, name: Arc<str>, at: Instant) {
        self.schedule(at, Timer::Suspicion(name));
    }

    pub(super) fn suspicion_expired(&mut self, now: Instant, name: Arc<str>) {
        let Some(susp) = self.suspicions.get(&name) else {
            return;
        };
        // A confirmation moved the deadline (another timer is armed for it).
        if susp.deadline > now {
            return;
        }
        let confirmations = susp.confirmations();
        let unconfirmed = confirmations == 0 && susp.expected() > 0;
        let change = susp.state_change;
        let Some(state) = self.map.get(&name) else {
            return;
        };
        let incarnation = state.incarnation;
        if state.state != NodeStateKind::Suspect || state.state_change != change {
            self.clear_suspicion(&name);
            return;
        }
        // Our own bad health makes our judgement suspect even when others
        // agree: they may have been cut off with us, and their suspicions
        // confirm ours for no good reason once the cut heals.
        if (unconfirmed || self.awareness.score() > 0) && self.reconsider(now, &name, unconfirmed) {
            return;
        }
        tracing::info!(node = %self.me, peer = %name, confirmations, "suspicion timed out; marking failed");
        let d = Dead {
            incarnation,
            node: name.to_string(),
            from: self.me.to_string(),
        };
        self.dead_node(now, &d);
    }

    /// Beyond memberlist: a suspicion no other member confirmed rests on our
    /// own failed probe alone, possibly long ago, and a confirmed one is
    /// only as good as our own health. Before condemning the node: if the
    /// suspicion is unconfirmed and our health is degraded, we are the
    /// likelier culprit (cut off, or overloaded), so say the suspicion again
    /// and wait another full period; otherwise ping the suspect once more,
    /// with the suspicion in front so a live suspect refutes at once, and
    /// condemn it only if that goes unanswered. Returns true if the verdict
    /// is postponed.
    pub(super) fn reconsider(&mut self, now: Instant, name: &Arc<str>, unconfirmed: bool) -> bool {
        let Some(state) = self.map.get(name).cloned() else {
            return false;
        };
        let suspect = Message::Suspect(Suspect {
            incarnation: state.incarnation,
            node: name.to_string(),
            from: self.me.to_string(),
        });
        // Whether to say the suspicion again, in our name, when extending it.
        let announce = match self.verifying.remove(name) {
            Some((seq, answered)) => {
                self.acks.remove(&seq);
                if !answered {
                    return false;
                }
                // Alive after all; its refutation is on its way (or it
                // already stands at a higher incarnation than we know).
                // Gossiping the suspicion now would only add a confirmation
                // against a node we just heard from.
                self.stats.verifications_answered += 1;
                false
            }
            None if unconfirmed && self.awareness.score() > 0 => {
                self.stats.suspicions_deferred += 1;
                // Re-say only what someone witnessed: hearsay stays hearsay.
                self.suspicions.get(name).is_some_and(Suspicion::witnessed)
            }
            None => {
                let seq = self.next_seq();
                self.stats.verifications += 1;
                self.verifying.insert(name.clone(), (seq, false));
                self.acks.insert(seq, AckHandler::Verify(name.clone()));
                let ping = Message::Ping(Ping {
                    seq_no: seq,
                    node: name.to_string(),
                    source_addr: Some(self.advertise),
                    source_node: self.me.to_string(),
                });
                let parts = vec![self.part(&suspect), self.part(&ping)];
                self.raw_send(state.addr, Some(state.pmax()), parts);
                let deadline = now + self.awareness.scale(self.cfg.probe_interval);
                self.postpone(name, deadline);
                return true;
            }
        };
        tracing::info!(node = %self.me, peer = %name, health = self.awareness.score(), "unconfirmed suspicion; extending it");
        let Some(deadline) = self.suspicions.get_mut(name).map(|s| {
            s.extend(now);
            s.deadline
        }) else {
            return false;
        };
        self.postpone(name, deadline);
        if announce {
            self.broadcast(now, name, &suspect, None);
        }
        true
    }

    pub(super) fn postpone(&mut self, name: &Arc<str>, deadline: Instant) {
        if let Some(susp) = self.suspicions.get_mut(name) {
            susp.deadline = deadline;
        }
        self.arm_suspicion(name.clone(), deadline);
    }

    pub(super) fn dead_node(&mut self, now: Instant, d: &Dead) {
        let Some((name, state)) = self.map.get_key_value(d.node.as_str()) else {
            return;
        };
        let name = name.clone();
        if d.incarnation < state.incarnation {
            return;
        }
        self.clear_suspicion(&name);
        let Some(state) = self.map.get(&name) else {
            return;
        };
        // A failed member can still be declared departed (a force-leave):
        // its own "dead" notice moves it from failed to left.
        let now_left = state.state == NodeStateKind::Dead && d.node == d.from;
        if state.state.is_dead_or_left() && !now_left {
            return;
        }
        let msg = Message::Dead(d.clone());
        if *name == *self.me {
            if !self.left && d.incarnation == u32::MAX {
                tracing::warn!(node = %self.me, from = %d.from, "ignoring a death notice at the largest incarnation");
                return;
            }
            if !self.left {
                tracing::warn!(node = %self.me, from = %d.from, "refuting a death notice about us");
                self.refute(now, d.incarnation);
                return;
            }
            self.broadcast(now, &name, &msg, Some(LEAVE_TOKEN));
        } else {
            self.broadcast(now, &name, &msg, None);
        }
        let left = d.node == d.from;
        if let Some(mut state) = self.map.state_mut(&name) {
            state.incarnation = d.incarnation;
            state.state = if left {
                NodeStateKind::Left
            } else {
                NodeStateKind::Dead
            };
            state.state_change = now;
        }
        let kind = if left {
            EventKind::Left
        } else {
            EventKind::Failed
        };
        self.event(now, kind, &name);
    }
}

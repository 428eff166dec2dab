//! What leaves a node: news queued to piggyback on packets (the broadcast
//! queue), the gossip tick that spreads it, and the packets and streams
//! themselves, encoded, compounded, compressed and checksummed as
//! configured, or handed over as values with the codec skipped.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use super::{Output, Part, PendingStream, StreamId, StreamRequest, Swim, Timer, LEAVE_TOKEN};
use crate::gossip::memo;
use crate::gossip::wire::{
    self, Message, NodeStateKind, StreamMessage, COMPOUND_HEADER_OVERHEAD, COMPOUND_OVERHEAD,
    MAX_COMPOUND_PARTS,
};
use crate::time::Instant;

impl Swim {
    pub(super) fn broadcast(
        &mut self,
        now: Instant,
        node: &Arc<str>,
        msg: &Message,
        notify: Option<u64>,
    ) {
        self.enqueue(now, Some(node), msg, notify);
    }

    /// Queues `msg`; news about a member (`about`) replaces older news
    /// about it. Whether it was queued.
    pub(super) fn enqueue(
        &mut self,
        now: Instant,
        about: Option<&Arc<str>>,
        msg: &Message,
        notify: Option<u64>,
    ) -> bool {
        let bytes = msg.to_bytes();
        // A message that can never fit a packet would sit in the queue for
        // ever (it is never sent, so never retired) and crowd out the rest.
        if bytes.len() + COMPOUND_OVERHEAD + COMPOUND_HEADER_OVERHEAD > self.cfg.udp_buffer_size {
            tracing::warn!(node = %self.me, about = ?about, len = bytes.len(), "message too large to gossip; dropped");
            if notify == Some(LEAVE_TOKEN) {
                self.leave_complete();
            }
            return false;
        }
        // Queued messages live long and there is one per member: keep only
        // their bytes, not the encoder's spare capacity.
        let part = Part {
            bytes: Bytes::from(bytes.into_boxed_slice()),
            msg: self.typed.then(|| Arc::new(msg.clone())),
        };
        match about {
            Some(node) if **node == *self.me => {
                self.broadcasts
                    .push_pinned(Some(node.clone()), part, notify)
            }
            about => self.broadcasts.push(about.cloned(), part, notify),
        }
        self.wake_gossip(now);
        self.check_finished();
        true
    }

    pub(super) fn leave_complete(&mut self) {
        if !std::mem::replace(&mut self.leave_reported, true) {
            self.outputs.push_back(Output::LeaveComplete);
        }
    }

    pub(super) fn check_finished(&mut self) {
        for token in self.broadcasts.take_finished() {
            if token == LEAVE_TOKEN {
                self.leave_complete();
            }
        }
    }

    // ---------------------------------------------------------------- gossip

    /// Arms the gossip tick at the grid's next point after `now`, if it
    /// sleeps: a node with nothing to say costs no wake-ups.
    pub(super) fn wake_gossip(&mut self, now: Instant) {
        let (origin, armed) = self.gossip_clock;
        if armed {
            return;
        }
        let every = self.cfg.gossip_interval.as_nanos();
        let since = now.saturating_duration_since(origin).as_nanos();
        let ticks = (since / every + 1).min(u32::MAX as u128) as u32;
        let at = origin + self.cfg.gossip_interval * ticks;
        self.schedule(at, Timer::GossipTick);
        self.gossip_clock.1 = true;
    }

    pub(super) fn gossip(&mut self, now: Instant) {
        // Nothing to say: no targets to pick (memberlist picks them first,
        // then finds nothing to send).
        if self.broadcasts.is_empty() {
            return;
        }
        let me = self.me.clone();
        let dead_time = self.cfg.gossip_to_the_dead_time;
        let targets = self.k_random_nodes(self.cfg.gossip_nodes, |n| {
            *n.name == *me
                || match n.state {
                    NodeStateKind::Alive | NodeStateKind::Suspect => false,
                    NodeStateKind::Dead => now - n.state_change > dead_time,
                    NodeStateKind::Left => true,
                }
        });
        let limit = self.cfg.udp_buffer_size - COMPOUND_HEADER_OVERHEAD;
        for node in targets {
            let msgs = self.take_broadcasts(limit, MAX_COMPOUND_PARTS);
            if msgs.is_empty() {
                return;
            }
            self.raw_send(node.addr, Some(node.pmax()), msgs);
        }
    }

    pub(super) fn take_broadcasts(&mut self, limit: usize, max_parts: usize) -> Vec<Part> {
        let transmit_limit = self.cfg.retransmit_limit(self.nodes.len());
        let msgs = self
            .broadcasts
            .take(COMPOUND_OVERHEAD, limit, transmit_limit, max_parts);
        self.check_finished();
        msgs
    }

    /// Sends `msg`, piggybacking queued broadcasts when there is room.
    pub(super) fn send_msg(&mut self, to: SocketAddr, node: Option<&str>, msg: &Message) {
        let first = self.part(msg);
        let pmax = node.and_then(|n| self.map.get(n)).map(|n| n.pmax());
        let avail = self
            .cfg
            .udp_buffer_size
            .saturating_sub(first.bytes.len() + COMPOUND_HEADER_OVERHEAD);
        // One part of the compound is the message itself.
        let extra = self.take_broadcasts(avail, MAX_COMPOUND_PARTS - 1);
        let mut parts = Vec::with_capacity(1 + extra.len());
        parts.push(first);
        parts.extend(extra);
        self.raw_send(to, pmax, parts);
    }

    /// `msg` ready to send.
    pub(super) fn part(&self, msg: &Message) -> Part {
        Part {
            bytes: msg.to_bytes().into(),
            msg: self.typed.then(|| Arc::new(msg.clone())),
        }
    }

    /// Sends `parts` as one datagram: one message alone, more as a
    /// compound; compressed and checksummed as configured. With the codec
    /// skipped, the messages go as they are.
    pub(super) fn raw_send(&mut self, to: SocketAddr, pmax: Option<u8>, parts: Vec<Part>) {
        let to = wire::canonical(to);
        self.stats.packets_sent += 1;
        if self.typed {
            let size = wire::compound_len(parts.iter().map(|p| p.bytes.len()));
            // A part queued before the codec was skipped has only bytes.
            let mut msgs = Vec::with_capacity(parts.len());
            for p in parts {
                match p.msg {
                    Some(m) => msgs.push(m),
                    None => {
                        wire::decode_packet(&p.bytes, &mut |m| msgs.extend(m.ok().map(Arc::new)))
                    }
                }
            }
            self.outputs.push_back(Output::Messages { to, msgs, size });
            return;
        }
        let mut data = match parts.as_slice() {
            [one] => one.bytes.to_vec(),
            _ => {
                let mut out = Vec::with_capacity(self.cfg.udp_buffer_size);
                let bytes: Vec<&[u8]> = parts.iter().map(|p| &p.bytes[..]).collect();
                wire::encode_compound(&bytes, &mut out);
                out
            }
        };
        if self.cfg.enable_compression {
            let c = wire::compress(&data);
            if c.len() < data.len() {
                data = c;
            }
        }
        if pmax.is_some_and(|p| p >= 5) {
            data = wire::add_crc(&data);
        }
        self.outputs.push_back(Output::Packet { to, data });
    }

    pub(super) fn stream_bytes(&self, msg: &StreamMessage) -> Bytes {
        let encode = || {
            let raw = msg.to_bytes();
            Bytes::from(if self.cfg.enable_compression {
                wire::compress(&raw)
            } else {
                raw
            })
        };
        match msg {
            // A state shared by many nodes is encoded once per form, and
            // its bytes decode to it by lookup.
            StreamMessage::PushPull(pp) if memo::enabled() => {
                let slot = &pp.memo.encoded[usize::from(self.cfg.enable_compression)];
                let mut fresh = false;
                let bytes = slot.get_or_init(|| {
                    fresh = true;
                    encode()
                });
                if fresh {
                    memo::remember_stream(bytes, pp.clone());
                }
                bytes.clone()
            }
            _ => encode(),
        }
    }

    pub(super) fn open_stream(
        &mut self,
        _now: Instant,
        to: SocketAddr,
        msg: StreamMessage,
        deadline: Instant,
        expect_reply: bool,
        kind: PendingStream,
    ) -> StreamId {
        self.next_stream += 1;
        let id = self.next_stream;
        self.streams.insert(id, kind);
        let size = msg.encoded_len();
        let (data, message) = if self.typed {
            (Bytes::new(), Some(msg))
        } else {
            (self.stream_bytes(&msg), None)
        };
        self.outputs
            .push_back(Output::Stream(Box::new(StreamRequest {
                id,
                to: wire::canonical(to),
                data,
                message,
                size,
                deadline,
                expect_reply,
            })));
        id
    }
}

//! Encoding: each message as memberlist writes it (a type byte, then a
//! msgpack map with the Go structs' field names in their order), and the
//! wrappers around messages: compound, compress (LZW) and the CRC header.

use std::net::SocketAddr;

use super::{
    ip_to_wire, Ack, ErrResp, Message, MessageType, Ping, PushPull, StreamMessage,
    COMPOUND_HEADER_OVERHEAD, COMPOUND_OVERHEAD, MAX_COMPOUND_PARTS,
};
use crate::msgpack::Writer;

fn write_source(w: &mut Writer<'_>, source_addr: &Option<SocketAddr>, source_node: &str) {
    if let Some(sa) = source_addr {
        w.str("SourceAddr").raw(&ip_to_wire(sa.ip()));
        w.str("SourcePort").uint(sa.port() as u64);
    }
    if !source_node.is_empty() {
        w.str("SourceNode").str(source_node);
    }
}

fn source_fields(source_addr: &Option<SocketAddr>, source_node: &str) -> usize {
    2 * source_addr.is_some() as usize + !source_node.is_empty() as usize
}

impl Ping {
    fn encode_body(&self, w: &mut Writer<'_>) {
        w.map_len(2 + source_fields(&self.source_addr, &self.source_node));
        w.str("SeqNo").uint(self.seq_no as u64);
        w.str("Node").str(&self.node);
        write_source(w, &self.source_addr, &self.source_node);
    }
}

impl Ack {
    fn encode_body(&self, w: &mut Writer<'_>) {
        w.map_len(2);
        w.str("SeqNo").uint(self.seq_no as u64);
        w.str("Payload").bytes_or_nil(&self.payload);
    }
}

impl ErrResp {
    fn encode_body(&self, w: &mut Writer<'_>) {
        w.map_len(1).str("Error").str(&self.error);
    }
}

fn encode_incarnation_node_from(w: &mut Writer<'_>, inc: u32, node: &str, from: &str) {
    w.map_len(3);
    w.str("Incarnation").uint(inc as u64);
    w.str("Node").str(node);
    w.str("From").str(from);
}

impl Message {
    /// The message's type byte.
    pub fn message_type(&self) -> MessageType {
        match self {
            Message::Ping(_) => MessageType::Ping,
            Message::IndirectPing(_) => MessageType::IndirectPing,
            Message::Ack(_) => MessageType::Ack,
            Message::Nack(_) => MessageType::Nack,
            Message::Suspect(_) => MessageType::Suspect,
            Message::Alive(_) => MessageType::Alive,
            Message::Dead(_) => MessageType::Dead,
            Message::User(_) => MessageType::User,
            Message::Err(_) => MessageType::Err,
        }
    }

    /// Appends the type byte and the body to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        out.push(self.message_type() as u8);
        let mut w = Writer::new(out);
        match self {
            Message::Ping(p) => p.encode_body(&mut w),
            Message::IndirectPing(p) => {
                w.map_len(5 + source_fields(&p.source_addr, &p.source_node));
                w.str("SeqNo").uint(p.seq_no as u64);
                w.str("Target").raw(&ip_to_wire(p.target.ip()));
                w.str("Port").uint(p.target.port() as u64);
                w.str("Node").str(&p.node);
                w.str("Nack").bool(p.nack);
                write_source(&mut w, &p.source_addr, &p.source_node);
            }
            Message::Ack(a) => a.encode_body(&mut w),
            Message::Nack(n) => {
                w.map_len(1).str("SeqNo").uint(n.seq_no as u64);
            }
            Message::Suspect(s) => {
                encode_incarnation_node_from(&mut w, s.incarnation, &s.node, &s.from)
            }
            Message::Dead(d) => {
                encode_incarnation_node_from(&mut w, d.incarnation, &d.node, &d.from)
            }
            Message::Alive(a) => {
                w.map_len(6);
                w.str("Incarnation").uint(a.incarnation as u64);
                w.str("Node").str(&a.node);
                w.str("Addr").raw(&ip_to_wire(a.addr.ip()));
                w.str("Port").uint(a.addr.port() as u64);
                w.str("Meta").bytes_or_nil(&a.meta);
                w.str("Vsn")
                    .bytes_or_nil(a.vsn.as_ref().map_or(&[][..], |v| &v[..]));
            }
            Message::User(payload) => out.extend_from_slice(payload),
            Message::Err(e) => e.encode_body(&mut w),
        }
    }

    /// The encoded message as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out);
        out
    }
}

impl StreamMessage {
    /// Appends the message as it goes on a stream.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            StreamMessage::Ping(p) => {
                out.push(MessageType::Ping as u8);
                p.encode_body(&mut Writer::new(out));
            }
            StreamMessage::Ack(a) => {
                out.push(MessageType::Ack as u8);
                a.encode_body(&mut Writer::new(out));
            }
            StreamMessage::PushPull(pp) => encode_push_pull(pp, out),
            StreamMessage::User(payload) => {
                out.push(MessageType::User as u8);
                Writer::new(out)
                    .map_len(1)
                    .str("UserMsgLen")
                    .uint(payload.len() as u64);
                out.extend_from_slice(payload);
            }
            StreamMessage::Err(e) => {
                out.push(MessageType::Err as u8);
                e.encode_body(&mut Writer::new(out));
            }
        }
    }

    /// The encoded message as a new vector.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        self.encode(&mut out);
        out
    }

    /// How long [`to_bytes`](Self::to_bytes) would be, without encoding a
    /// push/pull's thousands of members (simulators size streams by it).
    pub fn encoded_len(&self) -> usize {
        match self {
            StreamMessage::PushPull(pp) => *pp.memo.len.get_or_init(|| push_pull_len(pp)),
            other => other.to_bytes().len(),
        }
    }
}

/// The length of what [`encode_push_pull`] writes.
fn push_pull_len(pp: &PushPull) -> usize {
    use crate::msgpack::{container_len, raw_len, uint_len};
    let key = |k: &str| raw_len(k.len());
    let bytes_or_nil = |b: &[u8]| if b.is_empty() { 1 } else { raw_len(b.len()) };
    let head = 1
        + container_len(3)
        + key("Nodes")
        + uint_len(pp.nodes.len() as u64)
        + key("UserStateLen")
        + uint_len(pp.user_state.len() as u64)
        + key("Join")
        + 1;
    let fixed = container_len(7)
        + key("Name")
        + key("Addr")
        + key("Port")
        + key("Meta")
        + key("Incarnation")
        + key("State")
        + key("Vsn");
    let nodes: usize = pp
        .nodes
        .iter()
        .map(|n| {
            let addr = if n.addr.is_ipv4() { 4 } else { 16 };
            fixed
                + raw_len(n.name.len())
                + raw_len(addr)
                + uint_len(n.addr.port() as u64)
                + bytes_or_nil(&n.meta)
                + uint_len(n.incarnation as u64)
                + uint_len(n.state as u64)
                + bytes_or_nil(n.vsn.as_ref().map_or(&[][..], |v| &v[..]))
        })
        .sum();
    head + nodes + pp.user_state.len()
}

fn encode_push_pull(pp: &PushPull, out: &mut Vec<u8>) {
    out.push(MessageType::PushPull as u8);
    let mut w = Writer::new(out);
    w.map_len(3);
    w.str("Nodes").uint(pp.nodes.len() as u64);
    w.str("UserStateLen").uint(pp.user_state.len() as u64);
    w.str("Join").bool(pp.join);
    for n in &pp.nodes {
        w.map_len(7);
        w.str("Name").str(&n.name);
        w.str("Addr").raw(&ip_to_wire(n.addr.ip()));
        w.str("Port").uint(n.addr.port() as u64);
        w.str("Meta").bytes_or_nil(&n.meta);
        w.str("Incarnation").uint(n.incarnation as u64);
        w.str("State").uint(n.state as u64);
        w.str("Vsn")
            .bytes_or_nil(n.vsn.as_ref().map_or(&[][..], |v| &v[..]));
    }
    out.extend_from_slice(&pp.user_state);
}

/// Bytes a datagram of parts this long takes: one alone as it is, more as
/// a compound (what [`encode_compound`] writes).
pub fn compound_len(part_lens: impl ExactSizeIterator<Item = usize>) -> usize {
    if part_lens.len() == 1 {
        return part_lens.sum();
    }
    COMPOUND_HEADER_OVERHEAD + part_lens.map(|l| COMPOUND_OVERHEAD + l).sum::<usize>()
}

/// Appends a compound message holding `parts` (at most
/// [`MAX_COMPOUND_PARTS`], each under 64 KiB).
pub fn encode_compound<B: AsRef<[u8]>>(parts: &[B], out: &mut Vec<u8>) {
    debug_assert!(parts.len() <= MAX_COMPOUND_PARTS);
    out.push(MessageType::Compound as u8);
    out.push(parts.len() as u8);
    for p in parts {
        out.extend_from_slice(&(p.as_ref().len() as u16).to_be_bytes());
    }
    for p in parts {
        out.extend_from_slice(p.as_ref());
    }
}

/// Wraps `payload` in a `compress` message (LZW, as memberlist does).
pub fn compress(payload: &[u8]) -> Vec<u8> {
    let lzw = crate::gossip::lzw::compress(payload);
    let mut out = Vec::with_capacity(lzw.len() + 16);
    out.push(MessageType::Compress as u8);
    let mut w = Writer::new(&mut out);
    w.map_len(2).str("Algo").uint(0).str("Buf").raw(&lzw);
    out
}

/// Prefixes `payload` with a `hasCrc` header (protocol version 5).
pub fn add_crc(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 5);
    out.push(MessageType::HasCrc as u8);
    out.extend_from_slice(&crc32fast::hash(payload).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

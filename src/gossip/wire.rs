//! memberlist's wire protocol (version 0.2.x, protocol versions 1–5).
//!
//! A UDP packet is one message: a type byte followed by a msgpack map, or one
//! of the wrappers — `compound` (several messages with a length table),
//! `compress` (LZW, LSB first, 8-bit literals) and `hasCrc` (CRC-32 IEEE of the
//! rest). A TCP stream carries one message whose end is only known from the
//! msgpack values themselves, so [`decode_stream`] reports whether the bytes
//! so far hold a whole message.
//!
//! Field names, field order and value encodings follow the Go structs in
//! memberlist's `net.go`, so a Go memberlist node reads what we write and the
//! other way round.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::msgpack::{self, Reader, Writer};

/// Largest node metadata memberlist allows.
pub const META_MAX_SIZE: usize = 512;
/// Largest push/pull state we accept over a stream (memberlist's limit).
pub const MAX_PUSH_STATE_BYTES: usize = 20 * 1024 * 1024;
/// Largest decompressed UDP payload we accept.
pub const MAX_PACKET_PAYLOAD: usize = 64 * 1024;
/// Oldest memberlist protocol version we understand.
pub const PROTOCOL_VERSION_MIN: u8 = 1;
/// Newest memberlist protocol version we understand (5 adds packet CRCs).
pub const PROTOCOL_VERSION_MAX: u8 = 5;
/// Bytes memberlist reserves for a compound message's header.
pub const COMPOUND_HEADER_OVERHEAD: usize = 2;
/// Bytes memberlist reserves per part of a compound message.
pub const COMPOUND_OVERHEAD: usize = 2;
/// Most parts in a compound message. The format allows 255, but memberlist
/// 0.2.2 computes `numParts*2` in 8 bits, so 128 or more parts are misread.
pub const MAX_COMPOUND_PARTS: usize = 127;
/// Longest node name we accept. memberlist sets none, but a name must fit in
/// a packet with its metadata for its alive message to be gossiped at all.
pub const MAX_NAME_LEN: usize = 512;
/// Wrappers deeper than this (compressed compounds of compressed …) are refused.
const MAX_WRAP_DEPTH: usize = 4;

/// The first byte of every memberlist message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MessageType {
    /// Direct probe.
    Ping = 0,
    /// Ask a peer to probe a third node for us.
    IndirectPing = 1,
    /// Answer to a ping.
    Ack = 2,
    /// A node is suspected of having failed.
    Suspect = 3,
    /// A node is alive (also: joins, refutations, metadata updates).
    Alive = 4,
    /// A node is confirmed dead, or has left when it says so itself.
    Dead = 5,
    /// Full state exchange (streams only).
    PushPull = 6,
    /// Several messages in one packet.
    Compound = 7,
    /// Opaque payload for the layer above memberlist.
    User = 8,
    /// LZW-compressed message.
    Compress = 9,
    /// AES-GCM encrypted message.
    Encrypt = 10,
    /// An indirect probe was tried but the target did not answer.
    Nack = 11,
    /// CRC-32 checked message.
    HasCrc = 12,
    /// Error answer on a stream.
    Err = 13,
}

impl MessageType {
    /// The type for a wire byte, if it is one.
    pub fn from_byte(b: u8) -> Option<Self> {
        use MessageType::*;
        Some(match b {
            0 => Ping,
            1 => IndirectPing,
            2 => Ack,
            3 => Suspect,
            4 => Alive,
            5 => Dead,
            6 => PushPull,
            7 => Compound,
            8 => User,
            9 => Compress,
            10 => Encrypt,
            11 => Nack,
            12 => HasCrc,
            13 => Err,
            _ => return None,
        })
    }
}

/// Why bytes from the network were not a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    /// The message ends early.
    #[error("message is truncated")]
    Truncated,
    /// A field or value is malformed.
    #[error("malformed {message} message: {why}")]
    Malformed {
        /// Which message was being read.
        message: &'static str,
        /// What was wrong with it.
        why: String,
    },
    /// The type byte is not one memberlist defines, or not allowed here.
    #[error("unexpected message type {0}")]
    UnexpectedType(u8),
    /// The CRC does not match the contents.
    #[error("checksum mismatch")]
    Checksum,
    /// The payload would exceed a size limit.
    #[error("message exceeds the {limit}-byte limit")]
    TooLarge {
        /// The limit that was hit.
        limit: usize,
    },
    /// The peer encrypts gossip but this node has no keyring.
    #[error("message is encrypted but gossip encryption is not configured")]
    Encrypted,
    /// The LZW stream is corrupt or uses an unknown algorithm.
    #[error("cannot decompress: {0}")]
    Compression(String),
    /// Wrappers are nested deeper than any honest peer would.
    #[error("messages nested too deeply")]
    TooDeep,
}

fn malformed(message: &'static str) -> impl Fn(msgpack::Error) -> WireError {
    move |e| match e {
        msgpack::Error::Incomplete => WireError::Truncated,
        msgpack::Error::Invalid(why) => WireError::Malformed { message, why },
    }
}

fn bad(message: &'static str, why: impl Into<String>) -> WireError {
    WireError::Malformed {
        message,
        why: why.into(),
    }
}

/// A node's state as memberlist sends it in push/pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum NodeStateKind {
    /// Answering probes.
    Alive = 0,
    /// Failed a probe; may still refute.
    Suspect = 1,
    /// Confirmed failed.
    Dead = 2,
    /// Left on purpose.
    Left = 3,
}

impl NodeStateKind {
    fn from_wire(v: i64) -> Option<Self> {
        Some(match v {
            0 => NodeStateKind::Alive,
            1 => NodeStateKind::Suspect,
            2 => NodeStateKind::Dead,
            3 => NodeStateKind::Left,
            _ => return None,
        })
    }

    /// Dead or left: no longer a member.
    pub fn is_dead_or_left(self) -> bool {
        matches!(self, NodeStateKind::Dead | NodeStateKind::Left)
    }

    /// Lower-case name, as logs and traces print it.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStateKind::Alive => "alive",
            NodeStateKind::Suspect => "suspect",
            NodeStateKind::Dead => "dead",
            NodeStateKind::Left => "left",
        }
    }
}

/// Protocol versions a node speaks: `[pmin, pmax, pcur, dmin, dmax, dcur]`
/// (memberlist's own protocol, then the delegate's).
pub type Versions = [u8; 6];

/// Direct probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ping {
    /// Sequence number echoed in the ack.
    pub seq_no: u32,
    /// Intended recipient's name, so a restarted node under another name ignores it.
    pub node: String,
    /// Where to send the ack, if not to the packet's source.
    pub source_addr: Option<SocketAddr>,
    /// Sender's name.
    pub source_node: String,
}

/// Request to probe `target` on the sender's behalf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndirectPing {
    /// Sequence number of the original probe.
    pub seq_no: u32,
    /// Address of the node to probe.
    pub target: SocketAddr,
    /// Name of the node to probe.
    pub node: String,
    /// Whether the requester wants a nack if the target stays silent.
    pub nack: bool,
    /// Where to send the ack or nack, if not to the packet's source.
    pub source_addr: Option<SocketAddr>,
    /// Requester's name.
    pub source_node: String,
}

/// Answer to a ping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ack {
    /// Sequence number of the ping.
    pub seq_no: u32,
    /// Opaque payload for the layer above (network coordinates).
    pub payload: Vec<u8>,
}

/// The node asked to probe indirectly got no answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nack {
    /// Sequence number of the original probe.
    pub seq_no: u32,
}

/// Error answer on a stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrResp {
    /// What went wrong, in the peer's words.
    pub error: String,
}

/// Suspicion about a node (`Dead` has the same shape).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Suspect {
    /// Incarnation the suspicion is about.
    pub incarnation: u32,
    /// Suspected node.
    pub node: String,
    /// Who suspects it.
    pub from: String,
}

/// Confirmation that a node is dead (or, when `from == node`, has left).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dead {
    /// Incarnation being declared dead.
    pub incarnation: u32,
    /// The node.
    pub node: String,
    /// Who declares it.
    pub from: String,
}

/// An [`Alive`] still in the bytes it came in: most alive notices a node
/// receives repeat what it knows, and are dropped without allocating.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AliveRef<'a> {
    /// Incarnation number; higher wins.
    pub incarnation: u32,
    /// The node.
    pub node: &'a str,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its metadata.
    pub meta: &'a [u8],
    /// Its protocol versions, if it sent them.
    pub vsn: Option<Versions>,
}

impl AliveRef<'_> {
    /// The notice as an owned message.
    pub fn to_owned(&self) -> Alive {
        Alive {
            incarnation: self.incarnation,
            node: self.node.to_owned(),
            addr: self.addr,
            meta: self.meta.to_vec(),
            vsn: self.vsn,
        }
    }
}

/// One part of a packet as [`decode_packet_parts`] hands it over.
#[derive(Debug)]
pub enum Part<'a> {
    /// An alive notice, borrowed.
    Alive(AliveRef<'a>),
    /// Any other message, or why a part could not be read.
    Message(Result<Message, WireError>),
}

/// A node is alive at an incarnation, with its address, metadata and versions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alive {
    /// Incarnation number; higher wins.
    pub incarnation: u32,
    /// The node.
    pub node: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its metadata (at most [`META_MAX_SIZE`] bytes).
    pub meta: Vec<u8>,
    /// Its protocol versions, if it sent them.
    pub vsn: Option<Versions>,
}

impl Alive {
    /// The notice, borrowed.
    pub fn view(&self) -> AliveRef<'_> {
        AliveRef {
            incarnation: self.incarnation,
            node: &self.node,
            addr: self.addr,
            meta: &self.meta,
            vsn: self.vsn,
        }
    }
}

/// One node's entry in a push/pull exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushNodeState {
    /// The node.
    pub name: String,
    /// Its gossip address.
    pub addr: SocketAddr,
    /// Its metadata.
    pub meta: Vec<u8>,
    /// Last known incarnation.
    pub incarnation: u32,
    /// State as the sender sees it.
    pub state: NodeStateKind,
    /// Its protocol versions, if known.
    pub vsn: Option<Versions>,
}

/// A full state exchange.
#[derive(Debug, Clone, Default)]
pub struct PushPull {
    /// True on the first exchange of a join.
    pub join: bool,
    /// Every node the sender knows.
    pub nodes: Vec<PushNodeState>,
    /// Opaque state of the layer above.
    pub user_state: Vec<u8>,
    /// What was worked out about this state once (never sent).
    pub(crate) memo: PushPullMemo,
}

impl PushPull {
    /// A state exchange.
    pub fn new(join: bool, nodes: Vec<PushNodeState>, user_state: Vec<u8>) -> Self {
        PushPull {
            join,
            nodes,
            user_state,
            memo: PushPullMemo::default(),
        }
    }

    /// The sum of the nodes' [`entry_digest`]s, and how many there are:
    /// what a member table holding exactly these nodes has (see
    /// [`memo`](super::memo)). Worked out once.
    pub fn digest(&self) -> (u64, usize) {
        *self.memo.digest.get_or_init(|| {
            let sum = self.nodes.iter().fold(0u64, |d, n| {
                d.wrapping_add(entry_digest(
                    &n.name,
                    n.addr,
                    &n.meta,
                    n.incarnation,
                    n.state,
                    n.vsn,
                ))
            });
            (sum, self.nodes.len())
        })
    }
}

impl PartialEq for PushPull {
    fn eq(&self, o: &Self) -> bool {
        (self.join, &self.nodes, &self.user_state) == (o.join, &o.nodes, &o.user_state)
    }
}

impl Eq for PushPull {}

/// Results about a [`PushPull`] worked out once and shared by every holder
/// of it: its digest, its protocol check, its encodings (plain and
/// compressed), its encoded length.
#[derive(Clone, Default)]
pub(crate) struct PushPullMemo {
    pub(crate) digest: std::sync::OnceLock<(u64, usize)>,
    pub(crate) verified: std::sync::OnceLock<Result<(), String>>,
    pub(crate) encoded: [std::sync::OnceLock<bytes::Bytes>; 2],
    len: std::sync::OnceLock<usize>,
}

impl std::fmt::Debug for PushPullMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushPullMemo")
    }
}

/// A 64-bit hash of one member as push/pull sends it: two member tables
/// with the same wrapping sum of these (and the same size) send the same
/// state, but for a chance of about 2⁻⁶⁴.
pub fn entry_digest(
    name: &str,
    addr: SocketAddr,
    meta: &[u8],
    incarnation: u32,
    state: NodeStateKind,
    vsn: Option<Versions>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed keys: the same in every process of one build,
    // and the digest never leaves the process.
    let mut h = std::hash::DefaultHasher::new();
    (name, addr, meta, incarnation, state, vsn).hash(&mut h);
    h.finish()
}

/// A message that can travel in a UDP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// See [`Ping`].
    Ping(Ping),
    /// See [`IndirectPing`].
    IndirectPing(IndirectPing),
    /// See [`Ack`].
    Ack(Ack),
    /// See [`Nack`].
    Nack(Nack),
    /// See [`Suspect`].
    Suspect(Suspect),
    /// See [`Alive`].
    Alive(Alive),
    /// See [`Dead`].
    Dead(Dead),
    /// Opaque payload for the layer above.
    User(Vec<u8>),
    /// See [`ErrResp`].
    Err(ErrResp),
}

/// A message that can travel over a TCP stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamMessage {
    /// TCP fallback probe.
    Ping(Ping),
    /// Answer to a TCP probe.
    Ack(Ack),
    /// Full state exchange (shared: a settled pool's nodes send one state).
    PushPull(std::sync::Arc<PushPull>),
    /// Reliable user message.
    User(Vec<u8>),
    /// The peer reports an error.
    Err(ErrResp),
}

// ---------------------------------------------------------------- addresses

fn ip_to_wire(ip: IpAddr) -> Vec<u8> {
    match ip {
        IpAddr::V4(v4) => v4.octets().to_vec(),
        IpAddr::V6(v6) => v6.octets().to_vec(),
    }
}

/// Reads an address as sent. A 16-byte IPv4-mapped address stays in that
/// form (use [`canonical`] to send to it): memberlist compares addresses byte
/// for byte, so re-encoding it in 4 bytes would look like another address
/// to Go nodes, which then report a conflict and drop the message.
fn ip_from_wire(b: &[u8], message: &'static str) -> Result<IpAddr, WireError> {
    match b.len() {
        4 => Ok(IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))),
        16 => {
            let mut o = [0u8; 16];
            o.copy_from_slice(b);
            Ok(IpAddr::V6(Ipv6Addr::from(o)))
        }
        n => Err(bad(
            message,
            format!("address has {n} bytes, expected 4 or 16"),
        )),
    }
}

/// The address to send to: IPv4-mapped IPv6 addresses (as Go writes IPv4
/// in 16 bytes) become plain IPv4.
pub fn canonical(a: SocketAddr) -> SocketAddr {
    match a.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), a.port()),
            None => a,
        },
        IpAddr::V4(_) => a,
    }
}

fn check_name(name: &str, message: &'static str) -> Result<(), WireError> {
    if name.is_empty() {
        return Err(bad(message, "no node name"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(
            message,
            format!("node name is {} bytes, limit is {MAX_NAME_LEN}", name.len()),
        ));
    }
    Ok(())
}

fn vsn_from_wire(b: &[u8], message: &'static str) -> Result<Option<Versions>, WireError> {
    match b.len() {
        0 => Ok(None),
        n if n >= 6 => {
            let mut v = [0u8; 6];
            v.copy_from_slice(&b[..6]);
            Ok(Some(v))
        }
        n => Err(bad(
            message,
            format!("version vector has {n} entries, expected 6"),
        )),
    }
}

// ----------------------------------------------------------------- encoding

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
    let lzw = super::lzw::compress(payload);
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

// ----------------------------------------------------------------- decoding

/// Reads one map-shaped body, calling `field` for every key; unknown keys must
/// be skipped by `field` (it returns false to ask for that).
fn read_fields<'a>(
    r: &mut Reader<'a>,
    message: &'static str,
    mut field: impl FnMut(&str, &mut Reader<'a>) -> msgpack::Result<bool>,
) -> Result<(), WireError> {
    let n = r.read_map_len().map_err(malformed(message))?;
    for _ in 0..n {
        let key = r.read_str().map_err(malformed(message))?;
        if !field(key, r).map_err(malformed(message))? {
            r.skip().map_err(malformed(message))?;
        }
    }
    Ok(())
}

fn source(
    addr: Option<&[u8]>,
    port: u16,
    message: &'static str,
) -> Result<Option<SocketAddr>, WireError> {
    match addr {
        Some(a) if !a.is_empty() && port > 0 => {
            Ok(Some(SocketAddr::new(ip_from_wire(a, message)?, port)))
        }
        _ => Ok(None),
    }
}

/// The optional `SourceAddr`, `SourcePort` and `SourceNode` fields that
/// pings and indirect pings carry.
#[derive(Default)]
struct SourceFields<'a> {
    addr: Option<&'a [u8]>,
    port: u16,
    node: &'a str,
}

impl<'a> SourceFields<'a> {
    /// Reads `key` if it is a source field; false if it is another field.
    fn read(&mut self, key: &str, r: &mut Reader<'a>) -> msgpack::Result<bool> {
        match key {
            "SourceAddr" => self.addr = Some(r.read_bytes()?),
            "SourcePort" => self.port = r.read_u16()?,
            "SourceNode" => self.node = r.read_str()?,
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn finish(self, message: &'static str) -> Result<(Option<SocketAddr>, String), WireError> {
        Ok((source(self.addr, self.port, message)?, self.node.to_owned()))
    }
}

fn decode_ping(r: &mut Reader<'_>) -> Result<Ping, WireError> {
    let (mut seq, mut node, mut src) = (0, "", SourceFields::default());
    read_fields(r, "ping", |k, r| {
        match k {
            "SeqNo" => seq = r.read_u32()?,
            "Node" => node = r.read_str()?,
            _ => return src.read(k, r),
        }
        Ok(true)
    })?;
    let (source_addr, source_node) = src.finish("ping")?;
    Ok(Ping {
        seq_no: seq,
        node: node.to_owned(),
        source_addr,
        source_node,
    })
}

fn decode_indirect(r: &mut Reader<'_>) -> Result<IndirectPing, WireError> {
    let (mut seq, mut target, mut port, mut node, mut nack) = (0, None, 0, "", false);
    let mut src = SourceFields::default();
    read_fields(r, "indirect ping", |k, r| {
        match k {
            "SeqNo" => seq = r.read_u32()?,
            "Target" => target = Some(r.read_bytes()?),
            "Port" => port = r.read_u16()?,
            "Node" => node = r.read_str()?,
            "Nack" => nack = r.read_bool()?,
            _ => return src.read(k, r),
        }
        Ok(true)
    })?;
    let target = target.ok_or_else(|| bad("indirect ping", "no target address"))?;
    let (source_addr, source_node) = src.finish("indirect ping")?;
    Ok(IndirectPing {
        seq_no: seq,
        target: SocketAddr::new(ip_from_wire(target, "indirect ping")?, port),
        node: node.to_owned(),
        nack,
        source_addr,
        source_node,
    })
}

fn decode_ack(r: &mut Reader<'_>) -> Result<Ack, WireError> {
    let (mut seq, mut payload) = (0, &[][..]);
    read_fields(r, "ack", |k, r| {
        match k {
            "SeqNo" => seq = r.read_u32()?,
            "Payload" => payload = r.read_bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    Ok(Ack {
        seq_no: seq,
        payload: payload.to_vec(),
    })
}

fn decode_nack(r: &mut Reader<'_>) -> Result<Nack, WireError> {
    let mut seq = 0;
    read_fields(r, "nack", |k, r| {
        if k == "SeqNo" {
            seq = r.read_u32()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(Nack { seq_no: seq })
}

fn decode_err(r: &mut Reader<'_>) -> Result<ErrResp, WireError> {
    let mut error = "";
    read_fields(r, "error", |k, r| {
        if k == "Error" {
            error = r.read_str()?;
            return Ok(true);
        }
        Ok(false)
    })?;
    Ok(ErrResp {
        error: error.to_owned(),
    })
}

fn decode_inf(
    r: &mut Reader<'_>,
    message: &'static str,
) -> Result<(u32, String, String), WireError> {
    let (mut inc, mut node, mut from) = (0, "", "");
    read_fields(r, message, |k, r| {
        match k {
            "Incarnation" => inc = r.read_u32()?,
            "Node" => node = r.read_str()?,
            "From" => from = r.read_str()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    check_name(node, message)?;
    Ok((inc, node.to_owned(), from.to_owned()))
}

fn check_meta(meta: &[u8], message: &'static str) -> Result<(), WireError> {
    if meta.len() > META_MAX_SIZE {
        return Err(bad(
            message,
            format!("metadata is {} bytes, limit is {META_MAX_SIZE}", meta.len()),
        ));
    }
    Ok(())
}

fn decode_alive<'a>(r: &mut Reader<'a>) -> Result<AliveRef<'a>, WireError> {
    let (mut inc, mut node, mut addr, mut port, mut meta, mut vsn) =
        (0, "", None, 0, &[][..], &[][..]);
    read_fields(r, "alive", |k, r| {
        match k {
            "Incarnation" => inc = r.read_u32()?,
            "Node" => node = r.read_str()?,
            "Addr" => addr = Some(r.read_bytes()?),
            "Port" => port = r.read_u16()?,
            "Meta" => meta = r.read_bytes()?,
            "Vsn" => vsn = r.read_bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    check_name(node, "alive")?;
    let addr = addr.ok_or_else(|| bad("alive", "no address"))?;
    check_meta(meta, "alive")?;
    Ok(AliveRef {
        incarnation: inc,
        node,
        addr: SocketAddr::new(ip_from_wire(addr, "alive")?, port),
        meta,
        vsn: vsn_from_wire(vsn, "alive")?,
    })
}

fn decode_push_node(r: &mut Reader<'_>) -> Result<PushNodeState, WireError> {
    const M: &str = "push/pull node";
    let (mut name, mut addr, mut port, mut meta) = ("", None, 0, &[][..]);
    let (mut inc, mut state, mut vsn) = (0, 0i64, &[][..]);
    read_fields(r, M, |k, r| {
        match k {
            "Name" => name = r.read_str()?,
            "Addr" => addr = Some(r.read_bytes()?),
            "Port" => port = r.read_u16()?,
            "Meta" => meta = r.read_bytes()?,
            "Incarnation" => inc = r.read_u32()?,
            "State" => state = r.read_i64()?,
            "Vsn" => vsn = r.read_bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    check_name(name, M)?;
    let addr = addr.ok_or_else(|| bad(M, "no address"))?;
    check_meta(meta, M)?;
    Ok(PushNodeState {
        name: name.to_owned(),
        addr: SocketAddr::new(ip_from_wire(addr, M)?, port),
        meta: meta.to_vec(),
        incarnation: inc,
        state: NodeStateKind::from_wire(state)
            .ok_or_else(|| bad(M, format!("unknown node state {state}")))?,
        vsn: vsn_from_wire(vsn, M)?,
    })
}

/// Decompresses the body of a `compress` message, refusing output past `limit`.
fn decompress_body(r: &mut Reader<'_>, limit: usize) -> Result<Vec<u8>, WireError> {
    let (mut algo, mut buf) = (None, &[][..]);
    read_fields(r, "compress", |k, r| {
        match k {
            "Algo" => algo = Some(r.read_u64()?),
            "Buf" => buf = r.read_bytes()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    if algo != Some(0) {
        return Err(WireError::Compression(format!(
            "unknown algorithm {algo:?} (only LZW, 0, is defined)"
        )));
    }
    lzw_decompress(buf, limit)
}

fn lzw_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    if let Some(plain) = super::lzw::remembered(input) {
        if plain.len() > limit {
            return Err(WireError::TooLarge { limit });
        }
        return Ok(plain);
    }
    let mut dec = weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8);
    let mut out = Vec::with_capacity((input.len() * 3).min(limit));
    let mut chunk = [0u8; 4096];
    let mut rest = input;
    loop {
        let res = dec.decode_bytes(rest, &mut chunk);
        rest = &rest[res.consumed_in..];
        if out.len() + res.consumed_out > limit {
            return Err(WireError::TooLarge { limit });
        }
        out.extend_from_slice(&chunk[..res.consumed_out]);
        match res.status {
            Ok(weezl::LzwStatus::Done) => return Ok(out),
            Ok(weezl::LzwStatus::Ok) => {}
            Ok(weezl::LzwStatus::NoProgress) => {
                return Err(WireError::Compression("LZW stream has no end code".into()))
            }
            Err(e) => return Err(WireError::Compression(e.to_string())),
        }
    }
}

/// Decodes one UDP packet, calling `sink` once per message or per error; a
/// bad part of a compound message does not stop the other parts (as in
/// memberlist). `max_payload` bounds decompressed sizes.
pub fn decode_packet(buf: &[u8], sink: &mut impl FnMut(Result<Message, WireError>)) {
    decode_packet_parts(buf, &mut |p| {
        sink(match p {
            Part::Alive(a) => Ok(Message::Alive(a.to_owned())),
            Part::Message(m) => m,
        })
    })
}

/// [`decode_packet`], handing alive notices over still borrowed from the
/// packet (see [`AliveRef`]).
pub fn decode_packet_parts(buf: &[u8], sink: &mut impl FnMut(Part<'_>)) {
    let fail = |e| Part::Message(Err(e));
    if buf.first() == Some(&(MessageType::HasCrc as u8)) {
        if buf.len() < 5 {
            return sink(fail(WireError::Truncated));
        }
        let expected = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]);
        if crc32fast::hash(&buf[5..]) != expected {
            return sink(fail(WireError::Checksum));
        }
        return decode_command(&buf[5..], 0, sink);
    }
    decode_command(buf, 0, sink)
}

fn decode_command(buf: &[u8], depth: usize, sink: &mut impl FnMut(Part<'_>)) {
    let fail = |e| Part::Message(Err(e));
    if depth > MAX_WRAP_DEPTH {
        return sink(fail(WireError::TooDeep));
    }
    let Some((&t, body)) = buf.split_first() else {
        return sink(fail(WireError::Truncated));
    };
    let mut r = Reader::new(body);
    let msg = match MessageType::from_byte(t) {
        Some(MessageType::Compound) => return decode_compound(body, depth, sink),
        Some(MessageType::Compress) => match decompress_body(&mut r, MAX_PACKET_PAYLOAD) {
            Ok(inner) => return decode_command(&inner, depth + 1, sink),
            Err(e) => Err(e),
        },
        Some(MessageType::Ping) => decode_ping(&mut r).map(Message::Ping),
        Some(MessageType::IndirectPing) => decode_indirect(&mut r).map(Message::IndirectPing),
        Some(MessageType::Ack) => decode_ack(&mut r).map(Message::Ack),
        Some(MessageType::Nack) => decode_nack(&mut r).map(Message::Nack),
        Some(MessageType::Suspect) => {
            decode_inf(&mut r, "suspect").map(|(incarnation, node, from)| {
                Message::Suspect(Suspect {
                    incarnation,
                    node,
                    from,
                })
            })
        }
        Some(MessageType::Dead) => decode_inf(&mut r, "dead").map(|(incarnation, node, from)| {
            Message::Dead(Dead {
                incarnation,
                node,
                from,
            })
        }),
        Some(MessageType::Alive) => {
            return sink(match decode_alive(&mut r) {
                Ok(a) => Part::Alive(a),
                Err(e) => fail(e),
            })
        }
        Some(MessageType::User) => Ok(Message::User(body.to_vec())),
        Some(MessageType::Err) => decode_err(&mut r).map(Message::Err),
        Some(MessageType::Encrypt) => Err(WireError::Encrypted),
        _ => Err(WireError::UnexpectedType(t)),
    };
    sink(Part::Message(msg))
}

fn decode_compound(buf: &[u8], depth: usize, sink: &mut impl FnMut(Part<'_>)) {
    let fail = |e| Part::Message(Err(e));
    let Some((&count, rest)) = buf.split_first() else {
        return sink(fail(WireError::Truncated));
    };
    let count = count as usize;
    if rest.len() < count * 2 {
        return sink(fail(WireError::Truncated));
    }
    let (lens, mut body) = rest.split_at(count * 2);
    for i in 0..count {
        let len = u16::from_be_bytes([lens[2 * i], lens[2 * i + 1]]) as usize;
        if body.len() < len {
            // memberlist processes the parts that arrived and reports the rest.
            return sink(fail(WireError::Truncated));
        }
        let (part, tail) = body.split_at(len);
        body = tail;
        decode_command(part, depth + 1, sink);
    }
}

/// Reads a push/pull header: (node count, user state length, join).
fn read_push_pull_header(r: &mut Reader<'_>) -> Result<(usize, usize, bool), WireError> {
    let (mut nodes, mut user_len, mut join) = (0usize, 0usize, false);
    read_fields(r, "push/pull", |k, r| {
        match k {
            "Nodes" => nodes = r.read_u64()? as usize,
            "UserStateLen" => user_len = r.read_u64()? as usize,
            "Join" => join = r.read_bool()?,
            _ => return Ok(false),
        }
        Ok(true)
    })?;
    // Every entry takes well over 8 bytes; a count beyond that is a lie and
    // must not size an allocation.
    if nodes > MAX_PUSH_STATE_BYTES / 8 || user_len > MAX_PUSH_STATE_BYTES {
        return Err(WireError::TooLarge {
            limit: MAX_PUSH_STATE_BYTES,
        });
    }
    Ok((nodes, user_len, join))
}

/// Reads one stream message as its bytes arrive. An uncompressed push/pull
/// of thousands of nodes arrives in many reads; it is parsed node by node
/// and never from the start again. (Compressed messages cost nothing to
/// retry: their length is known from their first bytes.)
#[derive(Debug, Default)]
pub struct StreamDecoder {
    partial: Option<PartialPushPull>,
}

#[derive(Debug)]
struct PartialPushPull {
    join: bool,
    expected: usize,
    user_len: usize,
    nodes: Vec<PushNodeState>,
    pos: usize,
}

impl StreamDecoder {
    /// Like [`decode_stream`], for a buffer that only ever grows between calls.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, WireError> {
        if buf.first() != Some(&(MessageType::PushPull as u8)) {
            return decode_stream(buf);
        }
        if buf.len() > MAX_PUSH_STATE_BYTES {
            return Err(WireError::TooLarge {
                limit: MAX_PUSH_STATE_BYTES,
            });
        }
        let p = match self.partial.as_mut() {
            Some(p) => p,
            None => {
                let mut r = Reader::new(&buf[1..]);
                let (expected, user_len, join) = match read_push_pull_header(&mut r) {
                    Err(WireError::Truncated) => return Ok(None),
                    other => other?,
                };
                self.partial.insert(PartialPushPull {
                    join,
                    expected,
                    user_len,
                    nodes: Vec::with_capacity(expected.min(buf.len() / 8 + 1)),
                    pos: 1 + r.position(),
                })
            }
        };
        while p.nodes.len() < p.expected {
            let mut r = Reader::new(&buf[p.pos..]);
            match decode_push_node(&mut r) {
                Ok(n) => {
                    p.pos += r.position();
                    p.nodes.push(n);
                }
                Err(WireError::Truncated) => return Ok(None),
                Err(e) => return Err(e),
            }
        }
        let end = p.pos + p.user_len;
        if buf.len() < end {
            return Ok(None);
        }
        let user_state = buf[p.pos..end].to_vec();
        let Some(p) = self.partial.take() else {
            return Ok(None);
        };
        Ok(Some((
            StreamMessage::PushPull(std::sync::Arc::new(PushPull::new(
                p.join, p.nodes, user_state,
            ))),
            end,
        )))
    }
}

/// Tries to read one whole stream message from the start of `buf`.
///
/// Returns `Ok(None)` when `buf` is a valid prefix that needs more bytes,
/// `Ok(Some((message, consumed)))` once it is complete, and an error for bytes
/// that can never become a valid message.
pub fn decode_stream(buf: &[u8]) -> Result<Option<(StreamMessage, usize)>, WireError> {
    // A state this thread encoded, byte for byte (see `memo`).
    if let Some(pp) = super::memo::stream(buf).and_then(|v| v.downcast::<PushPull>().ok()) {
        return Ok(Some((StreamMessage::PushPull(pp), buf.len())));
    }
    match decode_stream_inner(buf, 0) {
        Ok(v) => Ok(Some(v)),
        Err(WireError::Truncated) if buf.len() < MAX_PUSH_STATE_BYTES => Ok(None),
        Err(WireError::Truncated) => Err(WireError::TooLarge {
            limit: MAX_PUSH_STATE_BYTES,
        }),
        Err(e) => Err(e),
    }
}

fn decode_stream_inner(buf: &[u8], depth: usize) -> Result<(StreamMessage, usize), WireError> {
    if depth > 1 {
        return Err(WireError::TooDeep);
    }
    let (&t, body) = buf.split_first().ok_or(WireError::Truncated)?;
    let mut r = Reader::new(body);
    let msg = match MessageType::from_byte(t) {
        Some(MessageType::Compress) => {
            let inner = decompress_body(&mut r, MAX_PUSH_STATE_BYTES)?;
            let (msg, _) = match decode_stream_inner(&inner, depth + 1) {
                // A compressed message is complete by construction: a short
                // inner message is corrupt, not unfinished.
                Err(WireError::Truncated) => {
                    return Err(bad("compress", "compressed message is truncated"))
                }
                other => other?,
            };
            return Ok((msg, 1 + r.position()));
        }
        Some(MessageType::Ping) => StreamMessage::Ping(decode_ping(&mut r)?),
        Some(MessageType::Ack) => StreamMessage::Ack(decode_ack(&mut r)?),
        Some(MessageType::Err) => StreamMessage::Err(decode_err(&mut r)?),
        Some(MessageType::User) => {
            let mut len = 0usize;
            read_fields(&mut r, "user", |k, r| {
                if k == "UserMsgLen" {
                    len = r.read_u64()? as usize;
                    return Ok(true);
                }
                Ok(false)
            })?;
            if len > MAX_PUSH_STATE_BYTES {
                return Err(WireError::TooLarge {
                    limit: MAX_PUSH_STATE_BYTES,
                });
            }
            StreamMessage::User(r.take(len).map_err(malformed("user"))?.to_vec())
        }
        Some(MessageType::PushPull) => {
            let (nodes, user_len, join) = read_push_pull_header(&mut r)?;
            let mut list = Vec::with_capacity(nodes.min(r.remaining().len() / 8 + 1));
            for _ in 0..nodes {
                list.push(decode_push_node(&mut r)?);
            }
            let user_state = r.take(user_len).map_err(malformed("push/pull"))?.to_vec();
            StreamMessage::PushPull(std::sync::Arc::new(PushPull::new(join, list, user_state)))
        }
        Some(MessageType::Encrypt) => return Err(WireError::Encrypted),
        _ => return Err(WireError::UnexpectedType(t)),
    };
    Ok((msg, 1 + r.position()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn collect(buf: &[u8]) -> Vec<Result<Message, WireError>> {
        let mut out = Vec::new();
        decode_packet(buf, &mut |m| out.push(m));
        out
    }

    fn arb_addr() -> impl Strategy<Value = SocketAddr> {
        prop_oneof![
            (any::<[u8; 4]>(), any::<u16>())
                .prop_map(|(ip, port)| SocketAddr::new(IpAddr::from(ip), port)),
            (any::<[u8; 16]>(), any::<u16>()).prop_map(|(ip, port)| {
                let v6 = Ipv6Addr::from(ip);
                // Mapped v4 addresses come back as v4; keep the round trip exact.
                let ip = match v6.to_ipv4_mapped() {
                    Some(v4) => IpAddr::V4(v4),
                    None => IpAddr::V6(v6),
                };
                SocketAddr::new(ip, port)
            }),
        ]
    }

    fn arb_name() -> impl Strategy<Value = String> {
        "[a-zA-Z0-9._-]{1,40}"
    }

    fn arb_source() -> impl Strategy<Value = (Option<SocketAddr>, String)> {
        (
            proptest::option::of(
                arb_addr().prop_filter("port 0 means no source", |a| a.port() > 0),
            ),
            prop_oneof![Just(String::new()), arb_name()],
        )
    }

    fn arb_meta() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>(), 0..=META_MAX_SIZE)
    }

    fn arb_message() -> impl Strategy<Value = Message> {
        prop_oneof![
            (any::<u32>(), arb_name(), arb_source()).prop_map(|(seq_no, node, (sa, sn))| {
                Message::Ping(Ping {
                    seq_no,
                    node,
                    source_addr: sa,
                    source_node: sn,
                })
            }),
            (
                any::<u32>(),
                arb_addr(),
                arb_name(),
                any::<bool>(),
                arb_source()
            )
                .prop_map(|(seq_no, target, node, nack, (sa, sn))| {
                    Message::IndirectPing(IndirectPing {
                        seq_no,
                        target,
                        node,
                        nack,
                        source_addr: sa,
                        source_node: sn,
                    })
                }),
            (any::<u32>(), proptest::collection::vec(any::<u8>(), 0..300))
                .prop_map(|(seq_no, payload)| Message::Ack(Ack { seq_no, payload })),
            any::<u32>().prop_map(|seq_no| Message::Nack(Nack { seq_no })),
            (any::<u32>(), arb_name(), arb_name()).prop_map(|(incarnation, node, from)| {
                Message::Suspect(Suspect {
                    incarnation,
                    node,
                    from,
                })
            }),
            (any::<u32>(), arb_name(), arb_name()).prop_map(|(incarnation, node, from)| {
                Message::Dead(Dead {
                    incarnation,
                    node,
                    from,
                })
            }),
            (
                any::<u32>(),
                arb_name(),
                arb_addr(),
                arb_meta(),
                proptest::option::of(any::<[u8; 6]>())
            )
                .prop_map(|(incarnation, node, addr, meta, vsn)| Message::Alive(
                    Alive {
                        incarnation,
                        node,
                        addr,
                        meta,
                        vsn,
                    }
                )),
            proptest::collection::vec(any::<u8>(), 0..200).prop_map(Message::User),
            "[ -~]{0,80}".prop_map(|error| Message::Err(ErrResp { error })),
        ]
    }

    fn arb_push_pull() -> impl Strategy<Value = PushPull> {
        let node = (
            arb_name(),
            arb_addr(),
            arb_meta(),
            any::<u32>(),
            0u8..4,
            proptest::option::of(any::<[u8; 6]>()),
        )
            .prop_map(|(name, addr, meta, incarnation, s, vsn)| PushNodeState {
                name,
                addr,
                meta,
                incarnation,
                state: NodeStateKind::from_wire(s as i64).unwrap(),
                vsn,
            });
        (
            any::<bool>(),
            proptest::collection::vec(node, 0..20),
            proptest::collection::vec(any::<u8>(), 0..100),
        )
            .prop_map(|(join, nodes, user_state)| PushPull::new(join, nodes, user_state))
    }

    proptest! {
        #[test]
        fn every_message_round_trips(msg in arb_message()) {
            let bytes = msg.to_bytes();
            prop_assert_eq!(collect(&bytes), vec![Ok(msg.clone())]);
            // ... and survives each wrapper.
            prop_assert_eq!(collect(&add_crc(&bytes)), vec![Ok(msg.clone())]);
            prop_assert_eq!(collect(&compress(&bytes)), vec![Ok(msg)]);
        }

        #[test]
        fn compound_round_trips(msgs in proptest::collection::vec(arb_message(), 1..20)) {
            let parts: Vec<Vec<u8>> = msgs.iter().map(Message::to_bytes).collect();
            let mut buf = Vec::new();
            encode_compound(&parts, &mut buf);
            let want: Vec<_> = msgs.into_iter().map(Ok).collect();
            prop_assert_eq!(collect(&add_crc(&compress(&buf))), want);
        }

        #[test]
        fn push_pull_round_trips_and_frames(pp in arb_push_pull(), compressed in any::<bool>()) {
            let msg = StreamMessage::PushPull(std::sync::Arc::new(pp));
            let mut bytes = msg.to_bytes();
            prop_assert_eq!(msg.encoded_len(), bytes.len());
            if compressed {
                bytes = compress(&bytes);
            }
            // Every strict prefix is "need more", never an error or a message.
            for cut in 0..bytes.len() {
                prop_assert_eq!(decode_stream(&bytes[..cut]), Ok(None), "cut at {}", cut);
            }
            bytes.extend_from_slice(b"trailing");
            let (got, used) = decode_stream(&bytes).unwrap().unwrap();
            prop_assert_eq!(got, msg);
            prop_assert_eq!(used, bytes.len() - 8);
        }

        #[test]
        fn stream_decoder_matches_decode_stream_piece_by_piece(pp in arb_push_pull(), step in 1usize..64) {
            let bytes = StreamMessage::PushPull(std::sync::Arc::new(pp.clone())).to_bytes();
            let mut dec = StreamDecoder::default();
            let mut end = step.min(bytes.len());
            let got = loop {
                if let Some(m) = dec.decode(&bytes[..end]).unwrap() {
                    break m;
                }
                prop_assert!(end < bytes.len(), "complete message not recognised");
                end = (end + step).min(bytes.len());
            };
            prop_assert_eq!(got, (StreamMessage::PushPull(std::sync::Arc::new(pp)), bytes.len()));
        }

        #[test]
        fn stream_ping_ack_user_round_trip(seq in any::<u32>(), payload in proptest::collection::vec(any::<u8>(), 0..100)) {
            for msg in [
                StreamMessage::Ping(Ping { seq_no: seq, node: "n".into(), source_addr: None, source_node: String::new() }),
                StreamMessage::Ack(Ack { seq_no: seq, payload: payload.clone() }),
                StreamMessage::User(payload.clone()),
                StreamMessage::Err(ErrResp { error: "boom".into() }),
            ] {
                let bytes = msg.to_bytes();
                prop_assert_eq!(decode_stream(&bytes).unwrap(), Some((msg, bytes.len())));
            }
        }

        #[test]
        fn garbage_never_panics(buf in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let _ = collect(&buf);
            let _ = decode_stream(&buf);
        }

        #[test]
        fn truncated_packets_are_errors(msg in arb_message(), cut_frac in 0.0f64..1.0) {
            let bytes = msg.to_bytes();
            let cut = ((bytes.len() as f64) * cut_frac) as usize;
            if cut < bytes.len() && !matches!(msg, Message::User(_)) {
                let got = collect(&bytes[..cut]);
                prop_assert!(got.iter().all(|r| r.is_err()), "{:?}", got);
            }
        }

        #[test]
        fn flipped_bits_fail_the_crc(msg in arb_message(), bit in any::<usize>()) {
            let mut buf = add_crc(&msg.to_bytes());
            let i = 5 + bit % (buf.len() - 5);
            buf[i] ^= 1 << (bit % 8);
            prop_assert_eq!(collect(&buf), vec![Err(WireError::Checksum)]);
        }
    }

    #[test]
    fn go_encoding_of_a_ping_is_byte_identical() {
        // What memberlist 0.2.2 (go-msgpack 0.5) writes for
        // ping{SeqNo: 7, Node: "b"} with no source fields.
        let want: &[u8] = &[
            0x00, 0x82, 0xa5, b'S', b'e', b'q', b'N', b'o', 0x07, 0xa4, b'N', b'o', b'd', b'e',
            0xa1, b'b',
        ];
        let got = Message::Ping(Ping {
            seq_no: 7,
            node: "b".into(),
            source_addr: None,
            source_node: String::new(),
        })
        .to_bytes();
        assert_eq!(got, want);
    }

    #[test]
    fn lzw_matches_go_compress_lzw() {
        // Go: lzw.NewWriter(&buf, lzw.LSB, 8) over "hello hello hello hello world".
        let plain = b"hello hello hello hello world";
        let go: &[u8] = &[
            0x00, 0xd1, 0x94, 0x61, 0xc3, 0xe6, 0x0d, 0x08, 0x81, 0x04, 0x0d, 0x22, 0x2c, 0x78,
            0x70, 0x20, 0xc3, 0x3b, 0x6f, 0xe4, 0xb0, 0x21, 0x13, 0x10,
        ];
        assert_eq!(lzw_decompress(go, 1000).unwrap(), plain);
        let ours = compress(plain);
        let mut r = Reader::new(&ours[1..]);
        r.read_map_len().unwrap();
        assert_eq!(r.read_str().unwrap(), "Algo");
        r.skip().unwrap();
        assert_eq!(r.read_str().unwrap(), "Buf");
        assert_eq!(r.read_bytes().unwrap(), go);
    }

    #[test]
    fn sixteen_byte_ipv4_is_kept_as_sent_and_sent_to_as_ipv4() {
        let mapped = Ipv4Addr::new(10, 1, 2, 3).to_ipv6_mapped();
        let ip = ip_from_wire(&mapped.octets(), "t").unwrap();
        assert_eq!(ip, IpAddr::V6(mapped));
        assert_eq!(
            canonical(SocketAddr::new(ip, 1)),
            "10.1.2.3:1".parse().unwrap()
        );
        assert!(ip_from_wire(&[1, 2, 3], "t").is_err());
        // Relaying a Go node's alive message keeps its 16-byte address.
        let alive = Message::Alive(Alive {
            incarnation: 1,
            node: "go".into(),
            addr: SocketAddr::new(ip, 7946),
            meta: vec![],
            vsn: None,
        });
        let bytes = alive.to_bytes();
        assert!(bytes.windows(16).any(|w| w == mapped.octets()));
        assert_eq!(collect(&bytes), vec![Ok(alive)]);
    }

    #[test]
    fn long_names_are_refused() {
        let msg = Message::Suspect(Suspect {
            incarnation: 1,
            node: "n".repeat(MAX_NAME_LEN + 1),
            from: "x".into(),
        });
        assert!(matches!(
            collect(&msg.to_bytes())[0],
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn oversized_meta_is_rejected() {
        let msg = Message::Alive(Alive {
            incarnation: 1,
            node: "a".into(),
            addr: "127.0.0.1:1".parse().unwrap(),
            meta: vec![0; META_MAX_SIZE + 1],
            vsn: None,
        });
        assert!(matches!(
            collect(&msg.to_bytes())[0],
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn decompression_bombs_are_refused() {
        let zeros = vec![0u8; MAX_PACKET_PAYLOAD * 4];
        let mut buf = vec![MessageType::User as u8];
        buf.extend_from_slice(&zeros);
        let packed = compress(&buf);
        assert!(packed.len() < 10_000);
        assert_eq!(
            collect(&packed),
            vec![Err(WireError::TooLarge {
                limit: MAX_PACKET_PAYLOAD
            })]
        );
    }

    #[test]
    fn nested_wrappers_are_bounded() {
        let mut buf = Message::Nack(Nack { seq_no: 1 }).to_bytes();
        for _ in 0..10 {
            buf = compress(&buf);
        }
        assert_eq!(collect(&buf), vec![Err(WireError::TooDeep)]);
    }

    #[test]
    fn lying_node_count_does_not_allocate() {
        let mut buf = vec![MessageType::PushPull as u8];
        Writer::new(&mut buf)
            .map_len(3)
            .str("Nodes")
            .uint(1_000_000)
            .str("UserStateLen")
            .uint(0)
            .str("Join")
            .bool(false);
        assert_eq!(decode_stream(&buf), Ok(None));
        let mut huge = vec![MessageType::PushPull as u8];
        Writer::new(&mut huge)
            .map_len(1)
            .str("Nodes")
            .uint(u32::MAX as u64);
        assert!(matches!(
            decode_stream(&huge),
            Err(WireError::TooLarge { .. })
        ));
    }

    /// Writes the seed corpus of the `memberlist_codec` fuzz target
    /// (`fuzz/corpus/memberlist_codec/`): messages of every kind, alone,
    /// compound, compressed and with a CRC, and stream messages. Run when
    /// the codec changes: `cargo test --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore]
    fn write_fuzz_seeds() {
        use proptest::strategy::ValueTree;
        let dir =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/memberlist_codec");
        std::fs::create_dir_all(&dir).unwrap();
        let mut runner = proptest::test_runner::TestRunner::deterministic();
        let mut msgs = Vec::new();
        for _ in 0..24 {
            msgs.push(arb_message().new_tree(&mut runner).unwrap().current());
        }
        let mut seeds: Vec<Vec<u8>> = msgs.iter().map(Message::to_bytes).collect();
        let parts: Vec<Vec<u8>> = msgs.iter().take(4).map(Message::to_bytes).collect();
        let mut compound = Vec::new();
        encode_compound(&parts, &mut compound);
        seeds.push(compress(&compound));
        seeds.push(add_crc(&compound));
        seeds.push(add_crc(&compress(&parts[0])));
        seeds.push(compound);
        for (i, seed) in seeds.iter().enumerate() {
            std::fs::write(dir.join(format!("seed-{i:02}")), seed).unwrap();
        }
    }
}

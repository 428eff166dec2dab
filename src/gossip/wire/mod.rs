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
//!
//! This file holds the vocabulary: the limits, the message types, and how
//! addresses, names and versions look on the wire. `encode.rs` writes
//! messages and their wrappers; `decode.rs` reads packets and streams. Both
//! use what is here, and their entry points are re-exported here.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::msgpack;

mod decode;
mod encode;

pub use self::decode::{decode_packet, decode_packet_parts, decode_stream, StreamDecoder};
pub use self::encode::{add_crc, compound_len, compress, encode_compound};

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

#[cfg(test)]
mod tests {
    use super::decode::lzw_decompress;
    use super::*;
    use crate::msgpack::{Reader, Writer};
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

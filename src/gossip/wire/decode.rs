//! Decoding: UDP packets (one message, or the wrappers around several:
//! compound, compress, CRC), read part by part with alive notices still
//! borrowed from the packet; and TCP stream messages, which may arrive in
//! pieces ([`StreamDecoder`], [`decode_stream`]). Sizes are bounded
//! throughout: names, metadata, decompressed payloads, wrapper depth.

use std::net::SocketAddr;

use super::{
    bad, check_name, ip_from_wire, malformed, vsn_from_wire, Ack, AliveRef, Dead, ErrResp,
    IndirectPing, Message, MessageType, Nack, NodeStateKind, Part, Ping, PushNodeState, PushPull,
    StreamMessage, Suspect, WireError, MAX_PACKET_PAYLOAD, MAX_PUSH_STATE_BYTES, MAX_WRAP_DEPTH,
    META_MAX_SIZE,
};
use crate::msgpack::{self, Reader};

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

pub(super) fn lzw_decompress(input: &[u8], limit: usize) -> Result<Vec<u8>, WireError> {
    if let Some(plain) = crate::gossip::lzw::remembered(input) {
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
    if let Some(pp) = crate::gossip::memo::stream(buf).and_then(|v| v.downcast::<PushPull>().ok()) {
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

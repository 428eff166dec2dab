//! A small MessagePack reader and writer, byte-compatible with the Go codec
//! (`hashicorp/go-msgpack` 0.5) that memberlist and Serf speak.
//!
//! Why not `rmp-serde`: the Go codec writes strings *and* byte slices in the
//! pre-2013 "raw" family (fixstr, then str16 — never str8 or bin), writes
//! empty byte slices as `nil`, and memberlist frames TCP streams only by the
//! msgpack values themselves. Matching that byte for byte, and telling "the
//! buffer ends too early" apart from "this is garbage" while reading a stream,
//! is simpler with a reader that knows exactly what it accepts.
//!
//! The reader accepts every encoding a conforming peer may use (fixint to
//! 64-bit ints, str8/bin, f32/f64, nil for empty values); the writer emits what
//! the Go codec emits.

use std::fmt;

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The buffer ended before the value did; more bytes may complete it.
    Incomplete,
    /// The bytes are not a value of the expected kind.
    Invalid(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Incomplete => f.write_str("message is truncated"),
            Error::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {}

/// Result of a read.
pub type Result<T> = std::result::Result<T, Error>;

fn invalid<T>(what: impl Into<String>) -> Result<T> {
    Err(Error::Invalid(what.into()))
}

/// Deepest nesting [`Reader::skip`] follows before giving up; bounds the stack
/// on hostile input.
const MAX_SKIP_DEPTH: usize = 32;

/// Reads msgpack values from a byte slice, front to back.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// The bytes not yet consumed.
    pub fn remaining(&self) -> &'a [u8] {
        &self.buf[self.pos..]
    }

    /// Consumes exactly `n` raw bytes (not a msgpack value).
    pub fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).ok_or(Error::Incomplete)?;
        if end > self.buf.len() {
            return Err(Error::Incomplete);
        }
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn byte(&mut self) -> Result<u8> {
        let b = *self.buf.get(self.pos).ok_or(Error::Incomplete)?;
        self.pos += 1;
        Ok(b)
    }

    fn peek(&self) -> Result<u8> {
        self.buf.get(self.pos).copied().ok_or(Error::Incomplete)
    }

    fn be<const N: usize>(&mut self) -> Result<[u8; N]> {
        let s = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(s);
        Ok(out)
    }

    fn len8(&mut self) -> Result<usize> {
        Ok(self.byte()? as usize)
    }
    fn len16(&mut self) -> Result<usize> {
        Ok(u16::from_be_bytes(self.be()?) as usize)
    }
    fn len32(&mut self) -> Result<usize> {
        Ok(u32::from_be_bytes(self.be()?) as usize)
    }

    /// True (and consumed) if the next value is `nil`.
    pub fn read_nil(&mut self) -> Result<bool> {
        if self.peek()? == 0xc0 {
            self.pos += 1;
            Ok(true)
        } else {
            Ok(false)
        }
    }

    /// Reads a map header; `nil` reads as an empty map.
    pub fn read_map_len(&mut self) -> Result<usize> {
        let m = self.byte()?;
        match m {
            0x80..=0x8f => Ok((m & 0x0f) as usize),
            0xde => self.len16(),
            0xdf => self.len32(),
            0xc0 => Ok(0),
            _ => invalid(format!("expected a map, found marker 0x{m:02x}")),
        }
    }

    /// Reads an array header; `nil` reads as an empty array.
    pub fn read_array_len(&mut self) -> Result<usize> {
        let m = self.byte()?;
        match m {
            0x90..=0x9f => Ok((m & 0x0f) as usize),
            0xdc => self.len16(),
            0xdd => self.len32(),
            0xc0 => Ok(0),
            _ => invalid(format!("expected an array, found marker 0x{m:02x}")),
        }
    }

    /// Reads a byte string from either the str or the bin family; `nil`
    /// reads as empty (the Go codec writes empty slices as `nil`).
    pub fn read_bytes(&mut self) -> Result<&'a [u8]> {
        let m = self.byte()?;
        let n = match m {
            0xa0..=0xbf => (m & 0x1f) as usize,
            0xd9 | 0xc4 => self.len8()?,
            0xda | 0xc5 => self.len16()?,
            0xdb | 0xc6 => self.len32()?,
            0xc0 => 0,
            _ => return invalid(format!("expected bytes, found marker 0x{m:02x}")),
        };
        self.take(n)
    }

    /// Reads a UTF-8 string (str or bin family).
    pub fn read_str(&mut self) -> Result<&'a str> {
        let b = self.read_bytes()?;
        std::str::from_utf8(b).or_else(|_| invalid("string is not valid UTF-8"))
    }

    /// Reads any integer encoding as a signed 64-bit value.
    pub fn read_i64(&mut self) -> Result<i64> {
        let m = self.byte()?;
        Ok(match m {
            0x00..=0x7f => m as i64,
            0xe0..=0xff => (m as i8) as i64,
            0xcc => self.byte()? as i64,
            0xcd => u16::from_be_bytes(self.be()?) as i64,
            0xce => u32::from_be_bytes(self.be()?) as i64,
            0xcf => {
                let v = u64::from_be_bytes(self.be()?);
                i64::try_from(v).or_else(|_| invalid("integer out of range"))?
            }
            0xd0 => i8::from_be_bytes(self.be()?) as i64,
            0xd1 => i16::from_be_bytes(self.be()?) as i64,
            0xd2 => i32::from_be_bytes(self.be()?) as i64,
            0xd3 => i64::from_be_bytes(self.be()?),
            _ => return invalid(format!("expected an integer, found marker 0x{m:02x}")),
        })
    }

    /// Reads a non-negative integer that must fit in `u64`.
    pub fn read_u64(&mut self) -> Result<u64> {
        if self.peek()? == 0xcf {
            self.pos += 1;
            return Ok(u64::from_be_bytes(self.be()?));
        }
        let v = self.read_i64()?;
        u64::try_from(v).or_else(|_| invalid("expected a non-negative integer"))
    }

    /// Reads an unsigned integer that must fit in `u32`.
    pub fn read_u32(&mut self) -> Result<u32> {
        u32::try_from(self.read_u64()?).or_else(|_| invalid("integer does not fit in 32 bits"))
    }

    /// Reads an unsigned integer that must fit in `u16`.
    pub fn read_u16(&mut self) -> Result<u16> {
        u16::try_from(self.read_u64()?).or_else(|_| invalid("integer does not fit in 16 bits"))
    }

    /// Reads an unsigned integer that must fit in `u8`.
    pub fn read_u8(&mut self) -> Result<u8> {
        u8::try_from(self.read_u64()?).or_else(|_| invalid("integer does not fit in 8 bits"))
    }

    /// Reads a boolean.
    pub fn read_bool(&mut self) -> Result<bool> {
        match self.byte()? {
            0xc2 => Ok(false),
            0xc3 => Ok(true),
            m => invalid(format!("expected a boolean, found marker 0x{m:02x}")),
        }
    }

    /// Reads a float (f32 or f64) or an integer as `f64`.
    pub fn read_f64(&mut self) -> Result<f64> {
        match self.peek()? {
            0xca => {
                self.pos += 1;
                Ok(f32::from_be_bytes(self.be()?) as f64)
            }
            0xcb => {
                self.pos += 1;
                Ok(f64::from_be_bytes(self.be()?))
            }
            _ => Ok(self.read_i64()? as f64),
        }
    }

    /// Skips one value of any kind, including nested maps and arrays.
    pub fn skip(&mut self) -> Result<()> {
        self.skip_depth(0)
    }

    fn skip_depth(&mut self, depth: usize) -> Result<()> {
        if depth > MAX_SKIP_DEPTH {
            return invalid("values nested too deeply");
        }
        let m = self.byte()?;
        let fixed = |n: usize, r: &mut Self| r.take(n).map(|_| ());
        match m {
            0x00..=0x7f | 0xe0..=0xff | 0xc0 | 0xc2 | 0xc3 => Ok(()),
            0x80..=0x8f => self.skip_n((m & 0x0f) as usize * 2, depth),
            0x90..=0x9f => self.skip_n((m & 0x0f) as usize, depth),
            0xa0..=0xbf => fixed((m & 0x1f) as usize, self),
            0xc4 | 0xd9 => {
                let n = self.len8()?;
                fixed(n, self)
            }
            0xc5 | 0xda => {
                let n = self.len16()?;
                fixed(n, self)
            }
            0xc6 | 0xdb => {
                let n = self.len32()?;
                fixed(n, self)
            }
            0xc7 => {
                let n = self.len8()?;
                fixed(n + 1, self)
            }
            0xc8 => {
                let n = self.len16()?;
                fixed(n + 1, self)
            }
            0xc9 => {
                let n = self.len32()?;
                fixed(n + 1, self)
            }
            0xca => fixed(4, self),
            0xcb => fixed(8, self),
            0xcc | 0xd0 => fixed(1, self),
            0xcd | 0xd1 => fixed(2, self),
            0xce | 0xd2 => fixed(4, self),
            0xcf | 0xd3 => fixed(8, self),
            0xd4 => fixed(2, self),
            0xd5 => fixed(3, self),
            0xd6 => fixed(5, self),
            0xd7 => fixed(9, self),
            0xd8 => fixed(17, self),
            0xdc => {
                let n = self.len16()?;
                self.skip_n(n, depth)
            }
            0xdd => {
                let n = self.len32()?;
                self.skip_n(n, depth)
            }
            0xde => {
                let n = self.len16()?;
                self.skip_n(n * 2, depth)
            }
            0xdf => {
                let n = self.len32()?;
                self.skip_n(n.saturating_mul(2), depth)
            }
            0xc1 => invalid("marker 0xc1 is never used"),
        }
    }

    fn skip_n(&mut self, n: usize, depth: usize) -> Result<()> {
        for _ in 0..n {
            self.skip_depth(depth + 1)?;
        }
        Ok(())
    }
}

/// How many bytes [`Writer::map_len`] or [`Writer::array_len`] writes for
/// `n` entries.
pub fn container_len(n: usize) -> usize {
    match n {
        0..16 => 1,
        16..=0xffff => 3,
        _ => 5,
    }
}

/// How many bytes [`Writer::raw`] writes for `n` bytes.
pub fn raw_len(n: usize) -> usize {
    n + match n {
        0..32 => 1,
        32..=0xffff => 3,
        _ => 5,
    }
}

/// How many bytes [`Writer::uint`] writes for `v`.
pub fn uint_len(v: u64) -> usize {
    match v {
        0..128 => 1,
        128..=0xff => 2,
        0x100..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// Appends msgpack values to a byte vector, encoded as the Go codec does.
#[derive(Debug)]
pub struct Writer<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Writer<'a> {
    /// A writer appending to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Writer { out }
    }

    /// Writes a map header for `n` key/value pairs.
    pub fn map_len(&mut self, n: usize) -> &mut Self {
        self.container(n, 0x80, 0xde, 0xdf)
    }

    /// Writes an array header for `n` values.
    pub fn array_len(&mut self, n: usize) -> &mut Self {
        self.container(n, 0x90, 0xdc, 0xdd)
    }

    fn container(&mut self, n: usize, fix: u8, m16: u8, m32: u8) -> &mut Self {
        if n < 16 {
            self.out.push(fix | n as u8);
        } else if n <= u16::MAX as usize {
            self.out.push(m16);
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.out.push(m32);
            self.out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self
    }

    /// Writes bytes in the raw (str) family, as the Go codec does for `[]byte`.
    pub fn raw(&mut self, b: &[u8]) -> &mut Self {
        let n = b.len();
        if n < 32 {
            self.out.push(0xa0 | n as u8);
        } else if n <= u16::MAX as usize {
            self.out.push(0xda);
            self.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            self.out.push(0xdb);
            self.out.extend_from_slice(&(n as u32).to_be_bytes());
        }
        self.out.extend_from_slice(b);
        self
    }

    /// Writes a string.
    pub fn str(&mut self, s: &str) -> &mut Self {
        self.raw(s.as_bytes())
    }

    /// Writes a byte slice, or `nil` when it is empty (Go's nil slice).
    pub fn bytes_or_nil(&mut self, b: &[u8]) -> &mut Self {
        if b.is_empty() {
            self.nil()
        } else {
            self.raw(b)
        }
    }

    /// Writes `nil`.
    pub fn nil(&mut self) -> &mut Self {
        self.out.push(0xc0);
        self
    }

    /// Writes a boolean.
    pub fn bool(&mut self, v: bool) -> &mut Self {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        self
    }

    /// Writes an unsigned integer in its shortest form.
    pub fn uint(&mut self, v: u64) -> &mut Self {
        if v < 128 {
            self.out.push(v as u8);
        } else if v <= u8::MAX as u64 {
            self.out.extend_from_slice(&[0xcc, v as u8]);
        } else if v <= u16::MAX as u64 {
            self.out.push(0xcd);
            self.out.extend_from_slice(&(v as u16).to_be_bytes());
        } else if v <= u32::MAX as u64 {
            self.out.push(0xce);
            self.out.extend_from_slice(&(v as u32).to_be_bytes());
        } else {
            self.out.push(0xcf);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    /// Writes a signed integer in its shortest form (non-negative values as
    /// unsigned, as the Go codec does).
    pub fn int(&mut self, v: i64) -> &mut Self {
        if v >= 0 {
            return self.uint(v as u64);
        }
        if v >= -32 {
            self.out.push(v as i8 as u8);
        } else if v >= i8::MIN as i64 {
            self.out.extend_from_slice(&[0xd0, v as i8 as u8]);
        } else if v >= i16::MIN as i64 {
            self.out.push(0xd1);
            self.out.extend_from_slice(&(v as i16).to_be_bytes());
        } else if v >= i32::MIN as i64 {
            self.out.push(0xd2);
            self.out.extend_from_slice(&(v as i32).to_be_bytes());
        } else {
            self.out.push(0xd3);
            self.out.extend_from_slice(&v.to_be_bytes());
        }
        self
    }

    /// Writes a 64-bit float.
    pub fn f64(&mut self, v: f64) -> &mut Self {
        self.out.push(0xcb);
        self.out.extend_from_slice(&v.to_be_bytes());
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn strings_use_go_raw_family() {
        let mut out = Vec::new();
        Writer::new(&mut out).str("abc");
        assert_eq!(out, [0xa3, b'a', b'b', b'c']);
        let mut out = Vec::new();
        Writer::new(&mut out).str(&"x".repeat(40));
        assert_eq!(&out[..3], &[0xda, 0, 40]);
    }

    #[test]
    fn reader_accepts_bin_and_str8() {
        let mut r = Reader::new(&[0xc4, 2, 1, 2, 0xd9, 1, b'z']);
        assert_eq!(r.read_bytes().unwrap(), &[1, 2]);
        assert_eq!(r.read_str().unwrap(), "z");
    }

    #[test]
    fn truncation_is_incomplete_not_invalid() {
        let mut out = Vec::new();
        Writer::new(&mut out).map_len(1).str("SeqNo").uint(70000);
        for cut in 0..out.len() {
            let mut r = Reader::new(&out[..cut]);
            let res = r
                .read_map_len()
                .and_then(|_| r.read_str())
                .and_then(|_| r.read_u32());
            assert_eq!(res, Err(Error::Incomplete), "cut at {cut}");
        }
    }

    #[test]
    fn hostile_nesting_is_rejected() {
        let buf = vec![0x91u8; 1000];
        assert!(matches!(Reader::new(&buf).skip(), Err(Error::Invalid(_))));
    }

    proptest! {
        #[test]
        fn ints_round_trip(v in any::<i64>()) {
            let mut out = Vec::new();
            Writer::new(&mut out).int(v);
            prop_assert_eq!(Reader::new(&out).read_i64().unwrap(), v);
            let mut r = Reader::new(&out);
            r.skip().unwrap();
            prop_assert_eq!(r.position(), out.len());
        }

        #[test]
        fn uints_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            Writer::new(&mut out).uint(v);
            prop_assert_eq!(Reader::new(&out).read_u64().unwrap(), v);
        }

        #[test]
        fn bytes_round_trip(b in proptest::collection::vec(any::<u8>(), 0..70_000)) {
            let mut out = Vec::new();
            Writer::new(&mut out).raw(&b);
            let mut r = Reader::new(&out);
            prop_assert_eq!(r.read_bytes().unwrap(), &b[..]);
            prop_assert_eq!(r.position(), out.len());
        }

        #[test]
        fn skip_never_panics(b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let mut r = Reader::new(&b);
            let _ = r.skip();
        }
    }
}

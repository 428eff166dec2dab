//! LZW compression as memberlist sends it: Go's `compress/lzw` format,
//! least significant bit first, 8-bit literals, codes of 9 to 12 bits, a
//! clear code first and whenever the code space runs out, an end code last.
//!
//! memberlist compresses every datagram, most of them a ping or an ack of a
//! few dozen bytes. A general-purpose encoder that builds its dictionary
//! afresh for each one spends more on setting up than on compressing; this
//! one keeps its hash table between calls and invalidates it by bumping a
//! generation number, so a small packet costs only its own bytes. Its
//! output is Go's, code for code (the `weezl` crate's encoder differs from
//! Go's on long inputs); decompression stays with `weezl`.
//!
//! A simulator that runs every node on one thread may turn on
//! [`memo`](super::memo): then the thread remembers what it compressed
//! lately, so that the same payload is compressed once, and what it
//! compressed is decompressed by looking it up rather than by decoding it.
//! The bytes are the same either way; only the work is not done twice.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;

use super::memo::{self, fingerprint};

const LIT_WIDTH: u32 = 8;
const CLEAR: u32 = 1 << LIT_WIDTH;
const EOF: u32 = CLEAR + 1;
const MAX_CODE: u32 = (1 << 12) - 1;
const TABLE_BITS: u32 = 14;
const TABLE_SIZE: usize = 1 << TABLE_BITS;
const TABLE_MASK: u32 = (1 << TABLE_BITS) - 1;

/// Dictionary entries `(prefix code << 8 | next byte) -> code`, open
/// addressing; an entry counts only if its generation is current.
struct Table {
    keys: Box<[u32]>,
    codes: Box<[u16]>,
    generations: Box<[u32]>,
    generation: u32,
}

impl Table {
    fn new() -> Self {
        Table {
            keys: vec![0; TABLE_SIZE].into_boxed_slice(),
            codes: vec![0; TABLE_SIZE].into_boxed_slice(),
            generations: vec![0; TABLE_SIZE].into_boxed_slice(),
            generation: 0,
        }
    }

    /// Empties the table in O(1).
    fn clear(&mut self) {
        self.generation = self.generation.wrapping_add(1);
        if self.generation == 0 {
            // Wrapped: old stamps could look current again.
            self.generations.fill(0);
            self.generation = 1;
        }
    }

    fn slot(key: u32) -> u32 {
        (key >> 12 ^ key) & TABLE_MASK
    }

    fn get(&self, key: u32) -> Option<u32> {
        let mut h = Self::slot(key) as usize;
        while self.generations[h] == self.generation {
            if self.keys[h] == key {
                return Some(u32::from(self.codes[h]));
            }
            h = (h + 1) & TABLE_MASK as usize;
        }
        None
    }

    fn insert(&mut self, key: u32, code: u32) {
        let mut h = Self::slot(key) as usize;
        while self.generations[h] == self.generation {
            h = (h + 1) & TABLE_MASK as usize;
        }
        self.generations[h] = self.generation;
        self.keys[h] = key;
        self.codes[h] = code as u16;
    }
}

/// Packs codes of the current width, least significant bit first.
struct BitWriter {
    out: Vec<u8>,
    bits: u32,
    n_bits: u32,
    width: u32,
}

impl BitWriter {
    fn write(&mut self, code: u32) {
        self.bits |= code << self.n_bits;
        self.n_bits += self.width;
        while self.n_bits >= 8 {
            self.out.push(self.bits as u8);
            self.bits >>= 8;
            self.n_bits -= 8;
        }
    }

    fn finish(mut self) -> Vec<u8> {
        if self.n_bits > 0 {
            self.out.push(self.bits as u8);
        }
        self.out
    }
}

thread_local! {
    static TABLE: RefCell<Table> = RefCell::new(Table::new());
    static MEMO: RefCell<Memo> = RefCell::new(Memo::default());
}

/// `input`, LZW-compressed as Go's `compress/lzw` writer (LSB, 8-bit
/// literals) writes it.
pub fn compress(input: &[u8]) -> Vec<u8> {
    if !memo::enabled() {
        return TABLE.with(|t| encode(&mut t.borrow_mut(), input));
    }
    if let Some(hit) = MEMO.with(|m| m.borrow().compressed(input)) {
        return hit;
    }
    let out = TABLE.with(|t| encode(&mut t.borrow_mut(), input));
    MEMO.with(|m| {
        let mut m = m.borrow_mut();
        if !m.registered {
            m.registered = true;
            memo::forget_when_off(forget);
        }
        m.remember(input, &out)
    });
    out
}

/// What `input` (LZW as [`compress`] writes it) decompresses to, if this
/// thread compressed it lately and remembers (see [`memo`]); the caller
/// decodes it otherwise.
pub fn remembered(input: &[u8]) -> Option<Vec<u8>> {
    if !memo::enabled() {
        return None;
    }
    MEMO.with(|m| m.borrow().plain(input))
}

/// Forgets every compression remembered.
fn forget() {
    MEMO.with(|m| *m.borrow_mut() = Memo::default());
}

/// Most bytes (plain and compressed) the memory holds; the oldest entries
/// go first.
const MEMO_BYTES: usize = 32 << 20;

/// Recent compressions, looked up both ways.
#[derive(Default)]
struct Memo {
    by_plain: HashMap<(u64, usize), Rc<Pair>>,
    by_packed: HashMap<(u64, usize), Rc<Pair>>,
    order: VecDeque<Rc<Pair>>,
    bytes: usize,
    /// Whether turning the memo off will call [`forget`].
    registered: bool,
}

struct Pair {
    plain: Vec<u8>,
    packed: Vec<u8>,
    keys: [(u64, usize); 2],
}

impl Memo {
    fn compressed(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let p = self.by_plain.get(&fingerprint(plain))?;
        (p.plain == plain).then(|| p.packed.clone())
    }

    fn plain(&self, packed: &[u8]) -> Option<Vec<u8>> {
        let p = self.by_packed.get(&fingerprint(packed))?;
        (p.packed == packed).then(|| p.plain.clone())
    }

    fn remember(&mut self, plain: &[u8], packed: &[u8]) {
        let size = plain.len() + packed.len();
        // What does not shrink, its wrapper (at most 16 bytes) included,
        // is sent as it is (memberlist's rule) and never decompressed: not
        // worth keeping.
        if packed.len() + 16 >= plain.len() || size > MEMO_BYTES / 4 {
            return;
        }
        while self.bytes + size > MEMO_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.bytes -= old.plain.len() + old.packed.len();
            // A later pair with the same key replaced this one's entry:
            // leave that in place.
            if self
                .by_plain
                .get(&old.keys[0])
                .is_some_and(|p| Rc::ptr_eq(p, &old))
            {
                self.by_plain.remove(&old.keys[0]);
            }
            if self
                .by_packed
                .get(&old.keys[1])
                .is_some_and(|p| Rc::ptr_eq(p, &old))
            {
                self.by_packed.remove(&old.keys[1]);
            }
        }
        let keys = [fingerprint(plain), fingerprint(packed)];
        let pair = Rc::new(Pair {
            plain: plain.to_vec(),
            packed: packed.to_vec(),
            keys,
        });
        self.by_plain.insert(keys[0], pair.clone());
        self.by_packed.insert(keys[1], pair.clone());
        self.order.push_back(pair);
        self.bytes += size;
    }
}

fn encode(table: &mut Table, input: &[u8]) -> Vec<u8> {
    table.clear();
    let mut w = BitWriter {
        out: Vec::with_capacity(input.len() / 2 + 8),
        bits: 0,
        n_bits: 0,
        width: LIT_WIDTH + 1,
    };
    // The next code to hand out is `hi + 1`; widths grow when it reaches
    // `overflow`.
    let mut hi = EOF;
    let mut overflow = 1 << (LIT_WIDTH + 1);
    w.write(CLEAR);
    let Some((&first, rest)) = input.split_first() else {
        w.write(EOF);
        return w.finish();
    };
    // Advances `hi` after a code is emitted; true when the code space ran
    // out and the dictionary started over.
    let next_code = |w: &mut BitWriter, hi: &mut u32, overflow: &mut u32, table: &mut Table| {
        *hi += 1;
        if *hi == *overflow {
            w.width += 1;
            *overflow <<= 1;
        }
        if *hi == MAX_CODE {
            w.write(CLEAR);
            w.width = LIT_WIDTH + 1;
            *hi = EOF;
            *overflow = CLEAR << 1;
            table.clear();
            return true;
        }
        false
    };
    let mut code = u32::from(first);
    for &byte in rest {
        let key = code << 8 | u32::from(byte);
        if let Some(c) = table.get(key) {
            code = c;
            continue;
        }
        w.write(code);
        code = u32::from(byte);
        if !next_code(&mut w, &mut hi, &mut overflow, table) {
            table.insert(key, hi);
        }
    }
    w.write(code);
    next_code(&mut w, &mut hi, &mut overflow, table);
    w.write(EOF);
    w.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(input: &[u8]) -> Vec<u8> {
        weezl::decode::Decoder::new(weezl::BitOrder::Lsb, 8)
            .decode(input)
            .unwrap()
    }

    // Byte-for-byte agreement with Go's writer, on these inputs and more,
    // is checked against Go itself in tests/interop_memberlist.rs.
    #[test]
    fn edge_cases_round_trip() {
        let long_run = vec![7u8; 100_000];
        // Enough distinct pairs to run out of codes several times.
        let noise: Vec<u8> = (0..200_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for input in [&[][..], &[1], &[1, 1], &[0, 255, 0, 255], &long_run, &noise] {
            assert_eq!(decode(&compress(input)), input, "{} bytes", input.len());
        }
    }

    #[test]
    fn the_memory_gives_what_the_work_would() {
        let inputs: Vec<Vec<u8>> = (0..50u32)
            .map(|i| {
                (0..(i * 37) as usize)
                    .map(|j| (j as u32 * i % 251) as u8)
                    .collect()
            })
            .collect();
        let plain: Vec<Vec<u8>> = inputs.iter().map(|x| compress(x)).collect();
        assert!(remembered(&plain[3]).is_none(), "off by default");
        let was = memo::enable(true);
        for (x, c) in inputs.iter().zip(&plain) {
            assert_eq!(&compress(x), c);
            // Twice: the second from memory.
            assert_eq!(&compress(x), c);
            // What does not shrink is sent as it is, so never looked up.
            if c.len() + 16 < x.len() {
                assert_eq!(remembered(c).as_deref(), Some(&x[..]));
            }
        }
        assert!(inputs
            .iter()
            .zip(&plain)
            .any(|(x, c)| c.len() + 16 < x.len()));
        assert!(remembered(b"never compressed").is_none());
        memo::enable(false);
        assert!(remembered(&plain[3]).is_none(), "off, it forgets");
        memo::enable(was);
    }

    #[test]
    fn a_stale_table_is_never_read() {
        // The same thread's table serves call after call.
        let a = compress(b"abababababababab");
        let _ = compress(b"xyxyxyxyxyxyxyxyxyxyxyxyxyxy");
        assert_eq!(compress(b"abababababababab"), a);
    }

    proptest! {
        #[test]
        fn round_trips(input in proptest::collection::vec(0u8..6, 0..20_000)) {
            prop_assert_eq!(decode(&compress(&input)), input);
        }

        #[test]
        fn round_trips_any_bytes(input in proptest::collection::vec(any::<u8>(), 0..5_000)) {
            prop_assert_eq!(decode(&compress(&input)), input);
        }
    }
}

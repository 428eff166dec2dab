//! What a simulator that runs every node on one thread may remember, so
//! that work many nodes repeat byte for byte is done once.
//!
//! Off by default, and off on every real node. A simulator turns it on for
//! its thread with [`enable`]. Then:
//! - LZW compression remembers what it compressed (see
//!   [`lzw`](super::lzw)): what one node compresses, its peer decompresses
//!   by lookup;
//! - a node's push/pull state is built, encoded and compressed once per
//!   content: nodes whose member tables have the same digest (see
//!   `members.rs`) share one state;
//! - the bytes of a push/pull that some node encoded decode, by lookup,
//!   to that state (the bytes are compared in full first);
//! - a node merging a state equal to its own (by digest) skips the merge,
//!   which would change nothing;
//! - member names are interned: every node's table keys a member by one
//!   shared string, so a lookup compares bytes that are in cache.
//!
//! Every answer is the one the work would give: the bytes sent are the
//! same, and what each node does with them is the same. The simulator's
//! tests run the same scenarios with and without and compare every output.
//! The digests are 64-bit sums, so two different tables agree by chance
//! with probability about 2⁻⁶⁴ per comparison.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use bytes::Bytes;

/// What the memory holds: values of the modules that remember (push/pull
/// states, in `wire`), which this module, below them all, does not know.
pub(crate) type Value = Arc<dyn Any + Send + Sync>;

thread_local! {
    static ON: Cell<bool> = const { Cell::new(false) };
    static STATES: RefCell<States> = RefCell::new(States::default());
    static STREAMS: RefCell<Streams> = RefCell::new(Streams::default());
    static NAMES: RefCell<HashSet<Arc<str>>> = RefCell::new(HashSet::new());
    static FORGETS: RefCell<Vec<fn()>> = const { RefCell::new(Vec::new()) };
}

/// Turns this thread's memory on or off; returns the previous setting.
/// Turning it off forgets everything remembered.
pub fn enable(on: bool) -> bool {
    if !on {
        STATES.with(|s| *s.borrow_mut() = States::default());
        STREAMS.with(|s| *s.borrow_mut() = Streams::default());
        NAMES.with(|s| *s.borrow_mut() = HashSet::new());
        for forget in FORGETS.with(|f| std::mem::take(&mut *f.borrow_mut())) {
            forget();
        }
    }
    ON.with(|c| c.replace(on))
}

/// Whether this thread remembers.
pub(crate) fn enabled() -> bool {
    ON.with(Cell::get)
}

/// Has `forget` called the next time this thread's memory is turned off:
/// how a module that remembers on its own (LZW) forgets with the rest.
/// Register again after each forgetting.
pub(crate) fn forget_when_off(forget: fn()) {
    FORGETS.with(|f| f.borrow_mut().push(forget));
}

/// The push/pull state of a member table with digest `key` (digest,
/// members, join flag): remembered, or built by `build` and remembered.
/// `members` says how many members a state holds (the memory is bounded
/// by their sum).
pub(crate) fn state<T: Any + Send + Sync>(
    key: (u64, usize, bool),
    build: impl FnOnce() -> T,
    members: impl FnOnce(&T) -> usize,
) -> Arc<T> {
    let hit = STATES.with(|s| s.borrow().by_key.get(&key).map(|(v, _)| v.clone()));
    if let Some(hit) = hit.and_then(|v| v.downcast::<T>().ok()) {
        return hit;
    }
    let value = Arc::new(build());
    let size = members(&value);
    STATES.with(|s| s.borrow_mut().remember(key, value.clone(), size));
    value
}

/// `name` as a member table's key: this thread's one copy when it
/// remembers, else a fresh one. A simulated pool names at most as many
/// members as it has nodes, so the set stays that size.
pub(crate) fn name(name: &str) -> Arc<str> {
    if !enabled() {
        return Arc::from(name);
    }
    NAMES.with(|s| {
        let mut s = s.borrow_mut();
        if let Some(n) = s.get(name) {
            return n.clone();
        }
        let n: Arc<str> = Arc::from(name);
        s.insert(n.clone());
        n
    })
}

/// Remembers that `bytes` (a stream message as sent) decode to `value`.
pub(crate) fn remember_stream(bytes: &Bytes, value: Value) {
    STREAMS.with(|s| s.borrow_mut().remember(bytes, value));
}

/// What `bytes` decode to, if this thread encoded them lately.
pub(crate) fn stream(bytes: &[u8]) -> Option<Value> {
    if !enabled() {
        return None;
    }
    STREAMS.with(|s| s.borrow().get(bytes))
}

/// A fast 64-bit hash of `b` and its length: finds candidates, which are
/// then compared byte for byte. Four independent lanes keep the multiplier
/// busy on the large states a push/pull carries.
pub(crate) fn fingerprint(b: &[u8]) -> (u64, usize) {
    const K: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut lanes = [
        0xcbf2_9ce4_8422_2325u64,
        0x8422_2325_cbf2_9ce4,
        0x2325_cbf2_9ce4_8422,
        0x9ce4_8422_2325_cbf2,
    ];
    let mut blocks = b.chunks_exact(32);
    for block in &mut blocks {
        for (lane, w) in lanes.iter_mut().zip(block.chunks_exact(8)) {
            let mut x = [0u8; 8];
            x.copy_from_slice(w);
            *lane = (*lane ^ u64::from_le_bytes(x))
                .wrapping_mul(K)
                .rotate_left(31);
        }
    }
    let mut h = lanes.iter().fold(b.len() as u64, |h, l| {
        (h ^ l).wrapping_mul(K).rotate_left(27)
    });
    for &byte in blocks.remainder() {
        h = (h ^ u64::from(byte)).wrapping_mul(K);
    }
    (h ^ (h >> 32), b.len())
}

/// Most states remembered, and most members over all of them.
const MAX_STATES: usize = 64;
const MAX_STATE_MEMBERS: usize = 4_000_000;

#[derive(Default)]
struct States {
    /// Each state, with how many members it holds.
    by_key: HashMap<(u64, usize, bool), (Value, usize)>,
    order: VecDeque<(u64, usize, bool)>,
    members: usize,
}

impl States {
    fn remember(&mut self, key: (u64, usize, bool), value: Value, size: usize) {
        while self.order.len() >= MAX_STATES
            || (self.members + size > MAX_STATE_MEMBERS && !self.order.is_empty())
        {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            if let Some((_, n)) = self.by_key.remove(&old) {
                self.members -= n;
            }
        }
        if self.by_key.insert(key, (value, size)).is_none() {
            self.order.push_back(key);
            self.members += size;
        }
    }
}

/// Most stream bytes remembered.
const MAX_STREAM_BYTES: usize = 64 << 20;

#[derive(Default)]
struct Streams {
    by_bytes: HashMap<(u64, usize), (Bytes, Value)>,
    /// The buffers remembered, by address and length: bytes handed on
    /// without a copy (the protocol engine's streams) are found without
    /// hashing or comparing them. A remembered buffer is kept alive here,
    /// so its address cannot be reused for other bytes.
    by_address: HashMap<(usize, usize), (u64, usize)>,
    order: VecDeque<(u64, usize)>,
    bytes: usize,
}

impl Streams {
    fn get(&self, bytes: &[u8]) -> Option<Value> {
        if let Some(key) = self.by_address.get(&(bytes.as_ptr() as usize, bytes.len())) {
            return self.by_bytes.get(key).map(|(_, v)| v.clone());
        }
        let (b, v) = self.by_bytes.get(&fingerprint(bytes))?;
        (b[..] == *bytes).then(|| v.clone())
    }

    fn forget(&mut self, key: (u64, usize)) {
        if let Some((b, _)) = self.by_bytes.remove(&key) {
            self.by_address.remove(&(b.as_ptr() as usize, b.len()));
            self.bytes -= b.len();
        }
    }

    fn remember(&mut self, bytes: &Bytes, value: Value) {
        if bytes.len() > MAX_STREAM_BYTES / 4 {
            return;
        }
        while self.bytes + bytes.len() > MAX_STREAM_BYTES {
            let Some(old) = self.order.pop_front() else {
                break;
            };
            self.forget(old);
        }
        let key = fingerprint(bytes);
        if self.by_bytes.contains_key(&key) {
            // A fingerprint collision replaces the entry; its key stays in
            // the order once.
            self.forget(key);
        } else {
            self.order.push_back(key);
        }
        self.by_address
            .insert((bytes.as_ptr() as usize, bytes.len()), key);
        self.by_bytes.insert(key, (bytes.clone(), value));
        self.bytes += bytes.len();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_tell_contents_and_lengths_apart() {
        let a: Vec<u8> = (0..1000u32).map(|i| (i * 7 % 256) as u8).collect();
        let mut b = a.clone();
        b[999] ^= 1;
        assert_ne!(fingerprint(&a), fingerprint(&b));
        assert_ne!(fingerprint(&a), fingerprint(&a[..999]));
        assert_eq!(fingerprint(&a), fingerprint(&a.clone()));
    }

    #[test]
    fn streams_are_found_only_by_their_exact_bytes() {
        let was = enable(true);
        let pp: Value = Arc::new(String::from("a decoded state"));
        let sent = Bytes::from(b"some encoded state".to_vec());
        remember_stream(&sent, pp.clone());
        // The buffer itself, found by address; a copy, found by content.
        assert!(stream(&sent).is_some_and(|p| Arc::ptr_eq(&p, &pp)));
        assert!(stream(b"some encoded state").is_some_and(|p| Arc::ptr_eq(&p, &pp)));
        assert!(stream(b"some encoded statE").is_none());
        assert!(
            stream(&sent[..4]).is_none(),
            "a prefix of the buffer is not it"
        );
        enable(false);
        assert!(stream(b"some encoded state").is_none(), "off, it forgets");
        enable(was);
    }
}

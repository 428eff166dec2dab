//! The piggyback queue: messages waiting to ride along on outgoing packets.
//!
//! Each message is sent a limited number of times (`retransmit_mult *
//! ceil(log10(n + 1))`). The least-sent go first, and among equally sent the
//! largest, then the newest (memberlist's order), which packs packets well
//! and spreads fresh news fastest. A message about a node replaces any
//! queued message about the same node. The queue has a hard bound; beyond it
//! the most-sent messages are dropped first.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;

use super::hash::LookupMap;

/// A queued message: what counts is its encoded length.
pub trait Encoded: Clone {
    /// Bytes it takes in a packet.
    fn encoded_len(&self) -> usize;
}

impl Encoded for Bytes {
    fn encoded_len(&self) -> usize {
        self.len()
    }
}

/// Position in the queue, packed so that ascending order is the queue's:
/// fewest transmits (high 32 bits), then longest (the next 32, inverted),
/// then newest (the low 64, inverted). One integer compares in one
/// instruction pair where a tuple of three compares field by field, and a
/// join storm takes and puts back millions of entries.
type Key = u128;

fn key(transmits: usize, len: usize, id: u64) -> Key {
    let len = u32::try_from(len).unwrap_or(u32::MAX);
    let transmits = u32::try_from(transmits).unwrap_or(u32::MAX);
    (u128::from(transmits) << 96) | (u128::from(u32::MAX - len) << 64) | u128::from(u64::MAX - id)
}

fn transmits_of(k: Key) -> usize {
    (k >> 96) as usize
}

/// The same position, one transmission later.
fn sent_once_more(k: Key) -> Key {
    k + (1 << 96)
}

#[derive(Debug)]
struct Entry<M> {
    key: Key,
    name: Option<Arc<str>>,
    msg: M,
    notify: Option<u64>,
    /// Never dropped to honour the bound (see `push_pinned`).
    pinned: bool,
}

/// A bounded, transmit-limited broadcast queue of encoded messages (bytes,
/// or anything that knows its encoded length).
///
/// Entries live in a slab; the ordered map and the name index hold slot
/// numbers, so an entry that moves in the order (each time it is sent)
/// needs no name lookup.
#[derive(Debug)]
pub struct BroadcastQueue<M = Bytes> {
    order: BTreeMap<Key, u32>,
    slots: Vec<Option<Entry<M>>>,
    free: Vec<u32>,
    by_name: LookupMap<Arc<str>, u32>,
    next_id: u64,
    bound: usize,
    finished: Vec<u64>,
}

impl<M: Encoded> BroadcastQueue<M> {
    /// An empty queue holding at most `bound` messages.
    pub fn new(bound: usize) -> Self {
        BroadcastQueue {
            order: BTreeMap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            by_name: LookupMap::default(),
            next_id: 0,
            bound: bound.max(1),
            finished: Vec::new(),
        }
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.order.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }

    /// The most messages the queue will hold.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Queues `msg`. A `name` (the node the message is about) replaces any
    /// queued message with the same name. `notify` is reported by
    /// [`take_finished`](Self::take_finished) once the message has been sent
    /// often enough, replaced, or dropped.
    pub fn push(&mut self, name: Option<Arc<str>>, msg: M, notify: Option<u64>) {
        self.insert(name, msg, notify, false)
    }

    /// Queues `msg` as [`push`](Self::push) does, but the bound never drops
    /// it: a node's news about itself (that it is alive after a restart, a
    /// refutation, its leave) is what the others cannot learn elsewhere.
    /// A node that learns thousands of members at once (a join) queues an
    /// alive notice for each, and those must not crowd out its own.
    pub fn push_pinned(&mut self, name: Option<Arc<str>>, msg: M, notify: Option<u64>) {
        self.insert(name, msg, notify, true)
    }

    fn insert(&mut self, name: Option<Arc<str>>, msg: M, notify: Option<u64>, pinned: bool) {
        if let Some(e) = name
            .as_ref()
            .and_then(|n| self.by_name.remove(n))
            .and_then(|old| self.vacate(old))
        {
            self.order.remove(&e.key);
            self.finish(e);
        }
        self.next_id += 1;
        let key = key(0, msg.encoded_len(), self.next_id);
        let slot = self.occupy(Entry {
            key,
            name: name.clone(),
            msg,
            notify,
            pinned,
        });
        if let Some(n) = name {
            self.by_name.insert(n, slot);
        }
        self.order.insert(key, slot);
        while self.order.len() > self.bound {
            // The most-sent first, pinned ones aside (there are few).
            let victim = self
                .order
                .iter()
                .rev()
                .find(|(_, &s)| self.slots[s as usize].as_ref().is_some_and(|e| !e.pinned));
            let Some((&key, &slot)) = victim else {
                break;
            };
            self.order.remove(&key);
            if let Some(e) = self.vacate(slot) {
                self.forget(&e);
                self.finish(e);
            }
        }
    }

    fn occupy(&mut self, e: Entry<M>) -> u32 {
        match self.free.pop() {
            Some(s) => {
                self.slots[s as usize] = Some(e);
                s
            }
            None => {
                self.slots.push(Some(e));
                (self.slots.len() - 1) as u32
            }
        }
    }

    /// Takes the entry out of `slot`, which every index pointing there
    /// must forget too. (The indexes only ever name occupied slots.)
    fn vacate(&mut self, slot: u32) -> Option<Entry<M>> {
        let e = self.slots.get_mut(slot as usize)?.take()?;
        self.free.push(slot);
        Some(e)
    }

    fn forget(&mut self, e: &Entry<M>) {
        if let Some(n) = &e.name {
            self.by_name.remove(n);
        }
    }

    fn finish(&mut self, e: Entry<M>) {
        if let Some(token) = e.notify {
            self.finished.push(token);
        }
    }

    /// Takes at most `max_count` messages to piggyback: each costs
    /// `overhead` bytes plus its length, and together they fit in `limit`.
    /// Each taken message counts as one transmission; it leaves the queue at
    /// `transmit_limit`.
    pub fn take(
        &mut self,
        overhead: usize,
        limit: usize,
        transmit_limit: usize,
        max_count: usize,
    ) -> Vec<M> {
        let mut out = Vec::new();
        let (Some(min), Some(max)) = (
            self.order.first_key_value().map(|(k, _)| transmits_of(*k)),
            self.order.last_key_value().map(|(k, _)| transmits_of(*k)),
        ) else {
            return out;
        };
        let mut used = 0usize;
        let mut sent = Vec::new();
        let mut transmits = min;
        while transmits <= max && out.len() < max_count {
            let Some(free) = limit.checked_sub(used + overhead).filter(|f| *f > 0) else {
                break;
            };
            // The first entry at this transmit count whose length fits.
            let from = key(transmits, free, u64::MAX);
            let to = key(transmits + 1, usize::MAX, u64::MAX);
            let Some((&k, &slot)) = self.order.range(from..to).next() else {
                transmits += 1;
                continue;
            };
            self.order.remove(&k);
            let Some(entry) = self.slots[slot as usize].as_ref() else {
                break;
            };
            used += overhead + entry.msg.encoded_len();
            out.push(entry.msg.clone());
            if transmits_of(k) + 1 >= transmit_limit {
                if let Some(e) = self.vacate(slot) {
                    self.forget(&e);
                    self.finish(e);
                }
            } else {
                sent.push((sent_once_more(k), slot));
            }
        }
        // Back in the order only now, so one call never takes a message
        // twice.
        for (k, slot) in sent {
            if let Some(e) = self.slots[slot as usize].as_mut() {
                e.key = k;
            }
            self.order.insert(k, slot);
        }
        out
    }

    /// Notification tokens of messages that are done, oldest first.
    pub fn take_finished(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn b(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn named_messages_replace_each_other() {
        let mut q = BroadcastQueue::new(10);
        q.push(Some("a".into()), b("old"), Some(1));
        q.push(Some("a".into()), b("new!"), None);
        q.push(Some("b".into()), b("x"), None);
        assert_eq!(q.len(), 2);
        assert_eq!(q.take_finished(), vec![1]);
        let got = q.take(2, 100, 3, usize::MAX);
        assert_eq!(got, vec![b("new!"), b("x")]);
    }

    #[test]
    fn order_is_fewest_sent_then_longest_then_newest() {
        let mut q = BroadcastQueue::new(10);
        q.push(None, b("aa"), None);
        q.push(None, b("bbbb"), None);
        q.push(None, b("cc"), None);
        assert_eq!(
            q.take(0, 100, 10, usize::MAX),
            vec![b("bbbb"), b("cc"), b("aa")]
        );
        q.push(None, b("d"), None);
        // "d" has never been sent, the rest once.
        assert_eq!(q.take(0, 1, 10, usize::MAX), vec![b("d")]);
    }

    #[test]
    fn messages_retire_at_the_transmit_limit() {
        let mut q = BroadcastQueue::new(10);
        q.push(Some("n".into()), b("m"), Some(7));
        for _ in 0..3 {
            assert_eq!(q.take(2, 100, 3, usize::MAX), vec![b("m")]);
        }
        assert!(q.is_empty());
        assert_eq!(q.take_finished(), vec![7]);
        assert!(q.take(2, 100, 3, usize::MAX).is_empty());
    }

    #[test]
    fn count_limit_is_respected() {
        let mut q = BroadcastQueue::new(10);
        for name in ["a", "b", "c"] {
            q.push(Some(name.into()), b("x"), None);
        }
        assert_eq!(q.take(0, 100, 5, 2).len(), 2);
        // The one left behind was not counted as sent: it goes first now.
        assert_eq!(q.take(0, 100, 5, 1), vec![b("x")]);
        assert_eq!(q.len(), 3);
    }

    #[test]
    fn byte_limit_is_respected() {
        let mut q = BroadcastQueue::new(10);
        q.push(None, b("0123456789a"), None);
        q.push(None, b("012345"), None);
        q.push(None, b("01"), None);
        // 2 + 6 + 2 + 2 = 12 fits 12; the 11-byte one (13 with overhead) does not.
        assert_eq!(q.take(2, 12, 5, usize::MAX), vec![b("012345"), b("01")]);
    }

    #[test]
    fn pinned_messages_outlive_the_bound() {
        let mut q = BroadcastQueue::new(2);
        q.push_pinned(Some("me".into()), b("refute"), None);
        for name in ["a", "b", "c", "d"] {
            q.push(Some(name.into()), b("alive"), None);
        }
        assert_eq!(q.len(), 2);
        assert!(q.take(0, 100, 5, usize::MAX).contains(&b("refute")));
    }

    proptest! {
        #[test]
        fn queue_never_exceeds_its_bound(
            bound in 1usize..20,
            ops in proptest::collection::vec((0u8..30, 1usize..50, any::<bool>()), 0..300),
        ) {
            let mut q = BroadcastQueue::new(bound);
            for (name, len, take) in ops {
                if take {
                    let got = q.take(2, 200, 4, usize::MAX);
                    let bytes: usize = got.iter().map(|m: &Bytes| m.len() + 2).sum();
                    prop_assert!(bytes <= 200);
                } else {
                    let name = (name < 20).then(|| Arc::<str>::from(format!("n{name}")));
                    q.push(name, Bytes::from(vec![0u8; len]), None);
                }
                prop_assert!(q.len() <= bound);
                prop_assert!(q.by_name.len() <= q.len());
                for &slot in q.by_name.values() {
                    let e = q.slots[slot as usize].as_ref();
                    prop_assert!(e.is_some_and(|e| q.order.get(&e.key) == Some(&slot)));
                }
                prop_assert_eq!(q.slots.iter().flatten().count(), q.len());
            }
        }

        /// The queue takes, drops and finishes exactly as memberlist's
        /// order says: the same as a plain sorted map of tuples.
        #[test]
        fn queue_matches_the_plain_model(
            bound in 1usize..30,
            ops in proptest::collection::vec(
                (0u8..40, 1usize..60, 0u8..3, 1usize..120, 1usize..6), 0..400),
        ) {
            let mut q = BroadcastQueue::new(bound);
            let mut m = model::Queue::new(bound);
            for (i, (name, len, op, limit, tl)) in ops.into_iter().enumerate() {
                if op == 0 {
                    let a: Vec<Bytes> = q.take(2, limit, tl, 1 + name as usize % 8);
                    let b = m.take(2, limit, tl, 1 + name as usize % 8);
                    prop_assert_eq!(a, b);
                } else {
                    let name = (name < 25).then(|| Arc::<str>::from(format!("n{name}")));
                    let msg = Bytes::from(vec![(i % 251) as u8; len]);
                    if op == 1 {
                        q.push(name.clone(), msg.clone(), Some(i as u64));
                        m.push(name, msg, Some(i as u64), false);
                    } else {
                        q.push_pinned(name.clone(), msg.clone(), Some(i as u64));
                        m.push(name, msg, Some(i as u64), true);
                    }
                }
                prop_assert_eq!(q.take_finished(), std::mem::take(&mut m.finished));
                prop_assert_eq!(q.len(), m.items.len());
            }
        }
    }

    /// The queue as first written: a sorted map of (transmits,
    /// Reverse(len), Reverse(id)) tuples and a name index holding keys.
    mod model {
        use super::*;
        use std::cmp::Reverse;
        use std::collections::HashMap;

        type Key = (usize, Reverse<usize>, Reverse<u64>);
        /// Name, message, notification token, pinned.
        type Item = (Option<Arc<str>>, Bytes, Option<u64>, bool);

        pub struct Queue {
            pub items: BTreeMap<Key, Item>,
            by_name: HashMap<Arc<str>, Key>,
            next_id: u64,
            bound: usize,
            pub finished: Vec<u64>,
        }

        impl Queue {
            pub fn new(bound: usize) -> Self {
                Queue {
                    items: BTreeMap::new(),
                    by_name: HashMap::new(),
                    next_id: 0,
                    bound,
                    finished: Vec::new(),
                }
            }

            pub fn push(
                &mut self,
                name: Option<Arc<str>>,
                msg: Bytes,
                notify: Option<u64>,
                pinned: bool,
            ) {
                if let Some(old) = name.as_ref().and_then(|n| self.by_name.remove(n)) {
                    if let Some(e) = self.items.remove(&old) {
                        self.finished.extend(e.2);
                    }
                }
                self.next_id += 1;
                let key = (0, Reverse(msg.len()), Reverse(self.next_id));
                if let Some(n) = &name {
                    self.by_name.insert(n.clone(), key);
                }
                self.items.insert(key, (name, msg, notify, pinned));
                while self.items.len() > self.bound {
                    let Some(key) = self.items.iter().rev().find(|(_, e)| !e.3).map(|(k, _)| *k)
                    else {
                        break;
                    };
                    if let Some(e) = self.items.remove(&key) {
                        if let Some(n) = &e.0 {
                            self.by_name.remove(n);
                        }
                        self.finished.extend(e.2);
                    }
                }
            }

            pub fn take(
                &mut self,
                overhead: usize,
                limit: usize,
                tl: usize,
                max: usize,
            ) -> Vec<Bytes> {
                let mut out = Vec::new();
                let (Some(lo), Some(hi)) = (
                    self.items.first_key_value().map(|(k, _)| k.0),
                    self.items.last_key_value().map(|(k, _)| k.0),
                ) else {
                    return out;
                };
                let (mut used, mut again, mut t) = (0, Vec::new(), lo);
                while t <= hi && out.len() < max {
                    let Some(free) = limit.checked_sub(used + overhead).filter(|f| *f > 0) else {
                        break;
                    };
                    let from = (t, Reverse(free), Reverse(u64::MAX));
                    let to = (t + 1, Reverse(usize::MAX), Reverse(u64::MAX));
                    let Some(key) = self.items.range(from..to).next().map(|(k, _)| *k) else {
                        t += 1;
                        continue;
                    };
                    let e = self.items.remove(&key).unwrap();
                    used += overhead + e.1.len();
                    out.push(e.1.clone());
                    if key.0 + 1 >= tl {
                        if let Some(n) = &e.0 {
                            self.by_name.remove(n);
                        }
                        self.finished.extend(e.2);
                    } else {
                        again.push(((key.0 + 1, key.1, key.2), e));
                    }
                }
                for (key, e) in again {
                    if let Some(n) = &e.0 {
                        self.by_name.insert(n.clone(), key);
                    }
                    self.items.insert(key, e);
                }
                out
            }
        }
    }
}

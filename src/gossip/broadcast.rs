//! The piggyback queue: messages waiting to ride along on outgoing packets.
//!
//! Each message is sent a limited number of times (`retransmit_mult *
//! ceil(log10(n + 1))`). The least-sent go first, and among equally sent the
//! largest, then the newest (memberlist's order), which packs packets well
//! and spreads fresh news fastest. A message about a node replaces any
//! queued message about the same node. The queue has a hard bound; beyond it
//! the most-sent messages are dropped first.

use std::cmp::Reverse;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use bytes::Bytes;

/// Position in the queue: fewest transmits first, then longest, then newest.
type Key = (usize, Reverse<usize>, Reverse<u64>);

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

#[derive(Debug)]
struct Entry<M> {
    name: Option<Arc<str>>,
    msg: M,
    notify: Option<u64>,
    /// Never dropped to honour the bound (see `push_pinned`).
    pinned: bool,
}

/// A bounded, transmit-limited broadcast queue of encoded messages (bytes,
/// or anything that knows its encoded length).
#[derive(Debug)]
pub struct BroadcastQueue<M = Bytes> {
    items: BTreeMap<Key, Entry<M>>,
    by_name: HashMap<Arc<str>, Key>,
    next_id: u64,
    bound: usize,
    finished: Vec<u64>,
}

impl<M: Encoded> BroadcastQueue<M> {
    /// An empty queue holding at most `bound` messages.
    pub fn new(bound: usize) -> Self {
        BroadcastQueue {
            items: BTreeMap::new(),
            by_name: HashMap::new(),
            next_id: 0,
            bound: bound.max(1),
            finished: Vec::new(),
        }
    }

    /// Messages queued.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
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
        if let Some(n) = &name {
            if let Some(old) = self.by_name.remove(n) {
                if let Some(e) = self.items.remove(&old) {
                    self.finish(e);
                }
            }
        }
        self.next_id += 1;
        let key = (0, Reverse(msg.encoded_len()), Reverse(self.next_id));
        if let Some(n) = &name {
            self.by_name.insert(n.clone(), key);
        }
        self.items.insert(
            key,
            Entry {
                name,
                msg,
                notify,
                pinned,
            },
        );
        while self.items.len() > self.bound {
            // The most-sent first, pinned ones aside (there are few).
            let victim = self.items.iter().rev().find(|(_, e)| !e.pinned);
            let Some(key) = victim.map(|(k, _)| *k) else {
                break;
            };
            if let Some(e) = self.items.remove(&key) {
                self.forget(&e);
                self.finish(e);
            }
        }
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
            self.items.first_key_value().map(|(k, _)| k.0),
            self.items.last_key_value().map(|(k, _)| k.0),
        ) else {
            return out;
        };
        let mut used = 0usize;
        let mut reinsert = Vec::new();
        let mut transmits = min;
        while transmits <= max && out.len() < max_count {
            let Some(free) = limit.checked_sub(used + overhead).filter(|f| *f > 0) else {
                break;
            };
            // The first entry at this transmit count whose length fits.
            let from = (transmits, Reverse(free), Reverse(u64::MAX));
            let to = (transmits + 1, Reverse(usize::MAX), Reverse(u64::MAX));
            let Some(key) = self.items.range(from..to).next().map(|(k, _)| *k) else {
                transmits += 1;
                continue;
            };
            let Some(entry) = self.items.remove(&key) else {
                break;
            };
            used += overhead + entry.msg.encoded_len();
            out.push(entry.msg.clone());
            if key.0 + 1 >= transmit_limit {
                self.forget(&entry);
                self.finish(entry);
            } else {
                reinsert.push(((key.0 + 1, key.1, key.2), entry));
            }
        }
        for (key, entry) in reinsert {
            if let Some(n) = &entry.name {
                self.by_name.insert(n.clone(), key);
            }
            self.items.insert(key, entry);
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
                for key in q.by_name.values() {
                    prop_assert!(q.items.contains_key(key));
                }
            }
        }
    }
}

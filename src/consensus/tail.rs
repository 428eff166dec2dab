//! The last entries of the Raft log, kept decoded in memory.
//!
//! A leader reads back every entry it appends to replicate it, and every
//! server reads each one back again to apply it; from redb that is a read
//! transaction and a JSON decode per entry per reader. Nearly all of those
//! reads are of the last few entries, so the store keeps them here.
//!
//! The cache only ever holds the log's newest entries, contiguous up to
//! the last one: the store updates it under the same lock as it writes the
//! log, after redb has the change, so it never holds an entry the log does
//! not. It starts empty with each process; a crash takes it with the
//! process, and what was on disk is read from disk.

use std::collections::VecDeque;
use std::ops::Bound;

use openraft::Entry;

use super::TypeConfig;

/// Entries kept: enough for replication and apply to read what they have
/// not yet sent or applied under load; a follower further behind catches
/// up from the disk.
pub(super) const KEEP: usize = 2048;

/// The newest entries of the log, contiguous, oldest first.
#[derive(Debug, Default)]
pub(super) struct Tail {
    entries: VecDeque<Entry<TypeConfig>>,
}

impl Tail {
    /// The index of the oldest entry held.
    fn first(&self) -> Option<u64> {
        self.entries.front().map(|e| e.log_id.index)
    }

    /// The newest entry of the log, if the cache holds any.
    pub(super) fn last(&self) -> Option<&Entry<TypeConfig>> {
        self.entries.back()
    }

    /// The log gained `e` (already written). An entry that does not follow
    /// the last one starts the cache afresh from it, so a gap never hides.
    pub(super) fn appended(&mut self, e: Entry<TypeConfig>) {
        let follows = self
            .last()
            .is_none_or(|l| l.log_id.index.checked_add(1) == Some(e.log_id.index));
        if !follows {
            self.entries.clear();
        }
        self.entries.push_back(e);
        while self.entries.len() > KEEP {
            self.entries.pop_front();
        }
    }

    /// Follows a write to the log: `then` if it succeeded; if it failed,
    /// what reached the disk is unknown, so the cache empties and reads
    /// go to the disk from then on.
    pub(super) fn changed<T, E>(&mut self, write: &Result<T, E>, then: impl FnOnce(&mut Tail)) {
        match write {
            Ok(_) => then(self),
            Err(_) => self.entries.clear(),
        }
    }

    /// The log lost every entry from `index` on.
    pub(super) fn truncated(&mut self, index: u64) {
        match self.first() {
            Some(first) if index > first => {
                let keep = usize::try_from(index - first).unwrap_or(usize::MAX);
                self.entries.truncate(keep);
            }
            _ => self.entries.clear(),
        }
    }

    /// The log lost every entry up to `index`, inclusive.
    pub(super) fn purged(&mut self, index: u64) {
        while self.first().is_some_and(|f| f <= index) {
            self.entries.pop_front();
        }
    }

    /// The entries in `range`, if the cache covers its start: since the
    /// cache reaches the log's end, it then holds every entry of the range
    /// that exists. `None` sends the caller to the disk.
    pub(super) fn get(&self, range: (Bound<u64>, Bound<u64>)) -> Option<Vec<Entry<TypeConfig>>> {
        let first = self.first()?;
        let start = match range.0 {
            Bound::Included(s) => s,
            Bound::Excluded(s) => s.checked_add(1)?,
            Bound::Unbounded => 0,
        };
        if start < first {
            return None;
        }
        let skip = usize::try_from(start - first).unwrap_or(usize::MAX);
        let within = |i: u64| match range.1 {
            Bound::Included(end) => i <= end,
            Bound::Excluded(end) => i < end,
            Bound::Unbounded => true,
        };
        Some(
            self.entries
                .iter()
                .skip(skip)
                .take_while(|e| within(e.log_id.index))
                .cloned()
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{CommittedLeaderId, EntryPayload, LogId};

    fn entry(index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    fn indices(v: Option<Vec<Entry<TypeConfig>>>) -> Option<Vec<u64>> {
        v.map(|v| v.iter().map(|e| e.log_id.index).collect())
    }

    fn filled(from: u64, to: u64) -> Tail {
        let mut t = Tail::default();
        for i in from..=to {
            t.appended(entry(i));
        }
        t
    }

    #[test]
    fn serves_a_range_it_covers_and_sends_older_ones_to_disk() {
        let t = filled(5, 9);
        let r = |a, b| indices(t.get((a, b)));
        assert_eq!(r(Bound::Included(6), Bound::Excluded(8)), Some(vec![6, 7]));
        assert_eq!(
            r(Bound::Included(5), Bound::Unbounded),
            Some(vec![5, 6, 7, 8, 9])
        );
        assert_eq!(r(Bound::Excluded(8), Bound::Included(20)), Some(vec![9]));
        assert_eq!(r(Bound::Included(12), Bound::Unbounded), Some(vec![]));
        assert_eq!(r(Bound::Included(4), Bound::Excluded(7)), None);
        assert_eq!(r(Bound::Unbounded, Bound::Unbounded), None);
        assert_eq!(
            indices(Tail::default().get((Bound::Included(0), Bound::Unbounded))),
            None
        );
    }

    #[test]
    fn truncation_and_purge_keep_it_a_suffix_of_the_log() {
        let mut t = filled(5, 9);
        t.truncated(8);
        assert_eq!(t.last().map(|e| e.log_id.index), Some(7));
        t.appended(entry(8));
        t.purged(6);
        assert_eq!(
            indices(t.get((Bound::Included(7), Bound::Unbounded))),
            Some(vec![7, 8])
        );
        assert_eq!(
            t.get((Bound::Included(6), Bound::Unbounded))
                .map(|v| v.len()),
            None
        );
        t.truncated(3);
        assert!(t.last().is_none());
    }

    #[test]
    fn a_gap_starts_it_afresh_and_it_stays_bounded() {
        let mut t = filled(1, 3);
        t.appended(entry(10));
        assert_eq!(
            indices(t.get((Bound::Included(10), Bound::Unbounded))),
            Some(vec![10])
        );
        assert_eq!(
            t.get((Bound::Included(3), Bound::Unbounded))
                .map(|v| v.len()),
            None
        );
        let t = filled(1, KEEP as u64 + 10);
        assert_eq!(t.entries.len(), KEEP);
        assert_eq!(t.first(), Some(11));
    }
}

//! Mending a damaged log from peers, before Raft starts.
//!
//! The check at open sets the log aside from its first damaged entry on
//! (the shelf, [`SHELF`]), because a log must not have holes, and marks
//! the server recovering: what it set aside may have counted toward a
//! commit. Dropping it for good is safe but can cost the cluster its
//! progress: when two of three servers each lost a different entry, each
//! refuses to vote for a log shorter than the one it lost, and the third
//! server's log is shorter than both, so no one can be elected again,
//! although every entry is still whole on some disk.
//!
//! So before Raft starts, a server asks its peers for each damaged stretch
//! of the shelf, together with the whole entry that follows it
//! ([`RaftRequest::Entries`](super::RaftRequest::Entries)). A peer's copy is
//! taken only if its entry after the stretch has the same ID as the
//! server's own: two Raft logs that agree on an entry agree on every entry
//! before it, so the copy is exactly what was lost. Then the shelf goes
//! back into the log, up to the first entry still damaged, and the server
//! is no longer recovering if its log reaches as far as it did. This is
//! protocol-aware recovery (Alagappan et al., FAST 2018), for the entries
//! a peer can vouch for: a damaged entry with nothing whole after it (the
//! log's last) cannot be vouched for by its successor, and is dropped as
//! before, with the server recovering.
//!
//! Peers answer from their log, or from their own shelf while they are
//! mending too, so two servers can mend each other.

// openraft's `StorageError`, as the store's own operations return it.
#![allow(clippy::result_large_err)]

use std::net::SocketAddr;
use std::time::Duration;

use openraft::{Entry, EntryPayload, LogId, Membership};
use redb::{ReadableDatabase, ReadableTable};

use super::network::{RaftReply, RaftRequest, Transport};
use super::records::{open_json, read_err, seal_json, write_err, NodeId, StorageResult};
use super::records::{LOG, SHELF};
use super::storage::{caught_up, lock, LogStore, DURABLE};
use super::TypeConfig;
use crate::env::Env;

/// A stretch of damaged entries on the shelf, `from..=to`, and the ID of
/// the whole entry after it, which a peer's copy must end with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gap {
    /// The first damaged index.
    pub from: u64,
    /// The last damaged index of the stretch.
    pub to: u64,
    /// The whole entry after it.
    pub next: LogId<NodeId>,
}

/// What [`LogStore::unshelve`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Unshelved {
    /// Entries put back into the log.
    pub restored: u64,
    /// Entries dropped from the first one still damaged on.
    pub dropped: u64,
}

/// Most entries one request asks for: a stretch longer than this is asked
/// for in parts, each vouched for by the part after it.
const BATCH: u64 = 256;

impl LogStore {
    /// Whether the check at open set part of the log aside, to be mended
    /// ([`mend`]) before Raft starts.
    pub fn shelved(&self) -> bool {
        lock(&self.memory).shelved
    }

    /// The shelf's damaged stretches that a peer's copy can be checked
    /// against, oldest first (at most [`BATCH`] entries each).
    pub fn gaps(&self) -> StorageResult<Vec<Gap>> {
        let shelf = self.shelf()?;
        let mut gaps = Vec::new();
        let mut damaged: Option<u64> = None;
        let mut expected = shelf.first().map(|(i, _)| *i);
        for (i, e) in &shelf {
            // A missing index is as damaged as a broken one.
            if expected != Some(*i) {
                break;
            }
            expected = i.checked_add(1);
            match (e, damaged) {
                (None, None) => damaged = Some(*i),
                (None, Some(_)) => {}
                (Some(e), Some(from)) => {
                    // A long stretch is mended from its end: each part
                    // once mended vouches for the one before it.
                    let to = i - 1;
                    gaps.push(Gap {
                        from: from.max(i.saturating_sub(BATCH)),
                        to,
                        next: e.log_id,
                    });
                    damaged = None;
                }
                (Some(_), None) => {}
            }
        }
        Ok(gaps)
    }

    /// The whole entries this store holds from `from` to `to`, contiguous
    /// from `from`: a peer's request while it mends ([`RaftRequest::Entries`]).
    /// The log answers first, then the shelf (this store's own log from
    /// before it was set aside, when it is mending too).
    pub fn lend(&self, from: u64, to: u64) -> Vec<Entry<TypeConfig>> {
        let to = to.min(from.saturating_add(BATCH));
        let Ok(txn) = self.db.begin_read() else {
            return Vec::new();
        };
        let mut out: Vec<Entry<TypeConfig>> = Vec::new();
        for def in [LOG, SHELF] {
            let Ok(table) = txn.open_table(def) else {
                break;
            };
            let start = out.last().map_or(from, |e| e.log_id.index + 1);
            if start > to {
                break;
            }
            let Ok(range) = table.range(start..=to) else {
                break;
            };
            for item in range {
                let Ok((k, v)) = item else { break };
                let next = out.last().map_or(from, |e| e.log_id.index + 1);
                match open_json::<Entry<TypeConfig>>(v.value()) {
                    Ok(e) if k.value() == next && e.log_id.index == next => out.push(e),
                    _ => return out,
                }
            }
        }
        out
    }

    /// Puts a peer's copy of `gap` on the shelf, if it is one: contiguous
    /// from `gap.from`, through the entry after the gap, which must be the
    /// one this store holds. Returns whether it was taken.
    pub fn patch(&self, gap: &Gap, copy: &[Entry<TypeConfig>]) -> StorageResult<bool> {
        let whole = copy.len() as u64 == gap.to - gap.from + 2
            && copy
                .iter()
                .zip(gap.from..)
                .all(|(e, i)| e.log_id.index == i)
            && copy.last().map(|e| e.log_id) == Some(gap.next);
        if !whole {
            return Ok(false);
        }
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(DURABLE).map_err(write_err)?;
        {
            let mut shelf = txn.open_table(SHELF).map_err(write_err)?;
            for e in &copy[..copy.len() - 1] {
                let bytes = seal_json(e).map_err(write_err)?;
                shelf
                    .insert(e.log_id.index, bytes.as_slice())
                    .map_err(write_err)?;
            }
        }
        txn.commit().map_err(write_err)?;
        Ok(true)
    }

    /// Puts the shelf back into the log up to its first entry still
    /// damaged, drops the rest, and ends the recovery if the log now
    /// reaches as far as what was lost (see
    /// [`Recovering::caught_up_by`](super::Recovering::caught_up_by)).
    pub fn unshelve(&self) -> StorageResult<Unshelved> {
        let shelf = self.shelf()?;
        let mut done = Unshelved::default();
        let mut last = None;
        {
            let mut memory = lock(&self.memory);
            let mut txn = self.db.begin_write().map_err(write_err)?;
            txn.set_durability(DURABLE).map_err(write_err)?;
            {
                let mut log = txn.open_table(LOG).map_err(write_err)?;
                let mut expected = log.last().map_err(write_err)?.map(|(k, _)| k.value() + 1);
                let mut whole = true;
                for (i, e) in &shelf {
                    whole &= expected.is_none_or(|x| x == *i);
                    match e.as_ref().filter(|_| whole) {
                        Some(e) => {
                            let bytes = seal_json(e).map_err(write_err)?;
                            log.insert(*i, bytes.as_slice()).map_err(write_err)?;
                            last = Some(e.log_id);
                            done.restored += 1;
                        }
                        None => {
                            whole = false;
                            done.dropped += 1;
                        }
                    }
                    expected = i.checked_add(1);
                }
            }
            memory.empty_shelf(&txn)?;
            let committed = txn.commit().map_err(write_err);
            memory.shelf_emptied(&committed);
            committed?;
        }
        caught_up(&self.db, &self.recovery, last)?;
        Ok(done)
    }

    /// The last membership in the log (shelf included), if any: whom to
    /// ask for entries before Raft has read it.
    pub fn membership_held(
        &self,
    ) -> StorageResult<Option<Membership<NodeId, openraft::BasicNode>>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        for def in [SHELF, LOG] {
            let table = txn.open_table(def).map_err(read_err)?;
            for item in table.iter().map_err(read_err)?.rev() {
                let (_, v) = item.map_err(read_err)?;
                if let Ok(Entry {
                    payload: EntryPayload::Membership(m),
                    ..
                }) = open_json::<Entry<TypeConfig>>(v.value())
                {
                    return Ok(Some(m));
                }
            }
        }
        Ok(None)
    }

    /// The shelf: each index, and its entry unless damaged.
    fn shelf(&self) -> StorageResult<Vec<(u64, Option<Entry<TypeConfig>>)>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(SHELF).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.iter().map_err(read_err)? {
            let (k, v) = item.map_err(read_err)?;
            out.push((k.value(), open_json(v.value()).ok()));
        }
        Ok(out)
    }
}

/// Mends `log`'s shelf from `peers` (see the module's comment), asking
/// each in turn for every gap, and again every half second while gaps
/// are left, for up to `patience`; then puts the shelf back into the log.
pub async fn mend<E: Env, T: Transport>(
    env: &E,
    log: &LogStore,
    peers: &[SocketAddr],
    transport: &T,
    patience: Duration,
) -> StorageResult<()> {
    let give_up = env.now() + patience;
    let mut mended = 0;
    loop {
        let gaps = log.gaps()?;
        if gaps.is_empty() {
            break;
        }
        let before = mended;
        for gap in gaps {
            for peer in peers {
                let ask = RaftRequest::Entries {
                    from: gap.from,
                    to: gap.to + 1,
                };
                let deadline = (env.now() + Duration::from_secs(1)).min(give_up);
                let Ok(RaftReply::Entries(copy)) = transport.send(*peer, ask, deadline).await
                else {
                    continue;
                };
                if log.patch(&gap, &copy)? {
                    mended += gap.to - gap.from + 1;
                    tracing::info!(from = gap.from, to = gap.to, %peer, "damaged Raft log entries mended from a peer");
                    break;
                }
            }
        }
        if env.now() >= give_up {
            break;
        }
        if mended == before {
            env.sleep(Duration::from_millis(500)).await;
        }
    }
    let done = log.unshelve()?;
    tracing::warn!(
        mended,
        restored = done.restored,
        dropped = done.dropped,
        "the Raft log set aside at open is back, up to its first entry no peer could vouch for"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::{open_on, MemoryDisk};
    use crate::env::TokioEnv;
    use crate::time::Instant;
    use openraft::storage::{RaftLogReader, RaftLogStorage};
    use openraft::{CommittedLeaderId, Vote};

    fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Blank,
        }
    }

    /// A disk whose log holds `terms[i]`'s entry at index `i + 1`, with
    /// the vote of the last term, and the entries at `damaged` flipped.
    fn disk(terms: &[u64], damaged: &[u64]) -> MemoryDisk {
        let disk = MemoryDisk::new("s");
        // Opened once first, so the file is of the current format.
        let (log, _) = open_on(&disk).unwrap();
        let txn = log.db.begin_write().unwrap();
        {
            let mut table = txn.open_table(LOG).unwrap();
            for (i, t) in terms.iter().enumerate() {
                let index = i as u64 + 1;
                let mut bytes = seal_json(&entry(*t, index)).unwrap();
                if damaged.contains(&index) {
                    bytes[9] ^= 1;
                }
                table.insert(index, bytes.as_slice()).unwrap();
            }
            let vote = seal_json(&Vote::new_committed(*terms.last().unwrap(), 1)).unwrap();
            let mut meta = txn.open_table(super::super::records::META).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            meta.insert("vote.2", vote.as_slice()).unwrap();
        }
        txn.commit().unwrap();
        disk
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    async fn last(log: &mut LogStore) -> Option<u64> {
        log.get_log_state()
            .await
            .unwrap()
            .last_log_id
            .map(|l| l.index)
    }

    /// Peers that answer from their stores, by port.
    struct Lenders(Vec<LogStore>);

    impl Transport for Lenders {
        async fn send(
            &self,
            addr: SocketAddr,
            req: RaftRequest,
            _: Instant,
        ) -> Result<RaftReply, crate::rpc::RpcError> {
            let RaftRequest::Entries { from, to } = req else {
                unreachable!("mending asks only for entries")
            };
            let peer = self
                .0
                .get(usize::from(addr.port()))
                .ok_or_else(|| crate::rpc::RpcError::Codec("no such peer".into()))?;
            Ok(RaftReply::Entries(peer.lend(from, to)))
        }
    }

    fn port(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    /// Mends `log` from `peer`, with time to spare.
    async fn mend_from(log: &LogStore, peer: LogStore) {
        let env = TokioEnv::new();
        let peers = Lenders(vec![peer]);
        mend(&env, log, &[port(0)], &peers, Duration::from_secs(5))
            .await
            .unwrap();
    }

    #[test]
    fn two_servers_that_lost_different_entries_mend_each_other() {
        rt().block_on(async {
            let terms = [1, 1, 2, 2, 2, 3, 3];
            let (a, _) = open_on(&disk(&terms, &[3])).unwrap();
            let (b, _) = open_on(&disk(&terms, &[5, 6])).unwrap();
            for s in [&a, &b] {
                assert!(s.recovery().borrow().is_some(), "damage marks recovery");
            }
            assert_eq!(
                a.gaps().unwrap(),
                vec![Gap {
                    from: 3,
                    to: 3,
                    next: entry(2, 4).log_id
                }]
            );
            // Both are mending: each lends from its shelf.
            // b lends from its log, then its shelf, up to its damage.
            let lent = |from, to| {
                b.lend(from, to)
                    .iter()
                    .map(|e| e.log_id.index)
                    .collect::<Vec<_>>()
            };
            assert_eq!(lent(3, 7), vec![3, 4]);
            assert_eq!(lent(7, 7), vec![7]);
            assert!(lent(4, 3).is_empty() && lent(5, 7).is_empty());
            mend_from(&a, b.clone()).await;
            mend_from(&b, a.clone()).await;
            for mut s in [a, b] {
                assert_eq!(last(&mut s).await, Some(7), "the whole log is back");
                let got = s.try_get_log_entries(1..=7).await.unwrap();
                let want: Vec<_> = terms
                    .iter()
                    .zip(1..)
                    .map(|(t, i)| entry(*t, i).log_id)
                    .collect();
                assert_eq!(got.iter().map(|e| e.log_id).collect::<Vec<_>>(), want);
                assert!(s.recovery().borrow().is_none(), "nothing was lost");
            }
        });
    }

    #[test]
    fn a_copy_from_a_log_that_went_another_way_is_refused() {
        rt().block_on(async {
            let (mut a, _) = open_on(&disk(&[1, 1, 2, 2], &[2])).unwrap();
            // The peer's entry 3 is of another term: its 2 may differ too.
            let (other, _) = open_on(&disk(&[1, 1, 3, 3], &[])).unwrap();
            let peers = Lenders(vec![other]);
            let env = TokioEnv::new();
            let start = env.now();
            mend(&env, &a, &[port(0)], &peers, Duration::from_millis(1200))
                .await
                .unwrap();
            assert!(
                env.now() >= start + Duration::from_millis(1200),
                "kept asking"
            );
            assert_eq!(last(&mut a).await, Some(1), "dropped from the damage on");
            let r = a.recovery().borrow().clone().expect("still recovering");
            assert_eq!(r.last, entry(2, 4).log_id);
        });
    }

    #[test]
    fn a_damaged_last_entry_is_dropped_and_the_rest_restored() {
        rt().block_on(async {
            // 2 is mended; 5 has nothing after it to vouch for a copy.
            let (mut a, _) = open_on(&disk(&[1, 1, 1, 1, 1], &[2, 5])).unwrap();
            let (b, _) = open_on(&disk(&[1, 1, 1, 1, 1], &[])).unwrap();
            assert_eq!(a.gaps().unwrap().len(), 1);
            mend_from(&a, b).await;
            assert_eq!(last(&mut a).await, Some(4));
            assert!(a.recovery().borrow().is_some(), "the last entry is lost");
            assert!(a.gaps().unwrap().is_empty() && a.shelf().unwrap().is_empty());
        });
    }

    #[test]
    fn any_change_to_the_log_empties_the_shelf() {
        rt().block_on(async {
            let disk = disk(&[1, 1, 1], &[2]);
            let (mut a, _) = open_on(&disk).unwrap();
            assert_eq!(a.shelf().unwrap().len(), 2);
            // Raft started without mending, and truncated the log.
            a.truncate(entry(1, 1).log_id).await.unwrap();
            assert!(a.shelf().unwrap().is_empty());
            assert!(a.lend(2, 3).is_empty(), "nothing stale is lent");

            drop(a);
            let (a, _) = open_on(&disk).unwrap();
            assert!(!a.shelved());
        });
    }

    #[test]
    fn a_long_stretch_is_mended_from_its_end_in_parts() {
        rt().block_on(async {
            let n = 2 * BATCH + 10;
            let terms = vec![1; n as usize];
            let damaged: Vec<u64> = (2..n).collect();
            let (mut a, _) = open_on(&disk(&terms, &damaged)).unwrap();
            let (b, _) = open_on(&disk(&terms, &[])).unwrap();
            let gap = &a.gaps().unwrap()[0];
            assert_eq!((gap.from, gap.to), (n - BATCH, n - 1));
            mend_from(&a, b).await;
            assert_eq!(last(&mut a).await, Some(n));
            assert!(a.recovery().borrow().is_none());
        });
    }
}

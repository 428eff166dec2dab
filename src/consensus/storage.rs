//! Durable Raft storage in one redb file (`raft.redb` in the data
//! directory): the log, the vote, the commit point and the latest
//! snapshot. Every write is a redb transaction committed with fsync before
//! openraft hears it is done.
//!
//! This module opens the file and keeps the log ([`LogStore`]); the state
//! machine and its snapshots are in [`StateMachine`].

// openraft's traits return its `StorageError` (224 bytes); our helpers
// return it too rather than box and unbox it at every boundary.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{Entry, LogId, LogState, OptionalSend, RaftLogReader, Vote};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::disk::MemoryDisk;
use super::records::{
    self, open_json, read_err, seal_json, write_err, NodeId, Recovering, StorageResult, LOG, META,
    SHELF, SNAPSHOT,
};
use super::state_machine::StateMachine;
use super::tail::Tail;
use super::TypeConfig;

/// Why the data directory cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum StorageOpenError {
    /// The directory cannot be created, or the disk failed a read or a
    /// write (full, failing).
    #[error("cannot open {path}: {source} (nothing was changed: free space or mend the disk, then start again)")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a readable Raft store (corrupt, truncated, or not
    /// cairn's). Nothing was changed; move it aside to start afresh.
    #[error("{path} is damaged or not a cairn Raft store ({reason}); nothing was changed: restore it from a backup, or move it aside to join the cluster afresh")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Records the server cannot run safely without were damaged beyond
    /// repair; `reason` says what was lost and what to do.
    #[error("{path}: damaged beyond safe repair: {reason}")]
    Unrecoverable {
        /// The file.
        path: PathBuf,
        /// What was lost, and what to do.
        reason: String,
    },
}

/// Opens (or creates) the Raft storage in `dir`.
pub fn open(dir: &Path) -> Result<(LogStore, StateMachine), StorageOpenError> {
    std::fs::create_dir_all(dir).map_err(|source| StorageOpenError::Io {
        path: dir.to_owned(),
        source,
    })?;
    let path = dir.join("raft.redb");
    let db = Database::create(&path).map_err(|e| open_error(&path, e))?;
    open_db(db, &path)
}

/// What a redb error at open means for the user: the disk failed (full,
/// unreadable), or the file is not a store cairn can read.
fn open_error(path: &Path, e: impl Into<redb::Error>) -> StorageOpenError {
    match e.into() {
        // Bytes that are not what they should be, or not there, are the
        // file's fault: it is damaged or truncated.
        redb::Error::Io(source)
            if !matches!(
                source.kind(),
                std::io::ErrorKind::InvalidData | std::io::ErrorKind::UnexpectedEof
            ) =>
        {
            StorageOpenError::Io {
                path: path.to_owned(),
                source,
            }
        }
        other => StorageOpenError::Corrupt {
            path: path.to_owned(),
            reason: other.to_string(),
        },
    }
}

/// Raft storage that lives only in memory (`agent -dev`): the same code
/// paths as on disk, gone when the process ends.
pub fn open_in_memory() -> Result<(LogStore, StateMachine), StorageOpenError> {
    open_backend(
        redb::backends::InMemoryBackend::new(),
        PathBuf::from("(memory)"),
    )
}

/// Raft storage on a [`MemoryDisk`]: what a simulated server keeps across
/// its crashes and restarts.
pub fn open_on(disk: &MemoryDisk) -> Result<(LogStore, StateMachine), StorageOpenError> {
    let path = PathBuf::from(format!("(simulated disk {})", disk.name));
    let backend = disk.mount().ok_or_else(|| StorageOpenError::Corrupt {
        path: path.clone(),
        reason: "the disk is in use by another running server".into(),
    })?;
    open_backend(backend, path)
}

fn open_backend(
    backend: impl redb::StorageBackend,
    path: PathBuf,
) -> Result<(LogStore, StateMachine), StorageOpenError> {
    let db = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| open_error(&path, e))?;
    open_db(db, &path)
}

/// Where a server keeps its Raft state.
#[derive(Debug, Clone)]
pub enum Location {
    /// `raft.redb` in this directory.
    Dir(PathBuf),
    /// Process memory: gone when the server stops (dev mode).
    Memory,
    /// A simulated disk that outlives the server's process.
    Disk(MemoryDisk),
}

impl Location {
    /// Opens (or creates) the storage here.
    pub fn open(&self) -> Result<(LogStore, StateMachine), StorageOpenError> {
        match self {
            Location::Dir(dir) => open(dir),
            Location::Memory => open_in_memory(),
            Location::Disk(disk) => open_on(disk),
        }
    }
}

fn open_db(db: Database, path: &Path) -> Result<(LogStore, StateMachine), StorageOpenError> {
    let corrupt = |reason: String| StorageOpenError::Corrupt {
        path: path.to_owned(),
        reason,
    };
    // Every table exists from the start, so readers never meet a missing
    // one; and every record is checked now, so damage shows at start (and
    // is mended, or stops the server) rather than mid-run.
    let mut txn = db.begin_write().map_err(|e| open_error(path, e))?;
    txn.set_durability(DURABLE)
        .map_err(|e| open_error(path, e))?;
    for def in [META, SNAPSHOT] {
        txn.open_table(def).map_err(|e| open_error(path, e))?;
    }
    for def in [LOG, SHELF] {
        txn.open_table(def).map_err(|e| open_error(path, e))?;
    }
    let recovering = records::check_and_repair(&txn)
        .map_err(|e| corrupt(e.to_string()))?
        .map_err(|e| StorageOpenError::Unrecoverable {
            path: path.to_owned(),
            reason: e.0,
        })?;
    let shelved = !txn
        .open_table(SHELF)
        .map_err(|e| open_error(path, e))?
        .is_empty()
        .map_err(|e| open_error(path, e))?;
    txn.commit().map_err(|e| open_error(path, e))?;
    if let Some(r) = &recovering {
        tracing::warn!(lost = %r.lost, term = r.term, "Raft storage lost acknowledged state to damage: this server will not vote or stand for leader until it holds an entry from a leader of a later term");
    }
    let db = Arc::new(db);
    let log = LogStore {
        db: db.clone(),
        path: path.into(),
        flusher: Arc::default(),
        memory: Arc::new(std::sync::Mutex::new(Memory {
            shelved,
            ..Memory::default()
        })),
        recovery: Arc::new(tokio::sync::watch::Sender::new(recovering)),
        #[cfg(cairn_planted = "vote_not_persisted")]
        vote_in_memory: Arc::default(),
    };
    // The log was read whole by the check; these are read as their types.
    let mut probe = log.clone();
    let check = |r: StorageResult<()>| r.map_err(|e| corrupt(e.to_string()));
    check(probe.doubled::<Vote<NodeId>>("vote").map(drop))?;
    check(probe.meta::<Option<LogId<NodeId>>>("committed").map(drop))?;
    check(probe.doubled::<LogId<NodeId>>("last_purged").map(drop))?;
    let sm = StateMachine::open(db).map_err(|e| corrupt(e.to_string()))?;
    Ok((log, sm))
}

/// The Raft log, vote and commit point.
#[derive(Debug, Clone)]
pub struct LogStore {
    pub(super) db: Arc<Database>,
    /// Where it is, for errors.
    path: Arc<Path>,
    /// Appends waiting for the next fsync; started with the first append.
    flusher: Arc<std::sync::OnceLock<Flusher>>,
    /// The log's last entries and the commit hint not yet written.
    pub(super) memory: Arc<std::sync::Mutex<Memory>>,
    /// Whether the server is recovering from damage, and from what.
    pub(super) recovery: Arc<tokio::sync::watch::Sender<Option<Recovering>>>,
    /// The planted bug's vote, which never reaches the disk.
    #[cfg(cairn_planted = "vote_not_persisted")]
    vote_in_memory: Arc<std::sync::Mutex<Option<Vote<NodeId>>>>,
}

/// Group commit for the log. openraft writes every client request as its
/// own append, one at a time; an fsync each would cap a leader at one
/// fsync's worth of writes. So an append commits its entries without
/// syncing and hands openraft's "flushed" callback to this task, which
/// makes one durable commit for every append queued meanwhile (redb makes
/// all earlier commits durable with it) and only then reports them
/// flushed: a leader counts its own copy, and a follower acknowledges,
/// only once the entries are on disk.
type Flusher = tokio::sync::mpsc::UnboundedSender<Flush>;

/// What the store holds in memory, shared by its clones (openraft reads
/// the log through several). A writer of the log holds the lock from
/// before its redb transaction until the tail matches it, so a reader
/// never sees the tail ahead of the log; lock it before, never inside, a
/// redb write transaction.
#[derive(Debug, Default)]
pub(super) struct Memory {
    tail: Tail,
    /// A commit hint newer than the one on disk: the next group commit
    /// writes it (see [`RaftLogStorage::save_committed`]).
    committed: Option<Option<LogId<NodeId>>>,
    /// Whether the shelf ([`SHELF`]) holds entries. They are this log's
    /// continuation only until the log changes, so the first change
    /// empties it, in the same transaction.
    pub(super) shelved: bool,
}

impl Memory {
    /// Empties the shelf in `txn`, a transaction that changes the log, if
    /// it holds anything; [`Memory::shelf_emptied`] once `txn` commits.
    pub(super) fn empty_shelf(&self, txn: &redb::WriteTransaction) -> StorageResult<()> {
        if self.shelved {
            txn.open_table(SHELF)
                .map_err(write_err)?
                .retain(|_, _| false)
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// After [`Memory::empty_shelf`]'s transaction committed (or failed:
    /// then the shelf stays).
    pub(super) fn shelf_emptied(&mut self, committed: &StorageResult<()>) {
        self.shelved &= committed.is_err();
    }
}

/// An append waiting for its fsync: openraft's callback, and its last
/// entry's ID.
type Flush = (LogFlushed<TypeConfig>, Option<LogId<NodeId>>);

async fn flush_appends(
    db: Arc<Database>,
    memory: Arc<std::sync::Mutex<Memory>>,
    recovery: Arc<tokio::sync::watch::Sender<Option<Recovering>>>,
    mut queue: tokio::sync::mpsc::UnboundedReceiver<Flush>,
) {
    while let Some(first) = queue.recv().await {
        let mut waiting = vec![first];
        if crate::buggify::fires(crate::buggify::Point::LateFsync) {
            // A busy disk: what is queued meanwhile joins this commit.
            let late = 1 + crate::buggify::below(200);
            super::runtime::sleep(std::time::Duration::from_millis(late)).await;
        }
        while let Ok(more) = queue.try_recv() {
            waiting.push(more);
        }
        let last = waiting.iter().filter_map(|w| w.1).max();
        let result = durable_commit(&db, &memory).and_then(|()| caught_up(&db, &recovery, last));
        for (w, _) in waiting {
            w.log_io_completed(
                result
                    .as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
        }
    }
}

/// Ends a recovery once the log durably holds `last`, if that catches it
/// up (see [`Recovering::caught_up_by`]).
pub(super) fn caught_up(
    db: &Database,
    recovery: &tokio::sync::watch::Sender<Option<Recovering>>,
    last: Option<LogId<NodeId>>,
) -> StorageResult<()> {
    let Some(r) = recovery
        .borrow()
        .clone()
        .filter(|r| last.is_some_and(|l| r.caught_up_by(l)))
    else {
        return Ok(());
    };
    let mut txn = db.begin_write().map_err(write_err)?;
    txn.set_durability(DURABLE).map_err(write_err)?;
    records::clear_marker(&txn).map_err(|e| write_err(std::io::Error::other(e)))?;
    txn.commit().map_err(write_err)?;
    tracing::info!(lost = %r.lost, ?last, "Raft storage recovered: caught up from a leader");
    recovery.send_replace(None);
    Ok(())
}

/// A commit that makes every earlier one durable, and writes the commit
/// hint waiting in `memory`, if there is one.
fn durable_commit(db: &Database, memory: &std::sync::Mutex<Memory>) -> StorageResult<()> {
    // Taken before the transaction: the lock is never taken inside one.
    let committed = lock(memory).committed.take();
    let mut txn = db.begin_write().map_err(write_err)?;
    txn.set_durability(DURABLE).map_err(write_err)?;
    if let Some(committed) = committed {
        put_meta(&txn, "committed", &committed)?;
    }
    txn.commit().map_err(write_err)
}

/// Writes META's `key` in `txn`, both copies of a doubled record.
fn put_meta<T: serde::Serialize>(
    txn: &redb::WriteTransaction,
    key: &str,
    value: &T,
) -> StorageResult<()> {
    let bytes = seal_json(value).map_err(write_err)?;
    let mut table = txn.open_table(META).map_err(write_err)?;
    table.insert(key, bytes.as_slice()).map_err(write_err)?;
    if records::DOUBLED.contains(&key) {
        let copy = format!("{key}.2");
        table
            .insert(copy.as_str(), bytes.as_slice())
            .map_err(write_err)?;
    }
    Ok(())
}

pub(super) fn lock(memory: &std::sync::Mutex<Memory>) -> std::sync::MutexGuard<'_, Memory> {
    memory.lock().unwrap_or_else(|e| e.into_inner())
}

/// What a durable commit asks of redb: an fsync, unless a planted bug
/// (benches/planted_bugs.sh) skips it.
pub(super) const DURABLE: redb::Durability = if cfg!(cairn_planted = "fsync_skipped") {
    redb::Durability::None
} else {
    redb::Durability::Immediate
};

impl LogStore {
    /// `e`, a failure of this store before Raft started, as a failure to
    /// open it: the disk failed (full, failing), and nothing it held was
    /// lost.
    pub fn failed_to_open(&self, e: openraft::StorageError<NodeId>) -> StorageOpenError {
        StorageOpenError::Io {
            path: self.path.to_path_buf(),
            source: std::io::Error::other(e.to_string()),
        }
    }

    /// Whether this server is recovering from damage to its storage (see
    /// [`records`]), and from what; it changes to `None` once the server
    /// has caught up.
    pub fn recovery(&self) -> tokio::sync::watch::Receiver<Option<Recovering>> {
        self.recovery.subscribe()
    }

    /// Where the planted bug keeps the vote instead of the disk.
    #[cfg(cairn_planted = "vote_not_persisted")]
    fn planted_vote(&self) -> Option<&std::sync::Mutex<Option<Vote<NodeId>>>> {
        Some(&self.vote_in_memory)
    }

    #[cfg(not(cairn_planted = "vote_not_persisted"))]
    fn planted_vote(&self) -> Option<&std::sync::Mutex<Option<Vote<NodeId>>>> {
        None
    }

    fn meta<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> StorageResult<Option<T>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(META).map_err(read_err)?;
        let Some(v) = table.get(key).map_err(read_err)? else {
            return Ok(None);
        };
        open_json(v.value()).map(Some).map_err(read_err)
    }

    /// A record kept twice: either copy that is whole.
    fn doubled<T: serde::de::DeserializeOwned>(&mut self, key: &str) -> StorageResult<Option<T>> {
        match self.meta(key) {
            Ok(Some(v)) => Ok(Some(v)),
            first => match self.meta(&format!("{key}.2")) {
                Ok(Some(v)) => Ok(Some(v)),
                second => first.and(second),
            },
        }
    }

    fn set_meta<T: serde::Serialize>(&mut self, key: &str, value: &T) -> StorageResult<()> {
        let mut txn = self.db.begin_write().map_err(write_err)?;
        txn.set_durability(DURABLE).map_err(write_err)?;
        put_meta(&txn, key, value)?;
        txn.commit().map_err(write_err)
    }

    fn entries(
        &mut self,
        range: (Bound<u64>, Bound<u64>),
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        if let Some(hit) = lock(&self.memory).tail.get(range) {
            return Ok(hit);
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let mut out = Vec::new();
        for item in table.range(range).map_err(read_err)? {
            let (_, v) = item.map_err(read_err)?;
            out.push(open_json(v.value()).map_err(read_err)?);
        }
        Ok(out)
    }

    fn last_entry(&mut self) -> StorageResult<Option<Entry<TypeConfig>>> {
        if let Some(last) = lock(&self.memory).tail.last() {
            return Ok(Some(last.clone()));
        }
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(LOG).map_err(read_err)?;
        let last = table.last().map_err(read_err)?;
        last.map(|(_, v)| open_json(v.value()).map_err(read_err))
            .transpose()
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let bounds = (range.start_bound().cloned(), range.end_bound().cloned());
        self.entries(bounds)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged: Option<LogId<NodeId>> = self.doubled("last_purged")?;
        let last = self.last_entry()?.map(|e| e.log_id);
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        // Planted: the vote stays in memory, so a restart forgets it. (An
        // unsynced write would not do: the next append's fsync makes every
        // earlier commit to the same file durable, vote included.)
        if let Some(memory) = self.planted_vote() {
            *memory.lock().unwrap_or_else(|e| e.into_inner()) = Some(*vote);
            return Ok(());
        }
        self.set_meta("vote", vote)
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        if let Some(memory) = self.planted_vote() {
            return Ok(*memory.lock().unwrap_or_else(|e| e.into_inner()));
        }
        self.doubled("vote")
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        // A hint that lets a restart apply the log at once; losing the last
        // one in a crash costs nothing (the leader says what is committed),
        // so it waits in memory for the next group commit instead of
        // making a commit of its own. That commit comes after the entries
        // it covers were written, so the disk never holds a hint ahead of
        // its log.
        lock(&self.memory).committed = Some(committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        if let Some(newer) = lock(&self.memory).committed {
            return Ok(newer);
        }
        Ok(self.meta::<Option<LogId<NodeId>>>("committed")?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<_> = entries.into_iter().collect();
        let last = entries.last().map(|e| e.log_id);
        let result = {
            let mut memory = lock(&self.memory);
            let written = (|| {
                let mut txn = self.db.begin_write().map_err(write_err)?;
                txn.set_durability(redb::Durability::None)
                    .map_err(write_err)?;
                memory.empty_shelf(&txn)?;
                {
                    let mut table = txn.open_table(LOG).map_err(write_err)?;
                    for e in &entries {
                        let bytes = seal_json(e).map_err(write_err)?;
                        table
                            .insert(e.log_id.index, bytes.as_slice())
                            .map_err(write_err)?;
                    }
                }
                txn.commit().map_err(write_err)
            })();
            memory.shelf_emptied(&written);
            memory.tail.changed(&written, |t| {
                entries.into_iter().for_each(|e| t.appended(e))
            });
            written
        };
        if let Err(e) = &result {
            callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
            return result;
        }
        let flusher = self.flusher.get_or_init(|| {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
            let (db, memory, recovery) =
                (self.db.clone(), self.memory.clone(), self.recovery.clone());
            crate::env::spawn_inheriting(flush_appends(db, memory, recovery, rx));
            tx
        });
        if let Err(unsent) = flusher.send((callback, last)) {
            // The flusher is gone (its runtime is shutting down): sync here.
            let r = durable_commit(&self.db, &self.memory);
            unsent.0 .0.log_io_completed(
                r.as_ref()
                    .map(|_| ())
                    .map_err(|e| std::io::Error::other(e.to_string())),
            );
            return r;
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        let mut memory = lock(&self.memory);
        let deleted = (|| {
            let txn = self.db.begin_write().map_err(write_err)?;
            memory.empty_shelf(&txn)?;
            txn.open_table(LOG)
                .map_err(write_err)?
                .retain_in(log_id.index.., |_, _| false)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)
        })();
        memory.shelf_emptied(&deleted);
        memory.tail.changed(&deleted, |t| t.truncated(log_id.index));
        deleted
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        // The purge point (both copies) and the deletion in one transaction.
        let point = seal_json(&log_id).map_err(write_err)?;
        let mut memory = lock(&self.memory);
        // The tail stays a suffix of the log even if the deletion fails.
        memory.tail.purged(log_id.index);
        let purged = (|| {
            let txn = self.db.begin_write().map_err(write_err)?;
            memory.empty_shelf(&txn)?;
            {
                let mut meta = txn.open_table(META).map_err(write_err)?;
                for key in ["last_purged", "last_purged.2"] {
                    meta.insert(key, point.as_slice()).map_err(write_err)?;
                }
            }
            txn.open_table(LOG)
                .map_err(write_err)?
                .retain_in(..=log_id.index, |_, _| false)
                .map_err(write_err)?;
            txn.commit().map_err(write_err)
        })();
        memory.shelf_emptied(&purged);
        purged
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Command;
    use openraft::storage::RaftStateMachine;
    use openraft::testing::{StoreBuilder, Suite};
    use openraft::{EntryPayload, RaftSnapshotBuilder};

    struct TempStore;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for TempStore {
        async fn build(&self) -> StorageResult<(tempfile::TempDir, LogStore, StateMachine)> {
            let dir = tempfile::tempdir().map_err(write_err)?;
            let (log, sm) = open(dir.path()).map_err(write_err)?;
            Ok((dir, log, sm))
        }
    }

    /// openraft's own conformance suite for storage implementations.
    #[test]
    fn passes_openraft_storage_suite() -> StorageResult<()> {
        Suite::test_all(TempStore)
    }

    #[test]
    fn a_memory_disk_outlives_its_server_and_serves_one_at_a_time() {
        let disk = MemoryDisk::new("s1");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, sm) = open_on(&disk).unwrap();
            log.save_vote(&Vote::new(7, 3)).await.unwrap();
            let second = open_on(&disk).map(drop).unwrap_err();
            assert!(second.to_string().contains("in use"), "{second}");
            // A crash: the process and everything it held are gone.
            drop((log, sm));
            assert!(!disk.is_empty());
            let (mut log, _sm) = open_on(&disk).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(7, 3)));
        });
    }

    #[test]
    fn a_crash_takes_what_was_not_synced_and_never_what_was() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let point = |i| Some(LogId::new(openraft::CommittedLeaderId::new(7, 3), i));
        let mut torn = 0;
        // However the last write tears, the store opens with every synced
        // write in it.
        for draw in [0u64, 1, 7, 100, 1000, 4095, 4096, 65_537, u64::MAX] {
            let disk = MemoryDisk::new("s1");
            rt.block_on(async {
                let (mut log, sm) = open_on(&disk).unwrap();
                log.save_vote(&Vote::new(7, 3)).await.unwrap();
                // A commit point needs an entry there (one past the log is
                // dropped as damage's leftover).
                let txn = log.db.begin_write().unwrap();
                txn.open_table(LOG)
                    .unwrap()
                    .insert(1, seal_json(&kv_entry(7, 1)).unwrap().as_slice())
                    .unwrap();
                txn.commit().unwrap();
                log.save_committed(point(1)).await.unwrap();
                // What the group commit does: the hint rides on it.
                durable_commit(&log.db, &log.memory).unwrap();
                // Not durable: a crash takes it.
                log.save_committed(point(2)).await.unwrap();
                // A power cut in the middle of the next commit: it fails,
                // so nothing is acknowledged that was not kept.
                disk.crash_at_next_sync(draw, |_| {});
                let refused = log.save_vote(&Vote::new(8, 3)).await;
                assert!(refused.is_err(), "draw {draw}: a crashed commit succeeded");
                let loss = disk.last_crash().expect("a crash");
                assert!(loss.unsynced > 0, "draw {draw}: {loss:?}");
                torn += usize::from(loss.torn.is_some());
                // The crashed server's handle reaches nothing any more.
                assert!(log.save_vote(&Vote::new(9, 3)).await.is_err());
                drop((log, sm));
                let (mut log, _sm) = open_on(&disk).unwrap_or_else(|e| panic!("draw {draw}: {e}"));
                let vote = log.read_vote().await.unwrap();
                assert!(
                    vote == Some(Vote::new(7, 3)) || vote == Some(Vote::new(8, 3)),
                    "draw {draw}: {vote:?}"
                );
                assert_eq!(log.read_committed().await.unwrap(), point(1), "draw {draw}");
            });
        }
        assert!(torn >= 5, "only {torn} of the crashes tore a write");
    }

    #[test]
    fn a_failed_fsync_or_a_full_disk_refuses_the_write_and_keeps_what_was_acknowledged() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let disk = MemoryDisk::new("s1");
        rt.block_on(async {
            let (mut log, sm) = open_on(&disk).unwrap();
            log.save_vote(&Vote::new(7, 3)).await.unwrap();
            disk.fail_next_sync();
            let e = log.save_vote(&Vote::new(8, 3)).await.unwrap_err();
            assert!(e.to_string().contains("input/output error"), "{e}");
            // The store gives up after an I/O error rather than carry on
            // from pages that may not be on disk.
            assert!(log.save_vote(&Vote::new(9, 3)).await.is_err());
            drop((log, sm));
            let (mut log, sm) = open_on(&disk).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(7, 3)));

            disk.set_full(true);
            let e = log.save_vote(&Vote::new(8, 3)).await.unwrap_err();
            assert!(e.to_string().contains("no space"), "{e}");
            drop((log, sm));
            let e = open_on(&disk).map(drop).unwrap_err();
            assert!(e.to_string().contains("no space"), "{e}");
            disk.set_full(false);
            let (mut log, _sm) = open_on(&disk).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(7, 3)));
        });
    }

    #[test]
    fn a_reopened_store_has_its_vote_log_and_snapshot() {
        use crate::consensus::Request;
        use crate::state::{Command, KvOp};
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let entry = |index: u64, key: &str| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(2, 1), index),
            payload: EntryPayload::Normal(Request {
                at_ms: 0,
                cmd: Command::Kv {
                    op: KvOp::Set,
                    key: key.into(),
                    value: b"v".to_vec(),
                    flags: 0,
                },
            }),
        };
        rt.block_on(async {
            let (mut log, mut sm) = open(dir.path()).unwrap();
            log.save_vote(&Vote::new(2, 1)).await.unwrap();
            for i in 1..=3 {
                let txn = log.db.begin_write().unwrap();
                {
                    let mut t = txn.open_table(LOG).unwrap();
                    let bytes = seal_json(&entry(i, &format!("k{i}"))).unwrap();
                    t.insert(i, bytes.as_slice()).unwrap();
                }
                txn.commit().unwrap();
            }
            sm.apply([entry(1, "k1"), entry(2, "k2")]).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
        });
        rt.block_on(async {
            let (mut log, mut sm) = open(dir.path()).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(2, 1)));
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id.map(|l| l.index), Some(3));
            let (applied, _) = sm.applied_state().await.unwrap();
            assert_eq!(applied.map(|l| l.index), Some(2), "from the snapshot");
            let store = sm.store();
            let store = store.read().unwrap();
            assert!(store.kv_get("k2").is_some() && store.kv_get("k3").is_none());
        });
    }

    #[test]
    fn no_server_starts_as_the_leader_its_vote_names() {
        // Entries it had not fsynced when it stopped may be gone, though
        // followers committed them: it must win a new term first.
        let dir = tempfile::tempdir().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, _) = open(dir.path()).unwrap();
            log.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
            assert_eq!(
                log.read_vote().await.unwrap(),
                Some(Vote::new_committed(4, 1))
            );
        });
        rt.block_on(async {
            let (mut log, _) = open(dir.path()).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 1)));
        });
    }

    /// Runs `f` on the disk's database, outside any server.
    fn on_disk<T>(disk: &MemoryDisk, f: impl FnOnce(&redb::WriteTransaction) -> T) -> T {
        let db = Database::builder()
            .create_with_backend(disk.mount().unwrap())
            .unwrap();
        let txn = db.begin_write().unwrap();
        let out = f(&txn);
        txn.commit().unwrap();
        out
    }

    /// Flips the first payload bit of a stored record.
    fn flip(disk: &MemoryDisk, table: &str, key: &str) {
        let key = match table {
            "log" => records::Key::Log(key.parse().unwrap()),
            "meta" => records::Key::Meta(key.into()),
            _ => records::Key::Snapshot(key.into()),
        };
        on_disk(disk, |txn| {
            let mut bytes = key.read(txn).unwrap();
            bytes[8] ^= 1;
            key.write(txn, &bytes).unwrap();
        });
    }

    fn kv_entry(term: u64, index: u64) -> Entry<TypeConfig> {
        use crate::consensus::Request;
        use crate::state::KvOp;
        Entry {
            log_id: LogId::new(openraft::CommittedLeaderId::new(term, 1), index),
            payload: EntryPayload::Normal(Request {
                at_ms: 0,
                cmd: Command::Kv {
                    op: KvOp::Set,
                    key: format!("k{index}"),
                    value: b"v".to_vec(),
                    flags: 0,
                },
            }),
        }
    }

    /// A store on `disk` with vote (3, 1), entries 1..=5 of term 3, and
    /// entries 1..=3 committed.
    fn five_entries(disk: &MemoryDisk) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, _sm) = open_on(disk).unwrap();
            log.save_vote(&Vote::new(3, 1)).await.unwrap();
            log.save_committed(Some(kv_entry(3, 3).log_id))
                .await
                .unwrap();
            let txn = log.db.begin_write().unwrap();
            {
                let mut t = txn.open_table(LOG).unwrap();
                for i in 1..=5 {
                    t.insert(i, seal_json(&kv_entry(3, i)).unwrap().as_slice())
                        .unwrap();
                }
            }
            txn.commit().unwrap();
        });
    }

    #[test]
    fn a_damaged_copy_of_the_vote_is_mended_from_the_other() {
        for key in ["vote", "vote.2"] {
            let disk = MemoryDisk::new("s1");
            five_entries(&disk);
            flip(&disk, "meta", key);
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(async {
                let (mut log, _sm) = open_on(&disk).unwrap();
                assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(3, 1)));
                assert!(log.recovery().borrow().is_none(), "nothing was lost");
                // Both copies are whole again.
                assert_eq!(
                    log.meta::<Vote<NodeId>>(key).unwrap(),
                    Some(Vote::new(3, 1))
                );
            });
        }
    }

    #[test]
    fn both_copies_of_the_vote_damaged_stop_the_server_with_what_to_do() {
        let disk = MemoryDisk::new("s1");
        five_entries(&disk);
        flip(&disk, "meta", "vote");
        flip(&disk, "meta", "vote.2");
        let err = open_on(&disk).map(drop).unwrap_err().to_string();
        assert!(
            err.contains("vote") && err.contains("remove-peer") && err.contains("data directory"),
            "{err}"
        );
    }

    #[test]
    fn a_damaged_entry_cuts_the_log_and_the_server_recovers_from_a_later_leader() {
        let disk = MemoryDisk::new("s1");
        five_entries(&disk);
        flip(&disk, "log", "2");
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, _sm) = open_on(&disk).unwrap();
            let state = log.get_log_state().await.unwrap();
            assert_eq!(state.last_log_id.map(|l| l.index), Some(1), "no holes");
            // The commit hint pointed past the log that is left.
            assert_eq!(log.read_committed().await.unwrap(), None);
            let r = log.recovery().borrow().clone().expect("recovering");
            assert_eq!(
                (r.term, r.last),
                (3, kv_entry(3, 5).log_id),
                "the vote's term, the old log's end"
            );
            assert!(r.may_vote_for(Some(kv_entry(3, 5).log_id)));
            assert!(!r.may_vote_for(Some(kv_entry(3, 4).log_id)));
            assert!(!r.may_vote_for(None));
            assert!(r.lost.contains("from index 2"), "{}", r.lost);
            // Entries of its own term end it only once the log reaches as
            // far as it did; of a later term, at once.
            let id = |term, index| Some(kv_entry(term, index).log_id);
            caught_up(&log.db, &log.recovery, id(3, 4)).unwrap();
            assert!(log.recovery().borrow().is_some());
            caught_up(&log.db, &log.recovery, id(2, 9)).unwrap();
            assert!(log.recovery().borrow().is_some());
        });
        // The marker outlives a restart.
        rt.block_on(async {
            let (log, _sm) = open_on(&disk).unwrap();
            assert!(log.recovery().borrow().is_some(), "recovery forgotten");
            caught_up(&log.db, &log.recovery, Some(kv_entry(4, 2).log_id)).unwrap();
            assert!(log.recovery().borrow().is_none());
        });
        let (log, _sm) = open_on(&disk).unwrap();
        assert!(log.recovery().borrow().is_none());
    }

    #[test]
    fn a_damaged_snapshot_behind_a_purged_log_takes_the_log() {
        let disk = MemoryDisk::new("s1");
        five_entries(&disk);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, mut sm) = open_on(&disk).unwrap();
            sm.apply((1..=3).map(|i| kv_entry(3, i))).await.unwrap();
            sm.get_snapshot_builder()
                .await
                .build_snapshot()
                .await
                .unwrap();
            log.purge(kv_entry(3, 3).log_id).await.unwrap();
        });
        flip(&disk, "snapshot", "data");
        rt.block_on(async {
            let (mut log, mut sm) = open_on(&disk).unwrap();
            let state = log.get_log_state().await.unwrap();
            assert_eq!((state.last_purged_log_id, state.last_log_id), (None, None));
            assert!(sm.get_current_snapshot().await.unwrap().is_none());
            assert_eq!(
                log.read_vote().await.unwrap(),
                Some(Vote::new(3, 1)),
                "kept"
            );
            let r = log.recovery().borrow().clone().expect("recovering");
            assert!(r.lost.contains("snapshot"), "{}", r.lost);
        });
    }

    #[test]
    fn a_store_written_before_checksums_is_sealed_as_it_opens() {
        let disk = MemoryDisk::new("s1");
        on_disk(&disk, |txn| {
            let mut meta = txn.open_table(META).unwrap();
            let vote = serde_json::to_vec(&Vote::<NodeId>::new(5, 2)).unwrap();
            meta.insert("vote", vote.as_slice()).unwrap();
            let mut log = txn.open_table(LOG).unwrap();
            let e = serde_json::to_vec(&kv_entry(5, 1)).unwrap();
            log.insert(1, e.as_slice()).unwrap();
        });
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut log, _sm) = open_on(&disk).unwrap();
            assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(5, 2)));
            let entries = log.try_get_log_entries(1..2).await.unwrap();
            assert_eq!(entries, vec![kv_entry(5, 1)]);
            assert!(log.recovery().borrow().is_none());
        });
        // Sealed now: a flip shows.
        flip(&disk, "meta", "vote");
        let (mut log, _sm) = open_on(&disk).unwrap();
        let rt2 = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert_eq!(
            rt2.block_on(log.read_vote()).unwrap(),
            Some(Vote::new(5, 2))
        );
    }

    #[test]
    fn rot_flips_one_bit_the_next_open_notices() {
        let mut noticed = 0;
        for draw in 0..40u64 {
            let disk = MemoryDisk::new("s1");
            five_entries(&disk);
            let rot = disk.rot(draw).unwrap().expect("records to rot");
            let (log, _sm) = open_on(&disk).unwrap_or_else(|e| panic!("{rot}: {e}"));
            if rot.record.starts_with("log/") {
                assert!(log.recovery().borrow().is_some(), "{rot} went unnoticed");
                noticed += 1;
            }
        }
        assert!(noticed > 10, "the log is most of what is stored: {noticed}");
    }

    #[test]
    fn damaged_files_are_refused_at_open_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raft.redb");
        std::fs::write(
            &path,
            b"this is not a database, just some bytes that are long enough",
        )
        .unwrap();
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(
            err.contains("raft.redb") && err.contains("damaged"),
            "{err}"
        );
        // Nothing was overwritten.
        assert!(std::fs::read(&path).unwrap().starts_with(b"this is not"));
    }

    #[test]
    fn a_truncated_store_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = open(dir.path()).unwrap();
            let rt = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            rt.block_on(log.save_vote(&Vote::new(3, 1))).unwrap();
        }
        let path = dir.path().join("raft.redb");
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
        let err = open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("damaged"), "{err}");
    }
}

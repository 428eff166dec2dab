//! The simulator's disk: memory that outlives the server processes using
//! it, with a page cache that a crash empties, torn writes, bit rot, fsync
//! that fails, and a disk that fills up.

use std::fmt::Debug;
use std::sync::Arc;

use redb::Database;

use super::records;

/// A disk made of memory that outlives the processes using it: the
/// simulator gives each server one, so a server that crashes and restarts
/// finds what it had written, as it would on a real disk.
///
/// It has a page cache, as a real machine does: a write is seen by reads
/// at once, but it is durable only once `sync_data` (fsync) returns. A
/// crash ([`MemoryDisk::crash`]) loses every write since the last sync,
/// except that the last one may survive torn: a prefix of it reached the
/// platter. Only one running server may use the disk at a time, like
/// redb's file lock, and a crash fences the crashed server's handle: what
/// its database does as its tasks are torn down never reaches the disk.
#[derive(Clone, Default)]
pub struct MemoryDisk {
    pub(super) name: Arc<str>,
    state: Arc<std::sync::Mutex<DiskState>>,
}

#[derive(Default)]
struct DiskState {
    /// What reads see: the durable bytes with every later write applied.
    bytes: Vec<u8>,
    /// How to take back each write and resize since the last sync,
    /// oldest first.
    unsynced: Vec<Undo>,
    /// Bumped by each crash; a handle mounted before it is fenced.
    generation: u64,
    /// The generation the running server's handle was mounted in.
    mounted: Option<u64>,
    /// Set by [`MemoryDisk::crash_at_next_sync`]: the draw that decides
    /// how the last write tears, and what to do once it has.
    crash_at_sync: Option<(u64, CrashHook)>,
    /// What the last crash took.
    last_crash: Option<CrashLoss>,
    /// Set by [`MemoryDisk::fail_next_sync`].
    fail_sync: bool,
    /// Set by [`MemoryDisk::set_full`].
    full: bool,
}

/// What a crash armed by [`MemoryDisk::crash_at_next_sync`] does once it
/// strikes (the simulator stops the machine's processes there).
type CrashHook = Box<dyn FnOnce(CrashLoss) + Send>;

/// What a write or a resize replaced.
struct Undo {
    /// Where it started.
    offset: usize,
    /// The bytes it overwrote from there (those within the old length).
    old: Vec<u8>,
    /// The disk's length before it.
    old_len: usize,
    /// How many bytes it wrote (0 for a resize).
    wrote: usize,
}

impl Undo {
    /// Takes the change back from `bytes`, but for the first `keep` bytes
    /// it wrote (a torn write).
    fn revert(&self, bytes: &mut Vec<u8>, keep: usize) {
        let keep = keep.min(self.wrote);
        let len = if keep > 0 {
            self.old_len.max(self.offset + keep)
        } else {
            self.old_len
        };
        bytes.resize(len, 0);
        for (i, b) in self.old.iter().enumerate().skip(keep) {
            bytes[self.offset + i] = *b;
        }
    }
}

/// What a crash took from a [`MemoryDisk`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CrashLoss {
    /// Writes and resizes since the last sync, taken back.
    pub unsynced: usize,
    /// Of the last write, the bytes that survived (a torn write), and how
    /// many it wrote.
    pub torn: Option<(usize, usize)>,
}

impl MemoryDisk {
    /// An empty disk; `name` appears in errors.
    pub fn new(name: &str) -> Self {
        MemoryDisk {
            name: name.into(),
            ..MemoryDisk::default()
        }
    }

    /// Bytes on it, synced or not.
    pub fn len(&self) -> usize {
        self.lock().bytes.len()
    }

    /// Whether nothing was ever written.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DiskState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The machine crashed: every write since the last sync is lost, but
    /// for a prefix of the last one, `tear(its length)` bytes long, and
    /// the running server's handle is fenced off.
    pub fn crash(&self, tear: impl FnOnce(usize) -> usize) -> CrashLoss {
        self.lock().crash(tear)
    }

    /// The machine will crash in the middle of the next fsync that has
    /// writes to lose: the sync
    /// fails, [`crash`](Self::crash) happens with the last write torn
    /// `draw % (its length + 1)` bytes in, and then `then` is told what
    /// was lost. A power cut during a commit. Any crash before it, or
    /// [`disarm`](Self::disarm), calls it off.
    pub fn crash_at_next_sync(&self, draw: u64, then: impl FnOnce(CrashLoss) + Send + 'static) {
        self.lock().crash_at_sync = Some((draw, Box::new(then)));
    }

    /// Calls off a crash armed by [`crash_at_next_sync`](Self::crash_at_next_sync).
    pub fn disarm(&self) {
        self.lock().crash_at_sync = None;
    }

    /// What the last crash took, if there was one.
    pub fn last_crash(&self) -> Option<CrashLoss> {
        self.lock().last_crash
    }

    /// The next fsync that has writes to make durable fails with an I/O
    /// error (EIO), and those writes are lost: Linux marks the pages that
    /// failed to write back clean, so they are gone from the disk and a
    /// retried fsync reports success without them. The only safe answer is
    /// to stop and recover from what is on disk. A crash first calls it
    /// off.
    pub fn fail_next_sync(&self) {
        self.lock().fail_sync = true;
    }

    /// The disk fills up (`true`) or has room again (`false`). While it
    /// is full, every write and every resize that grows the file fails
    /// with ENOSPC (a copy-on-write filesystem allocates on every write);
    /// reads still work. It stays full across crashes.
    pub fn set_full(&self, full: bool) {
        self.lock().full = full;
    }
}

/// The error a full [`MemoryDisk`] answers writes with.
fn no_space() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::StorageFull,
        "no space left on device (the simulated disk is full)",
    )
}

impl DiskState {
    fn crash(&mut self, tear: impl FnOnce(usize) -> usize) -> CrashLoss {
        self.crash_at_sync = None;
        self.fail_sync = false;
        self.generation += 1;
        self.mounted = None;
        let loss = self.lose_unsynced(tear);
        self.last_crash = Some(loss);
        loss
    }

    /// Takes back every write and resize since the last sync, but for
    /// `tear(its length)` bytes of the last write.
    fn lose_unsynced(&mut self, tear: impl FnOnce(usize) -> usize) -> CrashLoss {
        let st = self;
        let unsynced = std::mem::take(&mut st.unsynced);
        let mut loss = CrashLoss {
            unsynced: unsynced.len(),
            torn: None,
        };
        let mut tear = Some(tear);
        for u in unsynced.iter().rev() {
            // Only the last write can be torn (a resize after it, being
            // the file's metadata, does not finish it): the ones before it
            // had finished when it started.
            let keep = match u.wrote {
                0 => 0,
                n => tear.take().map_or(0, |t| t(n).min(n)),
            };
            if keep > 0 {
                loss.torn = Some((keep, u.wrote));
            }
            u.revert(&mut st.bytes, keep);
        }
        loss
    }
}

impl MemoryDisk {
    /// Bit rot while the machine is down: flips one bit of one stored
    /// Raft record, both drawn from `draw` (see [`records::rot`]), for the
    /// server to meet when it next opens the disk. `Ok(None)` when the
    /// disk holds no records yet; an error while a server runs on it.
    pub fn rot(&self, draw: u64) -> Result<Option<records::Rot>, String> {
        let backend = self
            .mount()
            .ok_or("the disk is in use by a running server")?;
        let db = Database::builder()
            .create_with_backend(backend)
            .map_err(|e| e.to_string())?;
        let mut txn = db.begin_write().map_err(|e| e.to_string())?;
        txn.set_durability(redb::Durability::Immediate)
            .map_err(|e| e.to_string())?;
        let rot = records::rot(&txn, draw).map_err(|e| e.to_string())?;
        txn.commit().map_err(|e| e.to_string())?;
        Ok(rot)
    }

    /// The backend for one server's database, unless another holds it.
    pub(super) fn mount(&self) -> Option<Mounted> {
        let mut st = self.lock();
        if st.mounted.is_some() {
            return None;
        }
        st.mounted = Some(st.generation);
        Some(Mounted {
            disk: self.clone(),
            generation: st.generation,
        })
    }
}

impl Debug for MemoryDisk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MemoryDisk({}, {} bytes)", self.name, self.len())
    }
}

impl PartialEq for MemoryDisk {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.state, &other.state)
    }
}

/// A mounted [`MemoryDisk`]; unmounts when the database drops it.
pub(super) struct Mounted {
    disk: MemoryDisk,
    /// The disk's generation when mounted: after a crash, this handle
    /// reaches nothing.
    generation: u64,
}

impl Debug for Mounted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Mounted({:?})", self.disk)
    }
}

impl Mounted {
    /// The disk's state, unless the machine crashed since this mount.
    fn state(&self) -> Result<std::sync::MutexGuard<'_, DiskState>, std::io::Error> {
        let st = self.disk.lock();
        if st.generation != self.generation {
            return Err(std::io::Error::other(
                "the simulated machine crashed: this disk handle is gone",
            ));
        }
        Ok(st)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut st = self.disk.lock();
        if st.mounted == Some(self.generation) {
            st.mounted = None;
        }
    }
}

impl redb::StorageBackend for Mounted {
    fn len(&self) -> Result<u64, std::io::Error> {
        Ok(self.state()?.bytes.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
        let st = self.state()?;
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(out.len());
        let src = st.bytes.get(start..end).ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "read past the end of the simulated disk",
            )
        })?;
        out.copy_from_slice(src);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
        let len = usize::try_from(len).map_err(|_| {
            std::io::Error::new(std::io::ErrorKind::OutOfMemory, "simulated disk too large")
        })?;
        let mut st = self.state()?;
        let old_len = st.bytes.len();
        if st.full && len > old_len {
            return Err(no_space());
        }
        let old = st.bytes.get(len..).map(<[u8]>::to_vec).unwrap_or_default();
        st.unsynced.push(Undo {
            offset: len.min(old_len),
            old,
            old_len,
            wrote: 0,
        });
        st.bytes.resize(len, 0);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), std::io::Error> {
        let mut st = self.state()?;
        // A sync of nothing but a resize (redb syncs as it grows the
        // file) passes: the power cut waits for one with writes to lose.
        let writes = st.unsynced.iter().any(|u| u.wrote > 0);
        if let Some((draw, then)) = st.crash_at_sync.take_if(|_| writes) {
            let loss = st.crash(|len| (draw % (len as u64 + 1)) as usize);
            drop(st);
            then(loss);
            return Err(std::io::Error::other(
                "the simulated machine crashed during fsync",
            ));
        }
        if writes && std::mem::take(&mut st.fail_sync) {
            let loss = st.lose_unsynced(|_| 0);
            return Err(std::io::Error::other(format!(
                "fsync failed: input/output error (simulated EIO; {} unsynced writes lost)",
                loss.unsynced
            )));
        }
        st.unsynced.clear();
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
        let mut st = self.state()?;
        if st.full {
            return Err(no_space());
        }
        let start = usize::try_from(offset).unwrap_or(usize::MAX);
        let end = start.saturating_add(data.len());
        let old_len = st.bytes.len();
        let old = st
            .bytes
            .get(start.min(old_len)..end.min(old_len))
            .map(<[u8]>::to_vec)
            .unwrap_or_default();
        st.unsynced.push(Undo {
            offset: start,
            old,
            old_len,
            wrote: data.len(),
        });
        if end > st.bytes.len() {
            st.bytes.resize(end, 0);
        }
        st.bytes[start..end].copy_from_slice(data);
        Ok(())
    }
}

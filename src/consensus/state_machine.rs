//! The Raft state machine: the [`Store`] in memory, and the latest
//! snapshot of it in the Raft store's redb file. After a restart it is that
//! snapshot plus the log entries after it, which openraft applies again.

// openraft's traits return its `StorageError` (224 bytes), and so do
// the helpers here.
#![allow(clippy::result_large_err)]

use std::io::Cursor;
use std::sync::{Arc, RwLock};

use openraft::storage::RaftStateMachine;
use openraft::{
    BasicNode, Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, Snapshot,
    SnapshotMeta, StoredMembership,
};
use redb::{Database, ReadableDatabase, ReadableTable};

use super::records::{
    open_json, read_err, seal, seal_json, unseal, write_err, Meta, NodeId, StorageResult, SNAPSHOT,
};
use super::{Response, TypeConfig};
use crate::state::{Applied, Command, Store};

/// The Raft state machine: the [`Store`], and the latest snapshot on disk.
#[derive(Debug)]
pub struct StateMachine {
    db: Arc<Database>,
    store: Arc<RwLock<Store>>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    snapshots: u64,
}

impl StateMachine {
    /// The state machine kept in `db`: its latest snapshot, if any.
    pub(super) fn open(db: Arc<Database>) -> StorageResult<StateMachine> {
        let mut sm = StateMachine {
            db,
            store: Arc::default(),
            last_applied: None,
            membership: StoredMembership::default(),
            snapshots: 0,
        };
        if let Some((meta, data)) = sm.read_snapshot()? {
            sm.load(&meta, &data)?;
        }
        Ok(sm)
    }

    /// The store, for readers (servers answer queries from it).
    pub fn store(&self) -> Arc<RwLock<Store>> {
        self.store.clone()
    }

    fn read_snapshot(&self) -> StorageResult<Option<(Meta, Vec<u8>)>> {
        let txn = self.db.begin_read().map_err(read_err)?;
        let table = txn.open_table(SNAPSHOT).map_err(read_err)?;
        let (Some(meta), Some(data)) = (
            table.get("meta").map_err(read_err)?,
            table.get("data").map_err(read_err)?,
        ) else {
            return Ok(None);
        };
        let meta = open_json(meta.value()).map_err(read_err)?;
        let data = unseal(data.value()).map_err(read_err)?.to_vec();
        Ok(Some((meta, data)))
    }

    /// Replaces the state with a snapshot's.
    fn load(&mut self, meta: &Meta, data: &[u8]) -> StorageResult<()> {
        self.store
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .restore_in_place(data)
            .map_err(read_err)?;
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        Ok(())
    }
}

/// Saves `data` as the current snapshot, replacing the one before.
fn write_snapshot(db: &Database, meta: &Meta, data: &[u8]) -> StorageResult<()> {
    let bytes = seal_json(meta).map_err(write_err)?;
    let txn = db.begin_write().map_err(write_err)?;
    {
        let mut table = txn.open_table(SNAPSHOT).map_err(write_err)?;
        // A build that started before a newer snapshot was installed must
        // not replace it: the log behind the newer one is purged.
        let current: Option<Meta> = match table.get("meta").map_err(write_err)? {
            Some(v) => open_json(v.value()).ok(),
            None => None,
        };
        if current.is_some_and(|c| c.last_log_id > meta.last_log_id) {
            return Ok(());
        }
        table.insert("meta", bytes.as_slice()).map_err(write_err)?;
        table
            .insert("data", seal(data).as_slice())
            .map_err(write_err)?;
    }
    txn.commit().map_err(write_err)
}

/// A snapshot in the making: the store's bytes and what they cover.
pub struct SnapshotBuilder {
    db: Arc<Database>,
    data: Vec<u8>,
    last_applied: Option<LogId<NodeId>>,
    membership: StoredMembership<NodeId, BasicNode>,
    id: String,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
            snapshot_id: self.id.clone(),
        };
        write_snapshot(&self.db, &meta, &self.data)?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(std::mem::take(&mut self.data))),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(
        &mut self,
    ) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, BasicNode>)> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Response>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut store = self.store.write().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::new();
        for e in entries {
            self.last_applied = Some(e.log_id);
            out.push(match e.payload {
                EntryPayload::Blank => Response(vec![Ok(Applied::Done(true))]),
                EntryPayload::Normal(req) => Response(match &req.cmd {
                    Command::Batch(cmds) => cmds
                        .iter()
                        .map(|c| store.apply_outcome(e.log_id.index, req.at_ms, c))
                        .collect(),
                    cmd => vec![store.apply_outcome(e.log_id.index, req.at_ms, cmd)],
                }),
                EntryPayload::Membership(m) => {
                    self.membership = StoredMembership::new(Some(e.log_id), m);
                    Response(vec![Ok(Applied::Done(true))])
                }
            });
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.snapshots += 1;
        let data = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .snapshot();
        let id = match self.last_applied {
            Some(l) => format!("{}-{}-{}", l.leader_id.term, l.index, self.snapshots),
            None => format!("0-0-{}", self.snapshots),
        };
        SnapshotBuilder {
            db: self.db.clone(),
            data,
            last_applied: self.last_applied,
            membership: self.membership.clone(),
            id,
        }
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &Meta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StorageResult<()> {
        let data = snapshot.into_inner();
        self.load(meta, &data)?;
        write_snapshot(&self.db, meta, &data)
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        Ok(self.read_snapshot()?.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::consensus::storage::{open, open_in_memory};

    #[test]
    fn a_batch_applies_in_order_with_a_result_per_command() {
        use crate::consensus::Request;
        use crate::state::KvOp;
        let kv = |op: KvOp, v: &str| Command::Kv {
            op,
            key: "k".into(),
            value: v.as_bytes().to_vec(),
            flags: 0,
        };
        let entry = |cmd: Command| Entry::<TypeConfig> {
            log_id: LogId::new(openraft::CommittedLeaderId::new(1, 1), 5),
            payload: EntryPayload::Normal(Request { at_ms: 0, cmd }),
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let (_log, mut sm) = open_in_memory().unwrap();
            let batch = Command::Batch(vec![
                kv(KvOp::Set, "a"),
                // Created just before, in the same entry: no longer absent.
                kv(KvOp::Cas { index: 0 }, "b"),
                kv(KvOp::Cas { index: 5 }, "c"),
                Command::Batch(Vec::new()),
            ]);
            let out = sm.apply([entry(batch)]).await.unwrap();
            assert_eq!(out.len(), 1);
            let r = &out[0].0;
            assert_eq!(
                r[..3],
                [
                    Ok(Applied::Done(true)),
                    Ok(Applied::Done(false)),
                    Ok(Applied::Done(true))
                ]
            );
            assert!(r[3].is_err(), "batches do not nest");
            let store = sm.store();
            let store = store.read().unwrap();
            assert_eq!(store.kv_get("k").unwrap().value, b"c");
        });
    }

    #[test]
    fn an_older_snapshot_never_replaces_a_newer_one() {
        let dir = tempfile::tempdir().unwrap();
        let (_, sm) = open(dir.path()).unwrap();
        let meta = |index: u64| Meta {
            last_log_id: Some(LogId::new(openraft::CommittedLeaderId::new(1, 1), index)),
            last_membership: StoredMembership::default(),
            snapshot_id: format!("s{index}"),
        };
        write_snapshot(&sm.db, &meta(500), b"new").unwrap();
        write_snapshot(&sm.db, &meta(100), b"old").unwrap();
        let (kept, data) = sm.read_snapshot().unwrap().unwrap();
        assert_eq!(
            (kept.snapshot_id.as_str(), &data[..]),
            ("s500", &b"new"[..])
        );
    }
}

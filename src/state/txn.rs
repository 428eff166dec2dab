//! KV transactions (Consul's `/v1/txn`): a list of operations applied as one
//! log entry, all or nothing. Every operation is tried in order against the
//! effects of the ones before it; if any fails, every failure is reported
//! (with its position) and the store is put back exactly as it was.

use serde::{Deserialize, Serialize};

use super::kv::{KvEntry, KvOp};
use super::{StateError, Table, Tx};

/// What a transaction operation does (Consul's KV verbs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TxnVerb {
    /// Write the value.
    Set,
    /// Write if the key's `ModifyIndex` is `index` (0: if absent).
    Cas,
    /// Write and take the lock for `session`.
    Lock,
    /// Write and give up `session`'s lock.
    Unlock,
    /// Read the key; failing if it is absent.
    Get,
    /// Read every key under the prefix.
    GetTree,
    /// Fail unless the key's `ModifyIndex` is `index`.
    CheckIndex,
    /// Fail unless `session` holds the key's lock.
    CheckSession,
    /// Fail if the key exists.
    CheckNotExists,
    /// Delete the key.
    Delete,
    /// Delete every key under the prefix.
    DeleteTree,
    /// Delete if the key's `ModifyIndex` is `index`.
    DeleteCas,
}

impl TxnVerb {
    /// The verb as Consul spells it (`get-tree`, `check-index`, ...).
    pub fn parse(s: &str) -> Option<TxnVerb> {
        Some(match s {
            "set" => TxnVerb::Set,
            "cas" => TxnVerb::Cas,
            "lock" => TxnVerb::Lock,
            "unlock" => TxnVerb::Unlock,
            "get" => TxnVerb::Get,
            "get-tree" => TxnVerb::GetTree,
            "check-index" => TxnVerb::CheckIndex,
            "check-session" => TxnVerb::CheckSession,
            "check-not-exists" => TxnVerb::CheckNotExists,
            "delete" => TxnVerb::Delete,
            "delete-tree" => TxnVerb::DeleteTree,
            "delete-cas" => TxnVerb::DeleteCas,
            _ => return None,
        })
    }

    /// Whether the verb only reads.
    pub fn reads_only(self) -> bool {
        matches!(
            self,
            TxnVerb::Get
                | TxnVerb::GetTree
                | TxnVerb::CheckIndex
                | TxnVerb::CheckSession
                | TxnVerb::CheckNotExists
        )
    }
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnOp {
    /// What to do.
    pub verb: TxnVerb,
    /// The key (the prefix for the `*-tree` verbs).
    pub key: String,
    /// The value to write.
    pub value: Vec<u8>,
    /// Flags to write.
    pub flags: u64,
    /// The index for `cas`, `check-index` and `delete-cas`.
    pub index: u64,
    /// The session for `lock`, `unlock` and `check-session`.
    pub session: String,
}

/// An operation that failed, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TxnError {
    /// Its position in the transaction.
    pub op_index: usize,
    /// What went wrong.
    pub what: String,
}

/// A transaction's outcome: the entries its operations read or wrote
/// (written ones without their value, as Consul answers), or every failure.
pub type TxnOutcome = Result<Vec<KvEntry>, Vec<TxnError>>;

/// Most operations in one transaction (Consul's limit).
pub const MAX_TXN_OPS: usize = 64;

/// What a transaction changed, to put back if it fails.
struct Undo {
    /// Keys as they were before their first change: entry and tombstone.
    keys: Vec<(String, Option<KvEntry>, Option<u64>)>,
    indexes: std::collections::BTreeMap<Table, u64>,
    lock_delays: std::collections::BTreeMap<String, u64>,
    watch_lens: (usize, usize, usize),
}

impl Tx<'_> {
    /// Applies `ops` all or nothing.
    pub(super) fn txn(&mut self, ops: &[TxnOp]) -> Result<TxnOutcome, StateError> {
        if ops.len() > MAX_TXN_OPS {
            return Err(super::invalid(format!(
                "Transaction contains too many operations ({} > {MAX_TXN_OPS})",
                ops.len()
            )));
        }
        let mut undo = Undo {
            keys: Vec::new(),
            indexes: self.data.indexes.clone(),
            lock_delays: self.data.lock_delays.clone(),
            watch_lens: (self.touched.len(), self.keys.len(), self.trees.len()),
        };
        let mut results = Vec::new();
        let mut errors = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            if !op.verb.reads_only() {
                self.remember(&mut undo, op);
            }
            match self.txn_op(op, &mut results) {
                Ok(()) => {}
                Err(what) => errors.push(TxnError { op_index: i, what }),
            }
        }
        if errors.is_empty() {
            return Ok(Ok(results));
        }
        // Planted: a failed transaction keeps the writes that succeeded.
        if cfg!(cairn_planted = "txn_not_atomic") {
            return Ok(Err(errors));
        }
        // Newest first, so a key changed twice ends at its first saved state.
        for (key, entry, tomb) in undo.keys.into_iter().rev() {
            match entry {
                Some(e) => self.data.kv.insert(key.clone(), e),
                None => self.data.kv.remove(&key),
            };
            match tomb {
                Some(t) => self.data.tombstones.insert(key, t),
                None => self.data.tombstones.remove(&key),
            };
        }
        self.data.indexes = undo.indexes;
        self.data.lock_delays = undo.lock_delays;
        let (t, k, p) = undo.watch_lens;
        self.touched.truncate(t);
        self.keys.truncate(k);
        self.trees.truncate(p);
        Ok(Err(errors))
    }

    /// Saves the keys `op` may change.
    fn remember(&self, undo: &mut Undo, op: &TxnOp) {
        let keys: Vec<String> = if op.verb == TxnVerb::DeleteTree {
            self.data
                .kv
                .range(op.key.clone()..)
                .take_while(|(k, _)| k.starts_with(&op.key))
                .map(|(k, _)| k.clone())
                .collect()
        } else {
            vec![op.key.clone()]
        };
        for k in keys {
            let entry = self.data.kv.get(&k).cloned();
            let tomb = self.data.tombstones.get(&k).copied();
            undo.keys.push((k, entry, tomb));
        }
    }

    fn txn_op(&mut self, op: &TxnOp, results: &mut Vec<KvEntry>) -> Result<(), String> {
        let key = op.key.as_str();
        let current = |tx: &Self| tx.data.kv.get(key).cloned();
        let without_value = |mut e: KvEntry| {
            e.value = Vec::new();
            e
        };
        let write = |tx: &mut Self, kv: KvOp, fail: &str| -> Result<(), String> {
            match tx.kv(&kv, key, &op.value, op.flags) {
                Ok(true) => Ok(()),
                Ok(false) => Err(format!("failed to {fail} key {key:?}")),
                Err(e) => Err(e.to_string()),
            }
        };
        match op.verb {
            TxnVerb::Set => write(self, KvOp::Set, "set")?,
            TxnVerb::Cas => write(self, KvOp::Cas { index: op.index }, "set")
                .map_err(|e| format!("{e}, index is stale"))?,
            TxnVerb::Lock => write(
                self,
                KvOp::Lock {
                    session: op.session.clone(),
                },
                "lock",
            )
            .map_err(|e| format!("{e}, lock is already held"))?,
            TxnVerb::Unlock => write(
                self,
                KvOp::Unlock {
                    session: op.session.clone(),
                },
                "unlock",
            )
            .map_err(|e| format!("{e}, lock isn't held, or is held by another session"))?,
            TxnVerb::Delete => {
                write(self, KvOp::Delete, "delete")?;
                return Ok(());
            }
            TxnVerb::DeleteCas => {
                if current(self).is_none() {
                    return Err(format!("failed to delete key {key:?}, key doesn't exist"));
                }
                write(self, KvOp::DeleteCas { index: op.index }, "delete")
                    .map_err(|e| format!("{e}, index is stale"))?;
                return Ok(());
            }
            TxnVerb::DeleteTree => {
                write(self, KvOp::DeleteTree, "delete")?;
                return Ok(());
            }
            TxnVerb::Get => {
                let e = current(self).ok_or_else(|| format!("key {key:?} doesn't exist"))?;
                results.push(e);
                return Ok(());
            }
            TxnVerb::GetTree => {
                results.extend(
                    self.data
                        .kv
                        .range(op.key.clone()..)
                        .take_while(|(k, _)| k.starts_with(key))
                        .map(|(_, e)| e.clone()),
                );
                return Ok(());
            }
            TxnVerb::CheckIndex => {
                let e = current(self).ok_or_else(|| format!("key {key:?} doesn't exist"))?;
                if e.modify_index != op.index {
                    return Err(format!(
                        "current modify index {} != {} for key {key:?}",
                        e.modify_index, op.index
                    ));
                }
                results.push(without_value(e));
                return Ok(());
            }
            TxnVerb::CheckSession => {
                let e = current(self).ok_or_else(|| format!("key {key:?} doesn't exist"))?;
                if e.session.as_deref() != Some(op.session.as_str()) {
                    return Err(format!(
                        "failed session check for key {key:?}, current session {:?} != {:?}",
                        e.session.as_deref().unwrap_or(""),
                        op.session
                    ));
                }
                results.push(without_value(e));
                return Ok(());
            }
            TxnVerb::CheckNotExists => {
                if current(self).is_some() {
                    return Err(format!("key {key:?} exists"));
                }
                return Ok(());
            }
        }
        // The writes that keep the key answer with it, value left out.
        if let Some(e) = current(self) {
            results.push(without_value(e));
        }
        Ok(())
    }
}

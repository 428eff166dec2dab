//! The KV store, with Consul's indexes, check-and-set and session locks.

use serde::{Deserialize, Serialize};

use super::{invalid, StateError, Store, Table, Tx};

/// A key and its value.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct KvEntry {
    /// The key.
    pub key: String,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
    /// How many times a session has acquired it.
    pub lock_index: u64,
    /// Opaque flags.
    pub flags: u64,
    /// The value.
    pub value: Vec<u8>,
    /// The session holding its lock.
    pub session: Option<String>,
}

/// A KV operation (Consul's `KVOp`s).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    /// Write the value; a lock on the key stays.
    Set,
    /// Write only if the key's `ModifyIndex` is `index` (0: only if absent).
    Cas {
        /// Expected `ModifyIndex`.
        index: u64,
    },
    /// Write and take the key's lock for `session`.
    Lock {
        /// The session.
        session: String,
    },
    /// Write and give up the lock `session` holds.
    Unlock {
        /// The session.
        session: String,
    },
    /// Delete the key.
    Delete,
    /// Delete only if `ModifyIndex` is `index`.
    DeleteCas {
        /// Expected `ModifyIndex`.
        index: u64,
    },
    /// Delete every key under the prefix.
    DeleteTree,
}

impl Tx<'_> {
    pub(super) fn kv(
        &mut self,
        op: &KvOp,
        key: &str,
        value: &[u8],
        flags: u64,
    ) -> Result<bool, StateError> {
        if key.is_empty() && *op != KvOp::DeleteTree {
            return Err(invalid("a KV operation needs a key"));
        }
        let existing = self.data.kv.get(key);
        match op {
            KvOp::Set => {
                self.kv_write(key, value, flags, None);
                Ok(true)
            }
            KvOp::Cas { index } => {
                let current = existing.map_or(0, |e| e.modify_index);
                if current != *index {
                    return Ok(false);
                }
                self.kv_write(key, value, flags, None);
                Ok(true)
            }
            KvOp::Lock { session } => {
                if !self.data.sessions.contains_key(session) {
                    return Err(invalid(format!("invalid session {session:?}")));
                }
                match existing.and_then(|e| e.session.as_ref()) {
                    Some(holder) if holder != session => return Ok(false),
                    Some(_) => {}
                    // A lock lost recently stays free for its lock delay.
                    None if self
                        .data
                        .lock_delays
                        .get(key)
                        .is_some_and(|&t| self.at_ms < t) =>
                    {
                        return Ok(false)
                    }
                    None => {}
                }
                self.kv_write(key, value, flags, Some(Some(session.clone())));
                Ok(true)
            }
            KvOp::Unlock { session } => {
                if existing.and_then(|e| e.session.as_ref()) != Some(session) {
                    return Ok(false);
                }
                self.kv_write(key, value, flags, Some(None));
                Ok(true)
            }
            KvOp::Delete => {
                self.kv_delete(key);
                Ok(true)
            }
            KvOp::DeleteCas { index } => match existing {
                None => Ok(true),
                Some(e) if e.modify_index != *index => Ok(false),
                Some(_) => {
                    self.kv_delete(key);
                    Ok(true)
                }
            },
            KvOp::DeleteTree => {
                let doomed: Vec<String> = self
                    .data
                    .kv
                    .range(key.to_owned()..)
                    .take_while(|(k, _)| k.starts_with(key))
                    .map(|(k, _)| k.clone())
                    .collect();
                for k in &doomed {
                    self.data.kv.remove(k);
                    self.data.tombstones.insert(k.clone(), self.index);
                }
                if !doomed.is_empty() {
                    self.touch(Table::Kvs);
                    self.trees.push(key.to_owned());
                }
                Ok(true)
            }
        }
    }

    /// Writes `key`. `lock`: `None` keeps the lock as it is,
    /// `Some(Some(s))` takes it for `s`, `Some(None)` releases it.
    fn kv_write(&mut self, key: &str, value: &[u8], flags: u64, lock: Option<Option<String>>) {
        let index = self.index;
        let entry = self
            .data
            .kv
            .entry(key.to_owned())
            .or_insert_with(|| KvEntry {
                key: key.to_owned(),
                create_index: index,
                ..KvEntry::default()
            });
        entry.modify_index = index;
        entry.value = value.to_vec();
        entry.flags = flags;
        match lock {
            Some(Some(s)) => {
                if entry.session.as_ref() != Some(&s) {
                    entry.lock_index += 1;
                }
                entry.session = Some(s);
            }
            Some(None) => entry.session = None,
            None => {}
        }
        self.data.tombstones.remove(key);
        self.touch(Table::Kvs);
        self.keys.push(key.to_owned());
    }

    pub(super) fn kv_delete(&mut self, key: &str) {
        if self.data.kv.remove(key).is_some() {
            self.data.tombstones.insert(key.to_owned(), self.index);
            self.touch(Table::Kvs);
            self.keys.push(key.to_owned());
        }
    }
}

impl Store {
    /// One entry.
    pub fn kv_get(&self, key: &str) -> Option<&KvEntry> {
        self.data.kv.get(key)
    }

    /// The entries under `prefix`, in key order, and the index a blocking
    /// reader of that prefix waits on: the last change under it, deletes
    /// included (through their tombstones), or the KV table's index when
    /// nothing is there.
    pub fn kv_list(&self, prefix: &str) -> (u64, Vec<&KvEntry>) {
        let entries: Vec<&KvEntry> = self
            .data
            .kv
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, e)| e)
            .collect();
        (self.kv_prefix_index(prefix, &entries), entries)
    }

    fn kv_prefix_index(&self, prefix: &str, entries: &[&KvEntry]) -> u64 {
        let live = entries.iter().map(|e| e.modify_index).max().unwrap_or(0);
        let dead = self
            .data
            .tombstones
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, i)| *i)
            .max()
            .unwrap_or(0);
        match live.max(dead) {
            0 => self.index(Table::Kvs),
            i => i,
        }
    }

    /// The index a blocking reader of `prefix` waits on (see
    /// [`kv_list`](Self::kv_list)).
    pub fn kv_index(&self, prefix: &str) -> u64 {
        self.kv_list(prefix).0
    }
}

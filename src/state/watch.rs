//! Waking readers when the data they read changes: the basis of blocking
//! queries (`?index=N&wait=5m`). A reader subscribes to a table, or to a KV
//! key prefix, and waits until the index there passes the one it has seen.
//!
//! Built on `tokio::sync::watch`, which involves no clock and no I/O, so it
//! works the same on real sockets and in the simulator; the reader bounds
//! its wait with its own `Env` timer.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tokio::sync::watch;

use super::Table;

/// The change notifications of one store.
#[derive(Debug)]
pub struct WatchHub {
    tables: BTreeMap<Table, watch::Sender<u64>>,
    /// KV prefixes someone is watching, with the last index under each.
    prefixes: Mutex<BTreeMap<String, watch::Sender<u64>>>,
}

impl Default for WatchHub {
    fn default() -> Self {
        WatchHub {
            tables: Table::ALL
                .iter()
                .map(|t| (*t, watch::Sender::new(0)))
                .collect(),
            prefixes: Mutex::new(BTreeMap::new()),
        }
    }
}

impl WatchHub {
    /// Follows `table`'s index.
    pub fn table(&self, table: Table) -> watch::Receiver<u64> {
        match self.tables.get(&table) {
            Some(tx) => tx.subscribe(),
            // Every table has a sender; a closed channel for the impossible.
            None => watch::Sender::new(0).subscribe(),
        }
    }

    /// Follows the index of KV keys starting with `prefix` (`""`: all).
    /// `current` is the index there now, which the receiver starts at.
    pub fn prefix(&self, prefix: &str, current: u64) -> watch::Receiver<u64> {
        let mut map = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        // Prefixes nobody waits on any more go when the map has grown: a
        // blocking read of a key never written must not stay for good.
        if map.len() >= 64 && map.len().is_power_of_two() {
            map.retain(|_, tx| tx.receiver_count() > 0);
        }
        let tx = map
            .entry(prefix.to_owned())
            .or_insert_with(|| watch::Sender::new(current));
        tx.subscribe()
    }

    /// Wakes every prefix watcher (the whole store was replaced).
    pub(crate) fn touch_all_prefixes(&self, index: u64) {
        let mut map = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, tx| tx.receiver_count() > 0);
        for tx in map.values() {
            tx.send_replace(index);
        }
    }

    /// Announces that `table` changed at `index`.
    pub(crate) fn touch_table(&self, table: Table, index: u64) {
        if let Some(tx) = self.tables.get(&table) {
            tx.send_replace(index);
        }
    }

    /// Announces that KV `key` changed at `index`: every watched prefix of
    /// it wakes. Prefixes nobody watches any more are forgotten.
    pub(crate) fn touch_key(&self, key: &str, index: u64) {
        let mut map = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        let mut dead = Vec::new();
        for end in (0..=key.len()).filter(|&i| key.is_char_boundary(i)) {
            if let Some(tx) = map.get(&key[..end]) {
                if tx.receiver_count() == 0 {
                    dead.push(key[..end].to_owned());
                } else {
                    tx.send_replace(index);
                }
            }
        }
        for p in dead {
            map.remove(&p);
        }
    }

    /// Announces that every key under `prefix` may have changed at `index`
    /// (a recursive delete): watchers of `prefix`'s own prefixes and of any
    /// prefix inside it wake.
    pub(crate) fn touch_tree(&self, prefix: &str, index: u64) {
        self.touch_key(prefix, index);
        let map = self.prefixes.lock().unwrap_or_else(|e| e.into_inner());
        for (p, tx) in map.range(prefix.to_owned()..) {
            if !p.starts_with(prefix) {
                break;
            }
            tx.send_replace(index);
        }
    }
}

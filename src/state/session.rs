//! Sessions: a node's claim on locks, as long as the node and the checks
//! it names stay healthy (and, for a TTL session, as long as it is renewed;
//! the leader times TTLs out and destroys the session through the log).

use serde::{Deserialize, Serialize};

use super::{invalid, Health, StateError, Store, Table, Tx};

/// What happens to the keys a session holds when it ends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Behavior {
    /// The locks are released; the keys stay.
    #[default]
    Release,
    /// The keys are deleted.
    Delete,
}

/// A session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Session {
    /// Its ID (a UUID the leader picks).
    #[serde(rename = "ID")]
    pub id: String,
    /// A readable name.
    pub name: String,
    /// The node it belongs to.
    pub node: String,
    /// Checks on that node it depends on (`serfHealth` by default).
    #[serde(rename = "NodeChecks")]
    pub checks: Vec<String>,
    /// How long its keys stay unlockable after it ends, milliseconds.
    #[serde(rename = "LockDelayMs")]
    pub lock_delay_ms: u64,
    /// What its end does to its keys.
    pub behavior: Behavior,
    /// Its time to live, as given (`"30s"`; empty: none).
    #[serde(rename = "TTL")]
    pub ttl: String,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

impl Tx<'_> {
    pub(super) fn session_create(&mut self, s: &Session) -> Result<(), StateError> {
        if s.id.is_empty() {
            return Err(invalid("a session needs an ID"));
        }
        if self.data.sessions.contains_key(&s.id) {
            return Err(invalid(format!("session {:?} exists already", s.id)));
        }
        if !self.data.nodes.contains_key(&s.node) {
            return Err(invalid(format!(
                "failed to create session: node {:?} is not registered",
                s.node
            )));
        }
        for c in &s.checks {
            match self.data.checks.get(&(s.node.clone(), c.clone())) {
                None => {
                    return Err(invalid(format!(
                        "failed to create session: missing check {c:?} on node {:?}",
                        s.node
                    )))
                }
                Some(check) if check.status == Health::Critical => {
                    return Err(invalid(format!(
                        "failed to create session: check {c:?} is in critical state"
                    )))
                }
                Some(_) => {}
            }
        }
        let session = Session {
            create_index: self.index,
            modify_index: self.index,
            ..s.clone()
        };
        self.data.sessions.insert(s.id.clone(), session);
        self.touch(Table::Sessions);
        Ok(())
    }

    /// Ends session `id`; false if there is none.
    pub(super) fn session_destroy(&mut self, id: &str) -> bool {
        let Some(s) = self.data.sessions.remove(id) else {
            return false;
        };
        self.touch(Table::Sessions);
        let held: Vec<String> = self
            .data
            .kv
            .values()
            .filter(|e| e.session.as_deref() == Some(id))
            .map(|e| e.key.clone())
            .collect();
        // Planted: the delay's milliseconds read as seconds, so a lost lock
        // is free again almost at once.
        let delay_ms = if cfg!(cairn_planted = "lock_delay_short") {
            s.lock_delay_ms / 1000
        } else {
            s.lock_delay_ms
        };
        for key in held {
            if delay_ms > 0 {
                self.data
                    .lock_delays
                    .insert(key.clone(), self.at_ms.saturating_add(delay_ms));
            }
            match s.behavior {
                Behavior::Delete => self.kv_delete(&key),
                Behavior::Release => {
                    if let Some(e) = self.data.kv.get_mut(&key) {
                        e.session = None;
                        e.modify_index = self.index;
                    }
                    self.touch(Table::Kvs);
                    self.keys.push(key);
                }
            }
        }
        true
    }

    /// Ends every session `doomed` picks.
    pub(super) fn invalidate_sessions(&mut self, doomed: impl Fn(&Session) -> bool) {
        let ids: Vec<String> = self
            .data
            .sessions
            .values()
            .filter(|s| doomed(s))
            .map(|s| s.id.clone())
            .collect();
        for id in ids {
            self.session_destroy(&id);
        }
    }
}

impl Store {
    /// Every session, by ID.
    pub fn sessions(&self) -> impl Iterator<Item = &Session> {
        self.data.sessions.values()
    }

    /// One session.
    pub fn session(&self, id: &str) -> Option<&Session> {
        self.data.sessions.get(id)
    }

    /// The sessions of `node`.
    pub fn node_sessions<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Session> + 'a {
        self.sessions().filter(move |s| s.node == node)
    }
}

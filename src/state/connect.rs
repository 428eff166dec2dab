//! Connect's replicated state: the CA's roots (with their keys, which only
//! servers ever see) and the intentions.

use serde::{Deserialize, Serialize};

use super::{invalid, StateError, Table, Tx};
use crate::connect::ca::RootKeys;
use crate::connect::intention::{self, Intention};

/// One root of the CA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaRoot {
    /// Its ID (the signing key's ID).
    pub id: String,
    /// A name for people.
    pub name: String,
    /// Certificate, key and validity.
    pub keys: RootKeys,
    /// Whether it signs new leaves (only the newest does; older ones stay
    /// in the bundle until they expire, so their leaves stay valid).
    pub active: bool,
    /// Index that added it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

/// The CA: the cluster's identity and its roots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaState {
    /// The cluster's ID (its trust domain is `<id>.consul`).
    pub cluster_id: String,
    /// Every root still valid, the active one last.
    pub roots: Vec<CaRoot>,
    /// Lifetime of new leaves, in ms (0: the default, 72 h).
    pub leaf_ttl_ms: u64,
}

impl CaState {
    /// The root that signs new leaves.
    pub fn active(&self) -> Option<&CaRoot> {
        self.roots.iter().rev().find(|r| r.active)
    }

    /// The same, without private keys: what agents and clients may see.
    pub fn public(&self) -> CaState {
        let mut c = self.clone();
        for r in &mut c.roots {
            r.keys.key_pem.clear();
        }
        c
    }
}

impl Tx<'_> {
    /// Makes `root` the active root (the first one also fixes the cluster
    /// ID); `false` when `only_if_none` and a root exists already, which
    /// settles two servers racing to create the first.
    pub(super) fn ca_set_root(
        &mut self,
        cluster_id: &str,
        root: &RootKeys,
        only_if_none: bool,
        leaf_ttl_ms: Option<u64>,
    ) -> Result<bool, StateError> {
        let at_ms = self.at_ms;
        let index = self.index;
        let ca = &mut self.data.ca;
        if only_if_none && !ca.roots.is_empty() {
            return Ok(false);
        }
        if root.cert_pem.is_empty() || root.key_pem.is_empty() {
            return Err(invalid("a CA root needs a certificate and its key"));
        }
        if ca.cluster_id.is_empty() {
            if cluster_id.is_empty() {
                return Err(invalid("the first CA root needs a cluster ID"));
            }
            ca.cluster_id = cluster_id.to_string();
        }
        ca.roots.retain(|r| r.keys.not_after_ms > at_ms);
        for r in ca.roots.iter_mut().filter(|r| r.active) {
            r.active = false;
            r.modify_index = index;
        }
        ca.roots.push(CaRoot {
            id: root.signing_key_id.clone(),
            name: "Consul CA Primary Cert".into(),
            keys: root.clone(),
            active: true,
            create_index: index,
            modify_index: index,
        });
        if let Some(ttl) = leaf_ttl_ms {
            ca.leaf_ttl_ms = ttl;
        }
        self.touch(Table::Connect);
        Ok(true)
    }

    /// Creates or replaces an intention (by ID).
    pub(super) fn intention_set(&mut self, i: &Intention) -> Result<(), StateError> {
        intention::validate(i).map_err(invalid)?;
        if i.id.is_empty() {
            return Err(invalid("an intention needs an ID"));
        }
        if let Some(other) = self.data.intentions.values().find(|o| {
            o.id != i.id
                && o.source_name == i.source_name
                && o.destination_name == i.destination_name
        }) {
            return Err(invalid(format!(
                "duplicate intention found: {} => {} (ID {})",
                other.source_name, other.destination_name, other.id
            )));
        }
        let create_index = self
            .data
            .intentions
            .get(&i.id)
            .map_or(self.index, |o| o.create_index);
        let stored = Intention {
            source_type: "consul".into(),
            precedence: intention::precedence(&i.source_name, &i.destination_name),
            create_index,
            modify_index: self.index,
            ..i.clone()
        };
        self.data.intentions.insert(i.id.clone(), stored);
        self.touch(Table::Intentions);
        Ok(())
    }

    /// Deletes an intention; `false` when there was none.
    pub(super) fn intention_delete(&mut self, id: &str) -> bool {
        let found = self.data.intentions.remove(id).is_some();
        if found {
            self.touch(Table::Intentions);
        }
        found
    }
}

//! The member table of the SWIM core: every node this node knows, with a
//! running digest of what a push/pull would say about them.
//!
//! A table preloaded from a [`MemberTable`] is persistent (`imbl`), so
//! clones share structure: the nodes preloaded from one table share its
//! records and copy only the ones they change. A table a node builds
//! itself (every real node's, and a cold simulated pool's) is a flat hash
//! map, cheaper to look up and to grow. Every change goes through [`Members`], which keeps the
//! digest: the wrapping sum of each record's [`wire::entry_digest`]. Two
//! nodes whose digests and sizes agree send the same push/pull state, which
//! a simulator's shortcuts use (see [`crate::gossip::memo`]); a real node never
//! reads it.

use std::collections::HashMap;
use std::hash::BuildHasherDefault;
use std::net::SocketAddr;
use std::ops::{Deref, DerefMut};
use std::sync::Arc;

use crate::gossip::config::SwimError;
use crate::gossip::event::NodeInfo;
use crate::gossip::hash::NameHasher;
use crate::gossip::wire::{self, NodeStateKind, Versions};
use crate::time::Instant;

/// A member as this node sees it.
#[derive(Debug, Clone)]
pub(crate) struct NodeState {
    pub(crate) name: Arc<str>,
    pub(crate) addr: SocketAddr,
    pub(crate) meta: Vec<u8>,
    pub(crate) incarnation: u32,
    pub(crate) state: NodeStateKind,
    pub(crate) state_change: Instant,
    pub(crate) vsn: Versions,
}

impl NodeState {
    pub(crate) fn pmax(&self) -> u8 {
        self.vsn[1]
    }

    pub(crate) fn info(&self) -> NodeInfo {
        NodeInfo {
            name: self.name.to_string(),
            addr: self.addr,
            meta: self.meta.clone(),
            incarnation: self.incarnation,
            state: self.state,
            vsn: self.vsn,
        }
    }

    /// What this record adds to the digest: the fields push/pull sends.
    fn digest(&self) -> u64 {
        wire::entry_digest(
            &self.name,
            self.addr,
            &self.meta,
            self.incarnation,
            self.state,
            Some(self.vsn),
        )
    }
}

/// The member map of a table shared with other nodes: persistent, so
/// clones share structure, and with a fixed hasher so nothing about it
/// varies from run to run. Values are boxed in `Arc`s so that copying a
/// path of the trie on a change copies pointers, not records.
pub(crate) type NodeMap = imbl::GenericHashMap<
    Arc<str>,
    Arc<NodeState>,
    BuildHasherDefault<NameHasher>,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// The member map of a table this node built alone: flat, with the
/// records in place, so a lookup costs one probe rather than a walk down a
/// trie and a pointer to the record. A join storm looks up every alive
/// notice a node receives (19 million at 1,000 nodes), and the trie's
/// nodes and the boxed records were most of their cache misses.
type FlatMap = HashMap<Arc<str>, NodeState, BuildHasherDefault<NameHasher>>;

/// How a table holds its members.
#[derive(Debug, Clone)]
enum Repr {
    /// Built from a [`MemberTable`] that other nodes share.
    Shared(NodeMap),
    /// Built by this node, member by member.
    Flat(FlatMap),
}

/// The member map and its digest. Every change goes through here, so the
/// digest cannot drift.
#[derive(Debug, Clone)]
pub(crate) struct Members {
    map: Repr,
    digest: u64,
}

impl Default for Members {
    fn default() -> Self {
        Members {
            map: Repr::Flat(FlatMap::default()),
            digest: 0,
        }
    }
}

impl Members {
    /// An empty table meant to be cloned into many nodes, which then share
    /// its records (see [`MemberTable`]).
    fn shared() -> Self {
        Members {
            map: Repr::Shared(NodeMap::default()),
            digest: 0,
        }
    }

    /// `name`'s record.
    pub(crate) fn get(&self, name: &str) -> Option<&NodeState> {
        match &self.map {
            Repr::Shared(m) => m.get(name).map(|s| &**s),
            Repr::Flat(m) => m.get(name),
        }
    }

    /// `name` as this table keys it, and its record.
    pub(crate) fn get_key_value(&self, name: &str) -> Option<(&Arc<str>, &NodeState)> {
        match &self.map {
            Repr::Shared(m) => m.get_key_value(name).map(|(k, s)| (k, &**s)),
            Repr::Flat(m) => m.get_key_value(name),
        }
    }

    /// Every record, in an order that depends only on what was done to
    /// the table.
    pub(crate) fn values(&self) -> impl Iterator<Item = &NodeState> {
        let (shared, flat) = match &self.map {
            Repr::Shared(m) => (Some(m.values().map(|s| &**s)), None),
            Repr::Flat(m) => (None, Some(m.values())),
        };
        shared
            .into_iter()
            .flatten()
            .chain(flat.into_iter().flatten())
    }

    /// How many members.
    pub(crate) fn len(&self) -> usize {
        match &self.map {
            Repr::Shared(m) => m.len(),
            Repr::Flat(m) => m.len(),
        }
    }

    /// Adds or replaces `name`'s record; whether it replaced one.
    pub(crate) fn insert(&mut self, name: Arc<str>, state: NodeState) -> bool {
        self.digest = self.digest.wrapping_add(state.digest());
        let old = match &mut self.map {
            Repr::Shared(m) => m.insert(name, Arc::new(state)).map(|o| o.digest()),
            Repr::Flat(m) => m.insert(name, state).map(|o| o.digest()),
        };
        if let Some(o) = old {
            self.digest = self.digest.wrapping_sub(o);
        }
        old.is_some()
    }

    /// Forgets `name`.
    pub(crate) fn remove(&mut self, name: &str) {
        let old = match &mut self.map {
            Repr::Shared(m) => m.remove(name).map(|o| o.digest()),
            Repr::Flat(m) => m.remove(name).map(|o| o.digest()),
        };
        if let Some(o) = old {
            self.digest = self.digest.wrapping_sub(o);
        }
    }

    /// `name`'s record to change, copied first if other nodes share it.
    /// The digest follows the change when the guard is dropped.
    pub(crate) fn state_mut(&mut self, name: &str) -> Option<StateMut<'_>> {
        let state = match &mut self.map {
            Repr::Shared(m) => Arc::make_mut(m.get_mut(name)?),
            Repr::Flat(m) => m.get_mut(name)?,
        };
        let before = state.digest();
        Some(StateMut {
            state,
            digest: &mut self.digest,
            before,
        })
    }

    /// The digest and the number of members: equal for two tables that
    /// would send the same push/pull state (up to a 64-bit collision).
    pub(crate) fn digest(&self) -> (u64, usize) {
        (self.digest, self.len())
    }

    /// The digest recomputed from scratch (tests check the running one
    /// against it).
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn digest_from_scratch(&self) -> u64 {
        self.values().fold(0u64, |d, s| d.wrapping_add(s.digest()))
    }
}

/// A member's record being changed; see [`Members::state_mut`].
pub(crate) struct StateMut<'m> {
    state: &'m mut NodeState,
    digest: &'m mut u64,
    before: u64,
}

impl Deref for StateMut<'_> {
    type Target = NodeState;

    fn deref(&self) -> &NodeState {
        self.state
    }
}

impl DerefMut for StateMut<'_> {
    fn deref_mut(&mut self) -> &mut NodeState {
        self.state
    }
}

impl Drop for StateMut<'_> {
    fn drop(&mut self) {
        *self.digest = self
            .digest
            .wrapping_sub(self.before)
            .wrapping_add(self.state.digest());
    }
}

/// Members, all alive, that nodes can start out knowing (see
/// [`Swim::preload`](crate::gossip::core::Swim::preload)). Built once and shared:
/// every node given the same table shares its entries, and copies only the
/// few it later changes, so N nodes that all know N members cost about N
/// entries, not N².
#[derive(Debug, Clone)]
pub(crate) struct MemberTable {
    pub(crate) nodes: imbl::Vector<Arc<str>>,
    pub(crate) map: Members,
}

impl Default for MemberTable {
    fn default() -> Self {
        MemberTable {
            nodes: imbl::Vector::new(),
            map: Members::shared(),
        }
    }
}

impl MemberTable {
    /// A table of `members` as they describe themselves, alive since `now`.
    pub(crate) fn new(
        members: impl IntoIterator<Item = NodeInfo>,
        now: Instant,
    ) -> Result<Self, SwimError> {
        let mut t = MemberTable::default();
        for m in members {
            let name: Arc<str> = Arc::from(m.name.as_str());
            let state = NodeState {
                name: name.clone(),
                addr: m.addr,
                meta: m.meta,
                incarnation: m.incarnation,
                state: NodeStateKind::Alive,
                state_change: now,
                vsn: m.vsn,
            };
            if t.map.insert(name.clone(), state) {
                return Err(SwimError::Preload(format!("{name} is listed twice")));
            }
            t.nodes.push_back(name);
        }
        Ok(t)
    }

    /// How many members.
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(name: &str, incarnation: u32) -> NodeState {
        NodeState {
            name: name.into(),
            addr: "10.0.0.1:8301".parse().unwrap(),
            meta: b"role=node".to_vec(),
            incarnation,
            state: NodeStateKind::Alive,
            state_change: Instant::ZERO,
            vsn: [1, 5, 2, 2, 5, 4],
        }
    }

    #[test]
    fn the_digest_follows_every_change_and_ignores_the_order() {
        let mut a = Members::default();
        let mut b = Members::default();
        for i in 0..50 {
            a.insert(format!("n{i}").into(), state(&format!("n{i}"), 1));
        }
        for i in (0..50).rev() {
            b.insert(format!("n{i}").into(), state(&format!("n{i}"), 1));
        }
        assert_eq!(a.digest(), b.digest());
        let shared = a.clone();
        if let Some(mut s) = a.state_mut("n7") {
            s.incarnation = 2;
        }
        assert_ne!(a.digest(), b.digest());
        // The clone shared the record; its digest stayed.
        assert_eq!(shared.digest(), b.digest());
        if let Some(mut s) = b.state_mut("n7") {
            s.incarnation = 2;
            // What push/pull does not send does not count.
            s.state_change = Instant::ZERO + std::time::Duration::from_secs(5);
        }
        assert_eq!(a.digest(), b.digest());
        a.remove("n3");
        assert_ne!(a.digest(), b.digest());
        b.remove("n3");
        a.insert("n9".into(), state("n9", 1));
        assert_eq!(a.digest(), b.digest());
        assert_eq!(a.digest().0, a.digest_from_scratch());
    }
}

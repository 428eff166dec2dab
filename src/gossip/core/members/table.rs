//! The member table of the SWIM core: every node this node knows, with a
//! running digest of what a push/pull would say about them.
//!
//! The map is persistent (`imbl`), so clones share structure: nodes
//! preloaded from one [`MemberTable`] share its records and copy only the
//! ones they change. Every change goes through [`Members`], which keeps the
//! digest: the wrapping sum of each record's [`wire::entry_digest`]. Two
//! nodes whose digests and sizes agree send the same push/pull state, which
//! a simulator's shortcuts use (see [`crate::gossip::memo`]); a real node never
//! reads it.

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

/// The member map: persistent, so clones share structure, and with a fixed
/// hasher so nothing about it varies from run to run (its order is what
/// push/pull sends). Values are boxed in `Arc`s so that copying a path of
/// the trie on a change copies pointers, not records.
pub(crate) type NodeMap = imbl::GenericHashMap<
    Arc<str>,
    Arc<NodeState>,
    BuildHasherDefault<NameHasher>,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// The member map and its digest. Reads go through `Deref`; there is no
/// `DerefMut`, so every change passes here and the digest cannot drift.
#[derive(Debug, Clone, Default)]
pub(crate) struct Members {
    map: NodeMap,
    digest: u64,
}

impl Deref for Members {
    type Target = NodeMap;

    fn deref(&self) -> &NodeMap {
        &self.map
    }
}

impl Members {
    /// Adds or replaces `name`'s record; the one replaced, if any.
    pub(crate) fn insert(&mut self, name: Arc<str>, state: NodeState) -> Option<Arc<NodeState>> {
        self.digest = self.digest.wrapping_add(state.digest());
        let old = self.map.insert(name, Arc::new(state));
        if let Some(o) = &old {
            self.digest = self.digest.wrapping_sub(o.digest());
        }
        old
    }

    /// Forgets `name`.
    pub(crate) fn remove(&mut self, name: &str) -> Option<Arc<NodeState>> {
        let old = self.map.remove(name);
        if let Some(o) = &old {
            self.digest = self.digest.wrapping_sub(o.digest());
        }
        old
    }

    /// `name`'s record to change, copied first if other nodes share it.
    /// The digest follows the change when the guard is dropped.
    pub(crate) fn state_mut(&mut self, name: &str) -> Option<StateMut<'_>> {
        let state = Arc::make_mut(self.map.get_mut(name)?);
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
        (self.digest, self.map.len())
    }

    /// The digest recomputed from scratch (tests check the running one
    /// against it).
    #[cfg(any(test, debug_assertions))]
    pub(crate) fn digest_from_scratch(&self) -> u64 {
        self.map
            .values()
            .fold(0u64, |d, s| d.wrapping_add(s.digest()))
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
#[derive(Debug, Clone, Default)]
pub(crate) struct MemberTable {
    pub(crate) nodes: imbl::Vector<Arc<str>>,
    pub(crate) map: Members,
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
            if t.map.insert(name.clone(), state).is_some() {
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

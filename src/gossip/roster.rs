//! The member list an agent shows: Serf's view on top of memberlist's.
//!
//! memberlist forgets a dead node after `gossip_to_the_dead_time`; Serf (and
//! so `consul members`) keeps failed members for `reconnect_timeout` (trying
//! to reach them again meanwhile) and departed ones for `tombstone_timeout`.
//! A suspect member is still alive here.

use std::net::SocketAddr;
use std::time::Duration;

use super::event::{EventKind, MemberEvent, NodeInfo};
use super::tags::{self, Tags};
use super::wire::Versions;
use crate::time::Instant;

/// A member's status, numbered as Serf (and Consul's API) number them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MemberStatus {
    /// Not known.
    None = 0,
    /// Reachable (possibly suspected).
    Alive = 1,
    /// Announced its departure; the notice is still spreading.
    Leaving = 2,
    /// Left on purpose.
    Left = 3,
    /// Declared failed.
    Failed = 4,
}

impl MemberStatus {
    /// Failed or left: gone, kept only until reaped.
    pub fn is_departed(self) -> bool {
        matches!(self, MemberStatus::Failed | MemberStatus::Left)
    }

    /// Serf's numeric code, as `/v1/agent/members` reports it.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The word `consul members` prints.
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::None => "none",
            MemberStatus::Alive => "alive",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

/// One member of the cluster as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Node name.
    pub name: String,
    /// Gossip address.
    pub addr: SocketAddr,
    /// The node's metadata as gossiped: its tags, encoded (see
    /// [`tags`](Self::tags)). Kept encoded because a node keeps a member
    /// per node of the cluster, and decoded maps cost ten times the bytes.
    pub meta: Vec<u8>,
    /// Serf status.
    pub status: MemberStatus,
    /// Whether memberlist currently suspects it (status stays alive).
    pub suspect: bool,
    /// Last known incarnation.
    pub incarnation: u32,
    /// `[pmin, pmax, pcur, dmin, dmax, dcur]`.
    pub vsn: Versions,
    /// When the status last changed.
    pub since: Instant,
}

impl Member {
    /// The tags decoded from the node's metadata (empty if unreadable; the
    /// roster warned when it arrived).
    pub fn tags(&self) -> Tags {
        tags::decode(&self.meta).unwrap_or_default()
    }
}

/// All members this node knows, including failed and departed ones until
/// they are reaped.
///
/// The map is persistent: rosters preloaded from one [`RosterTable`] share
/// its entries until they change them.
#[derive(Debug, Clone, Default)]
pub struct Roster {
    local: String,
    members: Members,
    /// Names of members failed or left: the reaper and the reconnect loop
    /// visit these few, not the whole pool, as Serf keeps its own lists.
    departed: std::collections::BTreeSet<String>,
}

/// Members by name, structurally shared between clones (records boxed, so
/// a change copies a path of pointers, not of records).
type Members = imbl::OrdMap<String, std::sync::Arc<Member>>;

/// What [`Roster::preload`] copies into every node of a pool: the members,
/// and which of them departed, found once for the whole pool rather than
/// by each of its 100,000 nodes walking the whole table.
#[derive(Debug, Clone)]
pub(crate) struct RosterTable {
    members: Members,
    departed: std::collections::BTreeSet<String>,
}

/// A table of `members`, all alive since `at`, for [`Roster::preload`].
pub(crate) fn roster_table(
    members: impl IntoIterator<Item = NodeInfo>,
    at: Instant,
) -> RosterTable {
    let members: Members = members
        .into_iter()
        .map(|n| {
            let m = Member {
                name: n.name.clone(),
                addr: super::wire::canonical(n.addr),
                meta: n.meta,
                status: MemberStatus::Alive,
                suspect: false,
                incarnation: n.incarnation,
                vsn: n.vsn,
                since: at,
            };
            (n.name, std::sync::Arc::new(m))
        })
        .collect();
    RosterTable {
        members,
        // Everyone starts alive.
        departed: Default::default(),
    }
}

impl Roster {
    /// An empty roster for the node named `local`.
    pub fn new(local: &str) -> Self {
        Roster {
            local: local.to_owned(),
            members: Members::new(),
            departed: Default::default(),
        }
    }

    /// Replaces the members with `table`, which must list this node.
    pub(crate) fn preload(&mut self, table: &RosterTable) -> Result<(), String> {
        if !table.members.contains_key(&self.local) {
            return Err(format!("the table does not list {}", self.local));
        }
        self.members = table.members.clone();
        self.departed = table.departed.clone();
        Ok(())
    }

    /// Applies one membership event.
    pub fn apply(&mut self, ev: &MemberEvent) {
        let n = &ev.node;
        let (status, suspect) = match ev.kind {
            EventKind::Joined | EventKind::Alive | EventKind::Updated | EventKind::Refuted => {
                (MemberStatus::Alive, false)
            }
            EventKind::Suspect => (MemberStatus::Alive, true),
            EventKind::Failed => (MemberStatus::Failed, false),
            // Our own departure is "leaving" until the notice has spread.
            EventKind::Left if n.name == self.local => (MemberStatus::Leaving, false),
            EventKind::Left => (MemberStatus::Left, false),
        };
        if let Err(e) = tags::decode(&n.meta) {
            tracing::warn!(member = %n.name, error = %e, "member has unreadable tags");
        }
        let since = match self.members.get(&n.name) {
            Some(m) if m.status == status => m.since,
            _ => ev.at,
        };
        if status.is_departed() {
            self.departed.insert(n.name.clone());
        } else {
            self.departed.remove(&n.name);
        }
        self.members.insert(
            n.name.clone(),
            std::sync::Arc::new(Member {
                name: n.name.clone(),
                addr: super::wire::canonical(n.addr),
                meta: n.meta.clone(),
                status,
                suspect,
                incarnation: n.incarnation,
                vsn: n.vsn,
                since,
            }),
        );
    }

    /// Marks our own departure as complete.
    pub fn local_left(&mut self, now: Instant) {
        if let Some(m) = self
            .members
            .get_mut(&self.local)
            .map(std::sync::Arc::make_mut)
        {
            m.status = MemberStatus::Left;
            m.since = now;
            self.departed.insert(self.local.clone());
        }
    }

    /// Forgets failed members after `reconnect_timeout` and departed ones
    /// after `tombstone_timeout`; returns the names forgotten.
    pub fn reap(
        &mut self,
        now: Instant,
        reconnect_timeout: Duration,
        tombstone_timeout: Duration,
    ) -> Vec<String> {
        // Found first, then removed: the map is shared, and touching only
        // what goes keeps the rest shared.
        let gone: Vec<String> = self
            .departed
            .iter()
            .filter_map(|name| self.members.get(name))
            .filter(|m| {
                let keep_for = match m.status {
                    MemberStatus::Failed => reconnect_timeout,
                    MemberStatus::Left => tombstone_timeout,
                    _ => return false,
                };
                m.name != self.local && now - m.since > keep_for
            })
            .map(|m| m.name.clone())
            .collect();
        for name in &gone {
            self.members.remove(name);
            self.departed.remove(name);
        }
        gone
    }

    /// Every member, by name.
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        self.members.values().map(|m| &**m)
    }

    /// How many members are neither failed nor left (this node included).
    pub fn alive_count(&self) -> usize {
        self.members.len().saturating_sub(self.departed.len())
    }

    /// One member.
    pub fn get(&self, name: &str) -> Option<&Member> {
        self.members.get(name).map(|m| &**m)
    }

    /// This node's own entry.
    pub fn local(&self) -> Option<&Member> {
        self.members.get(&self.local).map(|m| &**m)
    }

    /// Members currently failed.
    pub fn failed(&self) -> impl Iterator<Item = &Member> {
        self.departed
            .iter()
            .filter_map(|name| self.members.get(name))
            .map(|m| &**m)
            .filter(|m| m.status == MemberStatus::Failed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::event::NodeInfo;
    use crate::gossip::wire::NodeStateKind;

    fn ev(at: u64, kind: EventKind, name: &str) -> MemberEvent {
        MemberEvent {
            at: Instant::from_duration(Duration::from_secs(at)),
            kind,
            node: NodeInfo {
                name: name.into(),
                addr: "10.0.0.1:8301".parse().unwrap(),
                meta: tags::encode(&[("role".to_string(), "node".to_string())].into()).unwrap(),
                incarnation: 1,
                state: NodeStateKind::Alive,
                vsn: [1, 5, 2, 0, 0, 0],
            },
        }
    }

    #[test]
    fn statuses_follow_events_and_are_reaped() {
        let mut r = Roster::new("me");
        r.apply(&ev(0, EventKind::Joined, "me"));
        r.apply(&ev(0, EventKind::Joined, "a"));
        r.apply(&ev(0, EventKind::Joined, "b"));
        r.apply(&ev(1, EventKind::Suspect, "a"));
        assert_eq!(
            r.get("a").map(|m| (m.status, m.suspect)),
            Some((MemberStatus::Alive, true))
        );
        assert_eq!(r.get("a").unwrap().tags()["role"], "node");
        r.apply(&ev(2, EventKind::Failed, "a"));
        r.apply(&ev(3, EventKind::Left, "b"));
        assert_eq!(r.failed().count(), 1);
        let t = |s| Instant::from_duration(Duration::from_secs(s));
        assert!(r
            .reap(t(10), Duration::from_secs(20), Duration::from_secs(5))
            .contains(&"b".to_string()));
        assert_eq!(
            r.reap(t(30), Duration::from_secs(20), Duration::from_secs(5)),
            vec!["a".to_string()]
        );
        r.apply(&ev(31, EventKind::Left, "me"));
        assert_eq!(r.local().unwrap().status, MemberStatus::Leaving);
        r.local_left(t(32));
        assert_eq!(r.local().unwrap().status, MemberStatus::Left);
        assert!(
            r.reap(t(999), Duration::ZERO, Duration::ZERO).is_empty(),
            "never reap ourselves"
        );
    }
}

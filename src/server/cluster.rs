//! How servers form and keep their Raft group through gossip, as Consul's
//! do: every server gossips `role=consul`, its datacenter, its RPC port
//! and `bootstrap_expect`; once that many servers of the datacenter are
//! alive and none of them already belongs to a group, each bootstraps the
//! group with the same membership (openraft accepts the same initial
//! configuration from several nodes). A server that has ever been part of
//! a group never bootstraps again: its log says so.
//!
//! The leader then keeps the group and the catalog in step with gossip:
//! alive servers of the datacenter join as voters, servers that left are
//! removed at once, and servers that have failed for longer than a grace
//! period are removed too (autopilot's dead-server cleanup), but never so
//! many that the rest would lose a majority. It reconciles the catalog
//! ([`reconcile`](super::reconcile)) on every membership event and every
//! minute, and writes the coordinates agents sent in batches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};

use super::node::{Answer, ClientRequest, Server};
use super::reconcile::reconcile;
use crate::env::{Env, Task};
use crate::gossip::tags::Tags;
use crate::gossip::{Gossip, Member, MemberStatus};
use crate::time::Instant;

/// The role tag servers gossip (Consul's value, so Consul tools agree).
pub const SERVER_ROLE: &str = "consul";

/// A server, as gossip describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerMember {
    /// Node name.
    pub name: String,
    /// Raft ID (from the node ID).
    pub raft_id: u64,
    /// RPC address.
    pub rpc: SocketAddr,
    /// Datacenter.
    pub dc: String,
    /// Its `bootstrap_expect` (0: none).
    pub expect: u32,
    /// Gossip status.
    pub status: MemberStatus,
}

/// The tags a server adds to an agent's: role, RPC port, and expect.
pub fn server_tags(tags: &mut Tags, rpc_port: u16, expect: u32) {
    tags.insert("role".into(), SERVER_ROLE.into());
    tags.insert("port".into(), rpc_port.to_string());
    tags.insert("raft_vsn".into(), "3".into());
    if expect > 0 {
        tags.insert("expect".into(), expect.to_string());
    }
}

/// The server a member is, if it is one and says enough to be reached.
pub fn server_of(m: &Member) -> Option<ServerMember> {
    let tags = m.tags();
    if tags.get("role").map(String::as_str) != Some(SERVER_ROLE) {
        return None;
    }
    let port: u16 = tags.get("port")?.parse().ok()?;
    Some(ServerMember {
        name: m.name.clone(),
        raft_id: raft_id(tags.get("id")?)?,
        rpc: SocketAddr::new(m.addr.ip(), port),
        dc: tags.get("dc").cloned().unwrap_or_default(),
        expect: tags.get("expect").and_then(|e| e.parse().ok()).unwrap_or(0),
        status: m.status,
    })
}

/// A server's Raft ID: the first 64 bits of its node ID (a UUID), so every
/// server derives every other's from gossip alone.
pub fn raft_id(node_id: &str) -> Option<u64> {
    let b = crate::agent::config::parse_uuid(node_id)?;
    let mut head = [0u8; 8];
    head.copy_from_slice(&b[..8]);
    Some(u64::from_be_bytes(head))
}

/// Timing of the server's duties.
#[derive(Debug, Clone)]
pub struct DutyConfig {
    /// This server's datacenter.
    pub dc: String,
    /// Servers to wait for before bootstrapping (0: never bootstrap).
    pub expect: u32,
    /// How long a server must have failed before it is removed.
    pub dead_server_grace: Duration,
    /// Full catalog reconcile at least this often (Consul: 60 s).
    pub reconcile_interval: Duration,
    /// How often collected coordinates are written (Consul: 5 s).
    pub coordinate_period: Duration,
    /// With ACLs on: the leader makes the built-in policy and anonymous
    /// token, and this initial management token (its secret), if missing.
    pub acl_init: Option<Option<String>>,
}

impl DutyConfig {
    /// Consul's periods for a server of `dc` expecting `expect` servers.
    pub fn new(dc: &str, expect: u32, dead_server_grace: Duration) -> Self {
        DutyConfig {
            dc: dc.to_owned(),
            expect,
            dead_server_grace,
            reconcile_interval: Duration::from_secs(60),
            coordinate_period: Duration::from_secs(5),
            acl_init: None,
        }
    }
}

/// Starts the duties of `server`, driven by `gossip`'s membership.
pub fn spawn<E: Env>(env: E, server: Arc<Server<E>>, gossip: Gossip, config: DutyConfig) -> Task {
    let duties = Duties {
        env: env.clone(),
        server,
        gossip,
        config,
        failed_since: HashMap::new(),
    };
    env.spawn(duties.run())
}

struct Duties<E: Env> {
    env: E,
    server: Arc<Server<E>>,
    gossip: Gossip,
    config: DutyConfig,
    /// Voters gossip says have failed, and since when (by this leader's
    /// watch: a new leader starts the grace afresh).
    failed_since: HashMap<u64, Instant>,
}

/// How often the duties look around when nothing happens.
const TICK: Duration = Duration::from_secs(1);

/// What the duties react to in Raft's metrics. openraft publishes metrics
/// after everything its core does, any request of ours included, so
/// waking on every publication would spin.
#[derive(Debug, Clone, PartialEq)]
struct Role {
    state: openraft::ServerState,
    term: u64,
    leader: Option<u64>,
    membership: Option<openraft::LogId<u64>>,
}

impl Role {
    fn of(m: &openraft::RaftMetrics<u64, BasicNode>) -> Role {
        Role {
            state: m.state,
            term: m.current_term,
            leader: m.current_leader,
            membership: *m.membership_config.log_id(),
        }
    }

    /// Waits until the role differs from `last` (and records it); false
    /// once Raft has stopped.
    async fn changed(
        metrics: &mut tokio::sync::watch::Receiver<openraft::RaftMetrics<u64, BasicNode>>,
        last: &mut Role,
    ) -> bool {
        loop {
            if metrics.changed().await.is_err() {
                return false;
            }
            let now = Role::of(&metrics.borrow_and_update());
            if now != *last {
                *last = now;
                return true;
            }
        }
    }
}

impl<E: Env> Duties<E> {
    async fn run(mut self) {
        let Ok(mut events) = self.gossip.subscribe().await else {
            return;
        };
        let mut metrics = self.server.raft().metrics();
        let mut role = Role::of(&metrics.borrow());
        let mut initialized = false;
        let mut was_leader = false;
        let mut next_reconcile = self.env.now();
        let mut next_coordinates = self.env.now() + self.config.coordinate_period;
        let mut changed = true;
        loop {
            let Ok(members) = self.gossip.members().await else {
                return;
            };
            if !initialized {
                initialized = self.server.raft().is_initialized().await.unwrap_or(true);
                if !initialized {
                    self.try_bootstrap(&members).await;
                }
            }
            let leader = self.server.is_leader();
            if leader {
                let now = self.env.now();
                if !was_leader || changed || now >= next_reconcile {
                    self.init_acls().await;
                    self.reconcile_catalog(&members).await;
                    next_reconcile = now + self.config.reconcile_interval;
                }
                self.reconcile_raft(&members).await;
                if now >= next_coordinates {
                    self.server.flush_coordinates().await;
                    next_coordinates = now + self.config.coordinate_period;
                }
                self.server.expire_sessions().await;
            } else {
                self.failed_since.clear();
                self.server.expire_sessions().await;
            }
            was_leader = leader;
            changed = false;
            tokio::select! {
                ev = events.recv() => {
                    if ev.is_none() {
                        return;
                    }
                    // Take every event that is already here in one look.
                    while events.try_recv().is_ok() {}
                    changed = true;
                }
                changed = Role::changed(&mut metrics, &mut role) => {
                    if !changed {
                        return;
                    }
                }
                _ = self.env.sleep(TICK) => {}
            }
        }
    }

    /// Bootstraps the group if `expect` servers of our datacenter are alive
    /// and agree on `expect`, and none of them is already in a group.
    async fn try_bootstrap(&self, members: &[Member]) {
        let expect = self.config.expect;
        if expect == 0 {
            return;
        }
        let servers: Vec<ServerMember> = members
            .iter()
            .filter_map(server_of)
            .filter(|s| s.dc == self.config.dc && s.status == MemberStatus::Alive)
            .collect();
        if let Some(odd) = servers.iter().find(|s| s.expect != expect) {
            tracing::error!(
                server = %odd.name, theirs = odd.expect, ours = expect,
                "servers disagree on bootstrap_expect; not bootstrapping until they agree"
            );
            return;
        }
        if servers.len() < expect as usize {
            return;
        }
        // A group may already exist (we are a new server, or we restarted
        // with an empty data dir): then the leader adds us, and
        // bootstrapping a second group would split the datacenter.
        for s in servers.iter().filter(|s| s.raft_id != self.server.id()) {
            let deadline = self.env.now() + Duration::from_secs(2);
            match self
                .server
                .call_server(s.rpc, ClientRequest::Status, deadline)
                .await
            {
                Ok(r) => {
                    if let Ok(Answer::Status { peers, .. }) = r.answer {
                        if !peers.is_empty() {
                            tracing::info!(server = %s.name, "a Raft group exists; waiting to be added");
                            return;
                        }
                    }
                }
                Err(e) => {
                    tracing::info!(server = %s.name, error = %e, "cannot ask a server about its Raft group; not bootstrapping yet");
                    return;
                }
            }
        }
        let voters: BTreeMap<u64, BasicNode> = servers
            .iter()
            .map(|s| (s.raft_id, BasicNode::new(s.rpc.to_string())))
            .collect();
        tracing::info!(servers = voters.len(), "bootstrapping the Raft group");
        if let Err(e) = self.server.raft().initialize(voters).await {
            // NotAllowed: someone's configuration already arrived.
            tracing::debug!(error = %e, "bootstrap not needed");
        }
    }

    /// Writes what the ACL system needs and lacks (leader only).
    async fn init_acls(&self) {
        let Some(initial) = &self.config.acl_init else {
            return;
        };
        let commands = {
            let store = self.server.store();
            let store = store.read().unwrap_or_else(|e| e.into_inner());
            crate::acl::init_commands(store.acl(), initial.as_deref())
        };
        self.write_all(commands, "ACL initialisation").await;
    }

    /// Writes the leader's own `commands` in order, stopping at the first
    /// that fails (the next round retries what is still missing).
    async fn write_all(&self, commands: Vec<crate::state::Command>, what: &str) {
        for cmd in commands {
            let reply = self
                .server
                .client_request(ClientRequest::Write {
                    cmd: Box::new(cmd),
                    hops: 0,
                })
                .await;
            if let Err(e) = reply.answer {
                tracing::warn!(error = %e, "{what} write failed; will retry");
                return;
            }
        }
    }

    async fn reconcile_catalog(&self, members: &[Member]) {
        let commands = {
            let store = self.server.store();
            let store = store.read().unwrap_or_else(|e| e.into_inner());
            reconcile(members, &store, &self.config.dc)
        };
        self.write_all(commands, "catalog reconcile").await;
    }

    /// Adds alive servers as voters and removes departed and long-failed
    /// ones, one change at a time.
    async fn reconcile_raft(&mut self, members: &[Member]) {
        let raft = self.server.raft().clone();
        let metrics = raft.metrics().borrow().clone();
        let membership = metrics.membership_config.membership().clone();
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        let servers: HashMap<u64, ServerMember> = members
            .iter()
            .filter_map(server_of)
            .filter(|s| s.dc == self.config.dc)
            .map(|s| (s.raft_id, s))
            .collect();
        let me = self.server.id();

        for s in servers.values() {
            if s.status != MemberStatus::Alive || voters.contains(&s.raft_id) {
                continue;
            }
            tracing::info!(server = %s.name, "adding server to the Raft group");
            let node = BasicNode::new(s.rpc.to_string());
            if let Err(e) = raft.add_learner(s.raft_id, node, true).await {
                tracing::warn!(server = %s.name, error = %e, "cannot add server as learner");
                continue;
            }
            let add = ChangeMembers::AddVoterIds([s.raft_id].into());
            if let Err(e) = raft.change_membership(add, false).await {
                tracing::warn!(server = %s.name, error = %e, "cannot make server a voter");
            }
        }

        let now = self.env.now();
        let mut gone = Vec::new();
        let mut dead = Vec::new();
        for &id in voters.iter().filter(|id| **id != me) {
            match servers.get(&id).map(|s| s.status) {
                // Left, or reaped by gossip after leaving or failing.
                Some(MemberStatus::Left) | None => gone.push(id),
                Some(MemberStatus::Failed) => {
                    let since = *self.failed_since.entry(id).or_insert(now);
                    if now.saturating_duration_since(since) >= self.config.dead_server_grace {
                        dead.push(id);
                    }
                }
                Some(_) => {
                    self.failed_since.remove(&id);
                }
            }
        }
        // Never remove so many at once that the rest lose their majority
        // (autopilot's rule): the failed may come back.
        let max_dead = (voters.len().saturating_sub(1)) / 2;
        dead.truncate(max_dead);
        let remove: BTreeSet<u64> = gone.into_iter().chain(dead).collect();
        if remove.is_empty() {
            return;
        }
        tracing::info!(servers = ?remove, "removing departed or dead servers from the Raft group");
        match raft
            .change_membership(ChangeMembers::RemoveVoters(remove.clone()), false)
            .await
        {
            Ok(_) => {
                for id in &remove {
                    self.failed_since.remove(id);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot remove servers from the Raft group"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::tags;

    fn member(name: &str, tags: &[(&str, &str)]) -> Member {
        let tags: Tags = tags
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Member {
            name: name.into(),
            addr: "10.0.0.7:8301".parse().unwrap(),
            meta: tags::encode(&tags).unwrap(),
            status: MemberStatus::Alive,
            suspect: false,
            incarnation: 1,
            vsn: [1, 5, 2, 2, 5, 4],
            since: Instant::ZERO,
        }
    }

    #[test]
    fn servers_are_recognised_from_their_tags() {
        let id = "5f0cbb5c-2a43-4a5e-bd27-8f3d2b0e1a67";
        let m = member(
            "s1",
            &[
                ("role", "consul"),
                ("dc", "dc1"),
                ("port", "8300"),
                ("id", id),
                ("expect", "3"),
            ],
        );
        let s = server_of(&m).unwrap();
        assert_eq!(s.rpc, "10.0.0.7:8300".parse().unwrap());
        assert_eq!(s.expect, 3);
        assert_eq!(s.raft_id, 0x5f0c_bb5c_2a43_4a5e);
        assert_eq!(raft_id(id), Some(s.raft_id));
        // A client, a server without a port, and one with a bad ID.
        assert!(server_of(&member("c", &[("role", "node"), ("id", id)])).is_none());
        assert!(server_of(&member("s", &[("role", "consul"), ("id", id)])).is_none());
        assert!(server_of(&member(
            "s",
            &[("role", "consul"), ("port", "1"), ("id", "nope")]
        ))
        .is_none());
    }

    #[test]
    fn server_tags_say_role_port_and_expect() {
        let mut t = Tags::new();
        server_tags(&mut t, 8300, 3);
        assert_eq!(t["role"], "consul");
        assert_eq!(t["port"], "8300");
        assert_eq!(t["expect"], "3");
        let mut t = Tags::new();
        server_tags(&mut t, 9, 0);
        assert!(!t.contains_key("expect"));
    }
}

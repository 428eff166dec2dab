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
//! period are removed too (autopilot's dead-server cleanup, unless its
//! configuration turns it off), but never so many that the rest would lose
//! a majority or fall below its `MinQuorum`. It reconciles the catalog
//! ([`reconcile`](super::reconcile)) on every membership event and every
//! minute, and writes the coordinates agents sent in batches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::{BasicNode, ChangeMembers};

use super::member::{server_of, ServerMember};
use super::node::Server;
use super::reconcile::reconcile;
use super::request::{Answer, ClientRequest};
use crate::env::{Env, Task};
use crate::gossip::{Gossip, Member, MemberStatus};
use crate::time::Instant;

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
    /// On the first server of a `cairn agent -secure` cluster: the agent
    /// CA, which the leader stores if the cluster has none.
    pub agent_ca: Option<crate::state::join::AgentCa>,
    /// Autopilot's settings from the agent's configuration, which the
    /// leader stores while the cluster has none (`None`: the defaults).
    pub autopilot: Option<crate::state::AutopilotConfig>,
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
            agent_ca: None,
            autopilot: None,
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
                    self.init_autopilot().await;
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
            let mut commands = super::acl::init_commands(store.acl(), initial.as_deref());
            if let Some(ca) = &self.config.agent_ca {
                if store.acl().join().agent_ca().is_none() {
                    commands.push(crate::state::Command::AgentCaSet(Box::new(ca.clone())));
                }
            }
            commands
        };
        self.write_all(commands, "ACL initialisation").await;
    }

    /// Stores the configured autopilot settings if the cluster has none
    /// yet (as Consul's leader does on taking office).
    async fn init_autopilot(&self) {
        let Some(config) = &self.config.autopilot else {
            return;
        };
        if self
            .server
            .store()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .autopilot_stored()
        {
            return;
        }
        let cmd = crate::state::Command::AutopilotSet {
            config: Box::new(config.clone()),
            cas: Some(0),
        };
        self.write_all(vec![cmd], "autopilot initialisation").await;
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
        // (autopilot's rule): the failed may come back. Operators may turn
        // the cleanup off, or keep a minimum number of voters.
        let autopilot = self
            .server
            .store()
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .autopilot();
        let above_min = voters.len().saturating_sub(autopilot.min_quorum as usize);
        let max_dead = match autopilot.cleanup_dead_servers {
            true => ((voters.len().saturating_sub(1)) / 2).min(above_min),
            false => 0,
        };
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

//! The state store: what the servers agree on. The catalog (nodes, their
//! services and health checks), the KV store, sessions and network
//! coordinates, as plain data structures changed only by [`Command`]s, which
//! the Raft state machine applies in log order. Equal logs give equal
//! stores, on every server and in every simulated run.
//!
//! Every table keeps the Raft index of its last change, as Consul's does,
//! and a [`WatchHub`] wakes readers waiting for a table, or a KV prefix, to
//! pass an index they have seen: the basis of blocking queries.
//!
//! Time enters only through the commands: the leader stamps each with its
//! clock (`at_ms`), so lock delays come out the same on every replica.

pub mod acl;
mod catalog;
mod connect;
mod error;
pub mod join;
mod kv;
mod operator;
mod query;
mod session;
mod txn;
mod watch;

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use self::error::invalid;

pub use catalog::{
    Check, Health, Locality, Node, Service, ServiceAddress, ServiceProxy, Upstream, Weights,
};
pub use connect::{CaRoot, CaState};
pub use error::StateError;
pub use kv::{KvEntry, KvOp};
pub use operator::AutopilotConfig;
pub use query::{
    resolve_query, PreparedQuery, QueryDns, QueryFailover, QueryService, QueryTemplate,
};
pub use session::{Behavior, Session};
pub use txn::{TxnError, TxnOp, TxnOutcome, TxnVerb, MAX_TXN_OPS};
pub use watch::WatchHub;

use crate::coordinate::Coordinate;

/// The tables of the store, each with its own index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Table {
    /// Catalog nodes.
    Nodes,
    /// Services registered on nodes.
    Services,
    /// Health checks.
    Checks,
    /// KV entries (and their tombstones).
    Kvs,
    /// Sessions.
    Sessions,
    /// Network coordinates.
    Coordinates,
    /// Connect's CA roots.
    Connect,
    /// Intentions.
    Intentions,
    /// Prepared queries.
    Queries,
    /// ACL tokens, policies and roles.
    Acl,
    /// Autopilot's configuration.
    Autopilot,
}

impl Table {
    /// Every table.
    pub const ALL: [Table; 11] = [
        Table::Nodes,
        Table::Services,
        Table::Checks,
        Table::Kvs,
        Table::Sessions,
        Table::Coordinates,
        Table::Connect,
        Table::Intentions,
        Table::Queries,
        Table::Acl,
        Table::Autopilot,
    ];
}

/// A change to the store, as the Raft log carries it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// Catalog registration: a node, optionally one of its services, and
    /// checks (Consul's `/v1/catalog/register`).
    Register {
        /// The node (its indexes are ignored).
        node: Node,
        /// A service on it (boxed: it is by far the largest field).
        service: Option<Box<Service>>,
        /// Checks on the node or on its services.
        checks: Vec<Check>,
    },
    /// Catalog deregistration: a check, a service (with its checks), or the
    /// whole node when neither is named.
    Deregister {
        /// The node.
        node: String,
        /// The service to remove.
        service_id: Option<String>,
        /// The check to remove.
        check_id: Option<String>,
    },
    /// A KV operation.
    Kv {
        /// What to do.
        op: KvOp,
        /// The key (for `DeleteTree`, the prefix).
        key: String,
        /// New value.
        value: Vec<u8>,
        /// Opaque flags stored with the value.
        flags: u64,
    },
    /// Create a session (the leader picked its ID).
    SessionCreate(Session),
    /// Destroy a session, releasing or deleting what it holds.
    SessionDestroy {
        /// Its ID.
        id: String,
    },
    /// Store nodes' network coordinates; updates for unknown nodes are
    /// skipped.
    Coordinates(Vec<(String, Coordinate)>),
    /// Forget KV tombstones at or below an index (they keep prefix indexes
    /// from going backwards after deletes until every reader has moved on).
    ReapTombstones {
        /// Highest index to forget.
        up_to: u64,
    },
    /// KV operations applied all or nothing (Consul's `/v1/txn`).
    Txn(Vec<TxnOp>),
    /// Make a new CA root the active one.
    CaSetRoot {
        /// The cluster ID (used by the first root only).
        cluster_id: String,
        /// The root and its key.
        root: Box<crate::connect::ca::RootKeys>,
        /// Only when there is no root yet (creating the first one).
        only_if_none: bool,
        /// A new lifetime for leaves, in ms.
        leaf_ttl_ms: Option<u64>,
    },
    /// Create or replace an intention.
    IntentionSet(Box<crate::connect::intention::Intention>),
    /// Delete an intention.
    IntentionDelete {
        /// Its ID.
        id: String,
    },
    /// Create or replace a prepared query.
    QuerySet(Box<PreparedQuery>),
    /// Delete a prepared query.
    QueryDelete {
        /// Its ID.
        id: String,
    },
    /// Make the bootstrap token (refused, as `false`, once done).
    AclBootstrap(Box<crate::acl::Token>),
    /// Create or replace an ACL token.
    AclTokenSet(Box<crate::acl::Token>),
    /// Delete an ACL token.
    AclTokenDelete {
        /// Its accessor ID.
        accessor_id: String,
    },
    /// Create or replace an ACL policy.
    AclPolicySet(Box<crate::acl::Policy>),
    /// Delete an ACL policy.
    AclPolicyDelete {
        /// Its ID.
        id: String,
    },
    /// Create or replace an ACL role.
    AclRoleSet(Box<crate::acl::Role>),
    /// Delete an ACL role.
    AclRoleDelete {
        /// Its ID.
        id: String,
    },
    /// Create or replace an auth method.
    AclAuthMethodSet(Box<crate::acl::AuthMethod>),
    /// Delete an auth method, its binding rules and its tokens.
    AclAuthMethodDelete {
        /// Its name.
        name: String,
    },
    /// Create or replace a binding rule.
    AclBindingRuleSet(Box<crate::acl::BindingRule>),
    /// Delete a binding rule.
    AclBindingRuleDelete {
        /// Its ID.
        id: String,
    },
    /// A secondary datacenter's copy of the primary's ACLs: its policies
    /// and roles replace ours, and with `tokens`, its global tokens replace
    /// our global ones (local tokens stay).
    AclReplicate {
        /// The primary's policies.
        policies: Vec<crate::acl::Policy>,
        /// The primary's roles.
        roles: Vec<crate::acl::Role>,
        /// The primary's global tokens, when tokens are replicated.
        tokens: Option<Vec<crate::acl::Token>>,
    },
    /// Store the agent CA of a `cairn agent -secure` cluster (the first
    /// server's leader does, once).
    AgentCaSet(Box<join::AgentCa>),
    /// Keep a one-time join ticket under its secret's hash.
    JoinTicketCreate {
        /// The hex SHA-256 of the join token's secret.
        hash: String,
        /// What it admits.
        ticket: Box<join::JoinTicket>,
    },
    /// Spend a join ticket for a joining agent, making its agent token;
    /// refused if the ticket is unknown, used, expired or for the other
    /// role.
    JoinTicketUse {
        /// The hex SHA-256 of the secret the agent brought.
        hash: String,
        /// Whether the agent joins as a server.
        server: bool,
        /// Its node name.
        node: String,
        /// This datacenter (the token's node identity names it).
        dc: String,
        /// The leader's clock when it asked (Unix ms): expiry is judged
        /// by it, so every server applies the entry alike.
        at_ms: u64,
    },
    /// Set autopilot's configuration (with `cas`: only if its
    /// `ModifyIndex` is that).
    AutopilotSet {
        /// The new settings (indexes are ignored).
        config: Box<AutopilotConfig>,
        /// Check-and-set index.
        cas: Option<u64>,
    },
    /// Replace the whole store with a snapshot's contents (`PUT
    /// /v1/snapshot`). Every table's index moves to this entry's, so no
    /// index goes backwards and every blocked reader wakes.
    Restore {
        /// The snapshot, as [`Store::snapshot`] writes it.
        snapshot: String,
    },
    /// Several independent commands in one log entry, applied in order,
    /// each with its own result (the leader groups concurrent writes so
    /// that one entry, and one round of replication, carries them all).
    Batch(Vec<Command>),
}

/// What an applied command gives back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Applied {
    /// Done (`true`), or refused as the protocol expects (`false`: a
    /// failed CAS, a lock held by another session).
    Done(bool),
    /// A transaction's results or failures.
    Txn(TxnOutcome),
}

/// The data, as a snapshot holds it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Data {
    nodes: BTreeMap<String, Node>,
    services: BTreeMap<(String, String), Service>,
    checks: BTreeMap<(String, String), Check>,
    kv: BTreeMap<String, KvEntry>,
    tombstones: BTreeMap<String, u64>,
    sessions: BTreeMap<String, Session>,
    coordinates: BTreeMap<String, Coordinate>,
    ca: CaState,
    intentions: BTreeMap<String, crate::connect::intention::Intention>,
    queries: BTreeMap<String, PreparedQuery>,
    acl: acl::AclState,
    /// Autopilot's configuration, once an operator set it.
    autopilot: Option<AutopilotConfig>,
    /// Keys whose lock was lost, and until when (ms) none may take it.
    lock_delays: BTreeMap<String, u64>,
    indexes: BTreeMap<Table, u64>,
    last_applied: u64,
    /// Each service name's instances, as `services` keys: a lookup by name
    /// (DNS, health/service) reads its instances, not every service.
    /// Derived from `services`; rebuilt when a snapshot is loaded.
    #[serde(skip)]
    by_name: BTreeMap<String, std::collections::BTreeSet<(String, String)>>,
}

impl Data {
    /// Rebuilds the derived index from `services`.
    fn reindex(&mut self) {
        self.acl.reindex();
        self.by_name.clear();
        for (key, s) in &self.services {
            self.by_name
                .entry(s.service.clone())
                .or_default()
                .insert(key.clone());
        }
    }
}

/// The store; see the [module docs](self).
#[derive(Debug, Default)]
pub struct Store {
    data: Data,
    hub: Arc<WatchHub>,
}

impl Store {
    /// An empty store.
    pub fn new() -> Self {
        Store::default()
    }

    /// Applies `cmd`, the log entry at `index`, stamped by the leader at
    /// `at_ms`. `Ok(false)` is a refusal the protocol expects (a failed
    /// CAS, a lock held by another session); `Err` says what was wrong
    /// with the request. Either way the index counts as applied.
    pub fn apply(&mut self, index: u64, at_ms: u64, cmd: &Command) -> Result<bool, StateError> {
        self.apply_outcome(index, at_ms, cmd).map(|a| match a {
            Applied::Done(ok) => ok,
            Applied::Txn(t) => t.is_ok(),
        })
    }

    /// [`apply`](Self::apply), with a transaction's full outcome.
    pub fn apply_outcome(
        &mut self,
        index: u64,
        at_ms: u64,
        cmd: &Command,
    ) -> Result<Applied, StateError> {
        self.data.last_applied = self.data.last_applied.max(index);
        if let Command::Restore { snapshot } = cmd {
            self.restore_at(index, snapshot.as_bytes())?;
            return Ok(Applied::Done(true));
        }
        // Lock delays that ran out are forgotten (they are timed by the
        // commands, so every replica forgets them at the same entry).
        if !self.data.lock_delays.is_empty() {
            self.data.lock_delays.retain(|_, until| *until > at_ms);
        }
        let mut tx = Tx {
            data: &mut self.data,
            index,
            at_ms,
            touched: Vec::new(),
            keys: Vec::new(),
            trees: Vec::new(),
        };
        let result = tx.apply_one(cmd);
        let Tx {
            touched,
            keys,
            trees,
            ..
        } = tx;
        for t in touched {
            self.hub.touch_table(t, index);
        }
        for k in keys {
            self.hub.touch_key(&k, index);
        }
        for p in trees {
            self.hub.touch_tree(&p, index);
        }
        result
    }

    /// Replaces the contents with a snapshot's (a follower catching up),
    /// keeping the watchers: every waiting reader wakes, since its data may
    /// have changed in any way.
    pub fn restore_in_place(&mut self, bytes: &[u8]) -> Result<(), StateError> {
        self.data = Store::restore(bytes)?.data;
        for t in Table::ALL {
            self.hub.touch_table(t, self.index(t));
        }
        self.hub.touch_all_prefixes(self.data.last_applied);
        Ok(())
    }

    /// Replaces the contents with a snapshot's, as the log entry at
    /// `index`: nothing changes when the snapshot cannot be read.
    fn restore_at(&mut self, index: u64, bytes: &[u8]) -> Result<(), StateError> {
        let mut data = Store::restore(bytes)?.data;
        data.last_applied = index;
        for t in Table::ALL {
            data.indexes.insert(t, index);
        }
        self.data = data;
        for t in Table::ALL {
            self.hub.touch_table(t, index);
        }
        self.hub.touch_all_prefixes(index);
        Ok(())
    }

    /// Autopilot's configuration (Consul's defaults until one is set).
    pub fn autopilot(&self) -> AutopilotConfig {
        self.data.autopilot.clone().unwrap_or_default()
    }

    /// Whether an operator (or the first leader) stored autopilot's
    /// settings.
    pub fn autopilot_stored(&self) -> bool {
        self.data.autopilot.is_some()
    }

    /// The index of `table`'s last change.
    pub fn index(&self, table: Table) -> u64 {
        self.data.indexes.get(&table).copied().unwrap_or(0)
    }

    /// The highest log index applied.
    pub fn last_applied(&self) -> u64 {
        self.data.last_applied
    }

    /// Every node's network coordinate, by node.
    pub fn coordinates(&self) -> impl Iterator<Item = (&String, &Coordinate)> {
        self.data.coordinates.iter()
    }

    /// One node's network coordinate.
    pub fn coordinate(&self, node: &str) -> Option<&Coordinate> {
        self.data.coordinates.get(node)
    }

    /// The CA, private keys included (servers only).
    pub fn ca(&self) -> &CaState {
        &self.data.ca
    }

    /// Every intention, by ID.
    pub fn intentions(&self) -> impl Iterator<Item = &crate::connect::intention::Intention> {
        self.data.intentions.values()
    }

    /// Tokens, policies and roles.
    pub fn acl(&self) -> &acl::AclState {
        &self.data.acl
    }

    /// Every prepared query, by ID.
    pub fn queries(&self) -> impl Iterator<Item = &PreparedQuery> {
        self.data.queries.values()
    }

    /// Change notifications, for blocking readers.
    pub fn watches(&self) -> Arc<WatchHub> {
        self.hub.clone()
    }

    /// The store's contents, for a Raft snapshot.
    pub fn snapshot(&self) -> Vec<u8> {
        // Plain data with string and tuple keys: serialising cannot fail.
        serde_json::to_vec(&SnapshotFile::from(&self.data)).unwrap_or_default()
    }

    /// A store from a [`snapshot`](Self::snapshot).
    pub fn restore(bytes: &[u8]) -> Result<Store, StateError> {
        let file: SnapshotFile =
            serde_json::from_slice(bytes).map_err(|e| StateError::Snapshot(e.to_string()))?;
        if file.format != SNAPSHOT_FORMAT {
            return Err(StateError::Snapshot(format!(
                "format {} (this build reads {SNAPSHOT_FORMAT})",
                file.format
            )));
        }
        let store = Store {
            data: file.into_data(),
            hub: Arc::default(),
        };
        for t in Table::ALL {
            store.hub.touch_table(t, store.index(t));
        }
        Ok(store)
    }
}

const SNAPSHOT_FORMAT: u32 = 1;

/// A snapshot on disk: JSON maps need string keys, so the tables keyed by
/// (node, id) travel as lists.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    format: u32,
    nodes: Vec<Node>,
    services: Vec<(String, Service)>,
    checks: Vec<Check>,
    kv: Vec<KvEntry>,
    tombstones: BTreeMap<String, u64>,
    sessions: Vec<Session>,
    coordinates: BTreeMap<String, Coordinate>,
    lock_delays: BTreeMap<String, u64>,
    indexes: Vec<(Table, u64)>,
    last_applied: u64,
    #[serde(default)]
    ca: CaState,
    #[serde(default)]
    intentions: Vec<crate::connect::intention::Intention>,
    #[serde(default)]
    queries: Vec<PreparedQuery>,
    /// Left out while empty, so stores without ACLs keep their bytes.
    #[serde(default, skip_serializing_if = "acl::AclState::is_empty")]
    acl: acl::AclState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    autopilot: Option<AutopilotConfig>,
}

impl From<&Data> for SnapshotFile {
    fn from(d: &Data) -> Self {
        // Named one by one, with no `..`: a table added to `Data` does not
        // compile until the snapshot carries it.
        let Data {
            nodes,
            services,
            checks,
            kv,
            tombstones,
            sessions,
            coordinates,
            ca,
            intentions,
            queries,
            acl,
            autopilot,
            lock_delays,
            indexes,
            last_applied,
            by_name: _,
        } = d;
        SnapshotFile {
            format: SNAPSHOT_FORMAT,
            nodes: nodes.values().cloned().collect(),
            services: services
                .iter()
                .map(|((node, _), s)| (node.clone(), s.clone()))
                .collect(),
            checks: checks.values().cloned().collect(),
            kv: kv.values().cloned().collect(),
            tombstones: tombstones.clone(),
            sessions: sessions.values().cloned().collect(),
            coordinates: coordinates.clone(),
            lock_delays: lock_delays.clone(),
            indexes: indexes.iter().map(|(t, i)| (*t, *i)).collect(),
            last_applied: *last_applied,
            ca: ca.clone(),
            intentions: intentions.values().cloned().collect(),
            queries: queries.values().cloned().collect(),
            acl: acl.clone(),
            autopilot: autopilot.clone(),
        }
    }
}

impl SnapshotFile {
    fn into_data(self) -> Data {
        let mut data = Data {
            nodes: self
                .nodes
                .into_iter()
                .map(|n| (n.node.clone(), n))
                .collect(),
            services: self
                .services
                .into_iter()
                .map(|(node, s)| ((node, s.id.clone()), s))
                .collect(),
            checks: self
                .checks
                .into_iter()
                .map(|c| ((c.node.clone(), c.check_id.clone()), c))
                .collect(),
            kv: self.kv.into_iter().map(|e| (e.key.clone(), e)).collect(),
            tombstones: self.tombstones,
            sessions: self
                .sessions
                .into_iter()
                .map(|s| (s.id.clone(), s))
                .collect(),
            coordinates: self.coordinates,
            lock_delays: self.lock_delays,
            indexes: self.indexes.into_iter().collect(),
            last_applied: self.last_applied,
            ca: self.ca,
            intentions: self
                .intentions
                .into_iter()
                .map(|i| (i.id.clone(), i))
                .collect(),
            queries: self
                .queries
                .into_iter()
                .map(|q| (q.id.clone(), q))
                .collect(),
            acl: self.acl,
            autopilot: self.autopilot,
            by_name: BTreeMap::new(),
        };
        data.reindex();
        data
    }
}

/// One command being applied: the data, and what it touched (announced
/// to the watchers once it is done).
struct Tx<'a> {
    data: &'a mut Data,
    index: u64,
    at_ms: u64,
    touched: Vec<Table>,
    keys: Vec<String>,
    trees: Vec<String>,
}

impl Tx<'_> {
    /// Applies one command (a batch's commands go one by one).
    fn apply_one(&mut self, cmd: &Command) -> Result<Applied, StateError> {
        let done = match cmd {
            Command::Txn(ops) => return self.txn(ops).map(Applied::Txn),
            Command::Register {
                node,
                service,
                checks,
            } => self
                .register(node, service.as_deref(), checks)
                .map(|()| true),
            Command::Deregister {
                node,
                service_id,
                check_id,
            } => self
                .deregister(node, service_id.as_deref(), check_id.as_deref())
                .map(|()| true),
            Command::Kv {
                op,
                key,
                value,
                flags,
            } => self.kv(op, key, value, *flags),
            Command::SessionCreate(s) => self.session_create(s).map(|()| true),
            Command::SessionDestroy { id } => Ok(self.session_destroy(id)),
            Command::Coordinates(updates) => {
                self.coordinates(updates);
                Ok(true)
            }
            Command::ReapTombstones { up_to } => {
                self.data.tombstones.retain(|_, i| *i > *up_to);
                Ok(true)
            }
            Command::CaSetRoot {
                cluster_id,
                root,
                only_if_none,
                leaf_ttl_ms,
            } => self.ca_set_root(cluster_id, root, *only_if_none, *leaf_ttl_ms),
            Command::IntentionSet(i) => self.intention_set(i).map(|()| true),
            Command::IntentionDelete { id } => Ok(self.intention_delete(id)),
            Command::QuerySet(q) => self.query_set(q).map(|()| true),
            Command::QueryDelete { id } => Ok(self.query_delete(id)),
            Command::AclBootstrap(t) => self.acl(|a, i| a.bootstrap(i, t)),
            Command::AclTokenSet(t) => self.acl(|a, i| a.set_token(i, t)),
            Command::AclTokenDelete { accessor_id } => self.acl(|a, _| a.delete_token(accessor_id)),
            Command::AclPolicySet(p) => self.acl(|a, i| a.set_policy(i, p)),
            Command::AclPolicyDelete { id } => self.acl(|a, _| a.delete_policy(id)),
            Command::AclRoleSet(r) => self.acl(|a, i| a.set_role(i, r)),
            Command::AclRoleDelete { id } => self.acl(|a, _| a.delete_role(id)),
            Command::AclAuthMethodSet(m) => self.acl(|a, i| a.set_auth_method(i, m)),
            Command::AclAuthMethodDelete { name } => self.acl(|a, _| a.delete_auth_method(name)),
            Command::AclBindingRuleSet(r) => self.acl(|a, i| a.set_binding_rule(i, r)),
            Command::AclBindingRuleDelete { id } => self.acl(|a, _| a.delete_binding_rule(id)),
            Command::AclReplicate {
                policies,
                roles,
                tokens,
            } => self.acl(|a, _| Ok(a.replicate(policies, roles, tokens.as_deref()))),
            Command::AgentCaSet(ca) => self.acl(|a, _| a.set_agent_ca(ca)),
            Command::JoinTicketCreate { hash, ticket } => {
                self.acl(|a, _| a.create_join_ticket(hash, ticket))
            }
            Command::JoinTicketUse {
                hash,
                server,
                node,
                dc,
                at_ms,
            } => self.acl(|a, i| a.use_join_ticket(i, hash, *server, node, dc, *at_ms)),
            Command::AutopilotSet { config, cas } => self.autopilot_set(config, *cas),
            // `apply_outcome` takes restores before a `Tx` exists.
            Command::Restore { .. } => Err(invalid("a restore replaces the store whole")),
            // The state machine unpacks batches; one inside another is no
            // leader's doing.
            Command::Batch(_) => Err(invalid("a batch inside a batch")),
        };
        done.map(Applied::Done)
    }

    /// Applies an ACL change; one that changed something moves the ACL
    /// table's index.
    fn acl(
        &mut self,
        f: impl FnOnce(&mut acl::AclState, u64) -> Result<bool, StateError>,
    ) -> Result<bool, StateError> {
        let changed = f(&mut self.data.acl, self.index)?;
        if changed {
            self.touch(Table::Acl);
        }
        Ok(changed)
    }

    /// Records that `table` changed at this index.
    fn touch(&mut self, table: Table) {
        self.data.indexes.insert(table, self.index);
        if !self.touched.contains(&table) {
            self.touched.push(table);
        }
    }

    fn coordinates(&mut self, updates: &[(String, Coordinate)]) {
        let mut any = false;
        for (node, c) in updates {
            if self.data.nodes.contains_key(node) {
                self.data.coordinates.insert(node.clone(), c.clone());
                any = true;
            }
        }
        if any {
            self.touch(Table::Coordinates);
        }
    }
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;

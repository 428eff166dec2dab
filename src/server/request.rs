//! What agents, other servers and a server's own duties send to a
//! server's RPC port, and what comes back: the vocabulary `agent`, `api`
//! and `dns` speak to the servers, below the server that answers it.

use serde::{Deserialize, Serialize};

use crate::consensus::{RaftReply, RaftRequest};
use crate::coordinate::Coordinate;
use crate::state::{Check, Health, KvEntry, Node, Service, Session, Table};

/// TLS for a server's RPC: how it dials (`None`: plain TCP) and how it
/// answers (`None`: plain TCP only).
pub type RpcTls = (Option<crate::rpc::ClientTls>, Option<crate::rpc::ServerTls>);

/// A message to a server's RPC port.
#[derive(Debug, Serialize, Deserialize)]
pub enum ServerRpc {
    /// Among servers: Raft.
    Raft(RaftRequest),
    /// From agents and other servers: a client request.
    Client(ClientRequest),
}

/// The answer to a [`ServerRpc`].
#[derive(Debug, Serialize, Deserialize)]
pub enum ServerReply {
    /// To `Raft`.
    Raft(RaftReply),
    /// To `Client`.
    Client(ClientReply),
}

/// What a client asks of the servers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ClientRequest {
    /// Change the store.
    Write {
        /// The change.
        cmd: Box<crate::state::Command>,
        /// Servers it has passed through (forwarding stops after a few).
        hops: u8,
    },
    /// Read from the store.
    Read {
        /// What and how.
        read: Read,
        /// Servers it has passed through.
        hops: u8,
    },
    /// Agents' network coordinates. The leader collects them and writes
    /// them in batches, so a large cluster's updates cost a few log
    /// entries, not one each.
    Coordinates {
        /// Node name and its coordinate.
        updates: Vec<(String, Coordinate)>,
        /// Servers it has passed through.
        hops: u8,
    },
    /// This server's own view of the Raft group (never forwarded).
    Status,
    /// Ask the CA (the leader's) for something.
    Ca {
        /// What.
        op: CaOp,
        /// Servers it has passed through.
        hops: u8,
    },
    /// Every datacenter this server knows (its own, and the WAN pool's),
    /// its own first, then nearest first by WAN RTT estimate.
    Datacenters,
    /// A request for another datacenter: the server sends it on to one of
    /// that datacenter's servers, found in the WAN pool.
    Remote {
        /// The datacenter.
        dc: String,
        /// The request, as that datacenter's servers take it.
        req: Box<ClientRequest>,
    },
    /// Restart a TTL session's timer (the leader keeps the timers).
    SessionRenew {
        /// The session.
        id: String,
        /// Servers it has passed through.
        hops: u8,
    },
    /// An operator's request about the Raft group.
    Operator {
        /// What.
        op: OperatorOp,
        /// Servers it has passed through.
        hops: u8,
    },
    /// Trade a bearer token for an ACL token through an auth method
    /// (answered on the leader; anyone may ask).
    Login {
        /// The login.
        login: Box<Login>,
        /// Servers it has passed through.
        hops: u8,
    },
    /// Delete the caller's token, if a login made it.
    Logout {
        /// Servers it has passed through.
        hops: u8,
    },
    /// The leader's ACL replication status (`/v1/acl/replication`).
    AclReplication {
        /// Servers it has passed through.
        hops: u8,
    },
    /// An agent joining with a one-time join token asks for its
    /// certificate and agent token (answered on the leader). The one
    /// request a connection without a client certificate may make.
    Join {
        /// The request.
        join: Box<JoinRequest>,
        /// Servers it has passed through.
        hops: u8,
    },
    /// A request made with an ACL token (its secret). With ACLs on, a
    /// request without one is the anonymous token's.
    Acl {
        /// The token's secret.
        token: String,
        /// The request.
        req: Box<ClientRequest>,
    },
}

impl ClientRequest {
    /// This request as sent to datacenter `dc` (`None`: this one): through
    /// a local server, to one of that datacenter's servers.
    pub fn in_dc(self, dc: Option<&str>) -> ClientRequest {
        match dc {
            Some(dc) => ClientRequest::Remote {
                dc: dc.to_string(),
                req: Box::new(self),
            },
            None => self,
        }
    }

    /// This request made with `token` (replacing any token it had).
    pub fn with_token(self, token: &str) -> ClientRequest {
        ClientRequest::Acl {
            token: token.to_string(),
            req: Box::new(self.without_token().1),
        }
    }

    /// Whether it reads the caller's own token (`/v1/acl/token/self`).
    pub fn reads_own_token(&self) -> bool {
        matches!(self, ClientRequest::Read { read, .. } if matches!(read.query, Query::AclResolve(_)))
    }

    /// The token this request was made with, and the request itself.
    pub fn without_token(self) -> (Option<String>, ClientRequest) {
        match self {
            ClientRequest::Acl { token, req } => (Some(token), req.without_token().1),
            other => (None, other),
        }
    }

    /// How many servers it has passed through, where it counts them.
    pub fn hops_mut(&mut self) -> Option<&mut u8> {
        match self {
            ClientRequest::Write { hops, .. }
            | ClientRequest::Read { hops, .. }
            | ClientRequest::Coordinates { hops, .. }
            | ClientRequest::Ca { hops, .. }
            | ClientRequest::SessionRenew { hops, .. }
            | ClientRequest::Operator { hops, .. }
            | ClientRequest::Login { hops, .. }
            | ClientRequest::Logout { hops }
            | ClientRequest::AclReplication { hops }
            | ClientRequest::Join { hops, .. } => Some(hops),
            ClientRequest::Acl { req, .. } => req.hops_mut(),
            ClientRequest::Status | ClientRequest::Datacenters | ClientRequest::Remote { .. } => {
                None
            }
        }
    }

    /// The request itself, past any token.
    pub fn inner(&self) -> &ClientRequest {
        match self {
            ClientRequest::Acl { req, .. } => req.inner(),
            other => other,
        }
    }
}

/// A login: the auth method, the credential, and the IDs the new token
/// gets (chosen by the agent, so the leader needs no randomness).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Login {
    /// The auth method's name.
    pub method: String,
    /// The credential (a JWT).
    pub bearer_token: String,
    /// Shown in the token's description.
    pub meta: std::collections::BTreeMap<String, String>,
    /// The new token's accessor ID.
    pub accessor_id: String,
    /// The new token's secret.
    pub secret_id: String,
}

/// What an agent joining with a join token sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The join token's secret.
    pub secret: String,
    /// The agent's node name.
    pub node: String,
    /// Whether it joins as a server.
    pub server: bool,
    /// A PEM certificate signing request for the agent's key.
    pub csr_pem: String,
}

/// What an admitted agent gets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Admitted {
    /// Its certificate (PEM), `server.<dc>.<domain>` or
    /// `client.<dc>.<domain>`.
    pub cert_pem: String,
    /// The agent CA's certificate (PEM).
    pub ca_pem: String,
    /// Its agent token's secret.
    pub agent_token: String,
}

// The operator's requests about the Raft group (answered in `operator`).

/// An operator's request about the Raft group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OperatorOp {
    /// The voters and learners, and who leads.
    RaftConfiguration,
    /// Remove a server from the group, named by Raft ID or RPC address.
    RemovePeer {
        /// Its Raft ID.
        id: Option<u64>,
        /// Its RPC address (`ip:port`).
        address: Option<String>,
    },
    /// Hand leadership to another voter (`None`: the most up to date).
    TransferLeader {
        /// The voter to hand it to.
        to: Option<u64>,
        /// Elections so far that another server won instead.
        #[serde(default)]
        tries: u8,
    },
    /// How each server is doing, as autopilot judges it.
    Health,
    /// From a leader handing over: campaign now (answered by the server
    /// asked, never forwarded).
    Elect,
}

/// One server of the Raft group, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftPeer {
    /// Its Raft ID.
    pub id: u64,
    /// Its RPC address.
    pub address: String,
    /// Whether it votes (a learner does not).
    pub voter: bool,
    /// Whether it leads.
    pub leader: bool,
    /// The last entry the leader knows it holds, and that entry's term.
    pub last_index: u64,
    /// The term of that entry.
    pub last_term: u64,
    /// Milliseconds since it heard from the leader, as it answered just
    /// now (`None`: it did not answer).
    pub last_contact_ms: Option<u64>,
}

/// The Raft group, as the leader sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RaftView {
    /// The log index of the configuration in force.
    pub index: u64,
    /// The leader's term.
    pub term: u64,
    /// The leader's last log index.
    pub last_index: u64,
    /// Every server, voters first, each by Raft ID.
    pub servers: Vec<RaftPeer>,
}

/// What the CA is asked; the leader answers, creating the CA first if
/// the cluster has none yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CaOp {
    /// The roots.
    Roots,
    /// Sign a leaf for `service` of `datacenter`.
    Sign {
        /// The CSR, PEM.
        csr_pem: String,
        /// The service it must name.
        service: String,
        /// The service's datacenter.
        datacenter: String,
    },
    /// Make a new root the active one (the old ones stay trusted until
    /// they expire), optionally with a new leaf lifetime.
    Rotate {
        /// Lifetime of new leaves, in ms.
        leaf_ttl_ms: Option<u64>,
        /// A root the operator brings, certificate and key (PEM); none:
        /// a new one is generated.
        root: Option<(String, String)>,
    },
}

/// Which server may answer a read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Consistency {
    /// The leader, from its store.
    #[default]
    Default,
    /// The leader, after a round with a majority proves it still leads.
    Consistent,
    /// Any server, from its own store.
    Stale,
}

/// A read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Read {
    /// Who may answer.
    pub consistency: Consistency,
    /// Block until the answer's index is past this (0: answer at once).
    pub min_index: u64,
    /// The longest to block, milliseconds.
    pub max_wait_ms: u64,
    /// What to read.
    pub query: Query,
}

/// What to read.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Query {
    /// One KV entry.
    Kv(String),
    /// The KV entries under a prefix.
    KvList(String),
    /// Every catalog node.
    Nodes,
    /// Every stored network coordinate.
    Coordinates,
    /// Every service name, with the union of its instances' tags.
    Services,
    /// The instances of a service (those with `tag`, if given), each with
    /// its node and the checks that bear on it.
    Instances {
        /// Service name.
        service: String,
        /// Only instances with this tag.
        tag: Option<String>,
    },
    /// Every instance of every service, with its node (no checks).
    AllInstances,
    /// A node and the services on it.
    NodeServices(String),
    /// The checks on a node (its own and its services').
    NodeChecks(String),
    /// The checks of a service's instances.
    ServiceChecks(String),
    /// The checks in a state (every check for `None`).
    ChecksIn(Option<Health>),
    /// Every session.
    Sessions,
    /// One session.
    Session(String),
    /// The sessions of a node.
    NodeSessions(String),
    /// The CA's roots (never their keys).
    CaRoots,
    /// Every intention.
    Intentions,
    /// The Connect proxies of a service (kind `connect-proxy`, with it as
    /// their destination), each with its node and checks.
    ConnectProxies(String),
    /// Every prepared query.
    PreparedQueries,
    /// The prepared query an ID or name means, to execute it. As in
    /// Consul, any token may run a query it knows the name of (listing and
    /// reading definitions need `query` read); what the query finds is
    /// filtered by the caller's token.
    PreparedQuery(String),
    /// The token with this secret, with its policies (no permission is
    /// needed: knowing the secret is enough).
    AclResolve(String),
    /// Every ACL token (secrets hidden unless the reader may write ACLs).
    AclTokens,
    /// Every ACL policy.
    AclPolicies,
    /// Every ACL role.
    AclRoles,
    /// Every auth method.
    AclAuthMethods,
    /// Every binding rule.
    AclBindingRules,
    /// Autopilot's configuration.
    Autopilot,
    /// The whole store, as a snapshot (`GET /v1/snapshot`).
    Snapshot,
}

impl Query {
    /// The tables the answer comes from: their highest index is the
    /// answer's, and a change to any of them wakes a blocking read.
    pub(super) fn tables(&self) -> &'static [Table] {
        match self {
            Query::Kv(_) | Query::KvList(_) => &[Table::Kvs],
            Query::Nodes => &[Table::Nodes],
            Query::Coordinates => &[Table::Coordinates],
            Query::Services => &[Table::Services],
            Query::Instances { .. } => &[Table::Nodes, Table::Services, Table::Checks],
            Query::AllInstances => &[Table::Nodes, Table::Services],
            Query::NodeServices(_) => &[Table::Nodes, Table::Services],
            Query::NodeChecks(_) | Query::ServiceChecks(_) | Query::ChecksIn(_) => &[Table::Checks],
            Query::Sessions | Query::Session(_) | Query::NodeSessions(_) => &[Table::Sessions],
            Query::CaRoots => &[Table::Connect],
            Query::Intentions => &[Table::Intentions],
            Query::ConnectProxies(_) => &[Table::Nodes, Table::Services, Table::Checks],
            Query::PreparedQueries | Query::PreparedQuery(_) => &[Table::Queries],
            Query::AclResolve(_)
            | Query::AclTokens
            | Query::AclPolicies
            | Query::AclRoles
            | Query::AclAuthMethods
            | Query::AclBindingRules => &[Table::Acl],
            Query::Autopilot => &[Table::Autopilot],
            Query::Snapshot => &Table::ALL,
        }
    }
}

/// A service instance with its node and the checks that bear on it (what
/// `/v1/health/service/<s>` lists).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Instance {
    /// Its node.
    pub node: Node,
    /// The instance.
    pub service: Service,
    /// The node's checks and the instance's.
    pub checks: Vec<Check>,
}

/// What a read found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Answer {
    /// For `Write`: whether it took effect (`false`: a failed CAS).
    Written(bool),
    /// For a `Write` of a transaction: its results, or its failures.
    Txn(crate::state::TxnOutcome),
    /// For `Kv`.
    Kv(Option<KvEntry>),
    /// For `KvList`.
    KvList(Vec<KvEntry>),
    /// For `Nodes`.
    Nodes(Vec<Node>),
    /// For `Query::Coordinates`.
    Coordinates(Vec<(String, Coordinate)>),
    /// For `Query::Services`.
    Services(std::collections::BTreeMap<String, Vec<String>>),
    /// For `Query::Instances`.
    Instances(Vec<Instance>),
    /// For `Query::NodeServices`: `None` when the node is unknown.
    NodeServices(Option<(Node, Vec<Service>)>),
    /// For the check queries.
    Checks(Vec<Check>),
    /// For the session queries.
    Sessions(Vec<Session>),
    /// For `CaRoots` and the CA requests (keys stripped).
    Ca(Box<crate::state::CaState>),
    /// For `Intentions`.
    Intentions(Vec<crate::connect::intention::Intention>),
    /// A signed leaf certificate.
    Leaf(crate::connect::ca::SignedLeaf),
    /// For `PreparedQueries`.
    PreparedQueries(Vec<crate::state::PreparedQuery>),
    /// For `PreparedQuery`: the query, if the key means one.
    PreparedQuery(Option<Box<crate::state::PreparedQuery>>),
    /// For `Datacenters`: every datacenter, this one first, then nearest.
    Datacenters(Vec<String>),
    /// For `Status`: the leader's RPC address and the voters'.
    Status {
        /// The leader, if one is known.
        leader: Option<String>,
        /// Every voter's RPC address.
        peers: Vec<String>,
    },
    /// For the operator's Raft requests: the group as the leader sees it.
    Raft(RaftView),
    /// For `AclResolve`: the token and its policies, if it is valid.
    AclResolved(Option<Box<crate::acl::Identity>>),
    /// For `AclTokens` (links named as they stand now).
    AclTokens(Vec<crate::acl::Token>),
    /// For `AclPolicies`.
    AclPolicies(Vec<crate::acl::Policy>),
    /// For `AclRoles` (links named as they stand now).
    AclRoles(Vec<crate::acl::Role>),
    /// For `AclReplication`.
    AclReplication(Box<ReplicationStatus>),
    /// For `Join`: the admitted agent's certificate and token.
    Admitted(Box<Admitted>),
    /// For `AclAuthMethods`.
    AclAuthMethods(Vec<crate::acl::AuthMethod>),
    /// For `AclBindingRules`.
    AclBindingRules(Vec<crate::acl::BindingRule>),
    /// For `Query::Autopilot`.
    Autopilot(crate::state::AutopilotConfig),
    /// For `Query::Snapshot`: the store's contents, and the Raft entry
    /// they reflect (its index and term).
    Snapshot {
        /// What [`crate::state::Store::snapshot`] writes.
        state: String,
        /// Index of the last entry applied.
        index: u64,
        /// Its term.
        term: u64,
    },
}

/// The reply to a client request, with Consul's query metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClientReply {
    /// The index the answer reflects (`X-Consul-Index`).
    pub index: u64,
    /// Whether the answering server knew a leader (`X-Consul-KnownLeader`).
    pub known_leader: bool,
    /// Milliseconds since the answering server heard from the leader (0 on
    /// the leader; `X-Consul-LastContact`).
    pub last_contact_ms: u64,
    /// The answer, or why there is none.
    pub answer: Result<Answer, String>,
    /// Whether ACLs left something out of the answer
    /// (`X-Consul-Results-Filtered-By-ACLs`).
    #[serde(default)]
    pub filtered: bool,
}

impl ClientReply {
    /// A reply that carries only why the request failed.
    pub fn refused(why: &str) -> ClientReply {
        ClientReply {
            index: 0,
            known_leader: false,
            last_contact_ms: 0,
            answer: Err(why.to_owned()),
            filtered: false,
        }
    }
}

/// Where a secondary replicates from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// The primary datacenter.
    pub primary: String,
    /// The token it reads with (`acl.tokens.replication`).
    pub token: Option<String>,
    /// Whether global tokens are replicated too
    /// (`acl.enable_token_replication`); if not, the primary resolves them.
    pub tokens: bool,
    /// How long a token the primary resolved is kept (`acl.token_ttl`).
    pub token_ttl: std::time::Duration,
    /// What to do when the primary cannot resolve one (`acl.down_policy`).
    pub down_policy: crate::acl::DownPolicy,
}

/// `/v1/acl/replication`, in Consul's terms.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    /// Whether this datacenter replicates (it is a secondary).
    pub enabled: bool,
    /// Whether this server runs the replication (it leads).
    pub running: bool,
    /// The primary datacenter.
    pub source_datacenter: String,
    /// `policies` or `tokens`.
    pub replication_type: String,
    /// The primary's ACL index last copied.
    pub replicated_index: u64,
    /// When the last round succeeded (Unix ms).
    pub last_success_ms: Option<u64>,
    /// When the last round failed (Unix ms).
    pub last_error_ms: Option<u64>,
    /// Why it failed.
    pub last_error_message: String,
}

/// A secondary's replication: its settings, its status, and the primary's
/// index its copy has reached (writers wait on it).
#[derive(Debug)]
pub(crate) struct Replication {
    pub(super) config: std::sync::OnceLock<ReplicationConfig>,
    pub(super) status: std::sync::Mutex<ReplicationStatus>,
    pub(super) reached: tokio::sync::watch::Sender<u64>,
    /// Without token replication: global tokens the primary resolved, by
    /// secret, with when (monotonic ms); `None` for secrets it did not know.
    pub(super) remote_tokens: RemoteTokens,
}

/// Global tokens the primary resolved, by secret: when (monotonic ms),
/// and the token (`None`: the primary did not know the secret).
pub(crate) type RemoteTokens =
    std::sync::Mutex<std::collections::HashMap<String, (u64, Option<crate::acl::Token>)>>;

impl Default for Replication {
    fn default() -> Self {
        Replication {
            config: std::sync::OnceLock::new(),
            status: std::sync::Mutex::default(),
            reached: tokio::sync::watch::channel(0).0,
            remote_tokens: Default::default(),
        }
    }
}

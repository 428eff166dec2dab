//! A running server: its Raft node, its store, and one RPC port (8300 by
//! default, as Consul's) that carries both Raft's messages among servers and
//! clients' requests. Writes go to the leader (a follower forwards them);
//! reads are answered by the leader (`default`), by the leader after it
//! confirms it still leads (`consistent`), or by any server from what it
//! has (`stale`, reporting how long since it heard from the leader). Any
//! read can block until its index passes one the client has seen.
//!
//! This file holds the server itself and the path every request takes
//! (ACL check, dispatch, forwarding); what each kind of request does is
//! in the sibling files (see [the server module](super)).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::{BasicNode, Raft, ServerState};

use crate::connect::ca;
use crate::consensus::network::{answer, Transport};
use crate::consensus::{self, Network, RaftReply, RaftRequest, TypeConfig};
use crate::coordinate::Coordinate;
use crate::env::{Env, Task};
use crate::rpc::{self, Client, RpcError};
use crate::state::Store;
use crate::time::Instant;
use tokio::sync::mpsc;

use super::acl::AclEnforcer;
use super::batch::{propose_batches, Proposal, BATCHERS};
use super::csr::CsrLimit;
use super::request::{Answer, ClientReply, ClientRequest, RpcTls, ServerReply, ServerRpc};

/// Most servers a request may pass through before it is refused.
pub(super) const MAX_HOPS: u8 = 3;

/// The longest a blocking read waits (Consul caps `wait` at 10 minutes).
pub(super) const MAX_WAIT_MS: u64 = 10 * 60 * 1000;

/// How long a request waits for a leader to be known (Consul's default).
pub(super) const RPC_HOLD_TIMEOUT: Duration = Duration::from_secs(7);

/// A running server; see the [module docs](self).
pub struct Server<E: Env> {
    pub(super) env: E,
    pub(super) id: u64,
    pub(super) raft: Raft<TypeConfig>,
    pub(super) store: Arc<RwLock<Store>>,
    pub(super) client: Arc<Client<E, ServerRpc, ServerReply>>,
    /// When the leader was last heard (a Raft append arrived).
    pub(super) last_contact: Arc<Mutex<Option<Instant>>>,
    /// Coordinates received while leader, waiting for the next batch.
    pub(super) pending_coordinates: Mutex<std::collections::BTreeMap<String, Coordinate>>,
    /// Writes waiting for the batchers.
    pub(super) proposals: mpsc::UnboundedSender<Proposal>,
    /// On the leader: when each TTL session runs out.
    pub(super) session_timers: Mutex<std::collections::HashMap<String, Instant>>,
    /// How long a leader stays one without hearing from a quorum, and
    /// when it last did.
    pub(super) lease: Lease,
    /// Cluster IDs and serial numbers for the CA.
    pub(super) ca_rng: Mutex<rand_chacha::ChaCha8Rng>,
    /// Leaves signed recently (CSR rate limit).
    pub(super) csr_limit: CsrLimit,
    /// The WAN pool, where other datacenters' servers are found.
    pub(super) wan: std::sync::OnceLock<crate::gossip::Gossip>,
    /// This server's datacenter.
    pub(super) datacenter: std::sync::OnceLock<String>,
    /// ACL enforcement, when on.
    pub(super) acl: std::sync::OnceLock<AclEnforcer>,
    /// Counters and timers under Consul's metric names.
    pub(super) telemetry: Arc<crate::telemetry::Registry>,
    /// While this leader hands leadership over: the server it goes to.
    /// Other candidates get no vote from it meanwhile.
    pub(super) transfer_to: Mutex<Option<u64>>,
    /// ACL replication from the primary datacenter (in a secondary).
    pub(super) replication: super::request::Replication,
    pub(super) _rpc: Task,
    /// The Raft log, which peers mending theirs read
    /// ([`RaftRequest::Entries`]).
    pub(super) log: consensus::LogStore,
    pub(super) _batchers: Vec<Task>,
    pub(super) _lease: Task,
    /// Whether the store is recovering from damage (see
    /// `consensus::records`): while it is, this server does not stand, and
    /// votes only for a candidate whose log reaches past what it lost.
    pub(super) recovery: tokio::sync::watch::Receiver<Option<consensus::Recovering>>,
    pub(super) _recovery: Option<Task>,
}

/// Keeps a leader's lease honest. A leader counts as in touch with a
/// leader (itself) up to its last quorum ack, so that once it stops
/// leading its stale reads are judged from then, not from some contact
/// before it was elected.
///
/// And it stops a leader whose lease ran out from heartbeating, as a
/// Consul leader steps down. openraft keeps such a leader in the role,
/// and its heartbeats would keep the followers it still reaches from ever
/// seeing it gone: they would not campaign, and would count themselves in
/// touch with a leader (so `max_stale` never tripped). Silenced, it is
/// campaigned against and a newer term deposes it; heartbeats come back
/// once it is no longer such a leader. New entries would still replicate,
/// but a lapsed leader takes none: it does not count as leader (`leads`).
async fn watch_lease<E: Env>(
    env: E,
    raft: Raft<TypeConfig>,
    last_contact: Arc<Mutex<Option<Instant>>>,
    lease: Lease,
    every: Duration,
    telemetry: Arc<crate::telemetry::Registry>,
) {
    let mut silenced = false;
    loop {
        env.sleep(every).await;
        let now = env.now();
        let (acked, lapsed) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            telemetry.observe_raft(&m);
            let acked = lease.acked(&m, now);
            (
                acked,
                m.state == ServerState::Leader && !lease.held(&m, now),
            )
        };
        if let Some(at) = acked {
            *last_contact.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
        }
        if lapsed != silenced {
            raft.runtime_config().heartbeat(!lapsed);
            silenced = lapsed;
        }
    }
}

/// Carries Raft's messages inside [`ServerRpc`].
struct Wrapped<E: Env>(Arc<Client<E, ServerRpc, ServerReply>>);

impl<E: Env> Transport for Wrapped<E> {
    async fn send(
        &self,
        addr: SocketAddr,
        req: RaftRequest,
        deadline: Instant,
    ) -> Result<RaftReply, RpcError> {
        match self.0.call(addr, &ServerRpc::Raft(req), deadline).await? {
            ServerReply::Raft(r) => Ok(r),
            ServerReply::Client(_) => {
                Err(RpcError::Codec("a client reply to a Raft message".into()))
            }
        }
    }
}

/// Keeps a server that lost acknowledged state out of elections until its
/// store has caught up (see `consensus::records`): it does not stand
/// (here), and votes only for a candidate whose log reaches past what it
/// lost (`refuse_vote`). Returns the task that lets it stand again. A
/// server that is the only voter has no one to catch up from, and does not
/// start.
async fn sit_out_elections(
    raft: Raft<TypeConfig>,
    id: u64,
    recovering: consensus::Recovering,
    mut recovery: tokio::sync::watch::Receiver<Option<consensus::Recovering>>,
) -> Result<impl std::future::Future<Output = ()> + Send + 'static, StartError> {
    let voters: Vec<u64> = raft
        .metrics()
        .borrow()
        .membership_config
        .membership()
        .voter_ids()
        .collect();
    if voters == [id] {
        let _ = raft.shutdown().await;
        return Err(StartError::Raft(format!(
            "its storage lost {} to damage, and it is the only voter, so no other server \
             holds what was lost: restore the cluster from a snapshot (`cairn snapshot restore`) \
             on a fresh data directory",
            recovering.lost
        )));
    }
    raft.runtime_config().elect(false);
    tracing::warn!(lost = %recovering.lost, "this server will not vote or stand until it has caught up from a leader");
    Ok(async move {
        if recovery.wait_for(Option::is_none).await.is_ok() {
            raft.runtime_config().elect(true);
        }
    })
}

/// How long a server whose log was damaged asks its peers for the entries
/// it lost before it starts without them (see [`consensus::mend`]): long
/// enough for peers restarting at about the same time to answer.
const MEND_PATIENCE: Duration = Duration::from_secs(10);

/// The other servers' RPC addresses, as the store knows them before Raft
/// starts: from the log's last membership, or the state machine's.
async fn peers_held(
    id: u64,
    log: &consensus::LogStore,
    sm: &mut consensus::StateMachine,
) -> Result<Vec<SocketAddr>, StartError> {
    let failed = |e| StartError::Storage(log.failed_to_open(e));
    let members = match log.membership_held().map_err(failed)? {
        Some(m) => m,
        None => {
            use openraft::storage::RaftStateMachine;
            let held = sm.applied_state().await.map_err(failed)?.1;
            held.membership().clone()
        }
    };
    Ok(members
        .nodes()
        .filter(|(n, _)| **n != id)
        .filter_map(|(_, node)| node.addr.parse().ok())
        .collect())
}

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The data directory is unusable.
    #[error(transparent)]
    Storage(#[from] consensus::StorageOpenError),
    /// openraft refused to start.
    #[error("cannot start Raft: {0}")]
    Raft(String),
}

impl<E: Env> Server<E> {
    /// Starts server `id` on `listener` with its state at `location`;
    /// with `tls`, it dials other servers over TLS, and answers over TLS
    /// when a server configuration is given.
    pub async fn start(
        env: E,
        id: u64,
        location: &consensus::Location,
        listener: E::TcpListener,
        config: Arc<openraft::Config>,
        tls: RpcTls,
    ) -> Result<Arc<Server<E>>, StartError> {
        let (log, mut sm) = location.open()?;
        let store = sm.store();
        let (dial, answer) = tls;
        let client = Arc::new(Client::with_tls(env.clone(), dial));
        let wrapped = Arc::new(Wrapped(client.clone()));
        // Answering starts before Raft, so that peers can mend their logs
        // from this one's (and it from theirs) first; other requests wait
        // for the server.
        let me: Arc<std::sync::OnceLock<std::sync::Weak<Server<E>>>> = Arc::default();
        let rpc = {
            let (me, log) = (me.clone(), log.clone());
            rpc::serve_tls(
                env.clone(),
                listener,
                answer,
                move |req: ServerRpc, peer: rpc::Peer| {
                    let server = me.get().map(std::sync::Weak::upgrade);
                    let log = log.clone();
                    async move {
                        match (server, req) {
                            (Some(Some(server)), req) => server.handle(req, peer).await,
                            (None, ServerRpc::Raft(RaftRequest::Entries { from, to }))
                                if peer.server =>
                            {
                                ServerReply::Raft(RaftReply::Entries(log.lend(from, to)))
                            }
                            (None, _) => {
                                ServerReply::Client(ClientReply::refused("the server is starting"))
                            }
                            (Some(None), _) => {
                                ServerReply::Client(ClientReply::refused("the server is stopping"))
                            }
                        }
                    }
                },
            )
        };
        if log.shelved() {
            let peers = peers_held(id, &log, &mut sm).await?;
            consensus::mend::mend(&env, &log, &peers, &*wrapped, MEND_PATIENCE)
                .await
                .map_err(|e| StartError::Storage(log.failed_to_open(e)))?;
        }
        let recovery = log.recovery();
        let network = Network::over(env.clone(), wrapped);
        consensus::runtime::seed(env.seed("raft"));
        let lease = Lease {
            me: id,
            ms: config.election_timeout_min,
            acks: network.acks(),
        };
        let heartbeat = Duration::from_millis(config.heartbeat_interval);
        let last_contact: Arc<Mutex<Option<Instant>>> = Arc::default();
        let ca_rng = Mutex::new(rand::SeedableRng::seed_from_u64(env.seed("connect")));
        let csr_limit = CsrLimit::new(env.now());
        let telemetry: Arc<crate::telemetry::Registry> = Arc::default();
        let raft = Raft::new(id, config, network, log.clone(), sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let recovering = recovery.borrow().clone();
        let rejoin = match recovering {
            Some(r) => {
                Some(env.spawn(sit_out_elections(raft.clone(), id, r, recovery.clone()).await?))
            }
            None => None,
        };
        let (proposals, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let batchers = (0..BATCHERS)
            .map(|_| env.spawn(propose_batches(env.clone(), raft.clone(), queue.clone())))
            .collect();
        let watcher = env.spawn(watch_lease(
            env.clone(),
            raft.clone(),
            last_contact.clone(),
            lease.clone(),
            heartbeat,
            telemetry.clone(),
        ));
        let server = Arc::new(Server {
            env,
            id,
            raft,
            log,
            store,
            client,
            last_contact,
            pending_coordinates: Mutex::default(),
            proposals,
            session_timers: Mutex::default(),
            lease,
            ca_rng,
            csr_limit,
            wan: std::sync::OnceLock::new(),
            datacenter: std::sync::OnceLock::new(),
            acl: std::sync::OnceLock::new(),
            telemetry,
            transfer_to: Mutex::new(None),
            replication: Default::default(),
            _rpc: rpc,
            _batchers: batchers,
            _lease: watcher,
            recovery,
            _recovery: rejoin,
        });
        let _ = me.set(Arc::downgrade(&server));
        Ok(server)
    }

    /// This server's Raft ID.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The Raft node (to initialise the cluster, change membership, watch
    /// metrics).
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.raft
    }

    /// This server's counters and timers (`/v1/agent/metrics`).
    pub fn telemetry(&self) -> &crate::telemetry::Registry {
        &self.telemetry
    }

    /// The store, for local readers.
    pub fn store(&self) -> Arc<RwLock<Store>> {
        self.store.clone()
    }

    /// Sends a client request to another server (no forwarding there:
    /// `Status` is answered by the server asked).
    pub async fn call_server(
        &self,
        addr: SocketAddr,
        req: ClientRequest,
        deadline: Instant,
    ) -> Result<ClientReply, RpcError> {
        self.call_server_in(addr, None, req, deadline, None).await
    }

    /// [`call_server`](Self::call_server) to a server of datacenter `dc`
    /// (with TLS, it must prove that datacenter's name), on behalf of
    /// `token` when a request made with one leads this server to send it.
    pub(super) async fn call_server_in(
        &self,
        addr: SocketAddr,
        dc: Option<&str>,
        req: ClientRequest,
        deadline: Instant,
        token: Option<&str>,
    ) -> Result<ClientReply, RpcError> {
        let req = match token {
            Some(token) => req.with_token(token),
            None => req,
        };
        match self
            .client
            .call_in(addr, dc, &ServerRpc::Client(req), deadline)
            .await?
        {
            ServerReply::Client(r) => Ok(r),
            ServerReply::Raft(_) => Err(RpcError::Codec("a Raft reply to a client request".into())),
        }
    }

    /// Stops the Raft node.
    pub async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }

    /// Completes if Raft stops on its own, on a fatal error (its storage
    /// failed: an fsync error, a full disk), with what stopped it and what
    /// to do. It never completes for a server stopped on purpose.
    pub async fn failed(&self) -> String {
        use openraft::error::Fatal;
        let mut metrics = self.raft.metrics();
        loop {
            match &metrics.borrow_and_update().running_state {
                Err(Fatal::StorageError(e)) => {
                    return format!(
                        "its Raft storage failed ({e}); it stops rather than acknowledge what it could not keep: fix the disk (free space, check its health), then start the agent again, and it recovers from what is on disk"
                    )
                }
                Err(Fatal::Panicked) => return "Raft panicked (a bug: please report it)".into(),
                Err(Fatal::Stopped) | Ok(()) => {}
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    async fn handle(&self, req: ServerRpc, peer: rpc::Peer) -> ServerReply {
        match req {
            ServerRpc::Raft(_) if !peer.server => {
                tracing::warn!(peer = %peer.addr, "Raft message refused: the peer's certificate is not a server's");
                ServerReply::Client(ClientReply::refused(
                    "Raft needs a server certificate (server.<datacenter>.<domain>)",
                ))
            }
            ServerRpc::Raft(r) => {
                if let RaftRequest::Vote(v) = &r {
                    if let Some(refused) = self.refuse_vote(v) {
                        return ServerReply::Raft(refused);
                    }
                }
                let reply = answer(&self.raft, &self.log, r).await;
                // Contact with the leader is a message Raft accepted from
                // it, not any message (a deposed leader's are refused).
                let accepted = match &reply {
                    RaftReply::Append(Ok(a)) => a.is_success(),
                    RaftReply::Snapshot(Ok(_)) => true,
                    _ => false,
                };
                if accepted {
                    *self.last_contact.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(self.env.now());
                }
                ServerReply::Raft(reply)
            }
            ServerRpc::Client(c)
                if !peer.certified && !matches!(c.inner(), ClientRequest::Join { .. }) =>
            {
                tracing::warn!(peer = %peer.addr, "request refused: the connection brought no client certificate");
                ServerReply::Client(ClientReply::refused(
                    "this connection brought no client certificate: it may only ask to join with a join token",
                ))
            }
            ServerRpc::Client(c) => {
                // From the network, a request without a token is the
                // anonymous token's, never trusted as the server's own.
                let c = match c {
                    ClientRequest::Acl { .. } => c,
                    other if self.acl.get().is_some() => {
                        other.with_token(crate::acl::ANONYMOUS_SECRET)
                    }
                    other => other,
                };
                ServerReply::Client(self.client_request(c).await)
            }
        }
    }

    /// During a leadership transfer, a vote for anyone but the target is
    /// refused, as a leader within its lease refuses one: a follower
    /// whose timer ran out must not win the election the target was asked
    /// to call (openraft 0.9 has no TimeoutNow to make the target's the
    /// only one). The answer carries this leader's last log, so the
    /// candidate also waits before trying again. A server recovering from
    /// damage refuses a candidate whose log is behind what it lost.
    fn refuse_vote(&self, v: &openraft::raft::VoteRequest<u64>) -> Option<RaftReply> {
        let recovering = self
            .recovery
            .borrow()
            .as_ref()
            .is_some_and(|r| !r.may_vote_for(v.last_log_id));
        if !recovering {
            let to = (*self.transfer_to.lock().unwrap_or_else(|e| e.into_inner()))?;
            if v.vote.leader_id().voted_for() == Some(to) {
                return None;
            }
        }
        let m = self.raft.metrics().borrow().clone();
        let last_log_id = m.last_log_index.map(|index| openraft::LogId {
            leader_id: openraft::CommittedLeaderId::new(m.current_term, self.id),
            index,
        });
        Some(RaftReply::Vote(Ok(openraft::raft::VoteResponse {
            vote: m.vote,
            vote_granted: false,
            last_log_id,
        })))
    }

    /// Turns ACL enforcement on, with `default_policy = "allow"` when
    /// `default_allow`.
    pub fn enable_acls(&self, default_allow: bool) {
        let _ = self.acl.set(AclEnforcer::new(default_allow));
    }

    /// Whether ACLs are enforced.
    pub fn acls_enabled(&self) -> bool {
        self.acl.get().is_some()
    }

    /// Handles a client request here, or forwards it to the leader. A
    /// request with a token is checked against it (with ACLs on); one
    /// without is the server's own.
    pub async fn client_request(&self, req: ClientRequest) -> ClientReply {
        self.telemetry.incr("consul.rpc.request", 1.0);
        self.serve(req, None).await
    }

    /// [`client_request`](Self::client_request), already judged against
    /// `token` (if any): requests it sends on (to the leader, to another
    /// datacenter) go with that token.
    pub(super) async fn serve(&self, req: ClientRequest, token: Option<&str>) -> ClientReply {
        match req {
            ClientRequest::Acl { token, req } => self.as_token(token, *req).await,
            ClientRequest::Write { cmd, hops } => self.write(*cmd, hops, token).await,
            ClientRequest::Read { read, hops } => self.read(read, hops, token).await,
            ClientRequest::Coordinates { updates, hops } => {
                self.coordinates(updates, hops, token).await
            }
            ClientRequest::Status => self.status(),
            ClientRequest::Ca { op, hops } => self.ca(op, hops, token).await,
            ClientRequest::Remote { dc, req } => self.remote(dc, *req, token).await,
            ClientRequest::Datacenters => self.datacenters().await,
            ClientRequest::SessionRenew { id, hops } => self.renew(id, hops, token).await,
            ClientRequest::Operator { op, hops } => self.operator(op, hops, token).await,
            ClientRequest::Login { login, hops } => self.login(*login, hops, token).await,
            ClientRequest::Logout { hops } => self.logout(hops, token).await,
            ClientRequest::Join { join, hops } => self.admit(*join, hops, token).await,
            ClientRequest::AclReplication { hops } => {
                if !self.is_leader() && hops < MAX_HOPS {
                    let req = ClientRequest::AclReplication { hops };
                    return self.to_leader(req, token).await;
                }
                self.answered(Answer::AclReplication(Box::new(self.replication_status())))
            }
        }
    }

    /// Serves `req` as the token with secret `token`: refused when the
    /// token is unknown or lacks the permission, list answers filtered.
    async fn as_token(&self, token: String, req: ClientRequest) -> ClientReply {
        let Some(enforcer) = self.acl.get() else {
            return Box::pin(self.serve(req, None)).await;
        };
        // Another datacenter's servers judge its requests by their own ACLs.
        if let ClientRequest::Remote { dc, req } = req {
            return self.remote(dc, req.with_token(&token), None).await;
        }
        let local = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let now_ms = wall_ms(&self.env);
            let dc = self.datacenter.get().map_or("", String::as_str);
            enforcer.authorizer(&store, &token, now_ms, dc)
        };
        let authz = match local {
            Some(z) => z,
            None => match self
                .remote_authorizer(&token, enforcer.default_allow())
                .await
            {
                // The token is the primary's alone: so is reading it.
                Some(_) if req.reads_own_token() => {
                    let primary = self
                        .primary()
                        .map(|c| c.primary.clone())
                        .unwrap_or_default();
                    return self.remote(primary, req.with_token(&token), None).await;
                }
                Some(z) => z,
                None => return ClientReply::refused(crate::acl::ACL_NOT_FOUND),
            },
        };
        {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            if let Err(denied) = super::acl::authorize(&authz, &req, &store) {
                return ClientReply::refused(&denied);
            }
        }
        let mut reply = Box::pin(self.serve(req, Some(&token))).await;
        if let Ok(answer) = &mut reply.answer {
            reply.filtered |= super::acl::filter(&authz, answer);
        }
        reply
    }

    fn status(&self) -> ClientReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let peers = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect();
        self.answered(Answer::Status {
            leader: self.leader().map(|(_, addr)| addr.to_string()),
            peers,
        })
    }

    /// `answer` as this server replies it: its applied index, whether it
    /// knows a leader, and how long since it heard from one.
    pub(super) fn answered(&self, answer: Answer) -> ClientReply {
        let index = self
            .raft
            .metrics()
            .borrow()
            .last_applied
            .map_or(0, |l| l.index);
        ClientReply {
            index,
            known_leader: self.leader().is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(answer),
            filtered: false,
        }
    }

    /// The leader's Raft ID and RPC address, if one is known.
    pub fn leader(&self) -> Option<(u64, SocketAddr)> {
        // Borrowed, not cloned: every read asks, and the metrics carry the
        // whole membership.
        let metrics = self.raft.metrics();
        let m = metrics.borrow();
        let id = m.current_leader?;
        if id == self.id && !self.leads(&m) {
            return None;
        }
        let node: &BasicNode = m.membership_config.membership().get_node(&id)?;
        Some((id, node.addr.parse().ok()?))
    }

    /// Whether this server leads now.
    pub fn is_leader(&self) -> bool {
        self.leads(&self.raft.metrics().borrow())
    }

    /// Whether these metrics are of a leader that heard from a quorum
    /// within its lease. openraft keeps a leader that lost its quorum in
    /// the role until a newer term reaches it, which in a minority
    /// partition is never; such a leader would go on answering reads
    /// nobody else agrees with, and accept writes it cannot commit. As
    /// Raft's leader lease has it (and Consul's leaders step down), it no
    /// longer counts as leader, here or to anyone who asks.
    fn leads(&self, m: &openraft::RaftMetrics<u64, BasicNode>) -> bool {
        self.lease.held(m, self.env.now())
    }

    /// Sends `req` on to the leader, one hop further along, unless it has
    /// already passed through [`MAX_HOPS`] servers (leadership moving
    /// faster than the request).
    pub(super) async fn to_leader(
        &self,
        mut req: ClientRequest,
        token: Option<&str>,
    ) -> ClientReply {
        match req.hops_mut() {
            Some(h) if *h < MAX_HOPS => *h += 1,
            _ => return ClientReply::refused("no cluster leader (too many forwards)"),
        }
        self.forward(req, token).await
    }

    pub(super) async fn forward(&self, req: ClientRequest, token: Option<&str>) -> ClientReply {
        // Between elections there is briefly no leader: hold the request a
        // while, as Consul's `rpc_hold_timeout` does, rather than fail it.
        // That includes this server just elected, whose lease starts with
        // the first answer from a quorum.
        if self.leader().is_none() {
            let hold = Some(RPC_HOLD_TIMEOUT);
            let (me, lease, env) = (self.id, self.lease.clone(), self.env.clone());
            let _ = self
                .raft
                .wait(hold)
                .metrics(
                    move |m| match m.current_leader {
                        Some(id) if id == me => lease.held(m, env.now()),
                        other => other.is_some(),
                    },
                    "a leader",
                )
                .await;
            if self.is_leader() {
                return Box::pin(self.serve(req, token)).await;
            }
        }
        // A leader that is this very server, yet not leading (it just lost
        // the role), is no leader to forward to.
        let Some((leader_id, addr)) = self.leader().filter(|(id, _)| *id != self.id) else {
            return ClientReply::refused("no cluster leader");
        };
        // A blocking read may wait at the leader for its whole wait.
        let wait = match &req {
            ClientRequest::Read { read, .. } => {
                Duration::from_millis(read.max_wait_ms.min(MAX_WAIT_MS))
            }
            _ => Duration::ZERO,
        };
        let limit = wait + Duration::from_secs(10);
        let deadline = self.env.now() + limit;
        // A leader that crashes says nothing: without this, a request
        // forwarded to it would hang until its deadline, long after this
        // server has given up on that leader (an election starts within
        // two seconds). The caller learns the outcome is unknown, and a
        // retry finds the new leader.
        // A leadership transfer deposes the leader it was sent to: that
        // is its answer, not a reason to give up on it.
        let transfer = matches!(
            req.inner(),
            ClientRequest::Operator {
                op: super::request::OperatorOp::TransferLeader { .. },
                ..
            }
        );
        let deposed = async {
            if transfer {
                std::future::pending::<()>().await;
            }
            let gone = self
                .raft
                .wait(Some(limit))
                .metrics(|m| m.current_leader != Some(leader_id), "a leader change")
                .await;
            if gone.is_err() {
                std::future::pending::<()>().await;
            }
        };
        tokio::select! {
            r = self.call_server_in(addr, None, req, deadline, token) => r.unwrap_or_else(|e| {
                ClientReply::refused(&format!("forwarding to the leader failed: {e}"))
            }),
            () = deposed => ClientReply::refused(
                "the leader changed while the request was in flight; its outcome is unknown",
            ),
        }
    }

    /// Milliseconds since the leader was last heard: 0 on the leader,
    /// `u64::MAX` when never.
    pub fn last_contact_ms(&self) -> u64 {
        if self.is_leader() {
            return 0;
        }
        let last = *self.last_contact.lock().unwrap_or_else(|e| e.into_inner());
        last.map_or(u64::MAX, |t| {
            self.env.now().saturating_duration_since(t).as_millis() as u64
        })
    }
}

/// A leader's lease: it leads while a quorum acknowledged it within `ms`
/// (Raft's election timeout: no other server campaigns sooner).
#[derive(Clone)]
pub(super) struct Lease {
    me: u64,
    ms: u64,
    acks: consensus::Acks,
}

impl Lease {
    /// Since when a quorum has acknowledged this server leading as `m`
    /// says it does; `None` unless it leads.
    fn acked(&self, m: &openraft::RaftMetrics<u64, BasicNode>, now: Instant) -> Option<Instant> {
        if m.state != ServerState::Leader {
            return None;
        }
        let voters = m.membership_config.membership().get_joint_config();
        self.acks
            .quorum_since(self.me, m.vote.leader_id(), voters, now)
    }

    /// Whether `m` are the metrics of a leader whose lease holds `now`.
    fn held(&self, m: &openraft::RaftMetrics<u64, BasicNode>, now: Instant) -> bool {
        m.state == ServerState::Leader
            && (cfg!(cairn_planted = "no_lease")
                || self
                    .acked(m, now)
                    .is_some_and(|at| now - at <= Duration::from_millis(self.ms)))
    }
}

/// The wall clock in Unix ms (token expiry is wall-clock time).
pub(super) fn wall_ms<E: Env>(env: &E) -> u64 {
    ca::unix_ms(env.wall_clock())
}

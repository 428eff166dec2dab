//! A running server: its Raft node, its store, and one RPC port (8300 by
//! default, as Consul's) that carries both Raft's messages among servers and
//! clients' requests. Writes go to the leader (a follower forwards them);
//! reads are answered by the leader (`default`), by the leader after it
//! confirms it still leads (`consistent`), or by any server from what it
//! has (`stale`, reporting how long since it heard from the leader). Any
//! read can block until its index passes one the client has seen.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, UNIX_EPOCH};

use openraft::{BasicNode, Raft, ServerState};

use crate::connect::ca;
use crate::consensus::network::{answer, Transport};
use crate::consensus::{self, Network, RaftReply, RaftRequest, Request, TypeConfig};
use crate::coordinate::Coordinate;
use crate::env::{timeout_at, Env, Task};
use crate::rpc::{self, Client, RpcError};
use crate::state::{Applied, Check, Command, Node, Service, Session, StateError, Store, Table};
use crate::time::Instant;
use tokio::sync::{mpsc, oneshot};

use super::request::{
    Answer, CaOp, ClientReply, ClientRequest, Consistency, Instance, Query, Read, RpcTls,
    ServerReply, ServerRpc,
};

/// Most servers a request may pass through before it is refused.
const MAX_HOPS: u8 = 3;

/// The longest a blocking read waits (Consul caps `wait` at 10 minutes).
const MAX_WAIT_MS: u64 = 10 * 60 * 1000;

/// How long a request waits for a leader to be known (Consul's default).
const RPC_HOLD_TIMEOUT: Duration = Duration::from_secs(7);

/// Most coordinates written in one log entry (Consul's
/// `coordinate_update_batch_size`).
const COORDINATE_BATCH: usize = 128;

/// Most coordinates kept waiting for the next batch; more are dropped, as
/// Consul drops them, since agents send fresh ones soon anyway (its
/// batch size times `coordinate_update_max_batches`).
const COORDINATE_PENDING_MAX: usize = COORDINATE_BATCH * 5;

/// Servers of another datacenter a read is tried on.
const REMOTE_TRIES: usize = 3;

/// Leaves the leader signs per second at most (Consul's
/// `csr_max_per_second`), with as many in a burst.
const CSR_MAX_PER_SECOND: f64 = 50.0;

/// Why a CSR was refused when the limit was reached (the HTTP layer
/// answers 429 for it, as Consul does).
pub const CSR_RATE_LIMITED: &str = "rate limit exceeded for CSR signing";

/// A running server; see the [module docs](self).
pub struct Server<E: Env> {
    env: E,
    id: u64,
    raft: Raft<TypeConfig>,
    store: Arc<RwLock<Store>>,
    client: Arc<Client<E, ServerRpc, ServerReply>>,
    /// When the leader was last heard (a Raft append arrived).
    last_contact: Arc<Mutex<Option<Instant>>>,
    /// Coordinates received while leader, waiting for the next batch.
    pending_coordinates: Mutex<std::collections::BTreeMap<String, Coordinate>>,
    /// Writes waiting for the batchers.
    proposals: mpsc::UnboundedSender<Proposal>,
    /// On the leader: when each TTL session runs out.
    session_timers: Mutex<std::collections::HashMap<String, Instant>>,
    /// How long a leader stays one without hearing from a quorum.
    leader_lease_ms: u64,
    /// Cluster IDs and serial numbers for the CA.
    ca_rng: Mutex<rand_chacha::ChaCha8Rng>,
    /// Leaves signed recently (CSR rate limit), as a token bucket.
    csr_bucket: Mutex<(f64, Instant)>,
    /// The WAN pool, where other datacenters' servers are found.
    wan: std::sync::OnceLock<crate::gossip::Gossip>,
    /// This server's datacenter.
    datacenter: std::sync::OnceLock<String>,
    /// ACL enforcement, when on.
    acl: std::sync::OnceLock<AclEnforcer>,
    _rpc: Task,
    _batchers: Vec<Task>,
    _lease: Task,
}

/// A write waiting to be proposed.
struct Proposal {
    cmd: Command,
    done: oneshot::Sender<Result<Written, Refusal>>,
}

/// A write's log index and its own result.
type Written = (u64, Result<Applied, StateError>);

/// Why a batch was not written.
enum Refusal {
    /// This server no longer leads.
    NotLeader,
    /// Anything else.
    Failed(String),
}

/// A TTL session lives this many TTLs past its last renewal (Consul's
/// `sessionTTLMultiplier`), so a renewal that is a little late is no loss.
const SESSION_TTL_MULTIPLIER: u32 = 2;

/// A session's TTL, if it has one that parses.
fn session_ttl(s: &Session) -> Option<Duration> {
    (!s.ttl.is_empty())
        .then(|| crate::format::parse_duration(&s.ttl).ok())
        .flatten()
        .filter(|d| !d.is_zero())
}

/// Most writes in one log entry.
const MAX_BATCH: usize = 256;

/// Batches in flight at once. openraft appends every proposal as its own
/// log write and replication round, so a leader that proposed each client
/// write alone would do that work per write; batchers group the writes
/// that arrive while earlier batches are in flight (group commit), and a
/// few of them keep replication busy while the next batch fills.
const BATCHERS: usize = 4;

/// Proposes queued writes in batches until the queue closes.
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
    lease_ms: u64,
    every: Duration,
) {
    let mut silenced = false;
    loop {
        env.sleep(every).await;
        let (acked, lapsed) = {
            let metrics = raft.metrics();
            let m = metrics.borrow();
            let acked = m
                .millis_since_quorum_ack
                .filter(|_| m.state == ServerState::Leader);
            (acked, acked.is_some_and(|ms| ms > lease_ms))
        };
        if let Some(ms) = acked {
            let at = env
                .now()
                .as_duration()
                .saturating_sub(Duration::from_millis(ms));
            *last_contact.lock().unwrap_or_else(|e| e.into_inner()) =
                Some(Instant::from_duration(at));
        }
        if lapsed != silenced {
            raft.runtime_config().heartbeat(!lapsed);
            silenced = lapsed;
        }
    }
}

async fn propose_batches<E: Env>(
    env: E,
    raft: Raft<TypeConfig>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Proposal>>>,
) {
    loop {
        let batch = {
            let mut q = queue.lock().await;
            let Some(first) = q.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match q.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            batch
        };
        let at_ms = env
            .wall_clock()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (mut cmds, dones): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.done)).unzip();
        let cmd = match cmds.len() {
            1 => cmds.remove(0),
            _ => Command::Batch(cmds),
        };
        match raft.client_write(Request { at_ms, cmd }).await {
            Ok(resp) => {
                let index = resp.log_id.index;
                let mut results = resp.data.0.into_iter();
                for done in dones {
                    let r = results.next().unwrap_or_else(|| {
                        Err(StateError::Invalid(
                            "the batch gave no result for this write".into(),
                        ))
                    });
                    let _ = done.send(Ok((index, r)));
                }
            }
            Err(e) => {
                let not_leader = e.forward_to_leader().is_some();
                for done in dones {
                    let _ = done.send(Err(if not_leader {
                        Refusal::NotLeader
                    } else {
                        Refusal::Failed(e.to_string())
                    }));
                }
            }
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
        let (log, sm) = location.open()?;
        let store = sm.store();
        let (dial, answer) = tls;
        let client = Arc::new(Client::with_tls(env.clone(), dial));
        let network = Network::over(env.clone(), Arc::new(Wrapped(client.clone())));
        consensus::runtime::seed(env.seed("raft"));
        let leader_lease_ms = config.election_timeout_min;
        let heartbeat = Duration::from_millis(config.heartbeat_interval);
        let last_contact: Arc<Mutex<Option<Instant>>> = Arc::default();
        let ca_rng = Mutex::new(rand::SeedableRng::seed_from_u64(env.seed("connect")));
        let csr_bucket = Mutex::new((CSR_MAX_PER_SECOND, env.now()));
        let raft = Raft::new(id, config, network, log, sm)
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        let (proposals, queue) = mpsc::unbounded_channel();
        let queue = Arc::new(tokio::sync::Mutex::new(queue));
        let batchers = (0..BATCHERS)
            .map(|_| env.spawn(propose_batches(env.clone(), raft.clone(), queue.clone())))
            .collect();
        let lease = env.spawn(watch_lease(
            env.clone(),
            raft.clone(),
            last_contact.clone(),
            leader_lease_ms,
            heartbeat,
        ));
        let server = Arc::new_cyclic(|me: &std::sync::Weak<Server<E>>| {
            let me = me.clone();
            let rpc = rpc::serve_tls(env.clone(), listener, answer, move |req: ServerRpc| {
                let me = me.clone();
                async move {
                    let Some(server) = me.upgrade() else {
                        return ServerReply::Client(ClientReply::refused("the server is stopping"));
                    };
                    server.handle(req).await
                }
            });
            Server {
                env,
                id,
                raft,
                store,
                client,
                last_contact,
                pending_coordinates: Mutex::default(),
                proposals,
                session_timers: Mutex::default(),
                leader_lease_ms,
                ca_rng,
                csr_bucket,
                wan: std::sync::OnceLock::new(),
                datacenter: std::sync::OnceLock::new(),
                acl: std::sync::OnceLock::new(),
                _rpc: rpc,
                _batchers: batchers,
                _lease: lease,
            }
        });
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
        self.call_server_in(addr, None, req, deadline).await
    }

    /// [`call_server`](Self::call_server) to a server of datacenter `dc`
    /// (with TLS, it must prove that datacenter's name).
    async fn call_server_in(
        &self,
        addr: SocketAddr,
        dc: Option<&str>,
        req: ClientRequest,
        deadline: Instant,
    ) -> Result<ClientReply, RpcError> {
        // A request forwarded on behalf of a token goes with it.
        let req = match CURRENT_TOKEN.try_with(|t| t.clone()).ok().flatten() {
            Some(token) => req.with_token(&token),
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

    async fn handle(&self, req: ServerRpc) -> ServerReply {
        match req {
            ServerRpc::Raft(r) => {
                let reply = answer(&self.raft, r).await;
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

    /// Turns ACL enforcement on, with `default_policy = "allow"` when
    /// `default_allow`.
    pub fn enable_acls(&self, default_allow: bool) {
        let _ = self.acl.set(AclEnforcer {
            default_allow,
            cache: Mutex::default(),
        });
    }

    /// Whether ACLs are enforced.
    pub fn acls_enabled(&self) -> bool {
        self.acl.get().is_some()
    }

    /// Handles a client request here, or forwards it to the leader. A
    /// request with a token is checked against it (with ACLs on); one
    /// without is the server's own.
    pub async fn client_request(&self, req: ClientRequest) -> ClientReply {
        match req {
            ClientRequest::Acl { token, req } => self.as_token(token, *req).await,
            ClientRequest::Write { cmd, hops } => self.write(*cmd, hops).await,
            ClientRequest::Read { read, hops } => self.read(read, hops).await,
            ClientRequest::Coordinates { updates, hops } => self.coordinates(updates, hops).await,
            ClientRequest::Status => self.status(),
            ClientRequest::Ca { op, hops } => self.ca(op, hops).await,
            ClientRequest::Remote { dc, req } => self.remote(dc, *req).await,
            ClientRequest::Datacenters => self.datacenters().await,
            ClientRequest::SessionRenew { id, hops } => self.renew(id, hops).await,
        }
    }

    /// Serves `req` as the token with secret `token`: refused when the
    /// token is unknown or lacks the permission, list answers filtered.
    async fn as_token(&self, token: String, req: ClientRequest) -> ClientReply {
        let Some(enforcer) = self.acl.get() else {
            return Box::pin(self.client_request(req)).await;
        };
        // Another datacenter's servers judge its requests by their own ACLs.
        if let ClientRequest::Remote { dc, req } = req {
            let req = Box::new(req.with_token(&token));
            return self.remote(dc, *req).await;
        }
        let authz = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let now_ms = wall_ms(&self.env);
            let Some(z) = enforcer.authorizer(&store, &token, now_ms) else {
                return ClientReply::refused(crate::acl::ACL_NOT_FOUND);
            };
            if let Err(denied) = super::acl::authorize(&z, &req, &store) {
                return ClientReply::refused(&denied);
            }
            z
        };
        let mut reply = CURRENT_TOKEN
            .scope(Some(token), Box::pin(self.client_request(req)))
            .await;
        if let Ok(answer) = &mut reply.answer {
            reply.filtered |= super::acl::filter(&authz, answer);
        }
        reply
    }

    /// Joins this server to its datacenter's WAN pool view: requests for
    /// `datacenter` are its own, others go to servers found in `wan`.
    pub fn set_wan(&self, datacenter: &str, wan: crate::gossip::Gossip) {
        let _ = self.datacenter.set(datacenter.to_string());
        let _ = self.wan.set(wan);
    }

    /// Every datacenter of the WAN pool, this one first, then by the
    /// median estimated RTT from this server to their servers (Consul's
    /// order); datacenters without coordinates go last, by name.
    async fn datacenters(&self) -> ClientReply {
        let own = self.datacenter.get().cloned().unwrap_or_default();
        let mut rtts: std::collections::BTreeMap<String, Vec<f64>> =
            [(own.clone(), Vec::new())].into();
        if let Some(wan) = self.wan.get() {
            let (Ok(members), Ok(coords)) = (wan.members().await, wan.coordinates().await) else {
                return ClientReply::refused("the WAN pool is stopping");
            };
            let me = coords.members.get(wan.name());
            for m in &members {
                let Some(sm) = crate::server::member::server_of(m) else {
                    continue;
                };
                let list = rtts.entry(sm.dc).or_default();
                if let (Some(a), Some(b)) = (me, coords.members.get(&m.name)) {
                    list.push(a.distance_to(b).as_secs_f64());
                }
            }
        }
        // A coordinate's distance to itself is its height twice over, not
        // zero: the local datacenter is placed first outright.
        let mut dcs: Vec<(f64, String)> = rtts
            .into_iter()
            .map(|(dc, mut v)| {
                v.sort_by(f64::total_cmp);
                let rtt = if dc == own {
                    f64::NEG_INFINITY
                } else {
                    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
                };
                (rtt, dc)
            })
            .collect();
        dcs.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        ClientReply {
            index: 1,
            known_leader: self.leader().is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(Answer::Datacenters(
                dcs.into_iter().map(|(_, dc)| dc).collect(),
            )),
            filtered: false,
        }
    }

    /// Sends `req` to a server of datacenter `dc`, nearest by WAN RTT
    /// estimate first; a read that cannot reach one tries the next.
    async fn remote(&self, dc: String, req: ClientRequest) -> ClientReply {
        if self.datacenter.get() == Some(&dc) {
            return Box::pin(self.client_request(req)).await;
        }
        let no_path = || ClientReply::refused(&format!("No path to datacenter {dc:?}"));
        let Some(wan) = self.wan.get() else {
            return no_path();
        };
        let (Ok(members), Ok(coords)) = (wan.members().await, wan.coordinates().await) else {
            return no_path();
        };
        let me = coords.members.get(wan.name());
        let mut targets: Vec<(f64, SocketAddr)> = members
            .iter()
            .filter_map(|m| {
                let sm = crate::server::member::server_of(m)?;
                (sm.dc == dc && sm.status == crate::gossip::MemberStatus::Alive).then_some(())?;
                let rtt = match (me, coords.members.get(&m.name)) {
                    (Some(a), Some(b)) => a.distance_to(b).as_secs_f64(),
                    _ => f64::INFINITY,
                };
                Some((rtt, sm.rpc))
            })
            .collect();
        if targets.is_empty() {
            return no_path();
        }
        targets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Only a request that is safe to repeat goes to a second server.
        let tries = match req.inner() {
            ClientRequest::Read { .. } | ClientRequest::Status => REMOTE_TRIES,
            _ => 1,
        };
        let wait = match req.inner() {
            ClientRequest::Read { read, .. } => {
                Duration::from_millis(read.max_wait_ms.min(MAX_WAIT_MS))
            }
            _ => Duration::ZERO,
        };
        // One deadline for every try: a datacenter cut off from this one
        // (its servers not yet declared failed in the WAN pool) costs a
        // caller, and a prepared query failing over past it, ten seconds,
        // not ten per server.
        let deadline = self.env.now() + wait + Duration::from_secs(10);
        let mut last = String::new();
        for (_, addr) in targets.into_iter().take(tries) {
            if self.env.now() >= deadline {
                break;
            }
            match self
                .call_server_in(addr, Some(&dc), req.clone(), deadline)
                .await
            {
                Ok(r) => return r,
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        ClientReply::refused(&format!("datacenter {dc:?} did not answer: {last}"))
    }

    /// Answers a CA request on the leader, forwarding it there otherwise.
    async fn ca(&self, op: CaOp, hops: u8) -> ClientReply {
        if !self.is_leader() {
            if hops >= MAX_HOPS {
                return ClientReply::refused("no cluster leader (too many forwards)");
            }
            return self.forward(ClientRequest::Ca { op, hops: hops + 1 }).await;
        }
        let now = self.env.wall_clock();
        if let Err(e) = self.ensure_ca(now).await {
            return ClientReply::refused(&e);
        }
        match op {
            CaOp::Roots => {}
            CaOp::Rotate { leaf_ttl_ms, root } => {
                let (cluster_id, serial) = {
                    let store = self.store.read().unwrap_or_else(|e| e.into_inner());
                    let ca = store.ca();
                    let top = ca.roots.iter().map(|r| r.keys.serial).max().unwrap_or(0);
                    (ca.cluster_id.clone(), top + 1)
                };
                let root = match root {
                    Some((cert, key)) => ca::root_from_pem(&cert, &key, now),
                    None => ca::generate_root(&ca::trust_domain(&cluster_id), serial, now),
                };
                let root = match root {
                    Ok(r) => r,
                    Err(e) => return ClientReply::refused(&e.to_string()),
                };
                let cmd = crate::state::Command::CaSetRoot {
                    cluster_id,
                    root: Box::new(root),
                    only_if_none: false,
                    leaf_ttl_ms,
                };
                if let Err(e) = self.write(cmd, 0).await.answer {
                    return ClientReply::refused(&e);
                }
            }
            CaOp::Sign {
                csr_pem,
                service,
                datacenter,
            } => return self.sign(&csr_pem, service, datacenter, now),
        }
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        ClientReply {
            index: store.index(Table::Connect).max(1),
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Ca(Box::new(store.ca().public()))),
            filtered: false,
        }
    }

    /// Creates the CA if the cluster has none: Connect costs nothing (and
    /// changes no simulated run) until something uses it.
    async fn ensure_ca(&self, now: std::time::SystemTime) -> Result<(), String> {
        let missing = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store.ca().active().is_none()
        };
        if !missing {
            return Ok(());
        }
        let cluster_id = {
            let mut rng = self.ca_rng.lock().unwrap_or_else(|e| e.into_inner());
            crate::format::format_uuid(rand::Rng::random(&mut *rng))
        };
        let root =
            ca::generate_root(&ca::trust_domain(&cluster_id), 1, now).map_err(|e| e.to_string())?;
        let cmd = crate::state::Command::CaSetRoot {
            cluster_id,
            root: Box::new(root),
            only_if_none: true,
            leaf_ttl_ms: None,
        };
        self.write(cmd, 0).await.answer.map(|_| ())
    }

    /// Signs a leaf with the active root, within the CSR rate limit.
    fn sign(
        &self,
        csr_pem: &str,
        service: String,
        datacenter: String,
        now: std::time::SystemTime,
    ) -> ClientReply {
        {
            let mut bucket = self.csr_bucket.lock().unwrap_or_else(|e| e.into_inner());
            let t = self.env.now();
            let refill = t.saturating_duration_since(bucket.1).as_secs_f64() * CSR_MAX_PER_SECOND;
            bucket.0 = (bucket.0 + refill).min(CSR_MAX_PER_SECOND);
            bucket.1 = t;
            if bucket.0 < 1.0 {
                return ClientReply::refused(CSR_RATE_LIMITED);
            }
            bucket.0 -= 1.0;
        }
        let (root, trust_domain, ttl, index) = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let ca = store.ca();
            let Some(root) = ca.active() else {
                return ClientReply::refused("the CA has no active root");
            };
            let ttl = match ca.leaf_ttl_ms {
                0 => ca::LEAF_TTL,
                ms => Duration::from_millis(ms),
            };
            (
                root.keys.clone(),
                ca::trust_domain(&ca.cluster_id),
                ttl,
                store.index(Table::Connect),
            )
        };
        let id = ca::SpiffeId {
            trust_domain,
            datacenter,
            service,
        };
        let serial = {
            let mut rng = self.ca_rng.lock().unwrap_or_else(|e| e.into_inner());
            rand::Rng::random::<u64>(&mut *rng) >> 1
        };
        match ca::sign_leaf(&root, csr_pem, &id, serial, now, ttl) {
            Ok(leaf) => ClientReply {
                index: index.max(1),
                known_leader: true,
                last_contact_ms: 0,
                answer: Ok(Answer::Leaf(leaf)),
                filtered: false,
            },
            Err(e) => ClientReply::refused(&e.to_string()),
        }
    }

    /// Restarts session `id`'s TTL timer on the leader; the session, or
    /// none when it is gone.
    async fn renew(&self, id: String, hops: u8) -> ClientReply {
        if !self.is_leader() {
            if hops >= MAX_HOPS {
                return ClientReply::refused("no cluster leader (too many forwards)");
            }
            return self
                .forward(ClientRequest::SessionRenew { id, hops: hops + 1 })
                .await;
        }
        let (index, session) = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            (store.index(Table::Sessions), store.session(&id).cloned())
        };
        // Gone: an empty answer (the HTTP layer says 404).
        let Some(session) = session else {
            return ClientReply {
                index,
                known_leader: true,
                last_contact_ms: 0,
                answer: Ok(Answer::Sessions(Vec::new())),
                filtered: false,
            };
        };
        if let Some(ttl) = session_ttl(&session) {
            self.session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, self.env.now() + ttl * SESSION_TTL_MULTIPLIER);
        }
        ClientReply {
            index,
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Sessions(vec![session])),
            filtered: false,
        }
    }

    /// Destroys the TTL sessions whose timers ran out. A session the
    /// leader has no timer for (it is new, or this leader is) gets a full
    /// one now, as Consul's new leaders reset every timer. Leader only.
    pub async fn expire_sessions(&self) {
        if !self.is_leader() {
            self.session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return;
        }
        let now = self.env.now();
        let ttls: Vec<(String, Duration)> = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store
                .sessions()
                .filter_map(|s| Some((s.id.clone(), session_ttl(s)?)))
                .collect()
        };
        let expired: Vec<String> = {
            let mut timers = self
                .session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            timers.retain(|id, _| ttls.iter().any(|(i, _)| i == id));
            ttls.into_iter()
                .filter(|(id, ttl)| {
                    *timers
                        .entry(id.clone())
                        .or_insert(now + *ttl * SESSION_TTL_MULTIPLIER)
                        <= now
                })
                .map(|(id, _)| id)
                .collect()
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired");
            let reply = self
                .write(Command::SessionDestroy { id: id.clone() }, MAX_HOPS)
                .await;
            if reply.answer.is_ok() {
                self.session_timers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        }
    }

    fn status(&self) -> ClientReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let peers = membership
            .voter_ids()
            .filter_map(|id| membership.get_node(&id).map(|n| n.addr.clone()))
            .collect();
        let leader = self.leader();
        ClientReply {
            index: m.last_applied.map_or(0, |l| l.index),
            known_leader: leader.is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(Answer::Status {
                leader: leader.map(|(_, addr)| addr.to_string()),
                peers,
            }),
            filtered: false,
        }
    }

    async fn coordinates(&self, updates: Vec<(String, Coordinate)>, hops: u8) -> ClientReply {
        if !self.is_leader() {
            if hops >= MAX_HOPS {
                return ClientReply::refused("no cluster leader (too many forwards)");
            }
            return self
                .forward(ClientRequest::Coordinates {
                    updates,
                    hops: hops + 1,
                })
                .await;
        }
        // A coordinate with NaNs or the wrong shape would poison every
        // estimate made from it.
        if let Some((node, _)) = updates.iter().find(|(_, c)| !c.is_valid()) {
            return ClientReply::refused(&format!("invalid coordinate for node {node:?}"));
        }
        let mut pending = self
            .pending_coordinates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (node, c) in updates {
            if pending.len() < COORDINATE_PENDING_MAX || pending.contains_key(&node) {
                pending.insert(node, c);
            }
        }
        ClientReply {
            index: 0,
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Written(true)),
            filtered: false,
        }
    }

    /// Writes the coordinates collected since the last call, in batches.
    /// Returns how many were written. Does nothing unless leading.
    pub async fn flush_coordinates(&self) -> usize {
        if !self.is_leader() {
            return 0;
        }
        let pending = std::mem::take(
            &mut *self
                .pending_coordinates
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let all: Vec<(String, Coordinate)> = pending.into_iter().collect();
        let mut written = 0;
        for batch in all.chunks(COORDINATE_BATCH) {
            let reply = self
                .write(Command::Coordinates(batch.to_vec()), MAX_HOPS)
                .await;
            match reply.answer {
                Ok(_) => written += batch.len(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store coordinates");
                    break;
                }
            }
        }
        written
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

    /// The index a read of `query` would answer with now, from this
    /// server's store (what a cache of such reads is keyed on).
    pub fn index_of(&self, query: &Query) -> u64 {
        index_in(&self.store.read().unwrap_or_else(|e| e.into_inner()), query)
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
        leads(m, self.leader_lease_ms)
    }

    async fn forward(&self, req: ClientRequest) -> ClientReply {
        // Between elections there is briefly no leader: hold the request a
        // while, as Consul's `rpc_hold_timeout` does, rather than fail it.
        // That includes this server just elected, whose lease starts with
        // the first answer from a quorum.
        if self.leader().is_none() {
            let hold = Some(RPC_HOLD_TIMEOUT);
            let (me, lease) = (self.id, self.leader_lease_ms);
            let _ = self
                .raft
                .wait(hold)
                .metrics(
                    |m| match m.current_leader {
                        Some(id) if id == me => leads(m, lease),
                        other => other.is_some(),
                    },
                    "a leader",
                )
                .await;
            if self.is_leader() {
                return Box::pin(self.client_request(req)).await;
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
        let deposed = async {
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
            r = self.call_server(addr, req, deadline) => r.unwrap_or_else(|e| {
                ClientReply::refused(&format!("forwarding to the leader failed: {e}"))
            }),
            () = deposed => ClientReply::refused(
                "the leader changed while the request was in flight; its outcome is unknown",
            ),
        }
    }

    async fn write(&self, cmd: crate::state::Command, hops: u8) -> ClientReply {
        if !self.is_leader() {
            if hops >= MAX_HOPS {
                return ClientReply::refused("no cluster leader (too many forwards)");
            }
            return self
                .forward(ClientRequest::Write {
                    cmd: Box::new(cmd),
                    hops: hops + 1,
                })
                .await;
        }
        let (done, result) = oneshot::channel();
        let proposal = Proposal {
            cmd: cmd.clone(),
            done,
        };
        if self.proposals.send(proposal).is_err() {
            return ClientReply::refused("the server is stopping");
        }
        match result.await {
            Ok(Ok((index, r))) => ClientReply {
                index,
                known_leader: true,
                last_contact_ms: 0,
                answer: r
                    .map(|a| match a {
                        Applied::Done(ok) => Answer::Written(ok),
                        Applied::Txn(t) => Answer::Txn(t),
                    })
                    .map_err(|e| e.to_string()),
                filtered: false,
            },
            // Leadership moved while we wrote: send it on.
            Ok(Err(Refusal::NotLeader)) if hops < MAX_HOPS => {
                self.forward(ClientRequest::Write {
                    cmd: Box::new(cmd),
                    hops: hops + 1,
                })
                .await
            }
            Ok(Err(Refusal::NotLeader)) => {
                ClientReply::refused("no cluster leader (too many forwards)")
            }
            Ok(Err(Refusal::Failed(why))) => ClientReply::refused(&why),
            Err(_) => ClientReply::refused("the server is stopping"),
        }
    }

    async fn read(&self, read: Read, hops: u8) -> ClientReply {
        let local = match read.consistency {
            Consistency::Stale => true,
            Consistency::Default | Consistency::Consistent => self.is_leader(),
        };
        if !local {
            if hops >= MAX_HOPS {
                return ClientReply::refused("no cluster leader (too many forwards)");
            }
            return self
                .forward(ClientRequest::Read {
                    read,
                    hops: hops + 1,
                })
                .await;
        }
        if read.consistency == Consistency::Consistent {
            if let Err(e) = self.raft.ensure_linearizable().await {
                return ClientReply::refused(&format!("cannot confirm leadership: {e}"));
            }
        }
        if read.min_index > 0 {
            self.wait_past(&read).await;
            // Still the leader after the wait? A deposed one must not
            // answer for the cluster.
            if read.consistency == Consistency::Consistent {
                if let Err(e) = self.raft.ensure_linearizable().await {
                    return ClientReply::refused(&format!("cannot confirm leadership: {e}"));
                }
            }
        }
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let (index, answer) = (
            index_in(&store, &read.query),
            answer_in(&store, &read.query, wall_ms(&self.env)),
        );
        ClientReply {
            index: index.max(1),
            known_leader: self.leader().is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(answer),
            filtered: false,
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

    /// Blocks until the queried data's index passes `read.min_index`, or
    /// `max_wait_ms` runs out.
    async fn wait_past(&self, read: &Read) {
        let hub = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .watches();
        // Subscribe first, then look: a change between the two is either
        // seen by the look or delivered to the subscription, never lost.
        // At most three tables; the first stands in for missing ones.
        let mut rx: Vec<_> = match &read.query {
            Query::Kv(p) | Query::KvList(p) => vec![hub.prefix(p, 0)],
            q => q.tables().iter().map(|t| hub.table(*t)).collect(),
        };
        while rx.len() < 3 {
            rx.push(rx[0].clone());
        }
        let min = read.min_index;
        {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            if index_in(&store, &read.query) > min {
                return;
            }
        }
        let wait = Duration::from_millis(read.max_wait_ms.min(MAX_WAIT_MS));
        let deadline = self.env.now() + wait;
        let [a, b, c] = &mut rx[..3] else {
            return;
        };
        let any = async {
            tokio::select! {
                _ = a.wait_for(|i| *i > min) => {}
                _ = b.wait_for(|i| *i > min) => {}
                _ = c.wait_for(|i| *i > min) => {}
            }
        };
        let _ = timeout_at(&self.env, deadline, any).await;
    }
}

/// The index a read of `query` reports now.
fn index_in(store: &Store, query: &Query) -> u64 {
    match query {
        Query::Kv(p) | Query::KvList(p) => store.kv_index(p),
        q => q
            .tables()
            .iter()
            .map(|t| store.index(*t))
            .max()
            .unwrap_or(0),
    }
}

/// Whether `m` are the metrics of a leader whose lease (`lease_ms` since
/// a quorum last answered) still holds.
fn leads(m: &openraft::RaftMetrics<u64, BasicNode>, lease_ms: u64) -> bool {
    m.state == ServerState::Leader && m.millis_since_quorum_ack.is_some_and(|ms| ms <= lease_ms)
}

/// The answer to `query` from `store`.
fn answer_in(store: &Store, query: &Query, now_ms: u64) -> Answer {
    let checks = |it: &mut dyn Iterator<Item = &Check>| Answer::Checks(it.cloned().collect());
    let with_checks = |(node, svc): (&Node, &Service)| Instance {
        node: node.clone(),
        service: svc.clone(),
        checks: store
            .instance_checks(&node.node, &svc.id)
            .cloned()
            .collect(),
    };
    match query {
        Query::Kv(key) => Answer::Kv(store.kv_get(key).cloned()),
        Query::KvList(prefix) => {
            Answer::KvList(store.kv_list(prefix).1.into_iter().cloned().collect())
        }
        Query::Nodes => Answer::Nodes(store.nodes().cloned().collect()),
        Query::Coordinates => Answer::Coordinates(
            store
                .coordinates()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
        ),
        Query::Services => Answer::Services(store.services()),
        Query::Instances { service, tag } => Answer::Instances(
            store
                .service_nodes(service, tag.as_deref())
                .map(with_checks)
                .collect(),
        ),
        Query::AllInstances => Answer::Instances(
            store
                .services()
                .keys()
                .flat_map(|name| store.service_nodes(name, None))
                .map(|(node, svc)| Instance {
                    node: node.clone(),
                    service: svc.clone(),
                    checks: Vec::new(),
                })
                .collect(),
        ),
        Query::NodeServices(name) => Answer::NodeServices(
            store
                .node(name)
                .map(|n| (n.clone(), store.node_services(name).cloned().collect())),
        ),
        Query::NodeChecks(node) => checks(&mut store.node_checks(node)),
        Query::ServiceChecks(service) => checks(
            &mut store
                .checks_in(None)
                .filter(|c| !c.service_id.is_empty() && c.service_name == *service),
        ),
        Query::ChecksIn(health) => checks(&mut store.checks_in(*health)),
        Query::Sessions => Answer::Sessions(store.sessions().cloned().collect()),
        Query::Session(id) => Answer::Sessions(store.session(id).cloned().into_iter().collect()),
        Query::NodeSessions(node) => Answer::Sessions(store.node_sessions(node).cloned().collect()),
        Query::CaRoots => Answer::Ca(Box::new(store.ca().public())),
        Query::Intentions => Answer::Intentions(store.intentions().cloned().collect()),
        Query::PreparedQueries => Answer::PreparedQueries(store.queries().cloned().collect()),
        Query::AclResolve(secret) => {
            Answer::AclResolved(store.acl().identity(secret, now_ms).map(Box::new))
        }
        Query::AclTokens => Answer::AclTokens(
            store
                .acl()
                .tokens()
                .map(|t| store.acl().current(t))
                .collect(),
        ),
        Query::AclPolicies => Answer::AclPolicies(store.acl().policies().cloned().collect()),
        Query::AclRoles => Answer::AclRoles(
            store
                .acl()
                .roles()
                .map(|r| crate::acl::Role {
                    policies: store.acl().current_links(&r.policies, false),
                    ..r.clone()
                })
                .collect(),
        ),
        Query::ConnectProxies(dest) => Answer::Instances(
            store
                .services()
                .keys()
                .flat_map(|name| store.service_nodes(name, None))
                .filter(|(_, svc)| {
                    svc.kind == "connect-proxy"
                        && svc
                            .proxy
                            .as_ref()
                            .is_some_and(|p| p.destination_service_name == *dest)
                })
                .map(with_checks)
                .collect(),
        ),
    }
}

tokio::task_local! {
    /// The token of the request being served, for requests it leads this
    /// server to send on (to the leader, to another datacenter).
    static CURRENT_TOKEN: Option<String>;
}

/// The wall clock in Unix ms (token expiry is wall-clock time).
fn wall_ms<E: Env>(env: &E) -> u64 {
    ca::unix_ms(env.wall_clock())
}

/// A server's ACL enforcement: the default policy, and authorizers by
/// secret, each good while the ACL table keeps the index it was built at.
struct AclEnforcer {
    default_allow: bool,
    cache: Mutex<std::collections::HashMap<String, (u64, Arc<crate::acl::Authorizer>)>>,
}

/// Most authorizers a server keeps.
const AUTHZ_CACHE_MAX: usize = 4096;

impl AclEnforcer {
    /// The authorizer of `secret`; `None` when no valid token has it.
    fn authorizer(
        &self,
        store: &Store,
        secret: &str,
        now_ms: u64,
    ) -> Option<Arc<crate::acl::Authorizer>> {
        let index = store.index(Table::Acl);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, z)) = cache.get(secret) {
            // Expiry is checked each time; the cached rules stand while
            // the table does.
            let live = store
                .acl()
                .token_by_secret(secret)
                .is_some_and(|t| t.expiration_ms.is_none_or(|e| e > now_ms));
            if *at == index && live {
                return Some(z.clone());
            }
        }
        let r = store.acl().resolve(secret, now_ms)?;
        let z = Arc::new(crate::acl::Authorizer::new(
            &r.token.accessor_id,
            r.rules.iter().map(|r| r.as_ref()),
            r.management,
            self.default_allow,
        ));
        if cache.len() >= AUTHZ_CACHE_MAX {
            cache.clear();
        }
        cache.insert(secret.to_string(), (index, z.clone()));
        Some(z)
    }
}

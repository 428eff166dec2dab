//! The agent: one per machine. It runs LAN gossip (and, on a server, the
//! WAN pool and the server itself), the agent's own services and checks,
//! the HTTP API, DNS and Connect's leaf certificates, and reloads its
//! configuration on SIGHUP or `PUT /v1/agent/reload`.

pub mod acl;
pub mod config;
pub mod consul_keys;
pub mod definition;
pub mod events;
pub mod files;
pub mod join;
pub mod keyring;
pub mod leaves;
pub mod local;
pub mod prepared;
pub mod probes;
pub mod reload;
pub mod secure;
pub mod servers;
pub mod snapshot;
pub mod tls;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::mpsc;

pub use self::config::{AgentConfig, ConfigError};
pub use self::local::{LocalError, LocalState};
pub use self::reload::{ConfigReload, Reloader};
pub use self::servers::Servers;
use crate::api::{self, AgentInfo};
use crate::consensus::Location;
use crate::env::{Env, Task};
use crate::gossip::Encryption;
use crate::gossip::{tags, Gossip, GossipError, GossipOptions};
use crate::server::{self, ClientRequest, DutyConfig, Server};

/// The version cairn reports (in tags, `/v1/agent/self`, `cairn version`).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Errors starting or running an agent.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Gossip could not start or join.
    #[error(transparent)]
    Gossip(#[from] GossipError),
    /// The HTTP API could not listen.
    #[error("cannot serve the HTTP API on {addr}: {source}")]
    Http {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The DNS interface could not listen.
    #[error(
        "cannot serve DNS on {addr}: {source} (set ports.dns, -dns-port, or -1 to turn DNS off)"
    )]
    Dns {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server could not start.
    #[error("cannot start the server: {0}")]
    Server(#[from] server::StartError),
    /// The server RPC port could not be bound.
    #[error("cannot serve server RPC on {addr}: {source}")]
    Rpc {
        /// The address tried.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
    /// The server stopped on a fatal error while running.
    #[error("the server stopped: {0}")]
    ServerFailed(String),
    /// The data dir cannot be used.
    #[error("data dir {path}: {why}")]
    DataDir {
        /// The directory.
        path: String,
        /// What went wrong.
        why: String,
    },
}

/// A running agent.
pub struct Agent<E: Env> {
    env: E,
    config: AgentConfig,
    reload: Arc<ConfigReload>,
    node_id: String,
    gossip: Gossip,
    http_addr: SocketAddr,
    servers: Arc<Servers<E>>,
    stop_rx: mpsc::Receiver<()>,
    _gossip_task: Task,
    _http_task: Task,
    _https_task: Option<Task>,
    _dns_tasks: Vec<Task>,
    _retry_task: Option<Task>,
    _server_tasks: Vec<Task>,
    /// A server's WAN pool.
    wan: Option<Gossip>,
    _wan_tasks: Vec<Task>,
    /// Where the members to rejoin after a restart are kept.
    snapshot: Option<snapshot::SnapshotStore>,
}

impl<E: Env> Agent<E> {
    /// Starts gossip, the server (in server mode) and the HTTP API, and
    /// joins the cluster. A reload re-applies `config`'s services and checks.
    pub async fn start(env: E, config: AgentConfig) -> Result<Self, AgentError> {
        let again = config.clone();
        Self::start_reloadable(env, config, Arc::new(move || Ok(again.clone()))).await
    }

    /// [`start`](Self::start), with `reloader` to make the configuration
    /// afresh on `PUT /v1/agent/reload` or [`reload`](Self::reload) (the
    /// CLI re-reads the files and flags it was given).
    pub async fn start_reloadable(
        env: E,
        config: AgentConfig,
        reloader: Reloader,
    ) -> Result<Self, AgentError> {
        config.validate()?;
        warn_ignored(&config.ignored);
        let node_id = node_id(&env, &config)?;
        let Pools {
            rpc_listener,
            gossip,
            gossip_task,
            wan,
            keyrings,
        } = start_pools(&env, &config, &node_id).await?;
        tracing::info!(node = %config.node_name, id = %node_id, gossip = %gossip.addr(), "agent started");

        let mut server_tasks = Vec::new();
        let rpc_tls = tls::rpc_tls(&config).map_err(|e| ConfigError(e.to_string()))?;
        let local = match rpc_listener {
            Some(listener) => {
                let (server, duties) =
                    start_server(&env, &config, &node_id, &gossip, listener, rpc_tls.clone())
                        .await?;
                server_tasks.extend(duties);
                Some(server)
            }
            None => None,
        };
        if let Some(server) = &local {
            server.set_datacenter(&config.datacenter);
            if let Some((w, _)) = &wan {
                server.set_wan(w.clone());
            }
        }
        let servers = Arc::new(Servers::new(
            env.clone(),
            gossip.clone(),
            &config.datacenter,
            local,
            rpc_tls.0,
        ));
        if config.acl.enabled {
            servers.set_token(Some(config.acl.agent_token().to_string()));
        }
        let mut acl = acl::AclResolver::new(env.clone(), servers.clone(), config.acl.clone());
        if let (true, true, Some(dir)) = (
            config.acl.enabled,
            config.acl.enable_token_persistence,
            &config.data_dir,
        ) {
            acl = acl
                .persist_to(dir.join("acl-tokens.json"))
                .map_err(ConfigError)?;
        }
        let acl = Arc::new(acl);
        server_tasks.push(env.spawn(sync_coordinates(
            env.clone(),
            gossip.clone(),
            servers.clone(),
        )));

        let local_state = Arc::new(LocalState::new(&config.node_name));
        let this_node = crate::state::Node {
            id: node_id.clone(),
            node: config.node_name.clone(),
            address: gossip.addr().ip().to_string(),
            datacenter: config.datacenter.clone(),
            tagged_addresses: [("lan".to_string(), gossip.addr().ip().to_string())].into(),
            meta: config.node_meta.clone(),
            ..crate::state::Node::default()
        };
        let reload = Arc::new(ConfigReload::new(reloader, local_state.clone()));
        reload.apply(&config, env.now())?;
        server_tasks.push(env.spawn(local::run_probes(env.clone(), local_state.clone())));
        let events = Arc::new(events::Events::new(&config.node_name, local_state.clone()));
        server_tasks.push(env.spawn(events::run(gossip.clone(), events.clone())));
        for k in &keyrings {
            server_tasks.push(env.spawn(k.clone().run()));
        }
        server_tasks.push(env.spawn(local::anti_entropy(
            env.clone(),
            local_state.clone(),
            this_node,
            servers.clone(),
            gossip.clone(),
        )));

        let (stop_tx, stop_rx) = mpsc::channel(1);
        let info = AgentInfo {
            node_name: config.node_name.clone(),
            node_id: node_id.clone(),
            datacenter: config.datacenter.clone(),
            version: VERSION.into(),
            node_meta: config.node_meta.clone(),
            debug_config: config.debug_config(&node_id),
        };
        let state = Arc::new(api::ApiState {
            env: env.clone(),
            info,
            gossip: gossip.clone(),
            wan: wan.as_ref().map(|(w, _)| w.clone()),
            servers: servers.clone(),
            local: local_state,
            rng: std::sync::Mutex::new(ChaCha8Rng::seed_from_u64(env.seed("api-ids"))),
            stop: stop_tx,
            default_port: config.ports.serf_lan,
            scripts: config.script_policy(),
            reload: reload.clone(),
            events,
            leaves: leaves::LeafCache::default(),
            keyrings: keyrings.clone(),
            acl,
            join_issuer: if config.secure {
                Some(secure::JoinIssuer::of(&config).map_err(|e| ConfigError(e.to_string()))?)
            } else {
                None
            },
        });
        let (http_addr, http_task, https_task, dns_tasks) =
            serve_interfaces(&env, &config, state, &servers, &gossip).await?;

        // The members it knew before a restart first, as Serf does; then
        // the configured joins.
        let snapshot = snapshot_store(&config);
        if let Some(store) = &snapshot {
            let known = snapshot::rejoin_targets(store);
            server_tasks.push(env.spawn(snapshot::rejoin(gossip.clone(), known)));
            server_tasks.push(env.spawn(snapshot::keep(
                env.clone(),
                gossip.clone(),
                store.clone(),
                SNAPSHOT_INTERVAL,
            )));
        }
        let (retry_task, retry_wan_task) =
            join_pools(&env, &config, &gossip, wan.as_ref().map(|(w, _)| w)).await?;
        Ok(Agent {
            env,
            config,
            reload,
            node_id,
            gossip,
            http_addr,
            servers,
            stop_rx,
            _gossip_task: gossip_task,
            _http_task: http_task,
            _https_task: https_task,
            _dns_tasks: dns_tasks,
            _retry_task: retry_task,
            _server_tasks: server_tasks,
            wan: wan.as_ref().map(|(w, _)| w.clone()),
            snapshot,
            _wan_tasks: wan
                .map(|(_, t)| t)
                .into_iter()
                .chain(retry_wan_task)
                .collect(),
        })
    }

    /// The gossip handle.
    pub fn gossip(&self) -> &Gossip {
        &self.gossip
    }

    /// A server's WAN pool handle.
    pub fn wan(&self) -> Option<&Gossip> {
        self.wan.as_ref()
    }

    /// The way to the servers (and this agent's own, in server mode).
    pub fn servers(&self) -> &Arc<Servers<E>> {
        &self.servers
    }

    /// Where the HTTP API listens.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// This node's ID.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// The configuration in use.
    pub fn config(&self) -> &AgentConfig {
        &self.config
    }

    /// Reads the configuration again and applies what can change while
    /// running: the services and checks of config files (Consul's
    /// `consul reload`, SIGHUP).
    pub fn reload(&self) -> Result<(), ConfigError> {
        self.reload.reload(self.env.now())
    }

    /// Completes if a part the agent cannot run without stops on its own:
    /// the local server's Raft, on a storage error. The agent should then
    /// exit with the error, for a supervisor to restart it.
    pub fn failed(&self) -> impl std::future::Future<Output = AgentError> + Send + 'static {
        let server = self.servers.local().cloned();
        async move {
            match server {
                Some(server) => AgentError::ServerFailed(server.failed().await),
                None => std::future::pending().await,
            }
        }
    }

    /// Completes when someone asks the agent to stop (`PUT /v1/agent/leave`).
    pub async fn stop_requested(&mut self) {
        if self.stop_rx.recv().await.is_none() {
            std::future::pending::<()>().await;
        }
    }

    /// Leaves the cluster gracefully, then stops.
    pub async fn leave(self) -> Result<(), AgentError> {
        tracing::info!("leaving the cluster");
        let timeout = self.config.gossip_config()?.probe_interval * 5 + Duration::from_secs(5);
        let res = self.gossip.leave(&self.env, timeout).await;
        if let Some(w) = &self.wan {
            let t = self.config.gossip_wan_config()?.probe_interval * 5 + Duration::from_secs(5);
            if let Err(e) = w.leave(&self.env, t).await {
                tracing::warn!(error = %e, "leaving the WAN pool");
            }
        }
        self.stop_parts().await;
        // After a leave, the next start does not rejoin (Consul's default).
        if let Some(store) = &self.snapshot {
            snapshot::mark_left(store);
        }
        res.map_err(AgentError::from)
    }

    /// Stops without leaving: the cluster will see this node fail.
    pub async fn shutdown(self) {
        self.stop_parts().await;
    }

    async fn stop_parts(&self) {
        if let Some(server) = self.servers.local() {
            server.shutdown().await;
        }
        self.gossip.shutdown().await;
        if let Some(w) = &self.wan {
            w.shutdown().await;
        }
    }
}

/// Says once, at WARN, which of Consul's settings the config files gave
/// that cairn accepts without acting on.
fn warn_ignored(keys: &[String]) {
    for key in keys {
        match consul_keys::lookup(key).and_then(|k| k.deprecated) {
            Some(new) if !new.is_empty() => tracing::warn!(
                "`{key}` (deprecated in Consul for `{new}`) is accepted but has no effect in cairn"
            ),
            _ => tracing::warn!("`{key}` is accepted but has no effect in cairn"),
        }
    }
}

/// What [`start_pools`] starts: a server's RPC listener, the LAN pool, a
/// server's WAN pool, and the keyrings of the encrypted ones.
struct Pools<E: Env> {
    rpc_listener: Option<E::TcpListener>,
    gossip: Gossip,
    gossip_task: Task,
    wan: Option<(Gossip, Task)>,
    keyrings: Vec<Arc<keyring::PoolKeyring>>,
}

/// Binds a server's RPC port and starts the gossip pools, each gossiping
/// the agent's tags.
async fn start_pools<E: Env>(
    env: &E,
    config: &AgentConfig,
    node_id: &str,
) -> Result<Pools<E>, AgentError> {
    let mut tags = agent_tags(config, node_id);
    // The RPC port is bound before gossip starts, so the port gossiped
    // is the one bound (port 0 picks one).
    let rpc_listener = if config.server {
        let addr = SocketAddr::new(config.bind_addr, config.ports.server);
        let l = env
            .bind_tcp(addr)
            .await
            .map_err(|source| AgentError::Rpc { addr, source })?;
        let port = crate::env::TcpListener::local_addr(&l)
            .map_err(|source| AgentError::Rpc { addr, source })?
            .port();
        server::server_tags(&mut tags, port, config.bootstrap_expect);
        Some(l)
    } else {
        None
    };
    let meta = tags::encode(&tags).map_err(ConfigError)?;
    let bind = SocketAddr::new(config.bind_addr, config.ports.serf_lan);
    let mut opts = GossipOptions::new(config.node_name.clone(), bind, config.gossip_config()?);
    opts.advertise = config
        .advertise_addr
        .map(|ip| SocketAddr::new(ip, config.ports.serf_lan));
    opts.meta = meta.clone();
    // Consul keeps failed members (and keeps trying them) for 72 hours.
    opts.reconnect_timeout = Duration::from_secs(72 * 3600);
    let lan_keys = keyring::load(env, config, false)?;
    opts.encryption = lan_keys.as_ref().map(|(e, _)| e.clone());
    let (gossip, gossip_task) = Gossip::start(env.clone(), opts).await?;
    // Each encrypted pool's keyring, for the keyring API.
    let mut keyrings = Vec::new();
    let mut manage = |pool, g: &Gossip, keys: Option<(Encryption, Option<PathBuf>)>| {
        if let Some((e, file)) = keys {
            keyrings.push(keyring::PoolKeyring::new(
                env,
                pool,
                g.clone(),
                e.keyring,
                file,
            ));
        }
    };
    manage("lan", &gossip, lan_keys);
    // A server is also in the WAN pool, as `<node>.<dc>`, with the same
    // tags: that is where servers of other datacenters find its RPC
    // address, and its WAN coordinate is measured there.
    let wan = match (config.server, config.ports.serf_wan) {
        (true, port) if port != 0 => {
            let bind = SocketAddr::new(config.bind_addr, port);
            let name = format!("{}.{}", config.node_name, config.datacenter);
            let mut o = GossipOptions::new(name, bind, config.gossip_wan_config()?);
            o.advertise = config.advertise_addr.map(|ip| SocketAddr::new(ip, port));
            o.meta = meta;
            o.reconnect_timeout = Duration::from_secs(72 * 3600);
            o.seed_scope = "wan".into();
            let wan_keys = keyring::load(env, config, true)?;
            o.encryption = wan_keys.as_ref().map(|(e, _)| e.clone());
            let (w, task) = Gossip::start(env.clone(), o).await?;
            manage("wan", &w, wan_keys);
            tracing::info!(wan = %w.addr(), "WAN pool listening");
            Some((w, task))
        }
        _ => None,
    };
    Ok(Pools {
        rpc_listener,
        gossip,
        gossip_task,
        wan,
        keyrings,
    })
}

/// Serves the HTTP API (and HTTPS when configured) and DNS: the HTTP
/// address bound, and the serving tasks (HTTP, HTTPS, DNS).
async fn serve_interfaces<E: Env>(
    env: &E,
    config: &AgentConfig,
    state: Arc<api::ApiState<E>>,
    servers: &Arc<Servers<E>>,
    gossip: &Gossip,
) -> Result<(SocketAddr, Task, Option<Task>, Vec<Task>), AgentError> {
    let http_bind = SocketAddr::new(config.client_addr, config.ports.http);
    let https_task = match (config.ports.https, &config.cert_file, &config.key_file) {
        (0, _, _) => None,
        (port, Some(cert), Some(key)) => {
            let tls =
                tls::https_config(cert, key, config.ca_file.as_deref(), config.verify_incoming)
                    .map_err(|e| ConfigError(e.to_string()))?;
            let addr = SocketAddr::new(config.client_addr, port);
            let (bound, task) = api::serve_https(env, addr, tls, state.clone())
                .await
                .map_err(|source| AgentError::Http { addr, source })?;
            tracing::info!(addr = %bound, verify_incoming = config.verify_incoming, "HTTPS API listening");
            Some(task)
        }
        _ => return Err(ConfigError("ports.https needs cert_file and key_file".into()).into()),
    };
    let (http_addr, http_task) =
        api::serve(env, http_bind, state)
            .await
            .map_err(|source| AgentError::Http {
                addr: http_bind,
                source,
            })?;
    tracing::info!(addr = %http_addr, "HTTP API listening");
    let dns_tasks = match config.ports.dns {
        0 => Vec::new(),
        port => {
            let addr = SocketAddr::new(config.client_addr, port);
            let dns = crate::dns::DnsConfig {
                datacenter: config.datacenter.clone(),
                acl_token: config
                    .acl
                    .enabled
                    .then(|| config.acl.dns_token().to_string()),
                ..config.dns.clone()
            };
            let tasks = crate::dns::serve(env.clone(), addr, dns, servers.clone(), gossip.clone())
                .await
                .map_err(|source| AgentError::Dns { addr, source })?;
            tracing::info!(%addr, "DNS listening");
            tasks
        }
    };
    Ok((http_addr, http_task, https_task, dns_tasks))
}

/// Joins the pools named by `start_join` (and `start_join_wan`), and
/// starts the `retry_join` loops: the LAN pool's task and the WAN pool's.
async fn join_pools<E: Env>(
    env: &E,
    config: &AgentConfig,
    gossip: &Gossip,
    wan: Option<&Gossip>,
) -> Result<(Option<Task>, Option<Task>), AgentError> {
    if !config.start_join.is_empty() {
        let addrs = join::resolve_all(env, &config.start_join, config.ports.serf_lan).await;
        let n = gossip.join(addrs).await?;
        tracing::info!(joined = n, "joined the cluster");
    }
    if let Some(w) = wan.filter(|_| !config.start_join_wan.is_empty()) {
        let addrs = join::resolve_all(env, &config.start_join_wan, config.ports.serf_wan).await;
        let n = w.join(addrs).await?;
        tracing::info!(joined = n, "joined the WAN pool");
    }
    let retry_wan_task = wan.filter(|_| !config.retry_join_wan.is_empty()).map(|w| {
        env.spawn(join::retry_join(
            env.clone(),
            w.clone(),
            config.retry_join_wan.clone(),
            config.ports.serf_wan,
            config.retry_interval,
            config.retry_max,
        ))
    });
    let retry_task = (!config.retry_join.is_empty()).then(|| {
        env.spawn(join::retry_join(
            env.clone(),
            gossip.clone(),
            config.retry_join.clone(),
            config.ports.serf_lan,
            config.retry_interval,
            config.retry_max,
        ))
    });
    Ok((retry_task, retry_wan_task))
}

/// Starts this agent's server on `listener` and its duties.
async fn start_server<E: Env>(
    env: &E,
    config: &AgentConfig,
    node_id: &str,
    gossip: &Gossip,
    listener: E::TcpListener,
    tls: server::RpcTls,
) -> Result<(Arc<Server<E>>, Vec<Task>), AgentError> {
    let id = server::raft_id(node_id).ok_or_else(|| {
        ConfigError(format!(
            "node ID {node_id:?} is not a UUID, and a server's Raft ID is made from it"
        ))
    })?;
    let raft_config = Arc::new(config.raft_config()?);
    let location = match (&config.sim_disk, &config.data_dir, config.dev) {
        (Some(disk), _, _) => Location::Disk(disk.clone()),
        (None, Some(d), false) => Location::Dir(d.join("raft")),
        _ => Location::Memory,
    };
    let server = Server::start(env.clone(), id, &location, listener, raft_config, tls).await?;
    if config.acl.enabled {
        server.enable_acls(config.acl.default_allow);
    }
    tracing::info!(
        raft_id = id,
        expect = config.bootstrap_expect,
        "server started"
    );
    // A secondary datacenter copies the primary's ACLs rather than making
    // its own (Consul's initial_management is the primary's alone).
    let primary = config
        .primary_datacenter
        .clone()
        .filter(|p| config.acl.enabled && *p != config.datacenter);
    let mut tasks = Vec::new();
    if let Some(primary) = &primary {
        tasks.push(server.replicate_acls(server::request::ReplicationConfig {
            primary: primary.clone(),
            token: config.acl.tokens.replication.clone(),
            tokens: config.acl.enable_token_replication,
            token_ttl: config.acl.token_ttl,
            down_policy: config.acl.down_policy,
        }));
    }
    let duties = server::cluster::spawn(
        env.clone(),
        server.clone(),
        gossip.clone(),
        DutyConfig {
            acl_init: (config.acl.enabled && primary.is_none())
                .then(|| config.acl.tokens.initial_management.clone()),
            agent_ca: config.secure.then(|| secure::agent_ca(config)).flatten(),
            autopilot: Some(config.autopilot.clone())
                .filter(|a| *a != crate::state::AutopilotConfig::default()),
            ..DutyConfig::new(
                &config.datacenter,
                config.bootstrap_expect,
                config.dead_server_grace,
            )
        },
    );
    tasks.push(duties);
    Ok((server, tasks))
}

/// Where an agent with `config` keeps its Serf snapshot: the simulator's
/// memory, or `<data_dir>/serf/local.snapshot` (none in `-dev`).
fn snapshot_store(config: &AgentConfig) -> Option<snapshot::SnapshotStore> {
    if let Some(s) = &config.serf_snapshot {
        return Some(s.clone());
    }
    let dir = config.data_dir.as_ref().filter(|_| !config.dev)?;
    Some(snapshot::SnapshotStore::File(
        dir.join("serf").join("local.snapshot"),
    ))
}

/// How often the Serf snapshot is brought up to date (it is written only
/// when the alive members changed).
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(5);

/// Fewest seconds between an agent's coordinate updates (Consul's
/// `sync_coordinate_interval_min`).
const COORDINATE_SYNC_MIN: Duration = Duration::from_secs(15);

/// When a new agent sends its first coordinate (jittered like the rest).
const COORDINATE_SYNC_FIRST: Duration = Duration::from_secs(2);

/// Cluster-wide coordinate updates per second the servers should receive
/// (Consul's `sync_coordinate_rate_target`); big clusters send less often.
const COORDINATE_SYNC_RATE: f64 = 64.0;

/// Sends this node's coordinate to the servers now and then, as Consul's
/// agents do: every 15 s, or less often in clusters big enough that the
/// servers would otherwise get more than 64 updates a second; each wait
/// is jittered so that agents started together do not send together.
async fn sync_coordinates<E: Env>(env: E, gossip: Gossip, servers: Arc<Servers<E>>) {
    use rand::Rng;
    let mut rng = ChaCha8Rng::seed_from_u64(env.seed("coordinate-sync"));
    // The first one goes out soon, so that a new node is not missing from
    // `/v1/coordinate/nodes` (and `cairn rtt`) for a whole period.
    let mut wait = COORDINATE_SYNC_FIRST.as_secs_f64() * rng.random_range(1.0..1.5);
    loop {
        env.sleep(Duration::from_secs_f64(wait)).await;
        let members = gossip.members().await.map_or(1, |m| m.len());
        let spread = (members as f64 / COORDINATE_SYNC_RATE).max(COORDINATE_SYNC_MIN.as_secs_f64());
        wait = spread * rng.random_range(1.0..1.5);
        let Ok(coords) = gossip.coordinates().await else {
            return;
        };
        let Some(local) = coords.local else {
            continue;
        };
        let reply = servers
            .call(ClientRequest::Coordinates {
                updates: vec![(gossip.name().to_owned(), local)],
                hops: 0,
            })
            .await;
        if let Err(e) = reply.answer {
            tracing::debug!(error = %e, "coordinate update not accepted");
        }
    }
}

/// The tags every agent gossips, as Consul sets them.
fn agent_tags(config: &AgentConfig, node_id: &str) -> BTreeMap<String, String> {
    [
        ("role", "node".to_string()),
        ("dc", config.datacenter.clone()),
        ("id", node_id.to_string()),
        ("vsn", "2".to_string()),
        ("vsn_min", "2".to_string()),
        ("vsn_max", "3".to_string()),
        ("build", format!("{VERSION}:cairn")),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

/// The configured node ID, or the one kept in the data dir, or a new one
/// (written to the data dir so it survives restarts).
fn node_id<E: Env>(env: &E, config: &AgentConfig) -> Result<String, AgentError> {
    if let Some(id) = &config.node_id {
        return Ok(id.to_lowercase());
    }
    let fresh = || {
        let mut b = [0u8; 16];
        ChaCha8Rng::seed_from_u64(env.seed("node-id")).fill_bytes(&mut b);
        crate::format::format_uuid(b)
    };
    let Some(dir) = config.data_dir.as_deref().filter(|_| !config.dev) else {
        return Ok(fresh());
    };
    let err = |why: String| AgentError::DataDir {
        path: dir.display().to_string(),
        why,
    };
    std::fs::create_dir_all(dir).map_err(|e| err(format!("cannot create it: {e}")))?;
    let file = dir.join("node-id");
    match std::fs::read_to_string(&file) {
        Ok(s) => {
            let id = s.trim().to_string();
            crate::format::parse_uuid(&id).ok_or_else(|| {
                err(format!(
                    "{} does not hold a UUID; remove it to make a new one",
                    file.display()
                ))
            })?;
            Ok(id)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = fresh();
            files::write_atomically(&file, id.as_bytes())
                .map_err(|e| err(format!("cannot write node-id: {e}")))?;
            Ok(id)
        }
        Err(e) => Err(err(format!("cannot read {}: {e}", file.display()))),
    }
}

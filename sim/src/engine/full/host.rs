//! The software of one simulated host: a real cairn agent (a server or a
//! client) with what the scenario asks of it (services to register, KV
//! load, prepared queries), posting what the engine scores (coordinates,
//! Raft state) and recording what it sees in the trace.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use cairn::agent::{Agent, AgentConfig};
use cairn::consensus::MemoryDisk;
use cairn::coordinate::Coordinate;
use cairn::env::{Env, Task};

use crate::engine::full::clock::SimClock;
use cairn::gossip::Config as GossipConfig;
use cairn::server::Server;
use cairn::state::Store;
use tokio::sync::watch;

use crate::engine::full::env::SimEnv;
use crate::engine::full::services::{self, ApiOrder};
use crate::engine::full::workload::{self, History, Order};
use crate::output::trace::{Recorder, TraceEvent};

/// Every running node's estimate coordinate, posted by the node itself.
pub(crate) type CoordinateBoard = Arc<std::sync::Mutex<BTreeMap<usize, Coordinate>>>;

/// What a running node should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Control {
    /// Run the agent.
    Run,
    /// Leave gracefully and stop.
    Leave,
}

/// What a running server shows the engine.
#[derive(Clone)]
pub(crate) struct ServerView {
    pub(crate) term: u64,
    /// Whether it leads in `term`.
    pub(crate) leading: bool,
    pub(crate) store: Arc<std::sync::RwLock<Store>>,
}

/// Every running server's view, posted by the server itself.
pub(crate) type ServerBoard = Arc<std::sync::Mutex<BTreeMap<usize, ServerView>>>;

/// What a server host needs beyond an agent's.
#[derive(Clone)]
pub(crate) struct ServerCtx {
    /// Servers of its datacenter (`bootstrap_expect`).
    pub(crate) expect: u32,
    pub(crate) node_id: String,
    /// Its disk, which outlives its crashes.
    pub(crate) disk: MemoryDisk,
    /// Server names by Raft ID, for the trace.
    pub(crate) names: Arc<BTreeMap<u64, String>>,
    pub(crate) board: ServerBoard,
}

/// Everything one host's software needs; cloned for each (re)start.
#[derive(Clone)]
pub(crate) struct HostCtx {
    pub(crate) index: usize,
    /// Where to post our coordinate each second.
    pub(crate) board: CoordinateBoard,
    /// Where a server posts its WAN coordinate each second.
    pub(crate) wan_board: CoordinateBoard,
    /// Where a server joins the WAN pool (empty: it does not).
    pub(crate) wan_join: Vec<String>,
    /// Services this node runs a prepared query for (see
    /// [`crate::engine::full::federation`]).
    pub(crate) queried: Vec<String>,
    pub(crate) name: String,
    pub(crate) datacenter: String,
    pub(crate) ip: IpAddr,
    pub(crate) recorder: Recorder,
    pub(crate) gossip: GossipConfig,
    pub(crate) encrypt: Option<String>,
    pub(crate) acl_default_allow: Option<bool>,
    /// With ACLs across datacenters: the primary, which owns policies
    /// and global tokens (the others replicate them).
    pub(crate) primary_datacenter: Option<String>,
    /// Tokens (by `acl_token` name) this node asks with (see
    /// [`crate::engine::full::acl`]).
    pub(crate) acl_probed: Vec<String>,
    pub(crate) join: Vec<String>,
    pub(crate) control: watch::Sender<Control>,
    pub(crate) server: Option<ServerCtx>,
    pub(crate) load: watch::Sender<Option<Order>>,
    pub(crate) registrations: watch::Sender<Vec<ApiOrder>>,
    /// Services this node (a server) follows in its catalog, recording
    /// what it sees.
    pub(crate) followed: Vec<String>,
    /// Of those, the ones it resolves through its DNS interface.
    pub(crate) resolved: Vec<String>,
    pub(crate) history: History,
    /// The agent's Serf snapshot: the members it rejoins after a crash
    /// (every node has one, as every Consul agent has a data directory).
    pub(crate) snapshot: cairn::agent::snapshot::SnapshotStore,
}

/// The management token of a simulated cluster with ACLs on: every
/// agent's initial management, agent and default token.
const SIM_MANAGEMENT_TOKEN: &str = "5e1f0c2a-0000-4000-8000-00000000acl0";

/// How a node's software ended, other than by a crash from outside.
#[derive(Debug)]
pub(crate) enum Exit {
    /// It left, as asked.
    Left,
    /// It stopped on its own with this error, as the agent does when its
    /// disk fails it: the process exits and a supervisor restarts it.
    Failed(String),
}

impl HostCtx {
    /// Records what the node learnt of its pool while its agent was
    /// starting (a server mending its log from peers starts late, and
    /// gossip rejoins meanwhile), as of now: no event before the
    /// subscription reaches it. Later events come in order after these.
    async fn record_known(&self, env: &SimEnv, agent: &Agent<SimEnv>) -> Result<(), String> {
        let known = agent
            .gossip()
            .members()
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        let now = env.true_time(env.now().as_duration()).as_micros() as u64;
        for m in known.iter().filter(|m| m.name != self.name) {
            use cairn::gossip::MemberStatus as S;
            let event = match (m.status, m.suspect) {
                (S::Alive, false) => "joined",
                (S::Alive, true) => "suspect",
                (S::Leaving | S::Left, _) => "left",
                (S::Failed, _) => "failed",
                (S::None, _) => continue,
            };
            self.recorder.record(TraceEvent {
                t_us: now,
                node: self.name.clone(),
                event: event.into(),
                member: Some(m.name.clone()),
                incarnation: Some(m.incarnation),
                detail: None,
            });
        }
        Ok(())
    }

    /// Runs the node's software on `env` until it leaves or stops on a
    /// storage failure; an error is a failure of the host's software (a
    /// bug, a scenario it cannot run), which ends the run.
    pub(crate) async fn run(self, env: SimEnv) -> Result<Exit, String> {
        let mut control = self.control.subscribe();
        let mut config = AgentConfig::dev();
        config.server = self.server.is_some();
        config.bootstrap_expect = self.server.as_ref().map_or(0, |s| s.expect);
        config.node_id = self.server.as_ref().map(|s| s.node_id.clone());
        config.sim_disk = self.server.as_ref().map(|s| s.disk.clone());
        config.serf_snapshot = Some(self.snapshot.clone());
        config.node_name = self.name.clone();
        config.datacenter = self.datacenter.clone();
        config.bind_addr = self.ip;
        // Servers of federated datacenters join the WAN pool; no one else
        // listens on its port.
        if self.wan_join.is_empty() {
            config.ports.serf_wan = 0;
        } else {
            config.retry_join_wan = self.wan_join.clone();
        }
        config.client_addr = self.ip;
        config.gossip_base = self.gossip.clone();
        config.encrypt = self.encrypt.clone();
        if let Some(default_allow) = self.acl_default_allow {
            let root = Some(SIM_MANAGEMENT_TOKEN.to_string());
            config.acl.enabled = true;
            config.acl.default_allow = default_allow;
            config.acl.tokens.initial_management = root.clone();
            config.acl.tokens.agent = root.clone();
            config.acl.tokens.default = root.clone();
            if let Some(primary) = &self.primary_datacenter {
                config.primary_datacenter = Some(primary.clone());
                config.acl.enable_token_replication = true;
                config.acl.tokens.replication = root;
            }
        }
        config.log_level = "warn".into();
        // Every host starts in the same tick: the first may not listen yet,
        // so keep trying, as an operator's retry_join would.
        config.retry_join = self.join.clone();
        config.retry_interval = Duration::from_secs(1);
        let (config_http_port, config_dns_port) = (config.ports.http, config.ports.dns);
        let agent = match Agent::start(env.clone(), config).await {
            Ok(agent) => agent,
            // A disk that fails the server at boot (full, unrecoverable)
            // is the disk's fault, not the software's: it exits, and its
            // supervisor tries again.
            Err(e @ cairn::agent::AgentError::Server(cairn::server::StartError::Storage(_))) => {
                return Ok(Exit::Failed(format!("the agent did not start: {e}")));
            }
            Err(e) => return Err(format!("{}: the agent did not start: {e}", self.name)),
        };
        let mut events = agent
            .gossip()
            .subscribe()
            .await
            .map_err(|e| format!("{}: {e}", self.name))?;
        let recorder = self.recorder.clone();
        self.record_known(&env, &agent).await?;
        let me = self.name.clone();
        let clock_env = env.clone();
        let _recording = env.spawn(async move {
            while let Some(ev) = events.recv().await {
                recorder.record(TraceEvent {
                    t_us: clock_env.true_time(ev.at.as_duration()).as_micros() as u64,
                    node: me.clone(),
                    event: ev.kind.as_str().into(),
                    member: Some(ev.node.name.clone()),
                    incarnation: Some(ev.node.incarnation),
                    detail: None,
                });
            }
        });
        let _raft = match (&self.server, agent.servers().local()) {
            (Some(ctx), Some(server)) => Some(self.watch_raft(&env, ctx, server.clone())),
            _ => None,
        };
        let http = SocketAddr::new(self.ip, config_http_port);
        let _registering = services::register(
            env.clone(),
            self.name.clone(),
            http,
            self.registrations.subscribe(),
            self.recorder.clone(),
        );
        let dns = SocketAddr::new(self.ip, config_dns_port);
        let mut _following: Vec<Task> = Vec::new();
        for s in &self.followed {
            if self.server.is_some() {
                _following.push(services::follow(
                    env.clone(),
                    self.name.clone(),
                    http,
                    s.clone(),
                    self.recorder.clone(),
                ));
            }
        }
        for s in &self.resolved {
            _following.push(services::resolve(
                env.clone(),
                self.name.clone(),
                dns,
                s.clone(),
                self.recorder.clone(),
            ));
        }
        let _probing = (!self.acl_probed.is_empty()).then(|| {
            crate::engine::full::acl::probe(
                env.clone(),
                self.name.clone(),
                http,
                self.acl_probed.clone(),
                self.recorder.clone(),
            )
        });
        let _querying: Vec<Task> = self
            .queried
            .iter()
            .map(|s| {
                crate::engine::full::federation::query(
                    env.clone(),
                    self.name.clone(),
                    http,
                    s.clone(),
                    self.recorder.clone(),
                )
            })
            .collect();
        let _load = workload::drive(
            env.clone(),
            self.name.clone(),
            self.datacenter.clone(),
            agent.servers().clone(),
            self.load.subscribe(),
            self.history.clone(),
        );
        let posting = {
            let pools: Vec<_> = std::iter::once((agent.gossip().clone(), self.board.clone()))
                .chain(agent.wan().map(|g| (g.clone(), self.wan_board.clone())))
                .collect();
            let (env2, index) = (env.clone(), self.index);
            env.spawn(async move {
                loop {
                    env2.sleep(Duration::from_secs(1)).await;
                    for (gossip, board) in &pools {
                        if let Ok(c) = gossip.coordinates().await {
                            if let Some(local) = c.local {
                                board
                                    .lock()
                                    .unwrap_or_else(|p| p.into_inner())
                                    .insert(index, local);
                            }
                        }
                    }
                }
            })
        };
        let failed = agent.failed();
        tokio::pin!(failed);
        while *control.borrow_and_update() != Control::Leave {
            tokio::select! {
                biased;
                changed = control.changed() => if changed.is_err() {
                    break;
                },
                e = &mut failed => return Ok(Exit::Failed(e.to_string())),
            }
        }
        // A departing node is no longer scored: stop posting before the
        // leave, which takes a while to spread, and take our entry down in
        // case a last post raced the runner's.
        drop(posting);
        for board in [&self.board, &self.wan_board] {
            board
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&self.index);
        }
        // A leave that cannot finish spreading (say, the node is cut off)
        // ends the node anyway, as it would for an operator.
        if let Err(e) = agent.leave().await {
            tracing::warn!(node = %self.name, error = %e, "leave did not complete");
        }
        // Let the last events reach the recorder before the host stops.
        env.sleep(Duration::from_millis(10)).await;
        Ok(Exit::Left)
    }

    /// Posts the server's Raft state for the engine, and traces each change
    /// of its term or leader as `raft` events (`term=N leader=NAME`).
    fn watch_raft(&self, env: &SimEnv, ctx: &ServerCtx, server: Arc<Server<SimEnv>>) -> Task {
        let (index, me, recorder, ctx) = (
            self.index,
            self.name.clone(),
            self.recorder.clone(),
            ctx.clone(),
        );
        let env2 = env.clone();
        env.spawn(async move {
            let mut metrics = server.raft().metrics();
            let mut last = None;
            loop {
                let (term, leader) = {
                    let m = metrics.borrow_and_update();
                    (m.current_term, m.current_leader)
                };
                let leading = leader == Some(server.id());
                ctx.board.lock().unwrap_or_else(|p| p.into_inner()).insert(
                    index,
                    ServerView {
                        term,
                        leading,
                        store: server.store(),
                    },
                );
                if last != Some((term, leader)) {
                    last = Some((term, leader));
                    let name = leader.map_or("none", |id| {
                        ctx.names.get(&id).map_or("unknown", String::as_str)
                    });
                    recorder.record(TraceEvent {
                        t_us: env2.true_now().as_micros() as u64,
                        node: me.clone(),
                        event: RAFT_EVENT.into(),
                        member: None,
                        incarnation: None,
                        detail: Some(format!("term={term} leader={name}")),
                    });
                }
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
    }
}

/// The trace event a server's change of term or leader makes.
pub const RAFT_EVENT: &str = "raft";

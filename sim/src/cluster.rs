//! The full-stack engine: real cairn agents as turmoil hosts, on the
//! links a [`Topology`] draws, driven through a timed fault schedule, with
//! what every node saw recorded.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::agent::{Agent, AgentConfig};
use cairn::consensus::MemoryDisk;
use cairn::coordinate::Coordinate;
use cairn::env::{Env, Task};
use cairn::gossip::Config as GossipConfig;
use cairn::server::Server;
use cairn::state::Store;
use tokio::sync::watch;

use crate::checks::Outages;
use crate::env::{HostTable, NetConditions, SimEnv};
use crate::linearizability::Op;
use crate::mesh::IntentionOrder;
use crate::select::leader_of_placeholder;
use crate::services::{self, ApiOrder, Registration};
use crate::spread::{self, Spread};
use crate::tomography::percentile;
use crate::topology::{Links, Role, Topology};
use crate::trace::{Recorder, Trace, TraceEvent};
use crate::workload::{self, History, KvLoad, Order};

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Datacenters, nodes and the network model.
    pub topology: Topology,
    /// The network drawn from the model (see [`Topology::realize`]).
    pub links: Links,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Gossip tuning of every agent.
    pub gossip: GossipConfig,
    /// Every agent's gossip encryption key, base64 (`None`: plain).
    pub encrypt: Option<String>,
    /// Simulation step (turmoil's tick).
    pub tick: Duration,
    /// Virtual time to run for.
    pub duration: Duration,
}

impl ClusterSpec {
    /// `n` agents named `dc1-0`, `dc1-1`, … in one datacenter, with
    /// memberlist's LAN timing, 1 ms links and a 1 ms tick.
    pub fn new(n: usize, seed: u64, duration: Duration) -> Self {
        let topology = Topology::lan("dc1", n);
        // A uniform, constant model cannot fail to realize.
        let links = topology.realize(seed).unwrap_or_else(|_| Links {
            one_way: vec![vec![Duration::from_millis(1); n]; n],
            loss: vec![vec![0.0; n]; n],
        });
        ClusterSpec {
            topology,
            links,
            seed,
            gossip: GossipConfig::lan(),
            encrypt: None,
            tick: Duration::from_millis(1),
            duration,
        }
    }

    /// Node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.topology.names()
    }
}

/// How well coordinates predicted the model's RTTs at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// Virtual time.
    pub at: Duration,
    /// Pairs scored (both nodes running, in one pool, with a coordinate).
    pub pairs: usize,
    /// Median relative error.
    pub median: f64,
    /// 90th percentile of the relative error.
    pub p90: f64,
    /// 99th percentile of the relative error.
    pub p99: f64,
    /// Mean absolute error, milliseconds.
    pub mean_abs_ms: f64,
}

/// One scored pair at the end of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairError {
    /// Node indices, `a < b`.
    pub a: usize,
    /// Second node.
    pub b: usize,
    /// The model's RTT, ms.
    pub true_ms: f64,
    /// The coordinates' estimate, ms.
    pub est_ms: f64,
}

impl PairError {
    /// |estimate - truth| / truth.
    pub fn rel(&self) -> f64 {
        (self.est_ms - self.true_ms).abs() / self.true_ms
    }
}

/// One node at one sampling instant (each virtual second).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NodeSample {
    /// Virtual time.
    pub at: Duration,
    /// Node index.
    pub node: usize,
    /// Running, waiting to join, crashed or gone.
    pub status: NodeStatus,
    /// UDP datagrams sent since the last sample.
    pub udp_packets: u64,
    /// UDP bytes sent since the last sample.
    pub udp_bytes: u64,
    /// TCP bytes written since the last sample.
    pub tcp_bytes: u64,
    /// Median relative error of this node's RTT estimates to its pool.
    pub coord_median: Option<f64>,
    /// 90th percentile of the same.
    pub coord_p90: Option<f64>,
}

/// What a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not started yet: a `join` event starts it.
    Waiting,
    /// Running.
    Running,
    /// Crashed.
    Crashed,
    /// Left gracefully.
    Left,
}

impl NodeStatus {
    /// Lowercase name for files.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Waiting => "waiting",
            NodeStatus::Running => "running",
            NodeStatus::Crashed => "crashed",
            NodeStatus::Left => "left",
        }
    }
}

/// A change to a link's latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyChange {
    /// This one-way latency.
    Set(Duration),
    /// The model's latency times this factor.
    Scale(f64),
    /// Back to the model's latency.
    Reset,
}

/// A fault or operation injected at a point in virtual time. `T` names the
/// nodes: selectors in a scenario, node names once resolved for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<T = Vec<String>> {
    /// Cut every link between these nodes and all others.
    Isolate(T),
    /// Cut every link between the two sets.
    Partition(T, T),
    /// Restore every link.
    Heal,
    /// Restore the links between the two sets.
    HealBetween(T, T),
    /// Stop these nodes abruptly.
    Crash(T),
    /// Start these crashed or departed nodes again, as fresh processes.
    Restart(T),
    /// Start these nodes for the first time (or again after a leave).
    Join(T),
    /// Have these nodes leave gracefully (they stop afterwards).
    Leave(T),
    /// Drop this fraction of UDP packets on every link.
    Loss(f64),
    /// Drop this fraction on the links between the two sets; `None` goes
    /// back to the model's loss.
    LinkLoss(T, T, Option<f64>),
    /// Change the latency of the links between the two sets.
    Latency(T, T, LatencyChange),
    /// Skew these nodes' wall clocks by this many milliseconds.
    Skew(T, i64),
    /// Make these nodes slow: every datagram they send or receive takes
    /// this much longer (zero makes them well again).
    Slow(T, Duration),
    /// Run KV clients on these nodes (see [`workload`](crate::workload)).
    KvLoad(T, KvLoad),
    /// Register a service with these nodes' agents over HTTP (see
    /// [`services`](crate::services)).
    RegisterService(T, Registration),
    /// Set an intention through the first of these nodes' agents (see
    /// [`mesh`](crate::mesh)).
    Intention(T, IntentionOrder),
}

impl<T> Action<T> {
    /// The same action with its node sets mapped by `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Action<U> {
        match self {
            Action::Isolate(a) => Action::Isolate(f(a)),
            Action::Partition(a, b) => Action::Partition(f(a), f(b)),
            Action::Heal => Action::Heal,
            Action::HealBetween(a, b) => Action::HealBetween(f(a), f(b)),
            Action::Crash(a) => Action::Crash(f(a)),
            Action::Restart(a) => Action::Restart(f(a)),
            Action::Join(a) => Action::Join(f(a)),
            Action::Leave(a) => Action::Leave(f(a)),
            Action::Loss(r) => Action::Loss(*r),
            Action::LinkLoss(a, b, r) => Action::LinkLoss(f(a), f(b), *r),
            Action::Latency(a, b, c) => Action::Latency(f(a), f(b), *c),
            Action::Skew(a, ms) => Action::Skew(f(a), *ms),
            Action::Slow(a, d) => Action::Slow(f(a), *d),
            Action::KvLoad(a, l) => Action::KvLoad(f(a), *l),
            Action::RegisterService(a, r) => Action::RegisterService(f(a), r.clone()),
            Action::Intention(a, o) => Action::Intention(f(a), o.clone()),
        }
    }

    /// The action's name in traces and scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Isolate(_) | Action::Partition(..) => "partition",
            Action::Heal | Action::HealBetween(..) => "heal",
            Action::Crash(_) => "crash",
            Action::Restart(_) => "restart",
            Action::Join(_) => "join",
            Action::Leave(_) => "leave",
            Action::Loss(_) => "loss",
            Action::LinkLoss(_, _, Some(_)) => "loss",
            Action::LinkLoss(_, _, None) => "loss_off",
            Action::Latency(_, _, LatencyChange::Reset) => "latency_reset",
            Action::Latency(..) => "latency",
            Action::Skew(..) => "skew",
            Action::Slow(..) => "slow",
            Action::KvLoad(..) => "kv_load",
            Action::RegisterService(_, reg) if reg.connect => "connect_service",
            Action::RegisterService(..) => "register_service",
            Action::Intention(..) => "intention",
        }
    }
}

impl Action {
    /// Every node the action names.
    pub fn nodes(&self) -> Vec<&String> {
        match self {
            Action::Isolate(a)
            | Action::Crash(a)
            | Action::Restart(a)
            | Action::Join(a)
            | Action::Leave(a)
            | Action::Skew(a, _)
            | Action::Slow(a, _)
            | Action::KvLoad(a, _)
            | Action::RegisterService(a, _)
            | Action::Intention(a, _) => a.iter().collect(),
            Action::Partition(a, b)
            | Action::HealBetween(a, b)
            | Action::LinkLoss(a, b, _)
            | Action::Latency(a, b, _) => a.iter().chain(b).collect(),
            Action::Heal | Action::Loss(_) => Vec::new(),
        }
    }

    /// Whether the action changes nothing: a lifecycle action left with no
    /// node to change (see [`effective`](Self::effective)).
    pub fn is_noop(&self) -> bool {
        self.nodes().is_empty() && !matches!(self, Action::Heal | Action::Loss(_))
    }

    /// The action limited to the nodes it can change, given each node's
    /// status: only running nodes crash or leave, only stopped ones start.
    pub fn effective(&self, status: impl Fn(&str) -> Option<NodeStatus>) -> Action {
        let keep = |set: &Vec<String>, want: fn(NodeStatus) -> bool| -> Vec<String> {
            set.iter()
                .filter(|x| status(x).is_some_and(want))
                .cloned()
                .collect()
        };
        match self {
            Action::Crash(set) => Action::Crash(keep(set, |s| s == NodeStatus::Running)),
            Action::Leave(set) => Action::Leave(keep(set, |s| s == NodeStatus::Running)),
            Action::Restart(set) => Action::Restart(keep(set, |s| s != NodeStatus::Running)),
            Action::Join(set) => Action::Join(keep(set, |s| s != NodeStatus::Running)),
            other => other.clone(),
        }
    }

    /// The fact a lifecycle action creates about each of its nodes (what
    /// the rest of the pool should come to know): `left`, `failed` or
    /// `joined`.
    pub fn fact(&self) -> Option<(&[String], &'static str)> {
        match self {
            Action::Leave(s) => Some((s, "left")),
            Action::Crash(s) => Some((s, "failed")),
            Action::Join(s) | Action::Restart(s) => Some((s, "joined")),
            _ => None,
        }
    }

    /// The trace line recording this action at `at`.
    pub fn trace_event(&self, at: Duration) -> TraceEvent {
        TraceEvent {
            t_us: at.as_micros() as u64,
            node: "sim".into(),
            event: self.name().into(),
            member: None,
            incarnation: None,
            detail: self.detail(),
        }
    }

    /// The parameters, for the trace.
    pub fn detail(&self) -> Option<String> {
        let pair = |a: &[String], b: &[String]| format!("{}|{}", a.join(","), b.join(","));
        match self {
            Action::Isolate(n)
            | Action::Crash(n)
            | Action::Restart(n)
            | Action::Join(n)
            | Action::Leave(n) => Some(n.join(",")),
            Action::Partition(a, b) | Action::HealBetween(a, b) => Some(pair(a, b)),
            Action::Heal => None,
            Action::Loss(r) => Some(format!("{r}")),
            Action::LinkLoss(a, b, r) => Some(match r {
                Some(r) => format!("{}:{r}", pair(a, b)),
                None => pair(a, b),
            }),
            Action::Latency(a, b, c) => Some(format!("{}:{c:?}", pair(a, b))),
            Action::Skew(n, ms) => Some(format!("{}:{ms}ms", n.join(","))),
            Action::Slow(n, d) => Some(format!("{}:{d:?}", n.join(","))),
            Action::KvLoad(n, l) => Some(format!("{}:{}", n.join(","), l.detail())),
            Action::RegisterService(n, r) => Some(format!("{}:{}", n.join(","), r.detail())),
            Action::Intention(n, o) => Some(format!("{}:{}", n.join(","), o.detail())),
        }
    }
}

/// Whether `name` starts the run waiting: its first lifecycle event (crash,
/// restart, join, leave) is a join, which starts it.
pub fn starts_waiting(name: &str, actions: &[TimedAction]) -> bool {
    actions
        .iter()
        .find(|a| {
            matches!(&a.action, Action::Crash(s) | Action::Restart(s) | Action::Join(s) | Action::Leave(s) if s.iter().any(|x| x == name))
        })
        .is_some_and(|a| matches!(a.action, Action::Join(_)))
}

/// An action and when it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedAction<T = Vec<String>> {
    /// Virtual time since the start.
    pub at: Duration,
    /// What happens.
    pub action: Action<T>,
}

/// What a run produced.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// Every event, by time.
    pub trace: Trace,
    /// Virtual time simulated.
    pub virtual_time: Duration,
    /// Simulation steps taken.
    pub steps: u64,
    /// UDP packets sent over lossy links, and how many were dropped.
    pub lossy_packets: (u64, u64),
    /// Coordinate accuracy each virtual second.
    pub accuracy: Vec<Accuracy>,
    /// Every scored pair at the end.
    pub final_pairs: Vec<PairError>,
    /// WAN coordinate accuracy each virtual second: server pairs of
    /// different datacenters (empty unless the datacenters federate).
    pub wan_accuracy: Vec<Accuracy>,
    /// Every WAN pair scored at the end.
    pub wan_pairs: Vec<PairError>,
    /// Every node each virtual second.
    pub samples: Vec<NodeSample>,
    /// The actions as they took effect: limited to the nodes they could
    /// change (a crash of a crashed node is no crash), in order.
    pub applied: Vec<TimedAction>,
    /// How each leave, crash and join spread through its pool.
    pub spreads: Vec<Spread>,
    /// Failure verdicts about running, reachable nodes by running,
    /// reachable observers, counted over every node (the protocol engine
    /// counts these live; the full engine's `no_false_failures` check
    /// judges its complete trace instead).
    pub false_failures: Option<u64>,
    /// The nodes whose membership events the trace holds, when only a
    /// sample does (large protocol-engine runs); `None`: every node.
    pub observed: Option<std::collections::BTreeSet<String>>,
    /// Every KV operation the `kv_load` clients made.
    pub history: Vec<Op>,
    /// The state of every server running at the end.
    pub replicas: Vec<Replica>,
}

/// A server's replicated state at the end of a run.
#[derive(Debug, Clone, PartialEq)]
pub struct Replica {
    /// The server.
    pub node: String,
    /// Its datacenter.
    pub dc: String,
    /// The last Raft log index it applied.
    pub last_applied: u64,
    /// Every KV entry: key -> (value, ModifyIndex).
    pub kv: BTreeMap<String, (Vec<u8>, u64)>,
}

/// Errors from a run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A host's software failed.
    #[error("simulation failed at {at:?}: {why}")]
    Host {
        /// Virtual time of the failure.
        at: Duration,
        /// What the host reported.
        why: String,
    },
    /// The schedule names a node the cluster does not have.
    #[error("the schedule names unknown node {0:?}")]
    UnknownNode(String),
    /// The cluster cannot be set up as specified.
    #[error("{0}")]
    Setup(String),
}

/// Fixed start of simulated wall-clock time, so traces do not depend on
/// when a run happens: 2026-01-01T00:00:00Z.
pub fn sim_epoch() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

/// Every running node's estimate coordinate, posted by the node itself.
type CoordinateBoard = Arc<std::sync::Mutex<BTreeMap<usize, Coordinate>>>;

/// What a node's host software should be doing; restarts read it afresh.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Control {
    /// Wait for a `join`.
    Wait,
    /// Run the agent.
    Run,
    /// Leave gracefully and stop.
    Leave,
}

/// The run in progress: the turmoil world and what the scenario changed.
struct World<'a> {
    sim: turmoil::Sim<'a>,
    spec: &'a ClusterSpec,
    names: Vec<String>,
    net: Arc<NetConditions>,
    ips: Vec<IpAddr>,
    control: Vec<watch::Sender<Control>>,
    status: Vec<NodeStatus>,
    /// Current one-way latency of every link (the model's, changed by
    /// `latency` events): what coordinates are scored against.
    one_way: Vec<Vec<Duration>>,
    board: CoordinateBoard,
    /// Every running server's WAN coordinate.
    wan_board: CoordinateBoard,
    /// Each node's KV load order.
    loads: Vec<watch::Sender<Option<Order>>>,
    /// Each node's services to register.
    registrations: Vec<watch::Sender<Vec<ApiOrder>>>,
    servers: ServerBoard,
}

/// Runs the cluster through `actions`; `progress` is told the virtual time
/// once per simulated second.
pub fn run_cluster(
    spec: &ClusterSpec,
    actions: &[TimedAction],
    mut progress: impl FnMut(Duration),
) -> Result<RunOutput, SimError> {
    let names = spec.names();
    let n = names.len();
    if spec.links.one_way.len() != n || spec.links.one_way.iter().any(|r| r.len() != n) {
        return Err(SimError::Setup(format!(
            "{n} nodes need an {n}x{n} table of link latencies"
        )));
    }
    let leads = |x: &str| {
        leader_of_placeholder(x).is_some_and(|dc| {
            spec.topology
                .datacenters
                .iter()
                .any(|d| d.name == dc && d.servers > 0)
        })
    };
    for a in actions {
        if let Some(bad) = a
            .action
            .nodes()
            .into_iter()
            .find(|x| !names.contains(x) && !leads(x))
        {
            return Err(SimError::UnknownNode(bad.clone()));
        }
    }
    let identities = server_identities(&spec.topology)?;
    let mut sim = turmoil::Builder::new()
        // The run loop below decides when to stop; this only guards it.
        .simulation_duration(spec.duration + Duration::from_secs(3600))
        .tick_duration(spec.tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .epoch(sim_epoch())
        .rng_seed(spec.seed)
        .build();
    let ips: Vec<IpAddr> = names.iter().map(|x| sim.lookup(x.as_str())).collect();
    let hosts: HostTable = Arc::new(names.iter().cloned().zip(ips.iter().copied()).collect());
    let net = Arc::new(NetConditions::default());
    net.set_jitter(spec.topology.latency.jitter);
    let recorder = Recorder::default();
    let board: CoordinateBoard = Arc::default();
    let wan_board: CoordinateBoard = Arc::default();
    let server_board: ServerBoard = Arc::default();
    let history = History::default();
    let mut control = Vec::new();
    let mut loads = Vec::new();
    let mut registrations = Vec::new();
    let followed = services::followed(actions);
    let mut status = Vec::new();
    for (index, name) in names.iter().enumerate() {
        let first = if starts_waiting(name, actions) {
            Control::Wait
        } else {
            Control::Run
        };
        let (tx, _) = watch::channel(first);
        status.push(if first == Control::Wait {
            NodeStatus::Waiting
        } else {
            NodeStatus::Running
        });
        let (load, _) = watch::channel(None);
        let (register, _) = watch::channel(Vec::new());
        let node = &spec.topology.nodes[index];
        let dc = &spec.topology.datacenters[node.dc];
        let server = (node.role == Role::Server).then(|| ServerCtx {
            expect: dc.servers as u32,
            node_id: identities.ids[index].clone(),
            disk: MemoryDisk::new(name),
            names: identities.names.clone(),
            board: server_board.clone(),
        });
        // The first server of each federated datacenter runs a prepared
        // query for every service.
        let queried = if spec.topology.federated()
            && crate::federation::querier(&spec.topology, node.dc) == Some(name.as_str())
        {
            followed.clone()
        } else {
            Vec::new()
        };
        let ctx = HostCtx {
            index,
            board: board.clone(),
            wan_board: wan_board.clone(),
            wan_join: spec.topology.wan_join_targets(index),
            queried,
            name: name.clone(),
            datacenter: dc.name.clone(),
            server,
            load: load.clone(),
            registrations: register.clone(),
            followed: followed.clone(),
            history: history.clone(),
            ip: ips[index],
            seed: spec.seed,
            boots: Arc::new(AtomicU64::new(0)),
            hosts: hosts.clone(),
            net: net.clone(),
            recorder: recorder.clone(),
            gossip: spec.gossip.clone(),
            encrypt: spec.encrypt.clone(),
            join: spec.topology.join_targets(index),
            control: tx.clone(),
        };
        control.push(tx);
        loads.push(load);
        registrations.push(register);
        sim.host(name.as_str(), move || ctx.clone().run());
    }

    // Links exist once both hosts are registered.
    for i in 0..n {
        for j in i + 1..n {
            sim.set_link_latency(ips[i], ips[j], spec.links.one_way[i][j]);
            let loss = spec.links.loss[i][j];
            if loss > 0.0 {
                net.set_link_loss(ips[i], ips[j], loss);
            }
        }
    }
    let mut w = World {
        sim,
        spec,
        names,
        net,
        ips,
        control,
        loads,
        registrations,
        status,
        one_way: spec.links.one_way.clone(),
        board,
        wan_board,
        servers: server_board,
    };
    let mut next = 0;
    let mut steps = 0u64;
    let mut accuracy = Vec::new();
    let mut wan_accuracy = Vec::new();
    let mut samples = Vec::new();
    let mut last_counts = vec![[0u64; 3]; n];
    let mut next_second = Duration::ZERO;
    let mut applied = Vec::new();
    while w.sim.elapsed() < spec.duration {
        while next < actions.len() && actions[next].at <= w.sim.elapsed() {
            // The trace says what happened, and readers of it (views that
            // restart afresh) rely on that: a restart of a running node is
            // no restart.
            let action = w
                .with_leaders(&actions[next].action)
                .effective(|x| w.names.iter().position(|n| n == x).map(|i| w.status[i]));
            next += 1;
            if action.is_noop() {
                continue;
            }
            recorder.record(action.trace_event(w.sim.elapsed()));
            w.apply(&action);
            applied.push(TimedAction {
                at: actions[next - 1].at,
                action,
            });
        }
        w.sim.step().map_err(|e| SimError::Host {
            at: w.sim.elapsed(),
            why: e.to_string(),
        })?;
        steps += 1;
        if w.sim.elapsed() >= next_second {
            let now = w.sim.elapsed();
            progress(now);
            let (acc, per_node, _) = w.score(now);
            accuracy.extend(acc);
            wan_accuracy.extend(w.score_wan(now).0);
            for i in 0..n {
                let counts = w.net.counters(w.ips[i]).read();
                let d = |k: usize| counts[k] - last_counts[i][k];
                samples.push(NodeSample {
                    at: now,
                    node: i,
                    status: w.status[i],
                    udp_packets: d(0),
                    udp_bytes: d(1),
                    tcp_bytes: d(2),
                    coord_median: per_node[i].map(|p| p.0),
                    coord_p90: per_node[i].map(|p| p.1),
                });
                last_counts[i] = counts;
            }
            next_second += Duration::from_secs(1);
        }
    }
    let (_, _, final_pairs) = w.score(w.sim.elapsed());
    let (_, wan_pairs) = w.score_wan(w.sim.elapsed());
    let trace = recorder.trace();
    let outages = Outages::from_timeline(&w.names, &applied);
    let spreads = spread::from_trace(spread::facts(&spec.topology, &applied, &outages), &trace);
    Ok(RunOutput {
        trace,
        virtual_time: w.sim.elapsed(),
        steps,
        lossy_packets: w.net.loss_counts(),
        accuracy,
        final_pairs,
        wan_accuracy,
        wan_pairs,
        samples,
        applied,
        spreads,
        false_failures: None,
        observed: None,
        history: history.ops(),
        replicas: w.replicas(),
    })
}

/// Node IDs of every server, and the name behind each Raft ID.
struct Identities {
    /// By node index; empty for clients.
    ids: Vec<String>,
    names: Arc<BTreeMap<u64, String>>,
}

/// Gives every server a node ID derived from its name alone (a restarted
/// server must come back as itself, while a client's ID may be fresh), and
/// checks the Raft IDs made from them are distinct.
fn server_identities(topo: &Topology) -> Result<Identities, SimError> {
    let mut ids = Vec::new();
    let mut names = BTreeMap::new();
    for n in &topo.nodes {
        if n.role != Role::Server {
            ids.push(String::new());
            continue;
        }
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&crate::env::derive_seed(0, &n.name, 0, "node-id").to_be_bytes());
        b[8..].copy_from_slice(&crate::env::derive_seed(1, &n.name, 0, "node-id").to_be_bytes());
        let id = cairn::agent::config::format_uuid(b);
        let raft = cairn::server::raft_id(&id).unwrap_or_default();
        if let Some(other) = names.insert(raft, n.name.clone()) {
            return Err(SimError::Setup(format!(
                "servers {other} and {} would share a Raft ID: rename one",
                n.name
            )));
        }
        ids.push(id);
    }
    Ok(Identities {
        ids,
        names: Arc::new(names),
    })
}

/// Per node: (median, p90) relative error of its estimates.
type PerNode = Vec<Option<(f64, f64)>>;

impl World<'_> {
    /// `action` with every leader placeholder replaced by the server that
    /// leads its datacenter now (dropped when none does).
    fn with_leaders(&self, action: &Action) -> Action {
        action.map(|set| {
            let mut out: Vec<String> = Vec::new();
            for x in set {
                let name = match leader_of_placeholder(x) {
                    Some(dc) => self.leader(dc),
                    None => Some(x.clone()),
                };
                if let Some(n) = name.filter(|n| !out.contains(n)) {
                    out.push(n);
                }
            }
            out
        })
    }

    /// The running server of `dc` that leads in the highest term.
    fn leader(&self, dc: &str) -> Option<String> {
        let topo = &self.spec.topology;
        let board = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        board
            .iter()
            .filter(|(&i, v)| {
                v.leading
                    && self.status[i] == NodeStatus::Running
                    && topo.datacenters[topo.nodes[i].dc].name == dc
            })
            .max_by_key(|(_, v)| v.term)
            .map(|(&i, _)| self.names[i].clone())
    }

    /// The state of every running server.
    fn replicas(&self) -> Vec<Replica> {
        let topo = &self.spec.topology;
        let board = self.servers.lock().unwrap_or_else(|p| p.into_inner());
        board
            .iter()
            .filter(|(&i, _)| self.status[i] == NodeStatus::Running)
            .map(|(&i, v)| {
                let store = v.store.read().unwrap_or_else(|p| p.into_inner());
                Replica {
                    node: self.names[i].clone(),
                    dc: topo.datacenters[topo.nodes[i].dc].name.clone(),
                    last_applied: store.last_applied(),
                    kv: store
                        .kv_list("")
                        .1
                        .into_iter()
                        .map(|e| (e.key.clone(), (e.value.clone(), e.modify_index)))
                        .collect(),
                }
            })
            .collect()
    }

    fn index(&self, name: &str) -> usize {
        // Names were checked against the cluster before the run.
        self.names.iter().position(|x| x == name).unwrap_or(0)
    }

    fn pairs<'s>(
        &'s self,
        a: &'s [String],
        b: &'s [String],
    ) -> impl Iterator<Item = (usize, usize)> + 's {
        a.iter().flat_map(move |x| {
            b.iter()
                .filter(move |y| *y != x)
                .map(move |y| (self.index(x), self.index(y)))
        })
    }

    fn apply(&mut self, action: &Action) {
        let all = self.names.clone();
        match action {
            Action::Isolate(set) => {
                let rest: Vec<String> = all.iter().filter(|x| !set.contains(x)).cloned().collect();
                self.apply(&Action::Partition(set.clone(), rest));
            }
            Action::Partition(a, b) => {
                for (i, j) in self.pairs(a, b).collect::<Vec<_>>() {
                    self.sim.partition(self.ips[i], self.ips[j]);
                }
            }
            Action::Heal => self.apply(&Action::HealBetween(all.clone(), all)),
            Action::HealBetween(a, b) => {
                for (i, j) in self.pairs(a, b).collect::<Vec<_>>() {
                    self.sim.repair(self.ips[i], self.ips[j]);
                }
            }
            Action::Crash(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.sim.crash(x.as_str());
                        self.status[i] = NodeStatus::Crashed;
                        self.unpost(i);
                    }
                }
            }
            Action::Restart(set) | Action::Join(set) => {
                for x in set {
                    let i = self.index(x);
                    let before = self.status[i];
                    if before == NodeStatus::Running {
                        continue;
                    }
                    self.control[i].send_replace(Control::Run);
                    // A waiting host is already up and only needed the word.
                    if before != NodeStatus::Waiting {
                        self.sim.bounce(x.as_str());
                    }
                    self.status[i] = NodeStatus::Running;
                }
            }
            Action::Leave(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.control[i].send_replace(Control::Leave);
                        self.status[i] = NodeStatus::Left;
                        self.unpost(i);
                    }
                }
            }
            Action::Loss(rate) => self.net.set_loss(*rate),
            Action::LinkLoss(a, b, rate) => {
                for (i, j) in self.pairs(a, b).collect::<Vec<_>>() {
                    let r = rate.unwrap_or(self.spec.links.loss[i][j]);
                    self.net.set_link_loss(self.ips[i], self.ips[j], r);
                }
            }
            Action::Latency(a, b, change) => {
                for (i, j) in self.pairs(a, b).collect::<Vec<_>>() {
                    let model = self.spec.links.one_way[i][j];
                    let d = match *change {
                        LatencyChange::Set(d) => d,
                        LatencyChange::Scale(f) => model.mul_f64(f),
                        LatencyChange::Reset => model,
                    }
                    .max(Duration::from_micros(1));
                    self.one_way[i][j] = d;
                    self.one_way[j][i] = d;
                    self.sim.set_link_latency(self.ips[i], self.ips[j], d);
                }
            }
            Action::Skew(set, ms) => {
                for x in set {
                    self.net.set_skew(x, *ms);
                }
            }
            Action::Slow(set, d) => {
                for x in set {
                    self.net.set_slow(self.ips[self.index(x)], *d);
                }
            }
            Action::KvLoad(set, load) => {
                let until = self.sim.elapsed() + load.duration;
                for x in set {
                    self.loads[self.index(x)].send_replace(Some(Order { load: *load, until }));
                }
            }
            Action::RegisterService(set, r) => {
                for x in set {
                    self.registrations[self.index(x)]
                        .send_modify(|v| v.push(ApiOrder::Register(r.clone())));
                }
            }
            Action::Intention(set, o) => {
                // One node sets it: an intention is cluster-wide.
                if let Some(x) = set.first() {
                    self.registrations[self.index(x)]
                        .send_modify(|v| v.push(ApiOrder::Intention(o.clone())));
                }
            }
        }
    }

    /// A node that stops is no longer scored; its last coordinate would
    /// otherwise linger on the board.
    fn unpost(&self, i: usize) {
        for board in [&self.board, &self.wan_board] {
            board.lock().unwrap_or_else(|p| p.into_inner()).remove(&i);
        }
        self.servers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&i);
    }

    /// Scores every pair of running nodes in one pool against the current
    /// link latencies: overall, per node, and pair by pair.
    fn score(&self, at: Duration) -> (Option<Accuracy>, PerNode, Vec<PairError>) {
        let topo = &self.spec.topology;
        let pairs = self.pairs_on(&self.board, |i, j| topo.pool_of(i) == topo.pool_of(j));
        let mut by_node: Vec<Vec<f64>> = vec![Vec::new(); self.names.len()];
        for p in &pairs {
            by_node[p.a].push(p.rel());
            by_node[p.b].push(p.rel());
        }
        let per_node = by_node
            .into_iter()
            .map(|mut v| {
                (!v.is_empty()).then(|| {
                    v.sort_by(f64::total_cmp);
                    (percentile(&v, 0.5), percentile(&v, 0.9))
                })
            })
            .collect();
        (summarize(at, &pairs), per_node, pairs)
    }

    /// Scores the WAN coordinates of every pair of running servers in
    /// different datacenters: overall, and pair by pair.
    fn score_wan(&self, at: Duration) -> (Option<Accuracy>, Vec<PairError>) {
        let topo = &self.spec.topology;
        let pairs = self.pairs_on(&self.wan_board, |i, j| topo.nodes[i].dc != topo.nodes[j].dc);
        (summarize(at, &pairs), pairs)
    }

    /// Every pair of nodes on `board` that `keep` takes, estimate against
    /// the current link latency.
    fn pairs_on(
        &self,
        board: &CoordinateBoard,
        keep: impl Fn(usize, usize) -> bool,
    ) -> Vec<PairError> {
        let coords = board.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let mut pairs = Vec::new();
        for (&i, a) in &coords {
            for (&j, b) in coords.range(i + 1..) {
                if keep(i, j) {
                    pairs.push(PairError {
                        a: i,
                        b: j,
                        true_ms: self.one_way[i][j].as_secs_f64() * 2000.0,
                        est_ms: a.distance_secs(b) * 1000.0,
                    });
                }
            }
        }
        pairs
    }
}

/// The accuracy of `pairs` at `at`; `None` when there are none.
fn summarize(at: Duration, pairs: &[PairError]) -> Option<Accuracy> {
    if pairs.is_empty() {
        return None;
    }
    let mut rel: Vec<f64> = pairs.iter().map(PairError::rel).collect();
    rel.sort_by(f64::total_cmp);
    let sum_abs: f64 = pairs.iter().map(|p| (p.est_ms - p.true_ms).abs()).sum();
    Some(Accuracy {
        at,
        pairs: pairs.len(),
        median: percentile(&rel, 0.5),
        p90: percentile(&rel, 0.9),
        p99: percentile(&rel, 0.99),
        mean_abs_ms: sum_abs / pairs.len() as f64,
    })
}

/// What a running server shows the engine.
#[derive(Clone)]
struct ServerView {
    term: u64,
    /// Whether it leads in `term`.
    leading: bool,
    store: Arc<std::sync::RwLock<Store>>,
}

/// Every running server's view, posted by the server itself.
type ServerBoard = Arc<std::sync::Mutex<BTreeMap<usize, ServerView>>>;

/// What a server host needs beyond an agent's.
#[derive(Clone)]
struct ServerCtx {
    /// Servers of its datacenter (`bootstrap_expect`).
    expect: u32,
    node_id: String,
    /// Its disk, which outlives its crashes.
    disk: MemoryDisk,
    /// Server names by Raft ID, for the trace.
    names: Arc<BTreeMap<u64, String>>,
    board: ServerBoard,
}

/// Everything one host's software needs; cloned for each (re)start.
#[derive(Clone)]
struct HostCtx {
    index: usize,
    /// Where to post our coordinate each second.
    board: CoordinateBoard,
    /// Where a server posts its WAN coordinate each second.
    wan_board: CoordinateBoard,
    /// Where a server joins the WAN pool (empty: it does not).
    wan_join: Vec<String>,
    /// Services this node runs a prepared query for (see
    /// [`crate::federation`]).
    queried: Vec<String>,
    name: String,
    datacenter: String,
    ip: IpAddr,
    seed: u64,
    boots: Arc<AtomicU64>,
    hosts: HostTable,
    net: Arc<NetConditions>,
    recorder: Recorder,
    gossip: GossipConfig,
    encrypt: Option<String>,
    join: Vec<String>,
    control: watch::Sender<Control>,
    server: Option<ServerCtx>,
    load: watch::Sender<Option<Order>>,
    registrations: watch::Sender<Vec<ApiOrder>>,
    /// Services this node resolves through its DNS interface (and, on a
    /// server, follows in its catalog), recording what it sees.
    followed: Vec<String>,
    history: History,
}

impl HostCtx {
    async fn run(self) -> turmoil::Result {
        let mut control = self.control.subscribe();
        while *control.borrow_and_update() == Control::Wait {
            if control.changed().await.is_err() {
                return Ok(());
            }
        }
        let boot = self.boots.fetch_add(1, Ordering::SeqCst);
        let env = SimEnv::new(
            &self.name,
            self.ip,
            self.seed,
            boot,
            self.hosts.clone(),
            self.net.clone(),
        );
        let mut config = AgentConfig::dev();
        config.server = self.server.is_some();
        config.bootstrap_expect = self.server.as_ref().map_or(0, |s| s.expect);
        config.node_id = self.server.as_ref().map(|s| s.node_id.clone());
        config.sim_disk = self.server.as_ref().map(|s| s.disk.clone());
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
        config.log_level = "warn".into();
        // Every host starts in the same tick: the first may not listen yet,
        // so keep trying, as an operator's retry_join would.
        config.retry_join = self.join.clone();
        config.retry_interval = Duration::from_secs(1);
        let (config_http_port, config_dns_port) = (config.ports.http, config.ports.dns);
        let agent = Agent::start(env.clone(), config).await?;
        let mut events = agent.gossip().subscribe().await?;
        let recorder = self.recorder.clone();
        let me = self.name.clone();
        let _recording = env.spawn(async move {
            while let Some(ev) = events.recv().await {
                recorder.record(TraceEvent {
                    t_us: ev.at.as_duration().as_micros() as u64,
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
            _following.push(services::resolve(
                env.clone(),
                self.name.clone(),
                dns,
                s.clone(),
                self.recorder.clone(),
            ));
        }
        let _querying: Vec<Task> = self
            .queried
            .iter()
            .map(|s| {
                crate::federation::query(
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
        while *control.borrow_and_update() != Control::Leave {
            if control.changed().await.is_err() {
                break;
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
        Ok(())
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
                        t_us: env2.now().as_duration().as_micros() as u64,
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

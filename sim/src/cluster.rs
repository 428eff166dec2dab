//! Runs real cairn agents as turmoil hosts under a timed fault schedule and
//! records what every node saw.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::agent::{Agent, AgentConfig};
use cairn::coordinate::Coordinate;
use cairn::env::Env;
use cairn::gossip::Config as GossipConfig;
use tokio::sync::watch;

use crate::tomography::{percentile, Matrix};

use crate::env::{HostTable, NetConditions, SimEnv};
use crate::trace::{Recorder, Trace, TraceEvent};

/// The simulated cluster.
#[derive(Debug, Clone)]
pub struct ClusterSpec {
    /// Node names; the first is everyone's join target.
    pub nodes: Vec<String>,
    /// Seed of everything random in the run.
    pub seed: u64,
    /// Gossip tuning of every agent.
    pub gossip: GossipConfig,
    /// Simulation step (turmoil's tick).
    pub tick: Duration,
    /// One-way latency of every link (unless `rtts` gives the pair).
    pub latency: Duration,
    /// Measured round-trip times between the nodes: each link's one-way
    /// latency is half its pair's RTT, and coordinates are scored against
    /// them every virtual second.
    pub rtts: Option<Arc<PairRtts>>,
    /// Virtual time to run for.
    pub duration: Duration,
}

/// Round-trip times between the cluster's nodes, from rows of a matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct PairRtts {
    /// The matrix row each node sits on.
    pub rows: Vec<u32>,
    /// `rtt_ms[i][j]` for nodes `i` and `j`.
    pub rtt_ms: Vec<Vec<f64>>,
}

impl PairRtts {
    /// Places node `i` on matrix row `rows[i]`; every pair must be measured.
    pub fn from_matrix(m: &Matrix, rows: &[u32]) -> Result<PairRtts, String> {
        let n = rows.len();
        let mut rtt_ms = vec![vec![0.0; n]; n];
        for i in 0..n {
            for j in i + 1..n {
                let v = m.rtt_ms(rows[i], rows[j]).ok_or_else(|| {
                    format!(
                        "{} has no RTT between rows {} and {}",
                        m.name, rows[i], rows[j]
                    )
                })?;
                rtt_ms[i][j] = v;
                rtt_ms[j][i] = v;
            }
        }
        Ok(PairRtts {
            rows: rows.to_vec(),
            rtt_ms,
        })
    }

    /// Checks that these RTTs can describe `n` nodes: a full `n`×`n` table
    /// of finite, positive times off the diagonal.
    pub fn check(&self, n: usize) -> Result<(), String> {
        if self.rtt_ms.len() != n || self.rtt_ms.iter().any(|row| row.len() != n) {
            return Err(format!(
                "{n} nodes need an {n}x{n} table of RTTs, got {} rows",
                self.rtt_ms.len()
            ));
        }
        for (i, row) in self.rtt_ms.iter().enumerate() {
            for (j, &v) in row.iter().enumerate() {
                if i != j && !(v.is_finite() && v > 0.0) {
                    return Err(format!(
                        "the RTT between nodes {i} and {j} is {v} ms; it must be a positive number"
                    ));
                }
            }
        }
        Ok(())
    }

    /// The first `n` rows (by id) that are all measured against each other.
    pub fn first_complete_rows(m: &Matrix, n: usize) -> Result<Vec<u32>, String> {
        let mut rows: Vec<u32> = Vec::new();
        for id in 0..m.nodes {
            if rows.len() == n {
                break;
            }
            if rows.iter().all(|&r| m.rtt_ms(r, id).is_some()) {
                rows.push(id);
            }
        }
        if rows.len() < n {
            return Err(format!(
                "{} has only {} rows all measured against each other, not {n}",
                m.name,
                rows.len()
            ));
        }
        Ok(rows)
    }
}

/// How well coordinates predicted the measured RTTs at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// Virtual time.
    pub at: Duration,
    /// Pairs scored (both nodes running and with a coordinate).
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

/// Every running node's estimate coordinate, posted by the node itself.
type CoordinateBoard = Arc<std::sync::Mutex<BTreeMap<usize, Coordinate>>>;

fn score(at: Duration, rtts: &PairRtts, board: &CoordinateBoard) -> Option<Accuracy> {
    let coords = board.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut rel = Vec::new();
    let mut sum_abs = 0.0;
    for (&i, a) in &coords {
        for (&j, b) in coords.range(i + 1..) {
            let truth = rtts.rtt_ms[i][j];
            let est = a.distance_secs(b) * 1000.0;
            sum_abs += (est - truth).abs();
            rel.push((est - truth).abs() / truth);
        }
    }
    if rel.is_empty() {
        return None;
    }
    let pairs = rel.len();
    rel.sort_by(f64::total_cmp);
    Some(Accuracy {
        at,
        pairs,
        median: percentile(&rel, 0.5),
        p90: percentile(&rel, 0.9),
        p99: percentile(&rel, 0.99),
        mean_abs_ms: sum_abs / pairs as f64,
    })
}

impl ClusterSpec {
    /// `n` agents named `n0`, `n1`, … with memberlist's LAN timing, 1 ms
    /// links and a 1 ms tick.
    pub fn new(n: usize, seed: u64, duration: Duration) -> Self {
        ClusterSpec {
            nodes: (0..n).map(|i| format!("n{i}")).collect(),
            seed,
            gossip: GossipConfig::lan(),
            tick: Duration::from_millis(1),
            latency: Duration::from_millis(1),
            rtts: None,
            duration,
        }
    }
}

/// A fault or operation injected at a point in virtual time.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Cut every link between these nodes and all others.
    Isolate(Vec<String>),
    /// Restore every link.
    Heal,
    /// Stop these nodes abruptly.
    Crash(Vec<String>),
    /// Start these (crashed) nodes again.
    Restart(Vec<String>),
    /// Have these nodes leave gracefully (they stop afterwards).
    Leave(Vec<String>),
    /// Drop this fraction of UDP packets on every link (0 to stop).
    Loss(f64),
    /// Skew these nodes' wall clocks by this many milliseconds.
    Skew(Vec<String>, i64),
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::Isolate(_) => "isolate",
            Action::Heal => "heal",
            Action::Crash(_) => "crash",
            Action::Restart(_) => "restart",
            Action::Leave(_) => "leave",
            Action::Loss(_) => "loss",
            Action::Skew(..) => "skew",
        }
    }

    fn detail(&self) -> Option<String> {
        match self {
            Action::Isolate(n) | Action::Crash(n) | Action::Restart(n) | Action::Leave(n) => {
                Some(n.join(","))
            }
            Action::Heal => None,
            Action::Loss(r) => Some(format!("{r}")),
            Action::Skew(n, ms) => Some(format!("{}:{ms}ms", n.join(","))),
        }
    }
}

/// An action and when it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedAction {
    /// Virtual time since the start.
    pub at: Duration,
    /// What happens.
    pub action: Action,
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
    /// Coordinate accuracy each virtual second (with `rtts` only).
    pub accuracy: Vec<Accuracy>,
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

/// Runs the cluster through `actions`; `progress` is told the virtual time
/// once per simulated second.
pub fn run_cluster(
    spec: &ClusterSpec,
    actions: &[TimedAction],
    mut progress: impl FnMut(Duration),
) -> Result<RunOutput, SimError> {
    for a in actions {
        if let Action::Isolate(n)
        | Action::Crash(n)
        | Action::Restart(n)
        | Action::Leave(n)
        | Action::Skew(n, _) = &a.action
        {
            if let Some(bad) = n.iter().find(|x| !spec.nodes.contains(x)) {
                return Err(SimError::UnknownNode(bad.clone()));
            }
        }
    }
    let mut sim = turmoil::Builder::new()
        // The run loop below decides when to stop; this only guards it.
        .simulation_duration(spec.duration + Duration::from_secs(3600))
        .tick_duration(spec.tick)
        .min_message_latency(spec.latency)
        .max_message_latency(spec.latency)
        .epoch(sim_epoch())
        .rng_seed(spec.seed)
        .build();
    let hosts: HostTable = Arc::new(
        spec.nodes
            .iter()
            .map(|n| (n.clone(), sim.lookup(n.as_str())))
            .collect::<BTreeMap<String, IpAddr>>(),
    );
    let net = Arc::new(NetConditions::default());
    let recorder = Recorder::default();
    let board: CoordinateBoard = Arc::default();
    let mut leave_signals = BTreeMap::new();
    let join_target = spec.nodes.first().cloned().unwrap_or_default();
    for (index, name) in spec.nodes.iter().enumerate() {
        let (leave_tx, _) = watch::channel(false);
        let ctx = HostCtx {
            index,
            board: spec.rtts.is_some().then(|| board.clone()),
            name: name.clone(),
            ip: hosts[name],
            seed: spec.seed,
            boots: Arc::new(AtomicU64::new(0)),
            hosts: hosts.clone(),
            net: net.clone(),
            recorder: recorder.clone(),
            gossip: spec.gossip.clone(),
            join: (join_target != *name).then(|| join_target.clone()),
            leave: leave_tx.clone(),
        };
        leave_signals.insert(name.clone(), leave_tx);
        sim.host(name.as_str(), move || ctx.clone().run());
    }

    // Links exist once both hosts are registered.
    if let Some(r) = &spec.rtts {
        r.check(spec.nodes.len()).map_err(SimError::Setup)?;
        for (i, a) in spec.nodes.iter().enumerate() {
            for (j, b) in spec.nodes.iter().enumerate().skip(i + 1) {
                let one_way = Duration::try_from_secs_f64(r.rtt_ms[i][j] / 2000.0)
                    .map_err(|e| SimError::Setup(format!("the RTT between {a} and {b}: {e}")))?;
                sim.set_link_latency(a.as_str(), b.as_str(), one_way);
            }
        }
    }
    let mut next = 0;
    let mut steps = 0u64;
    let mut accuracy = Vec::new();
    let mut next_second = Duration::ZERO;
    while sim.elapsed() < spec.duration {
        while next < actions.len() && actions[next].at <= sim.elapsed() {
            let a = &actions[next];
            recorder.record(TraceEvent {
                t_us: sim.elapsed().as_micros() as u64,
                node: "sim".into(),
                event: a.action.name().into(),
                member: None,
                incarnation: None,
                detail: a.action.detail(),
            });
            apply(&mut sim, &spec.nodes, &net, &leave_signals, &a.action);
            if let Action::Crash(set) | Action::Leave(set) = &a.action {
                let mut b = board.lock().unwrap_or_else(|p| p.into_inner());
                for n in set {
                    if let Some(i) = spec.nodes.iter().position(|x| x == n) {
                        b.remove(&i);
                    }
                }
            }
            next += 1;
        }
        sim.step().map_err(|e| SimError::Host {
            at: sim.elapsed(),
            why: e.to_string(),
        })?;
        steps += 1;
        if sim.elapsed() >= next_second {
            progress(sim.elapsed());
            if let Some(r) = &spec.rtts {
                accuracy.extend(score(sim.elapsed(), r, &board));
            }
            next_second += Duration::from_secs(1);
        }
    }
    Ok(RunOutput {
        trace: recorder.trace(),
        virtual_time: sim.elapsed(),
        steps,
        lossy_packets: net.loss_counts(),
        accuracy,
    })
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    all: &[String],
    net: &NetConditions,
    leave: &BTreeMap<String, watch::Sender<bool>>,
    action: &Action,
) {
    match action {
        Action::Isolate(set) => {
            for a in set {
                for b in all.iter().filter(|b| !set.contains(b)) {
                    sim.partition(a.as_str(), b.as_str());
                }
            }
        }
        Action::Heal => {
            for (i, a) in all.iter().enumerate() {
                for b in &all[i + 1..] {
                    sim.repair(a.as_str(), b.as_str());
                }
            }
        }
        Action::Crash(set) => {
            for n in set {
                sim.crash(n.as_str());
            }
        }
        Action::Restart(set) => {
            for n in set {
                if let Some(tx) = leave.get(n) {
                    tx.send_replace(false);
                }
                sim.bounce(n.as_str());
            }
        }
        Action::Leave(set) => {
            for n in set {
                if let Some(tx) = leave.get(n) {
                    tx.send_replace(true);
                }
            }
        }
        Action::Loss(rate) => net.set_loss(*rate),
        Action::Skew(set, ms) => {
            for n in set {
                net.set_skew(n, *ms);
            }
        }
    }
}

/// Everything one host's software needs; cloned for each (re)start.
#[derive(Clone)]
struct HostCtx {
    index: usize,
    /// Where to post our coordinate each second, when accuracy is scored.
    board: Option<CoordinateBoard>,
    name: String,
    ip: IpAddr,
    seed: u64,
    boots: Arc<AtomicU64>,
    hosts: HostTable,
    net: Arc<NetConditions>,
    recorder: Recorder,
    gossip: GossipConfig,
    join: Option<String>,
    leave: watch::Sender<bool>,
}

impl HostCtx {
    async fn run(self) -> turmoil::Result {
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
        config.node_name = self.name.clone();
        config.bind_addr = self.ip;
        config.client_addr = self.ip;
        config.gossip_base = self.gossip.clone();
        config.log_level = "warn".into();
        // Every host starts in the same tick: the first may not listen yet,
        // so keep trying, as an operator's retry_join would.
        config.retry_join = self.join.iter().cloned().collect();
        config.retry_interval = Duration::from_secs(1);
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
        let posting = self.board.clone().map(|board| {
            let (gossip, env2, index) = (agent.gossip().clone(), env.clone(), self.index);
            env.spawn(async move {
                loop {
                    env2.sleep(Duration::from_secs(1)).await;
                    if let Ok(c) = gossip.coordinates().await {
                        if let Some(local) = c.local {
                            board
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(index, local);
                        }
                    }
                }
            })
        });
        let mut leave = self.leave.subscribe();
        while !*leave.borrow_and_update() {
            if leave.changed().await.is_err() {
                break;
            }
        }
        // A departing node is no longer scored: stop posting before the
        // leave, which takes a while to spread, and take our entry down.
        drop(posting);
        if let Some(board) = &self.board {
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
}

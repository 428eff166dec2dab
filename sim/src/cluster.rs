//! Runs real cairn agents as turmoil hosts under a timed fault schedule and
//! records what every node saw.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use cairn::agent::{Agent, AgentConfig};
use cairn::env::Env;
use cairn::gossip::Config as GossipConfig;
use tokio::sync::watch;

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
    /// One-way latency of every link.
    pub latency: Duration,
    /// Virtual time to run for.
    pub duration: Duration,
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
    let mut leave_signals = BTreeMap::new();
    let join_target = spec.nodes.first().cloned().unwrap_or_default();
    for name in &spec.nodes {
        let (leave_tx, _) = watch::channel(false);
        let ctx = HostCtx {
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

    let mut next = 0;
    let mut steps = 0u64;
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
            next += 1;
        }
        sim.step().map_err(|e| SimError::Host {
            at: sim.elapsed(),
            why: e.to_string(),
        })?;
        steps += 1;
        if sim.elapsed() >= next_second {
            progress(sim.elapsed());
            next_second += Duration::from_secs(1);
        }
    }
    Ok(RunOutput {
        trace: recorder.trace(),
        virtual_time: sim.elapsed(),
        steps,
        lossy_packets: net.loss_counts(),
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
        let mut leave = self.leave.subscribe();
        while !*leave.borrow_and_update() {
            if leave.changed().await.is_err() {
                break;
            }
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

//! The full-stack engine: real cairn agents, every one on the run's
//! simulated [`Network`], driven through a timed fault schedule, with what
//! every node saw recorded.
//!
//! All nodes share one single-threaded tokio runtime whose clock is
//! paused: time stands still while any task can run, and jumps to the next
//! timer when none can. So the engine steps from event to event (a timer, a
//! datagram's or a stream's arrival) instead of ticking every node each
//! millisecond, and its cost follows the work the nodes do, not their
//! number squared. Timers have tokio's resolution, 1 ms. Each node's tasks
//! form a [`TaskGroup`]: a crash aborts them all and takes the node's
//! sockets down, while a server's disk outlives it. Same seed, same
//! schedule: tasks run in the order they were woken, and the runtime's own
//! randomness (`select!`) is seeded from the run's seed.
//!
//! This module is the engine itself ([`run_cluster`]: the world, the
//! schedule, the sampling). Beside it: [`env`](mod@env) (cairn's `Env` for one
//! node), `host` (one node's software), and what the scenario asks of the
//! agents through their API: [`services`] (registrations, the catalog and
//! DNS), [`mesh`] (Connect sidecars and intentions), [`federation`]
//! (prepared queries across datacenters) and [`workload`] (KV clients).
//! Each of those also holds the check that reads its own trace events,
//! which [`checks`](crate::checks) calls.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::env::TaskGroup;
use cairn::gossip::Config as GossipConfig;
use cairn::time::Instant;
use tokio::sync::watch;

pub mod acl;
pub mod clients;
pub mod clock;
pub mod env;
pub mod federation;
pub(crate) mod host;
pub mod locks;
pub mod mesh;
pub mod services;
pub mod txns;
pub mod workload;

pub use host::RAFT_EVENT;

use crate::action::{starts_waiting, Action, NodeStatus, TimedAction};
use crate::engine::{NodeSample, Replica, RunOutput, SimError};
use crate::net::topology::{Links, Role, Topology};
use crate::net::{self, Model, Network};
use crate::output::spread;
use crate::output::trace::{Recorder, TraceEvent};
use crate::scenario::select::{placeholder, Placeholder};
use crate::tomography::{percentile, Accuracy, PairError};
use crate::verdict::Outages;
use env::{HostTable, Identity, SimEnv};
use host::{Control, CoordinateBoard, HostCtx, ServerBoard, ServerCtx};
use workload::History;

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
    /// ACLs on every agent, with `default_policy = "allow"` when `true`
    /// (`None`: off). Every agent's default token is one management
    /// token, so the scenario's own requests
    /// (registrations, intentions, proxies) are allowed; what the ACL
    /// default changes is what no intention decides.
    pub acl_default_allow: Option<bool>,
    /// The services every node resolves through its own DNS interface
    /// four times a second, recording what it answers (`dns_service`
    /// events): `None` for every service registered, as by default;
    /// scenarios ask only for those a `dns_resolves` check judges, as each
    /// node's polling costs a server a catalog query.
    pub resolved: Option<Vec<String>>,
    /// Virtual time to run for.
    pub duration: Duration,
}

impl ClusterSpec {
    /// `n` agents named `dc1-0`, `dc1-1`, … in one datacenter, with
    /// memberlist's LAN timing and 1 ms links.
    pub fn new(n: usize, seed: u64, duration: Duration) -> Self {
        let topology = Topology::lan("dc1", n);
        // A uniform, constant model cannot fail to realize.
        let links = topology.realize(seed).unwrap_or_else(|_| Links {
            one_way: vec![vec![Duration::from_millis(1); n]; n],
            loss: vec![vec![0.0; n]; n],
            bandwidth: vec![vec![f64::INFINITY; n]; n],
        });
        ClusterSpec {
            topology,
            links,
            seed,
            gossip: GossipConfig::lan(),
            encrypt: None,
            acl_default_allow: None,
            resolved: None,
            duration,
        }
    }

    /// Node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.topology.names()
    }
}

/// A host's software failed: when, and what it said.
type Failure = Arc<Mutex<Option<(Duration, String)>>>;

/// One node as the engine keeps it across its boots.
struct Slot {
    ctx: HostCtx,
    /// Boots so far.
    boots: u64,
    /// The running boot's tasks.
    group: Option<TaskGroup>,
    /// Whether the product's fault points fire on this machine, in this
    /// boot and the next ones (see `cairn::buggify`).
    buggified: bool,
    /// The machine's clock, which outlives its boots.
    clock: Arc<clock::HostClock>,
}

/// The run in progress: the nodes, their network, and what the scenario
/// changed.
struct World<'a> {
    spec: &'a ClusterSpec,
    names: Vec<String>,
    net: Arc<Network>,
    hosts: HostTable,
    slots: Vec<Slot>,
    status: Vec<NodeStatus>,
    board: CoordinateBoard,
    /// Every running server's WAN coordinate.
    wan_board: CoordinateBoard,
    servers: ServerBoard,
    failure: Failure,
    /// Paused nodes due to resume, and when.
    resumes: Vec<(Duration, usize)>,
    /// Servers a `crash_in_fsync` struck, when, and what their disks lost:
    /// already stopped, waiting for the engine to record it.
    struck: Struck,
    /// Nodes whose software stopped on its own (a failed disk), when, and
    /// why: already down, waiting for the engine to record it.
    exited: Exited,
    /// Exited nodes their supervisor restarts, and when.
    supervised: Vec<(Duration, usize)>,
    /// What each tagged leader placeholder stood for when its event came.
    picks: BTreeMap<usize, String>,
}

/// See [`World::struck`].
type Struck = Arc<Mutex<Vec<(Duration, usize, cairn::consensus::CrashLoss)>>>;

/// See [`World::exited`].
type Exited = Arc<Mutex<Vec<(Duration, usize, String)>>>;

/// Node `name` went down at `at` by itself (a power cut that struck in an
/// fsync, an exit on a failed disk), noticed only now: traces it as `event`
/// with `why`, and puts its crash into the timeline where it happened.
fn went_down(
    recorder: &Recorder,
    applied: &mut Vec<TimedAction>,
    at: Duration,
    name: &str,
    event: &str,
    why: &str,
) {
    recorder.record(TraceEvent {
        t_us: at.as_micros() as u64,
        node: "sim".into(),
        event: event.into(),
        member: None,
        incarnation: None,
        detail: Some(format!("{name}: {why}")),
    });
    let pos = applied.partition_point(|a| a.at <= at);
    let action = Action::Crash(vec![name.to_owned()]);
    applied.insert(pos, TimedAction { at, action });
}

/// Takes the entries of `queue` due by `now` out of it, in time order.
fn take_due(queue: &mut Vec<(Duration, usize)>, now: Duration) -> Vec<(Duration, usize)> {
    let mut due: Vec<(Duration, usize)> = queue.iter().copied().filter(|r| r.0 <= now).collect();
    queue.retain(|r| r.0 > now);
    due.sort();
    due
}

/// How long a supervisor (systemd's `Restart=on-failure`) waits before it
/// starts a server that exited on a failed disk again.
const SUPERVISOR_DELAY: Duration = Duration::from_secs(1);

/// Runs the cluster through `actions`; `progress` is told the virtual time
/// once per simulated second.
pub fn run_cluster(
    spec: &ClusterSpec,
    actions: &[TimedAction],
    progress: impl FnMut(Duration),
) -> Result<RunOutput, SimError> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .rng_seed(tokio::runtime::RngSeed::from_bytes(
            &spec.seed.to_le_bytes(),
        ))
        .build()
        .map_err(|e| SimError::Setup(format!("cannot start the simulation's runtime: {e}")))?;
    let _memo = net::CodecMemo::on();
    // Fault points fire only on nodes a `buggify` event names.
    let _points = cairn::buggify::seeded(crate::seed::derive_seed(spec.seed, "", 0, "buggify"));
    // Everything the run started ends with the runtime, before returning.
    runtime.block_on(drive(spec, actions, progress))
}

/// The run itself, on the current runtime, which must be single-threaded
/// with its clock paused (as [`run_cluster`] makes it, or a turmoil host's
/// is, for comparison).
pub async fn drive(
    spec: &ClusterSpec,
    actions: &[TimedAction],
    progress: impl FnMut(Duration),
) -> Result<RunOutput, SimError> {
    let names = spec.names();
    let n = names.len();
    fn square<T>(t: &[Vec<T>], n: usize) -> bool {
        t.len() == n && t.iter().all(|r| r.len() == n)
    }
    let l = &spec.links;
    if !(square(&l.one_way, n) && square(&l.loss, n) && square(&l.bandwidth, n)) {
        return Err(SimError::Setup(format!(
            "{n} nodes need {n}x{n} tables of link latency, loss and bandwidth"
        )));
    }
    let leads = |x: &str| match placeholder(x) {
        Some(Placeholder::Leader(dc, _) | Placeholder::Followers(dc)) => spec
            .topology
            .datacenters
            .iter()
            .any(|d| d.name == dc && d.servers > 0),
        Some(Placeholder::Picked(_)) => true,
        None => false,
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
    World::new(spec, names, &identities, actions)
        .run(actions, progress)
        .await
}

impl<'a> World<'a> {
    fn new(
        spec: &'a ClusterSpec,
        names: Vec<String>,
        identities: &Identities,
        actions: &[TimedAction],
    ) -> Self {
        let ips: Vec<IpAddr> = (0..names.len()).map(net::ip_of).collect();
        let hosts: HostTable = Arc::new(names.iter().cloned().zip(ips.iter().copied()).collect());
        let model = Model::from_table(&spec.topology, spec.links.clone(), spec.seed);
        let net = Network::new(model, &ips);
        let recorder = Recorder::default();
        let board: CoordinateBoard = Arc::default();
        let wan_board: CoordinateBoard = Arc::default();
        let servers: ServerBoard = Arc::default();
        let history = History::default();
        let followed = services::followed(actions);
        let acl_probed = acl::probed(actions);
        // Sleeps watch for clock changes only in a run that has some.
        let clocks_vary = actions
            .iter()
            .any(|a| matches!(a.action, Action::Drift(..) | Action::ClockJump(..)));
        // With ACLs across datacenters, the first is the primary.
        let primary = (spec.acl_default_allow.is_some() && spec.topology.datacenters.len() > 1)
            .then(|| spec.topology.datacenters[0].name.clone());
        let mut slots = Vec::new();
        for (index, name) in names.iter().enumerate() {
            let node = &spec.topology.nodes[index];
            let dc = &spec.topology.datacenters[node.dc];
            let server = (node.role == Role::Server).then(|| ServerCtx {
                expect: dc.servers as u32,
                node_id: identities.ids[index].clone(),
                disk: cairn::consensus::MemoryDisk::new(name),
                names: identities.names.clone(),
                board: servers.clone(),
            });
            // The first server of each federated datacenter runs a prepared
            // query for every service.
            let queried = if spec.topology.federated()
                && crate::engine::full::federation::querier(&spec.topology, node.dc)
                    == Some(name.as_str())
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
                ip: ips[index],
                recorder: recorder.clone(),
                gossip: spec.gossip.clone(),
                encrypt: spec.encrypt.clone(),
                acl_default_allow: spec.acl_default_allow,
                primary_datacenter: primary.clone(),
                acl_probed: acl_probed.clone(),
                join: spec.topology.join_targets(index),
                control: watch::channel(Control::Run).0,
                server,
                load: watch::channel(None).0,
                registrations: watch::channel(Vec::new()).0,
                followed: followed.clone(),
                resolved: match &spec.resolved {
                    None => followed.clone(),
                    Some(r) => r.clone(),
                },
                history: history.clone(),
                snapshot: cairn::agent::snapshot::SnapshotStore::Memory(Default::default()),
            };
            slots.push(Slot {
                ctx,
                boots: 0,
                group: None,
                buggified: false,
                clock: Arc::new(clock::HostClock::default()),
            });
            if clocks_vary {
                slots[index].clock.may_vary();
            }
        }
        World {
            spec,
            status: vec![NodeStatus::Waiting; names.len()],
            names,
            net,
            hosts,
            slots,
            board,
            wan_board,
            servers,
            failure: Arc::default(),
            resumes: Vec::new(),
            exited: Arc::default(),
            supervised: Vec::new(),
            struck: Arc::default(),
            picks: BTreeMap::new(),
        }
    }

    async fn run(
        mut self,
        actions: &[TimedAction],
        mut progress: impl FnMut(Duration),
    ) -> Result<RunOutput, SimError> {
        let spec = self.spec;
        let n = self.names.len();
        let pump = tokio::spawn(self.net.clone().pump());
        for i in 0..n {
            if !starts_waiting(&self.names[i], actions) {
                self.start(i);
            }
        }
        let mut next = 0;
        let mut accuracy = Vec::new();
        let mut wan_accuracy = Vec::new();
        let mut samples = Vec::new();
        let mut last_counts = vec![[0u64; 3]; n];
        let mut next_second = Duration::ZERO;
        let mut applied = Vec::new();
        let recorder = self
            .slots
            .first()
            .map(|s| s.ctx.recorder.clone())
            .unwrap_or_default();
        let history = self
            .slots
            .first()
            .map(|s| s.ctx.history.clone())
            .unwrap_or_default();
        loop {
            let now = self.net.now().as_duration();
            // Crashes that struck since the last wake first: the actions
            // due now must see those nodes as crashed (a restart restarts
            // them).
            for (at, i, loss) in self.struck_in_fsync() {
                let torn = loss.torn.map_or(String::new(), |(k, of)| {
                    format!(", the last torn at {k} of {of} bytes")
                });
                let why = format!("in fsync, {} unsynced writes lost{torn}", loss.unsynced);
                went_down(&recorder, &mut applied, at, &self.names[i], "crash", &why);
            }
            for (at, i, why) in self.take_exited() {
                went_down(&recorder, &mut applied, at, &self.names[i], "exit", &why);
            }
            for (at, i) in self.due_supervised(now) {
                let action = Action::Restart(vec![self.names[i].clone()]);
                recorder.record(action.trace_event(at));
                self.start(i);
                applied.push(TimedAction { at, action });
            }
            while next < actions.len() && actions[next].at <= now {
                // The trace says what happened, and readers of it (views
                // that restart afresh) rely on that: a restart of a running
                // node is no restart.
                let resolved = self.with_leaders(&actions[next].action);
                self.call_off_armed_crashes(&resolved);
                // A machine the timeline stops stays down.
                if let Action::Crash(set) | Action::CrashInFsync(set) | Action::Leave(set) =
                    &resolved
                {
                    self.supervised.retain(|r| !set.contains(&self.names[r.1]));
                }
                let action = resolved.effective(|x| {
                    self.names
                        .iter()
                        .position(|n| n == x)
                        .map(|i| self.status[i])
                });
                next += 1;
                if action.is_noop() {
                    continue;
                }
                recorder.record(action.trace_event(now));
                self.apply(&action);
                applied.push(TimedAction {
                    at: actions[next - 1].at,
                    action,
                });
            }
            for (at, i) in self.due_resumes(now) {
                let action = Action::Resume(vec![self.names[i].clone()]);
                recorder.record(action.trace_event(at));
                applied.push(TimedAction { at, action });
            }
            if let Some((at, why)) = self.failed() {
                pump.abort();
                return Err(SimError::Host { at, why });
            }
            if now >= next_second {
                progress(now);
                let (acc, per_node, _) = self.score(now);
                accuracy.extend(acc);
                wan_accuracy.extend(self.score_wan(now).0);
                for (i, last) in last_counts.iter_mut().enumerate() {
                    let counts = self.net.counters(i).read();
                    let d = |k: usize| counts[k] - last[k];
                    samples.push(NodeSample {
                        at: now,
                        node: i,
                        status: self.status[i],
                        udp_packets: d(0),
                        udp_bytes: d(1),
                        tcp_bytes: d(2),
                        coord_median: per_node[i].map(|p| p.0),
                        coord_p90: per_node[i].map(|p| p.1),
                    });
                    *last = counts;
                }
                next_second += Duration::from_secs(1);
            }
            if now >= spec.duration {
                break;
            }
            let wake = actions
                .get(next)
                .map_or(next_second, |a| a.at.min(next_second))
                .min(spec.duration);
            let wake = (self.resumes.iter())
                .chain(&self.supervised)
                .map(|r| r.0)
                .fold(wake, Duration::min);
            tokio::time::sleep_until(self.net.deadline(Instant::from_duration(wake))).await;
        }
        pump.abort();
        let end = self.net.now().as_duration();
        let (_, _, final_pairs) = self.score(end);
        let (_, wan_pairs) = self.score_wan(end);
        let trace = recorder.trace();
        let outages = Outages::from_timeline(&self.names, &applied);
        let spreads = spread::from_trace(spread::facts(&spec.topology, &applied, &outages), &trace);
        Ok(RunOutput {
            trace,
            virtual_time: end,
            steps: self.net.deliveries(),
            lossy_packets: self.net.with_model(|m| m.lossy()),
            fault_points: cairn::buggify::fired()
                .into_iter()
                .filter(|&(_, n)| n > 0)
                .map(|(p, n)| (p.name().to_owned(), n))
                .collect(),
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
            holds: history.holds(),
            txns: history.txns(),
            replicas: self.replicas(),
            picks: std::mem::take(&mut self.picks),
        })
    }

    /// Boots node `i` (again): a fresh process on its host, with its disk.
    fn start(&mut self, i: usize) {
        self.stop(i);
        // A crash armed for an earlier boot that never struck is off.
        if let Some(server) = &self.slots[i].ctx.server {
            server.disk.disarm();
        }
        let slot = &mut self.slots[i];
        let group = TaskGroup::new();
        group.set_buggified(slot.buggified);
        // Raft times itself by the machine's clock, which drifts and jumps.
        group.set_clock(Arc::new(env::MachineClock {
            clock: slot.clock.clone(),
            net: self.net.clone(),
        }));
        let env = SimEnv::new(
            Identity {
                node: self.names[i].clone(),
                index: i,
                ip: slot.ctx.ip,
                run_seed: self.spec.seed,
                boot: slot.boots,
            },
            self.hosts.clone(),
            self.net.clone(),
            group.clone(),
            slot.clock.clone(),
        );
        slot.boots += 1;
        slot.ctx.control.send_replace(Control::Run);
        self.net.host_up(i);
        let (ctx, net) = (slot.ctx.clone(), self.net.clone());
        let (failure, exited) = (self.failure.clone(), self.exited.clone());
        group.spawn(async move {
            let at = || net.now().as_duration();
            match ctx.run(env).await {
                Ok(host::Exit::Left) => {}
                Ok(host::Exit::Failed(why)) => exited
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push((at(), i, why)),
                Err(why) => {
                    let mut f = failure.lock().unwrap_or_else(|p| p.into_inner());
                    f.get_or_insert((at(), why));
                }
            }
            // Done (it left): the host goes quiet, and whatever it started
            // ends with it.
            net.host_down(i);
            if let Some(g) = TaskGroup::current() {
                g.abort();
            }
        });
        slot.group = Some(group);
        self.status[i] = NodeStatus::Running;
    }

    /// Ends node `i`'s running boot at once, as a crash does.
    fn stop(&mut self, i: usize) {
        if let Some(g) = self.slots[i].group.take() {
            g.abort();
            self.net.host_down(i);
        }
    }

    /// Arms node `i`'s disk to crash the node in its next fsync (at once,
    /// without a disk): the commit fails and the node's processes stop
    /// there and then; [`struck_in_fsync`](Self::struck_in_fsync) tells
    /// the engine.
    /// A restart of a running server whose `crash_in_fsync` has not
    /// struck yet (no fsync came) calls the crash off: the fault's window
    /// is over, and striking later would leave it down for good.
    fn call_off_armed_crashes(&self, action: &Action) {
        if let Action::Restart(set) | Action::Join(set) = action {
            for x in set {
                let i = self.index(x);
                if let (NodeStatus::Running, Some(server)) =
                    (self.status[i], &self.slots[i].ctx.server)
                {
                    server.disk.disarm();
                }
            }
        }
    }

    fn crash_in_fsync(&mut self, i: usize) {
        let (net, struck) = (self.net.clone(), self.struck.clone());
        let group = self.slots[i].group.clone();
        let strike = move |loss| {
            if let Some(g) = &group {
                g.abort();
            }
            net.host_down(i);
            let at = net.now().as_duration();
            struck
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((at, i, loss));
        };
        match &self.slots[i].ctx.server {
            Some(server) => {
                let draw = crate::seed::derive_seed(
                    self.spec.seed,
                    &self.names[i],
                    self.slots[i].boots,
                    "torn-write",
                );
                server.disk.crash_at_next_sync(draw, strike);
            }
            None => strike(cairn::consensus::CrashLoss::default()),
        }
    }

    /// The nodes a `crash_in_fsync` has struck since the last call, now
    /// marked crashed, each with when and what its disk lost.
    fn struck_in_fsync(&mut self) -> Vec<(Duration, usize, cairn::consensus::CrashLoss)> {
        let struck = std::mem::take(&mut *self.struck.lock().unwrap_or_else(|p| p.into_inner()));
        for &(_, i, _) in &struck {
            self.stop(i);
            self.status[i] = NodeStatus::Crashed;
            self.unpost(i);
        }
        struck
    }

    /// The nodes whose software exited on a failed disk since the last
    /// call, now marked crashed, with their supervisor's restart due. (One
    /// the timeline crashed since it exited stays down: its machine is.)
    fn take_exited(&mut self) -> Vec<(Duration, usize, String)> {
        let exited = std::mem::take(&mut *self.exited.lock().unwrap_or_else(|p| p.into_inner()));
        for &(at, i, _) in &exited {
            if self.status[i] == NodeStatus::Running {
                self.stop(i);
                self.status[i] = NodeStatus::Crashed;
                self.unpost(i);
                self.supervised.push((at + SUPERVISOR_DELAY, i));
            }
        }
        exited
    }

    /// The supervised restarts due by `now`, each with when it was due; a
    /// node the timeline started meanwhile is skipped.
    fn due_supervised(&mut self, now: Duration) -> Vec<(Duration, usize)> {
        let mut due = take_due(&mut self.supervised, now);
        due.retain(|&(_, i)| self.status[i] == NodeStatus::Crashed);
        due
    }

    /// Resumes the paused nodes due by `now`: each with when it was due.
    /// A node that crashed meanwhile is no longer paused (its restart is a
    /// fresh process), and is skipped.
    fn due_resumes(&mut self, now: Duration) -> Vec<(Duration, usize)> {
        let mut due = take_due(&mut self.resumes, now);
        due.retain(|&(_, i)| match &self.slots[i].group {
            Some(g) if g.is_paused() => {
                g.resume();
                true
            }
            _ => false,
        });
        due
    }

    /// A crash takes what node `i`'s disk had not synced, and may leave
    /// the last write torn, at a point drawn from the seed: what a server
    /// acknowledged before an fsync returned is what a crash can take.
    fn lose_unsynced(&mut self, i: usize) {
        let Some(server) = &self.slots[i].ctx.server else {
            return;
        };
        let draw = crate::seed::derive_seed(
            self.spec.seed,
            &self.names[i],
            self.slots[i].boots,
            "torn-write",
        );
        let loss = server.disk.crash(|len| (draw % (len as u64 + 1)) as usize);
        tracing::debug!(node = %self.names[i], ?loss, "crash: unsynced writes lost");
    }

    /// Rots one bit of one Raft record on node `i`'s disk (it is down),
    /// chosen from the seed, and says in the trace which.
    fn rot(&mut self, i: usize) {
        let Some(server) = &self.slots[i].ctx.server else {
            return;
        };
        let name = &self.names[i];
        let draw = crate::seed::derive_seed(self.spec.seed, name, self.slots[i].boots, "rot");
        let detail = match server.disk.rot(draw) {
            Ok(Some(rot)) => format!("{name}: {rot}"),
            Ok(None) => format!("{name}: nothing stored yet"),
            Err(e) => format!("{name}: the disk could not be read: {e}"),
        };
        self.slots[i].ctx.recorder.record(TraceEvent {
            t_us: self.net.now().as_duration().as_micros() as u64,
            node: "sim".into(),
            event: "rot".into(),
            member: None,
            incarnation: None,
            detail: Some(detail),
        });
    }

    /// The first failure of a host's software: an error it returned, or a
    /// panic in one of its tasks.
    fn failed(&self) -> Option<(Duration, String)> {
        if let Some(f) = self
            .failure
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(f);
        }
        let now = self.net.now().as_duration();
        self.slots.iter().enumerate().find_map(|(i, s)| {
            let why = s.group.as_ref()?.panicked()?;
            Some((now, format!("{} panicked: {why}", self.names[i])))
        })
    }
    /// `action` with every leader placeholder replaced by the server that
    /// leads its datacenter now (dropped when none does), remembering
    /// tagged ones, every followers placeholder by the other servers of
    /// its datacenter, and every picked placeholder by what it remembers.
    fn with_leaders(&mut self, action: &Action) -> Action {
        let mut picks = std::mem::take(&mut self.picks);
        let out = action.map(|set| {
            let mut out: Vec<String> = Vec::new();
            for x in set {
                let names: Vec<String> = match placeholder(x) {
                    Some(Placeholder::Leader(dc, tag)) => {
                        let leader = self.leader(dc);
                        if let (Some(tag), Some(l)) = (tag, &leader) {
                            picks.insert(tag, l.clone());
                        }
                        leader.into_iter().collect()
                    }
                    Some(Placeholder::Followers(dc)) => {
                        let leader = self.leader(dc);
                        let topo = &self.spec.topology;
                        topo.nodes
                            .iter()
                            .filter(|n| {
                                n.role == Role::Server
                                    && topo.datacenters[n.dc].name == dc
                                    && leader.as_ref() != Some(&n.name)
                            })
                            .map(|n| n.name.clone())
                            .collect()
                    }
                    Some(Placeholder::Picked(tag)) => {
                        picks.get(&tag).cloned().into_iter().collect()
                    }
                    None => vec![x.clone()],
                };
                for n in names {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
            }
            out
        });
        self.picks = picks;
        out
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

    fn apply(&mut self, action: &Action) {
        let names = &self.names;
        let index = |x: &str| names.iter().position(|n| n == x);
        if self.net.with_model(|m| m.apply(action, index)) {
            return;
        }
        match action {
            Action::Crash(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.stop(i);
                        self.lose_unsynced(i);
                        self.status[i] = NodeStatus::Crashed;
                        self.unpost(i);
                    }
                }
            }
            Action::Restart(set) | Action::Join(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] != NodeStatus::Running {
                        self.start(i);
                    }
                }
            }
            Action::CrashInFsync(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.crash_in_fsync(i);
                    }
                }
            }
            Action::Corrupt(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] != NodeStatus::Running {
                        self.rot(i);
                    }
                }
            }
            Action::FsyncError(set) => {
                for x in set {
                    let i = self.index(x);
                    if let Some(server) = &self.slots[i].ctx.server {
                        server.disk.fail_next_sync();
                    }
                }
            }
            Action::DiskFull(set, full) => {
                for x in set {
                    if let Some(server) = &self.slots[self.index(x)].ctx.server {
                        server.disk.set_full(*full);
                    }
                }
            }
            Action::TcpReset(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.net.reset_connections(i);
                    }
                }
            }
            Action::Buggify(set, on) => {
                for x in set {
                    let i = self.index(x);
                    let slot = &mut self.slots[i];
                    slot.buggified = *on;
                    if let Some(g) = &slot.group {
                        g.set_buggified(*on);
                    }
                }
            }
            Action::Pause(set, for_) => {
                let now = self.net.now().as_duration();
                for x in set {
                    let i = self.index(x);
                    if let Some(g) = &self.slots[i].group {
                        g.pause();
                        if let Some(d) = for_ {
                            self.resumes.push((now + *d, i));
                        }
                    }
                }
            }
            Action::Resume(set) => {
                for x in set {
                    let i = self.index(x);
                    self.resumes.retain(|r| r.1 != i);
                    if let Some(g) = &self.slots[i].group {
                        g.resume();
                    }
                }
            }
            Action::Leave(set) => {
                for x in set {
                    let i = self.index(x);
                    if self.status[i] == NodeStatus::Running {
                        self.slots[i].ctx.control.send_replace(Control::Leave);
                        self.status[i] = NodeStatus::Left;
                        self.unpost(i);
                    }
                }
            }
            Action::Drift(set, rate) => {
                let now = self.net.now().as_duration();
                for x in set {
                    self.slots[self.index(x)].clock.set_rate(now, *rate);
                }
            }
            Action::ClockJump(set, by) => {
                let now = self.net.now().as_duration();
                for x in set {
                    self.slots[self.index(x)].clock.jump(now, *by);
                }
            }
            Action::Skew(set, ms) => {
                for x in set {
                    self.net.set_skew(self.index(x), *ms);
                }
            }
            Action::KvLoad(set, load) => {
                let until = self.net.now().as_duration() + load.duration;
                for x in set {
                    let order = crate::engine::full::workload::Order { load: *load, until };
                    self.slots[self.index(x)].ctx.load.send_replace(Some(order));
                }
            }
            Action::RegisterService(set, r) => {
                for x in set {
                    self.slots[self.index(x)]
                        .ctx
                        .registrations
                        .send_modify(|v| v.push(services::ApiOrder::Register(r.clone())));
                }
            }
            Action::Intention(set, o) => {
                // One node sets it: an intention is cluster-wide.
                if let Some(x) = set.first() {
                    self.slots[self.index(x)]
                        .ctx
                        .registrations
                        .send_modify(|v| v.push(services::ApiOrder::Intention(o.clone())));
                }
            }
            Action::CaRotate(set) => {
                if let Some(x) = set.first() {
                    self.slots[self.index(x)]
                        .ctx
                        .registrations
                        .send_modify(|v| v.push(services::ApiOrder::CaRotate));
                }
            }
            Action::AclToken(set, name) => {
                if let Some(x) = set.first() {
                    self.slots[self.index(x)]
                        .ctx
                        .registrations
                        .send_modify(|v| v.push(services::ApiOrder::AclToken(name.clone())));
                }
            }
            // The network's (handled above).
            Action::Isolate(_)
            | Action::Partition(..)
            | Action::OneWay(..)
            | Action::Heal
            | Action::HealBetween(..)
            | Action::Clog(..)
            | Action::Loss(_)
            | Action::LinkLoss(..)
            | Action::Latency(..)
            | Action::Slow(..) => {}
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
        self.net.with_model(|m| {
            let mut pairs = Vec::new();
            for (&i, a) in &coords {
                for (&j, b) in coords.range(i + 1..) {
                    if keep(i, j) {
                        pairs.push(PairError {
                            a: i,
                            b: j,
                            true_ms: m.true_rtt(i, j).as_secs_f64() * 1000.0,
                            est_ms: a.distance_secs(b) * 1000.0,
                        });
                    }
                }
            }
            pairs
        })
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
        let id = server_node_id(&n.name);
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

/// The node ID of the simulated server `name`: from its name alone, so a
/// restarted server comes back as itself.
pub fn server_node_id(name: &str) -> String {
    let mut b = [0u8; 16];
    b[..8].copy_from_slice(&crate::seed::derive_seed(0, name, 0, "node-id").to_be_bytes());
    b[8..].copy_from_slice(&crate::seed::derive_seed(1, name, 0, "node-id").to_be_bytes());
    cairn::format::format_uuid(b)
}

/// Per node: (median, p90) relative error of its estimates.
type PerNode = Vec<Option<(f64, f64)>>;

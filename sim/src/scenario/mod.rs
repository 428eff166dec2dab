//! Scenario files: datacenters on measured geography, a timeline of faults,
//! and checks on the result.
//!
//! Every key is documented in `scenarios/README.md`. Unknown keys are errors
//! that name the file, line and column, and list the keys allowed there.
//! [`ScenarioBuilder`] makes the same scenarios in code.
//!
//! This module holds what a scenario is ([`Scenario`], its engine and
//! start, its resolved timeline and cluster), reads a file's top level and
//! `[gossip]`, and hands each kind of section to its parser:
//! `datacenters` (`[latency]`, `[[datacenter]]`, `[[link]]`: the
//! network), `events` (`[[event]]`: the timeline) and `checks`
//! (`[[check]]`). They share `parse` (the error, value parsers and
//! selector lists) and [`select`] (which nodes an event or a check is
//! about), and know nothing of this module.

mod chaos;
mod checks;
mod datacenters;
mod events;
mod parse;
pub mod select;

pub use checks::Check;
pub use datacenters::{LinkRule, MAX_NODES};
pub(crate) use events::to_table as events_to_table;
pub use parse::ScenarioError;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cairn::gossip::Config as GossipConfig;
use serde::Deserialize;

use crate::action::{Action, TimedAction};
use crate::chaos::Chaos;
use crate::engine::full::ClusterSpec;
use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope, Topology};
use crate::scenario::select::{resolve_names, Selector};
use parse::{dur, err, line_col};

/// Which engine runs a scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Every real component on turmoil: tens of nodes.
    #[default]
    Full,
    /// The gossip and Vivaldi cores under a discrete-event scheduler:
    /// thousands of nodes.
    Protocol,
}

impl Engine {
    /// Parses `full` or `protocol`.
    pub fn parse(s: &str) -> Result<Engine, String> {
        match s {
            "full" => Ok(Engine::Full),
            "protocol" => Ok(Engine::Protocol),
            other => Err(format!("engine is full or protocol, not {other:?}")),
        }
    }

    /// The name used in files.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Full => "full",
            Engine::Protocol => "protocol",
        }
    }
}

/// How the nodes running at time zero begin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Start {
    /// Knowing only themselves; they join their pool as agents do.
    #[default]
    Cold,
    /// Already knowing every node of their pool that runs at time zero,
    /// alive, as a settled cluster does: studies of a large pool skip the
    /// join storm (each of N nodes learning N members) before the faults.
    /// The protocol engine's option.
    Converged,
}

impl Start {
    /// Parses `cold` or `converged`.
    pub fn parse(s: &str) -> Result<Start, String> {
        match s {
            "cold" => Ok(Start::Cold),
            "converged" => Ok(Start::Converged),
            other => Err(format!("start is cold or converged, not {other:?}")),
        }
    }
}

/// A parsed, validated scenario.
#[derive(Debug, Clone)]
pub struct Scenario {
    /// Name (names the output directory).
    pub name: String,
    /// The engine it runs on unless told otherwise.
    pub engine: Engine,
    /// How the nodes running at time zero begin.
    pub start: Start,
    /// Whether packets go through the real codec (encoding, compression,
    /// checksums); the protocol engine can skip it (`codec = false`,
    /// `--no-codec`) and pass messages as values.
    pub codec: bool,
    /// Default seed (a run may use another).
    pub seed: u64,
    /// Virtual time to simulate.
    pub duration: Duration,
    /// Gossip tuning of every agent.
    pub gossip: GossipConfig,
    /// Every agent's gossip encryption key, base64 (`[gossip] encrypt`;
    /// full engine only).
    pub encrypt: Option<String>,
    /// ACLs on every agent (`[acl]`; full engine only): `Some(true)` when
    /// their default policy allows, `Some(false)` when it denies.
    pub acl_default_allow: Option<bool>,
    /// Datacenters, nodes and the network model.
    pub topology: Topology,
    /// Fixed overrides of the model for some links.
    pub links: Vec<LinkRule>,
    /// The fault timeline, in time order, naming nodes by selector.
    pub events: Vec<TimedAction<Vec<Selector>>>,
    /// Checks to evaluate on the run.
    pub checks: Vec<Check>,
    /// Faults each run draws from its seed, after the timeline's own
    /// (`[chaos]`).
    pub chaos: Option<Chaos>,
    /// The file it came from, if any (kept with a run's output for replay).
    pub source: Option<Source>,
}

/// Where a scenario came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    /// The file.
    pub path: PathBuf,
    /// Its text.
    pub text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    name: String,
    seed: u64,
    duration: String,
    tick: Option<String>,
    engine: Option<String>,
    start: Option<String>,
    codec: Option<bool>,
    #[serde(default)]
    gossip: GossipSection,
    acl: Option<AclSection>,
    #[serde(default)]
    latency: datacenters::LatencySection,
    datacenter: Vec<datacenters::DatacenterSection>,
    #[serde(default)]
    link: Vec<datacenters::LinkSection>,
    #[serde(default)]
    event: Vec<events::EventSection>,
    #[serde(default)]
    check: Vec<checks::CheckSection>,
    chaos: Option<chaos::ChaosSection>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GossipSection {
    preset: Option<String>,
    pool: Option<String>,
    disable_tcp_pings: Option<bool>,
    probe_interval: Option<String>,
    probe_timeout: Option<String>,
    gossip_interval: Option<String>,
    gossip_nodes: Option<usize>,
    push_pull_interval: Option<String>,
    retransmit_mult: Option<usize>,
    suspicion_mult: Option<usize>,
    compression: Option<bool>,
    encrypt: Option<String>,
}

/// `[acl]`: ACLs on every agent, as an agent's `acl` block says.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AclSection {
    enabled: bool,
    default_policy: Option<String>,
}

/// What `[acl]` asks for: `Some(default_allow)` when enabled.
fn acl(a: &Option<AclSection>) -> Result<Option<bool>, ScenarioError> {
    let Some(a) = a.as_ref().filter(|a| a.enabled) else {
        return Ok(None);
    };
    match a.default_policy.as_deref() {
        None | Some("allow") => Ok(Some(true)),
        Some("deny") => Ok(Some(false)),
        Some(other) => Err(err(format!(
            "acl.default_policy {other:?} is not allow or deny"
        ))),
    }
}

/// Most nodes the full-stack engine takes: each is a whole agent (about
/// 0.7 MB, a server more), and it scores every pair of a pool each second.
pub const MAX_FULL_NODES: usize = 2000;

/// The gossip tuning `[gossip]` sets, on its preset (its `pool` is the
/// topology's).
fn gossip(g: &GossipSection) -> Result<GossipConfig, ScenarioError> {
    let preset = g.preset.as_deref().unwrap_or("lan");
    let mut gossip = GossipConfig::preset(preset).ok_or_else(|| {
        err(format!(
            "gossip.preset {preset:?} is not one of lan, wan, local"
        ))
    })?;
    if let Some(v) = g.disable_tcp_pings {
        gossip.disable_tcp_pings = v;
    }
    if let Some(v) = &g.probe_interval {
        gossip.probe_interval = dur("gossip.probe_interval", v)?;
    }
    if let Some(v) = &g.probe_timeout {
        gossip.probe_timeout = dur("gossip.probe_timeout", v)?;
    }
    if let Some(v) = &g.gossip_interval {
        gossip.gossip_interval = dur("gossip.gossip_interval", v)?;
    }
    if let Some(v) = &g.push_pull_interval {
        gossip.push_pull_interval = dur("gossip.push_pull_interval", v)?;
    }
    gossip.gossip_nodes = g.gossip_nodes.unwrap_or(gossip.gossip_nodes);
    gossip.retransmit_mult = g.retransmit_mult.unwrap_or(gossip.retransmit_mult);
    gossip.suspicion_mult = g.suspicion_mult.unwrap_or(gossip.suspicion_mult);
    gossip.enable_compression = g.compression.unwrap_or(gossip.enable_compression);
    gossip
        .validate()
        .map_err(|e| err(format!("[gossip]: {e}")))?;
    if let Some(k) = &g.encrypt {
        cairn::gossip::keyring::parse_key(k).map_err(|e| err(format!("gossip.encrypt: {e}")))?;
    }
    Ok(gossip)
}

impl Scenario {
    /// Reads and validates a scenario file; data files are relative to it.
    pub fn load(path: &Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| err(format!("cannot read scenario {}: {e}", path.display())))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let mut s = Self::parse_in(&path.display().to_string(), &text, &base)?;
        s.source = Some(Source {
            path: path.to_path_buf(),
            text,
        });
        Ok(s)
    }

    /// Parses and validates scenario text; `origin` names it in errors, and
    /// data files are found relative to the current directory.
    pub fn parse(origin: &str, text: &str) -> Result<Scenario, ScenarioError> {
        Self::parse_in(origin, text, Path::new("."))
    }

    /// Parses scenario text whose data files are relative to `base`.
    pub fn parse_in(origin: &str, text: &str, base: &Path) -> Result<Scenario, ScenarioError> {
        let f: File = toml::from_str(text).map_err(|e| {
            let at = e
                .span()
                .map(|s| {
                    let (l, c) = line_col(text, s.start);
                    format!(":{l}:{c}")
                })
                .unwrap_or_default();
            err(format!("{origin}{at}: {}", e.message().trim_end()))
        })?;
        Self::from_file(f, base).map_err(|e| err(format!("{origin}: {}", e.0)))
    }

    fn from_file(f: File, base: &Path) -> Result<Scenario, ScenarioError> {
        let gossip = gossip(&f.gossip)?;
        let topology =
            datacenters::topology(f.gossip.pool.as_deref(), &f.latency, &f.datacenter, base)?;
        let engine = match &f.engine {
            Some(e) => Engine::parse(e).map_err(err)?,
            None => Engine::Full,
        };
        let start = match &f.start {
            Some(x) => Start::parse(x).map_err(err)?,
            None => Start::Cold,
        };
        // Fail now, not at run time, on pairs the matrix lacks.
        for a in 0..topology.datacenters.len() {
            for b in a + 1..topology.datacenters.len() {
                topology.inter_dc(a, b).map_err(err)?;
            }
        }

        if f.name.is_empty()
            || !f
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
            || f.name.starts_with('.')
        {
            return Err(err(format!(
                "name {:?} names the output directory: use letters, digits, '-', '_' and '.'",
                f.name
            )));
        }
        let duration = dur("duration", &f.duration)?;
        if duration.is_zero() {
            return Err(err("duration must be more than zero"));
        }
        // Files from when the full engine ran on turmoil's ticks may say
        // what is still true.
        if let Some(t) = &f.tick {
            if dur("tick", t)? != Duration::from_millis(1) {
                return Err(err(
                    "tick: the full engine no longer ticks; it steps from event to event, with timers at 1 ms resolution. Remove tick",
                ));
            }
        }
        let mut b = ScenarioBuilder {
            s: Scenario {
                name: f.name,
                engine,
                start,
                codec: f.codec.unwrap_or(true),
                seed: f.seed,
                duration,
                gossip,
                encrypt: f.gossip.encrypt.clone(),
                acl_default_allow: acl(&f.acl)?,
                topology,
                links: Vec::new(),
                events: Vec::new(),
                checks: Vec::new(),
                chaos: None,
                source: None,
            },
        };
        if let Some(c) = &f.chaos {
            b.s.chaos = Some(chaos::parse(c, &b.s.topology, duration)?);
        }
        b.s.links = datacenters::links(&b.s.topology, &f.link)?;

        for (i, e) in f.event.iter().enumerate() {
            let (here, at, action) = events::parse(i, e, &b.s.topology)?;
            b.event(at, action)
                .map_err(|e| err(format!("{here}: {}", e.0)))?;
        }

        for (i, c) in f.check.iter().enumerate() {
            let (here, check) = checks::parse(i, c, &b.s.topology)?;
            b.check(check)
                .map_err(|e| err(format!("{here}: {}", e.0)))?;
        }
        Ok(b.s)
    }

    /// The timeline with every selector resolved to node names for a run
    /// with `seed` (random picks depend on it), with the faults `[chaos]`
    /// draws from it after the events of the same instant.
    pub fn timeline(&self, seed: u64) -> Result<Vec<TimedAction>, ScenarioError> {
        let mut t: Vec<TimedAction> = self
            .events
            .iter()
            .enumerate()
            .map(|(i, e)| TimedAction {
                at: e.at,
                action: e
                    .action
                    .map(|sel| resolve_names(sel, &self.topology, seed, &format!("event-{i}"))),
            })
            .collect();
        if let Some(c) = &self.chaos {
            t.extend(c.timeline(seed).map_err(err)?);
            t.sort_by_key(|a| a.at);
        }
        Ok(t)
    }

    /// The cluster for a run with `seed`: the model's links drawn, with the
    /// fixed link rules applied.
    pub fn cluster(&self, seed: u64) -> Result<ClusterSpec, ScenarioError> {
        let t = &self.topology;
        let mut links = t.realize(seed).map_err(err)?;
        for rule in &self.links {
            let a = resolve_names(&rule.between.0, t, seed, "link");
            let b = resolve_names(&rule.between.1, t, seed, "link");
            for x in a.iter().filter_map(|n| t.index(n)) {
                for y in b.iter().filter_map(|n| t.index(n)).filter(|y| *y != x) {
                    if let Some(d) = rule.latency {
                        let d = d.max(Duration::from_micros(1));
                        links.one_way[x][y] = d;
                        links.one_way[y][x] = d;
                    }
                    if let Some(r) = rule.loss {
                        links.loss[x][y] = r;
                        links.loss[y][x] = r;
                    }
                    if let Some(bw) = rule.bandwidth {
                        links.bandwidth[x][y] = bw;
                        links.bandwidth[y][x] = bw;
                    }
                }
            }
        }
        Ok(ClusterSpec {
            topology: t.clone(),
            links,
            seed,
            gossip: self.gossip.clone(),
            encrypt: self.encrypt.clone(),
            acl_default_allow: self.acl_default_allow,
            resolved: Some(
                self.checks
                    .iter()
                    .filter_map(|c| match c {
                        Check::DnsResolves { service, .. } => Some(service.clone()),
                        _ => None,
                    })
                    .collect::<std::collections::BTreeSet<_>>()
                    .into_iter()
                    .collect(),
            ),
            duration: self.duration,
        })
    }

    /// Node names, in order.
    pub fn names(&self) -> Vec<String> {
        self.topology.names()
    }
}

/// Builds scenarios in code, for tests and property tests that generate
/// fault timelines.
///
/// ```
/// use std::time::Duration;
/// use cairn_sim::scenario::{Check, ScenarioBuilder};
/// use cairn_sim::Action;
///
/// let s = ScenarioBuilder::new("t", Duration::from_secs(30))
///     .datacenter("dc1", 5)
///     .crash_at(Duration::from_secs(10), &["dc1-4"])
///     .unwrap()
///     .build();
/// assert_eq!(s.names().len(), 5);
/// ```
#[derive(Debug, Clone)]
pub struct ScenarioBuilder {
    s: Scenario,
}

impl ScenarioBuilder {
    /// An empty scenario called `name` running for `duration`, with seed 1,
    /// LAN gossip; add datacenters before events.
    pub fn new(name: &str, duration: Duration) -> Self {
        ScenarioBuilder {
            s: Scenario {
                name: name.into(),
                engine: Engine::Full,
                start: Start::Cold,
                codec: true,
                seed: 1,
                duration,
                gossip: GossipConfig::lan(),
                encrypt: None,
                acl_default_allow: None,
                topology: Topology::new(Vec::new(), PoolScope::Datacenter, LatencyModel::default()),
                links: Vec::new(),
                events: Vec::new(),
                checks: Vec::new(),
                chaos: None,
                source: None,
            },
        }
    }

    /// Adds a datacenter of `clients` unplaced clients.
    pub fn datacenter(mut self, name: &str, clients: usize) -> Self {
        let mut dcs = std::mem::take(&mut self.s.topology.datacenters);
        dcs.push(Datacenter {
            name: name.into(),
            clients,
            servers: 0,
            location: Location::Unplaced,
        });
        let t = &self.s.topology;
        self.s.topology = Topology::new(dcs, t.pool, t.latency.clone());
        self
    }

    /// Sets who gossips with whom.
    pub fn pool(mut self, pool: PoolScope) -> Self {
        self.s.topology.pool = pool;
        self
    }

    /// Sets the latency model.
    pub fn latency(mut self, model: LatencyModel) -> Self {
        self.s.topology.latency = model;
        self
    }

    /// Sets the engine.
    pub fn engine(mut self, engine: Engine) -> Self {
        self.s.engine = engine;
        self
    }

    /// Sets how the nodes running at time zero begin.
    pub fn start(mut self, start: Start) -> Self {
        self.s.start = start;
        self
    }

    /// Sets the seed.
    pub fn seed(mut self, seed: u64) -> Self {
        self.s.seed = seed;
        self
    }

    /// Sets the gossip tuning.
    pub fn gossip(mut self, g: GossipConfig) -> Self {
        self.s.gossip = g;
        self
    }

    /// Adds an event naming nodes by selector (see [`Selector`]).
    pub fn event_sel(
        mut self,
        at: Duration,
        action: Action<Vec<&str>>,
    ) -> Result<Self, ScenarioError> {
        let topo = &self.s.topology;
        let mut bad = None;
        let action = action.map(|v| {
            v.iter()
                .filter_map(|t| Selector::parse(t, topo).map_err(|e| bad = Some(e)).ok())
                .collect()
        });
        if let Some(e) = bad {
            return Err(err(e));
        }
        self.event(at, action)?;
        Ok(self)
    }

    /// Crashes `nodes` at `at`.
    pub fn crash_at(self, at: Duration, nodes: &[&str]) -> Result<Self, ScenarioError> {
        self.event_sel(at, Action::Crash(nodes.to_vec()))
    }

    fn event(&mut self, at: Duration, action: Action<Vec<Selector>>) -> Result<(), ScenarioError> {
        if at >= self.s.duration {
            return Err(err(format!(
                "at {at:?} is not before the end of the run ({:?})",
                self.s.duration
            )));
        }
        // Stable: events at the same time keep the order they were given.
        let pos = self.s.events.partition_point(|e| e.at <= at);
        self.s.events.insert(pos, TimedAction { at, action });
        Ok(())
    }

    /// Adds a check; node names must exist.
    pub fn check(&mut self, c: Check) -> Result<(), ScenarioError> {
        if let Check::FailedWithin { targets, .. } = &c {
            if let Some(bad) = targets.iter().find(|t| self.s.topology.index(t).is_none()) {
                return Err(err(format!("unknown node {bad:?}")));
            }
        }
        self.s.checks.push(c);
        Ok(())
    }

    /// Adds a check (chaining form).
    pub fn with_check(mut self, c: Check) -> Result<Self, ScenarioError> {
        self.check(c)?;
        Ok(self)
    }

    /// The scenario.
    pub fn build(self) -> Scenario {
        self.s
    }
}

#[cfg(test)]
mod tests {
    use super::parse::bandwidth;
    use super::*;
    use crate::net::topology::Dist;

    #[test]
    fn a_fault_written_as_an_event_reads_back_as_the_same_fault() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<String>>();
        let faults = [
            Action::Crash(v(&["dc1-0"])),
            Action::CrashInFsync(v(&["dc1-server-0"])),
            Action::Restart(v(&["dc1-0", "dc1-1"])),
            Action::Isolate(v(&["dc1-1"])),
            Action::Partition(v(&["dc1-0", "dc1-server-0"]), v(&["dc1-1"])),
            Action::OneWay(v(&["dc1-0"]), v(&["dc1-1", "dc1-server-0"])),
            Action::Heal,
            Action::HealBetween(v(&["dc1-0"]), v(&["dc1-1"])),
            Action::Clog(v(&["dc1-0"]), v(&["dc1-1"]), true),
            Action::Clog(v(&["dc1-0"]), v(&["dc1-1"]), false),
            Action::Pause(v(&["dc1-1"]), Some(Duration::from_millis(2813))),
            Action::Pause(v(&["dc1-1"]), None),
            Action::Resume(v(&["dc1-1"])),
            Action::Loss(0.25),
            Action::LinkLoss(v(&["dc1-0"]), v(&["dc1-1"]), Some(0.37)),
            Action::LinkLoss(v(&["dc1-0"]), v(&["dc1-1"]), None),
            Action::Slow(v(&["dc1-0"]), Duration::from_micros(1500)),
            Action::Slow(v(&["dc1-0"]), Duration::ZERO),
            Action::Skew(v(&["dc1-0"]), -1250),
        ];
        for (i, a) in faults.iter().enumerate() {
            let at = Duration::from_millis(1000 + 7 * i as u64);
            let event = events_to_table(at, a).unwrap();
            let mut doc = toml::Table::new();
            doc.insert("event".into(), toml::Value::Array(vec![event.into()]));
            let text = format!(
                "name = \"t\"\nseed = 1\nduration = \"10s\"\n[[datacenter]]\nname = \"dc1\"\nservers = 1\nclients = 2\n{}",
                toml::to_string(&doc).unwrap()
            );
            let s = Scenario::parse("t", &text).unwrap_or_else(|e| panic!("{a:?}: {e}\n{text}"));
            // Node sets come back in the topology's order.
            let sorted = |a: &Action| {
                a.map(|set| {
                    let mut set = set.clone();
                    set.sort();
                    set
                })
            };
            let t = s.timeline(1).unwrap();
            assert_eq!(t.len(), 1, "{text}");
            assert_eq!((t[0].at, sorted(&t[0].action)), (at, sorted(a)), "{text}");
        }
        assert!(events_to_table(Duration::ZERO, &Action::CaRotate(v(&["dc1-0"]))).is_none());
    }

    const GOOD: &str = r#"
name = "t"
seed = 3
duration = "60s"

[[datacenter]]
name = "dc1"
clients = 5

[[event]]
at = "10s"
action = "partition"
targets = ["dc1-4"]

[[event]]
at = "5s"
action = "skew"
targets = ["dc1-1"]
offset = "-250ms"

[[check]]
kind = "failed_within"
targets = ["dc1-4"]
within = "20s"
"#;

    #[test]
    fn parses_and_orders_events() {
        let s = Scenario::parse("t.toml", GOOD).unwrap();
        assert_eq!(s.names().len(), 5);
        let t = s.timeline(3).unwrap();
        assert_eq!(t[0].action, Action::Skew(vec!["dc1-1".into()], -250));
        assert_eq!(t[1].action, Action::Isolate(vec!["dc1-4".into()]));
        assert!(matches!(s.checks[0], Check::FailedWithin { .. }));
    }

    #[test]
    fn network_keys_and_actions_parse() {
        let text = GOOD.replace(
            "[[datacenter]]",
            "[latency]\nbandwidth = \"100Mbit/s\"\nduplicate = 0.01\nreorder = 0.02\n\n[[datacenter]]",
        ) + r#"
[[link]]
between = ["dc1-0", "dc1-1"]
bandwidth = "20MB/s"

[[event]]
at = "20s"
action = "partition"
between = ["dc1-0", "dc1-2"]
one_way = true

[[event]]
at = "21s"
action = "clog"
between = ["dc1-1", "dc1-3"]

[[event]]
at = "22s"
action = "unclog"
"#;
        let s = Scenario::parse("t.toml", &text).unwrap();
        let l = &s.topology.latency;
        assert_eq!((l.bandwidth, l.duplicate, l.reorder), (12.5e6, 0.01, 0.02));
        assert_eq!(s.links[0].bandwidth, Some(20e6));
        let links = s.cluster(3).unwrap().links;
        assert_eq!(
            (links.bandwidth[0][1], links.bandwidth[1][2]),
            (20e6, 12.5e6)
        );
        let t = s.timeline(3).unwrap();
        let names = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(t
            .iter()
            .any(|a| a.action == Action::OneWay(names(&["dc1-0"]), names(&["dc1-2"]))));
        assert!(t
            .iter()
            .any(|a| a.action == Action::Clog(names(&["dc1-1"]), names(&["dc1-3"]), true)));
        assert!(t
            .iter()
            .any(|a| matches!(&a.action, Action::Clog(a, _, false) if a.len() == 5)));
        for (bad, want) in [
            ("fast", "not a bandwidth"),
            ("0.1bit/s", "less than a byte"),
            ("10 Mb/s", "not a bandwidth"),
        ] {
            let e = bandwidth("latency.bandwidth", bad).unwrap_err().0;
            assert!(e.contains(want), "{bad}: {e}");
        }
        assert_eq!(bandwidth("x", "unlimited").unwrap(), f64::INFINITY);
        assert_eq!(bandwidth("x", "1Gbit/s").unwrap(), 125e6);
    }

    #[test]
    fn unknown_keys_point_at_the_line() {
        let bad = GOOD.replace("clients = 5", "clients = 5\nclinets = 2");
        let e = Scenario::parse("t.toml", &bad).unwrap_err().0;
        assert!(e.starts_with("t.toml:9:1:"), "{e}");
        assert!(e.contains("clinets") && e.contains("clients"), "{e}");
    }

    #[test]
    fn bad_values_say_what_to_fix() {
        for (from, to, want) in [
            ("seed = 3", "seed = 3\ntick = \"10ms\"", "no longer ticks"),
            (
                "action = \"partition\"",
                "action = \"partition\"\none_way = true",
                "one_way needs between",
            ),
            (
                "action = \"partition\"",
                "action = \"crash\"\none_way = true",
                "one_way does not apply",
            ),
            ("\"60s\"", "\"soon\"", "duration"),
            ("dc1-4\"]", "dc9-4\"]", "neither a node"),
            ("\"partition\"", "\"explode\"", "unknown action"),
            ("\"20s\"", "\"x\"", "check #1"),
            ("offset = \"-250ms\"", "rate = 0.5", "needs offset"),
            (
                "clients = 5",
                "clients = 5\nrow = 3",
                "row needs latency.matrix",
            ),
            ("clients = 5", "clients = 0", "has no nodes"),
            (
                "action = \"partition\"",
                "action = \"crash\"\nrate = 0.1",
                "rate does not apply",
            ),
            (
                "targets = [\"dc1-4\"]\nwithin",
                "targets = [\"fraction=0.5\"]\nwithin",
                "at random",
            ),
        ] {
            let e = Scenario::parse("t.toml", &GOOD.replacen(from, to, 1))
                .unwrap_err()
                .0;
            assert!(e.contains(want), "{from} -> {to}: {e}");
        }
    }

    #[test]
    fn distributions_and_locations_parse() {
        let text = GOOD.replace(
            "[[datacenter]]",
            "[latency]\nintra_dc = { dist = \"uniform\", min = \"1ms\", max = \"3ms\" }\njitter = { dist = \"exponential\", mean = \"200us\" }\n\n[[datacenter]]",
        );
        let s = Scenario::parse("t.toml", &text).unwrap();
        assert!(matches!(s.topology.latency.intra_dc, Dist::Uniform { .. }));
        let bad = text.replace("\"exponential\"", "\"gamma\"");
        let e = Scenario::parse("t.toml", &bad).unwrap_err().0;
        assert!(e.contains("uniform, normal or exponential"), "{e}");
        let bad = text.replace("max = \"3ms\"", "max = \"3ms\", mean = \"1ms\"");
        let e = Scenario::parse("t.toml", &bad).unwrap_err().0;
        assert!(e.contains("unknown key \"mean\""), "{e}");
    }

    #[test]
    fn map_coordinates_and_link_rules_shape_the_links() {
        let text = r#"
name = "geo"
seed = 1
duration = "10s"

[latency]
intra_dc = "2ms"
loss = 0.01

[[datacenter]]
name = "par"
lat = 48.8566
lon = 2.3522
clients = 2

[[datacenter]]
name = "nyc"
lat = 40.7128
lon = -74.0060
clients = 1

[[link]]
between = ["par-1", "dc=nyc"]
latency = "5ms"
loss = 0.5
"#;
        let s = Scenario::parse("geo.toml", text).unwrap();
        let links = s.cluster(1).unwrap().links;
        let ms = |i: usize, j: usize| links.one_way[i][j].as_secs_f64() * 1000.0;
        assert_eq!(ms(0, 1), 2.0);
        // About 5,837 km at 100 km per ms.
        assert!((ms(0, 2) - 58.4).abs() < 0.5, "{}", ms(0, 2));
        assert_eq!(ms(1, 2), 5.0);
        assert_eq!((links.loss[0][2], links.loss[2][1]), (0.01, 0.5));
        let bad = text.replace(
            "between = [\"par-1\", \"dc=nyc\"]",
            "between = [\"fraction=0.5\", \"dc=nyc\"]",
        );
        let e = Scenario::parse("geo.toml", &bad).unwrap_err().0;
        assert!(e.contains("links are fixed"), "{e}");
    }

    #[test]
    fn builder_makes_runnable_scenarios() {
        let s = ScenarioBuilder::new("b", Duration::from_secs(30))
            .datacenter("a", 3)
            .datacenter("b", 2)
            .event_sel(
                Duration::from_secs(5),
                Action::Partition(vec!["dc=a"], vec!["dc=b"]),
            )
            .unwrap()
            .with_check(Check::Converged { at: None })
            .unwrap()
            .build();
        assert_eq!(s.names(), ["a-0", "a-1", "a-2", "b-0", "b-1"]);
        let t = s.timeline(1).unwrap();
        assert_eq!(
            t[0].action,
            Action::Partition(
                vec!["a-0".into(), "a-1".into(), "a-2".into()],
                vec!["b-0".into(), "b-1".into()]
            )
        );
        assert!(ScenarioBuilder::new("b", Duration::from_secs(30))
            .datacenter("a", 3)
            .crash_at(Duration::from_secs(5), &["z-1"])
            .is_err());
    }
}

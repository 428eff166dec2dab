//! Scenario files: datacenters on measured geography, a timeline of faults,
//! and checks on the result.
//!
//! Every key is documented in `scenarios/README.md`. Unknown keys are errors
//! that name the file, line and column, and list the keys allowed there.
//! [`ScenarioBuilder`] makes the same scenarios in code. [`select`] says
//! which nodes an event or a check is about.

pub mod select;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cairn::format::parse_duration;
use cairn::gossip::Config as GossipConfig;
use serde::Deserialize;

use crate::action::{Action, LatencyChange, TimedAction};
use crate::engine::full::services::Registration;
use crate::engine::full::workload::{parse_consistency, KvLoad};
use crate::engine::full::ClusterSpec;
use crate::net::topology::{
    Datacenter, Dist, LatencyModel, Location, PoolScope, Role, Sites, Topology,
};
use crate::scenario::select::{resolve_names, Selector};
use crate::tomography::Matrix;

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
    /// Datacenters, nodes and the network model.
    pub topology: Topology,
    /// Fixed overrides of the model for some links.
    pub links: Vec<LinkRule>,
    /// The fault timeline, in time order, naming nodes by selector.
    pub events: Vec<TimedAction<Vec<Selector>>>,
    /// Checks to evaluate on the run.
    pub checks: Vec<Check>,
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

/// A fixed change to the model's links between two sets of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRule {
    /// The two sets; every link between them is affected.
    pub between: (Vec<Selector>, Vec<Selector>),
    /// One-way latency instead of the model's.
    pub latency: Option<Duration>,
    /// Loss rate instead of the model's.
    pub loss: Option<f64>,
    /// Bandwidth (bytes per second) instead of the model's.
    pub bandwidth: Option<f64>,
}

/// An assertion about a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// At the end (or at `at`), every running node sees every other running
    /// node of its pool alive.
    Converged {
        /// When to look; the end of the run if `None`.
        at: Option<Duration>,
    },
    /// Each of `targets` (every node a crash or partition cut off, when
    /// empty) is declared failed by every node it was cut off from, within
    /// `within` of that fault.
    FailedWithin {
        /// The nodes that should be detected.
        targets: Vec<String>,
        /// Detection deadline after the fault.
        within: Duration,
    },
    /// No node is declared failed unless it, or the node declaring it, was
    /// crashed, cut off or gone within the detection window before.
    NoFalseFailures,
    /// At the end, the coordinates predict the model's RTTs this well.
    CoordinateAccuracy {
        /// Largest acceptable median relative error.
        median_below: f64,
        /// Largest acceptable 90th-percentile relative error, if any.
        p90_below: Option<f64>,
    },
    /// Every datacenter with servers has a leader that a majority of its
    /// servers follow within `within` of the start, and a new one within
    /// `within` of every fault that takes the leader away (crash, leave,
    /// partition).
    LeaderWithin {
        /// Election deadline.
        within: Duration,
    },
    /// No two servers of a datacenter ever lead in the same term.
    SingleLeader,
    /// The `kv_load` clients' history is linearizable.
    Linearizable,
    /// No acknowledged KV write is lost: each key ends with the value of
    /// its last acknowledged write, or of a write not ordered before it.
    NoLostWrites,
    /// At the end, the running servers of each datacenter hold the same
    /// KV data.
    ReplicasConverge,
    /// After each `register_service` event for `service`, every server of
    /// the registering nodes' datacenters lists them within `within`.
    ServiceVisible {
        /// The service.
        service: String,
        /// Deadline after the registration.
        within: Duration,
    },
    /// After each `register_service` event for `service`, every node of
    /// the registering nodes' datacenters resolves them through its own
    /// agent's DNS interface within `within`.
    DnsResolves {
        /// The service.
        service: String,
        /// Deadline after the registration.
        within: Duration,
    },
    /// At the end, the servers' WAN coordinates predict the model's RTT
    /// between datacenters this well (server pairs of different
    /// datacenters).
    WanCoordinateAccuracy {
        /// Largest acceptable median relative error.
        median_below: f64,
        /// Largest acceptable 90th-percentile relative error, if any.
        p90_below: Option<f64>,
    },
    /// In each datacenter that loses every instance of `service`, the
    /// prepared query its first server runs answers from the nearest
    /// datacenter (by the model's latency) that still has one and can be
    /// reached, within `within`.
    QueryFailover {
        /// The service.
        service: String,
        /// Deadline after the loss.
        within: Duration,
    },
    /// Every call between `connect_service` applications that started at
    /// least `within` after the last `intention` change went through
    /// exactly when the intentions in force allow it.
    IntentionsEnforced {
        /// How long an intention change may take to apply.
        within: Duration,
    },
}

/// A problem with a scenario, saying where and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScenarioError(pub String);

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
    #[serde(default)]
    latency: LatencySection,
    datacenter: Vec<DatacenterSection>,
    #[serde(default)]
    link: Vec<LinkSection>,
    #[serde(default)]
    event: Vec<EventSection>,
    #[serde(default)]
    check: Vec<CheckSection>,
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LatencySection {
    matrix: Option<String>,
    intra_dc: Option<toml::Value>,
    inter_dc: Option<String>,
    jitter: Option<toml::Value>,
    loss: Option<f64>,
    bandwidth: Option<String>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
    km_per_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DatacenterSection {
    name: String,
    #[serde(default)]
    clients: usize,
    #[serde(default)]
    servers: usize,
    row: Option<u32>,
    rows: Option<toml::Value>,
    city: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkSection {
    between: Vec<String>,
    latency: Option<String>,
    loss: Option<f64>,
    bandwidth: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventSection {
    at: String,
    action: String,
    #[serde(default)]
    targets: Vec<String>,
    between: Option<Vec<String>>,
    one_way: Option<bool>,
    rate: Option<f64>,
    offset: Option<String>,
    latency: Option<String>,
    factor: Option<f64>,
    #[serde(rename = "for")]
    for_: Option<String>,
    clients: Option<u32>,
    interval: Option<String>,
    keys: Option<u32>,
    consistency: Option<String>,
    service: Option<String>,
    port: Option<u16>,
    tags: Option<Vec<String>>,
    upstream: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    decision: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckSection {
    kind: String,
    #[serde(default)]
    targets: Vec<String>,
    within: Option<String>,
    at: Option<String>,
    median_below: Option<f64>,
    p90_below: Option<f64>,
    service: Option<String>,
}

/// Most nodes the full-stack engine takes: each is a whole agent (about
/// 0.7 MB, a server more), and it scores every pair of a pool each second.
pub const MAX_FULL_NODES: usize = 2000;

/// Most nodes a scenario may have (the protocol engine's reach).
pub const MAX_NODES: usize = 200_000;

/// A service name that is also a DNS label: letters, digits and dashes.
fn valid_service_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 63 && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn err(msg: impl Into<String>) -> ScenarioError {
    ScenarioError(msg.into())
}

fn dur(what: &str, s: &str) -> Result<Duration, ScenarioError> {
    parse_duration(s).map_err(|e| err(format!("{what}: {e}")))
}

/// Parses a signed duration like `"-250ms"` into milliseconds.
fn signed_ms(what: &str, s: &str) -> Result<i64, ScenarioError> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let ms = dur(what, body)?.as_millis() as i64;
    Ok(if neg { -ms } else { ms })
}

fn rate(what: &str, r: f64) -> Result<f64, ScenarioError> {
    if (0.0..=1.0).contains(&r) {
        Ok(r)
    } else {
        Err(err(format!("{what} must be between 0 and 1, not {r}")))
    }
}

/// A distribution: `"2ms"` (fixed) or a table with `dist` = `uniform`
/// (`min`, `max`), `normal` (`mean`, `stddev`) or `exponential` (`mean`).
/// A bandwidth like `"1Gbit/s"`, `"100Mbit/s"`, `"20MB/s"` or
/// `"unlimited"`, in bytes per second.
fn bandwidth(what: &str, s: &str) -> Result<f64, ScenarioError> {
    let bad = || {
        err(format!(
            "{what}: {s:?} is not a bandwidth; write a number with a unit, like \"1Gbit/s\", \"100Mbit/s\", \"20MB/s\" (k, M, G; bit/s or B/s), or \"unlimited\""
        ))
    };
    let t = s.trim();
    if t == "unlimited" {
        return Ok(f64::INFINITY);
    }
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(bad)?;
    let (num, unit) = t.split_at(split);
    let v: f64 = num.parse().map_err(|_| bad())?;
    let (scale, unit) = match unit.trim_start().chars().next() {
        Some('k') => (1e3, &unit.trim_start()[1..]),
        Some('M') => (1e6, &unit.trim_start()[1..]),
        Some('G') => (1e9, &unit.trim_start()[1..]),
        _ => (1.0, unit.trim_start()),
    };
    let per_byte = match unit {
        "bit/s" | "bps" => 1.0 / 8.0,
        "B/s" => 1.0,
        _ => return Err(bad()),
    };
    let bytes = v * scale * per_byte;
    if !(bytes.is_finite() && bytes >= 1.0) {
        return Err(err(format!("{what}: {s:?} is less than a byte a second")));
    }
    Ok(bytes)
}

fn dist(what: &str, v: &toml::Value) -> Result<Dist, ScenarioError> {
    let table = match v {
        toml::Value::String(s) => return Ok(Dist::Const(dur(what, s)?)),
        toml::Value::Table(t) => t,
        _ => {
            return Err(err(format!(
                "{what} is a duration like \"2ms\" or a table like {{ dist = \"normal\", mean = \"2ms\", stddev = \"500us\" }}"
            )))
        }
    };
    let get = |k: &str| -> Result<Duration, ScenarioError> {
        let s = table
            .get(k)
            .and_then(toml::Value::as_str)
            .ok_or_else(|| err(format!("{what} needs {k}, a duration like \"2ms\"")))?;
        dur(&format!("{what}.{k}"), s)
    };
    let kind = table
        .get("dist")
        .and_then(toml::Value::as_str)
        .unwrap_or("");
    let (d, keys): (Dist, &[&str]) = match kind {
        "uniform" => {
            let (min, max) = (get("min")?, get("max")?);
            if min > max {
                return Err(err(format!("{what}: min is larger than max")));
            }
            (Dist::Uniform { min, max }, &["dist", "min", "max"])
        }
        "normal" => (
            Dist::Normal {
                mean: get("mean")?,
                stddev: get("stddev")?,
            },
            &["dist", "mean", "stddev"],
        ),
        "exponential" => (Dist::Exponential { mean: get("mean")? }, &["dist", "mean"]),
        other => {
            return Err(err(format!(
                "{what}.dist must be uniform, normal or exponential, not {other:?}"
            )))
        }
    };
    if let Some(k) = table.keys().find(|k| !keys.contains(&k.as_str())) {
        return Err(err(format!(
            "{what}: unknown key {k:?} for a {kind} distribution (keys: {})",
            keys.join(", ")
        )));
    }
    Ok(d)
}

/// The rows a `rows` key names: a list of row ids, or `"all"`: every row
/// (by id) measured against every row taken before it, so that all pairs
/// have a measured latency.
fn matrix_rows(here: &str, spec: &toml::Value, m: &Matrix) -> Result<Vec<u32>, ScenarioError> {
    let rows: Vec<u32> = match spec {
        toml::Value::String(s) if s == "all" => {
            let mut rows: Vec<u32> = Vec::new();
            for id in 0..m.nodes {
                if !m.peers[id as usize].is_empty()
                    && rows.iter().all(|&r| m.rtt_ms(r, id).is_some())
                {
                    rows.push(id);
                }
            }
            rows
        }
        toml::Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_integer()
                    .and_then(|i| u32::try_from(i).ok())
                    .filter(|&r| r < m.nodes && !m.peers[r as usize].is_empty())
                    .ok_or_else(|| {
                        err(format!(
                            "{here}: rows lists {v}, which is not a measured row of {} (0 to {})",
                            m.name,
                            m.nodes.saturating_sub(1)
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(err(format!(
                "{here}: rows is \"all\" or a list of row ids, like [2, 4, 5]"
            )))
        }
    };
    if rows.is_empty() {
        return Err(err(format!("{here}: rows names no row")));
    }
    Ok(rows)
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    (line, col)
}

const ACTIONS: &str = "partition, heal, clog, unclog, crash, restart, join, leave, loss, loss_off, latency, latency_reset, skew, slow, kv_load, register_service, connect_service, intention";
const CHECKS: &str = "converged, failed_within, no_false_failures, coordinate_accuracy, wan_coordinate_accuracy, query_failover, leader_within, single_leader, linearizable, no_lost_writes, replicas_converge, service_visible, dns_resolves, intentions_enforced";

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
        let preset = f.gossip.preset.as_deref().unwrap_or("lan");
        let mut gossip = GossipConfig::preset(preset).ok_or_else(|| {
            err(format!(
                "gossip.preset {preset:?} is not one of lan, wan, local"
            ))
        })?;
        if let Some(v) = f.gossip.disable_tcp_pings {
            gossip.disable_tcp_pings = v;
        }
        if let Some(v) = &f.gossip.probe_interval {
            gossip.probe_interval = dur("gossip.probe_interval", v)?;
        }
        if let Some(v) = &f.gossip.probe_timeout {
            gossip.probe_timeout = dur("gossip.probe_timeout", v)?;
        }
        if let Some(v) = &f.gossip.gossip_interval {
            gossip.gossip_interval = dur("gossip.gossip_interval", v)?;
        }
        if let Some(v) = &f.gossip.push_pull_interval {
            gossip.push_pull_interval = dur("gossip.push_pull_interval", v)?;
        }
        let g = &f.gossip;
        gossip.gossip_nodes = g.gossip_nodes.unwrap_or(gossip.gossip_nodes);
        gossip.retransmit_mult = g.retransmit_mult.unwrap_or(gossip.retransmit_mult);
        gossip.suspicion_mult = g.suspicion_mult.unwrap_or(gossip.suspicion_mult);
        gossip.enable_compression = g.compression.unwrap_or(gossip.enable_compression);
        gossip
            .validate()
            .map_err(|e| err(format!("[gossip]: {e}")))?;
        if let Some(k) = &f.gossip.encrypt {
            cairn::gossip::keyring::parse_key(k)
                .map_err(|e| err(format!("gossip.encrypt: {e}")))?;
        }
        let pool = match f.gossip.pool.as_deref() {
            None | Some("datacenter") => PoolScope::Datacenter,
            Some("global") => PoolScope::Global,
            Some(other) => {
                return Err(err(format!(
                    "gossip.pool is datacenter (one pool per datacenter) or global (one pool for all), not {other:?}"
                )))
            }
        };

        let mut latency = LatencyModel::default();
        let l = &f.latency;
        if let Some(v) = &l.intra_dc {
            latency.intra_dc = dist("latency.intra_dc", v)?;
        }
        if let Some(v) = &l.jitter {
            latency.jitter = dist("latency.jitter", v)?;
        }
        if let Some(v) = &l.inter_dc {
            latency.inter_dc = dur("latency.inter_dc", v)?;
        }
        if let Some(v) = l.loss {
            latency.loss = rate("latency.loss", v)?;
        }
        if let Some(v) = &l.bandwidth {
            latency.bandwidth = bandwidth("latency.bandwidth", v)?;
        }
        if let Some(v) = l.duplicate {
            latency.duplicate = rate("latency.duplicate", v)?;
        }
        if let Some(v) = l.reorder {
            latency.reorder = rate("latency.reorder", v)?;
        }
        if let Some(v) = l.km_per_ms {
            if !(v.is_finite() && v > 0.0) {
                return Err(err("latency.km_per_ms must be a positive number"));
            }
            latency.km_per_ms = v;
        }
        if let Some(file) = &l.matrix {
            let sites =
                Sites::load(&base.join(file)).map_err(|e| err(format!("latency.matrix: {e}")))?;
            latency.matrix = Some(Arc::new(sites));
        }

        let mut dcs: Vec<Datacenter> = Vec::new();
        if f.datacenter.is_empty() {
            return Err(err("a scenario needs at least one [[datacenter]]"));
        }
        for d in &f.datacenter {
            let here = format!("datacenter {:?}", d.name);
            if d.name.is_empty()
                || !d
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(err(format!(
                    "{here}: names are letters, digits, '-' and '_'"
                )));
            }
            if dcs.iter().any(|x| x.name == d.name) {
                return Err(err(format!("{here} appears twice")));
            }
            if d.clients + d.servers == 0 {
                return Err(err(format!(
                    "{here} has no nodes: set clients (and later servers)"
                )));
            }
            if let Some(spec) = &d.rows {
                if d.row.is_some() || d.city.is_some() || d.lat.is_some() || d.lon.is_some() {
                    return Err(err(format!(
                        "{here}: rows places one datacenter per row; drop row, city, lat and lon"
                    )));
                }
                let m = latency
                    .matrix
                    .as_ref()
                    .ok_or_else(|| err(format!("{here}: rows needs latency.matrix")))?;
                for r in matrix_rows(&here, spec, &m.matrix)? {
                    dcs.push(Datacenter {
                        name: format!("{}-{r}", d.name),
                        clients: d.clients,
                        servers: d.servers,
                        location: Location::Row(r),
                    });
                }
                continue;
            }
            let location = match (d.row, &d.city, d.lat, d.lon) {
                (None, None, None, None) => Location::Unplaced,
                (Some(r), None, None, None) => {
                    let m = latency
                        .matrix
                        .as_ref()
                        .ok_or_else(|| err(format!("{here}: row needs latency.matrix")))?;
                    if r >= m.matrix.nodes || m.matrix.peers[r as usize].is_empty() {
                        return Err(err(format!(
                            "{here}: row {r} has no measurements in {} (rows 0 to {})",
                            m.matrix.name,
                            m.matrix.nodes.saturating_sub(1)
                        )));
                    }
                    Location::Row(r)
                }
                (None, Some(city), None, None) => {
                    let m = latency
                        .matrix
                        .as_ref()
                        .ok_or_else(|| err(format!("{here}: city needs latency.matrix")))?;
                    Location::Row(m.find(city).ok_or_else(|| {
                        err(format!(
                            "{here}: city {city:?} is not a label in the site table of {} (NAME.nodes.csv); use row = ID instead",
                            m.matrix.name
                        ))
                    })?)
                }
                (None, None, Some(lat), Some(lon)) => {
                    if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                        return Err(err(format!("{here}: lat is -90 to 90 and lon -180 to 180")));
                    }
                    Location::Geo { lat, lon }
                }
                _ => {
                    return Err(err(format!(
                        "{here}: give one location: row, city, or lat and lon together"
                    )))
                }
            };
            dcs.push(Datacenter {
                name: d.name.clone(),
                clients: d.clients,
                servers: d.servers,
                location,
            });
        }
        let topology = Topology::new(dcs, pool, latency);
        let mut seen = std::collections::BTreeSet::new();
        if let Some(dup) = topology
            .nodes
            .iter()
            .find(|n| !seen.insert(n.name.as_str()))
        {
            return Err(err(format!(
                "two nodes would be named {:?}: rename a datacenter",
                dup.name
            )));
        }
        if topology.nodes.len() > MAX_NODES {
            return Err(err(format!(
                "{} nodes is more than the {MAX_NODES} a scenario may have",
                topology.nodes.len()
            )));
        }
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
                topology,
                links: Vec::new(),
                events: Vec::new(),
                checks: Vec::new(),
                source: None,
            },
        };
        let sel = |b: &ScenarioBuilder, here: &str, list: &[String]| {
            list.iter()
                .map(|t| Selector::parse(t, &b.s.topology))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| err(format!("{here}: {e}")))
        };
        let between = |b: &ScenarioBuilder, here: &str, list: &Option<Vec<String>>| match list {
            None => Ok(None),
            Some(l) if l.len() == 2 => Ok(Some((sel(b, here, &l[..1])?, sel(b, here, &l[1..])?))),
            Some(_) => Err(err(format!(
                "{here}: between takes two selectors, like [\"dc=dc1\", \"dc=dc2\"]"
            ))),
        };

        for (i, l) in f.link.iter().enumerate() {
            let here = format!("link #{}", i + 1);
            let pair = between(&b, &here, &Some(l.between.clone()))?.unwrap_or_default();
            if pair.0.iter().chain(&pair.1).any(Selector::is_random) {
                return Err(err(format!(
                    "{here}: links are fixed; name nodes or datacenters, not fraction or count"
                )));
            }
            let latency = l
                .latency
                .as_deref()
                .map(|v| dur(&format!("{here}: latency"), v))
                .transpose()?;
            let loss = l
                .loss
                .map(|v| rate(&format!("{here}: loss"), v))
                .transpose()?;
            let bandwidth = l
                .bandwidth
                .as_deref()
                .map(|v| bandwidth(&format!("{here}: bandwidth"), v))
                .transpose()?;
            if latency.is_none() && loss.is_none() && bandwidth.is_none() {
                return Err(err(format!(
                    "{here} changes nothing: set latency, loss or bandwidth"
                )));
            }
            b.s.links.push(LinkRule {
                between: pair,
                latency,
                loss,
                bandwidth,
            });
        }

        for (i, e) in f.event.iter().enumerate() {
            let here = format!("event #{} ({})", i + 1, e.action);
            let at = dur(&format!("{here}: at"), &e.at)?;
            let targets = sel(&b, &here, &e.targets)?;
            let pair = between(&b, &here, &e.between)?;
            let need_targets = || {
                if targets.is_empty() {
                    Err(err(format!(
                        "{here} needs targets, like [\"dc1-3\"] or [\"dc=dc2\"]"
                    )))
                } else {
                    Ok(targets.clone())
                }
            };
            // `between` names two sets; `targets` alone means "and everyone else".
            let sets = || -> Result<(Vec<Selector>, Vec<Selector>), ScenarioError> {
                match (&pair, targets.is_empty()) {
                    (Some(_), false) => {
                        Err(err(format!("{here}: give targets or between, not both")))
                    }
                    (Some(p), true) => Ok(p.clone()),
                    (None, false) => Ok((
                        targets.clone(),
                        vec![Selector::parse("all", &b.s.topology).map_err(err)?],
                    )),
                    (None, true) => {
                        let all = vec![Selector::parse("all", &b.s.topology).map_err(err)?];
                        Ok((all.clone(), all))
                    }
                }
            };
            let action = match e.action.as_str() {
                "partition" => match (&pair, e.one_way.unwrap_or(false)) {
                    (Some(_), _) if !targets.is_empty() => {
                        return Err(err(format!("{here}: give targets or between, not both")))
                    }
                    (Some(p), false) => Action::Partition(p.0.clone(), p.1.clone()),
                    (Some(p), true) => Action::OneWay(p.0.clone(), p.1.clone()),
                    (None, false) => Action::Isolate(need_targets()?),
                    (None, true) => {
                        return Err(err(format!(
                            "{here}: one_way needs between = [FROM, TO]: what FROM sends stops reaching TO"
                        )))
                    }
                },
                "clog" | "unclog" => {
                    let (x, y) = sets()?;
                    Action::Clog(x, y, e.action == "clog")
                }
                "heal" => match (&pair, targets.is_empty()) {
                    (None, true) => Action::Heal,
                    _ => {
                        let (x, y) = sets()?;
                        Action::HealBetween(x, y)
                    }
                },
                "crash" => Action::Crash(need_targets()?),
                "restart" => Action::Restart(need_targets()?),
                "join" => Action::Join(need_targets()?),
                "leave" => Action::Leave(need_targets()?),
                "loss" => {
                    let r = e
                        .rate
                        .ok_or_else(|| err(format!("{here} needs rate, from 0 to 1")))?;
                    let r = rate(&format!("{here}: rate"), r)?;
                    if pair.is_none() && targets.is_empty() {
                        Action::Loss(r)
                    } else {
                        let (x, y) = sets()?;
                        Action::LinkLoss(x, y, Some(r))
                    }
                }
                "loss_off" => {
                    let (x, y) = sets()?;
                    Action::LinkLoss(x, y, None)
                }
                "latency" => {
                    let change = match (&e.latency, e.factor) {
                        (Some(v), None) => LatencyChange::Set(dur(&format!("{here}: latency"), v)?),
                        (None, Some(f)) if f.is_finite() && f > 0.0 => LatencyChange::Scale(f),
                        (None, Some(_)) => return Err(err(format!("{here}: factor must be a positive number"))),
                        _ => {
                            return Err(err(format!(
                                "{here} needs latency (one-way, like \"80ms\") or factor (times the model's), not both"
                            )))
                        }
                    };
                    let (x, y) = sets()?;
                    Action::Latency(x, y, change)
                }
                "latency_reset" => {
                    let (x, y) = sets()?;
                    Action::Latency(x, y, LatencyChange::Reset)
                }
                "slow" => {
                    let d = e.latency.as_deref().ok_or_else(|| {
                        err(format!("{here} needs latency, the extra delay of every datagram the targets send or receive, like \"200ms\" (\"0\" ends it)"))
                    })?;
                    Action::Slow(need_targets()?, dur(&format!("{here}: latency"), d)?)
                }
                "skew" => {
                    let o = e
                        .offset
                        .as_deref()
                        .ok_or_else(|| err(format!("{here} needs offset, like \"-250ms\"")))?;
                    Action::Skew(need_targets()?, signed_ms(&format!("{here}: offset"), o)?)
                }
                "kv_load" => {
                    if !b.s.topology.nodes.iter().any(|n| n.role == Role::Server) {
                        return Err(err(format!(
                            "{here}: KV clients need servers; give a datacenter servers = 3"
                        )));
                    }
                    let d = KvLoad::default();
                    let positive = |what: &str, v: Option<u32>, default: u32| match v {
                        None => Ok(default),
                        Some(0) => Err(err(format!("{here}: {what} must be at least 1"))),
                        Some(n) if n > 64 => Err(err(format!("{here}: {what} is at most 64"))),
                        Some(n) => Ok(n),
                    };
                    let load = KvLoad {
                        duration: match &e.for_ {
                            Some(v) => dur(&format!("{here}: for"), v)?,
                            None => d.duration,
                        },
                        clients: positive("clients", e.clients, d.clients)?,
                        interval: match &e.interval {
                            Some(v) => dur(&format!("{here}: interval"), v)?,
                            None => d.interval,
                        },
                        keys: positive("keys", e.keys, d.keys)?,
                        consistency: match &e.consistency {
                            Some(c) => {
                                parse_consistency(c).map_err(|m| err(format!("{here}: {m}")))?
                            }
                            None => d.consistency,
                        },
                    };
                    if load.interval < Duration::from_millis(1) {
                        return Err(err(format!(
                            "{here}: interval must be at least 1ms (each client waits that long between operations)"
                        )));
                    }
                    Action::KvLoad(need_targets()?, load)
                }
                "register_service" | "connect_service" => {
                    if !b.s.topology.nodes.iter().any(|n| n.role == Role::Server) {
                        return Err(err(format!(
                            "{here}: services are registered in the servers' catalog; give a datacenter servers = 3"
                        )));
                    }
                    let name = e
                        .service
                        .clone()
                        .filter(|s| valid_service_name(s))
                        .ok_or_else(|| {
                            err(format!(
                                "{here} needs service, a name of letters, digits and dashes, like \"web\""
                            ))
                        })?;
                    let connect = e.action == "connect_service";
                    let port = e.port.unwrap_or(0);
                    if connect
                        && (port == 0
                            || port == crate::engine::full::mesh::SIDECAR_PORT
                            || port == crate::engine::full::mesh::UPSTREAM_PORT)
                    {
                        return Err(err(format!(
                            "{here} needs the application's port, like port = 8080 (not {} or {}, which the sidecar uses)",
                            crate::engine::full::mesh::SIDECAR_PORT,
                            crate::engine::full::mesh::UPSTREAM_PORT
                        )));
                    }
                    if let Some(u) = &e.upstream {
                        if !valid_service_name(u) {
                            return Err(err(format!(
                                "{here}: upstream {u:?} is not a service name"
                            )));
                        }
                    }
                    Action::RegisterService(
                        need_targets()?,
                        Registration {
                            name,
                            port,
                            tags: e.tags.clone().unwrap_or_default(),
                            connect,
                            upstream: e.upstream.clone(),
                        },
                    )
                }
                "intention" => {
                    let name = |what: &str, v: &Option<String>| -> Result<String, ScenarioError> {
                        v.clone()
                            .filter(|s| s == "*" || valid_service_name(s))
                            .ok_or_else(|| {
                                err(format!("{here} needs {what}, a service name or \"*\""))
                            })
                    };
                    let allow = match e.decision.as_deref() {
                        Some("allow") => true,
                        Some("deny") => false,
                        _ => {
                            return Err(err(format!(
                                "{here} needs decision = \"allow\" or \"deny\""
                            )))
                        }
                    };
                    Action::Intention(
                        need_targets()?,
                        crate::engine::full::mesh::IntentionOrder {
                            source: name("source", &e.source)?,
                            destination: name("destination", &e.destination)?,
                            allow,
                        },
                    )
                }
                other => {
                    return Err(err(format!(
                        "event #{}: unknown action {other:?} (known: {ACTIONS})",
                        i + 1
                    )))
                }
            };
            // Keys that the action would silently ignore are mistakes.
            let registers = matches!(e.action.as_str(), "register_service" | "connect_service");
            let unused: Vec<&str> = [
                ("rate", e.rate.is_some() && e.action != "loss"),
                ("one_way", e.one_way.is_some() && e.action != "partition"),
                ("offset", e.offset.is_some() && e.action != "skew"),
                (
                    "latency",
                    e.latency.is_some() && e.action != "latency" && e.action != "slow",
                ),
                ("factor", e.factor.is_some() && e.action != "latency"),
                (
                    "between",
                    e.between.is_some()
                        && matches!(
                            e.action.as_str(),
                            "crash"
                                | "restart"
                                | "join"
                                | "leave"
                                | "skew"
                                | "slow"
                                | "kv_load"
                                | "register_service"
                                | "connect_service"
                                | "intention"
                        ),
                ),
                ("for", e.for_.is_some() && e.action != "kv_load"),
                ("clients", e.clients.is_some() && e.action != "kv_load"),
                ("interval", e.interval.is_some() && e.action != "kv_load"),
                ("keys", e.keys.is_some() && e.action != "kv_load"),
                (
                    "consistency",
                    e.consistency.is_some() && e.action != "kv_load",
                ),
                ("service", e.service.is_some() && !registers),
                ("port", e.port.is_some() && !registers),
                ("tags", e.tags.is_some() && !registers),
                (
                    "upstream",
                    e.upstream.is_some() && e.action != "connect_service",
                ),
                ("source", e.source.is_some() && e.action != "intention"),
                (
                    "destination",
                    e.destination.is_some() && e.action != "intention",
                ),
                ("decision", e.decision.is_some() && e.action != "intention"),
            ]
            .into_iter()
            .filter(|x| x.1)
            .map(|x| x.0)
            .collect();
            if !unused.is_empty() {
                return Err(err(format!(
                    "{here}: {} does not apply to this action",
                    unused.join(", ")
                )));
            }
            b.event(at, action)
                .map_err(|e| err(format!("{here}: {}", e.0)))?;
        }

        for (i, c) in f.check.iter().enumerate() {
            let here = format!("check #{} ({})", i + 1, c.kind);
            let targets = sel(&b, &here, &c.targets)?;
            if targets.iter().any(|t| t.is_random() || t.is_dynamic()) {
                return Err(err(format!(
                    "{here}: checks cannot pick at random or name the leader; name nodes or datacenters"
                )));
            }
            let names = resolve_names(&targets, &b.s.topology, 0, "");
            let within = c
                .within
                .as_deref()
                .map(|w| dur(&format!("{here}: within"), w))
                .transpose()?;
            let at =
                c.at.as_deref()
                    .map(|w| dur(&format!("{here}: at"), w))
                    .transpose()?;
            let check = match c.kind.as_str() {
                "converged" => Check::Converged { at },
                "no_false_failures" => Check::NoFalseFailures,
                "failed_within" => Check::FailedWithin {
                    targets: names,
                    within: within
                        .ok_or_else(|| err(format!("{here} needs within, like \"10s\"")))?,
                },
                "coordinate_accuracy" => Check::CoordinateAccuracy {
                    median_below: c
                        .median_below
                        .ok_or_else(|| err(format!("{here} needs median_below, like 0.2")))?,
                    p90_below: c.p90_below,
                },
                "wan_coordinate_accuracy" => {
                    if !b.s.topology.federated() {
                        return Err(err(format!(
                            "{here}: WAN coordinates need servers in two or more datacenters; give each datacenter servers = 3"
                        )));
                    }
                    Check::WanCoordinateAccuracy {
                        median_below: c
                            .median_below
                            .ok_or_else(|| err(format!("{here} needs median_below, like 0.2")))?,
                        p90_below: c.p90_below,
                    }
                }
                "query_failover" => {
                    if !b.s.topology.federated() {
                        return Err(err(format!(
                            "{here}: prepared queries fail over between federated datacenters; give two or more datacenters servers = 3"
                        )));
                    }
                    Check::QueryFailover {
                        service: c
                            .service
                            .clone()
                            .ok_or_else(|| err(format!("{here} needs service, like \"web\"")))?,
                        within: within
                            .ok_or_else(|| err(format!("{here} needs within, like \"15s\"")))?,
                    }
                }
                "leader_within" => Check::LeaderWithin {
                    within: within
                        .ok_or_else(|| err(format!("{here} needs within, like \"10s\"")))?,
                },
                "single_leader" => Check::SingleLeader,
                "linearizable" => Check::Linearizable,
                "no_lost_writes" => Check::NoLostWrites,
                "replicas_converge" => Check::ReplicasConverge,
                "intentions_enforced" => Check::IntentionsEnforced {
                    within: within
                        .ok_or_else(|| err(format!("{here} needs within, like \"2s\"")))?,
                },
                "service_visible" | "dns_resolves" => {
                    let service = c
                        .service
                        .clone()
                        .ok_or_else(|| err(format!("{here} needs service, like \"web\"")))?;
                    let within =
                        within.ok_or_else(|| err(format!("{here} needs within, like \"5s\"")))?;
                    if c.kind == "service_visible" {
                        Check::ServiceVisible { service, within }
                    } else {
                        Check::DnsResolves { service, within }
                    }
                }
                other => {
                    return Err(err(format!(
                        "check #{}: unknown kind {other:?} (known: {CHECKS})",
                        i + 1
                    )))
                }
            };
            let unused: Vec<&str> = [
                (
                    "targets",
                    !c.targets.is_empty() && c.kind != "failed_within",
                ),
                (
                    "within",
                    c.within.is_some()
                        && !matches!(
                            c.kind.as_str(),
                            "failed_within"
                                | "leader_within"
                                | "service_visible"
                                | "dns_resolves"
                                | "intentions_enforced"
                                | "query_failover"
                        ),
                ),
                (
                    "service",
                    c.service.is_some()
                        && !matches!(
                            c.kind.as_str(),
                            "service_visible" | "dns_resolves" | "query_failover"
                        ),
                ),
                ("at", c.at.is_some() && c.kind != "converged"),
                (
                    "median_below",
                    c.median_below.is_some()
                        && !matches!(
                            c.kind.as_str(),
                            "coordinate_accuracy" | "wan_coordinate_accuracy"
                        ),
                ),
                (
                    "p90_below",
                    c.p90_below.is_some()
                        && !matches!(
                            c.kind.as_str(),
                            "coordinate_accuracy" | "wan_coordinate_accuracy"
                        ),
                ),
            ]
            .into_iter()
            .filter(|x| x.1)
            .map(|x| x.0)
            .collect();
            if !unused.is_empty() {
                return Err(err(format!(
                    "{here}: {} does not apply to this kind",
                    unused.join(", ")
                )));
            }
            b.check(check)
                .map_err(|e| err(format!("{here}: {}", e.0)))?;
        }
        Ok(b.s)
    }

    /// The timeline with every selector resolved to node names for a run
    /// with `seed` (random picks depend on it).
    pub fn timeline(&self, seed: u64) -> Vec<TimedAction> {
        self.events
            .iter()
            .enumerate()
            .map(|(i, e)| TimedAction {
                at: e.at,
                action: e
                    .action
                    .map(|sel| resolve_names(sel, &self.topology, seed, &format!("event-{i}"))),
            })
            .collect()
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
                topology: Topology::new(Vec::new(), PoolScope::Datacenter, LatencyModel::default()),
                links: Vec::new(),
                events: Vec::new(),
                checks: Vec::new(),
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
    use super::*;

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
        let t = s.timeline(3);
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
        let t = s.timeline(3);
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
        let t = s.timeline(1);
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

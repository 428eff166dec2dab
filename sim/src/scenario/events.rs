//! `[[event]]`s: the scenario's timeline, each event parsed into an
//! [`Action`] on node selectors at its time.

use std::time::Duration;

use serde::Deserialize;

use super::parse::{
    between, dur, err, rate, selectors, signed_ms, valid_service_name, ScenarioError, Side,
};
use crate::action::{Action, IntentionOrder, LatencyChange, Registration};
use crate::engine::full::mesh;
use crate::engine::full::workload::{parse_consistency, KvLoad};
use crate::net::topology::{Role, Topology};
use crate::scenario::select::Selector;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct EventSection {
    at: String,
    action: String,
    #[serde(default)]
    targets: Vec<String>,
    between: Option<Vec<Side>>,
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
    locks: Option<u32>,
    writes: Option<bool>,
    txns: Option<u32>,
    consistency: Option<String>,
    service: Option<String>,
    port: Option<u16>,
    tags: Option<Vec<String>>,
    upstream: Option<String>,
    source: Option<String>,
    destination: Option<String>,
    decision: Option<String>,
    token: Option<String>,
}

const ACTIONS: &str = "partition, heal, clog, unclog, crash, crash_in_fsync, restart, corrupt, fsync_error, disk_full, disk_freed, tcp_reset, buggify, buggify_off, join, leave, pause, resume, loss, loss_off, latency, latency_reset, skew, drift, clock_jump, slow, kv_load, register_service, connect_service, intention, ca_rotate, acl_token";

/// Event `i` (from 0): where it is in the file (for errors), when it
/// happens and what it does.
pub(super) fn parse(
    i: usize,
    e: &EventSection,
    topology: &Topology,
) -> Result<(String, Duration, Action<Vec<Selector>>), ScenarioError> {
    let here = format!("event #{} ({})", i + 1, e.action);
    let at = dur(&format!("{here}: at"), &e.at)?;
    let targets = selectors(topology, &here, &e.targets)?;
    let pair = between(topology, &here, &e.between)?;
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
            (Some(_), false) => Err(err(format!("{here}: give targets or between, not both"))),
            (Some(p), true) => Ok(p.clone()),
            (None, false) => Ok((
                targets.clone(),
                vec![Selector::parse("all", topology).map_err(err)?],
            )),
            (None, true) => {
                let all = vec![Selector::parse("all", topology).map_err(err)?];
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
        "crash_in_fsync" => Action::CrashInFsync(need_targets()?),
        "restart" => Action::Restart(need_targets()?),
        "corrupt" => Action::Corrupt(need_targets()?),
        "fsync_error" => Action::FsyncError(need_targets()?),
        "disk_full" | "disk_freed" => Action::DiskFull(need_targets()?, e.action == "disk_full"),
        "tcp_reset" => Action::TcpReset(need_targets()?),
        "buggify" | "buggify_off" => Action::Buggify(need_targets()?, e.action == "buggify"),
        "join" => Action::Join(need_targets()?),
        "leave" => Action::Leave(need_targets()?),
        "pause" => {
            let d = match &e.for_ {
                Some(v) => Some(dur(&format!("{here}: for"), v)?).filter(|d| !d.is_zero()),
                None => None,
            };
            Action::Pause(need_targets()?, d)
        }
        "resume" => Action::Resume(need_targets()?),
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
        "drift" | "clock_jump" => clock_action(&here, e, need_targets()?)?,
        "kv_load" => {
            let load = kv_load(&here, e, topology)?;
            Action::KvLoad(need_targets()?, load)
        }
        "register_service" | "connect_service" => {
            let registration = registration(&here, e, topology)?;
            Action::RegisterService(need_targets()?, registration)
        }
        "intention" => {
            let name = |what: &str, v: &Option<String>| -> Result<String, ScenarioError> {
                v.clone()
                    .filter(|s| s == "*" || valid_service_name(s))
                    .ok_or_else(|| err(format!("{here} needs {what}, a service name or \"*\"")))
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
                IntentionOrder {
                    source: name("source", &e.source)?,
                    destination: name("destination", &e.destination)?,
                    allow,
                },
            )
        }
        "ca_rotate" => Action::CaRotate(need_targets()?),
        "acl_token" => {
            let name = e
                .token
                .clone()
                .filter(|t| valid_service_name(t))
                .ok_or_else(|| {
                    err(format!(
                        "{here} needs token, a name of letters, digits and dashes"
                    ))
                })?;
            Action::AclToken(need_targets()?, name)
        }
        other => {
            return Err(err(format!(
                "event #{}: unknown action {other:?} (known: {ACTIONS})",
                i + 1
            )))
        }
    };
    // Keys that the action would silently ignore are mistakes.
    let unused = unused(e);
    if !unused.is_empty() {
        return Err(err(format!(
            "{here}: {} does not apply to this action",
            unused.join(", ")
        )));
    }
    Ok((here, at, action))
}

/// A `kv_load` event's load.
fn kv_load(here: &str, e: &EventSection, topology: &Topology) -> Result<KvLoad, ScenarioError> {
    if !topology.nodes.iter().any(|n| n.role == Role::Server) {
        return Err(err(format!(
            "{here}: KV clients need servers; give a datacenter servers = 3"
        )));
    }
    let d = KvLoad::default();
    let at_most_64 = |what: &str, v: Option<u32>, default: u32| match v {
        Some(n) if n > 64 => Err(err(format!("{here}: {what} is at most 64"))),
        n => Ok(n.unwrap_or(default)),
    };
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
        locks: at_most_64("locks", e.locks, d.locks)?,
        txns: at_most_64("txns", e.txns, d.txns)?,
        writes: e.writes.unwrap_or(d.writes),
        consistency: match &e.consistency {
            Some(c) => parse_consistency(c).map_err(|m| err(format!("{here}: {m}")))?,
            None => d.consistency,
        },
    };
    if load.interval < Duration::from_millis(1) {
        return Err(err(format!(
            "{here}: interval must be at least 1ms (each client waits that long between operations)"
        )));
    }
    Ok(load)
}

/// A `register_service` or `connect_service` event's registration.
fn registration(
    here: &str,
    e: &EventSection,
    topology: &Topology,
) -> Result<Registration, ScenarioError> {
    if !topology.nodes.iter().any(|n| n.role == Role::Server) {
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
    if connect && (port == 0 || port == mesh::SIDECAR_PORT || port == mesh::UPSTREAM_PORT) {
        return Err(err(format!(
            "{here} needs the application's port, like port = 8080 (not {} or {}, which the sidecar uses)",
            mesh::SIDECAR_PORT,
            mesh::UPSTREAM_PORT
        )));
    }
    if let Some(u) = &e.upstream {
        if !valid_service_name(u) {
            return Err(err(format!("{here}: upstream {u:?} is not a service name")));
        }
    }
    Ok(Registration {
        name,
        port,
        tags: e.tags.clone().unwrap_or_default(),
        connect,
        upstream: e.upstream.clone(),
    })
}

/// The keys `e` sets that its action does not read.
fn unused(e: &EventSection) -> Vec<&'static str> {
    let registers = matches!(e.action.as_str(), "register_service" | "connect_service");
    [
        (
            "rate",
            e.rate.is_some() && e.action != "loss" && e.action != "drift",
        ),
        ("one_way", e.one_way.is_some() && e.action != "partition"),
        (
            "offset",
            e.offset.is_some() && e.action != "skew" && e.action != "clock_jump",
        ),
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
                        | "crash_in_fsync"
                        | "restart"
                        | "corrupt"
                        | "fsync_error"
                        | "disk_full"
                        | "disk_freed"
                        | "tcp_reset"
                        | "buggify"
                        | "buggify_off"
                        | "join"
                        | "leave"
                        | "pause"
                        | "resume"
                        | "skew"
                        | "drift"
                        | "clock_jump"
                        | "slow"
                        | "kv_load"
                        | "register_service"
                        | "connect_service"
                        | "intention"
                        | "ca_rotate"
                        | "acl_token"
                ),
        ),
        (
            "for",
            e.for_.is_some() && e.action != "kv_load" && e.action != "pause",
        ),
        ("clients", e.clients.is_some() && e.action != "kv_load"),
        ("interval", e.interval.is_some() && e.action != "kv_load"),
        ("keys", e.keys.is_some() && e.action != "kv_load"),
        ("locks", e.locks.is_some() && e.action != "kv_load"),
        ("txns", e.txns.is_some() && e.action != "kv_load"),
        ("writes", e.writes.is_some() && e.action != "kv_load"),
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
        ("token", e.token.is_some() && e.action != "acl_token"),
    ]
    .into_iter()
    .filter(|x| x.1)
    .map(|x| x.0)
    .collect()
}

/// A duration as a file writes it, exact to the microsecond.
pub(crate) fn duration_text(d: Duration) -> String {
    let us = d.as_micros();
    if us % 1000 == 0 {
        format!("{}ms", us / 1000)
    } else {
        format!("{us}us")
    }
}

/// A `drift` or `clock_jump` event's action, on `targets`.
fn clock_action(
    here: &str,
    e: &EventSection,
    targets: Vec<Selector>,
) -> Result<Action<Vec<Selector>>, ScenarioError> {
    if e.action == "drift" {
        let r = e.rate.ok_or_else(|| {
            err(format!(
                "{here} needs rate: clock seconds per true second, like 1.05 (fast) or 0.9 (slow)"
            ))
        })?;
        if !(r.is_finite() && (0.01..=100.0).contains(&r)) {
            return Err(err(format!(
                "{here}: rate is from 0.01 to 100 (1 is true speed), not {r}"
            )));
        }
        return Ok(Action::Drift(targets, r));
    }
    let o = e.offset.as_deref().ok_or_else(|| {
        err(format!(
            "{here} needs offset: how far the clock leaps ahead, like \"2s\""
        ))
    })?;
    Ok(Action::ClockJump(
        targets,
        dur(&format!("{here}: offset"), o)?,
    ))
}

/// The `[[event]]` table that [`parse`] reads back as `action` at `at`,
/// for the faults and their ends (what generated timelines hold); `None`
/// for the operations (loads, registrations), which a file writes with
/// keys of their own.
pub(crate) fn to_table(at: Duration, action: &Action) -> Option<toml::Table> {
    use toml::Value;
    let list = |v: &[String]| Value::Array(v.iter().cloned().map(Value::String).collect());
    let between = |a: &[String], b: &[String]| Value::Array(vec![list(a), list(b)]);
    let name = match action {
        Action::OneWay(..) => "partition",
        a => a.name(),
    };
    let mut t = toml::Table::new();
    t.insert("at".into(), Value::String(duration_text(at)));
    t.insert("action".into(), Value::String(name.into()));
    let keys: Vec<(&str, Value)> = match action {
        Action::Crash(x)
        | Action::CrashInFsync(x)
        | Action::Restart(x)
        | Action::Corrupt(x)
        | Action::FsyncError(x)
        | Action::DiskFull(x, _)
        | Action::TcpReset(x)
        | Action::Buggify(x, _)
        | Action::Resume(x)
        | Action::Isolate(x) => vec![("targets", list(x))],
        Action::Partition(a, b)
        | Action::HealBetween(a, b)
        | Action::Clog(a, b, _)
        | Action::LinkLoss(a, b, None) => vec![("between", between(a, b))],
        Action::OneWay(a, b) => vec![
            ("between", between(a, b)),
            ("one_way", Value::Boolean(true)),
        ],
        Action::Heal => vec![],
        Action::Pause(x, d) => {
            let mut v = vec![("targets", list(x))];
            v.extend(d.map(|d| ("for", Value::String(duration_text(d)))));
            v
        }
        Action::Loss(r) => vec![("rate", Value::Float(*r))],
        Action::LinkLoss(a, b, Some(r)) => {
            vec![("between", between(a, b)), ("rate", Value::Float(*r))]
        }
        Action::Slow(x, d) => vec![
            ("targets", list(x)),
            ("latency", Value::String(duration_text(*d))),
        ],
        Action::Skew(x, ms) => vec![
            ("targets", list(x)),
            ("offset", Value::String(format!("{ms}ms"))),
        ],
        Action::Drift(x, r) => vec![("targets", list(x)), ("rate", Value::Float(*r))],
        Action::ClockJump(x, d) => vec![
            ("targets", list(x)),
            ("offset", Value::String(duration_text(*d))),
        ],
        _ => return None,
    };
    t.extend(keys.into_iter().map(|(k, v)| (k.to_owned(), v)));
    Some(t)
}

//! Checks on the servers' Raft groups and the KV store they keep: a leader
//! soon after each loss, never two in one term, terms that survive restarts,
//! a linearizable history, no
//! acknowledged write lost, and replicas that agree at the end.
//!
//! They read the `raft` events the servers trace (`term=N leader=NAME` on
//! every change of a server's term or leader), the faults as they took
//! effect, the `kv_load` clients' history and the replicas' final state.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::action::{Action, TimedAction};
use crate::checks::linearizability::{self, Input, Op, Output};
use crate::checks::serializability::{self, Status, Txn};
use crate::engine::full::host::RAFT_EVENT;
use crate::engine::{Replica, RunOutput};
use crate::net::topology::{Role, Topology};
use crate::output::trace::Trace;
use crate::verdict::CheckResult;

/// One `raft` trace event.
#[derive(Debug, Clone, PartialEq)]
struct RaftView<'t> {
    at: Duration,
    node: &'t str,
    term: u64,
    leader: Option<&'t str>,
}

fn raft_views(trace: &Trace) -> Vec<RaftView<'_>> {
    trace
        .events
        .iter()
        .filter(|e| e.event == RAFT_EVENT)
        .filter_map(|e| {
            let d = e.detail.as_deref()?;
            let (term, leader) = d.split_once(' ')?;
            let term = term.strip_prefix("term=")?.parse().ok()?;
            let leader = leader.strip_prefix("leader=")?;
            Some(RaftView {
                at: e.at(),
                node: &e.node,
                term,
                leader: (leader != "none").then_some(leader),
            })
        })
        .collect()
}

fn dc_of<'a>(topo: &'a Topology, node: &str) -> &'a str {
    topo.index(node)
        .map_or("", |i| topo.datacenters[topo.nodes[i].dc].name.as_str())
}

/// The datacenters that have servers, with their server count.
fn server_dcs(topo: &Topology) -> Vec<(&str, usize)> {
    topo.datacenters
        .iter()
        .filter(|d| d.servers > 0)
        .map(|d| (d.name.as_str(), d.servers))
        .collect()
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// `single_leader`: leadership in each datacenter passes as openraft's
/// leader IDs allow. Those are (term, server) pairs, ordered: in one term,
/// a candidate with a higher server ID may still win after another won (it
/// needs a majority that had not heard from the first), which is what
/// keeps two candidates of equal timeouts from splitting every vote. So a
/// term may see more than one leader, but each later than the last with a
/// higher ID: never two leaders under one leader ID, never a term handed
/// back down.
pub fn single_leader(topo: &Topology, trace: &Trace) -> CheckResult {
    let id = |name: &str| cairn::server::raft_id(&crate::engine::full::server_node_id(name));
    // Each (datacenter, term)'s leaders, in the order they first led. Two
    // that first say so at the same instant are in no order the trace can
    // tell (each server's view is recorded as its own task notices it), so
    // they are taken in the one order openraft allows, by ID.
    type FirstLed<'t> = Vec<(Duration, Option<u64>, &'t str)>;
    let mut first: BTreeMap<(&str, u64), FirstLed> = BTreeMap::new();
    for v in raft_views(trace) {
        if v.leader == Some(v.node) {
            let seen = first.entry((dc_of(topo, v.node), v.term)).or_default();
            if !seen.iter().any(|x| x.2 == v.node) {
                seen.push((v.at, id(v.node), v.node));
            }
        }
    }
    let leaders: BTreeMap<(&str, u64), Vec<&str>> = first
        .into_iter()
        .map(|(k, mut v)| {
            v.sort();
            (k, v.into_iter().map(|x| x.2).collect())
        })
        .collect();
    let bad: Vec<String> = leaders
        .iter()
        .filter(|(_, l)| l.windows(2).any(|w| id(w[0]) >= id(w[1])))
        .map(|((dc, term), l)| format!("{dc} term {term}: {}", l.join(" then ")))
        .collect();
    let shared = leaders.values().filter(|l| l.len() > 1).count();
    CheckResult {
        check: "single_leader".into(),
        passed: bad.is_empty() && !leaders.is_empty(),
        detail: if leaders.is_empty() {
            "no server ever led".into()
        } else if bad.is_empty() {
            format!(
                "{} terms had a leader{}",
                leaders.len(),
                if shared == 0 {
                    ", one each".to_string()
                } else {
                    format!(
                        "; in {shared} of them a candidate of higher ID took over, as openraft's leader IDs allow"
                    )
                }
            )
        } else {
            format!(
                "leaders out of leader-ID order (a later leader of a term must have a higher ID): {}",
                bad.join("; ")
            )
        },
    }
}

/// `terms_durable`: no server's term ever goes down, restarts included.
/// Raft acts on a term (votes in it, leads in it, takes entries of it) only
/// once the term and its vote are on disk, so a server that comes back at a
/// lower term than it had reached has lost a vote it cast, and may cast a
/// second one in the same term: two leaders of one term, without the
/// election that shows it ever having to happen in the run.
///
/// A term a server shows at the instant it exits on a storage error is not
/// judged: openraft reports the term it was saving when the save failed,
/// and stops there, before acting on it.
pub fn terms_durable(trace: &Trace) -> CheckResult {
    let exits: BTreeSet<(&str, Duration)> = (trace.events.iter())
        .filter(|e| e.event == "exit")
        .filter_map(|e| Some((e.detail.as_deref()?.split_once(':')?.0, e.at())))
        .collect();
    let mut highest: BTreeMap<&str, (u64, Duration)> = BTreeMap::new();
    let mut bad = Vec::new();
    for v in raft_views(trace) {
        if exits.contains(&(v.node, v.at)) {
            continue;
        }
        match highest.get(v.node) {
            Some(&(term, at)) if v.term < term => bad.push(format!(
                "{} at term {} at {}, after term {term} at {}",
                v.node,
                v.term,
                secs(v.at),
                secs(at)
            )),
            Some(&(term, _)) if v.term == term => {}
            _ => {
                highest.insert(v.node, (v.term, v.at));
            }
        }
    }
    // A restart's detail names every node it started, comma-separated.
    let restarts: usize = (trace.events.iter())
        .filter(|e| e.event == "restart")
        .filter_map(|e| e.detail.as_deref())
        .map(|names| names.split(',').filter(|n| highest.contains_key(n)).count())
        .sum();
    CheckResult {
        check: "terms_durable".into(),
        passed: bad.is_empty() && !highest.is_empty(),
        detail: if highest.is_empty() {
            "no server traced a term".into()
        } else if bad.is_empty() {
            format!(
                "{} servers' terms never went down, over {restarts} restarts",
                highest.len()
            )
        } else {
            format!(
                "a term went down, so a vote cast in it was lost: {}",
                bad.join("; ")
            )
        },
    }
}

/// `leader_within`: a leader a majority follows within `within` of the
/// start, and a new one within `within` of every fault that took it away.
pub fn leader_within(
    topo: &Topology,
    applied: &[TimedAction],
    out: &RunOutput,
    within: Duration,
) -> CheckResult {
    let check = format!("leader_within {}", secs(within));
    let dcs = server_dcs(topo);
    if dcs.is_empty() {
        return CheckResult {
            check,
            passed: false,
            detail: "the scenario has no servers".into(),
        };
    }
    let views = raft_views(&out.trace);
    let end = out.virtual_time;
    let mut passed = true;
    let mut lines = Vec::new();
    for (dc, servers) in dcs {
        let r = elections(topo, dc, servers, applied, &views, end);
        let first_ok = match r.first {
            Some(t) => t <= within,
            None => end <= within,
        };
        let late: Vec<Duration> = r.recoveries.iter().flatten().copied().collect();
        let open = r
            .recoveries
            .iter()
            .zip(&r.losses)
            .filter(|(rec, at)| rec.is_none() && end.saturating_sub(**at) > within)
            .count();
        passed &= first_ok && open == 0 && late.iter().all(|d| *d <= within);
        let mut line = format!(
            "{dc}: first leader {}",
            r.first
                .map_or("never".into(), |t| format!("at {}", secs(t)))
        );
        if !r.losses.is_empty() {
            let took: Vec<String> = r
                .recoveries
                .iter()
                .map(|d| d.map_or("none".into(), secs))
                .collect();
            line += &format!(
                "; {} leader losses, new leader after {}",
                r.losses.len(),
                took.join(", ")
            );
        }
        lines.push(line);
    }
    CheckResult {
        check,
        passed,
        detail: lines.join("; "),
    }
}

/// A datacenter's elections: when the first leader was followed, when
/// faults took a leader away, and how long each took to replace.
struct Elections {
    first: Option<Duration>,
    losses: Vec<Duration>,
    recoveries: Vec<Option<Duration>>,
}

fn elections(
    topo: &Topology,
    dc: &str,
    servers: usize,
    applied: &[TimedAction],
    views: &[RaftView<'_>],
    end: Duration,
) -> Elections {
    let majority = servers / 2 + 1;
    let is_server = |n: &str| {
        topo.index(n)
            .is_some_and(|i| topo.nodes[i].role == Role::Server && dc_of(topo, n) == dc)
    };
    let dc_servers: Vec<&str> = topo
        .nodes
        .iter()
        .filter(|n| is_server(&n.name))
        .map(|n| n.name.as_str())
        .collect();
    let mut state: Views = BTreeMap::new();
    let agreed = |state: &Views| agreed(state, majority);
    let mut r = Elections {
        first: None,
        losses: Vec::new(),
        recoveries: Vec::new(),
    };
    // Losses waiting for a leader of a later term: (index, lost term,
    // whether the lost leader stopped). cairn's servers start as
    // followers (src/consensus/records.rs), but a Raft that resumed
    // leading its old term after a restart would have recovered too; a
    // leader only cut off or paused still holds its old view, so only a
    // later term counts then.
    let mut waiting: Vec<(usize, u64, bool)> = Vec::new();
    let (mut a, mut v) = (0, 0);
    loop {
        // Faults first at equal times: what a server saw at the instant of
        // a crash is after it.
        let take_action = match (applied.get(a), views.get(v)) {
            (Some(x), Some(y)) => x.at <= y.at,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (None, None) => break,
        };
        if take_action {
            let act = &applied[a];
            a += 1;
            let Some((term, leader)) = agreed(&state) else {
                forget_stopped(&mut state, &act.action);
                continue;
            };
            if leader_lost(&act.action, &leader, &dc_servers, majority) {
                r.losses.push(act.at);
                r.recoveries.push(None);
                let stopped = matches!(&act.action, Action::Crash(s) | Action::Leave(s) if has_name(s, &leader));
                waiting.push((r.losses.len() - 1, term, stopped));
            }
            forget_stopped(&mut state, &act.action);
        } else {
            let view = &views[v];
            v += 1;
            if view.at > end || !is_server(view.node) {
                continue;
            }
            state.insert(view.node, (view.term, view.leader));
            if let Some((term, _)) = agreed(&state) {
                r.first.get_or_insert(view.at);
                waiting.retain(|&(i, lost, stopped)| {
                    if term > lost || (stopped && term == lost) {
                        r.recoveries[i] = Some(view.at - r.losses[i]);
                        false
                    } else {
                        true
                    }
                });
            }
        }
    }
    r
}

/// Each server's latest view: its term and whom it follows.
type Views<'t> = BTreeMap<&'t str, (u64, Option<&'t str>)>;

/// The term and leader a majority of the servers follow, if they do.
fn agreed(state: &Views, majority: usize) -> Option<(u64, String)> {
    state
        .iter()
        .filter(|(n, (_, l))| *l == Some(**n))
        .find(|(_, view)| state.values().filter(|v| *v == *view).count() >= majority)
        .map(|(n, (t, _))| (*t, n.to_string()))
}

/// Servers that stopped no longer hold a view.
fn forget_stopped(state: &mut Views, action: &Action) {
    if let Action::Crash(set) | Action::Leave(set) | Action::Restart(set) | Action::Join(set) =
        action
    {
        for n in set {
            state.remove(n.as_str());
        }
    }
}

/// Whether `action` takes `leader` away from a majority of its servers.
fn leader_lost(action: &Action, leader: &str, servers: &[&str], majority: usize) -> bool {
    let has = |set: &[String]| has_name(set, leader);
    let reachable = |cut: &[String]| servers.iter().filter(|s| !has_name(cut, s)).count();
    match action {
        Action::Crash(set) | Action::Leave(set) | Action::Pause(set, _) => has(set),
        Action::Isolate(set) => {
            has(set) && servers.iter().filter(|s| has_name(set, s)).count() < majority
        }
        Action::Partition(x, y) if has(x) => reachable(y) < majority,
        Action::Partition(x, y) if has(y) => reachable(x) < majority,
        _ => false,
    }
}

fn has_name(set: &[String], name: &str) -> bool {
    set.iter().any(|x| x == name)
}

/// `linearizable`: the `kv_load` history has a linearizable order.
pub fn linearizable(history: &[Op]) -> CheckResult {
    let check = "linearizable".to_string();
    if history.is_empty() {
        return CheckResult {
            check,
            passed: false,
            detail: "no KV operations were recorded: add a kv_load event".into(),
        };
    }
    let reads = history.iter().filter(|o| o.input == Input::Get).count();
    let unknown = history.iter().filter(|o| o.ret.is_none()).count();
    let summary = format!(
        "{} operations ({reads} reads, {} writes, {unknown} of unknown outcome) on {} keys",
        history.len(),
        history.len() - reads,
        history
            .iter()
            .map(|o| &o.key)
            .collect::<BTreeSet<_>>()
            .len()
    );
    match linearizability::check(history) {
        Ok(()) => CheckResult {
            check,
            passed: true,
            detail: format!("{summary}: linearizable"),
        },
        Err(failure) => CheckResult {
            check,
            passed: false,
            detail: format!("{summary}: {failure}"),
        },
    }
}

/// `strict_serializable` over a run's transactions.
pub fn strict_serializable(history: &[Txn]) -> CheckResult {
    let check = "strict_serializable".to_string();
    let ok = history.iter().filter(|t| t.status == Status::Ok).count();
    let failed = history
        .iter()
        .filter(|t| t.status == Status::Failed)
        .count();
    if ok == 0 {
        return CheckResult {
            check,
            passed: false,
            detail: "no transaction committed: give a kv_load event txns = 1".into(),
        };
    }
    let summary = format!(
        "{} transactions ({ok} committed, {failed} failed, {} of unknown outcome)",
        history.len(),
        history.len() - ok - failed
    );
    match serializability::check(history) {
        Ok(()) => CheckResult {
            check,
            passed: true,
            detail: format!("{summary}: strictly serializable"),
        },
        Err(a) => CheckResult {
            check,
            passed: false,
            detail: format!("{summary}: {a}"),
        },
    }
}

/// Splits a history key (`<dc>/<key>`) into its datacenter and KV key.
fn split_key(k: &str) -> (&str, &str) {
    k.split_once('/').unwrap_or(("", k))
}

/// `no_lost_writes`: every key ends with the value of a write that no
/// acknowledged write follows in real time (or of the last acknowledged
/// one), on the most advanced server of its datacenter.
pub fn no_lost_writes(history: &[Op], replicas: &[Replica]) -> CheckResult {
    let check = "no_lost_writes".to_string();
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history.iter().filter(|o| o.input != Input::Get) {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut lost = Vec::new();
    let mut acked_total = 0;
    for (key, ops) in &by_key {
        let took_effect = |o: &Op| !matches!(o.ret, Some((_, Output::Swapped(false))));
        let acked: Vec<&Op> = ops
            .iter()
            .copied()
            .filter(|o| o.ret.is_some() && took_effect(o))
            .collect();
        acked_total += acked.len();
        if acked.is_empty() {
            continue;
        }
        let (dc, kv_key) = split_key(key);
        let Some(replica) = replicas
            .iter()
            .filter(|r| r.dc == dc)
            .max_by_key(|r| r.last_applied)
        else {
            lost.push(format!("{key}: no server of {dc} runs at the end to ask"));
            continue;
        };
        let fin = replica.kv.get(kv_key).map(|(v, _)| v);
        let wrote = |o: &Op| match (&o.input, fin) {
            (Input::Put(v) | Input::Cas { new: v, .. }, Some(f)) => v == f,
            (Input::Delete, None) => true,
            _ => false,
        };
        // The final value must come from a write that took effect (or may
        // have) and that no acknowledged write started after.
        let ok = ops.iter().any(|w| {
            took_effect(w)
                && wrote(w)
                && acked.iter().all(|a| {
                    std::ptr::eq(*a, *w) || w.ret.as_ref().is_none_or(|(t, _)| *t >= a.call)
                })
        });
        if !ok {
            let shown = fin.map_or("absent".into(), |v| String::from_utf8_lossy(v).into_owned());
            lost.push(format!(
                "{key}: ends {shown} on {}, which undoes an acknowledged write",
                replica.node
            ));
        }
    }
    CheckResult {
        check,
        passed: lost.is_empty() && acked_total > 0,
        detail: if acked_total == 0 {
            "no write was acknowledged: add a kv_load event".into()
        } else if lost.is_empty() {
            format!(
                "{acked_total} acknowledged writes on {} keys: none lost",
                by_key.len()
            )
        } else {
            lost.join("; ")
        },
    }
}

/// `replicas_converge`: the running servers of each datacenter hold the
/// same KV data at the end.
pub fn replicas_converge(topo: &Topology, replicas: &[Replica]) -> CheckResult {
    let mut passed = true;
    let mut lines = Vec::new();
    for (dc, _) in server_dcs(topo) {
        let here: Vec<&Replica> = replicas.iter().filter(|r| r.dc == dc).collect();
        let Some(first) = here.first() else {
            passed = false;
            lines.push(format!("{dc}: no server runs at the end"));
            continue;
        };
        let differ: Vec<&str> = here
            .iter()
            .filter(|r| r.kv != first.kv)
            .map(|r| r.node.as_str())
            .collect();
        let applied: Vec<String> = here
            .iter()
            .map(|r| format!("{} {}", r.node, r.last_applied))
            .collect();
        if differ.is_empty() {
            lines.push(format!(
                "{dc}: {} servers hold the same {} keys (applied: {})",
                here.len(),
                first.kv.len(),
                applied.join(", ")
            ));
        } else {
            passed = false;
            lines.push(format!(
                "{dc}: {} differ from {} (applied: {})",
                differ.join(", "),
                first.node,
                applied.join(", ")
            ));
        }
    }
    if lines.is_empty() {
        passed = false;
        lines.push("the scenario has no servers".into());
    }
    CheckResult {
        check: "replicas_converge".into(),
        passed,
        detail: lines.join("; "),
    }
}

/// Whether an action is one of the timeline's faults (or their ends), not
/// an operation a client asks of the cluster.
fn is_fault(action: &Action) -> bool {
    !matches!(
        action,
        Action::KvLoad(..)
            | Action::RegisterService(..)
            | Action::Intention(..)
            | Action::CaRotate(_)
            | Action::AclToken(..)
    )
}

/// `recovers_within`: the liveness check of a chaos run. Once the last
/// fault has ended (the quiet phase), within `within` every datacenter
/// with servers has a leader that a majority of them follow, and, when KV
/// clients are running, one of their writes called in the quiet phase is
/// acknowledged.
pub fn recovers_within(
    topo: &Topology,
    applied: &[TimedAction],
    out: &RunOutput,
    within: Duration,
) -> CheckResult {
    let check = format!("recovers_within {}", secs(within));
    let quiet = applied
        .iter()
        .filter(|a| is_fault(&a.action))
        .map(|a| a.at)
        .max()
        .unwrap_or_default();
    let deadline = quiet + within;
    if deadline > out.virtual_time {
        return CheckResult {
            check,
            passed: false,
            detail: format!(
                "the last fault ends at {}, and the run ends before {} more: make the run longer",
                secs(quiet),
                secs(within)
            ),
        };
    }
    let views = raft_views(&out.trace);
    let mut passed = true;
    let mut lines = Vec::new();
    for (dc, servers) in server_dcs(topo) {
        let majority = servers / 2 + 1;
        let mine = |n: &str| {
            topo.index(n)
                .is_some_and(|i| topo.nodes[i].role == Role::Server && dc_of(topo, n) == dc)
        };
        let mut state: Views = BTreeMap::new();
        let mut recovered = None;
        let (mut a, mut v) = (0, 0);
        // Replay faults and views up to the deadline; faults first at
        // equal times, as in `elections`.
        loop {
            let next_action = applied.get(a).filter(|x| x.at <= deadline);
            let next_view = views.get(v).filter(|y| y.at <= deadline);
            let now = match (next_action, next_view) {
                (Some(x), Some(y)) if x.at <= y.at => {
                    a += 1;
                    forget_stopped(&mut state, &x.action);
                    x.at
                }
                (Some(x), None) => {
                    a += 1;
                    forget_stopped(&mut state, &x.action);
                    x.at
                }
                (_, Some(y)) => {
                    v += 1;
                    if mine(y.node) {
                        state.insert(y.node, (y.term, y.leader));
                    }
                    y.at
                }
                (None, None) => break,
            };
            if now >= quiet && recovered.is_none() {
                if let Some((term, leader)) = agreed(&state, majority) {
                    recovered = Some((now, term, leader));
                }
            }
        }
        match recovered {
            Some((at, term, leader)) => lines.push(format!(
                "{dc}: {leader} leads term {term} at {} ({} after the last fault)",
                secs(at),
                secs(at.saturating_sub(quiet))
            )),
            None => {
                passed = false;
                lines.push(format!(
                    "{dc}: no leader that a majority follows by {}",
                    secs(deadline)
                ));
            }
        }
    }
    let (from, until) = (quiet.as_micros() as u64, deadline.as_micros() as u64);
    let called = out.history.iter().filter(|o| o.call >= from).count();
    if called > 0 {
        let done = out
            .history
            .iter()
            .filter(|o| o.call >= from && !matches!(o.input, Input::Get))
            .filter_map(|o| o.ret.as_ref().map(|r| r.0))
            .filter(|&ret| ret <= until)
            .min();
        match done {
            Some(us) => lines.push(format!(
                "a write acknowledged at {}",
                secs(Duration::from_micros(us))
            )),
            None => {
                passed = false;
                lines.push(format!(
                    "no write acknowledged between {} and {} ({called} operations called)",
                    secs(quiet),
                    secs(deadline)
                ));
            }
        }
    }
    CheckResult {
        check,
        passed,
        detail: format!("quiet from {}; {}", secs(quiet), lines.join("; ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(key: &str, call: u64, ret: Option<(u64, Output)>, input: Input) -> Op {
        Op {
            client: 1,
            key: key.into(),
            call,
            ret,
            input,
        }
    }

    fn replica(kv: &[(&str, &str)]) -> Replica {
        Replica {
            node: "dc1-server-0".into(),
            dc: "dc1".into(),
            last_applied: 9,
            kv: kv
                .iter()
                .map(|(k, v)| (k.to_string(), (v.as_bytes().to_vec(), 1)))
                .collect(),
        }
    }

    fn put(call: u64, ret: Option<u64>, v: &str) -> Op {
        op(
            "dc1/k",
            call,
            ret.map(|t| (t, Output::Done)),
            Input::Put(v.as_bytes().to_vec()),
        )
    }

    #[test]
    fn a_term_may_pass_to_a_higher_leader_id_only() {
        use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope};
        let topo = Topology::new(
            vec![Datacenter {
                name: "dc1".into(),
                clients: 0,
                servers: 3,
                location: Location::Unplaced,
            }],
            PoolScope::Datacenter,
            LatencyModel::default(),
        );
        let mut servers: Vec<&str> = vec!["dc1-server-0", "dc1-server-1", "dc1-server-2"];
        let id = |n: &str| cairn::server::raft_id(&crate::engine::full::server_node_id(n));
        servers.sort_by_key(|n| id(n));
        let lead = |t: u64, node: &str, term: u64| crate::output::trace::TraceEvent {
            t_us: t,
            node: node.into(),
            event: RAFT_EVENT.into(),
            member: None,
            incarnation: None,
            detail: Some(format!("term={term} leader={node}")),
        };
        let trace = |events| Trace { events };
        let (low, high) = (servers[0], servers[2]);
        let up = trace(vec![lead(1, low, 1), lead(2, high, 1), lead(3, low, 2)]);
        let r = single_leader(&topo, &up);
        assert!(
            r.passed && r.detail.contains("higher ID took over"),
            "{}",
            r.detail
        );
        let down = trace(vec![lead(1, high, 1), lead(2, low, 1)]);
        let r = single_leader(&topo, &down);
        assert!(
            !r.passed && r.detail.contains("out of leader-ID order"),
            "{}",
            r.detail
        );
        // Recorded at one instant, in either order: the order openraft
        // allows (chaos-raft seed 345).
        let same = trace(vec![lead(5, high, 1), lead(5, low, 1)]);
        assert!(single_leader(&topo, &same).passed);
    }

    #[test]
    fn a_term_never_goes_down() {
        let at = |t: u64, node: &str, term: u64| crate::output::trace::TraceEvent {
            t_us: t,
            node: node.into(),
            event: RAFT_EVENT.into(),
            member: None,
            incarnation: None,
            detail: Some(format!("term={term} leader=none")),
        };
        let restart = |t: u64, node: &str| crate::output::trace::TraceEvent {
            t_us: t,
            node: "sim".into(),
            event: "restart".into(),
            member: None,
            incarnation: None,
            detail: Some(node.into()),
        };
        let kept = Trace {
            events: vec![at(1, "a", 1), at(2, "a", 3), restart(3, "a"), at(3, "a", 3)],
        };
        let r = terms_durable(&kept);
        assert!(r.passed && r.detail.contains("1 restarts"), "{}", r.detail);
        // Shown as it stopped on a failed save, and never acted on.
        let exit = crate::output::trace::TraceEvent {
            detail: Some("a: the server stopped: no space left".into()),
            event: "exit".into(),
            ..restart(2, "a")
        };
        let failed = Trace {
            events: vec![
                at(1, "a", 1),
                at(2, "a", 2),
                exit,
                restart(3, "a"),
                at(3, "a", 1),
            ],
        };
        assert!(terms_durable(&failed).passed);
        let lost = Trace {
            events: vec![at(1, "a", 3), at(2, "b", 1), restart(3, "a"), at(3, "a", 2)],
        };
        let r = terms_durable(&lost);
        assert!(
            !r.passed && r.detail.contains("a at term 2 at 0.000s, after term 3"),
            "{}",
            r.detail
        );
        assert!(!terms_durable(&Trace { events: vec![] }).passed);
    }

    #[test]
    fn the_last_acknowledged_write_must_survive() {
        let h = [put(1, Some(2), "a"), put(3, Some(4), "b")];
        assert!(no_lost_writes(&h, &[replica(&[("k", "b")])]).passed);
        let r = no_lost_writes(&h, &[replica(&[("k", "a")])]);
        assert!(!r.passed && r.detail.contains("undoes"), "{}", r.detail);
        assert!(!no_lost_writes(&h, &[replica(&[])]).passed);
        assert!(!no_lost_writes(&h, &[replica(&[("k", "zz")])]).passed);
    }

    #[test]
    fn concurrent_and_unknown_writes_may_win() {
        // "a" overlaps "b", and "c" never returned: any of the three may
        // be last, but not a value from before both.
        let h = [
            put(0, Some(1), "old"),
            put(2, Some(6), "a"),
            put(3, Some(5), "b"),
            put(4, None, "c"),
        ];
        for v in ["a", "b", "c"] {
            assert!(no_lost_writes(&h, &[replica(&[("k", v)])]).passed, "{v}");
        }
        assert!(!no_lost_writes(&h, &[replica(&[("k", "old")])]).passed);
    }

    #[test]
    fn a_failed_check_and_set_wrote_nothing() {
        let cas = op(
            "dc1/k",
            5,
            Some((6, Output::Swapped(false))),
            Input::Cas {
                expect: None,
                new: b"x".to_vec(),
            },
        );
        let h = [put(1, Some(2), "a"), cas];
        assert!(!no_lost_writes(&h, &[replica(&[("k", "x")])]).passed);
        assert!(no_lost_writes(&h, &[replica(&[("k", "a")])]).passed);
    }

    #[test]
    fn a_leader_crash_is_a_loss_and_a_minority_partition_is_not() {
        let servers = ["s0", "s1", "s2"];
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert!(leader_lost(
            &Action::Crash(names(&["s0"])),
            "s0",
            &servers,
            2
        ));
        assert!(!leader_lost(
            &Action::Crash(names(&["s1"])),
            "s0",
            &servers,
            2
        ));
        assert!(leader_lost(
            &Action::Isolate(names(&["s0"])),
            "s0",
            &servers,
            2
        ));
        assert!(!leader_lost(
            &Action::Isolate(names(&["s0", "s1"])),
            "s0",
            &servers,
            2
        ));
        let p = Action::Partition(names(&["s2"]), names(&["s0", "s1"]));
        assert!(!leader_lost(&p, "s0", &servers, 2));
    }
}

//! Federated datacenters in the simulator: prepared queries that fail over
//! between datacenters (the `query_failover` check), and how well the
//! servers' WAN coordinates predict the RTT between datacenters (the
//! per-datacenter-pair percentiles in a run's output).
//!
//! When a scenario has servers in two or more datacenters, every server
//! joins the WAN pool (see [`Topology::wan_join_targets`]), and the first
//! server of each datacenter keeps a prepared query for every service the
//! scenario registers (`Failover.NearestN` over every other datacenter,
//! `OnlyPassing`), runs it through its own HTTP API every
//! [`QUERY_POLL`], and records in the trace each change in where the
//! answer came from.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cairn::coordinate::percentile;
use cairn::env::Task;

use crate::engine::full::clock::SimClock;
use cairn::http_client as client;

use crate::action::{Action, TimedAction};
use crate::net::topology::{Role, Topology};
use crate::output::trace::{record_at, Recorder, Trace};
use crate::tomography::PairError;
use crate::verdict::{cut_links, CheckResult};

/// Trace event: a prepared query run by a node answered from a datacenter
/// (member: the service; detail: `dc=<datacenter> nodes=<a,b,...>`).
pub const QUERY: &str = "query_service";

/// How often the querying server runs each prepared query.
pub const QUERY_POLL: Duration = Duration::from_millis(500);

/// Pause before trying again to create a query the servers refused (no
/// leader yet).
const RETRY: Duration = Duration::from_secs(1);

/// The node of each datacenter that runs the prepared queries: its first
/// server.
pub fn querier(topo: &Topology, dc: usize) -> Option<&str> {
    topo.nodes
        .iter()
        .find(|n| n.dc == dc && n.role == Role::Server)
        .map(|n| n.name.as_str())
}

/// Creates a prepared query named `service` through `http` (this node's
/// own agent), failing over to every other datacenter nearest first, then
/// runs it every [`QUERY_POLL`] and records each change in the answer.
pub fn query<E: SimClock>(
    env: E,
    node: String,
    http: SocketAddr,
    service: String,
    recorder: Recorder,
) -> Task {
    env.clone().spawn(async move {
        let body = serde_json::json!({
            "Name": service,
            "Service": {
                "Service": service,
                "OnlyPassing": true,
                "Failover": { "NearestN": 64 },
            },
        })
        .to_string();
        // Failing over past a datacenter that cannot be reached waits for
        // its RPC deadline (10 s) before the next is asked.
        let limit = Duration::from_secs(60);
        while client::exchange(
            &env,
            http,
            "POST",
            "/v1/query",
            Bytes::from(body.clone()),
            limit,
        )
        .await
        .is_err()
        {
            env.sleep(RETRY).await;
        }
        let path = format!("/v1/query/{service}/execute");
        let mut last: Option<String> = None;
        loop {
            env.sleep(QUERY_POLL).await;
            let Ok(answer) = client::exchange(&env, http, "GET", &path, Bytes::new(), limit).await
            else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&answer.body) else {
                continue;
            };
            let mut nodes: Vec<&str> = v["Nodes"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n["Node"]["Node"].as_str())
                .collect();
            nodes.sort_unstable();
            let detail = format!(
                "dc={} nodes={}",
                v["Datacenter"].as_str().unwrap_or(""),
                nodes.join(",")
            );
            if last.as_ref() != Some(&detail) {
                record_at(
                    &recorder,
                    env.true_now(),
                    &node,
                    QUERY,
                    &service,
                    Some(detail.clone()),
                );
                last = Some(detail);
            }
        }
    })
}

/// Which nodes are down, and which links cut, at a moment of a timeline.
#[derive(Default)]
struct State {
    down: BTreeSet<String>,
    cut: BTreeSet<(String, String)>,
}

impl State {
    /// The state just after every action at or before `t`.
    fn at(names: &[String], timeline: &[TimedAction], t: Duration) -> State {
        let mut s = State::default();
        for a in timeline.iter().filter(|a| a.at <= t) {
            match &a.action {
                Action::Crash(n) | Action::Leave(n) => s.down.extend(n.iter().cloned()),
                Action::Restart(n) | Action::Join(n) => n.iter().for_each(|x| {
                    s.down.remove(x);
                }),
                other => cut_links(&mut s.cut, names, other),
            }
        }
        s
    }

    /// Whether `a` and `b` are both up and no cut link lies between them
    /// (either way: an isolated node's cut is recorded from its side).
    fn reach(&self, a: &str, b: &str) -> bool {
        let cut = |x: &str, y: &str| self.cut.contains(&(x.to_string(), y.to_string()));
        !self.down.contains(a) && !self.down.contains(b) && !cut(a, b) && !cut(b, a)
    }
}

/// `query_failover`: in each datacenter whose every instance of `service`
/// goes down (crashed or left), the prepared query its querying server
/// runs answers, within `within`, from the datacenter nearest to it by the
/// measured (model) latency among those that still have a running
/// instance and that its servers can reach; the first answer from another
/// datacenter after the loss must be that one.
pub fn failover(
    topo: &Topology,
    timeline: &[TimedAction],
    trace: &Trace,
    end: Duration,
    service: &str,
    within: Duration,
) -> CheckResult {
    let check = format!("query_failover {service} {:.3}s", within.as_secs_f64());
    let names = topo.names();
    // Every node that registered the service, by datacenter, and when the
    // last registration came.
    let mut by_dc: BTreeMap<usize, BTreeSet<&str>> = BTreeMap::new();
    let mut registered = Duration::ZERO;
    for a in timeline {
        if let Action::RegisterService(nodes, r) = &a.action {
            if r.name == service {
                registered = registered.max(a.at);
                for n in nodes {
                    if let Some(node) = topo.nodes.iter().find(|x| &x.name == n) {
                        by_dc.entry(node.dc).or_default().insert(n.as_str());
                    }
                }
            }
        }
    }
    // Each querier's answers: (time, datacenter).
    let mut answers: BTreeMap<&str, Vec<(Duration, &str)>> = BTreeMap::new();
    for e in &trace.events {
        if e.event == QUERY && e.member.as_deref() == Some(service) {
            let dc = e
                .detail
                .as_deref()
                .and_then(|d| d.strip_prefix("dc="))
                .and_then(|d| d.split(' ').next())
                .unwrap_or("");
            answers
                .entry(e.node.as_str())
                .or_default()
                .push((e.at(), dc));
        }
    }
    let servers_of = |dc: usize| -> Vec<&str> {
        topo.nodes
            .iter()
            .filter(|n| n.dc == dc && n.role == Role::Server)
            .map(|n| n.name.as_str())
            .collect()
    };
    let mut lines = Vec::new();
    let mut passed = true;
    for (&dc, instances) in &by_dc {
        let dc_name = &topo.datacenters[dc].name;
        // The first moment every instance here is down.
        let lost = timeline
            .iter()
            .map(|a| a.at)
            .filter(|&t| t >= registered)
            .find(|&t| {
                let s = State::at(&names, timeline, t);
                instances.iter().all(|n| s.down.contains(*n))
            });
        let Some(lost) = lost else { continue };
        let Some(q) = querier(topo, dc) else { continue };
        let s = State::at(&names, timeline, lost);
        // Other datacenters with a running instance and a server this
        // datacenter's servers reach, nearest first by the model.
        let mut candidates: Vec<(Duration, usize)> = by_dc
            .iter()
            .filter(|(&other, list)| {
                other != dc
                    && list.iter().any(|n| !s.down.contains(*n))
                    && servers_of(dc)
                        .iter()
                        .any(|a| servers_of(other).iter().any(|b| s.reach(a, b)))
            })
            .filter_map(|(&other, _)| topo.inter_dc(dc, other).ok().map(|d| (d, other)))
            .collect();
        candidates.sort();
        let Some(&(one_way, want)) = candidates.first() else {
            lines.push(format!(
                "{dc_name} lost {service} at {:.3}s with no other datacenter to fail over to",
                lost.as_secs_f64()
            ));
            continue;
        };
        let want_name = topo.datacenters[want].name.as_str();
        let first = answers
            .get(q)
            .into_iter()
            .flatten()
            .find(|(t, from)| *t >= lost && *from != dc_name.as_str());
        let nearest = format!(
            "{want_name}, nearest reachable at {:.0} ms RTT",
            one_way.as_secs_f64() * 2000.0
        );
        match first {
            Some((t, from)) if *from == want_name && *t <= lost + within => lines.push(format!(
                "{dc_name} lost {service} at {:.3}s; {q}'s query answered from {nearest}, after {:.3}s",
                lost.as_secs_f64(),
                (*t - lost).as_secs_f64()
            )),
            Some((t, from)) => {
                passed = false;
                lines.push(format!(
                    "{dc_name} lost {service} at {:.3}s; {q}'s query answered from {from} after {:.3}s, but wanted {nearest} within {:.3}s",
                    lost.as_secs_f64(),
                    (*t - lost).as_secs_f64(),
                    within.as_secs_f64()
                ));
            }
            None if end < lost + within => {}
            None => {
                passed = false;
                lines.push(format!(
                    "{dc_name} lost {service} at {:.3}s; {q}'s query never answered from another datacenter (wanted {nearest})",
                    lost.as_secs_f64()
                ));
            }
        }
    }
    if lines.is_empty() {
        return CheckResult {
            check,
            passed: false,
            detail: format!(
                "no datacenter lost every instance of {service:?}: crash the nodes that registered it in one"
            ),
        };
    }
    CheckResult {
        check,
        passed,
        detail: lines.join("; "),
    }
}

/// Estimated against true RTT between the servers of two datacenters (a
/// row of `wan_rtt.csv`, and of `summary.json`'s `wan_rtt`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DcPairRtt {
    /// One datacenter (the first in scenario order).
    pub a: String,
    /// The other.
    pub b: String,
    /// Server pairs scored.
    pub pairs: usize,
    /// p50, p90 and p99 of the RTT the WAN coordinates estimate, ms.
    pub est_ms: [f64; 3],
    /// p50, p90 and p99 of the model's RTT over the same pairs, ms.
    pub true_ms: [f64; 3],
}

impl DcPairRtt {
    /// |estimated p99 - true p99| / true p99.
    pub fn p99_rel_err(&self) -> f64 {
        (self.est_ms[2] - self.true_ms[2]).abs() / self.true_ms[2]
    }
}

/// Percentiles of the estimated and true RTT per datacenter pair, from
/// scored WAN pairs (as `cairn rtt -datacenters` answers from the live
/// coordinates), in scenario order.
pub fn dc_pair_percentiles(topo: &Topology, pairs: &[PairError]) -> Vec<DcPairRtt> {
    let mut by: BTreeMap<(usize, usize), (Vec<f64>, Vec<f64>)> = BTreeMap::new();
    for p in pairs {
        let (x, y) = (topo.nodes[p.a].dc, topo.nodes[p.b].dc);
        if x == y {
            continue;
        }
        let e = by.entry((x.min(y), x.max(y))).or_default();
        e.0.push(p.est_ms);
        e.1.push(p.true_ms);
    }
    by.into_iter()
        .map(|((x, y), (mut est, mut truth))| {
            est.sort_by(f64::total_cmp);
            truth.sort_by(f64::total_cmp);
            let q = |v: &[f64]| [0.5, 0.9, 0.99].map(|q| percentile(v, q));
            DcPairRtt {
                a: topo.datacenters[x].name.clone(),
                b: topo.datacenters[y].name.clone(),
                pairs: est.len(),
                est_ms: q(&est),
                true_ms: q(&truth),
            }
        })
        .collect()
}

/// `wan_rtt.csv`: one row per datacenter pair.
pub fn to_csv(rows: &[DcPairRtt]) -> String {
    let mut csv = String::from(
        "dc_a,dc_b,pairs,est_p50_ms,true_p50_ms,est_p90_ms,true_p90_ms,est_p99_ms,true_p99_ms,p99_rel_err\n",
    );
    for r in rows {
        csv += &format!(
            "{},{},{},{:.3},{:.3},{:.3},{:.3},{:.3},{:.3},{:.4}\n",
            r.a,
            r.b,
            r.pairs,
            r.est_ms[0],
            r.true_ms[0],
            r.est_ms[1],
            r.true_ms[1],
            r.est_ms[2],
            r.true_ms[2],
            r.p99_rel_err()
        );
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checks::tests::{at, v};
    use crate::engine::full::services::Registration;
    use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope};
    use crate::output::trace::TraceEvent;

    /// Three datacenters on the equator: `near` 10° from `home`, `far` 30°.
    fn topo() -> Topology {
        let dc = |name: &str, lon: f64| Datacenter {
            name: name.into(),
            clients: 1,
            servers: 1,
            location: Location::Geo { lat: 0.0, lon },
        };
        Topology::new(
            vec![dc("home", 0.0), dc("near", 10.0), dc("far", 30.0)],
            PoolScope::Datacenter,
            LatencyModel::default(),
        )
    }

    fn timeline(extra: Vec<TimedAction>) -> Vec<TimedAction> {
        let web = Registration {
            name: "web".into(),
            port: 80,
            tags: Vec::new(),
            connect: false,
            upstream: None,
        };
        let mut t = vec![
            at(
                1,
                Action::RegisterService(v(&["home-0", "near-0", "far-0"]), web),
            ),
            at(10, Action::Crash(v(&["home-0"]))),
        ];
        t.extend(extra);
        t.sort_by_key(|a| a.at);
        t
    }

    fn answers(list: &[(u64, &str)]) -> Trace {
        Trace {
            events: list
                .iter()
                .map(|(s, dc)| TraceEvent {
                    t_us: s * 1_000_000,
                    node: "home-server-0".into(),
                    event: QUERY.into(),
                    member: Some("web".into()),
                    incarnation: None,
                    detail: Some(format!("dc={dc} nodes=x")),
                })
                .collect(),
        }
    }

    fn judge(t: &[TimedAction], trace: &Trace) -> CheckResult {
        failover(
            &topo(),
            t,
            trace,
            Duration::from_secs(60),
            "web",
            Duration::from_secs(10),
        )
    }

    #[test]
    fn the_first_answer_after_the_loss_must_come_from_the_nearest() {
        let t = timeline(Vec::new());
        let ok = judge(&t, &answers(&[(2, "home"), (12, "home"), (15, "near")]));
        assert!(ok.passed, "{}", ok.detail);
        assert!(ok.detail.contains("answered from near"), "{}", ok.detail);
        let wrong = judge(&t, &answers(&[(2, "home"), (15, "far"), (16, "near")]));
        assert!(!wrong.passed, "{}", wrong.detail);
        let late = judge(&t, &answers(&[(2, "home"), (25, "near")]));
        assert!(!late.passed, "{}", late.detail);
        let never = judge(&t, &answers(&[(2, "home")]));
        assert!(
            !never.passed && never.detail.contains("never"),
            "{}",
            never.detail
        );
    }

    #[test]
    fn a_datacenter_cut_off_or_without_instances_is_passed_over() {
        let cut = timeline(vec![at(
            5,
            Action::Partition(v(&["near-server-0", "near-0"]), v(&["home-server-0"])),
        )]);
        let r = judge(&cut, &answers(&[(15, "far")]));
        assert!(r.passed, "{}", r.detail);
        let healed = timeline(vec![
            at(
                5,
                Action::Partition(v(&["near-server-0"]), v(&["home-server-0"])),
            ),
            at(8, Action::Heal),
        ]);
        assert!(!judge(&healed, &answers(&[(15, "far")])).passed);
        // Near lost its own instance first (and is judged on its own).
        let gone = timeline(vec![at(9, Action::Crash(v(&["near-0"])))]);
        let r = judge(&gone, &answers(&[(15, "far")]));
        assert!(
            r.detail
                .contains("home lost web at 10.000s; home-server-0's query answered from far"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn a_run_where_no_datacenter_loses_the_service_is_not_judged() {
        let mut t = timeline(Vec::new());
        t.retain(|a| a.action.name() != "crash");
        let r = judge(&t, &answers(&[]));
        assert!(
            !r.passed && r.detail.contains("crash the nodes"),
            "{}",
            r.detail
        );
    }

    #[test]
    fn percentiles_per_datacenter_pair() {
        let topo = topo();
        let i = |n: &str| topo.index(n).unwrap();
        let pair = |a: &str, b: &str, true_ms: f64, est_ms: f64| PairError {
            a: i(a),
            b: i(b),
            true_ms,
            est_ms,
        };
        let rows = dc_pair_percentiles(
            &topo,
            &[
                pair("home-server-0", "near-server-0", 100.0, 90.0),
                pair("home-server-0", "far-server-0", 300.0, 330.0),
                pair("home-server-0", "home-0", 2.0, 2.0),
            ],
        );
        assert_eq!(rows.len(), 2, "same-datacenter pairs are left out");
        assert_eq!((rows[0].a.as_str(), rows[0].b.as_str()), ("home", "near"));
        assert_eq!(rows[0].est_ms, [90.0; 3]);
        assert!((rows[1].p99_rel_err() - 0.1).abs() < 1e-9);
        assert!(to_csv(&rows)
            .lines()
            .nth(2)
            .unwrap()
            .starts_with("home,far,1,"));
    }
}

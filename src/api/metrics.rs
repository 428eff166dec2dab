//! `GET /v1/agent/metrics`: the agent's gauges, counters and timers under
//! Consul's metric names, in Consul's JSON shape (`Timestamp`, `Gauges`,
//! `Points`, `Counters`, `Samples`), or in Prometheus' text format with
//! `?format=prometheus`.
//!
//! Prometheus names are Consul's made valid and conventional, so that
//! `promtool check metrics` passes: dots and dashes become underscores,
//! camelCase becomes snake_case (`consul.raft.commitTime` is
//! `consul_raft_commit_time`), and counters end in `_total`. Each
//! metric's HELP line starts with its Consul name. Timers are summaries
//! in milliseconds, with the 0.5, 0.9 and 0.99 quantiles of their recent
//! measurements.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use axum::extract::Query as UrlQuery;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::context::Api;
use super::error::{internal, ApiError};
use crate::env::Env;
use crate::telemetry::Aggregate;

/// One metric under its Consul-style dotted name.
struct Metric {
    name: &'static str,
    kind: Kind,
}

/// What a metric is and holds.
enum Kind {
    /// Goes up and down: its current value.
    Gauge(f64),
    /// Only grows: its increments.
    Counter(Aggregate),
    /// Measurements (timers, in ms).
    Sample(Aggregate),
}

/// What the agent can report about itself right now.
async fn collect<E: Env>(s: &Api<E>) -> Result<Vec<Metric>, ApiError> {
    let st = s.gossip.stats().await.map_err(internal)?;
    let gauge = |name, value: f64| Metric {
        name,
        kind: Kind::Gauge(value),
    };
    let total = |name, value: u64| Metric {
        name,
        kind: Kind::Counter(Aggregate::of_total(value as f64)),
    };
    let mut all = vec![
        gauge("consul.serf.lan.members.alive", st.alive as f64),
        gauge("consul.serf.lan.members.failed", st.failed as f64),
        gauge("consul.serf.lan.members.left", st.left as f64),
        gauge("consul.memberlist.health.score", st.health_score as f64),
        gauge("consul.agent.services", s.local.services().len() as f64),
        gauge("consul.agent.checks", s.local.checks().len() as f64),
        total("consul.memberlist.udp.received", st.core.packets_received),
        total("consul.memberlist.udp.sent", st.core.packets_sent),
        total("consul.memberlist.decode_errors", st.core.decode_errors),
        total("consul.memberlist.probes", st.core.probes),
        total("consul.memberlist.probes.failed", st.core.probes_failed),
        total("consul.memberlist.refutations", st.core.refutations),
        total("consul.memberlist.push_pulls", st.core.push_pulls),
        // Traffic no installed gossip key opened, or sent in the clear.
        total("consul.memberlist.undecryptable", st.undecryptable),
    ];
    all.extend(
        crate::telemetry::process::runtime_gauges()
            .into_iter()
            .map(|(name, v)| gauge(name, v)),
    );
    if let Some(server) = s.servers.local() {
        let snap = server.telemetry().snapshot();
        all.extend(snap.counters.into_iter().map(|(name, a)| Metric {
            name,
            kind: Kind::Counter(a),
        }));
        all.extend(snap.samples.into_iter().map(|(name, a)| Metric {
            name,
            kind: Kind::Sample(a),
        }));
    }
    Ok(all)
}

/// `GET /v1/agent/metrics` (`?format=prometheus` for the text format).
pub async fn metrics<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let all = collect(&s).await?;
    if params.get("format").map(String::as_str) == Some("prometheus") {
        return Ok((
            [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
            prometheus(&all),
        )
            .into_response());
    }
    let at = s
        .env
        .wall_clock()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let secs = at.as_secs() as i64;
    let stamp = utc_timestamp(secs);
    let gauges: Vec<_> = all
        .iter()
        .filter_map(|m| match m.kind {
            Kind::Gauge(v) => Some(json!({"Name": m.name, "Value": v, "Labels": {}})),
            _ => None,
        })
        .collect();
    let aggregates = |want_counters: bool| -> Vec<Value> {
        all.iter()
            .filter_map(|m| match &m.kind {
                Kind::Counter(a) if want_counters => Some(aggregate_json(m.name, a)),
                Kind::Sample(a) if !want_counters => Some(aggregate_json(m.name, a)),
                _ => None,
            })
            .collect()
    };
    Ok(Json(json!({
        "Timestamp": stamp,
        "Gauges": gauges,
        "Points": [],
        "Counters": aggregates(true),
        "Samples": aggregates(false),
    }))
    .into_response())
}

/// A counter or sample as go-metrics' in-memory sink shows it. Its
/// intervals are 10 s; cairn's one interval runs from start-up, so the
/// rate is the sum.
fn aggregate_json(name: &str, a: &Aggregate) -> Value {
    json!({"Name": name, "Count": a.count, "Rate": a.sum, "Sum": a.sum,
           "Min": a.min, "Max": a.max, "Mean": a.mean(), "Stddev": a.stddev(),
           "Labels": {}})
}

/// What a metric measures, for Prometheus' HELP line.
fn help(name: &str) -> &'static str {
    match name {
        "consul.serf.lan.members.alive" => "LAN members alive, as this agent sees them.",
        "consul.serf.lan.members.failed" => "LAN members failed, as this agent sees them.",
        "consul.serf.lan.members.left" => "LAN members that left, as this agent sees them.",
        "consul.memberlist.health.score" => "Memberlist's awareness score (0 is healthy).",
        "consul.agent.services" => "Services registered with this agent.",
        "consul.agent.checks" => "Checks registered with this agent.",
        "consul.memberlist.udp.received" => "Gossip packets received.",
        "consul.memberlist.udp.sent" => "Gossip packets sent.",
        "consul.raft.apply" => "Raft transactions the leader applied.",
        "consul.raft.commitTime" => {
            "Milliseconds from proposing a write to the leader to its being committed and applied."
        }
        "consul.raft.leader.lastContact" => {
            "Milliseconds since the leader last heard from a quorum of its followers."
        }
        "consul.raft.state.leader" => "Times this server became the Raft leader.",
        "consul.raft.state.candidate" => "Times this server started a Raft election.",
        "consul.raft.state.follower" => "Times this server became a Raft follower.",
        "consul.rpc.request" => "Requests this server was asked to serve.",
        "consul.kvs.apply" => "Milliseconds to apply a KV write.",
        "consul.txn.apply" => "Milliseconds to apply a transaction.",
        "consul.catalog.register" => "Milliseconds to apply a catalog registration.",
        "consul.catalog.deregister" => "Milliseconds to apply a catalog deregistration.",
        "consul.runtime.num_goroutines" => "Tasks alive in the agent's async runtime.",
        "consul.runtime.alloc_bytes" => "Anonymous resident memory of the agent (heap and stacks).",
        "consul.runtime.sys_bytes" => "Resident memory of the agent.",
        _ => "",
    }
}

/// Consul's dotted name as a conventional Prometheus name.
fn prometheus_name(name: &str, counter: bool) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    let mut after_lower = false;
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            if after_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            after_lower = false;
        } else if c.is_ascii_alphanumeric() || c == '_' || c == ':' {
            out.push(c);
            after_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            out.push('_');
            after_lower = false;
        }
    }
    if counter && !out.ends_with("_total") {
        out.push_str("_total");
    }
    out
}

/// A sample value in the text format (which spells infinities its way).
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

/// Prometheus' text exposition; see the [module docs](self).
fn prometheus(all: &[Metric]) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    for m in all {
        let counter = matches!(m.kind, Kind::Counter(_));
        let name = prometheus_name(m.name, counter);
        let what = match help(m.name) {
            "" => m.name.to_string(),
            h => format!("{}: {h}", m.name),
        };
        let kind = match m.kind {
            Kind::Gauge(_) => "gauge",
            Kind::Counter(_) => "counter",
            Kind::Sample(_) => "summary",
        };
        let _ = writeln!(out, "# HELP {name} {what}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        match &m.kind {
            Kind::Gauge(v) => {
                let _ = writeln!(out, "{name} {}", number(*v));
            }
            Kind::Counter(a) => {
                let _ = writeln!(out, "{name} {}", number(a.sum));
            }
            Kind::Sample(a) => {
                for q in ["0.5", "0.9", "0.99"] {
                    let v = a.quantile(q.parse().unwrap_or(0.5));
                    let _ = writeln!(out, "{name}{{quantile=\"{q}\"}} {}", number(v));
                }
                let _ = writeln!(out, "{name}_sum {}", number(a.sum));
                let _ = writeln!(out, "{name}_count {}", a.count);
            }
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS +0000 UTC`, the form Consul's `Timestamp` takes.
fn utc_timestamp(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} +0000 UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_civil_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 +0000 UTC");
        assert_eq!(utc_timestamp(951_782_400), "2000-02-29 00:00:00 +0000 UTC");
        assert_eq!(
            utc_timestamp(1_795_556_046),
            "2026-11-24 21:34:06 +0000 UTC"
        );
    }

    #[test]
    fn prometheus_names_are_conventional() {
        assert_eq!(
            prometheus_name("consul.raft.commitTime", false),
            "consul_raft_commit_time"
        );
        assert_eq!(
            prometheus_name("consul.raft.leader.lastContact", false),
            "consul_raft_leader_last_contact"
        );
        assert_eq!(
            prometheus_name("consul.raft.apply", true),
            "consul_raft_apply_total"
        );
        assert_eq!(
            prometheus_name("consul.prepared-query.apply", false),
            "consul_prepared_query_apply"
        );
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(2.0), "2");
    }

    #[test]
    fn prometheus_text_has_help_type_and_summaries() {
        let r = crate::telemetry::Registry::default();
        r.sample("consul.kvs.apply", 2.0);
        r.sample("consul.kvs.apply", 4.0);
        let text = prometheus(&[
            Metric {
                name: "consul.agent.checks",
                kind: Kind::Gauge(2.0),
            },
            Metric {
                name: "consul.memberlist.probes",
                kind: Kind::Counter(Aggregate::of_total(7.0)),
            },
            Metric {
                name: "consul.kvs.apply",
                kind: Kind::Sample(r.snapshot().samples.remove(0).1),
            },
        ]);
        let want =
            "# HELP consul_agent_checks consul.agent.checks: Checks registered with this agent.\n\
                    # TYPE consul_agent_checks gauge\n\
                    consul_agent_checks 2\n\
                    # HELP consul_memberlist_probes_total consul.memberlist.probes\n\
                    # TYPE consul_memberlist_probes_total counter\n\
                    consul_memberlist_probes_total 7\n\
                    # HELP consul_kvs_apply consul.kvs.apply: Milliseconds to apply a KV write.\n\
                    # TYPE consul_kvs_apply summary\n\
                    consul_kvs_apply{quantile=\"0.5\"} 4\n\
                    consul_kvs_apply{quantile=\"0.9\"} 4\n\
                    consul_kvs_apply{quantile=\"0.99\"} 4\n\
                    consul_kvs_apply_sum 6\n\
                    consul_kvs_apply_count 2\n";
        assert_eq!(text, want);
    }
}

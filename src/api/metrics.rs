//! `GET /v1/agent/metrics`: the agent's gauges and counters in Consul's
//! JSON shape (`Timestamp`, `Gauges`, `Points`, `Counters`, `Samples`), or
//! in Prometheus' text format with `?format=prometheus`.

use std::collections::HashMap;
use std::time::UNIX_EPOCH;

use axum::extract::Query as UrlQuery;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::context::Api;
use super::error::{internal, ApiError};
use crate::env::Env;

/// One metric: its Consul-style dotted name, its value, and whether it
/// only grows (a counter) or goes up and down (a gauge).
struct Metric {
    name: &'static str,
    value: f64,
    counter: bool,
}

/// What the agent can report about itself right now.
async fn collect<E: Env>(s: &Api<E>) -> Result<Vec<Metric>, ApiError> {
    let st = s.gossip.stats().await.map_err(internal)?;
    let gauge = |name, value: usize| Metric {
        name,
        value: value as f64,
        counter: false,
    };
    let counter = |name, value: u64| Metric {
        name,
        value: value as f64,
        counter: true,
    };
    Ok(vec![
        gauge("consul.serf.lan.members.alive", st.alive),
        gauge("consul.serf.lan.members.failed", st.failed),
        gauge("consul.serf.lan.members.left", st.left),
        gauge("consul.memberlist.health.score", st.health_score),
        gauge("consul.agent.services", s.local.services().len()),
        gauge("consul.agent.checks", s.local.checks().len()),
        counter("consul.memberlist.udp.received", st.core.packets_received),
        counter("consul.memberlist.udp.sent", st.core.packets_sent),
        counter("consul.memberlist.decode_errors", st.core.decode_errors),
        counter("consul.memberlist.probes", st.core.probes),
        counter("consul.memberlist.probes.failed", st.core.probes_failed),
        counter("consul.memberlist.refutations", st.core.refutations),
        counter("consul.memberlist.push_pulls", st.core.push_pulls),
        // Traffic no installed gossip key opened, or sent in the clear.
        counter("consul.memberlist.undecryptable", st.undecryptable),
    ])
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
        .filter(|m| !m.counter)
        .map(|m| json!({"Name": m.name, "Value": m.value, "Labels": {}}))
        .collect();
    // Consul's counters are per-interval samples; a running total is one
    // sample of itself.
    let counters: Vec<_> = all
        .iter()
        .filter(|m| m.counter)
        .map(|m| {
            json!({"Name": m.name, "Count": 1, "Rate": m.value, "Sum": m.value,
                   "Min": m.value, "Max": m.value, "Mean": m.value, "Stddev": 0.0,
                   "Labels": {}})
        })
        .collect();
    Ok(Json(json!({
        "Timestamp": stamp,
        "Gauges": gauges,
        "Points": [],
        "Counters": counters,
        "Samples": [],
    }))
    .into_response())
}

/// Prometheus' text exposition: dots become underscores.
fn prometheus(all: &[Metric]) -> String {
    let mut out = String::new();
    for m in all {
        let name = m.name.replace('.', "_");
        let kind = if m.counter { "counter" } else { "gauge" };
        out.push_str(&format!("# TYPE {name} {kind}\n{name} {}\n", m.value));
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
    fn prometheus_names_use_underscores() {
        let text = prometheus(&[Metric {
            name: "consul.agent.checks",
            value: 2.0,
            counter: false,
        }]);
        assert_eq!(
            text,
            "# TYPE consul_agent_checks gauge\nconsul_agent_checks 2\n"
        );
    }
}

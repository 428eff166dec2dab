//! ACLs across datacenters inside the simulator. An `acl_token` event
//! creates a policy and a token (global, as Consul's tokens are by
//! default) through a node's agent, as an operator would in the primary
//! datacenter. Every node then asks its own agent, four times a second,
//! for a key with each such token (`acl_probe`), and the `acl_tokens_work`
//! check judges whether every node's agent accepted every token, in every
//! datacenter, from `within` after it was made to the end of the run:
//! through partitions between the datacenters too, which a secondary
//! survives only by resolving replicated tokens itself.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cairn::env::Task;

use crate::engine::full::clock::SimClock;
use cairn::http_client::{self as client, ClientError};

use crate::action::{Action, TimedAction};
use crate::net::topology::Topology;
use crate::output::trace::{record_at, Recorder, Trace};
use crate::verdict::{CheckResult, Outages};

/// Trace event: the token named `member` was made (the servers took it).
pub const TOKEN_SET: &str = "acl_token_set";
/// Trace event: this node's agent answered a request made with the token
/// named `member` differently from the last time (detail: `ok`,
/// `refused`, or `error: <why>` when nothing decided, say no leader).
pub const PROBE: &str = "acl_probe";
/// How often each node asks with each token.
const PROBE_EVERY: Duration = Duration::from_millis(250);
/// The key probes read. Nobody writes it: a 404 is an accepted token.
const PROBE_KEY: &str = "acl-probe";
/// What every `acl_token` token may do: read every key.
const RULES: &str = "key_prefix \"\" { policy = \"read\" }";

/// A UUID derived from `name` and `kind`, so that every node knows a
/// token's IDs from the scenario alone.
fn uuid(kind: u16, name: &str) -> String {
    // FNV-1a: stable across builds and platforms, as a seed must be.
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!(
        "{:08x}-{kind:04x}-4000-8000-{:012x}",
        h >> 32,
        h & 0xffff_ffff_ffff
    )
}

/// The secret of the token named `name`.
pub fn secret(name: &str) -> String {
    uuid(0x5ec7, name)
}

fn policy_name(name: &str) -> String {
    format!("{name}-read")
}

/// Whether `e` says that what was asked exists already: an earlier try
/// went through but its answer was lost.
fn exists(e: &ClientError) -> bool {
    matches!(e, ClientError::Status { body, .. }
        if body.contains("already exists") || body.contains("already in use"))
}

/// Makes the policy and the token named `name` through the agent at
/// `http` (with its default token, the simulated cluster's management
/// token).
pub async fn create<E: SimClock>(env: &E, http: SocketAddr, name: &str) -> Result<(), String> {
    let put = |path: &'static str, body: serde_json::Value| async move {
        match client::exchange(
            env,
            http,
            "PUT",
            path,
            Bytes::from(body.to_string()),
            Duration::from_secs(10),
        )
        .await
        {
            Ok(_) => Ok(()),
            Err(e) if exists(&e) => Ok(()),
            Err(e) => Err(format!("{path}: {e}")),
        }
    };
    put(
        "/v1/acl/policy",
        serde_json::json!({ "Name": policy_name(name), "Rules": RULES }),
    )
    .await?;
    put(
        "/v1/acl/token",
        serde_json::json!({
            "AccessorID": uuid(0xacce, name),
            "SecretID": secret(name),
            "Description": name,
            "Policies": [{ "Name": policy_name(name) }],
        }),
    )
    .await
}

/// Records that the token named `name` was made.
pub fn record_set<E: SimClock>(env: &E, recorder: &Recorder, node: &str, name: &str) {
    record_at(recorder, env.true_now(), node, TOKEN_SET, name, None);
}

/// Asks the agent at `http` for [`PROBE_KEY`] with each token of `names`
/// every [`PROBE_EVERY`], recording each change in its answer.
pub fn probe<E: SimClock>(
    env: E,
    node: String,
    http: SocketAddr,
    names: Vec<String>,
    recorder: Recorder,
) -> Task {
    env.clone().spawn(async move {
        let mut last: BTreeMap<&str, String> = BTreeMap::new();
        let path = format!("/v1/kv/{PROBE_KEY}");
        loop {
            env.sleep(PROBE_EVERY).await;
            for name in &names {
                let secret = secret(name);
                let answer = client::exchange_as(
                    &env,
                    http,
                    "GET",
                    &path,
                    Bytes::new(),
                    Duration::from_secs(2),
                    Some(&secret),
                )
                .await;
                let outcome = match answer {
                    Ok(_) | Err(ClientError::Status { status: 404, .. }) => "ok".to_string(),
                    Err(ClientError::Status { status: 403, .. }) => "refused".to_string(),
                    Err(e) => format!("error: {e}"),
                };
                if last.get(name.as_str()) != Some(&outcome) {
                    let at = env.true_now();
                    record_at(&recorder, at, &node, PROBE, name, Some(outcome.clone()));
                    last.insert(name, outcome);
                }
            }
        }
    })
}

/// The token names `acl_token` events make, in order.
pub fn probed(timeline: &[TimedAction]) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for a in timeline {
        if let Action::AclToken(_, name) = &a.action {
            if !names.contains(name) {
                names.push(name.clone());
            }
        }
    }
    names
}

/// `acl_tokens_work`: every token an `acl_token` event made is accepted by
/// every node's agent, in every datacenter, from `within` after the
/// servers took it to the end of the run. A node down at any time in that
/// span is not judged (it starts over when it restarts); a node cut off
/// by a partition is.
pub fn tokens_work(
    topo: &Topology,
    timeline: &[TimedAction],
    outages: &Outages,
    trace: &Trace,
    end: Duration,
    within: Duration,
) -> CheckResult {
    let check = format!("acl_tokens_work {:.3}s", within.as_secs_f64());
    let fail = |detail: String| CheckResult {
        check: check.clone(),
        passed: false,
        detail,
    };
    let names = probed(timeline);
    if names.is_empty() {
        return fail("no acl_token event to judge".into());
    }
    // Each (node, token)'s answers over time.
    let mut answers: BTreeMap<(&str, &str), Vec<(Duration, &str)>> = BTreeMap::new();
    for e in trace.events.iter().filter(|e| e.event == PROBE) {
        if let (Some(m), Some(d)) = (e.member.as_deref(), e.detail.as_deref()) {
            answers.entry((&e.node, m)).or_default().push((e.at(), d));
        }
    }
    let mut wrong = Vec::new();
    let (mut judged, mut slowest) = (0usize, Duration::ZERO);
    for name in &names {
        let set = trace
            .events
            .iter()
            .find(|e| e.event == TOKEN_SET && e.member.as_deref() == Some(name));
        let Some(set) = set.map(|e| e.at()) else {
            wrong.push(format!("{name}: never made"));
            continue;
        };
        let from = set + within;
        if from > end {
            continue;
        }
        for node in &topo.nodes {
            if outages.down.any_between(&node.name, set, end) {
                continue;
            }
            judged += 1;
            let seen = answers
                .get(&(node.name.as_str(), name.as_str()))
                .map_or(&[][..], Vec::as_slice);
            // The answer in force at `from`, then every later one.
            let before = seen.iter().rposition(|(at, _)| *at <= from);
            let bad = match before {
                None => Some((from, "no answer yet")),
                Some(i) => seen[i..].iter().find(|(_, d)| *d != "ok").copied(),
            };
            match bad {
                Some((at, d)) => wrong.push(format!(
                    "{} with {name}: {d} from {:.3}s",
                    node.name,
                    at.as_secs_f64()
                )),
                None => {
                    let first_ok = seen[..=before.unwrap_or(0)]
                        .iter()
                        .rev()
                        .take_while(|(_, d)| *d == "ok")
                        .last()
                        .map_or(set, |(at, _)| *at);
                    slowest = slowest.max(first_ok.saturating_sub(set));
                }
            }
        }
    }
    if !wrong.is_empty() {
        let shown: Vec<String> = wrong.iter().take(5).cloned().collect();
        return fail(format!(
            "{} of {judged} node-token pairs wrong: {}",
            wrong.len(),
            shown.join("; ")
        ));
    }
    if judged == 0 {
        return fail("no node was up from a token's making to the end".into());
    }
    CheckResult {
        check,
        passed: true,
        detail: format!(
            "{} token(s) accepted by every node in {} datacenter(s) ({judged} node-token pairs), \
             at most {:.3}s after they were made, to the end",
            names.len(),
            topo.datacenters.len(),
            slowest.as_secs_f64()
        ),
    }
}

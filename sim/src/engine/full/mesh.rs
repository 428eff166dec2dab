//! Connect inside the simulator: `connect_service` events run an echo
//! application, its registration with a sidecar, and cairn's real proxy
//! (rustls over the simulated TCP) on each target node; a node given an
//! `upstream` calls it through its proxy every [`ATTEMPT_EVERY`] and
//! records whether the call went through. `intention` events set an
//! intention through a node's agent. The `intentions_enforced` check
//! judges every call against the intentions in force.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cairn::connect::intention::{self, Action as Decision, Intention};
use cairn::connect::proxy::{Proxy, ProxyConfig, UpstreamConfig};
use cairn::env::{timeout, Task, TcpListener};

use crate::engine::full::clock::SimClock;
use cairn::http_client as client;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::action::{Action, TimedAction};
use crate::output::trace::{record_at, Recorder, Trace};
use crate::verdict::CheckResult;

/// The sidecar's public port on every node.
pub const SIDECAR_PORT: u16 = 21000;
/// Where an application reaches its upstream through its sidecar.
pub const UPSTREAM_PORT: u16 = 9191;
/// How often an application calls its upstream.
pub const ATTEMPT_EVERY: Duration = Duration::from_millis(250);
/// How long a call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(2);

/// Trace event: a call from this node's application to its upstream
/// (member: destination service; detail: `ok` or `refused`), stamped when
/// it started.
pub const ATTEMPT: &str = "connect_call";
/// Trace event: an intention was set (member: `source->destination`;
/// detail: `allow` or `deny`).
pub const INTENTION: &str = "intention_set";

/// Trace event: a node's sidecar serves a new leaf certificate (member:
/// its service; detail: the leaf's serial), seen within [`ATTEMPT_EVERY`].
pub const LEAF: &str = "connect_leaf";
/// Trace event: the CA's root was rotated (member: `ca`).
pub const CA_ROTATED: &str = "ca_rotated";

pub use crate::action::IntentionOrder;

/// Rotates the CA's root through the agent at `http`, as an operator
/// would: a new generated root, cross-signed by the old one.
pub async fn rotate_ca<E: SimClock>(env: &E, http: SocketAddr) -> Result<(), String> {
    let body = serde_json::json!({ "Provider": "consul", "Config": {} }).to_string();
    client::exchange(
        env,
        http,
        "PUT",
        "/v1/connect/ca/configuration",
        Bytes::from(body),
        Duration::from_secs(10),
    )
    .await
    .map(|_| ())
    .map_err(|e| e.to_string())
}

impl IntentionOrder {
    /// The parameters, for the trace.
    pub fn detail(&self) -> String {
        format!("{}->{} {}", self.source, self.destination, self.decision())
    }

    fn decision(&self) -> &'static str {
        if self.allow {
            "allow"
        } else {
            "deny"
        }
    }

    /// Sets it through the agent at `http`.
    pub async fn send<E: SimClock>(&self, env: &E, http: SocketAddr) -> Result<(), String> {
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("source", &self.source)
            .append_pair("destination", &self.destination)
            .finish();
        let body = serde_json::json!({ "Action": self.decision() }).to_string();
        client::exchange(
            env,
            http,
            "PUT",
            &format!("/v1/connect/intentions/exact?{q}"),
            Bytes::from(body),
            Duration::from_secs(10),
        )
        .await
        .map(|_| ())
        .map_err(|e| e.to_string())
    }

    /// Records that it took effect at the servers.
    pub fn record<E: SimClock>(&self, env: &E, recorder: &Recorder, node: &str) {
        record_at(
            recorder,
            env.true_now(),
            node,
            INTENTION,
            &format!("{}->{}", self.source, self.destination),
            Some(self.decision().into()),
        );
    }
}

/// The registration body of a Connect service on `port` with a sidecar
/// (and `upstream` through it).
pub fn registration_body(
    name: &str,
    port: u16,
    tags: &[String],
    upstream: Option<&str>,
    ip: std::net::IpAddr,
) -> Bytes {
    let upstreams: Vec<serde_json::Value> = upstream
        .map(|u| {
            serde_json::json!({
                "DestinationName": u,
                "LocalBindAddress": ip.to_string(),
                "LocalBindPort": UPSTREAM_PORT,
            })
        })
        .into_iter()
        .collect();
    Bytes::from(
        serde_json::json!({
            "Name": name, "Port": port, "Tags": tags,
            "Connect": { "SidecarService": {
                "Address": ip.to_string(),
                "Port": SIDECAR_PORT,
                "Proxy": { "LocalServiceAddress": ip.to_string(), "Upstreams": upstreams },
            }},
        })
        .to_string(),
    )
}

/// The application (an echo server on `ip:port`), the sidecar proxy, and
/// with an `upstream` the calls to it: what a `connect_service` event
/// starts on a node once its agent (at `http`, on the node's address)
/// took the registration.
pub fn start<E: SimClock>(
    env: &E,
    node: &str,
    http: SocketAddr,
    service: &str,
    port: u16,
    upstream: Option<&str>,
    recorder: &Recorder,
) -> Vec<Task> {
    let ip = http.ip();
    let mut tasks = vec![env.spawn(echo(env.clone(), SocketAddr::new(ip, port)))];
    let cfg = ProxyConfig {
        service: service.to_owned(),
        agent: http,
        inbound: Some((SocketAddr::new(ip, SIDECAR_PORT), SocketAddr::new(ip, port))),
        upstreams: upstream
            .map(|u| UpstreamConfig {
                destination: u.to_owned(),
                local_bind: SocketAddr::new(ip, UPSTREAM_PORT),
            })
            .into_iter()
            .collect(),
    };
    let (e, me, rec) = (env.clone(), node.to_owned(), recorder.clone());
    tasks.push(env.spawn(async move {
        loop {
            match Proxy::start(e.clone(), cfg.clone()).await {
                Ok(proxy) => {
                    // The proxy serves while this task holds it; its leaf
                    // goes in the trace each time it changes (a rotation
                    // that never reached the proxies would prove nothing).
                    let mut shown = None;
                    loop {
                        let serial = proxy.leaf_serial();
                        if serial != shown {
                            let at = e.true_now();
                            record_at(&rec, at, &me, LEAF, &cfg.service, serial.clone());
                            shown = serial;
                        }
                        e.sleep(ATTEMPT_EVERY).await;
                    }
                }
                Err(err) => {
                    tracing::debug!(error = %err, "sidecar not started; retrying");
                    e.sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }));
    if let Some(dest) = upstream {
        let (e, node, dest, recorder) = (
            env.clone(),
            node.to_owned(),
            dest.to_owned(),
            recorder.clone(),
        );
        let at = SocketAddr::new(ip, UPSTREAM_PORT);
        tasks.push(env.spawn(async move {
            let mut n = 0u64;
            loop {
                e.sleep(ATTEMPT_EVERY).await;
                n += 1;
                let started = e.true_now();
                let ok = matches!(timeout(&e, CALL_TIMEOUT, call(&e, at, n)).await, Ok(true));
                let detail = if ok { "ok" } else { "refused" };
                record_at(
                    &recorder,
                    started,
                    &node,
                    ATTEMPT,
                    &dest,
                    Some(detail.into()),
                );
            }
        }));
    }
    tasks
}

/// One call: a message out, the same message back.
async fn call<E: SimClock>(env: &E, at: SocketAddr, n: u64) -> bool {
    let Ok(mut s) = env.connect_tcp(at).await else {
        return false;
    };
    let msg = n.to_be_bytes();
    if s.write_all(&msg).await.is_err() {
        return false;
    }
    let mut back = [0u8; 8];
    s.read_exact(&mut back).await.is_ok() && back == msg
}

/// An echo server: what the application is.
async fn echo<E: SimClock>(env: E, addr: SocketAddr) {
    let Ok(l) = env.bind_tcp(addr).await else {
        tracing::warn!(%addr, "application cannot listen");
        return;
    };
    loop {
        let Ok((s, _)) = l.accept().await else {
            continue;
        };
        env.spawn(async move {
            let (mut r, mut w) = tokio::io::split(s);
            let _ = tokio::io::copy(&mut r, &mut w).await;
        })
        .detach();
    }
}

/// `intentions_enforced`: every call that started at least `within` after
/// the last intention change went through exactly when the intentions in
/// force allowed it (with no intention matching: the ACL default,
/// `default_allow`, which is allow with ACLs off). Calls before the first
/// intention are judged only under a deny default (from `within` after
/// time zero: nothing may get through before an intention allows it).
/// Calls still in flight (for up to their timeout) when the next change
/// is made are not judged: the destination's proxy decides when the call
/// reaches it, which may be after. Each intention change must be followed
/// by judged calls, so the check cannot pass on silence.
pub fn enforced(
    timeline: &[TimedAction],
    trace: &Trace,
    within: Duration,
    default_allow: bool,
) -> CheckResult {
    let check = format!("intentions_enforced {:.3}s", within.as_secs_f64());
    // Which service each node's application is.
    let mut service_of: BTreeMap<String, String> = BTreeMap::new();
    for a in timeline {
        if let Action::RegisterService(nodes, r) = &a.action {
            if r.connect {
                for n in nodes {
                    service_of.insert(n.clone(), r.name.clone());
                }
            }
        }
    }
    let mut changes: Vec<(Duration, Intention)> = Vec::new();
    for e in &trace.events {
        if e.event != INTENTION {
            continue;
        }
        let Some((src, dst)) = e.member.as_deref().and_then(|m| m.split_once("->")) else {
            continue;
        };
        let action = if e.detail.as_deref() == Some("deny") {
            Decision::Deny
        } else {
            Decision::Allow
        };
        changes.push((e.at(), Intention::new(src, dst, action)));
    }
    if changes.is_empty() {
        return CheckResult {
            check,
            passed: false,
            detail: "no intention was set (an intention event must take effect) to judge".into(),
        };
    }
    let mut judged_after = vec![0usize; changes.len()];
    let mut wrong: Vec<String> = Vec::new();
    let (mut allowed, mut refused) = (0, 0);
    for e in &trace.events {
        if e.event != ATTEMPT {
            continue;
        }
        let at = e.at();
        // The intentions in force: every change up to the call, by pair
        // (`None`: before the first).
        let last = changes.iter().rposition(|(t, _)| *t <= at);
        let since = last.map_or(Duration::ZERO, |l| changes[l].0);
        let next = last.map_or(0, |l| l + 1);
        if (last.is_none() && default_allow)
            || at < since + within
            || changes
                .get(next)
                .is_some_and(|(next, _)| *next <= at + CALL_TIMEOUT)
        {
            continue;
        }
        let (Some(src), Some(dst)) = (service_of.get(&e.node), e.member.as_deref()) else {
            continue;
        };
        let mut in_force: BTreeMap<String, Intention> = BTreeMap::new();
        for (_, i) in &changes[..next] {
            in_force.insert(i.id.clone(), i.clone());
        }
        let expect = intention::authorize(in_force.values(), src, dst, default_allow).0;
        let ok = e.detail.as_deref() == Some("ok");
        if let Some(l) = last {
            judged_after[l] += 1;
        }
        if ok {
            allowed += 1;
        } else {
            refused += 1;
        }
        if ok != expect && wrong.len() < 5 {
            wrong.push(format!(
                "{} ({src}) -> {dst} at {:.3}s: {} but the intentions {}",
                e.node,
                at.as_secs_f64(),
                if ok { "went through" } else { "was refused" },
                if expect { "allow it" } else { "deny it" }
            ));
        }
    }
    let silent: Vec<String> = changes
        .iter()
        .zip(&judged_after)
        .filter(|(_, n)| **n == 0)
        .map(|((t, i), _)| {
            format!(
                "no call judged after {} => {} at {:.3}s",
                i.source_name,
                i.destination_name,
                t.as_secs_f64()
            )
        })
        .collect();
    let passed = wrong.is_empty() && silent.is_empty();
    let detail = if passed {
        format!(
            "{} intention change(s); {allowed} calls went through and {refused} were refused, each as the intentions said",
            changes.len()
        )
    } else {
        wrong
            .into_iter()
            .chain(silent)
            .collect::<Vec<_>>()
            .join("; ")
    };
    CheckResult {
        check,
        passed,
        detail,
    }
}

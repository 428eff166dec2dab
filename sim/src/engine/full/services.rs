//! Service discovery through the HTTP API inside the simulator
//! (`register_service` events, the `service_visible` check).
//!
//! A node told to register a service does so as an operator's tooling
//! would: `PUT /v1/agent/service/register` to its own agent's HTTP API,
//! over the simulated network (axum on the [`SimEnv`](crate::SimEnv)'s
//! listener, cairn's HTTP client on its TCP). Every server follows the
//! scenario's services in its own catalog with blocking queries
//! (`/v1/catalog/service/<s>?stale&index=N`) and records each answer that
//! changes, so the check can tell when every server first listed every
//! registered instance.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use cairn::env::Task;

use crate::engine::full::clock::SimClock;
use cairn::http_client as client;
use tokio::sync::watch;

use crate::action::{Action, TimedAction};
use crate::net::topology::{Role, Topology};
use crate::output::trace::{record_at, Recorder, Trace};
use crate::verdict::{CheckResult, Outages};

pub use crate::action::Registration;

impl Registration {
    /// The parameters, for the trace.
    pub fn detail(&self) -> String {
        format!(
            "{} port={} tags={}",
            self.name,
            self.port,
            self.tags.join(",")
        )
    }

    fn body(&self, ip: std::net::IpAddr) -> Bytes {
        if self.connect {
            return crate::engine::full::mesh::registration_body(
                &self.name,
                self.port,
                &self.tags,
                self.upstream.as_deref(),
                ip,
            );
        }
        Bytes::from(
            serde_json::json!({"Name": self.name, "Port": self.port, "Tags": self.tags})
                .to_string(),
        )
    }
}

/// What a node asks of its own agent's HTTP API, in event order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ApiOrder {
    /// Register a service (and with Connect, run it and its sidecar).
    Register(Registration),
    /// Set an intention.
    Intention(crate::engine::full::mesh::IntentionOrder),
    /// Rotate the CA's root.
    CaRotate,
    /// Make the ACL policy and token of this name.
    AclToken(String),
}

/// Trace event: a node's agent accepted a registration (member: service).
pub const REGISTERED: &str = "service_registered";
/// Trace event: a server's catalog lists these nodes under the service
/// (member: service; detail: the nodes, comma-separated).
pub const CATALOG: &str = "catalog_service";

/// Records `event` about `service`, seen by `node`, now.
fn record<E: SimClock>(
    env: &E,
    recorder: &Recorder,
    node: &str,
    event: &str,
    service: &str,
    detail: Option<String>,
) {
    record_at(recorder, env.true_now(), node, event, service, detail);
}

/// Pause between tries of a registration the agent did not accept.
const RETRY: Duration = Duration::from_secs(1);

/// Carries out, through `http` (the node's own agent), every order
/// `orders` holds, now and whenever it grows; an order the agent does not
/// accept is tried again. A restarted node registers everything again, as
/// its operator's config would (and restarts its Connect applications).
pub fn register<E: SimClock>(
    env: E,
    node: String,
    http: SocketAddr,
    mut orders: watch::Receiver<Vec<ApiOrder>>,
    recorder: Recorder,
) -> Task {
    env.clone().spawn(async move {
        let mut done = 0;
        // The Connect applications, sidecars and callers this node runs.
        let mut running: Vec<Task> = Vec::new();
        loop {
            let todo: Vec<ApiOrder> = orders.borrow_and_update().clone();
            while done < todo.len() {
                let outcome = match &todo[done] {
                    ApiOrder::Register(r) => client::exchange(
                        &env,
                        http,
                        "PUT",
                        "/v1/agent/service/register",
                        r.body(http.ip()),
                        Duration::from_secs(10),
                    )
                    .await
                    .map(|_| {
                        record(&env, &recorder, &node, REGISTERED, &r.name, None);
                        if r.connect {
                            running.extend(crate::engine::full::mesh::start(
                                &env,
                                &node,
                                http,
                                &r.name,
                                r.port,
                                r.upstream.as_deref(),
                                &recorder,
                            ));
                        }
                    })
                    .map_err(|e| e.to_string()),
                    ApiOrder::Intention(i) => i
                        .send(&env, http)
                        .await
                        .map(|()| i.record(&env, &recorder, &node)),
                    ApiOrder::AclToken(name) => crate::engine::full::acl::create(&env, http, name)
                        .await
                        .map(|()| {
                            crate::engine::full::acl::record_set(&env, &recorder, &node, name)
                        }),
                    ApiOrder::CaRotate => crate::engine::full::mesh::rotate_ca(&env, http)
                        .await
                        .map(|()| {
                            record(
                                &env,
                                &recorder,
                                &node,
                                crate::engine::full::mesh::CA_ROTATED,
                                "ca",
                                None,
                            )
                        }),
                };
                match outcome {
                    Ok(()) => done += 1,
                    Err(e) => {
                        tracing::debug!(node = %node, error = %e, "agent order failed; retrying");
                        env.sleep(RETRY).await;
                    }
                }
            }
            if orders.changed().await.is_err() {
                return;
            }
        }
    })
}

/// Follows `service` in the catalog of the server at `http` and records
/// every change in the nodes that provide it.
pub fn follow<E: SimClock>(
    env: E,
    node: String,
    http: SocketAddr,
    service: String,
    recorder: Recorder,
) -> Task {
    env.clone().spawn(async move {
        let mut index = 0u64;
        let mut last: Option<Vec<String>> = None;
        loop {
            let path = format!("/v1/catalog/service/{service}?stale&index={index}&wait=30s");
            let answer = client::exchange(
                &env,
                http,
                "GET",
                &path,
                Bytes::new(),
                Duration::from_secs(45),
            )
            .await;
            // No leader yet, or the agent is still starting: ask again.
            let Ok(answer) = answer else {
                env.sleep(RETRY).await;
                continue;
            };
            let next = answer.index.unwrap_or(0);
            index = if next < index { 0 } else { next };
            let Ok(rows) = serde_json::from_slice::<Vec<serde_json::Value>>(&answer.body) else {
                env.sleep(RETRY).await;
                continue;
            };
            let mut nodes: Vec<String> = rows
                .iter()
                .filter_map(|r| r["Node"].as_str().map(str::to_owned))
                .collect();
            nodes.sort();
            nodes.dedup();
            if last.as_ref() != Some(&nodes) {
                record(
                    &env,
                    &recorder,
                    &node,
                    CATALOG,
                    &service,
                    Some(nodes.join(",")),
                );
                last = Some(nodes);
            }
        }
    })
}

/// Trace event: a node's own DNS interface answers the service's SRV
/// question with these nodes (member: service; detail: the nodes).
pub const DNS: &str = "dns_service";

/// How often a node asks its DNS interface about each service.
const DNS_POLL: Duration = Duration::from_millis(250);

/// Asks the DNS interface at `dns` (the node's own agent, over TCP so that
/// every instance fits) `_<service>._tcp.service.consul SRV` every
/// [`DNS_POLL`] and records every change in the nodes it names.
pub fn resolve<E: SimClock>(
    env: E,
    node: String,
    dns: SocketAddr,
    service: String,
    recorder: Recorder,
) -> Task {
    env.clone().spawn(async move {
        let mut last: Option<Vec<String>> = None;
        let mut id = 0u16;
        loop {
            env.sleep(DNS_POLL).await;
            id = id.wrapping_add(1);
            let name = format!("_{service}._tcp.service.consul.");
            let Ok(Some(nodes)) = cairn::env::timeout(
                &env,
                Duration::from_secs(2),
                srv_nodes(&env, dns, id, &name),
            )
            .await
            else {
                continue;
            };
            if last.as_ref() != Some(&nodes) {
                record(&env, &recorder, &node, DNS, &service, Some(nodes.join(",")));
                last = Some(nodes);
            }
        }
    })
}

/// One SRV question over TCP: the node names of the targets (sorted), or
/// `None` when there was no usable answer. NXDOMAIN is an empty list.
async fn srv_nodes<E: SimClock>(
    env: &E,
    dns: SocketAddr,
    id: u16,
    name: &str,
) -> Option<Vec<String>> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
    use hickory_proto::rr::{Name, RData, RecordType};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut q = Message::new(id, MessageType::Query, OpCode::Query);
    q.add_query(Query::query(Name::from_ascii(name).ok()?, RecordType::SRV));
    let bytes = q.to_vec().ok()?;
    let mut s = env.connect_tcp(dns).await.ok()?;
    let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(&bytes);
    s.write_all(&out).await.ok()?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len).await.ok()?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf).await.ok()?;
    let r = Message::from_vec(&buf).ok()?;
    match r.metadata.response_code {
        ResponseCode::NXDomain => return Some(Vec::new()),
        ResponseCode::NoError => {}
        _ => return None,
    }
    let mut nodes: Vec<String> = r
        .answers
        .iter()
        .filter_map(|a| match &a.data {
            RData::SRV(srv) => {
                let t = srv.target.to_ascii();
                t.split_once(".node.").map(|(n, _)| n.to_string())
            }
            _ => None,
        })
        .collect();
    nodes.sort();
    nodes.dedup();
    Some(nodes)
}

/// The services a run's nodes follow: every one a `register_service`
/// event names.
pub fn followed(timeline: &[TimedAction]) -> Vec<String> {
    let mut names: BTreeSet<String> = BTreeSet::new();
    for a in timeline {
        if let Action::RegisterService(_, r) = &a.action {
            names.insert(r.name.clone());
        }
    }
    names.into_iter().collect()
}

fn instances(n: usize) -> String {
    match n {
        1 => "1 instance".into(),
        n => format!("{n} instances"),
    }
}

fn secs(d: Duration) -> String {
    format!("{:.3}s", d.as_secs_f64())
}

/// Who must see a registration, and through what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// Every server, in its catalog (`service_visible`).
    Catalog,
    /// Every node, through its own agent's DNS (`dns_resolves`).
    Dns,
}

/// `service_visible` and `dns_resolves`: after each `register_service`
/// event for `service`, every judge (the servers' catalogs, or every
/// node's DNS) of each registering node's datacenter lists every such node
/// (that was up) within `within`. Judges down or cut off during that
/// window are not judged.
#[allow(clippy::too_many_arguments)]
pub fn visible(
    topo: &Topology,
    timeline: &[TimedAction],
    outages: &Outages,
    trace: &Trace,
    end: Duration,
    service: &str,
    within: Duration,
    seen: Seen,
) -> CheckResult {
    let (kind, event, judges) = match seen {
        Seen::Catalog => ("service_visible", CATALOG, "servers"),
        Seen::Dns => ("dns_resolves", DNS, "nodes"),
    };
    let check = format!("{kind} {service} {}", secs(within));
    // Each server's view of the service over time.
    let mut views: BTreeMap<&str, Vec<(Duration, BTreeSet<&str>)>> = BTreeMap::new();
    for e in &trace.events {
        if e.event == event && e.member.as_deref() == Some(service) {
            let set = e
                .detail
                .as_deref()
                .unwrap_or("")
                .split(',')
                .filter(|s| !s.is_empty())
                .collect();
            views
                .entry(e.node.as_str())
                .or_default()
                .push((e.at(), set));
        }
    }
    let dc_of = |n: &str| topo.nodes.iter().find(|x| x.name == n).map(|x| x.dc);
    let mut passed = true;
    let mut lines = Vec::new();
    let mut judged = 0;
    for a in timeline {
        let Action::RegisterService(nodes, r) = &a.action else {
            continue;
        };
        if r.name != service {
            continue;
        }
        let t = a.at;
        let up: Vec<&str> = nodes
            .iter()
            .map(String::as_str)
            .filter(|n| !outages.out_at(n, Some(t)))
            .collect();
        let dcs: BTreeSet<usize> = up.iter().filter_map(|n| dc_of(n)).collect();
        for dc in dcs {
            let want: BTreeSet<&str> = up
                .iter()
                .copied()
                .filter(|n| dc_of(n) == Some(dc))
                .collect();
            let servers = topo
                .nodes
                .iter()
                .filter(|n| n.dc == dc && (seen == Seen::Dns || n.role == Role::Server))
                .filter(|n| !outages.any_between(&n.name, t, t + within));
            let mut slowest = Duration::ZERO;
            let mut late = Vec::new();
            let mut count = 0;
            for s in servers {
                count += 1;
                let seen = first_containing(views.get(s.name.as_str()), &want, t);
                match seen {
                    Some(at) if at <= t + within => slowest = slowest.max(at - t),
                    Some(at) => late.push(format!("{} after {}", s.name, secs(at - t))),
                    None if end < t + within => {}
                    None => late.push(format!("{} never", s.name)),
                }
            }
            judged += 1;
            let dc_name = &topo.datacenters[dc].name;
            if late.is_empty() {
                lines.push(format!(
                    "at {}: {} in {dc_name} listed by {count} {judges}, slowest after {}",
                    secs(t),
                    instances(want.len()),
                    secs(slowest)
                ));
            } else {
                passed = false;
                lines.push(format!(
                    "at {}: {} in {dc_name}: late {}",
                    secs(t),
                    instances(want.len()),
                    late.join(", ")
                ));
            }
        }
    }
    if judged == 0 {
        return CheckResult {
            check,
            passed: false,
            detail: format!("no register_service event for {service:?} to judge"),
        };
    }
    CheckResult {
        check,
        passed,
        detail: lines.join("; "),
    }
}

/// When a view first (at or after `from`) lists every node of `want`.
fn first_containing(
    view: Option<&Vec<(Duration, BTreeSet<&str>)>>,
    want: &BTreeSet<&str>,
    from: Duration,
) -> Option<Duration> {
    let view = view?;
    let mut current: Option<&BTreeSet<&str>> = None;
    for (at, set) in view {
        if *at > from && current.is_some_and(|c| want.is_subset(c)) {
            return Some(from);
        }
        if *at >= from && want.is_subset(set) {
            return Some(*at);
        }
        current = Some(set);
    }
    current.filter(|c| want.is_subset(c)).map(|_| from)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set<'a>(names: &[&'a str]) -> BTreeSet<&'a str> {
        names.iter().copied().collect()
    }

    #[test]
    fn first_containing_finds_the_first_complete_view() {
        let s = Duration::from_secs;
        let view = vec![
            (s(1), set(&[])),
            (s(5), set(&["a"])),
            (s(6), set(&["a", "b"])),
        ];
        let want = set(&["a", "b"]);
        assert_eq!(first_containing(Some(&view), &want, s(4)), Some(s(6)));
        // Already complete when the registration came: seen at once.
        assert_eq!(first_containing(Some(&view), &want, s(7)), Some(s(7)));
        assert_eq!(first_containing(Some(&view), &set(&["c"]), s(0)), None);
        assert_eq!(first_containing(None, &want, s(0)), None);
    }
}

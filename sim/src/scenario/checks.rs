//! `[[check]]`s: what a run must show, each parsed into a [`Check`].

use std::time::Duration;

use serde::Deserialize;

use super::parse::{dur, err, selectors, ScenarioError};
use crate::net::topology::Topology;
use crate::scenario::select::resolve_names;

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
    /// Once the last fault of the timeline has ended (the quiet phase of a
    /// `[chaos]` run), every datacenter with servers has a leader that a
    /// majority follow, and the KV clients get a write through, within
    /// `within`: the liveness check.
    RecoversWithin {
        /// How long recovery may take.
        within: Duration,
    },
    /// No two servers of a datacenter ever lead in the same term.
    SingleLeader,
    /// No server's term ever goes down, across its restarts: the term and
    /// vote Raft acts on reached the disk first.
    TermsDurable,
    /// The `kv_load` clients' history is linearizable.
    Linearizable,
    /// No acknowledged KV write is lost: each key ends with the value of
    /// its last acknowledged write, or of a write not ordered before it.
    NoLostWrites,
    /// At the end, the running servers of each datacenter hold the same
    /// KV data.
    ReplicasConverge,
    /// No two `kv_load` lock clients ever believed they held one lock at
    /// the same time.
    LocksExclusive,
    /// The `kv_load` transaction clients' transactions are strictly
    /// serializable.
    StrictSerializable,
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
    /// Every token an `acl_token` event made is accepted by every node's
    /// agent, in every datacenter, from `within` after it was made to the
    /// end of the run.
    AclTokensWork {
        /// How long a token may take to reach every datacenter.
        within: Duration,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CheckSection {
    kind: String,
    #[serde(default)]
    targets: Vec<String>,
    within: Option<String>,
    at: Option<String>,
    median_below: Option<f64>,
    p90_below: Option<f64>,
    service: Option<String>,
}

const CHECKS: &str = "converged, failed_within, no_false_failures, coordinate_accuracy, wan_coordinate_accuracy, query_failover, leader_within, recovers_within, single_leader, terms_durable, linearizable, no_lost_writes, replicas_converge, locks_exclusive, strict_serializable, service_visible, dns_resolves, intentions_enforced, acl_tokens_work";

/// Check `i` (from 0): where it is in the file (for errors), and what it
/// asks.
pub(super) fn parse(
    i: usize,
    c: &CheckSection,
    topology: &Topology,
) -> Result<(String, Check), ScenarioError> {
    let here = format!("check #{} ({})", i + 1, c.kind);
    let targets = selectors(topology, &here, &c.targets)?;
    if targets.iter().any(|t| t.is_random() || t.is_dynamic()) {
        return Err(err(format!(
            "{here}: checks cannot pick at random or name the leader or its followers; name nodes or datacenters"
        )));
    }
    let names = resolve_names(&targets, topology, 0, "");
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
            within: within.ok_or_else(|| err(format!("{here} needs within, like \"10s\"")))?,
        },
        "coordinate_accuracy" => Check::CoordinateAccuracy {
            median_below: c
                .median_below
                .ok_or_else(|| err(format!("{here} needs median_below, like 0.2")))?,
            p90_below: c.p90_below,
        },
        "wan_coordinate_accuracy" => {
            if !topology.federated() {
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
            if !topology.federated() {
                return Err(err(format!(
                    "{here}: prepared queries fail over between federated datacenters; give two or more datacenters servers = 3"
                )));
            }
            Check::QueryFailover {
                service: c
                    .service
                    .clone()
                    .ok_or_else(|| err(format!("{here} needs service, like \"web\"")))?,
                within: within.ok_or_else(|| err(format!("{here} needs within, like \"15s\"")))?,
            }
        }
        "leader_within" => Check::LeaderWithin {
            within: within.ok_or_else(|| err(format!("{here} needs within, like \"10s\"")))?,
        },
        "recovers_within" => {
            if !topology.datacenters.iter().any(|d| d.servers > 0) {
                return Err(err(format!(
                    "{here}: it judges Raft leaders and KV writes; give a datacenter servers = 3"
                )));
            }
            Check::RecoversWithin {
                within: within.ok_or_else(|| err(format!("{here} needs within, like \"15s\"")))?,
            }
        }
        "single_leader" => Check::SingleLeader,
        "terms_durable" => Check::TermsDurable,
        "linearizable" => Check::Linearizable,
        "no_lost_writes" => Check::NoLostWrites,
        "replicas_converge" => Check::ReplicasConverge,
        "locks_exclusive" => Check::LocksExclusive,
        "strict_serializable" => Check::StrictSerializable,
        "intentions_enforced" => Check::IntentionsEnforced {
            within: within.ok_or_else(|| err(format!("{here} needs within, like \"2s\"")))?,
        },
        "acl_tokens_work" => Check::AclTokensWork {
            within: within.ok_or_else(|| err(format!("{here} needs within, like \"5s\"")))?,
        },
        "service_visible" | "dns_resolves" => {
            let service = c
                .service
                .clone()
                .ok_or_else(|| err(format!("{here} needs service, like \"web\"")))?;
            let within = within.ok_or_else(|| err(format!("{here} needs within, like \"5s\"")))?;
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
    let unused = unused(c);
    if !unused.is_empty() {
        return Err(err(format!(
            "{here}: {} does not apply to this kind",
            unused.join(", ")
        )));
    }
    Ok((here, check))
}

/// The keys `c` sets that its kind does not read.
fn unused(c: &CheckSection) -> Vec<&'static str> {
    [
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
                        | "recovers_within"
                        | "service_visible"
                        | "dns_resolves"
                        | "intentions_enforced"
                        | "acl_tokens_work"
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
    .collect()
}

//! `[chaos]`: a fault timeline each run draws from its seed (see
//! [`crate::chaos`]).

use std::time::Duration;

use serde::Deserialize;

use super::parse::{dur, err, selectors, ScenarioError};
use crate::chaos::{Chaos, FaultKind, Space};
use crate::net::topology::Topology;
use crate::scenario::select::resolve_names;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ChaosSection {
    from: Option<String>,
    #[serde(rename = "for")]
    for_: String,
    faults: usize,
    kinds: Option<Vec<String>>,
    targets: Option<Vec<String>>,
    leader: Option<f64>,
    window: Option<[String; 2]>,
}

/// Most faults one run draws.
const MAX_FAULTS: usize = 1000;

/// The section as a [`Chaos`], for a run of `duration`.
pub(super) fn parse(
    c: &ChaosSection,
    topology: &Topology,
    duration: Duration,
) -> Result<Chaos, ScenarioError> {
    let from = match &c.from {
        Some(v) => dur("chaos.from", v)?,
        None => Duration::from_secs(5),
    };
    let span = dur("chaos.for", &c.for_)?;
    if span.is_zero() || from + span >= duration {
        return Err(err(format!(
            "chaos: the faults (from {from:?}, for {span:?}) must end before the run does ({duration:?}), leaving a quiet phase in which the cluster recovers"
        )));
    }
    if c.faults == 0 || c.faults > MAX_FAULTS {
        return Err(err(format!(
            "chaos.faults is how many faults a run draws, from 1 to {MAX_FAULTS}, not {}",
            c.faults
        )));
    }
    let kinds = match &c.kinds {
        None => FaultKind::ALL.to_vec(),
        Some(list) => {
            let mut kinds = Vec::new();
            for k in list {
                let k = FaultKind::parse(k).map_err(|e| err(format!("chaos.kinds: {e}")))?;
                if !kinds.contains(&k) {
                    kinds.push(k);
                }
            }
            kinds
        }
    };
    let targets = selectors(
        topology,
        "chaos.targets",
        c.targets.as_deref().unwrap_or(&["all".to_owned()]),
    )?;
    if targets.iter().any(|t| t.is_random() || t.is_dynamic()) {
        return Err(err(
            "chaos.targets names the nodes faults may hit, without picking at random or naming the leader (the generator picks; `leader` sets how often it picks the leader)",
        ));
    }
    let leaders: Vec<String> = topology
        .datacenters
        .iter()
        .filter(|d| d.servers > 0)
        .map(|d| d.name.clone())
        .collect();
    let leader_share = match c.leader {
        Some(share) if !leaders.is_empty() || share == 0.0 => share,
        Some(_) => {
            return Err(err(
                "chaos.leader picks Raft leaders, and no datacenter has servers: give one servers = 3, or leave leader out",
            ))
        }
        None if leaders.is_empty() => 0.0,
        None => 0.25,
    };
    let windows = match &c.window {
        Some([lo, hi]) => (dur("chaos.window", lo)?, dur("chaos.window", hi)?),
        None => (Duration::from_millis(200), Duration::from_secs(5)),
    };
    let space = Space {
        nodes: resolve_names(&targets, topology, 0, ""),
        everyone: topology.names(),
        leaders,
        kinds,
        leader_share,
        span,
        windows,
    };
    space.validate().map_err(|e| err(format!("chaos: {e}")))?;
    Ok(Chaos {
        from,
        faults: c.faults,
        space,
        given: None,
    })
}

//! The network a scenario describes: `[gossip]`'s pool, `[latency]` (the
//! model: distributions, loss, bandwidth, a measured matrix), the
//! `[[datacenter]]`s placed on it, which together make the [`Topology`],
//! and the fixed `[[link]]` rules on top of it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::parse::{bandwidth, between, dist, dur, err, rate, ScenarioError, Side};
use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope, Sites, Topology};
use crate::scenario::select::Selector;
use crate::tomography::Matrix;

/// Most nodes a scenario may have (the protocol engine's reach).
pub const MAX_NODES: usize = 200_000;

/// A fixed change to the model's links between two sets of nodes.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRule {
    /// The two sets; every link between them is affected.
    pub between: (Vec<Selector>, Vec<Selector>),
    /// One-way latency instead of the model's.
    pub latency: Option<Duration>,
    /// Loss rate instead of the model's.
    pub loss: Option<f64>,
    /// Bandwidth (bytes per second) instead of the model's.
    pub bandwidth: Option<f64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct LatencySection {
    matrix: Option<String>,
    intra_dc: Option<toml::Value>,
    inter_dc: Option<String>,
    jitter: Option<toml::Value>,
    loss: Option<f64>,
    bandwidth: Option<String>,
    duplicate: Option<f64>,
    reorder: Option<f64>,
    km_per_ms: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DatacenterSection {
    name: String,
    #[serde(default)]
    clients: usize,
    #[serde(default)]
    servers: usize,
    row: Option<u32>,
    rows: Option<toml::Value>,
    city: Option<String>,
    lat: Option<f64>,
    lon: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LinkSection {
    between: Vec<Side>,
    latency: Option<String>,
    loss: Option<f64>,
    bandwidth: Option<String>,
}

/// The rows a `rows` key names: a list of row ids, or `"all"`: every row
/// (by id) measured against every row taken before it, so that all pairs
/// have a measured latency.
fn matrix_rows(here: &str, spec: &toml::Value, m: &Matrix) -> Result<Vec<u32>, ScenarioError> {
    let rows: Vec<u32> = match spec {
        toml::Value::String(s) if s == "all" => {
            let mut rows: Vec<u32> = Vec::new();
            for id in 0..m.nodes {
                if !m.peers[id as usize].is_empty()
                    && rows.iter().all(|&r| m.rtt_ms(r, id).is_some())
                {
                    rows.push(id);
                }
            }
            rows
        }
        toml::Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_integer()
                    .and_then(|i| u32::try_from(i).ok())
                    .filter(|&r| r < m.nodes && !m.peers[r as usize].is_empty())
                    .ok_or_else(|| {
                        err(format!(
                            "{here}: rows lists {v}, which is not a measured row of {} (0 to {})",
                            m.name,
                            m.nodes.saturating_sub(1)
                        ))
                    })
            })
            .collect::<Result<_, _>>()?,
        _ => {
            return Err(err(format!(
                "{here}: rows is \"all\" or a list of row ids, like [2, 4, 5]"
            )))
        }
    };
    if rows.is_empty() {
        return Err(err(format!("{here}: rows names no row")));
    }
    Ok(rows)
}

/// The topology `[gossip]`'s `pool`, `[latency]` and the `[[datacenter]]`s
/// describe; data files are relative to `base`.
pub(super) fn topology(
    pool: Option<&str>,
    l: &LatencySection,
    sections: &[DatacenterSection],
    base: &Path,
) -> Result<Topology, ScenarioError> {
    let pool = match pool {
        None | Some("datacenter") => PoolScope::Datacenter,
        Some("global") => PoolScope::Global,
        Some(other) => {
            return Err(err(format!(
                "gossip.pool is datacenter (one pool per datacenter) or global (one pool for all), not {other:?}"
            )))
        }
    };
    let latency = latency(l, base)?;
    let dcs = datacenters(sections, &latency)?;
    let topology = Topology::new(dcs, pool, latency);
    let mut seen = std::collections::BTreeSet::new();
    if let Some(dup) = topology
        .nodes
        .iter()
        .find(|n| !seen.insert(n.name.as_str()))
    {
        return Err(err(format!(
            "two nodes would be named {:?}: rename a datacenter",
            dup.name
        )));
    }
    if topology.nodes.len() > MAX_NODES {
        return Err(err(format!(
            "{} nodes is more than the {MAX_NODES} a scenario may have",
            topology.nodes.len()
        )));
    }
    Ok(topology)
}

/// The latency model `[latency]` describes.
fn latency(l: &LatencySection, base: &Path) -> Result<LatencyModel, ScenarioError> {
    let mut latency = LatencyModel::default();
    if let Some(v) = &l.intra_dc {
        latency.intra_dc = dist("latency.intra_dc", v)?;
    }
    if let Some(v) = &l.jitter {
        latency.jitter = dist("latency.jitter", v)?;
    }
    if let Some(v) = &l.inter_dc {
        latency.inter_dc = dur("latency.inter_dc", v)?;
    }
    if let Some(v) = l.loss {
        latency.loss = rate("latency.loss", v)?;
    }
    if let Some(v) = &l.bandwidth {
        latency.bandwidth = bandwidth("latency.bandwidth", v)?;
    }
    if let Some(v) = l.duplicate {
        latency.duplicate = rate("latency.duplicate", v)?;
    }
    if let Some(v) = l.reorder {
        latency.reorder = rate("latency.reorder", v)?;
    }
    if let Some(v) = l.km_per_ms {
        if !(v.is_finite() && v > 0.0) {
            return Err(err("latency.km_per_ms must be a positive number"));
        }
        latency.km_per_ms = v;
    }
    if let Some(file) = &l.matrix {
        let sites =
            Sites::load(&base.join(file)).map_err(|e| err(format!("latency.matrix: {e}")))?;
        latency.matrix = Some(Arc::new(sites));
    }
    Ok(latency)
}

/// The `[[datacenter]]`s, placed on `latency`'s matrix or map (a `rows`
/// section makes one datacenter per row).
fn datacenters(
    sections: &[DatacenterSection],
    latency: &LatencyModel,
) -> Result<Vec<Datacenter>, ScenarioError> {
    let mut dcs: Vec<Datacenter> = Vec::new();
    if sections.is_empty() {
        return Err(err("a scenario needs at least one [[datacenter]]"));
    }
    for d in sections {
        let here = format!("datacenter {:?}", d.name);
        if d.name.is_empty()
            || !d
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(err(format!(
                "{here}: names are letters, digits, '-' and '_'"
            )));
        }
        if dcs.iter().any(|x| x.name == d.name) {
            return Err(err(format!("{here} appears twice")));
        }
        if d.clients + d.servers == 0 {
            return Err(err(format!(
                "{here} has no nodes: set clients (and later servers)"
            )));
        }
        if let Some(spec) = &d.rows {
            if d.row.is_some() || d.city.is_some() || d.lat.is_some() || d.lon.is_some() {
                return Err(err(format!(
                    "{here}: rows places one datacenter per row; drop row, city, lat and lon"
                )));
            }
            let m = latency
                .matrix
                .as_ref()
                .ok_or_else(|| err(format!("{here}: rows needs latency.matrix")))?;
            for r in matrix_rows(&here, spec, &m.matrix)? {
                dcs.push(Datacenter {
                    name: format!("{}-{r}", d.name),
                    clients: d.clients,
                    servers: d.servers,
                    location: Location::Row(r),
                });
            }
            continue;
        }
        let location = match (d.row, &d.city, d.lat, d.lon) {
            (None, None, None, None) => Location::Unplaced,
            (Some(r), None, None, None) => {
                let m = latency
                    .matrix
                    .as_ref()
                    .ok_or_else(|| err(format!("{here}: row needs latency.matrix")))?;
                if r >= m.matrix.nodes || m.matrix.peers[r as usize].is_empty() {
                    return Err(err(format!(
                        "{here}: row {r} has no measurements in {} (rows 0 to {})",
                        m.matrix.name,
                        m.matrix.nodes.saturating_sub(1)
                    )));
                }
                Location::Row(r)
            }
            (None, Some(city), None, None) => {
                let m = latency
                    .matrix
                    .as_ref()
                    .ok_or_else(|| err(format!("{here}: city needs latency.matrix")))?;
                Location::Row(m.find(city).ok_or_else(|| {
                    err(format!(
                        "{here}: city {city:?} is not a label in the site table of {} (NAME.nodes.csv); use row = ID instead",
                        m.matrix.name
                    ))
                })?)
            }
            (None, None, Some(lat), Some(lon)) => {
                if !(-90.0..=90.0).contains(&lat) || !(-180.0..=180.0).contains(&lon) {
                    return Err(err(format!("{here}: lat is -90 to 90 and lon -180 to 180")));
                }
                Location::Geo { lat, lon }
            }
            _ => {
                return Err(err(format!(
                    "{here}: give one location: row, city, or lat and lon together"
                )))
            }
        };
        dcs.push(Datacenter {
            name: d.name.clone(),
            clients: d.clients,
            servers: d.servers,
            location,
        });
    }
    Ok(dcs)
}

/// The fixed `[[link]]` rules.
pub(super) fn links(
    topology: &Topology,
    sections: &[LinkSection],
) -> Result<Vec<LinkRule>, ScenarioError> {
    let mut rules = Vec::new();
    for (i, l) in sections.iter().enumerate() {
        let here = format!("link #{}", i + 1);
        let pair = between(topology, &here, &Some(l.between.clone()))?.unwrap_or_default();
        if pair.0.iter().chain(&pair.1).any(Selector::is_random) {
            return Err(err(format!(
                "{here}: links are fixed; name nodes or datacenters, not fraction or count"
            )));
        }
        let latency = l
            .latency
            .as_deref()
            .map(|v| dur(&format!("{here}: latency"), v))
            .transpose()?;
        let loss = l
            .loss
            .map(|v| rate(&format!("{here}: loss"), v))
            .transpose()?;
        let bandwidth = l
            .bandwidth
            .as_deref()
            .map(|v| bandwidth(&format!("{here}: bandwidth"), v))
            .transpose()?;
        if latency.is_none() && loss.is_none() && bandwidth.is_none() {
            return Err(err(format!(
                "{here} changes nothing: set latency, loss or bandwidth"
            )));
        }
        rules.push(LinkRule {
            between: pair,
            latency,
            loss,
            bandwidth,
        });
    }
    Ok(rules)
}

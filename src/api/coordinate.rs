//! `/v1/coordinate/*`: the network coordinates the servers store (agents
//! send theirs now and then, see `sync_coordinates` in the agent), and the
//! servers' coordinates per datacenter. Agents without any server answer
//! from what their own gossip learned.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::context::{read, Api};
use super::error::{bad, internal, unexpected, ApiError};
use crate::env::Env;
use crate::server::{Answer, ClientRequest, Query};

/// A network coordinate in Consul's JSON shape.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiCoord {
    /// Euclidean part (seconds).
    pub vec: Vec<f64>,
    /// Relative error estimate.
    pub error: f64,
    /// Per-node offset (seconds).
    pub adjustment: f64,
    /// Height (seconds).
    pub height: f64,
}

impl From<&crate::coordinate::Coordinate> for ApiCoord {
    fn from(c: &crate::coordinate::Coordinate) -> Self {
        ApiCoord {
            vec: c.vec.clone(),
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

impl From<ApiCoord> for crate::coordinate::Coordinate {
    fn from(c: ApiCoord) -> Self {
        crate::coordinate::Coordinate {
            vec: c.vec,
            error: c.error,
            adjustment: c.adjustment,
            height: c.height,
        }
    }
}

/// One entry of `/v1/coordinate/nodes`.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiNodeCoord {
    /// Node name.
    pub node: String,
    /// Network segment (always the default, empty).
    #[serde(default)]
    pub segment: String,
    /// The node's coordinate.
    pub coord: ApiCoord,
}

impl ApiNodeCoord {
    /// `node`'s coordinate `c`, in the default segment.
    pub fn new(node: String, c: &crate::coordinate::Coordinate) -> Self {
        ApiNodeCoord {
            node,
            segment: String::new(),
            coord: ApiCoord::from(c),
        }
    }
}

/// One datacenter of `/v1/coordinate/datacenters`.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiDcCoords {
    /// Datacenter name.
    pub datacenter: String,
    /// The gossip pool the coordinates come from.
    #[serde(rename = "AreaID")]
    pub area_id: String,
    /// Its servers' coordinates, under their node names: Consul strips the
    /// WAN pool's `.<dc>` suffix, so a name here is the one the catalog and
    /// `/v1/coordinate/update` know.
    pub coordinates: Vec<ApiNodeCoord>,
}

/// The stored coordinates, in Consul's shape, with the read's headers.
async fn stored<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(axum::http::HeaderMap, Vec<ApiNodeCoord>), ApiError> {
    // A cluster of agents without servers (a gossip-only testbed) has no
    // catalog; its coordinates are the ones this agent's gossip learned.
    if !s.servers.any().await {
        let coords = s.gossip.coordinates().await.map_err(internal)?;
        let all = coords
            .members
            .iter()
            .map(|(node, c)| ApiNodeCoord::new(node.clone(), c))
            .collect();
        return Ok((axum::http::HeaderMap::new(), all));
    }
    match read(s, params, Query::Coordinates).await? {
        (h, Answer::Coordinates(all)) => Ok((
            h,
            all.iter()
                .map(|(node, c)| ApiNodeCoord::new(node.clone(), c))
                .collect(),
        )),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/coordinate/nodes`: every node's stored LAN coordinate
/// (blocking, with `X-Consul-Index`).
pub async fn nodes<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, all) = stored(&s, &params).await?;
    Ok((h, Json(all)).into_response())
}

/// `GET /v1/coordinate/node/<n>`: the node's coordinate, in a list of one
/// as Consul answers; 404 when none is stored.
pub async fn node<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, all) = stored(&s, &params).await?;
    let mine: Vec<ApiNodeCoord> = all.into_iter().filter(|c| c.node == name).collect();
    if mine.is_empty() {
        return Ok((StatusCode::NOT_FOUND, h).into_response());
    }
    Ok((h, Json(mine)).into_response())
}

/// The body of `PUT /v1/coordinate/update`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Update {
    node: String,
    #[serde(default)]
    coord: Option<ApiCoord>,
}

/// The node and coordinate an update body gives, checked (apart from the
/// handler so the fuzz target checks the same).
pub(super) fn update_of(body: &[u8]) -> Result<(String, crate::coordinate::Coordinate), ApiError> {
    let u: Update = super::decode::body(body)?;
    if u.node.is_empty() {
        return Err(bad("Must provide node"));
    }
    let coord: crate::coordinate::Coordinate = u
        .coord
        .ok_or_else(|| bad("Must provide coordinate"))?
        .into();
    if !coord.is_valid() {
        return Err(bad("rejected bad coordinate: values must be finite"));
    }
    Ok((u.node, coord))
}

/// `PUT /v1/coordinate/update`: stores a node's coordinate. As in Consul
/// the leader writes updates in batches, so it shows up within a batch
/// period, and an update for a node the catalog does not know is dropped.
pub async fn update<E: Env>(s: Api<E>, body: Bytes) -> Result<Json<bool>, ApiError> {
    let (node, coord) = update_of(&body)?;
    let local = s.gossip.coordinates().await.map_err(internal)?.local;
    if local.is_some_and(|l| !l.is_compatible_with(&coord)) {
        return Err(bad("rejected bad coordinate: incompatible dimensionality"));
    }
    let reply = super::context::call(
        &s,
        ClientRequest::Coordinates {
            updates: vec![(node, coord)],
            hops: 0,
        },
    )
    .await;
    reply.answer.map_err(super::error::refusal)?;
    Ok(Json(true))
}

/// `GET /v1/coordinate/datacenters`: every datacenter's servers and their
/// WAN coordinates, from this server's WAN pool. A client agent (in no
/// WAN pool) gives its own datacenter, with its servers' LAN coordinates.
pub async fn datacenters<E: Env>(s: Api<E>) -> Result<Json<Vec<ApiDcCoords>>, ApiError> {
    if let Some(wan) = &s.wan {
        let members = wan.members().await.map_err(internal)?;
        let coords = wan.coordinates().await.map_err(internal)?;
        let mut by_dc: std::collections::BTreeMap<String, Vec<ApiNodeCoord>> =
            std::collections::BTreeMap::new();
        for m in &members {
            let Some(sm) = crate::server::member::server_of(m) else {
                continue;
            };
            if let Some(c) = coords.members.get(&m.name) {
                let node = m.name.strip_suffix(&format!(".{}", sm.dc));
                let node = node.unwrap_or(&m.name).to_string();
                by_dc
                    .entry(sm.dc)
                    .or_default()
                    .push(ApiNodeCoord::new(node, c));
            }
        }
        return Ok(Json(
            by_dc
                .into_iter()
                .map(|(datacenter, coordinates)| ApiDcCoords {
                    datacenter,
                    area_id: "wan".into(),
                    coordinates,
                })
                .collect(),
        ));
    }
    let members = s.gossip.members().await.map_err(internal)?;
    let coords = s.gossip.coordinates().await.map_err(internal)?;
    let dc = &s.info.datacenter;
    let coordinates = crate::server::member::wan_servers(&members, dc)
        .filter_map(|(_, m)| {
            Some(ApiNodeCoord::new(
                m.name.clone(),
                coords.members.get(&m.name)?,
            ))
        })
        .collect();
    Ok(Json(vec![ApiDcCoords {
        datacenter: dc.clone(),
        area_id: "wan".into(),
        coordinates,
    }]))
}

/// `GET /v1/coordinate/rtt?source=DC&destination=DC`: the estimated RTT
/// between every server of one datacenter and every server of the other,
/// from WAN coordinates, as percentiles (ms). Nothing is measured: the
/// answer is instant, which is the point of network coordinates.
///
/// With `&nodes=all`, between every node of one and every node of the
/// other: a node's LAN distance to the nearest server of its datacenter,
/// plus the WAN distance between the two servers, plus the other side's
/// LAN leg (each datacenter's LAN coordinates come from its own servers).
/// At most [`MAX_NODES_PER_SIDE`] nodes of each side are taken, evenly
/// spread by name.
pub async fn rtt_between<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<std::collections::HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let (Some(src), Some(dst)) = (params.get("source"), params.get("destination")) else {
        return Err(bad(
            "required query parameters 'source' and 'destination' (datacenters)",
        ));
    };
    let all_nodes = match params.get("nodes").map(String::as_str) {
        None | Some("servers") => false,
        Some("all") => true,
        Some(other) => {
            return Err(bad(format!(
                "nodes is \"servers\" (the default) or \"all\", not {other:?}"
            )))
        }
    };
    let Some(wan) = &s.wan else {
        return Err(bad(
            "this agent is in no WAN pool; ask a server (WAN coordinates are the servers')",
        ));
    };
    let members = wan.members().await.map_err(internal)?;
    let coords = wan.coordinates().await.map_err(internal)?;
    // Each server of `dc` with a WAN coordinate, by its LAN node name.
    let servers = |dc: &str| -> Vec<(String, crate::coordinate::Coordinate)> {
        members
            .iter()
            .filter(|m| crate::server::member::server_of(m).is_some_and(|sm| sm.dc == dc))
            .filter_map(|m| {
                let lan = m.name.strip_suffix(&format!(".{dc}"))?.to_string();
                Some((lan, coords.members.get(&m.name)?.clone()))
            })
            .collect()
    };
    let (a, b) = (servers(src), servers(dst));
    let (rtts, nodes) = if all_nodes {
        let (legs_a, legs_b) = (lan_legs(&s, src, &a).await?, lan_legs(&s, dst, &b).await?);
        let rtts = legs_a
            .iter()
            .flat_map(|(na, sa, la)| {
                let (a, b) = (&a, &b);
                legs_b
                    .iter()
                    .filter(move |(nb, _, _)| !(src == dst && nb == na))
                    .map(move |(_, sb, lb)| {
                        la + a[*sa].1.distance_to(&b[*sb].1).as_secs_f64() * 1000.0 + lb
                    })
            })
            .collect::<Vec<f64>>();
        (rtts, (legs_a.len(), legs_b.len()))
    } else {
        let rtts = a
            .iter()
            .flat_map(|(na, ca)| {
                b.iter()
                    .filter(move |(nb, _)| nb != na)
                    .map(move |(_, cb)| ca.distance_to(cb).as_secs_f64() * 1000.0)
            })
            .collect::<Vec<f64>>();
        (rtts, (a.len(), b.len()))
    };
    percentiles_json(src, dst, rtts, nodes, all_nodes)
}

/// Most nodes of each datacenter `?nodes=all` takes.
pub const MAX_NODES_PER_SIDE: usize = 1000;

/// Every node of `dc` (at most [`MAX_NODES_PER_SIDE`]) with its nearest
/// server in `servers` (an index) and the LAN distance to it, ms; from
/// `dc`'s stored LAN coordinates.
async fn lan_legs<E: Env>(
    s: &Api<E>,
    dc: &str,
    servers: &[(String, crate::coordinate::Coordinate)],
) -> Result<Vec<(String, usize, f64)>, ApiError> {
    let remote = (dc != s.info.datacenter).then(|| dc.to_string());
    let all = match read(&s.in_dc(remote), &HashMap::new(), Query::Coordinates).await? {
        (_, Answer::Coordinates(all)) => all,
        (_, a) => return Err(unexpected(a)),
    };
    let lan: HashMap<&str, &crate::coordinate::Coordinate> =
        all.iter().map(|(n, c)| (n.as_str(), c)).collect();
    let step = all.len().div_ceil(MAX_NODES_PER_SIDE).max(1);
    Ok(all
        .iter()
        .step_by(step)
        .filter_map(|(node, c)| {
            servers
                .iter()
                .enumerate()
                .filter_map(|(i, (name, _))| {
                    // A server is its own nearest server, at no distance
                    // (a coordinate's distance to itself counts its height
                    // twice).
                    if name == node {
                        return Some((i, 0.0));
                    }
                    let d = c.distance_to(lan.get(name.as_str())?).as_secs_f64() * 1000.0;
                    Some((i, d))
                })
                .min_by(|x, y| x.1.total_cmp(&y.1))
                .map(|(i, d)| (node.clone(), i, d))
        })
        .collect())
}

/// The answer of [`rtt_between`].
fn percentiles_json(
    src: &str,
    dst: &str,
    mut rtts: Vec<f64>,
    nodes: (usize, usize),
    all_nodes: bool,
) -> Result<Json<serde_json::Value>, ApiError> {
    if rtts.is_empty() {
        let what = if all_nodes {
            "LAN and WAN coordinates for node pairs"
        } else {
            "WAN coordinates for server pairs"
        };
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no {what} of {src:?} and {dst:?} (yet)"),
        ));
    }
    rtts.sort_by(f64::total_cmp);
    let p = |q| crate::coordinate::percentile(&rtts, q);
    Ok(Json(serde_json::json!({
        "Source": src,
        "Destination": dst,
        "Nodes": if all_nodes { "all" } else { "servers" },
        "SourceNodes": nodes.0,
        "DestinationNodes": nodes.1,
        "Pairs": rtts.len(),
        "P50Ms": p(0.5),
        "P90Ms": p(0.9),
        "P99Ms": p(0.99),
        "MinMs": rtts[0],
        "MaxMs": rtts[rtts.len() - 1],
    })))
}

/// Sorts a list answer by the estimated RTT from `origin` to each item's
/// node (`"Node"`, or `"Node"."Node"` in health answers), nearest first;
/// items of nodes without a coordinate go last, in their order. Nothing
/// moves when `origin` has no coordinate.
pub(crate) fn sort_near(
    value: &mut serde_json::Value,
    origin: &str,
    coords: &crate::gossip::Coordinates,
) {
    let Some(from) = coords.members.get(origin) else {
        return;
    };
    let Some(items) = value.as_array_mut() else {
        return;
    };
    let node_of = |v: &serde_json::Value| -> Option<String> {
        match &v["Node"] {
            serde_json::Value::String(n) => Some(n.clone()),
            serde_json::Value::Object(o) => o.get("Node")?.as_str().map(str::to_owned),
            _ => None,
        }
    };
    let mut keyed: Vec<(f64, serde_json::Value)> = items
        .drain(..)
        .map(|v| {
            let d = node_of(&v)
                .and_then(|n| coords.members.get(&n))
                .map_or(f64::INFINITY, |c| from.distance_to(c).as_secs_f64());
            (d, v)
        })
        .collect();
    keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
    items.extend(keyed.into_iter().map(|(_, v)| v));
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::coordinate::on_line as at;

    #[test]
    fn near_sorts_by_estimated_rtt_and_puts_the_unknown_last() {
        let coords = crate::gossip::Coordinates {
            local: None,
            members: [("a", 0.0), ("b", 0.05), ("c", 0.01), ("d", 0.2)]
                .into_iter()
                .map(|(n, x)| (n.to_string(), at(x)))
                .collect(),
        };
        // Catalog answers name the node as a string, health answers as
        // an object.
        let mut v = json!([
            {"Node": "d"}, {"Node": "x"}, {"Node": {"Node": "b"}}, {"Node": "c"}, {"Node": "a"}
        ]);
        sort_near(&mut v, "a", &coords);
        let order: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|i| match &i["Node"] {
                serde_json::Value::String(s) => s.clone(),
                o => o["Node"].as_str().unwrap().to_string(),
            })
            .collect();
        assert_eq!(order, ["a", "c", "b", "d", "x"]);
        // From a node without a coordinate nothing moves.
        let before = v.clone();
        sort_near(&mut v, "nobody", &coords);
        assert_eq!(v, before);
    }
}

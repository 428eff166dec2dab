//! `/v1/catalog/*` and `/v1/health/*`: the servers' catalog of nodes,
//! services and checks, in Consul's JSON shapes, with blocking queries
//! (`?index`, `?wait`) and `?stale`/`?consistent` like every read.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};

use super::context::{read, write_cmd, Api};
use super::error::{bad, unexpected, ApiError};
use crate::env::Env;
use crate::server::{Answer, Instance, Query};
use crate::state::{Check, Command, Health, Node, Service};

/// `GET /v1/catalog/datacenters`: every datacenter of the WAN pool, this
/// one first, then nearest first by estimated RTT (a server's answer; a
/// client agent asks one).
pub async fn datacenters<E: Env>(s: Api<E>) -> Result<Json<Vec<String>>, ApiError> {
    let reply = super::context::call(&s, crate::server::ClientRequest::Datacenters).await;
    match super::context::answer_of(&reply)? {
        Answer::Datacenters(v) => Ok(Json(v)),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/catalog/nodes`.
pub async fn nodes<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    match read(&s, &params, Query::Nodes).await? {
        (h, Answer::Nodes(n)) => Ok((h, Json(n)).into_response()),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/catalog/services`: every service name with its tags.
pub async fn services<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Some(expr) = params.get("filter").filter(|f| !f.is_empty()) else {
        return match read(&s, &params, Query::Services).await? {
            (h, Answer::Services(m)) => Ok((h, Json(m)).into_response()),
            (_, a) => Err(unexpected(a)),
        };
    };
    // Consul filters the instances, then lists the names and tags of
    // those that pass.
    let filter = super::filter::Filter::parse(expr).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Failed to create boolean expression evaluator: {e}"),
        )
    })?;
    let (h, all) = match read(&s, &params, Query::AllInstances).await? {
        (h, Answer::Instances(v)) => (h, v),
        (_, a) => return Err(unexpected(a)),
    };
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for i in &all {
        let item = serde_json::to_value(CatalogService::from(i)).map_err(super::error::internal)?;
        if filter.matches(&item) {
            let tags = out.entry(i.service.service.clone()).or_default();
            for t in &i.service.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
    }
    Ok((h, Json(out)).into_response())
}

/// One instance as `/v1/catalog/service/<s>` lists it: node and service
/// fields side by side.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    /// The node's ID.
    #[serde(rename = "ID")]
    pub id: String,
    /// The node's name.
    pub node: String,
    /// The node's address.
    pub address: String,
    /// Its datacenter.
    pub datacenter: String,
    /// The node's tagged addresses.
    pub tagged_addresses: BTreeMap<String, String>,
    /// The node's metadata.
    pub node_meta: BTreeMap<String, String>,
    /// Instance ID.
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// Service name.
    pub service_name: String,
    /// Instance tags.
    pub service_tags: Vec<String>,
    /// Instance address ("" for the node's).
    pub service_address: String,
    /// Instance port.
    pub service_port: u16,
    /// Instance metadata.
    pub service_meta: BTreeMap<String, String>,
    /// The instance's tagged addresses.
    #[serde(default)]
    pub service_tagged_addresses: BTreeMap<String, crate::state::ServiceAddress>,
    /// The instance's DNS SRV weights.
    #[serde(default)]
    pub service_weights: crate::state::Weights,
    /// Instance kind.
    pub service_kind: String,
    /// A proxy's settings.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service_proxy: Option<Box<crate::state::ServiceProxy>>,
    /// Whether anti-entropy leaves its tags alone.
    pub service_enable_tag_override: bool,
    /// The instance's create index.
    pub create_index: u64,
    /// The instance's modify index.
    pub modify_index: u64,
}

impl From<&Instance> for CatalogService {
    fn from(i: &Instance) -> Self {
        let (n, s) = (&i.node, &i.service);
        CatalogService {
            id: n.id.clone(),
            node: n.node.clone(),
            address: n.address.clone(),
            datacenter: n.datacenter.clone(),
            tagged_addresses: n.tagged_addresses.clone(),
            node_meta: n.meta.clone(),
            service_id: s.id.clone(),
            service_name: s.service.clone(),
            service_tags: s.tags.clone(),
            service_address: s.address.clone(),
            service_port: s.port,
            service_meta: s.meta.clone(),
            service_tagged_addresses: s.tagged_addresses.clone(),
            service_weights: s.weights,
            service_kind: s.kind.clone(),
            service_proxy: s.proxy.clone(),
            service_enable_tag_override: s.enable_tag_override,
            create_index: s.create_index,
            modify_index: s.modify_index,
        }
    }
}

/// A service's instances, or with `connect` the proxies in front of it.
async fn instances<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    service: String,
    connect: bool,
) -> Result<(axum::http::HeaderMap, Vec<Instance>), ApiError> {
    let tag = params.get("tag").cloned();
    // Instances imported from a cluster peer are asked for by its name;
    // cairn has no peerings, so a named peer has none.
    let from_peer = params.get("peer").is_some_and(|p| !p.is_empty());
    let query = if connect {
        Query::ConnectProxies(service)
    } else {
        Query::Instances { service, tag }
    };
    match read(s, params, query).await? {
        (h, Answer::Instances(_)) if from_peer => Ok((h, Vec::new())),
        (h, Answer::Instances(v)) => Ok((h, v)),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/catalog/service/<s>` (`?tag`).
pub async fn service<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    catalog_instances(&s, &params, name, false).await
}

/// `GET /v1/catalog/connect/<s>`: the Connect proxies of `s`.
pub async fn connect<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    catalog_instances(&s, &params, name, true).await
}

async fn catalog_instances<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    name: String,
    connect: bool,
) -> Result<Response, ApiError> {
    let (h, v) = instances(s, params, name, connect).await?;
    let out: Vec<CatalogService> = v.iter().map(CatalogService::from).collect();
    Ok((h, Json(out)).into_response())
}

/// A node with its services, as `/v1/catalog/node/<n>` gives it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServicesMap {
    node: Node,
    services: BTreeMap<String, Service>,
}

/// The same with a list, as `/v1/catalog/node-services/<n>` gives it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeServicesList {
    node: Node,
    services: Vec<Service>,
}

async fn node_services<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    name: String,
) -> Result<(axum::http::HeaderMap, Option<(Node, Vec<Service>)>), ApiError> {
    match read(s, params, Query::NodeServices(name)).await? {
        (h, Answer::NodeServices(v)) => Ok((h, v)),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/catalog/node/<n>`: `null` for an unknown node, as Consul.
pub async fn node<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = node_services(&s, &params, name).await?;
    let body = v.map(|(node, svcs)| NodeServicesMap {
        node,
        services: svcs.into_iter().map(|s| (s.id.clone(), s)).collect(),
    });
    Ok((h, Json(body)).into_response())
}

/// `GET /v1/catalog/node-services/<n>`: 404 for an unknown node, as Consul.
pub async fn node_services_list<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = node_services(&s, &params, name).await?;
    match v {
        Some((node, services)) => {
            Ok((h, Json(NodeServicesList { node, services })).into_response())
        }
        None => Ok((StatusCode::NOT_FOUND, h, "Node not found").into_response()),
    }
}

/// `PUT /v1/catalog/register`'s body (Consul's field names).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct RegisterBody {
    #[serde(rename = "ID")]
    id: String,
    node: String,
    address: String,
    datacenter: String,
    tagged_addresses: BTreeMap<String, String>,
    node_meta: BTreeMap<String, String>,
    service: Option<Service>,
    check: Option<Check>,
    checks: Vec<Check>,
}

/// `PUT /v1/catalog/register`.
pub async fn register<E: Env>(s: Api<E>, body: axum::body::Bytes) -> Result<Json<bool>, ApiError> {
    let b: RegisterBody = super::decode::body(&body)?;
    // A body naming another datacenter is registered there.
    let dc = s.body_dc(&b.datacenter);
    let cmd = b.into_command(dc.clone().unwrap_or_else(|| s.info.datacenter.clone()))?;
    write_cmd(&s.in_dc(dc), cmd).await.map(Json)
}

impl RegisterBody {
    /// The registration, checked, of a node in datacenter `dc` (apart
    /// from the handler so the fuzz target checks the same).
    pub(super) fn into_command(self, dc: String) -> Result<Command, ApiError> {
        if self.node.is_empty() {
            return Err(bad("Must provide node"));
        }
        if self.address.is_empty() {
            return Err(bad("Must provide address"));
        }
        if let Some(svc) = &self.service {
            if svc.service.is_empty() {
                return Err(bad("Must provide service name with ID"));
            }
        }
        let node = Node {
            id: self.id,
            node: self.node.clone(),
            address: self.address,
            datacenter: dc,
            tagged_addresses: self.tagged_addresses,
            meta: self.node_meta,
            ..Node::default()
        };
        let checks: Vec<Check> = self.check.into_iter().chain(self.checks).collect();
        if checks
            .iter()
            .any(|c| c.check_id.is_empty() && c.name.is_empty())
        {
            return Err(bad("Must provide a CheckID or Name for every check"));
        }
        let checks = checks
            .into_iter()
            .map(|mut c| {
                c.node = self.node.clone();
                c
            })
            .collect();
        Ok(Command::Register {
            node,
            service: self.service.map(Box::new),
            checks,
        })
    }
}

/// `PUT /v1/catalog/deregister`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct DeregisterBody {
    node: String,
    datacenter: String,
    #[serde(rename = "ServiceID")]
    service_id: Option<String>,
    #[serde(rename = "CheckID")]
    check_id: Option<String>,
}

/// `PUT /v1/catalog/deregister`: a check, a service, or the whole node.
pub async fn deregister<E: Env>(
    s: Api<E>,
    body: axum::body::Bytes,
) -> Result<Json<bool>, ApiError> {
    let b: DeregisterBody = super::decode::body(&body)?;
    let dc = s.body_dc(&b.datacenter);
    let cmd = b.into_command()?;
    write_cmd(&s.in_dc(dc), cmd).await.map(Json)
}

impl DeregisterBody {
    /// The deregistration, checked (apart from the handler so the fuzz
    /// target checks the same).
    pub(super) fn into_command(self) -> Result<Command, ApiError> {
        if self.node.is_empty() {
            return Err(bad("Must provide node"));
        }
        let nonempty = |v: Option<String>| v.filter(|x| !x.is_empty());
        Ok(Command::Deregister {
            node: self.node,
            service_id: nonempty(self.service_id),
            check_id: nonempty(self.check_id),
        })
    }
}

async fn checks<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    query: Query,
) -> Result<Response, ApiError> {
    match read(s, params, query).await? {
        (h, Answer::Checks(c)) => Ok((h, Json(c)).into_response()),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/health/node/<n>`.
pub async fn health_node<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    checks(&s, &params, Query::NodeChecks(name)).await
}

/// `GET /v1/health/checks/<s>`.
pub async fn health_checks<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    checks(&s, &params, Query::ServiceChecks(name)).await
}

/// `GET /v1/health/state/<state>`: `any`, `passing`, `warning`,
/// `critical` or `maintenance`.
pub async fn health_state<E: Env>(
    s: Api<E>,
    Path(state): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let health = match state.as_str() {
        "any" => None,
        "passing" => Some(Health::Passing),
        "warning" => Some(Health::Warning),
        "critical" => Some(Health::Critical),
        "maintenance" => Some(Health::Maintenance),
        other => {
            return Err(bad(format!(
                "Invalid state {other:?}: use any, passing, warning, critical or maintenance"
            )))
        }
    };
    checks(&s, &params, Query::ChecksIn(health)).await
}

/// One entry of `/v1/health/service/<s>`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ServiceEntry {
    node: Node,
    service: Service,
    checks: Vec<Check>,
}

/// `GET /v1/health/service/<s>` (`?passing`, `?tag`): each instance with
/// its node and checks; with `passing`, only instances whose every check
/// passes.
pub async fn health_service<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    health_instances(&s, &params, name, false).await
}

/// `GET /v1/health/connect/<s>` (`?passing`): the Connect proxies of `s`
/// with their health, which is how a proxy finds where to send a
/// connection for its upstream `s`.
pub async fn health_connect<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    health_instances(&s, &params, name, true).await
}

async fn health_instances<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    name: String,
    connect: bool,
) -> Result<Response, ApiError> {
    let passing = params
        .get("passing")
        .is_some_and(|v| !matches!(v.as_str(), "false" | "0"));
    let (h, v) = instances(s, params, name, connect).await?;
    let out: Vec<ServiceEntry> = v
        .into_iter()
        .filter(|i| !passing || i.checks.iter().all(|c| c.status == Health::Passing))
        .map(|i| ServiceEntry {
            node: i.node,
            service: i.service,
            checks: i.checks,
        })
        .collect();
    Ok((h, Json(out)).into_response())
}

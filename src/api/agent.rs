//! `/v1/agent/service*` and `/v1/agent/check*`: the agent's own services
//! and checks ([`LocalState`](crate::agent::LocalState)), which
//! anti-entropy carries into the catalog.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::context::Api;
use super::error::{bad, ApiError};
use crate::acl::{Access, Resource};
use crate::agent::definition::{CheckDef, ServiceDef};
use crate::agent::local::NewCheck;
use crate::agent::LocalError;
use crate::env::Env;
use crate::state::{Check, Health, Service};

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> Self {
        let status = match e {
            LocalError::UnknownCheck(_) | LocalError::UnknownService(_) => StatusCode::NOT_FOUND,
            // py-consul reads a 404 here as "raise" (Consul after 1.11)
            // and expects a plain refusal from servers that report an
            // older version, as cairn's 0.x does.
            LocalError::MissingService(_) | LocalError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, e.to_string())
    }
}

/// A service as `/v1/agent/services` lists it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    #[serde(rename = "ID")]
    id: String,
    service: String,
    tags: Vec<String>,
    meta: BTreeMap<String, String>,
    port: u16,
    address: String,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tagged_addresses: BTreeMap<String, crate::state::ServiceAddress>,
    weights: crate::state::Weights,
    enable_tag_override: bool,
    datacenter: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    proxy: Option<Box<crate::state::ServiceProxy>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    locality: Option<crate::state::Locality>,
}

/// `GET /v1/agent/services`: this agent's services by ID.
pub async fn services<E: Env>(s: Api<E>) -> Json<BTreeMap<String, AgentService>> {
    let out = s
        .local
        .services()
        .into_iter()
        .map(|v| {
            let a = AgentService {
                id: v.id.clone(),
                service: v.service,
                tags: v.tags,
                meta: v.meta,
                port: v.port,
                address: v.address,
                tagged_addresses: v.tagged_addresses,
                weights: v.weights,
                enable_tag_override: v.enable_tag_override,
                datacenter: s.info.datacenter.clone(),
                kind: v.kind,
                proxy: v.proxy,
                locality: v.locality,
            };
            (v.id, a)
        })
        .collect();
    Json(out)
}

/// `GET /v1/agent/checks`: this agent's checks by ID.
pub async fn checks<E: Env>(s: Api<E>) -> Json<BTreeMap<String, Check>> {
    Json(
        s.local
            .checks()
            .into_iter()
            .map(|c| (c.check_id.clone(), c))
            .collect(),
    )
}

/// `PUT /v1/agent/service/register`, with embedded checks.
pub async fn register_service<E: Env>(s: Api<E>, body: Bytes) -> Result<(), ApiError> {
    let d: ServiceDef = super::decode::body(&body)?;
    super::context::require(&s, Resource::Service, &d.name, Access::Write).await?;
    let sidecar_id = format!("{}-sidecar-proxy", d.id());
    // Ports other sidecars hold (a re-registered sidecar may keep its own).
    let taken: Vec<u16> = s
        .local
        .services()
        .iter()
        .filter(|x| x.kind == "connect-proxy" && x.id != sidecar_id)
        .map(|x| x.port)
        .collect();
    let ((service, checks), sidecar) = service_parts(&d, &taken, s.scripts.api)?;
    let now = s.env.now();
    s.local.add_service(service, checks, now)?;
    if let Some((svc, checks)) = sidecar {
        s.local.add_service(svc, checks, now)?;
    }
    Ok(())
}

/// A service and its checks, as the agent adds them.
type Parts = (Service, Vec<NewCheck>);

/// What a service definition registers: the service with its checks, and
/// its sidecar's (on a port not in `taken`), both checked before either
/// is added. Apart from the handler so the fuzz target checks the same.
pub(super) fn service_parts(
    d: &ServiceDef,
    taken: &[u16],
    scripts: bool,
) -> Result<(Parts, Option<Parts>), ApiError> {
    let sidecar = d.sidecar(taken).map_err(bad)?;
    let parts = d.to_parts(scripts).map_err(bad)?;
    let sidecar = sidecar
        .map(|sc| sc.to_parts(scripts))
        .transpose()
        .map_err(|e| bad(format!("SidecarService: {e}")))?;
    Ok((parts, sidecar))
}

/// `PUT /v1/agent/service/deregister/<id>`.
pub async fn deregister_service<E: Env>(s: Api<E>, Path(id): Path<String>) -> Result<(), ApiError> {
    s.local.remove_service(&id)?;
    // A sidecar registered with the service goes with it.
    let sidecar = format!("{id}-sidecar-proxy");
    let is_its_sidecar = s.local.services().iter().any(|x| {
        x.id == sidecar
            && x.proxy
                .as_ref()
                .is_some_and(|p| p.destination_service_id == id)
    });
    if is_its_sidecar {
        s.local.remove_service(&sidecar)?;
    }
    Ok(())
}

/// The check a `/v1/agent/check/register` body defines (apart from the
/// handler so the fuzz target checks the same).
pub(super) fn check_of(body: &[u8], scripts: bool) -> Result<NewCheck, ApiError> {
    let d: CheckDef = super::decode::body(body)?;
    d.to_check(scripts).map_err(bad)
}

/// `PUT /v1/agent/check/register`.
pub async fn register_check<E: Env>(s: Api<E>, body: Bytes) -> Result<(), ApiError> {
    let check = check_of(&body, s.scripts.api)?;
    match s
        .local
        .services()
        .into_iter()
        .find(|svc| !check.check.service_id.is_empty() && svc.id == check.check.service_id)
    {
        Some(svc) => {
            super::context::require(&s, Resource::Service, &svc.service, Access::Write).await?
        }
        None => {
            super::context::require(&s, Resource::Node, &s.info.node_name, Access::Write).await?
        }
    }
    Ok(s.local.add_check(check, s.env.now())?)
}

/// `PUT /v1/agent/check/deregister/<id>`.
pub async fn deregister_check<E: Env>(s: Api<E>, Path(id): Path<String>) -> Result<(), ApiError> {
    Ok(s.local.remove_check(&id)?)
}

/// `PUT /v1/agent/check/{pass,warn,fail}/<id>` (`?note=`).
pub async fn mark_check<E: Env>(
    s: Api<E>,
    Path((verb, id)): Path<(String, String)>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<(), ApiError> {
    let status = match verb.as_str() {
        "pass" => Health::Passing,
        "warn" => Health::Warning,
        "fail" => Health::Critical,
        _ => return Err(ApiError(StatusCode::NOT_FOUND, "Not Found".into())),
    };
    let note = params.get("note").map_or("", String::as_str);
    Ok(s.local.update_check(&id, status, note, s.env.now())?)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CheckUpdate {
    status: String,
    #[serde(default)]
    output: String,
}

/// `PUT /v1/agent/check/update/<id>` with `{"Status": ..., "Output": ...}`.
pub async fn update_check<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(), ApiError> {
    let (status, output) = check_update(&body)?;
    Ok(s.local.update_check(&id, status, &output, s.env.now())?)
}

/// The status and output a `/v1/agent/check/update/<id>` body sets (apart
/// from the handler so the fuzz target checks the same).
pub(super) fn check_update(body: &[u8]) -> Result<(Health, String), ApiError> {
    let u: CheckUpdate = super::decode::body(body)?;
    let status = match u.status.as_str() {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        "critical" => Health::Critical,
        other => return Err(bad(format!("Invalid check status: {other:?}"))),
    };
    Ok((status, u.output))
}

/// `?enable=true|false` of the maintenance endpoints.
fn enable_param(params: &HashMap<String, String>) -> Result<bool, ApiError> {
    match params.get("enable").map(String::as_str) {
        None | Some("") => Err(bad("Missing value for enable")),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(v) => Err(bad(format!("Invalid value for enable: {v:?}"))),
    }
}

/// Puts a maintenance check in place (critical, so the node or service
/// drops out of healthy answers), or takes it away.
fn maintenance<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    check_id: String,
    name: &str,
    service_id: &str,
    default_reason: &str,
) -> Result<(), ApiError> {
    if !enable_param(params)? {
        // Leaving maintenance that was never entered is no error.
        let _ = s.local.remove_check(&check_id);
        return Ok(());
    }
    let notes = params
        .get("reason")
        .filter(|r| !r.is_empty())
        .cloned()
        .unwrap_or_else(|| default_reason.to_owned());
    let check = Check {
        check_id,
        name: name.into(),
        notes,
        status: Health::Critical,
        service_id: service_id.into(),
        check_type: "maintenance".into(),
        ..Check::default()
    };
    Ok(s.local.add_check(NewCheck::new(check, None), s.env.now())?)
}

/// `PUT /v1/agent/maintenance?enable=...&reason=...`.
pub async fn node_maintenance<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<(), ApiError> {
    maintenance(
        &s,
        &params,
        "_node_maintenance".into(),
        "Node Maintenance Mode",
        "",
        "Maintenance mode is enabled for this node, but no reason was provided. This is a default message.",
    )
}

/// `PUT /v1/agent/service/maintenance/<id>?enable=...&reason=...`.
pub async fn service_maintenance<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<(), ApiError> {
    if !s.local.services().iter().any(|v| v.id == id) {
        return Err(LocalError::UnknownService(id).into());
    }
    maintenance(
        &s,
        &params,
        format!("_service_maintenance:{id}"),
        "Service Maintenance Mode",
        &id,
        "Maintenance mode is enabled for this service, but no reason was provided. This is a default message.",
    )
}

//! `/v1/agent/service*` and `/v1/agent/check*`: the agent's own services
//! and checks ([`LocalState`](crate::agent::LocalState)), which
//! anti-entropy carries into the catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};

use super::kv::bad;
use super::{ApiError, ApiState};
use crate::agent::config::parse_duration;
use crate::agent::local::{Kind, NewCheck, Probe, Target};
use crate::agent::LocalError;
use crate::env::Env;
use crate::state::{Check, Health, Service};

impl From<LocalError> for ApiError {
    fn from(e: LocalError) -> Self {
        let status = match e {
            LocalError::UnknownCheck(_) | LocalError::UnknownService(_) => StatusCode::NOT_FOUND,
            LocalError::Invalid(_) => StatusCode::BAD_REQUEST,
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
    enable_tag_override: bool,
    datacenter: String,
    kind: String,
}

/// `GET /v1/agent/services`: this agent's services by ID.
pub async fn services<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
) -> Json<BTreeMap<String, AgentService>> {
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
                enable_tag_override: v.enable_tag_override,
                datacenter: s.info.datacenter.clone(),
                kind: v.kind,
            };
            (v.id, a)
        })
        .collect();
    Json(out)
}

/// `GET /v1/agent/checks`: this agent's checks by ID.
pub async fn checks<E: Env>(State(s): State<Arc<ApiState<E>>>) -> Json<BTreeMap<String, Check>> {
    Json(
        s.local
            .checks()
            .into_iter()
            .map(|c| (c.check_id.clone(), c))
            .collect(),
    )
}

/// A check definition, as `/v1/agent/check/register` and a service's
/// `Check`/`Checks` give it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct CheckDef {
    #[serde(rename = "ID", alias = "CheckID")]
    id: String,
    name: String,
    notes: String,
    status: Option<Health>,
    #[serde(rename = "ServiceID")]
    service_id: String,
    #[serde(rename = "TTL")]
    ttl: Option<String>,
    #[serde(rename = "HTTP")]
    http: Option<String>,
    #[serde(rename = "TCP")]
    tcp: Option<String>,
    args: Option<Vec<String>>,
    interval: Option<String>,
    timeout: Option<String>,
    deregister_critical_service_after: Option<String>,
}

impl CheckDef {
    /// The check and how it is kept up to date.
    fn into_check(self) -> Result<NewCheck, ApiError> {
        let dur = |what: &str, v: &str| {
            parse_duration(v).map_err(|e| bad(format!("Invalid {what}: {e}")))
        };
        if self.args.is_some() {
            return Err(bad("Scripts are disabled on this agent; to enable, configure 'enable_script_checks' or 'enable_local_script_checks' to true"));
        }
        let target = match (self.http.clone(), self.tcp.clone()) {
            (Some(url), None) => Some(Target::Http(url)),
            (None, Some(addr)) => Some(Target::Tcp(addr)),
            (None, None) => None,
            (Some(_), Some(_)) => return Err(bad("a check is HTTP or TCP, not both")),
        };
        let no_interval = || bad("Interval must be > 0 for Script, HTTP, or TCP checks");
        let kind = match (&self.ttl, target) {
            (Some(t), None) => Kind::Ttl(dur("TTL", t)?),
            (None, Some(target)) => {
                let interval = dur(
                    "Interval",
                    self.interval.as_deref().ok_or_else(no_interval)?,
                )?;
                if interval.is_zero() {
                    return Err(no_interval());
                }
                let timeout = match &self.timeout {
                    Some(t) => dur("Timeout", t)?,
                    None => Duration::from_secs(10),
                };
                Kind::Probe(Probe {
                    target,
                    interval,
                    timeout,
                })
            }
            (None, None) => {
                return Err(bad(
                    "a check needs a TTL, or an HTTP or TCP target with an Interval",
                ))
            }
            (Some(_), Some(_)) => return Err(bad("a TTL check has no HTTP or TCP target")),
        };
        let deregister_after = self
            .deregister_critical_service_after
            .as_deref()
            .map(|d| dur("DeregisterCriticalServiceAfter", d))
            .transpose()?
            // Consul's floor: the reaper looks no more often than this.
            .map(|d| d.max(Duration::from_secs(60)));
        Ok(NewCheck {
            check: Check {
                check_id: self.id,
                name: self.name,
                notes: self.notes,
                status: self.status.unwrap_or(Health::Critical),
                service_id: self.service_id,
                ..Check::default()
            },
            kind: Some(kind),
            deregister_after,
        })
    }
}

/// `PUT /v1/agent/service/register`'s body.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct ServiceDef {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: u16,
    meta: BTreeMap<String, String>,
    enable_tag_override: bool,
    kind: String,
    check: Option<CheckDef>,
    checks: Vec<CheckDef>,
}

/// `PUT /v1/agent/service/register`, with embedded checks.
pub async fn register_service<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    body: Bytes,
) -> Result<(), ApiError> {
    let d: ServiceDef = super::decode::body(&body)?;
    let checks = d
        .check
        .into_iter()
        .chain(d.checks)
        .map(CheckDef::into_check)
        .collect::<Result<Vec<_>, _>>()?;
    let service = Service {
        id: d.id,
        service: d.name,
        tags: d.tags,
        address: d.address,
        meta: d.meta,
        port: d.port,
        kind: d.kind,
        enable_tag_override: d.enable_tag_override,
        ..Service::default()
    };
    s.local.add_service(service, checks, s.env.now())?;
    Ok(())
}

/// `PUT /v1/agent/service/deregister/<id>`.
pub async fn deregister_service<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    Path(id): Path<String>,
) -> Result<(), ApiError> {
    Ok(s.local.remove_service(&id)?)
}

/// `PUT /v1/agent/check/register`.
pub async fn register_check<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    body: Bytes,
) -> Result<(), ApiError> {
    let d: CheckDef = super::decode::body(&body)?;
    let check = d.into_check()?;
    if check.deregister_after.is_some() && check.check.service_id.is_empty() {
        return Err(bad(
            "DeregisterCriticalServiceAfter applies to service checks only",
        ));
    }
    Ok(s.local.add_check(check, s.env.now())?)
}

/// `PUT /v1/agent/check/deregister/<id>`.
pub async fn deregister_check<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    Path(id): Path<String>,
) -> Result<(), ApiError> {
    Ok(s.local.remove_check(&id)?)
}

/// `PUT /v1/agent/check/{pass,warn,fail}/<id>` (`?note=`).
pub async fn mark_check<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
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
    State(s): State<Arc<ApiState<E>>>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(), ApiError> {
    let u: CheckUpdate = super::decode::body(&body)?;
    let status = match u.status.as_str() {
        "passing" => Health::Passing,
        "warning" => Health::Warning,
        "critical" => Health::Critical,
        other => return Err(bad(format!("Invalid check status: {other:?}"))),
    };
    Ok(s.local.update_check(&id, status, &u.output, s.env.now())?)
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
    s: &ApiState<E>,
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
    State(s): State<Arc<ApiState<E>>>,
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
    State(s): State<Arc<ApiState<E>>>,
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

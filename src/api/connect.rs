//! Connect's HTTP API: the CA (`/v1/connect/ca/*`, and the agent's cached
//! roots and leaves under `/v1/agent/connect/ca/*`), intentions
//! (`/v1/connect/intentions*`), authorization
//! (`/v1/agent/connect/authorize`) and the proxies of a service
//! (`/v1/health/connect/<s>`, `/v1/catalog/connect/<s>`).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use axum::extract::{Path, Query as UrlQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::context::{answer_of, meta_headers, read, write_cmd, Api};
use super::error::{bad, unexpected, ApiError};
use crate::acl::{Access, Resource};
use crate::agent::leaves::CachedLeaf;
use crate::connect::ca::{self, SpiffeId};
use crate::connect::intention::{self, Action, Intention};
use crate::env::Env;
use crate::server::{Answer, CaOp, ClientRequest, Query, CSR_RATE_LIMITED};
use crate::state::{CaState, Command};

/// What decides when no intention matches: Consul takes the ACL default
/// policy (allow while ACLs are off). A `* -> *` deny intention makes the
/// default deny either way, which is how Consul recommends doing it.
fn default_allow<E: Env>(s: &Api<E>) -> bool {
    let c = s.acl.config();
    !c.enabled || c.default_allow
}

/// A CA request through the servers; 429 when the CSR limit is reached.
async fn ca_call<E: Env>(s: &Api<E>, op: CaOp) -> Result<(HeaderMap, Answer), ApiError> {
    let reply = super::context::call(s, ClientRequest::Ca { op, hops: 0 }).await;
    match &reply.answer {
        Err(e) if e == CSR_RATE_LIMITED => Err(ApiError(StatusCode::TOO_MANY_REQUESTS, e.clone())),
        _ => Ok((meta_headers(&reply), answer_of(&reply)?)),
    }
}

/// The CA's roots: a (blocking) read, and the leader creates the CA if
/// the cluster has none yet.
async fn roots<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, CaState), ApiError> {
    if let (h, Answer::Ca(ca)) = read(s, params, Query::CaRoots).await? {
        if ca.active().is_some() {
            return Ok((h, *ca));
        }
    }
    match ca_call(s, CaOp::Roots).await? {
        (h, Answer::Ca(ca)) => Ok((h, *ca)),
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/connect/ca/roots` and `/v1/agent/connect/ca/roots`.
pub async fn ca_roots<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, ca) = roots(&s, &params).await?;
    let list: Vec<serde_json::Value> = ca
        .roots
        .iter()
        .map(|r| {
            serde_json::json!({
                "ID": r.id,
                "Name": r.name,
                "SerialNumber": r.keys.serial,
                "SigningKeyID": r.keys.signing_key_id,
                "ExternalTrustDomain": ca.cluster_id,
                "NotBefore": crate::format::rfc3339(r.keys.not_before_ms),
                "NotAfter": crate::format::rfc3339(r.keys.not_after_ms),
                "RootCert": r.keys.cert_pem,
                "IntermediateCerts": r.keys.intermediate_pems,
                "Active": r.active,
                "PrivateKeyType": "ec",
                "PrivateKeyBits": 256,
                "CreateIndex": r.create_index,
                "ModifyIndex": r.modify_index,
            })
        })
        .collect();
    let body = serde_json::json!({
        "ActiveRootID": ca.active().map(|r| r.id.clone()).unwrap_or_default(),
        "TrustDomain": ca::trust_domain(&ca.cluster_id),
        "Roots": list,
    });
    Ok((h, Json(body)).into_response())
}

fn leaf_ttl(ca: &CaState) -> Duration {
    match ca.leaf_ttl_ms {
        0 => ca::LEAF_TTL,
        ms => Duration::from_millis(ms),
    }
}

/// A duration as Consul shows the CA configuration's: only the parts
/// that are not zero (`72h`, `1h30m`, `90s`).
fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    let parts = [(s / 3600, "h"), (s % 3600 / 60, "m"), (s % 60, "s")];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".into()
    } else {
        text
    }
}

/// `GET /v1/connect/ca/configuration`.
pub async fn ca_configuration<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, ca) = roots(&s, &params).await?;
    let index = ca.roots.iter().map(|r| r.modify_index).max().unwrap_or(0);
    let body = serde_json::json!({
        "Provider": "consul",
        "ClusterID": ca.cluster_id,
        "Config": {
            "LeafCertTTL": go_duration(leaf_ttl(&ca)),
            "RotationPeriod": "2160h",
            "IntermediateCertTTL": "8760h",
        },
        "State": null,
        "ForceWithoutCrossSigning": false,
        "CreateIndex": ca.roots.first().map_or(0, |r| r.create_index),
        "ModifyIndex": index,
    });
    Ok((h, Json(body)).into_response())
}

/// The body of `PUT /v1/connect/ca/configuration`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct CaConfigBody {
    provider: String,
    config: BTreeMap<String, serde_json::Value>,
}

/// `PUT /v1/connect/ca/configuration`: a new active root, generated or
/// the operator's own (`Config.RootCert` and `Config.PrivateKey`), and
/// with `Config.LeafCertTTL` a new leaf lifetime. The old roots stay in the
/// bundle until they expire, so every leaf they signed stays valid while
/// agents renew onto the new root.
pub async fn ca_set_configuration<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    let b: CaConfigBody = super::decode::body(&body)?;
    match ca_call(&s, b.to_op()?).await {
        // The leader's refusal of a brought root says what is wrong with it.
        Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, why)) if why.contains("RootCert") => {
            return Err(bad(why));
        }
        r => r?,
    };
    Ok(StatusCode::OK.into_response())
}

impl CaConfigBody {
    /// The CA rotation the body asks for, checked (apart from the handler
    /// so the fuzz target checks the same).
    pub(super) fn to_op(&self) -> Result<CaOp, ApiError> {
        if !self.provider.is_empty() && self.provider != "consul" {
            return Err(bad(format!(
                "unknown CA provider {:?}: cairn has the built-in one, \"consul\"",
                self.provider
            )));
        }
        let leaf_ttl_ms = match self.config.get("LeafCertTTL") {
            None => None,
            Some(serde_json::Value::String(t)) => {
                let d = crate::format::parse_duration(t)
                    .map_err(|e| bad(format!("Config.LeafCertTTL: {e}")))?;
                if d < Duration::from_secs(60) || d > Duration::from_secs(365 * 24 * 3600) {
                    return Err(bad("Config.LeafCertTTL must be between 1m and 8760h"));
                }
                Some(d.as_millis() as u64)
            }
            Some(other) => return Err(bad(format!("Config.LeafCertTTL: not a duration: {other}"))),
        };
        let text = |k: &str| match self.config.get(k) {
            Some(serde_json::Value::String(v)) if !v.trim().is_empty() => Some(v.clone()),
            _ => None,
        };
        let root = match (text("RootCert"), text("PrivateKey")) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            _ => return Err(bad("Config.RootCert and Config.PrivateKey go together")),
        };
        Ok(CaOp::Rotate { leaf_ttl_ms, root })
    }
}

/// The leaf for `service`: the cached one while it is fresh and signed by
/// the active root, a new one otherwise.
async fn leaf_for<E: Env>(s: &Api<E>, service: &str) -> Result<CachedLeaf, ApiError> {
    let (h, ca) = roots(s, &HashMap::new()).await?;
    let root_index: u64 = h
        .get("x-consul-index")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let active = ca.active().map(|r| r.create_index).unwrap_or(0);
    let now = ca::unix_ms(s.env.wall_clock());
    if let Some(c) = s.leaves.get(service) {
        if now < c.renew_at_ms && c.root_index >= active {
            return Ok(c);
        }
    }
    let id = SpiffeId {
        trust_domain: ca::trust_domain(&ca.cluster_id),
        datacenter: s.info.datacenter.clone(),
        service: service.to_string(),
    };
    let req = ca::leaf_request(&id).map_err(super::error::internal)?;
    let op = CaOp::Sign {
        csr_pem: req.csr_pem,
        service: service.to_string(),
        datacenter: s.info.datacenter.clone(),
    };
    let leaf = match ca_call(s, op).await? {
        (_, Answer::Leaf(l)) => l,
        (_, a) => return Err(unexpected(a)),
    };
    let life = leaf.not_after_ms.saturating_sub(leaf.not_before_ms);
    let frac = {
        let mut rng = s.rng.lock().unwrap_or_else(|e| e.into_inner());
        rand::Rng::random_range(&mut *rng, 0.6..0.9)
    };
    let c = CachedLeaf {
        renew_at_ms: leaf.not_before_ms + (life as f64 * frac) as u64,
        leaf,
        key_pem: req.key_pem,
        uri: id.uri(),
        root_index: root_index.max(active),
    };
    s.leaves.insert(service, c.clone());
    Ok(c)
}

/// `GET /v1/agent/connect/ca/leaf/<service>`.
pub async fn agent_leaf<E: Env>(
    s: Api<E>,
    Path(service): Path<String>,
) -> Result<Response, ApiError> {
    if service.is_empty() || service.contains('/') {
        return Err(bad("a service name is required"));
    }
    let c = leaf_for(&s, &service).await?;
    let body = serde_json::json!({
        "SerialNumber": c.leaf.serial,
        "CertPEM": c.leaf.cert_pem,
        "PrivateKeyPEM": c.key_pem,
        "Service": service,
        "ServiceURI": c.uri,
        "ValidAfter": crate::format::rfc3339(c.leaf.not_before_ms),
        "ValidBefore": crate::format::rfc3339(c.leaf.not_after_ms),
        "CreateIndex": c.root_index,
        "ModifyIndex": c.root_index,
    });
    let mut h = HeaderMap::new();
    if let Ok(v) = c.root_index.to_string().parse() {
        h.insert("x-consul-index", v);
    }
    Ok((h, Json(body)).into_response())
}

/// Every intention.
async fn intentions<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Vec<Intention>), ApiError> {
    match read(s, params, Query::Intentions).await? {
        (h, Answer::Intentions(mut v)) => {
            // Consul lists them deciding-first.
            v.sort_by(|a, b| {
                b.precedence
                    .cmp(&a.precedence)
                    .then_with(|| a.source_name.cmp(&b.source_name))
                    .then_with(|| a.destination_name.cmp(&b.destination_name))
            });
            Ok((h, v))
        }
        (_, a) => Err(unexpected(a)),
    }
}

/// `GET /v1/connect/intentions` (`?filter` applies as everywhere).
pub async fn list_intentions<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = intentions(&s, &params).await?;
    Ok((h, Json(v)).into_response())
}

/// An intention as a request body gives it.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct IntentionBody {
    source_name: String,
    destination_name: String,
    source_type: String,
    action: Option<String>,
    description: String,
    meta: BTreeMap<String, String>,
}

impl IntentionBody {
    /// The intention `id` the body describes, checked (the fuzz target
    /// checks the same).
    pub(super) fn into_intention(self, id: String) -> Result<Intention, ApiError> {
        let action = match self
            .action
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("allow") => Action::Allow,
            Some("deny") => Action::Deny,
            Some(other) => {
                return Err(bad(format!(
                    "Action {other:?}: must be \"allow\" or \"deny\""
                )))
            }
            None => return Err(bad("Action must be set to \"allow\" or \"deny\"")),
        };
        let i = Intention {
            id,
            source_name: self.source_name,
            destination_name: self.destination_name,
            source_type: self.source_type,
            action,
            description: self.description,
            meta: self.meta,
            ..Intention::default()
        };
        intention::validate(&i).map_err(bad)?;
        Ok(i)
    }
}

async fn store_intention<E: Env>(s: &Api<E>, i: Intention) -> Result<(), ApiError> {
    write_cmd(s, Command::IntentionSet(Box::new(i))).await?;
    Ok(())
}

/// `POST /v1/connect/intentions`: creates one; `{"ID": ...}`.
pub async fn create_intention<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    let b: IntentionBody = super::decode::body(&body)?;
    let id = s.new_id();
    store_intention(&s, b.into_intention(id.clone())?).await?;
    Ok(Json(serde_json::json!({ "ID": id })).into_response())
}

fn by_id(v: Vec<Intention>, id: &str) -> Result<Intention, ApiError> {
    v.into_iter()
        .find(|i| i.id == id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("Intention not found: {id}")))
}

/// The intention `source` -> `destination` given by `?source=&destination=`.
fn exact_of(params: &HashMap<String, String>) -> Result<(String, String), ApiError> {
    match (params.get("source"), params.get("destination")) {
        (Some(src), Some(dst)) if !src.is_empty() && !dst.is_empty() => {
            Ok((src.clone(), dst.clone()))
        }
        _ => Err(bad("required query parameters 'source' and 'destination'")),
    }
}

/// `GET /v1/connect/intentions/<id>`, or `exact?source=&destination=`.
pub async fn get_intention<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (h, v) = intentions(&s, &params).await?;
    let i = if id == "exact" {
        let (src, dst) = exact_of(&params)?;
        v.into_iter()
            .find(|i| i.source_name == src && i.destination_name == dst)
            .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, "Intention not found".into()))?
    } else {
        by_id(v, &id)?
    };
    Ok((h, Json(i)).into_response())
}

/// `PUT /v1/connect/intentions/<id>` (update), or
/// `exact?source=&destination=` (create or update by name).
pub async fn put_intention<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let mut b: IntentionBody = super::decode::body(&body)?;
    let (_, v) = intentions(&s, &HashMap::new()).await?;
    let id = if id == "exact" {
        let (src, dst) = exact_of(&params)?;
        b.source_name = src.clone();
        b.destination_name = dst.clone();
        v.iter()
            .find(|i| i.source_name == src && i.destination_name == dst)
            .map_or_else(|| s.new_id(), |i| i.id.clone())
    } else {
        by_id(v, &id)?.id
    };
    store_intention(&s, b.into_intention(id)?).await?;
    Ok(Json(true).into_response())
}

/// `DELETE /v1/connect/intentions/<id>`, or `exact?source=&destination=`.
pub async fn delete_intention<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let id = if id == "exact" {
        let (src, dst) = exact_of(&params)?;
        let (_, v) = intentions(&s, &HashMap::new()).await?;
        match v
            .into_iter()
            .find(|i| i.source_name == src && i.destination_name == dst)
        {
            Some(i) => i.id,
            None => return Ok(Json(true).into_response()),
        }
    } else {
        id
    };
    write_cmd(&s, Command::IntentionDelete { id }).await?;
    Ok(Json(true).into_response())
}

/// `GET /v1/connect/intentions/match?by=source|destination&name=...`:
/// for each name, the intentions that bear on it, deciding-first.
pub async fn match_intentions<E: Env>(
    s: Api<E>,
    UrlQuery(raw): UrlQuery<Vec<(String, String)>>,
) -> Result<Response, ApiError> {
    let params: HashMap<String, String> = raw.iter().cloned().collect();
    let by_source = match params.get("by").map(String::as_str) {
        Some("source") => true,
        Some("destination") => false,
        _ => {
            return Err(bad(
                "required query parameter 'by' must be 'source' or 'destination'",
            ))
        }
    };
    let names: Vec<&String> = raw
        .iter()
        .filter(|(k, _)| k == "name")
        .map(|(_, v)| v)
        .collect();
    if names.is_empty() {
        return Err(bad("required query parameter 'name' not set"));
    }
    let (h, v) = intentions(&s, &params).await?;
    let mut out = BTreeMap::new();
    for name in names {
        let mut m: Vec<&Intention> = v
            .iter()
            .filter(|i| {
                let pattern = if by_source {
                    &i.source_name
                } else {
                    &i.destination_name
                };
                pattern == "*" || pattern == name
            })
            .collect();
        m.sort_by_key(|i| std::cmp::Reverse(i.precedence));
        out.insert(name.clone(), m.into_iter().cloned().collect::<Vec<_>>());
    }
    Ok((h, Json(out)).into_response())
}

/// `GET /v1/connect/intentions/check?source=&destination=`.
pub async fn check_intention<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let (src, dst) = exact_of(&params)?;
    let (h, v) = intentions(&s, &params).await?;
    let (allowed, _) = intention::authorize(&v, &src, &dst, default_allow(&s));
    Ok((h, Json(serde_json::json!({ "Allowed": allowed }))).into_response())
}

/// The body of `POST /v1/agent/connect/authorize`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(super) struct AuthorizeBody {
    target: String,
    #[serde(rename = "ClientCertURI")]
    client_cert_uri: String,
}

impl AuthorizeBody {
    /// The identity `ClientCertURI` names (apart from the handler so the
    /// fuzz target checks the same).
    pub(super) fn client_id(&self) -> Result<SpiffeId, ApiError> {
        SpiffeId::parse(&self.client_cert_uri).map_err(|e| bad(e.to_string()))
    }
}

/// What `/v1/agent/connect/authorize` answers.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Authorized {
    authorized: bool,
    reason: String,
}

/// `POST /v1/agent/connect/authorize`: may the holder of a certificate
/// with `ClientCertURI` connect to `Target`? (Stale reads: the intentions
/// of any server will do, as Consul's agent cache serves them.)
pub async fn authorize<E: Env>(s: Api<E>, body: Bytes) -> Result<Response, ApiError> {
    let b: AuthorizeBody = super::decode::body(&body)?;
    if b.target.is_empty() {
        return Err(bad("Target service must be specified"));
    }
    super::context::require(&s, Resource::Service, &b.target, Access::Write).await?;
    let id = b.client_id()?;
    let (_, ca) = roots(&s, &HashMap::new()).await?;
    let ours = ca::trust_domain(&ca.cluster_id);
    let answer = if id.trust_domain != ours {
        Authorized {
            authorized: false,
            reason: format!(
                "Identity from an external trust domain: {} (ours is {ours})",
                id.trust_domain
            ),
        }
    } else {
        let stale: HashMap<String, String> = [("stale".to_string(), String::new())].into();
        let (_, v) = intentions(&s, &stale).await?;
        match intention::authorize(&v, &id.service, &b.target, default_allow(&s)) {
            (ok, Some(i)) => Authorized {
                authorized: ok,
                reason: format!(
                    "Matched L4 intention: {} => {} ({})",
                    i.source_name,
                    i.destination_name,
                    if ok { "allow" } else { "deny" }
                ),
            },
            (ok, None) => Authorized {
                authorized: ok,
                reason: crate::connect::proxy::DEFAULT_REASON.into(),
            },
        }
    };
    Ok(Json(answer).into_response())
}

//! ACLs over HTTP: the request's token (`X-Consul-Token`, `Authorization:
//! Bearer`, or `?token=`), the agent's own endpoints checked and their
//! lists filtered, and Consul's `/v1/acl/*` endpoints.
//!
//! Requests that reach the servers carry the token there (see
//! `context::call`) and are judged there; this module judges only what
//! the agent answers itself.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::context::{
    authorizer, read, require, require_global, write_cmd, Api, ApiState, Caller, FILTERED_HEADER,
};
use super::error::{bad, internal, refusal, unexpected, ApiError};
use crate::acl::{
    Access, Authorizer, Global, Identities, Link, Policy, Resource, Role, Token, ACL_DISABLED,
    ACL_NOT_FOUND, PERMISSION_DENIED,
};
use crate::env::Env;
use crate::server::{Answer, Query};
use crate::state::Command;

/// The token a request brings: `X-Consul-Token`, then `Authorization:
/// Bearer`, then `?token=` (empty when none).
fn token_of(req: &axum::extract::Request) -> String {
    let h = req.headers();
    if let Some(t) = h.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return t.trim().to_string();
    }
    if let Some(t) = h
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    {
        return t.trim().to_string();
    }
    form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// What an agent endpoint needs of the token, from its method and path.
enum Need {
    Named(Resource, String, Access),
    Global(Global, Access),
}

/// The need of the agent's own endpoints that name their object in the
/// path; endpoints whose object is in the body check in their handlers,
/// and everything the servers answer is judged there.
fn agent_need<E: Env>(s: &Api<E>, method: &Method, path: &str) -> Option<Need> {
    let node = || s.info.node_name.clone();
    let write = method != Method::GET;
    let local_service = |id: &str| {
        s.local
            .services()
            .into_iter()
            .find(|svc| svc.id == id)
            .map(|svc| svc.service)
    };
    let check_need = |id: &str| {
        let check = s.local.checks().into_iter().find(|c| c.check_id == id);
        match check {
            Some(c) if !c.service_id.is_empty() => {
                Need::Named(Resource::Service, c.service_name, Access::Write)
            }
            _ => Need::Named(Resource::Node, node(), Access::Write),
        }
    };
    let rest = |p: &str| path.strip_prefix(p).map(str::to_owned);
    Some(match path {
        "/v1/agent/self" | "/v1/agent/metrics" => {
            Need::Named(Resource::Agent, node(), Access::Read)
        }
        "/v1/agent/leave" | "/v1/agent/reload" => {
            Need::Named(Resource::Agent, node(), Access::Write)
        }
        "/v1/agent/maintenance" => Need::Named(Resource::Node, node(), Access::Write),
        "/v1/operator/keyring" if write => Need::Global(Global::Keyring, Access::Write),
        "/v1/operator/keyring" => Need::Global(Global::Keyring, Access::Read),
        "/v1/connect/ca/configuration" if write => Need::Global(Global::Operator, Access::Write),
        "/v1/connect/ca/configuration" => Need::Global(Global::Operator, Access::Read),
        _ if path.starts_with("/v1/agent/join/") => {
            Need::Named(Resource::Agent, node(), Access::Write)
        }
        _ if path.starts_with("/v1/agent/force-leave/") => {
            Need::Global(Global::Operator, Access::Write)
        }
        _ if path.starts_with("/v1/agent/token/") => Need::Global(Global::Acl, Access::Write),
        _ if path.starts_with("/v1/acl/templated-polic") => Need::Global(Global::Acl, Access::Read),
        _ if path.starts_with("/v1/event/fire/") => {
            Need::Named(Resource::Event, rest("/v1/event/fire/")?, Access::Write)
        }
        _ if path.starts_with("/v1/agent/service/deregister/")
            || path.starts_with("/v1/agent/service/maintenance/") =>
        {
            let id = path.rsplit('/').next()?;
            match local_service(id) {
                Some(name) => Need::Named(Resource::Service, name, Access::Write),
                // Unknown: the handler says so.
                None => return None,
            }
        }
        _ if path.starts_with("/v1/agent/check/") && path != "/v1/agent/check/register" => {
            check_need(path.rsplit('/').next()?)
        }
        _ => return None,
    })
}

/// Lists the agent answers itself, filtered per item: which field names
/// what, and what the item needs.
fn agent_list_filter(path: &str) -> Option<fn(&Authorizer, &Value) -> bool> {
    fn read(z: &Authorizer, res: Resource, name: &Value) -> bool {
        z.allows(res, name.as_str().unwrap_or_default(), Access::Read)
    }
    Some(match path {
        "/v1/agent/members" => |z, v| read(z, Resource::Node, &v["Name"]),
        "/v1/agent/services" => |z, v| read(z, Resource::Service, &v["Service"]),
        "/v1/agent/checks" => |z, v| {
            let node_ok = read(z, Resource::Node, &v["Node"]);
            match v["ServiceName"].as_str() {
                Some(s) if !s.is_empty() => node_ok && z.allows(Resource::Service, s, Access::Read),
                _ => node_ok,
            }
        },
        "/v1/event/list" => |z, v| read(z, Resource::Event, &v["Name"]),
        _ => return None,
    })
}

/// The ACL layer around every endpoint (with ACLs on): the token is set
/// in the request's [`Caller`], the agent's own endpoints are checked, and the lists
/// it answers itself are filtered.
pub(crate) async fn enforce<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if !s.acl.enabled() {
        return next.run(req).await;
    }
    let token = match token_of(&req) {
        t if t.is_empty() => s.acl.default_token(),
        t => t,
    };
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let mut caller = req
        .extensions()
        .get::<Caller>()
        .cloned()
        .unwrap_or_default();
    caller.token = Some(token);
    req.extensions_mut().insert(caller.clone());
    let s = Api::new(s, caller);
    if let Some(need) = agent_need(&s, &method, &path) {
        let verdict = match need {
            Need::Named(res, name, access) => require(&s, res, &name, access).await,
            Need::Global(g, access) => require_global(&s, g, access).await,
        };
        if let Err(e) = verdict {
            return e.into_response();
        }
    }
    let resp = next.run(req).await;
    match agent_list_filter(&path) {
        Some(keep) if method == Method::GET && resp.status() == StatusCode::OK => {
            match authorizer(&s).await {
                Ok(z) => filter_json(resp, |v| keep(&z, v)).await,
                Err(e) => e.into_response(),
            }
        }
        _ => resp,
    }
}

/// `resp`'s JSON list (or map of objects) without the items `keep`
/// refuses, marked with Consul's header when any went.
async fn filter_json(resp: Response, keep: impl Fn(&Value) -> bool) -> Response {
    let (mut parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return internal("response too large").into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    let removed = match &mut value {
        Value::Array(items) => {
            let before = items.len();
            items.retain(|v| keep(v));
            before != items.len()
        }
        Value::Object(map) => {
            let before = map.len();
            map.retain(|_, v| keep(v));
            before != map.len()
        }
        _ => false,
    };
    if removed {
        parts
            .headers
            .insert(FILTERED_HEADER, HeaderValue::from_static("true"));
    }
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    let text = serde_json::to_vec(&value).unwrap_or_else(|_| bytes.to_vec());
    Response::from_parts(parts, axum::body::Body::from(text))
}

// ---- /v1/acl/* ----

/// A token in Consul's JSON.
pub(super) fn token_json(t: &Token) -> Value {
    let mut v = json!({
        "AccessorID": t.accessor_id,
        "SecretID": t.secret_id,
        "Description": t.description,
        "Policies": links_json(&t.policies),
        "Roles": links_json(&t.roles),
        "Local": t.local,
        "CreateTime": crate::format::rfc3339(t.create_ms),
        "Hash": "",
        "CreateIndex": t.create_index,
        "ModifyIndex": t.modify_index,
    });
    if let Some(at) = t.expiration_ms {
        v["ExpirationTime"] = json!(crate::format::rfc3339(at));
    }
    add_identities(&mut v, &t.identities);
    if !t.auth_method.is_empty() {
        v["AuthMethod"] = json!(t.auth_method);
    }
    v
}

/// Consul leaves out empty identity lists.
fn add_identities(v: &mut Value, ids: &Identities) {
    if !ids.service_identities.is_empty() {
        v["ServiceIdentities"] = json!(ids.service_identities);
    }
    if !ids.node_identities.is_empty() {
        v["NodeIdentities"] = json!(ids.node_identities);
    }
    if !ids.templated_policies.is_empty() {
        v["TemplatedPolicies"] = json!(ids.templated_policies);
    }
}

fn links_json(links: &[Link]) -> Value {
    Value::Array(
        links
            .iter()
            .map(|l| json!({"ID": l.id, "Name": l.name}))
            .collect(),
    )
}

fn policy_json(p: &Policy) -> Value {
    json!({
        "ID": p.id,
        "Name": p.name,
        "Description": p.description,
        "Rules": p.rules,
        "Datacenters": p.datacenters,
        "Hash": "",
        "CreateIndex": p.create_index,
        "ModifyIndex": p.modify_index,
    })
}

fn role_json(r: &Role) -> Value {
    let mut v = json!({
        "ID": r.id,
        "Name": r.name,
        "Description": r.description,
        "Policies": links_json(&r.policies),
        "Hash": "",
        "CreateIndex": r.create_index,
        "ModifyIndex": r.modify_index,
    });
    add_identities(&mut v, &r.identities);
    v
}

/// The ACL endpoints answer 401 while ACLs are off, as Consul's do.
pub(super) fn enabled<E: Env>(s: &Api<E>) -> Result<(), ApiError> {
    if s.acl.enabled() {
        Ok(())
    } else {
        Err(refusal(ACL_DISABLED.into()))
    }
}

/// The field names of the ACL bodies, as Consul spells them.
const FIELDS: [&str; 34] = [
    "Meta",
    "Type",
    "DisplayName",
    "MaxTokenTTL",
    "TokenLocality",
    "Config",
    "AuthMethod",
    "Selector",
    "BindType",
    "BindName",
    "BindVars",
    "BearerToken",
    "ServiceIdentities",
    "NodeIdentities",
    "TemplatedPolicies",
    "ServiceName",
    "NodeName",
    "Datacenter",
    "TemplateName",
    "TemplateVariables",
    "ExpirationTime",
    "AccessorID",
    "SecretID",
    "Description",
    "Policies",
    "Roles",
    "Local",
    "ExpirationTTL",
    "ID",
    "Name",
    "Rules",
    "Datacenters",
    "Token",
    "Policy",
];

/// The fields of a `jwt` auth method's `Config`.
const JWT_FIELDS: [&str; 12] = [
    "JWTValidationPubKeys",
    "JWKS",
    "JWKSURL",
    "OIDCDiscoveryURL",
    "BoundIssuer",
    "BoundAudiences",
    "ClaimMappings",
    "ListClaimMappings",
    "JWTSupportedAlgs",
    "ExpirationLeeway",
    "NotBeforeLeeway",
    "ClockSkewLeeway",
];

/// `k` spelled as in `fields`, if it is one of them in any case.
fn canonical(fields: &[&str], k: String) -> String {
    fields
        .iter()
        .find(|f| f.eq_ignore_ascii_case(&k))
        .map_or(k, |f| f.to_string())
}

/// `v` with field names in Consul's spelling: Consul's JSON decoding
/// ignores case, and clients send `name` as well as `Name`. What users
/// name themselves (`Meta` keys, claim names in a `Config`) is kept.
fn canonical_keys(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match canonical(&FIELDS, k) {
                    k if k == "Meta" => (k, v),
                    k if k == "Config" => {
                        let v = match v {
                            Value::Object(c) => Value::Object(
                                c.into_iter()
                                    .map(|(k, v)| (canonical(&JWT_FIELDS, k), v))
                                    .collect(),
                            ),
                            other => other,
                        };
                        (k, v)
                    }
                    k => (k, canonical_keys(v)),
                })
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.into_iter().map(canonical_keys).collect()),
        other => other,
    }
}

/// Decodes an ACL request body (Consul's field names, in any case).
pub(super) fn body<T: serde::de::DeserializeOwned + Default>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    let v = super::decode::value(bytes)?;
    serde_json::from_value(canonical_keys(v)).map_err(super::decode::decode_failed)
}

/// A write through the servers with the request's token; a refusal keeps
/// Consul's status.
pub(super) async fn acl_write<E: Env>(s: &Api<E>, cmd: Command) -> Result<bool, ApiError> {
    // The state's refusals of a bad token, policy or role are the
    // caller's mistake (400), as in Consul.
    const CALLERS: [&str; 9] = [
        "identity",
        "templated policy",
        "Service identity",
        "Invalid",
        "No such",
        "not permitted",
        "already in use",
        "Cannot change",
        "Failed to parse",
    ];
    write_cmd(s, cmd).await.map_err(|e| match e {
        ApiError(StatusCode::INTERNAL_SERVER_ERROR, why)
            if CALLERS.iter().any(|c| why.contains(c)) =>
        {
            bad(why)
        }
        other => other,
    })
}

/// A token as a request body gives it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct TokenBody {
    #[serde(rename = "AccessorID")]
    accessor_id: String,
    #[serde(rename = "SecretID")]
    secret_id: String,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "Policies")]
    policies: Option<Vec<Link>>,
    #[serde(rename = "Roles")]
    roles: Option<Vec<Link>>,
    #[serde(rename = "Local")]
    local: bool,
    #[serde(rename = "ExpirationTTL")]
    expiration_ttl: String,
    #[serde(rename = "ExpirationTime")]
    expiration_time: String,
    #[serde(flatten)]
    identities: IdentitiesBody,
}

/// Identities in a token or role body, with Consul's names.
#[derive(Deserialize, Default)]
#[serde(default)]
struct IdentitiesBody {
    #[serde(rename = "ServiceIdentities")]
    service_identities: Vec<crate::acl::ServiceIdentity>,
    #[serde(rename = "NodeIdentities")]
    node_identities: Vec<crate::acl::NodeIdentity>,
    #[serde(rename = "TemplatedPolicies")]
    templated_policies: Vec<crate::acl::TemplatedPolicy>,
}

impl From<IdentitiesBody> for Identities {
    fn from(b: IdentitiesBody) -> Identities {
        Identities {
            service_identities: b.service_identities,
            node_identities: b.node_identities,
            templated_policies: b.templated_policies,
        }
    }
}

impl TokenBody {
    fn into_token<E: Env>(self, s: &Api<E>) -> Result<Token, ApiError> {
        self.token_at(wall_ms(s), || s.new_id())
    }

    /// The token, checked, as made at `now_ms`, with `new_id` for the IDs
    /// the body leaves out (apart from the handler so the fuzz target
    /// checks the same).
    pub(super) fn token_at(
        self,
        now_ms: u64,
        new_id: impl Fn() -> String,
    ) -> Result<Token, ApiError> {
        let expiration_ms = if !self.expiration_time.is_empty() {
            if !self.expiration_ttl.is_empty() {
                return Err(bad(
                    "Token Expiration TTL and Expiration Time cannot both be set",
                ));
            }
            let at = crate::format::parse_rfc3339_ms(&self.expiration_time)
                .map_err(|e| bad(format!("Invalid ExpirationTime: {e}")))?;
            if at <= now_ms {
                return Err(bad("ExpirationTime cannot be in the past"));
            }
            Some(at)
        } else if self.expiration_ttl.is_empty() {
            None
        } else {
            let ttl = crate::format::parse_duration(&self.expiration_ttl)
                .map_err(|e| bad(format!("Invalid ExpirationTTL: {e}")))?;
            if ttl.is_zero() {
                return Err(bad("Invalid ExpirationTTL: must be positive"));
            }
            Some(now_ms.saturating_add(ttl.as_millis() as u64))
        };
        Ok(Token {
            accessor_id: nonempty_or(self.accessor_id, &new_id),
            secret_id: nonempty_or(self.secret_id, &new_id),
            description: self.description,
            policies: self.policies.unwrap_or_default(),
            roles: self.roles.unwrap_or_default(),
            identities: self.identities.into(),
            local: self.local,
            expiration_ms,
            create_ms: now_ms,
            ..Token::default()
        })
    }
}

fn nonempty_or(v: String, f: impl FnOnce() -> String) -> String {
    if v.is_empty() {
        f()
    } else {
        v
    }
}

fn wall_ms<E: Env>(s: &Api<E>) -> u64 {
    crate::connect::ca::unix_ms(s.env.wall_clock())
}

/// Every token, as the servers list them to this request's token.
async fn all_tokens<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Vec<Token>), ApiError> {
    match read(s, params, Query::AclTokens).await? {
        (h, Answer::AclTokens(v)) => Ok((h, v)),
        (_, other) => Err(unexpected(other)),
    }
}

/// An unknown token: 403, as Consul answers (a token's existence is not
/// told apart from the caller's right to see it).
fn not_found(what: &str) -> ApiError {
    ApiError(StatusCode::FORBIDDEN, format!("{ACL_NOT_FOUND}: {what}"))
}

/// An unknown policy or role: 404, as Consul answers.
pub(super) fn missing(what: &str) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, format!("{what} not found"))
}

/// Policy and role IDs are UUIDs; anything else is the caller's mistake.
fn check_uuid(kind: &str, id: &str) -> Result<(), ApiError> {
    let ok = id.len() == 36
        && id.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        });
    if ok {
        Ok(())
    } else {
        // `policy` -> `Policy`, as the message always said.
        let mut k = kind.to_string();
        if let Some(c) = k.get_mut(..1) {
            c.make_ascii_uppercase();
        }
        Err(bad(format!("{k} ID {id:?} is not a UUID")))
    }
}

/// `PUT /v1/acl/bootstrap`: the first management token, once.
pub async fn bootstrap<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let token = Token {
        accessor_id: s.new_id(),
        secret_id: s.new_id(),
        description: "Bootstrap Token (Global Management)".into(),
        policies: vec![Link {
            id: crate::acl::GLOBAL_MANAGEMENT_ID.into(),
            name: String::new(),
        }],
        create_ms: wall_ms(&s),
        ..Token::default()
    };
    if !acl_write(&s, Command::AclBootstrap(Box::new(token.clone()))).await? {
        // The ACL table's index stands in for Consul's reset index (cairn
        // has no bootstrap reset).
        let (h, _) = read(&s, &HashMap::new(), Query::AclResolve(String::new())).await?;
        let reset = h
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("0")
            .to_string();
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            format!("{PERMISSION_DENIED}: ACL bootstrap no longer allowed (reset index: {reset})"),
        ));
    }
    // Read back by its secret: the caller has no token that may read ACLs.
    match read(&s, &HashMap::new(), Query::AclResolve(token.secret_id)).await? {
        (h, Answer::AclResolved(Some(id))) => Ok((h, Json(token_json(&id.token))).into_response()),
        (_, other) => Err(unexpected(other)),
    }
}

/// A token read back by accessor with a management view (after a write
/// by this request's token, which could write it).
async fn token_by_accessor<E: Env>(s: &Api<E>, accessor: &str) -> Result<Response, ApiError> {
    let params: HashMap<String, String> = HashMap::new();
    let (h, tokens) = all_tokens(s, &params).await?;
    let t = tokens
        .into_iter()
        .find(|t| t.accessor_id == accessor)
        .ok_or_else(|| not_found("token not found"))?;
    Ok((h, Json(token_json(&t))).into_response())
}

/// `PUT /v1/acl/token`: creates a token.
pub async fn create_token<E: Env>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let b: TokenBody = body(&bytes)?;
    if !b.accessor_id.is_empty() {
        let (_, tokens) = all_tokens(&s, &HashMap::new()).await?;
        if tokens.iter().any(|t| t.accessor_id == b.accessor_id) {
            return Err(bad("Invalid Token: AccessorID is already in use"));
        }
    }
    let token = b.into_token(&s)?;
    acl_write(&s, Command::AclTokenSet(Box::new(token.clone()))).await?;
    token_by_accessor(&s, &token.accessor_id).await
}

/// `GET|PUT|DELETE /v1/acl/token/<accessor>`; `GET /v1/acl/token/self`.
pub async fn token<E: Env>(
    s: Api<E>,
    method: Method,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    if id == "self" && method == Method::GET {
        return token_self(&s).await;
    }
    match method {
        Method::GET => {
            let (h, tokens) = all_tokens(&s, &params).await?;
            let t = tokens
                .into_iter()
                .find(|t| t.accessor_id == id)
                .ok_or_else(|| not_found("token not found"))?;
            Ok((h, Json(token_json(&t))).into_response())
        }
        Method::PUT => {
            let (_, tokens) = all_tokens(&s, &params).await?;
            let old = tokens
                .into_iter()
                .find(|t| t.accessor_id == id)
                .ok_or_else(|| bad(format!("Cannot find token {id:?}")))?;
            let b: TokenBody = body(&bytes)?;
            let mut t = TokenBody {
                accessor_id: id.clone(),
                secret_id: old.secret_id.clone(),
                ..b
            }
            .into_token(&s)?;
            if t.expiration_ms.is_none() {
                t.expiration_ms = old.expiration_ms;
            }
            acl_write(&s, Command::AclTokenSet(Box::new(t))).await?;
            token_by_accessor(&s, &id).await
        }
        Method::DELETE => {
            acl_write(&s, Command::AclTokenDelete { accessor_id: id }).await?;
            Ok(Json(true).into_response())
        }
        _ => Err(super::error::method_not_allowed()),
    }
}

/// `PUT /v1/acl/token/<accessor>/clone`: a new token with the same
/// policies and roles (and the body's `Description`, if any).
pub async fn clone_token<E: Env>(
    s: Api<E>,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let b: TokenBody = body(&bytes)?;
    let (_, tokens) = all_tokens(&s, &HashMap::new()).await?;
    let old = tokens
        .into_iter()
        .find(|t| t.accessor_id == id)
        .ok_or_else(|| not_found("token not found"))?;
    let t = Token {
        accessor_id: s.new_id(),
        secret_id: s.new_id(),
        description: if b.description.is_empty() {
            old.description
        } else {
            b.description
        },
        create_ms: wall_ms(&s),
        policies: old.policies,
        roles: old.roles,
        identities: old.identities,
        local: old.local,
        expiration_ms: old.expiration_ms,
        ..Token::default()
    };
    let accessor = t.accessor_id.clone();
    acl_write(&s, Command::AclTokenSet(Box::new(t))).await?;
    token_by_accessor(&s, &accessor).await
}

/// `GET /v1/acl/token/self`: the request's own token.
async fn token_self<E: Env>(s: &Api<E>) -> Result<Response, ApiError> {
    let secret = s
        .caller
        .token
        .clone()
        .unwrap_or_else(|| s.acl.default_token());
    let (h, answer) = read(s, &HashMap::new(), Query::AclResolve(secret)).await?;
    match answer {
        Answer::AclResolved(Some(id)) => Ok((h, Json(token_json(&id.token))).into_response()),
        Answer::AclResolved(None) => Err(refusal(ACL_NOT_FOUND.into())),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/acl/tokens` (`?policy=`, `?role=`).
pub async fn list_tokens<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let (h, tokens) = all_tokens(&s, &params).await?;
    let has =
        |links: &[Link], id: Option<&String>| id.is_none_or(|id| links.iter().any(|l| l.id == *id));
    let list: Vec<Value> = tokens
        .iter()
        .filter(|t| has(&t.policies, params.get("policy")) && has(&t.roles, params.get("role")))
        .map(token_json)
        .collect();
    Ok((h, Json(list)).into_response())
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct PolicyBody {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "Rules")]
    rules: String,
    #[serde(rename = "Datacenters")]
    datacenters: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct RoleBody {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "Policies")]
    policies: Option<Vec<Link>>,
    #[serde(flatten)]
    identities: IdentitiesBody,
}

/// What the policy and role endpoints share: both are listed whole by the
/// servers, found by ID or name, written from a body and deleted by ID.
pub trait Named: Sized + Send + Sync + 'static {
    /// `policy` or `role`, as in the paths.
    const KIND: &'static str;
    /// The read that lists them all.
    fn listing() -> Query;
    /// The list in an answer to [`listing`](Self::listing).
    fn list_of(a: Answer) -> Result<Vec<Self>, ApiError>;
    /// Its ID.
    fn id(&self) -> &str;
    /// Its name.
    fn name(&self) -> &str;
    /// Consul's JSON for it.
    fn json(&self) -> Value;
    /// The write of `id` from a request body.
    fn set(id: String, bytes: &[u8]) -> Result<Command, ApiError>;
    /// The delete of `id`.
    fn delete(id: String) -> Command;
}

impl Named for Policy {
    const KIND: &'static str = "policy";
    fn listing() -> Query {
        Query::AclPolicies
    }
    fn list_of(a: Answer) -> Result<Vec<Self>, ApiError> {
        match a {
            Answer::AclPolicies(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn json(&self) -> Value {
        policy_json(self)
    }
    fn set(id: String, bytes: &[u8]) -> Result<Command, ApiError> {
        let b: PolicyBody = body(bytes)?;
        // Refused here, with the parser's words, before it reaches the log.
        crate::acl::Rules::parse(&b.rules).map_err(|e| bad(e.to_string()))?;
        Ok(Command::AclPolicySet(Box::new(Policy {
            id,
            name: b.name,
            description: b.description,
            rules: b.rules,
            datacenters: b.datacenters.unwrap_or_default(),
            ..Policy::default()
        })))
    }
    fn delete(id: String) -> Command {
        Command::AclPolicyDelete { id }
    }
}

impl Named for Role {
    const KIND: &'static str = "role";
    fn listing() -> Query {
        Query::AclRoles
    }
    fn list_of(a: Answer) -> Result<Vec<Self>, ApiError> {
        match a {
            Answer::AclRoles(v) => Ok(v),
            other => Err(unexpected(other)),
        }
    }
    fn id(&self) -> &str {
        &self.id
    }
    fn name(&self) -> &str {
        &self.name
    }
    fn json(&self) -> Value {
        role_json(self)
    }
    fn set(id: String, bytes: &[u8]) -> Result<Command, ApiError> {
        let b: RoleBody = body(bytes)?;
        Ok(Command::AclRoleSet(Box::new(Role {
            id,
            name: b.name,
            description: b.description,
            policies: b.policies.unwrap_or_default(),
            identities: b.identities.into(),
            ..Role::default()
        })))
    }
    fn delete(id: String) -> Command {
        Command::AclRoleDelete { id }
    }
}

/// Every policy (or role), as the servers list them to this request's
/// token.
async fn all<E: Env, T: Named>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Vec<T>), ApiError> {
    let (h, answer) = read(s, params, T::listing()).await?;
    T::list_of(answer).map(|v| (h, v))
}

/// The one that `pick` picks, in Consul's JSON; 404 when none does.
async fn found<E: Env, T: Named>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    pick: impl Fn(&T) -> bool,
) -> Result<Response, ApiError> {
    let (h, all) = all::<E, T>(s, params).await?;
    let one = all
        .iter()
        .find(|x| pick(x))
        .ok_or_else(|| missing(T::KIND))?;
    Ok((h, Json(one.json())).into_response())
}

/// Writes `id` from a request body; the result as stored.
async fn write<E: Env, T: Named>(
    s: &Api<E>,
    id: String,
    bytes: &[u8],
) -> Result<Response, ApiError> {
    acl_write(s, T::set(id.clone(), bytes)?).await?;
    found::<E, T>(s, &HashMap::new(), |x| x.id() == id).await
}

/// `PUT /v1/acl/policy` and `PUT /v1/acl/role`: creates one.
pub async fn create<E: Env, T: Named>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let id = s.new_id();
    write::<E, T>(&s, id, &bytes).await
}

/// `GET|PUT|DELETE /v1/acl/policy/<id>` and `/v1/acl/role/<id>`.
pub async fn by_id<E: Env, T: Named>(
    s: Api<E>,
    method: Method,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    check_uuid(T::KIND, &id)?;
    match method {
        Method::GET => found::<E, T>(&s, &params, |x| x.id() == id).await,
        Method::PUT => write::<E, T>(&s, id, &bytes).await,
        Method::DELETE => {
            acl_write(&s, T::delete(id)).await?;
            Ok(Json(true).into_response())
        }
        _ => Err(super::error::method_not_allowed()),
    }
}

/// `GET /v1/acl/policy/name/<name>` and `/v1/acl/role/name/<name>`.
pub async fn by_name<E: Env, T: Named>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    found::<E, T>(&s, &params, |x| x.name() == name).await
}

/// `GET /v1/acl/policies` and `/v1/acl/roles`.
pub async fn list<E: Env, T: Named>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let (h, all) = all::<E, T>(&s, &params).await?;
    let list: Vec<Value> = all.iter().map(T::json).collect();
    Ok((h, Json(list)).into_response())
}

/// A built-in template in Consul's JSON.
fn template_json(t: &crate::acl::identity::Template) -> Value {
    json!({"TemplateName": t.name, "Schema": t.schema, "Template": t.template})
}

/// The built-in template `name` (axum's wildcard keeps the leading `/`).
fn template_named(name: &str) -> Result<&'static crate::acl::identity::Template, ApiError> {
    let name = name.trim_start_matches('/');
    crate::acl::identity::template(name).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("Invalid templated policy Name: {name:?} does not exist"),
        )
    })
}

/// `GET /v1/acl/templated-policies`: the built-in templates, by name.
pub async fn templated_policies<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let all: serde_json::Map<String, Value> = crate::acl::identity::TEMPLATES
        .iter()
        .map(|t| (t.name.to_string(), template_json(t)))
        .collect();
    Ok(Json(Value::Object(all)).into_response())
}

/// `GET /v1/acl/templated-policy/name/<name>`.
pub async fn templated_policy<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    Ok(Json(template_json(template_named(&name)?)).into_response())
}

/// `POST /v1/acl/templated-policy/preview/<name>` with `{"Name": ...}`:
/// the synthetic policy the template makes with those variables.
pub async fn preview_templated_policy<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let p = preview(template_named(&name)?, &bytes)?;
    Ok(Json(policy_json(&p)).into_response())
}

/// The synthetic policy template `t` makes with a preview body's
/// variables, checked (apart from the handler so the fuzz target checks
/// the same).
pub(super) fn preview(
    t: &crate::acl::identity::Template,
    bytes: &[u8],
) -> Result<Policy, ApiError> {
    let variables: Option<crate::acl::identity::TemplateVariables> =
        if bytes.iter().all(u8::is_ascii_whitespace) {
            None
        } else {
            Some(body(bytes)?)
        };
    let tp = crate::acl::TemplatedPolicy {
        template_name: t.name.to_string(),
        variables,
        datacenters: Vec::new(),
    };
    tp.validate(false).map_err(bad)?;
    tp.synthetic().map_err(bad)
}

/// The body of `PUT /v1/agent/token/<kind>`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct AgentTokenBody {
    #[serde(rename = "Token")]
    token: String,
}

/// `PUT /v1/agent/token/<kind>`: replaces one of the agent's tokens
/// (`default`, `agent`, `dns`) until it restarts.
pub async fn set_agent_token<E: Env>(
    s: Api<E>,
    Path(kind): Path<String>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let b: AgentTokenBody = body(&bytes)?;
    let known = s
        .acl
        .set_token(&kind, Some(b.token).filter(|t| !t.is_empty()))
        .map_err(internal)?;
    if !known {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "Token {kind:?} is unknown (expected default, agent, dns, agent_recovery, replication or config_file_service_registration)"
            ),
        ));
    }
    Ok(StatusCode::OK.into_response())
}

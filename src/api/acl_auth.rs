//! Consul's `/v1/acl/auth-method*`, `/v1/acl/binding-rule*`,
//! `/v1/acl/login` and `/v1/acl/logout`.

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::{HeaderMap, Method};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::acl::{acl_write, body, enabled, missing, token_json};
use super::context::{answer_of, call, read, Api};
use super::error::{bad, unexpected, ApiError};
use crate::acl::identity::TemplateVariables;
use crate::acl::{AuthMethod, BindingRule};
use crate::env::Env;
use crate::server::request::Login;
use crate::server::{Answer, ClientRequest, Query};
use crate::state::Command;

fn method_json(m: &AuthMethod) -> Value {
    let mut v = json!({
        "Name": m.name,
        "Type": m.method_type,
        "DisplayName": m.display_name,
        "Description": m.description,
        "TokenLocality": m.token_locality,
        "Config": m.config,
        "CreateIndex": m.create_index,
        "ModifyIndex": m.modify_index,
    });
    if let Some(ttl) = m.max_token_ttl_ms {
        v["MaxTokenTTL"] = json!(crate::format::go_duration(
            std::time::Duration::from_millis(ttl)
        ));
    }
    v
}

fn rule_json(r: &BindingRule) -> Value {
    let mut v = json!({
        "ID": r.id,
        "Description": r.description,
        "AuthMethod": r.auth_method,
        "Selector": r.selector,
        "BindType": r.bind_type,
        "BindName": r.bind_name,
        "CreateIndex": r.create_index,
        "ModifyIndex": r.modify_index,
    });
    if let Some(vars) = &r.bind_vars {
        v["BindVars"] = json!(vars);
    }
    v
}

/// An auth method as a request body gives it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct MethodBody {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Type")]
    method_type: String,
    #[serde(rename = "DisplayName")]
    display_name: String,
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "MaxTokenTTL")]
    max_token_ttl: Option<Value>,
    #[serde(rename = "TokenLocality")]
    token_locality: String,
    #[serde(rename = "Config")]
    config: Value,
}

impl MethodBody {
    /// The auth method, checked as far as the agent checks it (the fuzz
    /// target checks the same).
    pub(super) fn into_method(self) -> Result<AuthMethod, ApiError> {
        let max_token_ttl_ms = match self.max_token_ttl {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() || s == "0s" => None,
            Some(Value::String(s)) => Some(
                crate::format::parse_duration(&s)
                    .map_err(|e| bad(format!("Invalid MaxTokenTTL: {e}")))?
                    .as_millis() as u64,
            ),
            // Go's time.Duration: nanoseconds.
            Some(Value::Number(n)) => match n.as_u64() {
                Some(0) => None,
                Some(ns) => Some(ns / 1_000_000),
                None => return Err(bad("Invalid MaxTokenTTL: must be a positive duration")),
            },
            Some(other) => return Err(bad(format!("Invalid MaxTokenTTL: {other}"))),
        };
        Ok(AuthMethod {
            name: self.name,
            method_type: self.method_type,
            display_name: self.display_name,
            description: self.description,
            max_token_ttl_ms,
            token_locality: self.token_locality,
            config: self.config,
            ..AuthMethod::default()
        })
    }
}

/// A binding rule as a request body gives it.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct RuleBody {
    #[serde(rename = "Description")]
    description: String,
    #[serde(rename = "AuthMethod")]
    auth_method: String,
    #[serde(rename = "Selector")]
    selector: String,
    #[serde(rename = "BindType")]
    bind_type: String,
    #[serde(rename = "BindName")]
    bind_name: String,
    #[serde(rename = "BindVars")]
    bind_vars: Option<TemplateVariables>,
}

async fn methods<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Vec<AuthMethod>), ApiError> {
    match read(s, params, Query::AclAuthMethods).await? {
        (h, Answer::AclAuthMethods(v)) => Ok((h, v)),
        (_, other) => Err(unexpected(other)),
    }
}

async fn rules<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
) -> Result<(HeaderMap, Vec<BindingRule>), ApiError> {
    match read(s, params, Query::AclBindingRules).await? {
        (h, Answer::AclBindingRules(v)) => Ok((h, v)),
        (_, other) => Err(unexpected(other)),
    }
}

async fn method_named<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Response, ApiError> {
    let (h, all) = methods(s, params).await?;
    let m = all
        .iter()
        .find(|m| m.name == name)
        .ok_or_else(|| missing("auth method"))?;
    Ok((h, Json(method_json(m))).into_response())
}

/// `PUT /v1/acl/auth-method`: creates one.
pub async fn create_method<E: Env>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let m = body::<MethodBody>(&bytes)?.into_method()?;
    let (_, all) = methods(&s, &HashMap::new()).await?;
    if all.iter().any(|o| o.name == m.name) {
        return Err(bad(format!(
            "Invalid Auth Method: Auth Method with name {:?} already exists",
            m.name
        )));
    }
    let name = m.name.clone();
    acl_write(&s, Command::AclAuthMethodSet(Box::new(m))).await?;
    method_named(&s, &HashMap::new(), &name).await
}

/// `GET|PUT|DELETE /v1/acl/auth-method/<name>`.
pub async fn method<E: Env>(
    s: Api<E>,
    method: Method,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    match method {
        Method::GET => method_named(&s, &params, &name).await,
        Method::PUT => {
            let mut m = body::<MethodBody>(&bytes)?.into_method()?;
            if !m.name.is_empty() && m.name != name {
                return Err(bad("Auth Method Name in URL and payload do not match"));
            }
            m.name = name.clone();
            acl_write(&s, Command::AclAuthMethodSet(Box::new(m))).await?;
            method_named(&s, &HashMap::new(), &name).await
        }
        Method::DELETE => {
            acl_write(&s, Command::AclAuthMethodDelete { name }).await?;
            Ok(Json(true).into_response())
        }
        _ => Err(super::error::method_not_allowed()),
    }
}

/// `GET /v1/acl/auth-methods` (without their configs, as Consul lists).
pub async fn list_methods<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let (h, all) = methods(&s, &params).await?;
    let list: Vec<Value> = all
        .iter()
        .map(|m| {
            let mut v = method_json(m);
            if let Some(o) = v.as_object_mut() {
                o.remove("Config");
            }
            v
        })
        .collect();
    Ok((h, Json(list)).into_response())
}

async fn rule_by_id<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    id: &str,
) -> Result<Response, ApiError> {
    let (h, all) = rules(s, params).await?;
    let r = all
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| missing("binding rule"))?;
    Ok((h, Json(rule_json(r))).into_response())
}

impl RuleBody {
    /// The binding rule `id` (the servers check it; the fuzz target makes
    /// the same).
    pub(super) fn into_rule(self, id: String) -> BindingRule {
        BindingRule {
            id,
            description: self.description,
            auth_method: self.auth_method,
            selector: self.selector,
            bind_type: self.bind_type,
            bind_name: self.bind_name,
            bind_vars: self.bind_vars,
            ..BindingRule::default()
        }
    }
}

async fn write_rule<E: Env>(s: &Api<E>, id: String, bytes: &[u8]) -> Result<Response, ApiError> {
    let r = body::<RuleBody>(bytes)?.into_rule(id.clone());
    acl_write(s, Command::AclBindingRuleSet(Box::new(r))).await?;
    rule_by_id(s, &HashMap::new(), &id).await
}

/// `PUT /v1/acl/binding-rule`: creates one.
pub async fn create_rule<E: Env>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let id = s.new_id();
    write_rule(&s, id, &bytes).await
}

/// `GET|PUT|DELETE /v1/acl/binding-rule/<id>`.
pub async fn rule<E: Env>(
    s: Api<E>,
    method: Method,
    Path(id): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    bytes: Bytes,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    match method {
        Method::GET => rule_by_id(&s, &params, &id).await,
        Method::PUT => {
            let (_, all) = rules(&s, &HashMap::new()).await?;
            if !all.iter().any(|r| r.id == id) {
                return Err(bad(format!(
                    "Invalid Binding Rule: no such binding rule with ID {id:?}"
                )));
            }
            write_rule(&s, id, &bytes).await
        }
        Method::DELETE => {
            acl_write(&s, Command::AclBindingRuleDelete { id }).await?;
            Ok(Json(true).into_response())
        }
        _ => Err(super::error::method_not_allowed()),
    }
}

/// `GET /v1/acl/binding-rules` (`?authmethod=`).
pub async fn list_rules<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    enabled(&s)?;
    let (h, all) = rules(&s, &params).await?;
    let only = params.get("authmethod");
    let list: Vec<Value> = all
        .iter()
        .filter(|r| only.is_none_or(|m| r.auth_method == *m))
        .map(rule_json)
        .collect();
    Ok((h, Json(list)).into_response())
}

/// The body of `POST /v1/acl/login`.
#[derive(Deserialize, Default)]
#[serde(default)]
pub(super) struct LoginBody {
    #[serde(rename = "AuthMethod")]
    auth_method: String,
    #[serde(rename = "BearerToken")]
    bearer_token: String,
    #[serde(rename = "Meta")]
    meta: BTreeMap<String, String>,
}

impl LoginBody {
    /// The login, checked, with `new_id` for the new token's IDs (apart
    /// from the handler so the fuzz target checks the same).
    pub(super) fn into_login(self, new_id: impl Fn() -> String) -> Result<Login, ApiError> {
        if self.auth_method.is_empty() {
            return Err(bad("Missing auth method name"));
        }
        if self.bearer_token.is_empty() {
            return Err(bad("Missing auth method bearer token"));
        }
        Ok(Login {
            method: self.auth_method,
            bearer_token: self.bearer_token,
            meta: self.meta,
            accessor_id: new_id(),
            secret_id: new_id(),
        })
    }
}

/// `POST /v1/acl/login`: a bearer token traded for an ACL token.
pub async fn login<E: Env>(s: Api<E>, bytes: Bytes) -> Result<Response, ApiError> {
    enabled(&s)?;
    let login = body::<LoginBody>(&bytes)?.into_login(|| s.new_id())?;
    let reply = call(
        &s,
        ClientRequest::Login {
            login: Box::new(login),
            hops: 0,
        },
    )
    .await;
    match answer_of(&reply)? {
        Answer::AclResolved(Some(id)) => Ok(Json(token_json(&id.token)).into_response()),
        other => Err(unexpected(other)),
    }
}

/// `GET /v1/acl/replication`: the leader's ACL replication status, in
/// Consul's fields.
pub async fn replication<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let reply = call(&s, ClientRequest::AclReplication { hops: 0 }).await;
    let st = match answer_of(&reply)? {
        Answer::AclReplication(st) => st,
        other => return Err(unexpected(other)),
    };
    let time = |ms: Option<u64>| crate::format::rfc3339(ms.unwrap_or(0));
    Ok(Json(json!({
        "Enabled": st.enabled,
        "Running": st.running,
        "SourceDatacenter": st.source_datacenter,
        "ReplicationType": st.replication_type,
        "ReplicatedIndex": st.replicated_index,
        "ReplicatedRoleIndex": st.replicated_index,
        "ReplicatedTokenIndex": if st.replication_type == "tokens" { st.replicated_index } else { 0 },
        "LastSuccess": time(st.last_success_ms),
        "LastError": time(st.last_error_ms),
        "LastErrorMessage": st.last_error_message,
    }))
    .into_response())
}

/// `POST /v1/acl/logout`: deletes the request's token, if a login made it.
pub async fn logout<E: Env>(s: Api<E>) -> Result<Response, ApiError> {
    enabled(&s)?;
    let reply = call(&s, ClientRequest::Logout { hops: 0 }).await;
    answer_of(&reply)?;
    Ok(Json(true).into_response())
}

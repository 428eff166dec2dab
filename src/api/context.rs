//! What every endpoint works with: the agent's state ([`ApiState`]), who
//! is asking and for which datacenter ([`Caller`]), both handed to an
//! endpoint as one value ([`Api`]), and the ways from there to the
//! servers: reads with Consul's blocking-query parameters, writes, and the
//! token's authorizer.
//!
//! The caller travels as a value, set by the layers around the endpoints
//! (`?dc=` in `common_params`, the token in `acl::enforce`) and
//! read from the request's extensions, so a request to the servers carries
//! exactly the datacenter and token of the HTTP request it serves.

use std::collections::{BTreeMap, HashMap};
use std::ops::Deref;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderName, HeaderValue};
use tokio::sync::mpsc;

use super::error::{bad, refusal, unexpected, ApiError};
use crate::acl::{Access, Authorizer, Global, Resource};
use crate::env::Env;
use crate::format::parse_duration;
use crate::gossip::Gossip;
use crate::server::{Answer, ClientReply, ClientRequest, Consistency, Query, Read};
use crate::state::Command;

/// Static facts about the agent, for `/v1/agent/self`.
#[derive(Debug, Clone)]
pub struct AgentInfo {
    /// Node name.
    pub node_name: String,
    /// Node ID.
    pub node_id: String,
    /// Datacenter.
    pub datacenter: String,
    /// cairn version.
    pub version: String,
    /// Node metadata.
    pub node_meta: BTreeMap<String, String>,
    /// The agent's settings in Consul's runtime-config names (`DebugConfig`).
    pub debug_config: serde_json::Value,
}

/// What the handlers need.
pub struct ApiState<E: Env> {
    /// The environment (for resolving join addresses).
    pub env: E,
    /// Agent facts.
    pub info: AgentInfo,
    /// The LAN gossip node.
    pub gossip: Gossip,
    /// A server's WAN pool (none on client agents).
    pub wan: Option<Gossip>,
    /// The way to the servers.
    pub servers: Arc<crate::agent::servers::Servers<E>>,
    /// The agent's own services and checks.
    pub local: Arc<crate::agent::local::LocalState>,
    /// Randomness for IDs the agent makes (sessions).
    pub rng: std::sync::Mutex<rand_chacha::ChaCha8Rng>,
    /// Asks the agent to leave and stop.
    pub stop: mpsc::Sender<()>,
    /// Port assumed for join addresses without one.
    pub default_port: u16,
    /// Where script checks may come from.
    pub scripts: crate::agent::definition::ScriptPolicy,
    /// Re-reads the configuration (`PUT /v1/agent/reload`).
    pub reload: Arc<crate::agent::reload::ConfigReload>,
    /// User events.
    pub events: Arc<crate::agent::events::Events>,
    /// Connect leaf certificates held for this agent's services.
    pub leaves: crate::agent::leaves::LeafCache,
    /// The gossip keyrings this agent manages (LAN, and WAN on a server);
    /// empty when gossip is not encrypted.
    pub keyrings: Vec<Arc<crate::agent::keyring::PoolKeyring>>,
    /// Token resolution for the agent's own endpoints (ACLs).
    pub acl: Arc<crate::agent::acl::AclResolver<E>>,
    /// On an agent started with `-secure`: what its join tokens carry.
    pub join_issuer: Option<crate::agent::secure::JoinIssuer>,
}

impl<E: Env> ApiState<E> {
    /// A fresh random ID in UUID form (sessions, events).
    pub fn new_id(&self) -> String {
        use rand::RngCore;
        let mut raw = [0u8; 16];
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(&mut raw);
        crate::format::format_uuid(raw)
    }
}

/// Who asks, and for which datacenter: what an HTTP request brings besides
/// its path and body.
#[derive(Debug, Clone, Default)]
pub struct Caller {
    /// The request's token (the agent's default token if it brought none);
    /// `None` with ACLs off.
    pub token: Option<String>,
    /// The datacenter `?dc=` names, when it is not this agent's.
    pub dc: Option<String>,
}

/// The API as one request sees it: the agent's state and the [`Caller`].
/// Endpoints take it as an extractor.
pub struct Api<E: Env> {
    state: Arc<ApiState<E>>,
    /// Who asks, and for which datacenter.
    pub caller: Caller,
}

impl<E: Env> Clone for Api<E> {
    fn clone(&self) -> Self {
        Api {
            state: self.state.clone(),
            caller: self.caller.clone(),
        }
    }
}

impl<E: Env> Deref for Api<E> {
    type Target = ApiState<E>;
    fn deref(&self) -> &ApiState<E> {
        &self.state
    }
}

impl<E: Env> FromRequestParts<Arc<ApiState<E>>> for Api<E> {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<ApiState<E>>,
    ) -> Result<Self, Self::Rejection> {
        Ok(Api::new(
            state.clone(),
            parts
                .extensions
                .get::<Caller>()
                .cloned()
                .unwrap_or_default(),
        ))
    }
}

impl<E: Env> Api<E> {
    /// `state` as `caller` sees it.
    pub fn new(state: Arc<ApiState<E>>, caller: Caller) -> Self {
        Api { state, caller }
    }

    /// The same caller, asking datacenter `dc` (`None`: this one), as a
    /// request body's `Datacenter` sends a write.
    pub fn in_dc(&self, dc: Option<String>) -> Self {
        Api {
            state: self.state.clone(),
            caller: Caller {
                dc,
                ..self.caller.clone()
            },
        }
    }

    /// The datacenter a request body's `Datacenter` names (`""`: the one
    /// `?dc=` names, else this one), as `None` for this one.
    pub fn body_dc(&self, dc: &str) -> Option<String> {
        if dc.is_empty() {
            return self.caller.dc.clone();
        }
        (dc != self.info.datacenter).then(|| dc.to_string())
    }

    /// `req` as this caller sends it: to its datacenter, with its token
    /// (without one, the servers' client adds the agent's).
    pub fn as_caller(&self, req: ClientRequest) -> ClientRequest {
        let req = req.in_dc(self.caller.dc.as_deref());
        match &self.caller.token {
            Some(t) => req.with_token(t),
            None => req,
        }
    }
}

/// Consul's header for answers that ACLs filtered.
pub(crate) const FILTERED_HEADER: &str = "x-consul-results-filtered-by-acls";

/// Sends `req` to the servers: this datacenter's, or with `?dc=` another
/// one's (a local server sends it on to a server found in the WAN pool).
pub(crate) async fn call<E: Env>(s: &Api<E>, req: ClientRequest) -> ClientReply {
    s.servers.call(s.as_caller(req)).await
}

/// A blocking query's wait when none is given, and the most allowed
/// (Consul's defaults).
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
const MAX_WAIT: Duration = Duration::from_secs(600);

/// The unsigned integer parameter `name`, if given; 400 when it is not one.
pub(crate) fn uint_param(
    params: &HashMap<String, String>,
    name: &str,
) -> Result<Option<u64>, ApiError> {
    params
        .get(name)
        .map(|v| {
            v.parse().map_err(|_| {
                bad(format!(
                    "Invalid {name} parameter {v:?}: not an unsigned integer"
                ))
            })
        })
        .transpose()
}

/// `?stale`, `?consistent`, `?index` and `?wait` as a [`Read`] of `query`.
pub(crate) fn read_of(params: &HashMap<String, String>, query: Query) -> Result<Read, ApiError> {
    let consistency = match (
        params.contains_key("stale"),
        params.contains_key("consistent"),
    ) {
        (true, true) => {
            return Err(bad(
                "Cannot specify ?stale with ?consistent, conflicting semantics.",
            ))
        }
        (true, false) => Consistency::Stale,
        (false, true) => Consistency::Consistent,
        (false, false) => Consistency::Default,
    };
    let (min_index, wait) = blocking_of(params)?;
    Ok(Read {
        consistency,
        min_index,
        max_wait_ms: wait.as_millis() as u64,
        query,
    })
}

/// `?index` and `?wait` of a blocking query: the index seen, and how long
/// to wait for a change past it.
pub(crate) fn blocking_of(params: &HashMap<String, String>) -> Result<(u64, Duration), ApiError> {
    let min_index = uint_param(params, "index")?.unwrap_or(0);
    let wait = match params.get("wait") {
        Some(w) => parse_duration(w).map_err(|e| bad(format!("Invalid wait time: {e}")))?,
        None => DEFAULT_WAIT,
    }
    .min(MAX_WAIT);
    // Consul adds up to wait/16 so that many watchers woken by one change
    // do not all come back at once.
    Ok((min_index, wait + wait / 16))
}

/// Consul's query metadata headers.
pub(crate) fn meta_headers(r: &ClientReply) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(HeaderName::from_static(k), v);
        }
    };
    put("x-consul-index", r.index.to_string());
    put("x-consul-knownleader", r.known_leader.to_string());
    let contact = if r.last_contact_ms == u64::MAX {
        0
    } else {
        r.last_contact_ms
    };
    put("x-consul-lastcontact", contact.to_string());
    if r.filtered {
        put(FILTERED_HEADER, "true".into());
    }
    h
}

/// The answer of a reply, or the servers' refusal: 403 for ACLs (see
/// [`refusal`]), else a 500 (Consul's status for "no cluster
/// leader" and other RPC failures).
pub(crate) fn answer_of(r: &ClientReply) -> Result<Answer, ApiError> {
    r.answer.clone().map_err(refusal)
}

/// Runs a read of `query` with the request's parameters (`?stale`,
/// `?index`, ...); Consul's metadata headers and the answer.
pub(crate) async fn read<E: Env>(
    s: &Api<E>,
    params: &HashMap<String, String>,
    query: Query,
) -> Result<(HeaderMap, Answer), ApiError> {
    let read = read_of(params, query)?;
    let reply = call(s, ClientRequest::Read { read, hops: 0 }).await;
    Ok((meta_headers(&reply), answer_of(&reply)?))
}

/// Writes `cmd` through the servers; whether it took effect.
pub(crate) async fn write_cmd<E: Env>(s: &Api<E>, cmd: Command) -> Result<bool, ApiError> {
    let reply = call(
        s,
        ClientRequest::Write {
            cmd: Box::new(cmd),
            hops: 0,
        },
    )
    .await;
    match answer_of(&reply)? {
        Answer::Written(ok) => Ok(ok),
        other => Err(unexpected(other)),
    }
}

/// What the request's token may do (everything with ACLs off).
pub(crate) async fn authorizer<E: Env>(s: &Api<E>) -> Result<Arc<Authorizer>, ApiError> {
    let token = s
        .caller
        .token
        .clone()
        .unwrap_or_else(|| s.acl.default_token());
    s.acl.resolve(&token).await.map_err(refusal)
}

/// Refuses the request unless its token may `access` `name` of `res`.
pub(crate) async fn require<E: Env>(
    s: &Api<E>,
    res: Resource,
    name: &str,
    access: Access,
) -> Result<(), ApiError> {
    authorizer(s)
        .await?
        .check(res, name, access)
        .map_err(refusal)
}

/// Refuses the request unless its token may `access` `g`.
pub(crate) async fn require_global<E: Env>(
    s: &Api<E>,
    g: Global,
    access: Access,
) -> Result<(), ApiError> {
    authorizer(s)
        .await?
        .check_global(g, access)
        .map_err(refusal)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_parameters() {
        let p = |kv: &[(&str, &str)]| -> HashMap<String, String> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        let r = read_of(&p(&[("index", "7"), ("wait", "16s")]), Query::Nodes).unwrap();
        assert_eq!((r.min_index, r.max_wait_ms), (7, 17_000));
        assert_eq!(r.consistency, Consistency::Default);
        let r = read_of(&p(&[("stale", "")]), Query::Nodes).unwrap();
        assert_eq!(r.consistency, Consistency::Stale);
        assert!(read_of(&p(&[("stale", ""), ("consistent", "")]), Query::Nodes).is_err());
        assert!(read_of(&p(&[("index", "x")]), Query::Nodes).is_err());
        assert!(read_of(&p(&[("wait", "forever")]), Query::Nodes).is_err());
        // Waits are capped at ten minutes (plus jitter).
        let r = read_of(&p(&[("wait", "1h")]), Query::Nodes).unwrap();
        assert_eq!(r.max_wait_ms, 637_500);
    }
}

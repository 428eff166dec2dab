//! The Consul-compatible HTTP API (axum), served through the [`Env`] so it
//! runs on real sockets and inside the simulator alike.
//!
//! Paths, JSON field names and status codes are Consul's, so existing Consul
//! clients and tools work against a cairn agent.

pub mod acl;
mod acl_auth;
pub mod agent;
pub mod catalog;
pub mod connect;
pub mod context;
pub mod coordinate;
pub mod decode;
pub mod error;
pub mod event;
pub mod filter;
#[doc(hidden)]
pub mod fuzzing;
pub mod host;
mod join;
pub mod kv;
pub mod metrics;
pub mod monitor;
pub mod operator;
pub mod query;
pub mod raft;
pub mod session;
pub mod snapshot;
pub mod txn;

pub use context::{AgentInfo, Api, ApiState, Caller};
pub use coordinate::{ApiCoord, ApiDcCoords, ApiNodeCoord};
pub use error::ApiError;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{Path, Query as UrlQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json, Router};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::acl::{Policy, Role};
use crate::env::{AxumListener, Env, Task};
use crate::gossip::Member;
use error::internal;

/// The routes of the API.
pub fn router<E: Env>(state: Arc<ApiState<E>>) -> Router {
    Router::new()
        .route("/", get(index::<E>))
        .route("/ui", get(index::<E>))
        .route("/ui/", get(index::<E>))
        .route("/v1/agent/members", get(members::<E>))
        .route("/v1/agent/metrics", get(metrics::metrics::<E>))
        .route("/v1/agent/monitor", get(monitor::monitor::<E>))
        .route("/v1/agent/host", get(host::host::<E>))
        .merge(acl_routes::<E>())
        .route("/v1/agent/self", get(agent_self::<E>))
        .route("/v1/agent/join/{address}", put(join::<E>))
        .route("/v1/agent/leave", put(leave::<E>))
        .route("/v1/agent/reload", put(reload::<E>))
        .route("/v1/agent/force-leave/{node}", put(force_leave::<E>))
        .route("/v1/agent/services", get(agent::services::<E>))
        .route("/v1/agent/checks", get(agent::checks::<E>))
        .route(
            "/v1/agent/service/register",
            put(agent::register_service::<E>),
        )
        .route(
            "/v1/agent/service/deregister/{id}",
            put(agent::deregister_service::<E>),
        )
        .route("/v1/agent/check/register", put(agent::register_check::<E>))
        .route("/v1/agent/maintenance", put(agent::node_maintenance::<E>))
        .route(
            "/v1/agent/service/maintenance/{id}",
            put(agent::service_maintenance::<E>),
        )
        .route(
            "/v1/agent/check/deregister/{id}",
            put(agent::deregister_check::<E>),
        )
        .route("/v1/agent/check/update/{id}", put(agent::update_check::<E>))
        .route("/v1/agent/check/{verb}/{id}", put(agent::mark_check::<E>))
        .route("/v1/coordinate/nodes", get(coordinate::nodes::<E>))
        .route("/v1/coordinate/update", put(coordinate::update::<E>))
        .route("/v1/coordinate/rtt", get(coordinate::rtt_between::<E>))
        .route(
            "/v1/kv/{*key}",
            get(kv::get::<E>).put(kv::put::<E>).delete(kv::delete::<E>),
        )
        .route(
            "/v1/kv/",
            get(kv::get::<E>).put(kv::put::<E>).delete(kv::delete::<E>),
        )
        .route("/v1/catalog/datacenters", get(catalog::datacenters::<E>))
        .route("/v1/catalog/nodes", get(catalog::nodes::<E>))
        .route("/v1/catalog/services", get(catalog::services::<E>))
        .route("/v1/catalog/service/{name}", get(catalog::service::<E>))
        .route("/v1/catalog/node/{name}", get(catalog::node::<E>))
        .route(
            "/v1/catalog/node-services/{name}",
            get(catalog::node_services_list::<E>),
        )
        .route("/v1/catalog/register", put(catalog::register::<E>))
        .route("/v1/catalog/deregister", put(catalog::deregister::<E>))
        .route("/v1/health/node/{name}", get(catalog::health_node::<E>))
        .route("/v1/health/checks/{name}", get(catalog::health_checks::<E>))
        .route(
            "/v1/health/service/{name}",
            get(catalog::health_service::<E>),
        )
        .route("/v1/health/state/{state}", get(catalog::health_state::<E>))
        .route(
            "/v1/health/connect/{name}",
            get(catalog::health_connect::<E>),
        )
        .route("/v1/catalog/connect/{name}", get(catalog::connect::<E>))
        .route("/v1/connect/ca/roots", get(connect::ca_roots::<E>))
        .route("/v1/agent/connect/ca/roots", get(connect::ca_roots::<E>))
        .route(
            "/v1/connect/ca/configuration",
            get(connect::ca_configuration::<E>).put(connect::ca_set_configuration::<E>),
        )
        .route(
            "/v1/agent/connect/ca/leaf/{service}",
            get(connect::agent_leaf::<E>),
        )
        .route("/v1/agent/connect/authorize", post(connect::authorize::<E>))
        .route(
            "/v1/connect/intentions",
            get(connect::list_intentions::<E>).post(connect::create_intention::<E>),
        )
        .route(
            "/v1/connect/intentions/match",
            get(connect::match_intentions::<E>),
        )
        .route(
            "/v1/connect/intentions/check",
            get(connect::check_intention::<E>),
        )
        .route(
            "/v1/connect/intentions/{id}",
            get(connect::get_intention::<E>)
                .put(connect::put_intention::<E>)
                .delete(connect::delete_intention::<E>),
        )
        .route("/v1/session/create", put(session::create::<E>))
        .route("/v1/session/destroy/{id}", put(session::destroy::<E>))
        .route("/v1/session/info/{id}", get(session::info::<E>))
        .route("/v1/session/node/{node}", get(session::node::<E>))
        .route("/v1/session/list", get(session::all::<E>))
        .route("/v1/session/renew/{id}", put(session::renew::<E>))
        .route("/v1/txn", put(txn::txn::<E>))
        .route("/v1/query", get(query::list::<E>).post(query::create::<E>))
        .route(
            "/v1/query/{id}",
            get(query::get::<E>)
                .put(query::update::<E>)
                .delete(query::delete::<E>),
        )
        .route("/v1/query/{id}/{verb}", get(query::action::<E>))
        .route("/v1/event/fire/{name}", put(event::fire::<E>))
        .route("/v1/event/list", get(event::list::<E>))
        .route(
            "/v1/operator/keyring",
            get(operator::list::<E>)
                .post(operator::install::<E>)
                .put(operator::use_key::<E>)
                .delete(operator::remove::<E>),
        )
        .route("/v1/operator/usage", get(operator::usage::<E>))
        .route(
            "/v1/operator/raft/configuration",
            get(raft::configuration::<E>),
        )
        .route("/v1/operator/raft/peer", delete(raft::remove_peer::<E>))
        .route(
            "/v1/operator/raft/transfer-leader",
            post(raft::transfer_leader::<E>),
        )
        .route(
            "/v1/operator/autopilot/configuration",
            get(raft::get_config::<E>).put(raft::set_config::<E>),
        )
        .route("/v1/operator/autopilot/health", get(raft::health::<E>))
        .route("/v1/operator/autopilot/state", get(raft::state::<E>))
        .route(
            "/v1/snapshot",
            get(snapshot::save::<E>).put(snapshot::restore::<E>).layer(
                axum::extract::DefaultBodyLimit::max(crate::archive::MAX_STATE as usize),
            ),
        )
        .route("/v1/status/leader", get(kv::leader::<E>))
        .route("/v1/status/peers", get(kv::peers::<E>))
        .route("/v1/coordinate/node/{name}", get(coordinate::node::<E>))
        .route(
            "/v1/coordinate/datacenters",
            get(coordinate::datacenters::<E>),
        )
        .fallback(not_found)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            acl::enforce::<E>,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            common_params::<E>,
        ))
        .with_state(state)
}

/// The ACL routes (`/v1/acl/*`, and the agent's own tokens).
fn acl_routes<E: Env>() -> Router<Arc<ApiState<E>>> {
    Router::new()
        .route("/v1/agent/token/{kind}", put(acl::set_agent_token::<E>))
        .route("/v1/acl/bootstrap", put(acl::bootstrap::<E>))
        .route("/v1/acl/token", put(acl::create_token::<E>))
        .route(
            "/v1/acl/token/{id}",
            get(acl::token::<E>)
                .put(acl::token::<E>)
                .delete(acl::token::<E>),
        )
        .route("/v1/acl/token/{id}/clone", put(acl::clone_token::<E>))
        .route("/v1/acl/tokens", get(acl::list_tokens::<E>))
        .route("/v1/acl/policy", put(acl::create::<E, Policy>))
        .route(
            "/v1/acl/policy/{id}",
            get(acl::by_id::<E, Policy>)
                .put(acl::by_id::<E, Policy>)
                .delete(acl::by_id::<E, Policy>),
        )
        .route("/v1/acl/policy/name/{name}", get(acl::by_name::<E, Policy>))
        .route("/v1/acl/policies", get(acl::list::<E, Policy>))
        .route("/v1/acl/role", put(acl::create::<E, Role>))
        .route(
            "/v1/acl/role/{id}",
            get(acl::by_id::<E, Role>)
                .put(acl::by_id::<E, Role>)
                .delete(acl::by_id::<E, Role>),
        )
        .route("/v1/acl/role/name/{name}", get(acl::by_name::<E, Role>))
        .route("/v1/acl/roles", get(acl::list::<E, Role>))
        .route(
            "/v1/acl/templated-policies",
            get(acl::templated_policies::<E>),
        )
        .route("/v1/acl/auth-method", put(acl_auth::create_method::<E>))
        .route(
            "/v1/acl/auth-method/{name}",
            get(acl_auth::method::<E>)
                .put(acl_auth::method::<E>)
                .delete(acl_auth::method::<E>),
        )
        .route("/v1/acl/auth-methods", get(acl_auth::list_methods::<E>))
        .route("/v1/acl/binding-rule", put(acl_auth::create_rule::<E>))
        .route(
            "/v1/acl/binding-rule/{id}",
            get(acl_auth::rule::<E>)
                .put(acl_auth::rule::<E>)
                .delete(acl_auth::rule::<E>),
        )
        .route("/v1/acl/binding-rules", get(acl_auth::list_rules::<E>))
        .route("/v1/acl/login", post(acl_auth::login::<E>))
        .route("/v1/acl/logout", post(acl_auth::logout::<E>))
        .route("/v1/acl/replication", get(acl_auth::replication::<E>))
        .route("/v1/acl/join-token", put(join::create::<E>))
        .route(
            "/v1/acl/templated-policy/name/{*name}",
            get(acl::templated_policy::<E>),
        )
        .route(
            "/v1/acl/templated-policy/preview/{*name}",
            post(acl::preview_templated_policy::<E>),
        )
}

/// Endpoints whose answers `?filter` applies to (Consul's list endpoints).
const FILTERABLE: &[&str] = &[
    "/v1/agent/services",
    "/v1/agent/checks",
    "/v1/agent/members",
    "/v1/catalog/nodes",
    "/v1/catalog/node/",
    "/v1/catalog/service/",
    "/v1/catalog/node-services/",
    "/v1/health/node/",
    "/v1/health/checks/",
    "/v1/health/service/",
    "/v1/health/state/",
];

/// Endpoints whose answers `?near` sorts by estimated round-trip time.
const SORTABLE: &[&str] = &[
    "/v1/catalog/nodes",
    "/v1/catalog/service/",
    "/v1/health/checks/",
    "/v1/health/service/",
    "/v1/health/state/",
];

fn path_in(path: &str, list: &[&str]) -> bool {
    list.iter()
        .any(|p| path == *p || (p.ends_with('/') && path.starts_with(p)))
}

/// The parameters every endpoint takes, handled around the endpoints:
/// `?dc` (another datacenter's servers answer, through the WAN pool), `?filter` (a [`filter::Filter`] over the
/// list answered), `?near` (the list sorted by estimated RTT from a node,
/// `_agent` for this one) and `?pretty` (indented JSON).
async fn common_params<E: Env>(
    State(s): State<Arc<ApiState<E>>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let query = req.uri().query().unwrap_or("").to_owned();
    let params: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };
    // Another datacenter: every request to the servers this endpoint
    // makes goes there (see [`context::call`]).
    let remote_dc = param("dc").filter(|dc| !dc.is_empty() && *dc != s.info.datacenter);
    let path = req.uri().path().to_owned();
    let is_get = req.method() == axum::http::Method::GET;
    let filter = match param("filter").filter(|f| !f.is_empty()) {
        Some(f) if is_get && path_in(&path, FILTERABLE) => match filter::Filter::parse(&f) {
            Ok(f) => Some(f),
            Err(e) => {
                return ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("Failed to create boolean expression evaluator: {e}"),
                )
                .into_response()
            }
        },
        _ => None,
    };
    let near = param("near")
        .filter(|n| !n.is_empty() && is_get && path_in(&path, SORTABLE))
        .map(|n| {
            if n == "_agent" {
                s.info.node_name.clone()
            } else {
                n
            }
        });
    let pretty = param("pretty").is_some();
    req.extensions_mut().insert(Caller {
        token: None,
        dc: remote_dc,
    });
    let resp = next.run(req).await;
    let is_json = resp
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let reshape = filter.is_some() || near.is_some();
    // Only successful answers are filtered or sorted; errors pass as they are.
    let worth_reading = pretty || (reshape && resp.status() == StatusCode::OK);
    if !is_json || !worth_reading {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, 64 << 20).await else {
        return ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "response too large".into(),
        )
        .into_response();
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Response::from_parts(parts, axum::body::Body::from(bytes));
    };
    if parts.status == StatusCode::OK {
        if let Some(f) = &filter {
            filter::apply(f, &mut value);
        }
        if let Some(origin) = &near {
            if let Ok(coords) = s.gossip.coordinates().await {
                coordinate::sort_near(&mut value, origin, &coords);
            }
        }
    }
    let text = if pretty {
        serde_json::to_vec_pretty(&value).map(|mut t| {
            t.push(b'\n');
            t
        })
    } else {
        serde_json::to_vec(&value)
    }
    .unwrap_or_else(|_| bytes.to_vec());
    let mut parts = parts;
    parts.headers.remove(axum::http::header::CONTENT_LENGTH);
    Response::from_parts(parts, axum::body::Body::from(text))
}

/// Binds `addr` through `env` and serves the API; returns the bound address
/// and the serving task.
pub async fn serve<E: Env>(
    env: &E,
    addr: SocketAddr,
    state: Arc<ApiState<E>>,
) -> std::io::Result<(SocketAddr, Task)> {
    let listener = env.bind_tcp(addr).await?;
    let bound = crate::env::TcpListener::local_addr(&listener)?;
    let app = router(state);
    let env2 = env.clone();
    let task =
        env.spawn(async move { serve_connections(&env2, AxumListener(listener), app).await });
    Ok((bound, task))
}

/// Serves `app` over HTTP/1.1 on every connection `listener` accepts, each
/// in a task of `env`'s. (`axum::serve` would start them with
/// `tokio::spawn`, outside the `Env`: a simulated crash would leave them
/// running.)
async fn serve_connections<E: Env, L: axum::serve::Listener>(
    env: &E,
    mut listener: L,
    app: axum::Router,
) where
    L::Addr: std::fmt::Debug,
{
    loop {
        let (io, from) = listener.accept().await;
        let service = hyper_util::service::TowerToHyperService::new(app.clone());
        env.spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(?from, error = %e, "HTTP connection failed");
            }
        })
        .detach();
    }
}

/// Serves the API over HTTPS on `addr` with `tls`; returns the bound
/// address and the serving task. Handshakes run off the accept loop (a
/// client that never finishes one holds up nobody), for at most 10 s.
pub async fn serve_https<E: Env>(
    env: &E,
    addr: SocketAddr,
    tls: Arc<rustls::ServerConfig>,
    state: Arc<ApiState<E>>,
) -> std::io::Result<(SocketAddr, Task)> {
    let listener = env.bind_tcp(addr).await?;
    let bound = crate::env::TcpListener::local_addr(&listener)?;
    let app = router(state);
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let env2 = env.clone();
    let task = env.spawn(async move {
        let handshakes = env2.spawn({
            let env = env2.clone();
            async move {
                loop {
                    let (conn, from) = match crate::env::TcpListener::accept(&listener).await {
                        Ok(c) => c,
                        Err(e) => {
                            tracing::warn!(error = %e, "accepting an HTTPS connection failed");
                            continue;
                        }
                    };
                    let (acceptor, tx, env3) = (acceptor.clone(), tx.clone(), env.clone());
                    env.spawn(async move {
                        let shake = acceptor.accept(conn);
                        match crate::env::timeout(&env3, std::time::Duration::from_secs(10), shake)
                            .await
                        {
                            Ok(Ok(stream)) => {
                                let _ = tx.send((stream, from)).await;
                            }
                            Ok(Err(e)) => {
                                tracing::debug!(%from, error = %e, "HTTPS handshake refused")
                            }
                            Err(_) => tracing::debug!(%from, "HTTPS handshake timed out"),
                        }
                    })
                    .detach();
                }
            }
        });
        let listener = TlsListener { rx, addr: bound };
        serve_connections(&env2, listener, app).await;
        drop(handshakes);
    });
    Ok((bound, task))
}

/// Connections that finished their TLS handshake, for axum.
struct TlsListener<S> {
    rx: mpsc::Receiver<(tokio_rustls::server::TlsStream<S>, SocketAddr)>,
    addr: SocketAddr,
}

impl<S> axum::serve::Listener for TlsListener<S>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    type Io = tokio_rustls::server::TlsStream<S>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The handshake task is gone: the agent is stopping.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        Ok(self.addr)
    }
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "Not Found".into())
}

/// A member as `/v1/agent/members` reports it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ApiMember {
    /// Node name.
    pub name: String,
    /// Gossip IP address.
    pub addr: String,
    /// Gossip port.
    pub port: u16,
    /// Serf tags.
    pub tags: BTreeMap<String, String>,
    /// Serf status code (1 alive, 2 leaving, 3 left, 4 failed).
    pub status: u8,
    /// Oldest memberlist protocol understood.
    pub protocol_min: u8,
    /// Newest memberlist protocol understood.
    pub protocol_max: u8,
    /// memberlist protocol spoken.
    pub protocol_cur: u8,
    /// Oldest delegate protocol understood.
    pub delegate_min: u8,
    /// Newest delegate protocol understood.
    pub delegate_max: u8,
    /// Delegate protocol spoken.
    pub delegate_cur: u8,
}

impl From<&Member> for ApiMember {
    fn from(m: &Member) -> Self {
        ApiMember {
            name: m.name.clone(),
            addr: m.addr.ip().to_string(),
            port: m.addr.port(),
            tags: m.tags(),
            status: m.status.code(),
            protocol_min: m.vsn[0],
            protocol_max: m.vsn[1],
            protocol_cur: m.vsn[2],
            delegate_min: m.vsn[3],
            delegate_max: m.vsn[4],
            delegate_cur: m.vsn[5],
        }
    }
}

/// `GET /v1/agent/members`; with `?wan`, the WAN pool's members
/// (`<node>.<dc>`, every datacenter's servers). A client agent is in no
/// WAN pool; it lists its own datacenter's servers under their WAN names.
async fn members<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<std::collections::HashMap<String, String>>,
) -> Result<Json<Vec<ApiMember>>, ApiError> {
    if let (true, Some(wan)) = (params.contains_key("wan"), &s.wan) {
        let members = wan.members().await.map_err(internal)?;
        return Ok(Json(members.iter().map(ApiMember::from).collect()));
    }
    let members = s.gossip.members().await.map_err(internal)?;
    if !params.contains_key("wan") {
        return Ok(Json(members.iter().map(ApiMember::from).collect()));
    }
    Ok(Json(
        crate::server::member::wan_servers(&members, &s.info.datacenter)
            .map(|(name, m)| ApiMember {
                name,
                ..ApiMember::from(m)
            })
            .collect(),
    ))
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfConfig {
    datacenter: String,
    primary_datacenter: String,
    node_name: String,
    #[serde(rename = "NodeID")]
    node_id: String,
    revision: String,
    server: bool,
    version: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SelfResponse {
    config: SelfConfig,
    coord: Option<ApiCoord>,
    member: Option<ApiMember>,
    stats: BTreeMap<String, BTreeMap<String, String>>,
    meta: BTreeMap<String, String>,
    debug_config: serde_json::Value,
    /// The xDS server for Envoy, which cairn does not run.
    #[serde(rename = "xDS")]
    xds: Option<()>,
}

async fn agent_self<E: Env>(s: Api<E>) -> Result<Json<serde_json::Value>, ApiError> {
    let members = s.gossip.members().await.map_err(internal)?;
    let stats = s.gossip.stats().await.map_err(internal)?;
    let coords = s.gossip.coordinates().await.map_err(internal)?;
    let me = members
        .iter()
        .find(|m| m.name == s.info.node_name)
        .map(ApiMember::from);
    let serf_lan: BTreeMap<String, String> = [
        (
            "members",
            (stats.alive + stats.failed + stats.left).to_string(),
        ),
        ("alive", stats.alive.to_string()),
        ("failed", stats.failed.to_string()),
        ("left", stats.left.to_string()),
        ("health_score", stats.health_score.to_string()),
        ("member_time", stats.incarnation.to_string()),
        ("encrypted", (!s.keyrings.is_empty()).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let agent: BTreeMap<String, String> = [("version".to_string(), s.info.version.clone())].into();
    // Clients (py-consul's among them) find the leader's address here.
    let (leader, _) = kv::status(&s).await.unwrap_or_default();
    let local = s.servers.local();
    let consul: BTreeMap<String, String> = [
        ("server", local.is_some().to_string()),
        ("leader", local.is_some_and(|l| l.is_leader()).to_string()),
        ("leader_addr", leader.unwrap_or_default()),
        ("known_datacenters", "1".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let body = SelfResponse {
        config: SelfConfig {
            datacenter: s.info.datacenter.clone(),
            primary_datacenter: s.info.datacenter.clone(),
            node_name: s.info.node_name.clone(),
            node_id: s.info.node_id.clone(),
            revision: "cairn".into(),
            server: s.servers.local().is_some(),
            version: s.info.version.clone(),
        },
        coord: coords.local.as_ref().map(ApiCoord::from),
        member: me,
        stats: [
            ("agent".to_string(), agent),
            ("consul".to_string(), consul),
            ("serf_lan".to_string(), serf_lan),
        ]
        .into(),
        meta: s.info.node_meta.clone(),
        debug_config: s.info.debug_config.clone(),
        xds: None,
    };
    serde_json::to_value(body).map(Json).map_err(internal)
}

async fn join<E: Env>(s: Api<E>, Path(address): Path<String>) -> Result<(), ApiError> {
    let addrs =
        crate::agent::join::resolve_all(&s.env, std::slice::from_ref(&address), s.default_port)
            .await;
    if addrs.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("cannot resolve join address {address:?}"),
        ));
    }
    s.gossip
        .join(addrs)
        .await
        .map(|_| ())
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn leave<E: Env>(s: Api<E>) -> Result<(), ApiError> {
    // The agent's owner performs the leave and stops; answering first lets
    // the caller see success before the listener goes away.
    s.stop.try_send(()).or_else(|e| match e {
        mpsc::error::TrySendError::Full(_) => Ok(()),
        mpsc::error::TrySendError::Closed(_) => Err(internal("agent is already stopping")),
    })
}

/// `PUT /v1/agent/force-leave/<node>`: a failed member is declared
/// departed, everywhere, as if it had left.
async fn force_leave<E: Env>(s: Api<E>, Path(node): Path<String>) -> Result<(), ApiError> {
    let members = s.gossip.members().await.map_err(internal)?;
    if !members.iter().any(|m| m.name == node) {
        // Consul's answer, an error (500) rather than a 404.
        return Err(internal(format!("agent: No node found with name '{node}'")));
    }
    s.gossip.force_leave(&node).await.map_err(|e| match e {
        crate::gossip::GossipError::Shutdown => internal(e),
        other => ApiError(StatusCode::NOT_FOUND, other.to_string()),
    })
}

/// `GET /` and `/ui/`: a page naming the agent. Consul sends `/` to its
/// web UI, so HTTP checks and load balancers that probe an agent's root
/// expect a 200 there.
async fn index<E: Env>(s: Api<E>) -> axum::response::Html<String> {
    let esc = |t: &str| {
        t.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    axum::response::Html(format!(
        "<!doctype html><title>cairn</title><h1>cairn agent {} ({})</h1>\n\
         <p>Datacenter {}. The HTTP API is under <a href=\"/v1/agent/self\">/v1/</a>.</p>\n",
        esc(&s.info.node_name),
        esc(&s.info.version),
        esc(&s.info.datacenter),
    ))
}

/// `PUT /v1/agent/reload`: re-reads the config files and applies their
/// services and checks; a bad file changes nothing and says why.
async fn reload<E: Env>(s: Api<E>) -> Result<(), ApiError> {
    s.reload
        .reload(s.env.now())
        .map_err(|e| internal(format!("Failed reloading config: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn filters_and_sorting_apply_to_list_endpoints_only() {
        assert!(path_in("/v1/catalog/nodes", FILTERABLE));
        assert!(path_in("/v1/health/service/web", FILTERABLE));
        assert!(!path_in("/v1/agent/self", FILTERABLE));
        assert!(!path_in("/v1/catalog/nodesx", FILTERABLE));
        assert!(path_in("/v1/health/state/any", SORTABLE));
        assert!(!path_in("/v1/agent/services", SORTABLE));
    }
}

//! An agent's side of ACLs: resolving a token's secret to what it may do,
//! through the servers, cached for `acl.token_ttl` (Consul's agent cache),
//! and `acl.down_policy` when no server can be asked. The agent enforces
//! these on its own endpoints (`/v1/agent/*`, events, the keyring); the
//! servers enforce everything that reaches them.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use crate::acl::{AclConfig, Authorizer, DownPolicy, ACL_NOT_FOUND};
use crate::env::Env;
use crate::server::{Answer, ClientRequest, Consistency, Query, Read};
use crate::time::Instant;

use super::Servers;

/// A resolution: what the token may do, or why it may do nothing.
type Resolution = Result<Arc<Authorizer>, String>;

/// Most tokens an agent keeps resolved.
const CACHE_MAX: usize = 4096;

/// An agent's token resolver; see the [module docs](self).
pub struct AclResolver<E: Env> {
    env: E,
    /// Fixed at start (only the tokens change at run time), so the
    /// common case, ACLs off, costs a request no lock.
    enabled: bool,
    servers: Arc<Servers<E>>,
    config: RwLock<AclConfig>,
    cache: Mutex<HashMap<String, (Instant, Resolution)>>,
    /// Where tokens set at run time are kept (`enable_token_persistence`).
    persist: Option<PathBuf>,
}

/// The tokens `enable_token_persistence` keeps, in the file's JSON (the
/// names of Consul's `acl-tokens.json`).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
struct Persisted {
    #[serde(skip_serializing_if = "Option::is_none")]
    agent: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", alias = "agent_master")]
    agent_recovery: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dns: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    replication: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    config_file_service_registration: Option<String>,
}

impl<E: Env> AclResolver<E> {
    /// A resolver asking `servers`, configured by `config`.
    pub fn new(env: E, servers: Arc<Servers<E>>, config: AclConfig) -> Self {
        AclResolver {
            env,
            enabled: config.enabled,
            servers,
            config: RwLock::new(config),
            cache: Mutex::default(),
            persist: None,
        }
    }

    /// Keeps the tokens set through `/v1/agent/token/*` in `file`, and
    /// takes back the ones kept there before (they win over the config
    /// files' tokens, as in Consul). A file that cannot be read is an
    /// error naming it: starting without the tokens it holds would run the
    /// agent as someone else.
    pub fn persist_to(mut self, file: PathBuf) -> Result<Self, String> {
        match std::fs::read(&file) {
            Ok(bytes) => {
                let kept: Persisted = serde_json::from_slice(&bytes)
                    .map_err(|e| format!("{}: not a token file: {e}", file.display()))?;
                let c = self.config.get_mut().unwrap_or_else(|e| e.into_inner());
                let t = &mut c.tokens;
                let take = |slot: &mut Option<String>, kept: Option<String>| {
                    if kept.is_some() {
                        *slot = kept;
                    }
                };
                take(&mut t.agent, kept.agent);
                take(&mut t.agent_recovery, kept.agent_recovery);
                take(&mut t.default, kept.default);
                take(&mut t.dns, kept.dns);
                take(&mut t.replication, kept.replication);
                take(
                    &mut t.config_file_service_registration,
                    kept.config_file_service_registration,
                );
                self.servers.set_token(Some(c.agent_token().to_string()));
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{}: {e}", file.display())),
        }
        self.persist = Some(file);
        Ok(self)
    }

    /// The ACL settings (tokens change at run time through
    /// `/v1/agent/token`).
    pub fn config(&self) -> AclConfig {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Whether ACLs are on.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The token requests without one run as.
    pub fn default_token(&self) -> String {
        self.config
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .default_token()
            .to_string()
    }

    /// Replaces one of the agent's tokens (`default`, `agent`, `dns`,
    /// `agent_recovery`, `replication`, `config_file_service_registration`,
    /// or their older names); `Ok(false)` for a kind it does not have, and
    /// `Err` when the token could not be kept (`enable_token_persistence`).
    pub fn set_token(&self, kind: &str, secret: Option<String>) -> Result<bool, String> {
        let mut c = self.config.write().unwrap_or_else(|e| e.into_inner());
        let t = &mut c.tokens;
        let slot = match kind {
            "default" | "acl_token" => &mut t.default,
            "agent" | "acl_agent_token" => &mut t.agent,
            "dns" => &mut t.dns,
            "agent_recovery" | "agent_master" | "acl_agent_master_token" => &mut t.agent_recovery,
            "replication" | "acl_replication_token" => &mut t.replication,
            "config_file_service_registration" => &mut t.config_file_service_registration,
            _ => return Ok(false),
        };
        *slot = secret;
        self.servers.set_token(Some(c.agent_token().to_string()));
        if let Some(file) = &self.persist {
            let t = &c.tokens;
            let kept = Persisted {
                agent: t.agent.clone(),
                agent_recovery: t.agent_recovery.clone(),
                default: t.default.clone(),
                dns: t.dns.clone(),
                replication: t.replication.clone(),
                config_file_service_registration: t.config_file_service_registration.clone(),
            };
            let json = serde_json::to_vec(&kept).map_err(|e| e.to_string())?;
            super::files::write_atomically(file, &json)
                .map_err(|e| format!("cannot keep the token in {}: {e}", file.display()))?;
        }
        Ok(true)
    }

    /// What the token with `secret` may do. `Err` carries Consul's
    /// refusal.
    pub async fn resolve(&self, secret: &str) -> Resolution {
        if !self.enabled {
            return Ok(Arc::new(Authorizer::manage_all()));
        }
        let config = self.config();
        if config.tokens.agent_recovery.as_deref() == Some(secret) {
            let rules =
                crate::acl::Rules::parse(crate::acl::AGENT_RECOVERY_RULES).unwrap_or_default();
            return Ok(Arc::new(Authorizer::new(
                "agent-recovery",
                [&rules],
                false,
                false,
            )));
        }
        let secret = secret.to_string();
        let now = self.env.now();
        let cached = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&secret)
            .cloned();
        if let Some((at, r)) = &cached {
            if now.saturating_duration_since(*at) < config.token_ttl {
                return r.clone();
            }
        }
        let req = ClientRequest::Read {
            read: Read {
                consistency: Consistency::Stale,
                min_index: 0,
                max_wait_ms: 0,
                query: Query::AclResolve(secret.clone()),
            },
            hops: 0,
        }
        .with_token(&secret);
        let reply = self.servers.call(req).await;
        let fresh: Resolution = match reply.answer {
            Ok(Answer::AclResolved(Some(id))) => Ok(Arc::new(id.authorizer(config.default_allow))),
            Ok(Answer::AclResolved(None)) => Err(ACL_NOT_FOUND.to_string()),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(why) => {
                tracing::warn!(error = %why, "cannot resolve an ACL token; applying down_policy");
                return match config.down_policy {
                    DownPolicy::ExtendCache | DownPolicy::AsyncCache => match cached {
                        Some((_, r)) => r,
                        None => Err(ACL_NOT_FOUND.to_string()),
                    },
                    DownPolicy::Allow => Ok(Arc::new(Authorizer::new(
                        "down-policy",
                        std::iter::empty(),
                        false,
                        true,
                    ))),
                    DownPolicy::Deny => Ok(Arc::new(Authorizer::deny_all("down-policy"))),
                };
            }
        };
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(secret, (now, fresh.clone()));
        fresh
    }
}

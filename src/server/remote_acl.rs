//! A secondary datacenter without token replication (Consul's default,
//! `acl.enable_token_replication = false`) copies policies and roles but
//! not global tokens: a token it does not hold is resolved by the primary,
//! kept for `acl.token_ttl`, and, while the primary cannot be reached,
//! judged by `acl.down_policy` (by default the last answer, however old).

use std::sync::Arc;

use super::node::{wall_ms, Server};
use super::request::{Answer, ClientRequest, Consistency, Read};
use crate::acl::{Authorizer, DownPolicy, Token, ACL_NOT_FOUND};
use crate::env::Env;

/// Most secrets a secondary keeps answers for.
const REMOTE_TOKENS_MAX: usize = 4096;

impl<E: Env> Server<E> {
    /// The authorizer of `secret` as the primary resolves it, for a
    /// secondary that does not copy global tokens; `None` when this server
    /// copies them (so it knows every token it should), or when the token
    /// is unknown, expired, or the down policy denies.
    pub(super) async fn remote_authorizer(
        &self,
        secret: &str,
        default_allow: bool,
    ) -> Option<Arc<Authorizer>> {
        let config = self.primary().filter(|c| !c.tokens)?.clone();
        let now = self.env.now().as_duration().as_millis() as u64;
        let ttl = config.token_ttl.as_millis() as u64;
        let cached = self
            .replication
            .remote_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(secret)
            .cloned();
        let token = match cached {
            Some((at, t)) if now.saturating_sub(at) < ttl => t,
            stale => match self.ask_primary(&config.primary, secret).await {
                Ok(t) => {
                    let mut m = self
                        .replication
                        .remote_tokens
                        .lock()
                        .unwrap_or_else(|e| e.into_inner());
                    if m.len() >= REMOTE_TOKENS_MAX {
                        m.clear();
                    }
                    m.insert(secret.to_string(), (now, t.clone()));
                    t
                }
                Err(why) => {
                    tracing::warn!(error = %why, "the primary datacenter could not resolve a token");
                    match config.down_policy {
                        DownPolicy::ExtendCache | DownPolicy::AsyncCache => stale.and_then(|s| s.1),
                        DownPolicy::Allow => {
                            return Some(Arc::new(Authorizer::new(
                                "",
                                std::iter::empty(),
                                true,
                                true,
                            )))
                        }
                        DownPolicy::Deny => None,
                    }
                }
            },
        }?;
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let dc = self.datacenter.get().map_or("", String::as_str);
        let r = store.acl().resolve_token(&token, wall_ms(&self.env), dc)?;
        Some(Arc::new(Authorizer::new(
            &r.token.accessor_id,
            r.rules.iter().map(|r| r.as_ref()),
            r.management,
            default_allow,
        )))
    }

    /// The primary's token with `secret`: `Ok(None)` when it knows none,
    /// `Err` when it could not be asked.
    async fn ask_primary(&self, primary: &str, secret: &str) -> Result<Option<Token>, String> {
        let req = ClientRequest::Read {
            read: Read {
                consistency: Consistency::Default,
                min_index: 0,
                max_wait_ms: 0,
                query: crate::server::Query::AclResolve(secret.to_string()),
            },
            hops: 0,
        }
        .with_token(secret);
        match self.remote(primary.to_string(), req, None).await.answer {
            Ok(Answer::AclResolved(id)) => Ok(id.map(|i| i.token)),
            Ok(other) => Err(format!("unexpected answer {other:?}")),
            Err(e) if e.starts_with(ACL_NOT_FOUND) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

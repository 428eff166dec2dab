//! `consul login` and `logout` on the leader: a bearer token checked
//! against its auth method becomes an ACL token bound by the method's
//! rules; a token made that way may delete itself.

use super::node::{wall_ms, Server};
use super::request::{Answer, ClientReply, ClientRequest, Login};
use crate::acl::auth::{login_description, JwtConfig};
use crate::acl::{Identities, Token, ACL_NOT_FOUND, PERMISSION_DENIED};
use crate::env::Env;
use crate::state::Command;

impl<E: Env> Server<E> {
    /// Checks a login and writes its token (on the leader, forwarding it
    /// there otherwise): the token and its policies.
    pub(super) async fn login(&self, login: Login, hops: u8, token: Option<&str>) -> ClientReply {
        if !self.is_leader() {
            let req = ClientRequest::Login {
                login: Box::new(login),
                hops,
            };
            return self.to_leader(req, token).await;
        }
        let now_ms = wall_ms(&self.env);
        let dc = self.datacenter.get().cloned().unwrap_or_default();
        let made = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            made_token(store.acl(), &login, now_ms, &dc)
        };
        let t = match made {
            Ok(t) => t,
            Err(why) => return ClientReply::refused(&why),
        };
        // A global token is the primary's to make (Consul's rule and
        // words): a secondary would have to write it there with no token.
        if !t.local && self.primary().is_some() {
            return ClientReply::refused(
                "creating global tokens via auth methods is only permitted in the primary datacenter",
            );
        }
        let reply = self.write(Command::AclTokenSet(Box::new(t)), 0, None).await;
        if let Err(e) = reply.answer {
            return ClientReply::refused(&e);
        }
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let id = store.acl().identity(&login.secret_id, now_ms, &dc);
        ClientReply {
            answer: Ok(Answer::AclResolved(id.map(Box::new))),
            ..reply
        }
    }

    /// Deletes the caller's token if a login made it (on the leader).
    pub(super) async fn logout(&self, hops: u8, token: Option<&str>) -> ClientReply {
        if !self.is_leader() {
            return self.to_leader(ClientRequest::Logout { hops }, token).await;
        }
        let accessor = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            match token.and_then(|s| store.acl().token_by_secret(s)) {
                None => return ClientReply::refused(ACL_NOT_FOUND),
                // Consul's answer: only a login's token may log out.
                Some(t) if t.auth_method.is_empty() => {
                    return ClientReply::refused(PERMISSION_DENIED)
                }
                Some(t) => t.accessor_id.clone(),
            }
        };
        let cmd = Command::AclTokenDelete {
            accessor_id: accessor,
        };
        self.write(cmd, 0, None).await
    }
}

/// The token a login makes, or why it is refused.
fn made_token(
    acl: &crate::state::acl::AclState,
    login: &Login,
    now_ms: u64,
    dc: &str,
) -> Result<Token, String> {
    let method = acl
        .auth_method(&login.method)
        .ok_or_else(|| format!("{ACL_NOT_FOUND}: auth method {:?} not found", login.method))?;
    if login.bearer_token.is_empty() {
        return Err("Missing auth method bearer token".into());
    }
    let claims = JwtConfig::parse(&method.config)
        .and_then(|c| c.verify(&login.bearer_token, now_ms))
        .map_err(|e| format!("{PERMISSION_DENIED}: {e}"))?;
    let b = acl
        .login_bindings(&method.name, &claims, dc)
        .map_err(|e| format!("{PERMISSION_DENIED}: {e}"))?;
    if b.is_empty() {
        return Err(format!(
            "{PERMISSION_DENIED}: no binding rule of auth method {:?} applies to this login",
            method.name
        ));
    }
    Ok(Token {
        accessor_id: login.accessor_id.clone(),
        secret_id: login.secret_id.clone(),
        description: login_description(&login.meta),
        policies: b.policies,
        roles: b.roles,
        identities: Identities {
            service_identities: b.services,
            node_identities: b.nodes,
            templated_policies: b.templated,
        },
        local: method.token_locality != "global",
        auth_method: method.name.clone(),
        expiration_ms: method
            .max_token_ttl_ms
            .map(|ttl| now_ms.saturating_add(ttl)),
        create_ms: now_ms,
        ..Token::default()
    })
}

//! The ACL part of the replicated store: tokens, policies and roles as the
//! servers keep them, and resolving a secret to what it may do.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::error::StateError;
use super::join::{AgentCa, JoinState, JoinTicket};
use crate::acl::rules::Rules;
use crate::acl::{
    AuthMethod, BindingRule, Identity, Link, Policy, Resolved, Role, Token, ANONYMOUS_ID,
    GLOBAL_MANAGEMENT_ID,
};

/// The ACL part of the store.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AclState {
    tokens: BTreeMap<String, Token>,
    policies: BTreeMap<String, Policy>,
    roles: BTreeMap<String, Role>,
    /// Auth methods, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    auth_methods: BTreeMap<String, AuthMethod>,
    /// Binding rules, by ID.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    binding_rules: BTreeMap<String, BindingRule>,
    /// The index bootstrapping happened at (it happens once).
    bootstrapped: Option<u64>,
    /// The agent CA and join tickets of a `cairn agent -secure` cluster.
    #[serde(default, skip_serializing_if = "JoinState::is_empty")]
    join: JoinState,
    /// Secret -> accessor. Derived; rebuilt on restore.
    #[serde(skip)]
    by_secret: BTreeMap<String, String>,
    /// Policy ID -> parsed rules. Derived; rebuilt on restore.
    #[serde(skip)]
    compiled: BTreeMap<String, Arc<Rules>>,
}

fn invalid(msg: impl Into<String>) -> StateError {
    StateError::Invalid(msg.into())
}

impl AclState {
    /// The identity of the valid token with `secret` in datacenter `dc`:
    /// its policies, synthetic ones included.
    pub fn identity(&self, secret: &str, now_ms: u64, dc: &str) -> Option<Identity> {
        let r = self.resolve(secret, now_ms, dc)?;
        let mut policies: Vec<Policy> = r
            .policy_ids
            .iter()
            .filter_map(|id| self.policy(id).cloned())
            .collect();
        policies.extend(r.synthetic);
        Some(Identity {
            token: self.current(&r.token),
            policies,
            management: r.management,
        })
    }

    /// Whether nothing has been written (snapshots leave it out then, so
    /// clusters without ACLs keep their snapshot bytes).
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
            && self.policies.is_empty()
            && self.roles.is_empty()
            && self.auth_methods.is_empty()
            && self.bootstrapped.is_none()
    }

    /// Rebuilds the derived indexes (after a snapshot is loaded).
    pub fn reindex(&mut self) {
        self.by_secret = self
            .tokens
            .values()
            .map(|t| (t.secret_id.clone(), t.accessor_id.clone()))
            .collect();
        self.compiled = self
            .policies
            .values()
            .map(|p| {
                // Rules were checked when written; a policy written by an
                // older parser that no longer reads grants nothing.
                let r = Rules::parse(&p.rules).unwrap_or_default();
                (p.id.clone(), Arc::new(r))
            })
            .collect();
    }

    /// Every token.
    pub fn tokens(&self) -> impl Iterator<Item = &Token> {
        self.tokens.values()
    }

    /// A token by accessor ID.
    pub fn token(&self, accessor: &str) -> Option<&Token> {
        self.tokens.get(accessor)
    }

    /// A token by secret.
    pub fn token_by_secret(&self, secret: &str) -> Option<&Token> {
        self.tokens.get(self.by_secret.get(secret)?)
    }

    /// Every policy.
    pub fn policies(&self) -> impl Iterator<Item = &Policy> {
        self.policies.values()
    }

    /// A policy by ID.
    pub fn policy(&self, id: &str) -> Option<&Policy> {
        self.policies.get(id)
    }

    /// Every role.
    pub fn roles(&self) -> impl Iterator<Item = &Role> {
        self.roles.values()
    }

    /// A role by ID.
    pub fn role(&self, id: &str) -> Option<&Role> {
        self.roles.get(id)
    }

    /// Every auth method.
    pub fn auth_methods(&self) -> impl Iterator<Item = &AuthMethod> {
        self.auth_methods.values()
    }

    /// An auth method by name.
    pub fn auth_method(&self, name: &str) -> Option<&AuthMethod> {
        self.auth_methods.get(name)
    }

    /// Every binding rule.
    pub fn binding_rules(&self) -> impl Iterator<Item = &BindingRule> {
        self.binding_rules.values()
    }

    /// The index bootstrapping happened at, if it has.
    pub fn bootstrapped(&self) -> Option<u64> {
        self.bootstrapped
    }

    /// What is kept for agents joining by join token.
    pub fn join(&self) -> &JoinState {
        &self.join
    }

    /// Stores the agent CA, unless one is stored.
    pub fn set_agent_ca(&mut self, ca: &AgentCa) -> Result<bool, StateError> {
        Ok(self.join.set_agent_ca(ca))
    }

    /// Keeps a new join ticket (see [`JoinState::create_ticket`]).
    pub fn create_join_ticket(
        &mut self,
        hash: &str,
        ticket: &JoinTicket,
    ) -> Result<bool, StateError> {
        self.join.create_ticket(hash, ticket)
    }

    /// Uses the join ticket under `hash` for `node`: the ticket is spent
    /// and its agent token made, in one step, or nothing happens.
    pub fn use_join_ticket(
        &mut self,
        index: u64,
        hash: &str,
        server: bool,
        node: &str,
        dc: &str,
        now_ms: u64,
    ) -> Result<bool, StateError> {
        let token = self.join.admit(hash, server, node, dc, now_ms)?;
        self.set_token(index, &token)?;
        self.join.mark_used(hash, node);
        Ok(true)
    }

    /// `links` as they stand now: names from the current policies (or
    /// roles), dangling ones (deleted since) left out.
    pub fn current_links(&self, links: &[Link], roles: bool) -> Vec<Link> {
        links
            .iter()
            .filter_map(|l| {
                let name = if roles {
                    self.roles.get(&l.id).map(|r| r.name.clone())
                } else {
                    self.policies.get(&l.id).map(|p| p.name.clone())
                }?;
                Some(Link {
                    id: l.id.clone(),
                    name,
                })
            })
            .collect()
    }

    /// `token` with its links named as they stand now.
    pub fn current(&self, token: &Token) -> Token {
        Token {
            policies: self.current_links(&token.policies, false),
            roles: self.current_links(&token.roles, true),
            ..token.clone()
        }
    }

    /// Resolves `secret` at wall-clock `now_ms` in datacenter `dc`: `None`
    /// when no valid token has it (unknown, or expired). Policies limited
    /// to other datacenters, and identities of other datacenters, grant
    /// nothing here.
    pub fn resolve(&self, secret: &str, now_ms: u64, dc: &str) -> Option<Resolved> {
        self.resolve_token(self.token_by_secret(secret)?, now_ms, dc)
    }

    /// Resolves `token` (this store's, or another datacenter's that this
    /// one does not copy) against this store's roles and policies.
    pub fn resolve_token(&self, token: &Token, now_ms: u64, dc: &str) -> Option<Resolved> {
        if token.expiration_ms.is_some_and(|at| at <= now_ms) {
            return None;
        }
        let mut ids: Vec<&str> = token.policies.iter().map(|l| l.id.as_str()).collect();
        let mut synthetic = token.identities.synthetic_policies(dc);
        for r in &token.roles {
            if let Some(role) = self.roles.get(&r.id) {
                ids.extend(role.policies.iter().map(|l| l.id.as_str()));
                synthetic.extend(role.identities.synthetic_policies(dc));
            }
        }
        ids.sort_unstable();
        ids.dedup();
        ids.retain(|id| {
            self.policies
                .get(*id)
                .is_none_or(|p| p.datacenters.is_empty() || p.datacenters.iter().any(|d| d == dc))
        });
        synthetic.sort_by(|a, b| a.id.cmp(&b.id));
        synthetic.dedup_by(|a, b| a.id == b.id);
        let mut rules: Vec<Arc<Rules>> = ids
            .iter()
            .filter_map(|id| self.compiled.get(*id).cloned())
            .collect();
        // Templates are built in and parse; one that did not would grant
        // nothing.
        rules.extend(
            synthetic
                .iter()
                .map(|p| Arc::new(Rules::parse(&p.rules).unwrap_or_default())),
        );
        Some(Resolved {
            token: token.clone(),
            management: ids.contains(&GLOBAL_MANAGEMENT_ID),
            rules,
            policy_ids: ids.into_iter().map(str::to_owned).collect(),
            synthetic,
        })
    }

    /// Links as given (by ID or by name) resolved to IDs, each checked.
    fn resolve_links(&self, links: &[Link], roles: bool) -> Result<Vec<Link>, StateError> {
        let kind = if roles { "role" } else { "policy" };
        let mut out: Vec<Link> = Vec::new();
        for l in links {
            let found = if roles {
                if l.id.is_empty() {
                    self.roles.values().find(|r| r.name == l.name)
                } else {
                    self.roles.get(&l.id)
                }
                .map(|r| (r.id.clone(), r.name.clone()))
            } else if l.id.is_empty() {
                self.policies
                    .values()
                    .find(|p| p.name == l.name)
                    .map(|p| (p.id.clone(), p.name.clone()))
            } else {
                self.policies
                    .get(&l.id)
                    .map(|p| (p.id.clone(), p.name.clone()))
            };
            let Some((id, name)) = found else {
                return Err(invalid(if l.id.is_empty() {
                    format!("No such ACL {kind} with name {:?}", l.name)
                } else {
                    format!("No such ACL {kind} with ID {:?}", l.id)
                }));
            };
            if !out.iter().any(|o| o.id == id) {
                out.push(Link { id, name });
            }
        }
        Ok(out)
    }

    /// Creates or replaces a token (its secret cannot change).
    pub fn set_token(&mut self, index: u64, token: &Token) -> Result<bool, StateError> {
        if token.accessor_id.is_empty() || token.secret_id.is_empty() {
            return Err(invalid("a token needs an AccessorID and a SecretID"));
        }
        if let Some(holder) = self.by_secret.get(&token.secret_id) {
            if *holder != token.accessor_id {
                return Err(invalid("Invalid Token: SecretID is already in use"));
            }
        }
        let mut t = token.clone();
        t.policies = self.resolve_links(&token.policies, false)?;
        t.roles = self.resolve_links(&token.roles, true)?;
        t.identities = token.identities.validated(token.local).map_err(invalid)?;
        match self.tokens.get(&t.accessor_id) {
            Some(old) => {
                if old.secret_id != t.secret_id {
                    return Err(invalid("Cannot change a token's SecretID"));
                }
                t.create_index = old.create_index;
                t.create_ms = old.create_ms;
            }
            None => t.create_index = index,
        }
        t.modify_index = index;
        self.by_secret
            .insert(t.secret_id.clone(), t.accessor_id.clone());
        self.tokens.insert(t.accessor_id.clone(), t);
        Ok(true)
    }

    /// The bootstrap token, made once: `false` when bootstrapping has
    /// happened already.
    pub fn bootstrap(&mut self, index: u64, token: &Token) -> Result<bool, StateError> {
        if self.bootstrapped.is_some() {
            return Ok(false);
        }
        self.set_token(index, token)?;
        self.bootstrapped = Some(index);
        Ok(true)
    }

    /// Deletes a token (the anonymous token cannot be).
    pub fn delete_token(&mut self, accessor: &str) -> Result<bool, StateError> {
        if accessor == ANONYMOUS_ID {
            return Err(invalid(
                "Deletion of the builtin anonymous token is not permitted",
            ));
        }
        match self.tokens.remove(accessor) {
            Some(t) => {
                self.by_secret.remove(&t.secret_id);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// Creates or replaces a policy; the name must be unique and the rules
    /// must parse.
    pub fn set_policy(&mut self, index: u64, policy: &Policy) -> Result<bool, StateError> {
        check_name("policy", &policy.name)?;
        if policy.id.is_empty() {
            return Err(invalid("a policy needs an ID"));
        }
        if self
            .policies
            .values()
            .any(|p| p.name == policy.name && p.id != policy.id)
        {
            return Err(invalid(format!(
                "Invalid Policy: A Policy with Name {:?} already exists",
                policy.name
            )));
        }
        if policy.id == GLOBAL_MANAGEMENT_ID {
            if let Some(old) = self.policies.get(GLOBAL_MANAGEMENT_ID) {
                if old.rules != policy.rules {
                    return Err(invalid(
                        "Changing the Rules for the builtin global-management policy is not permitted",
                    ));
                }
            }
        }
        let rules = Rules::parse(&policy.rules).map_err(|e| invalid(e.to_string()))?;
        let mut p = policy.clone();
        p.create_index = self
            .policies
            .get(&p.id)
            .map_or(index, |old| old.create_index);
        p.modify_index = index;
        self.compiled.insert(p.id.clone(), Arc::new(rules));
        self.policies.insert(p.id.clone(), p);
        Ok(true)
    }

    /// Deletes a policy (global management cannot be).
    pub fn delete_policy(&mut self, id: &str) -> Result<bool, StateError> {
        if id == GLOBAL_MANAGEMENT_ID {
            return Err(invalid(
                "Delete operation not permitted on the builtin global-management policy",
            ));
        }
        self.compiled.remove(id);
        Ok(self.policies.remove(id).is_some())
    }

    /// Creates or replaces a role.
    pub fn set_role(&mut self, index: u64, role: &Role) -> Result<bool, StateError> {
        check_name("role", &role.name)?;
        if role.id.is_empty() {
            return Err(invalid("a role needs an ID"));
        }
        if self
            .roles
            .values()
            .any(|r| r.name == role.name && r.id != role.id)
        {
            return Err(invalid(format!(
                "Invalid Role: A Role with Name {:?} already exists",
                role.name
            )));
        }
        let mut r = role.clone();
        r.policies = self.resolve_links(&role.policies, false)?;
        r.identities = role.identities.validated(false).map_err(invalid)?;
        r.create_index = self.roles.get(&r.id).map_or(index, |old| old.create_index);
        r.modify_index = index;
        self.roles.insert(r.id.clone(), r);
        Ok(true)
    }

    /// Deletes a role.
    pub fn delete_role(&mut self, id: &str) -> Result<bool, StateError> {
        Ok(self.roles.remove(id).is_some())
    }

    /// Creates or replaces an auth method (its type cannot change).
    pub fn set_auth_method(&mut self, index: u64, m: &AuthMethod) -> Result<bool, StateError> {
        m.validate().map_err(invalid)?;
        let mut m = m.clone();
        match self.auth_methods.get(&m.name) {
            Some(old) if old.method_type != m.method_type => {
                return Err(invalid(format!(
                    "Invalid Auth Method: cannot change type from {} to {}",
                    old.method_type, m.method_type
                )))
            }
            Some(old) => m.create_index = old.create_index,
            None => m.create_index = index,
        }
        m.modify_index = index;
        self.auth_methods.insert(m.name.clone(), m);
        Ok(true)
    }

    /// Deletes an auth method, with its binding rules and every token it
    /// made (as Consul does).
    pub fn delete_auth_method(&mut self, name: &str) -> Result<bool, StateError> {
        if self.auth_methods.remove(name).is_none() {
            return Ok(false);
        }
        self.binding_rules.retain(|_, r| r.auth_method != name);
        let made: Vec<String> = self
            .tokens
            .values()
            .filter(|t| t.auth_method == name)
            .map(|t| t.accessor_id.clone())
            .collect();
        for accessor in made {
            self.delete_token(&accessor)?;
        }
        Ok(true)
    }

    /// Creates or replaces a binding rule; its auth method must exist.
    pub fn set_binding_rule(&mut self, index: u64, r: &BindingRule) -> Result<bool, StateError> {
        if r.id.is_empty() {
            return Err(invalid("a binding rule needs an ID"));
        }
        r.validate().map_err(invalid)?;
        if !self.auth_methods.contains_key(&r.auth_method) {
            return Err(invalid(format!(
                "Invalid Binding Rule: AuthMethod is invalid: no such auth method {:?}",
                r.auth_method
            )));
        }
        let mut r = r.clone();
        r.create_index = self
            .binding_rules
            .get(&r.id)
            .map_or(index, |old| old.create_index);
        r.modify_index = index;
        self.binding_rules.insert(r.id.clone(), r);
        Ok(true)
    }

    /// Takes the primary datacenter's policies and roles (and, with
    /// `tokens`, its global tokens) in place of ours; local tokens stay.
    /// Whether anything changed.
    pub fn replicate(
        &mut self,
        policies: &[Policy],
        roles: &[Role],
        tokens: Option<&[Token]>,
    ) -> bool {
        let policies: BTreeMap<String, Policy> =
            policies.iter().map(|p| (p.id.clone(), p.clone())).collect();
        let roles: BTreeMap<String, Role> =
            roles.iter().map(|r| (r.id.clone(), r.clone())).collect();
        let mut changed = policies != self.policies || roles != self.roles;
        self.policies = policies;
        self.roles = roles;
        if let Some(tokens) = tokens {
            let mut next: BTreeMap<String, Token> = self
                .tokens
                .iter()
                .filter(|(_, t)| t.local)
                .map(|(k, t)| (k.clone(), t.clone()))
                .collect();
            for t in tokens.iter().filter(|t| !t.local) {
                next.insert(t.accessor_id.clone(), t.clone());
            }
            changed |= next != self.tokens;
            self.tokens = next;
        }
        if changed {
            self.reindex();
        }
        changed
    }

    /// Deletes a binding rule.
    pub fn delete_binding_rule(&mut self, id: &str) -> Result<bool, StateError> {
        Ok(self.binding_rules.remove(id).is_some())
    }

    /// What a login to `method` with `claims` in datacenter `dc` binds:
    /// every matching rule's identity, role or policy (roles and policies
    /// that do not exist are skipped, as in Consul).
    pub fn login_bindings(
        &self,
        method: &str,
        claims: &crate::acl::auth::Claims,
        dc: &str,
    ) -> Result<crate::acl::auth::Bindings, String> {
        let mut out = crate::acl::auth::Bindings::default();
        for rule in self.binding_rules.values() {
            if rule.auth_method == method && rule.selects(claims) {
                rule.bind(claims, dc, &mut out)?;
            }
        }
        out.roles
            .retain(|l| self.roles.values().any(|r| r.name == l.name));
        out.policies
            .retain(|l| self.policies.values().any(|p| p.name == l.name));
        Ok(out)
    }
}

/// Consul's rule for policy and role names.
fn check_name(kind: &str, name: &str) -> Result<(), StateError> {
    let ok = !name.is_empty()
        && name.len() <= 256
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "Invalid {kind} name {name:?}: only letters, digits, '-' and '_', at most 256"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(id: &str, name: &str, rules: &str) -> Policy {
        Policy {
            id: id.into(),
            name: name.into(),
            rules: rules.into(),
            ..Policy::default()
        }
    }

    fn token(acc: &str, secret: &str, policies: &[&str], roles: &[&str]) -> Token {
        let link = |n: &&str| Link {
            id: String::new(),
            name: n.to_string(),
        };
        Token {
            accessor_id: acc.into(),
            secret_id: secret.into(),
            policies: policies.iter().map(link).collect(),
            roles: roles.iter().map(link).collect(),
            ..Token::default()
        }
    }

    #[test]
    fn tokens_resolve_through_policies_and_roles() {
        let mut s = AclState::default();
        s.set_policy(
            1,
            &policy("p1", "app", r#"key_prefix "app/" { policy = "write" }"#),
        )
        .unwrap();
        s.set_policy(
            2,
            &policy("p2", "web", r#"service "web" { policy = "read" }"#),
        )
        .unwrap();
        s.set_role(
            3,
            &Role {
                id: "r1".into(),
                name: "web-readers".into(),
                policies: vec![Link {
                    id: String::new(),
                    name: "web".into(),
                }],
                ..Role::default()
            },
        )
        .unwrap();
        s.set_token(4, &token("a1", "s1", &["app"], &["web-readers"]))
            .unwrap();
        let r = s.resolve("s1", 0, "dc1").unwrap();
        assert_eq!(r.rules.len(), 2);
        assert!(!r.management);
        assert_eq!(r.token.policies[0].id, "p1");
        assert!(s.resolve("nope", 0, "dc1").is_none());
        // Unknown names are refused and change nothing.
        let e = s
            .set_token(5, &token("a2", "s2", &["nope"], &[]))
            .unwrap_err();
        assert!(e
            .to_string()
            .contains("No such ACL policy with name \"nope\""));
        assert!(s.token("a2").is_none());
        // A secret in use by another token is refused.
        assert!(s.set_token(6, &token("a3", "s1", &[], &[])).is_err());
        // Deleting a policy drops it from what tokens resolve to.
        s.delete_policy("p1").unwrap();
        assert_eq!(s.resolve("s1", 0, "dc1").unwrap().rules.len(), 1);
        assert!(s
            .current_links(&s.token("a1").unwrap().policies, false)
            .is_empty());
    }

    #[test]
    fn expired_tokens_do_not_resolve_and_names_are_checked() {
        let mut s = AclState::default();
        let mut t = token("a", "s", &[], &[]);
        t.expiration_ms = Some(1000);
        s.set_token(1, &t).unwrap();
        assert!(s.resolve("s", 999, "dc1").is_some());
        assert!(s.resolve("s", 1000, "dc1").is_none());
        assert!(s.set_policy(2, &policy("p", "bad name", "")).is_err());
        assert!(s.set_policy(2, &policy("p", "ok", "kee {}")).is_err());
        s.set_policy(3, &policy("p", "ok", "")).unwrap();
        assert!(s.set_policy(4, &policy("q", "ok", "")).is_err());
        // Bootstrapping happens once.
        assert!(s.bootstrap(5, &token("b", "bs", &[], &[])).unwrap());
        assert!(!s.bootstrap(6, &token("c", "cs", &[], &[])).unwrap());
        assert_eq!(s.bootstrapped(), Some(5));
    }

    #[test]
    fn derived_indexes_survive_a_snapshot() {
        let mut s = AclState::default();
        s.set_policy(1, &policy("p1", "app", r#"key "a" { policy = "read" }"#))
            .unwrap();
        s.set_token(2, &token("a1", "s1", &["app"], &[])).unwrap();
        let bytes = serde_json::to_vec(&s).unwrap();
        let mut back: AclState = serde_json::from_slice(&bytes).unwrap();
        back.reindex();
        assert_eq!(back.resolve("s1", 0, "dc1").unwrap().rules.len(), 1);
    }
}

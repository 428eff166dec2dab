//! Deciding: what a token's policies, taken together, allow.
//!
//! Consul's order: a rule on the exact name wins; else the longest prefix
//! rule that matches; else the default (`default_policy`, or everything
//! for a management token). Rules for the same name from several policies
//! merge with a deny winning.

use std::collections::BTreeMap;

use super::rules::{Access, Global, Grant, Resource, Rules};

/// What a token may do; built from its policies' rules.
#[derive(Debug, Clone, Default)]
pub struct Authorizer {
    exact: BTreeMap<Resource, BTreeMap<String, Grant>>,
    prefix: BTreeMap<Resource, BTreeMap<String, Grant>>,
    global: BTreeMap<Global, Access>,
    /// A management token: everything, ACLs included.
    manage: bool,
    /// `default_policy = "allow"`: what no rule covers is allowed (except
    /// the ACL system itself, which needs a rule or management).
    default_allow: bool,
    /// The token's accessor ID, for refusal messages.
    pub accessor: String,
}

impl Authorizer {
    /// The authorizer of a token with `rules`; `manage` for a management
    /// token, `default_allow` for `default_policy = "allow"`.
    pub fn new<'a>(
        accessor: &str,
        rules: impl IntoIterator<Item = &'a Rules>,
        manage: bool,
        default_allow: bool,
    ) -> Authorizer {
        let mut a = Authorizer {
            manage,
            default_allow,
            accessor: accessor.to_string(),
            ..Authorizer::default()
        };
        for r in rules {
            for (table, from) in [(&mut a.exact, &r.exact), (&mut a.prefix, &r.prefix)] {
                for (res, grants) in from {
                    let slot = table.entry(*res).or_default();
                    for (name, g) in grants {
                        let merged = match slot.get(name) {
                            Some(old) => Grant::merge(*old, *g),
                            None => *g,
                        };
                        slot.insert(name.clone(), merged);
                    }
                }
            }
            for (g, acc) in &r.global {
                let slot = a.global.entry(*g).or_insert(*acc);
                *slot = Access::merge(*slot, *acc);
            }
        }
        a
    }

    /// Allows everything (ACLs off, or a management token).
    pub fn manage_all() -> Authorizer {
        Authorizer {
            manage: true,
            ..Authorizer::default()
        }
    }

    /// Allows nothing (`down_policy = "deny"` when the servers cannot be
    /// asked).
    pub fn deny_all(accessor: &str) -> Authorizer {
        Authorizer {
            accessor: accessor.to_string(),
            ..Authorizer::default()
        }
    }

    /// Whether this is a management token.
    pub fn is_management(&self) -> bool {
        self.manage
    }

    fn default_access(&self) -> Access {
        if self.manage || self.default_allow {
            Access::Write
        } else {
            Access::Deny
        }
    }

    /// The rule that decides for `name`: exact, else longest prefix.
    fn grant(&self, res: Resource, name: &str) -> Option<Grant> {
        if let Some(g) = self.exact.get(&res).and_then(|m| m.get(name)) {
            return Some(*g);
        }
        let prefixes = self.prefix.get(&res)?;
        // Longest first: walk the name's prefixes from the whole name down.
        (0..=name.len())
            .rev()
            .filter(|&i| name.is_char_boundary(i))
            .find_map(|i| prefixes.get(&name[..i]).copied())
    }

    /// What the token has on `name` of `res`.
    pub fn access(&self, res: Resource, name: &str) -> Access {
        if self.manage {
            return Access::Write;
        }
        self.grant(res, name)
            .map_or_else(|| self.default_access(), |g| g.policy)
    }

    /// Whether the token may `need` on `name` of `res`.
    pub fn allows(&self, res: Resource, name: &str, need: Access) -> bool {
        self.access(res, name).allows(need)
    }

    /// Whether the token may `need` on a global resource. The ACL system
    /// itself is never covered by `default_policy = "allow"`.
    pub fn allows_global(&self, g: Global, need: Access) -> bool {
        if self.manage {
            return true;
        }
        match self.global.get(&g) {
            Some(a) => a.allows(need),
            None => g != Global::Acl && self.default_access().allows(need),
        }
    }

    /// Whether the token may `need` on the intentions whose destination is
    /// `service`: the service rule's `intentions`, else read when the
    /// service may be read.
    pub fn allows_intention(&self, service: &str, need: Access) -> bool {
        if self.manage {
            return true;
        }
        let have = match self.grant(Resource::Service, service) {
            Some(Grant {
                intentions: Some(i),
                ..
            }) => i,
            Some(Grant { policy, .. }) if policy.allows(Access::Read) => Access::Read,
            Some(_) => Access::Deny,
            None => self.default_access(),
        };
        have.allows(need)
    }

    /// Whether the token may write every key under `prefix` (deleting a
    /// tree): write on the prefix, and no narrower rule beneath it that
    /// grants less (Consul's `KeyWritePrefix`).
    pub fn allows_key_write_prefix(&self, prefix: &str) -> bool {
        if self.manage {
            return true;
        }
        if !self.allows(Resource::Key, prefix, Access::Write) {
            return false;
        }
        let narrower_less = |m: Option<&BTreeMap<String, Grant>>| {
            m.into_iter().flatten().any(|(k, g)| {
                k.starts_with(prefix) && k.len() > prefix.len() && g.policy != Access::Write
            })
        };
        !narrower_less(self.exact.get(&Resource::Key))
            && !narrower_less(self.prefix.get(&Resource::Key))
    }

    /// Consul's refusal for `need` on `what` (`"key:write"`, `"app/x"`).
    pub fn denied(&self, perm: &str, on: Option<&str>) -> String {
        super::permission_denied(&self.accessor, perm, on)
    }

    /// Ok if the token may `access` `name` of `res`, else Consul's refusal.
    pub fn check(&self, res: Resource, name: &str, access: Access) -> Result<(), String> {
        if self.allows(res, name, access) {
            Ok(())
        } else {
            Err(self.denied(&perm(res.keyword(), access), Some(name)))
        }
    }

    /// [`check`](Self::check) for a global resource.
    pub fn check_global(&self, g: Global, access: Access) -> Result<(), String> {
        if self.allows_global(g, access) {
            Ok(())
        } else {
            Err(self.denied(&perm(g.keyword(), access), None))
        }
    }

    /// [`check`](Self::check) for the intentions whose destination is
    /// `service`.
    pub fn check_intention(&self, service: &str, access: Access) -> Result<(), String> {
        if self.allows_intention(service, access) {
            Ok(())
        } else {
            Err(self.denied(&perm("intention", access), Some(service)))
        }
    }
}

/// A permission as Consul names it in refusals (`key:write`).
fn perm(what: &str, access: Access) -> String {
    let level = match access {
        Access::Deny => "deny",
        Access::Read => "read",
        Access::List => "list",
        Access::Write => "write",
    };
    format!("{what}:{level}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn authz(rules: &str, default_allow: bool) -> Authorizer {
        let r = Rules::parse(rules).unwrap();
        Authorizer::new("acc", [&r], false, default_allow)
    }

    #[test]
    fn exact_beats_prefix_and_the_longest_prefix_decides() {
        let a = authz(
            r#"
            key_prefix "" { policy = "read" }
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "app/secret/shared" { policy = "read" }
        "#,
            false,
        );
        assert!(a.allows(Resource::Key, "app/x", Access::Write));
        assert!(a.allows(Resource::Key, "other", Access::Read));
        assert!(!a.allows(Resource::Key, "other", Access::Write));
        assert!(!a.allows(Resource::Key, "app/secret/y", Access::Read));
        assert!(a.allows(Resource::Key, "app/secret/shared", Access::Read));
        assert!(!a.allows(Resource::Key, "app/secret/shared", Access::Write));
        // Deleting the tree would reach keys the token may not write.
        assert!(!a.allows_key_write_prefix("app/"));
        assert!(a.allows_key_write_prefix("app/other/"));
    }

    #[test]
    fn defaults_and_management() {
        let deny = authz("", false);
        assert!(!deny.allows(Resource::Service, "web", Access::Read));
        assert!(!deny.allows_global(Global::Operator, Access::Read));
        let allow = authz("", true);
        assert!(allow.allows(Resource::Service, "web", Access::Write));
        assert!(allow.allows_global(Global::Operator, Access::Write));
        // default allow does not open the ACL system.
        assert!(!allow.allows_global(Global::Acl, Access::Read));
        let m = Authorizer::manage_all();
        assert!(m.allows_global(Global::Acl, Access::Write));
        assert!(m.allows_key_write_prefix(""));
    }

    #[test]
    fn policies_merge_with_deny_winning() {
        let a = Rules::parse(r#"service "web" { policy = "write" }"#).unwrap();
        let b = Rules::parse(
            "service \"web\" { policy = \"deny\" }\nservice \"db\" { policy = \"read\" }",
        )
        .unwrap();
        let c = Rules::parse(r#"service "db" { policy = "write" }"#).unwrap();
        let z = Authorizer::new("acc", [&a, &b, &c], false, false);
        assert!(!z.allows(Resource::Service, "web", Access::Read));
        assert!(z.allows(Resource::Service, "db", Access::Write));
    }

    #[test]
    fn intentions_follow_the_service_rule() {
        let a = authz(
            r#"
            service "db" {
              policy = "read"
              intentions = "write"
            }
            service "web" { policy = "read" }
            service "api" { policy = "deny" }
        "#,
            false,
        );
        assert!(a.allows_intention("db", Access::Write));
        assert!(a.allows_intention("web", Access::Read));
        assert!(!a.allows_intention("web", Access::Write));
        assert!(!a.allows_intention("api", Access::Read));
        assert!(!a.allows_intention("other", Access::Read));
    }
}

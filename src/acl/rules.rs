//! Consul's ACL rules language, in HCL or JSON:
//!
//! ```hcl
//! key_prefix "app/" { policy = "write" }
//! service "web" { policy = "read" intentions = "write" }
//! operator = "read"
//! ```
//!
//! Both forms read into the same JSON value first (HCL through `hcl-rs`),
//! so one interpreter serves both, and every error names the rule at fault.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// How much a rule grants. `List` (KV only) is `Read` plus listing keys
/// recursively; `Write` implies both.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Access {
    /// Nothing, and more specific rules cannot be overridden by a less
    /// specific grant.
    Deny,
    /// Read.
    Read,
    /// Read and list.
    List,
    /// Everything.
    Write,
}

impl Access {
    fn parse(what: &str, v: &Value, list_ok: bool) -> Result<Access, RulesError> {
        let s = v
            .as_str()
            .ok_or_else(|| RulesError(format!("{what}: the policy must be a string")))?;
        match s {
            "deny" => Ok(Access::Deny),
            "read" => Ok(Access::Read),
            "write" => Ok(Access::Write),
            "list" if list_ok => Ok(Access::List),
            other => Err(RulesError(format!(
                "{what}: invalid policy {other:?} (expected {})",
                if list_ok {
                    "read, list, write or deny"
                } else {
                    "read, write or deny"
                }
            ))),
        }
    }

    /// Whether this grants at least `need`.
    pub fn allows(self, need: Access) -> bool {
        self != Access::Deny && self >= need
    }

    /// Two grants for the same rule from different policies: a deny wins,
    /// otherwise the broader grant (Consul's policy merger).
    pub(crate) fn merge(a: Access, b: Access) -> Access {
        if a == Access::Deny || b == Access::Deny {
            Access::Deny
        } else {
            a.max(b)
        }
    }
}

/// The resources named rules apply to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Resource {
    /// `agent` / `agent_prefix`: agents by node name.
    Agent,
    /// `event` / `event_prefix`: user events by name.
    Event,
    /// `key` / `key_prefix`: KV keys.
    Key,
    /// `node` / `node_prefix`: catalog nodes.
    Node,
    /// `query` / `query_prefix`: prepared queries by name.
    Query,
    /// `service` / `service_prefix`: services by name.
    Service,
    /// `session` / `session_prefix`: sessions by their node.
    Session,
}

impl Resource {
    /// Every named resource.
    pub const ALL: [Resource; 7] = [
        Resource::Agent,
        Resource::Event,
        Resource::Key,
        Resource::Node,
        Resource::Query,
        Resource::Service,
        Resource::Session,
    ];

    /// The rule keyword (`key`; `key_prefix` for prefixes).
    pub fn keyword(self) -> &'static str {
        match self {
            Resource::Agent => "agent",
            Resource::Event => "event",
            Resource::Key => "key",
            Resource::Node => "node",
            Resource::Query => "query",
            Resource::Service => "service",
            Resource::Session => "session",
        }
    }

    fn from_keyword(k: &str) -> Option<(Resource, bool)> {
        let (base, prefix) = match k.strip_suffix("_prefix") {
            Some(b) => (b, true),
            None => (k, false),
        };
        Resource::ALL
            .into_iter()
            .find(|r| r.keyword() == base)
            .map(|r| (r, prefix))
    }
}

/// The resources without names: one rule each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Global {
    /// `acl`: tokens, policies and roles.
    Acl,
    /// `operator`: Raft, the CA configuration, and other cluster-wide
    /// settings.
    Operator,
    /// `keyring`: the gossip encryption keys.
    Keyring,
    /// `mesh`: mesh-wide settings.
    Mesh,
    /// `peering`: cluster peerings.
    Peering,
}

impl Global {
    /// Every global resource.
    pub const ALL: [Global; 5] = [
        Global::Acl,
        Global::Operator,
        Global::Keyring,
        Global::Mesh,
        Global::Peering,
    ];

    /// The rule keyword.
    pub fn keyword(self) -> &'static str {
        match self {
            Global::Acl => "acl",
            Global::Operator => "operator",
            Global::Keyring => "keyring",
            Global::Mesh => "mesh",
            Global::Peering => "peering",
        }
    }
}

/// One rule on a named resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    /// What it grants.
    pub policy: Access,
    /// For services: what it grants on intentions whose destination the
    /// service is (none: read if the service may be read).
    pub intentions: Option<Access>,
}

impl Grant {
    pub(crate) fn merge(a: Grant, b: Grant) -> Grant {
        Grant {
            policy: Access::merge(a.policy, b.policy),
            intentions: match (a.intentions, b.intentions) {
                (Some(x), Some(y)) => Some(Access::merge(x, y)),
                (x, y) => x.or(y),
            },
        }
    }
}

/// A parsed policy: rules by resource, exact names and prefixes apart.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rules {
    /// Rules on exact names, by resource.
    pub exact: BTreeMap<Resource, BTreeMap<String, Grant>>,
    /// Rules on name prefixes, by resource.
    pub prefix: BTreeMap<Resource, BTreeMap<String, Grant>>,
    /// Rules on the global resources.
    pub global: BTreeMap<Global, Access>,
}

/// Why rules do not parse; says which rule and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("Failed to parse ACL rules: {0}")]
pub struct RulesError(pub String);

/// Most bytes of rules a policy may have.
pub const MAX_RULES_LEN: usize = 512 * 1024;

impl Rules {
    /// Parses rules in HCL, or JSON when the text starts with `{`.
    pub fn parse(text: &str) -> Result<Rules, RulesError> {
        if text.len() > MAX_RULES_LEN {
            return Err(RulesError(format!(
                "the rules are {} bytes; at most {MAX_RULES_LEN} are allowed",
                text.len()
            )));
        }
        if text.trim().is_empty() {
            return Ok(Rules::default());
        }
        let value: Value = if text.trim_start().starts_with('{') {
            serde_json::from_str(text).map_err(|e| RulesError(format!("invalid JSON: {e}")))?
        } else {
            hcl::from_str(text).map_err(|e| RulesError(format!("invalid HCL: {e}")))?
        };
        Rules::from_value(&value)
    }

    fn from_value(v: &Value) -> Result<Rules, RulesError> {
        let top = v
            .as_object()
            .ok_or_else(|| RulesError("the rules must be an object of rules".into()))?;
        let mut rules = Rules::default();
        for (k, body) in top {
            if let Some(g) = Global::ALL.into_iter().find(|g| g.keyword() == k) {
                let a = Access::parse(k, body, false)?;
                let slot = rules.global.entry(g).or_insert(a);
                *slot = Access::merge(*slot, a);
                continue;
            }
            let Some((res, is_prefix)) = Resource::from_keyword(k) else {
                return Err(RulesError(format!(
                    "unknown rule {k:?} (expected acl, agent, agent_prefix, event, event_prefix, \
                     key, key_prefix, keyring, mesh, node, node_prefix, operator, peering, query, \
                     query_prefix, service, service_prefix, session or session_prefix)"
                )));
            };
            // HCL gives repeated blocks as a list of objects, JSON as one
            // object; both name -> body.
            let blocks: Vec<&serde_json::Map<String, Value>> = match body {
                Value::Object(o) => vec![o],
                Value::Array(a) => a
                    .iter()
                    .map(|b| {
                        b.as_object().ok_or_else(|| {
                            RulesError(format!("{k}: each rule must be `{k} \"name\" {{ ... }}`"))
                        })
                    })
                    .collect::<Result<_, _>>()?,
                _ => {
                    return Err(RulesError(format!(
                        "{k}: expected `{k} \"name\" {{ policy = \"read\" }}`"
                    )))
                }
            };
            for block in blocks {
                for (name, rule) in block {
                    let what = format!("{k} {name:?}");
                    let grant = Grant::parse(&what, rule, res)?;
                    let table = if is_prefix {
                        &mut rules.prefix
                    } else {
                        &mut rules.exact
                    };
                    let slot = table.entry(res).or_default();
                    let merged = match slot.get(name) {
                        Some(old) => Grant::merge(*old, grant),
                        None => grant,
                    };
                    slot.insert(name.clone(), merged);
                }
            }
        }
        Ok(rules)
    }
}

impl Grant {
    fn parse(what: &str, v: &Value, res: Resource) -> Result<Grant, RulesError> {
        // Repeated identical labels arrive as a list of bodies.
        if let Value::Array(bodies) = v {
            let mut out: Option<Grant> = None;
            for b in bodies {
                let g = Grant::parse(what, b, res)?;
                out = Some(match out {
                    Some(o) => Grant::merge(o, g),
                    None => g,
                });
            }
            return out.ok_or_else(|| RulesError(format!("{what}: empty rule")));
        }
        let body = v.as_object().ok_or_else(|| {
            RulesError(format!(
                "{what}: expected a block such as {{ policy = \"read\" }}"
            ))
        })?;
        let mut policy = None;
        let mut intentions = None;
        for (field, fv) in body {
            match field.as_str() {
                "policy" => policy = Some(Access::parse(what, fv, res == Resource::Key)?),
                "intentions" if res == Resource::Service => {
                    intentions = Some(Access::parse(&format!("{what} intentions"), fv, false)?)
                }
                other => {
                    return Err(RulesError(format!(
                        "{what}: unknown field {other:?} (expected policy{})",
                        if res == Resource::Service {
                            " or intentions"
                        } else {
                            ""
                        }
                    )))
                }
            }
        }
        // Consul allows a service rule with only `intentions`; it grants
        // nothing on the service itself.
        let policy = match (policy, intentions) {
            (Some(p), _) => p,
            (None, Some(_)) => Access::Deny,
            (None, None) => return Err(RulesError(format!("{what}: missing policy"))),
        };
        Ok(Grant { policy, intentions })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hcl_and_json_give_the_same_rules() {
        let hcl = r#"
            key_prefix "app/" { policy = "write" }
            key_prefix "app/secret/" { policy = "deny" }
            key "motd" { policy = "read" }
            service "web" {
              policy = "write"
              intentions = "read"
            }
            service_prefix "" { policy = "read" }
            node_prefix "" { policy = "read" }
            operator = "read"
        "#;
        let json = r#"{
            "key_prefix": {"app/": {"policy": "write"}, "app/secret/": {"policy": "deny"}},
            "key": {"motd": {"policy": "read"}},
            "service": {"web": {"policy": "write", "intentions": "read"}},
            "service_prefix": {"": {"policy": "read"}},
            "node_prefix": {"": {"policy": "read"}},
            "operator": "read"
        }"#;
        let a = Rules::parse(hcl).unwrap();
        let b = Rules::parse(json).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.prefix[&Resource::Key]["app/"].policy, Access::Write);
        assert_eq!(
            a.exact[&Resource::Service]["web"].intentions,
            Some(Access::Read)
        );
        assert_eq!(a.global[&Global::Operator], Access::Read);
    }

    #[test]
    fn repeated_rules_merge_with_deny_winning() {
        let r = Rules::parse(
            r#"
            key "a" { policy = "read" }
            key "a" { policy = "write" }
            key "b" { policy = "write" }
            key "b" { policy = "deny" }
        "#,
        )
        .unwrap();
        assert_eq!(r.exact[&Resource::Key]["a"].policy, Access::Write);
        assert_eq!(r.exact[&Resource::Key]["b"].policy, Access::Deny);
    }

    #[test]
    fn mistakes_are_named() {
        for (text, says) in [
            (r#"kee "a" { policy = "read" }"#, "unknown rule \"kee\""),
            (r#"key "a" { policy = "rw" }"#, "invalid policy \"rw\""),
            (
                r#"service "a" { policy = "list" }"#,
                "invalid policy \"list\"",
            ),
            (r#"key "a" { polcy = "read" }"#, "unknown field \"polcy\""),
            (r#"key "a" { }"#, "missing policy"),
            (r#"operator = 3"#, "must be a string"),
            (r#"key "a" { policy = "read""#, "invalid HCL"),
            (r#"{"key": 5}"#, "expected `key"),
            ("[1]", "invalid HCL"),
        ] {
            let e = Rules::parse(text).unwrap_err().to_string();
            assert!(e.contains(says), "{text}: {e}");
        }
        assert_eq!(Rules::parse("  ").unwrap(), Rules::default());
    }

    proptest::proptest! {
        /// Any text parses or is refused; none panics.
        #[test]
        fn any_text_parses_or_is_refused(text in ".{0,200}") {
            let _ = Rules::parse(&text);
        }
    }
}

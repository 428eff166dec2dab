//! Tokens, policies and roles: what the servers keep (in
//! [`state::acl`](crate::state::acl)) and what an agent learns of a token.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::identity::{template, Identities, NodeIdentity, ServiceIdentity, TemplatedPolicy};
use super::rules::Rules;

/// A reference to a policy or role, by ID or by name (names are resolved
/// to IDs when the token or role is written).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Link {
    /// Its ID.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Its name.
    #[serde(rename = "Name", default)]
    pub name: String,
}

/// A token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Token {
    /// Public ID: names the token in listings and logs.
    pub accessor_id: String,
    /// The secret a request presents.
    pub secret_id: String,
    /// What it is for.
    pub description: String,
    /// Its policies.
    pub policies: Vec<Link>,
    /// Its roles.
    pub roles: Vec<Link>,
    /// Its service and node identities and templated policies.
    #[serde(flatten)]
    pub identities: Identities,
    /// Valid in this datacenter only.
    pub local: bool,
    /// The auth method that made it at login (empty: made directly).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub auth_method: String,
    /// When it stops being valid (Unix ms).
    pub expiration_ms: Option<u64>,
    /// When it was made (Unix ms).
    pub create_ms: u64,
    /// Raft index of its creation.
    pub create_index: u64,
    /// Raft index of its last change.
    pub modify_index: u64,
}

/// A policy: named rules.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    /// Its ID.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// The rules (HCL or JSON).
    pub rules: String,
    /// Datacenters it is valid in (empty: all).
    pub datacenters: Vec<String>,
    /// Raft index of its creation.
    pub create_index: u64,
    /// Raft index of its last change.
    pub modify_index: u64,
}

/// A role: a named set of policies that tokens may share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    /// Its ID.
    pub id: String,
    /// Its unique name.
    pub name: String,
    /// What it is for.
    pub description: String,
    /// Its policies.
    pub policies: Vec<Link>,
    /// Its service and node identities and templated policies.
    #[serde(flatten)]
    pub identities: Identities,
    /// Raft index of its creation.
    pub create_index: u64,
    /// Raft index of its last change.
    pub modify_index: u64,
}

/// A secret resolved: the token, and the rules of every policy it has
/// (its own and its roles').
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The token.
    pub token: Token,
    /// Its policies' rules.
    pub rules: Vec<Arc<Rules>>,
    /// Whether one of them is global management.
    pub management: bool,
    /// The IDs of those policies (its own and its roles').
    pub policy_ids: Vec<String>,
    /// The synthetic policies of its identities and templated policies
    /// (its own and its roles'), whose rules are in `rules` too.
    pub synthetic: Vec<Policy>,
}

/// A token as an agent learns it from the servers: the token, and every
/// policy it has, its roles' included.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Identity {
    /// The token (links named as they stand now).
    pub token: Token,
    /// Its policies.
    pub policies: Vec<Policy>,
    /// Whether one of them is global management.
    pub management: bool,
}

impl Identity {
    /// What it may do, under `default_policy = "allow"` when
    /// `default_allow`.
    pub fn authorizer(&self, default_allow: bool) -> super::Authorizer {
        let rules: Vec<Rules> = self
            .policies
            .iter()
            .map(|p| Rules::parse(&p.rules).unwrap_or_default())
            .collect();
        super::Authorizer::new(
            &self.token.accessor_id,
            &rules,
            self.management,
            default_allow,
        )
    }
}

/// FNV-128a's offset basis, in hex.
const FNV128A_OFFSET_HEX: &str = "6c62272e07bb014262b821756295c58d";

impl TemplatedPolicy {
    /// The policy it stands for. Consul's ID and name carry over: the
    /// rules in hex followed by the FNV-128a offset basis (what Consul's
    /// `hasher.Sum(rules)` yields), so a preview matches Consul's.
    pub fn synthetic(&self) -> Result<Policy, String> {
        let t = template(&self.template_name).ok_or_else(|| {
            format!(
                "acl templated policy does not exist: {}",
                self.template_name
            )
        })?;
        let name = self.variables.as_ref().map_or("", |v| v.name.as_str());
        let rules = t.template.replace("{{.Name}}", name);
        let mut id = String::with_capacity(rules.len() * 2 + 32);
        for b in rules.as_bytes() {
            id.push_str(&format!("{b:02x}"));
        }
        id.push_str(FNV128A_OFFSET_HEX);
        Ok(Policy {
            name: format!("synthetic-policy-{id}"),
            id,
            description: format!(
                "synthetic policy generated from templated policy: {}",
                self.template_name
            ),
            rules,
            datacenters: self.datacenters.clone(),
            ..Policy::default()
        })
    }
}

impl Identities {
    /// The synthetic policies that apply in datacenter `dc`.
    pub fn synthetic_policies(&self, dc: &str) -> Vec<Policy> {
        self.service_identities
            .iter()
            .map(ServiceIdentity::templated)
            .chain(self.node_identities.iter().map(NodeIdentity::templated))
            .chain(self.templated_policies.iter().cloned())
            .filter(|t| t.applies_in(dc))
            .filter_map(|t| t.synthetic().ok())
            .collect()
    }
}

//! Access control lists, with Consul's model: tokens carry policies
//! (directly, or through roles), policies are written in the rules language
//! ([`rules`]), and an [`Authorizer`] decides what a token may do.
//!
//! The servers keep tokens, policies and roles in the replicated state
//! ([`AclState`](crate::state::acl::AclState)) and enforce them on every request that reaches them
//! (`crate::server::acl`); agents enforce them on their own endpoints and
//! on DNS, resolving tokens through the servers with a TTL cache
//! (`crate::agent::acl`).

pub mod auth;
pub mod authz;
pub mod identity;
mod model;
pub mod rules;

pub use auth::{AuthMethod, BindingRule};
pub use authz::Authorizer;
pub use identity::{Identities, NodeIdentity, ServiceIdentity, TemplatedPolicy};
pub use model::{Identity, Link, Policy, Resolved, Role, Token};
pub use rules::{Access, Global, Resource, Rules, RulesError};

use std::time::Duration;

/// The built-in policy that grants everything.
pub const GLOBAL_MANAGEMENT_ID: &str = "00000000-0000-0000-0000-000000000001";
/// Its name.
pub const GLOBAL_MANAGEMENT_NAME: &str = "global-management";
/// The anonymous token's accessor ID: requests without a token use it.
pub const ANONYMOUS_ID: &str = "00000000-0000-0000-0000-000000000002";
/// The anonymous token's secret.
pub const ANONYMOUS_SECRET: &str = "anonymous";

/// Why a token was refused, as Consul words it (HTTP 403).
pub const ACL_NOT_FOUND: &str = "ACL not found";
/// What Consul answers an ACL endpoint when ACLs are off (HTTP 401).
pub const ACL_DISABLED: &str = "ACL support disabled";
/// The start of every refusal (HTTP 403).
pub const PERMISSION_DENIED: &str = "Permission denied";

/// Consul's refusal: which token lacked which permission on what.
pub fn permission_denied(accessor: &str, perm: &str, on: Option<&str>) -> String {
    let who = if accessor == ANONYMOUS_ID {
        "anonymous token".to_string()
    } else {
        format!("token with AccessorID '{accessor}'")
    };
    match on {
        Some(name) => format!("{PERMISSION_DENIED}: {who} lacks permission '{perm}' on {name:?}"),
        None => format!("{PERMISSION_DENIED}: {who} lacks permission '{perm}'"),
    }
}

/// What to do when a token cannot be resolved because no server answers
/// (`acl.down_policy`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DownPolicy {
    /// Keep using what was last resolved, however old; deny tokens never
    /// seen.
    #[default]
    ExtendCache,
    /// As `ExtendCache` (cairn resolves in the foreground either way).
    AsyncCache,
    /// Allow everything.
    Allow,
    /// Deny everything.
    Deny,
}

impl std::str::FromStr for DownPolicy {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "extend-cache" => Ok(DownPolicy::ExtendCache),
            "async-cache" => Ok(DownPolicy::AsyncCache),
            "allow" => Ok(DownPolicy::Allow),
            "deny" => Ok(DownPolicy::Deny),
            other => Err(format!(
                "invalid down_policy {other:?} (expected extend-cache, async-cache, allow or deny)"
            )),
        }
    }
}

/// The tokens an agent uses itself (`acl.tokens`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentTokens {
    /// Created by the leader with global management, if missing.
    pub initial_management: Option<String>,
    /// For the agent's own requests (catalog sync, coordinates).
    pub agent: Option<String>,
    /// For requests that bring no token (instead of anonymous).
    pub default: Option<String>,
    /// For DNS lookups (else `default`, else anonymous).
    pub dns: Option<String>,
    /// Works on this agent's own endpoints (`agent:write`, `node:read`)
    /// even when no server can be asked.
    pub agent_recovery: Option<String>,
    /// What a secondary datacenter's servers read the primary's ACLs
    /// with (needs `acl = "write"` to replicate tokens).
    pub replication: Option<String>,
    /// For services and checks from config files (kept; cairn registers
    /// them with the agent token).
    pub config_file_service_registration: Option<String>,
}

/// What the agent recovery token may do.
pub const AGENT_RECOVERY_RULES: &str =
    "agent_prefix \"\" {\n  policy = \"write\"\n}\nnode_prefix \"\" {\n  policy = \"read\"\n}\n";

/// The `acl` block of the agent configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclConfig {
    /// Whether ACLs are enforced.
    pub enabled: bool,
    /// `default_policy = "allow"`: what no rule covers is allowed.
    pub default_allow: bool,
    /// What to do when the servers cannot be asked.
    pub down_policy: DownPolicy,
    /// How long an agent trusts a resolved token before asking again.
    pub token_ttl: Duration,
    /// The agent's own tokens.
    pub tokens: AgentTokens,
    /// Tokens set through `/v1/agent/token/*` are kept in the data
    /// directory and come back after a restart (Consul's
    /// `enable_token_persistence`).
    pub enable_token_persistence: bool,
    /// In a secondary datacenter, replicate global tokens from the
    /// primary too (policies and roles always are).
    pub enable_token_replication: bool,
}

impl Default for AclConfig {
    fn default() -> Self {
        AclConfig {
            enabled: false,
            default_allow: true,
            down_policy: DownPolicy::ExtendCache,
            token_ttl: Duration::from_secs(30),
            tokens: AgentTokens::default(),
            enable_token_persistence: false,
            enable_token_replication: false,
        }
    }
}

impl AclConfig {
    /// The token a request without one runs as.
    pub fn default_token(&self) -> &str {
        self.tokens.default.as_deref().unwrap_or(ANONYMOUS_SECRET)
    }

    /// The token the agent's own requests run as.
    pub fn agent_token(&self) -> &str {
        self.tokens
            .agent
            .as_deref()
            .unwrap_or_else(|| self.default_token())
    }

    /// The token DNS lookups run as.
    pub fn dns_token(&self) -> &str {
        self.tokens
            .dns
            .as_deref()
            .unwrap_or_else(|| self.default_token())
    }
}

/// The rules of the global-management policy (a management token is
/// recognised by the policy's ID; the rules say the same for readers).
pub const GLOBAL_MANAGEMENT_RULES: &str = r#"
acl = "write"
agent_prefix "" { policy = "write" }
event_prefix "" { policy = "write" }
key_prefix "" { policy = "write" }
keyring = "write"
node_prefix "" { policy = "write" }
operator = "write"
mesh = "write"
peering = "write"
query_prefix "" { policy = "write" }
service_prefix "" {
  policy = "write"
  intentions = "write"
}
session_prefix "" { policy = "write" }
"#;

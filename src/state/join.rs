//! Joining a `cairn agent -secure` cluster, as the replicated store keeps
//! it: the agent CA the servers sign joining agents' certificates with,
//! and the one-time join tickets, each known by its secret's hash and
//! used at most once. Both are kept with the ACLs (the CA's key mints
//! certificates a server would trust, so it is as secret as a token), and
//! neither leaves the datacenter: ACL replication copies neither.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::error::StateError;
use crate::acl::{Identities, NodeIdentity, Token};

/// The agent CA: its certificate and key (PEM), and the domain its
/// agents' certificates name (`server.<dc>.<domain>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentCa {
    /// The CA's certificate.
    pub cert_pem: String,
    /// Its private key.
    pub key_pem: String,
    /// The domain.
    pub domain: String,
}

/// A join ticket: what the join token with its secret admits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTicket {
    /// Whether it admits a server (else a client agent).
    pub server: bool,
    /// When it was made (Unix milliseconds).
    pub created_ms: u64,
    /// After when it admits nobody.
    pub expires_ms: u64,
    /// The agent token the joining agent gets: its accessor ID...
    pub token_accessor: String,
    /// ...and its secret, chosen when the ticket was made, so that using
    /// it needs no randomness on the leader.
    pub token_secret: String,
    /// The node that used it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used_by: Option<String>,
}

/// What the store keeps for joining: the agent CA and the tickets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    agent_ca: Option<AgentCa>,
    /// By the hex SHA-256 of the secret.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    tickets: BTreeMap<String, JoinTicket>,
}

/// The hash by which the store knows a join token's secret (hex
/// SHA-256), so that reading the store admits nobody.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn refused(why: impl Into<String>) -> StateError {
    StateError::Invalid(why.into())
}

impl JoinState {
    /// Whether there is nothing here (an ordinary cluster).
    pub fn is_empty(&self) -> bool {
        self.agent_ca.is_none() && self.tickets.is_empty()
    }

    /// The agent CA, once the first server stored it.
    pub fn agent_ca(&self) -> Option<&AgentCa> {
        self.agent_ca.as_ref()
    }

    /// Stores the agent CA unless one is stored (the first server's stays:
    /// every certificate in the cluster chains to it).
    pub fn set_agent_ca(&mut self, ca: &AgentCa) -> bool {
        if self.agent_ca.is_some() {
            return false;
        }
        self.agent_ca = Some(ca.clone());
        true
    }

    /// Keeps a new ticket under `hash`, and forgets the tickets that ran
    /// out before it was made (used or not: nobody can use them now).
    pub fn create_ticket(&mut self, hash: &str, ticket: &JoinTicket) -> Result<bool, StateError> {
        if self.agent_ca.is_none() {
            return Err(refused(
                "this cluster does not admit agents by join token: its first server was not started with -secure",
            ));
        }
        if hash.len() != 64 || !hash.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(refused("a join ticket is known by a hex SHA-256"));
        }
        if ticket.expires_ms <= ticket.created_ms {
            return Err(refused("a join ticket must expire after it is made"));
        }
        if self.tickets.contains_key(hash) {
            return Err(refused("a join ticket with this secret exists"));
        }
        self.tickets.retain(|_, t| t.expires_ms > ticket.created_ms);
        self.tickets.insert(hash.to_string(), ticket.clone());
        Ok(true)
    }

    /// The agent token the ticket under `hash` buys node `node` of `dc` at
    /// `now_ms`, or why it buys nothing: unknown, used, expired, or for the
    /// other role. Nothing changes until [`mark_used`](Self::mark_used).
    pub fn admit(
        &self,
        hash: &str,
        server: bool,
        node: &str,
        dc: &str,
        now_ms: u64,
    ) -> Result<Token, StateError> {
        let t = self.tickets.get(hash).ok_or_else(|| {
            refused("join token not recognised: it was not made in this cluster, or it expired and was forgotten (make another with `cairn acl join-token create`)")
        })?;
        if let Some(by) = &t.used_by {
            return Err(refused(format!(
                "join token already used (by node {by:?}): each admits one agent; make another with `cairn acl join-token create`"
            )));
        }
        if now_ms >= t.expires_ms {
            return Err(refused(format!(
                "join token expired {} s ago: make another with `cairn acl join-token create`",
                (now_ms - t.expires_ms) / 1000
            )));
        }
        if t.server != server {
            return Err(refused(if t.server {
                "this join token admits a server: start the agent with -server"
            } else {
                "this join token admits a client agent, not a server (make one with `cairn acl join-token create -server`)"
            }));
        }
        if node.is_empty() {
            return Err(refused("a joining agent needs a node name"));
        }
        Ok(Token {
            accessor_id: t.token_accessor.clone(),
            secret_id: t.token_secret.clone(),
            description: format!("Agent token of {node}, joined by join token"),
            identities: Identities {
                node_identities: vec![NodeIdentity {
                    node_name: node.to_string(),
                    datacenter: dc.to_string(),
                }],
                ..Identities::default()
            },
            local: true,
            create_ms: now_ms,
            ..Token::default()
        })
    }

    /// The ticket under `hash`.
    pub fn ticket(&self, hash: &str) -> Option<&JoinTicket> {
        self.tickets.get(hash)
    }

    /// Records that `node` used the ticket under `hash`.
    pub fn mark_used(&mut self, hash: &str, node: &str) {
        if let Some(t) = self.tickets.get_mut(hash) {
            t.used_by = Some(node.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ticket(server: bool) -> JoinTicket {
        JoinTicket {
            server,
            created_ms: 1_000,
            expires_ms: 61_000,
            token_accessor: "a".into(),
            token_secret: "s".into(),
            used_by: None,
        }
    }

    fn state() -> JoinState {
        let mut s = JoinState::default();
        assert!(s.set_agent_ca(&AgentCa {
            cert_pem: "c".into(),
            key_pem: "k".into(),
            domain: "consul".into(),
        }));
        s
    }

    #[test]
    fn a_ticket_admits_one_agent_of_its_role_before_it_expires() {
        let h = "ab".repeat(32);
        let mut s = state();
        s.create_ticket(&h, &ticket(false)).unwrap();
        let says = |e: StateError, what: &str| assert!(e.to_string().contains(what), "{e}");
        says(
            s.admit(&h, true, "n1", "dc1", 2_000).unwrap_err(),
            "-server",
        );
        says(
            s.admit(&h, false, "n1", "dc1", 61_000).unwrap_err(),
            "expired",
        );
        says(
            s.admit(&"cd".repeat(32), false, "n1", "dc1", 2_000)
                .unwrap_err(),
            "not recognised",
        );
        let t = s.admit(&h, false, "n1", "dc1", 2_000).unwrap();
        assert_eq!(t.identities.node_identities[0].node_name, "n1");
        assert!(t.local);
        s.mark_used(&h, "n1");
        says(
            s.admit(&h, false, "n2", "dc1", 2_000).unwrap_err(),
            "already used",
        );
    }

    #[test]
    fn tickets_need_the_agent_ca_and_expired_ones_are_forgotten() {
        let h = "ab".repeat(32);
        let e = JoinState::default()
            .create_ticket(&h, &ticket(false))
            .unwrap_err();
        assert!(e.to_string().contains("-secure"), "{e}");
        let mut s = state();
        s.create_ticket(&h, &ticket(false)).unwrap();
        assert!(s.create_ticket(&h, &ticket(false)).is_err(), "same secret");
        assert!(s.create_ticket("xyz", &ticket(false)).is_err());
        let later = JoinTicket {
            created_ms: 70_000,
            expires_ms: 80_000,
            ..ticket(true)
        };
        s.create_ticket(&"cd".repeat(32), &later).unwrap();
        assert!(s.admit(&h, false, "n", "dc1", 1).is_err(), "forgotten");
        assert!(!s.set_agent_ca(&AgentCa {
            cert_pem: "other".into(),
            key_pem: "k".into(),
            domain: "consul".into(),
        }));
    }
}

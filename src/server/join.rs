//! Admitting an agent that joins a `cairn agent -secure` cluster with a
//! one-time join token (on the leader): its ticket is spent and its agent
//! token made in one Raft entry, then its key is certified by the agent
//! CA the store keeps, for the role the ticket admits. The agent's CSR
//! contributes its public key and nothing else: the name on the
//! certificate is the ticket's to decide.

use std::time::{Duration, UNIX_EPOCH};

use super::node::{wall_ms, Server};
use super::request::{Admitted, Answer, ClientReply, ClientRequest, JoinRequest};
use crate::env::Env;
use crate::pki::{CertSpec, Pair, Role};
use crate::state::join::secret_hash;
use crate::state::Command;

/// How long a joined agent's certificate is valid.
pub const AGENT_CERT_DAYS: u32 = 365;

impl<E: Env> Server<E> {
    /// Admits the agent `join` asks for, or says why not.
    pub(super) async fn admit(
        &self,
        join: JoinRequest,
        hops: u8,
        token: Option<&str>,
    ) -> ClientReply {
        if !self.is_leader() {
            let req = ClientRequest::Join {
                join: Box::new(join),
                hops,
            };
            return self.to_leader(req, token).await;
        }
        let ca = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store.acl().join().agent_ca().cloned()
        };
        let Some(ca) = ca else {
            return ClientReply::refused(
                "this cluster does not admit agents by join token: its first server was not started with -secure",
            );
        };
        // A CSR that does not read must not spend the ticket.
        let key = match crate::pki::csr_public_key(&join.csr_pem) {
            Ok(k) => k,
            Err(e) => return ClientReply::refused(&e.to_string()),
        };
        let hash = secret_hash(&join.secret);
        let dc = self.datacenter.get().cloned().unwrap_or_default();
        let at_ms = wall_ms(&self.env);
        let cmd = Command::JoinTicketUse {
            hash: hash.clone(),
            server: join.server,
            node: join.node.clone(),
            dc: dc.clone(),
            at_ms,
        };
        let reply = self.write(cmd, 0, None).await;
        if let Err(e) = &reply.answer {
            tracing::warn!(node = %join.node, error = %e, "join refused");
            return reply;
        }
        let secret = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store
                .acl()
                .join()
                .ticket(&hash)
                .map(|t| t.token_secret.clone())
        };
        let spec = CertSpec {
            role: if join.server {
                Role::Server
            } else {
                Role::Client
            },
            dc,
            domain: ca.domain.clone(),
            extra_dns: Vec::new(),
            extra_ips: Vec::new(),
            days: AGENT_CERT_DAYS,
        };
        let issuer = Pair {
            cert_pem: ca.cert_pem.clone(),
            key_pem: ca.key_pem,
        };
        let now = UNIX_EPOCH + Duration::from_millis(at_ms);
        let cert = match crate::pki::issue(&issuer, &spec, &key, now) {
            Ok(c) => c,
            Err(e) => {
                return ClientReply::refused(&format!("cannot sign the agent's certificate: {e}"))
            }
        };
        tracing::info!(node = %join.node, server = join.server, "agent admitted by join token");
        ClientReply {
            answer: Ok(Answer::Admitted(Box::new(Admitted {
                cert_pem: cert,
                ca_pem: ca.cert_pem,
                agent_token: secret.unwrap_or_default(),
            }))),
            ..reply
        }
    }
}

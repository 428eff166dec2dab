//! The Connect CA on the leader: the root made on first use or rotated,
//! and leaves signed within Consul's CSR rate limit.

use std::time::Duration;

use super::csr::CSR_RATE_LIMITED;
use super::node::Server;
use super::request::{Answer, CaOp, ClientReply, ClientRequest};
use crate::connect::ca;
use crate::env::Env;
use crate::state::Table;

impl<E: Env> Server<E> {
    /// Answers a CA request on the leader, forwarding it there otherwise.
    pub(super) async fn ca(&self, op: CaOp, hops: u8, token: Option<&str>) -> ClientReply {
        if !self.is_leader() {
            return self.to_leader(ClientRequest::Ca { op, hops }, token).await;
        }
        let now = self.env.wall_clock();
        if let Err(e) = self.ensure_ca(now, token).await {
            return ClientReply::refused(&e);
        }
        match op {
            CaOp::Roots => {}
            CaOp::Rotate { leaf_ttl_ms, root } => {
                let (cluster_id, serial, old) = {
                    let store = self.store.read().unwrap_or_else(|e| e.into_inner());
                    let ca = store.ca();
                    let top = ca.roots.iter().map(|r| r.keys.serial).max().unwrap_or(0);
                    let old = ca.active().map(|r| r.keys.clone());
                    (ca.cluster_id.clone(), top + 1, old)
                };
                let root = match root {
                    Some((cert, key)) => ca::root_from_pem(&cert, &key, now),
                    None => ca::generate_root(&ca::trust_domain(&cluster_id), serial, now),
                };
                let root = root.and_then(|mut r| {
                    if let Some(old) = old {
                        r.intermediate_pems = vec![ca::cross_sign(&old, &r)?];
                    }
                    Ok(r)
                });
                let root = match root {
                    Ok(r) => r,
                    Err(e) => return ClientReply::refused(&e.to_string()),
                };
                let cmd = crate::state::Command::CaSetRoot {
                    cluster_id,
                    root: Box::new(root),
                    only_if_none: false,
                    leaf_ttl_ms,
                };
                if let Err(e) = self.write(cmd, 0, token).await.answer {
                    return ClientReply::refused(&e);
                }
            }
            CaOp::Sign {
                csr_pem,
                service,
                datacenter,
            } => return self.sign(&csr_pem, service, datacenter, now),
        }
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        ClientReply {
            index: store.index(Table::Connect).max(1),
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Ca(Box::new(store.ca().public()))),
            filtered: false,
        }
    }

    /// Creates the CA if the cluster has none: Connect costs nothing (and
    /// changes no simulated run) until something uses it.
    pub(super) async fn ensure_ca(
        &self,
        now: std::time::SystemTime,
        token: Option<&str>,
    ) -> Result<(), String> {
        let missing = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store.ca().active().is_none()
        };
        if !missing {
            return Ok(());
        }
        let cluster_id = {
            let mut rng = self.ca_rng.lock().unwrap_or_else(|e| e.into_inner());
            crate::format::format_uuid(rand::Rng::random(&mut *rng))
        };
        let root =
            ca::generate_root(&ca::trust_domain(&cluster_id), 1, now).map_err(|e| e.to_string())?;
        let cmd = crate::state::Command::CaSetRoot {
            cluster_id,
            root: Box::new(root),
            only_if_none: true,
            leaf_ttl_ms: None,
        };
        self.write(cmd, 0, token).await.answer.map(|_| ())
    }

    /// Signs a leaf with the active root, within the CSR rate limit.
    pub(super) fn sign(
        &self,
        csr_pem: &str,
        service: String,
        datacenter: String,
        now: std::time::SystemTime,
    ) -> ClientReply {
        if !self.csr_limit.take(self.env.now()) {
            return ClientReply::refused(CSR_RATE_LIMITED);
        }
        let (root, trust_domain, ttl, index) = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            let ca = store.ca();
            let Some(root) = ca.active() else {
                return ClientReply::refused("the CA has no active root");
            };
            let ttl = match ca.leaf_ttl_ms {
                0 => ca::LEAF_TTL,
                ms => Duration::from_millis(ms),
            };
            (
                root.keys.clone(),
                ca::trust_domain(&ca.cluster_id),
                ttl,
                store.index(Table::Connect),
            )
        };
        let id = ca::SpiffeId {
            trust_domain,
            datacenter,
            service,
        };
        let serial = {
            let mut rng = self.ca_rng.lock().unwrap_or_else(|e| e.into_inner());
            rand::Rng::random::<u64>(&mut *rng) >> 1
        };
        match ca::sign_leaf(&root, csr_pem, &id, serial, now, ttl) {
            Ok(leaf) => ClientReply {
                index: index.max(1),
                known_leader: true,
                last_contact_ms: 0,
                answer: Ok(Answer::Leaf(leaf)),
                filtered: false,
            },
            Err(e) => ClientReply::refused(&e.to_string()),
        }
    }
}

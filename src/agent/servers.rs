//! How an agent reaches the servers. A server agent asks its own server
//! (which forwards to the leader when it must). A client agent picks a
//! server of its datacenter from gossip, keeps using it while it answers,
//! and moves to another when it does not, as Consul's router does.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::env::Env;
use crate::gossip::{Gossip, MemberStatus};
use crate::rpc::{Client, RpcError};
use crate::server::{server_of, ClientReply, ClientRequest, Server, ServerReply, ServerRpc};

/// Most servers a client agent tries for one request.
const MAX_TRIES: usize = 3;

/// Time allowed for an answer beyond a blocking read's own wait.
const SLACK: Duration = Duration::from_secs(15);

/// The way to the servers; see the [module docs](self).
pub struct Servers<E: Env> {
    env: E,
    gossip: Gossip,
    dc: String,
    local: Option<Arc<Server<E>>>,
    client: Client<E, ServerRpc, ServerReply>,
    /// The server that answered last.
    preferred: Mutex<Option<SocketAddr>>,
    rng: Mutex<ChaCha8Rng>,
    /// With ACLs on: the token of requests that bring none (the agent's).
    token: Mutex<Option<String>>,
}

impl<E: Env> Servers<E> {
    /// Requests go to `local` when this agent is a server, else to the
    /// servers of `dc` that `gossip` knows (over TLS with `tls`).
    pub fn new(
        env: E,
        gossip: Gossip,
        dc: &str,
        local: Option<Arc<Server<E>>>,
        tls: Option<crate::rpc::ClientTls>,
    ) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(env.seed("server-pick"));
        Servers {
            client: Client::with_tls(env.clone(), tls),
            env,
            gossip,
            dc: dc.to_owned(),
            local,
            preferred: Mutex::new(None),
            rng: Mutex::new(rng),
            token: Mutex::new(None),
        }
    }

    /// This agent's own server, if it runs one.
    pub fn local(&self) -> Option<&Arc<Server<E>>> {
        self.local.as_ref()
    }

    /// Whether this datacenter has a server to ask (this agent, or one
    /// that gossip says is alive).
    pub async fn any(&self) -> bool {
        self.local.is_some() || !self.candidates().await.is_empty()
    }

    /// With ACLs on: the token requests without one are made with (the
    /// agent token).
    pub fn set_token(&self, token: Option<String>) {
        *self.token.lock().unwrap_or_else(|e| e.into_inner()) = token;
    }

    /// Sends `req` to a server and returns its reply (or why none came).
    pub async fn call(&self, req: ClientRequest) -> ClientReply {
        let req = match (
            req,
            self.token
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_deref(),
        ) {
            (r @ ClientRequest::Acl { .. }, _) | (r, None) => r,
            (r, Some(token)) => r.with_token(token),
        };
        if let Some(server) = &self.local {
            return server.client_request(req).await;
        }
        let candidates = self.candidates().await;
        if candidates.is_empty() {
            return ClientReply::refused("no known servers in this datacenter");
        }
        // A write whose request may have arrived must not be sent twice
        // (a check-and-set could apply twice); only one that never reached
        // a server is safe to send elsewhere.
        let retry_any = matches!(
            req.inner(),
            ClientRequest::Read { .. } | ClientRequest::Status
        );
        let wait = match req.inner() {
            ClientRequest::Read { read, .. } => Duration::from_millis(read.max_wait_ms),
            _ => Duration::ZERO,
        };
        let msg = ServerRpc::Client(req);
        let mut last = String::new();
        for addr in candidates.into_iter().take(MAX_TRIES) {
            let deadline = self.env.now() + wait + SLACK;
            match self.client.call(addr, &msg, deadline).await {
                Ok(ServerReply::Client(r)) => {
                    *self.preferred.lock().unwrap_or_else(|e| e.into_inner()) = Some(addr);
                    return r;
                }
                Ok(ServerReply::Raft(_)) => last = format!("{addr} answered as Raft"),
                Err(e) => {
                    self.forget(addr);
                    let unsent = matches!(e, RpcError::Connect { .. });
                    last = e.to_string();
                    if !(retry_any || unsent) {
                        break;
                    }
                }
            }
        }
        ClientReply::refused(&format!("no server answered: {last}"))
    }

    /// The alive servers of our datacenter: the preferred one first, the
    /// rest in a random order.
    async fn candidates(&self) -> Vec<SocketAddr> {
        let Ok(members) = self.gossip.members().await else {
            return Vec::new();
        };
        let mut addrs: Vec<SocketAddr> = members
            .iter()
            .filter(|m| m.status == MemberStatus::Alive)
            .filter_map(server_of)
            .filter(|s| s.dc == self.dc)
            .map(|s| s.rpc)
            .collect();
        addrs.sort();
        {
            let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
            for i in (1..addrs.len()).rev() {
                let j = rng.random_range(0..=i);
                addrs.swap(i, j);
            }
        }
        let preferred = *self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = preferred {
            if let Some(i) = addrs.iter().position(|a| *a == p) {
                addrs[..=i].rotate_right(1);
            }
        }
        addrs
    }

    fn forget(&self, addr: SocketAddr) {
        let mut p = self.preferred.lock().unwrap_or_else(|e| e.into_inner());
        if *p == Some(addr) {
            *p = None;
        }
    }
}

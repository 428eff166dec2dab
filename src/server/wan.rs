//! Other datacenters: this server's view of the WAN pool, the list of
//! datacenters nearest first, and requests sent on to a server of the
//! datacenter they are for.

use std::net::SocketAddr;
use std::time::Duration;

use super::node::{Server, MAX_WAIT_MS};
use super::request::{Answer, ClientReply, ClientRequest};
use crate::env::Env;

/// Servers of another datacenter a read is tried on.
const REMOTE_TRIES: usize = 3;

impl<E: Env> Server<E> {
    /// Names this server's datacenter: requests for it are its own, and
    /// ACL identities and policies limited to it apply.
    pub fn set_datacenter(&self, datacenter: &str) {
        let _ = self.datacenter.set(datacenter.to_string());
    }

    /// Joins this server to the WAN pool: requests for other datacenters
    /// go to servers found in `wan`.
    pub fn set_wan(&self, wan: crate::gossip::Gossip) {
        let _ = self.wan.set(wan);
    }

    /// Every datacenter of the WAN pool, this one first, then by the
    /// median estimated RTT from this server to their servers (Consul's
    /// order); datacenters without coordinates go last, by name.
    pub(super) async fn datacenters(&self) -> ClientReply {
        let own = self.datacenter.get().cloned().unwrap_or_default();
        let mut rtts: std::collections::BTreeMap<String, Vec<f64>> =
            [(own.clone(), Vec::new())].into();
        if let Some(wan) = self.wan.get() {
            let (Ok(members), Ok(coords)) = (wan.members().await, wan.coordinates().await) else {
                return ClientReply::refused("the WAN pool is stopping");
            };
            let me = coords.members.get(wan.name());
            for m in &members {
                let Some(sm) = crate::server::member::server_of(m) else {
                    continue;
                };
                let list = rtts.entry(sm.dc).or_default();
                if let (Some(a), Some(b)) = (me, coords.members.get(&m.name)) {
                    list.push(a.distance_to(b).as_secs_f64());
                }
            }
        }
        // A coordinate's distance to itself is its height twice over, not
        // zero: the local datacenter is placed first outright.
        let mut dcs: Vec<(f64, String)> = rtts
            .into_iter()
            .map(|(dc, mut v)| {
                v.sort_by(f64::total_cmp);
                let rtt = if dc == own {
                    f64::NEG_INFINITY
                } else {
                    v.get(v.len() / 2).copied().unwrap_or(f64::INFINITY)
                };
                (rtt, dc)
            })
            .collect();
        dcs.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
        ClientReply {
            index: 1,
            known_leader: self.leader().is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(Answer::Datacenters(
                dcs.into_iter().map(|(_, dc)| dc).collect(),
            )),
            filtered: false,
        }
    }

    /// Sends `req` to a server of datacenter `dc`, nearest by WAN RTT
    /// estimate first; a read that cannot reach one tries the next.
    pub(super) async fn remote(
        &self,
        dc: String,
        req: ClientRequest,
        token: Option<&str>,
    ) -> ClientReply {
        if self.datacenter.get() == Some(&dc) {
            return Box::pin(self.serve(req, token)).await;
        }
        let no_path = || ClientReply::refused(&format!("No path to datacenter {dc:?}"));
        let Some(wan) = self.wan.get() else {
            return no_path();
        };
        let (Ok(members), Ok(coords)) = (wan.members().await, wan.coordinates().await) else {
            return no_path();
        };
        let me = coords.members.get(wan.name());
        let mut targets: Vec<(f64, SocketAddr)> = members
            .iter()
            .filter_map(|m| {
                let sm = crate::server::member::server_of(m)?;
                (sm.dc == dc && sm.status == crate::gossip::MemberStatus::Alive).then_some(())?;
                let rtt = match (me, coords.members.get(&m.name)) {
                    (Some(a), Some(b)) => a.distance_to(b).as_secs_f64(),
                    _ => f64::INFINITY,
                };
                Some((rtt, sm.rpc))
            })
            .collect();
        if targets.is_empty() {
            return no_path();
        }
        targets.sort_by(|a, b| a.0.total_cmp(&b.0));
        // Only a request that is safe to repeat goes to a second server.
        let tries = match req.inner() {
            ClientRequest::Read { .. } | ClientRequest::Status => REMOTE_TRIES,
            _ => 1,
        };
        let wait = match req.inner() {
            ClientRequest::Read { read, .. } => {
                Duration::from_millis(read.max_wait_ms.min(MAX_WAIT_MS))
            }
            _ => Duration::ZERO,
        };
        // One deadline for every try: a datacenter cut off from this one
        // (its servers not yet declared failed in the WAN pool) costs a
        // caller, and a prepared query failing over past it, ten seconds,
        // not ten per server.
        let deadline = self.env.now() + wait + Duration::from_secs(10);
        let mut last = String::new();
        for (_, addr) in targets.into_iter().take(tries) {
            if self.env.now() >= deadline {
                break;
            }
            match self
                .call_server_in(addr, Some(&dc), req.clone(), deadline, token)
                .await
            {
                Ok(r) => return r,
                Err(e) => last = format!("{addr}: {e}"),
            }
        }
        ClientReply::refused(&format!("datacenter {dc:?} did not answer: {last}"))
    }
}

//! Writes through the leader: commands proposed in batches (see
//! [`super::batch`]), coordinates gathered and written in bulk, and TTL
//! sessions renewed and expired.

use std::time::Duration;

use tokio::sync::oneshot;

use super::batch::{Proposal, Refusal};
use super::node::{Server, MAX_HOPS};
use super::request::{Answer, ClientReply, ClientRequest};
use crate::coordinate::Coordinate;
use crate::env::Env;
use crate::state::{Applied, Command, Session, Table};

/// Most coordinates written in one log entry (Consul's
/// `coordinate_update_batch_size`).
const COORDINATE_BATCH: usize = 128;

/// Most coordinates kept waiting for the next batch; more are dropped, as
/// Consul drops them, since agents send fresh ones soon anyway (its
/// batch size times `coordinate_update_max_batches`).
const COORDINATE_PENDING_MAX: usize = COORDINATE_BATCH * 5;

/// A TTL session lives this many TTLs past its last renewal (Consul's
/// `sessionTTLMultiplier`), so a renewal that is a little late is no loss.
const SESSION_TTL_MULTIPLIER: u32 = 2;

/// A session's TTL, if it has one that parses.
fn session_ttl(s: &Session) -> Option<Duration> {
    (!s.ttl.is_empty())
        .then(|| crate::format::parse_duration(&s.ttl).ok())
        .flatten()
        .filter(|d| !d.is_zero())
}

impl<E: Env> Server<E> {
    pub(super) async fn write(
        &self,
        cmd: crate::state::Command,
        hops: u8,
        token: Option<&str>,
    ) -> ClientReply {
        if !self.is_leader() {
            let req = ClientRequest::Write {
                cmd: Box::new(cmd),
                hops,
            };
            return self.to_leader(req, token).await;
        }
        // A secondary datacenter's leader sends what the primary owns
        // (policies, roles, global tokens) there.
        if self.owned_by_primary(&cmd) {
            return self.write_at_primary(cmd, token).await;
        }
        let (started, metric) = (
            self.env.now(),
            crate::telemetry::registry::write_metric(&cmd),
        );
        let (done, result) = oneshot::channel();
        let proposal = Proposal {
            cmd: cmd.clone(),
            done,
        };
        if self.proposals.send(proposal).is_err() {
            return ClientReply::refused("the server is stopping");
        }
        let result = result.await;
        if let Ok(Ok(_)) = &result {
            let took = self.env.now().saturating_duration_since(started);
            self.telemetry.applied(metric, took);
        }
        match result {
            Ok(Ok((index, r))) => ClientReply {
                index,
                known_leader: true,
                last_contact_ms: 0,
                answer: r
                    .map(|a| match a {
                        Applied::Done(ok) => Answer::Written(ok),
                        Applied::Txn(t) => Answer::Txn(t),
                    })
                    .map_err(|e| e.to_string()),
                filtered: false,
            },
            // Leadership moved while we wrote: send it on.
            Ok(Err(Refusal::NotLeader)) if hops < MAX_HOPS => {
                self.forward(
                    ClientRequest::Write {
                        cmd: Box::new(cmd),
                        hops: hops + 1,
                    },
                    token,
                )
                .await
            }
            Ok(Err(Refusal::NotLeader)) => {
                ClientReply::refused("no cluster leader (too many forwards)")
            }
            Ok(Err(Refusal::Failed(why))) => ClientReply::refused(&why),
            Err(_) => ClientReply::refused("the server is stopping"),
        }
    }

    pub(super) async fn coordinates(
        &self,
        updates: Vec<(String, Coordinate)>,
        hops: u8,
        token: Option<&str>,
    ) -> ClientReply {
        if !self.is_leader() {
            let req = ClientRequest::Coordinates { updates, hops };
            return self.to_leader(req, token).await;
        }
        // A coordinate with NaNs or the wrong shape would poison every
        // estimate made from it.
        if let Some((node, _)) = updates.iter().find(|(_, c)| !c.is_valid()) {
            return ClientReply::refused(&format!("invalid coordinate for node {node:?}"));
        }
        let mut pending = self
            .pending_coordinates
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for (node, c) in updates {
            if pending.len() < COORDINATE_PENDING_MAX || pending.contains_key(&node) {
                pending.insert(node, c);
            }
        }
        ClientReply {
            index: 0,
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Written(true)),
            filtered: false,
        }
    }

    /// Writes the coordinates collected since the last call, in batches.
    /// Returns how many were written. Does nothing unless leading.
    pub async fn flush_coordinates(&self) -> usize {
        if !self.is_leader() {
            return 0;
        }
        let pending = std::mem::take(
            &mut *self
                .pending_coordinates
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        );
        let all: Vec<(String, Coordinate)> = pending.into_iter().collect();
        let mut written = 0;
        for batch in all.chunks(COORDINATE_BATCH) {
            let reply = self
                .write(Command::Coordinates(batch.to_vec()), MAX_HOPS, None)
                .await;
            match reply.answer {
                Ok(_) => written += batch.len(),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot store coordinates");
                    break;
                }
            }
        }
        written
    }

    /// Restarts session `id`'s TTL timer on the leader; the session, or
    /// none when it is gone.
    pub(super) async fn renew(&self, id: String, hops: u8, token: Option<&str>) -> ClientReply {
        if !self.is_leader() {
            let req = ClientRequest::SessionRenew { id, hops };
            return self.to_leader(req, token).await;
        }
        let (index, session) = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            (store.index(Table::Sessions), store.session(&id).cloned())
        };
        // Gone: an empty answer (the HTTP layer says 404).
        let Some(session) = session else {
            return ClientReply {
                index,
                known_leader: true,
                last_contact_ms: 0,
                answer: Ok(Answer::Sessions(Vec::new())),
                filtered: false,
            };
        };
        if let Some(ttl) = session_ttl(&session) {
            self.session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(id, self.env.now() + ttl * SESSION_TTL_MULTIPLIER);
        }
        ClientReply {
            index,
            known_leader: true,
            last_contact_ms: 0,
            answer: Ok(Answer::Sessions(vec![session])),
            filtered: false,
        }
    }

    /// Destroys the TTL sessions whose timers ran out. A session the
    /// leader has no timer for (it is new, or this leader is) gets a full
    /// one now, as Consul's new leaders reset every timer. Leader only.
    pub async fn expire_sessions(&self) {
        if !self.is_leader() {
            self.session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clear();
            return;
        }
        let now = self.env.now();
        let ttls: Vec<(String, Duration)> = {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            store
                .sessions()
                .filter_map(|s| Some((s.id.clone(), session_ttl(s)?)))
                .collect()
        };
        let expired: Vec<String> = {
            let mut timers = self
                .session_timers
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            timers.retain(|id, _| ttls.iter().any(|(i, _)| i == id));
            ttls.into_iter()
                .filter(|(id, ttl)| {
                    *timers
                        .entry(id.clone())
                        .or_insert(now + *ttl * SESSION_TTL_MULTIPLIER)
                        <= now
                })
                .map(|(id, _)| id)
                .collect()
        };
        for id in expired {
            tracing::info!(session = %id, "session TTL expired");
            let reply = self
                .write(Command::SessionDestroy { id: id.clone() }, MAX_HOPS, None)
                .await;
            if reply.answer.is_ok() {
                self.session_timers
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
            }
        }
    }
}

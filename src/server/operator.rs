//! What operators ask of the Raft group (Consul's `/v1/operator/raft/*`
//! and autopilot's health): answered by the leader, from Raft's own view,
//! and the one request a follower answers itself, the election a
//! leadership transfer asks of it.

use std::collections::BTreeMap;
use std::time::Duration;

use openraft::{ChangeMembers, ServerState};

use super::node::Server;
use super::request::{Answer, ClientReply, ClientRequest, OperatorOp, RaftPeer, RaftView};
use crate::env::Env;

/// Elections a transfer to a named server may go through before it gives
/// up (another follower can win each one).
const TRANSFER_TRIES: u8 = 5;

/// How long a server asked about its health has to answer.
const HEALTH_ASK_TIMEOUT: Duration = Duration::from_secs(1);

impl<E: Env> Server<E> {
    /// Answers an operator request: `Elect` here, the rest on the leader.
    pub(super) async fn operator(
        &self,
        op: OperatorOp,
        hops: u8,
        token: Option<&str>,
    ) -> ClientReply {
        if op != OperatorOp::Elect && !self.is_leader() {
            return self
                .to_leader(ClientRequest::Operator { op, hops }, token)
                .await;
        }
        match op {
            OperatorOp::RaftConfiguration => {
                self.answered(Answer::Raft(self.raft_view(false).await))
            }
            OperatorOp::Health => self.answered(Answer::Raft(self.raft_view(true).await)),
            OperatorOp::RemovePeer { id, address } => self.remove_peer(id, address).await,
            OperatorOp::TransferLeader { to, tries } => {
                self.transfer_leader(to, tries, token).await
            }
            OperatorOp::Elect => match self.raft.trigger().elect().await {
                Ok(()) => self.answered(Answer::Written(true)),
                Err(e) => ClientReply::refused(&e.to_string()),
            },
        }
    }

    /// The group as this leader sees it; with `ask`, each server is also
    /// asked how long since it heard from the leader.
    async fn raft_view(&self, ask: bool) -> RaftView {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let matched: BTreeMap<u64, Option<openraft::LogId<u64>>> =
            m.replication.clone().unwrap_or_default();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let mut servers = Vec::new();
        for (id, node) in membership.nodes() {
            let leader = *id == self.id && m.state == ServerState::Leader;
            let last = if leader {
                m.last_log_index.map(|i| (i, m.current_term))
            } else {
                matched
                    .get(id)
                    .copied()
                    .flatten()
                    .map(|l| (l.index, l.leader_id.term))
            };
            let last_contact_ms = match (ask, leader) {
                (_, true) => Some(0),
                (false, false) => None,
                (true, false) => self.ask_last_contact(&node.addr).await,
            };
            servers.push(RaftPeer {
                id: *id,
                address: node.addr.clone(),
                voter: voters.contains(id),
                leader,
                last_index: last.map_or(0, |l| l.0),
                last_term: last.map_or(0, |l| l.1),
                last_contact_ms,
            });
        }
        servers.sort_by_key(|s| (!s.voter, s.id));
        RaftView {
            index: m.membership_config.log_id().map_or(0, |l| l.index),
            term: m.current_term,
            last_index: m.last_log_index.unwrap_or(0),
            servers,
        }
    }

    /// How long since the server at `addr` heard from the leader, as it
    /// says; `None` when it does not answer in time.
    async fn ask_last_contact(&self, addr: &str) -> Option<u64> {
        let addr = addr.parse().ok()?;
        let deadline = self.env.now() + HEALTH_ASK_TIMEOUT;
        let reply = self
            .call_server(addr, ClientRequest::Status, deadline)
            .await
            .ok()?;
        reply.answer.is_ok().then_some(reply.last_contact_ms)
    }

    async fn remove_peer(&self, id: Option<u64>, address: Option<String>) -> ClientReply {
        let m = self.raft.metrics().borrow().clone();
        let membership = m.membership_config.membership();
        let found = membership
            .nodes()
            .find(|(nid, node)| match (&id, &address) {
                (Some(want), _) => *nid == want,
                (None, Some(addr)) => node.addr == *addr,
                (None, None) => false,
            });
        let Some((&target, _)) = found else {
            let what = match (id, address) {
                (Some(id), _) => format!("ID {}", super::member::format_raft_id(id)),
                (None, Some(a)) => format!("address {a:?}"),
                (None, None) => return ClientReply::refused("Must specify either ?id with the server's ID or ?address with IP:port of peer to remove"),
            };
            return ClientReply::refused(&format!(
                "{what} was not found in the Raft configuration"
            ));
        };
        if target == self.id {
            return ClientReply::refused(
                "cannot remove the leader itself; transfer leadership first",
            );
        }
        let change = if membership.voter_ids().any(|v| v == target) {
            ChangeMembers::RemoveVoters([target].into())
        } else {
            ChangeMembers::RemoveNodes([target].into())
        };
        match self.raft.change_membership(change, false).await {
            Ok(_) => self.answered(Answer::Written(true)),
            Err(e) => ClientReply::refused(&format!("cannot remove the server: {e}")),
        }
    }

    /// Hands leadership to `to` (or the most up-to-date other voter): the
    /// leader goes quiet and asks the target to campaign; it answers once
    /// someone else leads. Another follower
    /// whose timer ran out may win that election instead: then the new
    /// leader is asked to hand over in turn (a few times at most), and the
    /// request fails if the server asked for never leads.
    async fn transfer_leader(
        &self,
        to: Option<u64>,
        tries: u8,
        token: Option<&str>,
    ) -> ClientReply {
        let view = self.raft_view(false).await;
        let others = view.servers.iter().filter(|s| s.voter && s.id != self.id);
        let target = match to {
            Some(to) => others.into_iter().find(|s| s.id == to),
            None => others.max_by_key(|s| (s.last_index, std::cmp::Reverse(s.id))),
        };
        let Some(target) = target.cloned() else {
            return ClientReply::refused(&match to {
                Some(id) => format!(
                    "cannot transfer leadership to {}: it is not a voter of the Raft configuration",
                    super::member::format_raft_id(id)
                ),
                None => "cannot transfer leadership: there is no other voter".into(),
            });
        };
        let Ok(addr) = target.address.parse() else {
            return ClientReply::refused("the target's address does not parse");
        };
        let config = self.raft.config().clone();
        let lease = Duration::from_millis(config.election_timeout_max);
        let quiet = Quiet::start(self, target.id);
        // The target campaigns at once, before any other follower's timer
        // runs out: this leader's vote is its to take. Asked again every
        // few heartbeats, until the other followers' leases run out and
        // they vote too (a larger group needs them).
        let me = self.id;
        let retry = Duration::from_millis(config.heartbeat_interval * 4);
        let until = self.env.now() + lease * 4;
        let (mut moved, mut asked) = (None, Ok(()));
        while moved.is_none() && self.env.now() < until {
            let deadline = self.env.now() + HEALTH_ASK_TIMEOUT;
            let mut elect = ClientRequest::Operator {
                op: OperatorOp::Elect,
                hops: 0,
            };
            // With ACLs on, the target checks the operator's token as the
            // leader did: a request without one is the anonymous token's.
            if let Some(t) = token {
                elect = elect.with_token(t);
            }
            asked = match self.call_server(addr, elect, deadline).await {
                Ok(reply) => reply.answer.map(drop),
                Err(e) => Err(e.to_string()),
            };
            moved = self
                .raft
                .wait(Some(retry))
                .metrics(
                    |m| m.current_leader.is_some_and(|l| l != me),
                    "another leader",
                )
                .await
                .ok();
        }
        drop(quiet);
        match (moved, asked) {
            (Some(m), _) if to.is_some() && m.current_leader != to => {
                if tries + 1 >= TRANSFER_TRIES {
                    return ClientReply::refused(
                        "leadership moved, but another server won the election; try again",
                    );
                }
                let again = ClientRequest::Operator {
                    op: OperatorOp::TransferLeader {
                        to,
                        tries: tries + 1,
                    },
                    hops: 0,
                };
                self.forward(again, token).await
            }
            (Some(_), _) => self.answered(Answer::Written(true)),
            (None, Err(e)) => ClientReply::refused(&format!("the target did not campaign: {e}")),
            (None, Ok(())) => {
                ClientReply::refused("leadership did not move in time; this server still leads")
            }
        }
    }
}

/// A leader gone quiet for a transfer to another server: no heartbeats,
/// no elections of its own, no vote for anyone but the target. Dropping it
/// ends the quiet, however the transfer ends (a cancelled request too).
struct Quiet<'s, E: Env>(&'s Server<E>);

impl<'s, E: Env> Quiet<'s, E> {
    fn start(server: &'s Server<E>, target: u64) -> Self {
        server.raft.runtime_config().heartbeat(false);
        server.raft.runtime_config().elect(false);
        *server.transfer_to.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
        Quiet(server)
    }
}

impl<E: Env> Drop for Quiet<'_, E> {
    fn drop(&mut self) {
        *self.0.transfer_to.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.0.raft.runtime_config().heartbeat(true);
        self.0.raft.runtime_config().elect(true);
    }
}

//! Raft's messages over cairn's [RPC](crate::rpc): a client per peer for
//! openraft to call, and a server that hands incoming calls to the local
//! Raft node.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, LeaderId, Raft};
use serde::{Deserialize, Serialize};

use super::{LogStore, TypeConfig};
use crate::env::{Env, Task};
use crate::rpc::{self, Client, RpcError};
use crate::time::Instant;

type NodeId = u64;

/// A Raft message from one server to another.
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftRequest {
    /// Log replication and heartbeats.
    Append(AppendEntriesRequest<TypeConfig>),
    /// A candidate asking for a vote.
    Vote(VoteRequest<NodeId>),
    /// A chunk of a snapshot for a lagging follower.
    Snapshot(InstallSnapshotRequest<TypeConfig>),
    /// Log entries `from..=to`, for a server mending its damaged log
    /// before its Raft starts (see [`mend`](super::mend)).
    Entries {
        /// The first index.
        from: u64,
        /// The last index.
        to: u64,
    },
}

/// The answer to a [`RaftRequest`].
#[derive(Debug, Serialize, Deserialize)]
pub enum RaftReply {
    /// To `Append`.
    Append(Result<AppendEntriesResponse<NodeId>, RaftError<NodeId>>),
    /// To `Vote`.
    Vote(Result<VoteResponse<NodeId>, RaftError<NodeId>>),
    /// To `Snapshot`.
    Snapshot(Result<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>>),
    /// To `Entries`: the whole entries held, contiguous from `from` (none
    /// if the first is not held whole).
    Entries(Vec<openraft::Entry<TypeConfig>>),
}

/// How Raft messages reach another server: straight over an RPC
/// connection of their own ([`Client`] of [`RaftRequest`]s), or inside a
/// server's wider RPC protocol, which carries client requests too.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` to `addr` and waits for the reply until `deadline`.
    fn send(
        &self,
        addr: SocketAddr,
        req: RaftRequest,
        deadline: Instant,
    ) -> impl std::future::Future<Output = Result<RaftReply, RpcError>> + Send;
}

impl<E: Env> Transport for Client<E, RaftRequest, RaftReply> {
    async fn send(
        &self,
        addr: SocketAddr,
        req: RaftRequest,
        deadline: Instant,
    ) -> Result<RaftReply, RpcError> {
        self.call(addr, &req, deadline).await
    }
}

/// When each follower last acknowledged this server as leader: the time
/// the append it answered was sent, under which leadership.
///
/// A leader's lease (reads answered from its own state) holds while a
/// quorum acknowledged it within the lease, judged on the clock when the
/// read is served. openraft reports that age in its metrics, but as of the
/// moment they were published: a leader frozen for seconds (a GC pause, a
/// stopped VM) wakes with metrics that still say "acknowledged a moment
/// ago" while a newer leader has taken over, and would answer a read from
/// a state that is no longer current. These times are absolute, so the
/// age is right whenever it is asked.
#[derive(Debug, Clone, Default)]
pub struct Acks(Arc<Mutex<HashMap<NodeId, Ack>>>);

/// Under which leadership a follower last acknowledged, and when that
/// append was sent.
type Ack = (LeaderId<NodeId>, Instant);

impl Acks {
    /// `follower` answered an append of `leader`'s sent at `sent`.
    fn record(&self, follower: NodeId, leader: LeaderId<NodeId>, sent: Instant) {
        let mut acks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let e = acks.entry(follower).or_insert((leader, sent));
        // Answers arrive out of order; a later leadership starts afresh.
        if e.0 != leader || e.1 < sent {
            *e = (leader, sent);
        }
    }

    /// Since when a majority of every configuration in `voters` (two while
    /// membership changes) acknowledged `me` leading as `leader`, counting
    /// `me` as acknowledging at `now`; `None` if they never did.
    pub fn quorum_since(
        &self,
        me: NodeId,
        leader: &LeaderId<NodeId>,
        voters: &[BTreeSet<NodeId>],
        now: Instant,
    ) -> Option<Instant> {
        let acks = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let mut since: Option<Instant> = None;
        for config in voters {
            let mut times: Vec<Instant> = config
                .iter()
                .filter_map(|id| match acks.get(id) {
                    _ if *id == me => Some(now),
                    Some((l, at)) if l == leader => Some(*at),
                    _ => None,
                })
                .collect();
            let majority = config.len() / 2 + 1;
            if times.len() < majority {
                return None;
            }
            times.sort_unstable_by(|a, b| b.cmp(a));
            let t = times[majority - 1];
            since = Some(since.map_or(t, |s| s.min(t)));
        }
        since
    }
}

/// Makes a [`Peer`] for each server openraft talks to; they share one
/// transport (one connection per server).
pub struct Network<E: Env, T: Transport = Client<E, RaftRequest, RaftReply>> {
    transport: Arc<T>,
    env: E,
    acks: Acks,
}

impl<E: Env> Network<E> {
    /// A network of its own RPC connections, through `env`.
    pub fn new(env: E) -> Self {
        Network::over(env.clone(), Arc::new(Client::new(env)))
    }
}

impl<E: Env, T: Transport> Network<E, T> {
    /// A network over `transport`.
    pub fn over(env: E, transport: Arc<T>) -> Self {
        Network {
            transport,
            env,
            acks: Acks::default(),
        }
    }

    /// The acknowledgements of this server's leadership its peers record.
    pub fn acks(&self) -> Acks {
        self.acks.clone()
    }
}

impl<E: Env, T: Transport> RaftNetworkFactory<TypeConfig> for Network<E, T> {
    type Network = Peer<E, T>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            transport: self.transport.clone(),
            env: self.env.clone(),
            acks: self.acks.clone(),
            target,
            addr: node
                .addr
                .parse()
                .map_err(|e: std::net::AddrParseError| e.to_string()),
        }
    }
}

/// The way to one server.
pub struct Peer<E: Env, T: Transport> {
    transport: Arc<T>,
    env: E,
    acks: Acks,
    target: NodeId,
    /// Its RPC address, or why the membership's address is unusable.
    addr: Result<SocketAddr, String>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Message(String);

impl<E: Env, T: Transport> Peer<E, T> {
    async fn call<Err: std::error::Error>(
        &self,
        req: RaftRequest,
        option: &RPCOption,
    ) -> Result<RaftReply, RPCError<NodeId, BasicNode, Err>> {
        let addr = match &self.addr {
            Ok(a) => *a,
            Err(e) => {
                let why = Message(format!(
                    "server {} has an unusable address: {e}",
                    self.target
                ));
                return Err(RPCError::Unreachable(Unreachable::new(&why)));
            }
        };
        let deadline = self.env.now() + option.hard_ttl();
        self.transport
            .send(addr, req, deadline)
            .await
            .map_err(|e| match e {
                RpcError::Connect { .. } => RPCError::Unreachable(Unreachable::new(&e)),
                e => RPCError::Network(NetworkError::new(&e)),
            })
    }

    fn unexpected<Err: std::error::Error>() -> RPCError<NodeId, BasicNode, Err> {
        RPCError::Network(NetworkError::new(&Message(
            "the peer answered another kind of request".into(),
        )))
    }
}

impl<E: Env, T: Transport> RaftNetwork<TypeConfig> for Peer<E, T> {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        let (leader, sent) = (*rpc.vote.leader_id(), self.env.now());
        match self.call(RaftRequest::Append(rpc), &option).await? {
            RaftReply::Append(r) => {
                // Any answer but a higher vote accepts this leadership.
                if matches!(&r, Ok(a) if !matches!(a, AppendEntriesResponse::HigherVote(_))) {
                    self.acks.record(self.target, leader, sent);
                }
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        match self.call(RaftRequest::Snapshot(rpc), &option).await? {
            RaftReply::Snapshot(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        match self.call(RaftRequest::Vote(rpc), &option).await? {
            RaftReply::Vote(r) => {
                r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
            }
            _ => Err(Self::unexpected()),
        }
    }
}

/// Answers Raft RPCs on `listener` with the local node `raft`, whose
/// log is `log`.
pub fn serve<E: Env>(
    env: E,
    listener: E::TcpListener,
    raft: Raft<TypeConfig>,
    log: LogStore,
) -> Task {
    rpc::serve(env, listener, move |req: RaftRequest| {
        let (raft, log) = (raft.clone(), log.clone());
        async move { answer(&raft, &log, req).await }
    })
}

/// The local node's answer to a Raft message.
pub async fn answer(raft: &Raft<TypeConfig>, log: &LogStore, req: RaftRequest) -> RaftReply {
    match req {
        RaftRequest::Append(r) => RaftReply::Append(raft.append_entries(r).await),
        RaftRequest::Vote(r) => RaftReply::Vote(raft.vote(r).await),
        RaftRequest::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
        RaftRequest::Entries { from, to } => RaftReply::Entries(log.lend(from, to)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> Instant {
        Instant::from_duration(Duration::from_millis(ms))
    }

    fn set(ids: &[NodeId]) -> Vec<BTreeSet<NodeId>> {
        vec![ids.iter().copied().collect()]
    }

    #[test]
    fn a_quorum_counts_the_leader_now_and_the_newest_follower_sends() {
        let acks = Acks::default();
        let term5 = LeaderId::new(5, 1);
        // Answers arrive out of order; the later send counts.
        acks.record(2, term5, at(100));
        acks.record(2, term5, at(40));
        acks.record(3, term5, at(70));
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            acks.quorum_since(1, &term5, &voters, at(500)),
            Some(at(100))
        );
        // Five voters need three: the leader, then 100, then 70.
        let five = set(&[1, 2, 3, 4, 5]);
        assert_eq!(acks.quorum_since(1, &term5, &five, at(500)), Some(at(70)));
        // Alone, a single voter is its own quorum.
        assert_eq!(acks.quorum_since(1, &term5, &set(&[1]), at(9)), Some(at(9)));
    }

    #[test]
    fn acks_of_another_leadership_do_not_count() {
        let acks = Acks::default();
        acks.record(2, LeaderId::new(4, 1), at(100));
        acks.record(3, LeaderId::new(4, 1), at(100));
        let voters = set(&[1, 2, 3]);
        assert_eq!(
            acks.quorum_since(1, &LeaderId::new(5, 1), &voters, at(200)),
            None
        );
        // A newer leadership replaces the old acknowledgement.
        acks.record(2, LeaderId::new(5, 1), at(150));
        assert_eq!(
            acks.quorum_since(1, &LeaderId::new(5, 1), &voters, at(200)),
            Some(at(150))
        );
    }

    #[test]
    fn while_membership_changes_both_configurations_need_a_quorum() {
        let acks = Acks::default();
        let l = LeaderId::new(2, 1);
        acks.record(2, l, at(100));
        acks.record(4, l, at(60));
        let joint = vec![
            [1, 2, 3].into_iter().collect(),
            [1, 4, 5].into_iter().collect(),
        ];
        assert_eq!(acks.quorum_since(1, &l, &joint, at(300)), Some(at(60)));
        let old_only = vec![
            [1, 2, 3].into_iter().collect(),
            [4, 5, 6].into_iter().collect(),
        ];
        assert_eq!(acks.quorum_since(1, &l, &old_only, at(300)), None);
    }
}

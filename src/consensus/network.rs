//! Raft's messages over cairn's [RPC](crate::rpc): a client per peer for
//! openraft to call, and a server that hands incoming calls to the local
//! Raft node.

use std::net::SocketAddr;
use std::sync::Arc;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::{Deserialize, Serialize};

use super::TypeConfig;
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

/// Makes a [`Peer`] for each server openraft talks to; they share one
/// transport (one connection per server).
pub struct Network<E: Env, T: Transport = Client<E, RaftRequest, RaftReply>> {
    transport: Arc<T>,
    env: E,
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
        Network { transport, env }
    }
}

impl<E: Env, T: Transport> RaftNetworkFactory<TypeConfig> for Network<E, T> {
    type Network = Peer<E, T>;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Peer {
            transport: self.transport.clone(),
            env: self.env.clone(),
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
        match self.call(RaftRequest::Append(rpc), &option).await? {
            RaftReply::Append(r) => {
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

/// Answers Raft RPCs on `listener` with the local node `raft`.
pub fn serve<E: Env>(env: E, listener: E::TcpListener, raft: Raft<TypeConfig>) -> Task {
    rpc::serve(env, listener, move |req: RaftRequest| {
        let raft = raft.clone();
        async move { answer(&raft, req).await }
    })
}

/// The local node's answer to a Raft message.
pub async fn answer(raft: &Raft<TypeConfig>, req: RaftRequest) -> RaftReply {
    match req {
        RaftRequest::Append(r) => RaftReply::Append(raft.append_entries(r).await),
        RaftRequest::Vote(r) => RaftReply::Vote(raft.vote(r).await),
        RaftRequest::Snapshot(r) => RaftReply::Snapshot(raft.install_snapshot(r).await),
    }
}

//! What the servers do besides replicating: the leader's duties.

pub(crate) mod acl;
pub mod cluster;
pub mod node;
pub mod reconcile;

pub use cluster::{raft_id, server_of, server_tags, DutyConfig, ServerMember, SERVER_ROLE};
pub use node::{
    Answer, CaOp, ClientReply, ClientRequest, Consistency, Instance, Query, Read, RpcTls, Server,
    ServerReply, ServerRpc, StartError, CSR_RATE_LIMITED,
};
pub use reconcile::{reconcile, SERF_CHECK};

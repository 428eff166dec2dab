//! What the servers do besides replicating: the leader's duties.

pub(crate) mod acl;
pub mod cluster;
pub mod member;
pub mod node;
pub mod reconcile;
pub mod request;

pub use cluster::DutyConfig;
pub use member::{raft_id, server_of, server_tags, ServerMember, SERVER_ROLE};
pub use node::{Server, StartError, CSR_RATE_LIMITED};
pub use reconcile::{reconcile, SERF_CHECK};
pub use request::{
    Answer, CaOp, ClientReply, ClientRequest, Consistency, Instance, Query, Read, RpcTls,
    ServerReply, ServerRpc,
};

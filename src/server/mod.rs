//! What the servers do besides replicating: the leader's duties.

pub mod node;
pub mod reconcile;

pub use node::{
    Answer, ClientReply, ClientRequest, Consistency, Query, Read, Server, ServerReply, ServerRpc,
    StartError,
};
pub use reconcile::{reconcile, SERF_CHECK};

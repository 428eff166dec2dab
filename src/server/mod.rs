//! A cairn server: the Raft node that keeps the catalog, and the duties
//! of its leader.
//!
//! - [`request`]: the RPC vocabulary agents speak to servers (requests,
//!   queries, answers).
//! - [`node`]: a running [`Server`]: start-up, the RPC port, ACL checks
//!   and forwarding to the leader. Beside it, by concern: `write` (writes,
//!   coordinates, sessions) over `batch` (group commit), `read` (reads and
//!   blocking queries), `operator` (Raft's configuration, peers,
//!   leadership transfer and health), `ca` (the Connect CA, with `csr`'s rate limit) and
//!   `wan` (other datacenters).
//! - `acl`: what a token may do with each request, and the
//!   ACL bootstrap the leader writes.
//! - [`cluster`], `reconcile`, [`member`]: the leader's duties (forming
//!   the Raft group from gossip, keeping the catalog in step with the
//!   LAN pool) and how servers find each other in gossip.

pub(crate) mod acl;
mod batch;
mod ca;
pub mod cluster;
mod csr;
mod join;
mod login;
pub mod member;
pub mod node;
mod operator;
mod read;
pub mod reconcile;
mod remote_acl;
mod replication;
pub mod request;
mod wan;
mod write;

pub use cluster::DutyConfig;
pub use csr::CSR_RATE_LIMITED;
pub use member::{format_raft_id, raft_id, server_of, server_tags, ServerMember, SERVER_ROLE};
pub use node::{Server, StartError};
pub use reconcile::{reconcile, SERF_CHECK};
pub use request::{
    Answer, CaOp, ClientReply, ClientRequest, Consistency, Instance, OperatorOp, Query, RaftPeer,
    RaftView, Read, RpcTls, ServerReply, ServerRpc,
};

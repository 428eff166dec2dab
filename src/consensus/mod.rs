//! Consensus: the servers' Raft group, on openraft. Its log entries are
//! state-store [`Command`]s stamped with the leader's clock; its state
//! machine is the [`Store`](crate::state::Store); its log, vote and snapshots live in a redb
//! file in the server's data directory ([`storage`]).

mod disk;
pub mod mend;
pub mod network;
pub mod records;
pub mod runtime;
mod state_machine;
pub mod storage;
mod tail;

use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::state::{Command, StateError};

pub use disk::{CrashLoss, MemoryDisk};
pub use network::{Acks, Network, RaftReply, RaftRequest};
pub use records::{Recovering, Rot};
pub use state_machine::StateMachine;
pub use storage::{open, open_in_memory, open_on, Location, LogStore, StorageOpenError};

/// A log entry's payload: a change to the store, and when the leader
/// proposed it (milliseconds of its wall clock; lock delays are measured
/// from it, the same on every replica).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// Leader's wall clock at proposal, ms since the Unix epoch.
    pub at_ms: u64,
    /// The change.
    pub cmd: Command,
}

/// What applying a [`Request`] gave, one result per command (a
/// [`Command::Batch`](crate::state::Command::Batch) has several):
/// `Applied::Done(false)` for an expected refusal (a failed check-and-set),
/// `Err` for an invalid request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Response(pub Vec<Result<crate::state::Applied, StateError>>);

openraft::declare_raft_types!(
    /// cairn's Raft types: node IDs are numbers, nodes carry their RPC
    /// address, snapshots are the store's serialised bytes, and randomness
    /// is seeded ([`runtime`]).
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = openraft::BasicNode,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = runtime::CairnRuntime,
);

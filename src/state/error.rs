//! Why the store refuses a command: below every table, so that each can
//! say it.

use serde::{Deserialize, Serialize};

/// Why a command was refused. A refused command changes nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
pub enum StateError {
    /// A request that names something missing or says something invalid.
    #[error("{0}")]
    Invalid(String),
    /// A snapshot that cannot be read.
    #[error("unreadable snapshot: {0}")]
    Snapshot(String),
}

pub(super) fn invalid(msg: impl Into<String>) -> StateError {
    StateError::Invalid(msg.into())
}

//! What the servers do besides replicating: the leader's duties.

pub mod reconcile;

pub use reconcile::{reconcile, SERF_CHECK};

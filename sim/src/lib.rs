//! cairn-sim: the deterministic multi-datacenter simulator.
//!
//! Real cairn agents run as turmoil hosts on a [`SimEnv`]; a
//! timed schedule injects faults; every membership change is recorded with
//! its virtual time. Same scenario and seed, same trace, byte for byte.

#![warn(missing_docs)]

pub mod checks;
pub mod cluster;
pub mod env;
pub mod output;
pub mod plot;
pub mod scenario;
pub mod tomography;
pub mod trace;

pub use cluster::{
    run_cluster, Accuracy, Action, ClusterSpec, PairRtts, RunOutput, SimError, TimedAction,
};
pub use env::{NetConditions, SimEnv};
pub use trace::{Recorder, Trace, TraceEvent};

//! cairn-sim: the deterministic multi-datacenter simulator.
//!
//! Real cairn agents run on a [`SimEnv`] over cairn's own simulated
//! network ([`net`]), placed in
//! datacenters on measured geography ([`topology`]); a timed schedule
//! injects faults; every membership change is recorded with its virtual
//! time. Same scenario and seed, same trace, byte for byte.
//!
//! ```no_run
//! use cairn_sim::scenario::Scenario;
//! let s = Scenario::load(std::path::Path::new("scenarios/lan-basic.toml")).unwrap();
//! let report = s.run(s.seed).unwrap();
//! assert!(report.passed());
//! ```

#![warn(missing_docs)]

pub mod action;
pub mod checks;
pub mod cluster;
pub mod consensus_checks;
pub mod env;
pub mod federation;
mod host;
pub mod linearizability;
pub mod mesh;
pub mod metrics;
pub mod net;
pub mod output;
pub mod plot;
pub mod protocol;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod select;
pub mod services;
pub mod spread;
pub mod sweep;
pub mod tomography;
pub mod topology;
pub mod trace;
pub mod verdict;
pub mod workload;

pub use cluster::{
    run_cluster, Action, ClusterSpec, LatencyChange, NodeSample, NodeStatus, RunOutput, SimError,
    TimedAction,
};
pub use env::SimEnv;
pub use report::Report;
pub use scenario::{Check, Scenario, ScenarioBuilder};
pub use tomography::{Accuracy, PairError};
pub use trace::{Recorder, Trace, TraceEvent};

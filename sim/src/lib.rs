//! cairn-sim: the deterministic multi-datacenter simulator.
//!
//! Real cairn agents run on a [`SimEnv`] over cairn's own simulated
//! network ([`net`]), placed in datacenters on measured geography
//! ([`net::topology`]); a timed schedule injects faults; every membership
//! change is recorded with its virtual time. Same scenario and seed, same
//! trace, byte for byte.
//!
//! ```no_run
//! use cairn_sim::scenario::Scenario;
//! let s = Scenario::load(std::path::Path::new("scenarios/lan-basic.toml")).unwrap();
//! let report = s.run(s.seed).unwrap();
//! assert!(report.passed());
//! ```
//!
//! # Layout
//!
//! The crate is laid out by mechanism, and its files import one way: each
//! depends only on files below it (`cargo run -p cairn-imports -- sim/src`
//! holds that).
//!
//! - The floor, vocabulary that owns no feature: [`action`] (a timeline's
//!   actions), [`verdict`] (what a check says; when nodes were
//!   unreachable), [`seed`] (deriving every seed from the run's).
//! - [`net`]: the network model both engines share, the full engine's
//!   sockets over it, and the [`net::topology`] it realizes.
//! - [`engine`]: [`engine::full`] runs real agents (with the drivers of
//!   services, Connect, prepared queries and KV load beside it);
//!   [`engine::protocol`] runs gossip state machines alone, for 10,000
//!   nodes and more. Both return an [`engine::RunOutput`].
//! - [`scenario`]: scenario files, their parsers and node selectors, and
//!   [`ScenarioBuilder`].
//! - [`checks`]: judging a finished run against the scenario's checks.
//! - [`output`]: the trace, metrics, spread curves, charts and the files a
//!   run writes.
//! - [`tomography`]: coordinate accuracy, in runs and offline on measured
//!   matrices.
//! - On top: [`report`] (one run of a scenario, judged) and [`sweep`] (many
//!   seeds, across cores and machines).

#![warn(missing_docs)]

pub mod action;
pub mod chaos;
pub mod checks;
pub mod engine;
pub mod net;
pub mod output;
pub mod report;
pub mod scenario;
pub mod seed;
pub mod shrink;
pub mod sweep;
pub mod tomography;
pub mod verdict;

pub use action::{Action, LatencyChange, NodeStatus, TimedAction};
pub use engine::full::env::SimEnv;
pub use engine::full::{run_cluster, ClusterSpec};
pub use engine::{NodeSample, RunOutput, SimError};
pub use output::trace::{Recorder, Trace, TraceEvent};
pub use report::Report;
pub use scenario::{Check, Scenario, ScenarioBuilder};
pub use tomography::{Accuracy, PairError};

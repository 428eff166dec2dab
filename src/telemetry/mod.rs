//! What the agent reports about itself, under Consul's names: the
//! metrics registry the servers count into ([`registry`]), the process's
//! own gauges ([`process`]), and the live log stream behind
//! `/v1/agent/monitor` ([`monitor`]).
//!
//! The registry is a value handed to the code that counts (a server owns
//! one), so agents sharing a process, as in the simulator and in tests,
//! each count their own. The log stream is the process's: it is a layer of
//! the `tracing` subscriber the `cairn` binary installs, and absent
//! wherever no such subscriber was set up.

pub mod monitor;
pub mod process;
pub mod registry;

pub use registry::{Aggregate, Registry, Snapshot};

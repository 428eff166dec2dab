//! Running a scenario: [`Scenario::run`] and the [`Report`] it returns.

use std::time::{Duration, Instant};

use crate::action::TimedAction;
use crate::checks::evaluate;
use crate::engine::full::run_cluster;
use crate::engine::protocol::{run_protocol, Sampling};
use crate::engine::{RunOutput, SimError};
use crate::scenario::{Engine, Scenario, Start, MAX_FULL_NODES};
use crate::verdict::CheckResult;

/// Everything one run of a scenario produced.
#[derive(Debug, Clone)]
pub struct Report {
    /// The seed of this run.
    pub seed: u64,
    /// The engine that ran it.
    pub engine: Engine,
    /// The timeline as it took effect, every selector resolved for this
    /// seed (what the checks judge).
    pub timeline: Vec<TimedAction>,
    /// Trace, samples and scores.
    pub output: RunOutput,
    /// Each check's outcome.
    pub checks: Vec<CheckResult>,
    /// Wall-clock time the run took.
    pub wall: Duration,
}

impl Report {
    /// Whether every check held.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
    }

    /// The checks that failed, as written.
    pub fn failed(&self) -> Vec<String> {
        self.checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| c.check.clone())
            .collect()
    }

    /// The run's fingerprint: SHA-256 of its trace.
    pub fn trace_hash(&self) -> String {
        self.output.trace.hash()
    }

    /// Virtual seconds simulated per wall-clock second.
    pub fn speed(&self) -> f64 {
        let w = self.wall.as_secs_f64();
        if w > 0.0 {
            self.output.virtual_time.as_secs_f64() / w
        } else {
            0.0
        }
    }
}

impl Scenario {
    /// Runs the scenario with `seed` on its engine and evaluates its checks.
    pub fn run(&self, seed: u64) -> Result<Report, SimError> {
        self.run_with(self.engine, seed, |_| {})
    }

    /// Runs the scenario with `seed` on `engine`, telling `progress` the
    /// virtual time once per simulated second.
    pub fn run_with(
        &self,
        engine: Engine,
        seed: u64,
        progress: impl FnMut(Duration),
    ) -> Result<Report, SimError> {
        let timeline = self
            .timeline(seed)
            .map_err(|e| SimError::Setup(e.to_string()))?;
        let started = Instant::now();
        let output = match engine {
            Engine::Full => {
                let n = self.topology.nodes.len();
                if n > MAX_FULL_NODES {
                    return Err(SimError::Setup(format!(
                        "{n} nodes is more than the full engine's {MAX_FULL_NODES} (each runs a whole agent): run it with --engine protocol"
                    )));
                }
                if !self.codec {
                    return Err(SimError::Setup(
                        "the full engine runs real sockets, which carry bytes: skipping the codec (codec = false, --no-codec) is the protocol engine's".into(),
                    ));
                }
                if self.start == Start::Converged {
                    return Err(SimError::Setup(
                        "start = \"converged\" is the protocol engine's: run it with --engine protocol, or start cold".into(),
                    ));
                }
                let spec = self
                    .cluster(seed)
                    .map_err(|e| SimError::Setup(e.to_string()))?;
                run_cluster(&spec, &timeline, progress)?
            }
            Engine::Protocol => run_protocol(self, seed, &timeline, Sampling::default(), progress)?,
        };
        let wall = started.elapsed();
        let checks = evaluate(self, &output.applied, &output);
        Ok(Report {
            seed,
            engine,
            timeline: output.applied.clone(),
            output,
            checks,
            wall,
        })
    }
}

//! How well coordinates predict round-trip times in a run: the accuracy
//! of every scored pair at one moment ([`Accuracy`]) and each pair scored
//! at the end ([`PairError`]). Both engines measure these each virtual
//! second; the checks judge them and `output/` charts them.

use std::time::Duration;

/// How well coordinates predicted the model's RTTs at one moment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Accuracy {
    /// Virtual time.
    pub at: Duration,
    /// Pairs scored (both nodes running, in one pool, with a coordinate).
    pub pairs: usize,
    /// Median relative error.
    pub median: f64,
    /// 90th percentile of the relative error.
    pub p90: f64,
    /// 99th percentile of the relative error.
    pub p99: f64,
    /// Mean absolute error, milliseconds.
    pub mean_abs_ms: f64,
}

/// One scored pair at the end of the run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairError {
    /// Node indices, `a < b`.
    pub a: usize,
    /// Second node.
    pub b: usize,
    /// The model's RTT, ms.
    pub true_ms: f64,
    /// The coordinates' estimate, ms.
    pub est_ms: f64,
}

impl PairError {
    /// |estimate - truth| / truth.
    pub fn rel(&self) -> f64 {
        (self.est_ms - self.true_ms).abs() / self.true_ms
    }
}

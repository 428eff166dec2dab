//! Network coordinates: estimate the round-trip time between any two nodes
//! from coordinates they learn by measuring a few peers (Vivaldi).
//!
//! Pure: no clock, no I/O. A [`Client`] is fed (peer, peer's coordinate,
//! measured RTT) and keeps its own coordinate; any two coordinates give an
//! RTT estimate by [`Coordinate::distance_to`].
//!
//! Two algorithms share the client. [`Config::serf`] is HashiCorp Serf's
//! Vivaldi (the one Consul uses), reproduced to compare against honestly.
//! [`Config::default`] is cairn's, which keeps Serf's model (Euclidean vector
//! plus height plus adjustment) and changes how observations move it, where
//! Serf's estimates fail on measured Internet latencies:
//!
//! * **Spikes.** A measurement far above the current estimate is clipped
//!   (delay only ever inflates an RTT). Serf relies on a per-peer median of 3,
//!   which never engages when peers are sampled at random from hundreds, so
//!   one 10x spike throws a coordinate across the map.
//! * **Jitter.** Every measurement carries noise, and single-sample updates
//!   turn it into coordinate jitter; nearby nodes jittering in random
//!   directions look far apart, so short links are grossly overestimated
//!   (Serf: +100 % and more below 20 ms). cairn moves on the mean force over
//!   its last few samples (mini-batch instead of single-sample descent), and
//!   estimates with a smoothed copy of the coordinate, smoothed only once the
//!   node is confident, so convergence is not slowed.
//!
//! Measured on the PlanetLab and WonderProxy matrices (200 rounds, the Serf
//! harness's observation streams): median error 0.6x and 90th percentile
//! 0.45x Serf's; see `cairn-sim tomography`.

mod client;
mod payload;
#[cfg(test)]
mod tests;

use std::fmt;
use std::time::Duration;

pub use client::{Client, ClientStats, UpdateError};
pub use payload::{
    decode_ping_payload, encode_ping_payload, PayloadError, PingPayload, PING_PAYLOAD_VERSION,
};

/// Values below this (seconds) count as zero, as in Serf.
pub(crate) const ZERO_THRESHOLD: f64 = 1.0e-6;

/// A point in the latency space: a Euclidean vector plus a height (the
/// node's access-link latency) and an adjustment (a per-node offset), all in
/// seconds, and the node's own estimate of its relative error.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Coordinate {
    /// Euclidean part, one entry per dimension (seconds).
    pub vec: Vec<f64>,
    /// Estimated relative error of this coordinate (confidence).
    pub error: f64,
    /// Per-node offset added to distances (seconds; may be negative).
    pub adjustment: f64,
    /// Access-link latency above the Euclidean space (seconds, >= minimum).
    pub height: f64,
}

impl Coordinate {
    /// The origin with maximal error, as every node starts.
    pub fn origin(cfg: &Config) -> Self {
        Coordinate {
            vec: vec![0.0; cfg.dimensionality],
            error: cfg.error_max,
            adjustment: 0.0,
            height: cfg.height_min,
        }
    }

    /// Whether every component is finite.
    pub fn is_valid(&self) -> bool {
        self.vec.iter().all(|v| v.is_finite())
            && self.error.is_finite()
            && self.adjustment.is_finite()
            && self.height.is_finite()
    }

    /// Whether `other` has the same dimensionality.
    pub fn is_compatible_with(&self, other: &Coordinate) -> bool {
        self.vec.len() == other.vec.len()
    }

    /// Euclidean distance plus both heights (seconds), without adjustments.
    pub fn raw_distance(&self, other: &Coordinate) -> f64 {
        euclid(&self.vec, &other.vec) + self.height + other.height
    }

    /// The estimated RTT in seconds: raw distance plus both adjustments,
    /// unless that would not be positive (then the raw distance).
    pub fn distance_secs(&self, other: &Coordinate) -> f64 {
        let raw = self.raw_distance(other);
        let adjusted = raw + self.adjustment + other.adjustment;
        if adjusted > 0.0 {
            adjusted
        } else {
            raw
        }
    }

    /// The estimated RTT to `other` (zero for incompatible or invalid input).
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        if !self.is_compatible_with(other) {
            return Duration::ZERO;
        }
        let s = self.distance_secs(other);
        if s.is_finite() && s > 0.0 {
            Duration::from_secs_f64(s.min(1.0e9))
        } else {
            Duration::ZERO
        }
    }
}

impl fmt::Display for Coordinate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "vec={:?} height={:.6}s adjustment={:.6}s error={:.3}",
            self.vec, self.height, self.adjustment, self.error
        )
    }
}

pub(crate) fn euclid(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y) * (x - y))
        .sum::<f64>()
        .sqrt()
}

/// Clipping of measurements far above the current estimate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SpikeClip {
    /// Largest ratio of measured to estimated RTT taken at face value by a
    /// fully confident node.
    pub base: f64,
    /// The ratio widens by this much per unit of the node's error estimate,
    /// so an unsure node (far from its place) still moves quickly.
    pub error_scale: f64,
}

/// Smoothing of the coordinate used for estimates.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Smoothing {
    /// Weight of each new position once the node is confident.
    pub weight: f64,
    /// The weight is at least `(error / error_max) ^ confidence_power`, so
    /// an unsure node's estimate follows it at once.
    pub confidence_power: f64,
}

/// Tuning of the Vivaldi client. The first block is Serf's configuration;
/// the rest are cairn's changes, all off in [`Config::serf`].
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Dimensions of the Euclidean part (Serf: 8).
    pub dimensionality: usize,
    /// Error estimate of a fresh coordinate, and its cap (Serf: 1.5).
    pub error_max: f64,
    /// Error-update gain (Serf: 0.25).
    pub ce: f64,
    /// Position-update gain (Serf: 0.25).
    pub cc: f64,
    /// Samples the adjustment averages over; 0 disables it (Serf: 20).
    pub adjustment_window: usize,
    /// Smallest height, seconds (Serf: 10 µs).
    pub height_min: f64,
    /// Samples per peer in the latency filter (median); 1 disables it (Serf: 3).
    pub latency_filter: usize,
    /// Gravity toward the origin: force -(d/rho)^2 (Serf: 150).
    pub gravity_rho: f64,
    /// Recent samples (peer coordinate and RTT) the force is averaged over;
    /// 1 moves on the newest sample alone (Serf).
    pub window: usize,
    /// Clipping of spikes (Serf: none).
    pub spike_clip: Option<SpikeClip>,
    /// Smoothing of the estimate coordinate (Serf: none, estimates use the
    /// coordinate itself).
    pub smoothing: Option<Smoothing>,
    /// Samples of the window weigh `1 / rtt ^ this` in the force (0: all
    /// alike). Above 0, short links count for more than long ones, as
    /// relative error does: a long link's noise moves a node less.
    pub relative_weight: f64,
    /// The adjustment is half the median residual of its window (Serf:
    /// the mean), and the force pulls the vectors and heights toward the
    /// measured RTT without it (Serf: with it). Serf's way gives the
    /// adjustments and the vectors a direction to drift in together:
    /// adjustments grow while the vectors shrink, which leaves long pairs
    /// nearly as they were and makes short ones far too long (under the
    /// mini-batch window, 6 times in a 3x3 pool after 100 samples a node).
    /// And the mean takes in the residuals of hosts the space cannot fit
    /// (a bufferbloated host's), and adds them to every pair of the node.
    pub robust_adjustment: bool,
}

impl Config {
    /// HashiCorp Serf's `DefaultConfig()`, unchanged.
    pub fn serf() -> Self {
        Config {
            dimensionality: 8,
            error_max: 1.5,
            ce: 0.25,
            cc: 0.25,
            adjustment_window: 20,
            height_min: 10.0e-6,
            latency_filter: 3,
            gravity_rho: 150.0,
            window: 1,
            spike_clip: None,
            smoothing: None,
            relative_weight: 0.0,
            robust_adjustment: false,
        }
    }

    /// The configuration named `name`: `default` (or `cairn`) or `serf`.
    pub fn named(name: &str) -> Option<Self> {
        match name {
            "serf" => Some(Self::serf()),
            "default" | "cairn" => Some(Self::default()),
            _ => None,
        }
    }

    /// Names accepted by [`Config::named`].
    pub const NAMES: &'static [&'static str] = &["default", "serf"];

    /// Checks the values.
    pub fn validate(&self) -> Result<(), String> {
        if self.dimensionality == 0 || self.dimensionality > MAX_DIMENSIONS {
            return Err(format!(
                "dimensionality must be between 1 and {MAX_DIMENSIONS}"
            ));
        }
        let positive = [
            ("error_max", self.error_max),
            ("ce", self.ce),
            ("cc", self.cc),
            ("height_min", self.height_min),
            ("gravity_rho", self.gravity_rho),
        ];
        for (name, v) in positive {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("{name} must be a positive number"));
            }
        }
        if self.latency_filter == 0 || self.latency_filter > 16 {
            return Err("latency_filter must be between 1 and 16".into());
        }
        if self.window == 0 || self.window > 256 {
            return Err("window must be between 1 and 256".into());
        }
        if !(0.0..=2.0).contains(&self.relative_weight) {
            return Err("relative_weight must be between 0 and 2".into());
        }
        if let Some(c) = self.spike_clip {
            if !(c.base >= 1.0
                && c.error_scale >= 0.0
                && c.base.is_finite()
                && c.error_scale.is_finite())
            {
                return Err("spike clip needs base >= 1 and error_scale >= 0".into());
            }
        }
        if let Some(s) = self.smoothing {
            if !(s.weight > 0.0
                && s.weight <= 1.0
                && s.confidence_power >= 0.0
                && s.confidence_power.is_finite())
            {
                return Err("smoothing weight must be in (0, 1] and confidence_power >= 0".into());
            }
        }
        Ok(())
    }
}

/// Most dimensions a client (or a peer's coordinate) may have.
pub const MAX_DIMENSIONS: usize = 64;

impl Default for Config {
    /// cairn's algorithm: Serf's model and constants, with spike clipping,
    /// mini-batch updates, a confidence-gated smoothed estimate and a
    /// robust adjustment.
    fn default() -> Self {
        Config {
            cc: 0.5,
            robust_adjustment: true,
            latency_filter: 1,
            window: 8,
            spike_clip: Some(SpikeClip {
                base: 1.2,
                error_scale: 1.0,
            }),
            smoothing: Some(Smoothing {
                weight: 0.05,
                confidence_power: 2.0,
            }),
            ..Self::serf()
        }
    }
}

/// Percentile by linear interpolation between closest ranks (numpy's default).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    let n = sorted.len();
    if n == 0 {
        return f64::NAN;
    }
    if n == 1 {
        return sorted[0];
    }
    let h = q * (n - 1) as f64;
    let lo = h.floor() as usize;
    if lo >= n - 1 {
        return sorted[n - 1];
    }
    sorted[lo] + (h - lo as f64) * (sorted[lo + 1] - sorted[lo])
}

/// A coordinate `x` seconds along the first axis (2-D, no height), for
/// tests that need nodes at known distances.
#[cfg(test)]
pub(crate) fn on_line(x: f64) -> Coordinate {
    Coordinate {
        vec: vec![x, 0.0],
        error: 0.1,
        adjustment: 0.0,
        height: 0.0,
    }
}

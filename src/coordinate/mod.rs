//! Network coordinates: estimate the round-trip time between any two nodes
//! from coordinates they learn by measuring a few peers (Vivaldi).
//!
//! Pure: no clock, no I/O. A [`Client`] is fed (peer, peer's coordinate,
//! measured RTT) and keeps its own coordinate; any two coordinates give an
//! RTT estimate by [`Coordinate::distance_to`].
//!
//! Two algorithms share the client. [`Config::serf`] is HashiCorp Serf's
//! Vivaldi (the one Consul uses), reproduced to compare honestly against.
//! [`Config::default`] is cairn's, which differs where Serf's estimates fail
//! on measured Internet latencies; see [`Config`] for each change.

mod client;
mod payload;

use std::fmt;
use std::time::Duration;

pub use client::{Client, ClientStats, UpdateError};
pub use payload::{decode_ping_payload, encode_ping_payload, PayloadError, PING_PAYLOAD_VERSION};

/// Values below this (seconds) count as zero, as in Serf.
pub(crate) const ZERO_THRESHOLD: f64 = 1.0e-6;

/// A point in the latency space: a Euclidean vector plus a height (the
/// node's access-link latency) and an adjustment (a per-node offset), all in
/// seconds, and the node's own estimate of its relative error.
#[derive(Debug, Clone, PartialEq)]
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

/// Tuning of the Vivaldi client.
///
/// The first block is Serf's configuration. The rest are cairn's changes,
/// all off in [`Config::serf`].
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
    /// Which update rule moves the coordinate.
    pub rule: UpdateRule,
}

/// How an observation moves the coordinate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum UpdateRule {
    /// Serf: a spring force proportional to the absolute residual `rtt - d`.
    Spring,
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
            rule: UpdateRule::Spring,
        }
    }

    /// The configuration named `name`: `serf` or `default`.
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
        if self.dimensionality == 0 || self.dimensionality > 64 {
            return Err("dimensionality must be between 1 and 64".into());
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
        if self.latency_filter == 0 {
            return Err("latency_filter must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for Config {
    /// cairn's algorithm (see the field documentation for what differs).
    fn default() -> Self {
        Self::serf()
    }
}

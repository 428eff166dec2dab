//! The Vivaldi client: one node's coordinate and the state it learns from.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use super::{euclid, Config, Coordinate, UpdateRule, ZERO_THRESHOLD};

/// RTTs above this are refused (Serf's limit).
const MAX_RTT: Duration = Duration::from_secs(10);

/// Why an observation was refused; the client is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum UpdateError {
    /// The peer's coordinate has another dimensionality.
    #[error("peer coordinate has {theirs} dimensions, ours has {ours}")]
    Dimensions {
        /// Ours.
        ours: usize,
        /// Theirs.
        theirs: usize,
    },
    /// The peer's coordinate has a NaN or infinite component.
    #[error("peer coordinate is invalid (not finite)")]
    Invalid,
    /// The RTT is negative or above ten seconds.
    #[error("round-trip time {0:?} is outside 0..=10s")]
    Rtt(Duration),
}

/// Counters of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Observations applied.
    pub updates: u64,
    /// Observations refused.
    pub refused: u64,
    /// Times the coordinate became invalid and was reset to the origin.
    pub resets: u64,
}

/// A node's Vivaldi state. `K` names peers (node names in an agent, integer
/// ids in a replay).
#[derive(Debug, Clone)]
pub struct Client<K> {
    cfg: Config,
    coord: Coordinate,
    origin: Coordinate,
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
    filters: HashMap<K, Vec<f64>>,
    rng: u64,
    stats: ClientStats,
}

impl<K: Hash + Eq + Clone> Client<K> {
    /// A client at the origin. `seed` drives the rare random choice (the
    /// direction to move when two coordinates coincide).
    pub fn new(cfg: Config, seed: u64) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Client {
            coord: Coordinate::origin(&cfg),
            origin: Coordinate::origin(&cfg),
            adjustment_samples: vec![0.0; cfg.adjustment_window],
            adjustment_index: 0,
            filters: HashMap::new(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            stats: ClientStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// This node's coordinate.
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// The coordinate to estimate distances with (what an application or the
    /// catalog should use).
    pub fn estimate(&self) -> &Coordinate {
        &self.coord
    }

    /// Replaces the coordinate (say, one persisted across a restart).
    pub fn set_coordinate(&mut self, c: Coordinate) -> Result<(), UpdateError> {
        self.check(&c)?;
        self.coord = c;
        Ok(())
    }

    /// Counters.
    pub fn stats(&self) -> &ClientStats {
        &self.stats
    }

    /// Forgets what was learned about `peer` (it left the cluster).
    pub fn forget(&mut self, peer: &K) {
        self.filters.remove(peer);
    }

    /// The estimated RTT from this node to a node at `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.coord.distance_to(other)
    }

    fn check(&self, other: &Coordinate) -> Result<(), UpdateError> {
        if !self.coord.is_compatible_with(other) {
            return Err(UpdateError::Dimensions {
                ours: self.coord.vec.len(),
                theirs: other.vec.len(),
            });
        }
        if !other.is_valid() {
            return Err(UpdateError::Invalid);
        }
        Ok(())
    }

    /// Applies one observation: `peer`, at coordinate `other`, answered in
    /// `rtt`. Returns the new coordinate.
    pub fn update(
        &mut self,
        peer: &K,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, UpdateError> {
        if let Err(e) = self.check(other).and_then(|()| {
            if rtt > MAX_RTT {
                Err(UpdateError::Rtt(rtt))
            } else {
                Ok(())
            }
        }) {
            self.stats.refused += 1;
            return Err(e);
        }
        let rtt = self.latency_filter(peer, rtt.as_secs_f64());
        match self.cfg.rule {
            UpdateRule::Spring => {
                self.update_vivaldi(other, rtt);
                self.update_adjustment(other, rtt);
                self.update_gravity();
            }
        }
        if !self.coord.is_valid() {
            self.stats.resets += 1;
            self.coord = Coordinate::origin(&self.cfg);
        }
        self.stats.updates += 1;
        Ok(&self.coord)
    }

    /// Median of the last `latency_filter` samples from this peer.
    fn latency_filter(&mut self, peer: &K, rtt: f64) -> f64 {
        let size = self.cfg.latency_filter;
        if size <= 1 {
            return rtt;
        }
        let samples = self
            .filters
            .entry(peer.clone())
            .or_insert_with(|| Vec::with_capacity(size));
        if samples.len() == size {
            samples.remove(0);
        }
        samples.push(rtt);
        let mut sorted = [0f64; 16];
        let n = samples.len().min(sorted.len());
        sorted[..n].copy_from_slice(&samples[samples.len() - n..]);
        sorted[..n].sort_by(f64::total_cmp);
        sorted[n / 2]
    }

    fn update_vivaldi(&mut self, other: &Coordinate, rtt: f64) {
        let dist = self.coord.distance_secs(other);
        let rtt = rtt.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        self.coord.error = (self.cfg.ce * weight * wrongness
            + self.coord.error * (1.0 - self.cfg.ce * weight))
            .min(self.cfg.error_max);
        let force = self.cfg.cc * weight * (rtt - dist);
        self.apply_force(force, other.vec.as_slice(), other.height);
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let w = self.cfg.adjustment_window;
        if w == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % w;
        self.coord.adjustment = self.adjustment_samples.iter().sum::<f64>() / (2.0 * w as f64);
    }

    fn update_gravity(&mut self) {
        let dist = self.origin.distance_secs(&self.coord);
        let force = -(dist / self.cfg.gravity_rho).powi(2);
        let origin = std::mem::take(&mut self.origin.vec);
        let h = self.origin.height;
        self.apply_force(force, &origin, h);
        self.origin.vec = origin;
    }

    /// Moves the coordinate by `force` along the unit vector from `at`, and
    /// its height in proportion (Serf's `ApplyForce`).
    fn apply_force(&mut self, force: f64, at: &[f64], at_height: f64) {
        let mag = euclid(&self.coord.vec, at);
        let dim = self.coord.vec.len();
        if mag > ZERO_THRESHOLD {
            for (v, a) in self.coord.vec.iter_mut().zip(at) {
                *v += (*v - a) / mag * force;
            }
            let h = (self.coord.height + at_height) * force / mag + self.coord.height;
            self.coord.height = h.max(self.cfg.height_min);
            return;
        }
        // Coincident: push in a random direction, height unchanged.
        let mut unit = vec![0.0; dim];
        for u in unit.iter_mut() {
            *u = self.next_f64() - 0.5;
        }
        let m = unit.iter().map(|u| u * u).sum::<f64>().sqrt();
        if m > ZERO_THRESHOLD {
            for u in unit.iter_mut() {
                *u /= m;
            }
        } else {
            unit.fill(0.0);
            unit[0] = 1.0;
        }
        for (v, u) in self.coord.vec.iter_mut().zip(&unit) {
            *v += u * force;
        }
    }

    /// SplitMix64, uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

//! The Vivaldi client: one node's coordinate and the state it learns from.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

use super::{euclid, Config, Coordinate, MAX_DIMENSIONS, ZERO_THRESHOLD};

/// Seconds truncated to whole nanoseconds, as Serf's `DistanceTo` returns
/// them (a `time.Duration`).
fn nanos(secs: f64) -> f64 {
    (secs * 1e9).trunc() / 1e9
}

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
    /// The RTT is above ten seconds.
    #[error("round-trip time {0:?} is above the 10 s limit")]
    Rtt(Duration),
}

/// Counters of a client.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// Observations applied.
    pub updates: u64,
    /// Observations refused.
    pub refused: u64,
    /// Observations whose RTT was clipped as a spike.
    pub clipped: u64,
    /// Times the coordinate became invalid and was reset to the origin.
    pub resets: u64,
}

/// Recent samples for mini-batch updates: peer vectors in one flat buffer,
/// and per sample (height, adjustment, rtt).
#[derive(Debug, Clone, Default)]
struct Window {
    vecs: Vec<f64>,
    meta: Vec<(f64, f64, f64)>,
    next: usize,
}

/// A node's Vivaldi state. `K` names peers (node names in an agent, integer
/// ids in a replay).
#[derive(Debug, Clone)]
pub struct Client<K> {
    cfg: Config,
    /// The coordinate peers update against.
    coord: Coordinate,
    /// The coordinate to estimate with (smoothed `coord`).
    estimate: Coordinate,
    adjustment_samples: Vec<f64>,
    adjustment_index: usize,
    /// Scratch for the median of the adjustment samples.
    adjustment_scratch: Vec<f64>,
    window: Window,
    filters: HashMap<K, Vec<f64>>,
    rng: u64,
    stats: ClientStats,
}

impl<K: Hash + Eq + Clone> Client<K> {
    /// A client at the origin. `seed` drives the one random choice (the
    /// direction to move when two coordinates coincide).
    pub fn new(cfg: Config, seed: u64) -> Result<Self, String> {
        cfg.validate()?;
        Ok(Client {
            coord: Coordinate::origin(&cfg),
            estimate: Coordinate::origin(&cfg),
            adjustment_samples: vec![0.0; cfg.adjustment_window],
            adjustment_index: 0,
            adjustment_scratch: Vec::with_capacity(cfg.adjustment_window),
            window: Window::default(),
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

    /// The coordinate peers should update against (sent in gossip acks).
    pub fn coordinate(&self) -> &Coordinate {
        &self.coord
    }

    /// The coordinate to estimate RTTs with (what the catalog, the API and
    /// `cairn rtt` use). Equal to [`coordinate`](Self::coordinate) unless
    /// the configuration smooths it.
    pub fn estimate(&self) -> &Coordinate {
        &self.estimate
    }

    /// Replaces the coordinate (say, one persisted across a restart).
    pub fn set_coordinate(&mut self, c: Coordinate) -> Result<(), UpdateError> {
        self.check(&c)?;
        self.estimate = c.clone();
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

    /// The estimated RTT from this node to a node whose estimate coordinate
    /// is `other`.
    pub fn distance_to(&self, other: &Coordinate) -> Duration {
        self.estimate.distance_to(other)
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
    /// `rtt`. Returns the new coordinate; a refused observation changes
    /// nothing.
    pub fn update(
        &mut self,
        peer: &K,
        other: &Coordinate,
        rtt: Duration,
    ) -> Result<&Coordinate, UpdateError> {
        let checked = self.check(other).and_then(|()| {
            if rtt > MAX_RTT {
                Err(UpdateError::Rtt(rtt))
            } else {
                Ok(())
            }
        });
        if let Err(e) = checked {
            self.stats.refused += 1;
            return Err(e);
        }
        let mut rtt = self.latency_filter(peer, rtt.as_secs_f64());
        let dist = nanos(self.coord.distance_secs(other));
        if let Some(clip) = self.cfg.spike_clip {
            // Only upward: queueing and retransmission only ever add delay,
            // and a measurement far below the estimate is the very evidence
            // that two nodes sit closer than their coordinates say.
            let d = dist.max(ZERO_THRESHOLD);
            let bound = d * (clip.base + clip.error_scale * self.coord.error);
            if rtt > bound {
                rtt = bound;
                self.stats.clipped += 1;
            }
        }
        self.update_vivaldi(other, dist, rtt);
        self.update_adjustment(other, rtt);
        self.update_gravity();
        if !self.coord.is_valid() {
            self.stats.resets += 1;
            self.coord = Coordinate::origin(&self.cfg);
            self.estimate = self.coord.clone();
            self.window = Window::default();
        }
        self.smooth();
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
        // validate() bounds the filter at 16 samples.
        let mut sorted = [0f64; 16];
        let n = samples.len();
        sorted[..n].copy_from_slice(samples);
        sorted[..n].sort_by(f64::total_cmp);
        sorted[n / 2]
    }

    fn smooth(&mut self) {
        let Some(s) = self.cfg.smoothing else {
            self.estimate.clone_from(&self.coord);
            return;
        };
        let r = self.coord.error / self.cfg.error_max;
        let unsure = if s.confidence_power == 2.0 {
            r * r
        } else {
            r.powf(s.confidence_power)
        };
        let a = s.weight.max(unsure).min(1.0);
        for (e, c) in self.estimate.vec.iter_mut().zip(&self.coord.vec) {
            *e += a * (c - *e);
        }
        self.estimate.height += a * (self.coord.height - self.estimate.height);
        self.estimate.adjustment += a * (self.coord.adjustment - self.estimate.adjustment);
        self.estimate.error = self.coord.error;
    }

    fn update_vivaldi(&mut self, other: &Coordinate, dist: f64, rtt: f64) {
        let rtt = rtt.max(ZERO_THRESHOLD);
        let wrongness = (dist - rtt).abs() / rtt;
        let total_error = (self.coord.error + other.error).max(ZERO_THRESHOLD);
        let weight = self.coord.error / total_error;
        let error =
            self.cfg.ce * weight * wrongness + self.coord.error * (1.0 - self.cfg.ce * weight);
        // Not f64::min, which would hide a NaN: an invalid error must reach
        // the validity check and reset the coordinate, as in Serf.
        self.coord.error = if error > self.cfg.error_max {
            self.cfg.error_max
        } else {
            error
        };
        let gain = self.cfg.cc * weight;
        if self.cfg.window > 1 {
            self.remember(other, rtt);
            if self.apply_window_force(gain) {
                return;
            }
        }
        let pull = if self.cfg.robust_adjustment {
            nanos(self.coord.raw_distance(other))
        } else {
            dist
        };
        self.apply_force(gain * (rtt - pull), &other.vec, other.height);
    }

    fn remember(&mut self, other: &Coordinate, rtt: f64) {
        let dim = self.coord.vec.len();
        let w = &mut self.window;
        let sample = (other.height, other.adjustment, rtt);
        if w.meta.len() < self.cfg.window {
            w.vecs.extend_from_slice(&other.vec);
            w.meta.push(sample);
        } else {
            let k = w.next;
            w.vecs[k * dim..(k + 1) * dim].copy_from_slice(&other.vec);
            w.meta[k] = sample;
        }
        w.next = (w.next + 1) % self.cfg.window;
    }

    /// Moves by `gain` times the mean spring force over the remembered
    /// samples: Vivaldi's descent step on a mini-batch instead of a single
    /// sample, which averages away most of the measurement noise. Returns
    /// false if no sample gives a direction (all coincide with us).
    fn apply_window_force(&mut self, gain: f64) -> bool {
        let dim = self.coord.vec.len();
        let mut acc = [0f64; MAX_DIMENSIONS];
        let mut acc_height = 0.0;
        let mut used = 0usize;
        let alpha = self.cfg.relative_weight;
        let weight = |rtt: f64| {
            if alpha == 0.0 {
                1.0
            } else {
                rtt.max(ZERO_THRESHOLD).powf(-alpha)
            }
        };
        let total: f64 = if alpha == 0.0 {
            self.window.meta.len() as f64
        } else {
            self.window.meta.iter().map(|m| weight(m.2)).sum()
        };
        let (h, adj) = (self.coord.height, self.coord.adjustment);
        let robust = self.cfg.robust_adjustment;
        let mut diff = [0f64; MAX_DIMENSIONS];
        for (k, &(hk, ak, rk)) in self.window.meta.iter().enumerate() {
            let pv = &self.window.vecs[k * dim..(k + 1) * dim];
            let mut sq = 0.0;
            for ((d, x), p) in diff.iter_mut().zip(&self.coord.vec).zip(pv) {
                *d = x - p;
                sq += *d * *d;
            }
            let mag = sq.sqrt();
            if mag <= ZERO_THRESHOLD {
                continue;
            }
            let raw = mag + h + hk;
            let adjusted = raw + adj + ak;
            let f = rk
                - if adjusted > 0.0 && !robust {
                    adjusted
                } else {
                    raw
                };
            let s = f / mag * weight(rk);
            for (a, d) in acc.iter_mut().zip(&diff[..dim]) {
                *a += d * s;
            }
            acc_height += (h + hk) * s;
            used += 1;
        }
        if used == 0 {
            return false;
        }
        // A weighted mean over the window: with equal weights, its mean.
        let scale = gain / total;
        for (v, a) in self.coord.vec.iter_mut().zip(&acc[..dim]) {
            *v += a * scale;
        }
        self.coord.height = (h + acc_height * scale).max(self.cfg.height_min);
        true
    }

    fn update_adjustment(&mut self, other: &Coordinate, rtt: f64) {
        let w = self.cfg.adjustment_window;
        if w == 0 {
            return;
        }
        self.adjustment_samples[self.adjustment_index] = rtt - self.coord.raw_distance(other);
        self.adjustment_index = (self.adjustment_index + 1) % w;
        if self.cfg.robust_adjustment {
            // One inf - inf among the samples moves the median by one place;
            // the mean it would make NaN.
            let scratch = &mut self.adjustment_scratch;
            scratch.clone_from(&self.adjustment_samples);
            let (_, median, _) = scratch.select_nth_unstable_by(w / 2, f64::total_cmp);
            self.coord.adjustment = *median / 2.0;
            return;
        }
        // Summed afresh each time, as Serf does: a running sum would carry
        // one huge sample (inf - inf) long after it left the window.
        self.coord.adjustment = self.adjustment_samples.iter().sum::<f64>() / (2.0 * w as f64);
    }

    fn update_gravity(&mut self) {
        // The origin: zero vector, minimal height, no adjustment.
        let mag = self.coord.vec.iter().map(|v| v * v).sum::<f64>().sqrt();
        let raw = mag + self.cfg.height_min + self.coord.height;
        let adjusted = raw + self.coord.adjustment;
        let dist = nanos(if adjusted > 0.0 { adjusted } else { raw });
        let force = -(dist / self.cfg.gravity_rho).powi(2);
        let origin = [0f64; MAX_DIMENSIONS];
        let dim = self.coord.vec.len();
        self.apply_force(force, &origin[..dim], self.cfg.height_min);
    }

    /// Moves the coordinate by `force` along the unit vector from `at`, and
    /// its height in proportion (Serf's `ApplyForce`).
    fn apply_force(&mut self, force: f64, at: &[f64], at_height: f64) {
        let mag = euclid(&self.coord.vec, at);
        if mag > ZERO_THRESHOLD {
            // Serf's arithmetic, in Serf's order: unit vector, then force.
            let inv = 1.0 / mag;
            for (v, a) in self.coord.vec.iter_mut().zip(at) {
                *v += (*v - a) * inv * force;
            }
            let h = (self.coord.height + at_height) * force / mag + self.coord.height;
            self.coord.height = h.max(self.cfg.height_min);
            return;
        }
        // Coincident: push in a random direction; the height stays.
        let dim = self.coord.vec.len();
        let mut unit = [0f64; MAX_DIMENSIONS];
        for u in unit[..dim].iter_mut() {
            *u = self.next_f64() - 0.5;
        }
        let m = unit[..dim].iter().map(|u| u * u).sum::<f64>().sqrt();
        if m > ZERO_THRESHOLD {
            unit[..dim].iter_mut().for_each(|u| *u /= m);
        } else {
            unit[..dim].fill(0.0);
            unit[0] = 1.0;
        }
        for (v, u) in self.coord.vec.iter_mut().zip(&unit[..dim]) {
            *v += u * force;
        }
    }

    /// SplitMix64, uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        crate::splitmix::unit(crate::splitmix::next(&mut self.rng))
    }
}

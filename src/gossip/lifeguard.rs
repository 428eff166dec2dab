//! Lifeguard's two local mechanisms: health awareness, which slows our own
//! probing down when we seem to be the slow one, and suspicion timers that
//! start long and shrink as independent members confirm a suspicion.
//! (Dogan et al., "Lifeguard: Local Health Awareness for More Accurate
//! Failure Detection", 2018.)

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use crate::time::Instant;

/// Local health score: 0 is healthy; each missed nack or refutation adds one,
/// each successful probe removes one. Timeouts scale by `score + 1`.
#[derive(Debug, Clone)]
pub struct Awareness {
    max: usize,
    score: usize,
}

impl Awareness {
    /// A healthy score that may grow to `max - 1`.
    pub fn new(max: usize) -> Self {
        Awareness {
            max: max.max(1),
            score: 0,
        }
    }

    /// Adds `delta`, clamped to `[0, max - 1]`.
    pub fn apply(&mut self, delta: i64) {
        let s = (self.score as i64 + delta).clamp(0, self.max as i64 - 1);
        self.score = s as usize;
    }

    /// The current score.
    pub fn score(&self) -> usize {
        self.score
    }

    /// `d * (score + 1)`.
    pub fn scale(&self, d: Duration) -> Duration {
        d * (self.score as u32 + 1)
    }
}

/// The suspicion about one node.
#[derive(Debug, Clone)]
pub struct Suspicion {
    /// Independent confirmations expected before the minimum timeout applies.
    k: u32,
    /// Independent confirmations seen so far (not counting the first suspector).
    n: u32,
    min: Duration,
    max: Duration,
    start: Instant,
    confirmations: HashSet<Arc<str>>,
    /// When the node will be declared dead unless it refutes first.
    pub deadline: Instant,
    /// The node's state-change time when the suspicion began; a timer that
    /// fires after the node changed state again is stale.
    pub state_change: Instant,
    /// Whether some member actually probed the node and failed. A suspicion
    /// learned only from another member's push/pull state is hearsay until
    /// then.
    witnessed: bool,
}

impl Suspicion {
    /// A suspicion raised by `from` at `now`, or learned as hearsay when
    /// `from` is `None`. With `k < 1` no confirmations are expected and the
    /// minimum timeout applies at once.
    pub fn new(from: Option<Arc<str>>, k: i64, min: Duration, max: Duration, now: Instant) -> Self {
        let witnessed = from.is_some();
        let confirmations = from.into_iter().collect();
        let timeout = if k < 1 { min } else { max };
        Suspicion {
            k: k.max(0) as u32,
            n: 0,
            min,
            max,
            start: now,
            confirmations,
            deadline: now + timeout,
            state_change: now,
            witnessed,
        }
    }

    /// Records that `from` suspects the node too. Returns true if that is
    /// news (and so worth re-gossiping). The first witness of a hearsay
    /// suspicion becomes its origin; later independent witnesses are
    /// confirmations and move the deadline earlier.
    pub fn confirm(&mut self, from: &str) -> bool {
        if !self.witnessed {
            self.witnessed = true;
            self.confirmations.insert(Arc::from(from));
            return true;
        }
        if self.n >= self.k || self.confirmations.contains(from) {
            return false;
        }
        self.confirmations.insert(Arc::from(from));
        self.n += 1;
        self.deadline = self.start + timeout_after(self.n, self.k, self.min, self.max);
        true
    }

    /// Confirmations seen beyond the first suspector.
    pub fn confirmations(&self) -> u32 {
        self.n
    }

    /// Whether a member actually probed the node and failed.
    pub fn witnessed(&self) -> bool {
        self.witnessed
    }

    /// Confirmations expected before the timeout reaches its minimum.
    pub fn expected(&self) -> u32 {
        self.k
    }

    /// Gives an unconfirmed suspicion another full (maximum) period.
    pub fn extend(&mut self, now: Instant) {
        self.deadline = now + self.max;
    }
}

/// The total suspicion timeout after `n` of `k` expected confirmations:
/// `max - log(n+1)/log(k+1) * (max - min)`, floored to milliseconds and never
/// below `min`.
pub fn timeout_after(n: u32, k: u32, min: Duration, max: Duration) -> Duration {
    let frac = ((n as f64) + 1.0).ln() / ((k as f64) + 1.0).ln();
    let raw = max.as_secs_f64() - frac * (max.as_secs_f64() - min.as_secs_f64());
    let t = Duration::from_millis((1000.0 * raw).floor().max(0.0) as u64);
    t.max(min)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn awareness_is_clamped() {
        let mut a = Awareness::new(8);
        a.apply(-3);
        assert_eq!(a.score(), 0);
        a.apply(20);
        assert_eq!(a.score(), 7);
        assert_eq!(a.scale(Duration::from_secs(1)), Duration::from_secs(8));
    }

    #[test]
    fn remaining_time_matches_memberlist() {
        // memberlist's suspicion_test cases (remaining = timeout - elapsed).
        let (min, max) = (Duration::from_secs(2), Duration::from_secs(30));
        assert_eq!(timeout_after(0, 3, min, max), Duration::from_secs(30));
        assert_eq!(timeout_after(1, 3, min, max), Duration::from_secs(16));
        assert_eq!(timeout_after(2, 3, min, max), Duration::from_millis(7810));
        assert_eq!(timeout_after(3, 3, min, max), Duration::from_secs(2));
        assert_eq!(timeout_after(5, 3, min, max), Duration::from_secs(2));
    }

    #[test]
    fn confirmations_shrink_the_deadline_once_per_member() {
        let t0 = Instant::ZERO;
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(2));
        let mut s = Suspicion::new(Some("me".into()), 3, min, max, t0);
        assert_eq!(s.deadline, t0 + max);
        assert!(!s.confirm("me"));
        assert!(s.confirm("foo"));
        assert_eq!(s.deadline, t0 + Duration::from_millis(1250));
        assert!(!s.confirm("foo"));
        assert!(s.confirm("bar"));
        assert!(s.confirm("baz"));
        assert_eq!(s.deadline, t0 + min);
        assert!(!s.confirm("qux"), "k confirmations reached");
    }

    #[test]
    fn the_first_witness_of_hearsay_is_its_origin_not_a_confirmation() {
        let t0 = Instant::ZERO;
        let (min, max) = (Duration::from_millis(500), Duration::from_secs(2));
        let mut s = Suspicion::new(None, 3, min, max, t0);
        assert!(!s.witnessed());
        assert!(s.confirm("me"));
        assert!(s.witnessed());
        assert_eq!((s.confirmations(), s.deadline), (0, t0 + max));
        assert!(s.confirm("other"));
        assert_eq!(s.confirmations(), 1);
    }

    #[test]
    fn no_expected_confirmations_means_minimum_timeout() {
        let s = Suspicion::new(
            Some("a".into()),
            0,
            Duration::from_secs(1),
            Duration::from_secs(6),
            Instant::ZERO,
        );
        assert_eq!(s.deadline, Instant::ZERO + Duration::from_secs(1));
    }
}

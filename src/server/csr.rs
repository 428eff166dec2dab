//! The leader's limit on leaf signing (Consul's `csr_max_per_second`): a
//! token bucket, so a burst of new sidecars is served at once and a flood
//! is refused with a reason the HTTP layer turns into 429.

use std::sync::Mutex;

use crate::time::Instant;

/// Leaves the leader signs per second at most (Consul's
/// `csr_max_per_second`), with as many in a burst.
const CSR_MAX_PER_SECOND: f64 = 50.0;

/// Why a CSR was refused when the limit was reached (the HTTP layer
/// answers 429 for it, as Consul does).
pub const CSR_RATE_LIMITED: &str = "rate limit exceeded for CSR signing";

/// The signing budget: tokens left, and when it was last refilled.
pub(super) struct CsrLimit(Mutex<(f64, Instant)>);

impl CsrLimit {
    /// A full bucket at `now`.
    pub(super) fn new(now: Instant) -> Self {
        CsrLimit(Mutex::new((CSR_MAX_PER_SECOND, now)))
    }

    /// Takes one signing from the budget at `now`; false when none is left.
    pub(super) fn take(&self, now: Instant) -> bool {
        let mut bucket = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let refill = now.saturating_duration_since(bucket.1).as_secs_f64() * CSR_MAX_PER_SECOND;
        bucket.0 = (bucket.0 + refill).min(CSR_MAX_PER_SECOND);
        bucket.1 = now;
        if bucket.0 < 1.0 {
            return false;
        }
        bucket.0 -= 1.0;
        true
    }
}

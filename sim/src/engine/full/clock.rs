//! Each machine's monotonic clock, which `drift` and `clock_jump` events
//! make run fast or slow, or leap ahead (a VM resumed on another host, a
//! clock source switched). Everything a node times through its `Env` reads
//! it: leases, gossip, sessions, checks, its clients. The simulation's own
//! time is the true time, which traces and histories are stamped with.
//!
//! A clock maps true time to its reading piecewise linearly: from the last
//! change on, it reads `local + (t - at) * rate`. A rate is above zero and
//! a jump goes forward, so the clock never goes back. A sleep waits for
//! the true time at which the clock will read its deadline, and wakes to
//! look again when the clock changes (a jump may bring its deadline
//! nearer, a slower rate push it further).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use cairn::env::Env;
use tokio::sync::Notify;

/// The simulation's true time, beside a node's own clock: what the
/// simulator's clients and observers stamp histories and traces with, so
/// that stamps from different nodes compare even while a node's clock
/// drifts or jumps. Its clients still decide by their node's clock (a lock
/// client trusts its lease by it), as real ones do.
pub trait SimClock: Env {
    /// True virtual time now.
    fn true_now(&self) -> Duration;

    /// When (in true time) this node's clock read `reading`, or will read
    /// it at its present rate.
    fn true_time(&self, reading: Duration) -> Duration;
}

/// One machine's clock.
#[derive(Debug, Default)]
pub struct HostClock {
    /// Every piece so far, oldest first (a run changes a clock a few
    /// times): a past reading maps back to true time exactly.
    pieces: Mutex<Vec<Piece>>,
    /// Whether this run changes clocks at all: sleeps wait on a plain
    /// timer unless it does.
    may_vary: AtomicBool,
    changed: Notify,
}

/// The clock since its last change.
#[derive(Debug, Clone, Copy)]
struct Piece {
    /// True time of the change.
    at: Duration,
    /// The clock's reading then.
    local: Duration,
    /// Clock seconds per true second.
    rate: f64,
}

impl Default for Piece {
    fn default() -> Self {
        Piece {
            at: Duration::ZERO,
            local: Duration::ZERO,
            rate: 1.0,
        }
    }
}

impl HostClock {
    fn pieces(&self) -> MutexGuard<'_, Vec<Piece>> {
        self.pieces.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The piece in force now.
    fn piece(&self) -> Piece {
        self.pieces().last().copied().unwrap_or_default()
    }

    fn push(&self, piece: Piece) {
        self.pieces().push(piece);
        self.changed.notify_waiters();
    }

    /// Lets the clock change later in the run; sleeps started from then on
    /// watch for changes. Set before anything runs.
    pub fn may_vary(&self) {
        self.may_vary.store(true, Ordering::SeqCst);
    }

    fn varies(&self) -> bool {
        self.may_vary.load(Ordering::SeqCst)
    }

    /// The clock's reading at true time `t` (not before its last change).
    pub fn reading(&self, t: Duration) -> Duration {
        if !self.varies() {
            return t;
        }
        let p = self.piece();
        p.local + t.saturating_sub(p.at).mul_f64(p.rate)
    }

    /// The true time at which the clock read `local`, or will read it at
    /// its present rate. A reading a jump skipped maps to the jump.
    pub fn true_time(&self, local: Duration) -> Duration {
        if !self.varies() {
            return local;
        }
        let pieces = self.pieces();
        // The piece the reading falls in; before the first change, the
        // clock read true time.
        let i = pieces.partition_point(|p| p.local <= local);
        let p = i.checked_sub(1).map_or_else(Piece::default, |k| pieces[k]);
        let t = p.at + (local - p.local.min(local)).div_f64(p.rate);
        match pieces.get(i) {
            Some(next) => t.min(next.at),
            None => t,
        }
    }

    /// From true time `now`, the clock runs at `rate` (1 is true speed).
    pub fn set_rate(&self, now: Duration, rate: f64) {
        let local = self.reading(now);
        self.push(Piece {
            at: now,
            local,
            rate: if rate.is_finite() && rate > 0.0 {
                rate
            } else {
                1.0
            },
        });
    }

    /// At true time `now`, the clock leaps `by` ahead.
    pub fn jump(&self, now: Duration, by: Duration) {
        let local = self.reading(now) + by;
        let rate = self.piece().rate;
        self.push(Piece {
            at: now,
            local,
            rate,
        });
    }

    /// Waits until the clock reads `deadline`; `true_now` gives the true
    /// time and `sleep_until` waits for a true time.
    pub async fn sleep_until<F, S>(
        &self,
        deadline: Duration,
        true_now: impl Fn() -> Duration,
        sleep_until: F,
    ) where
        F: Fn(Duration) -> S,
        S: std::future::Future<Output = ()>,
    {
        if !self.varies() {
            return sleep_until(deadline).await;
        }
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let now = true_now();
            if self.reading(now) >= deadline {
                return;
            }
            // Rounding may put the true time a hair before now while the
            // clock is a hair short: then wait a little, never not at all.
            let due = self.true_time(deadline).max(now + Duration::from_micros(1));
            tokio::select! {
                _ = sleep_until(due) => {}
                _ = &mut changed => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(x: u64) -> Duration {
        Duration::from_millis(x)
    }

    #[test]
    fn a_clock_reads_true_time_until_it_drifts_or_jumps_and_never_goes_back() {
        let c = HostClock::default();
        c.may_vary();
        assert_eq!(c.reading(ms(500)), ms(500));
        c.set_rate(ms(1000), 0.5);
        assert_eq!(c.reading(ms(3000)), ms(2000));
        assert_eq!(c.true_time(ms(2000)), ms(3000));
        c.jump(ms(3000), ms(700));
        assert_eq!(c.reading(ms(3000)), ms(2700));
        // Past readings map back exactly, across the changes; the ones
        // the jump skipped map to the jump.
        assert_eq!(c.true_time(ms(1500)), ms(2000));
        assert_eq!(c.true_time(ms(500)), ms(500));
        assert_eq!(c.true_time(ms(2300)), ms(3000));
        c.set_rate(ms(4000), 2.0);
        assert_eq!(c.reading(ms(4000)), ms(3200));
        assert_eq!(c.reading(ms(4500)), ms(4200));
        assert_eq!(c.true_time(ms(4200)), ms(4500));
        // Nonsense rates fall back to true speed rather than stop time.
        c.set_rate(ms(5000), 0.0);
        assert_eq!(c.reading(ms(6000)), ms(6200));
    }

    #[test]
    fn a_sleep_ends_when_the_clock_reads_its_deadline_through_changes() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let start = tokio::time::Instant::now();
            let t = move || start.elapsed();
            let at = move |d: Duration| tokio::time::sleep_until(start + d);
            let c = std::sync::Arc::new(HostClock::default());
            c.may_vary();
            c.set_rate(Duration::ZERO, 0.5);
            // Half speed: a 1 s deadline is 2 s away.
            c.sleep_until(ms(1000), t, at).await;
            assert_eq!(t().as_millis(), 2000);
            // A jump past the deadline wakes the sleeper at once.
            let c2 = c.clone();
            tokio::spawn(async move {
                tokio::time::sleep(ms(300)).await;
                c2.jump(t(), ms(10_000));
            });
            c.sleep_until(ms(5000), t, at).await;
            assert_eq!(t().as_millis(), 2300);
        });
    }
}

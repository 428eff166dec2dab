//! openraft's async runtime: tokio's, except for randomness and spawning
//! (into the caller's task group, see `env::TaskGroup`). openraft draws
//! its election timeouts from `AsyncRuntime::thread_rng()`; here that reads
//! a generator the caller seeds ([`seed`]) before it starts a node, from the
//! node's `Env` seed. On real servers the `Env` seed is entropy; in the
//! simulator it comes from the scenario's seed and the node's name, so runs
//! replay exactly even through elections.

use std::cell::Cell;
use std::future::Future;
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

thread_local! {
    /// SplitMix64 state; `None` until seeded.
    static STATE: Cell<Option<u64>> = const { Cell::new(None) };
}

/// Seeds this thread's Raft randomness. Call it right before
/// `Raft::new` with the node's seed (`env.seed("raft")`).
pub fn seed(seed: u64) {
    STATE.with(|s| s.set(Some(seed)));
}

/// The generator openraft is given: this thread's seeded SplitMix64 (an
/// unseeded thread starts from a fixed value, which keeps even a forgotten
/// seed deterministic rather than random).
#[derive(Debug, Default, Clone, Copy)]
pub struct SeededRng;

impl rand08::RngCore for SeededRng {
    fn next_u64(&mut self) -> u64 {
        STATE.with(|s| {
            let mut x = s.get().unwrap_or(0x853c_49e6_748f_ea9b);
            let draw = crate::splitmix::next(&mut x);
            s.set(Some(x));
            draw
        })
    }

    fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for chunk in dest.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand08::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

/// tokio, with [`SeededRng`] for randomness.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct CairnRuntime;

impl AsyncRuntime for CairnRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = <TokioRuntime as AsyncRuntime>::Sleep;
    type Instant = <TokioRuntime as AsyncRuntime>::Instant;
    type TimeoutError = <TokioRuntime as AsyncRuntime>::TimeoutError;
    type Timeout<R, T: Future<Output = R> + OptionalSend> =
        <TokioRuntime as AsyncRuntime>::Timeout<R, T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        // In the caller's task group, so a simulated crash of its node
        // ends Raft's tasks too (see `env::TaskGroup`).
        crate::env::spawn_inheriting(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        TokioRuntime::sleep(duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        TokioRuntime::sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout(duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        TokioRuntime::timeout_at(deadline, future)
    }

    fn is_panic(join_error: &Self::JoinError) -> bool {
        TokioRuntime::is_panic(join_error)
    }

    fn thread_rng() -> Self::ThreadLocalRng {
        SeededRng
    }

    fn oneshot<T>() -> (Self::OneshotSender<T>, Self::OneshotReceiver<T>)
    where
        T: OptionalSend,
    {
        TokioRuntime::oneshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn election_timeouts_follow_the_seed() {
        let cfg = openraft::Config::default();
        let draw = |s: u64| {
            seed(s);
            (0..5)
                .map(|_| cfg.new_rand_election_timeout::<CairnRuntime>())
                .collect::<Vec<_>>()
        };
        let a = draw(42);
        assert_eq!(a, draw(42));
        assert_ne!(a, draw(43));
        assert!(a
            .iter()
            .all(|t| (cfg.election_timeout_min..cfg.election_timeout_max).contains(t)));
    }
}

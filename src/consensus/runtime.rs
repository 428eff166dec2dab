//! openraft's async runtime: tokio's, except for randomness, spawning and
//! time.
//!
//! - **Randomness.** openraft draws its election timeouts from
//!   `AsyncRuntime::thread_rng()`; here that reads a generator the caller
//!   seeds ([`seed`]) before it starts a node, from the node's `Env` seed.
//!   On real servers the `Env` seed is entropy; in the simulator it comes
//!   from the scenario's seed and the node's name, so runs replay exactly
//!   even through elections.
//! - **Spawning** goes into the caller's task group (see `env::TaskGroup`),
//!   so a simulated crash of its node ends Raft's tasks too.
//! - **Time** is the machine's clock of the caller's task group when it
//!   has one ([`GroupClock`](crate::env::GroupClock)), and the runtime's
//!   monotonic clock otherwise. In the simulator a node whose clock drifts
//!   or jumps therefore waits out its election timeout and its leader
//!   lease by its own clock, as a real server does, and those faults test
//!   openraft's timers too.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use openraft::{AsyncRuntime, OptionalSend, TokioRuntime};

use crate::env::TaskGroup;
use crate::time::Instant;

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

/// Where readings of the runtime's clock count from, for tasks outside a
/// group with a clock of its own.
fn origin() -> tokio::time::Instant {
    static ORIGIN: OnceLock<tokio::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(tokio::time::Instant::now)
}

/// Raft's instants are readings of the machine's monotonic clock (see the
/// module's notes).
impl openraft::Instant for Instant {
    fn now() -> Self {
        match TaskGroup::current_clock() {
            Some(clock) => clock.now(),
            None => Instant::from_duration(origin().elapsed()),
        }
    }
}

/// A wait on the machine's clock.
pub type RaftSleep = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

fn sleep_until(deadline: Instant) -> RaftSleep {
    match TaskGroup::current_clock() {
        Some(clock) => clock.sleep_until(deadline),
        None => Box::pin(tokio::time::sleep_until(origin() + deadline.as_duration())),
    }
}

/// A wait of `d` on the machine's clock, for cairn's own waits inside Raft
/// (the simulator's virtual time is not the runtime's).
pub(crate) fn sleep(d: Duration) -> RaftSleep {
    sleep_until(<Instant as openraft::Instant>::now() + d)
}

/// A future that gives up at a deadline on the machine's clock.
pub struct Timeout<F> {
    future: Pin<Box<F>>,
    sleep: RaftSleep,
}

impl<F: Future> Future for Timeout<F> {
    type Output = Result<F::Output, Elapsed>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // The future first, so one that is ready at its deadline counts.
        if let Poll::Ready(v) = self.future.as_mut().poll(cx) {
            return Poll::Ready(Ok(v));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed)),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// What a [`Timeout`] gives when its deadline came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Elapsed;

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("deadline has elapsed")
    }
}

impl std::error::Error for Elapsed {}

/// tokio, with [`SeededRng`] for randomness and the machine's clock for
/// time.
#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
pub struct CairnRuntime;

impl AsyncRuntime for CairnRuntime {
    type JoinError = <TokioRuntime as AsyncRuntime>::JoinError;
    type JoinHandle<T: OptionalSend + 'static> = <TokioRuntime as AsyncRuntime>::JoinHandle<T>;
    type Sleep = RaftSleep;
    type Instant = Instant;
    type TimeoutError = Elapsed;
    type Timeout<R, T: Future<Output = R> + OptionalSend> = Timeout<T>;
    type ThreadLocalRng = SeededRng;
    type OneshotSender<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotSender<T>;
    type OneshotReceiverError = <TokioRuntime as AsyncRuntime>::OneshotReceiverError;
    type OneshotReceiver<T: OptionalSend> = <TokioRuntime as AsyncRuntime>::OneshotReceiver<T>;

    fn spawn<T>(future: T) -> Self::JoinHandle<T::Output>
    where
        T: Future + OptionalSend + 'static,
        T::Output: OptionalSend + 'static,
    {
        crate::env::spawn_inheriting(future)
    }

    fn sleep(duration: Duration) -> Self::Sleep {
        sleep_until(<Instant as openraft::Instant>::now() + duration)
    }

    fn sleep_until(deadline: Self::Instant) -> Self::Sleep {
        sleep_until(deadline)
    }

    fn timeout<R, F: Future<Output = R> + OptionalSend>(
        duration: Duration,
        future: F,
    ) -> Self::Timeout<R, F> {
        Self::timeout_at(<Instant as openraft::Instant>::now() + duration, future)
    }

    fn timeout_at<R, F: Future<Output = R> + OptionalSend>(
        deadline: Self::Instant,
        future: F,
    ) -> Self::Timeout<R, F> {
        Timeout {
            future: Box::pin(future),
            sleep: sleep_until(deadline),
        }
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

    /// A machine clock that runs at twice the runtime's speed.
    struct Fast(tokio::time::Instant);

    impl crate::env::GroupClock for Fast {
        fn now(&self) -> Instant {
            Instant::from_duration(self.0.elapsed() * 2)
        }

        fn sleep_until(
            &self,
            deadline: Instant,
        ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
            Box::pin(tokio::time::sleep_until(
                self.0 + deadline.as_duration() / 2,
            ))
        }
    }

    #[test]
    fn raft_times_itself_by_its_groups_machine_clock() {
        let rt = crate::env::paused_runtime();
        rt.block_on(async {
            let start = tokio::time::Instant::now();
            let group = TaskGroup::new();
            group.set_clock(std::sync::Arc::new(Fast(start)));
            let inside = group.spawn(async move {
                let t0 = <Instant as openraft::Instant>::now();
                CairnRuntime::sleep(Duration::from_secs(4)).await;
                let slept = start.elapsed();
                // A timeout on the machine's clock, and a future that
                // beats its deadline.
                let late = CairnRuntime::timeout(
                    Duration::from_secs(2),
                    tokio::time::sleep(Duration::from_secs(5)),
                )
                .await;
                let early = CairnRuntime::timeout(Duration::from_secs(2), async { 7 }).await;
                (
                    <Instant as openraft::Instant>::now() - t0,
                    slept,
                    late,
                    early,
                )
            });
            let (read, slept, late, early) = inside.await.unwrap();
            // 4 s on a clock that runs twice as fast is 2 s of real time.
            assert_eq!(slept, Duration::from_secs(2));
            assert_eq!(late, Err(Elapsed));
            assert_eq!(early, Ok(7));
            // The clock read 4 s for the sleep and 2 s for the timeout.
            assert_eq!(read, Duration::from_secs(6));
            // Outside the group, Raft reads the runtime's clock.
            let t0 = <Instant as openraft::Instant>::now();
            CairnRuntime::sleep(Duration::from_secs(1)).await;
            assert_eq!(
                <Instant as openraft::Instant>::now() - t0,
                Duration::from_secs(1)
            );
            assert_eq!(t0 - Duration::from_secs(1_000_000), Instant::ZERO);
        });
    }
}

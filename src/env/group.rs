//! Task groups: the tasks of one simulated node, which stop together.
//!
//! A real process ends all its tasks when it crashes. A simulator that runs
//! many nodes on one runtime needs the same: every task a node starts,
//! directly or through a library, belongs to the node's [`TaskGroup`], and
//! [`TaskGroup::abort`] ends them all. A group can also be paused (its tasks
//! are not polled until it resumes), as a stopped process or a long GC pause
//! would be.
//!
//! Membership is inherited: while a group's task is polled, the group is
//! *current* on this thread, and [`spawn_inheriting`] (which code that has no `Env` at
//! hand uses: openraft's runtime, the Raft log's flusher) puts new tasks in
//! it. Outside any group, [`spawn_inheriting`] is `tokio::spawn`, so production code
//! pays nothing but a thread-local read.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};

use tokio::task::{AbortHandle, JoinHandle};

use crate::time::Instant;

thread_local! {
    static CURRENT: RefCell<Option<TaskGroup>> = const { RefCell::new(None) };
}

/// The clock of a group's machine, for code that asks the time with no
/// `Env` at hand: openraft's timers and instants (see
/// `consensus::runtime`). The simulator gives each node's group its
/// machine's clock, so a node whose clock drifts or jumps runs its Raft
/// timers by it, as a real process would by its own monotonic clock.
pub trait GroupClock: Send + Sync + 'static {
    /// The clock's reading now.
    fn now(&self) -> Instant;

    /// Completes when the clock reads `deadline`.
    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>>;
}

/// Tasks that stop (and pause) together.
#[derive(Clone, Default)]
pub struct TaskGroup {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    aborted: AtomicBool,
    paused: AtomicBool,
    /// Whether the simulator's fault points fire in this group's tasks
    /// (see [`crate::buggify`]).
    buggified: AtomicBool,
    state: Mutex<State>,
    /// What the first task of the group that panicked said.
    panic: Mutex<Option<String>>,
    /// The machine's clock, when it is not the runtime's.
    clock: OnceLock<Arc<dyn GroupClock>>,
}

#[derive(Default)]
struct State {
    /// Every task spawned into the group that may still run.
    tasks: Vec<AbortHandle>,
    /// How many `tasks` there were after the last sweep of finished ones.
    swept: usize,
    /// Tasks that were woken while the group was paused.
    parked: Vec<Waker>,
}

impl std::fmt::Debug for TaskGroup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TaskGroup")
            .field("aborted", &self.is_aborted())
            .field("paused", &self.is_paused())
            .finish()
    }
}

impl TaskGroup {
    /// An empty, running group.
    pub fn new() -> Self {
        Self::default()
    }

    /// The group whose task is being polled on this thread, if any.
    pub fn current() -> Option<TaskGroup> {
        CURRENT.with(|c| c.borrow().clone())
    }

    /// Spawns `task` on the current tokio runtime as a member of this group.
    /// In an aborted group the task is cancelled before it runs.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let handle = tokio::spawn(InGroup {
            group: self.clone(),
            task: Box::pin(task),
        });
        let mut s = self.lock();
        if self.is_aborted() {
            handle.abort();
            return handle;
        }
        // Finished tasks are dropped from the list whenever it has doubled,
        // so a long-lived group's list stays proportional to its live tasks.
        if s.tasks.len() >= 2 * s.swept.max(32) {
            s.tasks.retain(|h| !h.is_finished());
            s.swept = s.tasks.len();
        }
        s.tasks.push(handle.abort_handle());
        handle
    }

    /// Ends every task of the group, now and to come.
    pub fn abort(&self) {
        self.inner.aborted.store(true, Ordering::SeqCst);
        let (tasks, parked) = {
            let mut s = self.lock();
            (std::mem::take(&mut s.tasks), std::mem::take(&mut s.parked))
        };
        for t in tasks {
            t.abort();
        }
        drop(parked);
    }

    /// Whether [`abort`](Self::abort) was called.
    pub fn is_aborted(&self) -> bool {
        self.inner.aborted.load(Ordering::SeqCst)
    }

    /// Stops polling the group's tasks until [`resume`](Self::resume): what
    /// wakes them meanwhile (timers, packets) waits.
    pub fn pause(&self) {
        self.inner.paused.store(true, Ordering::SeqCst);
    }

    /// Lets a paused group run again, waking every task that was woken
    /// while it was paused.
    pub fn resume(&self) {
        self.inner.paused.store(false, Ordering::SeqCst);
        let parked = std::mem::take(&mut self.lock().parked);
        for w in parked {
            w.wake();
        }
    }

    /// Whether the group is paused.
    pub fn is_paused(&self) -> bool {
        self.inner.paused.load(Ordering::SeqCst)
    }

    /// Lets the simulator's fault points fire in this group's tasks, or
    /// stops them (see [`crate::buggify`]).
    pub fn set_buggified(&self, on: bool) {
        self.inner.buggified.store(on, Ordering::SeqCst);
    }

    /// Whether the simulator's fault points fire in this group's tasks.
    pub fn is_buggified(&self) -> bool {
        self.inner.buggified.load(Ordering::SeqCst)
    }

    /// Gives the group's tasks `clock` as their machine's clock (see
    /// [`GroupClock`]); set once, before the group runs anything. A later
    /// call is ignored: a machine keeps its clock.
    pub fn set_clock(&self, clock: Arc<dyn GroupClock>) {
        let _ = self.inner.clock.set(clock);
    }

    /// The machine clock of the group whose task is being polled on this
    /// thread, if it has one.
    pub fn current_clock() -> Option<Arc<dyn GroupClock>> {
        CURRENT.with(|c| {
            c.borrow()
                .as_ref()
                .and_then(|g| g.inner.clock.get().cloned())
        })
    }

    /// What the first of the group's tasks to panic said, if one did (the
    /// panic itself goes on to tokio, which ends that task).
    pub fn panicked(&self) -> Option<String> {
        self.inner
            .panic
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Spawns `task` in the current task group (see the module's notes), or on
/// the plain tokio runtime outside any group.
pub fn spawn_inheriting<F>(task: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    match TaskGroup::current() {
        Some(g) => g.spawn(task),
        None => tokio::spawn(task),
    }
}

/// A group member: makes its group current while it is polled, and waits
/// while the group is paused.
struct InGroup<F> {
    group: TaskGroup,
    task: Pin<Box<F>>,
}

impl<F: Future> Future for InGroup<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.get_mut();
        if this.group.is_paused() {
            let mut s = this.group.lock();
            // Checked again under the lock, so a resume cannot slip between
            // the check and the parking.
            if this.group.is_paused() {
                s.parked.push(cx.waker().clone());
                return Poll::Pending;
            }
        }
        let previous = CURRENT.with(|c| c.replace(Some(this.group.clone())));
        // Restored even if the task panics, so the thread does not go on
        // spawning into a group it has left.
        struct Restore(Option<TaskGroup>);
        impl Drop for Restore {
            fn drop(&mut self) {
                let previous = self.0.take();
                CURRENT.with(|c| *c.borrow_mut() = previous);
            }
        }
        let _restore = Restore(previous);
        let task = &mut this.task;
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| task.as_mut().poll(cx))) {
            Ok(p) => p,
            Err(payload) => {
                let what = payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a task panicked".into());
                let mut first = this
                    .group
                    .inner
                    .panic
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                first.get_or_insert(what);
                drop(first);
                std::panic::resume_unwind(payload)
            }
        }
    }
}

/// A single-threaded runtime whose clock moves only when every task
/// waits, for tests of timers.
#[cfg(test)]
pub(crate) fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    #[test]
    fn abort_ends_every_task_including_those_spawned_without_the_group() {
        paused_runtime().block_on(async {
            let group = TaskGroup::new();
            let ticks = Arc::new(AtomicU32::new(0));
            let t = ticks.clone();
            group.spawn(async move {
                // A grandchild spawned the way a library would.
                spawn_inheriting(async move {
                    loop {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        t.fetch_add(1, Ordering::SeqCst);
                    }
                });
                std::future::pending::<()>().await;
            });
            tokio::time::sleep(Duration::from_millis(55)).await;
            let before = ticks.load(Ordering::SeqCst);
            assert_eq!(before, 5);
            group.abort();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(ticks.load(Ordering::SeqCst), before);
            // A group that was aborted starts nothing new.
            let late = group.spawn(async { 1 });
            assert!(late.await.unwrap_err().is_cancelled());
            // Outside any group, spawn is tokio's.
            assert!(TaskGroup::current().is_none());
            assert_eq!(spawn_inheriting(async { 2 }).await.unwrap(), 2);
        });
    }

    #[test]
    fn a_paused_group_catches_up_when_it_resumes() {
        paused_runtime().block_on(async {
            let group = TaskGroup::new();
            let ticks = Arc::new(AtomicU32::new(0));
            let t = ticks.clone();
            group.spawn(async move {
                loop {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    t.fetch_add(1, Ordering::SeqCst);
                }
            });
            tokio::time::sleep(Duration::from_millis(35)).await;
            group.pause();
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert_eq!(ticks.load(Ordering::SeqCst), 3, "no progress while paused");
            group.resume();
            tokio::time::sleep(Duration::from_millis(1)).await;
            assert_eq!(ticks.load(Ordering::SeqCst), 4, "the due timer fires once");
        });
    }

    #[test]
    fn a_panic_is_kept_for_whoever_runs_the_group() {
        paused_runtime().block_on(async {
            let group = TaskGroup::new();
            let r = group.spawn(async { panic!("disk on fire") }).await;
            assert!(r.unwrap_err().is_panic());
            assert_eq!(group.panicked().as_deref(), Some("disk on fire"));
        });
    }

    #[test]
    fn finished_tasks_do_not_pile_up() {
        paused_runtime().block_on(async {
            let group = TaskGroup::new();
            for _ in 0..1000 {
                group.spawn(async {}).await.unwrap();
            }
            assert!(group.lock().tasks.len() <= 64);
        });
    }
}

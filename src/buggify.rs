//! Fault points, after FoundationDB's BUGGIFY: places in the product where
//! the simulator may take a rare but legal turn (a short read, a late
//! fsync, an RPC given up on early) so that tests reach the code that
//! handles it. Real networks and disks take these turns seldom, and at
//! the worst moment; a simulated run takes them on purpose, from its seed.
//!
//! A point fires only when all of these hold:
//! - the crate is built with the `buggify` feature (cairn-sim turns it
//!   on; the `cairn` binary alone is built without it, and then
//!   [`fires`] is a constant `false` that the compiler removes);
//! - this thread's run has [`seeded`] the fault points;
//! - the task asking belongs to a [`TaskGroup`] (a simulated node) whose
//!   fault points are on ([`TaskGroup::set_buggified`]);
//! - the seeded draw comes up, at the point's own [`Point::rate`].
//!
//! The draws come from one generator per thread, in the order the run's
//! single thread reaches the points, so a run replays exactly.
//!
//! [`TaskGroup`]: crate::env::TaskGroup
//! [`TaskGroup::set_buggified`]: crate::env::TaskGroup::set_buggified

/// A place in the product that can take a rare turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    /// A TCP read returns fewer bytes than it could (as a real socket does
    /// when a segment boundary falls there): framing must not assume
    /// whole messages.
    ShortRead,
    /// The Raft log's group commit waits before its fsync, as on a busy
    /// disk: openraft must count an entry only once it is flushed.
    LateFsync,
    /// An RPC client gives up on a call it has sent, as if its deadline
    /// had passed: the request may still take effect, and the caller must
    /// treat the outcome as unknown.
    RpcTimeout,
}

impl Point {
    /// Every point.
    pub const ALL: [Point; 3] = [Point::ShortRead, Point::LateFsync, Point::RpcTimeout];

    /// How often the point fires on a node whose points are on.
    pub fn rate(self) -> f64 {
        match self {
            Point::ShortRead => 0.25,
            Point::LateFsync => 0.2,
            Point::RpcTimeout => 0.02,
        }
    }

    /// The point's name in documentation and traces.
    pub fn name(self) -> &'static str {
        match self {
            Point::ShortRead => "short_read",
            Point::LateFsync => "late_fsync",
            Point::RpcTimeout => "rpc_timeout",
        }
    }
}

#[cfg(feature = "buggify")]
mod draws {
    use std::cell::Cell;

    use super::Point;

    thread_local! {
        /// SplitMix64 state; `None`: no run on this thread has seeded it.
        static STATE: Cell<Option<u64>> = const { Cell::new(None) };
        /// How often each point fired since the seed, by [`Point::ALL`]'s order.
        static FIRED: Cell<[u64; Point::ALL.len()]> = const { Cell::new([0; Point::ALL.len()]) };
    }

    pub(super) fn seed(seed: Option<u64>) {
        STATE.with(|s| s.set(seed));
        FIRED.with(|f| f.set([0; Point::ALL.len()]));
    }

    pub(super) fn count(point: Point) {
        FIRED.with(|f| {
            let mut v = f.get();
            if let Some(i) = Point::ALL.iter().position(|&p| p == point) {
                v[i] += 1;
            }
            f.set(v);
        });
    }

    pub(super) fn fired() -> [u64; Point::ALL.len()] {
        FIRED.with(Cell::get)
    }

    pub(super) fn seeded() -> bool {
        STATE.with(|s| s.get().is_some())
    }

    /// The next draw, if seeded.
    pub(super) fn next() -> Option<u64> {
        STATE.with(|s| {
            let mut x = s.get()?;
            let draw = crate::splitmix::next(&mut x);
            s.set(Some(x));
            Some(draw)
        })
    }
}

/// Turns this thread's fault points on, drawing from `seed`, until the
/// guard drops. A simulator calls it once per run; which nodes' points
/// fire is up to each node's task group.
#[cfg(feature = "buggify")]
pub fn seeded(seed: u64) -> Seeded {
    draws::seed(Some(seed));
    Seeded(())
}

/// Keeps this thread's fault points seeded; see [`seeded`].
#[cfg(feature = "buggify")]
#[derive(Debug)]
pub struct Seeded(());

#[cfg(feature = "buggify")]
impl Drop for Seeded {
    fn drop(&mut self) {
        draws::seed(None);
    }
}

/// Whether `point` takes its rare turn here and now.
#[cfg(feature = "buggify")]
pub fn fires(point: Point) -> bool {
    if !draws::seeded() {
        return false;
    }
    if !crate::env::TaskGroup::current().is_some_and(|g| g.is_buggified()) {
        return false;
    }
    let fire = draws::next().is_some_and(|d| crate::splitmix::unit(d) < point.rate());
    if fire {
        draws::count(point);
    }
    fire
}

/// How often each point fired on this thread since it was [`seeded`]:
/// what a run's summary reports, so that a sweep shows its faults fired.
pub fn fired() -> Vec<(Point, u64)> {
    #[cfg(feature = "buggify")]
    {
        Point::ALL.into_iter().zip(draws::fired()).collect()
    }
    #[cfg(not(feature = "buggify"))]
    {
        Vec::new()
    }
}

/// Whether `point` takes its rare turn: never, in a build without the
/// `buggify` feature.
#[cfg(not(feature = "buggify"))]
#[inline(always)]
pub fn fires(_point: Point) -> bool {
    false
}

/// A number below `n` (at least 1) from the fault points' generator, for
/// how far a point goes once it fires (how short a read, how late a
/// sync); 0 without a seeded run.
pub fn below(n: u64) -> u64 {
    #[cfg(feature = "buggify")]
    {
        draws::next().map_or(0, |d| d % n.max(1))
    }
    #[cfg(not(feature = "buggify"))]
    {
        let _ = n;
        0
    }
}

#[cfg(all(test, feature = "buggify"))]
mod tests {
    use super::*;
    use crate::env::TaskGroup;

    /// Runs `f` as a task of `group` on a fresh runtime.
    fn in_group<T: Send + 'static>(group: &TaskGroup, f: impl FnOnce() -> T + Send + 'static) -> T {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async { group.spawn(async move { f() }).await.unwrap() })
    }

    fn pattern(seed: u64) -> Vec<bool> {
        let _on = seeded(seed);
        let g = TaskGroup::new();
        g.set_buggified(true);
        in_group(&g, || (0..200).map(|_| fires(Point::ShortRead)).collect())
    }

    #[test]
    fn points_fire_only_in_a_seeded_run_on_a_buggified_node() {
        let g = TaskGroup::new();
        assert!(!in_group(&g, || fires(Point::ShortRead)), "unseeded");
        let _on = seeded(1);
        assert!(
            !in_group(&g, || (0..100).any(|_| fires(Point::ShortRead))),
            "node's points are off"
        );
        assert!(
            !(0..100).any(|_| fires(Point::ShortRead)),
            "outside any node"
        );
        g.set_buggified(true);
        let fired = in_group(&g, || (0..1000).filter(|_| fires(Point::ShortRead)).count());
        assert!((150..350).contains(&fired), "{fired} of 1000 at 0.25");
        assert_eq!(
            super::fired(),
            [
                (Point::ShortRead, fired as u64),
                (Point::LateFsync, 0),
                (Point::RpcTimeout, 0)
            ]
        );
    }

    #[test]
    fn the_same_seed_fires_the_same_points() {
        assert_eq!(pattern(7), pattern(7));
        assert_ne!(pattern(7), pattern(8));
    }
}

//! The probe's own state: where this node is in its round through the
//! probe order (its walk, and the step it is at), and the probe in flight.
//! Nothing here knows the rest of the node; [`super`] drives it.

use std::sync::Arc;

use crate::time::Instant;

/// Where this node is in its probe round, and the probe in flight.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    /// The next step of this round through the probe order.
    pub(crate) index: usize,
    /// This node's own walk through a shared probe order (see `preload`);
    /// `None`: the order is private and walked as it stands.
    pub(crate) walk: Option<Walk>,
    /// The probe in flight, if any.
    pub(crate) run: Option<ProbeRun>,
    /// A probe tick came while a probe was in flight: probe again as soon
    /// as it ends.
    pub(crate) tick_missed: bool,
}

impl Probe {
    /// The slot of the probe order visited at step `i` of this round.
    pub(crate) fn slot(&self, i: usize) -> usize {
        match self.walk {
            Some(w) if i < w.len => w.slot(i),
            // Past the walk: members added since, in the order they came.
            _ => i,
        }
    }
}

/// A walk through the first `len` slots of a probe order.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Walk {
    pub(crate) offset: usize,
    pub(crate) stride: usize,
    pub(crate) len: usize,
}

impl Walk {
    /// The slot visited at step `i` (< `len`).
    pub(crate) fn slot(self, i: usize) -> usize {
        (self.offset + i * self.stride) % self.len
    }
}

pub(crate) fn gcd(mut a: usize, mut b: usize) -> usize {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fallback {
    NotTried,
    Pending,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone)]
pub(crate) struct ProbeRun {
    pub(crate) seq: u32,
    pub(crate) target: Arc<str>,
    pub(crate) target_incarnation: u32,
    pub(crate) sent: Instant,
    pub(crate) indirect: bool,
    pub(crate) expected_nacks: usize,
    pub(crate) nacks: usize,
    pub(crate) fallback: Fallback,
    pub(crate) deadline_passed: bool,
    pub(crate) timeout_key: (Instant, u64),
    pub(crate) deadline_key: (Instant, u64),
}

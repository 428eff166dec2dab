//! The event trace of a run: every membership change every node saw, and
//! every fault the scenario injected, stamped with virtual time.
//!
//! Same scenario and seed give a byte-identical trace; its SHA-256 is the
//! run's fingerprint.

use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

/// SHA-256 of `bytes`, in lowercase hex: how traces, matrices and streams
/// are identified in provenance lines.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One line of `trace.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TraceEvent {
    /// Virtual time since the start of the run, in microseconds.
    pub t_us: u64,
    /// The observing node, or `"sim"` for injected faults.
    pub node: String,
    /// What happened: a membership event (`joined`, `suspect`, `alive`,
    /// `failed`, `left`, `updated`, `refuted`) or a fault (`partition`, ...).
    pub event: String,
    /// The member it is about, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    /// The member's incarnation, for membership events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub incarnation: Option<u32>,
    /// Fault parameters.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

impl TraceEvent {
    /// Virtual time as a duration.
    pub fn at(&self) -> Duration {
        Duration::from_micros(self.t_us)
    }
}

/// Collects events from every simulated host.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<TraceEvent>>>,
}

impl Recorder {
    /// Appends one event.
    pub fn record(&self, ev: TraceEvent) {
        self.events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(ev);
    }

    /// The events so far, ordered by time (stable: simultaneous events keep
    /// the order the simulation produced them in, which is deterministic).
    pub fn trace(&self) -> Trace {
        let mut events = self
            .events
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        events.sort_by_key(|e| e.t_us);
        Trace { events }
    }
}

/// A finished run's events.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Trace {
    /// The events, by time.
    pub events: Vec<TraceEvent>,
}

impl Trace {
    /// One JSON object per line.
    pub fn to_jsonl(&self) -> String {
        let mut out = String::with_capacity(self.events.len() * 96);
        for e in &self.events {
            // Serializing plain strings and integers cannot fail.
            let line = serde_json::to_string(e).unwrap_or_default();
            let _ = writeln!(out, "{line}");
        }
        out
    }

    /// SHA-256 of the JSON lines, in hex.
    pub fn hash(&self) -> String {
        sha256_hex(self.to_jsonl().as_bytes())
    }

    /// Membership events of one kind about `member`, as (observer, time).
    pub fn observations<'a>(
        &'a self,
        event: &'a str,
        member: &'a str,
    ) -> impl Iterator<Item = (&'a str, Duration)> + 'a {
        self.events
            .iter()
            .filter(move |e| {
                e.event == event && e.member.as_deref() == Some(member) && e.node != "sim"
            })
            .map(|e| (e.node.as_str(), e.at()))
    }

    /// Every membership event of one kind, as (observer, member, time).
    pub fn all<'a>(
        &'a self,
        event: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a str, Duration)> + 'a {
        self.events
            .iter()
            .filter(move |e| e.event == event && e.node != "sim")
            .filter_map(|e| Some((e.node.as_str(), e.member.as_deref()?, e.at())))
    }
}

/// Records `event` about `member`, seen by `node`, at `at`.
pub(crate) fn record_at(
    recorder: &Recorder,
    at: Duration,
    node: &str,
    event: &str,
    member: &str,
    detail: Option<String>,
) {
    recorder.record(TraceEvent {
        t_us: at.as_micros() as u64,
        node: node.to_owned(),
        event: event.into(),
        member: Some(member.to_owned()),
        incarnation: None,
        detail,
    });
}

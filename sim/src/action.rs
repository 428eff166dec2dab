//! What a scenario does to a run: the faults and operations of its
//! timeline ([`Action`]), each at its point in virtual time
//! ([`TimedAction`]), naming nodes by selector in a file and by name once
//! resolved for a run.

use std::time::Duration;

use crate::engine::full::workload::KvLoad;
use crate::output::trace::TraceEvent;

/// A change to a link's latency.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LatencyChange {
    /// This one-way latency.
    Set(Duration),
    /// The model's latency times this factor.
    Scale(f64),
    /// Back to the model's latency.
    Reset,
}

/// A fault or operation injected at a point in virtual time. `T` names the
/// nodes: selectors in a scenario, node names once resolved for a run.
#[derive(Debug, Clone, PartialEq)]
pub enum Action<T = Vec<String>> {
    /// Cut every link between these nodes and all others.
    Isolate(T),
    /// Cut every link between the two sets.
    Partition(T, T),
    /// Cut the links from the first set to the second, one way: the second
    /// stops hearing the first, while the first still hears the second.
    OneWay(T, T),
    /// Restore every link cut by a partition.
    Heal,
    /// Restore the links between the two sets.
    HealBetween(T, T),
    /// Stall TCP between the two sets (`true`) or let it go again
    /// (`false`): bytes wait, then cross when TCP next retransmits them.
    /// Datagrams are not held.
    Clog(T, T, bool),
    /// Stop these nodes abruptly.
    Crash(T),
    /// Stop these servers abruptly in the middle of their next fsync: the
    /// commit fails, what was not synced is lost and the last write may
    /// survive torn. Nodes without a disk crash at once.
    CrashInFsync(T),
    /// Start these crashed or departed nodes again, as fresh processes.
    Restart(T),
    /// Rot one bit of one Raft record on each of these servers' disks
    /// while their machines are down (running nodes are left alone): the
    /// damage a checksum must catch when the server next starts.
    Corrupt(T),
    /// Make the next fsync with writes to lose on each of these running
    /// servers fail with an I/O error (EIO): those writes are lost, and
    /// the server must stop rather than carry on from them.
    FsyncError(T),
    /// Fill these servers' disks (`true`): every write fails with ENOSPC
    /// until they have room again (`false`).
    DiskFull(T, bool),
    /// Reset every TCP connection of these nodes, as a middlebox that lost
    /// its state or an RST does: what was in flight is lost, and both ends
    /// hear it. The nodes keep running.
    TcpReset(T),
    /// Let the product's fault points fire on these nodes (`true`), or
    /// stop them (see `cairn::buggify`): short reads, late fsyncs, RPCs
    /// given up on once sent.
    Buggify(T, bool),
    /// Start these nodes for the first time (or again after a leave).
    Join(T),
    /// Have these nodes leave gracefully (they stop afterwards).
    Leave(T),
    /// Drop this fraction of UDP packets on every link.
    Loss(f64),
    /// Drop this fraction on the links between the two sets; `None` goes
    /// back to the model's loss.
    LinkLoss(T, T, Option<f64>),
    /// Change the latency of the links between the two sets.
    Latency(T, T, LatencyChange),
    /// Skew these nodes' wall clocks by this many milliseconds.
    Skew(T, i64),
    /// Make these machines' clocks run at this rate (clock seconds per
    /// true second; 1 is true speed): every timer of theirs, and the wall
    /// clock with it, runs fast or slow.
    Drift(T, f64),
    /// Make these machines' monotonic clocks leap ahead by this much, as
    /// when a VM resumes on another host: timers due by then fire at once.
    ClockJump(T, Duration),
    /// Make these nodes slow: every datagram they send or receive takes
    /// this much longer (zero makes them well again).
    Slow(T, Duration),
    /// Freeze these nodes' processes, as a long GC pause or a stopped VM
    /// does: nothing of theirs runs, while what is sent to them waits;
    /// they resume (their timers late) after the duration, if one is
    /// given, or at a `Resume`.
    Pause(T, Option<Duration>),
    /// Let paused nodes run again.
    Resume(T),
    /// Run KV clients on these nodes (see [`workload`](crate::engine::full::workload)).
    KvLoad(T, KvLoad),
    /// Register a service with these nodes' agents over HTTP (see
    /// [`services`](crate::engine::full::services)).
    RegisterService(T, Registration),
    /// Set an intention through the first of these nodes' agents (see
    /// [`mesh`](crate::engine::full::mesh)).
    Intention(T, IntentionOrder),
    /// Rotate the Connect CA's root through the first of these nodes'
    /// agents (`PUT /v1/connect/ca/configuration`).
    CaRotate(T),
    /// Create a policy and a token, both named by the string, through the
    /// first of these nodes' agents (see [`acl`](crate::engine::full::acl)).
    AclToken(T, String),
}

impl<T> Action<T> {
    /// The same action with its node sets mapped by `f`.
    pub fn map<U>(&self, mut f: impl FnMut(&T) -> U) -> Action<U> {
        match self {
            Action::Isolate(a) => Action::Isolate(f(a)),
            Action::Partition(a, b) => Action::Partition(f(a), f(b)),
            Action::OneWay(a, b) => Action::OneWay(f(a), f(b)),
            Action::Clog(a, b, on) => Action::Clog(f(a), f(b), *on),
            Action::Heal => Action::Heal,
            Action::HealBetween(a, b) => Action::HealBetween(f(a), f(b)),
            Action::Crash(a) => Action::Crash(f(a)),
            Action::CrashInFsync(a) => Action::CrashInFsync(f(a)),
            Action::Restart(a) => Action::Restart(f(a)),
            Action::Corrupt(a) => Action::Corrupt(f(a)),
            Action::FsyncError(a) => Action::FsyncError(f(a)),
            Action::DiskFull(a, on) => Action::DiskFull(f(a), *on),
            Action::TcpReset(a) => Action::TcpReset(f(a)),
            Action::Buggify(a, on) => Action::Buggify(f(a), *on),
            Action::Join(a) => Action::Join(f(a)),
            Action::Leave(a) => Action::Leave(f(a)),
            Action::Loss(r) => Action::Loss(*r),
            Action::LinkLoss(a, b, r) => Action::LinkLoss(f(a), f(b), *r),
            Action::Latency(a, b, c) => Action::Latency(f(a), f(b), *c),
            Action::Skew(a, ms) => Action::Skew(f(a), *ms),
            Action::Drift(a, r) => Action::Drift(f(a), *r),
            Action::ClockJump(a, d) => Action::ClockJump(f(a), *d),
            Action::Slow(a, d) => Action::Slow(f(a), *d),
            Action::Pause(a, d) => Action::Pause(f(a), *d),
            Action::Resume(a) => Action::Resume(f(a)),
            Action::KvLoad(a, l) => Action::KvLoad(f(a), *l),
            Action::RegisterService(a, r) => Action::RegisterService(f(a), r.clone()),
            Action::Intention(a, o) => Action::Intention(f(a), o.clone()),
            Action::CaRotate(a) => Action::CaRotate(f(a)),
            Action::AclToken(a, t) => Action::AclToken(f(a), t.clone()),
        }
    }

    /// The action's name in traces and scenario files.
    pub fn name(&self) -> &'static str {
        match self {
            Action::Isolate(_) | Action::Partition(..) => "partition",
            Action::OneWay(..) => "partition_one_way",
            Action::Clog(_, _, true) => "clog",
            Action::Clog(_, _, false) => "unclog",
            Action::Heal | Action::HealBetween(..) => "heal",
            Action::Crash(_) => "crash",
            Action::CrashInFsync(_) => "crash_in_fsync",
            Action::Restart(_) => "restart",
            Action::Corrupt(_) => "corrupt",
            Action::FsyncError(_) => "fsync_error",
            Action::DiskFull(_, true) => "disk_full",
            Action::DiskFull(_, false) => "disk_freed",
            Action::TcpReset(_) => "tcp_reset",
            Action::Buggify(_, true) => "buggify",
            Action::Buggify(_, false) => "buggify_off",
            Action::Join(_) => "join",
            Action::Leave(_) => "leave",
            Action::Loss(_) => "loss",
            Action::LinkLoss(_, _, Some(_)) => "loss",
            Action::LinkLoss(_, _, None) => "loss_off",
            Action::Latency(_, _, LatencyChange::Reset) => "latency_reset",
            Action::Latency(..) => "latency",
            Action::Skew(..) => "skew",
            Action::Drift(..) => "drift",
            Action::ClockJump(..) => "clock_jump",
            Action::Slow(..) => "slow",
            Action::Pause(..) => "pause",
            Action::Resume(_) => "resume",
            Action::KvLoad(..) => "kv_load",
            Action::RegisterService(_, reg) if reg.connect => "connect_service",
            Action::RegisterService(..) => "register_service",
            Action::Intention(..) => "intention",
            Action::CaRotate(_) => "ca_rotate",
            Action::AclToken(..) => "acl_token",
        }
    }
}

impl Action {
    /// Every node the action names.
    pub fn nodes(&self) -> Vec<&String> {
        match self {
            Action::Isolate(a)
            | Action::Crash(a)
            | Action::CrashInFsync(a)
            | Action::Restart(a)
            | Action::Corrupt(a)
            | Action::FsyncError(a)
            | Action::DiskFull(a, _)
            | Action::TcpReset(a)
            | Action::Buggify(a, _)
            | Action::Join(a)
            | Action::Leave(a)
            | Action::Skew(a, _)
            | Action::Drift(a, _)
            | Action::ClockJump(a, _)
            | Action::Slow(a, _)
            | Action::Pause(a, _)
            | Action::Resume(a)
            | Action::KvLoad(a, _)
            | Action::RegisterService(a, _)
            | Action::Intention(a, _)
            | Action::CaRotate(a)
            | Action::AclToken(a, _) => a.iter().collect(),
            Action::Partition(a, b)
            | Action::OneWay(a, b)
            | Action::Clog(a, b, _)
            | Action::HealBetween(a, b)
            | Action::LinkLoss(a, b, _)
            | Action::Latency(a, b, _) => a.iter().chain(b).collect(),
            Action::Heal | Action::Loss(_) => Vec::new(),
        }
    }

    /// Whether the action changes nothing: a lifecycle action left with no
    /// node to change (see [`effective`](Self::effective)).
    pub fn is_noop(&self) -> bool {
        self.nodes().is_empty() && !matches!(self, Action::Heal | Action::Loss(_))
    }

    /// Whether the action reaches no node, or (for one on links) no link:
    /// one side has no node. A chaos fault aimed at the Raft leader while
    /// there was none is such an action.
    pub fn reaches_nothing(&self) -> bool {
        match self {
            Action::Partition(a, b)
            | Action::OneWay(a, b)
            | Action::Clog(a, b, _)
            | Action::HealBetween(a, b)
            | Action::LinkLoss(a, b, _)
            | Action::Latency(a, b, _) => a.is_empty() || b.is_empty(),
            other => other.is_noop(),
        }
    }

    /// The action limited to the nodes it can change, given each node's
    /// status: only running nodes crash or leave, only stopped ones start.
    pub fn effective(&self, status: impl Fn(&str) -> Option<NodeStatus>) -> Action {
        let keep = |set: &Vec<String>, want: fn(NodeStatus) -> bool| -> Vec<String> {
            set.iter()
                .filter(|x| status(x).is_some_and(want))
                .cloned()
                .collect()
        };
        match self {
            Action::Crash(set) => Action::Crash(keep(set, |s| s == NodeStatus::Running)),
            Action::CrashInFsync(set) => {
                Action::CrashInFsync(keep(set, |s| s == NodeStatus::Running))
            }
            Action::Leave(set) => Action::Leave(keep(set, |s| s == NodeStatus::Running)),
            Action::Restart(set) => Action::Restart(keep(set, |s| s != NodeStatus::Running)),
            Action::Corrupt(set) => Action::Corrupt(keep(set, |s| s != NodeStatus::Running)),
            Action::FsyncError(set) => Action::FsyncError(keep(set, |s| s == NodeStatus::Running)),
            Action::Join(set) => Action::Join(keep(set, |s| s != NodeStatus::Running)),
            Action::Pause(set, d) => Action::Pause(keep(set, |s| s == NodeStatus::Running), *d),
            Action::Resume(set) => Action::Resume(keep(set, |s| s == NodeStatus::Running)),
            other => other.clone(),
        }
    }

    /// The fact a lifecycle action creates about each of its nodes (what
    /// the rest of the pool should come to know): `left`, `failed` or
    /// `joined`.
    pub fn fact(&self) -> Option<(&[String], &'static str)> {
        match self {
            Action::Leave(s) => Some((s, "left")),
            Action::Crash(s) => Some((s, "failed")),
            Action::Join(s) | Action::Restart(s) => Some((s, "joined")),
            _ => None,
        }
    }

    /// The trace line recording this action at `at`.
    pub fn trace_event(&self, at: Duration) -> TraceEvent {
        TraceEvent {
            t_us: at.as_micros() as u64,
            node: "sim".into(),
            event: self.name().into(),
            member: None,
            incarnation: None,
            detail: self.detail(),
        }
    }

    /// The parameters, for the trace.
    pub fn detail(&self) -> Option<String> {
        let pair = |a: &[String], b: &[String]| format!("{}|{}", a.join(","), b.join(","));
        match self {
            Action::Isolate(n)
            | Action::Crash(n)
            | Action::CrashInFsync(n)
            | Action::Restart(n)
            | Action::Corrupt(n)
            | Action::FsyncError(n)
            | Action::DiskFull(n, _)
            | Action::TcpReset(n)
            | Action::Buggify(n, _)
            | Action::Join(n)
            | Action::Leave(n) => Some(n.join(",")),
            Action::Partition(a, b)
            | Action::OneWay(a, b)
            | Action::Clog(a, b, _)
            | Action::HealBetween(a, b) => Some(pair(a, b)),
            Action::Heal => None,
            Action::Loss(r) => Some(format!("{r}")),
            Action::LinkLoss(a, b, r) => Some(match r {
                Some(r) => format!("{}:{r}", pair(a, b)),
                None => pair(a, b),
            }),
            Action::Latency(a, b, c) => Some(format!("{}:{c:?}", pair(a, b))),
            Action::Skew(n, ms) => Some(format!("{}:{ms}ms", n.join(","))),
            Action::Drift(n, r) => Some(format!("{}:{r}", n.join(","))),
            Action::ClockJump(n, d) => Some(format!("{}:{d:?}", n.join(","))),
            Action::Slow(n, d) => Some(format!("{}:{d:?}", n.join(","))),
            Action::Pause(n, Some(d)) => Some(format!("{}:{d:?}", n.join(","))),
            Action::Pause(n, None) | Action::Resume(n) => Some(n.join(",")),
            Action::KvLoad(n, l) => Some(format!("{}:{}", n.join(","), l.detail())),
            Action::RegisterService(n, r) => Some(format!("{}:{}", n.join(","), r.detail())),
            Action::Intention(n, o) => Some(format!("{}:{}", n.join(","), o.detail())),
            Action::CaRotate(n) => Some(n.join(",")),
            Action::AclToken(n, t) => Some(format!("{}:{t}", n.join(","))),
        }
    }
}

/// Whether `name` starts the run waiting: its first lifecycle event (crash,
/// restart, join, leave) is a join, which starts it.
pub fn starts_waiting(name: &str, actions: &[TimedAction]) -> bool {
    actions
        .iter()
        .find(|a| {
            matches!(&a.action, Action::Crash(s) | Action::Restart(s) | Action::Join(s) | Action::Leave(s) if s.iter().any(|x| x == name))
        })
        .is_some_and(|a| matches!(a.action, Action::Join(_)))
}

/// An action and when it happens.
#[derive(Debug, Clone, PartialEq)]
pub struct TimedAction<T = Vec<String>> {
    /// Virtual time since the start.
    pub at: Duration,
    /// What happens.
    pub action: Action<T>,
}

/// What a node is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeStatus {
    /// Not started yet: a `join` event starts it.
    Waiting,
    /// Running.
    Running,
    /// Crashed.
    Crashed,
    /// Left gracefully.
    Left,
}

impl NodeStatus {
    /// Lowercase name for files.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Waiting => "waiting",
            NodeStatus::Running => "running",
            NodeStatus::Crashed => "crashed",
            NodeStatus::Left => "left",
        }
    }
}

/// An intention an `intention` event sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntentionOrder {
    /// Source service, or `*`.
    pub source: String,
    /// Destination service, or `*`.
    pub destination: String,
    /// Allow, or deny.
    pub allow: bool,
}

/// A service a `register_service` event registers on each node it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Service name (also the instance ID).
    pub name: String,
    /// Port.
    pub port: u16,
    /// Tags.
    pub tags: Vec<String>,
    /// With a sidecar proxy and an application behind it (a
    /// `connect_service` event).
    pub connect: bool,
    /// The service the application calls through its sidecar.
    pub upstream: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_link_action_with_a_side_of_nobody_reaches_nothing() {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = v(&["a", "b"]);
        assert!(Action::LinkLoss(v(&[]), all.clone(), Some(0.3)).reaches_nothing());
        assert!(Action::Partition(all.clone(), v(&[])).reaches_nothing());
        assert!(!Action::LinkLoss(v(&["a"]), all.clone(), Some(0.3)).reaches_nothing());
        assert!(Action::Crash(v(&[])).reaches_nothing());
        assert!(!Action::Crash(v(&["a"])).reaches_nothing());
        assert!(!Action::Heal.reaches_nothing());
    }
}

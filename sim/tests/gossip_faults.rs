//! Gossip fault tests in the simulator: real agents on turmoil.

use std::time::Duration;

use cairn_sim::{run_cluster, Action, ClusterSpec, TimedAction, Trace};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn at(s: u64, action: Action) -> TimedAction {
    TimedAction {
        at: secs(s),
        action,
    }
}

fn run(spec: &ClusterSpec, actions: &[TimedAction]) -> Trace {
    run_cluster(spec, actions, |_| {})
        .expect("simulation runs")
        .trace
}

/// Everyone sees everyone: each node has a `joined` for each other node.
/// Returns when the last of those happened.
fn converged_by(trace: &Trace, nodes: &[String]) -> Duration {
    let mut latest = Duration::ZERO;
    for a in nodes {
        for b in nodes.iter().filter(|b| *b != a) {
            let t = trace
                .events
                .iter()
                .find(|e| e.node == *a && e.member.as_deref() == Some(b) && e.event == "joined")
                .unwrap_or_else(|| panic!("{a} never saw {b} join"))
                .at();
            latest = latest.max(t);
        }
    }
    latest
}

#[test]
fn partitioned_node_is_declared_failed_then_refutes_after_heal() {
    let spec = ClusterSpec::new(20, 7, secs(75));
    let cut = secs(20);
    let trace = run(
        &spec,
        &[
            at(20, Action::Isolate(vec!["dc1-19".into()])),
            at(45, Action::Heal),
        ],
    );
    assert!(
        converged_by(&trace, &spec.names()) < cut,
        "converged before the partition"
    );

    // Every other node declares n19 failed while it is cut off.
    let failed: Vec<_> = trace.observations("failed", "dc1-19").collect();
    let observers: std::collections::BTreeSet<_> = failed.iter().map(|(o, _)| *o).collect();
    assert_eq!(
        observers.len(),
        19,
        "all 19 others declare n19 failed: {failed:?}"
    );
    assert!(failed.iter().all(|(_, t)| *t > cut && *t < secs(45)));

    // After the heal n19 refutes with a higher incarnation and everyone
    // takes it back.
    let refuted: Vec<_> = trace
        .observations("refuted", "dc1-19")
        .filter(|(_, t)| *t > secs(45))
        .collect();
    assert!(!refuted.is_empty(), "n19 refutes after the heal");
    let back: std::collections::BTreeSet<_> = trace
        .events
        .iter()
        .filter(|e| {
            e.member.as_deref() == Some("dc1-19") && e.event == "joined" && e.at() > secs(45)
        })
        .map(|e| e.node.as_str())
        .collect();
    assert_eq!(back.len(), 19, "all others see n19 again: {back:?}");
    let last_back = trace
        .events
        .iter()
        .filter(|e| {
            e.member.as_deref() == Some("dc1-19") && e.event == "joined" && e.at() > secs(45)
        })
        .map(|e| e.at())
        .max()
        .unwrap_or_default();
    // n19 hears it is dead from the first node it pings, refutes, and the
    // refutation spreads: seconds, not a reconnect period (30 s).
    assert!(
        last_back < secs(45 + 10),
        "everyone took n19 back only at {last_back:?}"
    );
    eprintln!(
        "all 19 took n19 back {:.2}s after the heal",
        (last_back - secs(45)).as_secs_f64()
    );
    // No one else was declared failed.
    let others: Vec<_> = trace
        .all("failed")
        .filter(|(o, m, _)| *m != "dc1-19" && *o != "dc1-19")
        .collect();
    assert!(others.is_empty(), "false failures: {others:?}");
}

#[test]
fn ten_percent_loss_for_two_minutes_fails_no_healthy_node() {
    loss_run(ClusterSpec::new(20, 11, secs(150)), "with TCP fallback");
}

/// Without the TCP fallback probe (turmoil's TCP never loses packets, so
/// it rescues every probe), lost probes lead to real suspicions; indirect
/// probes, refutation and Lifeguard must still keep every node alive.
#[test]
fn ten_percent_loss_without_tcp_fallback_fails_no_healthy_node() {
    let mut spec = ClusterSpec::new(20, 12, secs(150));
    spec.gossip.disable_tcp_pings = true;
    let suspicions = loss_run(spec, "UDP only");
    assert!(
        suspicions > 0,
        "lossy UDP-only probing should raise some suspicions"
    );
}

fn loss_run(spec: ClusterSpec, label: &str) -> usize {
    let out = run_cluster(
        &spec,
        &[at(25, Action::Loss(0.10)), at(145, Action::Loss(0.0))],
        |_| {},
    )
    .unwrap();
    let trace = &out.trace;
    assert!(converged_by(trace, &spec.names()) < secs(25));
    // The loss really happened: about a tenth of all UDP packets vanished.
    let (sent, dropped) = out.lossy_packets;
    let rate = dropped as f64 / sent as f64;
    assert!(
        sent > 5_000 && (0.09..0.11).contains(&rate),
        "{dropped} of {sent} dropped"
    );
    let failed: Vec<_> = trace.all("failed").collect();
    assert!(
        failed.is_empty(),
        "healthy nodes declared failed: {failed:?}"
    );
    let suspicions = trace.all("suspect").count();
    let refutations = trace.all("refuted").count();
    eprintln!(
        "10% loss, 20 nodes, 120 s, {label}: {dropped} of {sent} packets dropped, \
         {suspicions} suspect events, {refutations} refutations, 0 failures"
    );
    suspicions
}

/// A partition longer than gossip_to_the_dead_time: both sides forget each
/// other, and only the agents' reconnect loop (Serf's: retry a random failed
/// member every 30 s) brings the cluster back together.
#[test]
fn a_long_partition_heals_through_reconnect() {
    let spec = ClusterSpec::new(8, 21, secs(150));
    let trace = run(
        &spec,
        &[
            at(15, Action::Isolate(vec!["dc1-7".into()])),
            at(80, Action::Heal),
        ],
    );
    let failed: std::collections::BTreeSet<_> = trace
        .observations("failed", "dc1-7")
        .map(|(o, _)| o)
        .collect();
    assert_eq!(failed.len(), 7, "everyone declares n7 failed");
    // After the heal every node takes n7 back, and n7 takes every node back.
    for n in &spec.names()[..7] {
        let back = trace.events.iter().any(|e| {
            e.at() > secs(80)
                && e.node == *n
                && e.member.as_deref() == Some("dc1-7")
                && e.event == "joined"
        });
        assert!(back, "{n} sees n7 again");
        // n7 itself, cut off and so unhealthy, held its suspicions of the
        // others instead of declaring them dead: they come back as alive.
        let last = trace
            .events
            .iter()
            .rfind(|e| e.node == "dc1-7" && e.member.as_deref() == Some(n))
            .map(|e| e.event.as_str());
        assert!(
            matches!(last, Some("joined" | "alive")),
            "n7 sees {n} as {last:?}"
        );
    }
}

#[test]
fn same_seed_same_trace_other_seed_other_trace() {
    let actions = [
        at(5, Action::Crash(vec!["dc1-3".into()])),
        at(15, Action::Restart(vec!["dc1-3".into()])),
    ];
    let spec = |seed| ClusterSpec::new(6, seed, secs(25));
    let a = run(&spec(42), &actions);
    let b = run(&spec(42), &actions);
    let c = run(&spec(43), &actions);
    assert_eq!(a.hash(), b.hash(), "same seed must replay identically");
    assert_eq!(a, b);
    assert_ne!(a.hash(), c.hash(), "another seed must give another run");
}

/// Found by the fault property test: a node cut off early never condemns
/// the others (its own health is bad, so it defers its verdicts), while
/// they declare it dead and stop talking to it. After the heal its
/// verification pings are answered; it must then sync state with the
/// suspect, and the cluster must heal.
#[test]
fn a_node_cut_off_early_rejoins_after_the_heal() {
    let spec = ClusterSpec::new(6, 510, secs(90));
    let trace = run(
        &spec,
        &[
            at(5, Action::Isolate(vec!["dc1-0".into()])),
            at(45, Action::Heal),
        ],
    );
    // The others forgot it after gossiping its death for a while, so it
    // comes back as a fresh join.
    let back_after_heal = trace.events.iter().any(|e| {
        e.member.as_deref() == Some("dc1-0")
            && matches!(e.event.as_str(), "alive" | "joined")
            && e.node != "dc1-0"
            && e.at() > secs(45)
    });
    assert!(back_after_heal, "dc1-0 never came back");
    for o in spec.names().iter().skip(1) {
        let last = trace
            .events
            .iter()
            .rfind(|e| e.node == *o && e.member.as_deref() == Some("dc1-0"))
            .unwrap();
        assert!(
            matches!(last.event.as_str(), "alive" | "joined"),
            "{o}: {last:?}"
        );
    }
}

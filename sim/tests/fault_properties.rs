//! Property tests over random fault timelines: whatever crashes, leaves,
//! partitions and loss hit a small cluster, once the faults stop and everything is
//! healed and restarted, the cluster converges, and no node was ever
//! declared failed without cause.

use std::time::Duration;

use cairn_sim::scenario::{Check, ScenarioBuilder};
use cairn_sim::Action;
use proptest::prelude::*;

const NODES: usize = 6;
const QUIET_FROM: u64 = 45;

/// One random fault: (second, kind, node).
fn fault() -> impl Strategy<Value = (u64, u8, usize)> {
    (5u64..40, 0u8..8, 0..NODES)
}

fn action(kind: u8, node: &str) -> Action<Vec<&str>> {
    match kind {
        0 => Action::Crash(vec![node]),
        1 => Action::Restart(vec![node]),
        2 => Action::Isolate(vec![node]),
        3 => Action::Heal,
        4 => Action::Loss(0.2),
        5 => Action::Leave(vec![node]),
        // Split the cluster down the middle, or mend one node's links.
        6 => Action::Partition(vec!["count=3"], vec!["all"]),
        _ => Action::HealBetween(vec![node], vec!["all"]),
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 10,
        max_shrink_iters: 20,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_faults_then_quiet_converge_without_false_failures(
        faults in prop::collection::vec(fault(), 1..5),
        seed in 1u64..1_000,
    ) {
        // Every node's join targets are dc1-0 and dc1-1 (`Topology::join_targets`).
        // If both leave gracefully, they come back to an island, as in Consul: an
        // agent that left does not rejoin the members it knew (rejoin_after_leave
        // defaults to false), so each joins only the other, and the rest hold both
        // as left and never call on them. That is this retry_join's limit, not a
        // fault to find (seed 59, both leaving at 5 s).
        let leaves = |n: usize| faults.iter().any(|&(_, kind, node)| kind == 5 && node == n);
        prop_assume!(!(leaves(0) && leaves(1)));
        let names: Vec<String> = (0..NODES).map(|i| format!("dc1-{i}")).collect();
        let all: Vec<&str> = names.iter().map(String::as_str).collect();
        let mut b = ScenarioBuilder::new("random-faults", Duration::from_secs(QUIET_FROM + 45))
            .datacenter("dc1", NODES)
            .seed(seed);
        for (at, kind, node) in &faults {
            b = b.event_sel(Duration::from_secs(*at), action(*kind, &names[*node])).unwrap();
        }
        // The quiet period: every link healed and clean, every node back.
        let quiet = Duration::from_secs(QUIET_FROM);
        b = b
            .event_sel(quiet, Action::Heal).unwrap()
            .event_sel(quiet, Action::Loss(0.0)).unwrap()
            .event_sel(quiet, Action::Restart(all.clone())).unwrap()
            .with_check(Check::NoFalseFailures).unwrap()
            .with_check(Check::Converged { at: None }).unwrap();
        let s = b.build();
        let r = s.run(seed).unwrap();
        for c in &r.checks {
            prop_assert!(c.passed, "faults {:?} seed {}: {}: {}", faults, seed, c.check, c.detail);
        }
    }
}

/// Found by the property above (seed 396): both join targets of a pool
/// (`dc1-0` and `dc1-1`) crash, then restart together. Each rejoined only
/// the other, and the rest held both failed, so the two stayed an island
/// until Serf's reconnect loop (every 30 s, with probability
/// failed/alive per node) happened to try one of them. Consul closes this
/// gap with Serf's snapshot, and so does cairn now: a restarted agent
/// rejoins the members it knew (`cairn::agent::snapshot`).
#[test]
fn restarted_join_targets_find_the_rest_again() {
    let names: Vec<String> = (0..NODES).map(|i| format!("dc1-{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let quiet = Duration::from_secs(QUIET_FROM);
    let s = ScenarioBuilder::new("island", Duration::from_secs(QUIET_FROM + 45))
        .datacenter("dc1", NODES)
        .seed(396)
        .event_sel(Duration::from_secs(6), Action::Crash(vec!["dc1-1"]))
        .unwrap()
        .event_sel(Duration::from_secs(24), Action::Crash(vec!["dc1-0"]))
        .unwrap()
        .event_sel(quiet, Action::Restart(all))
        .unwrap()
        .with_check(Check::Converged { at: None })
        .unwrap()
        .build();
    let r = s.run(396).unwrap();
    for c in &r.checks {
        assert!(c.passed, "{}: {}", c.check, c.detail);
    }
}

/// The limit the property above leaves out, kept as Consul has it (seed 59):
/// when both join targets leave gracefully and come back, they rejoin only
/// each other. An agent that left ignores the members it knew (Consul's
/// `rejoin_after_leave = false`), and the rest hold both as left, which
/// nobody reconnects to. No one is declared failed; the pool is split in two.
#[test]
fn join_targets_that_left_come_back_alone_as_in_consul() {
    let names: Vec<String> = (0..NODES).map(|i| format!("dc1-{i}")).collect();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let quiet = Duration::from_secs(QUIET_FROM);
    let s = ScenarioBuilder::new("left-targets", Duration::from_secs(QUIET_FROM + 45))
        .datacenter("dc1", NODES)
        .seed(59)
        .event_sel(
            Duration::from_secs(5),
            Action::Leave(vec!["dc1-0", "dc1-1"]),
        )
        .unwrap()
        .event_sel(quiet, Action::Restart(all))
        .unwrap()
        .with_check(Check::NoFalseFailures)
        .unwrap()
        .with_check(Check::Converged { at: None })
        .unwrap()
        .build();
    let r = s.run(59).unwrap();
    let passed = |kind: &str| r.checks.iter().any(|c| c.check == kind && c.passed);
    assert!(passed("no_false_failures"), "{:?}", r.checks);
    let split = r.checks.iter().find(|c| c.check == "converged").unwrap();
    assert!(
        !split.passed,
        "the returning targets found the rest: {}",
        split.detail
    );
    assert!(
        split.detail.contains("dc1-0 sees dc1-2 as unknown"),
        "{}",
        split.detail
    );
}

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

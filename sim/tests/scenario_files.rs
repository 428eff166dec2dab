//! The scenario files shipped in `scenarios/` parse, and run with passing checks.

use std::path::Path;

use cairn_sim::checks::evaluate;
use cairn_sim::run_cluster;
use cairn_sim::scenario::Scenario;

fn scenarios_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

#[test]
fn every_shipped_scenario_parses() {
    let mut n = 0;
    for entry in std::fs::read_dir(scenarios_dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
            n += 1;
        }
    }
    assert!(n >= 3);
}

#[test]
fn crash_restart_scenario_passes_its_checks() {
    let s = Scenario::load(&scenarios_dir().join("gossip-crash-restart.toml")).unwrap();
    let out = run_cluster(&s.cluster, &s.actions, |_| {}).unwrap();
    let results = evaluate(&s, &out);
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(r.passed, "{}: {}", r.check, r.detail);
    }
}

/// Agents on measured world geography learn coordinates from their probes:
/// the estimated RTTs of all pairs converge toward the measured ones.
#[test]
fn coordinates_converge_on_world_geography() {
    let s = Scenario::load(&scenarios_dir().join("coordinates-world.toml")).unwrap();
    let out = run_cluster(&s.cluster, &s.actions, |_| {}).unwrap();
    for r in evaluate(&s, &out) {
        assert!(r.passed, "{}: {}", r.check, r.detail);
    }
    let at = |t: u64| {
        out.accuracy
            .iter()
            .find(|a| a.at.as_secs() >= t)
            .copied()
            .unwrap_or_else(|| panic!("no accuracy sample at {t}s"))
    };
    let (early, late) = (at(30), out.accuracy.last().copied().unwrap());
    assert_eq!(late.pairs, 16 * 15 / 2);
    assert!(late.median < early.median / 3.0, "{early:?} -> {late:?}");
}

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
    let results = evaluate(&s, &out.trace);
    assert_eq!(results.len(), 3);
    for r in results {
        assert!(r.passed, "{}: {}", r.check, r.detail);
    }
}

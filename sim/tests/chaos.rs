//! Generated fault timelines: `scenarios/chaos-raft.toml` holds over 50
//! seeds, a failing run shrinks to a plain file that fails the same way,
//! and every shrunk regression in `scenarios/regressions/` passes.

use std::path::{Path, PathBuf};

use cairn_sim::scenario::Scenario;
use cairn_sim::Action;

fn scenarios_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios")
}

fn failures(r: &cairn_sim::Report) -> Vec<String> {
    r.checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| format!("{}: {}", c.check, c.detail))
        .collect()
}

/// Every change runs this: 50 random fault timelines against three Raft
/// servers and two clients under KV load, checked for safety throughout
/// and for recovery once the faults stop (benches/chaos_sweep.sh runs
/// 10,000).
#[test]
fn fifty_seeds_of_chaos_raft_hold() {
    let s = Scenario::load(&scenarios_dir().join("chaos-raft.toml")).unwrap();
    let seeds: Vec<u64> = (1..=50).collect();
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let results = cairn_sim::sweep::run_parallel(
        &seeds,
        jobs,
        |seed| -> Result<(u64, Vec<String>, usize, Points), String> {
            let r = s.run(seed).map_err(|e| format!("seed {seed}: {e}"))?;
            let faults = r
                .timeline
                .iter()
                .filter(|a| !matches!(a.action, Action::KvLoad(..)))
                .count();
            Ok((seed, failures(&r), faults, r.output.fault_points.clone()))
        },
        |_| {},
    )
    .unwrap();
    let failed: Vec<String> = results
        .iter()
        .filter(|r| !r.1.is_empty())
        .map(|r| {
            format!(
                "seed {} (shrink it with: cargo run --release -p cairn-sim -- shrink scenarios/chaos-raft.toml --seed {}): {}",
                r.0,
                r.0,
                r.1.join("; ")
            )
        })
        .collect();
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    // The faults did happen: ten drawn per seed, most with an end.
    assert!(results.iter().all(|r| r.2 >= 10), "{:?}", results);
    // And every one of the product's fault points fired in some seed.
    for point in cairn::buggify::Point::ALL {
        let fired: u64 = results.iter().filter_map(|r| r.3.get(point.name())).sum();
        assert!(fired > 0, "{} never fired in 50 seeds", point.name());
    }
}

type Points = std::collections::BTreeMap<String, u64>;

/// A scenario whose check fails while any node is crashed or cut off at
/// 21 s: shrinking leaves the one fault that covers that instant.
const SHRINKABLE: &str = r#"
name = "shrinkable"
seed = 1
duration = "40s"
engine = "protocol"

[[datacenter]]
name = "dc1"
clients = 6

[chaos]
from = "2s"
for = "20s"
faults = 8
kinds = ["crash", "isolate", "slow"]
window = ["2s", "12s"]

[[check]]
kind = "converged"
at = "21s"
"#;

#[test]
fn a_failing_seed_shrinks_to_a_file_that_fails_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shrinkable.toml");
    std::fs::write(&path, SHRINKABLE).unwrap();
    let s = Scenario::load(&path).unwrap();
    let failing = (1..40)
        .map(|seed| s.run(seed).unwrap())
        .find(|r| !r.passed())
        .expect("some seed has a node down at 21 s");
    let shrunk = cairn_sim::shrink::shrink(&s, &failing, 80, |_| {}).unwrap();
    assert_eq!(shrunk.faults.0, 8);
    assert!(
        shrunk.faults.1 <= 2 && shrunk.faults.1 >= 1,
        "{} faults left:\n{}",
        shrunk.faults.1,
        shrunk.text
    );
    assert!(shrunk.nodes.1 <= shrunk.nodes.0);
    assert!(!shrunk.text.contains("[chaos]"), "{}", shrunk.text);
    // The file replays the failure by itself.
    let out = dir.path().join("shrunk.toml");
    std::fs::write(&out, &shrunk.text).unwrap();
    let replay = Scenario::load(&out).unwrap();
    assert!(replay.chaos.is_none());
    let r = replay.run(replay.seed).unwrap();
    assert_eq!(failures(&r).len(), 1, "{:?}", failures(&r));
    assert!(r
        .checks
        .iter()
        .any(|c| !c.passed && c.check.starts_with("converged")));
}

/// Each file in scenarios/regressions/ is a chaos run that once failed
/// (shrunk, unless a checker rather than the system was at fault), kept
/// after its fix; each must pass now.
#[test]
fn every_shrunk_regression_passes() {
    let dir = scenarios_dir().join("regressions");
    let mut ran = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "toml") {
            continue;
        }
        let s = Scenario::load(&path).unwrap_or_else(|e| panic!("{e}"));
        let r = s.run(s.seed).unwrap();
        assert!(r.passed(), "{}: {:?}", path.display(), failures(&r));
        ran += 1;
    }
    assert!(ran > 0, "no regressions in {}", dir.display());
}

#[test]
fn a_chaos_section_that_cannot_work_says_what_to_fix() {
    let base = r#"
name = "c"
seed = 1
duration = "30s"

[[datacenter]]
name = "dc1"
clients = 3
"#;
    let cases = [
        (
            "[chaos]\nfor = \"30s\"\nfaults = 3\n",
            "must end before the run",
        ),
        ("[chaos]\nfor = \"10s\"\nfaults = 0\n", "from 1 to"),
        (
            "[chaos]\nfor = \"10s\"\nfaults = 3\nkinds = [\"meteor\"]\n",
            "unknown fault kind \"meteor\"",
        ),
        (
            "[chaos]\nfor = \"10s\"\nfaults = 3\nleader = 0.5\n",
            "no datacenter has servers",
        ),
        (
            "[chaos]\nfor = \"10s\"\nfaults = 3\ntargets = [\"count=2\"]\n",
            "without picking at random",
        ),
        (
            "[chaos]\nfor = \"10s\"\nfaults = 3\nwindow = [\"5s\", \"1s\"]\n",
            "shortest to a longest",
        ),
        (
            "[chaos]\nfor = \"10s\"\nfaults = 3\nrate = 2\n",
            "unknown field `rate`",
        ),
    ];
    for (chaos, want) in cases {
        let e = Scenario::parse("c.toml", &format!("{base}\n{chaos}")).unwrap_err();
        assert!(e.to_string().contains(want), "{chaos}: {e}");
    }
}

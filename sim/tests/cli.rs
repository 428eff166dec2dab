//! The `cairn-sim` command line: run, replay, sweep, and what a user sees
//! when a scenario is broken.

use std::path::Path;
use std::process::{Command, Output};

const SMALL: &str = r#"
name = "small"
seed = 4
duration = "30s"

[[datacenter]]
name = "dc1"
clients = 4

[[event]]
at = "10s"
action = "crash"
targets = ["dc1-3"]

[[check]]
kind = "failed_within"
targets = ["dc1-3"]
within = "15s"

[[check]]
kind = "converged"
"#;

fn sim(args: &[&str], cwd: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_cairn-sim"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("cairn-sim runs")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn run_writes_every_file_and_replay_reproduces_it() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small.toml"), SMALL).unwrap();
    let o = sim(
        &["run", "small.toml", "--quiet", "--check-determinism"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("identical traces"), "{}", text(&o));
    let run = dir.path().join("out/small/seed-4");
    for f in [
        "trace.jsonl",
        "metrics.csv",
        "rtt_accuracy.csv",
        "rtt_pairs.csv",
        "summary.json",
        "scenario.toml",
    ] {
        assert!(run.join(f).is_file(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["passed"], true);
    assert_eq!(summary["seed"], 4);
    let metrics = std::fs::read_to_string(run.join("metrics.csv")).unwrap();
    // A row per node per virtual second, 0 to 30.
    assert_eq!(metrics.lines().count(), 1 + 4 * 31);

    let o = sim(&["replay", "out/small/seed-4", "--quiet"], dir.path());
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("identical trace"), "{}", text(&o));
    let again = std::fs::read(run.join("replay/trace.jsonl")).unwrap();
    assert_eq!(again, std::fs::read(run.join("trace.jsonl")).unwrap());
}

#[test]
fn sweep_lists_failing_seeds_with_the_command_to_reproduce() {
    let dir = tempfile::tempdir().unwrap();
    // Too tight to hold for any seed: detection takes seconds.
    let tight = SMALL.replace("within = \"15s\"", "within = \"100ms\"");
    std::fs::write(dir.path().join("small.toml"), tight).unwrap();
    let o = sim(
        &["sweep", "small.toml", "--seeds", "1..2", "--quiet"],
        dir.path(),
    );
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("0 of 2 seeds passed"), "{t}");
    assert!(t.contains("run small.toml --seed 2"), "{t}");
    assert!(dir.path().join("out/small/seed-1/summary.json").is_file());
}

#[test]
fn broken_input_gets_exit_2_and_a_message() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("bad.toml"),
        SMALL.replace("clients = 4", "clients = four"),
    )
    .unwrap();
    let o = sim(&["run", "bad.toml"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("bad.toml:8:11"), "{}", text(&o));
    let o = sim(&["replay", "nowhere"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(
        text(&o).contains("not a run's output directory"),
        "{}",
        text(&o)
    );
    let o = sim(&["sweep", "bad.toml", "--seeds", "5..1"], dir.path());
    assert_eq!(o.status.code(), Some(2));
}

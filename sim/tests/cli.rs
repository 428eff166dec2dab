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

/// The per-seed results of a sweep's results file, in seed order.
fn sweep_results(path: &Path) -> Vec<(u64, bool, String)> {
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap())
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["seed"].as_u64().unwrap(),
                r["passed"].as_bool().unwrap(),
                r["trace_hash"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn parallel_and_sharded_sweeps_give_each_seed_its_own_result() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("small.toml"), SMALL).unwrap();
    let sweep = |extra: &[&str], out: &str| {
        let mut args = vec![
            "sweep",
            "small.toml",
            "--seeds",
            "1..6",
            "--quiet",
            "--out",
            out,
        ];
        args.extend_from_slice(extra);
        let o = sim(&args, dir.path());
        assert!(o.status.success(), "{}", text(&o));
        text(&o)
    };
    let alone = sweep(&["--jobs", "1"], "one");
    let together = sweep(&["--jobs", "3"], "three");
    let one = sweep_results(&dir.path().join("one/sweep.json"));
    assert_eq!(one.len(), 6);
    assert_eq!(one, sweep_results(&dir.path().join("three/sweep.json")));
    // Lines come in seed order either way.
    let lines = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("seed "))
            .map(|l| l.split(" (").next().unwrap_or("").to_string())
            .collect()
    };
    assert_eq!(lines(&alone), lines(&together));

    // Three shards, each run on its own, merge to the whole sweep.
    for k in 1..=3 {
        sweep(&["--shard", &format!("{k}/3"), "--jobs", "1"], "shards");
    }
    let shard = sweep_results(&dir.path().join("shards/sweep-shard-2-of-3.json"));
    assert_eq!(shard.iter().map(|r| r.0).collect::<Vec<_>>(), [2, 5]);
    let o = sim(
        &["sweep-merge", "shards", "--out", "merged.json"],
        dir.path(),
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("6 of 6 seeds passed"), "{}", text(&o));
    assert_eq!(sweep_results(&dir.path().join("merged.json")), one);

    // A shard missing is named, and the merge refuses.
    std::fs::remove_file(dir.path().join("shards/sweep-shard-3-of-3.json")).unwrap();
    let o = sim(&["sweep-merge", "shards"], dir.path());
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(
        text(&o).contains("2 of seeds 1..6 have no result (first: 3, 6"),
        "{}",
        text(&o)
    );
    let o = sim(&["sweep", "small.toml", "--shard", "4/3"], dir.path());
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("--shard takes K/N"), "{}", text(&o));
}

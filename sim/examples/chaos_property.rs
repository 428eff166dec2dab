//! A property test of your own over generated fault timelines, with
//! shrinking: copy this file and change `invariant`.
//!
//! Three Raft servers and a client agent run KV clients; proptest
//! generates fault timelines from `cairn_sim::chaos::timeline` (crashes,
//! power lost in an fsync, partitions, one-way cuts, clogs, pauses, loss,
//! slowness, skew; a quarter aimed at the Raft leader), each run checks
//! the invariant, and a failing timeline is shrunk to the fewest, shortest
//! faults that still break it.
//!
//! ```text
//! cargo run --release -p cairn-sim --example chaos_property [CASES]
//! ```

use std::collections::BTreeSet;
use std::time::Duration;

use cairn_sim::chaos::{self, Chaos, Space};
use cairn_sim::checks::linearizability::{Input, Output};
use cairn_sim::scenario::Scenario;
use cairn_sim::Report;
use proptest::test_runner::{Config, TestCaseError, TestError, TestRunner};

/// The cluster and its load; the faults come from the generator.
const BASE: &str = r#"
name = "my-property"
seed = 1
duration = "50s"

[[datacenter]]
name = "dc1"
servers = 3
clients = 1

[[event]]
at = "2s"
action = "kv_load"
targets = ["all"]
for = "40s"
interval = "50ms"
keys = 3
"#;

/// Your invariant: here, every value a read returns is one some client
/// wrote (nothing made up, nothing from a torn or corrupted write).
fn invariant(r: &Report) -> Result<(), String> {
    let h = &r.output.history;
    let written: BTreeSet<&[u8]> = h
        .iter()
        .filter_map(|op| match &op.input {
            Input::Put(v) | Input::Cas { new: v, .. } => Some(v.as_slice()),
            _ => None,
        })
        .collect();
    for op in h {
        if let Some((_, Output::Value(Some(v)))) = &op.ret {
            if !written.contains(v.as_slice()) {
                return Err(format!(
                    "client {} read {:?} from {:?}, which nobody wrote",
                    op.client,
                    String::from_utf8_lossy(v),
                    op.key
                ));
            }
        }
    }
    Ok(())
}

fn main() {
    let cases = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(16);
    let base = match Scenario::parse("my-property", BASE) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2)
        }
    };
    // Faults hit any node, for 25 s from 5 s; the run then has 20 quiet
    // seconds.
    let names = base.names();
    let all: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut space = Space::new(&all, &all, Duration::from_secs(25));
    space.leaders = vec!["dc1".into()];
    space.leader_share = 0.25;
    let from = Duration::from_secs(5);

    let mut runner = TestRunner::new(Config {
        cases,
        // Each case is a whole simulated run; shrink within a budget.
        max_shrink_iters: 64,
        failure_persistence: None,
        ..Config::default()
    });
    let case = std::sync::atomic::AtomicUsize::new(0);
    let result = runner.run(&chaos::timeline(&space, 1..=8), |faults| {
        let case = case.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut s = base.clone();
        s.chaos = Some(Chaos::given(from, space.clone(), faults.clone()));
        let r = s
            .run(s.seed)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let verdict = invariant(&r);
        eprintln!(
            "case {case}: {} faults: {}",
            faults.len(),
            verdict.as_ref().map_or("FAILS", |_| "holds")
        );
        verdict.map_err(TestCaseError::fail)
    });
    match result {
        Ok(()) => println!("the invariant held over {cases} generated timelines"),
        Err(TestError::Fail(why, faults)) => {
            println!("the invariant fails: {why}");
            println!("shrunk to {} faults:", faults.len());
            for a in chaos::actions(&space, from, &faults) {
                println!("  {:>8.3}s  {:?}", a.at.as_secs_f64(), a.action);
            }
            std::process::exit(1);
        }
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    }
}

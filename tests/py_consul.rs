//! py-consul (a third-party Python client for Consul's HTTP API) runs its
//! own test suite against `cairn agent -dev`.
//!
//! `tests/interop/py-consul/fetch.sh` (which `.ci/run` calls) downloads the
//! suite from PyPI into `target/interop/`; `conftest.py` here replaces its
//! Docker fixture with one that starts a fresh cairn dev agent on
//! 127.0.0.1:8500 per test. Every test must pass except the ones listed in
//! `known_gaps.txt`, and those must still fail (the list only shrinks).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

const VERSION: &str = "1.8.0";

fn here() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/interop/py-consul")
}

/// The known gaps: pytest ID -> why.
fn known_gaps() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(here().join("known_gaps.txt")).expect("read known_gaps.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(char::is_whitespace) {
            Some((id, why)) => (id.to_string(), why.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

#[test]
fn py_consul_suite_passes_against_cairn_dev() {
    let suite = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("target/interop")
        .join(format!("py_consul-{VERSION}"));
    assert!(
        suite.join(".fetched").exists(),
        "py-consul's test suite is not in {}: run tests/interop/py-consul/fetch.sh \
         (bash .ci/run does)",
        suite.display()
    );
    std::fs::copy(here().join("conftest.py"), suite.join("conftest.py"))
        .expect("install cairn's conftest.py");
    let out = Command::new("python3")
        .current_dir(&suite)
        .env("CAIRN_BIN", env!("CARGO_BIN_EXE_cairn"))
        .env_remove("CONSUL_HTTP_ADDR")
        .args([
            "-m",
            "pytest",
            "-o",
            "addopts=",
            "-o",
            "asyncio_mode=auto",
            "-p",
            "no:cacheprovider",
            "-q",
            "-rA",
            "tests",
        ])
        .output()
        .expect("run python3 -m pytest (run tests/interop/py-consul/fetch.sh first)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // `-rA` ends with one line per test: "PASSED id", "FAILED id - why", ...
    let mut outcome: BTreeMap<String, &str> = BTreeMap::new();
    for line in stdout.lines() {
        for verdict in ["PASSED", "FAILED", "ERROR", "SKIPPED"] {
            if let Some(rest) = line.strip_prefix(verdict).and_then(|r| r.strip_prefix(' ')) {
                let id = rest.split(" - ").next().unwrap_or(rest).trim();
                outcome.insert(id.to_string(), verdict);
            }
        }
    }
    let passed = outcome.values().filter(|v| **v == "PASSED").count();
    assert!(
        passed > 100,
        "too few py-consul tests ran ({passed} passed):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let gaps = known_gaps();
    let failed: BTreeSet<&String> = outcome
        .iter()
        .filter(|(_, v)| matches!(**v, "FAILED" | "ERROR"))
        .map(|(id, _)| id)
        .collect();
    let unexpected: Vec<&&String> = failed
        .iter()
        .filter(|id| !gaps.contains_key(**id))
        .collect();
    let fixed: Vec<&String> = gaps
        .keys()
        .filter(|id| outcome.get(*id) == Some(&"PASSED"))
        .collect();
    println!(
        "py-consul {VERSION}: {passed} passed, {} known gaps, {} skipped",
        failed.len(),
        outcome.values().filter(|v| **v == "SKIPPED").count()
    );
    assert!(
        unexpected.is_empty(),
        "py-consul tests failed against cairn: {unexpected:#?}\n{stdout}"
    );
    assert!(
        fixed.is_empty(),
        "these py-consul tests pass now; take them out of known_gaps.txt: {fixed:#?}"
    );
}

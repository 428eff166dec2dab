//! Sweeps: one scenario under many seeds, on every core of a machine
//! ([`run_parallel`]) and across machines, each running a deterministic
//! slice of the seeds ([`Shard`]) and writing its results to a file
//! ([`SweepFile`]) that [`merge`] joins with the others.
//!
//! A seed's run depends on nothing but the scenario and the seed: each runs
//! on its own thread with its own runtime and generators, so it gets the
//! same result whichever worker runs it, alongside whatever else.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;

use serde::{Deserialize, Serialize};

/// One slice of a sweep's seeds: the `k`-th of `n` (1-based), taking every
/// `n`-th seed from the `k`-th on, so slow seeds spread over the shards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shard {
    /// Which slice, from 1.
    pub k: u64,
    /// How many slices.
    pub n: u64,
}

impl Shard {
    /// Parses `K/N`, like `3/8`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let bad = || format!("--shard takes K/N with 1 <= K <= N, like 3/8, not {s:?}");
        let (k, n) = s.split_once('/').ok_or_else(bad)?;
        let (k, n): (u64, u64) = (
            k.trim().parse().map_err(|_| bad())?,
            n.trim().parse().map_err(|_| bad())?,
        );
        if k == 0 || n == 0 || k > n {
            return Err(bad());
        }
        Ok(Shard { k, n })
    }

    /// The seeds of `all` in this slice.
    pub fn pick(&self, all: &[u64]) -> Vec<u64> {
        all.iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % self.n == self.k - 1)
            .map(|(_, s)| *s)
            .collect()
    }

    /// The name of the slice's results file.
    pub fn file_name(shard: Option<Shard>) -> String {
        match shard {
            None => "sweep.json".into(),
            Some(s) => format!("sweep-shard-{}-of-{}.json", s.k, s.n),
        }
    }
}

/// How one seed went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SeedResult {
    /// The seed.
    pub seed: u64,
    /// Whether every check passed.
    pub passed: bool,
    /// The checks that failed.
    pub failed: Vec<String>,
    /// SHA-256 of the run's trace.
    pub trace_hash: String,
    /// Virtual seconds simulated.
    pub virtual_s: f64,
    /// Wall seconds it took.
    pub wall_s: f64,
    /// Where a failing seed's output went.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A sweep's (or a shard's) results, machine-readable.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SweepFile {
    /// The scenario's name.
    pub scenario: String,
    /// SHA-256 of the scenario file's text: shards of one sweep agree.
    pub scenario_sha256: String,
    /// The engine that ran it.
    pub engine: String,
    /// Whether the codec ran.
    pub codec: bool,
    /// The whole sweep's seed range, inclusive.
    pub seeds: [u64; 2],
    /// This file's slice, if it is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// One result per seed run, in seed order.
    pub results: Vec<SeedResult>,
}

impl SweepFile {
    /// Reads a results file.
    pub fn load(path: &Path) -> Result<SweepFile, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        serde_json::from_str(&text).map_err(|e| {
            format!(
                "{} is not a sweep's results file ({e}); `cairn-sim sweep` writes them as sweep.json or sweep-shard-K-of-N.json",
                path.display()
            )
        })
    }

    /// Writes it as `dir/name`, creating `dir`; returns the path.
    pub fn write(&self, dir: &Path, name: &str) -> Result<PathBuf, String> {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let path = dir.join(name);
        let text = serde_json::to_string_pretty(self).map_err(|e| e.to_string())?;
        std::fs::write(&path, text + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok(path)
    }
}

/// Runs `run` on every seed of `seeds` with `jobs` workers, calling `done`
/// on this thread with each result in seed order, as soon as it and all
/// before it are in. Returns the results in seed order. A worker's panic
/// ends the sweep with it.
pub fn run_parallel<R, E>(
    seeds: &[u64],
    jobs: usize,
    run: impl Fn(u64) -> Result<R, E> + Sync,
    mut done: impl FnMut(&R),
) -> Result<Vec<R>, E>
where
    R: Send,
    E: Send,
{
    let jobs = jobs.clamp(1, seeds.len().max(1));
    let next = AtomicUsize::new(0);
    let (tx, rx) = mpsc::channel::<(usize, Result<R, E>)>();
    std::thread::scope(|scope| {
        for _ in 0..jobs {
            let (tx, next, run) = (tx.clone(), &next, &run);
            scope.spawn(move || loop {
                let i = next.fetch_add(1, Ordering::SeqCst);
                let Some(&seed) = seeds.get(i) else {
                    return;
                };
                let failed = tx.send((i, run(seed))).is_err();
                if failed {
                    return;
                }
            });
        }
        drop(tx);
        let mut waiting = BTreeMap::new();
        let mut out = Vec::with_capacity(seeds.len());
        for (i, r) in rx {
            match r {
                Ok(r) => {
                    waiting.insert(i, r);
                }
                Err(e) => {
                    // The others finish the seed they are on and stop.
                    next.store(seeds.len(), Ordering::SeqCst);
                    return Err(e);
                }
            }
            while let Some(r) = waiting.remove(&out.len()) {
                done(&r);
                out.push(r);
            }
        }
        Ok(out)
    })
}

/// Joins shards' results into the whole sweep's: they must come from the
/// same scenario file, engine, codec setting and seed range, and together
/// hold every seed of the range exactly once.
pub fn merge(files: &[(PathBuf, SweepFile)]) -> Result<SweepFile, String> {
    let Some((first_path, first)) = files.first() else {
        return Err("give the directories (or files) the shards wrote".into());
    };
    let mut results: BTreeMap<u64, (SeedResult, &Path)> = BTreeMap::new();
    for (path, f) in files {
        let differs = |what: &str, a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| {
            format!(
                "{} and {} come from different sweeps: {what} {a:?} and {b:?}",
                first_path.display(),
                path.display()
            )
        };
        if f.scenario_sha256 != first.scenario_sha256 {
            return Err(differs(
                "scenario files",
                &first.scenario_sha256,
                &f.scenario_sha256,
            ));
        }
        if (f.engine.as_str(), f.codec) != (first.engine.as_str(), first.codec) {
            return Err(differs(
                "engine and codec",
                &(&first.engine, first.codec),
                &(&f.engine, f.codec),
            ));
        }
        if f.seeds != first.seeds {
            return Err(differs("seed ranges", &first.seeds, &f.seeds));
        }
        for r in &f.results {
            if let Some((_, other)) = results.get(&r.seed) {
                return Err(format!(
                    "seed {} is in both {} and {}: each shard must run its own seeds",
                    r.seed,
                    other.display(),
                    path.display()
                ));
            }
            results.insert(r.seed, (r.clone(), path));
        }
    }
    let [a, b] = first.seeds;
    let missing: Vec<u64> = (a..=b).filter(|s| !results.contains_key(s)).collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
        return Err(format!(
            "{} of seeds {a}..{b} have no result (first: {}{}): run the missing shards, then merge again",
            missing.len(),
            shown.join(", "),
            if missing.len() > 10 { ", …" } else { "" }
        ));
    }
    Ok(SweepFile {
        scenario: first.scenario.clone(),
        scenario_sha256: first.scenario_sha256.clone(),
        engine: first.engine.clone(),
        codec: first.codec,
        seeds: first.seeds,
        shard: None,
        results: results.into_values().map(|(r, _)| r).collect(),
    })
}

/// Where a sweep's results are: `path` itself, or the results files in it.
pub fn results_files(path: &Path) -> Result<Vec<PathBuf>, String> {
    if path.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let entries =
        std::fs::read_dir(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("sweep") && n.ends_with(".json"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(format!(
            "{} holds no sweep results (sweep.json or sweep-shard-K-of-N.json)",
            path.display()
        ));
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(seed: u64) -> SeedResult {
        SeedResult {
            seed,
            passed: seed % 3 != 0,
            failed: Vec::new(),
            trace_hash: format!("h{seed}"),
            virtual_s: 1.0,
            wall_s: 0.1,
            output: None,
        }
    }

    fn file(seeds: &[u64], shard: Option<Shard>) -> SweepFile {
        SweepFile {
            scenario: "s".into(),
            scenario_sha256: "abc".into(),
            engine: "protocol".into(),
            codec: true,
            seeds: [1, 10],
            shard,
            results: seeds.iter().map(|&s| result(s)).collect(),
        }
    }

    #[test]
    fn shards_split_the_seeds_and_merge_to_the_whole() {
        let all: Vec<u64> = (1..=10).collect();
        let shards: Vec<Shard> = (1..=3).map(|k| Shard { k, n: 3 }).collect();
        let picked: Vec<Vec<u64>> = shards.iter().map(|s| s.pick(&all)).collect();
        assert_eq!(picked[0], [1, 4, 7, 10]);
        let mut joined: Vec<u64> = picked.concat();
        joined.sort();
        assert_eq!(joined, all);
        let files: Vec<(PathBuf, SweepFile)> = shards
            .iter()
            .zip(&picked)
            .map(|(s, p)| (PathBuf::from(Shard::file_name(Some(*s))), file(p, Some(*s))))
            .collect();
        let merged = merge(&files).unwrap();
        assert_eq!(merged.results, file(&all, None).results);
        // A shard missing, twice, or from another scenario is refused.
        let e = merge(&files[..2]).unwrap_err();
        assert!(e.contains("3 of seeds 1..10 have no result"), "{e}");
        let mut twice = files.clone();
        twice.push(files[0].clone());
        assert!(merge(&twice).unwrap_err().contains("is in both"));
        let mut other = files.clone();
        other[1].1.scenario_sha256 = "def".into();
        assert!(merge(&other).unwrap_err().contains("different sweeps"));
    }

    #[test]
    fn shard_texts_are_checked() {
        assert_eq!(Shard::parse("2/5"), Ok(Shard { k: 2, n: 5 }));
        for bad in ["0/3", "4/3", "3", "a/b", "1/0"] {
            assert!(Shard::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn parallel_results_come_in_seed_order_whatever_the_workers() {
        let seeds: Vec<u64> = (1..=40).collect();
        for jobs in [1, 3, 8] {
            let mut seen = Vec::new();
            let out = run_parallel(
                &seeds,
                jobs,
                |s| {
                    // Uneven work, so workers finish out of order.
                    std::thread::sleep(std::time::Duration::from_millis(s % 7));
                    Ok::<u64, String>(s * 2)
                },
                |r| seen.push(*r),
            )
            .unwrap();
            assert_eq!(out, seeds.iter().map(|s| s * 2).collect::<Vec<_>>());
            assert_eq!(seen, out);
        }
        let e = run_parallel(&seeds, 2, |s| if s == 5 { Err(s) } else { Ok(s) }, |_| {});
        assert_eq!(e, Err(5));
    }
}

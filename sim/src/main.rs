//! `cairn-sim`: replays scenario files deterministically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cairn_sim::output::{write_run, Summary};
use cairn_sim::scenario::{Engine, Scenario};
use cairn_sim::sweep::{SeedResult, Shard, SweepFile};
use cairn_sim::Report;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cairn-sim",
    version,
    about = "Deterministic simulator for cairn clusters"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Replay a scenario file and write its trace, metrics, summary and charts.
    Run {
        /// The scenario (TOML; see scenarios/README.md).
        file: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Override the scenario's engine: full or protocol.
        #[arg(long)]
        engine: Option<String>,
        /// Protocol engine: pass messages as values, skipping encoding,
        /// compression and checksums (the summary says so).
        #[arg(long)]
        no_codec: bool,
        /// Output directory (default: out/NAME/seed-SEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run twice and fail unless both traces are identical.
        #[arg(long)]
        check_determinism: bool,
        /// When a scenario with [chaos] fails, do not shrink its faults.
        #[arg(long)]
        no_shrink: bool,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Run one seed of a scenario with [chaos] and, if it fails, shrink it
    /// to a plain scenario file that fails the same way: fewer faults,
    /// shorter ones, fewer nodes.
    Shrink {
        /// The scenario.
        file: PathBuf,
        /// The failing seed.
        #[arg(long)]
        seed: u64,
        /// Most runs to spend shrinking.
        #[arg(long, default_value_t = SHRINK_BUDGET)]
        budget: usize,
        /// Where the shrunk file goes (default: out/NAME/seed-SEED/shrunk.toml).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Run a scenario under many seeds and list the ones whose checks fail.
    Sweep {
        /// The scenario.
        file: PathBuf,
        /// Seeds, like 1..20 (inclusive) or 7.
        #[arg(long, default_value = "1..10")]
        seeds: String,
        /// Override the scenario's engine: full or protocol.
        #[arg(long)]
        engine: Option<String>,
        /// Protocol engine: pass messages as values (see `run`).
        #[arg(long)]
        no_codec: bool,
        /// Where failing seeds' output and the results file (sweep.json,
        /// or sweep-shard-K-of-N.json) go (default: out/NAME).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Seeds run at once (default: every core). Each seed's result is
        /// the one it gets alone.
        #[arg(long)]
        jobs: Option<usize>,
        /// Shrink each failing seed of a scenario with [chaos] after the
        /// sweep (see `shrink`).
        #[arg(long)]
        shrink: bool,
        /// Run only slice K of N of the seeds (every N-th from the K-th),
        /// for spreading one sweep over machines; join the slices'
        /// results with `sweep-merge`.
        #[arg(long)]
        shard: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Join the results of a sweep's shards (their directories or
    /// results files) into the whole sweep's, and list the failing seeds.
    SweepMerge {
        /// Directories holding sweep-shard-K-of-N.json files, or the files.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Where the joined results go.
        #[arg(long, default_value = "sweep.json")]
        out: PathBuf,
    },
    /// Rerun a recorded run (a directory written by `run`) and compare traces.
    Replay {
        /// The run's output directory, like out/NAME/seed-N.
        dir: PathBuf,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Replay RTT observations through Vivaldi clients and score the
    /// coordinates against a latency matrix (the Serf harness's CSV format).
    Tomography(TomographyArgs),
}

#[derive(clap::Args)]
struct TomographyArgs {
    /// Latency matrix CSV (a,b,rtt_ms).
    #[arg(long)]
    matrix: PathBuf,
    /// Observation stream (format v1); without it one is generated from --seed.
    #[arg(long)]
    observations: Option<PathBuf>,
    /// Seed of the generated stream (as gen_observations.py --seed).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Score over the streams of every seed in A..B, and write the summary
    /// (mean and 95 % interval over seeds) to STEM.summary.csv.
    #[arg(long, conflicts_with_all = ["seed", "observations"])]
    seeds: Option<String>,
    /// Rounds of the generated stream.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Algorithms to evaluate, comma-separated: default, serf, each
    /// optionally with settings changed (default/window=4/smoothing=off).
    #[arg(long, default_value = "default,serf", value_delimiter = ',')]
    algorithm: Vec<String>,
    /// Checkpoint every K completed rounds.
    #[arg(long, default_value_t = 10)]
    checkpoint: u32,
    /// Timing replays per algorithm (0: skip timing).
    #[arg(long, default_value_t = 5)]
    timing_reps: usize,
    /// Output directory.
    #[arg(long)]
    out: PathBuf,
    /// Accept a stream generated from another matrix.
    #[arg(long)]
    no_sha_check: bool,
}

/// A join storm allocates and frees millions of small messages a second;
/// mimalloc serves them several times faster than the system allocator.
/// (Addresses never reach the simulation's order, so runs replay the same.)
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            file,
            seed,
            engine,
            no_codec,
            out,
            check_determinism,
            no_shrink,
            quiet,
        } => run(
            &file,
            seed,
            (engine, no_codec),
            out,
            (check_determinism, !no_shrink),
            quiet,
        ),
        Cmd::Shrink {
            file,
            seed,
            budget,
            out,
        } => shrink_seed(&file, seed, budget, out),
        Cmd::Sweep {
            file,
            seeds,
            engine,
            no_codec,
            out,
            jobs,
            shrink,
            shard,
            quiet,
        } => sweep(
            &file,
            &seeds,
            (engine, no_codec),
            out,
            Parallel { jobs, shard },
            (shrink, quiet),
        ),
        Cmd::SweepMerge { inputs, out } => sweep_merge(&inputs, &out),
        Cmd::Replay { dir, quiet } => replay(&dir, quiet),
        Cmd::Tomography(t) => tomography(&t),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// The command line's overrides: the engine, and `--no-codec`.
type Overrides = (Option<String>, bool);

/// Loads a scenario, with its engine and codec overridden if asked.
fn load(file: &Path, (engine, no_codec): Overrides) -> anyhow::Result<Scenario> {
    let mut s = Scenario::load(file)?;
    s.codec &= !no_codec;
    if let Some(e) = engine {
        s.engine = Engine::parse(&e).map_err(|e| anyhow::anyhow!("--engine: {e}"))?;
    }
    Ok(s)
}

/// Runs once with a progress bar of virtual time and speed.
fn run_once(s: &Scenario, seed: u64, quiet: bool, label: &str) -> anyhow::Result<Report> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(s.duration.as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} virtual s  {msg}  {elapsed} wall",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_prefix(label.to_string());
        b
    };
    let started = Instant::now();
    let report = s.run_with(s.engine, seed, |t| {
        bar.set_position(t.as_secs());
        let wall = started.elapsed().as_secs_f64();
        if wall > 0.0 {
            bar.set_message(format!("{:.1}x real time", t.as_secs_f64() / wall));
        }
    })?;
    bar.finish_and_clear();
    Ok(report)
}

fn print_checks(report: &Report) {
    for c in &report.checks {
        println!(
            "{} {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.check,
            c.detail
        );
    }
}

fn default_dir(root: Option<PathBuf>, s: &Scenario, seed: u64) -> PathBuf {
    root.unwrap_or_else(|| PathBuf::from("out").join(&s.name))
        .join(format!("seed-{seed}"))
}

fn run(
    file: &Path,
    seed: Option<u64>,
    engine: Overrides,
    out: Option<PathBuf>,
    (check_determinism, shrink): (bool, bool),
    quiet: bool,
) -> anyhow::Result<bool> {
    let s = load(file, engine)?;
    let seed = seed.unwrap_or(s.seed);
    let dir = out.unwrap_or_else(|| default_dir(None, &s, seed));
    eprintln!(
        "scenario {} (seed {seed}, {} engine{}): {} nodes in {} datacenters, {:?} of virtual time",
        s.name,
        s.engine.as_str(),
        if s.codec { "" } else { ", codec skipped" },
        s.topology.nodes.len(),
        s.topology.datacenters.len(),
        s.duration,
    );
    let first = run_once(&s, seed, quiet, "run")?;
    let mut deterministic = true;
    if check_determinism {
        let second = run_once(&s, seed, quiet, "rerun")?;
        deterministic = second.output.trace == first.output.trace;
        eprintln!(
            "determinism: {} ({} vs {})",
            if deterministic {
                "identical traces"
            } else {
                "TRACES DIFFER"
            },
            first.trace_hash(),
            second.trace_hash()
        );
    }
    let summary = Summary::new(&s, &first, check_determinism, deterministic);
    write_run(&dir, &s, &first, &summary)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.display()))?;
    print_checks(&first);
    for r in &summary.wan_rtt {
        println!(
            "WAN RTT {} <-> {} over {} server pairs: p50 {:.1} ms (true {:.1}), p99 {:.1} ms (true {:.1}, error {:.1}%)",
            r.a,
            r.b,
            r.pairs,
            r.est_ms[0],
            r.true_ms[0],
            r.est_ms[2],
            r.true_ms[2],
            100.0 * (r.est_ms[2] - r.true_ms[2]).abs() / r.true_ms[2]
        );
    }
    println!(
        "trace {} ({} events), {:.0} virtual s in {:.1} wall s ({:.1}x), output in {}",
        summary.trace_hash,
        summary.trace_events,
        summary.virtual_time_s,
        summary.wall_time_s,
        summary.speed,
        dir.display()
    );
    if !summary.passed && shrink && s.chaos.is_some() {
        shrink_and_write(&s, &first, SHRINK_BUDGET, &dir.join("shrunk.toml"))?;
    }
    Ok(summary.passed)
}

/// Most runs `run` and `sweep --shrink` spend shrinking a failing seed
/// (`shrink --budget` sets its own).
const SHRINK_BUDGET: usize = 150;

/// Shrinks the failing run `failing` of `s`, writes the file to `path`
/// and prints how to replay it.
fn shrink_and_write(
    s: &Scenario,
    failing: &Report,
    budget: usize,
    path: &Path,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let shrunk = cairn_sim::shrink::shrink(s, failing, budget, |m| eprintln!("{m}"))
        .map_err(anyhow::Error::msg)?;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, &shrunk.text)
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    println!(
        "shrunk in {} runs ({:.0} s): {} of {} faults, {} of {} nodes, failing {}; written to {}",
        shrunk.runs,
        started.elapsed().as_secs_f64(),
        shrunk.faults.1,
        shrunk.faults.0,
        shrunk.nodes.1,
        shrunk.nodes.0,
        shrunk.failed.join(", "),
        path.display()
    );
    println!(
        "replay it with: cargo run --release -p cairn-sim -- run {} --engine {}",
        path.display(),
        s.engine.as_str()
    );
    Ok(())
}

/// `shrink`: runs one seed and shrinks it if it fails.
fn shrink_seed(
    file: &Path,
    seed: u64,
    budget: usize,
    out: Option<PathBuf>,
) -> anyhow::Result<bool> {
    let s = load(file, (None, false))?;
    if s.chaos.is_none() {
        anyhow::bail!(
            "{} has no [chaos] section: shrinking takes faults away from a drawn timeline",
            file.display()
        );
    }
    let r = run_once(&s, seed, false, "run")?;
    if r.passed() {
        println!("seed {seed} passes every check: nothing to shrink");
        return Ok(true);
    }
    print_checks(&r);
    let path = out.unwrap_or_else(|| default_dir(None, &s, seed).join("shrunk.toml"));
    shrink_and_write(&s, &r, budget, &path)?;
    Ok(false)
}

/// `A..B` (inclusive) or a single seed.
fn parse_seeds(s: &str) -> anyhow::Result<std::ops::RangeInclusive<u64>> {
    let bad = || anyhow::anyhow!("--seeds takes a range like 1..20 or a single seed, not {s:?}");
    let (a, b) = match s.split_once("..") {
        Some((a, b)) => (a, b.strip_prefix('=').unwrap_or(b)),
        None => (s, s),
    };
    let (a, b): (u64, u64) = (
        a.trim().parse().map_err(|_| bad())?,
        b.trim().parse().map_err(|_| bad())?,
    );
    if a > b {
        return Err(bad());
    }
    Ok(a..=b)
}

/// How a sweep spreads: over this machine's cores, and over machines.
struct Parallel {
    jobs: Option<usize>,
    shard: Option<String>,
}

fn sweep(
    file: &Path,
    seeds: &str,
    engine: Overrides,
    out: Option<PathBuf>,
    parallel: Parallel,
    (shrink, quiet): (bool, bool),
) -> anyhow::Result<bool> {
    let s = load(file, engine)?;
    if shrink && s.chaos.is_none() {
        anyhow::bail!(
            "--shrink: {} has no [chaos] section to shrink",
            file.display()
        );
    }
    let range = parse_seeds(seeds)?;
    let all: Vec<u64> = range.clone().collect();
    let shard = parallel
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()
        .map_err(anyhow::Error::msg)?;
    let mine = match shard {
        Some(sh) => sh.pick(&all),
        None => all.clone(),
    };
    let jobs = match parallel.jobs {
        Some(0) => anyhow::bail!("--jobs must be at least 1"),
        Some(j) => j,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let total = mine.len();
    eprintln!(
        "sweeping {} over {total} seeds ({}..{}{}), {} at a time",
        s.name,
        range.start(),
        range.end(),
        shard.map_or(String::new(), |sh| format!(", shard {}/{}", sh.k, sh.n)),
        jobs.min(total.max(1))
    );
    let root = out.unwrap_or_else(|| PathBuf::from("out").join(&s.name));
    let started = Instant::now();
    // One bar over the seeds when several run at once; with one at a time,
    // each run's own bar.
    let seeds_bar = if quiet || jobs == 1 {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(total as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("seeds [{bar:40}] {pos}/{len}  {elapsed} wall")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b
    };
    let counter = std::sync::atomic::AtomicUsize::new(0);
    let results = cairn_sim::sweep::run_parallel(
        &mine,
        jobs,
        |seed| -> anyhow::Result<SeedResult> {
            let k = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            let label = format!("seed {seed} ({k}/{total})");
            let r = match run_once(&s, seed, quiet || jobs > 1, &label) {
                Ok(r) => r,
                // A run that could not go on (a node's software failed)
                // fails its seed, not the sweep: the other seeds still run.
                Err(e) => {
                    return Ok(SeedResult {
                        seed,
                        passed: false,
                        failed: vec![format!("the run ({e:#})")],
                        trace_hash: String::new(),
                        virtual_s: 0.0,
                        wall_s: 0.0,
                        output: None,
                    })
                }
            };
            let failed: Vec<String> = r.failed();
            let mut output = None;
            if !failed.is_empty() {
                let dir = default_dir(Some(root.clone()), &s, seed);
                write_run(&dir, &s, &r, &Summary::new(&s, &r, false, true))
                    .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", dir.display()))?;
                output = Some(dir.display().to_string());
            }
            Ok(SeedResult {
                seed,
                passed: failed.is_empty(),
                failed,
                trace_hash: r.trace_hash(),
                virtual_s: r.output.virtual_time.as_secs_f64(),
                wall_s: r.wall.as_secs_f64(),
                output,
            })
        },
        |r| {
            seeds_bar.suspend(|| {
                println!(
                    "seed {}: {} {} ({:.1}x)",
                    r.seed,
                    if r.passed { "PASS" } else { "FAIL" },
                    r.trace_hash,
                    r.virtual_s / r.wall_s.max(1e-9)
                )
            });
            seeds_bar.inc(1);
        },
    )?;
    seeds_bar.finish_and_clear();
    let results_file = SweepFile {
        scenario: s.name.clone(),
        scenario_sha256: scenario_sha256(&s),
        engine: s.engine.as_str().into(),
        codec: s.codec,
        seeds: [*range.start(), *range.end()],
        shard,
        results,
    };
    let written = results_file
        .write(&root, &Shard::file_name(shard))
        .map_err(anyhow::Error::msg)?;
    println!(
        "{} of {total} seeds passed in {:.1} s; results in {}",
        results_file.results.iter().filter(|r| r.passed).count(),
        started.elapsed().as_secs_f64(),
        written.display()
    );
    print_failing(&results_file, &file.display().to_string());
    if shrink {
        for r in results_file.results.iter().filter(|r| !r.passed) {
            let Ok(failing) = run_once(&s, r.seed, true, "") else {
                eprintln!("seed {}: not shrunk: the run does not finish", r.seed);
                continue;
            };
            let path = default_dir(Some(root.clone()), &s, r.seed).join("shrunk.toml");
            shrink_and_write(&s, &failing, SHRINK_BUDGET, &path)?;
        }
    }
    Ok(results_file.results.iter().all(|r| r.passed))
}

/// SHA-256 of the scenario's text (its file's, when it came from one).
fn scenario_sha256(s: &Scenario) -> String {
    let text = s.source.as_ref().map_or("", |src| src.text.as_str());
    cairn_sim::output::trace::sha256_hex(text.as_bytes())
}

/// Lists the failing seeds with how to reproduce each.
fn print_failing(f: &SweepFile, file: &str) {
    for r in f.results.iter().filter(|r| !r.passed) {
        println!(
            "  seed {} failed {}; {}reproduce with: cargo run --release -p cairn-sim -- run {file} --seed {} --engine {}{}",
            r.seed,
            r.failed.join(", "),
            r.output
                .as_deref()
                .map_or(String::new(), |o| format!("output in {o}; ")),
            r.seed,
            f.engine,
            if f.codec { "" } else { " --no-codec" }
        );
    }
}

fn sweep_merge(inputs: &[PathBuf], out: &Path) -> anyhow::Result<bool> {
    let mut files = Vec::new();
    for input in inputs {
        for path in cairn_sim::sweep::results_files(input).map_err(anyhow::Error::msg)? {
            let f = SweepFile::load(&path).map_err(anyhow::Error::msg)?;
            files.push((path, f));
        }
    }
    let merged = cairn_sim::sweep::merge(&files).map_err(anyhow::Error::msg)?;
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty());
    let name = out
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| anyhow::anyhow!("--out names a file, not {}", out.display()))?;
    let written = merged
        .write(dir.unwrap_or(Path::new(".")), &name)
        .map_err(anyhow::Error::msg)?;
    let passed = merged.results.iter().filter(|r| r.passed).count();
    println!(
        "{} shards of {}: {passed} of {} seeds passed; results in {}",
        files.len(),
        merged.scenario,
        merged.results.len(),
        written.display()
    );
    print_failing(&merged, &format!("SCENARIO ({})", merged.scenario));
    Ok(passed == merged.results.len())
}

fn replay(dir: &Path, quiet: bool) -> anyhow::Result<bool> {
    let read = |name: &str| {
        std::fs::read_to_string(dir.join(name)).map_err(|e| {
            anyhow::anyhow!(
                "{} is not a run's output directory (cannot read {name}: {e})",
                dir.display()
            )
        })
    };
    let summary: Summary = serde_json::from_str(&read("summary.json")?)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("summary.json").display()))?;
    let text = read("scenario.toml")?;
    let base = summary
        .scenario_dir
        .as_deref()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let origin = dir.join("scenario.toml").display().to_string();
    let mut s = Scenario::parse_in(&origin, &text, &base)?;
    s.engine = Engine::parse(&summary.engine)
        .map_err(|e| anyhow::anyhow!("{}: {e}", dir.join("summary.json").display()))?;
    s.codec = summary.codec;
    s.source = Some(cairn_sim::scenario::Source {
        path: summary
            .scenario_file
            .as_deref()
            .map(PathBuf::from)
            .unwrap_or_else(|| dir.join("scenario.toml")),
        text,
    });
    let matrix = s
        .topology
        .latency
        .matrix
        .as_ref()
        .map(|m| m.matrix.sha256.clone());
    if matrix != summary.matrix_sha256 {
        anyhow::bail!(
            "the latency matrix changed since the run (recorded sha256 {:?}, now {:?}): the replay would not be the same run",
            summary.matrix_sha256,
            matrix
        );
    }
    eprintln!(
        "replaying {} seed {} from {}",
        s.name,
        summary.seed,
        dir.display()
    );
    let r = run_once(&s, summary.seed, quiet, "replay")?;
    let same = r.trace_hash() == summary.trace_hash;
    let again = dir.join("replay");
    write_run(&again, &s, &r, &Summary::new(&s, &r, false, same))
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", again.display()))?;
    print_checks(&r);
    println!(
        "{}: recorded {}, replayed {}; output in {}",
        if same {
            "identical trace"
        } else {
            "TRACE DIFFERS"
        },
        summary.trace_hash,
        r.trace_hash(),
        again.display()
    );
    Ok(same && r.passed())
}

fn tomography(a: &TomographyArgs) -> anyhow::Result<bool> {
    use cairn::coordinate::Config;
    use cairn_sim::tomography::{self, algorithm, study, Matrix};
    let m = Matrix::load(&a.matrix)?;
    // Names with settings changed ("default/window=4") go into file names
    // with '+' for '/'.
    let algos: Vec<(String, Config)> = a
        .algorithm
        .iter()
        .map(|n| algorithm::parse(n).map(|c| (n.replace('/', "+"), c)))
        .collect::<Result<_, _>>()
        .map_err(|e| anyhow::anyhow!(e))?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.out.display()))?;
    let stem = m.name.trim_end_matches(".csv").to_string();
    let seeds = match &a.seeds {
        Some(s) => parse_seeds(s)?,
        None => a.seed..=a.seed,
    };
    let many = seeds.start() != seeds.end();
    eprintln!("{}: {} nodes, {} pairs", m.name, m.nodes, m.pairs.len());
    println!(
        "{}algorithm  median_rel_err  p90_rel_err  p99_rel_err  mean_abs_ms  ns_per_update",
        if many { "seed  " } else { "" }
    );
    let mut scores = Vec::new();
    let mut pooled: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
    for seed in seeds.clone() {
        let (stream, stream_name) = tomography_stream(a, &m, &stem, seed)?;
        // One seed keeps the harness's file names; several name each seed's.
        let tag = if many {
            format!("{stem}.seed{seed}")
        } else {
            stem.clone()
        };
        let mut replays = Vec::new();
        for (name, cfg) in &algos {
            let r = tomography::replay(&m, &stream, name, cfg, a.checkpoint, seed);
            let timed = a.timing_reps > 0 && seed == *seeds.start();
            let ns =
                timed.then(|| tomography::time_per_update(&m, &stream, cfg, seed, a.timing_reps));
            let csv = tomography::to_csv(&r, &m, &stream, &stream_name, cfg, a.checkpoint, ns);
            std::fs::write(a.out.join(format!("{tag}.{name}.csv")), csv)?;
            if let Some(last) = r.checkpoints.last() {
                println!(
                    "{}{name:<10} {:>14.4} {:>12.4} {:>12.4} {:>12.3} {:>14}",
                    if many {
                        format!("{seed:<5} ")
                    } else {
                        String::new()
                    },
                    last.median,
                    last.p90,
                    last.p99,
                    last.mean_abs_ms,
                    ns.map_or("-".into(), |n| format!("{n:.1}"))
                );
            }
            scores.extend(study::SeedScore::of(seed, &r));
            match pooled.iter_mut().find(|(n, _)| n == name) {
                Some((_, p)) => p.extend_from_slice(&r.final_pairs),
                None => pooled.push((name.clone(), r.final_pairs.clone())),
            }
            replays.push(r);
        }
        if seed == *seeds.start() {
            match tomography::report::write_charts(&a.out, &stem, &replays) {
                Ok(files) => eprintln!("charts: {} files in {}", files.len(), a.out.display()),
                Err(e) => eprintln!("warning: no charts: {e}"),
            }
        }
    }
    let stats: Vec<study::BucketStat> = pooled
        .iter()
        .flat_map(|(name, pairs)| study::buckets(name, pairs))
        .collect();
    std::fs::write(
        a.out.join(format!("{stem}.buckets.csv")),
        study::buckets_csv(&stats),
    )?;
    if let Err(e) = study::write_bucket_chart(&a.out, &stem, &stats) {
        eprintln!("warning: no bucket chart: {e}");
    }
    if many {
        let rows = study::summarize(&scores);
        println!(
            "\nover seeds {}..{} (mean ± 95 % interval):",
            seeds.start(),
            seeds.end()
        );
        println!(
            "{:<10} {:>20} {:>20} {:>20}",
            "algorithm", "median", "p90", "p99"
        );
        for r in &rows {
            println!(
                "{:<10} {:>20} {:>20} {:>20}",
                r.algorithm,
                r.median.to_string(),
                r.p90.to_string(),
                r.p99.to_string()
            );
        }
        std::fs::write(
            a.out.join(format!("{stem}.summary.csv")),
            study::summary_csv(&rows),
        )?;
    }
    Ok(true)
}

/// The observation stream to replay: the file given, or one generated from
/// `seed` (and written beside the results, as the harness names it).
fn tomography_stream(
    a: &TomographyArgs,
    m: &cairn_sim::tomography::Matrix,
    stem: &str,
    seed: u64,
) -> anyhow::Result<(cairn_sim::tomography::Stream, String)> {
    use cairn_sim::tomography::{self, Noise, Stream};
    let Some(p) = &a.observations else {
        let text = tomography::generate(m, seed, a.rounds, &Noise::default());
        let name = format!("{stem}.seed{seed}.R{}.txt", a.rounds);
        std::fs::write(a.out.join(&name), &text)?;
        return Ok((Stream::parse(&name, text.as_bytes(), m.nodes)?, name));
    };
    let s = Stream::load(p, m.nodes)?;
    if let Some(sha) = &s.matrix_sha256 {
        if *sha != m.sha256 && !a.no_sha_check {
            anyhow::bail!(
                "{} was generated from another matrix (sha256 {sha}, {} has {}); pass --no-sha-check to use it anyway",
                p.display(),
                m.name,
                m.sha256
            );
        }
    }
    let name = p
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    eprintln!("{}: {} observations", name, s.observations.len());
    Ok((s, name))
}

//! `cairn-sim`: replays scenario files deterministically.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use cairn_sim::checks::{evaluate, CheckResult};
use cairn_sim::scenario::Scenario;
use cairn_sim::{run_cluster, RunOutput};
use clap::{Parser, Subcommand};
use serde::Serialize;

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
    /// Replay a scenario file and write its trace and summary.
    Run {
        /// The scenario (TOML; see scenarios/README.md).
        file: PathBuf,
        /// Override the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory (default: out/NAME-seedSEED).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run twice and fail unless both traces are identical.
        #[arg(long)]
        check_determinism: bool,
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
    /// Rounds of the generated stream.
    #[arg(long, default_value_t = 200)]
    rounds: u32,
    /// Algorithms to evaluate, comma-separated: default, serf.
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

#[derive(Serialize)]
struct Summary<'a> {
    scenario: &'a str,
    seed: u64,
    engine: &'static str,
    nodes: usize,
    trace_hash: String,
    trace_events: usize,
    virtual_time_s: f64,
    wall_time_s: f64,
    speedup: f64,
    steps: u64,
    lossy_udp_packets: u64,
    lossy_udp_dropped: u64,
    /// Coordinate accuracy at the end (median, p90, p99 relative error).
    #[serde(skip_serializing_if = "Option::is_none")]
    rtt_accuracy: Option<[f64; 3]>,
    determinism_checked: bool,
    checks: &'a [CheckResult],
    passed: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Run {
            file,
            seed,
            out,
            check_determinism,
            quiet,
        } => run(&file, seed, out, check_determinism, quiet),
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

fn replay(s: &Scenario, quiet: bool, label: &str) -> anyhow::Result<(RunOutput, f64)> {
    let bar = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let b = indicatif::ProgressBar::new(s.cluster.duration.as_secs());
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{prefix} [{bar:40}] {pos}/{len} virtual s  {elapsed} wall",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_prefix(label.to_string());
        b
    };
    let started = Instant::now();
    let out = run_cluster(&s.cluster, &s.actions, |t| bar.set_position(t.as_secs()))?;
    bar.finish_and_clear();
    Ok((out, started.elapsed().as_secs_f64()))
}

fn run(
    file: &Path,
    seed: Option<u64>,
    out: Option<PathBuf>,
    check_determinism: bool,
    quiet: bool,
) -> anyhow::Result<bool> {
    let mut s = Scenario::load(file)?;
    if let Some(seed) = seed {
        s.cluster.seed = seed;
    }
    let dir = out
        .unwrap_or_else(|| PathBuf::from("out").join(format!("{}-seed{}", s.name, s.cluster.seed)));
    eprintln!(
        "scenario {} (seed {}): {} nodes, {:?} of virtual time",
        s.name,
        s.cluster.seed,
        s.cluster.nodes.len(),
        s.cluster.duration
    );
    let (first, wall) = replay(&s, quiet, "run")?;
    let mut deterministic = true;
    if check_determinism {
        let (second, _) = replay(&s, quiet, "rerun")?;
        deterministic = second.trace == first.trace;
        eprintln!(
            "determinism: {} ({} vs {})",
            if deterministic {
                "identical traces"
            } else {
                "TRACES DIFFER"
            },
            first.trace.hash(),
            second.trace.hash()
        );
    }
    let checks = evaluate(&s, &first);
    let passed = deterministic && checks.iter().all(|c| c.passed);
    std::fs::create_dir_all(&dir)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", dir.display()))?;
    std::fs::write(dir.join("trace.jsonl"), first.trace.to_jsonl())?;
    if !first.accuracy.is_empty() {
        cairn_sim::output::write_accuracy(&dir, &s.name, &first.accuracy)?;
    }
    let virt = first.virtual_time.as_secs_f64();
    let summary = Summary {
        scenario: &s.name,
        seed: s.cluster.seed,
        engine: "full",
        nodes: s.cluster.nodes.len(),
        trace_hash: first.trace.hash(),
        trace_events: first.trace.events.len(),
        virtual_time_s: virt,
        wall_time_s: wall,
        speedup: if wall > 0.0 { virt / wall } else { 0.0 },
        steps: first.steps,
        lossy_udp_packets: first.lossy_packets.0,
        lossy_udp_dropped: first.lossy_packets.1,
        rtt_accuracy: first.accuracy.last().map(|a| [a.median, a.p90, a.p99]),
        determinism_checked: check_determinism,
        checks: &checks,
        passed,
    };
    std::fs::write(
        dir.join("summary.json"),
        serde_json::to_string_pretty(&summary)? + "\n",
    )?;
    for c in &checks {
        println!(
            "{} {}: {}",
            if c.passed { "PASS" } else { "FAIL" },
            c.check,
            c.detail
        );
    }
    println!(
        "trace {} ({} events), {:.0} virtual s in {:.1} wall s ({:.1}x), output in {}",
        summary.trace_hash,
        summary.trace_events,
        virt,
        wall,
        summary.speedup,
        dir.display()
    );
    Ok(passed)
}

fn tomography(a: &TomographyArgs) -> anyhow::Result<bool> {
    use cairn::coordinate::Config;
    use cairn_sim::tomography::{self, Matrix, Noise, Stream};
    let m = Matrix::load(&a.matrix)?;
    let algos: Vec<(String, Config)> = a
        .algorithm
        .iter()
        .map(|n| {
            Config::named(n).map(|c| (n.clone(), c)).ok_or_else(|| {
                anyhow::anyhow!(
                    "unknown algorithm {n:?} (known: {})",
                    Config::NAMES.join(", ")
                )
            })
        })
        .collect::<Result<_, _>>()?;
    std::fs::create_dir_all(&a.out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", a.out.display()))?;
    let stem = m.name.trim_end_matches(".csv").to_string();
    let (stream, stream_name) = match &a.observations {
        Some(p) => {
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
            (s, name)
        }
        None => {
            let text = tomography::generate(&m, a.seed, a.rounds, &Noise::default());
            let name = format!("{stem}.seed{}.R{}.txt", a.seed, a.rounds);
            let path = a.out.join(&name);
            std::fs::write(&path, &text)?;
            (Stream::parse(&name, text.as_bytes(), m.nodes)?, name)
        }
    };
    eprintln!(
        "{}: {} nodes, {} pairs; {} observations",
        m.name,
        m.nodes,
        m.pairs.len(),
        stream.observations.len()
    );
    println!("algorithm  median_rel_err  p90_rel_err  p99_rel_err  mean_abs_ms  ns_per_update");
    let mut replays = Vec::new();
    for (name, cfg) in &algos {
        let r = tomography::replay(&m, &stream, name, cfg, a.checkpoint, a.seed);
        let ns = (a.timing_reps > 0)
            .then(|| tomography::time_per_update(&m, &stream, cfg, a.seed, a.timing_reps));
        let csv = tomography::to_csv(&r, &m, &stream, &stream_name, cfg, a.checkpoint, ns);
        std::fs::write(a.out.join(format!("{stem}.{name}.csv")), csv)?;
        if let Some(last) = r.checkpoints.last() {
            println!(
                "{name:<10} {:>14.4} {:>12.4} {:>12.4} {:>12.3} {:>14}",
                last.median,
                last.p90,
                last.p99,
                last.mean_abs_ms,
                ns.map_or("-".into(), |n| format!("{n:.1}"))
            );
        }
        replays.push(r);
    }
    match tomography::report::write_charts(&a.out, &stem, &replays) {
        Ok(files) => eprintln!("charts: {} files in {}", files.len(), a.out.display()),
        Err(e) => eprintln!("warning: no charts: {e}"),
    }
    Ok(true)
}

//! Accuracy gates for network coordinates on the measured matrices, against
//! the numbers Serf's own harness produced (scenarios/data/serf-reference).

use std::path::{Path, PathBuf};

use cairn::coordinate::Config;
use cairn_sim::tomography::{self, Checkpoint, Matrix, Noise, Stream};

fn data(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios/data")
        .join(name)
}

/// The harness's CSV: provenance comments and checkpoint rows.
struct Reference {
    obs_sha256: String,
    rows: Vec<Checkpoint>,
}

fn reference(matrix: &str) -> Reference {
    let text =
        std::fs::read_to_string(data(&format!("serf-reference/{matrix}.seed1.csv"))).unwrap();
    let obs_sha256 = text
        .lines()
        .find_map(|l| l.split(" obs_sha256=").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap()
        .to_string();
    let rows = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("round"))
        .map(|l| {
            let f: Vec<f64> = l.split(',').map(|x| x.parse().unwrap()).collect();
            Checkpoint {
                round: f[0] as u32,
                median: f[1],
                p90: f[2],
                p99: f[3],
                mean_abs_ms: f[4],
            }
        })
        .collect();
    Reference { obs_sha256, rows }
}

fn stream(m: &Matrix, seed: u64) -> (Stream, String) {
    let text = tomography::generate(m, seed, 200, &Noise::default());
    let s = Stream::parse("generated", text.as_bytes(), m.nodes).unwrap();
    let sha = s.sha256.clone();
    (s, sha)
}

fn gates(matrix: &str) {
    let m = Matrix::load(&data(&format!("{matrix}.csv"))).unwrap();
    let reference = reference(matrix);
    let (s, sha) = stream(&m, 1);
    assert_eq!(
        sha, reference.obs_sha256,
        "the generated stream must be the harness's, byte for byte"
    );

    // The `serf` variant reproduces Serf: curves within a few percent.
    let serf = tomography::replay(&m, &s, "serf", &Config::serf(), 10, 1);
    assert_eq!(serf.checkpoints.len(), reference.rows.len());
    let (mut med, mut p90, mut n) = (0.0, 0.0, 0.0);
    for (ours, theirs) in serf.checkpoints.iter().zip(&reference.rows) {
        assert_eq!(ours.round, theirs.round);
        if ours.round >= 50 {
            med += ours.median / theirs.median;
            p90 += ours.p90 / theirs.p90;
            n += 1.0;
        }
    }
    let (med, p90) = (med / n, p90 / n);
    assert!(
        (0.95..=1.05).contains(&med),
        "{matrix}: serf median ratio {med:.3}"
    );
    assert!(
        (0.95..=1.05).contains(&p90),
        "{matrix}: serf p90 ratio {p90:.3}"
    );
    let (ours, theirs) = (
        serf.checkpoints.last().unwrap(),
        reference.rows.last().unwrap(),
    );
    assert!(
        (ours.median / theirs.median - 1.0).abs() < 0.05,
        "{matrix}: final serf median {ours:?} vs {theirs:?}"
    );
    assert!(
        (ours.p90 / theirs.p90 - 1.0).abs() < 0.05,
        "{matrix}: final serf p90 {ours:?} vs {theirs:?}"
    );

    // cairn's default beats it: median <= 0.75x and p90 <= 0.5x Serf's.
    let cairn = tomography::replay(&m, &s, "default", &Config::default(), 10, 1);
    let c = cairn.checkpoints.last().unwrap();
    eprintln!(
        "{matrix}: default median {:.4} ({:.3}x Serf), p90 {:.4} ({:.3}x Serf)",
        c.median,
        c.median / theirs.median,
        c.p90,
        c.p90 / theirs.p90
    );
    assert!(
        c.median <= 0.75 * theirs.median,
        "{matrix}: median {c:?} vs Serf {theirs:?}"
    );
    assert!(
        c.p90 <= 0.5 * theirs.p90,
        "{matrix}: p90 {c:?} vs Serf {theirs:?}"
    );
    assert_eq!(cairn.update_errors, 0);
    assert_eq!(cairn.resets, 0);
}

#[test]
fn planetlab_gates() {
    gates("planetlab490");
}

#[test]
fn wonderproxy_gates() {
    gates("wonderproxy250");
}

/// Not fitted to one stream: other seeds, and a random third of the nodes.
#[test]
fn the_default_beats_serf_beyond_the_gated_stream() {
    let m = Matrix::load(&data("wonderproxy250.csv")).unwrap();
    for seed in [2, 3] {
        let (s, _) = stream(&m, seed);
        let a = tomography::replay(&m, &s, "serf", &Config::serf(), 200, seed);
        let b = tomography::replay(&m, &s, "default", &Config::default(), 200, seed);
        let (a, b) = (a.checkpoints.last().unwrap(), b.checkpoints.last().unwrap());
        assert!(
            b.median < 0.8 * a.median && b.p90 < 0.6 * a.p90,
            "seed {seed}: {b:?} vs {a:?}"
        );
    }
    // Every third node only: a smaller cluster with other neighbourhoods.
    let mut csv = String::from("a,b,rtt_ms\n");
    for p in m.pairs.iter().filter(|p| p.a % 3 == 0 && p.b % 3 == 0) {
        csv += &format!("{},{},{}\n", p.a / 3, p.b / 3, p.rtt_ms);
    }
    let sub = Matrix::parse("thirds", csv.as_bytes()).unwrap();
    let (s, _) = stream(&sub, 1);
    let a = tomography::replay(&sub, &s, "serf", &Config::serf(), 200, 1);
    let b = tomography::replay(&sub, &s, "default", &Config::default(), 200, 1);
    let (a, b) = (a.checkpoints.last().unwrap(), b.checkpoints.last().unwrap());
    assert!(
        b.median < 0.85 * a.median && b.p90 < 0.85 * a.p90,
        "subset: {b:?} vs {a:?}"
    );
}

/// The evaluation writes its charts, as PNG and SVG.
#[test]
fn charts_are_written() {
    let m = Matrix::parse(
        "tiny",
        b"a,b,rtt_ms\n0,1,10\n0,2,20\n1,2,15\n0,3,40\n1,3,35\n2,3,30\n",
    )
    .unwrap();
    let (s, _) = stream(&m, 1);
    let replays: Vec<_> = [("serf", Config::serf()), ("default", Config::default())]
        .iter()
        .map(|(n, c)| tomography::replay(&m, &s, n, c, 50, 1))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let files = tomography::report::write_charts(dir.path(), "tiny", &replays)
        .expect("charts (is a font installed?)");
    assert_eq!(files.len(), 8);
    for f in files {
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 1000, "{} is {len} bytes", f.display());
    }
}

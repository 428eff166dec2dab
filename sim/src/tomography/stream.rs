//! Observation streams (format v1 of the Serf Vivaldi harness): one
//! `t_ms src dst rtt_ms` line per observation, `#` comments.
//!
//! [`generate`] writes exactly what `gen_observations.py` writes for the
//! same matrix, seed and options; [`Stream::parse`] reads either.

use std::fmt::Write as _;
use std::path::Path;

use crate::output::trace::sha256_hex;

use super::matrix::Matrix;
use super::pyrandom::PyRandom;

/// One measurement: `src` measured `dst` in round `round`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// Round index, `t_ms / 1000`.
    pub round: u32,
    /// The node that measured (and is updated).
    pub src: u32,
    /// The peer it measured.
    pub dst: u32,
    /// The RTT in nanoseconds (exact for the generator's six decimals).
    pub rtt_ns: i64,
}

/// A parsed stream.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The observations, in file order.
    pub observations: Vec<Observation>,
    /// SHA-256 of the stream's bytes, hex.
    pub sha256: String,
    /// The `matrix_sha256=` it names, if any.
    pub matrix_sha256: Option<String>,
}

/// Noise options of the generator (its defaults).
#[derive(Debug, Clone, PartialEq)]
pub struct Noise {
    /// Lognormal sigma of the multiplicative noise.
    pub sigma: f64,
    /// Lognormal mu.
    pub mu: f64,
    /// Probability of a spike per observation.
    pub p_spike: f64,
    /// Smallest spike factor.
    pub spike_min: f64,
    /// Largest spike factor.
    pub spike_max: f64,
}

impl Default for Noise {
    fn default() -> Self {
        Noise {
            sigma: 0.1,
            mu: 0.0,
            p_spike: 0.01,
            spike_min: 2.0,
            spike_max: 10.0,
        }
    }
}

/// A stream that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct StreamError(pub String);

/// Python's `repr` of a float for the header line: `2.0`, `1e-05`,
/// `1.5e+16`, `nan`, `inf`. Rust's `{:?}` already picks the same shortest
/// digits and switches to an exponent at the same magnitudes; only the
/// exponent's spelling and the non-finite names differ.
fn py_repr(v: f64) -> String {
    if v.is_nan() {
        return "nan".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "inf" } else { "-inf" }.into();
    }
    let s = format!("{v:?}");
    match s.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => s,
    }
}

/// The stream `gen_observations.py --seed SEED --rounds ROUNDS` writes for
/// `m` with `noise`, byte for byte.
pub fn generate(m: &Matrix, seed: u64, rounds: u32, noise: &Noise) -> String {
    let active: Vec<u32> = (0..m.nodes)
        .filter(|i| !m.peers[*i as usize].is_empty())
        .collect();
    let mut out = String::with_capacity(rounds as usize * active.len() * 24 + 512);
    let _ = writeln!(out, "# serf-vivaldi observation stream v1");
    let _ = writeln!(
        out,
        "# matrix_sha256={} nodes={} pairs={} skipped_rows={} active_nodes={}",
        m.sha256,
        m.nodes,
        m.pairs.len(),
        m.skipped,
        active.len()
    );
    let _ = writeln!(
        out,
        "# seed={seed} rounds={rounds} sigma={} mu={} p_spike={} spike_min={} spike_max={}",
        py_repr(noise.sigma),
        py_repr(noise.mu),
        py_repr(noise.p_spike),
        py_repr(noise.spike_min),
        py_repr(noise.spike_max)
    );
    let _ = writeln!(out, "# columns: t_ms src dst rtt_ms");
    let mut rng = PyRandom::new(seed);
    let (mut n, mut spikes) = (0u64, 0u64);
    for r in 0..rounds {
        let t_ms = 1000 * r as u64;
        for &i in &active {
            let peers = &m.peers[i as usize];
            let k = rng.randrange(peers.len() as u32) as usize;
            let mut factor = rng.lognormvariate(noise.mu, noise.sigma);
            if rng.random() < noise.p_spike {
                factor *= rng.uniform(noise.spike_min, noise.spike_max);
                spikes += 1;
            }
            let (j, rtt) = peers[k];
            let _ = writeln!(out, "{t_ms} {i} {j} {:.6}", rtt * factor);
            n += 1;
        }
    }
    let _ = writeln!(out, "# end observations={n} spikes={spikes}");
    out
}

/// Milliseconds as written in a stream to nanoseconds: exact for plain
/// decimals with at most six fractional digits (what the generator writes),
/// rounded to the nearest nanosecond otherwise — as the Go harness does.
fn parse_ms(s: &str) -> Option<i64> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let (int, frac) = t.split_once('.').unwrap_or((t, ""));
    let plain = !int.is_empty()
        && int.len() <= 12
        && frac.len() <= 6
        && int.bytes().chain(frac.bytes()).all(|c| c.is_ascii_digit());
    if plain {
        let ms: i64 = int.parse().ok()?;
        let mut ns = ms * 1_000_000;
        if !frac.is_empty() {
            ns += format!("{frac:0<6}").parse::<i64>().ok()?;
        }
        return Some(if neg { -ns } else { ns });
    }
    let f: f64 = s.parse().ok()?;
    let ns = (f * 1e6).round();
    (ns.is_finite() && ns.abs() < 9.2e18).then_some(ns as i64)
}

impl Stream {
    /// Reads a stream file for a matrix of `nodes` nodes.
    pub fn load(path: &Path, nodes: u32) -> Result<Stream, StreamError> {
        let bytes = std::fs::read(path)
            .map_err(|e| StreamError(format!("cannot read {}: {e}", path.display())))?;
        let name = path.display().to_string();
        Self::parse(&name, &bytes, nodes)
    }

    /// Parses stream bytes; `name` labels errors.
    pub fn parse(name: &str, bytes: &[u8], nodes: u32) -> Result<Stream, StreamError> {
        let sha256 = sha256_hex(bytes);
        let text =
            std::str::from_utf8(bytes).map_err(|_| StreamError(format!("{name}: not UTF-8")))?;
        let mut observations = Vec::new();
        let mut matrix_sha256 = None;
        let mut last_t = 0u64;
        for (i, line) in text.lines().enumerate() {
            let ln = i + 1;
            let err = |what: String| StreamError(format!("{name}:{ln}: {what}"));
            // Read as the harness reads: trimmed lines, fields split on any
            // whitespace, `matrix_sha256=` only as a whole comment field.
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            if let Some(c) = line.strip_prefix('#') {
                for field in c.split_whitespace() {
                    if let Some(hex) = field.strip_prefix("matrix_sha256=") {
                        matrix_sha256 = (!hex.is_empty()).then(|| hex.to_owned());
                    }
                }
                continue;
            }
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.len() != 4 {
                return Err(err(format!(
                    "expected 4 fields `t_ms src dst rtt_ms`, got {}",
                    f.len()
                )));
            }
            let t: u64 = f[0]
                .parse()
                .map_err(|_| err(format!("bad t_ms {:?}", f[0])))?;
            if t < last_t {
                return Err(err(format!("t_ms goes back in time ({t} after {last_t})")));
            }
            last_t = t;
            let node = |s: &str| -> Result<u32, StreamError> {
                match s.parse::<u32>() {
                    Ok(v) if v < nodes => Ok(v),
                    _ => Err(err(format!("node id {s:?} is not in 0..{nodes}"))),
                }
            };
            let (src, dst) = (node(f[1])?, node(f[2])?);
            if src == dst {
                return Err(err("src and dst are the same node".into()));
            }
            let rtt_ns = parse_ms(f[3]).ok_or_else(|| err(format!("bad rtt_ms {:?}", f[3])))?;
            let round = u32::try_from(t / 1000).map_err(|_| err("t_ms too large".into()))?;
            observations.push(Observation {
                round,
                src,
                dst,
                rtt_ns,
            });
        }
        Ok(Stream {
            observations,
            sha256,
            matrix_sha256,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_convert_like_the_harness() {
        assert_eq!(parse_ms("42.670290"), Some(42_670_290));
        assert_eq!(parse_ms("7"), Some(7_000_000));
        assert_eq!(parse_ms("0.5"), Some(500_000));
        assert_eq!(parse_ms("-1.000001"), Some(-1_000_001));
        assert_eq!(parse_ms("1e3"), Some(1_000_000_000));
        assert_eq!(parse_ms("1.0000004"), Some(1_000_000));
        assert_eq!(parse_ms("x"), None);
    }

    #[test]
    fn floats_print_as_python_repr() {
        for (v, s) in [
            (2.0, "2.0"),
            (0.1, "0.1"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1.5e-7, "1.5e-07"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.25e100, "1.25e+100"),
            (-0.0, "-0.0"),
            (f64::NAN, "nan"),
            (f64::NEG_INFINITY, "-inf"),
        ] {
            assert_eq!(py_repr(v), s);
        }
    }

    #[test]
    fn comments_and_spacing_read_like_the_harness() {
        let s = Stream::parse(
            "s",
            b"  # x matrix_sha256=abc12 y\n\t0  1\t2 3.5  \r\n# nomatrix_sha256=ff\n",
            5,
        )
        .unwrap();
        assert_eq!(s.matrix_sha256.as_deref(), Some("abc12"));
        assert_eq!(s.observations.len(), 1);
        assert_eq!(s.observations[0].rtt_ns, 3_500_000);
    }

    #[test]
    fn bad_lines_are_refused_with_their_number() {
        let e = Stream::parse("s", b"# c\n0 1 2 3.0\n0 1 1 3.0\n", 5)
            .unwrap_err()
            .0;
        assert!(e.starts_with("s:3:"), "{e}");
        let e = Stream::parse("s", b"1000 1 2 3\n0 1 2 3\n", 5)
            .unwrap_err()
            .0;
        assert!(e.contains("back in time"), "{e}");
        let e = Stream::parse("s", b"0 1 9 3\n", 5).unwrap_err().0;
        assert!(e.contains("not in 0..5"), "{e}");
    }
}

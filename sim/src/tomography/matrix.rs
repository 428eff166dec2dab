//! Latency matrices: CSV `a,b,rtt_ms`, one row per unordered pair.
//!
//! Read by the same rules as the Serf harness and the stream generator: the
//! header names the columns (any order, extra columns ignored); `N` is one
//! more than the largest id in any row; a row is valid when `a != b` and
//! `rtt_ms` is a finite number above zero, and other rows are skipped and
//! counted; a valid pair given twice is an error.

use std::path::Path;

use crate::output::trace::sha256_hex;

/// Largest node id accepted: a per-node table is allocated for every id up to
/// the largest, so a stray huge id must be an error, not an allocation.
pub const MAX_NODE_ID: u32 = 999_999;

/// One measured pair.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pair {
    /// One node.
    pub a: u32,
    /// The other.
    pub b: u32,
    /// Measured round-trip time, milliseconds.
    pub rtt_ms: f64,
}

/// A latency matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Matrix {
    /// File name, for provenance lines.
    pub name: String,
    /// SHA-256 of the file's bytes, hex.
    pub sha256: String,
    /// Number of node ids (one more than the largest).
    pub nodes: u32,
    /// Valid pairs, in file order.
    pub pairs: Vec<Pair>,
    /// Rows skipped as invalid.
    pub skipped: usize,
    /// `peers[i]`: `(j, rtt_ms)` for every valid pair of `i`, by `j`.
    pub peers: Vec<Vec<(u32, f64)>>,
}

/// A matrix file that cannot be used, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct MatrixError(pub String);

impl Matrix {
    /// Reads a matrix file.
    pub fn load(path: &Path) -> Result<Matrix, MatrixError> {
        let bytes = std::fs::read(path)
            .map_err(|e| MatrixError(format!("cannot read {}: {e}", path.display())))?;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Self::parse(&name, &bytes)
    }

    /// Parses matrix bytes; `name` labels errors.
    pub fn parse(name: &str, bytes: &[u8]) -> Result<Matrix, MatrixError> {
        let err = |line: usize, what: String| MatrixError(format!("{name}:{line}: {what}"));
        let sha256 = sha256_hex(bytes);
        let text =
            std::str::from_utf8(bytes).map_err(|_| MatrixError(format!("{name}: not UTF-8")))?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let mut lines = text.lines().enumerate();
        let (_, header) = lines
            .next()
            .ok_or_else(|| MatrixError(format!("{name}: empty matrix")))?;
        let cols: Vec<String> = header.split(',').map(|h| h.trim().to_lowercase()).collect();
        let col = |c: &str| cols.iter().position(|h| h == c);
        let (Some(ia), Some(ib), Some(ir)) = (col("a"), col("b"), col("rtt_ms")) else {
            return Err(err(
                1,
                format!("header must contain columns a,b,rtt_ms (got {header:?})"),
            ));
        };
        let mut pairs = Vec::new();
        let mut seen = std::collections::HashSet::new();
        let mut skipped = 0;
        let mut max_id: i64 = -1;
        for (i, line) in lines {
            let ln = i + 1;
            if line.trim().is_empty() {
                continue;
            }
            let f: Vec<&str> = line.split(',').collect();
            if f.len() != cols.len() {
                return Err(err(
                    ln,
                    format!("expected {} fields, got {}", cols.len(), f.len()),
                ));
            }
            let id = |s: &str| -> Result<u32, MatrixError> {
                s.trim()
                    .parse::<u32>()
                    .ok()
                    .filter(|&v| v <= MAX_NODE_ID)
                    .ok_or_else(|| {
                        err(
                            ln,
                            format!("bad node id {s:?} (ids are integers from 0 to {MAX_NODE_ID})"),
                        )
                    })
            };
            let (a, b) = (id(f[ia])?, id(f[ib])?);
            max_id = max_id.max(a as i64).max(b as i64);
            let rtt: f64 = f[ir].trim().parse().unwrap_or(f64::NAN);
            if a == b || !rtt.is_finite() || rtt <= 0.0 {
                skipped += 1;
                continue;
            }
            if !seen.insert((a.min(b), a.max(b))) {
                return Err(err(ln, format!("pair {a},{b} appears twice")));
            }
            pairs.push(Pair { a, b, rtt_ms: rtt });
        }
        let nodes = (max_id + 1) as u32;
        if pairs.is_empty() {
            return Err(MatrixError(format!("{name}: no valid pairs")));
        }
        let mut peers = vec![Vec::new(); nodes as usize];
        for p in &pairs {
            peers[p.a as usize].push((p.b, p.rtt_ms));
            peers[p.b as usize].push((p.a, p.rtt_ms));
        }
        for p in &mut peers {
            p.sort_by_key(|(j, _)| *j);
        }
        Ok(Matrix {
            name: name.to_owned(),
            sha256,
            nodes,
            pairs,
            skipped,
            peers,
        })
    }

    /// The measured RTT between `a` and `b`, if the matrix has it.
    pub fn rtt_ms(&self, a: u32, b: u32) -> Option<f64> {
        let row = self.peers.get(a as usize)?;
        row.binary_search_by_key(&b, |(j, _)| *j)
            .ok()
            .map(|k| row[k].1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_like_the_harness() {
        let m = Matrix::parse(
            "t.csv",
            b"b,rtt_ms,a,x\n1,10.5,0,q\n2,0,0,q\n2,nan,1,q\n2,7,1,q\n3,3,3,q\n",
        )
        .unwrap();
        assert_eq!(m.nodes, 4);
        assert_eq!(m.pairs.len(), 2);
        assert_eq!(m.skipped, 3);
        assert_eq!(m.rtt_ms(1, 0), Some(10.5));
        assert_eq!(m.rtt_ms(2, 1), Some(7.0));
        assert_eq!(m.rtt_ms(0, 2), None);
    }

    #[test]
    fn errors_name_the_line() {
        let e = Matrix::parse("t.csv", b"a,b,rtt_ms\n0,1,2\n1,0,3\n")
            .unwrap_err()
            .0;
        assert!(e.starts_with("t.csv:3:"), "{e}");
        let e = Matrix::parse("t.csv", b"a,b,rtt_ms\n0,x,2\n")
            .unwrap_err()
            .0;
        assert!(e.contains("bad node id"), "{e}");
        let e = Matrix::parse("t.csv", b"a,b,rtt_ms\n0,4294967295,2\n")
            .unwrap_err()
            .0;
        assert!(e.contains("bad node id"), "{e}");
        let e = Matrix::parse("t.csv", b"x,y\n").unwrap_err().0;
        assert!(e.contains("a,b,rtt_ms"), "{e}");
    }
}

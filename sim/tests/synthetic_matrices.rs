//! The synthetic matrices of `scenarios/data/synthetic/` are what
//! `generate.py` writes today, and each loads as a matrix to score against.

use std::path::PathBuf;
use std::process::Command;

use cairn_sim::tomography::Matrix;

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios/data/synthetic")
}

#[test]
fn the_synthetic_matrices_are_current_and_load() {
    let out = Command::new("python3")
        .arg(dir().join("generate.py"))
        .arg("--check")
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "csv") {
            let m = Matrix::load(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(m.nodes >= 18 && !m.pairs.is_empty(), "{}", path.display());
            loaded += 1;
        }
    }
    assert_eq!(loaded, 13, "the suite lists thirteen matrices");
}

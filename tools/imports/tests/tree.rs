//! The crates' import circles, and their files and functions over the
//! line limits, are exactly the ones still listed in `known.txt`: a new
//! one fails, and so does one that is gone until the list says so
//! (`cargo run -p cairn-imports -- --known tools/imports/known.txt --write
//! src sim/src`, from the top).

use std::path::Path;

use cairn_imports::{compare, known_lines, Graph};

#[test]
fn nothing_is_left_to_mend_but_what_is_listed() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut report = String::new();
    for dir in ["src", "sim/src"] {
        let g = Graph::read(&top.join(dir)).unwrap();
        for c in g.circles() {
            report.push_str(&format!("{dir}: {c}"));
        }
        found.extend(known_lines(dir, &g));
    }
    let listed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("known.txt")).unwrap();
    let diff = compare(&listed, &found);
    assert!(diff.is_empty(), "{diff}\nthe circles now:\n{report}");
}

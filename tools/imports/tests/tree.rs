//! The crates' import circles are exactly the ones still listed in
//! `known-circles.txt`: a new one fails, and so does one that is gone until
//! the list says so (`cargo run -p cairn-imports -- --known
//! tools/imports/known-circles.txt --write src sim/src`, from the top).

use std::path::Path;

use cairn_imports::{compare, known_lines, Graph};

#[test]
fn the_crates_have_no_circles_but_the_listed_ones() {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut found = Vec::new();
    let mut report = String::new();
    for dir in ["src", "sim/src"] {
        let g = Graph::read(&top.join(dir)).unwrap();
        let circles = g.circles();
        for c in &circles {
            report.push_str(&format!("{dir}: {c}"));
        }
        found.extend(known_lines(dir, &circles));
    }
    let listed =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("known-circles.txt"))
            .unwrap();
    let diff = compare(&listed, &found);
    assert!(diff.is_empty(), "{diff}\nthe circles now:\n{report}");
}

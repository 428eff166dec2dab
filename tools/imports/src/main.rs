//! `cairn-imports [--all] [--known FILE [--write]] DIR...`: the circles in
//! the import graphs of the library crates rooted at each `DIR/lib.rs`
//! (with `--all`, every step inside each circle, not one loop).
//!
//! Without `--known`, any circle fails. With it, the circles must be
//! exactly the ones FILE lists (one per line: `DIR: file file ...`), so a
//! new circle fails and so does one that is gone until FILE says so;
//! `--write` rewrites FILE from what is found.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_imports::{compare, known_lines, Graph};

fn main() -> ExitCode {
    let mut known: Option<PathBuf> = None;
    let mut write = false;
    let mut all = false;
    let mut dirs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--known" => match args.next() {
                Some(f) => known = Some(f.into()),
                None => return usage("--known needs a file"),
            },
            "--write" => write = true,
            "--all" => all = true,
            "-h" | "--help" => return usage(""),
            _ if a.starts_with('-') => return usage(&format!("unknown flag {a}")),
            _ => dirs.push(PathBuf::from(a)),
        }
    }
    if dirs.is_empty() {
        return usage("give at least one crate directory (for example src sim/src)");
    }
    let mut found = Vec::new();
    for dir in &dirs {
        let g = match Graph::read(dir) {
            Ok(g) => g,
            Err(e) => {
                eprintln!("cairn-imports: {e}");
                return ExitCode::from(2);
            }
        };
        let circles = g.circles();
        println!(
            "{}: {} files, {} circle(s)",
            dir.display(),
            g.files().count(),
            circles.len()
        );
        for c in &circles {
            print!("  {c}");
            if all {
                println!("    every step inside it:");
                for s in g.steps_within(c) {
                    println!("      {}:{} `{}` -> {}", s.from, s.line, s.path, s.to);
                }
            }
        }
        found.extend(known_lines(&dir.to_string_lossy(), &circles));
    }
    let Some(known) = known else {
        return if found.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    };
    if write {
        let mut text = String::from(
            "# Import circles still to break (tools/imports; issue 22). One per line:\n# DIR: the files, sorted. Rewrite with --write once a circle is gone.\n",
        );
        for l in &found {
            text.push_str(l);
            text.push('\n');
        }
        if let Err(e) = std::fs::write(&known, text) {
            eprintln!("cairn-imports: writing {}: {e}", known.display());
            return ExitCode::from(2);
        }
        return ExitCode::SUCCESS;
    }
    let listed = match std::fs::read_to_string(&known) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cairn-imports: reading {}: {e}", known.display());
            return ExitCode::from(2);
        }
    };
    let diff = compare(&listed, &found);
    if diff.is_empty() {
        return ExitCode::SUCCESS;
    }
    eprintln!("{diff}");
    ExitCode::FAILURE
}

fn usage(problem: &str) -> ExitCode {
    if !problem.is_empty() {
        eprintln!("cairn-imports: {problem}");
    }
    eprintln!("usage: cairn-imports [--all] [--known FILE [--write]] DIR...");
    ExitCode::from(2)
}

//! `cairn-imports [--all] [--known FILE [--write]] DIR...`: the circles in
//! the import graphs of the library crates rooted at each `DIR/lib.rs`
//! (with `--all`, every step inside each circle, not one loop), and the
//! files and functions over the line limits.
//!
//! Without `--known`, any of them fails. With it, they must be exactly
//! the ones FILE lists (see [`known_lines`]), so a new one fails and so
//! does one that is gone until FILE says so; `--write` rewrites FILE from
//! what is found.

use std::path::PathBuf;
use std::process::ExitCode;

use cairn_imports::{compare, known_lines, Graph, FILE_LIMIT, FN_LIMIT};

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
    if write && known.is_none() {
        return usage("--write needs --known FILE");
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
        for (path, n) in g.long_files(FILE_LIMIT) {
            println!("  {path}: {n} lines of production code (limit {FILE_LIMIT})");
        }
        for (path, name, line, n) in g.long_functions(FN_LIMIT) {
            println!("  {path}:{line} fn {name}: {n} lines (limit {FN_LIMIT})");
        }
        found.extend(known_lines(&dir.to_string_lossy(), &g));
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
            "# Exceptions to the import rules (tools/imports; issue 22), one per line:\n# import circles (circle DIR: the files), files over 1,200 lines of production\n# code (file DIR: path), functions over 200 lines (fn DIR: path name).\n# A new one fails `cargo test`: mend it rather than list it (`--write`\n# rewrites this file from the tree).\n",
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

//! The import graph of a Rust crate, file by file, and the circles in it.
//!
//! A newcomer should be able to read a crate bottom up: every file depends
//! only on files below it. This reads a crate's source as it is (no
//! compiler, no dependencies) and finds the files that depend on each other
//! in a loop.
//!
//! What counts as a dependency of a file:
//! - every path in its `use` declarations (`use crate::a::b::C;`, groups,
//!   renames, globs), and every path written inline (`crate::a::f()`,
//!   `super::b::C`, `self::c::D`, or through a module a `use` brought in
//!   scope: `use super::wire;` then `wire::decode(..)`);
//! - resolved to the file that defines the item: a path through a
//!   module's re-export (`pub use node::Node;` in `gossip/mod.rs`) counts
//!   for the file that defines `Node`, not for the facade.
//!
//! What does not:
//! - a module declaring its children (`mod node;`), and a facade
//!   re-exporting its own descendants' items;
//! - test code: items under `#[cfg(test)]`, and the files they load;
//! - paths inside comments and string literals; other crates.
//!
//! Names a file defines are read from its top-level items. An item made by
//! a macro is not seen: a path to it counts for the module it is looked up
//! in, which is where it is anyway.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

/// Something that stops the graph from being read.
#[derive(Debug)]
pub enum Error {
    /// A file could not be read.
    Read(PathBuf, std::io::Error),
    /// The crate has no `lib.rs` (or the root given does not exist).
    NoRoot(PathBuf),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Read(p, e) => write!(f, "reading {}: {e}", p.display()),
            Error::NoRoot(p) => write!(
                f,
                "{} has no lib.rs: give the directory that holds a library crate's root (for example src/)",
                p.display()
            ),
        }
    }
}

impl std::error::Error for Error {}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    /// `::`
    Sep,
    Punct(char),
}

#[derive(Debug, Clone)]
struct Token {
    tok: Tok,
    line: usize,
}

/// Tokens of Rust source, with comments, literals' contents (but for
/// strings, kept for `#[path]`), numbers and lifetimes dropped.
fn lex(src: &str) -> Vec<Token> {
    let c: Vec<char> = src.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let ident_start = |ch: char| ch.is_alphabetic() || ch == '_';
    let ident_char = |ch: char| ch.is_alphanumeric() || ch == '_';
    while i < c.len() {
        let ch = c[i];
        let next = c.get(i + 1).copied();
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && next == Some('/') {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && next == Some('*') {
            let mut depth = 0;
            while i < c.len() {
                if c[i] == '/' && c.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if c[i] == '*' && c.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if c[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some((len, hashes)) = raw_string_start(&c[i..]) {
            // r"..", r#".."#, br".."
            let start_line = line;
            i += len;
            let body_start = i;
            loop {
                if i >= c.len() {
                    break;
                }
                if c[i] == '"'
                    && c[i + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    break;
                }
                if c[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            let body: String = c[body_start..i.min(c.len())].iter().collect();
            i = (i + 1 + hashes).min(c.len());
            out.push(Token {
                tok: Tok::Str(body),
                line: start_line,
            });
        } else if ch == '"' || (ch == 'b' && next == Some('"')) {
            let start_line = line;
            i += if ch == 'b' { 2 } else { 1 };
            let mut body = String::new();
            while i < c.len() && c[i] != '"' {
                if c[i] == '\\' {
                    i += 1;
                }
                if let Some(&x) = c.get(i) {
                    if x == '\n' {
                        line += 1;
                    }
                    body.push(x);
                }
                i += 1;
            }
            i += 1;
            out.push(Token {
                tok: Tok::Str(body),
                line: start_line,
            });
        } else if ch == '\'' || (ch == 'b' && next == Some('\'')) {
            // A char literal ('a', '\n', b'x') or a lifetime ('a).
            let q = if ch == 'b' { i + 1 } else { i };
            if c.get(q + 1) == Some(&'\\') {
                i = q + 2;
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if c.get(q + 2) == Some(&'\'') {
                i = q + 3;
            } else {
                i = q + 1;
                while i < c.len() && ident_char(c[i]) {
                    i += 1;
                }
            }
        } else if ch.is_ascii_digit() {
            while i < c.len()
                && (ident_char(c[i])
                    || c[i] == '.' && c.get(i + 1).is_some_and(char::is_ascii_digit))
            {
                i += 1;
            }
        } else if ident_start(ch) {
            let mut s = String::new();
            if ch == 'r' && next == Some('#') && c.get(i + 2).copied().is_some_and(ident_start) {
                i += 2;
            }
            while i < c.len() && ident_char(c[i]) {
                s.push(c[i]);
                i += 1;
            }
            out.push(Token {
                tok: Tok::Ident(s),
                line,
            });
        } else if ch == ':' && next == Some(':') {
            out.push(Token {
                tok: Tok::Sep,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// At a raw string's opening (`r"`, `r#"`, `br##"`...): the opening's
/// length and the number of `#`s.
fn raw_string_start(c: &[char]) -> Option<(usize, usize)> {
    let mut i = 0;
    if c.first() == Some(&'b') {
        i += 1;
    }
    if c.get(i) != Some(&'r') {
        return None;
    }
    i += 1;
    let mut hashes = 0;
    while c.get(i) == Some(&'#') {
        hashes += 1;
        i += 1;
    }
    (c.get(i) == Some(&'"')).then_some((i + 1, hashes))
}

/// A path a file refers to, as written.
#[derive(Debug, Clone)]
struct Reference {
    segs: Vec<String>,
    line: usize,
    /// From a `pub use`: a re-export.
    reexport: bool,
}

/// One `use` binding: `name` stands for `segs` (`*` for a glob).
#[derive(Debug, Clone)]
struct Binding {
    name: String,
    segs: Vec<String>,
    public: bool,
}

/// What one file says.
#[derive(Debug, Default)]
struct FileFacts {
    /// Child modules declared with `mod x;`, with their `#[path]`.
    children: Vec<(String, Option<String>)>,
    bindings: Vec<Binding>,
    references: Vec<Reference>,
    /// Names of top-level items.
    defines: BTreeSet<String>,
    /// Functions with a body: (name, first line, lines).
    functions: Vec<(String, usize, usize)>,
    /// Lines of the file, and of them, lines of test code.
    lines: usize,
    test_lines: usize,
}

/// From `i` at a `fn`, its body's first and last token, if it has one.
fn fn_body(t: &[Token], i: usize) -> Option<(usize, usize)> {
    let mut j = i + 1;
    let mut depth = 0i32;
    let open = loop {
        match t.get(j)?.tok {
            Tok::Punct('(' | '[') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct(';') if depth == 0 => return None,
            Tok::Punct('{') if depth == 0 => break j,
            _ => {}
        }
        j += 1;
    };
    let mut braces = 0;
    for (k, tok) in t.iter().enumerate().skip(open) {
        match tok.tok {
            Tok::Punct('{') => braces += 1,
            Tok::Punct('}') => {
                braces -= 1;
                if braces == 0 {
                    return Some((open, k));
                }
            }
            _ => {}
        }
    }
    None
}

fn ident(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Ident(s)) => Some(s),
        _ => None,
    }
}

fn is_punct(t: Option<&Token>, p: char) -> bool {
    matches!(t.map(|t| &t.tok), Some(Tok::Punct(x)) if *x == p)
}

/// From `i` at an item's start, the index just past its end: its `;` or
/// its body's closing brace, at depth 0. Under an attribute inside a body
/// (a field, a variant, a match arm, a statement) a `,` or the enclosing
/// closing brace ends it too.
fn skip_item(t: &[Token], mut i: usize) -> usize {
    let head: Vec<&str> = t[i..]
        .iter()
        .take(6)
        .filter_map(|x| ident(Some(x)))
        .collect();
    let is_use =
        head.first() == Some(&"use") || (head.first() == Some(&"pub") && head.contains(&"use"));
    let is_item = head
        .iter()
        .take_while(|w| {
            matches!(
                **w,
                "pub" | "crate" | "super" | "async" | "unsafe" | "extern"
            )
        })
        .count();
    let is_item = head
        .get(is_item)
        .is_some_and(|w| ITEM_KEYWORDS.contains(w) || *w == "impl" || *w == "use");
    let mut depth = 0i32;
    while i < t.len() {
        match &t[i].tok {
            Tok::Punct('(' | '[' | '{') => depth += 1,
            Tok::Punct(')' | ']') => depth -= 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth < 0 {
                    return i;
                }
                if depth == 0 && !is_use {
                    return i + 1;
                }
            }
            Tok::Punct(';') if depth == 0 => return i + 1,
            Tok::Punct(',') if depth == 0 && !is_item => return i + 1,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads an attribute `#[..]` or `#![..]` starting at `i`: its end, and
/// whether it is `cfg(test)` or a `path = ".."`.
fn attribute(t: &[Token], i: usize) -> Option<(usize, bool, Option<String>)> {
    if !is_punct(t.get(i), '#') {
        return None;
    }
    let mut j = i + 1;
    if is_punct(t.get(j), '!') {
        j += 1;
    }
    if !is_punct(t.get(j), '[') {
        return None;
    }
    let start = j + 1;
    let mut depth = 0;
    while j < t.len() {
        match t[j].tok {
            Tok::Punct('[' | '(' | '{') => depth += 1,
            Tok::Punct(']' | ')' | '}') => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            _ => {}
        }
        j += 1;
    }
    let body = &t[start..j.min(t.len())];
    let names: Vec<&Tok> = body.iter().map(|x| &x.tok).collect();
    let test = matches!(
        names.as_slice(),
        [Tok::Ident(c), Tok::Punct('('), Tok::Ident(x), Tok::Punct(')')] if c == "cfg" && x == "test"
    );
    let path = match names.as_slice() {
        [Tok::Ident(p), Tok::Punct('='), Tok::Str(s)] if p == "path" => Some(s.clone()),
        _ => None,
    };
    Some((j + 1, test, path))
}

/// Parses a use tree from `i` (after `use`), adding its bindings: returns
/// the index after the closing `;`.
fn use_tree(
    t: &[Token],
    mut i: usize,
    prefix: &[String],
    public: bool,
    out: &mut Vec<(Binding, usize)>,
) -> usize {
    let mut segs = prefix.to_vec();
    if t.get(i).map(|x| &x.tok) == Some(&Tok::Sep) {
        i += 1; // a leading `::`
    }
    loop {
        match t.get(i).map(|x| &x.tok) {
            Some(Tok::Ident(s)) => {
                segs.push(s.clone());
                i += 1;
                if t.get(i).map(|x| &x.tok) == Some(&Tok::Sep) {
                    i += 1;
                    continue;
                }
                let line = t[i - 1].line;
                let mut name = segs.last().cloned().unwrap_or_default();
                if ident(t.get(i)) == Some("as") {
                    name = ident(t.get(i + 1)).unwrap_or("_").to_string();
                    i += 2;
                }
                if name == "self" {
                    segs.pop();
                    name = segs.last().cloned().unwrap_or_default();
                }
                out.push((Binding { name, segs, public }, line));
                return i;
            }
            Some(Tok::Punct('*')) => {
                segs.push("*".into());
                out.push((
                    Binding {
                        name: "*".into(),
                        segs,
                        public,
                    },
                    t[i].line,
                ));
                return i + 1;
            }
            Some(Tok::Punct('{')) => {
                i += 1;
                loop {
                    match t.get(i).map(|x| &x.tok) {
                        Some(Tok::Punct('}')) => return i + 1,
                        Some(Tok::Punct(',')) => i += 1,
                        None => return i,
                        _ => {
                            let before = i;
                            i = use_tree(t, i, &segs, public, out);
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
            }
            _ => return i,
        }
    }
}

const ITEM_KEYWORDS: &[&str] = &[
    "fn", "struct", "enum", "trait", "type", "const", "static", "union", "mod",
];

fn facts(src: &str) -> FileFacts {
    let t = lex(src);
    let mut f = FileFacts::default();
    let mut i = 0;
    let mut depth = 0i32;
    let mut test_next = false;
    let mut test_from = 0;
    let mut path_next: Option<String> = None;
    let mut uses = Vec::new();
    while i < t.len() {
        if let Some((end, test, path)) = attribute(&t, i) {
            if test && !test_next {
                test_from = t[i].line;
            }
            test_next |= test;
            if path.is_some() {
                path_next = path;
            }
            i = end;
            continue;
        }
        if test_next {
            test_next = false;
            path_next = None;
            let end = skip_item(&t, i);
            if let Some(b) = t.get(end.saturating_sub(1)) {
                f.test_lines += b.line + 1 - test_from.min(b.line);
            }
            i = end;
            continue;
        }
        match &t[i].tok {
            Tok::Punct('{') => {
                depth += 1;
                i += 1;
            }
            Tok::Punct('}') => {
                depth -= 1;
                i += 1;
            }
            Tok::Ident(kw) if kw == "use" => {
                // `pub use`, `pub(crate) use`, `pub(in crate::a) use`
                let public = t[..i]
                    .iter()
                    .rev()
                    .take_while(|x| match &x.tok {
                        Tok::Ident(_) | Tok::Sep => true,
                        Tok::Punct(p) => matches!(p, '(' | ')'),
                        Tok::Str(_) => false,
                    })
                    .take(8)
                    .any(|x| x.tok == Tok::Ident("pub".into()));
                i = use_tree(&t, i + 1, &[], public, &mut uses);
            }
            Tok::Ident(kw) if depth == 0 && kw == "mod" => {
                if let Some(name) = ident(t.get(i + 1)) {
                    if is_punct(t.get(i + 2), ';') {
                        f.children.push((name.to_string(), path_next.take()));
                    } else {
                        f.defines.insert(name.to_string());
                    }
                }
                i += 2;
            }
            Tok::Ident(kw) if kw == "fn" && ident(t.get(i + 1)).is_some() => {
                let name = ident(t.get(i + 1)).unwrap_or_default().to_string();
                if let Some((_, close)) = fn_body(&t, i) {
                    f.functions
                        .push((name.clone(), t[i].line, t[close].line + 1 - t[i].line));
                }
                if depth == 0 {
                    f.defines.insert(name);
                }
                i += 1;
            }
            Tok::Ident(kw) if depth == 0 && ITEM_KEYWORDS.contains(&kw.as_str()) => {
                if let Some(name) = ident(t.get(i + 1)) {
                    f.defines.insert(name.to_string());
                }
                i += 1;
            }
            Tok::Ident(kw) if depth == 0 && kw == "macro_rules" => {
                if let Some(name) = ident(t.get(i + 2)) {
                    f.defines.insert(name.to_string());
                }
                i += 1;
            }
            Tok::Ident(first) => {
                // A path written inline: `first::a::b`, not itself the tail
                // of a longer path.
                let starts = i == 0 || t[i - 1].tok != Tok::Sep;
                if starts && t.get(i + 1).map(|x| &x.tok) == Some(&Tok::Sep) {
                    let mut segs = vec![first.clone()];
                    let mut j = i + 1;
                    while t.get(j).map(|x| &x.tok) == Some(&Tok::Sep) {
                        match ident(t.get(j + 1)) {
                            Some(s) => {
                                segs.push(s.to_string());
                                j += 2;
                            }
                            None => break,
                        }
                    }
                    f.references.push(Reference {
                        segs,
                        line: t[i].line,
                        reexport: false,
                    });
                    i = j;
                } else {
                    i += 1;
                }
            }
            _ => i += 1,
        }
        path_next = None;
    }
    for (b, line) in uses {
        f.references.push(Reference {
            segs: b.segs.clone(),
            line,
            reexport: b.public,
        });
        f.bindings.push(b);
    }
    f
}

/// One file of the crate.
#[derive(Debug)]
struct File {
    /// Relative to the crate root directory.
    path: String,
    /// Its module path, without `crate`.
    module: Vec<String>,
    facts: FileFacts,
}

/// A crate's import graph: files, and which depend on which.
#[derive(Debug)]
pub struct Graph {
    files: Vec<File>,
    by_module: HashMap<Vec<String>, usize>,
    /// `edges[a]`: (file `a` depends on, first line that says so, the
    /// path as written).
    edges: Vec<BTreeMap<usize, (usize, String)>>,
}

impl Graph {
    /// Reads the library crate whose root is `dir/lib.rs`, following its
    /// `mod` declarations (test-only ones excepted).
    pub fn read(dir: &Path) -> Result<Graph, Error> {
        let root = dir.join("lib.rs");
        if !root.is_file() {
            return Err(Error::NoRoot(dir.to_path_buf()));
        }
        let mut files = Vec::new();
        // (file, its module, whether its children live in its directory)
        let mut todo = vec![(root, Vec::<String>::new(), true)];
        while let Some((path, module, owns_dir)) = todo.pop() {
            let src = std::fs::read_to_string(&path).map_err(|e| Error::Read(path.clone(), e))?;
            let mut facts = facts(&src);
            facts.lines = src.lines().count();
            let base = if owns_dir {
                path.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                path.with_extension("")
            };
            for (child, at) in &facts.children {
                let mut m = module.clone();
                m.push(child.clone());
                let (file, owns) = match at {
                    Some(p) => (path.parent().unwrap_or(dir).join(p), false),
                    None => {
                        let flat = base.join(format!("{child}.rs"));
                        if flat.is_file() {
                            (flat, false)
                        } else {
                            (base.join(child).join("mod.rs"), true)
                        }
                    }
                };
                todo.push((file, m, owns));
            }
            let rel = path
                .strip_prefix(dir)
                .unwrap_or(&path)
                .to_string_lossy()
                .replace('\\', "/");
            files.push(File {
                path: rel,
                module,
                facts,
            });
        }
        files.sort_by(|a, b| a.path.cmp(&b.path));
        let by_module = files
            .iter()
            .enumerate()
            .map(|(i, f)| (f.module.clone(), i))
            .collect();
        let mut g = Graph {
            edges: vec![BTreeMap::new(); files.len()],
            files,
            by_module,
        };
        g.link();
        Ok(g)
    }

    /// The files read, relative to the crate's directory.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.files.iter().map(|f| f.path.as_str())
    }

    /// Whether file `from` depends on file `to` (paths as in [`files`](Self::files)).
    pub fn depends(&self, from: &str, to: &str) -> bool {
        let idx = |p: &str| self.files.iter().position(|f| f.path == p);
        match (idx(from), idx(to)) {
            (Some(a), Some(b)) => self.edges[a].contains_key(&b),
            _ => false,
        }
    }

    /// Files with more than `limit` lines of production code (test code
    /// beside it is not counted), as "path (N lines)".
    pub fn long_files(&self, limit: usize) -> Vec<(String, usize)> {
        self.files
            .iter()
            .map(|f| {
                (
                    f.path.clone(),
                    f.facts.lines.saturating_sub(f.facts.test_lines),
                )
            })
            .filter(|(_, n)| *n > limit)
            .collect()
    }

    /// Production functions longer than `limit` lines, as (path, name,
    /// first line, lines).
    pub fn long_functions(&self, limit: usize) -> Vec<(String, String, usize, usize)> {
        let mut out = Vec::new();
        for f in &self.files {
            for (name, line, n) in &f.facts.functions {
                if *n > limit {
                    out.push((f.path.clone(), name.clone(), *line, *n));
                }
            }
        }
        out
    }

    /// Every dependency between two files of `circle`, with the line that
    /// makes it: what to cut to break it.
    pub fn steps_within(&self, circle: &Circle) -> Vec<Step> {
        let inside: Vec<usize> = circle
            .files
            .iter()
            .filter_map(|p| self.files.iter().position(|f| &f.path == p))
            .collect();
        let mut out = Vec::new();
        for &a in &inside {
            for (&b, (line, path)) in &self.edges[a] {
                if inside.contains(&b) {
                    out.push(Step {
                        from: self.files[a].path.clone(),
                        line: *line,
                        path: path.clone(),
                        to: self.files[b].path.clone(),
                    });
                }
            }
        }
        out
    }

    fn link(&mut self) {
        for a in 0..self.files.len() {
            for r in &self.files[a].facts.references {
                let Some(abs) = self.absolute(a, &r.segs, 0) else {
                    continue;
                };
                let Some(b) = self.resolve(&abs, 0) else {
                    continue;
                };
                // A facade re-exporting its own subtree is not a dependency.
                let own = &self.files[a].module;
                if b == a || (r.reexport && self.files[b].module.starts_with(own)) {
                    continue;
                }
                self.edges[a]
                    .entry(b)
                    .or_insert_with(|| (r.line, r.segs.join("::")));
            }
        }
    }

    /// `segs` as written in file `a`, as an absolute module path (no
    /// `crate`); `None` for other crates.
    fn absolute(&self, a: usize, segs: &[String], hops: usize) -> Option<Vec<String>> {
        if hops > 16 {
            return None;
        }
        let f = &self.files[a];
        let mut module = f.module.clone();
        let mut rest = segs;
        match rest.first().map(String::as_str)? {
            "crate" => {
                module.clear();
                rest = &rest[1..];
            }
            "self" => rest = &rest[1..],
            "super" => {
                while rest.first().map(String::as_str) == Some("super") {
                    module.pop();
                    rest = &rest[1..];
                }
            }
            first => {
                if f.facts.children.iter().any(|(c, _)| c == first) {
                    // a child module, by its name
                } else if let Some(b) = f
                    .facts
                    .bindings
                    .iter()
                    .find(|b| b.name == first && b.name != "*")
                {
                    if b.segs == segs {
                        // the `use` itself, relative to nothing we know
                        return None;
                    }
                    let mut base = self.absolute(a, &b.segs, hops + 1)?;
                    base.extend_from_slice(&rest[1..]);
                    return Some(base);
                } else {
                    return None;
                }
            }
        }
        module.extend(rest.iter().cloned());
        Some(module)
    }

    /// The file that defines what the absolute path `abs` names.
    fn resolve(&self, abs: &[String], hops: usize) -> Option<usize> {
        let mut n = abs.len();
        let file = loop {
            if let Some(&i) = self.by_module.get(&abs[..n]) {
                break i;
            }
            if n == 0 {
                return None;
            }
            n -= 1;
        };
        let Some(name) = abs.get(n) else {
            return Some(file);
        };
        if hops > 16 || name == "*" {
            return Some(file);
        }
        let facts = &self.files[file].facts;
        if facts.defines.contains(name) {
            return Some(file);
        }
        // Through a `use` that brings `name` into that module (a re-export),
        // then through its globs.
        if let Some(b) = facts.bindings.iter().find(|b| &b.name == name) {
            if let Some(mut target) = self.absolute(file, &b.segs, 0) {
                target.extend_from_slice(&abs[n + 1..]);
                if let Some(found) = self.resolve(&target, hops + 1) {
                    return Some(found);
                }
            }
        }
        for g in facts.bindings.iter().filter(|b| b.name == "*") {
            let Some(mut target) = self.absolute(file, &g.segs[..g.segs.len() - 1], 0) else {
                continue;
            };
            let Some(&m) = self.by_module.get(&target) else {
                continue;
            };
            let gf = &self.files[m].facts;
            if gf.defines.contains(name) || gf.bindings.iter().any(|b| &b.name == name) {
                target.extend_from_slice(&abs[n..]);
                if let Some(found) = self.resolve(&target, hops + 1) {
                    return Some(found);
                }
            }
        }
        Some(file)
    }

    /// The circles: groups of two or more files that all reach each other,
    /// each sorted, in order.
    pub fn circles(&self) -> Vec<Circle> {
        let sccs = strongly_connected(self.files.len(), |a| {
            self.edges[a].keys().copied().collect()
        });
        let mut out: Vec<Circle> = sccs
            .into_iter()
            .filter(|c| c.len() > 1)
            .map(|mut members| {
                members.sort_unstable();
                let example = self.example_loop(&members);
                Circle {
                    files: members
                        .iter()
                        .map(|&i| self.files[i].path.clone())
                        .collect(),
                    example,
                }
            })
            .collect();
        out.sort_by(|a, b| a.files.cmp(&b.files));
        out
    }

    /// One shortest loop through the first file of a circle, with the line
    /// that makes each step.
    fn example_loop(&self, members: &[usize]) -> Vec<Step> {
        let inside: BTreeSet<usize> = members.iter().copied().collect();
        let start = members[0];
        // Breadth-first from start's successors back to start.
        let mut prev: BTreeMap<usize, usize> = BTreeMap::new();
        let mut queue = std::collections::VecDeque::new();
        for &b in self.edges[start].keys().filter(|b| inside.contains(b)) {
            prev.entry(b).or_insert(start);
            queue.push_back(b);
        }
        let mut found = false;
        while let Some(x) = queue.pop_front() {
            if x == start {
                found = true;
                break;
            }
            for &y in self.edges[x].keys().filter(|y| inside.contains(y)) {
                if let std::collections::btree_map::Entry::Vacant(e) = prev.entry(y) {
                    e.insert(x);
                    queue.push_back(y);
                }
            }
        }
        if !found {
            return Vec::new();
        }
        let mut chain = vec![start];
        let mut at = prev[&start];
        while at != start {
            chain.push(at);
            at = prev[&at];
        }
        chain.push(start);
        chain.reverse();
        chain
            .windows(2)
            .map(|w| {
                let (line, path) = &self.edges[w[0]][&w[1]];
                Step {
                    from: self.files[w[0]].path.clone(),
                    line: *line,
                    path: path.clone(),
                    to: self.files[w[1]].path.clone(),
                }
            })
            .collect()
    }
}

/// Files that all depend on each other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Circle {
    /// The files, sorted.
    pub files: Vec<String>,
    /// One loop through them, step by step.
    pub example: Vec<Step>,
}

/// One dependency: `from` (at `line`, by `path`) needs `to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The file that depends.
    pub from: String,
    /// The line that says so.
    pub line: usize,
    /// The path written there.
    pub path: String,
    /// The file depended on.
    pub to: String,
}

impl fmt::Display for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} files: {}", self.files.len(), self.files.join(" "))?;
        for s in &self.example {
            writeln!(f, "    {}:{} `{}` -> {}", s.from, s.line, s.path, s.to)?;
        }
        Ok(())
    }
}

/// Most lines of production code a file may have.
pub const FILE_LIMIT: usize = 1200;
/// Most lines a function may have.
pub const FN_LIMIT: usize = 200;

/// What crate `dir` still has to mend, as lines of a known-list file: its
/// circles (`circle DIR: files`), its files over [`FILE_LIMIT`] lines
/// (`file DIR: path`) and its functions over [`FN_LIMIT`] (`fn DIR: path
/// name`).
pub fn known_lines(dir: &str, g: &Graph) -> Vec<String> {
    let mut out: Vec<String> = g
        .circles()
        .iter()
        .map(|c| format!("circle {dir}: {}", c.files.join(" ")))
        .collect();
    out.extend(
        g.long_files(FILE_LIMIT)
            .into_iter()
            .map(|(p, _)| format!("file {dir}: {p}")),
    );
    out.extend(
        g.long_functions(FN_LIMIT)
            .into_iter()
            .map(|(p, name, _, _)| format!("fn {dir}: {p} {name}")),
    );
    out.sort();
    out.dedup();
    out
}

/// What differs between a known-list file's text and the lines found:
/// empty when they agree, else what to do about it.
pub fn compare(listed: &str, found: &[String]) -> String {
    let listed: BTreeSet<&str> = listed
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let found: BTreeSet<&str> = found.iter().map(String::as_str).collect();
    let mut out = String::new();
    for new in found.difference(&listed) {
        let what = match new.split(' ').next() {
            Some("circle") => {
                "a new import circle (break it: move the shared item below both sides)"
            }
            Some("file") => "a file over the line limit (split it by concept)",
            _ => "a function over the line limit (split it into steps)",
        };
        out.push_str(&format!("{what}:\n  {new}\n"));
    }
    for gone in listed.difference(&found) {
        out.push_str(&format!(
            "listed, but gone or changed (good: rewrite the list with --write):\n  {gone}\n"
        ));
    }
    out
}

/// Tarjan's algorithm, iterative (deep module chains must not overflow
/// the stack).
fn strongly_connected(n: usize, succ: impl Fn(usize) -> Vec<usize>) -> Vec<Vec<usize>> {
    let mut index = vec![usize::MAX; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack = Vec::new();
    let mut out = Vec::new();
    let mut next = 0;
    for root in 0..n {
        if index[root] != usize::MAX {
            continue;
        }
        let mut work: Vec<(usize, Vec<usize>, usize)> = vec![(root, succ(root), 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some((v, succs, k)) = work.last_mut() {
            let v = *v;
            if let Some(&w) = succs.get(*k) {
                *k += 1;
                if index[w] == usize::MAX {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    work.push((w, succ(w), 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
            } else {
                work.pop();
                if let Some((u, _, _)) = work.last() {
                    low[*u] = low[*u].min(low[v]);
                }
                if low[v] == index[v] {
                    let mut comp = Vec::new();
                    while let Some(w) = stack.pop() {
                        on_stack[w] = false;
                        comp.push(w);
                        if w == v {
                            break;
                        }
                    }
                    out.push(comp);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scratch crate: `files` as (path, source), under a fresh directory.
    fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("cairn-imports-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (p, src) in files {
            let path = dir.join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, src).unwrap();
        }
        dir
    }

    fn circles(name: &str, files: &[(&str, &str)]) -> Vec<Vec<String>> {
        let dir = scratch(name, files);
        let g = Graph::read(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        g.circles().into_iter().map(|c| c.files).collect()
    }

    #[test]
    fn a_planted_circle_is_caught() {
        let tree = [
            ("lib.rs", "pub mod a;\npub mod b;\npub mod c;\n"),
            ("a.rs", "use crate::b::B;\npub struct A(B);\n"),
            (
                "b.rs",
                "pub struct B;\npub fn f() { let _ = crate::c::C; }\n",
            ),
            ("c.rs", "pub struct C;\n"),
        ];
        assert!(circles("clean", &tree).is_empty());
        // c now reaches back to a, through a path written inline.
        let mut planted = tree;
        planted[3] = (
            "c.rs",
            "pub struct C;\nfn g() -> Option<super::a::A> { None }\n",
        );
        assert_eq!(
            circles("planted", &planted),
            vec![vec!["a.rs", "b.rs", "c.rs"]]
        );
    }

    #[test]
    fn facades_comments_strings_and_tests_are_not_dependencies() {
        let tree = [
            ("lib.rs", "pub mod gossip;\npub mod agent;\n"),
            // A facade re-exporting its children.
            (
                "gossip/mod.rs",
                "mod node;\nmod wire;\npub use node::Node;\npub use wire::*;\n",
            ),
            (
                "gossip/node.rs",
                "use super::wire::Packet;\npub struct Node(Packet);\n",
            ),
            ("gossip/wire.rs", "pub struct Packet;\n"),
            (
                "agent.rs",
                r##"use crate::gossip::{Node, Packet};
// crate::agent::nothing in a comment
/* and crate::gossip in a /* nested */ block */
const S: &str = "crate::gossip::Node";
const R: &str = r#"super::x"#;
fn f<'a>(x: &'a str) -> char { 'x' }
#[cfg(test)]
mod tests {
    use crate::gossip::Node;
}
#[cfg(test)]
#[path = "agent_tests.rs"]
mod more_tests;
"##,
            ),
            ("agent_tests.rs", "use crate::agent::*;\n"),
        ];
        let dir = scratch("facade", &tree);
        let g = Graph::read(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(g.circles().is_empty(), "{:?}", g.circles());
        // Through the facade, to the files that define the items.
        assert!(g.depends("agent.rs", "gossip/node.rs"));
        assert!(g.depends("agent.rs", "gossip/wire.rs"));
        assert!(!g.depends("agent.rs", "gossip/mod.rs"));
        assert!(!g.depends("gossip/mod.rs", "gossip/node.rs"));
        assert!(g.depends("gossip/node.rs", "gossip/wire.rs"));
        assert!(
            !g.files().any(|f| f == "agent_tests.rs"),
            "test files are not read"
        );
    }

    #[test]
    fn a_module_brought_in_scope_counts_where_it_is_used() {
        let tree = [
            ("lib.rs", "pub mod state;\npub mod acl;\n"),
            ("state/mod.rs", "mod command;\npub use command::Command;\n"),
            ("state/command.rs", "pub enum Command { A(crate::acl::Token) }\n"),
            (
                "acl.rs",
                "use crate::state;\npub struct Token;\npub fn init() -> Vec<state::Command> { vec![] }\n",
            ),
        ];
        assert_eq!(
            circles("scope", &tree),
            vec![vec!["acl.rs", "state/command.rs"]]
        );
    }

    #[test]
    fn long_files_and_functions_count_production_code_only() {
        let body = "    let x = 1;\n".repeat(30);
        let tree = [
            ("lib.rs", "pub mod a;\n".to_string()),
            (
                "a.rs",
                format!(
                    "pub fn long() {{\n{body}}}\nfn short() {{}}\ntrait T {{ fn sig(&self); }}\n#[cfg(test)]\nmod tests {{\n    fn long_test() {{\n{body}    }}\n}}\n"
                ),
            ),
        ];
        let tree: Vec<(&str, &str)> = tree.iter().map(|(p, s)| (*p, s.as_str())).collect();
        let dir = scratch("long", &tree);
        let g = Graph::read(&dir).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        assert_eq!(
            g.long_functions(20),
            vec![("a.rs".into(), "long".into(), 1, 32)]
        );
        assert!(g.long_functions(40).is_empty());
        // 32 + 1 + 1 lines of production code; the 35 of the test module do
        // not count.
        assert_eq!(g.long_files(30), vec![("a.rs".into(), 34)]);
        assert!(g.long_files(34).is_empty());
    }

    #[test]
    fn a_missing_root_is_a_clear_error() {
        let e = Graph::read(Path::new("/nonexistent/cairn-imports")).unwrap_err();
        assert!(e.to_string().contains("has no lib.rs"), "{e}");
    }

    #[test]
    fn lexing_survives_odd_input() {
        for src in [
            "\"unterminated",
            "r#\"raw",
            "/* open",
            "'",
            "b'",
            "#[",
            "use {",
            "use crate::{a, b",
            "mod",
        ] {
            let _ = facts(src);
        }
    }
}

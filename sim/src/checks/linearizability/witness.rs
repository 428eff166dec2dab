//! The witness of a violation: the fewest operations of the key that have
//! no linearizable order either, and their drawing.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

impl Violation {
    /// A few of its operations that have no order either.
    pub fn witness(&self) -> Witness {
        witness(&self.key, &self.ops)
    }
}

/// A few operations of a violation that already have no linearizable
/// order, whatever the key held before them (unless `from_start`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witness {
    /// The key.
    pub key: String,
    /// The operations, in call order.
    pub ops: Vec<Op>,
    /// Whether they fail only from the key's start (absent): the first
    /// operations of the history, with no earlier state to blame.
    pub from_start: bool,
}

/// The operations (indices into `ops`) that a window from `lo` to `hi`
/// must hold to be judged alone: every one that overlaps it, widened until
/// each operation left out returned before every one in it was called, or
/// was called after every one in it returned. Those before are then
/// summed up by the state they left, and those after cannot matter.
/// `ends` says when each is over (see [`ends`]).
fn closed(ops: &[Op], ends: &[u64], mut lo: u64, mut hi: u64) -> Vec<usize> {
    loop {
        let w: Vec<usize> = (0..ops.len())
            .filter(|&i| ops[i].call <= hi && ends[i] >= lo)
            .collect();
        let nlo = w.iter().map(|&i| ops[i].call).fold(lo, u64::min);
        let nhi = w.iter().map(|&i| ends[i]).fold(hi, u64::max);
        if (nlo, nhi) == (lo, hi) {
            return w;
        }
        (lo, hi) = (nlo, nhi);
    }
}

/// Whether `ops` fail from every state: absent, a value they read or
/// expect, or one they never mention. `false` when some state has an
/// order or the search could not tell.
fn fails_from_any(ops: &[&Op]) -> bool {
    let mut starts: Vec<Option<Vec<u8>>> = vec![None, Some(b"\0unmentioned".to_vec())];
    for op in ops {
        if let Some((_, Output::Value(Some(v)))) = &op.ret {
            starts.push(Some(v.clone()));
        }
        if let Input::Cas {
            expect: Some(v), ..
        } = &op.input
        {
            starts.push(Some(v.clone()));
        }
    }
    starts.sort();
    starts.dedup();
    starts
        .into_iter()
        .all(|s| check_key_from(ops, s, SEARCH_MEMORY) == Outcome::NoOrder)
}

/// The fewest operations of one key's `ops` (which have no linearizable
/// order) that have none either: the shortest prefix that fails, then the
/// shortest window ending with it that fails whatever the key held
/// before, then without each read that is not needed.
pub fn witness(key: &str, ops: &[Op]) -> Witness {
    // An operation that never returned and whose effect nobody saw can
    // always go last; it explains nothing.
    let mut all: Vec<Op> = needed(&ops.iter().collect::<Vec<_>>())
        .into_iter()
        .cloned()
        .collect();
    all.sort_by_key(|o| o.call);
    let refs = |idx: &[usize]| -> Vec<&Op> { idx.iter().map(|&i| &all[i]).collect() };
    let whole = || Witness {
        key: key.to_owned(),
        ops: all.clone(),
        from_start: true,
    };
    let everything: Vec<usize> = (0..all.len()).collect();
    if !fails(&refs(&everything)) {
        return whole();
    }
    // The earliest return by which the prefix fails.
    let ends = ends(&refs(&everything), None);
    let closed = |lo: u64, hi: u64| closed(&all, &ends, lo, hi);
    let mut rets: Vec<u64> = ends.clone();
    rets.sort_unstable();
    rets.dedup();
    let fails_by = |hi: u64| fails(&refs(&closed(0, hi)));
    let (mut a, mut b) = (0, rets.len() - 1);
    if !fails_by(rets[b]) {
        return whole();
    }
    while a < b {
        let m = (a + b) / 2;
        if fails_by(rets[m]) {
            b = m;
        } else {
            a = m + 1;
        }
    }
    let hi = rets[a];
    // The latest start from which the window still fails from any state.
    let mut calls: Vec<u64> = all.iter().map(|o| o.call).filter(|&c| c <= hi).collect();
    calls.sort_unstable();
    calls.dedup();
    let fails_from = |lo: u64| fails_from_any(&refs(&closed(lo, hi)));
    let (mut window, from_start) = if calls.first().is_some_and(|&c| fails_from(c)) {
        let (mut a, mut b) = (0, calls.len() - 1);
        while a < b {
            let m = (a + b).div_ceil(2);
            if fails_from(calls[m]) {
                a = m;
            } else {
                b = m - 1;
            }
        }
        (closed(calls[a], hi), false)
    } else {
        (closed(0, hi), true)
    };
    let window_fails = |w: &[usize]| {
        if from_start {
            fails(&refs(w))
        } else {
            fails_from_any(&refs(w))
        }
    };
    // Reads only add constraints: drop every one the failure does not
    // need. Then the writes it does not need, as long as every operation
    // that saw a value some write of the window made keeps a writer of it
    // called before it returned (a read left without its writer would make
    // a failure of its own), and every refused check-and-set keeps a
    // writer of some other value, or a state before the window that could
    // have refused it. From the key's start, absence needs none.
    let (reads, writes): (Vec<usize>, Vec<usize>) =
        window.iter().partition(|&&i| all[i].input == Input::Get);
    window = drop_unneeded(window, reads, &window_fails);
    let explained = |w: &[usize]| -> BTreeSet<usize> {
        let mut first_write: BTreeMap<Option<&[u8]>, u64> = BTreeMap::new();
        let mut first_done: BTreeMap<Option<&[u8]>, u64> = BTreeMap::new();
        for &i in w {
            if let Some(v) = wrote(&all[i]) {
                let e = first_write.entry(v).or_insert(u64::MAX);
                *e = (*e).min(all[i].call);
                if let Some((t, _)) = all[i].ret {
                    let d = first_done.entry(v).or_insert(u64::MAX);
                    *d = (*d).min(t);
                }
            }
        }
        // The two earliest-written values: the first that is not what a
        // refused check-and-set expected is its explanation.
        let mut earliest: Vec<(u64, Option<&[u8]>)> =
            first_write.iter().map(|(&v, &c)| (c, v)).collect();
        earliest.sort_unstable();
        earliest.truncate(2);
        w.iter()
            .copied()
            .filter(|&i| match (saw(&all[i]), refused_at(&all[i])) {
                (Some((None, _)), _) if from_start => true,
                (Some((v, at)), _) => first_write.get(&v).is_some_and(|&c| c <= at),
                // What the key held before may differ from what it
                // expected (from the start: absent), unless a write of that
                // value returned before it was called (a tie is concurrent).
                (None, Some((expect, at))) => {
                    ((!from_start || expect.is_some())
                        && first_done.get(&expect).is_none_or(|&d| d >= all[i].call))
                        || earliest
                            .iter()
                            .find(|(_, v)| *v != expect)
                            .is_some_and(|&(c, _)| c <= at)
                }
                (None, None) => false,
            })
            .collect()
    };
    let before = explained(&window);
    let still_explained = |w: &[usize]| {
        let now = explained(w);
        w.iter().all(|i| !before.contains(i) || now.contains(i))
    };
    window = drop_unneeded(window, writes, &|w| still_explained(w) && window_fails(w));
    Witness {
        key: key.to_owned(),
        ops: window.iter().map(|&i| all[i].clone()).collect(),
        from_start,
    }
}

/// What a check-and-set that was refused expected, and when it returned.
fn refused_at(op: &Op) -> Option<(Option<&[u8]>, u64)> {
    match (&op.input, &op.ret) {
        (Input::Cas { expect, .. }, Some((t, Output::Swapped(false)))) => {
            Some((expect.as_deref(), *t))
        }
        _ => None,
    }
}

/// `window` without each of `candidates` that `fails` does not need. A
/// window can hold thousands of them (an operation of unknown outcome
/// stretches it to the end of the history), so they go in batches that
/// halve where a batch is needed, as in delta debugging: a few checks per
/// operation kept rather than one per candidate.
fn drop_unneeded(
    mut window: Vec<usize>,
    mut candidates: Vec<usize>,
    fails: &dyn Fn(&[usize]) -> bool,
) -> Vec<usize> {
    let mut batch = candidates.len();
    while batch > 0 {
        let mut at = 0;
        while at < candidates.len() {
            let end = (at + batch).min(candidates.len());
            let drop: BTreeSet<usize> = candidates[at..end].iter().copied().collect();
            let without: Vec<usize> = window
                .iter()
                .copied()
                .filter(|i| !drop.contains(i))
                .collect();
            if fails(&without) {
                window = without;
                candidates.drain(at..end);
            } else {
                at = end;
            }
        }
        batch /= 2;
    }
    window
}

impl std::fmt::Display for Witness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let text = |v: &[u8]| {
            let s = String::from_utf8_lossy(v);
            let s: String = s.chars().take(24).collect();
            format!("{s:?}")
        };
        let value = |v: &Option<Vec<u8>>| v.as_deref().map_or("absent".into(), text);
        write!(
            f,
            "these {} on {:?} have none either{}:",
            self.ops.len(),
            self.key,
            if self.from_start {
                " (from the start, the key absent)"
            } else {
                ", whatever the key held before them"
            }
        )?;
        for op in &self.ops {
            let what = match &op.input {
                Input::Get => "get".to_string(),
                Input::Put(v) => format!("put {}", text(v)),
                Input::Delete => "delete".to_string(),
                Input::Cas { expect, new } => format!("cas {} -> {}", value(expect), text(new)),
            };
            let (until, saw) = match &op.ret {
                None => ("never".to_string(), "unknown".to_string()),
                Some((t, o)) => (
                    format!("{:.3}s", *t as f64 / 1e6),
                    match o {
                        Output::Value(v) => value(v),
                        Output::Done => "done".into(),
                        Output::Swapped(s) => format!("swapped={s}"),
                    },
                ),
            };
            write!(
                f,
                " [client {} {what} {:.3}s..{until}: {saw}]",
                op.client,
                op.call as f64 / 1e6
            )?;
        }
        Ok(())
    }
}

/// The witness drawn as Porcupine draws one: a row per client, each
/// operation a bar from its call to its return, labelled with what it
/// asked and saw.
pub fn witness_svg(w: &Witness) -> String {
    let clients: Vec<u32> = w
        .ops
        .iter()
        .map(|o| o.client)
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    let t0 = w.ops.iter().map(|o| o.call).min().unwrap_or(0);
    let t1 = w
        .ops
        .iter()
        .map(|o| o.ret.as_ref().map_or(o.call, |r| r.0))
        .max()
        .unwrap_or(t0)
        .max(t0 + 1);
    let (left, width, row) = (90.0, 900.0, 46.0);
    let x = |t: u64| left + width * (t.saturating_sub(t0)) as f64 / (t1 - t0) as f64;
    let height = 60.0 + row * clients.len() as f64;
    let esc = |s: &str| {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
    };
    let mut out = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"11\">\n\
         <text x=\"10\" y=\"18\" font-size=\"13\">{}: {} operations with no linearizable order ({:.3}s to {:.3}s)</text>\n",
        left + width + 20.0,
        esc(&w.key),
        w.ops.len(),
        t0 as f64 / 1e6,
        t1 as f64 / 1e6
    );
    for (r, c) in clients.iter().enumerate() {
        let y = 40.0 + row * r as f64;
        out += &format!("<text x=\"10\" y=\"{}\">client {c}</text>\n", y + 18.0);
        for op in w.ops.iter().filter(|o| o.client == *c) {
            let (x0, x1) = (x(op.call), op.ret.as_ref().map_or(left + width, |r| x(r.0)));
            let fill = if op.input == Input::Get {
                "#9ecae1"
            } else {
                "#fdae6b"
            };
            let label = match (&op.input, &op.ret) {
                (Input::Get, Some((_, Output::Value(v)))) => {
                    format!(
                        "get: {}",
                        v.as_deref()
                            .map_or("absent".into(), |v| String::from_utf8_lossy(v).into_owned())
                    )
                }
                (Input::Put(v), _) => format!("put {}", String::from_utf8_lossy(v)),
                (Input::Delete, _) => "delete".into(),
                (Input::Cas { new, .. }, r) => format!(
                    "cas {}{}",
                    String::from_utf8_lossy(new),
                    match r {
                        Some((_, Output::Swapped(false))) => " (no swap)",
                        _ => "",
                    }
                ),
                _ => "?".into(),
            };
            out += &format!(
                "<rect x=\"{x0:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"26\" fill=\"{fill}\" stroke=\"#333\"/>\n\
                 <text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
                (x1 - x0).max(2.0),
                x0 + 3.0,
                y + 17.0,
                esc(&label)
            );
        }
    }
    out + "</svg>\n"
}

//! Is a recorded history of KV operations linearizable? Clients call
//! operations and see their results at times of their own; the history is
//! linearizable if every operation can be placed at one instant between its
//! call and its return so that, in that order, a single-copy KV store gives
//! exactly the results the clients saw.
//!
//! The check is Wing & Gong's search with Lowe's memoisation (as Porcupine
//! and Knossos do it): linearize the earliest pending call that the model
//! accepts, backtrack when some operation returns before it could be placed,
//! and never revisit a (set of placed operations, state) pair. Keys are
//! independent, so each key's history is checked alone, which keeps the
//! search small.
//!
//! An operation that never returned (its client timed out or crashed) may or
//! may not have taken effect: it returns "at infinity" with an unknown
//! result, so it can be placed anywhere after its call, including after
//! everything else, where it changes nothing anyone saw.

use std::collections::{BTreeMap, BTreeSet, HashSet};

/// What a client asked of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Read the value.
    Get,
    /// Write a value.
    Put(Vec<u8>),
    /// Delete the key.
    Delete,
    /// Write `new` if the value is `expect` (`None`: the key is absent).
    Cas {
        /// The value required.
        expect: Option<Vec<u8>>,
        /// The value to write.
        new: Vec<u8>,
    },
}

/// What the client saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// A read's value (`None`: absent).
    Value(Option<Vec<u8>>),
    /// A write or delete took effect.
    Done,
    /// A check-and-set's verdict.
    Swapped(bool),
}

/// One operation of the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Op {
    /// Who called it (for reports).
    pub client: u32,
    /// The key.
    pub key: String,
    /// When it was called.
    pub call: u64,
    /// When it returned, and what it returned; `None` if it never did.
    pub ret: Option<(u64, Output)>,
    /// What it asked.
    pub input: Input,
}

/// Why a history is not linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The key whose history has no valid order.
    pub key: String,
    /// Its operations, in call order.
    pub ops: Vec<Op>,
}

impl Violation {
    /// A few of its operations that have no order either.
    pub fn witness(&self) -> Witness {
        witness(&self.key, &self.ops)
    }
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the {} operations on key {:?} have no linearizable order",
            self.ops.len(),
            self.key
        )
    }
}

/// Checks `history`; every key must be linearizable on its own.
pub fn check(history: &[Op]) -> Result<(), Violation> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    for (key, ops) in by_key {
        if !check_key(&ops) {
            let mut ops: Vec<Op> = ops.into_iter().cloned().collect();
            ops.sort_by_key(|o| o.call);
            return Err(Violation {
                key: key.to_owned(),
                ops,
            });
        }
    }
    Ok(())
}

/// The register's next state if `op` may happen in `state` and give what
/// its client saw.
fn step(state: &Option<Vec<u8>>, op: &Op) -> Option<Option<Vec<u8>>> {
    let seen = op.ret.as_ref().map(|(_, o)| o);
    match &op.input {
        Input::Get => match seen {
            None => Some(state.clone()),
            Some(Output::Value(v)) if v == state => Some(state.clone()),
            Some(_) => None,
        },
        Input::Put(v) => matches!(seen, None | Some(Output::Done)).then(|| Some(v.clone())),
        Input::Delete => matches!(seen, None | Some(Output::Done)).then_some(None),
        Input::Cas { expect, new } => {
            let swaps = expect == state;
            match seen {
                None => Some(if swaps {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                Some(Output::Swapped(s)) if *s == swaps => Some(if swaps {
                    Some(new.clone())
                } else {
                    state.clone()
                }),
                Some(_) => None,
            }
        }
    }
}

/// Call and return events in time order, as a doubly linked list that
/// operations are lifted out of as they are placed.
struct Events {
    /// (operation, is its call).
    ev: Vec<(usize, bool)>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Index of each operation's return event.
    ret_of: Vec<usize>,
}

const HEAD: usize = 0;

impl Events {
    fn new(ops: &[&Op]) -> Events {
        // Calls before returns at equal times: touching operations overlap.
        let mut timed: Vec<(u64, u8, usize, bool)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.call, 0, i, true));
            let at = op.ret.as_ref().map_or(u64::MAX, |(t, _)| *t);
            timed.push((at, 1, i, false));
        }
        timed.sort();
        // Slot 0 is the list's head.
        let mut ev = vec![(usize::MAX, false)];
        ev.extend(timed.iter().map(|&(_, _, i, call)| (i, call)));
        let n = ev.len();
        let mut ret_of = vec![0; ops.len()];
        for (slot, &(i, call)) in ev.iter().enumerate().skip(1) {
            if !call {
                ret_of[i] = slot;
            }
        }
        Events {
            next: (1..=n).collect(),
            prev: (0..n).map(|i| i.wrapping_sub(1)).collect(),
            ev,
            ret_of,
        }
    }

    fn end(&self) -> usize {
        self.ev.len()
    }

    fn unlink(&mut self, s: usize) {
        let (p, n) = (self.prev[s], self.next[s]);
        self.next[p] = n;
        if n < self.end() {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, s: usize) {
        let (p, n) = (self.prev[s], self.next[s]);
        self.next[p] = s;
        if n < self.end() {
            self.prev[n] = s;
        }
    }

    /// Takes operation `op` (its call at `call`) out of the list.
    fn lift(&mut self, call: usize, op: usize) {
        self.unlink(call);
        self.unlink(self.ret_of[op]);
    }

    /// Puts it back (in the reverse order of lifting).
    fn unlift(&mut self, call: usize, op: usize) {
        self.relink(self.ret_of[op]);
        self.relink(call);
    }
}

fn check_key(ops: &[&Op]) -> bool {
    check_key_from(ops, None)
}

/// Whether `ops` have a linearizable order from a register holding
/// `initial`.
fn check_key_from(ops: &[&Op], initial: Option<Vec<u8>>) -> bool {
    let mut events = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut state: Option<Vec<u8>> = initial;
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Vec<u8>>)> = Vec::new();
    let mut cur = events.next[HEAD];
    while events.next[HEAD] < events.end() {
        let call = (cur < events.end())
            .then(|| events.ev[cur])
            .filter(|&(_, is_call)| is_call);
        if let Some((op, _)) = call {
            if let Some(next) = step(&state, ops[op]) {
                let mut with = placed.clone();
                with[op / 64] |= 1 << (op % 64);
                if seen.insert((with.clone(), next.clone())) {
                    stack.push((cur, std::mem::replace(&mut state, next)));
                    placed = with;
                    events.lift(cur, op);
                    cur = events.next[HEAD];
                    continue;
                }
            }
            cur = events.next[cur];
        } else {
            // An operation returned before it could be placed (or no call
            // is left to try): take back the last placement.
            let Some((call, old)) = stack.pop() else {
                return false;
            };
            let op = events.ev[call].0;
            placed[op / 64] &= !(1 << (op % 64));
            events.unlift(call, op);
            state = old;
            cur = events.next[call];
        }
    }
    true
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

/// When each of `ops` is over, for judging windows: its return, or for
/// a write of unknown outcome, the first return of an operation that saw
/// what it wrote (it took effect before that), when nothing else wrote
/// the same; otherwise never. Without that bound one such write would
/// stretch every window after its call to the end of the history.
fn ends(ops: &[Op]) -> Vec<u64> {
    fn value(op: &Op) -> Option<&[u8]> {
        wrote(op).flatten()
    }
    let mut writers: BTreeMap<&[u8], usize> = BTreeMap::new();
    for v in ops.iter().filter_map(value) {
        *writers.entry(v).or_default() += 1;
    }
    // The earliest return of an operation that saw each value.
    let mut first_seen: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (v, t) in ops.iter().filter_map(saw) {
        if let Some(v) = v {
            let e = first_seen.entry(v).or_insert(t);
            *e = (*e).min(t);
        }
    }
    ops.iter()
        .map(|op| match (&op.ret, value(op)) {
            (Some((t, _)), _) => *t,
            (None, Some(v)) if writers.get(v) == Some(&1) => {
                first_seen.get(v).copied().unwrap_or(u64::MAX)
            }
            (None, _) => u64::MAX,
        })
        .collect()
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

/// Whether `ops` have a linearizable order from some state: absent, a
/// value they read or expect, or one they never mention.
fn linearizable_from_any(ops: &[&Op]) -> bool {
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
    starts.into_iter().any(|s| check_key_from(ops, s))
}

/// The fewest operations of one key's `ops` (which have no linearizable
/// order) that have none either: the shortest prefix that fails, then the
/// shortest window ending with it that fails whatever the key held
/// before, then without each read that is not needed.
pub fn witness(key: &str, ops: &[Op]) -> Witness {
    // An operation that never returned and whose effect nobody saw can
    // always go last; it explains nothing.
    let mut all: Vec<Op> = ops
        .iter()
        .filter(|o| o.ret.is_some() || observed(o, ops.iter()))
        .cloned()
        .collect();
    all.sort_by_key(|o| o.call);
    let refs = |idx: &[usize]| -> Vec<&Op> { idx.iter().map(|&i| &all[i]).collect() };
    let whole = || Witness {
        key: key.to_owned(),
        ops: all.clone(),
        from_start: true,
    };
    if check_key(&refs(&(0..all.len()).collect::<Vec<_>>())) {
        return whole();
    }
    // The earliest return by which the prefix fails.
    let ends = ends(&all);
    let closed = |lo: u64, hi: u64| closed(&all, &ends, lo, hi);
    let mut rets: Vec<u64> = ends.clone();
    rets.sort_unstable();
    rets.dedup();
    let fails_by = |hi: u64| !check_key(&refs(&closed(0, hi)));
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
    let fails_from = |lo: u64| !linearizable_from_any(&refs(&closed(lo, hi)));
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
    let fails = |w: &[usize]| {
        if from_start {
            !check_key(&refs(w))
        } else {
            !linearizable_from_any(&refs(w))
        }
    };
    // Reads only add constraints: drop every one the failure does not
    // need. Then the writes it does not need, as long as every operation
    // that saw a value some write of the window made keeps a writer of it
    // called before it returned (a read left without its writer would make
    // a failure of its own). From the key's start, absence needs none.
    let (reads, writes): (Vec<usize>, Vec<usize>) =
        window.iter().partition(|&&i| all[i].input == Input::Get);
    window = drop_unneeded(window, reads, &fails);
    let explained = |w: &[usize]| -> BTreeSet<usize> {
        let mut first_write: BTreeMap<Option<&[u8]>, u64> = BTreeMap::new();
        for &i in w {
            if let Some(v) = wrote(&all[i]) {
                let e = first_write.entry(v).or_insert(u64::MAX);
                *e = (*e).min(all[i].call);
            }
        }
        w.iter()
            .copied()
            .filter(|&i| match saw(&all[i]) {
                None => false,
                Some((None, _)) if from_start => true,
                Some((v, at)) => first_write.get(&v).is_some_and(|&c| c <= at),
            })
            .collect()
    };
    let before = explained(&window);
    let still_explained = |w: &[usize]| {
        let now = explained(w);
        w.iter().all(|i| !before.contains(i) || now.contains(i))
    };
    window = drop_unneeded(window, writes, &|w| still_explained(w) && fails(w));
    Witness {
        key: key.to_owned(),
        ops: window.iter().map(|&i| all[i].clone()).collect(),
        from_start,
    }
}

/// What `op` writes (`None` inside: it deletes); `None` for a read.
fn wrote(op: &Op) -> Option<Option<&[u8]>> {
    match &op.input {
        Input::Get => None,
        Input::Put(v) | Input::Cas { new: v, .. } => Some(Some(v)),
        Input::Delete => Some(None),
    }
}

/// The value `op` saw some write make (`None` inside: absent), and when it
/// returned: a read's value, or what a check-and-set that swapped
/// expected.
fn saw(op: &Op) -> Option<(Option<&[u8]>, u64)> {
    match (&op.input, &op.ret) {
        (Input::Get, Some((t, Output::Value(v)))) => Some((v.as_deref(), *t)),
        (Input::Cas { expect, .. }, Some((t, Output::Swapped(true)))) => {
            Some((expect.as_deref(), *t))
        }
        _ => None,
    }
}

/// Whether an operation of `among` reads the value `op` wrote, or expects
/// it (`false` for a read).
fn observed<'a>(op: &Op, mut among: impl Iterator<Item = &'a Op>) -> bool {
    let Some(w) = wrote(op) else {
        return false;
    };
    among.any(|o| {
        !std::ptr::eq(o, op)
            && (matches!(&o.ret, Some((_, Output::Value(v))) if v.as_deref() == w)
                || matches!(&o.input, Input::Cas { expect, .. } if expect.as_deref() == w))
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn op(client: u32, call: u64, ret: Option<(u64, Output)>, input: Input) -> Op {
        Op {
            client,
            key: "k".into(),
            call,
            ret,
            input,
        }
    }

    fn v(x: u8) -> Vec<u8> {
        vec![x]
    }

    fn get(client: u32, call: u64, ret: u64, saw: Option<u8>) -> Op {
        op(
            client,
            call,
            Some((ret, Output::Value(saw.map(v)))),
            Input::Get,
        )
    }

    fn put(client: u32, call: u64, ret: u64, x: u8) -> Op {
        op(client, call, Some((ret, Output::Done)), Input::Put(v(x)))
    }

    #[test]
    fn a_sequential_history_is_linearizable() {
        let h = vec![get(1, 0, 1, None), put(1, 2, 3, 1), get(1, 4, 5, Some(1))];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn a_long_history_with_one_stale_read_has_a_witness_of_two() {
        // 60 correct operations, then a read of an older value after a
        // write returned, then 60 more.
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..30u8 {
            h.push(put(1, t, t + 5, i));
            h.push(get(2, t + 6, t + 8, Some(i)));
            t += 10;
        }
        h.push(put(1, t, t + 5, 200));
        h.push(get(3, t + 6, t + 8, Some(29)));
        t += 10;
        for i in 30..60u8 {
            h.push(put(1, t, t + 5, i));
            h.push(get(2, t + 6, t + 8, Some(i)));
            t += 10;
        }
        let w = check(&h).unwrap_err().witness();
        assert!(!w.from_start, "{w}");
        assert_eq!(w.ops.len(), 2, "{w}");
        assert_eq!(w.ops[0].input, Input::Put(v(200)));
        let text = w.to_string();
        assert!(text.contains("whatever the key held before"), "{text}");
        let svg = witness_svg(&w);
        assert!(svg.starts_with("<svg") && svg.contains("client 1") && svg.contains("client 3"));
    }

    #[test]
    fn a_write_of_unknown_outcome_does_not_swell_the_witness() {
        // A write that never returned (its value read later) may take
        // effect any time after its call, so the window to judge runs to
        // the end of the history: 2,000 more operations, most of them
        // reads. The witness still comes down to the stale read and what
        // it contradicts: writes it does not need go too.
        let mut h = vec![op(9, 0, None, Input::Put(v(250)))];
        let mut t = 10;
        for i in 0..10u8 {
            h.push(put(1, t, t + 5, i));
            h.push(get(2, t + 6, t + 8, Some(i)));
            t += 10;
        }
        h.push(get(2, t, t + 2, Some(250)));
        t += 10;
        h.push(put(1, t, t + 5, 200));
        h.push(get(3, t + 6, t + 8, Some(9)));
        t += 10;
        for i in 0..1000u32 {
            let x = 10 + (i % 100) as u8;
            h.push(put(1, t, t + 5, x));
            h.push(get(2, t + 6, t + 8, Some(x)));
            t += 10;
        }
        let w = check(&h).unwrap_err().witness();
        assert!(w.ops.len() <= 4, "{w}");
        assert!(w.ops.iter().any(|o| o.input == Input::Put(v(200))), "{w}");
        assert!(w.ops.iter().any(|o| o.client == 3), "{w}");
    }

    #[test]
    fn a_stale_read_among_deletes_has_a_small_witness() {
        // Cycles of write, read, delete, read absent; then a stale read.
        // Every delete is a writer of "absent", but the witness needs
        // none of them.
        let mut h = Vec::new();
        let mut t = 0;
        let del = |client, call, ret| op(client, call, Some((ret, Output::Done)), Input::Delete);
        for i in 0..100u8 {
            h.push(put(1, t, t + 5, i));
            h.push(get(2, t + 6, t + 8, Some(i)));
            h.push(del(1, t + 10, t + 15));
            h.push(get(2, t + 16, t + 18, None));
            t += 20;
        }
        h.push(put(1, t, t + 5, 200));
        h.push(get(3, t + 6, t + 8, None));
        t += 20;
        for i in 100..200u8 {
            h.push(put(1, t, t + 5, i));
            h.push(del(1, t + 10, t + 15));
            h.push(get(2, t + 16, t + 18, None));
            t += 20;
        }
        let w = check(&h).unwrap_err().witness();
        assert!(w.ops.len() <= 3, "{w}");
        assert!(w.ops.iter().any(|o| o.client == 3), "{w}");
    }

    #[test]
    fn a_read_before_any_write_is_witnessed_from_the_start() {
        // The first read sees a value written only later: from the start
        // (absent), that read alone has no order.
        let h = vec![
            get(1, 0, 1, Some(5)),
            put(2, 2, 3, 5),
            get(1, 4, 5, Some(5)),
        ];
        let w = check(&h).unwrap_err().witness();
        assert!(w.from_start, "{w}");
        assert_eq!(w.ops, h[..1], "{w}");
    }

    #[test]
    fn reading_the_old_value_after_a_write_returned_is_not() {
        let h = vec![put(1, 0, 1, 1), get(2, 2, 3, None)];
        let err = check(&h).unwrap_err();
        assert_eq!(err.key, "k");
        assert!(err.to_string().contains("no linearizable order"));
    }

    #[test]
    fn a_read_overlapping_a_write_may_see_either_value() {
        for saw in [None, Some(1)] {
            let h = vec![put(1, 0, 10, 1), get(2, 5, 6, saw)];
            assert_eq!(check(&h), Ok(()), "saw {saw:?}");
        }
    }

    #[test]
    fn once_anyone_saw_the_new_value_nobody_later_sees_the_old() {
        // Both reads overlap the write, but the second starts after the
        // first returned the new value: a stale read.
        let h = vec![
            put(1, 0, 100, 1),
            get(2, 10, 20, Some(1)),
            get(3, 30, 40, None),
        ];
        assert!(check(&h).is_err());
    }

    #[test]
    fn a_write_that_never_returned_may_or_may_not_have_happened() {
        let lost = op(1, 0, None, Input::Put(v(7)));
        for saw in [None, Some(7)] {
            let h = vec![lost.clone(), get(2, 5, 6, saw)];
            assert_eq!(check(&h), Ok(()), "saw {saw:?}");
        }
        // But not a value nobody wrote.
        assert!(check(&[lost, get(2, 5, 6, Some(8))]).is_err());
    }

    #[test]
    fn check_and_set_follows_the_value() {
        let cas = |client, call, ret, expect: Option<u8>, new, swapped| {
            op(
                client,
                call,
                Some((ret, Output::Swapped(swapped))),
                Input::Cas {
                    expect: expect.map(v),
                    new: v(new),
                },
            )
        };
        let h = vec![
            cas(1, 0, 1, None, 1, true),
            cas(2, 2, 3, None, 2, false),
            get(1, 4, 5, Some(1)),
        ];
        assert_eq!(check(&h), Ok(()));
        // Two sequential CASes from empty cannot both succeed.
        let h = vec![cas(1, 0, 1, None, 1, true), cas(2, 2, 3, None, 2, true)];
        assert!(check(&h).is_err());
        let del = op(3, 6, Some((7, Output::Done)), Input::Delete);
        let h = vec![
            put(1, 0, 1, 1),
            del,
            cas(2, 8, 9, None, 3, true),
            get(2, 10, 11, Some(3)),
        ];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn keys_are_checked_apart() {
        let mut other = put(1, 0, 1, 5);
        other.key = "j".into();
        let h = vec![other, put(2, 0, 1, 1), get(2, 2, 3, Some(1))];
        assert_eq!(check(&h), Ok(()));
    }

    #[test]
    fn long_concurrent_histories_are_checked() {
        // 3,000 operations of 8 clients on 3 keys, each overlapping its
        // neighbours: memoisation keeps the search to a few states each.
        let mut regs: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
        let mut h = Vec::new();
        let mut x: u64 = 7;
        for i in 0..3_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let key = format!("k{}", (x >> 60) % 3);
            let reg = regs.entry(key.clone()).or_default();
            let at = 10 * i + 100;
            let (input, out) = if (x >> 40) % 3 == 0 {
                *reg = Some(v((x >> 20) as u8));
                (Input::Put(v((x >> 20) as u8)), Output::Done)
            } else {
                (Input::Get, Output::Value(reg.clone()))
            };
            let spread = (x >> 8) % 40;
            h.push(Op {
                client: (i % 8) as u32,
                key,
                call: at - spread,
                ret: Some((at + (x >> 16) % 40, out)),
                input,
            });
        }
        assert_eq!(check(&h), Ok(()));
    }

    proptest! {
        /// Run a real register, give every operation an interval around
        /// the instant it took effect: always linearizable. Then change one
        /// read's result to a value never written: never linearizable.
        #[test]
        fn histories_of_a_real_register_pass_and_forged_reads_fail(
            steps in proptest::collection::vec((0u8..4, 0u8..3, 0u64..30, 0u64..30, 0u32..4), 1..40),
        ) {
            let mut reg: Option<Vec<u8>> = None;
            let mut h = Vec::new();
            for (i, (kind, x, before, after)) in steps.iter().map(|s| (s.0, s.1, s.2, s.3)).enumerate() {
                // 20 apart with intervals up to 30 either side: neighbours overlap.
                let at = 20 * (i as u64 + 1) + 30;
                let (input, out) = match kind {
                    0 => (Input::Get, Output::Value(reg.clone())),
                    1 => { reg = Some(v(x)); (Input::Put(v(x)), Output::Done) }
                    2 => { reg = None; (Input::Delete, Output::Done) }
                    _ => {
                        let expect = (x > 0).then(|| v(x - 1));
                        let swaps = expect == reg;
                        if swaps { reg = Some(v(x)); }
                        (Input::Cas { expect, new: v(x) }, Output::Swapped(swaps))
                    }
                };
                h.push(op(steps[i].4, at - before, Some((at + after, out)), input));
            }
            prop_assert_eq!(check(&h), Ok(()));
            if let Some(i) = h.iter().position(|o| o.input == Input::Get) {
                h[i].ret = Some((h[i].ret.as_ref().unwrap().0, Output::Value(Some(v(99)))));
                prop_assert!(check(&h).is_err());
            }
        }
    }
}

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
//!
//! Such operations are what makes the search grow: each stays pending to
//! the end, and every subset of them placed is a state of its own. So
//! before searching, those that cannot matter go, a lost write whose
//! value somebody saw is over by that read's return, and lost writes of a
//! value nobody saw are spent only where a refused check-and-set needs
//! one (see `Prepared`). A search that still outgrows its memory says so:
//! the check is then undecided, never passed.

use std::collections::{BTreeMap, BTreeSet, HashSet};

mod witness;

pub use witness::{witness, witness_svg, Witness};

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

/// A key whose search outgrew its memory before it found an order or
/// ruled every one out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undecided {
    /// The key.
    pub key: String,
    /// How many operations it has.
    pub ops: usize,
    /// How many of them never returned.
    pub unknown: usize,
    /// How many search states it had visited.
    pub states: usize,
}

impl std::fmt::Display for Undecided {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "undecided: the search through the {} operations on key {:?} ({} of unknown \
             outcome) visited {} states, all its memory holds, without finding an order \
             or ruling one out; operations that never return make it grow, so a \
             shorter kv_load or fewer clients keep it small",
            self.ops, self.key, self.unknown, self.states
        )
    }
}

/// Why a history was not shown linearizable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// A key's operations have no linearizable order.
    Violation(Violation),
    /// A key's search could not tell (and no key has a violation).
    Undecided(Undecided),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Violation(v) => write!(f, "{v}; {}", v.witness()),
            Failure::Undecided(u) => u.fmt(f),
        }
    }
}

/// Checks `history`; every key must be linearizable on its own. A
/// violation on any key wins over a key the search could not decide.
pub fn check(history: &[Op]) -> Result<(), Failure> {
    check_within(history, SEARCH_MEMORY)
}

/// [`check`], each key's search holding at most `memory` bytes.
fn check_within(history: &[Op], memory: usize) -> Result<(), Failure> {
    let mut by_key: BTreeMap<&str, Vec<&Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(&op.key).or_default().push(op);
    }
    let mut undecided = None;
    for (key, ops) in by_key {
        match check_key_from(&ops, None, memory) {
            Outcome::Ordered => {}
            Outcome::NoOrder => {
                let mut ops: Vec<Op> = ops.into_iter().cloned().collect();
                ops.sort_by_key(|o| o.call);
                return Err(Failure::Violation(Violation {
                    key: key.to_owned(),
                    ops,
                }));
            }
            Outcome::Undecided(states) => {
                undecided.get_or_insert(Undecided {
                    key: key.to_owned(),
                    ops: ops.len(),
                    unknown: ops.iter().filter(|o| o.ret.is_none()).count(),
                    states,
                });
            }
        }
    }
    undecided.map_or(Ok(()), |u| Err(Failure::Undecided(u)))
}

/// What a search for an order found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    /// There is one.
    Ordered,
    /// There is none.
    NoOrder,
    /// Its memory ran out after this many states.
    Undecided(usize),
}

/// How much memory one key's search may hold, in bytes (about).
const SEARCH_MEMORY: usize = 1 << 30;

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
    /// When each event happens.
    at: Vec<u64>,
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Index of each operation's return event.
    ret_of: Vec<usize>,
}

const HEAD: usize = 0;

impl Events {
    /// The events of `ops`, each over by its time in `ends`.
    fn new(ops: &[Op], ends: &[u64]) -> Events {
        // Calls before returns at equal times: touching operations overlap.
        let mut timed: Vec<(u64, u8, usize, bool)> = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            timed.push((op.call, 0, i, true));
            timed.push((ends[i], 1, i, false));
        }
        timed.sort();
        // Slot 0 is the list's head.
        let mut ev = vec![(usize::MAX, false)];
        ev.extend(timed.iter().map(|&(_, _, i, call)| (i, call)));
        let at = std::iter::once(0)
            .chain(timed.iter().map(|t| t.0))
            .collect();
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
            at,
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

/// Whether `ops` fail from the key's start: `false` when they have an
/// order or the search could not tell.
fn fails(ops: &[&Op]) -> bool {
    check_key_from(ops, None, SEARCH_MEMORY) == Outcome::NoOrder
}

/// Whether `ops` have a linearizable order from a register holding
/// `initial`, searching with at most `memory` bytes.
fn check_key_from(ops: &[&Op], initial: Option<Vec<u8>>, memory: usize) -> Outcome {
    search(&Prepared::new(ops, initial), memory)
}

/// The values `ops` read or expect: a register holding any other value
/// behaves the same for all of them.
struct Mentions<'a> {
    values: BTreeSet<Option<&'a [u8]>>,
    /// The last return of a check-and-set that refused.
    last_refusal: Option<u64>,
}

impl<'a> Mentions<'a> {
    fn of(ops: &[&'a Op]) -> Mentions<'a> {
        let mut m = Mentions {
            values: BTreeSet::new(),
            last_refusal: None,
        };
        for op in ops {
            match (&op.input, &op.ret) {
                (_, Some((_, Output::Value(v)))) => {
                    m.values.insert(v.as_deref());
                }
                (Input::Cas { expect, .. }, ret) => {
                    m.values.insert(expect.as_deref());
                    if let Some((t, Output::Swapped(false))) = ret {
                        m.last_refusal = m.last_refusal.max(Some(*t));
                    }
                }
                _ => {}
            }
        }
        m
    }

    /// Whether `op` never returned and writes a value nobody mentions.
    fn blind(&self, op: &Op) -> bool {
        op.ret.is_none() && wrote(op).is_some_and(|w| !self.values.contains(&w))
    }
}

/// The operations of `ops` that can decide whether they have an order:
/// all but those that never returned and that, placed last, would leave
/// every result anyone saw as it was. That is a read, and a blind write
/// (of a value nobody read or expected), unless a check-and-set that
/// refused could come after it: the write may be what made it refuse.
///
/// Why dropping the others is sound: an order without such a write
/// stays one with the write put last. An order with it stays one without
/// it: until the next write, only operations that never returned and
/// changed nothing can follow it (a read would have read its value, a
/// check-and-set expecting something else would have refused), and they
/// can go last too.
fn needed<'a>(ops: &[&'a Op]) -> Vec<&'a Op> {
    let m = Mentions::of(ops);
    ops.iter()
        .copied()
        .filter(|op| {
            op.ret.is_some()
                || (wrote(op).is_some()
                    && (!m.blind(op) || m.last_refusal.is_some_and(|t| t >= op.call)))
        })
        .collect()
}

/// One key's operations, made ready for the search. Operations that
/// never return stay pending to the end, and every subset of them placed
/// would be a state of its own; three things keep that from exploding:
/// - Values nobody reads or expects are all one value, `blank`: the
///   register behaves the same with any of them.
/// - Blind writes (see [`needed`]) are spares, not placed as operations.
///   Such a write matters only by making a check-and-set refuse (see
///   [`needed`] for why), and may as well happen just before it. So one
///   is spent exactly when a check-and-set that refused could not have:
///   the earliest one called that the register's value allows (a
///   check-and-set's needs its expected value, so those go first).
/// - Operations that never return with the same input are interchangeable:
///   each is placed only after the one called before it.
struct Prepared {
    /// The operations to place.
    ops: Vec<Op>,
    /// When each is over (see [`ends`]).
    ends: Vec<u64>,
    /// For each, the interchangeable one it must follow.
    twin: Vec<Option<usize>>,
    /// The spares, by call.
    spares: Vec<Spare>,
    /// The one value that stands for every value nobody mentions.
    blank: Vec<u8>,
    initial: Option<Vec<u8>>,
}

/// A blind write that never returned.
struct Spare {
    call: u64,
    /// The value it needs the register to hold (a check-and-set's), if any.
    needs: Option<Option<Vec<u8>>>,
}

impl Prepared {
    fn new(ops: &[&Op], initial: Option<Vec<u8>>) -> Prepared {
        let ops = needed(ops);
        let m = Mentions::of(&ops);
        let longest = m.values.iter().flatten().map(|v| v.len()).max();
        let blank = vec![0u8; longest.map_or(0, |l| l + 1)];
        let canon = |v: &[u8]| -> Vec<u8> {
            if m.values.contains(&Some(v)) {
                v.to_vec()
            } else {
                blank.clone()
            }
        };
        let mut spares = Vec::new();
        let mut placed = Vec::new();
        for op in ops.iter().copied() {
            if m.blind(op) {
                let needs = match &op.input {
                    Input::Cas { expect, .. } => Some(expect.clone()),
                    _ => None,
                };
                spares.push(Spare {
                    call: op.call,
                    needs,
                });
                continue;
            }
            let mut op = op.clone();
            op.input = match op.input {
                Input::Put(v) => Input::Put(canon(&v)),
                Input::Delete if !m.values.contains(&None) => Input::Put(blank.clone()),
                Input::Cas { expect, new } => Input::Cas {
                    expect,
                    new: canon(&new),
                },
                input => input,
            };
            placed.push(op);
        }
        spares.sort_by_key(|s| s.call);
        let initial = match initial {
            Some(v) => Some(canon(&v)),
            None if m.values.contains(&None) => None,
            None => Some(blank.clone()),
        };
        let refs: Vec<&Op> = placed.iter().collect();
        let ends = ends(&refs, initial.as_deref());
        let forever = |i: usize| placed[i].ret.is_none() && ends[i] == u64::MAX;
        let mut by_call: Vec<usize> = (0..placed.len()).filter(|&i| forever(i)).collect();
        by_call.sort_by_key(|&i| placed[i].call);
        let mut twin = vec![None; placed.len()];
        for (k, &i) in by_call.iter().enumerate() {
            twin[i] = by_call[..k]
                .iter()
                .rev()
                .find(|&&j| placed[j].input == placed[i].input)
                .copied();
        }
        Prepared {
            ops: placed,
            ends,
            twin,
            spares,
            blank,
            initial,
        }
    }

    /// `ops` as they are, for the plain search the tests compare with.
    #[cfg(test)]
    fn plain(ops: &[&Op], initial: Option<Vec<u8>>) -> Prepared {
        Prepared {
            ops: ops.iter().map(|&o| o.clone()).collect(),
            ends: ops
                .iter()
                .map(|o| o.ret.as_ref().map_or(u64::MAX, |r| r.0))
                .collect(),
            twin: vec![None; ops.len()],
            spares: Vec::new(),
            blank: Vec::new(),
            initial,
        }
    }
}

/// Wing & Gong's search with Lowe's memo over `p`, holding at most
/// `memory` bytes of memo.
fn search(p: &Prepared, memory: usize) -> Outcome {
    let ops = &p.ops;
    let n = ops.len();
    let mut events = Events::new(ops, &p.ends);
    let words = (n + p.spares.len()).div_ceil(64);
    let bit = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    let mut placed = vec![0u64; words];
    let mut state: Option<Vec<u8>> = p.initial.clone();
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut held = 0usize;
    // (call event, state before, spare spent with it).
    let mut stack: Vec<(usize, Option<Vec<u8>>, Option<usize>)> = Vec::new();
    let mut cur = events.next[HEAD];
    while events.next[HEAD] < events.end() {
        let call = (cur < events.end())
            .then(|| events.ev[cur])
            .filter(|&(_, is_call)| is_call);
        if let Some((op, _)) = call {
            let twin_waits = p.twin[op].is_some_and(|j| !bit(&placed, j));
            let mut next = (!twin_waits).then(|| step(&state, &ops[op])).flatten();
            let mut spent = None;
            if next.is_none() && !twin_waits && refused(&ops[op]) {
                spent = spare(p, &events, &placed, &state);
                next = spent.map(|_| Some(p.blank.clone()));
            }
            if let Some(next) = next {
                let mut with = placed.clone();
                for i in std::iter::once(op).chain(spent.map(|s| n + s)) {
                    with[i / 64] |= 1 << (i % 64);
                }
                // The entry and the table's slot, its two vectors' contents
                // and their allocations' overhead.
                let size = 128 + 8 * words + next.as_ref().map_or(0, Vec::len);
                if seen.insert((with.clone(), next.clone())) {
                    held += size;
                    if held > memory {
                        return Outcome::Undecided(seen.len());
                    }
                    stack.push((cur, std::mem::replace(&mut state, next), spent));
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
            let Some((call, old, spent)) = stack.pop() else {
                return Outcome::NoOrder;
            };
            let op = events.ev[call].0;
            for i in std::iter::once(op).chain(spent.map(|s| n + s)) {
                placed[i / 64] &= !(1 << (i % 64));
            }
            events.unlift(call, op);
            state = old;
            cur = events.next[call];
        }
    }
    Outcome::Ordered
}

/// Whether `op` is a check-and-set its client saw refuse.
fn refused(op: &Op) -> bool {
    matches!(
        (&op.input, &op.ret),
        (Input::Cas { .. }, Some((_, Output::Swapped(false))))
    )
}

/// The spare to spend now (see [`Prepared`]), if one may: unspent, called
/// no later than the first pending return, and allowed by `state`; one
/// that needs `state` before one that needs nothing.
fn spare(p: &Prepared, events: &Events, placed: &[u64], state: &Option<Vec<u8>>) -> Option<usize> {
    let mut slot = events.next[HEAD];
    while slot < events.end() && events.ev[slot].1 {
        slot = events.next[slot];
    }
    let by = if slot < events.end() {
        events.at[slot]
    } else {
        u64::MAX
    };
    let n = p.ops.len();
    let free = |k: &usize| placed[(n + k) / 64] & (1 << ((n + k) % 64)) == 0;
    let usable = |needs: Option<&Option<Vec<u8>>>| {
        (0..p.spares.len())
            .take_while(|&k| p.spares[k].call <= by)
            .filter(free)
            .find(|&k| p.spares[k].needs.as_ref() == needs)
    };
    usable(Some(state)).or_else(|| usable(None))
}

/// When each of `ops` is over: its return, or for a write of unknown
/// outcome, the first return of an operation that saw what it wrote (it
/// took effect before that), when nothing else wrote the same and the
/// register did not start with it (`initial`); otherwise never. Without
/// that bound one such write would stay pending to the end of the
/// history, in the search and in the witness's windows.
fn ends(ops: &[&Op], initial: Option<&[u8]>) -> Vec<u64> {
    fn value<'a>(op: &&'a Op) -> Option<&'a [u8]> {
        wrote(op).flatten()
    }
    let mut writers: BTreeMap<&[u8], usize> = BTreeMap::new();
    for v in ops.iter().filter_map(value).chain(initial) {
        *writers.entry(v).or_default() += 1;
    }
    // The earliest return of an operation that saw each value.
    let mut first_seen: BTreeMap<&[u8], u64> = BTreeMap::new();
    for (v, t) in ops.iter().filter_map(|op| saw(op)) {
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

    fn violation(h: &[Op]) -> Violation {
        match check(h) {
            Err(Failure::Violation(v)) => v,
            other => panic!("expected a violation, got {other:?}"),
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
        let w = violation(&h).witness();
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
        let w = violation(&h).witness();
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
        let w = violation(&h).witness();
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
        let w = violation(&h).witness();
        assert!(w.from_start, "{w}");
        assert_eq!(w.ops, h[..1], "{w}");
    }

    #[test]
    fn reading_the_old_value_after_a_write_returned_is_not() {
        let h = vec![put(1, 0, 1, 1), get(2, 2, 3, None)];
        let err = violation(&h);
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
        assert!(matches!(check(&h), Err(Failure::Violation(_))));
    }

    #[test]
    fn a_write_that_never_returned_may_or_may_not_have_happened() {
        let lost = op(1, 0, None, Input::Put(v(7)));
        for saw in [None, Some(7)] {
            let h = vec![lost.clone(), get(2, 5, 6, saw)];
            assert_eq!(check(&h), Ok(()), "saw {saw:?}");
        }
        // But not a value nobody wrote.
        assert!(matches!(
            check(&[lost, get(2, 5, 6, Some(8))]),
            Err(Failure::Violation(_))
        ));
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
        assert!(matches!(check(&h), Err(Failure::Violation(_))));
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

    fn lost(client: u32, call: u64, input: Input) -> Op {
        op(client, call, None, input)
    }

    #[test]
    fn a_refused_check_and_set_keeps_the_lost_write_that_explains_it() {
        // Nobody read 2, but only its write, lost or not, makes the
        // check-and-set expecting 1 refuse.
        let h = vec![
            put(1, 0, 1, 1),
            lost(2, 2, Input::Put(v(2))),
            op(
                3,
                10,
                Some((11, Output::Swapped(false))),
                Input::Cas {
                    expect: Some(v(1)),
                    new: v(3),
                },
            ),
        ];
        assert_eq!(check(&h), Ok(()));
        // Without it, the refusal has no explanation.
        assert!(matches!(
            check(&[h[0].clone(), h[2].clone()]),
            Err(Failure::Violation(_))
        ));
    }

    /// A stale read at the end of a history in which `n` writes never
    /// returned, every other one read back soon after, and a check-and-set
    /// that refused overlaps them all (so the blind ones may matter): an
    /// exhaustive search through every subset of them would never end.
    fn lost_writes_then_a_stale_read(n: u8) -> Vec<Op> {
        let mut h = Vec::new();
        let mut t = 0;
        for i in 0..n {
            h.push(put(1, t, t + 5, i));
            h.push(lost(2, t + 6, Input::Put(v(100 + i))));
            if i % 2 == 0 {
                h.push(get(3, t + 10, t + 12, Some(100 + i)));
            }
            t += 20;
        }
        h.push(op(
            4,
            0,
            Some((t + 20, Output::Swapped(false))),
            Input::Cas {
                expect: Some(v(99)),
                new: v(98),
            },
        ));
        h.push(put(1, t, t + 5, 250));
        h.push(get(3, t + 6, t + 8, Some(0)));
        h
    }

    #[test]
    fn writes_that_never_returned_do_not_make_the_search_explode() {
        let h = lost_writes_then_a_stale_read(60);
        let w = violation(&h).witness();
        assert!(
            w.ops.iter().any(|o| o.input == Input::Get && o.client == 3),
            "{w}"
        );
        assert!(w.ops.iter().all(|o| o.ret.is_some()), "{w}");
        assert!(w.ops.len() <= 4, "{w}");
    }

    #[test]
    fn a_search_that_outgrows_its_memory_is_undecided_not_passed() {
        // Lost writes of values that returned writes wrote too, all read
        // back: none is known to be over, none can be dropped, and the
        // stale read at the end makes the search try every subset.
        let mut h = Vec::new();
        let mut t = 10;
        h.push(put(1, 0, 5, 200));
        for i in 0..20u8 {
            h.push(put(1, t, t + 5, i));
            h.push(lost(2, t + 6, Input::Put(v(i))));
            h.push(get(3, t + 10, t + 12, Some(i)));
            t += 20;
        }
        h.push(get(3, t, t + 2, Some(200)));
        let Err(Failure::Undecided(u)) = check_within(&h, 64 << 10) else {
            panic!("expected an undecided search");
        };
        assert_eq!((u.key.as_str(), u.unknown), ("k", 20));
        assert!(u.to_string().contains("undecided"), "{u}");
        // A violation on another key is reported instead.
        let mut bad = vec![put(1, 0, 1, 1), get(2, 2, 3, None)];
        for o in &mut bad {
            o.key = "j".into();
        }
        h.extend(bad);
        assert!(matches!(check_within(&h, 64 << 10), Err(Failure::Violation(v)) if v.key == "j"));
    }

    /// The prepared search's verdict and the plain one's.
    fn both(h: &[Op], initial: Option<Vec<u8>>) -> (Outcome, Outcome) {
        let all: Vec<&Op> = h.iter().collect();
        (
            check_key_from(&all, initial.clone(), SEARCH_MEMORY),
            search(&Prepared::plain(&all, initial), usize::MAX),
        )
    }

    #[test]
    fn the_prepared_search_agrees_with_the_plain_one_at_the_edges() {
        let cas = |call, ret: Option<u64>, expect: Option<u8>, new, swapped| Op {
            client: 1,
            key: "k".into(),
            call,
            ret: ret.map(|t| (t, Output::Swapped(swapped))),
            input: Input::Cas {
                expect: expect.map(v),
                new: v(new),
            },
        };
        let put_lost = |call, x| lost(2, call, Input::Put(v(x)));
        let cases: Vec<(&str, Option<u8>, Vec<Op>, Outcome)> = vec![
            (
                "a lost write called as the refusal returns may explain it",
                Some(0),
                vec![put_lost(2, 8), cas(1, Some(2), Some(0), 0, false)],
                Outcome::Ordered,
            ),
            (
                "the value the key started with needs no lost write",
                Some(0),
                vec![get(1, 0, 6, Some(0)), put_lost(7, 0)],
                Outcome::Ordered,
            ),
            (
                "a lost write called after a refusal returned cannot explain it",
                None,
                vec![
                    cas(1, Some(4), None, 9, false),
                    cas(5, Some(7), None, 9, false),
                    put_lost(6, 9),
                ],
                Outcome::NoOrder,
            ),
            (
                "a lost check-and-set changes nothing unless its value is there",
                None,
                vec![
                    cas(0, None, Some(0), 9, false),
                    cas(1, Some(1), None, 0, false),
                ],
                Outcome::NoOrder,
            ),
            (
                "a lost check-and-set is spent before a lost write that fits anywhere",
                Some(1),
                vec![
                    put_lost(0, 9),
                    cas(0, None, Some(1), 8, false),
                    cas(1, Some(2), Some(1), 3, false),
                    put(1, 3, 4, 2),
                    cas(5, Some(6), Some(2), 3, false),
                ],
                Outcome::Ordered,
            ),
            (
                "only a check-and-set refuses",
                None,
                vec![
                    put_lost(0, 1),
                    op(1, 0, Some((5, Output::Swapped(false))), Input::Get),
                    cas(0, Some(5), Some(2), 3, false),
                ],
                Outcome::NoOrder,
            ),
        ];
        for (what, initial, h, want) in cases {
            assert_eq!(both(&h, initial.map(v)), (want, want), "{what}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        /// Preparing the search (dropping what cannot matter, one value
        /// for every unmentioned one, spares, ends, twins) never changes
        /// the verdict of the plain search over every operation, from the
        /// empty key or from any other value. Times are coarse so calls
        /// and returns tie; half the operations never return.
        #[test]
        fn pruning_lost_operations_keeps_the_verdict(
            steps in proptest::collection::vec(
                (0u8..4, 0u8..7, 0u8..5, 0u64..4, 0u64..4, 0u8..4),
                1..14,
            ),
            forge in proptest::option::of((0usize..14, 0u8..6)),
            start in proptest::option::of(0u8..10),
        ) {
            let mut reg: Option<Vec<u8>> = None;
            let mut h = Vec::new();
            for (i, &(kind, x, e, before, after, fate)) in steps.iter().enumerate() {
                let at = 20 * (i as u64 + 1) + 30;
                // fate 0, 1: returned; 2: lost after it took effect; 3: lost before.
                let mut next = reg.clone();
                let (input, out) = match kind {
                    0 => (Input::Get, Output::Value(reg.clone())),
                    1 => { next = Some(v(x)); (Input::Put(v(x)), Output::Done) }
                    2 => { next = None; (Input::Delete, Output::Done) }
                    _ => {
                        let expect = (e > 0).then(|| v(e - 1));
                        let swaps = expect == reg;
                        if swaps { next = Some(v(x)); }
                        (Input::Cas { expect, new: v(x) }, Output::Swapped(swaps))
                    }
                };
                if fate < 3 {
                    reg = next;
                }
                let ret = (fate < 2).then_some((at + 10 * after, out));
                h.push(op(i as u32 % 3, at - 10 * before, ret, input));
            }
            if let Some((i, x)) = forge {
                if let Some(Some((_, out))) = h.get_mut(i).map(|o| o.ret.as_mut()) {
                    *out = match out {
                        Output::Value(_) => Output::Value((x < 5).then(|| v(x))),
                        Output::Swapped(s) => Output::Swapped(!*s),
                        Output::Done => Output::Done,
                    };
                }
            }
            let (prepared, plain) = both(&h, None);
            prop_assert_eq!(prepared, plain);
            prop_assert_eq!(check(&h).is_ok(), plain == Outcome::Ordered);
            // From another value, as the witness judges its windows:
            // written ones, one nobody mentions, the empty value.
            let start = start.map(|x| match x {
                0..=6 => v(x),
                7 => v(9),
                8 => b"\0unmentioned".to_vec(),
                _ => Vec::new(),
            });
            let (prepared, plain) = both(&h, start);
            prop_assert_eq!(prepared, plain);
        }
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
                prop_assert!(matches!(check(&h), Err(Failure::Violation(_))));
            }
        }
    }
}

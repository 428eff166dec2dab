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
mod tests;

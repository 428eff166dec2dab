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

use std::collections::{BTreeMap, HashSet};

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
    let mut events = Events::new(ops);
    let words = ops.len().div_ceil(64);
    let mut placed = vec![0u64; words];
    let mut state: Option<Vec<u8>> = None;
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

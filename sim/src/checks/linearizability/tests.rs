//! The checker's tests: edge cases, witnesses, and properties against the
//! plain search.

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

/// Operation `kind` on a register holding `reg`, as a correct register
/// runs it: 0 reads, 1 writes `x`, 2 deletes, 3 swaps in `x` if the register
/// holds what `expect` names (0: absent, e: `v(e - 1)`). What was asked,
/// what came back, and what the register holds after.
fn register_step(
    reg: &Option<Vec<u8>>,
    kind: u8,
    x: u8,
    expect: u8,
) -> (Input, Output, Option<Vec<u8>>) {
    match kind {
        0 => (Input::Get, Output::Value(reg.clone()), reg.clone()),
        1 => (Input::Put(v(x)), Output::Done, Some(v(x))),
        2 => (Input::Delete, Output::Done, None),
        _ => {
            let expect = (expect > 0).then(|| v(expect - 1));
            let swaps = expect == *reg;
            let next = if swaps { Some(v(x)) } else { reg.clone() };
            (
                Input::Cas { expect, new: v(x) },
                Output::Swapped(swaps),
                next,
            )
        }
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
            let (input, out, next) = register_step(&reg, kind, x, e);
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
        if plain == Outcome::NoOrder {
            // A witness never blames a refused check-and-set whose
            // refusal it left unexplained: some write of another value
            // before its return, or the key's value before the window
            // (from the start: absent), if no write of what it expected
            // was over before its call.
            let w = witness::witness("k", &h);
            for c in &w.ops {
                if let (Input::Cas { expect, .. }, Some((t, Output::Swapped(false)))) = (&c.input, &c.ret) {
                    let expect = expect.as_deref();
                    let before = (!w.from_start || expect.is_some())
                        && !w.ops.iter().any(|o| {
                            wrote(o) == Some(expect) && o.ret.as_ref().is_some_and(|r| r.0 < c.call)
                        });
                    let explained = before
                        || w.ops.iter().any(|o| {
                            o.call <= *t && wrote(o).is_some_and(|x| x != expect)
                        });
                    prop_assert!(explained, "unexplained refusal in {}", w);
                }
            }
        }
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
            let (input, out, next) = register_step(&reg, kind, x, x);
            reg = next;
            h.push(op(steps[i].4, at - before, Some((at + after, out)), input));
        }
        prop_assert_eq!(check(&h), Ok(()));
        if let Some(i) = h.iter().position(|o| o.input == Input::Get) {
            h[i].ret = Some((h[i].ret.as_ref().unwrap().0, Output::Value(Some(v(99)))));
            prop_assert!(matches!(check(&h), Err(Failure::Violation(_))));
        }
    }
}

use proptest::prelude::*;

use super::*;

fn node(name: &str) -> Node {
    Node {
        node: name.into(),
        address: "10.0.0.1".into(),
        ..Node::default()
    }
}

fn check(id: &str, status: Health) -> Check {
    Check {
        check_id: id.into(),
        status,
        ..Check::default()
    }
}

fn register(name: &str, checks: Vec<Check>) -> Command {
    Command::Register {
        node: node(name),
        service: None,
        checks,
    }
}

fn kv(op: KvOp, key: &str, value: &str) -> Command {
    Command::Kv {
        op,
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
    }
}

fn session(id: &str, node: &str, behavior: Behavior, lock_delay_ms: u64) -> Command {
    Command::SessionCreate(Session {
        id: id.into(),
        node: node.into(),
        checks: vec!["serfHealth".into()],
        behavior,
        lock_delay_ms,
        ..Session::default()
    })
}

fn lock(session: &str) -> KvOp {
    KvOp::Lock {
        session: session.into(),
    }
}

/// A store with node `n1` (passing `serfHealth`) at index 1.
fn with_node() -> Store {
    let mut s = Store::new();
    let c = register("n1", vec![check("serfHealth", Health::Passing)]);
    assert_eq!(s.apply(1, 0, &c), Ok(true));
    s
}

#[test]
fn each_table_keeps_its_own_index_and_unchanged_writes_keep_it() {
    let mut s = with_node();
    assert_eq!((s.index(Table::Nodes), s.index(Table::Checks)), (1, 1));
    assert_eq!(s.index(Table::Services), 0);
    let web = Command::Register {
        node: node("n1"),
        service: Some(Box::new(Service {
            service: "web".into(),
            port: 80,
            ..Service::default()
        })),
        checks: vec![Check {
            check_id: "web-alive".into(),
            service_id: "web".into(),
            status: Health::Passing,
            ..Check::default()
        }],
    };
    s.apply(2, 0, &web).unwrap();
    assert_eq!(s.index(Table::Nodes), 1, "the node did not change");
    assert_eq!((s.index(Table::Services), s.index(Table::Checks)), (2, 2));
    // The ID defaults to the name; the check learns its service's name.
    let svc = s.node_services("n1").next().unwrap();
    assert_eq!((svc.id.as_str(), svc.create_index), ("web", 2));
    let c = s
        .node_checks("n1")
        .find(|c| c.check_id == "web-alive")
        .unwrap();
    assert_eq!(c.service_name, "web");
    // The same registration again changes nothing.
    s.apply(3, 0, &web).unwrap();
    assert_eq!((s.index(Table::Services), s.index(Table::Checks)), (2, 2));
    // A new port: modified, not recreated.
    let Command::Register { node, checks, .. } = web else {
        unreachable!()
    };
    let moved = Command::Register {
        node,
        service: Some(Box::new(Service {
            service: "web".into(),
            port: 8080,
            ..Service::default()
        })),
        checks,
    };
    s.apply(4, 0, &moved).unwrap();
    let svc = s.node_services("n1").next().unwrap();
    assert_eq!((svc.create_index, svc.modify_index, svc.port), (2, 4, 8080));
    assert_eq!(s.service_nodes("web", None).count(), 1);
    assert_eq!(s.last_applied(), 4);
}

#[test]
fn a_bad_registration_changes_nothing() {
    let mut s = with_node();
    let orphan = Command::Register {
        node: node("n2"),
        service: None,
        checks: vec![Check {
            check_id: "c".into(),
            service_id: "nope".into(),
            ..Check::default()
        }],
    };
    let err = s.apply(2, 0, &orphan).unwrap_err().to_string();
    assert!(err.contains("does not have"), "{err}");
    assert!(s.node("n2").is_none());
    assert_eq!(s.index(Table::Nodes), 1);
    assert!(s.apply(3, 0, &register("", vec![])).is_err());
}

#[test]
fn deregistering_a_node_takes_everything_of_it() {
    let mut s = with_node();
    let coord = crate::coordinate::Coordinate::origin(&crate::coordinate::Config::default());
    s.apply(
        2,
        0,
        &Command::Coordinates(vec![("n1".into(), coord.clone()), ("ghost".into(), coord)]),
    )
    .unwrap();
    assert!(s.coordinate("n1").is_some() && s.coordinate("ghost").is_none());
    s.apply(3, 0, &session("s1", "n1", Behavior::Release, 0))
        .unwrap();
    s.apply(4, 0, &kv(lock("s1"), "k", "v")).unwrap();
    let gone = Command::Deregister {
        node: "n1".into(),
        service_id: None,
        check_id: None,
    };
    s.apply(5, 0, &gone).unwrap();
    assert!(s.node("n1").is_none() && s.coordinate("n1").is_none());
    assert_eq!(s.node_checks("n1").count(), 0);
    assert!(s.session("s1").is_none());
    assert_eq!(
        s.kv_get("k").unwrap().session,
        None,
        "the lock went with the session"
    );
    // Gone already: not an error.
    assert_eq!(s.apply(6, 0, &gone), Ok(true));
}

#[test]
fn check_and_set_follows_the_modify_index() {
    let mut s = Store::new();
    assert_eq!(
        s.apply(1, 0, &kv(KvOp::Cas { index: 0 }, "k", "a")),
        Ok(true)
    );
    assert_eq!(
        s.apply(2, 0, &kv(KvOp::Cas { index: 0 }, "k", "b")),
        Ok(false)
    );
    assert_eq!(
        s.apply(3, 0, &kv(KvOp::Cas { index: 7 }, "k", "b")),
        Ok(false)
    );
    assert_eq!(
        s.apply(4, 0, &kv(KvOp::Cas { index: 1 }, "k", "b")),
        Ok(true)
    );
    let e = s.kv_get("k").unwrap();
    assert_eq!(
        (e.create_index, e.modify_index, &e.value[..]),
        (1, 4, &b"b"[..])
    );
    assert_eq!(
        s.apply(5, 0, &kv(KvOp::DeleteCas { index: 1 }, "k", "")),
        Ok(false)
    );
    assert_eq!(
        s.apply(6, 0, &kv(KvOp::DeleteCas { index: 4 }, "k", "")),
        Ok(true)
    );
    assert!(s.kv_get("k").is_none());
    assert_eq!(
        s.apply(7, 0, &kv(KvOp::DeleteCas { index: 4 }, "k", "")),
        Ok(true)
    );
}

#[test]
fn locks_are_taken_once_kept_by_their_holder_and_released_only_by_it() {
    let mut s = with_node();
    s.apply(2, 0, &session("a", "n1", Behavior::Release, 0))
        .unwrap();
    s.apply(3, 0, &session("b", "n1", Behavior::Release, 0))
        .unwrap();
    let err = s.apply(4, 0, &kv(lock("zz"), "l", "x")).unwrap_err();
    assert!(err.to_string().contains("invalid session"));
    assert_eq!(s.apply(5, 0, &kv(lock("a"), "l", "1")), Ok(true));
    assert_eq!(s.kv_get("l").unwrap().lock_index, 1);
    assert_eq!(s.apply(6, 0, &kv(lock("b"), "l", "2")), Ok(false));
    // The holder again: an update, not a new acquisition.
    assert_eq!(s.apply(7, 0, &kv(lock("a"), "l", "3")), Ok(true));
    assert_eq!(s.kv_get("l").unwrap().lock_index, 1);
    // A plain write keeps the lock.
    s.apply(8, 0, &kv(KvOp::Set, "l", "4")).unwrap();
    assert_eq!(s.kv_get("l").unwrap().session.as_deref(), Some("a"));
    let unlock = |who: &str| {
        kv(
            KvOp::Unlock {
                session: who.into(),
            },
            "l",
            "5",
        )
    };
    assert_eq!(s.apply(9, 0, &unlock("b")), Ok(false));
    assert_eq!(s.apply(10, 0, &unlock("a")), Ok(true));
    let e = s.kv_get("l").unwrap();
    assert_eq!(
        (e.session.clone(), e.lock_index, e.modify_index),
        (None, 1, 10)
    );
    assert_eq!(s.apply(11, 0, &kv(lock("b"), "l", "6")), Ok(true));
    assert_eq!(s.kv_get("l").unwrap().lock_index, 2);
}

#[test]
fn a_session_needs_its_node_and_healthy_checks() {
    let mut s = Store::new();
    let err = s
        .apply(1, 0, &session("x", "n1", Behavior::Release, 0))
        .unwrap_err();
    assert!(err.to_string().contains("not registered"), "{err}");
    s.apply(
        2,
        0,
        &register("n1", vec![check("serfHealth", Health::Critical)]),
    )
    .unwrap();
    let err = s
        .apply(3, 0, &session("x", "n1", Behavior::Release, 0))
        .unwrap_err();
    assert!(err.to_string().contains("critical"), "{err}");
    assert_eq!(s.sessions().count(), 0);
}

#[test]
fn a_check_going_critical_ends_its_sessions_by_their_behavior() {
    let mut s = with_node();
    s.apply(2, 1_000, &session("rel", "n1", Behavior::Release, 15_000))
        .unwrap();
    s.apply(3, 1_000, &session("del", "n1", Behavior::Delete, 0))
        .unwrap();
    s.apply(4, 1_000, &kv(lock("rel"), "app/leader", "me"))
        .unwrap();
    s.apply(5, 1_000, &kv(lock("del"), "app/ephemeral", "me"))
        .unwrap();
    let sessions_before = s.index(Table::Sessions);
    let failing = register("n1", vec![check("serfHealth", Health::Critical)]);
    s.apply(6, 2_000, &failing).unwrap();
    assert_eq!(s.sessions().count(), 0);
    assert!(s.index(Table::Sessions) > sessions_before);
    let kept = s.kv_get("app/leader").unwrap();
    assert_eq!((kept.session.clone(), kept.modify_index), (None, 6));
    assert!(s.kv_get("app/ephemeral").is_none());
    // Lock delay: the released key stays free of new locks until 17 s.
    s.apply(
        7,
        2_000,
        &register("n1", vec![check("serfHealth", Health::Passing)]),
    )
    .unwrap();
    s.apply(8, 2_000, &session("new", "n1", Behavior::Release, 0))
        .unwrap();
    assert_eq!(
        s.apply(9, 16_999, &kv(lock("new"), "app/leader", "me")),
        Ok(false)
    );
    assert_eq!(
        s.apply(10, 17_000, &kv(lock("new"), "app/leader", "me")),
        Ok(true)
    );
    // Explicit destroy, and of what is gone already.
    assert_eq!(
        s.apply(11, 18_000, &Command::SessionDestroy { id: "new".into() }),
        Ok(true)
    );
    assert_eq!(
        s.apply(12, 18_000, &Command::SessionDestroy { id: "new".into() }),
        Ok(false)
    );
}

#[test]
fn a_prefix_index_never_goes_back_when_keys_are_deleted() {
    let mut s = Store::new();
    s.apply(1, 0, &kv(KvOp::Set, "other", "x")).unwrap();
    assert_eq!(s.kv_index("app/"), 1, "nothing there: the table's index");
    s.apply(2, 0, &kv(KvOp::Set, "app/a", "x")).unwrap();
    s.apply(3, 0, &kv(KvOp::Set, "app/b", "x")).unwrap();
    s.apply(4, 0, &kv(KvOp::Delete, "app/b", "")).unwrap();
    assert_eq!(s.kv_index("app/"), 4);
    s.apply(5, 0, &kv(KvOp::DeleteTree, "app/", "")).unwrap();
    assert_eq!(s.kv_list("app/"), (5, vec![]));
    s.apply(6, 0, &Command::ReapTombstones { up_to: 5 })
        .unwrap();
    assert_eq!(s.kv_index("app/"), 5, "back to the table's index, still 5");
    s.apply(7, 0, &kv(KvOp::Set, "other", "y")).unwrap();
    assert_eq!(s.kv_index("app/"), 7);
}

#[test]
fn watchers_wake_for_their_table_or_prefix_only() {
    let mut s = Store::new();
    let hub = s.watches();
    let mut kvs = hub.table(Table::Kvs);
    let nodes = hub.table(Table::Nodes);
    let mut app = hub.prefix("app/", s.kv_index("app/"));
    let mut deep = hub.prefix("app/x/", s.kv_index("app/x/"));
    s.apply(1, 0, &kv(KvOp::Set, "other", "x")).unwrap();
    assert!(kvs.has_changed().unwrap() && !app.has_changed().unwrap());
    assert_eq!(*kvs.borrow_and_update(), 1);
    assert!(!nodes.has_changed().unwrap());
    s.apply(2, 0, &kv(KvOp::Set, "app/y", "x")).unwrap();
    assert_eq!(*app.borrow_and_update(), 2);
    assert!(!deep.has_changed().unwrap());
    s.apply(3, 0, &kv(KvOp::Set, "app/x/1", "x")).unwrap();
    s.apply(4, 0, &kv(KvOp::DeleteTree, "app/", "")).unwrap();
    assert_eq!(
        *deep.borrow_and_update(),
        4,
        "a tree delete reaches inner prefixes"
    );
    assert_eq!(*app.borrow_and_update(), 4);
}

#[test]
fn a_waiter_is_woken_when_the_index_passes_its_own() {
    let mut s = Store::new();
    let mut rx = s.watches().prefix("k", 0);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let waiter = rt.spawn(async move { *rx.wait_for(|i| *i > 1).await.unwrap() });
    s.apply(1, 0, &kv(KvOp::Set, "k", "a")).unwrap();
    s.apply(2, 0, &kv(KvOp::Set, "k", "b")).unwrap();
    assert_eq!(rt.block_on(waiter).unwrap(), 2);
}

#[test]
fn snapshots_restore_everything_and_refuse_garbage() {
    let mut s = with_node();
    s.apply(2, 0, &session("a", "n1", Behavior::Delete, 5))
        .unwrap();
    s.apply(3, 0, &kv(lock("a"), "k", "v")).unwrap();
    s.apply(4, 0, &kv(KvOp::Set, "gone", "v")).unwrap();
    s.apply(5, 0, &kv(KvOp::Delete, "gone", "")).unwrap();
    let back = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(back.data, s.data);
    assert_eq!(back.kv_index("gone"), 5);
    let err = Store::restore(b"{\"format\": 1, \"nodes\": 7}").unwrap_err();
    assert!(matches!(err, StateError::Snapshot(_)), "{err}");
    let mut truncated = s.snapshot();
    truncated.truncate(truncated.len() / 2);
    assert!(Store::restore(&truncated).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8),
    Cas(u8, u64),
    Lock(u8, u8),
    Unlock(u8, u8),
    Delete(u8),
    DeleteTree(u8),
    Destroy(u8),
    Create(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0u8..6).prop_map(Op::Set),
        (0u8..6, 0u64..12).prop_map(|(k, i)| Op::Cas(k, i)),
        (0u8..6, 0u8..3).prop_map(|(k, s)| Op::Lock(k, s)),
        (0u8..6, 0u8..3).prop_map(|(k, s)| Op::Unlock(k, s)),
        (0u8..6).prop_map(Op::Delete),
        (0u8..2).prop_map(Op::DeleteTree),
        (0u8..3).prop_map(Op::Destroy),
        (0u8..3).prop_map(Op::Create),
    ]
}

proptest! {
    /// Whatever happens: indexes are consistent, a held lock names a live
    /// session, lock indexes never fall, and prefix indexes never go back.
    #[test]
    fn kv_invariants_hold(ops in proptest::collection::vec(op(), 1..120)) {
        let mut s = with_node();
        let key = |k: u8| format!("{}/{}", if k % 2 == 0 { "a" } else { "b" }, k);
        let sid = |i: u8| format!("s{i}");
        let mut lock_index = std::collections::BTreeMap::new();
        let mut prefix_index = [0u64; 3];
        for (n, op) in ops.into_iter().enumerate() {
            let index = n as u64 + 2;
            let at = index * 1_000;
            let cmd = match op {
                Op::Set(k) => kv(KvOp::Set, &key(k), "v"),
                Op::Cas(k, i) => kv(KvOp::Cas { index: i }, &key(k), "v"),
                Op::Lock(k, i) => kv(lock(&sid(i)), &key(k), "v"),
                Op::Unlock(k, i) => kv(KvOp::Unlock { session: sid(i) }, &key(k), "v"),
                Op::Delete(k) => kv(KvOp::Delete, &key(k), ""),
                Op::DeleteTree(p) => kv(KvOp::DeleteTree, if p == 0 { "a/" } else { "b/" }, ""),
                Op::Destroy(i) => Command::SessionDestroy { id: sid(i) },
                Op::Create(i) => session(&sid(i), "n1", if i == 2 { Behavior::Delete } else { Behavior::Release }, 2_000),
            };
            // Refusals (an unknown session, a duplicate one) are fine.
            let _ = s.apply(index, at, &cmd);
            for (k, e) in s.data.kv.iter() {
                prop_assert!(e.create_index <= e.modify_index && e.modify_index <= index);
                if let Some(holder) = &e.session {
                    prop_assert!(s.session(holder).is_some(), "{k} held by a dead session");
                }
                let before = lock_index.insert(k.clone(), e.lock_index).unwrap_or(0);
                prop_assert!(e.lock_index >= before || e.create_index == e.modify_index);
            }
            for (i, p) in ["", "a/", "b/"].iter().enumerate() {
                let now = s.kv_index(p);
                prop_assert!(now >= prefix_index[i], "{p:?} went from {} to {now}", prefix_index[i]);
                prefix_index[i] = now;
            }
        }
    }
}

#[test]
fn restoring_in_place_wakes_every_waiter() {
    let mut s = Store::new();
    s.apply(1, 0, &kv(KvOp::Set, "a/x", "1")).unwrap();
    let snap = s.snapshot();
    s.apply(2, 0, &kv(KvOp::Set, "a/y", "2")).unwrap();
    let hub = s.watches();
    let prefix = hub.prefix("a/", s.kv_index("a/"));
    let mut table = hub.table(Table::Kvs);
    table.borrow_and_update();
    s.restore_in_place(&snap).unwrap();
    assert!(prefix.has_changed().unwrap() && table.has_changed().unwrap());
    assert!(s.kv_get("a/y").is_none() && s.kv_get("a/x").is_some());
    assert!(Store::new().restore_in_place(b"garbage").is_err());
}

fn txn_op(verb: TxnVerb, key: &str, value: &str, index: u64) -> TxnOp {
    TxnOp {
        verb,
        key: key.into(),
        value: value.as_bytes().to_vec(),
        flags: 0,
        index,
        session: String::new(),
    }
}

fn txn(store: &mut Store, index: u64, ops: Vec<TxnOp>) -> TxnOutcome {
    match store.apply_outcome(index, 0, &Command::Txn(ops)) {
        Ok(Applied::Txn(t)) => t,
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_transaction_sees_its_own_writes_and_answers_with_them() {
    let mut s = Store::new();
    let out = txn(
        &mut s,
        5,
        vec![
            txn_op(TxnVerb::Set, "a", "1", 0),
            txn_op(TxnVerb::Cas, "b", "2", 0),
            txn_op(TxnVerb::Get, "a", "", 0),
            txn_op(TxnVerb::CheckIndex, "b", "", 5),
            txn_op(TxnVerb::CheckNotExists, "c", "", 0),
            txn_op(TxnVerb::GetTree, "", "", 0),
        ],
    )
    .unwrap();
    let keys: Vec<(&str, &[u8])> = out.iter().map(|e| (e.key.as_str(), &e.value[..])).collect();
    // Writes answer without their value; reads with it.
    assert_eq!(
        keys,
        [
            ("a", &b""[..]),
            ("b", b""),
            ("a", b"1"),
            ("b", b""),
            ("a", b"1"),
            ("b", b"2")
        ]
    );
    assert_eq!(s.index(Table::Kvs), 5);
}

#[test]
fn a_failed_transaction_changes_nothing_and_names_every_failure() {
    let mut s = Store::new();
    s.apply(1, 0, &kv(KvOp::Set, "app/x", "old")).unwrap();
    s.apply(2, 0, &kv(KvOp::Set, "app/y", "old")).unwrap();
    let before = s.snapshot();
    let hub = s.watches();
    let out = txn(
        &mut s,
        3,
        vec![
            txn_op(TxnVerb::Set, "app/x", "new", 0),
            txn_op(TxnVerb::DeleteTree, "app/", "", 0),
            txn_op(TxnVerb::Set, "fresh", "v", 0),
            txn_op(TxnVerb::Cas, "app/x", "v", 99),
            txn_op(TxnVerb::Get, "missing", "", 0),
        ],
    )
    .unwrap_err();
    assert_eq!(
        out.iter().map(|e| e.op_index).collect::<Vec<_>>(),
        [3, 4],
        "{out:?}"
    );
    assert!(out[0].what.contains("index is stale"), "{out:?}");
    // Byte for byte as before, except the applied index.
    let mut after = Store::restore(&s.snapshot()).unwrap();
    after.data.last_applied = 2;
    assert_eq!(after.snapshot(), before);
    assert_eq!(
        *hub.table(Table::Kvs).borrow(),
        2,
        "no watcher woke for nothing"
    );
}

#[test]
fn transactions_have_a_size_limit() {
    let mut s = Store::new();
    let ops = vec![txn_op(TxnVerb::Set, "k", "v", 0); MAX_TXN_OPS + 1];
    assert!(s.apply_outcome(1, 0, &Command::Txn(ops)).is_err());
}

proptest! {
    /// Whatever a transaction does, if any of its operations fails the
    /// store is exactly as before.
    #[test]
    fn failed_transactions_roll_back(
        seed in proptest::collection::vec((0u8..6, 0u8..4, 0u64..4), 1..12),
    ) {
        let mut s = Store::new();
        for (i, k) in ["k0", "k1", "k2"].iter().enumerate() {
            s.apply(i as u64 + 1, 0, &kv(KvOp::Set, k, "v")).unwrap();
        }
        let before = s.snapshot();
        let verbs = [TxnVerb::Set, TxnVerb::Cas, TxnVerb::Delete, TxnVerb::DeleteTree, TxnVerb::DeleteCas, TxnVerb::Get];
        let mut ops: Vec<TxnOp> = seed
            .iter()
            .map(|(v, k, i)| txn_op(verbs[*v as usize], &format!("k{k}"), "w", *i))
            .collect();
        // The last operation always fails.
        ops.push(txn_op(TxnVerb::Get, "never", "", 0));
        let r = s.apply_outcome(10, 0, &Command::Txn(ops)).unwrap();
        prop_assert!(matches!(r, Applied::Txn(Err(_))));
        let mut after = Store::restore(&s.snapshot()).unwrap();
        after.data.last_applied = 3;
        prop_assert_eq!(after.snapshot(), before);
    }
}

/// The service-name index follows registrations, renames, deregistrations
/// and snapshots: lookups by name find exactly the instances a full scan
/// would.
#[test]
fn lookups_by_service_name_follow_every_change() {
    let mut s = Store::default();
    let reg = |n: &str, id: &str, name: &str| Command::Register {
        node: node(n),
        service: Some(Box::new(Service {
            id: id.into(),
            service: name.into(),
            ..Service::default()
        })),
        checks: vec![],
    };
    let found = |s: &Store, name: &str| -> Vec<String> {
        s.service_nodes(name, None)
            .map(|(n, svc)| format!("{}/{}", n.node, svc.id))
            .collect()
    };
    s.apply(1, 0, &reg("n1", "a", "web")).unwrap();
    s.apply(2, 0, &reg("n2", "a", "web")).unwrap();
    s.apply(3, 0, &reg("n1", "b", "db")).unwrap();
    assert_eq!(found(&s, "web"), ["n1/a", "n2/a"]);
    // The same instance ID under a new name moves.
    s.apply(4, 0, &reg("n2", "a", "api")).unwrap();
    assert_eq!(found(&s, "web"), ["n1/a"]);
    assert_eq!(found(&s, "api"), ["n2/a"]);
    let dereg = Command::Deregister {
        node: "n1".into(),
        service_id: Some("a".into()),
        check_id: None,
    };
    s.apply(5, 0, &dereg).unwrap();
    assert!(found(&s, "web").is_empty());
    // A whole node going takes its instances out of the index.
    let gone = Command::Deregister {
        node: "n1".into(),
        service_id: None,
        check_id: None,
    };
    s.apply(6, 0, &gone).unwrap();
    assert!(found(&s, "db").is_empty());
    let restored = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(found(&restored, "api"), ["n2/a"]);
}

/// A command that puts something in `table`. The match names every table,
/// so a new one does not compile until it has a filler here, and then
/// [`a_snapshot_carries_every_table`] proves the snapshot carries it.
fn fill(table: Table) -> Command {
    match table {
        Table::Nodes => register("n2", Vec::new()),
        Table::Checks => register("n1", vec![check("c2", Health::Warning)]),
        Table::Services => Command::Register {
            node: node("n1"),
            service: Some(Box::new(Service {
                id: "web-1".into(),
                service: "web".into(),
                ..Service::default()
            })),
            checks: Vec::new(),
        },
        Table::Kvs => kv(KvOp::Set, "k", "v"),
        Table::Sessions => session("s", "n1", Behavior::Release, 0),
        Table::Coordinates => Command::Coordinates(vec![(
            "n1".into(),
            Coordinate::origin(&crate::coordinate::Config::default()),
        )]),
        Table::Connect => Command::CaSetRoot {
            cluster_id: "cluster".into(),
            root: Box::new(crate::connect::ca::RootKeys {
                cert_pem: "cert".into(),
                key_pem: "key".into(),
                signing_key_id: "01:02".into(),
                serial: 7,
                not_before_ms: 0,
                not_after_ms: 1,
                intermediate_pems: Vec::new(),
            }),
            only_if_none: true,
            leaf_ttl_ms: None,
        },
        Table::Intentions => {
            Command::IntentionSet(Box::new(crate::connect::intention::Intention {
                id: "i1".into(),
                source_name: "web".into(),
                destination_name: "db".into(),
                ..Default::default()
            }))
        }
        Table::Queries => Command::QuerySet(Box::new(PreparedQuery {
            id: "q1".into(),
            name: "q".into(),
            service: QueryService {
                service: "web".into(),
                ..QueryService::default()
            },
            ..PreparedQuery::default()
        })),
        Table::Acl => Command::AclPolicySet(Box::new(crate::acl::Policy {
            id: "p1".into(),
            name: "p".into(),
            rules: "key_prefix \"\" { policy = \"read\" }".into(),
            ..Default::default()
        })),
        Table::Autopilot => Command::AutopilotSet {
            config: Box::new(AutopilotConfig {
                cleanup_dead_servers: false,
                ..AutopilotConfig::default()
            }),
            cas: None,
        },
    }
}

#[test]
fn a_snapshot_carries_every_table() {
    let mut s = with_node();
    for (i, table) in Table::ALL.into_iter().enumerate() {
        let index = 10 + i as u64;
        assert_eq!(s.apply(index, 0, &fill(table)), Ok(true), "{table:?}");
        assert_eq!(s.index(table), index, "{table:?} moved its index");
    }
    let back = Store::restore(&s.snapshot()).unwrap();
    assert_eq!(back.data, s.data);
    for table in Table::ALL {
        assert_eq!(back.index(table), s.index(table), "{table:?}");
    }
}

#[test]
fn a_restore_replaces_the_store_and_moves_every_index_forward() {
    let mut s = with_node();
    s.apply(2, 0, &kv(KvOp::Set, "k", "before")).unwrap();
    let snapshot = String::from_utf8(s.snapshot()).unwrap();
    s.apply(3, 0, &kv(KvOp::Set, "k", "after")).unwrap();
    s.apply(4, 0, &kv(KvOp::Set, "new", "x")).unwrap();
    let hub = s.watches();
    let mut table = hub.table(Table::Kvs);
    let mut prefix = hub.prefix("k", s.kv_index("k"));
    table.borrow_and_update();
    prefix.borrow_and_update();
    assert_eq!(s.apply(5, 0, &Command::Restore { snapshot }), Ok(true));
    assert_eq!(
        s.kv_get("k").map(|e| e.value.clone()),
        Some(b"before".to_vec())
    );
    assert!(s.kv_get("new").is_none());
    for table in Table::ALL {
        assert_eq!(s.index(table), 5, "{table:?}");
    }
    assert!(table.has_changed().unwrap(), "readers of the table wake");
    assert!(prefix.has_changed().unwrap(), "readers of a prefix wake");
    assert_eq!(*prefix.borrow(), 5);
    // A snapshot that does not read changes nothing.
    let bad = Command::Restore {
        snapshot: "{\"format\": 1".into(),
    };
    assert!(s.apply(6, 0, &bad).is_err());
    assert_eq!(
        s.kv_get("k").map(|e| e.value.clone()),
        Some(b"before".to_vec())
    );
    assert_eq!(s.index(Table::Kvs), 5);
}

#[test]
fn autopilot_settings_follow_check_and_set() {
    let mut s = Store::new();
    assert!(s.autopilot().cleanup_dead_servers, "Consul's default");
    let off = AutopilotConfig {
        cleanup_dead_servers: false,
        ..AutopilotConfig::default()
    };
    let set = |config: &AutopilotConfig, cas| Command::AutopilotSet {
        config: Box::new(config.clone()),
        cas,
    };
    assert_eq!(s.apply(3, 0, &set(&off, Some(1))), Ok(false), "stale cas");
    assert!(s.autopilot().cleanup_dead_servers);
    assert_eq!(s.apply(4, 0, &set(&off, None)), Ok(true));
    assert_eq!(s.autopilot().modify_index, 4);
    assert_eq!(s.autopilot().create_index, 4);
    assert_eq!(
        s.apply(5, 0, &set(&AutopilotConfig::default(), Some(4))),
        Ok(true)
    );
    let now = s.autopilot();
    assert!(now.cleanup_dead_servers);
    assert_eq!((now.create_index, now.modify_index), (4, 5));
    let bad = AutopilotConfig {
        last_contact_threshold: "soon".into(),
        ..AutopilotConfig::default()
    };
    assert!(s.apply(6, 0, &set(&bad, None)).is_err());
}

//! Blocking queries and `X-Consul-Index` against a real server, one test
//! per rule of Consul's (its "Blocking Queries" page and its RPC layer):
//!
//! 1. every read carries `X-Consul-Index`, a 404 included, and a key that
//!    was deleted included;
//! 2. the index is never 0, and never goes backwards;
//! 3. `index=0` never blocks; a `wait` as short as 1 ms answers at once
//!    with the current index (Consul has no minimum wait);
//! 4. a reader polling from the last index it saw sees every change made
//!    after that read, however short its wait (the watch loops of client
//!    libraries rely on it);
//! 5. an `index` ahead of the store (after a restore, or from another
//!    cluster) blocks for at most its `wait` and answers with the store's
//!    own, lower, index, which tells the client to reset;
//! 6. a blocked read wakes as soon as its data changes.

use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;
use process::{http_full, Agent};

/// Status, `X-Consul-Index` (`None` when missing) and body.
fn read(a: &Agent, path: &str) -> (u16, Option<u64>, String) {
    let (status, head, body) = http_full(&a.http, "GET", path, b"").expect("HTTP");
    let index = head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case("x-consul-index")
            .then(|| v.trim().parse().ok())?
    });
    (status, index, body)
}

fn write(a: &Agent, method: &str, path: &str, body: &str) {
    let (status, _, text) = http_full(&a.http, method, path, body.as_bytes()).expect("HTTP");
    assert_eq!(status, 200, "{method} {path}: {text}");
}

/// A server of its own for each rule.
fn server() -> (tempfile::TempDir, Agent) {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "blocking");
    (dir, a)
}

#[test]
fn every_read_has_an_index_a_404_and_a_deleted_key_included() {
    let (_dir, a) = server();
    // A missing key, and a deleted one, still say where the store is.
    let (status, index, _) = read(&a, "/v1/kv/rule1/never");
    assert_eq!(status, 404);
    assert!(index.is_some_and(|i| i >= 1), "a 404 has an index");
    write(&a, "PUT", "/v1/kv/rule1/gone", "v");
    let (_, set_at, _) = read(&a, "/v1/kv/rule1/gone");
    write(&a, "DELETE", "/v1/kv/rule1/gone", "");
    let (status, deleted_at, _) = read(&a, "/v1/kv/rule1/gone");
    assert_eq!(status, 404);
    assert!(
        deleted_at > set_at,
        "the delete moved the key's index: {set_at:?} then {deleted_at:?}"
    );
    for path in [
        "/v1/catalog/nodes",
        "/v1/health/service/none",
        "/v1/session/list",
    ] {
        let (_, index, body) = read(&a, path);
        assert!(index.is_some_and(|i| i >= 1), "{path}: {body}");
    }
}

#[test]
fn the_index_never_goes_backwards() {
    let (_dir, a) = server();
    // Through sets, deletes and deletes of whole trees, the index of a
    // prefix only moves forward.
    let mut last = 0;
    for (method, path) in [
        ("PUT", "/v1/kv/rule2/a"),
        ("PUT", "/v1/kv/rule2/b"),
        ("DELETE", "/v1/kv/rule2/a"),
        ("PUT", "/v1/kv/rule2/a"),
        ("DELETE", "/v1/kv/rule2?recurse"),
        ("PUT", "/v1/kv/other"),
    ] {
        write(&a, method, path, "x");
        let (_, index, _) = read(&a, "/v1/kv/rule2?recurse");
        let index = index.expect("an index");
        assert!(index >= last, "{method} {path}: {last} then {index}");
        last = index;
    }
}

#[test]
fn no_index_never_blocks_and_a_1ms_wait_answers_at_once() {
    let (_dir, a) = server();
    let started = Instant::now();
    let (_, current, _) = read(&a, "/v1/kv/rule3?index=0&wait=5s");
    let (_, short, _) = read(
        &a,
        &format!("/v1/kv/rule3?index={}&wait=1ms", current.unwrap()),
    );
    assert_eq!(short, current, "nothing changed");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "neither blocked"
    );
}

#[test]
fn a_watch_loop_with_a_1ms_wait_sees_every_change() {
    let (_dir, a) = server();
    let (_, mut seen, _) = read(&a, "/v1/kv/rule4/key");
    let mut values = Vec::new();
    for step in ["1", "2", "3", ""] {
        match step {
            "" => write(&a, "DELETE", "/v1/kv/rule4/key", ""),
            v => write(&a, "PUT", "/v1/kv/rule4/key", v),
        }
        let path = format!("/v1/kv/rule4/key?raw&index={}&wait=1ms", seen.unwrap());
        let (status, index, body) = read(&a, &path);
        assert!(index > seen, "{step:?}: the change is visible at once");
        seen = index;
        values.push(if status == 404 { None } else { Some(body) });
    }
    let want = ["1", "2", "3"].map(|v| Some(v.to_string()));
    assert_eq!(values[..3], want);
    assert_eq!(values[3], None);
}

#[test]
fn an_index_ahead_of_the_store_answers_after_the_wait_with_the_real_one() {
    let (_dir, a) = server();
    let started = Instant::now();
    let (status, index, _) = read(&a, "/v1/kv/rule1/never?index=99999999&wait=300ms");
    assert_eq!(status, 404);
    assert!(index.is_some_and(|i| i < 99_999_999), "{index:?}");
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[test]
fn a_blocked_read_wakes_on_the_change_and_a_bad_wait_is_refused() {
    let (_dir, a) = server();
    let (_, before, _) = read(&a, "/v1/kv/rule6");
    let http = a.http.clone();
    let waiter = std::thread::spawn(move || {
        let path = format!("/v1/kv/rule6?index={}&wait=60s", before.unwrap());
        let started = Instant::now();
        let (status, _, _) = http_full(&http, "GET", &path, b"").expect("HTTP");
        (status, started.elapsed())
    });
    std::thread::sleep(Duration::from_millis(300));
    write(&a, "PUT", "/v1/kv/rule6", "now");
    let (status, took) = waiter.join().unwrap();
    assert_eq!(status, 200);
    assert!(
        took < Duration::from_secs(30),
        "woke on the change: {took:?}"
    );

    // A wait that is not a duration is the client's mistake.
    let (status, _, body) = read(&a, "/v1/kv/rule6?index=1&wait=soon");
    assert_eq!(status, 400, "{body}");
}

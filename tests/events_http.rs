//! User events over real gossip: fired on one agent, listed on every agent
//! the filters pick, with blocking lists woken by a new event.

use std::time::{Duration, Instant};

use serde_json::Value;

#[path = "common/process.rs"]
mod process;
use process::{http, http_full, wait_for, Agent};

fn events(a: &Agent, query: &str) -> Vec<Value> {
    let (s, body) = http(&a.http, "GET", &format!("/v1/event/list{query}"), b"").unwrap();
    assert_eq!(s, 200, "{body}");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn events_reach_the_agents_their_filters_pick() {
    let dir = tempfile::tempdir().unwrap();
    let s = Agent::solo_server(dir.path(), "srv");
    let web = Agent::client_of(dir.path(), "web-1", &s);
    let db = Agent::client_of(dir.path(), "db-1", &s);
    wait_for(Duration::from_secs(20), "three members", || {
        let (st, body) = http(&s.http, "GET", "/v1/agent/members", b"").ok()?;
        let v: Value = serde_json::from_str(&body).ok()?;
        (st == 200 && v.as_array()?.len() == 3).then_some(())
    });

    let (st, body) = http(&db.http, "PUT", "/v1/event/fire/deploy", b"v1.2.3").unwrap();
    assert_eq!(st, 200, "{body}");
    let fired: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(fired["Name"], "deploy");
    assert_eq!(fired["Payload"], "djEuMi4z");
    assert_eq!(fired["Version"], 1);
    let id = fired["ID"].as_str().unwrap().to_string();
    for a in [&s, &web, &db] {
        wait_for(Duration::from_secs(10), "the event everywhere", || {
            events(a, "?name=deploy")
                .iter()
                .any(|e| e["ID"] == id.as_str())
                .then_some(())
        });
    }

    // A blocking list returns when the next event arrives.
    let (_, head, _) = http_full(&web.http, "GET", "/v1/event/list", b"").unwrap();
    let index = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("x-consul-index: ")
                .map(str::to_string)
        })
        .expect("an X-Consul-Index header");
    let web_addr = web.http.clone();
    let waiter = std::thread::spawn(move || {
        let t = Instant::now();
        let (_, body) = http(
            &web_addr,
            "GET",
            &format!("/v1/event/list?index={index}&wait=20s"),
            b"",
        )
        .unwrap();
        (t.elapsed(), body)
    });
    std::thread::sleep(Duration::from_millis(500));
    // Only nodes named web-* keep this one.
    let (st, _) = http(&s.http, "PUT", "/v1/event/fire/restart?node=%5Eweb-", b"").unwrap();
    assert_eq!(st, 200);
    let (took, body) = waiter.join().unwrap();
    assert!(
        took < Duration::from_secs(10),
        "blocking list took {took:?}"
    );
    assert!(body.contains("restart"), "{body}");
    std::thread::sleep(Duration::from_secs(1));
    assert!(events(&db, "?name=restart").is_empty());
    assert!(events(&s, "?name=restart").is_empty());
    // The list filters by name.
    assert_eq!(events(&web, "?name=deploy").len(), 1);

    // Bad requests: a bad filter, a payload over the limit.
    let (st, body) = http(&s.http, "PUT", "/v1/event/fire/x?node=(", b"").unwrap();
    assert_eq!(st, 400, "{body}");
    let (st, body) = http(&s.http, "PUT", "/v1/event/fire/x", &[b'a'; 600]).unwrap();
    assert_eq!(st, 400, "{body}");
    assert!(body.contains("512"), "{body}");
}

//! The `cairn` binary end to end: agents as processes on 127.0.0.1, the
//! member table, the HTTP API, signals, and configuration errors.

use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;

use process::{cairn, http_get, Agent, FAST_GOSSIP};

fn members(http: &str) -> String {
    let out = cairn(&["members", &format!("-http-addr={http}")]);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `cairn members` until every `(node, status)` pair shows.
fn wait_members(http: &str, want: &[(&str, &str)]) -> String {
    let until = Instant::now() + Duration::from_secs(15);
    loop {
        let table = members(http);
        let ok = want.iter().all(|(node, status)| {
            table.lines().any(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                cols.first() == Some(node) && cols.get(2) == Some(status)
            })
        });
        if ok {
            return table;
        }
        assert!(
            Instant::now() < until,
            "timed out waiting for {want:?}; last table:\n{table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn agents_form_a_cluster_and_leave_or_fail_as_signalled() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(dir.path(), "a", FAST_GOSSIP, &[]);
    // A short retry interval: under load `a` may not listen yet when `b`
    // first tries, and the default interval is Consul's 30 s.
    let join = vec![
        format!("-retry-join=127.0.0.1:{}", a.serf),
        "-retry-interval=200ms".to_string(),
    ];
    let b = Agent::start(dir.path(), "b", FAST_GOSSIP, &join);
    let c = Agent::start(dir.path(), "c", FAST_GOSSIP, &[]);
    // c joins through the CLI, as `consul join` does.
    let until = Instant::now() + Duration::from_secs(10);
    loop {
        let out = cairn(&[
            "join",
            &format!("-http-addr={}", c.http),
            &format!("127.0.0.1:{}", a.serf),
        ]);
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < until,
            "cairn join failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let table = wait_members(&a.http, &[("a", "alive"), ("b", "alive"), ("c", "alive")]);
    let header = table.lines().next().unwrap_or("");
    assert!(
        header.starts_with("Node") && header.contains("Status") && header.contains("Protocol"),
        "{table}"
    );
    assert!(
        table.lines().nth(1).unwrap_or("").contains("client"),
        "{table}"
    );

    // /v1/agent/self answers in Consul's shape, with the node ID kept on disk.
    let body = http_get(&a.http, "/v1/agent/self");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["Config"]["NodeName"], "a");
    assert_eq!(v["Config"]["Datacenter"], "dc1");
    assert_eq!(v["Member"]["Status"], 1);
    let id = std::fs::read_to_string(dir.path().join("a/node-id")).unwrap();
    assert_eq!(v["Config"]["NodeID"], id.trim());
    assert_eq!(v["Coord"]["Vec"].as_array().map(Vec::len), Some(8), "{v}");

    // Coordinates from probe round trips: `cairn rtt` estimates loopback RTTs.
    let until = Instant::now() + Duration::from_secs(15);
    let line = loop {
        let out = cairn(&["rtt", &format!("-http-addr={}", a.http), "b", "c"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            break text;
        }
        assert!(
            Instant::now() < until,
            "no estimate: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        line.starts_with("Estimated b <-> c rtt: ")
            && line.trim_end().ends_with("ms (using LAN coordinates)"),
        "{line}"
    );
    let ms: f64 = line
        .split_whitespace()
        .nth(5)
        .and_then(|x| x.parse().ok())
        .unwrap_or(f64::NAN);
    assert!(ms > 0.0 && ms < 50.0, "loopback RTT estimated at {ms} ms");
    let out = cairn(&["rtt", &format!("-http-addr={}", a.http), "b"]);
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("Estimated b <-> a rtt: "));
    let out = cairn(&["rtt", &format!("-http-addr={}", a.http), "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("could not find a coordinate for node \"nobody\""));

    // SIGTERM: b leaves gracefully and exits 0; the others show it as left.
    b.signal("-TERM");
    let mut b = b;
    assert_eq!(b.wait_exit(Duration::from_secs(10)), Some(0));
    wait_members(&a.http, &[("b", "left")]);

    // SIGKILL: c vanishes; a declares it failed.
    c.signal("-KILL");
    wait_members(&a.http, &[("c", "failed")]);
    let filtered = cairn(&[
        "members",
        &format!("-http-addr={}", a.http),
        "-status=failed",
    ]);
    let text = String::from_utf8_lossy(&filtered.stdout);
    assert!(text.contains("c ") && !text.contains("\nb "), "{text}");

    // `cairn leave` stops the last agent.
    let out = cairn(&["leave", &format!("-http-addr={}", a.http)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut a = a;
    assert_eq!(a.wait_exit(Duration::from_secs(10)), Some(0));
}

#[test]
fn bad_configuration_is_refused_with_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("bad.json");
    std::fs::write(&f, r#"{"node_name": "x", "ports": {"htp": 1}}"#).unwrap();
    let out = cairn(&["agent", "-dev", &format!("-config-file={}", f.display())]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.json") && err.contains("ports.htp") && err.contains("http"),
        "{err}"
    );

    let out = cairn(&["agent", "-bind=0.0.0.0", "-data-dir=/tmp/x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("-advertise"));

    let out = cairn(&["members", "-http-addr=127.0.0.1:1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot reach the agent"));
}

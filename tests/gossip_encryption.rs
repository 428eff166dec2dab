//! Gossip encryption between `cairn agent` processes on 127.0.0.1: agents
//! with the cluster's key form it, an agent with another key or none never
//! gets in, and the key is rotated over the running cluster (`cairn
//! keyring -install`, `-use`, `-remove`) without a member ever leaving its
//! peers' view; the rotated keyring outlives a restart.

use std::collections::BTreeSet;
use std::time::Duration;

#[path = "common/process.rs"]
mod process;

use process::{cairn, cli, http, wait_for, Agent, FAST_GOSSIP};

fn keygen() -> String {
    let out = cairn(&["keygen"]);
    assert!(out.status.success());
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn config(key: Option<&str>) -> String {
    match key {
        Some(k) => format!("{FAST_GOSSIP}encrypt = \"{k}\"\n"),
        None => FAST_GOSSIP.to_string(),
    }
}

/// The members `a` sees alive.
fn alive(a: &Agent) -> Option<BTreeSet<String>> {
    let (st, body) = http(&a.http, "GET", "/v1/agent/members", b"").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    (st == 200).then(|| {
        v.as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["Status"] == 1)
            .filter_map(|m| m["Name"].as_str().map(str::to_owned))
            .collect()
    })
}

/// How many members `a` says hold `key` (`primary`: as their primary key).
fn holding(a: &Agent, key: &str, primary: bool) -> Option<u64> {
    let (st, body) = http(&a.http, "GET", "/v1/operator/keyring", b"").ok()?;
    let v: serde_json::Value = serde_json::from_str(&body).ok()?;
    let field = if primary { "PrimaryKeys" } else { "Keys" };
    (st == 200).then(|| v[0][field][key].as_u64().unwrap_or(0))
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

fn join(a: &Agent) -> Vec<String> {
    vec![
        format!("-retry-join=127.0.0.1:{}", a.serf),
        "-retry-interval=200ms".into(),
    ]
}

#[test]
fn a_cluster_rotates_its_gossip_key_without_losing_a_member() {
    let dir = tempfile::tempdir().unwrap();
    let k1 = keygen();
    let mut a = Agent::start(dir.path(), "a", &config(Some(&k1)), &[]);
    let b = Agent::start(dir.path(), "b", &config(Some(&k1)), &join(&a));
    let c = Agent::start(dir.path(), "c", &config(Some(&k1)), &join(&a));
    let three = names(&["a", "b", "c"]);
    let all_see = |want: &BTreeSet<String>, who: &[&Agent]| {
        wait_for(
            Duration::from_secs(20),
            "every agent to see the cluster",
            || {
                who.iter()
                    .all(|x| alive(x).as_ref() == Some(want))
                    .then_some(())
            },
        );
    };
    all_see(&three, &[&a, &b, &c]);

    // Another key, or none: never in.
    let wrong = Agent::start(dir.path(), "wrong", &config(Some(&keygen())), &join(&a));
    let plain = Agent::start(dir.path(), "plain", &config(None), &join(&a));
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(alive(&a), Some(three.clone()));
    assert_eq!(alive(&wrong), Some(names(&["wrong"])));
    assert_eq!(alive(&plain), Some(names(&["plain"])));
    drop((wrong, plain));
    let (_, metrics) = http(&a.http, "GET", "/v1/agent/metrics", b"").unwrap();
    let v: serde_json::Value = serde_json::from_str(&metrics).unwrap();
    let dropped = v["Counters"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["Name"] == "consul.memberlist.undecryptable")
        .and_then(|c| c["Sum"].as_f64());
    assert!(dropped.is_some_and(|n| n >= 2.0), "{metrics}");
    let (_, me) = http(&a.http, "GET", "/v1/agent/self", b"").unwrap();
    assert!(me.contains(r#""encrypted":"true""#), "{me}");

    // Rotate: install, use, remove, each through a different agent and
    // waited on until every member has it. Nobody drops out meanwhile.
    let k2 = keygen();
    let step = |who: &Agent, flag: &str, key: &str| {
        let (ok, out, err) = cli(who, &["keyring", flag, key]);
        assert!(ok, "keyring {flag}: {out}{err}");
    };
    step(&a, "-install", &k2);
    wait_for(Duration::from_secs(20), "k2 on all three", || {
        (holding(&c, &k2, false)? == 3).then_some(())
    });
    all_see(&three, &[&a, &b, &c]);
    step(&b, "-use", &k2);
    wait_for(Duration::from_secs(20), "k2 primary on all three", || {
        (holding(&a, &k2, true)? == 3).then_some(())
    });
    all_see(&three, &[&a, &b, &c]);
    let (ok, _, err) = cli(&a, &["keyring", "-remove", &k2]);
    assert!(!ok && err.contains("primary"), "{err}");
    step(&c, "-remove", &k1);
    wait_for(Duration::from_secs(20), "k1 gone everywhere", || {
        (holding(&b, &k1, false)? == 0 && holding(&b, &k2, false)? == 3).then_some(())
    });
    all_see(&three, &[&a, &b, &c]);
    let (ok, out, err) = cli(&a, &["keyring", "-list"]);
    assert!(
        ok && out.contains(&format!("{k2}  [3/3] primary on 3")),
        "{out}{err}"
    );

    // The old key no longer gets anyone in; the new one does.
    let old = Agent::start(dir.path(), "old", &config(Some(&k1)), &join(&a));
    let new = Agent::start(dir.path(), "new", &config(Some(&k2)), &join(&a));
    let four = names(&["a", "b", "c", "new"]);
    all_see(&four, &[&a, &new]);
    assert_eq!(alive(&old), Some(names(&["old"])));
    drop(old);

    // The keyring file wins over `encrypt` (still k1 in a's config): a
    // restarted agent comes back with k2.
    let file = dir.path().join("a").join("serf").join("local.keyring");
    let kept: Vec<String> = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(kept, std::slice::from_ref(&k2));
    a.kill();
    a.restart();
    // It was the seed and joins no one by itself: join it through b.
    wait_for(Duration::from_secs(20), "a back", || alive(&a));
    let (ok, out, err) = cli(&a, &["join", &format!("127.0.0.1:{}", b.serf)]);
    assert!(ok, "{out}{err}");
    all_see(&four, &[&a, &b]);
}

#[test]
fn bad_keys_are_refused_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    for (key, want) in [
        ("not base64!", "not valid base64"),
        ("AAAA", "3 bytes; gossip keys are 16, 24 or 32 bytes"),
    ] {
        let out = cairn(&[
            "agent",
            "-dev",
            "-node=x",
            &format!("-encrypt={key}"),
            &format!("-data-dir={}", dir.path().display()),
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && err.contains(want), "{err}");
    }
    // A keyring file that is not a list of keys names itself.
    let data = dir.path().join("d");
    std::fs::create_dir_all(data.join("serf")).unwrap();
    std::fs::write(data.join("serf").join("local.keyring"), "{oops").unwrap();
    let out = cairn(&[
        "agent",
        "-node=y",
        "-bind=127.0.0.1",
        &format!("-data-dir={}", data.display()),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("local.keyring") && err.contains("JSON list"),
        "{err}"
    );
    // An agent without encryption says so to keyring commands.
    let a = Agent::start(dir.path(), "p", FAST_GOSSIP, &[]);
    wait_for(Duration::from_secs(20), "the agent", || alive(&a));
    let (ok, _, err) = cli(&a, &["keyring", "-list"]);
    assert!(!ok && err.contains("not enabled"), "{err}");
    let (ok, _, err) = cli(&a, &["keyring", "-list", "-use", "x"]);
    assert!(!ok && err.contains("exactly one"), "{err}");
}

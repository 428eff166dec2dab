//! cairn and HashiCorp memberlist (Go, Debian's 0.2.2) in one cluster.
//!
//! The Go peer (tests/interop/peer) is built here from Debian's packages,
//! offline, in GOPATH mode; `.ci/run` installs them. Both sides use the
//! same fast timing, memberlist's default LZW compression, and protocol
//! version 2 with CRCs (Go speaks up to version 5).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::env::{Env, Task, TokioEnv};
use cairn::gossip::keyring::{encode_key, Keyring};
use cairn::gossip::Encryption;
use cairn::gossip::{Gossip, GossipOptions, MemberStatus};
use serde_json::Value;

/// Builds the Go memberlist peer once per test binary.
fn go_peer_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    go_build(&BUILT, "peer")
}

/// Builds `tests/interop/NAME/main.go` offline, in GOPATH mode, once.
fn go_build(cache: &Mutex<Option<PathBuf>>, name: &str) -> PathBuf {
    let mut built = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let src =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/interop/{name}/main.go"));
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("memberlist-{name}"));
    let status = Command::new("go")
        .args(["build", "-o"])
        .arg(&out)
        .arg(&src)
        .env("GO111MODULE", "off")
        .env("GOPATH", "/usr/share/gocode")
        .env("GOPROXY", "off")
        .env(
            "GOCACHE",
            PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("go-cache"),
        )
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `go` ({e}): install Debian's golang-go and \
                 golang-github-hashicorp-memberlist-dev (`.ci/run` does)"
            )
        });
    assert!(status.success(), "building the Go program {name} failed");
    *built = Some(out.clone());
    out
}

/// A running Go memberlist node and what it has printed.
struct GoPeer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Arc<Mutex<Vec<Value>>>,
    _reader: std::thread::JoinHandle<()>,
}

impl GoPeer {
    fn start(name: &str, join: Option<SocketAddr>) -> GoPeer {
        GoPeer::start_with(name, join, None)
    }

    /// A peer with a gossip encryption key (base64), if given.
    fn start_with(name: &str, join: Option<SocketAddr>, key: Option<&str>) -> GoPeer {
        let mut cmd = Command::new(go_peer_binary());
        cmd.args(["-name", name, "-bind", "127.0.0.1", "-port", "0"]);
        if let Some(j) = join {
            cmd.args(["-join", &j.to_string()]);
        }
        if let Some(k) = key {
            cmd.args(["-key", k]);
        }
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the Go peer");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        // The peer's output is read on a plain thread: this is test harness
        // plumbing, not cairn code.
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    sink.lock().unwrap_or_else(|p| p.into_inner()).push(v);
                }
            }
        });
        GoPeer {
            stdin: child.stdin.take(),
            child,
            lines,
            _reader: reader,
        }
    }

    fn find(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        self.lines
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|v| pred(v))
            .cloned()
    }

    fn addr(&self) -> Option<SocketAddr> {
        self.find(|v| v["event"] == "ready")?["addr"]
            .as_str()?
            .parse()
            .ok()
    }

    /// Names the peer currently lists as members (alive or suspect).
    fn alive(&self) -> BTreeSet<String> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .rev()
            .find(|v| v["event"] == "members")
            .and_then(|v| v["alive"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter_map(|n| n.as_str().map(String::from))
            .collect()
    }

    /// Whether the peer reported `node` dead or gone.
    fn saw_leave(&self, node: &str) -> bool {
        self.find(|v| v["event"] == "leave" && v["node"] == node)
            .is_some()
    }

    /// Address conflicts memberlist reported (there should be none).
    fn conflicts(&self) -> Vec<Value> {
        let lines = self.lines.lock().unwrap_or_else(|p| p.into_inner());
        lines
            .iter()
            .filter(|v| v["event"] == "conflict")
            .cloned()
            .collect()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for GoPeer {
    fn drop(&mut self) {
        if let Some(mut s) = self.stdin.take() {
            let _ = writeln!(s, "leave");
        }
        self.kill();
    }
}

async fn cairn_node(env: &TokioEnv, name: &str) -> (Gossip, Task) {
    cairn_node_with(env, name, None).await
}

/// A cairn node encrypting its gossip with `key`, if given.
async fn cairn_node_with(env: &TokioEnv, name: &str, key: Option<&[u8]>) -> (Gossip, Task) {
    for _ in 0..20 {
        let mut opts =
            GossipOptions::new(name, "127.0.0.1:0".parse().unwrap(), common::fast_config());
        opts.encryption = key.map(|k| {
            Encryption::new(Keyring::new(vec![k.to_vec()], [7; 32]).expect("a valid key"))
        });
        if let Ok(started) = Gossip::start(env.clone(), opts).await {
            return started;
        }
    }
    panic!("cannot bind a gossip port for {name}");
}

async fn statuses(g: &Gossip) -> BTreeMap<String, MemberStatus> {
    g.members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.status))
        .collect()
}

async fn all_alive(g: &Gossip, want: &BTreeSet<String>) -> bool {
    let s = statuses(g).await;
    want.iter().all(|n| s.get(n) == Some(&MemberStatus::Alive))
}

async fn eventually<F, Fut>(env: &TokioEnv, secs: u64, what: &str, mut ok: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = env.now() + Duration::from_secs(secs);
    while !ok().await {
        assert!(
            env.now() < until,
            "timed out after {secs}s waiting for: {what}"
        );
        env.sleep(Duration::from_millis(100)).await;
    }
}

fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_peer_joins_a_cairn_cluster_and_crashes() {
    let env = TokioEnv::new();
    let mut cairn = Vec::new();
    for i in 0..3 {
        cairn.push(cairn_node(&env, &format!("cairn-{i}")).await);
    }
    let seed = cairn[0].0.addr();
    for (g, _) in &cairn[1..] {
        g.join(vec![seed]).await.unwrap();
    }
    let mut go = GoPeer::start("go-0", Some(seed));
    let everyone = names(&["cairn-0", "cairn-1", "cairn-2", "go-0"]);
    eventually(
        &env,
        15,
        "cairn and Go agree on four alive members",
        || async {
            let mut ok = go.alive() == everyone;
            for (g, _) in &cairn {
                ok &= all_alive(g, &everyone).await;
            }
            ok
        },
    )
    .await;
    assert!(
        go.find(|v| v["event"] == "joined").is_some(),
        "Go's join succeeded"
    );

    // Kill the Go peer: every cairn node declares it failed.
    go.kill();
    eventually(&env, 15, "cairn nodes mark go-0 failed", || async {
        let mut ok = true;
        for (g, _) in &cairn {
            ok &= statuses(g).await.get("go-0") == Some(&MemberStatus::Failed);
        }
        ok
    })
    .await;
    for (g, _) in &cairn {
        g.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cairn_node_joins_a_go_cluster_and_crashes() {
    let env = TokioEnv::new();
    let go_a = GoPeer::start("go-a", None);
    eventually(&env, 10, "go-a ready", || async { go_a.addr().is_some() }).await;
    let a = go_a.addr().expect("ready line has an address");
    let go_b = GoPeer::start("go-b", Some(a));
    let (cairn, cairn_task) = cairn_node(&env, "cairn-x").await;
    assert_eq!(cairn.join(vec![a]).await.unwrap(), 1);
    let everyone = names(&["go-a", "go-b", "cairn-x"]);
    eventually(&env, 15, "three alive members on both sides", || async {
        go_a.alive() == everyone && go_b.alive() == everyone && all_alive(&cairn, &everyone).await
    })
    .await;

    for g in [&go_a, &go_b] {
        assert_eq!(
            g.conflicts(),
            Vec::<Value>::new(),
            "memberlist saw address conflicts"
        );
    }

    // Crash the cairn node: both Go nodes detect it.
    cairn_task.abort();
    drop(cairn_task);
    eventually(&env, 15, "Go nodes declare cairn-x dead", || async {
        go_a.saw_leave("cairn-x") && go_b.saw_leave("cairn-x") && !go_a.alive().contains("cairn-x")
    })
    .await;
}

/// memberlist's gossip encryption both ways: a Go peer with the cluster's
/// key joins cairn nodes (UDP probes and gossip, and the TCP push/pull of
/// the join, all sealed); one with another key, and one with none, cannot,
/// and cairn counts what it dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encrypted_gossip_crosses_the_language_boundary() {
    let env = TokioEnv::new();
    let key: Vec<u8> = (1..=32).collect();
    let b64 = encode_key(&key);
    let (a, _ta) = cairn_node_with(&env, "cairn-a", Some(&key)).await;
    let (b, _tb) = cairn_node_with(&env, "cairn-b", Some(&key)).await;
    b.join(vec![a.addr()]).await.unwrap();
    let go = GoPeer::start_with("go-enc", Some(a.addr()), Some(&b64));
    let everyone = names(&["cairn-a", "cairn-b", "go-enc"]);
    eventually(&env, 15, "three alive members, all encrypted", || async {
        go.alive() == everyone && all_alive(&a, &everyone).await && all_alive(&b, &everyone).await
    })
    .await;
    assert!(go.find(|v| v["event"] == "joined").is_some());
    assert_eq!(a.stats().await.unwrap().undecryptable, 0);

    // Another key, or none: the join fails and nobody lets it in.
    let wrong = encode_key(&[9u8; 16]);
    let outsider = GoPeer::start_with("go-wrong", Some(a.addr()), Some(&wrong));
    let plain = GoPeer::start_with("go-plain", Some(a.addr()), None);
    eventually(&env, 10, "both outsiders report a failed join", || async {
        outsider.find(|v| v["event"] == "join-error").is_some()
            && plain.find(|v| v["event"] == "join-error").is_some()
    })
    .await;
    env.sleep(Duration::from_secs(1)).await;
    assert_eq!(
        statuses(&a).await.keys().cloned().collect::<BTreeSet<_>>(),
        everyone
    );
    assert!(a.stats().await.unwrap().undecryptable >= 2);
    // And a cairn node without the key cannot join the Go peer either.
    let (c, _tc) = cairn_node(&env, "cairn-plain").await;
    assert!(c.join(vec![go.addr().unwrap()]).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_leaves_cross_the_language_boundary() {
    let env = TokioEnv::new();
    let (stays, _t1) = cairn_node(&env, "cairn-stays").await;
    let (goes, _t2) = cairn_node(&env, "cairn-goes").await;
    goes.join(vec![stays.addr()]).await.unwrap();
    let mut go = GoPeer::start("go-l", Some(stays.addr()));
    let all3 = names(&["cairn-stays", "cairn-goes", "go-l"]);
    eventually(&env, 15, "three alive members", || async {
        go.alive() == all3 && all_alive(&stays, &all3).await && all_alive(&goes, &all3).await
    })
    .await;

    // A cairn node leaves. memberlist 0.2.2 cannot tell its callbacks a
    // leave from a death (`NotifyLeave` gets a `Node` whose `State` is never
    // set), so check the speed instead: a failure takes at least a probe
    // interval plus the minimum suspicion (0.2 s + 0.6 s here); the leave
    // notice arrives within a few gossip rounds.
    let left_at = env.now();
    goes.leave(&env, Duration::from_secs(5)).await.unwrap();
    goes.shutdown().await;
    eventually(&env, 10, "Go sees cairn-goes leave", || async {
        go.saw_leave("cairn-goes")
    })
    .await;
    let took = env.now() - left_at;
    assert!(
        took < Duration::from_millis(800),
        "Go took {took:?}: a failure, not a leave"
    );

    // The Go node leaves: cairn shows it as left, not failed.
    if let Some(mut s) = go.stdin.take() {
        writeln!(s, "leave").unwrap();
    }
    eventually(&env, 10, "cairn sees go-l left", || async {
        statuses(&stays).await.get("go-l") == Some(&MemberStatus::Left)
    })
    .await;
    go.kill();
}

fn go_lzw(mode: &str, input: &[u8]) -> Vec<u8> {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let bin = go_build(&BUILT, "lzw");
    let mut child = Command::new(bin)
        .arg(mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the Go LZW helper");
    let mut stdin = child.stdin.take().expect("piped stdin");
    let input = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().expect("Go LZW helper output");
    writer
        .join()
        .expect("writer thread")
        .expect("write to the Go helper");
    assert!(out.status.success(), "Go LZW helper failed ({mode})");
    out.stdout
}

#[test]
fn long_lzw_streams_cross_the_language_boundary() {
    use cairn::gossip::wire::{self, StreamMessage};
    // 300 KB of mildly repetitive data: far past 4096 LZW codes, so both
    // sides must agree on when the code table fills and is reset.
    let mut x: u32 = 1;
    let big: Vec<u8> = (0..300_000)
        .map(|i| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            if i % 7 == 0 {
                (x >> 24) as u8
            } else {
                b"memberlist"[i % 10]
            }
        })
        .collect();
    let payload = StreamMessage::User(big.clone()).to_bytes();

    // cairn compresses, Go decompresses.
    assert_eq!(go_lzw("unwrap", &wire::compress(&payload)), payload);

    // Go compresses, cairn decompresses; and both compress alike, code for
    // code, through every width change and table reset: here, in a long
    // run of one byte, and in noise.
    let from_go = go_lzw("wrap", &payload);
    assert_eq!(wire::compress(&payload), from_go);
    let run = vec![1u8; 100_000];
    let noise: Vec<u8> = (0..200_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    for input in [&[][..], &[1, 1], &run, &noise] {
        assert_eq!(
            wire::compress(input),
            go_lzw("wrap", input),
            "{} bytes",
            input.len()
        );
    }
    let (msg, used) = wire::decode_stream(&from_go)
        .unwrap()
        .expect("a whole message");
    assert_eq!(used, from_go.len());
    assert_eq!(msg, StreamMessage::User(big));
}

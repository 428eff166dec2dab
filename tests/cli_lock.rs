//! `cairn lock` against a real agent: holders of a lock run one after
//! another, a semaphore of 2 lets two run but not three, and a lost lock
//! (key deleted, session destroyed) or SIGTERM kills the child.

#[path = "common/process.rs"]
mod process;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use process::{http, http_get, wait_for, Agent, CAIRN};

/// A `cairn lock` process, its output going to files (a child killed
/// half-way must not leave a pipe open that a reader waits on).
struct Locker {
    child: Option<Child>,
    out: PathBuf,
    err: PathBuf,
}

impl Locker {
    fn start(a: &Agent, dir: &Path, tag: &str, args: &[&str]) -> Locker {
        let out = dir.join(format!("{tag}.out"));
        let err = dir.join(format!("{tag}.err"));
        let child = Command::new(CAIRN)
            .arg("lock")
            .args(args)
            .env("CAIRN_HTTP_ADDR", format!("http://{}", a.http))
            .env("SHELL", "/bin/sh")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .expect("start cairn lock");
        Locker {
            child: Some(child),
            out,
            err,
        }
    }

    /// Waits for the exit: the code, stdout and stderr.
    fn wait(&mut self, within: Duration) -> (i32, String, String) {
        let until = Instant::now() + within;
        let child = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                self.child = None;
                let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
                return (s.code().unwrap_or(-1), read(&self.out), read(&self.err));
            }
            assert!(
                Instant::now() < until,
                "cairn lock did not exit within {within:?}; stdout: {}",
                std::fs::read_to_string(&self.out).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }
}

impl Drop for Locker {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

const EXIT: Duration = Duration::from_secs(60);

fn lines(p: &Path) -> Vec<String> {
    std::fs::read_to_string(p)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn sessions(a: &Agent) -> Vec<serde_json::Value> {
    serde_json::from_str(&http_get(&a.http, "/v1/session/list")).unwrap()
}

/// Waits for `line` in the file at `p`.
fn wait_line(p: &Path, line: &str) {
    wait_for(Duration::from_secs(30), line, || {
        lines(p).iter().any(|l| l == line).then_some(())
    });
}

/// A child that logs its start, waits for the file `go`, logs the lock
/// variable and its end.
fn gated(log: &Path, go: &Path, id: &str) -> String {
    format!(
        "echo start-{id} >> {log}; i=0; while [ ! -e {go} ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i+1)); done; \
         echo held-$CONSUL_LOCK_HELD-{id} >> {log}; echo end-{id} >> {log}",
        log = log.display(),
        go = go.display()
    )
}

#[test]
fn lock_holders_run_one_after_another() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let mut first = Locker::start(
        &a,
        dir.path(),
        "a",
        &["-verbose", "locks/app", &gated(&log, &go, "a")],
    );
    wait_line(&log, "start-a");
    // The lock is held: a try with -timeout gives up, leaving no session.
    let mut late = Locker::start(
        &a,
        dir.path(),
        "c",
        &["-timeout=1s", "locks/app", "echo never"],
    );
    let (code, _, err) = late.wait(EXIT);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("timeout during lock acquisition"), "{err}");
    assert_eq!(sessions(&a).len(), 1);
    let raw = http_get(&a.http, "/v1/kv/locks/app/.lock");
    let entry: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(
        entry[0]["Flags"], 0x2ddc_cbc0_58a5_0c18_u64,
        "Consul's lock flags"
    );
    assert_eq!(entry[0]["Session"], sessions(&a)[0]["ID"]);
    // A second holder waits...
    let mut second = Locker::start(
        &a,
        dir.path(),
        "b",
        &["-verbose", "locks/app", &gated(&log, &go, "b")],
    );
    wait_for(Duration::from_secs(30), "the second session", || {
        (sessions(&a).len() == 2).then_some(())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        lines(&log),
        ["start-a"],
        "the second child ran while the first held the lock"
    );
    // ... and runs once the first is done.
    std::fs::write(&go, "").unwrap();
    let (code, out, err) = first.wait(EXIT);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("Setting up lock at path: locks/app/.lock"),
        "{out}"
    );
    assert!(out.contains("Child terminated, releasing lock"), "{out}");
    let (code, out, err) = second.wait(EXIT);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Cleanup succeeded"), "{out}");
    assert_eq!(
        lines(&log),
        [
            "start-a",
            "held-true-a",
            "end-a",
            "start-b",
            "held-true-b",
            "end-b"
        ]
    );
    // Nothing is left: no lock key, no session.
    let (status, _) = http(&a.http, "GET", "/v1/kv/locks/app/.lock", b"").unwrap();
    assert_eq!(status, 404);
    assert!(sessions(&a).is_empty());
    // The child's failure is the exit code only with -child-exit-code.
    let mut failing = Locker::start(
        &a,
        dir.path(),
        "d",
        &["-child-exit-code", "locks/app", "exit 3"],
    );
    assert_eq!(failing.wait(EXIT).0, 2);
    let mut failing = Locker::start(&a, dir.path(), "e", &["locks/app", "exit 3"]);
    assert_eq!(failing.wait(EXIT).0, 0);
    // -shell=false runs the program itself, its arguments untouched (a
    // flag of `lock`'s among them included).
    let marker = dir.path().join("direct");
    let script = format!("echo \"$0 $1\" > {}", marker.display());
    let mut direct = Locker::start(
        &a,
        dir.path(),
        "f",
        &[
            "-shell=false",
            "locks/app",
            "sh",
            "-c",
            &script,
            "-verbose",
            "-n=3",
        ],
    );
    let (code, out, err) = direct.wait(EXIT);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "not verbose: {out}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "-verbose -n=3\n");
}

#[test]
fn a_semaphore_of_two_runs_two_children_but_never_three() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (log, go) = (dir.path().join("log"), dir.path().join("go"));
    let mut holders: Vec<Locker> = ["a", "b", "c"]
        .iter()
        .map(|id| {
            Locker::start(
                &a,
                dir.path(),
                id,
                &["-n", "2", "locks/sem", &gated(&log, &go, id)],
            )
        })
        .collect();
    // Two get a slot; the third waits, its contender key in place.
    wait_for(
        Duration::from_secs(30),
        "two children and three contenders",
        || {
            let starts = lines(&log)
                .iter()
                .filter(|l| l.starts_with("start"))
                .count();
            let keys = http(&a.http, "GET", "/v1/kv/locks/sem/?keys", b"").ok()?.1;
            let keys: Vec<String> = serde_json::from_str(&keys).ok()?;
            (starts == 2 && keys.len() == 4).then_some(())
        },
    );
    std::thread::sleep(Duration::from_millis(500));
    let raw = http_get(&a.http, "/v1/kv/locks/sem/.lock?raw");
    let record: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(record["Limit"], 2, "{raw}");
    assert_eq!(record["Holders"].as_object().unwrap().len(), 2, "{raw}");
    std::fs::write(&go, "").unwrap();
    for h in &mut holders {
        let (code, _, err) = h.wait(EXIT);
        assert_eq!(code, 0, "{err}");
    }
    let log = lines(&log);
    let (mut running, mut most) = (0, 0);
    for l in &log {
        if l.starts_with("start") {
            running += 1;
        } else if l.starts_with("end") {
            running -= 1;
        }
        most = most.max(running);
    }
    assert_eq!(most, 2, "{log:?}");
    assert_eq!(
        log.iter().filter(|l| l.starts_with("end")).count(),
        3,
        "{log:?}"
    );
    let (status, _) = http(&a.http, "GET", "/v1/kv/locks/sem/?recurse", b"").unwrap();
    assert_eq!(status, 404, "the semaphore left keys behind");
    assert!(sessions(&a).is_empty());
}

/// A child that starts a background process (its pid in `pids`), logs
/// its start, and would log its end a minute later.
fn long_child(dir: &Path, id: &str) -> (String, PathBuf, PathBuf) {
    let (log, pid) = (dir.join(format!("{id}.log")), dir.join(format!("{id}.pid")));
    let script = format!(
        "sleep 60 & echo $! > {pid}; echo start >> {log}; wait; echo end >> {log}",
        pid = pid.display(),
        log = log.display()
    );
    (script, log, pid)
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
fn gone(pid: &Path) -> bool {
    let pid = std::fs::read_to_string(pid).unwrap();
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

#[test]
fn a_lost_lock_or_a_signal_kills_the_child() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let del = |k: &str| {
        let (status, body) = http(&a.http, "DELETE", &format!("/v1/kv/{k}"), b"").unwrap();
        assert_eq!(status, 200, "{body}");
    };
    let only_session = || {
        wait_for(Duration::from_secs(30), "one session", || {
            let s = sessions(&a);
            (s.len() == 1).then(|| s[0]["ID"].as_str().unwrap().to_string())
        })
    };
    // Each way of losing the lock: the key deleted, the session destroyed
    // (for a lock, and for a semaphore).
    type Lose<'a> = Box<dyn Fn() + 'a>;
    let cases: Vec<(&str, Vec<&str>, Lose)> = vec![
        ("key", vec![], Box::new(|| del("locks/k/key/.lock"))),
        (
            "session",
            vec![],
            Box::new(|| {
                let id = only_session();
                let path = format!("/v1/session/destroy/{id}");
                assert_eq!(http(&a.http, "PUT", &path, b"").unwrap().0, 200);
            }),
        ),
        (
            "sem",
            vec!["-n", "2"],
            Box::new(|| del("locks/k/sem/.lock")),
        ),
    ];
    for (id, flags, lose) in cases {
        let (script, log, pid) = long_child(dir.path(), id);
        let prefix = format!("locks/k/{id}");
        let mut args = vec!["-verbose"];
        args.extend(flags);
        args.extend([prefix.as_str(), script.as_str()]);
        let mut l = Locker::start(&a, dir.path(), id, &args);
        wait_line(&log, "start");
        lose();
        let (code, out, err) = l.wait(EXIT);
        assert_eq!(code, 0, "{id}: {err}");
        assert!(out.contains("Lock lost, killing child"), "{id}: {out}");
        assert_eq!(lines(&log), ["start"], "{id}");
        assert!(gone(&pid), "{id}: the child's own child survived");
        wait_for(Duration::from_secs(30), "no sessions", || {
            sessions(&a).is_empty().then_some(())
        });
    }
    // SIGTERM: the child is killed, the lock given back and cleaned up.
    let (script, log, pid) = long_child(dir.path(), "term");
    let mut l = Locker::start(
        &a,
        dir.path(),
        "term",
        &["-verbose", "locks/k/term", &script],
    );
    wait_line(&log, "start");
    let sent = Command::new("kill")
        .args(["-TERM", &l.pid().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let (code, out, err) = l.wait(EXIT);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Shutdown triggered, killing child"), "{out}");
    assert!(out.contains("Cleanup succeeded"), "{out}");
    assert_eq!(lines(&log), ["start"]);
    assert!(gone(&pid));
    let (status, _) = http(&a.http, "GET", "/v1/kv/locks/k/term/.lock", b"").unwrap();
    assert_eq!(status, 404);
    assert!(sessions(&a).is_empty());
}

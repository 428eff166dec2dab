//! `/v1/agent/monitor`, `cairn monitor` and `/v1/agent/host` on a real
//! agent process: the stream carries lines logged after it opened, at the
//! level it asked for (debug lines included, though the agent's own output
//! is at info), as hclog's plain lines or JSON; an unknown level is
//! refused as Consul refuses it; the host report has real numbers; and
//! both endpoints are held to their ACLs.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[path = "common/process.rs"]
mod process;
use process::{http, http_with, Agent, CAIRN, FAST_GOSSIP};

/// A streamed answer being read chunk by chunk.
struct Stream {
    status: u16,
    head: String,
    reader: BufReader<TcpStream>,
}

impl Stream {
    /// Opens `GET path` (with `headers`, `"Name: value\r\n"` each) and reads
    /// the response head.
    fn open(addr: &str, path: &str, headers: &str) -> Stream {
        let mut s = TcpStream::connect(addr).expect("connect to the agent");
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}\r\n").unwrap();
        let mut reader = BufReader::new(s);
        let mut head = String::new();
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) => break,
                Ok(_) if line == "\r\n" => break,
                Ok(_) => head.push_str(&line),
                Err(_) => assert!(Instant::now() < until, "no response head for {path}"),
            }
        }
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        Stream {
            status,
            head: head.to_ascii_lowercase(),
            reader,
        }
    }

    /// The next chunk of a chunked body, if one comes within the read
    /// timeout.
    fn chunk(&mut self) -> Option<String> {
        let mut size = String::new();
        self.reader.read_line(&mut size).ok()?;
        let size = usize::from_str_radix(size.trim(), 16).ok()?;
        let mut data = vec![0u8; size + 2];
        self.reader.read_exact(&mut data).ok()?;
        data.truncate(size);
        Some(String::from_utf8_lossy(&data).into_owned())
    }

    /// Lines until one contains `what`, for at most `within`, calling
    /// `poke` before each wait (to make the agent log). All the lines read,
    /// the matching one last.
    fn until(&mut self, what: &str, within: Duration, mut poke: impl FnMut()) -> Vec<String> {
        let end = Instant::now() + within;
        let mut seen = Vec::new();
        loop {
            assert!(
                Instant::now() < end,
                "no line with {what:?} came; got:\n{}",
                seen.join("")
            );
            poke();
            while let Some(chunk) = self.chunk() {
                for line in chunk.split_inclusive('\n') {
                    seen.push(line.to_string());
                    if line.contains(what) {
                        return seen;
                    }
                }
            }
        }
    }
}

fn reload(a: &Agent) {
    let (status, body) = http(&a.http, "PUT", "/v1/agent/reload", b"").unwrap();
    assert_eq!(status, 200, "{body}");
}

/// Makes the HTTP server fail a connection (logged at debug).
fn garbage(a: &Agent) {
    if let Ok(mut s) = TcpStream::connect(&a.http) {
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let _ = s.write_all(b"NOT HTTP AT ALL\r\n\r\n");
        let _ = s.read_to_end(&mut Vec::new());
    }
}

/// hclog's plain line: `2006-01-02T15:04:05.000Z [INFO]  module: message`.
fn is_hclog_line(line: &str, level: &str, rest: &str) -> bool {
    let Some((stamp, tail)) = line.split_once(' ') else {
        return false;
    };
    stamp.len() == 24
        && stamp.ends_with('Z')
        && stamp.as_bytes()[10] == b'T'
        && tail == format!("{level} {rest}\n")
}

#[test]
fn monitor_streams_new_lines_at_the_level_asked() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "mon1");
    let mut info = Stream::open(&a.http, "/v1/agent/monitor", "");
    assert_eq!(info.status, 200, "{}", info.head);
    assert!(
        info.head.contains("transfer-encoding: chunked"),
        "{}",
        info.head
    );
    let mut debug = Stream::open(&a.http, "/v1/agent/monitor?loglevel=DEBUG&logjson", "");
    assert_eq!(debug.status, 200, "{}", debug.head);

    // A line logged at info after the monitor opened, in hclog's format.
    let seen = info.until("configuration reloaded", Duration::from_secs(20), || {
        reload(&a)
    });
    let line = seen.last().unwrap();
    assert!(
        is_hclog_line(
            line,
            "[INFO] ",
            "agent.reload: configuration reloaded: services=0 checks=0"
        ),
        "{line:?}"
    );

    // A debug line reaches the debug monitor, as JSON, though the agent's
    // own output is at info.
    let seen = debug.until("HTTP connection failed", Duration::from_secs(20), || {
        garbage(&a)
    });
    for line in &seen {
        let v: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
        assert!(
            v["@timestamp"].as_str().is_some_and(|t| t.ends_with('Z')),
            "{line}"
        );
    }
    let v: serde_json::Value = serde_json::from_str(seen.last().unwrap()).unwrap();
    assert_eq!(v["@level"], "debug", "{v}");
    assert_eq!(v["@module"], "api", "{v}");
    assert!(!a.log_text().contains("HTTP connection failed"));

    // The info monitor never got that debug line: lines come in order, so
    // it would have come before this reload's.
    let seen = info.until("configuration reloaded", Duration::from_secs(20), || {
        reload(&a)
    });
    assert!(
        !seen.iter().any(|l| l.contains("HTTP connection failed")),
        "{seen:?}"
    );
}

#[test]
fn unknown_levels_are_refused_and_the_host_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "mon2");
    let (status, body) = http(&a.http, "GET", "/v1/agent/monitor?loglevel=nope", b"").unwrap();
    assert_eq!((status, body.as_str()), (400, "Unknown log level: nope"));

    let (status, body) = http(&a.http, "GET", "/v1/agent/host", b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["Memory"]["total"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["Memory"]["available"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["Disk"]["total"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(
        !v["Host"]["hostname"].as_str().unwrap_or("").is_empty(),
        "{v}"
    );
    assert!(v["Host"]["bootTime"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(!v["CPU"].as_array().unwrap().is_empty(), "{v}");
    assert!(v["CollectionTime"].as_u64().unwrap_or(0) > 0, "{v}");
    assert!(v["Errors"].is_null(), "{v}");
}

#[test]
fn cairn_monitor_prints_the_stream() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "mon3");
    let out = Command::new(CAIRN)
        .args([
            "monitor",
            &format!("-http-addr={}", a.http),
            "-log-level=bogus",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Unknown log level: bogus"), "{err}");

    let mut child = Command::new(CAIRN)
        .args([
            "monitor",
            &format!("-http-addr={}", a.http),
            "-log-level=debug",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let end = Instant::now() + Duration::from_secs(20);
    let found = loop {
        if Instant::now() > end {
            break None;
        }
        reload(&a);
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            if line.contains("[INFO]  agent.reload: configuration reloaded") {
                break Some(line);
            }
        }
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(found.is_some(), "cairn monitor printed no reload line");
}

#[test]
fn monitor_and_host_need_their_acls() {
    const ROOT: &str = "3f1b1d7e-0000-4000-8000-00000000root";
    let config = format!(
        "{FAST_GOSSIP}\nacl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
         initial_management = \"{ROOT}\"\n    agent = \"{ROOT}\"\n  }}\n}}\n"
    );
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server_with(dir.path(), "mon4", &config);
    // As Consul: the token is checked before the level.
    let (status, _, body) =
        http_with(&a.http, "GET", "/v1/agent/monitor?loglevel=nope", "", b"").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("'agent:read'"), "{body}");
    let (status, _, body) = http_with(&a.http, "GET", "/v1/agent/host", "", b"").unwrap();
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("'operator:read'"), "{body}");

    let root = format!("X-Consul-Token: {ROOT}\r\n");
    let (status, _, body) = http_with(&a.http, "GET", "/v1/agent/host", &root, b"").unwrap();
    assert_eq!(status, 200, "{body}");
    let s = Stream::open(&a.http, "/v1/agent/monitor?loglevel=warn", &root);
    assert_eq!(s.status, 200, "{}", s.head);
}

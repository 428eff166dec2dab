//! `cairn` agents as processes on 127.0.0.1, for the end-to-end tests.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The binary under test.
pub const CAIRN: &str = env!("CARGO_BIN_EXE_cairn");

/// A port free for both UDP and TCP right now (gossip and DNS need both),
/// and not handed out before by this test binary: the agents bind their
/// ports later, so one port given twice would make two agents collide.
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    loop {
        let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
        let port = udp.local_addr().expect("addr").port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return port;
        }
    }
}

/// Fast gossip, so failures show in a second or two.
pub const FAST_GOSSIP: &str =
    "gossip_lan {\n  probe_interval = \"200ms\"\n  probe_timeout = \"100ms\"\n  gossip_interval = \"50ms\"\n}\n";

/// An agent process; it can be stopped and started again with the same
/// ports, name and data dir.
pub struct Agent {
    /// Node name.
    pub name: String,
    /// The running process, if any.
    pub child: Option<Child>,
    /// `127.0.0.1:PORT` of its HTTP API.
    pub http: String,
    /// Gossip port.
    pub serf: u16,
    /// Server RPC port.
    pub rpc: u16,
    /// WAN gossip port (servers).
    pub wan: u16,
    /// DNS address (UDP and TCP).
    pub dns: String,
    dir: PathBuf,
    args: Vec<String>,
    /// Where its log goes (appended across restarts).
    pub log: PathBuf,
}

impl Agent {
    /// Starts agent `name` with its data and config in `dir`; `config` is
    /// the text of an HCL config file, `extra` more flags.
    pub fn start(dir: &Path, name: &str, config: &str, extra: &[String]) -> Agent {
        let (serf, http, rpc, dns) = (free_port(), free_port(), free_port(), free_port());
        let wan = free_port();
        let file = dir.join(format!("{name}.hcl"));
        std::fs::write(&file, config).expect("write config");
        let mut args = vec![
            "agent".to_string(),
            format!("-node={name}"),
            "-bind=127.0.0.1".into(),
            format!("-serf-lan-port={serf}"),
            format!("-http-port={http}"),
            format!("-server-port={rpc}"),
            format!("-dns-port={dns}"),
            format!("-serf-wan-port={wan}"),
            format!("-data-dir={}", dir.join(name).display()),
            format!("-config-file={}", file.display()),
        ];
        args.extend_from_slice(extra);
        let mut a = Agent {
            name: name.into(),
            child: None,
            http: format!("127.0.0.1:{http}"),
            serf,
            rpc,
            wan,
            dns: format!("127.0.0.1:{dns}"),
            dir: dir.to_owned(),
            args,
            log: dir.join(format!("{name}.log")),
        };
        a.restart();
        a
    }

    /// A server of its own (`-bootstrap-expect=1`), returned once its HTTP
    /// API answers and it leads.
    pub fn solo_server(dir: &Path, name: &str) -> Agent {
        Agent::solo_server_with(dir, name, FAST_GOSSIP)
    }

    /// [`solo_server`](Self::solo_server) with config file text `config`.
    pub fn solo_server_with(dir: &Path, name: &str, config: &str) -> Agent {
        let a = Agent::start(
            dir,
            name,
            config,
            &["-server".into(), "-bootstrap-expect=1".into()],
        );
        wait_for(Duration::from_secs(20), "a leader", || {
            let (s, body) = http(&a.http, "GET", "/v1/status/leader", b"").ok()?;
            (s == 200 && body.len() > 2).then_some(())
        });
        a
    }

    /// A client agent `name` joining `server` (retrying every 200 ms).
    pub fn client_of(dir: &Path, name: &str, server: &Agent) -> Agent {
        let join = [
            format!("-retry-join=127.0.0.1:{}", server.serf),
            "-retry-interval=200ms".into(),
        ];
        Agent::start(dir, name, FAST_GOSSIP, &join)
    }

    /// Starts the process again (after [`kill`](Self::kill)).
    pub fn restart(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the agent's log");
        let child = Command::new(CAIRN)
            .args(&self.args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start cairn agent");
        self.child = Some(child);
    }

    /// `kill -9`: no leave, no flush, nothing.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Sends a signal (`-TERM`, `-KILL`, ...).
    pub fn signal(&self, sig: &str) {
        let pid = self.child.as_ref().expect("a running agent").id();
        let ok = Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(ok.success());
    }

    /// Waits for the process to exit; its exit code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let until = Instant::now() + within;
        let child = self.child.as_mut().expect("a running agent");
        while Instant::now() < until {
            if let Some(s) = child.try_wait().expect("wait") {
                self.child = None;
                return s.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("agent did not exit within {within:?}");
    }

    /// The agent's log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cairn` with `args`.
pub fn cairn(args: &[&str]) -> Output {
    Command::new(CAIRN).args(args).output().expect("run cairn")
}

/// Runs `cairn ARGS` against `agent` (through `CAIRN_HTTP_ADDR`): whether
/// it succeeded, its stdout and its stderr.
pub fn cli(agent: &Agent, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(CAIRN)
        .args(args)
        .env("CAIRN_HTTP_ADDR", format!("http://{}", agent.http))
        .output()
        .expect("run cairn");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A one-shot HTTP/1.1 request with std: the status code and body, or the
/// connection error.
pub fn http(addr: &str, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, String)> {
    http_full(addr, method, path, body).map(|(status, _, body)| (status, body))
}

/// A GET's status and response head (status line and headers).
pub fn http_head(addr: &str, path: &str) -> std::io::Result<(u16, String)> {
    http_full(addr, "GET", path, b"").map(|(status, head, _)| (status, head))
}

/// A one-shot request: status, response head and body.
pub fn http_full(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    http_with(addr, method, path, "", body)
}

/// [`http_full`] with more header lines (`"Name: value\r\n"` each).
pub fn http_with(
    addr: &str,
    method: &str,
    path: &str,
    headers: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n{headers}Content-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut resp = String::new();
    s.read_to_string(&mut resp)?;
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

/// A GET that must answer 200; its body.
pub fn http_get(addr: &str, path: &str) -> String {
    let (status, body) = http(addr, "GET", path, b"").expect("HTTP request");
    assert_eq!(status, 200, "GET {path}: {body}");
    body
}

/// Polls `f` every 100 ms until it gives `Some`, for at most `within`.
pub fn wait_for<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + within;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

//! Do thousands of blocking queries parked on one agent slow everyone
//! else down? Measures plain KV reads (p50/p99, reads/s) with no watchers,
//! then again with WATCHERS blocking queries parked on one key, then how
//! long one write takes to wake every watcher.
//!
//! ```text
//! cairn agent -dev &
//! cargo run --release --example blocking_load -- [--addr 127.0.0.1:8500] [--watchers 2000] [--seconds 5]
//! ```

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// One request on a fresh connection; status, headers and body.
async fn request(
    addr: &str,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, String, String)> {
    let mut s = TcpStream::connect(addr).await?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await?;
    s.write_all(body).await?;
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).await?;
    let resp = String::from_utf8_lossy(&resp).into_owned();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, head.to_string(), body.to_string()))
}

fn index_of(head: &str) -> u64 {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-consul-index")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

/// Reads `/v1/kv/probe` from 8 clients for `secs`; (reads/s, p50 ms, p99 ms).
async fn probe(addr: &str, secs: u64) -> (f64, f64, f64) {
    let until = Instant::now() + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let addr = addr.to_owned();
            tokio::spawn(async move {
                let mut lat = Vec::new();
                while Instant::now() < until {
                    let t = Instant::now();
                    if let Ok((200, _, _)) = request(&addr, "GET", "/v1/kv/probe", b"").await {
                        lat.push(t.elapsed().as_secs_f64() * 1000.0);
                    }
                }
                lat
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap_or_default());
    }
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (all.len() as f64 / secs as f64, pct(0.5), pct(0.99))
}

#[tokio::main]
async fn main() {
    let mut addr = "127.0.0.1:8500".to_string();
    let (mut watchers, mut secs) = (2000usize, 5u64);
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let v = args.next().unwrap_or_default();
        match a.as_str() {
            "--addr" => addr = v,
            "--watchers" => watchers = v.parse().unwrap_or(watchers),
            "--seconds" => secs = v.parse().unwrap_or(secs),
            other => {
                eprintln!("unknown flag {other}");
                std::process::exit(2);
            }
        }
    }
    for key in ["probe", "watched"] {
        if let Err(e) = request(&addr, "PUT", &format!("/v1/kv/{key}"), b"x").await {
            eprintln!("cannot reach {addr}: {e}");
            std::process::exit(1);
        }
    }
    let (rps0, p50_0, p99_0) = probe(&addr, secs).await;
    println!("no watchers:       {rps0:8.0} reads/s  p50 {p50_0:6.2} ms  p99 {p99_0:6.2} ms");

    let (_, head, _) = request(&addr, "GET", "/v1/kv/watched", b"")
        .await
        .unwrap_or_default();
    let index = index_of(&head);
    let path = format!("/v1/kv/watched?index={index}&wait=5m");
    let parked: Vec<_> = (0..watchers)
        .map(|_| {
            let (addr, path) = (addr.clone(), path.clone());
            tokio::spawn(async move {
                let r = request(&addr, "GET", &path, b"").await;
                (Instant::now(), matches!(r, Ok((200, _, _))))
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (rps1, p50_1, p99_1) = probe(&addr, secs).await;
    println!("{watchers} watchers: {rps1:8.0} reads/s  p50 {p50_1:6.2} ms  p99 {p99_1:6.2} ms");

    let wrote = Instant::now();
    let _ = request(&addr, "PUT", "/v1/kv/watched", b"y").await;
    let (mut woke, mut last) = (0, Duration::ZERO);
    for p in parked {
        if let Ok((at, true)) = p.await {
            woke += 1;
            last = last.max(at.saturating_duration_since(wrote));
        }
    }
    println!(
        "one write woke {woke} of {watchers} watchers; the last after {:.1} ms",
        last.as_secs_f64() * 1000.0
    );
    println!("reads/s with watchers / without: {:.2}", rps1 / rps0);
}

//! A TCP load tool for the proxy benchmark (`benches/connect_vs_stunnel.sh`).
//!
//! `tcp_bench echo ADDR` serves: every connection gets its bytes back.
//! `tcp_bench measure ADDR [MIB] [PINGS]` pushes MIB MiB through ADDR and
//! back (writer and reader concurrently, 64 KiB writes), then times PINGS
//! 64-byte request/response round trips on one connection, and prints
//! `mib_per_s=... p50_us=... p99_us=...`. Everything stops by itself.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};

fn echo(addr: &str) -> std::io::Result<()> {
    let l = TcpListener::bind(addr)?;
    for s in l.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = s.set_nodelay(true);
            let mut r = match s.try_clone() {
                Ok(r) => r,
                Err(_) => return,
            };
            let mut w = s;
            let _ = std::io::copy(&mut r, &mut w);
        });
    }
    Ok(())
}

fn measure(addr: &str, mib: usize, pings: usize) -> std::io::Result<()> {
    // Throughput.
    let total = mib << 20;
    let s = TcpStream::connect(addr)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut w = s.try_clone()?;
    let start = Instant::now();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let chunk = vec![0xabu8; 64 * 1024];
        let mut sent = 0;
        while sent < total {
            let n = chunk.len().min(total - sent);
            w.write_all(&chunk[..n])?;
            sent += n;
        }
        Ok(())
    });
    let mut r = s;
    let mut buf = vec![0u8; 64 * 1024];
    let mut got = 0;
    while got < total {
        let n = r.read(&mut buf)?;
        if n == 0 {
            return Err(std::io::Error::other("closed before all bytes came back"));
        }
        got += n;
    }
    let secs = start.elapsed().as_secs_f64();
    writer
        .join()
        .map_err(|_| std::io::Error::other("writer panicked"))??;
    // Latency.
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let msg = [7u8; 64];
    let mut back = [0u8; 64];
    for _ in 0..50 {
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
    }
    let mut lat: Vec<f64> = Vec::with_capacity(pings);
    for _ in 0..pings {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut back)?;
        lat.push(t.elapsed().as_secs_f64() * 1e6);
    }
    lat.sort_by(f64::total_cmp);
    let q = |p: f64| lat[((lat.len() as f64 - 1.0) * p).round() as usize];
    println!(
        "mib_per_s={:.1} p50_us={:.1} p99_us={:.1}",
        mib as f64 / secs,
        q(0.5),
        q(0.99)
    );
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let res = match args.get(1).map(String::as_str) {
        Some("echo") if args.len() == 3 => echo(&args[2]),
        Some("measure") if args.len() >= 3 => {
            let mib = args.get(3).and_then(|v| v.parse().ok()).unwrap_or(256);
            let pings = args.get(4).and_then(|v| v.parse().ok()).unwrap_or(5000);
            measure(&args[2], mib, pings.max(1))
        }
        _ => {
            eprintln!("usage: tcp_bench echo ADDR | tcp_bench measure ADDR [MIB] [PINGS]");
            std::process::exit(2);
        }
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

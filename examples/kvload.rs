//! A closed-loop KV write load over HTTP/1.1, for cairn's KV API or etcd's
//! v3 JSON gateway, so both are measured by the same client: N clients,
//! each with one keep-alive connection (spread over the endpoints) and one
//! write outstanding, for a fixed time. Prints writes per second and the
//! latency percentiles. Used by `benches/kv_vs_etcd.sh`.
//!
//! ```text
//! kvload --api cairn|etcd --endpoints HOST:PORT[,HOST:PORT...] \
//!        [--clients 64] [--seconds 10] [--value-size 128] [--keys 1000]
//! ```

use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq)]
enum Api {
    Cairn,
    Etcd,
}

struct Opts {
    api: Api,
    endpoints: Vec<String>,
    clients: usize,
    seconds: u64,
    value_size: usize,
    keys: usize,
}

fn parse() -> Result<Opts, String> {
    let mut o = Opts {
        api: Api::Cairn,
        endpoints: Vec::new(),
        clients: 64,
        seconds: 10,
        value_size: 128,
        keys: 1000,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        let number = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag}: {v:?} is not a number"))
        };
        match flag.as_str() {
            "--api" => {
                o.api = match value()?.as_str() {
                    "cairn" => Api::Cairn,
                    "etcd" => Api::Etcd,
                    other => return Err(format!("--api is cairn or etcd, not {other:?}")),
                }
            }
            "--endpoints" => o.endpoints = value()?.split(',').map(str::to_owned).collect(),
            "--clients" => o.clients = number(value()?)? as usize,
            "--seconds" => o.seconds = number(value()?)?,
            "--value-size" => o.value_size = number(value()?)? as usize,
            "--keys" => o.keys = number(value()?)? as usize,
            other => return Err(format!("unknown flag {other}")),
        }
    }
    if o.endpoints.is_empty() || o.clients == 0 || o.seconds == 0 || o.keys == 0 {
        return Err(
            "usage: kvload --api cairn|etcd --endpoints HOST:PORT[,...] [--clients N] [--seconds S] [--value-size B] [--keys K]"
                .into(),
        );
    }
    Ok(o)
}

/// The request bytes for one write.
fn request(api: Api, host: &str, key: &str, value: &[u8]) -> Vec<u8> {
    let (method, path, body) = match api {
        Api::Cairn => ("PUT", format!("/v1/kv/{key}"), value.to_vec()),
        Api::Etcd => {
            let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
            let body = format!(
                "{{\"key\":\"{}\",\"value\":\"{}\"}}",
                b64(key.as_bytes()),
                b64(value)
            );
            ("POST", "/v3/kv/put".to_string(), body.into_bytes())
        }
    };
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    req
}

/// Reads one response; its status.
async fn response(rd: &mut BufReader<tokio::net::tcp::OwnedReadHalf>) -> std::io::Result<u16> {
    let mut line = String::new();
    rd.read_line(&mut line).await?;
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad status line {line:?}")))?;
    let (mut length, mut chunked) = (0usize, false);
    loop {
        line.clear();
        if rd.read_line(&mut line).await? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        let lower = l.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("content-length:") {
            length = v.trim().parse().unwrap_or(0);
        } else if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
    if chunked {
        loop {
            line.clear();
            rd.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| std::io::Error::other("bad chunk size"))?;
            let mut skip = vec![0u8; size + 2];
            rd.read_exact(&mut skip).await?;
            if size == 0 {
                break;
            }
        }
    } else {
        let mut body = vec![0u8; length];
        rd.read_exact(&mut body).await?;
    }
    Ok(status)
}

/// One client: writes until `until`; its latencies in microseconds and
/// its failures.
async fn client(o: std::sync::Arc<Opts>, id: usize, until: Instant) -> (Vec<u32>, u64) {
    let host = &o.endpoints[id % o.endpoints.len()];
    let (mut lat, mut errors) = (Vec::new(), 0u64);
    let value = vec![b'x'; o.value_size];
    let mut n = 0usize;
    'connect: while Instant::now() < until {
        let Ok(stream) = TcpStream::connect(host).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let _ = stream.set_nodelay(true);
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        while Instant::now() < until {
            n += 1;
            let key = format!("bench/{id}/{}", n % o.keys);
            let req = request(o.api, host, &key, &value);
            let start = Instant::now();
            if wr.write_all(&req).await.is_err() {
                errors += 1;
                continue 'connect;
            }
            match response(&mut rd).await {
                Ok(200) => lat.push(start.elapsed().as_micros().min(u32::MAX as u128) as u32),
                Ok(_) => errors += 1,
                Err(_) => {
                    errors += 1;
                    continue 'connect;
                }
            }
        }
    }
    (lat, errors)
}

fn percentile(sorted: &[u32], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

#[tokio::main]
async fn main() {
    let o = match parse() {
        Ok(o) => std::sync::Arc::new(o),
        Err(e) => {
            eprintln!("kvload: {e}");
            std::process::exit(2);
        }
    };
    let started = Instant::now();
    let until = started + Duration::from_secs(o.seconds);
    let tasks: Vec<_> = (0..o.clients)
        .map(|i| tokio::spawn(client(o.clone(), i, until)))
        .collect();
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    all.sort_unstable();
    println!(
        "writes={} writes_per_s={:.0} p50_ms={:.2} p99_ms={:.2} errors={errors}",
        all.len(),
        all.len() as f64 / secs,
        percentile(&all, 0.5),
        percentile(&all, 0.99)
    );
}

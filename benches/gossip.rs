//! Gossip hot paths: the wire codec and the core's probe cycle.
//!
//! Run with `cargo bench --bench gossip`.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Duration;

use cairn::gossip::wire::{self, Alive, Message, Ping};
use cairn::gossip::{Config, LocalNode, Output, Swim};
use cairn::time::Instant;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8301))
}

/// A ping carrying ten piggybacked alive broadcasts, as a busy cluster sends.
fn compound_parts() -> Vec<Vec<u8>> {
    let mut parts = vec![Message::Ping(Ping {
        seq_no: 4711,
        node: "node-17.dc1".into(),
        source_addr: Some(addr(1)),
        source_node: "node-1.dc1".into(),
    })
    .to_bytes()];
    for i in 0..10u8 {
        parts.push(
            Message::Alive(Alive {
                incarnation: 3 + i as u32,
                node: format!("node-{i}.dc1"),
                addr: addr(i),
                meta: vec![
                    0xff, 0x81, 0xa4, b'r', b'o', b'l', b'e', 0xa4, b'n', b'o', b'd', b'e',
                ],
                vsn: Some([1, 5, 2, 2, 5, 4]),
            })
            .to_bytes(),
        );
    }
    parts
}

fn codec(c: &mut Criterion) {
    let parts = compound_parts();
    let mut packet = Vec::new();
    wire::encode_compound(&parts, &mut packet);
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(packet.len() as u64));
    g.bench_function("compound_encode_decode", |b| {
        b.iter(|| {
            let parts = compound_parts();
            let mut buf = Vec::with_capacity(1400);
            wire::encode_compound(&parts, &mut buf);
            let mut n = 0;
            wire::decode_packet(black_box(&buf), &mut |m| n += m.is_ok() as usize);
            assert_eq!(n, 11);
        })
    });
    g.bench_function("compound_decode", |b| {
        b.iter(|| {
            let mut n = 0;
            wire::decode_packet(black_box(&packet), &mut |m| n += m.is_ok() as usize);
            n
        })
    });
    let compressed = wire::add_crc(&wire::compress(&packet));
    g.bench_function("compound_compress_crc", |b| {
        b.iter(|| wire::add_crc(&wire::compress(black_box(&packet))))
    });
    g.bench_function("compound_decode_compressed_crc", |b| {
        b.iter(|| {
            let mut n = 0;
            wire::decode_packet(black_box(&compressed), &mut |m| n += m.is_ok() as usize);
            n
        })
    });
    g.finish();
}

fn two_nodes(compression: bool) -> (Swim, Swim) {
    let cfg = Config {
        enable_compression: compression,
        ..Config::lan()
    };
    let mk = |name: &str, i, seed| {
        Swim::new(
            cfg.clone(),
            LocalNode {
                name: name.into(),
                addr: addr(i),
                meta: vec![],
            },
            seed,
            Instant::ZERO,
        )
        .unwrap()
    };
    let (mut a, mut b) = (mk("a", 1, 1), mk("b", 2, 2));
    // Introduce them with one push/pull exchange.
    a.join(Instant::ZERO, &[addr(2)]);
    while let Some(o) = a.poll_output() {
        if let Output::Stream(req) = o {
            let (msg, _) = wire::decode_stream(&req.data).unwrap().unwrap();
            let reply = b.handle_stream(Instant::ZERO, addr(1), msg).unwrap();
            let (reply, _) = wire::decode_stream(&reply).unwrap().unwrap();
            a.handle_stream_result(Instant::ZERO, req.id, Ok(Some(reply)))
                .unwrap();
        }
    }
    while b.poll_output().is_some() {}
    (a, b)
}

/// Runs one probe of b by a: a's timer fires, its ping reaches b, b's ack
/// reaches a. Returns the next time to start from.
fn probe_cycle(a: &mut Swim, b: &mut Swim, now: Instant) -> Instant {
    let t = a.poll_timeout().unwrap_or(now).max(now);
    a.handle_timeout(t);
    let mut acked = false;
    while let Some(o) = a.poll_output() {
        if let Output::Packet { to, data } = o {
            if to == addr(2) {
                b.handle_packet(t, addr(1), &data);
                while let Some(o) = b.poll_output() {
                    if let Output::Packet { data, .. } = o {
                        a.handle_packet(t + Duration::from_micros(200), addr(2), &data);
                    }
                }
            }
        } else if let Output::PingComplete(_) = o {
            acked = true;
        }
    }
    black_box(acked);
    t + Duration::from_micros(1)
}

fn core(c: &mut Criterion) {
    let mut g = c.benchmark_group("swim");
    for compression in [false, true] {
        let label = if compression {
            "probe_cycle_lzw"
        } else {
            "probe_cycle"
        };
        g.bench_function(label, |bch| {
            bch.iter_batched_ref(
                || (two_nodes(compression), Instant::ZERO),
                |((a, b), now)| {
                    for _ in 0..100 {
                        *now = probe_cycle(a, b, *now);
                    }
                },
                BatchSize::LargeInput,
            )
        });
    }
    let (_, mut b) = two_nodes(false);
    let ping = Message::Ping(Ping {
        seq_no: 9,
        node: "b".into(),
        source_addr: Some(addr(1)),
        source_node: "a".into(),
    })
    .to_bytes();
    g.bench_function("handle_ping", |bch| {
        bch.iter(|| {
            b.handle_packet(Instant::ZERO, addr(1), black_box(&ping));
            while let Some(o) = b.poll_output() {
                black_box(o);
            }
        })
    });
    g.finish();
}

/// cairn's LZW encoder against the `weezl` crate's (what cairn used
/// before), on a packet-sized compound and on a 10,000-member push/pull
/// sized payload.
fn lzw(c: &mut Criterion) {
    let mut packet = Vec::new();
    wire::encode_compound(&compound_parts(), &mut packet);
    let mut state = Vec::new();
    for i in 0..10_000u32 {
        state.extend_from_slice(
            format!("dc1-{i}\u{1}10.0.{}.{}:8301 alive 1;", i / 250, i % 250).as_bytes(),
        );
    }
    let mut g = c.benchmark_group("lzw");
    for (label, input) in [("packet", &packet), ("push_pull_10k", &state)] {
        g.throughput(Throughput::Bytes(input.len() as u64));
        g.bench_function(format!("cairn_{label}"), |b| {
            b.iter(|| cairn::gossip::lzw::compress(std::hint::black_box(input)))
        });
        g.bench_function(format!("weezl_{label}"), |b| {
            b.iter(|| {
                weezl::encode::Encoder::new(weezl::BitOrder::Lsb, 8)
                    .encode(std::hint::black_box(input))
            })
        });
    }
    g.finish();
}

criterion_group!(benches, codec, core, lzw);
criterion_main!(benches);

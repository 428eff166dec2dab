//! Cost of one Vivaldi update, for both algorithms.
//!
//! Run with `cargo bench --bench coordinate`. The Serf harness's own number
//! (Go, `ns_per_update`) is the comparison: `benches/compare_vivaldi.sh`
//! prints both side by side.

use std::hint::black_box;
use std::time::Duration;

use cairn::coordinate::{Client, Config, Coordinate};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion};

/// Peers spread over a few hundred milliseconds, as on the Internet.
fn peers(n: usize) -> Vec<Coordinate> {
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        (x >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| Coordinate {
            vec: (0..8).map(|_| (next() - 0.5) * 0.2).collect(),
            error: 0.2 + next() * 0.3,
            adjustment: (next() - 0.5) * 0.004,
            height: 1e-4 + next() * 0.002,
        })
        .collect()
}

fn updates(c: &mut Criterion) {
    let ps = peers(256);
    let mut g = c.benchmark_group("vivaldi_update");
    for (name, cfg) in [("serf", Config::serf()), ("default", Config::default())] {
        g.bench_function(name, |b| {
            b.iter_batched_ref(
                || {
                    let mut client: Client<u32> = Client::new(cfg.clone(), 1).unwrap();
                    // Warm up: a settled client with a full window.
                    for (i, p) in ps.iter().enumerate() {
                        let d = client
                            .coordinate()
                            .distance_to(p)
                            .max(Duration::from_millis(1));
                        let _ = client.update(&(i as u32), p, d);
                    }
                    (client, 0usize)
                },
                |(client, i)| {
                    for _ in 0..256 {
                        let p = &ps[*i % ps.len()];
                        let rtt = Duration::from_micros(20_000 + (*i as u64 * 7919) % 180_000);
                        black_box(client.update(&(*i as u32), p, rtt).is_ok());
                        *i += 1;
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, updates);
criterion_main!(benches);

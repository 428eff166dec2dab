//! Times cairn's encoding and decoding of one compound packet (a ping and ten
//! alive broadcasts), the same work as `benches/compare/codec_go`. Prints the
//! median nanoseconds per round trip; `benches/compare_codec.sh` runs both.

use std::hint::black_box;
use std::net::SocketAddr;
use std::time::Instant;

use cairn::gossip::wire::{self, Alive, Message, Ping};

fn addr(i: u8) -> SocketAddr {
    SocketAddr::from(([10, 0, 0, i], 8301))
}

fn once() -> usize {
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
    let mut buf = Vec::with_capacity(1400);
    wire::encode_compound(&parts, &mut buf);
    let mut ok = 0;
    wire::decode_packet(black_box(&buf), &mut |m| ok += m.is_ok() as usize);
    ok
}

fn main() {
    let iters: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(200_000);
    assert_eq!(once(), 11, "round trip lost messages");
    let mut runs: Vec<f64> = (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                black_box(once());
            }
            start.elapsed().as_nanos() as f64 / iters as f64
        })
        .collect();
    runs.sort_by(f64::total_cmp);
    println!("{:.1}", runs[runs.len() / 2]);
}

//! The floor under the full-stack engine: stock turmoil with a bare UDP
//! ping workload and nothing of cairn. Every host pings a random peer every
//! 200 ms (gossip's pace) and answers pings. Prints virtual seconds per
//! wall second, to compare with `cairn-sim run` on the same host count.
//!
//! ```text
//! cargo run --release -p cairn-sim --example turmoil_baseline -- HOSTS TICK_MS [VIRTUAL_S]
//! ```

use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize, default: f64| -> f64 {
        args.get(i)
            .map(|s| {
                s.parse().unwrap_or_else(|_| {
                    eprintln!("usage: turmoil_baseline HOSTS TICK_MS [VIRTUAL_S]");
                    std::process::exit(2)
                })
            })
            .unwrap_or(default)
    };
    let hosts = arg(0, 30.0) as usize;
    let tick = Duration::from_secs_f64(arg(1, 1.0) / 1000.0);
    let virtual_s = arg(2, 30.0);
    let mut sim = turmoil::Builder::new()
        .simulation_duration(Duration::from_secs_f64(virtual_s + 60.0))
        .tick_duration(tick)
        .min_message_latency(Duration::from_millis(1))
        .max_message_latency(Duration::from_millis(1))
        .rng_seed(1)
        .build();
    let names: Vec<String> = (0..hosts).map(|i| format!("h{i}")).collect();
    for (i, name) in names.iter().enumerate() {
        let peers = names.clone();
        sim.host(name.as_str(), move || {
            let peers = peers.clone();
            async move {
                let sock = turmoil::net::UdpSocket::bind("0.0.0.0:7946").await?;
                let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(i as u64);
                let mut buf = [0u8; 64];
                let mut tick = tokio::time::interval(Duration::from_millis(200));
                loop {
                    tokio::select! {
                        biased;
                        r = sock.recv_from(&mut buf) => {
                            let (n, from) = r?;
                            if n > 0 && buf[0] == 0 {
                                buf[0] = 1;
                                sock.send_to(&buf[..n], from).await?;
                            }
                        }
                        _ = tick.tick() => {
                            let j = rng.random_range(0..peers.len());
                            if j != i {
                                let to = turmoil::lookup(peers[j].as_str());
                                sock.send_to(&[0u8; 64], (to, 7946)).await?;
                            }
                        }
                    }
                }
            }
        });
    }
    let started = Instant::now();
    let end = Duration::from_secs_f64(virtual_s);
    while sim.elapsed() < end {
        if let Err(e) = sim.step() {
            eprintln!("simulation failed: {e}");
            std::process::exit(1);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "hosts {hosts} tick {:?}: {virtual_s:.0} virtual s in {wall:.2} wall s = {:.2}x real time",
        tick,
        virtual_s / wall
    );
}

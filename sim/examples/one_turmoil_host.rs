//! The other way the full engine could have gone: every cairn node on one
//! turmoil host (so turmoil has no host pairs to scan), with cairn's own
//! network, stepped by turmoil's 1 ms tick instead of from event to event.
//! Prints virtual seconds per wall second, to compare with `cairn-sim run`
//! on the same file (`benches/sim_speed.sh` runs both).
//!
//! ```text
//! cargo run --release -p cairn-sim --example one_turmoil_host -- SCENARIO.toml
//! ```

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cairn_sim::scenario::Scenario;

fn main() {
    let Some(path) = std::env::args().nth(1) else {
        eprintln!("usage: one_turmoil_host SCENARIO.toml");
        std::process::exit(2);
    };
    let s = Scenario::load(std::path::Path::new(&path)).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    });
    let spec = Arc::new(s.cluster(s.seed).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    }));
    let actions = Arc::new(s.timeline(s.seed).unwrap_or_else(|e| {
        eprintln!("{e}");
        std::process::exit(2)
    }));
    let mut sim = turmoil::Builder::new()
        .simulation_duration(s.duration + Duration::from_secs(60))
        .tick_duration(Duration::from_millis(1))
        .rng_seed(s.seed)
        .build();
    let events = Arc::new(Mutex::new(None));
    let (out, nodes) = (events.clone(), spec.topology.nodes.len());
    sim.host("world", move || {
        let (spec, actions, out) = (spec.clone(), actions.clone(), out.clone());
        async move {
            let r = cairn_sim::engine::full::drive(&spec, &actions, |_| {}).await?;
            *out.lock().unwrap() = Some(r.trace.events.len());
            Ok(())
        }
    });
    let started = Instant::now();
    while events.lock().unwrap().is_none() {
        if let Err(e) = sim.step() {
            eprintln!("simulation failed: {e}");
            std::process::exit(1);
        }
    }
    let wall = started.elapsed().as_secs_f64();
    println!(
        "one turmoil host, 1ms tick: {} nodes, {:.0} virtual s in {wall:.2} wall s = {:.2}x real time ({} trace events)",
        nodes,
        s.duration.as_secs_f64(),
        s.duration.as_secs_f64() / wall,
        events.lock().unwrap().unwrap_or(0)
    );
}

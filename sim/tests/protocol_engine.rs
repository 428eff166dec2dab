//! The protocol engine: the same gossip nodes under a discrete-event
//! scheduler. It replays exactly, agrees with the full engine on what
//! happens, and keeps large runs bounded by sampling.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use cairn_sim::engine::protocol::{run_protocol, Sampling};
use cairn_sim::scenario::{Engine, Scenario};
use cairn_sim::Report;

const CROSS: &str = r#"
name = "cross-check"
seed = 5
duration = "70s"

[latency]
intra_dc = { dist = "uniform", min = "500us", max = "2ms" }

[[datacenter]]
name = "dc1"
clients = 30

[[event]]
at = "20s"
action = "crash"
targets = ["dc1-7", "dc1-21"]

[[event]]
at = "40s"
action = "leave"
targets = ["dc1-12"]

[[check]]
kind = "failed_within"
within = "15s"

[[check]]
kind = "no_false_failures"

[[check]]
kind = "converged"
"#;

fn scenario(text: &str) -> Scenario {
    Scenario::parse_in("t.toml", text, Path::new(".")).unwrap()
}

fn run(s: &Scenario, engine: Engine, seed: u64) -> Report {
    let r = s.run_with(engine, seed, |_| {}).unwrap();
    for c in &r.checks {
        assert!(c.passed, "{:?}: {}: {}", engine, c.check, c.detail);
    }
    r
}

/// Members every other running node ended up declaring failed.
fn failed_by_all(r: &Report, names: &[String]) -> BTreeSet<String> {
    let failed: BTreeSet<(String, String)> = r
        .output
        .trace
        .all("failed")
        .map(|(o, m, _)| (o.to_string(), m.to_string()))
        .collect();
    names
        .iter()
        .filter(|m| {
            let observers: BTreeSet<&str> = failed
                .iter()
                .filter(|(_, x)| x == *m)
                .map(|(o, _)| o.as_str())
                .collect();
            observers.len() >= names.len() - 4
        })
        .cloned()
        .collect()
}

#[test]
fn both_engines_tell_the_same_story() {
    let s = scenario(CROSS);
    let names = s.names();
    let full = run(&s, Engine::Full, 5);
    let proto = run(&s, Engine::Protocol, 5);
    let want: BTreeSet<String> = ["dc1-7", "dc1-21"].map(String::from).into();
    assert_eq!(failed_by_all(&full, &names), want);
    assert_eq!(failed_by_all(&proto, &names), want);
    // Every fact reaches everyone, and 90 % of the pool in the same number
    // of protocol periods (a probe interval is a second here), give or take
    // a few. (The last node can be unlucky: gossip is probabilistic, and
    // one that the leave's retransmissions all missed learns it only when
    // its own probe of the departed node fails.)
    let period = s.gossip.probe_interval.as_secs_f64();
    assert_eq!(full.output.spreads.len(), proto.output.spreads.len());
    for (f, p) in full.output.spreads.iter().zip(&proto.output.spreads) {
        assert_eq!((&f.member, f.kind), (&p.member, p.kind));
        assert!(f.time_to(1.0).is_some() && p.time_to(1.0).is_some());
        let (tf, tp) = (f.time_to(0.9), p.time_to(0.9));
        let (Some(tf), Some(tp)) = (tf, tp) else {
            panic!("{} {}: full {tf:?}, protocol {tp:?}", f.kind, f.member);
        };
        let periods = |t: Duration| (t.as_secs_f64() / period).ceil();
        assert!(
            (periods(tf) - periods(tp)).abs() <= 3.0,
            "{} {}: full {tf:?}, protocol {tp:?}",
            f.kind,
            f.member
        );
    }
}

#[test]
fn the_protocol_engine_replays_exactly() {
    let s = scenario(CROSS);
    let (a, b) = (run(&s, Engine::Protocol, 9), run(&s, Engine::Protocol, 9));
    assert_eq!(a.trace_hash(), b.trace_hash());
    assert_eq!(a.output.samples, b.output.samples);
    let c = run(&s, Engine::Protocol, 10);
    assert_ne!(a.trace_hash(), c.trace_hash());
}

#[test]
fn large_runs_keep_a_sample_and_still_judge_it() {
    let s = scenario(&CROSS.replace("clients = 30", "clients = 80"));
    let timeline = s.timeline(3).unwrap();
    let sampling = Sampling {
        observed_nodes: 15,
        scored_pairs: 100,
        ..Sampling::default()
    };
    let out = run_protocol(&s, 3, &timeline, sampling, |_| {}).unwrap();
    let observers: BTreeSet<&str> = out
        .trace
        .events
        .iter()
        .filter(|e| e.node != "sim")
        .map(|e| e.node.as_str())
        .collect();
    assert!(observers.len() <= 15, "{}", observers.len());
    assert_eq!(out.observed.as_ref().map(BTreeSet::len), Some(15));
    assert!(out.accuracy.iter().all(|a| a.pairs <= 100));
    // The news of each crash and the leave is counted over everyone.
    for f in &out.spreads {
        assert_eq!(f.delays.len(), f.audience, "{} {}", f.kind, f.member);
    }
    assert_eq!(out.false_failures, Some(0));
    let checks = cairn_sim::checks::evaluate(&s, &out.applied, &out);
    for c in checks {
        assert!(c.passed, "{}: {}", c.check, c.detail);
    }
}

/// The engine skips work no output shows (compression of what unobserved
/// nodes send, building, encoding, decoding and merging the same push/pull
/// state twice): every output is what the run that does all the work
/// gives. Once from a cold start, once converged with frequent push/pulls
/// (states that agree, then differ after the crash, then agree again).
#[test]
fn shortcuts_change_nothing_but_the_cost() {
    let cold = CROSS.replace("clients = 30", "clients = 60");
    let converged = cold
        .replace("seed = 5\n", "seed = 5\nstart = \"converged\"\n")
        .replace(
            "[latency]",
            "[gossip]\npush_pull_interval = \"2s\"\n\n[latency]",
        );
    for text in [cold, converged] {
        let s = scenario(&text);
        let timeline = s.timeline(4).unwrap();
        let run = |shortcuts| {
            let sampling = Sampling {
                observed_nodes: 20,
                scored_pairs: 300,
                shortcuts,
            };
            run_protocol(&s, 4, &timeline, sampling, |_| {}).unwrap()
        };
        let (fast, exact) = (run(true), run(false));
        assert_eq!(fast.trace.to_jsonl(), exact.trace.to_jsonl());
        assert_eq!(fast.samples.len(), exact.samples.len());
        for (f, e) in fast.samples.iter().zip(&exact.samples) {
            assert_eq!(f, e);
        }
        assert!(fast
            .samples
            .iter()
            .any(|x| x.udp_bytes > 0 && x.tcp_bytes > 0));
        assert_eq!(fast.accuracy, exact.accuracy);
        assert_eq!(fast.final_pairs, exact.final_pairs);
        assert_eq!(fast.steps, exact.steps);
        assert_eq!(fast.false_failures, exact.false_failures);
        let delays = |o: &cairn_sim::RunOutput| -> Vec<Vec<Duration>> {
            o.spreads.iter().map(|f| f.delays.clone()).collect()
        };
        assert_eq!(delays(&fast), delays(&exact));
    }
}

#[test]
fn servers_are_refused_with_a_reason() {
    let s = scenario(&CROSS.replace("clients = 30", "clients = 30\nservers = 3"));
    let e = s
        .run_with(Engine::Protocol, 1, |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("servers run only on the full engine"), "{e}");
}

/// Found in review: a stream to a far peer whose deadline passes before the
/// request could arrive was failed at the deadline, in the past. Far-apart
/// datacenters with a crash make the engine probe over TCP across the
/// ocean; time must only ever move forward (the engine asserts it).
#[test]
fn far_streams_never_send_time_backwards() {
    let text = r#"
name = "far"
seed = 2
duration = "60s"
engine = "protocol"

[gossip]
pool = "global"
probe_interval = "1s"
probe_timeout = "900ms"

[[datacenter]]
name = "syd"
lat = -33.87
lon = 151.21
clients = 6

[[datacenter]]
name = "lon"
lat = 51.51
lon = -0.13
clients = 6

[[event]]
at = "20s"
action = "crash"
targets = ["syd-3", "lon-4"]

[[check]]
kind = "failed_within"
within = "30s"
"#;
    let s = scenario(text);
    run(&s, Engine::Protocol, 2);
}

const CONVERGED: &str = r#"
name = "converged-start"
seed = 3
duration = "40s"
engine = "protocol"
start = "converged"

[[datacenter]]
name = "dc1"
clients = 150

[[datacenter]]
name = "dc2"
clients = 50

[[event]]
at = "5s"
action = "crash"
targets = ["dc1-3"]

[[event]]
at = "30s"
action = "leave"
targets = ["dc2-7"]

[[check]]
kind = "failed_within"
within = "20s"

[[check]]
kind = "no_false_failures"

[[check]]
kind = "converged"
"#;

#[test]
fn a_converged_start_begins_with_every_pool_known_and_replays_exactly() {
    let s = scenario(CONVERGED);
    let a = run(&s, Engine::Protocol, 3);
    // Nobody joined anybody: the only membership news is the faults'.
    let heard: BTreeSet<&str> = a
        .output
        .trace
        .events
        .iter()
        .filter(|e| e.node != "sim" && e.member.as_deref() != Some(e.node.as_str()))
        .filter_map(|e| e.member.as_deref())
        .collect();
    assert_eq!(heard, BTreeSet::from(["dc1-3", "dc2-7"]));
    // The views start full: at 0 s each node counts its pool less itself.
    let rows = cairn_sim::output::metrics::rows(&a.output.trace, &a.output.samples, &s.topology);
    let first = rows.iter().find(|r| r.sample.at.is_zero()).unwrap();
    let pool = if s.topology.nodes[first.sample.node].dc == 0 {
        150
    } else {
        50
    };
    assert_eq!(first.members.unwrap().alive, pool - 1);
    let spread = a.output.spreads.iter().find(|f| f.kind == "left").unwrap();
    assert_eq!(
        spread.delays.len(),
        49,
        "the whole of dc2 heard of the leave"
    );
    let b = run(&s, Engine::Protocol, 3);
    assert_eq!(a.trace_hash(), b.trace_hash());
}

#[test]
fn the_full_engine_refuses_a_converged_start() {
    let s = scenario(CONVERGED);
    let err = s.run_with(Engine::Full, 3, |_| {}).unwrap_err().to_string();
    assert!(err.contains("--engine protocol"), "{err}");
}

/// Packets (summed over the sampled nodes and seconds): datagrams, bytes.
fn datagrams(r: &Report) -> (u64, u64) {
    r.output
        .samples
        .iter()
        .fold((0, 0), |(p, b), s| (p + s.udp_packets, b + s.udp_bytes))
}

#[test]
fn skipping_the_codec_changes_nothing_but_the_cost() {
    // Joins, push/pulls, crashes and a leave: every kind of datagram and
    // stream, with and without the codec, decide the same way.
    let mut s = scenario(CROSS);
    let coded = run(&s, Engine::Protocol, 4);
    s.codec = false;
    let values = run(&s, Engine::Protocol, 4);
    assert_eq!(coded.trace_hash(), values.trace_hash());
    let ((p1, b1), (p2, b2)) = (datagrams(&coded), datagrams(&values));
    assert_eq!(p1, p2);
    // Without the codec bytes are the uncompressed encoding: more of them.
    assert!(b2 > b1 && b1 > 0, "{b1} compressed vs {b2} uncompressed");
    let err = s.run_with(Engine::Full, 4, |_| {}).unwrap_err().to_string();
    assert!(err.contains("protocol engine"), "{err}");
}

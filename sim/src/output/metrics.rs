//! `metrics.csv`: every node each virtual second — what it runs as, how it
//! sees its pool (members per state, read off the trace), what it sent,
//! and how well its coordinate predicts its RTTs.

use std::fmt::Write as _;

use crate::action::NodeStatus;
pub use crate::checks::Membership;
use crate::checks::Views;
use crate::engine::NodeSample;
use crate::net::topology::Topology;
use crate::output::trace::Trace;

/// One row of `metrics.csv`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MetricsRow {
    /// The node's sample.
    pub sample: NodeSample,
    /// Its view of the pool, when it runs.
    pub members: Option<Membership>,
}

/// Joins the per-second samples with each node's view of membership.
pub fn rows(trace: &Trace, samples: &[NodeSample], topo: &Topology) -> Vec<MetricsRow> {
    let names = topo.names();
    let mut views = Views::default();
    let mut events = trace.events.iter().peekable();
    let mut out = Vec::with_capacity(samples.len());
    for s in samples {
        while let Some(e) = events.next_if(|e| e.at() <= s.at) {
            views.apply(e);
        }
        let members = (s.status == NodeStatus::Running).then(|| views.counts(&names[s.node]));
        out.push(MetricsRow {
            sample: *s,
            members,
        });
    }
    out
}

/// The CSV text (header first).
pub fn to_csv(rows: &[MetricsRow], topo: &Topology) -> String {
    let mut csv = String::from(
        "t_s,node,dc,status,alive,suspect,failed,left,udp_packets,udp_bytes,tcp_bytes,coord_median_rel_err,coord_p90_rel_err\n",
    );
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.6}"));
    for r in rows {
        let s = &r.sample;
        let node = &topo.nodes[s.node];
        let m = r.members.map_or(",,,".to_string(), |m| {
            format!("{},{},{},{}", m.alive, m.suspect, m.failed, m.left)
        });
        let _ = writeln!(
            csv,
            "{},{},{},{},{m},{},{},{},{},{}",
            s.at.as_secs(),
            node.name,
            topo.datacenters[node.dc].name,
            s.status.as_str(),
            s.udp_packets,
            s.udp_bytes,
            s.tcp_bytes,
            opt(s.coord_median),
            opt(s.coord_p90)
        );
    }
    csv
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::output::trace::TraceEvent;
    use std::time::Duration;

    fn ev(t: u64, node: &str, event: &str, member: &str) -> TraceEvent {
        TraceEvent {
            t_us: t * 1_000_000,
            node: node.into(),
            event: event.into(),
            member: (!member.is_empty()).then(|| member.into()),
            incarnation: None,
            detail: None,
        }
    }

    #[test]
    fn counts_each_nodes_view_at_each_second() {
        let topo = Topology::lan("d", 3);
        let trace = Trace {
            events: vec![
                ev(0, "d-0", "joined", "d-1"),
                ev(0, "d-0", "joined", "d-2"),
                ev(1, "d-0", "suspect", "d-2"),
                ev(2, "d-0", "failed", "d-2"),
            ],
        };
        let sample = |t: u64, node| NodeSample {
            at: Duration::from_secs(t),
            node,
            status: NodeStatus::Running,
            udp_packets: 1,
            udp_bytes: 10,
            tcp_bytes: 0,
            coord_median: None,
            coord_p90: Some(0.5),
        };
        let samples: Vec<_> = (0..3).map(|t| sample(t, 0)).collect();
        let r = rows(&trace, &samples, &topo);
        let m: Vec<_> = r.iter().map(|r| r.members.unwrap()).collect();
        assert_eq!((m[0].alive, m[0].suspect, m[0].failed), (2, 0, 0));
        assert_eq!((m[1].alive, m[1].suspect, m[1].failed), (2, 1, 0));
        assert_eq!((m[2].alive, m[2].suspect, m[2].failed), (1, 0, 1));
        let csv = to_csv(&r, &topo);
        assert!(
            csv.lines()
                .nth(3)
                .unwrap()
                .starts_with("2,d-0,d,running,1,0,1,0,1,10,0,,0.500000"),
            "{csv}"
        );
    }
}

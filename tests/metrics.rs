//! `/v1/agent/metrics` on a real server: writes count under Consul's
//! names (`consul.raft.apply`, `consul.kvs.apply`, ...), the runtime
//! gauges are there, and the Prometheus text passes `promtool check
//! metrics` (skipped, with a notice, where promtool is not installed,
//! unless `CAIRN_REQUIRE_PROMTOOL` is set, as `.ci/run` sets it).

use std::io::Write;
use std::process::{Command, Stdio};

#[path = "common/process.rs"]
mod process;
use process::{http, http_get, Agent};

fn put(a: &Agent, path: &str, body: &str) {
    let (status, out) = http(&a.http, "PUT", path, body.as_bytes()).unwrap();
    assert_eq!(status, 200, "PUT {path}: {out}");
}

/// The entry named `name` in the list `list` of the JSON metrics.
fn entry<'a>(v: &'a serde_json::Value, list: &str, name: &str) -> &'a serde_json::Value {
    v[list]
        .as_array()
        .and_then(|l| l.iter().find(|m| m["Name"] == name))
        .unwrap_or_else(|| panic!("no {name} in {list}: {v}"))
}

#[test]
fn writes_count_under_consuls_metric_names() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "metrics1");
    for i in 0..3 {
        put(&a, &format!("/v1/kv/app/k{i}"), "v");
    }
    put(
        &a,
        "/v1/txn",
        r#"[{"KV":{"Verb":"set","Key":"app/t","Value":"dg=="}}]"#,
    );
    put(
        &a,
        "/v1/catalog/register",
        r#"{"Node":"ext","Address":"10.0.0.9","Service":{"Service":"db"}}"#,
    );
    // Roles are sampled from Raft's metrics once per heartbeat, so the
    // election may show a moment after the server answers as leader.
    let v: serde_json::Value = process::wait_for(
        std::time::Duration::from_secs(10),
        "the role counted",
        || {
            let v: serde_json::Value =
                serde_json::from_str(&http_get(&a.http, "/v1/agent/metrics")).ok()?;
            let counted = v["Counters"]
                .as_array()?
                .iter()
                .any(|m| m["Name"] == "consul.raft.state.leader");
            counted.then_some(v)
        },
    );

    let count = |list: &str, name: &str| entry(&v, list, name)["Count"].as_u64().unwrap_or(0);
    assert!(count("Counters", "consul.raft.apply") >= 5, "{v}");
    assert!(count("Counters", "consul.rpc.request") >= 5, "{v}");
    assert!(count("Counters", "consul.raft.state.leader") >= 1, "{v}");
    assert!(count("Samples", "consul.kvs.apply") >= 3, "{v}");
    assert!(count("Samples", "consul.txn.apply") >= 1, "{v}");
    assert!(count("Samples", "consul.catalog.register") >= 1, "{v}");
    assert!(count("Samples", "consul.raft.commitTime") >= 5, "{v}");
    let commit = entry(&v, "Samples", "consul.raft.commitTime");
    for field in ["Sum", "Min", "Max", "Mean", "Stddev", "Rate"] {
        assert!(commit[field].as_f64().is_some(), "{field} in {commit}");
    }
    assert!(commit["Min"].as_f64() <= commit["Max"].as_f64(), "{commit}");
    assert!(
        count("Samples", "consul.raft.leader.lastContact") >= 1,
        "{v}"
    );
    // Gossip and the runtime are there too.
    entry(&v, "Gauges", "consul.serf.lan.members.alive");
    entry(&v, "Counters", "consul.memberlist.udp.sent");
    for gauge in [
        "consul.runtime.num_goroutines",
        "consul.runtime.alloc_bytes",
        "consul.runtime.sys_bytes",
    ] {
        let value = entry(&v, "Gauges", gauge)["Value"].as_f64().unwrap_or(0.0);
        assert!(value > 0.0, "{gauge}: {v}");
    }
}

#[test]
fn prometheus_text_passes_promtool() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "metrics2");
    put(&a, "/v1/kv/app/k", "v");
    let text = http_get(&a.http, "/v1/agent/metrics?format=prometheus");
    for want in [
        "# TYPE consul_raft_apply_total counter\n",
        "# TYPE consul_raft_commit_time summary\n",
        "consul_raft_commit_time{quantile=\"0.99\"} ",
        "consul_kvs_apply_count ",
        "# TYPE consul_runtime_alloc_bytes gauge\n",
        "# HELP consul_raft_commit_time consul.raft.commitTime: ",
    ] {
        assert!(text.contains(want), "no {want:?} in:\n{text}");
    }
    let promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match promtool {
        Ok(c) => c,
        Err(e) => {
            assert!(
                std::env::var_os("CAIRN_REQUIRE_PROMTOOL").is_none(),
                "promtool is required (CAIRN_REQUIRE_PROMTOOL) but cannot run: {e}"
            );
            eprintln!(
                "NOTICE: promtool is not installed ({e}); the Prometheus text was not checked \
                 (apt-get install prometheus)"
            );
            return;
        }
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics failed:\n{}{}\non:\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

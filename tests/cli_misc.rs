//! `cairn event`, `cairn maint` and `cairn kv export|import` against a
//! real agent, with Consul's flags, messages and formats.

#[path = "common/process.rs"]
mod process;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::Duration;

use process::{cli, http, http_get, wait_for, Agent, CAIRN};

#[test]
fn event_fires_a_user_event_the_agent_lists() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (ok, out, err) = cli(&a, &["event", "-name=deploy", "-node=so.*", "v1.2"]);
    assert!(ok, "{err}");
    let id = out
        .trim()
        .strip_prefix("Event ID: ")
        .unwrap_or_else(|| panic!("{out}"))
        .to_string();
    let listed = wait_for(Duration::from_secs(20), "the event listed", || {
        let v: serde_json::Value =
            serde_json::from_str(&http_get(&a.http, "/v1/event/list?name=deploy")).ok()?;
        v.as_array()?
            .iter()
            .find(|e| e["ID"] == id.as_str())
            .cloned()
    });
    assert_eq!(listed["Name"], "deploy");
    assert_eq!(listed["Payload"], "djEuMg==", "base64 of v1.2");
    assert_eq!(listed["NodeFilter"], "so.*");
    // Consul's checks, before anything is sent.
    let (ok, _, err) = cli(&a, &["event", "payload"]);
    assert!(!ok && err.contains("Event name must be specified"), "{err}");
    let (ok, _, err) = cli(&a, &["event", "-name=x", "-tag=v1"]);
    assert!(
        !ok && err.contains("Cannot provide tag filter without service filter"),
        "{err}"
    );
    let (ok, _, err) = cli(&a, &["event", "-name=x", "-service=("]);
    assert!(
        !ok && err.contains("Failed to compile service filter regexp"),
        "{err}"
    );
}

fn checks(a: &Agent) -> serde_json::Value {
    serde_json::from_str(&http_get(&a.http, "/v1/agent/checks")).unwrap()
}

#[test]
fn maint_toggles_node_and_service_maintenance() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let reg = br#"{"Name": "web", "ID": "web-1", "Port": 80}"#;
    let (status, body) = http(&a.http, "PUT", "/v1/agent/service/register", reg).unwrap();
    assert_eq!(status, 200, "{body}");
    // Nothing in maintenance: an empty listing.
    let (ok, out, err) = cli(&a, &["maint"]);
    assert!(ok, "{err}");
    assert_eq!(out, "");
    let (ok, out, err) = cli(&a, &["maint", "-enable", "-reason=kernel upgrade"]);
    assert!(ok, "{err}");
    assert_eq!(out, "Node maintenance is now enabled\n");
    let c = checks(&a);
    assert_eq!(c["_node_maintenance"]["Status"], "critical");
    assert_eq!(c["_node_maintenance"]["Notes"], "kernel upgrade");
    let (ok, out, err) = cli(&a, &["maint", "-enable", "-service=web-1"]);
    assert!(ok, "{err}");
    assert_eq!(out, "Service maintenance is now enabled for \"web-1\"\n");
    let c = checks(&a);
    let svc = &c["_service_maintenance:web-1"];
    assert_eq!(svc["Status"], "critical");
    assert_eq!(svc["ServiceID"], "web-1");
    let (ok, out, _) = cli(&a, &["maint"]);
    assert!(ok);
    assert!(
        out.starts_with("Node:\n  Name:   solo\n  Reason: kernel upgrade\n\nService:\n  ID:     web-1\n  Reason: "),
        "{out}"
    );
    // The service drops out of healthy answers.
    let healthy = http_get(&a.http, "/v1/health/service/web?passing");
    assert_eq!(healthy.trim(), "[]");
    let (ok, out, _) = cli(&a, &["maint", "-disable", "-service=web-1"]);
    assert!(ok);
    assert_eq!(out, "Service maintenance is now disabled for \"web-1\"\n");
    let (ok, out, _) = cli(&a, &["maint", "-disable"]);
    assert!(ok);
    assert_eq!(out, "Node maintenance is now disabled\n");
    let c = checks(&a);
    assert!(c.get("_node_maintenance").is_none(), "{c}");
    assert!(c.get("_service_maintenance:web-1").is_none(), "{c}");
    assert_eq!(cli(&a, &["maint"]).1, "");
    // Consul's refusals.
    let (ok, _, err) = cli(&a, &["maint", "-enable", "-service=nope"]);
    assert!(
        !ok && err.contains("Error enabling service maintenance"),
        "{err}"
    );
    let (ok, _, err) = cli(&a, &["maint", "-enable", "-disable"]);
    assert!(
        !ok && err.contains("Only one of -enable or -disable"),
        "{err}"
    );
    let (ok, _, err) = cli(&a, &["maint", "-reason=x"]);
    assert!(
        !ok && err.contains("Reason may only be provided with -enable"),
        "{err}"
    );
}

/// The entries under `prefix` as (key, flags, base64 value) triples.
fn entries(a: &Agent, prefix: &str) -> Vec<(String, u64, Option<String>)> {
    let (status, body) = http(&a.http, "GET", &format!("/v1/kv/{prefix}?recurse"), b"").unwrap();
    if status == 404 {
        return Vec::new();
    }
    let v: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    v.iter()
        .map(|e| {
            (
                e["Key"].as_str().unwrap().to_string(),
                e["Flags"].as_u64().unwrap(),
                e["Value"].as_str().map(str::to_owned),
            )
        })
        .collect()
}

#[test]
fn kv_export_wipe_import_round_trips_flags_and_binary_values() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let put = |key: &str, value: &[u8]| {
        let (status, body) = http(&a.http, "PUT", &format!("/v1/kv/{key}"), value).unwrap();
        assert_eq!((status, body.trim()), (200, "true"));
    };
    put("app/bin?flags=42", &[0, 255, 1, 0xfe, b'\n', 0]);
    put("app/text", "héllo wörld".as_bytes());
    put("app/dir/", b"");
    put("app/dir/max?flags=18446744073709551615", b"x");
    put("other/key", b"not exported");
    let before = entries(&a, "app/");
    assert_eq!(before.len(), 4);
    let (ok, export, err) = cli(&a, &["kv", "export", "app/"]);
    assert!(ok, "{err}");
    // Consul's format: tab-indented, base64 values.
    assert!(
        export.starts_with("[\n\t{\n\t\t\"key\": \"app/bin\""),
        "{export}"
    );
    let v: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(v[0]["flags"], 42);
    assert_eq!(v[0]["value"], "AP8B/goA");
    let (ok, _, err) = cli(&a, &["kv", "delete", "-recurse", "app/"]);
    assert!(ok, "{err}");
    assert!(entries(&a, "app/").is_empty());
    // The export on standard input.
    let mut import = Command::new(CAIRN)
        .args(["kv", "import", "-"])
        .env("CAIRN_HTTP_ADDR", format!("http://{}", a.http))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    import
        .stdin
        .take()
        .unwrap()
        .write_all(export.as_bytes())
        .unwrap();
    let out = import.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout,
        "Imported: app/bin\nImported: app/dir/\nImported: app/dir/max\nImported: app/text\n"
    );
    assert_eq!(entries(&a, "app/"), before);
    assert_eq!(entries(&a, "other/").len(), 1);
    // -prefix puts the keys under another prefix, joined with one `/`;
    // folders keep their trailing `/`.
    let file = dir.path().join("export.json");
    std::fs::write(&file, &export).unwrap();
    let (ok, out, err) = cli(
        &a,
        &[
            "kv",
            "import",
            "-prefix=copy",
            &format!("@{}", file.display()),
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("Imported: copy/app/dir/\n"), "{out}");
    let copied: Vec<_> = entries(&a, "copy/")
        .into_iter()
        .map(|(k, f, v)| (k.replacen("copy/", "", 1), f, v))
        .collect();
    assert_eq!(copied, before);
    let (ok, _, err) = cli(&a, &["kv", "import"]);
    assert!(!ok && err.contains("Missing DATA argument"), "{err}");
}

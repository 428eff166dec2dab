//! `cairn kv get|put|delete` and `cairn catalog ...` against a real agent,
//! with Consul's flags, messages and exit codes.

#[path = "common/process.rs"]
mod process;
use process::{cli, http, Agent};

fn kv(a: &Agent, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["kv"];
    all.extend_from_slice(args);
    cli(a, &all)
}

#[test]
fn kv_commands_read_and_write_through_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let (ok, out, err) = kv(&a, &["put", "app/greeting", "hello world"]);
    assert!(ok, "{err}");
    assert_eq!(out.trim(), "Success! Data written to: app/greeting");
    assert_eq!(kv(&a, &["get", "app/greeting"]).1, "hello world\n");
    // Consul's single-dash flags, on a nested command.
    let (ok, _, err) = kv(
        &a,
        &["put", "-cas", "-modify-index=0", "app/greeting", "again"],
    );
    assert!(!ok);
    assert!(err.contains("CAS failed"), "{err}");
    let file = dir.path().join("v.txt");
    std::fs::write(&file, "from a file").unwrap();
    assert!(
        kv(
            &a,
            &[
                "put",
                "-flags=42",
                "app/conf/a",
                &format!("@{}", file.display())
            ]
        )
        .0
    );
    assert_eq!(
        kv(&a, &["get", "-recurse", "app/"]).1,
        "app/conf/a:from a file\napp/greeting:hello world\n"
    );
    assert_eq!(
        kv(&a, &["get", "-keys", "-separator=/", "app/"]).1,
        "app/conf/\napp/greeting\n"
    );
    let (ok, out, _) = kv(&a, &["delete", "-recurse", "app/conf/"]);
    assert!(ok);
    assert_eq!(out.trim(), "Success! Deleted key: app/conf/");
    let (ok, _, err) = kv(&a, &["get", "app/conf/a"]);
    assert!(!ok);
    assert!(err.contains("No key exists at: app/conf/a"), "{err}");
    let (ok, _, err) = kv(&a, &["put", "app/x", "@/no/such/file"]);
    assert!(!ok);
    assert!(err.contains("cannot read /no/such/file"), "{err}");
}

#[test]
fn kv_export_and_import_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    assert!(kv(&a, &["put", "-flags=7", "cfg/a", "one"]).0);
    assert!(kv(&a, &["put", "cfg/b/c", "two"]).0);
    let (ok, export, err) = kv(&a, &["export", "cfg/"]);
    assert!(ok, "{err}");
    let v: serde_json::Value = serde_json::from_str(&export).unwrap();
    assert_eq!(v[0]["key"], "cfg/a");
    assert_eq!(v[0]["flags"], 7);
    assert_eq!(v[0]["value"], "b25l");
    let file = dir.path().join("export.json");
    std::fs::write(&file, &export).unwrap();
    let (ok, _, err) = kv(
        &a,
        &["import", "-prefix=copy/", &format!("@{}", file.display())],
    );
    assert!(ok, "{err}");
    assert_eq!(
        kv(&a, &["get", "-recurse", "copy/"]).1,
        "copy/cfg/a:one\ncopy/cfg/b/c:two\n"
    );
    // An import with one bad entry writes nothing.
    let bad = r#"[{"key": "new/x", "value": "eA=="}, {"key": "new/y", "value": "!!"}]"#;
    let (ok, _, err) = kv(&a, &["import", bad]);
    assert!(!ok);
    assert!(
        err.contains("entry 1 (new/y): value is not base64"),
        "{err}"
    );
    assert!(kv(&a, &["get", "-keys", "new/"]).1.is_empty());
    let (ok, _, err) = kv(&a, &["import", "{not json"]);
    assert!(!ok);
    assert!(err.contains("not a kv export"), "{err}");
}

#[test]
fn catalog_commands_list_what_the_catalog_holds() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    let reg = r#"{"Node": "ext", "Address": "10.0.0.9", "Service": {"Service": "web", "Tags": ["v2", "blue"], "Port": 80}}"#;
    let (status, _) = http(&a.http, "PUT", "/v1/catalog/register", reg.as_bytes()).unwrap();
    assert_eq!(status, 200);
    assert_eq!(cli(&a, &["catalog", "datacenters"]).1, "dc1\n");
    let (ok, nodes, err) = cli(&a, &["catalog", "nodes"]);
    assert!(ok, "{err}");
    assert!(nodes.starts_with("Node"), "{nodes}");
    assert!(
        nodes
            .lines()
            .any(|l| l.starts_with("ext ") && l.contains("10.0.0.9")),
        "{nodes}"
    );
    let web = cli(&a, &["catalog", "nodes", "-service=web"]).1;
    assert_eq!(web.lines().count(), 2, "{web}");
    assert_eq!(cli(&a, &["catalog", "services"]).1, "consul\nweb\n");
    let tags = cli(&a, &["catalog", "services", "-tags", "-node=ext"]).1;
    assert_eq!(tags.trim(), "web  blue,v2");
    let (ok, _, err) = cli(&a, &["catalog", "nodes", "-service=nope"]);
    assert!(!ok && err.contains("No nodes match"), "{err}");
}

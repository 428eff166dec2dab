//! `?filter`, `?near`, `/v1/coordinate/datacenters` and force-leave
//! against real agents.

use std::time::Duration;

use serde_json::{json, Value};

#[path = "common/process.rs"]
mod process;
use process::{http, wait_for, Agent};

fn get(a: &Agent, path: &str) -> Value {
    let (s, body) = http(&a.http, "GET", path, b"").expect("HTTP");
    assert_eq!(s, 200, "{path}: {body}");
    serde_json::from_str(&body).expect("JSON")
}

fn names(v: &Value, field: &str) -> Vec<String> {
    let mut out: Vec<String> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i[field].as_str().unwrap().to_string())
        .collect();
    out.sort();
    out
}

#[test]
fn filters_near_sorting_datacenter_coordinates_and_force_leave() {
    let dir = tempfile::tempdir().unwrap();
    let s = Agent::solo_server(dir.path(), "srv");
    let web = Agent::client_of(dir.path(), "web-1", &s);
    let mut db = Agent::client_of(dir.path(), "db-1", &s);
    for (a, body) in [
        (
            &web,
            json!({"Name": "web", "Port": 80, "Tags": ["v1", "primary"], "Meta": {"team": "edge"}}),
        ),
        (&web, json!({"Name": "cache", "Port": 6379})),
        (&db, json!({"Name": "db", "Port": 5432, "Tags": ["v1"]})),
    ] {
        wait_for(Duration::from_secs(20), "the agent's API", || {
            let (st, _) = http(
                &a.http,
                "PUT",
                "/v1/agent/service/register",
                body.to_string().as_bytes(),
            )
            .ok()?;
            (st == 200).then_some(())
        });
    }
    wait_for(
        Duration::from_secs(20),
        "web, cache, db and consul in the catalog",
        || {
            let (st, body) = http(&s.http, "GET", "/v1/catalog/services", b"").ok()?;
            let v: Value = serde_json::from_str(&body).ok()?;
            (st == 200 && v.as_object()?.len() == 4).then_some(())
        },
    );

    // ?filter on the list endpoints, URL-encoded as clients send it.
    let nodes = get(&s, "/v1/catalog/nodes?filter=Node%20%3D%3D%20%22web-1%22");
    assert_eq!(names(&nodes, "Node"), ["web-1"]);
    let nodes = get(&s, "/v1/catalog/nodes?filter=Node%20matches%20%22-1%24%22");
    assert_eq!(names(&nodes, "Node"), ["db-1", "web-1"]);
    let tagged = get(
        &s,
        "/v1/catalog/service/web?filter=primary%20in%20ServiceTags",
    );
    assert_eq!(tagged.as_array().unwrap().len(), 1);
    let none = get(
        &s,
        "/v1/catalog/service/web?filter=ServiceMeta.team%20%3D%3D%20core",
    );
    assert!(none.as_array().unwrap().is_empty());
    let health = get(
        &s,
        "/v1/health/service/db?filter=Service.Port%20%3D%3D%205432",
    );
    assert_eq!(health.as_array().unwrap().len(), 1);
    let local = get(&web, "/v1/agent/services?filter=Service%20%3D%3D%20cache");
    assert_eq!(
        local.as_object().unwrap().keys().collect::<Vec<_>>(),
        ["cache"]
    );
    let (st, body) = http(
        &s.http,
        "GET",
        "/v1/catalog/nodes?filter=Node%20%3D%3D",
        b"",
    )
    .unwrap();
    assert_eq!(st, 400, "{body}");
    assert!(
        body.contains("Failed to create boolean expression evaluator"),
        "{body}"
    );

    // ?near: every node still there; an unknown origin changes nothing.
    wait_for(
        Duration::from_secs(20),
        "coordinates for every node",
        || {
            let v = get(&s, "/v1/coordinate/nodes");
            (v.as_array()?.len() == 3).then_some(())
        },
    );
    let near = get(&s, "/v1/catalog/nodes?near=_agent");
    assert_eq!(names(&near, "Node"), ["db-1", "srv", "web-1"]);
    let plain = get(&s, "/v1/catalog/nodes");
    assert_eq!(get(&s, "/v1/catalog/nodes?near=nobody"), plain);
    let near = get(&s, "/v1/health/service/web?near=db-1&pretty");
    assert_eq!(near.as_array().unwrap().len(), 1);

    let dcs = get(&web, "/v1/coordinate/datacenters");
    assert_eq!(dcs[0]["Datacenter"], "dc1");
    assert_eq!(dcs[0]["AreaID"], "wan");
    assert_eq!(dcs[0]["Coordinates"][0]["Node"], "srv");
    assert!(dcs[0]["Coordinates"][0]["Coord"]["Vec"].is_array());

    // force-leave: refused while alive; a failed node becomes "left"
    // everywhere and its catalog entry goes.
    let (st, body) = http(&s.http, "PUT", "/v1/agent/force-leave/db-1", b"").unwrap();
    assert_eq!(st, 404, "{body}");
    assert!(body.contains("not failed"), "{body}");
    db.kill();
    let status_of = |a: &Agent, name: &str| {
        get(a, "/v1/agent/members")
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["Name"] == name)
            .map(|m| m["Status"].as_u64().unwrap())
    };
    // Both must see it failed: the force-leave goes to web's agent, which
    // refuses it while it still holds db-1 alive or suspect.
    wait_for(Duration::from_secs(20), "db-1 to fail", || {
        (status_of(&s, "db-1") == Some(4) && status_of(&web, "db-1") == Some(4)).then_some(())
    });
    let out = process::cairn(&["force-leave", "db-1", &format!("-http-addr={}", web.http)]);
    assert!(out.status.success(), "{out:?}");
    for a in [&s, &web] {
        wait_for(Duration::from_secs(10), "db-1 to have left", || {
            (status_of(a, "db-1") == Some(3)).then_some(())
        });
    }
    wait_for(Duration::from_secs(20), "db-1 out of the catalog", || {
        let nodes = get(&s, "/v1/catalog/nodes");
        (!names(&nodes, "Node").contains(&"db-1".to_string())).then_some(())
    });
    let (st, body) = http(&s.http, "PUT", "/v1/agent/force-leave/nobody", b"").unwrap();
    assert_eq!(
        (st, body.as_str()),
        (500, "agent: No node found with name 'nobody'")
    );
}

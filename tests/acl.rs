//! ACLs on a real agent with `default_policy = "deny"`: anonymous requests
//! are refused with Consul's status and message on every protected
//! endpoint and see nothing in lists; a token with `key_prefix "app/"`
//! write can write `app/x` but not read `secret/y`; lists say when they
//! were filtered; DNS answers only what its token may read; and a client
//! speaking RPC to the server directly is held to the same rules.

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

#[path = "common/process.rs"]
mod process;
use process::{cli, wait_for, Agent, FAST_GOSSIP};

const ROOT: &str = "3f1b1d7e-0000-4000-8000-00000000root";
const DNS: &str = "3f1b1d7e-0000-4000-8000-000000000dns";

fn config() -> String {
    format!(
        "{FAST_GOSSIP}\nacl {{\n  enabled = true\n  default_policy = \"deny\"\n  tokens {{\n    \
         initial_management = \"{ROOT}\"\n    agent = \"{ROOT}\"\n    dns = \"{DNS}\"\n  }}\n}}\n"
    )
}

/// One request with `token` sent as `how` (`header`, `bearer`, `query`,
/// or none for ""): status, head, body.
fn req(
    a: &Agent,
    method: &str,
    path: &str,
    token: &str,
    how: &str,
    body: &str,
) -> (u16, String, String) {
    let mut path = path.to_string();
    let mut extra = String::new();
    match how {
        "header" => extra = format!("X-Consul-Token: {token}\r\n"),
        "bearer" => extra = format!("Authorization: Bearer {token}\r\n"),
        "query" => {
            path.push(if path.contains('?') { '&' } else { '?' });
            path.push_str(&format!("token={token}"));
        }
        _ => {}
    }
    match process::http_with(&a.http, method, &path, &extra, body.as_bytes()) {
        Ok((status, head, body)) => (status, head.to_ascii_lowercase(), body),
        // Not listening yet.
        Err(_) => (0, String::new(), String::new()),
    }
}

fn as_root(a: &Agent, method: &str, path: &str, body: &str) -> String {
    let (st, _, out) = req(a, method, path, ROOT, "header", body);
    assert_eq!(st, 200, "{method} {path} as management: {out}");
    out
}

/// A server of its own with [`config`], once the leader has written the
/// initial management token.
fn acl_server(dir: &std::path::Path, name: &str) -> Agent {
    let a = Agent::start(
        dir,
        name,
        &config(),
        &["-server".into(), "-bootstrap-expect=1".into()],
    );
    wait_for(Duration::from_secs(30), "the management token", || {
        let (st, _, body) = req(&a, "GET", "/v1/acl/token/self", ROOT, "header", "");
        (st == 200 && body.contains("Initial Management Token")).then_some(())
    });
    a
}

fn dns_lookup(a: &Agent, name: &str) -> Message {
    let mut m = Message::query();
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(&m.to_vec().unwrap(), &a.dns).unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, _) = s.recv_from(&mut buf).unwrap();
    Message::from_vec(&buf[..n]).unwrap()
}

#[test]
fn default_deny_refuses_anonymous_filters_lists_and_scopes_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let a = acl_server(dir.path(), "acl1");
    as_root(&a, "PUT", "/v1/kv/secret/y", "hidden");
    as_root(
        &a,
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name":"web","Port":80}"#,
    );
    as_root(
        &a,
        "PUT",
        "/v1/agent/service/register",
        r#"{"Name":"db","Port":5432}"#,
    );
    // Anti-entropy puts the services in the catalog; the refusals below
    // name the service a catalog deregistration would touch.
    wait_for(Duration::from_secs(30), "web in the catalog", || {
        let (_, _, body) = req(&a, "GET", "/v1/catalog/service/web", ROOT, "header", "");
        body.contains("\"ServiceID\":\"web\"").then_some(())
    });

    // Anonymous: every protected endpoint refuses with Consul's 403.
    let refused = [
        ("GET", "/v1/kv/secret/y", "", "'key:read' on \"secret/y\""),
        ("PUT", "/v1/kv/app/x", "v", "'key:write' on \"app/x\""),
        ("DELETE", "/v1/kv/app/?recurse", "", "'key:write'"),
        (
            "PUT",
            "/v1/txn",
            r#"[{"KV":{"Verb":"set","Key":"a","Value":""}}]"#,
            "'key:write'",
        ),
        ("GET", "/v1/agent/self", "", "'agent:read' on \"acl1\""),
        ("GET", "/v1/agent/metrics", "", "'agent:read'"),
        ("PUT", "/v1/agent/reload", "", "'agent:write'"),
        ("PUT", "/v1/agent/join/127.0.0.1:1", "", "'agent:write'"),
        ("PUT", "/v1/agent/force-leave/x", "", "'operator:write'"),
        (
            "PUT",
            "/v1/agent/maintenance?enable=true",
            "",
            "'node:write'",
        ),
        (
            "PUT",
            "/v1/agent/service/register",
            r#"{"Name":"api"}"#,
            "'service:write' on \"api\"",
        ),
        (
            "PUT",
            "/v1/agent/service/deregister/web",
            "",
            "'service:write' on \"web\"",
        ),
        (
            "PUT",
            "/v1/agent/check/register",
            r#"{"Name":"c","TTL":"10s"}"#,
            "'node:write'",
        ),
        (
            "PUT",
            "/v1/agent/token/default",
            r#"{"Token":"x"}"#,
            "'acl:write'",
        ),
        (
            "PUT",
            "/v1/catalog/register",
            r#"{"Node":"n1","Address":"10.0.0.1"}"#,
            "'node:write' on \"n1\"",
        ),
        (
            "PUT",
            "/v1/catalog/deregister",
            r#"{"Node":"acl1","ServiceID":"web"}"#,
            "'service:write' on \"web\"",
        ),
        (
            "PUT",
            "/v1/session/create",
            "{}",
            "'session:write' on \"acl1\"",
        ),
        (
            "PUT",
            "/v1/event/fire/deploy",
            "",
            "'event:write' on \"deploy\"",
        ),
        ("GET", "/v1/operator/keyring", "", "'keyring:read'"),
        ("GET", "/v1/connect/ca/configuration", "", "'operator:read'"),
        (
            "PUT",
            "/v1/connect/ca/configuration",
            "{}",
            "'operator:write'",
        ),
        (
            "POST",
            "/v1/connect/intentions",
            r#"{"SourceName":"web","DestinationName":"db","Action":"allow"}"#,
            "'intention:write' on \"db\"",
        ),
        (
            "POST",
            "/v1/query",
            r#"{"Name":"q","Service":{"Service":"web"}}"#,
            "'query:write' on \"q\"",
        ),
        (
            "PUT",
            "/v1/coordinate/update",
            r#"{"Node":"acl1","Coord":{"Vec":[0,0,0,0,0,0,0,0],"Error":1.5,"Adjustment":0,"Height":0.0001}}"#,
            "'node:write' on \"acl1\"",
        ),
        ("GET", "/v1/acl/tokens", "", "'acl:read'"),
        ("GET", "/v1/acl/policies", "", "'acl:read'"),
        (
            "PUT",
            "/v1/acl/policy",
            r#"{"Name":"p","Rules":""}"#,
            "'acl:write'",
        ),
        ("PUT", "/v1/acl/token", "{}", "'acl:write'"),
    ];
    for (method, path, body, says) in refused {
        let (st, _, out) = req(&a, method, path, "", "", body);
        assert_eq!(st, 403, "{method} {path}: {out}");
        assert!(
            out.starts_with("Permission denied: anonymous token lacks permission")
                && out.contains(says),
            "{method} {path}: {out}"
        );
    }
    // Lists answer, empty, and say they were filtered.
    for path in [
        "/v1/catalog/services",
        "/v1/catalog/nodes",
        "/v1/catalog/service/web",
        "/v1/health/service/web",
        "/v1/agent/services",
        "/v1/agent/members",
        "/v1/agent/checks",
        "/v1/coordinate/nodes",
        "/v1/health/state/any",
    ] {
        let (st, head, body) = req(&a, "GET", path, "", "", "");
        if path == "/v1/agent/checks"
            || path == "/v1/health/state/any"
            || path == "/v1/coordinate/nodes"
        {
            // Nothing to hide may be there yet; what is there is hidden.
            assert_eq!(st, 200, "{path}: {body}");
            assert!(body == "[]" || body == "{}", "{path}: {body}");
            continue;
        }
        assert_eq!(st, 200, "{path}: {body}");
        assert!(body == "[]" || body == "{}", "{path}: {body}");
        assert!(
            head.contains("x-consul-results-filtered-by-acls: true"),
            "{path}: {head}"
        );
    }
    // An unknown token is not anonymous: it is refused outright.
    let (st, _, out) = req(&a, "GET", "/v1/catalog/services", "nope", "header", "");
    assert_eq!((st, out.as_str()), (403, "ACL not found"));

    // A policy and a token through the CLI.
    let root_flag = format!("-token={ROOT}");
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "policy",
            "create",
            "-name=app",
            "-rules=key_prefix \"app/\" { policy = \"write\" }",
            &root_flag,
        ],
    );
    assert!(ok, "{out}{err}");
    assert!(out.contains("Name:         app"), "{out}");
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "token",
            "create",
            "-description=app writer",
            "-policy-name=app",
            "-format=json",
            &root_flag,
        ],
    );
    assert!(ok, "{out}{err}");
    let token: serde_json::Value = serde_json::from_str(&out).unwrap();
    let app = token["SecretID"].as_str().unwrap().to_string();
    assert_eq!(token["Policies"][0]["Name"], "app");

    // The app token, presented each of Consul's three ways.
    for how in ["header", "bearer", "query"] {
        let (st, _, out) = req(&a, "PUT", "/v1/kv/app/x", &app, how, "hello");
        assert_eq!((st, out.as_str()), (200, "true"), "{how}");
        let (st, _, out) = req(&a, "GET", "/v1/kv/app/x?raw", &app, how, "");
        assert_eq!((st, out.as_str()), (200, "hello"), "{how}");
        let (st, _, out) = req(&a, "GET", "/v1/kv/secret/y", &app, how, "");
        assert_eq!(st, 403, "{how}: {out}");
        assert!(
            out.contains("lacks permission 'key:read' on \"secret/y\""),
            "{out}"
        );
        assert!(out.contains(token["AccessorID"].as_str().unwrap()), "{out}");
    }
    let (st, _, _) = req(&a, "PUT", "/v1/kv/secret/y", &app, "header", "x");
    assert_eq!(st, 403);
    // A recursive read keeps what the token may read, and says so.
    let (st, head, body) = req(&a, "GET", "/v1/kv/?recurse", &app, "header", "");
    assert_eq!(st, 200, "{body}");
    assert!(
        body.contains("\"app/x\"") && !body.contains("secret/y"),
        "{body}"
    );
    assert!(
        head.contains("x-consul-results-filtered-by-acls: true"),
        "{head}"
    );
    // The CLI with the token from the environment.
    let (ok, out, err) = cli(&a, &["kv", "get", &format!("-token={app}"), "app/x"]);
    assert!(ok && out.trim() == "hello", "{out}{err}");

    // Roles carry policies to tokens.
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "role",
            "create",
            "-name=app-role",
            "-policy-name=app",
            &root_flag,
        ],
    );
    assert!(ok, "{out}{err}");
    let body = as_root(
        &a,
        "PUT",
        "/v1/acl/token",
        r#"{"Roles":[{"Name":"app-role"}],"ExpirationTTL":"3s"}"#,
    );
    let via_role: serde_json::Value = serde_json::from_str(&body).unwrap();
    let via_role = via_role["SecretID"].as_str().unwrap().to_string();
    let (st, _, _) = req(&a, "PUT", "/v1/kv/app/y", &via_role, "header", "1");
    assert_eq!(st, 200);
    // ... until it expires.
    wait_for(Duration::from_secs(10), "the token to expire", || {
        let (st, _, out) = req(&a, "PUT", "/v1/kv/app/y", &via_role, "header", "1");
        (st == 403 && out == "ACL not found").then_some(())
    });

    // A service reader sees web, and only web, in lists and over DNS.
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "policy",
            "create",
            "-name=web-reader",
            "-rules=service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }",
            &root_flag,
        ],
    );
    assert!(ok, "{out}{err}");
    as_root(
        &a,
        "PUT",
        "/v1/acl/token",
        &format!(
            r#"{{"SecretID":"{DNS}","Description":"dns","Policies":[{{"Name":"web-reader"}}]}}"#
        ),
    );
    let (st, head, body) = req(&a, "GET", "/v1/catalog/services", DNS, "header", "");
    assert_eq!(st, 200);
    let services: serde_json::Value = serde_json::from_str(&body).unwrap();
    let names: Vec<&String> = services.as_object().unwrap().keys().collect();
    assert_eq!(names, ["web"], "{body}");
    assert!(head.contains("x-consul-results-filtered-by-acls: true"));
    let web = wait_for(Duration::from_secs(20), "web over DNS", || {
        let m = dns_lookup(&a, "web.service.consul.");
        (m.metadata.response_code == ResponseCode::NoError && !m.answers.is_empty()).then_some(m)
    });
    assert_eq!(web.answers.len(), 1);
    let db = dns_lookup(&a, "db.service.consul.");
    assert!(db.answers.is_empty(), "{db:?}");
    assert_eq!(db.metadata.response_code, ResponseCode::NXDomain);
    // With management, db is there (the DNS token is what hides it).
    let body = as_root(&a, "GET", "/v1/catalog/services", "");
    assert!(body.contains("\"db\""), "{body}");
    // Prepared queries over DNS run with the DNS token too: found by name
    // (executing needs no `query` rule, as in Consul), they find only what
    // the DNS token may read.
    for (name, service) in [("webq", "web"), ("dbq", "db")] {
        as_root(
            &a,
            "POST",
            "/v1/query",
            &format!(r#"{{"Name":"{name}","Service":{{"Service":"{service}"}}}}"#),
        );
    }
    let webq = wait_for(Duration::from_secs(10), "webq over DNS", || {
        let m = dns_lookup(&a, "webq.query.consul.");
        (!m.answers.is_empty()).then_some(m)
    });
    assert_eq!(webq.answers.len(), 1, "{webq:?}");
    let dbq = dns_lookup(&a, "dbq.query.consul.");
    assert!(
        dbq.answers.is_empty(),
        "db is not the DNS token's to see: {dbq:?}"
    );
    // Over HTTP the same: the web reader (no `query` rule) executes both
    // by name, and finds web's instance but not db's; explaining shows
    // the definition, which needs `query` read.
    let (st, _, out) = req(&a, "GET", "/v1/query/webq/execute", DNS, "header", "");
    assert_eq!(st, 200, "{out}");
    let nodes = |out: &str| {
        serde_json::from_str::<serde_json::Value>(out).unwrap()["Nodes"]
            .as_array()
            .map_or(0, Vec::len)
    };
    assert_eq!(nodes(&out), 1, "{out}");
    let (st, _, out) = req(&a, "GET", "/v1/query/dbq/execute", DNS, "header", "");
    assert_eq!((st, nodes(&out)), (200, 0), "{out}");
    let (st, _, out) = req(&a, "GET", "/v1/query/webq/explain", DNS, "header", "");
    assert_eq!(st, 404, "{out}");
    let (st, _, _) = req(&a, "GET", "/v1/query/nothing/execute", DNS, "header", "");
    assert_eq!(st, 404);

    // The initial management token bootstrapped the ACL system.
    let (st, _, body) = req(&a, "PUT", "/v1/acl/bootstrap", "", "", "");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("ACL bootstrap no longer allowed"), "{body}");

    // The CLI lists what there is.
    let (ok, out, err) = cli(&a, &["acl", "token", "list", &root_flag]);
    assert!(ok, "{err}");
    for d in ["Anonymous Token", "Initial Management Token", "app writer"] {
        assert!(out.contains(d), "{d}: {out}");
    }
    let (ok, out, _) = cli(&a, &["acl", "policy", "list"]);
    assert!(!ok, "anonymous may not list policies: {out}");

    // A client speaking RPC to the server directly: no token is the
    // anonymous token, and a token is judged as over HTTP.
    rpc_is_held_to_the_same_rules(SocketAddr::from(([127, 0, 0, 1], a.rpc)), &app);
}

fn rpc_is_held_to_the_same_rules(server: SocketAddr, app: &str) {
    use cairn::env::{Env, TokioEnv};
    use cairn::rpc::Client;
    use cairn::server::{
        Answer, ClientRequest, Consistency, Query as Q, Read, ServerReply, ServerRpc,
    };
    use cairn::state::{Command, KvOp};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let env = TokioEnv::new();
        let client: Client<TokioEnv, ServerRpc, ServerReply> = Client::new(env.clone());
        let ask = |req: ClientRequest| {
            let (client, env) = (&client, &env);
            async move {
                let deadline = env.now() + Duration::from_secs(15);
                match client.call(server, &ServerRpc::Client(req), deadline).await {
                    Ok(ServerReply::Client(r)) => r,
                    other => panic!("unexpected reply: {other:?}"),
                }
            }
        };
        let read = |key: &str| ClientRequest::Read {
            read: Read {
                consistency: Consistency::Default,
                min_index: 0,
                max_wait_ms: 0,
                query: Q::Kv(key.into()),
            },
            hops: 0,
        };
        let write = |key: &str| ClientRequest::Write {
            cmd: Box::new(Command::Kv {
                op: KvOp::Set,
                key: key.into(),
                value: b"rpc".to_vec(),
                flags: 0,
            }),
            hops: 0,
        };
        let r = ask(read("secret/y")).await;
        let why = r.answer.unwrap_err();
        assert!(
            why.starts_with("Permission denied: anonymous token"),
            "{why}"
        );
        let r = ask(write("app/rpc")).await;
        assert!(r.answer.is_err(), "an anonymous RPC write went through");
        let r = ask(write("app/rpc").with_token(app)).await;
        assert_eq!(r.answer, Ok(Answer::Written(true)));
        let r = ask(read("secret/y").with_token(app)).await;
        assert!(r.answer.unwrap_err().contains("'key:read' on \"secret/y\""));
        let r = ask(read("x").with_token("no-such-token")).await;
        assert_eq!(r.answer.unwrap_err(), "ACL not found");
    });
}

#[test]
fn bootstrap_makes_one_management_token_once() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("{FAST_GOSSIP}\nacl {{\n  enabled = true\n  default_policy = \"deny\"\n}}\n");
    let a = Agent::start(
        dir.path(),
        "boot1",
        &config,
        &["-server".into(), "-bootstrap-expect=1".into()],
    );
    // Bootstrapping needs a leader; until then the request fails.
    let token = wait_for(Duration::from_secs(30), "bootstrap", || {
        let (st, _, body) = req(&a, "PUT", "/v1/acl/bootstrap", "", "", "");
        (st == 200).then_some(body)
    });
    let token: serde_json::Value = serde_json::from_str(&token).unwrap();
    assert_eq!(token["Policies"][0]["Name"], "global-management");
    let secret = token["SecretID"].as_str().unwrap();
    let (ok, out, err) = cli(
        &a,
        &["acl", "token", "read", "-self", &format!("-token={secret}")],
    );
    assert!(ok, "{err}");
    assert!(out.contains("Bootstrap Token (Global Management)"), "{out}");
    let (st, _, body) = req(&a, "PUT", "/v1/kv/anything", secret, "header", "x");
    assert_eq!((st, body.as_str()), (200, "true"));
    let (st, _, body) = req(&a, "PUT", "/v1/acl/bootstrap", "", "", "");
    assert_eq!(st, 403, "{body}");
    assert!(body.contains("ACL bootstrap no longer allowed"), "{body}");
}

/// `acl.enable_token_persistence`: a token set through `/v1/agent/token/*`
/// survives a restart; without it, the config's tokens come back.
#[test]
fn agent_tokens_set_at_run_time_survive_a_restart_when_persisted() {
    for persist in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let cfg = format!(
            "{FAST_GOSSIP}\nacl {{\n  enabled = true\n  default_policy = \"deny\"\n  \
             enable_token_persistence = {persist}\n  tokens {{\n    \
             initial_management = \"{ROOT}\"\n    agent = \"{ROOT}\"\n  }}\n}}\n"
        );
        let mut a = Agent::start(
            dir.path(),
            "persist1",
            &cfg,
            &["-server".into(), "-bootstrap-expect=1".into()],
        );
        wait_for(Duration::from_secs(30), "the management token", || {
            let (st, _, body) = req(&a, "GET", "/v1/acl/token/self", ROOT, "header", "");
            (st == 200 && body.contains("Initial Management Token")).then_some(())
        });
        // Requests without a token run as the default token: management.
        as_root(
            &a,
            "PUT",
            "/v1/agent/token/default",
            &format!(r#"{{"Token":"{ROOT}"}}"#),
        );
        let (st, _, out) = req(&a, "PUT", "/v1/kv/p", "", "", "v");
        assert_eq!(st, 200, "as the default token: {out}");
        a.kill();
        a.restart();
        let st = wait_for(Duration::from_secs(30), "the agent back", || {
            let (st, _, _) = req(&a, "PUT", "/v1/kv/p", "", "", "v");
            (st == 200 || st == 403).then_some(st)
        });
        let expected = if persist { 200 } else { 403 };
        assert_eq!(st, expected, "persist = {persist}");
    }
}

/// Service and node identities, templated policies, and roles carrying
/// them grant what Consul's synthetic policies grant, in their datacenter
/// only; bad ones are refused with Consul's words.
#[test]
fn identities_and_templated_policies_grant_what_consul_grants() {
    let dir = tempfile::tempdir().unwrap();
    let a = acl_server(dir.path(), "ident1");
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let secret_of = |body: &str| {
        let (st, _, out) = req(&a, "PUT", "/v1/acl/token", ROOT, "header", body);
        assert_eq!(st, 200, "{body}: {out}");
        json(&out)["SecretID"].as_str().unwrap().to_string()
    };
    let register = |token: &str, name: &str| {
        let body = format!(r#"{{"Name":"{name}","Port":80}}"#);
        req(
            &a,
            "PUT",
            "/v1/agent/service/register",
            token,
            "header",
            &body,
        )
        .0
    };

    // The templates, and a preview with Consul's synthetic ID and name.
    let list = json(&as_root(&a, "GET", "/v1/acl/templated-policies", ""));
    for t in ["builtin/service", "builtin/node", "builtin/dns"] {
        assert_eq!(list[t]["TemplateName"], t, "{list}");
    }
    let (st, _, _) = req(&a, "GET", "/v1/acl/templated-policies", "", "", "");
    assert_eq!(st, 403, "listing templates needs acl:read");
    let one = json(&as_root(
        &a,
        "GET",
        "/v1/acl/templated-policy/name/builtin/node",
        "",
    ));
    assert!(one["Template"]
        .as_str()
        .unwrap()
        .contains("node \"{{.Name}}\""));
    let p = json(&as_root(
        &a,
        "POST",
        "/v1/acl/templated-policy/preview/builtin/service",
        r#"{"Name":"api"}"#,
    ));
    assert!(p["Rules"]
        .as_str()
        .unwrap()
        .contains("service \"api-sidecar-proxy\""));
    assert!(p["Name"]
        .as_str()
        .unwrap()
        .starts_with("synthetic-policy-0a7365727669636520226170692220"));
    let (st, _, out) = req(
        &a,
        "POST",
        "/v1/acl/templated-policy/preview/builtin/service",
        ROOT,
        "header",
        "",
    );
    assert_eq!(st, 400, "{out}");
    assert!(out.contains("name is required"), "{out}");

    // A service identity writes its service (and sidecar), reads the rest.
    let web = secret_of(
        r#"{"ServiceIdentities":[{"ServiceName":"web"}],
            "NodeIdentities":[{"NodeName":"ident1","Datacenter":"dc1"}]}"#,
    );
    assert_eq!(register(&web, "web"), 200);
    assert_eq!(register(&web, "web-sidecar-proxy"), 200);
    assert_eq!(register(&web, "db"), 403);
    let (st, _, _) = req(&a, "GET", "/v1/catalog/services", &web, "header", "");
    assert_eq!(st, 200);
    let (st, _, _) = req(&a, "PUT", "/v1/kv/k", &web, "header", "v");
    assert_eq!(st, 403, "an identity grants no KV");
    let t = json(&as_root(&a, "GET", "/v1/acl/tokens", ""));
    let listed = t
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["SecretID"] == web.as_str())
        .unwrap();
    assert_eq!(listed["ServiceIdentities"][0]["ServiceName"], "web");
    assert_eq!(listed["NodeIdentities"][0]["Datacenter"], "dc1");

    // Limited to another datacenter, it grants nothing here.
    let elsewhere =
        secret_of(r#"{"ServiceIdentities":[{"ServiceName":"web","Datacenters":["dc2"]}]}"#);
    assert_eq!(register(&elsewhere, "web"), 403);

    // Through a role, and as a templated policy.
    let (st, _, out) = req(
        &a,
        "PUT",
        "/v1/acl/role",
        ROOT,
        "header",
        r#"{"Name":"dbs","ServiceIdentities":[{"ServiceName":"db"}]}"#,
    );
    assert_eq!(st, 200, "{out}");
    assert_eq!(json(&out)["ServiceIdentities"][0]["ServiceName"], "db");
    let db = secret_of(r#"{"Roles":[{"Name":"dbs"}]}"#);
    assert_eq!(register(&db, "db"), 200);
    assert_eq!(register(&db, "web"), 403);
    let api = secret_of(
        r#"{"TemplatedPolicies":[{"TemplateName":"builtin/service","TemplateVariables":{"Name":"api"}}]}"#,
    );
    assert_eq!(register(&api, "api"), 200);
    assert_eq!(register(&api, "web"), 403);

    // Refusals, with Consul's words.
    for (body, says) in [
        (
            r#"{"ServiceIdentities":[{"ServiceName":"Web"}]}"#,
            "has an invalid name",
        ),
        (
            r#"{"NodeIdentities":[{"NodeName":"n1"}]}"#,
            "missing the datacenter",
        ),
        (
            r#"{"TemplatedPolicies":[{"TemplateName":"builtin/nope"}]}"#,
            "does not exist",
        ),
        (
            r#"{"Local":true,"ServiceIdentities":[{"ServiceName":"web","Datacenters":["dc1"]}]}"#,
            "local token",
        ),
        (
            r#"{"ExpirationTime":"2001-01-01T00:00:00Z"}"#,
            "cannot be in the past",
        ),
        (
            r#"{"ExpirationTime":"2999-01-01T00:00:00Z","ExpirationTTL":"1h"}"#,
            "cannot both be set",
        ),
    ] {
        let (st, _, out) = req(&a, "PUT", "/v1/acl/token", ROOT, "header", body);
        assert_eq!(st, 400, "{body}: {out}");
        assert!(out.contains(says), "{body}: {out}");
    }
    let (st, _, out) = req(
        &a,
        "PUT",
        "/v1/acl/token",
        ROOT,
        "header",
        r#"{"ExpirationTime":"2999-01-01T00:00:00Z"}"#,
    );
    assert_eq!(st, 200, "{out}");
    assert!(
        out.contains("\"ExpirationTime\":\"2999-01-01T00:00:00Z\""),
        "{out}"
    );

    // The CLI.
    let root = format!("-token={ROOT}");
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "token",
            "create",
            "-service-identity=api:dc1",
            "-node-identity=n2:dc1",
            &root,
        ],
    );
    assert!(ok, "{err}");
    assert!(
        out.contains("Service Identities:\n   api (Datacenters: dc1)"),
        "{out}"
    );
    assert!(out.contains("n2 (Datacenter: dc1)"), "{out}");
    let (ok, out, err) = cli(
        &a,
        &[
            "acl",
            "templated-policy",
            "preview",
            "-name=builtin/node",
            "-var=name:n9",
            &root,
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("node \"n9\""), "{out}");
}

/// A JWT auth method: a login with a valid JWT gets a token bound by the
/// rules whose selectors match its claims; bad JWTs, unmatched logins and
/// logouts of tokens no login made are refused; deleting the method
/// deletes its tokens. Over HTTP and through `cairn login`/`logout`.
#[test]
fn jwt_login_binds_what_the_rules_say_and_logout_deletes_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let a = acl_server(dir.path(), "jwt1");
    let json = |s: &str| -> serde_json::Value { serde_json::from_str(s).unwrap() };
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let signer = jsonwebtoken::EncodingKey::from_ec_pem(key.serialize_pem().as_bytes()).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let jwt = |claims: serde_json::Value| {
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::encode(&header, &claims, &signer).unwrap()
    };
    let good = serde_json::json!({
        "iss": "https://idp", "aud": "cairn", "exp": now + 600,
        "service": "web", "groups": ["mesh"],
    });

    let method = serde_json::json!({
        "Name": "idp", "Type": "jwt", "MaxTokenTTL": "1h",
        "Config": {
            "JWTValidationPubKeys": [key.public_key_pem()],
            "JWTSupportedAlgs": ["ES256"],
            "BoundIssuer": "https://idp",
            "BoundAudiences": ["cairn"],
            "ClaimMappings": {"service": "svc"},
            "ListClaimMappings": {"groups": "groups"},
        },
    });
    let m = json(&as_root(
        &a,
        "PUT",
        "/v1/acl/auth-method",
        &method.to_string(),
    ));
    assert_eq!(m["MaxTokenTTL"], "1h0m0s");
    assert_eq!(
        m["Config"]["ClaimMappings"]["service"], "svc",
        "claim names keep their case"
    );
    let (st, _, out) = req(
        &a,
        "PUT",
        "/v1/acl/auth-method",
        ROOT,
        "header",
        r#"{"Name":"k8s","Type":"kubernetes"}"#,
    );
    assert_eq!(st, 400, "{out}");
    let rule = r#"{"AuthMethod":"idp","BindType":"service","BindName":"${value.svc}",
                   "Selector":"\"mesh\" in list.groups"}"#;
    let r = json(&as_root(&a, "PUT", "/v1/acl/binding-rule", rule));
    assert_eq!(r["BindName"], "${value.svc}");
    let (st, _, out) = req(
        &a,
        "PUT",
        "/v1/acl/binding-rule",
        ROOT,
        "header",
        r#"{"AuthMethod":"idp","BindType":"service","BindName":"x","Selector":"value.svc =="}"#,
    );
    assert_eq!(st, 400, "{out}");
    assert!(out.contains("Selector"), "{out}");

    let login = |bearer: &str| {
        let body =
            serde_json::json!({"AuthMethod": "idp", "BearerToken": bearer, "Meta": {"pod": "p1"}});
        req(&a, "POST", "/v1/acl/login", "", "", &body.to_string())
    };
    let (st, _, out) = login(&jwt(good.clone()));
    assert_eq!(st, 200, "{out}");
    let t = json(&out);
    assert_eq!(t["AuthMethod"], "idp");
    assert_eq!(t["ServiceIdentities"][0]["ServiceName"], "web");
    assert_eq!(t["Local"], true);
    assert!(
        t["ExpirationTime"].is_string(),
        "MaxTokenTTL sets the expiry"
    );
    assert_eq!(t["Description"], r#"token created via login: {"pod":"p1"}"#);
    let secret = t["SecretID"].as_str().unwrap().to_string();
    let register = |token: &str, name: &str| {
        let body = format!(r#"{{"Name":"{name}","Port":80}}"#);
        req(
            &a,
            "PUT",
            "/v1/agent/service/register",
            token,
            "header",
            &body,
        )
        .0
    };
    assert_eq!(register(&secret, "web"), 200);
    assert_eq!(register(&secret, "db"), 403);

    // Refused logins: another issuer, expired, unsigned by the key, no
    // rule matching, no such method, no bearer token.
    let mut other = good.clone();
    other["iss"] = "https://evil".into();
    let mut old = good.clone();
    old["exp"] = (now - 3600).into();
    let mut outsider = good.clone();
    outsider["groups"] = serde_json::json!(["guests"]);
    let forged = {
        let k = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let e = jsonwebtoken::EncodingKey::from_ec_pem(k.serialize_pem().as_bytes()).unwrap();
        let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
        jsonwebtoken::encode(&header, &good, &e).unwrap()
    };
    for (bearer, says) in [
        (jwt(other), "issuer"),
        (jwt(old), "expired"),
        (forged, "signature"),
        (jwt(outsider), "no binding rule"),
    ] {
        let (st, _, out) = login(&bearer);
        assert_eq!(st, 403, "{says}: {out}");
        assert!(out.contains(says), "{says}: {out}");
    }
    let (st, _, out) = req(
        &a,
        "POST",
        "/v1/acl/login",
        "",
        "",
        r#"{"AuthMethod":"nope","BearerToken":"x"}"#,
    );
    assert_eq!(st, 403, "{out}");
    let (st, _, out) = req(
        &a,
        "POST",
        "/v1/acl/login",
        "",
        "",
        r#"{"AuthMethod":"idp"}"#,
    );
    assert_eq!(st, 400, "{out}");

    // Only a login's token may log out.
    let (st, _, out) = req(&a, "POST", "/v1/acl/logout", ROOT, "header", "");
    assert_eq!(st, 403, "{out}");
    let (st, _, out) = req(&a, "POST", "/v1/acl/logout", &secret, "header", "");
    assert_eq!(st, 200, "{out}");
    let (st, _, _) = req(&a, "GET", "/v1/acl/token/self", &secret, "header", "");
    assert_eq!(st, 403, "the token is gone");

    // The CLI: the secret lands in a file only its owner reads.
    let bearer_file = dir.path().join("jwt");
    let sink = dir.path().join("token");
    std::fs::write(&bearer_file, jwt(good.clone())).unwrap();
    let (ok, _, err) = cli(
        &a,
        &[
            "login",
            "-method=idp",
            &format!("-bearer-token-file={}", bearer_file.display()),
            &format!("-token-sink-file={}", sink.display()),
        ],
    );
    assert!(ok, "{err}");
    let cli_secret = std::fs::read_to_string(&sink).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&sink).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert_eq!(register(&cli_secret, "web"), 200);

    // Deleting the method deletes its rules and the tokens it made.
    as_root(&a, "DELETE", "/v1/acl/auth-method/idp", "");
    let (st, _, _) = req(&a, "GET", "/v1/acl/token/self", &cli_secret, "header", "");
    assert_eq!(st, 403, "the method's tokens went with it");
    let rules = json(&as_root(&a, "GET", "/v1/acl/binding-rules", ""));
    assert_eq!(rules, serde_json::json!([]));
}

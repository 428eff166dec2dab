//! Tests of reading agent configuration files and flags ([`super`]).

use super::*;

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn json_and_hcl_files_merge_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let a = write(
        dir.path(),
        "a.json",
        r#"{"node_name": "web-1", "ports": {"http": 8501, "serf_lan": 9301},
            "retry_join": ["10.0.0.1", "10.0.0.2:9301"], "node_meta": {"rack": "r1"}}"#,
    );
    let b = write(
        dir.path(),
        "b.hcl",
        "datacenter = \"east\"\nports {\n  http = 8502\n}\ngossip_lan {\n  probe_interval = \"500ms\"\n}\n",
    );
    let mut c = AgentConfig::default();
    c.merge_file(&a).unwrap();
    c.merge_file(&b).unwrap();
    assert_eq!(c.node_name, "web-1");
    assert_eq!(c.datacenter, "east");
    assert_eq!(c.ports.http, 8502);
    assert_eq!(c.ports.serf_lan, 9301);
    assert_eq!(c.retry_join, ["10.0.0.1", "10.0.0.2:9301"]);
    assert_eq!(c.node_meta["rack"], "r1");
    assert_eq!(
        c.gossip_config().unwrap().probe_interval,
        Duration::from_millis(500)
    );
    let mut d = AgentConfig::default();
    d.merge_dir(dir.path()).unwrap();
    assert_eq!(d, c);
}

#[test]
fn wan_pool_settings_come_from_files_and_only_servers_join() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = AgentConfig::default();
    let p = write(
        dir.path(),
        "wan.hcl",
        "server = true\nretry_join_wan = [\"10.1.0.1\"]\nstart_join_wan = [\"10.2.0.1:9302\"]\n\
         gossip_wan {\n  probe_interval = \"6s\"\n}\n",
    );
    c.merge_file(&p).unwrap();
    assert_eq!(c.retry_join_wan, ["10.1.0.1"]);
    assert_eq!(c.start_join_wan, ["10.2.0.1:9302"]);
    let wan = c.gossip_wan_config().unwrap();
    assert_eq!(wan.probe_interval, Duration::from_secs(6));
    assert_eq!(
        wan.probe_timeout,
        GossipConfig::wan().probe_timeout,
        "the WAN preset"
    );
    c.dev = true;
    c.bind_addr = [127, 0, 0, 1].into();
    c.validate().unwrap();
    c.ports.serf_wan = 0;
    assert!(c.validate().unwrap_err().0.contains("WAN pool is off"));
    c.server = false;
    assert!(c.validate().unwrap_err().0.contains("only servers"));
    let p = write(dir.path(), "off.hcl", "ports { serf_wan = -1 }\n");
    let mut c = AgentConfig::default();
    c.merge_file(&p).unwrap();
    assert_eq!(c.ports.serf_wan, 0);
    let p = write(dir.path(), "bad.hcl", "ports { http = -1 }\n");
    assert!(AgentConfig::default().merge_file(&p).is_err());
    let p = write(dir.path(), "bad2.hcl", "gossip_wan { probe = \"1s\" }\n");
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(e.contains("gossip_wan.probe"), "{e}");
}

#[test]
fn dns_settings_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut c = AgentConfig::default();
    let p = write(
        dir.path(),
        "dns.hcl",
        "domain = \"Cairn.Test.\"\nrecursors = [\"10.0.0.53\", \"[::1]:5353\"]\n\
         ports { dns = -1 }\n\
         dns_config {\n  max_stale = \"5s\"\n  allow_stale = false\n  udp_answer_limit = 10\n}\n",
    );
    c.merge_file(&p).unwrap();
    assert_eq!(c.dns.domain, "cairn.test");
    assert_eq!(c.ports.dns, 0, "-1 turns DNS off");
    assert_eq!(
        c.dns.recursors,
        [
            "10.0.0.53:53".parse().unwrap(),
            "[::1]:5353".parse().unwrap()
        ]
    );
    assert_eq!(c.dns.max_stale, Duration::from_secs(5));
    assert!(!c.dns.allow_stale);
    assert_eq!(c.dns.udp_answer_limit, 10);
    for (text, says) in [
        ("dns_config { stale = true }", "dns_config.stale"),
        ("recursors = [\"resolver.local\"]", "not an IP address"),
        ("domain = \"bad domain\"", "domain name"),
    ] {
        let p = write(dir.path(), "bad.hcl", text);
        let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
        assert!(e.contains("bad.hcl") && e.contains(says), "{e}");
    }
}

#[test]
fn acl_settings_come_from_files() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(
        dir.path(),
        "acl.hcl",
        "acl {\n  enabled = true\n  default_policy = \"deny\"\n  down_policy = \"deny\"\n  token_ttl = \"5s\"\n  tokens {\n    initial_management = \"m\"\n    agent = \"a\"\n    dns = \"d\"\n  }\n}\n",
    );
    let mut c = AgentConfig::default();
    c.merge_file(&p).unwrap();
    assert!(c.acl.enabled && !c.acl.default_allow);
    assert_eq!(c.acl.down_policy, crate::acl::DownPolicy::Deny);
    assert_eq!(c.acl.token_ttl, Duration::from_secs(5));
    assert_eq!(c.acl.agent_token(), "a");
    assert_eq!(c.acl.dns_token(), "d");
    assert_eq!(c.acl.default_token(), crate::acl::ANONYMOUS_SECRET);
    for (text, says) in [
        ("acl { default_policy = \"maybe\" }", "acl.default_policy"),
        ("acl { down_policy = \"later\" }", "invalid down_policy"),
        (
            "acl {\n  tokens {\n    root = \"x\"\n  }\n}",
            "acl.tokens.root",
        ),
        ("acl { enable = true }", "acl.enable"),
    ] {
        let p = write(dir.path(), "bad.hcl", text);
        let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
        assert!(e.contains("bad.hcl") && e.contains(says), "{text}: {e}");
    }
}

#[test]
fn unknown_and_mistyped_keys_name_the_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write(dir.path(), "x.json", r#"{"node_nmae": "a"}"#);
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(
        e.contains("x.json") && e.contains("\"node_nmae\"") && e.contains("node_name"),
        "{e}"
    );
    let p = write(dir.path(), "y.json", r#"{"ports": {"http": 70000}}"#);
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(e.contains("ports.http") && e.contains("port number"), "{e}");
    let p = write(dir.path(), "z.json", "{\n \"node_name\": \n}");
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(e.contains("z.json:3:"), "{e}");
    let p = write(
        dir.path(),
        "w.hcl",
        "gossip_lan { probe_interval = \"fast\" }",
    );
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(e.contains("gossip_lan.probe_interval"), "{e}");
}

#[test]
fn consul_keys_cairn_lacks_are_accepted_unless_they_would_protect() {
    let dir = tempfile::tempdir().unwrap();
    // A config as a Consul user writes it: keys cairn does not act on
    // start the agent, and are noted for a warning.
    let p = write(
        dir.path(),
        "consul.hcl",
        "primary_datacenter = \"dc1\"\nui_config {\n  enabled = true\n}\n\
         acl {\n  enabled = true\n  enable_token_persistence = true\n  enable_token_replication = false\n}\n\
         tls {\n  defaults {\n    verify_incoming = false\n  }\n}\nports {\n  grpc = 8502\n}\n\
         telemetry {\n  prometheus_retention_time = \"24h\"\n}\nnode_meta {\n  rack = \"r1\"\n}\n",
    );
    let mut c = AgentConfig::default();
    c.merge_file(&p).unwrap();
    assert!(c.acl.enable_token_persistence);
    assert_eq!(c.node_meta["rack"], "r1");
    // Keys cairn now implements take effect.
    assert_eq!(c.primary_datacenter.as_deref(), Some("dc1"));
    assert!(!c.acl.enable_token_replication);
    for k in [
        "ui_config.enabled",
        "tls.defaults.verify_incoming",
        "ports.grpc",
        "telemetry.prometheus_retention_time",
    ] {
        assert!(c.ignored.iter().any(|i| i == k), "{k}: {:?}", c.ignored);
    }
    // A protection cairn does not have is never silently off.
    for (text, key) in [
        (
            r#"{"tls": {"defaults": {"verify_incoming": true}}}"#,
            "tls.defaults.verify_incoming",
        ),
        (r#"{"auto_encrypt": {"tls": true}}"#, "auto_encrypt.tls"),
        (
            r#"{"acl": {"enable_key_list_policy": true}}"#,
            "acl.enable_key_list_policy",
        ),
        (r#"{"verify_incoming_rpc": true}"#, "verify_incoming_rpc"),
    ] {
        let p = write(dir.path(), "p.json", text);
        let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
        assert!(e.contains(key) && e.contains("protection"), "{text}: {e}");
    }
    // What Consul does not know either is refused, with a suggestion.
    let p = write(
        dir.path(),
        "t.hcl",
        "acl { enable_token_persistance = true }",
    );
    let e = AgentConfig::default().merge_file(&p).unwrap_err().0;
    assert!(
        e.contains("\"acl.enable_token_persistance\"")
            && e.contains("did you mean \"acl.enable_token_persistence\""),
        "{e}"
    );
}

#[test]
fn validation_explains_what_to_fix() {
    let mut c = AgentConfig {
        data_dir: Some("/tmp/x".into()),
        ..AgentConfig::default()
    };
    assert!(c.validate().unwrap_err().0.contains("-advertise"));
    c.advertise_addr = Some("10.0.0.5".parse().unwrap());
    c.validate().unwrap();
    c.node_id = Some("nope".into());
    assert!(c.validate().unwrap_err().0.contains("UUID"));
    assert!(AgentConfig::default().validate().is_err(), "no data dir");
    AgentConfig::dev().validate().unwrap();
}

/// The file py-consul's test fixture hands Consul (its
/// `CONSUL_LOCAL_CONFIG`, with ACLs), byte for byte: it must start an
/// agent unchanged.
#[test]
fn py_consuls_fixture_config_loads_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "local.json",
        r#"{"ports": {"https": -1, "dns": -1, "grpc_tls": -1}, "performance": {"raft_multiplier": 1}, "enable_script_checks": true, "primary_datacenter": "dc1", "acl": {"enabled": true, "tokens": {"initial_management": "root"}}}"#,
    );
    let mut c = AgentConfig::default();
    c.merge_file(&f).unwrap();
    assert_eq!((c.ports.https, c.ports.dns), (0, 0));
    assert!(c.enable_script_checks && c.acl.enabled);
    let bad = write(dir.path(), "bad.json", r#"{"ports": {"http": -1}}"#);
    let err = AgentConfig::default().merge_file(&bad).unwrap_err();
    assert!(err.to_string().contains("ports.http"), "{err}");
}

#[test]
fn the_autopilot_block_sets_what_the_leader_stores() {
    let dir = tempfile::tempdir().unwrap();
    let f = write(
        dir.path(),
        "a.hcl",
        "autopilot {\n  cleanup_dead_servers = false\n  last_contact_threshold = \"1s\"\n  max_trailing_logs = 500\n  min_quorum = 3\n  server_stabilization_time = \"20s\"\n}\n",
    );
    let mut c = AgentConfig::default();
    c.merge_file(&f).unwrap();
    assert!(!c.autopilot.cleanup_dead_servers);
    assert_eq!(c.autopilot.last_contact_threshold, "1s");
    assert_eq!(c.autopilot.max_trailing_logs, 500);
    assert_eq!(c.autopilot.min_quorum, 3);
    assert_eq!(c.autopilot.server_stabilization_time, "20s");
    assert_eq!(c.dead_server_grace, Duration::from_secs(20));
}

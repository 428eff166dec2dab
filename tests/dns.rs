//! The DNS interface of a real agent, asked over UDP and TCP with
//! hickory-proto's messages: services (A, SRV, tags, RFC 2782), nodes,
//! reverse lookups, the apex, NXDOMAIN, unhealthy instances hidden,
//! truncation with a TCP retry, and malformed packets.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Edns, Message, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};

#[path = "common/process.rs"]
mod process;
use process::{http, wait_for, Agent};

fn question(name: &str, qtype: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    m
}

fn udp_raw(a: &Agent, bytes: &[u8]) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    s.send_to(bytes, &a.dns).unwrap();
    let mut buf = vec![0u8; 65535];
    let (n, _) = s.recv_from(&mut buf).ok()?;
    Some(buf[..n].to_vec())
}

fn udp(a: &Agent, m: &Message) -> Message {
    let reply = udp_raw(a, &m.to_vec().unwrap()).expect("a UDP answer");
    let r = Message::from_vec(&reply).unwrap();
    assert_eq!(r.metadata.id, m.metadata.id);
    r
}

fn tcp(a: &Agent, m: &Message) -> Message {
    let mut s = TcpStream::connect(&a.dns).unwrap();
    // A server with no leader holds a request up to 7 s (rpc_hold_timeout)
    // before it answers SERVFAIL.
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let bytes = m.to_vec().unwrap();
    s.write_all(&(bytes.len() as u16).to_be_bytes()).unwrap();
    s.write_all(&bytes).unwrap();
    let mut len = [0u8; 2];
    s.read_exact(&mut len).unwrap();
    let mut buf = vec![0u8; u16::from_be_bytes(len) as usize];
    s.read_exact(&mut buf).unwrap();
    Message::from_vec(&buf).unwrap()
}

fn ips(m: &Message) -> Vec<String> {
    let mut v: Vec<String> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0.to_string()),
            RData::AAAA(a) => Some(a.0.to_string()),
            _ => None,
        })
        .collect();
    v.sort();
    v
}

fn register(a: &Agent, body: &str) {
    let (st, out) = http(&a.http, "PUT", "/v1/catalog/register", body.as_bytes()).unwrap();
    assert_eq!(st, 200, "{out}");
}

#[test]
fn consuls_names_answer_from_the_catalog() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::solo_server(dir.path(), "solo");
    // Five web instances: three passing, one warning, one critical; one
    // has its own address.
    for (i, status) in ["passing", "passing", "passing", "warning", "critical"]
        .iter()
        .enumerate()
    {
        let addr = format!("10.0.0.{}", i + 1);
        let svc_addr = if i == 2 { "10.9.9.9" } else { "" };
        register(
            &a,
            &format!(
                r#"{{"Node": "web-{i}", "Address": "{addr}",
                    "Service": {{"Service": "web", "Port": 8080, "Tags": ["v{i}"], "Address": "{svc_addr}"}},
                    "Check": {{"CheckID": "c", "Name": "c", "ServiceID": "web", "Status": "{status}"}}}}"#
            ),
        );
    }
    wait_for(Duration::from_secs(10), "the DNS answer", || {
        let r = udp(&a, &question("web.service.consul.", RecordType::A));
        (r.metadata.response_code == ResponseCode::NoError).then_some(())
    });

    // A over UDP: at most three (udp_answer_limit), never the critical one.
    let r = udp(&a, &question("web.service.consul.", RecordType::A));
    assert!(r.metadata.authoritative);
    assert_eq!(r.answers.len(), 3, "{r:?}");
    assert!(!ips(&r).contains(&"10.0.0.5".to_string()));
    // Over TCP: all four that are not critical.
    let r = tcp(&a, &question("web.service.consul.", RecordType::A));
    assert_eq!(ips(&r), ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.9.9.9"]);
    // Tags, with and without the datacenter, and RFC 2782.
    let r = tcp(&a, &question("v3.web.service.dc1.consul.", RecordType::A));
    assert_eq!(ips(&r), ["10.0.0.4"]);
    let r = tcp(&a, &question("_web._v1.service.consul.", RecordType::SRV));
    assert_eq!(r.answers.len(), 1);
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(srv.port, 8080);
    assert_eq!(srv.target.to_ascii(), "web-1.node.dc1.consul.");
    let mut extra = r.clone();
    extra.answers = r.additionals.clone();
    assert_eq!(ips(&extra), ["10.0.0.2"]);
    // An instance with its own address gets an .addr target.
    let r = tcp(&a, &question("_web._v2.service.consul.", RecordType::SRV));
    let RData::SRV(srv) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(srv.target.to_ascii(), "0a090909.addr.dc1.consul.");
    let r = tcp(&a, &question("0a090909.addr.dc1.consul.", RecordType::A));
    assert_eq!(ips(&r), ["10.9.9.9"]);

    // Nodes, reverse lookups, the apex.
    let r = udp(&a, &question("web-3.node.consul.", RecordType::A));
    assert_eq!(ips(&r), ["10.0.0.4"]);
    let r = udp(&a, &question("4.0.0.10.in-addr.arpa.", RecordType::PTR));
    let RData::PTR(ptr) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(ptr.0.to_ascii(), "web-3.node.dc1.consul.");
    let r = udp(&a, &question("consul.", RecordType::SOA));
    assert!(matches!(r.answers[0].data, RData::SOA(_)), "{r:?}");
    let r = udp(&a, &question("consul.", RecordType::NS));
    let RData::NS(ns) = &r.answers[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(ns.0.to_ascii(), "solo.node.dc1.consul.");

    // Unknown names: NXDOMAIN with the SOA; outside the domain with no
    // recursor: REFUSED.
    for name in [
        "nope.service.consul.",
        "nobody.node.consul.",
        "what.consul.",
    ] {
        let r = udp(&a, &question(name, RecordType::A));
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
        assert!(matches!(r.authorities[0].data, RData::SOA(_)), "{name}");
    }
    let r = udp(&a, &question("example.com.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);

    // The same through dig (Debian's bind9-dnsutils), as an operator asks.
    let (host, port) = a.dns.split_once(':').unwrap();
    let dig = |args: &[&str]| {
        let out = std::process::Command::new("dig")
            .args([&format!("@{host}"), "-p", port, "+time=3", "+tries=1"])
            .args(args)
            .output()
            .expect("run dig (install Debian's bind9-dnsutils; bash .ci/run does)");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let mut short: Vec<String> = dig(&["+tcp", "+short", "web.service.consul"])
        .lines()
        .map(str::to_owned)
        .collect();
    short.sort();
    assert_eq!(short, ["10.0.0.1", "10.0.0.2", "10.0.0.4", "10.9.9.9"]);
    let srv = dig(&["+short", "_web._v1.service.consul", "SRV"]);
    assert_eq!(srv.trim(), "1 1 8080 web-1.node.dc1.consul.");
    let full = dig(&["nope.service.consul"]);
    assert!(
        full.contains("status: NXDOMAIN") && full.contains("AUTHORITY: 1"),
        "{full}"
    );
    let ptr = dig(&["+short", "-x", "10.0.0.4"]);
    assert_eq!(ptr.trim(), "web-3.node.dc1.consul.");
}

#[test]
fn big_answers_truncate_over_udp_and_malformed_packets_get_formerr() {
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        "solo",
        "dns_config { udp_answer_limit = 0 }\n",
        &["-bootstrap-expect=1".into(), "-server".into()],
    );
    wait_for(Duration::from_secs(20), "a leader", || {
        let (st, body) = http(&a.http, "GET", "/v1/status/leader", b"").ok()?;
        (st == 200 && body.len() > 2).then_some(())
    });
    // Sixty instances with long node names: far more than 512 bytes.
    for i in 0..60 {
        register(
            &a,
            &format!(
                r#"{{"Node": "a-rather-long-node-name-for-truncation-{i:02}", "Address": "10.1.0.{i}",
                    "Service": {{"Service": "big", "Port": 80}}}}"#
            ),
        );
    }
    let srv = question("big.service.consul.", RecordType::SRV);
    wait_for(Duration::from_secs(10), "every instance over TCP", || {
        (tcp(&a, &srv).answers.len() == 60).then_some(())
    });
    let r = udp(&a, &srv);
    assert!(r.metadata.truncation, "TC set");
    assert!(r.answers.len() < 60);
    assert!(udp_raw(&a, &srv.to_vec().unwrap()).unwrap().len() <= 512);
    // A client with a bigger EDNS buffer gets more in one datagram.
    let mut big = srv.clone();
    let mut e = Edns::new();
    e.set_max_payload(4096);
    big.set_edns(e);
    let r = udp(&a, &big);
    assert!(r.answers.len() > 20, "{}", r.answers.len());

    // Garbage: FORMERR for the ID it carries; too short to carry one:
    // dropped; a compression loop and a truncated question: FORMERR.
    let reply = udp_raw(&a, b"\x12\x34garbage-garbage").expect("FORMERR");
    let m = Message::from_vec(&reply).unwrap();
    assert_eq!(
        (m.metadata.id, m.metadata.response_code),
        (0x1234, ResponseCode::FormErr)
    );
    assert!(udp_raw(&a, b"\x01").is_none());
    let mut looped = vec![0xab, 0xcd, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    looped.extend_from_slice(&[0xc0, 0x0c, 0x00, 0x01, 0x00, 0x01]);
    let m = Message::from_vec(&udp_raw(&a, &looped).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // A name of 200 one-letter labels (longer than DNS allows): FORMERR.
    let mut long = vec![0x0f, 0x0f, 0x01, 0x00, 0x00, 0x01, 0, 0, 0, 0, 0, 0];
    for _ in 0..200 {
        long.extend_from_slice(&[1, b'a']);
    }
    long.extend_from_slice(&[0, 0x00, 0x01, 0x00, 0x01]);
    let m = Message::from_vec(&udp_raw(&a, &long).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    let whole = srv.to_vec().unwrap();
    let m = Message::from_vec(&udp_raw(&a, &whole[..whole.len() - 3]).unwrap()).unwrap();
    assert_eq!(m.metadata.response_code, ResponseCode::FormErr);
    // And it still answers.
    assert_eq!(tcp(&a, &srv).answers.len(), 60);

    // A stock resolver (hickory-resolver) gets the truncated answer over
    // UDP, asks again over TCP on its own, and ends with all sixty.
    let (host, port) = a.dns.split_once(':').unwrap();
    let mut server = hickory_resolver::config::NameServerConfig::udp_and_tcp(host.parse().unwrap());
    for c in &mut server.connections {
        c.port = port.parse().unwrap();
    }
    let config = hickory_resolver::config::ResolverConfig::from_name_servers(vec![server]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let answers = rt.block_on(async {
        let resolver = hickory_resolver::Resolver::builder_with_config(
            config,
            hickory_resolver::net::runtime::TokioRuntimeProvider::default(),
        )
        .build()
        .expect("a resolver");
        let srv = resolver
            .lookup("big.service.consul.", RecordType::SRV)
            .await
            .expect("SRV through the resolver");
        let ips = resolver
            .lookup_ip("a-rather-long-node-name-for-truncation-07.node.consul.")
            .await
            .expect("a node through the resolver");
        (
            srv.answers().len(),
            ips.iter().map(|ip| ip.to_string()).collect::<Vec<_>>(),
        )
    });
    assert_eq!(answers, (60, vec!["10.1.0.7".to_string()]));
}

#[test]
fn dns_config_and_recursors_shape_the_answers() {
    // A stand-in upstream resolver: answers every question with 192.0.2.7.
    let upstream = UdpSocket::bind("127.0.0.1:0").unwrap();
    let up_addr = upstream.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = upstream.recv_from(&mut buf) {
            let Ok(q) = Message::from_vec(&buf[..n]) else {
                continue;
            };
            let mut r = q.clone();
            r.metadata.message_type = hickory_proto::op::MessageType::Response;
            r.add_answer(hickory_proto::rr::Record::from_rdata(
                q.queries[0].name().clone(),
                60,
                RData::A(hickory_proto::rr::rdata::A([192, 0, 2, 7].into())),
            ));
            let _ = upstream.send_to(&r.to_vec().unwrap(), from);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let a = Agent::start(
        dir.path(),
        "solo",
        "domain = \"cairn.test\"\nalt_domain = \"consul\"\n\
         dns_config {\n  only_passing = true\n  node_ttl = \"30s\"\n  service_ttl = {\n    \"*\" = \"5s\"\n    db = \"1m\"\n  }\n  soa {\n    min_ttl = 7\n  }\n}\n",
        &[
            "-bootstrap-expect=1".into(),
            "-server".into(),
            format!("-recursor={up_addr}"),
        ],
    );
    wait_for(Duration::from_secs(20), "a leader", || {
        let (st, body) = http(&a.http, "GET", "/v1/status/leader", b"").ok()?;
        (st == 200 && body.len() > 2).then_some(())
    });
    for (node, service, status) in [
        ("w1", "web", "passing"),
        ("w2", "web", "warning"),
        ("d1", "db", "passing"),
    ] {
        register(
            &a,
            &format!(
                r#"{{"Node": "{node}", "Address": "10.2.0.{}", "Service": {{"Service": "{service}"}},
                    "Check": {{"CheckID": "c", "Name": "c", "ServiceID": "{service}", "Status": "{status}"}}}}"#,
                node.len() + status.len()
            ),
        );
    }
    let web = question("web.service.cairn.test.", RecordType::A);
    wait_for(Duration::from_secs(10), "web by DNS", || {
        (udp(&a, &web).answers.len() == 1).then_some(())
    });
    // only_passing: the warning instance is hidden too.
    let r = udp(&a, &web);
    assert_eq!(ips(&r), ["10.2.0.9"]);
    assert_eq!(r.answers[0].ttl, 5, "the \"*\" service TTL");
    let r = udp(&a, &question("db.service.consul.", RecordType::A));
    assert_eq!(r.answers[0].ttl, 60, "db's own TTL, under the alt domain");
    let r = udp(&a, &question("w1.node.cairn.test.", RecordType::A));
    assert_eq!(r.answers[0].ttl, 30);
    let r = udp(&a, &question("nope.cairn.test.", RecordType::A));
    let RData::SOA(soa) = &r.authorities[0].data else {
        panic!("{r:?}")
    };
    assert_eq!(soa.minimum, 7, "the negative TTL");
    // Outside the domains: forwarded to the recursor.
    let r = udp(&a, &question("example.org.", RecordType::A));
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&r), ["192.0.2.7"]);
    assert!(r.metadata.recursion_available);
}

/// Four servers lose two: the two left have no quorum and no leader. The
/// one with the default `max_stale` keeps answering from its own store;
/// the one with `max_stale = "1s"` asks the leader once its last contact is
/// older than that, and with no leader to ask it answers SERVFAIL.
#[test]
fn max_stale_bounds_how_old_an_answer_may_be() {
    let dir = tempfile::tempdir().unwrap();
    let server = |name: &str, extra_config: &str, join: Option<u16>| {
        let mut flags = vec!["-server".to_string(), "-bootstrap-expect=4".to_string()];
        if let Some(p) = join {
            flags.push(format!("-retry-join=127.0.0.1:{p}"));
            flags.push("-retry-interval=200ms".into());
        }
        let config = format!(
            "{}autopilot {{\n  server_stabilization_time = \"1s\"\n}}\n{extra_config}",
            process::FAST_GOSSIP
        );
        Agent::start(dir.path(), name, &config, &flags)
    };
    let mut s1 = server("s1", "", None);
    let mut s2 = server("s2", "", Some(s1.serf));
    let patient = server("s3", "", Some(s1.serf));
    // `near` orders answers by RTT; here it must still answer them all.
    let strict = server(
        "s4",
        "dns_config {\n  max_stale = \"1s\"\n  near = \"_agent\"\n}\n",
        Some(s1.serf),
    );
    // Four voters, so that two are no quorum.
    wait_for(Duration::from_secs(30), "four voters", || {
        let (st, body) = http(&s1.http, "GET", "/v1/status/peers", b"").ok()?;
        let peers: Vec<String> = serde_json::from_str(&body).ok()?;
        (st == 200 && peers.len() == 4).then_some(())
    });
    for n in 1..=3 {
        register(
            &s1,
            &format!(
                r#"{{"Node": "n{n}", "Address": "10.3.0.{n}", "Service": {{"Service": "web"}}}}"#
            ),
        );
    }
    let mut all = question("web.service.consul.", RecordType::A);
    all.metadata.recursion_desired = false;
    for a in [&patient, &strict] {
        wait_for(Duration::from_secs(10), "web on both", || {
            (ips(&tcp(a, &all)) == ["10.3.0.1", "10.3.0.2", "10.3.0.3"]).then_some(())
        });
    }
    s1.kill();
    s2.kill();
    // Its lease runs out, the last contact grows past 1 s, then a default
    // read is held up to 7 s for a leader that never comes.
    wait_for(
        Duration::from_secs(25),
        "SERVFAIL from the strict server",
        || (tcp(&strict, &all).metadata.response_code == ResponseCode::ServFail).then_some(()),
    );
    let r = tcp(&patient, &all);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(ips(&r), ["10.3.0.1", "10.3.0.2", "10.3.0.3"]);
}

//! What a DNS question asks, in Consul's names: `<service>.service`,
//! `<tag>.<service>.service`, `_<service>._<tag>.service` (RFC 2782),
//! `<node>.node`, `<query>.query`, each with an optional `.<dc>`, under the domain or the
//! alternate domain; the domain itself (SOA, NS); reverse lookups
//! (`in-addr.arpa`, `ip6.arpa`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// A question cairn answers, or why it does not.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Lookup {
    /// The domain's apex: SOA and NS.
    Apex,
    /// Healthy instances of a service (with a tag, if given).
    Service {
        /// Service name.
        service: String,
        /// Only instances with this tag.
        tag: Option<String>,
        /// Datacenter (`None`: the agent's).
        dc: Option<String>,
    },
    /// What a prepared query (by ID, name or template prefix) finds.
    Query {
        /// The query's ID or name.
        name: String,
        /// Datacenter to run it in (`None`: the agent's).
        dc: Option<String>,
    },
    /// A node's address.
    Node {
        /// Node name.
        node: String,
        /// Datacenter (`None`: the agent's).
        dc: Option<String>,
    },
    /// Which node has this address.
    Reverse(IpAddr),
    /// An address spelled in hex (`<hex>.addr.<dc>`), the SRV target of an
    /// instance whose address is not its node's.
    Addr(IpAddr),
    /// In the domain, but no name cairn knows (NXDOMAIN).
    Unknown,
    /// Outside the domain: for the recursors, if any.
    Outside,
}

/// The labels of `qname` (lowercased, without the root) as a lookup, for
/// `domains` (each lowercased, without a trailing dot, like `consul`).
pub fn parse(qname: &str, domains: &[String]) -> Lookup {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    if let Some(ip) = reverse(&name) {
        return Lookup::Reverse(ip);
    }
    let Some(rest) = domains.iter().find_map(|d| strip_domain(&name, d)) else {
        return Lookup::Outside;
    };
    if rest.is_empty() {
        return Lookup::Apex;
    }
    let labels: Vec<&str> = rest.split('.').collect();
    // `<...>.<type>` or `<...>.<type>.<dc>`.
    let kinds = ["service", "node", "query", "addr"];
    let (kind_at, dc) = match labels.as_slice() {
        [.., k] if kinds.contains(k) => (labels.len() - 1, None),
        [.., k, dc] if kinds.contains(k) => (labels.len() - 2, Some(dc.to_string())),
        _ => return Lookup::Unknown,
    };
    let before = &labels[..kind_at];
    match (labels[kind_at], before) {
        ("addr", [hex]) => from_hex(hex).map_or(Lookup::Unknown, Lookup::Addr),
        ("node", [node]) => Lookup::Node {
            node: node.to_string(),
            dc,
        },
        ("query", [name]) => Lookup::Query {
            name: name.to_string(),
            dc,
        },
        ("service", [service]) => Lookup::Service {
            service: service.to_string(),
            tag: None,
            dc,
        },
        // RFC 2782: `_service._proto` (`_tcp` and `_udp` mean any tag).
        ("service", [s, t]) if s.starts_with('_') && t.starts_with('_') => Lookup::Service {
            service: s[1..].to_string(),
            tag: match &t[1..] {
                "tcp" | "udp" => None,
                tag => Some(tag.to_string()),
            },
            dc,
        },
        ("service", [tag, service]) => Lookup::Service {
            service: service.to_string(),
            tag: Some(tag.to_string()),
            dc,
        },
        _ => Lookup::Unknown,
    }
}

/// The address an `.addr` label spells: 8 hex digits (IPv4) or 32 (IPv6).
fn from_hex(hex: &str) -> Option<IpAddr> {
    if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).ok())
        .collect::<Option<_>>()?;
    match (hex.len(), bytes.len()) {
        (8, 4) => <[u8; 4]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V4(b.into())),
        (32, 16) => <[u8; 16]>::try_from(bytes)
            .ok()
            .map(|b| IpAddr::V6(b.into())),
        _ => None,
    }
}

/// `name` without `.domain` (or `""` for the domain itself).
fn strip_domain<'a>(name: &'a str, domain: &str) -> Option<&'a str> {
    if name == domain {
        return Some("");
    }
    name.strip_suffix(domain)?.strip_suffix('.')
}

/// The address a reverse-lookup name stands for.
fn reverse(name: &str) -> Option<IpAddr> {
    if let Some(rest) = name.strip_suffix(".in-addr.arpa") {
        let octets: Vec<u8> = rest
            .split('.')
            .rev()
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        let o: [u8; 4] = octets.try_into().ok()?;
        return Some(IpAddr::V4(Ipv4Addr::from(o)));
    }
    if let Some(rest) = name.strip_suffix(".ip6.arpa") {
        let nibbles: Vec<u8> = rest
            .split('.')
            .rev()
            .map(|n| u8::from_str_radix(n, 16).ok().filter(|_| n.len() == 1))
            .collect::<Option<_>>()?;
        if nibbles.len() != 32 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, pair) in nibbles.chunks(2).enumerate() {
            b[i] = pair[0] << 4 | pair[1];
        }
        return Some(IpAddr::V6(Ipv6Addr::from(b)));
    }
    None
}

/// The `in-addr.arpa` or `ip6.arpa` name of `ip`.
pub fn reverse_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa.", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut out = String::new();
            for b in v6.octets().iter().rev() {
                out.push_str(&format!("{:x}.{:x}.", b & 0xf, b >> 4));
            }
            out + "ip6.arpa."
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn consul() -> Vec<String> {
        vec!["consul".into(), "cairn.example".into()]
    }

    fn svc(service: &str, tag: Option<&str>, dc: Option<&str>) -> Lookup {
        Lookup::Service {
            service: service.into(),
            tag: tag.map(Into::into),
            dc: dc.map(Into::into),
        }
    }

    #[test]
    fn consuls_names() {
        let d = consul();
        assert_eq!(parse("web.service.consul.", &d), svc("web", None, None));
        assert_eq!(parse("WEB.Service.Consul", &d), svc("web", None, None));
        assert_eq!(
            parse("web.service.dc2.consul.", &d),
            svc("web", None, Some("dc2"))
        );
        assert_eq!(
            parse("v1.web.service.consul.", &d),
            svc("web", Some("v1"), None)
        );
        assert_eq!(
            parse("_web._tcp.service.consul.", &d),
            svc("web", None, None)
        );
        assert_eq!(
            parse("_web._v1.service.dc1.consul.", &d),
            svc("web", Some("v1"), Some("dc1"))
        );
        assert_eq!(
            parse("db-1.node.consul.", &d),
            Lookup::Node {
                node: "db-1".into(),
                dc: None
            }
        );
        assert_eq!(
            parse("db-1.node.dc3.cairn.example.", &d),
            Lookup::Node {
                node: "db-1".into(),
                dc: Some("dc3".into())
            }
        );
        assert_eq!(
            parse("web-failover.query.consul.", &d),
            Lookup::Query {
                name: "web-failover".into(),
                dc: None
            }
        );
        assert_eq!(
            parse("geo-db.query.dc2.consul.", &d),
            Lookup::Query {
                name: "geo-db".into(),
                dc: Some("dc2".into())
            }
        );
        assert_eq!(parse("a.b.query.consul.", &d), Lookup::Unknown);
        assert_eq!(
            parse("0a000001.addr.dc1.consul.", &d),
            Lookup::Addr("10.0.0.1".parse().unwrap())
        );
        assert_eq!(parse("0a00001.addr.dc1.consul.", &d), Lookup::Unknown);
        assert_eq!(parse("consul.", &d), Lookup::Apex);
        assert_eq!(parse("cairn.example.", &d), Lookup::Apex);
        assert_eq!(parse("nope.consul.", &d), Lookup::Unknown);
        assert_eq!(parse("a.b.c.service.consul.", &d), Lookup::Unknown);
        assert_eq!(parse("node.consul.", &d), Lookup::Unknown);
        assert_eq!(parse("example.com.", &d), Lookup::Outside);
        assert_eq!(parse("notconsul.", &d), Lookup::Outside);
        assert_eq!(
            parse("4.3.2.10.in-addr.arpa.", &d),
            Lookup::Reverse("10.2.3.4".parse().unwrap())
        );
    }

    #[test]
    fn reverse_names_round_trip() {
        for ip in ["127.0.0.1", "10.20.30.40", "::1", "2001:db8::ff00:42:8329"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(parse(&reverse_name(ip), &consul()), Lookup::Reverse(ip));
        }
        assert_eq!(parse("1.2.3.in-addr.arpa.", &consul()), Lookup::Outside);
        assert_eq!(parse("x.2.3.4.in-addr.arpa.", &consul()), Lookup::Outside);
    }

    proptest! {
        #[test]
        fn any_name_parses_without_panicking(name in "[a-zA-Z0-9._-]{0,80}") {
            let _ = parse(&name, &consul());
        }
    }
}

//! How the DNS interface answers: Consul's `domain`, `alt_domain`,
//! `recursors` and `dns_config` settings, read by the agent's config and
//! by the answering code alike.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

/// How the DNS interface answers (Consul's `domain`, `alt_domain`,
/// `recursors` and `dns_config`).
#[derive(Debug, Clone, PartialEq)]
pub struct DnsConfig {
    /// The domain, without dots around it (`consul`).
    pub domain: String,
    /// A second domain answered the same way.
    pub alt_domain: Option<String>,
    /// The agent's datacenter.
    pub datacenter: String,
    /// TTL of node records.
    pub node_ttl: u32,
    /// TTL of service records by service name; `*` for the rest.
    pub service_ttls: BTreeMap<String, u32>,
    /// Hide instances with a warning check, not only critical ones.
    pub only_passing: bool,
    /// Most answers in a UDP reply (0: no limit but the size).
    pub udp_answer_limit: usize,
    /// The SOA's minimum TTL: how long resolvers cache a negative answer.
    pub soa_min_ttl: u32,
    /// Where questions outside the domain go (none: refused).
    pub recursors: Vec<SocketAddr>,
    /// Let any server answer (stale reads); otherwise the leader.
    pub allow_stale: bool,
    /// A stale answer from a server that has not heard from the leader for
    /// longer than this is asked again of the leader.
    pub max_stale: Duration,
    /// Order service answers by estimated RTT from this node (`_agent`:
    /// the agent itself), nearest first, as `?near` orders HTTP answers;
    /// `None` shuffles them, Consul's default.
    pub near: Option<String>,
    /// With ACLs on: the token lookups are made with (`acl.tokens.dns`),
    /// so answers hold only what it may read.
    pub acl_token: Option<String>,
}

impl Default for DnsConfig {
    /// Consul's defaults.
    fn default() -> Self {
        DnsConfig {
            domain: "consul".into(),
            alt_domain: None,
            datacenter: "dc1".into(),
            node_ttl: 0,
            service_ttls: BTreeMap::new(),
            only_passing: false,
            udp_answer_limit: 3,
            soa_min_ttl: 0,
            recursors: Vec::new(),
            allow_stale: true,
            // Consul's default: ten years, that is, any stale answer does.
            max_stale: Duration::from_secs(10 * 365 * 24 * 3600),
            near: None,
            acl_token: None,
        }
    }
}

impl DnsConfig {
    /// The TTL of `service`'s records.
    pub fn service_ttl(&self, service: &str) -> u32 {
        self.service_ttls
            .get(service)
            .or_else(|| self.service_ttls.get("*"))
            .copied()
            .unwrap_or(0)
    }

    /// The domain and the alternate domain, lowercased, without dots at
    /// either end (what [`super::names::parse`] expects).
    pub fn domains(&self) -> Vec<String> {
        let clean = |d: &str| d.trim_matches('.').to_ascii_lowercase();
        std::iter::once(clean(&self.domain))
            .chain(self.alt_domain.as_deref().map(clean))
            .collect()
    }
}

//! Building answers: records for what a [`Lookup`] found, Consul's health
//! filtering and ordering, NXDOMAIN with the SOA, and fitting the answer
//! to UDP.

use std::collections::BTreeMap;
use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, NS, PTR, SOA, SRV};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use rand::seq::SliceRandom;
use rand::Rng;

use super::config::DnsConfig;
use super::names::Lookup;
use crate::coordinate::Coordinate;
use crate::server::Instance;
use crate::state::{Health, Node};

/// What the catalog said about a lookup.
#[derive(Debug, Clone, PartialEq)]
pub enum Found {
    /// Nothing to say (unknown names, or a datacenter it cannot reach).
    Nothing,
    /// A service's instances (healthy or not), or the servers for the
    /// apex (the `consul` service).
    Instances(Vec<Instance>),
    /// The node, if the catalog has it.
    Node(Option<Node>),
    /// The nodes with the address asked about.
    Nodes(Vec<Node>),
}

/// Where answers are ordered from: `origin`'s coordinate and the others'.
pub struct Near<'a> {
    from: &'a Coordinate,
    coords: &'a BTreeMap<String, Coordinate>,
}

impl<'a> Near<'a> {
    /// Ordering from `origin`; `None` when it has no coordinate (answers
    /// are then shuffled, as without `near`).
    pub fn new(origin: &str, coords: &'a BTreeMap<String, Coordinate>) -> Option<Self> {
        Some(Near {
            from: coords.get(origin)?,
            coords,
        })
    }

    /// Estimated RTT to `node` in seconds; nodes without a coordinate are
    /// infinitely far, so they go last.
    fn distance(&self, node: &str) -> f64 {
        self.coords
            .get(node)
            .map_or(f64::INFINITY, |c| self.from.distance_to(c).as_secs_f64())
    }
}

/// How the question came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// UDP: the answer must fit the client's buffer.
    Udp,
    /// TCP: anything fits.
    Tcp,
}

/// The largest UDP answer without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The buffer size cairn advertises with EDNS, and the most it sends.
const EDNS_PAYLOAD: u16 = 4096;

/// A response to `req` with no records yet: the same ID, question and
/// recursion-desired bit, authoritative, EDNS echoed.
pub fn response_to(req: &Message, code: ResponseCode) -> Message {
    let mut m = Message::new(req.metadata.id, MessageType::Response, OpCode::Query);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.authoritative = true;
    m.metadata.response_code = code;
    m.add_queries(req.queries.iter().cloned());
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.set_edns(e);
    }
    m
}

/// Whether an instance counts: no critical (or maintenance) check, and no
/// warning either when only passing ones count.
fn healthy(i: &Instance, only_passing: bool) -> bool {
    i.checks.iter().all(|c| match c.status {
        Health::Passing => true,
        Health::Warning => !only_passing,
        Health::Critical | Health::Maintenance => false,
    })
}

/// The address an instance is reached at: its own, else its node's.
fn address_of(i: &Instance) -> Option<IpAddr> {
    i.service
        .address
        .parse()
        .ok()
        .or_else(|| i.node.address.parse().ok())
}

fn name(s: &str) -> Name {
    // Names cairn builds come from catalog names; one that is not a valid
    // DNS name becomes the root rather than failing the whole answer.
    Name::from_ascii(s).unwrap_or_else(|_| Name::root())
}

fn addr_record(owner: &Name, ip: IpAddr, ttl: u32) -> Record {
    let data = match ip {
        IpAddr::V4(v4) => RData::A(A(v4)),
        IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

fn wants(qtype: RecordType, ip: IpAddr) -> bool {
    match qtype {
        RecordType::A => ip.is_ipv4(),
        RecordType::AAAA => ip.is_ipv6(),
        RecordType::ANY => true,
        _ => false,
    }
}

/// The domain's SOA record (in answers for the apex, and in the authority
/// section of negative answers, where its minimum is the negative TTL).
pub fn soa(cfg: &DnsConfig) -> Record {
    let domain = name(&format!("{}.", cfg.domain));
    let mname = name(&format!("ns.{}.", cfg.domain));
    let rname = name(&format!("hostmaster.{}.", cfg.domain));
    let data = SOA::new(mname, rname, 1, 3600, 600, 86400, cfg.soa_min_ttl);
    Record::from_rdata(domain, cfg.soa_min_ttl, RData::SOA(data))
}

/// The answer to `req`, whose question is `lookup`, from what was `found`.
pub fn answer(
    req: &Message,
    lookup: &Lookup,
    found: &Found,
    cfg: &DnsConfig,
    near: Option<&Near>,
    rng: &mut impl Rng,
) -> Message {
    let Some(q) = req.queries.first() else {
        return response_to(req, ResponseCode::FormErr);
    };
    let qname = q.name().clone();
    let qtype = q.query_type();
    let mut m = response_to(req, ResponseCode::NoError);
    match (lookup, found) {
        (Lookup::Apex, Found::Instances(servers)) => {
            let dc = &cfg.datacenter;
            if matches!(qtype, RecordType::SOA | RecordType::ANY) {
                m.add_answer(soa(cfg));
            }
            if matches!(qtype, RecordType::NS | RecordType::ANY) {
                for s in servers {
                    let target = name(&format!("{}.node.{dc}.{}.", s.node.node, cfg.domain));
                    m.add_answer(Record::from_rdata(
                        qname.clone(),
                        cfg.node_ttl,
                        RData::NS(NS(target.clone())),
                    ));
                    if let Some(ip) = address_of(s) {
                        m.add_additional(addr_record(&target, ip, cfg.node_ttl));
                    }
                }
            }
        }
        (Lookup::Service { service, dc, .. }, Found::Instances(all)) => {
            let mut all: Vec<&Instance> = all
                .iter()
                .filter(|i| healthy(i, cfg.only_passing))
                .collect();
            if all.is_empty() {
                return negative(req, cfg);
            }
            // Shuffled first so that instances equally near (or with no
            // coordinate) still share the load.
            all.shuffle(rng);
            // Another datacenter's instances are not near this agent.
            let near = near.filter(|_| {
                dc.as_ref()
                    .is_none_or(|d| d.eq_ignore_ascii_case(&cfg.datacenter))
            });
            if let Some(near) = near {
                let mut keyed: Vec<(f64, &Instance)> = all
                    .into_iter()
                    .map(|i| (near.distance(&i.node.node), i))
                    .collect();
                keyed.sort_by(|a, b| a.0.total_cmp(&b.0));
                all = keyed.into_iter().map(|(_, i)| i).collect();
            }
            let ttl = cfg.service_ttl(service);
            let dc = dc.as_ref().unwrap_or(&cfg.datacenter);
            // Instances sharing an address give one A record.
            let mut answered: Vec<IpAddr> = Vec::new();
            for i in all {
                let Some(ip) = address_of(i) else { continue };
                if qtype == RecordType::SRV {
                    // The node's name as the target when it has the
                    // instance's address; otherwise a name for the address.
                    let own = i.service.address.parse::<IpAddr>().ok();
                    let target = match own {
                        Some(a) if i.node.address.parse::<IpAddr>().ok() != Some(a) => {
                            name(&format!("{}.addr.{dc}.{}.", hex_ip(a), cfg.domain))
                        }
                        _ => name(&format!("{}.node.{dc}.{}.", i.node.node, cfg.domain)),
                    };
                    let warning = i.checks.iter().any(|c| c.status == Health::Warning);
                    let w = if warning {
                        i.service.weights.warning
                    } else {
                        i.service.weights.passing
                    };
                    let srv = SRV::new(
                        1,
                        w.min(u32::from(u16::MAX)) as u16,
                        i.service.port,
                        target.clone(),
                    );
                    m.add_answer(Record::from_rdata(qname.clone(), ttl, RData::SRV(srv)));
                    m.add_additional(addr_record(&target, ip, ttl));
                } else if wants(qtype, ip) && !answered.contains(&ip) {
                    answered.push(ip);
                    m.add_answer(addr_record(&qname, ip, ttl));
                }
            }
            if m.answers.is_empty() {
                m.add_authority(soa(cfg));
            }
        }
        (Lookup::Node { .. }, Found::Node(Some(node))) => match node.address.parse() {
            Ok(ip) if wants(qtype, ip) => {
                m.add_answer(addr_record(&qname, ip, cfg.node_ttl));
            }
            _ => {
                m.add_authority(soa(cfg));
            }
        },
        (Lookup::Addr(ip), _) => {
            if wants(qtype, *ip) {
                m.add_answer(addr_record(&qname, *ip, cfg.node_ttl));
            } else {
                m.add_authority(soa(cfg));
            }
        }
        (Lookup::Reverse(_), Found::Nodes(nodes)) if !nodes.is_empty() => {
            if matches!(qtype, RecordType::PTR | RecordType::ANY) {
                for n in nodes {
                    let target = name(&format!("{}.node.{}.{}.", n.node, n.datacenter, cfg.domain));
                    m.add_answer(Record::from_rdata(
                        qname.clone(),
                        cfg.node_ttl,
                        RData::PTR(PTR(target)),
                    ));
                }
            }
        }
        _ => return negative(req, cfg),
    }
    m
}

/// NXDOMAIN, with the SOA in the authority section (its minimum TTL is how
/// long resolvers may cache the absence).
pub fn negative(req: &Message, cfg: &DnsConfig) -> Message {
    let mut m = response_to(req, ResponseCode::NXDomain);
    m.add_authority(soa(cfg));
    m
}

/// An address as Consul's `<hex>.addr` names spell it.
pub fn hex_ip(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.octets().iter().map(|b| format!("{b:02x}")).collect(),
        IpAddr::V6(v6) => v6.octets().iter().map(|b| format!("{b:02x}")).collect(),
    }
}

/// `m` as bytes for `transport`: over UDP at most `udp_answer_limit`
/// answers, then as many as fit the client's buffer (512 bytes, or its
/// EDNS size), with the TC bit set when any had to go so that the client
/// asks again over TCP.
pub fn encode(mut m: Message, req: &Message, transport: Transport, cfg: &DnsConfig) -> Vec<u8> {
    if transport == Transport::Udp {
        let limit = req.edns.as_ref().map_or(CLASSIC_UDP, |e| {
            usize::from(e.max_payload().clamp(CLASSIC_UDP as u16, EDNS_PAYLOAD))
        });
        if cfg.udp_answer_limit > 0 && m.answers.len() > cfg.udp_answer_limit {
            m.answers.truncate(cfg.udp_answer_limit);
            trim_additionals(&mut m);
        }
        loop {
            match m.to_vec() {
                Ok(bytes) if bytes.len() <= limit => return bytes,
                Ok(_) if !m.additionals.is_empty() => {
                    m.additionals.clear();
                }
                Ok(_) if !m.answers.is_empty() => {
                    m.metadata.truncation = true;
                    m.answers.pop();
                }
                _ => break,
            }
        }
    }
    m.to_vec().unwrap_or_else(|_| {
        response_to(req, ResponseCode::ServFail)
            .to_vec()
            .unwrap_or_default()
    })
}

/// Drops additional records whose owner no answer points at.
fn trim_additionals(m: &mut Message) {
    let targets: Vec<Name> = m
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::SRV(s) => Some(s.target.clone()),
            RData::NS(n) => Some(n.0.clone()),
            _ => None,
        })
        .collect();
    m.additionals.retain(|r| targets.contains(&r.name));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::{Node, Service};
    use hickory_proto::op::Query;
    use rand::SeedableRng;

    fn instance(node: &str, ip: &str) -> Instance {
        Instance {
            node: Node {
                node: node.into(),
                address: ip.into(),
                ..Node::default()
            },
            service: Service {
                service: "web".into(),
                id: "web".into(),
                port: 80,
                ..Service::default()
            },
            checks: Vec::new(),
        }
    }

    use crate::coordinate::on_line as at;

    fn ask(found: &Found, cfg: &DnsConfig, near: Option<&Near>, seed: u64) -> Vec<String> {
        let mut req = Message::query();
        req.add_query(Query::query(
            Name::from_ascii("web.service.consul.").expect("name"),
            RecordType::A,
        ));
        let lookup = Lookup::Service {
            service: "web".into(),
            tag: None,
            dc: None,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        answer(&req, &lookup, found, cfg, near, &mut rng)
            .answers
            .iter()
            .map(|r| r.data.to_string())
            .collect()
    }

    #[test]
    fn near_orders_instances_by_estimated_rtt_and_puts_the_unknown_last() {
        let found = Found::Instances(vec![
            instance("far", "10.0.0.3"),
            instance("unknown", "10.0.0.9"),
            instance("near", "10.0.0.1"),
            instance("mid", "10.0.0.2"),
        ]);
        let coords: BTreeMap<String, Coordinate> = [
            ("me", at(0.0)),
            ("near", at(0.001)),
            ("mid", at(0.02)),
            ("far", at(0.3)),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), c))
        .collect();
        let cfg = DnsConfig {
            udp_answer_limit: 0,
            ..DnsConfig::default()
        };
        let near = Near::new("me", &coords).expect("origin has a coordinate");
        for seed in 0..8 {
            assert_eq!(
                ask(&found, &cfg, Some(&near), seed),
                ["10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.9"],
            );
        }
        assert!(Near::new("stranger", &coords).is_none());
        // Without `near` the order changes from answer to answer.
        let orders: std::collections::BTreeSet<Vec<String>> =
            (0..16).map(|seed| ask(&found, &cfg, None, seed)).collect();
        assert!(orders.len() > 1);
    }
}

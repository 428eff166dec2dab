//! The DNS interface: Consul's names (`web.service.consul`,
//! `_web._tcp.service.dc1.consul`, `db-1.node.consul`, reverse lookups) on
//! UDP and TCP, answered from the catalog with stale reads so that DNS load
//! spreads over the servers instead of landing on the leader.
//!
//! Messages are parsed and written by hickory-proto; the listeners run on
//! the [`Env`] (hickory-server's run on tokio's sockets only), so the same
//! server answers on real sockets and inside the simulator. [`names`] says
//! what a question asks and [`answer`] builds the reply; both are pure.

pub mod answer;
pub mod config;
pub mod names;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::agent::Servers;
use crate::env::{timeout, Env, Task, TcpListener, UdpSocket};
use crate::gossip::Gossip;
use crate::server::{Answer, ClientRequest, Consistency, Query, Read};
use answer::{Found, Transport};
pub use config::DnsConfig;
use names::Lookup;

/// Everything a query needs.
struct Shared<E: Env> {
    env: E,
    cfg: DnsConfig,
    domains: Vec<String>,
    servers: Arc<Servers<E>>,
    /// The agent's gossip node: the coordinates `near` sorts by.
    gossip: Gossip,
    /// The node `near` names, `_agent` resolved to this one.
    near: Option<String>,
    rng: Mutex<ChaCha8Rng>,
    /// On a server agent: each lookup's last catalog answer, with the
    /// index it was read at, reused while the catalog has not changed.
    cache: Mutex<std::collections::HashMap<Lookup, (u64, Arc<Found>)>>,
}

/// Most lookups [`Shared::cache`] keeps (it starts over when full).
const CACHE_MAX: usize = 4096;

/// UDP receive loops of a server agent.
const UDP_LOOPS: usize = 2;

/// Longest a TCP client may take to send its next question.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Longest a recursor may take to answer.
const RECURSOR_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves DNS on `bind` (UDP and TCP) until the returned tasks are dropped.
pub async fn serve<E: Env>(
    env: E,
    bind: SocketAddr,
    cfg: DnsConfig,
    servers: Arc<Servers<E>>,
    gossip: Gossip,
) -> std::io::Result<Vec<Task>> {
    let udp = Arc::new(env.bind_udp(bind).await?);
    let tcp = env.bind_tcp(bind).await?;
    let shared = Arc::new(Shared {
        rng: Mutex::new(ChaCha8Rng::seed_from_u64(env.seed("dns"))),
        cache: Mutex::default(),
        domains: cfg.domains(),
        near: cfg.near.as_ref().map(|n| match n.as_str() {
            "_agent" => gossip.name().to_owned(),
            _ => n.clone(),
        }),
        gossip,
        env: env.clone(),
        cfg,
        servers,
    });
    // A server agent answers from its own store without waiting on the
    // network, so its receive loops answer in place (one per core, all on
    // the one socket); a client agent asks a server, so each question gets
    // a task of its own and a slow answer holds up no other.
    let inline = shared.servers.local().is_some();
    let loops = if inline { UDP_LOOPS } else { 1 };
    let mut tasks: Vec<Task> = (0..loops)
        .map(|_| {
            let (shared, udp) = (shared.clone(), udp.clone());
            env.spawn(async move {
                let mut buf = vec![0u8; 65535];
                loop {
                    let Ok((n, from)) = udp.recv_from(&mut buf).await else {
                        continue;
                    };
                    if inline {
                        answer_udp(&shared, &udp, &buf[..n], from).await;
                        continue;
                    }
                    let (shared2, udp, packet) = (shared.clone(), udp.clone(), buf[..n].to_vec());
                    shared
                        .env
                        .spawn(async move { answer_udp(&shared2, &udp, &packet, from).await })
                        .detach();
                }
            })
        })
        .collect();
    let tcp_task = {
        let shared = shared.clone();
        env.spawn(async move {
            loop {
                let Ok((stream, _)) = tcp.accept().await else {
                    continue;
                };
                let shared2 = shared.clone();
                shared
                    .env
                    .spawn(async move { serve_tcp(&shared2, stream).await })
                    .detach();
            }
        })
    };
    tasks.push(tcp_task);
    Ok(tasks)
}

/// Answers one UDP datagram from `from` (or drops it).
async fn answer_udp<E: Env>(
    shared: &Shared<E>,
    udp: &E::UdpSocket,
    packet: &[u8],
    from: SocketAddr,
) {
    if let Some(reply) = handle(shared, packet, Transport::Udp).await {
        // A lost reply is the client's to retry, as with any UDP answer.
        let _ = udp.send_to(&reply, from).await;
    }
}

/// Answers the questions of one TCP connection (each framed by a 2-byte
/// length) until it closes or idles.
async fn serve_tcp<E: Env>(shared: &Shared<E>, mut stream: E::TcpStream) {
    loop {
        let mut len = [0u8; 2];
        let read = timeout(&shared.env, TCP_IDLE, stream.read_exact(&mut len)).await;
        if !matches!(read, Ok(Ok(_))) {
            return;
        }
        let mut msg = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if !matches!(
            timeout(&shared.env, TCP_IDLE, stream.read_exact(&mut msg)).await,
            Ok(Ok(_))
        ) {
            return;
        }
        let Some(reply) = handle(shared, &msg, Transport::Tcp).await else {
            return;
        };
        let Ok(n) = u16::try_from(reply.len()) else {
            return;
        };
        let mut out = n.to_be_bytes().to_vec();
        out.extend_from_slice(&reply);
        if stream.write_all(&out).await.is_err() {
            return;
        }
    }
}

/// The reply to one message, or `None` to drop it (too short to answer).
async fn handle<E: Env>(
    shared: &Shared<E>,
    packet: &[u8],
    transport: Transport,
) -> Option<Vec<u8>> {
    let req = match Message::from_vec(packet) {
        Ok(m) => m,
        Err(_) => return formerr(packet),
    };
    if req.metadata.message_type != MessageType::Query {
        return None;
    }
    let cfg = &shared.cfg;
    let code = |c| answer::response_to(&req, c);
    if req.metadata.op_code != OpCode::Query {
        return code(ResponseCode::NotImp).to_vec().ok();
    }
    let [q] = req.queries.as_slice() else {
        return code(ResponseCode::FormErr).to_vec().ok();
    };
    let lookup = names::parse(&q.name().to_ascii(), &shared.domains);
    if lookup == Lookup::Outside {
        return Some(recurse(shared, &req, packet).await);
    }
    // A prepared query is answered as the service it found, in the
    // datacenter it found it in.
    let (lookup, fetched) = match lookup {
        Lookup::Query { name, dc } => match run_query(shared, &name, dc.as_deref()).await {
            Ok(Some((lookup, found))) => (lookup, Ok(found)),
            Ok(None) => (Lookup::Unknown, Ok(Arc::new(Found::Nothing))),
            Err(e) => (Lookup::Unknown, Err(e)),
        },
        other => {
            let fetched = fetch(shared, &other).await;
            (other, fetched)
        }
    };
    let reply = match fetched {
        Ok(found) => {
            // Only service answers are ordered, and only then is the
            // gossip node asked for coordinates.
            let coords = match (&shared.near, &lookup) {
                (Some(_), Lookup::Service { .. }) => shared.gossip.coordinates().await.ok(),
                _ => None,
            };
            let near = shared
                .near
                .as_ref()
                .zip(coords.as_ref())
                .and_then(|(origin, c)| answer::Near::new(origin, &c.members));
            let mut rng = shared.rng.lock().unwrap_or_else(|e| e.into_inner());
            answer::answer(&req, &lookup, &found, cfg, near.as_ref(), &mut *rng)
        }
        Err(e) => {
            tracing::debug!(error = %e, "DNS lookup failed");
            code(ResponseCode::ServFail)
        }
    };
    Some(answer::encode(reply, &req, transport, cfg))
}

/// FORMERR for a message that does not parse, if it has an ID to answer.
fn formerr(packet: &[u8]) -> Option<Vec<u8>> {
    let id = u16::from_be_bytes([*packet.first()?, *packet.get(1)?]);
    // A packet that is itself a response is not answered (no loops).
    if packet.get(2).is_some_and(|flags| flags & 0x80 != 0) {
        return None;
    }
    Message::error_msg(id, OpCode::Query, ResponseCode::FormErr)
        .to_vec()
        .ok()
}

/// What the prepared query `name` finds when run in `dc` (`None`: this
/// datacenter): the service lookup it amounts to, and the instances.
/// `None` when there is no such query.
async fn run_query<E: Env>(
    shared: &Shared<E>,
    name: &str,
    dc: Option<&str>,
) -> Result<Option<(Lookup, Arc<Found>)>, String> {
    let here = &shared.cfg.datacenter;
    let dc = dc.filter(|d| !d.eq_ignore_ascii_case(here));
    // With the DNS token, as every other DNS answer: the query runs for
    // anyone who knows its name, and finds what that token may read.
    let token = shared.cfg.acl_token.as_deref();
    let Some((_, e)) = crate::agent::prepared::run(&shared.servers, token, here, dc, name).await?
    else {
        return Ok(None);
    };
    let lookup = Lookup::Service {
        service: e.service,
        tag: None,
        dc: Some(e.datacenter),
    };
    Ok(Some((lookup, Arc::new(Found::Instances(e.nodes)))))
}

/// What the catalog says about `lookup`.
async fn fetch<E: Env>(shared: &Shared<E>, lookup: &Lookup) -> Result<Arc<Found>, String> {
    let ours = |dc: &Option<String>| {
        dc.as_deref()
            .is_none_or(|d| d.eq_ignore_ascii_case(&shared.cfg.datacenter))
    };
    // Another datacenter's names are asked of its servers, through a
    // local server and the WAN pool.
    let remote = match lookup {
        Lookup::Service { dc, .. } | Lookup::Node { dc, .. } if !ours(dc) => dc.clone(),
        _ => None,
    };
    let query = match lookup {
        Lookup::Service { service, tag, .. } => Query::Instances {
            service: service.clone(),
            tag: tag.clone(),
        },
        Lookup::Apex => Query::Instances {
            service: crate::server::reconcile::CONSUL_SERVICE.into(),
            tag: None,
        },
        Lookup::Node { node, .. } => Query::NodeServices(node.clone()),
        Lookup::Reverse(_) => Query::Nodes,
        // Prepared queries are run by `run_query`.
        Lookup::Query { .. } | Lookup::Addr(_) | Lookup::Unknown | Lookup::Outside => {
            return Ok(Arc::new(Found::Nothing))
        }
    };
    // A server agent with stale reads answers from its own store: while
    // the tables a lookup reads keep their index, its answer stands.
    // A server out of touch with the leader for longer than `max_stale`
    // must not answer from its cache either.
    let max_stale = u64::try_from(shared.cfg.max_stale.as_millis()).unwrap_or(u64::MAX);
    let local = shared
        .servers
        .local()
        .filter(|s| remote.is_none() && shared.cfg.allow_stale && s.last_contact_ms() <= max_stale);
    // What the DNS token may read changes with the ACL table too. Both
    // indexes only grow, so their sum changes whenever either does.
    let index = local.map(|s| {
        let acl = if shared.cfg.acl_token.is_some() {
            s.index_of(&Query::AclPolicies)
        } else {
            0
        };
        s.index_of(&query).saturating_add(acl)
    });
    if let Some(index) = index {
        let cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, found)) = cache.get(lookup) {
            if *at == index {
                return Ok(found.clone());
            }
        }
    }
    let read = |consistency| {
        let req = ClientRequest::Read {
            read: Read {
                consistency,
                min_index: 0,
                max_wait_ms: 0,
                query: query.clone(),
            },
            hops: 0,
        };
        let req = req.in_dc(remote.as_deref());
        match &shared.cfg.acl_token {
            Some(token) => req.with_token(token),
            None => req,
        }
    };
    let mut reply = if shared.cfg.allow_stale {
        shared.servers.call(read(Consistency::Stale)).await
    } else {
        shared.servers.call(read(Consistency::Default)).await
    };
    if shared.cfg.allow_stale && reply.last_contact_ms > max_stale {
        // Too stale to trust: the leader answers instead.
        reply = shared.servers.call(read(Consistency::Default)).await;
    }
    let found = Arc::new(match (lookup, reply.answer?) {
        (_, Answer::Instances(v)) => Found::Instances(v),
        (_, Answer::NodeServices(n)) => Found::Node(n.map(|(node, _)| node)),
        (Lookup::Reverse(ip), Answer::Nodes(nodes)) => Found::Nodes(
            nodes
                .into_iter()
                .filter(|n| n.address.parse().ok() == Some(*ip))
                .collect(),
        ),
        (_, other) => return Err(format!("unexpected answer {other:?}")),
    });
    if let Some(index) = index {
        let mut cache = shared.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(lookup.clone(), (index, found.clone()));
    }
    Ok(found)
}

/// A question outside the domain: the first recursor's answer, or REFUSED
/// when there is none, or SERVFAIL when none answers.
async fn recurse<E: Env>(shared: &Shared<E>, req: &Message, packet: &[u8]) -> Vec<u8> {
    let code = |c| {
        let mut m = answer::response_to(req, c);
        m.metadata.authoritative = false;
        m.to_vec().unwrap_or_default()
    };
    if shared.cfg.recursors.is_empty() {
        return code(ResponseCode::Refused);
    }
    for r in &shared.cfg.recursors {
        let any: SocketAddr = if r.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = shared.env.bind_udp(any).await else {
            continue;
        };
        if sock.send_to(packet, *r).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        if let Ok(Ok((n, from))) =
            timeout(&shared.env, RECURSOR_TIMEOUT, sock.recv_from(&mut buf)).await
        {
            if from == *r && n >= 2 && buf[..2] == packet[..2] {
                let mut reply = buf[..n].to_vec();
                // Recursion is available through this agent.
                if reply.len() > 3 {
                    reply[3] |= 0x80;
                }
                return reply;
            }
        }
    }
    code(ResponseCode::ServFail)
}

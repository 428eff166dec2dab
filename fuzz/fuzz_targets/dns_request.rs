//! DNS requests: any packet parses (hickory-proto) or not; each question
//! maps to a lookup in Consul's names, is answered (with nothing found,
//! and with a handful of instances) and encoded for UDP and TCP, never a
//! panic.
#![no_main]
use cairn::dns::answer::{self, Found, Transport};
use cairn::dns::{names, DnsConfig};
use cairn::server::Instance;
use cairn::state::{Node, Service};
use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;
use rand::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let Ok(req) = Message::from_vec(data) else {
        return;
    };
    let cfg = DnsConfig::default();
    let domains = cfg.domains();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
    let instance = |i: u8| Instance {
        node: Node {
            node: format!("n{i}"),
            address: format!("10.0.0.{i}"),
            ..Node::default()
        },
        service: Service {
            service: "web".into(),
            port: 80,
            ..Service::default()
        },
        checks: Vec::new(),
    };
    for q in &req.queries {
        let lookup = names::parse(&q.name().to_ascii(), &domains);
        for found in [
            Found::Nothing,
            Found::Instances((1..=5).map(instance).collect()),
        ] {
            let m = answer::answer(&req, &lookup, &found, &cfg, None, &mut rng);
            for t in [Transport::Udp, Transport::Tcp] {
                let _ = answer::encode(m.clone(), &req, t, &cfg);
            }
        }
    }
});

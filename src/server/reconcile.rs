//! The leader keeps the catalog in step with gossip, as Consul's does:
//! every member of the datacenter's pool has a node entry and a
//! `serfHealth` check, passing while gossip says it is alive and critical
//! once it has failed; a member that left, or was reaped, is deregistered.
//! Nodes registered through the API without a `serfHealth` check (external
//! services) are not gossip's to manage and are left alone.
//!
//! [`reconcile`] is pure: it compares the roster with the store and says
//! which commands would bring the catalog in line (none when it is), so the
//! leader can run it on every membership event and periodically.

use std::collections::BTreeSet;

use crate::gossip::{Member, MemberStatus};
use crate::state::{Check, Command, Health, Node, Service, Store};

/// The ID (and name) of the check gossip keeps on every member.
pub const SERF_CHECK: &str = "serfHealth";

/// The service every server is registered with (port: its RPC port), so
/// clients find servers in the catalog and over DNS as Consul's do.
pub const CONSUL_SERVICE: &str = "consul";

/// The commands that make `store`'s catalog agree with `members`, the
/// gossip pool of datacenter `dc`.
pub fn reconcile(members: &[Member], store: &Store, dc: &str) -> Vec<Command> {
    let mut out = Vec::new();
    let mut in_pool = BTreeSet::new();
    for m in members {
        let tags = m.tags();
        // Another datacenter's member (a WAN pool shares this type).
        if tags.get("dc").is_some_and(|d| d != dc) {
            continue;
        }
        in_pool.insert(m.name.as_str());
        let health = match m.status {
            MemberStatus::Alive | MemberStatus::Leaving => Health::Passing,
            MemberStatus::Failed => Health::Critical,
            MemberStatus::Left => {
                // Only what gossip registered is gossip's to remove.
                if managed(store, &m.name) {
                    out.push(deregister(&m.name));
                }
                continue;
            }
            MemberStatus::None => continue,
        };
        let node = Node {
            id: tags.get("id").cloned().unwrap_or_default(),
            node: m.name.clone(),
            address: m.addr.ip().to_string(),
            datacenter: dc.to_owned(),
            ..Node::default()
        };
        let output = match health {
            Health::Passing => "Agent alive and reachable",
            _ => "Agent not live or unreachable",
        };
        let check = Check {
            node: m.name.clone(),
            check_id: SERF_CHECK.into(),
            name: "Serf Health Status".into(),
            status: health,
            output: output.into(),
            check_type: "serf".into(),
            ..Check::default()
        };
        let service = super::member::server_of(m).map(|srv| Service {
            id: CONSUL_SERVICE.into(),
            service: CONSUL_SERVICE.into(),
            port: srv.rpc.port(),
            ..Service::default()
        });
        let service_in_sync = service.as_ref().is_none_or(|want| {
            store
                .node_services(&m.name)
                .any(|s| s.id == want.id && s.port == want.port)
        });
        if !in_sync(store, &node, &check) || !service_in_sync {
            out.push(Command::Register {
                node: keep_operator_fields(store, node),
                service: service.map(Box::new),
                checks: vec![check],
            });
        }
    }
    // Members gossip has reaped: gone from the pool, still in the catalog.
    for node in store.nodes() {
        if managed(store, &node.node) && !in_pool.contains(node.node.as_str()) {
            out.push(deregister(&node.node));
        }
    }
    out
}

/// Whether gossip registered `node` (it carries the serf check).
fn managed(store: &Store, node: &str) -> bool {
    store.node_checks(node).any(|c| c.check_id == SERF_CHECK)
}

fn deregister(node: &str) -> Command {
    Command::Deregister {
        node: node.to_owned(),
        service_id: None,
        check_id: None,
    }
}

/// The catalog's node with what gossip decides replaced: tagged addresses
/// and metadata set through the API stay.
fn keep_operator_fields(store: &Store, mut node: Node) -> Node {
    if let Some(old) = store.node(&node.node) {
        node.tagged_addresses = old.tagged_addresses.clone();
        node.meta = old.meta.clone();
    }
    node
}

fn in_sync(store: &Store, node: &Node, check: &Check) -> bool {
    let Some(old) = store.node(&node.node) else {
        return false;
    };
    let same_node =
        (&old.id, &old.address, &old.datacenter) == (&node.id, &node.address, &node.datacenter);
    let same_check = store
        .node_checks(&node.node)
        .find(|c| c.check_id == SERF_CHECK)
        .is_some_and(|c| c.status == check.status && c.output == check.output);
    same_node && same_check
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gossip::tags;
    use crate::time::Instant;

    fn member(name: &str, status: MemberStatus, dc: &str) -> Member {
        let tags = [("dc", dc), ("role", "node")]
            .into_iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Member {
            name: name.into(),
            addr: "10.1.2.3:8301".parse().unwrap(),
            meta: tags::encode(&tags).unwrap(),
            status,
            suspect: false,
            incarnation: 1,
            vsn: [1, 5, 5, 2, 5, 5],
            since: Instant::ZERO,
        }
    }

    /// Reconciles `pool` into `store` and applies the result.
    fn sync(store: &mut Store, pool: &[Member]) {
        let cmds = reconcile(pool, store, "dc1");
        apply(store, &cmds);
    }

    /// Applies `cmds` as the log would.
    fn apply(store: &mut Store, cmds: &[Command]) {
        for c in cmds {
            let index = store.last_applied() + 1;
            store.apply(index, 0, c).unwrap();
        }
    }

    #[test]
    fn servers_carry_the_consul_service_with_their_rpc_port() {
        let mut srv = member("s1", MemberStatus::Alive, "dc1");
        let mut t = srv.tags();
        crate::server::member::server_tags(&mut t, 8300, 3);
        t.insert("id".into(), "5f0cbb5c-2a43-4a5e-bd27-8f3d2b0e1a67".into());
        srv.meta = tags::encode(&t).unwrap();
        let pool = [srv, member("c1", MemberStatus::Alive, "dc1")];
        let mut store = Store::new();
        sync(&mut store, &pool);
        let consul: Vec<_> = store.node_services("s1").collect();
        assert_eq!(consul.len(), 1);
        assert_eq!(
            (consul[0].service.as_str(), consul[0].port),
            ("consul", 8300)
        );
        assert_eq!(store.node_services("c1").count(), 0);
        assert!(reconcile(&pool, &store, "dc1").is_empty(), "settled");
    }

    #[test]
    fn gossip_states_become_catalog_health_and_settle() {
        let mut store = Store::new();
        let mut pool = vec![
            member("a", MemberStatus::Alive, "dc1"),
            member("b", MemberStatus::Alive, "dc1"),
            member("far", MemberStatus::Alive, "dc2"),
        ];
        let cmds = reconcile(&pool, &store, "dc1");
        assert_eq!(cmds.len(), 2, "a and b, not the other datacenter's member");
        apply(&mut store, &cmds);
        let a = store.node("a").unwrap();
        assert_eq!(
            (a.address.as_str(), a.datacenter.as_str()),
            ("10.1.2.3", "dc1")
        );
        let health = |s: &Store, n: &str| {
            s.node_checks(n)
                .find(|c| c.check_id == SERF_CHECK)
                .map(|c| c.status)
        };
        assert_eq!(health(&store, "a"), Some(Health::Passing));
        assert!(
            reconcile(&pool, &store, "dc1").is_empty(),
            "in step: nothing to do"
        );

        pool[1].status = MemberStatus::Failed;
        sync(&mut store, &pool);
        assert_eq!(health(&store, "b"), Some(Health::Critical));

        pool[0].status = MemberStatus::Left;
        sync(&mut store, &pool);
        assert!(store.node("a").is_none());
        // b is reaped: out of the pool, so out of the catalog.
        pool.remove(1);
        sync(&mut store, &pool);
        assert!(store.node("b").is_none());
        assert!(reconcile(&pool, &store, "dc1").is_empty());
    }

    #[test]
    fn external_nodes_and_operator_fields_are_left_alone() {
        let mut store = Store::new();
        let external = Command::Register {
            node: Node {
                node: "db.example".into(),
                address: "192.0.2.7".into(),
                ..Node::default()
            },
            service: None,
            checks: vec![],
        };
        apply(&mut store, &[external]);
        let pool = vec![member("a", MemberStatus::Alive, "dc1")];
        sync(&mut store, &pool);
        assert!(store.node("db.example").is_some(), "not gossip's to remove");
        // Metadata set through the API survives a health change.
        let mut with_meta = store.node("a").unwrap().clone();
        with_meta.meta.insert("rack".into(), "r7".into());
        apply(
            &mut store,
            &[Command::Register {
                node: with_meta,
                service: None,
                checks: vec![],
            }],
        );
        let mut failed = pool.clone();
        failed[0].status = MemberStatus::Failed;
        sync(&mut store, &failed);
        assert_eq!(
            store
                .node("a")
                .unwrap()
                .meta
                .get("rack")
                .map(String::as_str),
            Some("r7")
        );
    }
}

//! Reads: answered here or by the leader as the consistency mode asks,
//! blocking until the data passes the index a client has seen, and the
//! answer to every [`Query`] from a store.

use std::time::Duration;

use super::node::{wall_ms, Server, MAX_WAIT_MS};
use super::request::{Answer, ClientReply, ClientRequest, Consistency, Instance, Query, Read};
use crate::env::{timeout_at, Env};
use crate::state::{Check, Node, Service, Store};

/// The index a read of `query` reports now.
fn index_in(store: &Store, query: &Query) -> u64 {
    match query {
        Query::Kv(p) | Query::KvList(p) => store.kv_index(p),
        q => q
            .tables()
            .iter()
            .map(|t| store.index(*t))
            .max()
            .unwrap_or(0),
    }
}

/// The answer to `query` from `store`.
fn answer_in(store: &Store, query: &Query, now_ms: u64, dc: &str) -> Answer {
    let checks = |it: &mut dyn Iterator<Item = &Check>| Answer::Checks(it.cloned().collect());
    let with_checks = |(node, svc): (&Node, &Service)| Instance {
        node: node.clone(),
        service: svc.clone(),
        checks: store
            .instance_checks(&node.node, &svc.id)
            .cloned()
            .collect(),
    };
    match query {
        Query::Kv(key) => Answer::Kv(store.kv_get(key).cloned()),
        Query::KvList(prefix) => {
            Answer::KvList(store.kv_list(prefix).1.into_iter().cloned().collect())
        }
        Query::Nodes => Answer::Nodes(store.nodes().cloned().collect()),
        Query::Coordinates => Answer::Coordinates(
            store
                .coordinates()
                .map(|(n, c)| (n.clone(), c.clone()))
                .collect(),
        ),
        Query::Services => Answer::Services(store.services()),
        Query::Instances { service, tag } => Answer::Instances(
            store
                .service_nodes(service, tag.as_deref())
                .map(with_checks)
                .collect(),
        ),
        Query::AllInstances => Answer::Instances(
            store
                .services()
                .keys()
                .flat_map(|name| store.service_nodes(name, None))
                .map(|(node, svc)| Instance {
                    node: node.clone(),
                    service: svc.clone(),
                    checks: Vec::new(),
                })
                .collect(),
        ),
        Query::NodeServices(name) => Answer::NodeServices(
            store
                .node(name)
                .map(|n| (n.clone(), store.node_services(name).cloned().collect())),
        ),
        Query::NodeChecks(node) => checks(&mut store.node_checks(node)),
        Query::ServiceChecks(service) => checks(
            &mut store
                .checks_in(None)
                .filter(|c| !c.service_id.is_empty() && c.service_name == *service),
        ),
        Query::ChecksIn(health) => checks(&mut store.checks_in(*health)),
        Query::Sessions => Answer::Sessions(store.sessions().cloned().collect()),
        Query::Session(id) => Answer::Sessions(store.session(id).cloned().into_iter().collect()),
        Query::NodeSessions(node) => Answer::Sessions(store.node_sessions(node).cloned().collect()),
        Query::CaRoots => Answer::Ca(Box::new(store.ca().public())),
        Query::Intentions => Answer::Intentions(store.intentions().cloned().collect()),
        Query::PreparedQueries => Answer::PreparedQueries(store.queries().cloned().collect()),
        Query::PreparedQuery(key) => {
            let all: Vec<_> = store.queries().cloned().collect();
            Answer::PreparedQuery(
                crate::state::resolve_query(&all, key)
                    .cloned()
                    .map(Box::new),
            )
        }
        Query::AclResolve(secret) => {
            Answer::AclResolved(store.acl().identity(secret, now_ms, dc).map(Box::new))
        }
        Query::AclTokens => Answer::AclTokens(
            store
                .acl()
                .tokens()
                .map(|t| store.acl().current(t))
                .collect(),
        ),
        Query::AclPolicies => Answer::AclPolicies(store.acl().policies().cloned().collect()),
        Query::AclRoles => Answer::AclRoles(
            store
                .acl()
                .roles()
                .map(|r| crate::acl::Role {
                    policies: store.acl().current_links(&r.policies, false),
                    ..r.clone()
                })
                .collect(),
        ),
        Query::AclAuthMethods => {
            Answer::AclAuthMethods(store.acl().auth_methods().cloned().collect())
        }
        Query::AclBindingRules => {
            Answer::AclBindingRules(store.acl().binding_rules().cloned().collect())
        }
        Query::Autopilot => Answer::Autopilot(store.autopilot()),
        Query::Snapshot => Answer::Snapshot {
            // The store writes JSON, which is UTF-8.
            state: String::from_utf8_lossy(&store.snapshot()).into_owned(),
            index: store.last_applied(),
            term: 0,
        },
        Query::ConnectProxies(dest) => Answer::Instances(
            store
                .services()
                .keys()
                .flat_map(|name| store.service_nodes(name, None))
                .filter(|(_, svc)| {
                    svc.kind == "connect-proxy"
                        && svc
                            .proxy
                            .as_ref()
                            .is_some_and(|p| p.destination_service_name == *dest)
                })
                .map(with_checks)
                .collect(),
        ),
    }
}

impl<E: Env> Server<E> {
    pub(super) async fn read(&self, read: Read, hops: u8, token: Option<&str>) -> ClientReply {
        let local = match read.consistency {
            Consistency::Stale => true,
            // A planted bug (benches/planted_bugs.sh): default reads
            // answered by any server, as stale ones are.
            Consistency::Default if cfg!(cairn_planted = "stale_default_read") => true,
            Consistency::Default | Consistency::Consistent => self.is_leader(),
        };
        if !local {
            return self
                .to_leader(ClientRequest::Read { read, hops }, token)
                .await;
        }
        if read.consistency == Consistency::Consistent {
            if let Err(e) = self.raft.ensure_linearizable().await {
                return ClientReply::refused(&format!("cannot confirm leadership: {e}"));
            }
        }
        if read.consistency == Consistency::Default && self.is_leader() && !self.caught_up().await {
            return ClientReply::refused(
                "the new leader has not yet applied what earlier leaders committed; try again",
            );
        }
        if read.min_index > 0 {
            self.wait_past(&read).await;
            // Still the leader after the wait? A deposed one must not
            // answer for the cluster.
            if read.consistency == Consistency::Consistent {
                if let Err(e) = self.raft.ensure_linearizable().await {
                    return ClientReply::refused(&format!("cannot confirm leadership: {e}"));
                }
            }
        }
        let dc = self.datacenter.get().map_or("", String::as_str);
        let store = self.store.read().unwrap_or_else(|e| e.into_inner());
        let (index, mut answer) = (
            index_in(&store, &read.query),
            answer_in(&store, &read.query, wall_ms(&self.env), dc),
        );
        drop(store);
        if let Answer::Snapshot { index, term, .. } = &mut answer {
            *term = self.term_of(*index);
        }
        ClientReply {
            index: index.max(1),
            known_leader: self.leader().is_some(),
            last_contact_ms: self.last_contact_ms(),
            answer: Ok(answer),
            filtered: false,
        }
    }

    /// Waits (a little) until this leader has applied an entry of its own
    /// term, and says whether it has. Until then its store may lack writes
    /// that earlier leaders committed: a server restarted from its disk
    /// applies only what it knows to be committed, and a leader learns
    /// that by committing the blank entry it appends on election (Raft
    /// §8). A default read answered before would come from the past.
    /// (Consistent reads wait for the same inside `ensure_linearizable`.)
    async fn caught_up(&self) -> bool {
        self.raft
            .wait(Some(super::node::RPC_HOLD_TIMEOUT))
            .metrics(
                |m| {
                    m.last_applied
                        .is_some_and(|l| l.leader_id == *m.vote.leader_id())
                },
                "an entry of its own term applied",
            )
            .await
            .is_ok()
    }

    /// Blocks until the queried data's index passes `read.min_index`, or
    /// `max_wait_ms` runs out.
    pub(super) async fn wait_past(&self, read: &Read) {
        let hub = self
            .store
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .watches();
        // Subscribe first, then look: a change between the two is either
        // seen by the look or delivered to the subscription, never lost.
        // At most three tables; the first stands in for missing ones.
        let mut rx: Vec<_> = match &read.query {
            Query::Kv(p) | Query::KvList(p) => vec![hub.prefix(p, 0)],
            q => q.tables().iter().map(|t| hub.table(*t)).collect(),
        };
        while rx.len() < 3 {
            rx.push(rx[0].clone());
        }
        let min = read.min_index;
        {
            let store = self.store.read().unwrap_or_else(|e| e.into_inner());
            if index_in(&store, &read.query) > min {
                return;
            }
        }
        let wait = Duration::from_millis(read.max_wait_ms.min(MAX_WAIT_MS));
        let deadline = self.env.now() + wait;
        let [a, b, c] = &mut rx[..3] else {
            return;
        };
        let any = async {
            tokio::select! {
                _ = a.wait_for(|i| *i > min) => {}
                _ = b.wait_for(|i| *i > min) => {}
                _ = c.wait_for(|i| *i > min) => {}
            }
        };
        let _ = timeout_at(&self.env, deadline, any).await;
    }

    /// The term of the applied entry at `index` (the current term when
    /// Raft has moved past it since).
    fn term_of(&self, index: u64) -> u64 {
        let m = self.raft.metrics();
        let m = m.borrow();
        match m.last_applied {
            Some(l) if l.index == index => l.leader_id.term,
            _ => m.current_term,
        }
    }

    /// The index a read of `query` would answer with now, from this
    /// server's store (what a cache of such reads is keyed on).
    pub fn index_of(&self, query: &Query) -> u64 {
        index_in(&self.store.read().unwrap_or_else(|e| e.into_inner()), query)
    }
}

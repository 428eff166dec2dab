//! ACL enforcement on the servers: what each request needs of its token,
//! and what a list answer leaves out for it. Every request that reaches a
//! server passes here (with ACLs on), whichever way it came: an agent's
//! HTTP API, its DNS, or a client speaking RPC directly.

use crate::acl::{
    Access, Authorizer, Global, Link, Policy, Resource, Token, ANONYMOUS_ID, ANONYMOUS_SECRET,
    GLOBAL_MANAGEMENT_ID, GLOBAL_MANAGEMENT_NAME, GLOBAL_MANAGEMENT_RULES,
};
use std::sync::{Arc, Mutex};

use crate::server::{Answer, CaOp, ClientRequest, OperatorOp, Query};
use crate::state::acl::AclState;
use crate::state::{Command, KvOp, Store, Table, TxnVerb};

/// Ok, or Consul's refusal.
type Verdict = Result<(), String>;

/// Whether `z` may make `req`; list reads are always allowed (their
/// answers are filtered instead, as Consul's are).
pub(crate) fn authorize(z: &Authorizer, req: &ClientRequest, store: &Store) -> Verdict {
    match req {
        ClientRequest::Write { cmd, .. } => authorize_cmd(z, cmd, store),
        ClientRequest::Read { read, .. } => match &read.query {
            Query::Kv(key) => z.check(Resource::Key, key, Access::Read),
            Query::AclTokens
            | Query::AclPolicies
            | Query::AclRoles
            | Query::AclAuthMethods
            | Query::AclBindingRules => z.check_global(Global::Acl, Access::Read),
            Query::Autopilot => z.check_global(Global::Operator, Access::Read),
            // Every secret is in it: Consul asks for `acl = "write"`.
            Query::Snapshot => z.check_global(Global::Acl, Access::Write),
            _ => Ok(()),
        },
        ClientRequest::Coordinates { updates, .. } => updates
            .iter()
            .try_for_each(|(node, _)| z.check(Resource::Node, node, Access::Write)),
        ClientRequest::Ca { op, .. } => match op {
            CaOp::Roots => Ok(()),
            CaOp::Sign { service, .. } => z.check(Resource::Service, service, Access::Write),
            CaOp::Rotate { .. } => z.check_global(Global::Operator, Access::Write),
        },
        ClientRequest::SessionRenew { id, .. } => match store.session(id) {
            Some(s) => z.check(Resource::Session, &s.node, Access::Write),
            None => Ok(()),
        },
        ClientRequest::Operator { op, .. } => match op {
            OperatorOp::RaftConfiguration | OperatorOp::Health => {
                z.check_global(Global::Operator, Access::Read)
            }
            OperatorOp::RemovePeer { .. }
            | OperatorOp::TransferLeader { .. }
            | OperatorOp::Elect => z.check_global(Global::Operator, Access::Write),
        },
        // Login needs no permission (the credential is the proof);
        // logout checks that a login made the caller's token.
        ClientRequest::Status
        | ClientRequest::Datacenters
        | ClientRequest::Login { .. }
        | ClientRequest::Logout { .. }
        | ClientRequest::AclReplication { .. } => Ok(()),
        // The join token's secret is the proof.
        ClientRequest::Join { .. } => Ok(()),
        // Checked where they are answered.
        ClientRequest::Remote { .. } | ClientRequest::Acl { .. } => Ok(()),
    }
}

/// The name of the service with `id` on `node`, if registered.
fn service_name(store: &Store, node: &str, id: &str) -> Option<String> {
    store
        .node_services(node)
        .find(|s| s.id == id)
        .map(|s| s.service.clone())
}

fn authorize_cmd(z: &Authorizer, cmd: &Command, store: &Store) -> Verdict {
    match cmd {
        Command::Register {
            node,
            service,
            checks,
        } => {
            // The node itself needs write only when it is new or changes
            // address (Consul's rule): an agent's service token need not
            // be able to write its node.
            let same_node = store
                .node(&node.node)
                .is_some_and(|n| n.address == node.address);
            if !same_node {
                z.check(Resource::Node, &node.node, Access::Write)?;
            }
            if let Some(s) = service {
                z.check(Resource::Service, &s.service, Access::Write)?;
            }
            for c in checks {
                if c.service_id.is_empty() {
                    z.check(Resource::Node, &node.node, Access::Write)?;
                } else {
                    let name = service
                        .as_ref()
                        .filter(|s| s.id == c.service_id)
                        .map(|s| s.service.clone())
                        .or_else(|| service_name(store, &node.node, &c.service_id))
                        .unwrap_or_else(|| c.service_name.clone());
                    z.check(Resource::Service, &name, Access::Write)?;
                }
            }
            Ok(())
        }
        Command::Deregister {
            node,
            service_id,
            check_id,
        } => {
            let service = match (service_id, check_id) {
                (Some(id), _) => service_name(store, node, id),
                (None, Some(check)) => store
                    .node_checks(node)
                    .find(|c| c.check_id == *check && !c.service_id.is_empty())
                    .map(|c| c.service_name.clone()),
                (None, None) => None,
            };
            match service {
                Some(s) => z.check(Resource::Service, &s, Access::Write),
                None => z.check(Resource::Node, node, Access::Write),
            }
        }
        Command::Kv { op, key, .. } => match op {
            KvOp::DeleteTree if z.allows_key_write_prefix(key) => Ok(()),
            KvOp::DeleteTree => Err(z.denied("key:write", Some(key))),
            _ => z.check(Resource::Key, key, Access::Write),
        },
        Command::Txn(ops) => ops.iter().try_for_each(|op| match op.verb {
            TxnVerb::Get
            | TxnVerb::GetTree
            | TxnVerb::CheckIndex
            | TxnVerb::CheckSession
            | TxnVerb::CheckNotExists => z.check(Resource::Key, &op.key, Access::Read),
            TxnVerb::DeleteTree if z.allows_key_write_prefix(&op.key) => Ok(()),
            TxnVerb::DeleteTree => Err(z.denied("key:write", Some(&op.key))),
            _ => z.check(Resource::Key, &op.key, Access::Write),
        }),
        Command::SessionCreate(s) => z.check(Resource::Session, &s.node, Access::Write),
        Command::SessionDestroy { id } => match store.session(id) {
            Some(s) => z.check(Resource::Session, &s.node, Access::Write),
            None => Ok(()),
        },
        Command::Coordinates(updates) => updates
            .iter()
            .try_for_each(|(node, _)| z.check(Resource::Node, node, Access::Write)),
        Command::IntentionSet(i) => z.check_intention(&i.destination_name, Access::Write),
        Command::IntentionDelete { id } => match store.intentions().find(|i| i.id == *id) {
            Some(i) => z.check_intention(&i.destination_name, Access::Write),
            None => Ok(()),
        },
        Command::QuerySet(q) => z.check(Resource::Query, &q.name, Access::Write),
        Command::QueryDelete { id } => match store.queries().find(|q| q.id == *id) {
            Some(q) => z.check(Resource::Query, &q.name, Access::Write),
            None => Ok(()),
        },
        // Anyone may try: it succeeds once per cluster.
        Command::AclBootstrap(_) => Ok(()),
        Command::AclTokenSet(_)
        | Command::AclTokenDelete { .. }
        | Command::AclPolicySet(_)
        | Command::AclPolicyDelete { .. }
        | Command::AclRoleSet(_)
        | Command::AclRoleDelete { .. }
        | Command::AclAuthMethodSet(_)
        | Command::AclAuthMethodDelete { .. }
        | Command::AclBindingRuleSet(_)
        | Command::AclBindingRuleDelete { .. }
        | Command::AclReplicate { .. }
        // The agent CA's key and join tickets admit agents: as much as
        // making tokens.
        | Command::AgentCaSet(_)
        | Command::JoinTicketCreate { .. }
        | Command::JoinTicketUse { .. } => z.check_global(Global::Acl, Access::Write),
        Command::ReapTombstones { .. }
        | Command::CaSetRoot { .. }
        | Command::AutopilotSet { .. } => z.check_global(Global::Operator, Access::Write),
        // A snapshot holds every secret: Consul asks for `acl = "write"`.
        Command::Restore { .. } => z.check_global(Global::Acl, Access::Write),
        Command::Batch(cmds) => cmds.iter().try_for_each(|c| authorize_cmd(z, c, store)),
    }
}

/// Leaves out of `answer` what `z` may not read; whether anything was
/// left out (Consul's `X-Consul-Results-Filtered-By-ACLs`).
pub(crate) fn filter(z: &Authorizer, answer: &mut Answer) -> bool {
    if z.is_management() {
        return false;
    }
    let read = |res, name: &str| z.allows(res, name, Access::Read);
    let check_ok = |c: &crate::state::Check| {
        if c.service_id.is_empty() {
            read(Resource::Node, &c.node)
        } else {
            read(Resource::Service, &c.service_name) && read(Resource::Node, &c.node)
        }
    };
    fn retain<T>(v: &mut Vec<T>, keep: impl Fn(&T) -> bool) -> bool {
        let before = v.len();
        v.retain(|x| keep(x));
        v.len() != before
    }
    match answer {
        Answer::KvList(v) => retain(v, |e| read(Resource::Key, &e.key)),
        Answer::Nodes(v) => retain(v, |n| read(Resource::Node, &n.node)),
        Answer::Coordinates(v) => retain(v, |(n, _)| read(Resource::Node, n)),
        Answer::Services(m) => {
            let before = m.len();
            m.retain(|name, _| read(Resource::Service, name));
            m.len() != before
        }
        Answer::Instances(v) => retain(v, |i| {
            read(Resource::Service, &i.service.service) && read(Resource::Node, &i.node.node)
        }),
        Answer::NodeServices(found) => match found {
            Some((node, _)) if !read(Resource::Node, &node.node) => {
                *found = None;
                true
            }
            Some((_, services)) => retain(services, |s| read(Resource::Service, &s.service)),
            None => false,
        },
        Answer::Checks(v) => retain(v, check_ok),
        Answer::Sessions(v) => retain(v, |s| read(Resource::Session, &s.node)),
        Answer::Intentions(v) => {
            retain(v, |i| z.allows_intention(&i.destination_name, Access::Read))
        }
        // A query without a name belongs to no rule: management only.
        Answer::PreparedQueries(v) => {
            retain(v, |q| !q.name.is_empty() && read(Resource::Query, &q.name))
        }
        Answer::AclTokens(v) => {
            // Readers of the ACL system see tokens, not their secrets.
            if !z.allows_global(Global::Acl, Access::Write) {
                for t in v.iter_mut() {
                    t.secret_id = "<hidden>".into();
                }
            }
            false
        }
        // Executing a query needs no `query` rule (see Query::PreparedQuery).
        Answer::PreparedQuery(_)
        | Answer::Kv(_)
        | Answer::Written(_)
        | Answer::Txn(_)
        | Answer::Ca(_)
        | Answer::Leaf(_)
        | Answer::Datacenters(_)
        | Answer::Status { .. }
        | Answer::AclResolved(_)
        | Answer::AclPolicies(_)
        | Answer::AclRoles(_)
        | Answer::AclAuthMethods(_)
        | Answer::AclBindingRules(_)
        | Answer::AclReplication(_)
        | Answer::Admitted(_)
        // Whole answers, behind operator or ACL permissions.
        | Answer::Raft(_)
        | Answer::Autopilot(_)
        | Answer::Snapshot { .. } => false,
    }
}

/// What the leader writes for the ACL system to work, given what `acl`
/// has: the global-management policy, the anonymous token, and a
/// management token with secret `initial_management` (Consul's
/// `acl.tokens.initial_management`), each only when missing.
pub(crate) fn init_commands(
    acl: &AclState,
    initial_management: Option<&str>,
) -> Vec<crate::state::Command> {
    use crate::state::Command;
    let mut out = Vec::new();
    let management = Link {
        id: GLOBAL_MANAGEMENT_ID.into(),
        name: GLOBAL_MANAGEMENT_NAME.into(),
    };
    if acl.policy(GLOBAL_MANAGEMENT_ID).is_none() {
        out.push(Command::AclPolicySet(Box::new(Policy {
            id: GLOBAL_MANAGEMENT_ID.into(),
            name: GLOBAL_MANAGEMENT_NAME.into(),
            description: "Builtin Policy that grants unlimited access".into(),
            rules: GLOBAL_MANAGEMENT_RULES.into(),
            ..Policy::default()
        })));
    }
    if acl.token(ANONYMOUS_ID).is_none() {
        out.push(Command::AclTokenSet(Box::new(Token {
            accessor_id: ANONYMOUS_ID.into(),
            secret_id: ANONYMOUS_SECRET.into(),
            description: "Anonymous Token".into(),
            ..Token::default()
        })));
    }
    if let Some(secret) = initial_management.filter(|s| !s.is_empty()) {
        if acl.token_by_secret(secret).is_none() {
            let token = Box::new(Token {
                accessor_id: accessor_for(secret),
                secret_id: secret.into(),
                description: "Initial Management Token".into(),
                policies: vec![management],
                ..Token::default()
            });
            // It bootstraps the ACL system, as in Consul: `acl bootstrap`
            // is refused afterwards.
            out.push(if acl.bootstrapped().is_none() {
                Command::AclBootstrap(token)
            } else {
                Command::AclTokenSet(token)
            });
        }
    }
    out
}

/// The accessor ID of the initial management token: derived from its
/// secret, so that every leader that writes it writes the same token.
fn accessor_for(secret: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("cairn initial management {secret}").as_bytes());
    let mut raw = [0u8; 16];
    raw.copy_from_slice(&digest[..16]);
    crate::format::format_uuid(raw)
}

/// A server's ACL enforcement: the default policy, and authorizers by
/// secret, each good while the ACL table keeps the index it was built at.
pub(super) struct AclEnforcer {
    default_allow: bool,
    cache: Mutex<std::collections::HashMap<String, (u64, Arc<crate::acl::Authorizer>)>>,
}

/// Most authorizers a server keeps.
const AUTHZ_CACHE_MAX: usize = 4096;

impl AclEnforcer {
    /// Enforcement with `default_policy = "allow"` when `default_allow`.
    pub(super) fn new(default_allow: bool) -> Self {
        AclEnforcer {
            default_allow,
            cache: Mutex::default(),
        }
    }

    /// Whether what no rule decides is allowed (`default_policy`).
    pub(super) fn default_allow(&self) -> bool {
        self.default_allow
    }

    /// The authorizer of `secret`; `None` when no valid token has it.
    pub(super) fn authorizer(
        &self,
        store: &Store,
        secret: &str,
        now_ms: u64,
        dc: &str,
    ) -> Option<Arc<crate::acl::Authorizer>> {
        let index = store.index(Table::Acl);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, z)) = cache.get(secret) {
            // Expiry is checked each time; the cached rules stand while
            // the table does.
            let live = store
                .acl()
                .token_by_secret(secret)
                .is_some_and(|t| t.expiration_ms.is_none_or(|e| e > now_ms));
            if *at == index && live {
                return Some(z.clone());
            }
        }
        let r = store.acl().resolve(secret, now_ms, dc)?;
        let z = Arc::new(crate::acl::Authorizer::new(
            &r.token.accessor_id,
            r.rules.iter().map(|r| r.as_ref()),
            r.management,
            self.default_allow,
        ));
        if cache.len() >= AUTHZ_CACHE_MAX {
            cache.clear();
        }
        cache.insert(secret.to_string(), (index, z.clone()));
        Some(z)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::acl::Rules;
    use crate::server::Read;

    fn z(rules: &str) -> Authorizer {
        Authorizer::new("acc", [&Rules::parse(rules).unwrap()], false, false)
    }

    fn kv(op: KvOp, key: &str) -> ClientRequest {
        ClientRequest::Write {
            cmd: Box::new(Command::Kv {
                op,
                key: key.into(),
                value: vec![],
                flags: 0,
            }),
            hops: 0,
        }
    }

    fn read(query: Query) -> ClientRequest {
        ClientRequest::Read {
            read: Read {
                consistency: Default::default(),
                min_index: 0,
                max_wait_ms: 0,
                query,
            },
            hops: 0,
        }
    }

    #[test]
    fn kv_writes_and_reads_follow_key_rules() {
        let store = Store::new();
        let a = z(r#"key_prefix "app/" { policy = "write" }"#);
        assert!(authorize(&a, &kv(KvOp::Set, "app/x"), &store).is_ok());
        let e = authorize(&a, &kv(KvOp::Set, "secret/y"), &store).unwrap_err();
        assert_eq!(
            e,
            "Permission denied: token with AccessorID 'acc' lacks permission 'key:write' on \"secret/y\""
        );
        assert!(authorize(&a, &read(Query::Kv("secret/y".into())), &store).is_err());
        assert!(authorize(&a, &read(Query::Kv("app/z".into())), &store).is_ok());
        assert!(authorize(&a, &kv(KvOp::DeleteTree, "app/"), &store).is_ok());
        assert!(authorize(&a, &kv(KvOp::DeleteTree, ""), &store).is_err());
        // ACL listings need acl:read.
        assert!(authorize(&a, &read(Query::AclTokens), &store).is_err());
    }

    #[test]
    fn lists_lose_what_the_token_may_not_read() {
        let a = z("service \"web\" { policy = \"read\" }\nnode_prefix \"\" { policy = \"read\" }");
        let mut services =
            Answer::Services([("web".to_string(), vec![]), ("db".to_string(), vec![])].into());
        assert!(filter(&a, &mut services));
        let Answer::Services(m) = services else {
            unreachable!()
        };
        assert_eq!(m.keys().collect::<Vec<_>>(), ["web"]);
        let mut nodes = Answer::Nodes(vec![]);
        assert!(!filter(&a, &mut nodes));
        assert!(!filter(
            &Authorizer::manage_all(),
            &mut Answer::Nodes(vec![])
        ));
    }
}

//! The catalog: nodes, the services registered on them, and health checks.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, StateError, Store, Table, Tx};

/// A node in the catalog.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Node {
    /// Its UUID (may be empty).
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name, unique in the datacenter.
    pub node: String,
    /// Its address.
    pub address: String,
    /// Its datacenter.
    pub datacenter: String,
    /// Other addresses by purpose (`lan`, `wan`, ...).
    pub tagged_addresses: BTreeMap<String, String>,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

/// A service instance on a node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Service {
    /// Instance ID, unique on its node (defaults to the service name).
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    pub tags: Vec<String>,
    /// Address, if not the node's.
    pub address: String,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// Other addresses by purpose (`lan`, `wan`, ...).
    pub tagged_addresses: BTreeMap<String, ServiceAddress>,
    /// Port.
    pub port: u16,
    /// Relative weights for DNS SRV answers, by health.
    pub weights: Weights,
    /// `""` for a typical service, or `connect-proxy` and the like.
    pub kind: String,
    /// A proxy's settings (kind `connect-proxy`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proxy: Option<Box<ServiceProxy>>,
    /// Where it runs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locality: Option<Locality>,
    /// Whether others may change its tags (anti-entropy leaves them).
    pub enable_tag_override: bool,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

/// A region and zone.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Locality {
    /// Region.
    pub region: String,
    /// Zone.
    pub zone: String,
}

/// What a Connect proxy stands in front of, and what it reaches for it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceProxy {
    /// The service it carries traffic for.
    pub destination_service_name: String,
    /// That service's instance ID.
    #[serde(rename = "DestinationServiceID")]
    pub destination_service_id: String,
    /// Where the service listens (default 127.0.0.1).
    pub local_service_address: String,
    /// The service's port.
    pub local_service_port: u16,
    /// Services it reaches through the mesh.
    pub upstreams: Vec<Upstream>,
}

/// A service a proxy reaches for its application, through a local port.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Upstream {
    /// The service reached.
    pub destination_name: String,
    /// Its datacenter (empty: the proxy's).
    pub datacenter: String,
    /// Local address to listen on (default 127.0.0.1).
    pub local_bind_address: String,
    /// Local port to listen on.
    pub local_bind_port: u16,
}

/// A service's DNS SRV weight while passing and while warning.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Weights {
    /// Weight while every check passes.
    pub passing: u32,
    /// Weight while a check warns.
    pub warning: u32,
}

impl Default for Weights {
    /// Consul's: 1 and 1.
    fn default() -> Self {
        Weights {
            passing: 1,
            warning: 1,
        }
    }
}

/// One of a service's tagged addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ServiceAddress {
    /// Address.
    pub address: String,
    /// Port.
    pub port: u16,
}

/// A check's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// Healthy.
    Passing,
    /// Working, but worth a look.
    Warning,
    /// Failing. Also what a check registered without a status starts as.
    #[default]
    Critical,
    /// Taken out of service on purpose.
    Maintenance,
}

/// A health check, on a node or on one of its services.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Check {
    /// The node it runs on.
    pub node: String,
    /// Its ID, unique on the node.
    #[serde(rename = "CheckID")]
    pub check_id: String,
    /// A readable name.
    pub name: String,
    /// Its state.
    pub status: Health,
    /// Operator notes.
    pub notes: String,
    /// What it last said.
    pub output: String,
    /// The service it checks (empty: the node).
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    /// That service's name.
    pub service_name: String,
    /// That service's tags.
    pub service_tags: Vec<String>,
    /// Its kind (`http`, `tcp`, `ttl`, `script`, `serf`, ...).
    #[serde(rename = "Type")]
    pub check_type: String,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

/// A catalog record with Consul's pair of indexes.
trait Indexed: Clone + PartialEq {
    fn indexes(&mut self) -> (&mut u64, &mut u64);
}

macro_rules! indexed {
    ($($t:ty),*) => {$(
        impl Indexed for $t {
            fn indexes(&mut self) -> (&mut u64, &mut u64) {
                (&mut self.create_index, &mut self.modify_index)
            }
        }
    )*};
}

indexed!(Node, Service, Check);

/// Stores `new` under `key` at log `index`: created there if new, modified
/// there (keeping its creation) if it differs. False if nothing changed.
fn upsert<K: Ord, V: Indexed>(map: &mut BTreeMap<K, V>, key: K, mut new: V, index: u64) -> bool {
    let created = match map.get_mut(&key) {
        Some(old) => {
            let (c, m) = old.indexes();
            let kept = (*c, *m);
            let (nc, nm) = new.indexes();
            (*nc, *nm) = kept;
            if new == *old {
                return false;
            }
            kept.0
        }
        None => index,
    };
    let (c, m) = new.indexes();
    (*c, *m) = (created, index);
    map.insert(key, new);
    true
}

impl Tx<'_> {
    pub(super) fn register(
        &mut self,
        node: &Node,
        service: Option<&Service>,
        checks: &[Check],
    ) -> Result<(), StateError> {
        if node.node.is_empty() {
            return Err(invalid("a registration needs a node name"));
        }
        // Refuse the whole request before changing anything.
        let service = service
            .map(|s| {
                if s.service.is_empty() {
                    return Err(invalid("a service needs a name"));
                }
                let mut s = s.clone();
                if s.id.is_empty() {
                    s.id = s.service.clone();
                }
                Ok(s)
            })
            .transpose()?;
        for c in checks {
            if c.check_id.is_empty() && c.name.is_empty() {
                return Err(invalid("a check needs an ID or a name"));
            }
            if !c.node.is_empty() && c.node != node.node {
                return Err(invalid(format!(
                    "check {:?} names node {:?} in a registration of {:?}",
                    c.check_id, c.node, node.node
                )));
            }
            let known = service.as_ref().is_some_and(|s| s.id == c.service_id)
                || self
                    .data
                    .services
                    .contains_key(&(node.node.clone(), c.service_id.clone()));
            if !c.service_id.is_empty() && !known {
                return Err(invalid(format!(
                    "check {:?} is for service {:?}, which node {:?} does not have",
                    c.check_id, c.service_id, node.node
                )));
            }
        }
        self.ensure_node(node);
        if let Some(s) = service {
            self.ensure_service(&node.node, s);
        }
        for c in checks {
            self.ensure_check(&node.node, c);
        }
        Ok(())
    }

    fn ensure_node(&mut self, n: &Node) {
        if upsert(&mut self.data.nodes, n.node.clone(), n.clone(), self.index) {
            self.touch(Table::Nodes);
        }
    }

    fn ensure_service(&mut self, node: &str, s: Service) {
        let key = (node.to_owned(), s.id.clone());
        let old_name = self.data.services.get(&key).map(|o| o.service.clone());
        let name = s.service.clone();
        if upsert(&mut self.data.services, key.clone(), s, self.index) {
            if let Some(old) = old_name.filter(|o| *o != name) {
                self.unindex(&old, &key);
            }
            self.data.by_name.entry(name).or_default().insert(key);
            self.touch(Table::Services);
        }
    }

    /// Removes a service instance and its entry in the by-name index.
    fn remove_service(&mut self, key: &(String, String)) -> bool {
        let Some(old) = self.data.services.remove(key) else {
            return false;
        };
        self.unindex(&old.service, key);
        true
    }

    fn unindex(&mut self, name: &str, key: &(String, String)) {
        if let Some(set) = self.data.by_name.get_mut(name) {
            set.remove(key);
            if set.is_empty() {
                self.data.by_name.remove(name);
            }
        }
    }

    fn ensure_check(&mut self, node: &str, c: &Check) {
        let id = if c.check_id.is_empty() {
            c.name.clone()
        } else {
            c.check_id.clone()
        };
        let key = (node.to_owned(), id.clone());
        let svc = self
            .data
            .services
            .get(&(node.to_owned(), c.service_id.clone()));
        let new = Check {
            node: node.to_owned(),
            check_id: id.clone(),
            name: if c.name.is_empty() {
                id.clone()
            } else {
                c.name.clone()
            },
            service_name: svc.map(|s| s.service.clone()).unwrap_or_default(),
            service_tags: svc.map(|s| s.tags.clone()).unwrap_or_default(),
            ..c.clone()
        };
        let critical = new.status == Health::Critical;
        if !upsert(&mut self.data.checks, key, new, self.index) {
            return;
        }
        self.touch(Table::Checks);
        // A session leans on its checks: one going critical ends it.
        if critical {
            self.invalidate_sessions(|s| s.node == node && s.checks.contains(&id));
        }
    }

    pub(super) fn deregister(
        &mut self,
        node: &str,
        service_id: Option<&str>,
        check_id: Option<&str>,
    ) -> Result<(), StateError> {
        if !self.data.nodes.contains_key(node) {
            // Deregistering what is gone already is not an error.
            return Ok(());
        }
        match (service_id, check_id) {
            (Some(sid), _) => {
                if self.remove_service(&(node.to_owned(), sid.to_owned())) {
                    self.touch(Table::Services);
                }
                let gone: Vec<String> = self
                    .data
                    .checks
                    .values()
                    .filter(|c| c.node == node && c.service_id == sid)
                    .map(|c| c.check_id.clone())
                    .collect();
                for c in gone {
                    self.remove_check(node, &c);
                }
            }
            (None, Some(cid)) => self.remove_check(node, cid),
            (None, None) => {
                let services: Vec<String> = self.node_services_ids(node);
                for sid in services {
                    self.remove_service(&(node.to_owned(), sid));
                    self.touch(Table::Services);
                }
                let checks: Vec<String> = self
                    .data
                    .checks
                    .values()
                    .filter(|c| c.node == node)
                    .map(|c| c.check_id.clone())
                    .collect();
                for c in checks {
                    self.remove_check(node, &c);
                }
                self.invalidate_sessions(|s| s.node == node);
                if self.data.coordinates.remove(node).is_some() {
                    self.touch(Table::Coordinates);
                }
                self.data.nodes.remove(node);
                self.touch(Table::Nodes);
            }
        }
        Ok(())
    }

    fn node_services_ids(&self, node: &str) -> Vec<String> {
        self.data
            .services
            .range((node.to_owned(), String::new())..)
            .take_while(|((n, _), _)| n == node)
            .map(|((_, id), _)| id.clone())
            .collect()
    }

    fn remove_check(&mut self, node: &str, check_id: &str) {
        if self
            .data
            .checks
            .remove(&(node.to_owned(), check_id.to_owned()))
            .is_some()
        {
            self.touch(Table::Checks);
            self.invalidate_sessions(|s| s.node == node && s.checks.iter().any(|c| c == check_id));
        }
    }
}

impl Store {
    /// Every node, by name.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.data.nodes.values()
    }

    /// One node.
    pub fn node(&self, name: &str) -> Option<&Node> {
        self.data.nodes.get(name)
    }

    /// The services on `node`, by ID.
    pub fn node_services<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Service> + 'a {
        self.data
            .services
            .range((node.to_owned(), String::new())..)
            .take_while(move |((n, _), _)| n == node)
            .map(|(_, s)| s)
    }

    /// Every service name, with the union of its instances' tags.
    pub fn services(&self) -> BTreeMap<String, Vec<String>> {
        let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for s in self.data.services.values() {
            let tags = out.entry(s.service.clone()).or_default();
            for t in &s.tags {
                if !tags.contains(t) {
                    tags.push(t.clone());
                }
            }
        }
        out
    }

    /// The instances of service `name` (with `tag`, if given), each with
    /// its node, in node order.
    pub fn service_nodes<'a>(
        &'a self,
        name: &'a str,
        tag: Option<&'a str>,
    ) -> impl Iterator<Item = (&'a Node, &'a Service)> + 'a {
        self.data
            .by_name
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|key| Some((key, self.data.services.get(key)?)))
            .filter(move |(_, s)| tag.is_none_or(|t| s.tags.iter().any(|x| x == t)))
            .filter_map(|((node, _), s)| Some((self.data.nodes.get(node)?, s)))
    }

    /// The checks on `node` (its own and its services').
    pub fn node_checks<'a>(&'a self, node: &'a str) -> impl Iterator<Item = &'a Check> + 'a {
        self.data
            .checks
            .range((node.to_owned(), String::new())..)
            .take_while(move |((n, _), _)| n == node)
            .map(|(_, c)| c)
    }

    /// Checks in state `health` (all of them for `None`).
    pub fn checks_in(&self, health: Option<Health>) -> impl Iterator<Item = &Check> {
        self.data
            .checks
            .values()
            .filter(move |c| health.is_none_or(|h| c.status == h))
    }

    /// The checks that bear on a service instance: its own and its node's.
    pub fn instance_checks<'a>(
        &'a self,
        node: &'a str,
        service_id: &'a str,
    ) -> impl Iterator<Item = &'a Check> + 'a {
        self.node_checks(node)
            .filter(move |c| c.service_id.is_empty() || c.service_id == service_id)
    }
}

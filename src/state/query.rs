//! Prepared queries: named, stored service lookups with health filters
//! and failover to other datacenters (Consul's `/v1/query`).

use serde::{Deserialize, Serialize};

use super::{invalid, StateError, Table, Tx};

/// A prepared query, in Consul's JSON shape.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct PreparedQuery {
    /// Its ID (a UUID the agent picked).
    #[serde(rename = "ID")]
    pub id: String,
    /// Its name (executed by name, or by prefix for a template).
    pub name: String,
    /// Not used by cairn (sessions tie queries to a lifetime in Consul).
    pub session: String,
    /// A template: the query serves every name starting with `name`.
    pub template: QueryTemplate,
    /// What it looks up.
    pub service: QueryService,
    /// DNS settings of its answers.
    #[serde(rename = "DNS")]
    pub dns: QueryDns,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

/// A template's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueryTemplate {
    /// `name_prefix_match`, or empty for no template.
    #[serde(rename = "Type")]
    pub kind: String,
    /// A regular expression over the full name, whose groups
    /// `${match(N)}` refers to.
    pub regexp: String,
    /// Leave `${...}` unexpanded.
    pub remove_empty_tags: bool,
}

/// The lookup itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueryService {
    /// The service (templates may use `${name.full}`, `${name.prefix}`,
    /// `${name.suffix}` and `${match(N)}`).
    pub service: String,
    /// Where to look when no healthy instance is here.
    pub failover: QueryFailover,
    /// Hide instances with a warning, not only critical ones.
    pub only_passing: bool,
    /// Sort by estimated RTT from this node (`_agent`: the one asking).
    pub near: String,
    /// Tags every instance must have (`!tag`: must not have).
    pub tags: Vec<String>,
}

/// Failover to other datacenters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueryFailover {
    /// Try this many other datacenters, nearest first by WAN RTT estimate.
    #[serde(rename = "NearestN")]
    pub nearest_n: u32,
    /// Then these, in order.
    pub datacenters: Vec<String>,
}

/// DNS settings.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct QueryDns {
    /// TTL of its records (a duration like `10s`; empty: the default).
    #[serde(rename = "TTL")]
    pub ttl: String,
}

impl PreparedQuery {
    /// What makes it invalid, if anything.
    pub fn validate(&self) -> Result<(), String> {
        if self.service.service.is_empty() {
            return Err("Must provide a Service name to query".into());
        }
        match self.template.kind.as_str() {
            "" => {}
            "name_prefix_match" => {
                if !self.template.regexp.is_empty() {
                    regex::Regex::new(&self.template.regexp)
                        .map_err(|e| format!("Template.Regexp: {e}"))?;
                }
            }
            other => {
                return Err(format!(
                    "Template.Type {other:?}: the only type is \"name_prefix_match\""
                ))
            }
        }
        if self.template.kind.is_empty() && self.service.service.contains("${") {
            return Err("only a template (Template.Type) may interpolate ${...}".into());
        }
        if !self.dns.ttl.is_empty() {
            crate::format::parse_duration(&self.dns.ttl).map_err(|e| format!("DNS.TTL: {e}"))?;
        }
        Ok(())
    }
}

impl Tx<'_> {
    /// Creates or replaces a prepared query (by ID); names are unique.
    pub(super) fn query_set(&mut self, q: &PreparedQuery) -> Result<(), StateError> {
        q.validate().map_err(invalid)?;
        if q.id.is_empty() {
            return Err(invalid("a prepared query needs an ID"));
        }
        let taken = self.data.queries.values().any(|o| {
            o.id != q.id && !q.name.is_empty() && o.name == q.name && o.template == q.template
        });
        if taken {
            return Err(invalid(format!(
                "name {:?} aliases an existing query name",
                q.name
            )));
        }
        let create_index = self
            .data
            .queries
            .get(&q.id)
            .map_or(self.index, |o| o.create_index);
        let stored = PreparedQuery {
            create_index,
            modify_index: self.index,
            ..q.clone()
        };
        self.data.queries.insert(q.id.clone(), stored);
        self.touch(Table::Queries);
        Ok(())
    }

    /// Deletes a prepared query; `false` when there was none.
    pub(super) fn query_delete(&mut self, id: &str) -> bool {
        let found = self.data.queries.remove(id).is_some();
        if found {
            self.touch(Table::Queries);
        }
        found
    }
}

/// The query `key` means: an ID, an exact name, or else the template
/// whose name is the longest prefix of `key`.
pub fn resolve_query<'a>(all: &'a [PreparedQuery], key: &str) -> Option<&'a PreparedQuery> {
    all.iter()
        .find(|q| q.id == key)
        .or_else(|| {
            all.iter()
                .find(|q| q.template.kind.is_empty() && q.name == key)
        })
        .or_else(|| {
            all.iter()
                .filter(|q| q.template.kind == "name_prefix_match" && key.starts_with(&q.name))
                .max_by_key(|q| q.name.len())
        })
}

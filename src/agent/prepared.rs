//! Executing prepared queries: which stored query a name means, what a
//! template makes of the name, the health and tag filters, and failover to
//! other datacenters, nearest first by WAN RTT estimate.

use crate::env::Env;
use crate::server::{Answer, ClientRequest, Consistency, Instance, Query, Read};
use crate::state::{Health, PreparedQuery, QueryService};

use super::Servers;

/// What an execution found.
#[derive(Debug, Clone, PartialEq)]
pub struct Executed {
    /// The service looked up (after template interpolation).
    pub service: String,
    /// The healthy instances that pass the filters.
    pub nodes: Vec<Instance>,
    /// The datacenter they are in.
    pub datacenter: String,
    /// How many other datacenters were tried.
    pub failovers: u32,
}

pub use crate::state::resolve_query as resolve;

/// `q`'s lookup for the name it was executed by: a template's
/// `${name.full}`, `${name.prefix}`, `${name.suffix}` and `${match(N)}`
/// filled in.
pub fn render(q: &PreparedQuery, name: &str) -> Result<QueryService, String> {
    let mut svc = q.service.clone();
    if q.template.kind.is_empty() {
        return Ok(svc);
    }
    let suffix = name.strip_prefix(q.name.as_str()).unwrap_or("");
    let groups: Vec<String> = if q.template.regexp.is_empty() {
        Vec::new()
    } else {
        let re =
            regex::Regex::new(&q.template.regexp).map_err(|e| format!("Template.Regexp: {e}"))?;
        re.captures(name)
            .map(|c| {
                c.iter()
                    .map(|m| m.map_or(String::new(), |m| m.as_str().to_string()))
                    .collect()
            })
            .unwrap_or_default()
    };
    let fill = |s: &str| {
        let mut out = s
            .replace("${name.full}", name)
            .replace("${name.prefix}", &q.name)
            .replace("${name.suffix}", suffix);
        for (i, g) in groups.iter().enumerate() {
            out = out.replace(&format!("${{match({i})}}"), g);
        }
        out
    };
    svc.service = fill(&svc.service);
    svc.tags = svc.tags.iter().map(|t| fill(t)).collect();
    if svc.service.is_empty() || svc.service.contains("${") {
        return Err(format!(
            "the template makes no service name of {name:?} ({:?})",
            svc.service
        ));
    }
    Ok(svc)
}

/// The instances that pass `svc`'s filters: never critical ones, nor with
/// `OnlyPassing` warning ones; every `tag`, and no `!tag`.
pub fn filter(instances: Vec<Instance>, svc: &QueryService) -> Vec<Instance> {
    instances
        .into_iter()
        .filter(|i| {
            i.checks.iter().all(|c| match c.status {
                Health::Passing => true,
                Health::Warning => !svc.only_passing,
                _ => false,
            })
        })
        .filter(|i| {
            svc.tags.iter().all(|t| match t.strip_prefix('!') {
                Some(not) => !i.service.tags.iter().any(|x| x.eq_ignore_ascii_case(not)),
                None => i.service.tags.iter().any(|x| x.eq_ignore_ascii_case(t)),
            })
        })
        .collect()
}

/// `req` sent with `token`, or without one (the servers' client then adds
/// the agent's).
fn with_token(req: ClientRequest, token: Option<&str>) -> ClientRequest {
    match token {
        Some(t) => req.with_token(t),
        None => req,
    }
}

/// Runs the query `key` names (see [`resolve`]) in datacenter `dc`
/// (`None`: this one, `local_dc`), as DNS's `<key>.query[.<dc>]` does: the
/// query and what it found, or `None` when no query has that name.
/// `token` is the caller's (`None`: the agent's own), so a query shows only
/// what the caller may read.
pub async fn run<E: Env>(
    servers: &Servers<E>,
    token: Option<&str>,
    local_dc: &str,
    dc: Option<&str>,
    key: &str,
) -> Result<Option<(PreparedQuery, Executed)>, String> {
    let read = ClientRequest::Read {
        read: Read {
            consistency: Consistency::Default,
            min_index: 0,
            max_wait_ms: 0,
            query: Query::PreparedQuery(key.to_string()),
        },
        hops: 0,
    };
    let q = match servers
        .call(with_token(read.in_dc(dc), token))
        .await
        .answer?
    {
        Answer::PreparedQuery(Some(q)) => q,
        Answer::PreparedQuery(None) => return Ok(None),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let e = execute(servers, token, local_dc, dc, &q, key).await?;
    Ok(Some((*q, e)))
}

/// Runs `q` (executed as `name`) in datacenter `dc` (`None`: this one,
/// `local_dc`): there first, then, while nothing healthy is found, in the
/// `NearestN` nearest other datacenters and then the listed ones.
/// `token` is the caller's, as for [`run`].
pub async fn execute<E: Env>(
    servers: &Servers<E>,
    token: Option<&str>,
    local_dc: &str,
    dc: Option<&str>,
    q: &PreparedQuery,
    name: &str,
) -> Result<Executed, String> {
    let svc = render(q, name)?;
    let home = dc.unwrap_or(local_dc);
    let read = |dc: Option<&str>| {
        let req = ClientRequest::Read {
            read: Read {
                consistency: Consistency::Default,
                min_index: 0,
                max_wait_ms: 0,
                query: Query::Instances {
                    service: svc.service.clone(),
                    tag: None,
                },
            },
            hops: 0,
        };
        // This datacenter's servers are asked directly.
        with_token(req.in_dc(dc.filter(|d| *d != local_dc)), token)
    };
    let found = |answer: Result<Answer, String>| match answer {
        Ok(Answer::Instances(v)) => Ok(filter(v, &svc)),
        Ok(other) => Err(format!("unexpected answer {other:?}")),
        Err(e) => Err(e),
    };
    let here = found(servers.call(read(dc)).await.answer)?;
    let mut out = Executed {
        service: svc.service.clone(),
        nodes: here,
        datacenter: home.to_string(),
        failovers: 0,
    };
    let failover = &svc.failover;
    if !out.nodes.is_empty() || (failover.nearest_n == 0 && failover.datacenters.is_empty()) {
        return Ok(out);
    }
    let mut order: Vec<String> = Vec::new();
    if failover.nearest_n > 0 {
        if let Ok(Answer::Datacenters(dcs)) = servers.call(ClientRequest::Datacenters).await.answer
        {
            order.extend(
                dcs.into_iter()
                    .filter(|d| d != home)
                    .take(failover.nearest_n as usize),
            );
        }
    }
    for d in &failover.datacenters {
        if d != home && !order.contains(d) {
            order.push(d.clone());
        }
    }
    for dc in order {
        out.failovers += 1;
        // A datacenter that cannot be reached is skipped, as in Consul.
        if let Ok(nodes) = found(servers.call(read(Some(dc.as_str()))).await.answer) {
            if !nodes.is_empty() {
                out.nodes = nodes;
                out.datacenter = dc;
                return Ok(out);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::QueryTemplate;

    fn q(id: &str, name: &str, template: bool, service: &str) -> PreparedQuery {
        PreparedQuery {
            id: id.into(),
            name: name.into(),
            template: QueryTemplate {
                kind: if template {
                    "name_prefix_match".into()
                } else {
                    String::new()
                },
                ..QueryTemplate::default()
            },
            service: QueryService {
                service: service.into(),
                ..QueryService::default()
            },
            ..PreparedQuery::default()
        }
    }

    #[test]
    fn ids_then_names_then_the_longest_template_prefix() {
        let all = vec![
            q("1", "web", false, "web"),
            q("2", "", true, "${name.full}"),
            q("3", "geo-", true, "${name.suffix}"),
        ];
        assert_eq!(resolve(&all, "1").map(|x| &x.id), Some(&"1".to_string()));
        assert_eq!(resolve(&all, "web").map(|x| &x.id), Some(&"1".to_string()));
        assert_eq!(
            resolve(&all, "geo-db").map(|x| &x.id),
            Some(&"3".to_string())
        );
        assert_eq!(resolve(&all, "api").map(|x| &x.id), Some(&"2".to_string()));
        assert_eq!(render(&all[2], "geo-db").unwrap().service, "db");
        assert_eq!(render(&all[1], "api").unwrap().service, "api");
        let mut re = q("4", "x-", true, "${match(1)}");
        re.template.regexp = "^x-(.*)-v[0-9]$".into();
        assert_eq!(render(&re, "x-cache-v2").unwrap().service, "cache");
        assert!(render(&re, "x-nomatch").is_err());
    }
}

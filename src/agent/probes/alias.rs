//! Alias checks: a check whose health is that of another node's or
//! service instance's checks, as Consul's are. The worst status wins:
//! any critical check makes the alias critical, else any warning makes it
//! warning, else it passes. A service's checks include its node's own.
//!
//! An alias of this agent's own service is worked out by the local state
//! whenever its checks change ([`evaluate`]); one of another node is
//! followed with blocking reads of that node's checks ([`watch`]).

use std::sync::Arc;
use std::time::Duration;

use super::spec::AliasTarget;
use crate::agent::Servers;
use crate::env::Env;
use crate::server::{Answer, ClientRequest, Consistency, Query, Read};
use crate::state::{Check, Health};

/// One look at the aliased checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The alias's status.
    pub status: Health,
    /// Its output, in Consul's words.
    pub output: String,
    /// Whether a check of the aliased service was among them (when none
    /// was, the service itself must be looked for: [`not_found`]).
    pub service_found: bool,
}

/// The alias's status from `checks` (those of the aliased node, or of
/// this agent; others are skipped), in Consul's order of reading: a
/// critical check settles it, a warning holds unless a critical follows.
pub fn evaluate<'a>(target: &AliasTarget, checks: impl IntoIterator<Item = &'a Check>) -> Verdict {
    let mut status = Health::Passing;
    let mut output = "No checks found.".to_string();
    let mut service_found = false;
    for c in checks {
        if !target.node.is_empty() && !target.node.eq_ignore_ascii_case(&c.node) {
            continue;
        }
        let matches = c.service_id == target.service;
        // Node-level checks count for every service on the node.
        if !c.service_id.is_empty() && !matches {
            continue;
        }
        service_found |= matches;
        match c.status {
            Health::Critical | Health::Warning => {
                status = c.status;
                output = format!("Aliased check {:?} failing: {}", c.name, c.output);
                if c.status == Health::Critical {
                    break;
                }
            }
            _ if status == Health::Passing => output = "All checks passing.".into(),
            _ => {}
        }
    }
    Verdict {
        status,
        output,
        service_found,
    }
}

/// The alias's status when the aliased service does not exist.
pub fn not_found(target: &AliasTarget) -> (Health, String) {
    (
        Health::Critical,
        format!(
            "Service {} could not be found on node {}",
            target.service, target.node
        ),
    )
}

/// Consul's longest blocking read for an alias (its `MaxQueryTime`).
const MAX_WAIT: Duration = Duration::from_secs(60);

/// Failed reads tried again at once before backing off (Consul's
/// `checkAliasBackoffMin`), and the longest pause then.
const BACKOFF_AFTER: u32 = 3;
const BACKOFF_MAX: Duration = Duration::from_secs(60);

fn read(query: Query, min_index: u64) -> ClientRequest {
    ClientRequest::Read {
        read: Read {
            // Consul's alias reads allow stale answers.
            consistency: Consistency::Stale,
            min_index,
            max_wait_ms: if min_index == 0 {
                0
            } else {
                MAX_WAIT.as_millis() as u64
            },
            query,
        },
        hops: 0,
    }
}

/// Follows the checks of `target.node` (which must be set) through the
/// servers until cancelled, giving `report` the alias's status after each
/// change. A read that fails twice in a row turns it critical.
pub async fn watch<E: Env>(
    env: E,
    servers: Arc<Servers<E>>,
    target: AliasTarget,
    mut report: impl FnMut(Health, String) + Send,
) {
    let mut index = 0;
    let mut attempt: u32 = 0;
    loop {
        if attempt > BACKOFF_AFTER {
            let shift = (attempt - BACKOFF_AFTER).min(31);
            env.sleep(Duration::from_secs(1u64 << shift).min(BACKOFF_MAX))
                .await;
        }
        let reply = servers
            .call(read(Query::NodeChecks(target.node.clone()), index))
            .await;
        let checks = match reply.answer {
            Ok(Answer::Checks(c)) => c,
            Ok(other) => {
                attempt += 1;
                tracing::warn!(?other, "alias check: unexpected answer to a checks read");
                continue;
            }
            Err(e) => {
                attempt += 1;
                if attempt > 1 {
                    report(
                        Health::Critical,
                        format!("Failure checking aliased node or service: {e}"),
                    );
                }
                continue;
            }
        };
        attempt = 0;
        // Always block on the next read: index 0 would answer at once.
        index = reply.index.max(1);
        let v = evaluate(&target, &checks);
        if !v.service_found && !service_exists(&servers, &target).await {
            let (status, output) = not_found(&target);
            report(status, output);
        } else {
            report(v.status, v.output);
        }
    }
}

/// Whether the aliased node runs the aliased service; when the servers
/// cannot say, it is taken to (as Consul does).
async fn service_exists<E: Env>(servers: &Servers<E>, target: &AliasTarget) -> bool {
    let reply = servers
        .call(read(Query::NodeServices(target.node.clone()), 0))
        .await;
    match reply.answer {
        Ok(Answer::NodeServices(found)) => {
            found.is_some_and(|(_, services)| services.iter().any(|s| s.id == target.service))
        }
        _ => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(node: &str, id: &str, service: &str, status: Health) -> Check {
        Check {
            node: node.into(),
            check_id: id.into(),
            name: id.into(),
            service_id: service.into(),
            status,
            output: format!("{id} says so"),
            ..Check::default()
        }
    }

    #[test]
    fn the_worst_status_of_the_service_and_its_node_wins() {
        let web = AliasTarget {
            node: "n1".into(),
            service: "web".into(),
        };
        let mut checks = vec![
            check("n1", "a", "web", Health::Passing),
            check("n1", "b", "db", Health::Critical),
            check("n2", "c", "web", Health::Critical),
        ];
        let v = evaluate(&web, &checks[..]);
        assert_eq!(
            (v.status, v.output.as_str(), v.service_found),
            (Health::Passing, "All checks passing.", true),
            "other services' and other nodes' checks do not count"
        );
        checks.push(check("n1", "node-w", "", Health::Warning));
        checks.push(check("n1", "z", "web", Health::Passing));
        let v = evaluate(&web, &checks[..]);
        assert_eq!(v.status, Health::Warning, "a node check counts");
        assert_eq!(v.output, "Aliased check \"node-w\" failing: node-w says so");
        checks.insert(0, check("N1", "crit", "web", Health::Critical));
        assert_eq!(evaluate(&web, &checks[..]).status, Health::Critical);
    }

    #[test]
    fn no_checks_pass_unless_the_service_is_missing() {
        let t = AliasTarget {
            node: String::new(),
            service: "api".into(),
        };
        let v = evaluate(&t, &[][..]);
        assert_eq!(
            (v.status, v.output.as_str(), v.service_found),
            (Health::Passing, "No checks found.", false)
        );
        assert_eq!(
            not_found(&t),
            (
                Health::Critical,
                "Service api could not be found on node ".to_string()
            )
        );
    }
}

//! Least-privilege intentions from observed traffic: the research
//! direction of starting permissive and tightening. Proxies record which
//! sources connected to their service; from that record, this proposes an
//! allow intention for every pair that was seen working, plus a default
//! deny (`* -> *`), and says which pairs the current policy allows that
//! the proposal would cut.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::intention::{self, Intention};
use super::proxy::Observed;

/// What `cairn intention suggest` proposes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Suggestion {
    /// Allow intentions to create (source, destination), for observed
    /// pairs no intention allows yet by name.
    pub allow: Vec<(String, String)>,
    /// Whether to add `* -> *` deny (absent today).
    pub default_deny: bool,
    /// Pairs of known services the current policy allows and the proposal
    /// would not: traffic that was never seen, cut.
    pub cut: Vec<(String, String)>,
    /// Pairs that were refused while observed (refused today too; the
    /// proposal leaves them refused).
    pub refused: Vec<(String, String, u64)>,
    /// Existing allow intentions that no observed traffic used.
    pub unused_allows: Vec<(String, String)>,
}

/// The proposal from `observed` traffic (by (source, destination)), the
/// `current` intentions, the `services` known to the catalog, and the
/// current default (`default_allow`) when no intention matches.
pub fn suggest(
    observed: &BTreeMap<(String, String), Observed>,
    current: &[Intention],
    services: &BTreeSet<String>,
    default_allow: bool,
) -> Suggestion {
    let seen: BTreeSet<(String, String)> = observed
        .iter()
        .filter(|(_, o)| o.allowed > 0)
        .map(|(k, _)| k.clone())
        .collect();
    let exact_allow = |s: &str, d: &str| {
        current.iter().any(|i| {
            i.source_name == s && i.destination_name == d && i.action == intention::Action::Allow
        })
    };
    let allow: Vec<(String, String)> = seen
        .iter()
        .filter(|(s, d)| !exact_allow(s, d))
        .cloned()
        .collect();
    let default_deny = !current.iter().any(|i| {
        i.source_name == "*" && i.destination_name == "*" && i.action == intention::Action::Deny
    });
    let mut cut = Vec::new();
    for s in services {
        for d in services {
            if s == d || seen.contains(&(s.clone(), d.clone())) {
                continue;
            }
            if intention::authorize(current, s, d, default_allow).0 {
                cut.push((s.clone(), d.clone()));
            }
        }
    }
    let refused = observed
        .iter()
        .filter(|(_, o)| o.denied > 0)
        .map(|((s, d), o)| (s.clone(), d.clone(), o.denied))
        .collect();
    let unused_allows = current
        .iter()
        .filter(|i| i.action == intention::Action::Allow)
        .filter(|i| {
            !seen.iter().any(|(s, d)| {
                (i.source_name == "*" || i.source_name == *s)
                    && (i.destination_name == "*" || i.destination_name == *d)
            })
        })
        .map(|i| (i.source_name.clone(), i.destination_name.clone()))
        .collect();
    Suggestion {
        allow,
        default_deny,
        cut,
        refused,
        unused_allows,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connect::intention::Action;
    use proptest::prelude::*;

    fn obs(pairs: &[(&str, &str, u64, u64)]) -> BTreeMap<(String, String), Observed> {
        pairs
            .iter()
            .map(|(s, d, a, n)| {
                (
                    (s.to_string(), d.to_string()),
                    Observed {
                        allowed: *a,
                        denied: *n,
                    },
                )
            })
            .collect()
    }

    fn names(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn observed_pairs_get_allows_and_the_rest_is_cut() {
        let o = obs(&[
            ("web", "db", 10, 0),
            ("web", "cache", 3, 0),
            ("api", "db", 0, 2),
        ]);
        let s = suggest(&o, &[], &names(&["web", "db", "cache", "api"]), true);
        assert_eq!(
            s.allow,
            [("web".into(), "cache".into()), ("web".into(), "db".into())]
        );
        assert!(s.default_deny);
        assert!(s.cut.contains(&("api".into(), "db".into())));
        assert!(s.cut.contains(&("db".into(), "web".into())));
        assert!(!s.cut.contains(&("web".into(), "db".into())));
        assert_eq!(s.refused, [("api".into(), "db".into(), 2)]);
    }

    proptest! {
        /// Applying the proposal keeps every observed working pair allowed
        /// and allows nothing else among the known services.
        #[test]
        fn the_proposal_is_exactly_the_observed_traffic(
            seen in proptest::collection::vec((0usize..4, 0usize..4, 1u64..5), 0..10),
        ) {
            let svc = ["a", "b", "c", "d"];
            let o: BTreeMap<(String, String), Observed> = seen.iter()
                .filter(|(s, d, _)| s != d)
                .map(|(s, d, n)| ((svc[*s].to_string(), svc[*d].to_string()),
                                  Observed { allowed: *n, denied: 0 }))
                .collect();
            let s = suggest(&o, &[], &names(&svc), true);
            let mut applied: Vec<Intention> = s.allow.iter()
                .map(|(a, b)| Intention::new(a, b, Action::Allow))
                .collect();
            applied.push(Intention::new("*", "*", Action::Deny));
            for a in svc { for b in svc { if a != b {
                let allowed = intention::authorize(&applied, a, b, true).0;
                prop_assert_eq!(allowed, o.contains_key(&(a.to_string(), b.to_string())));
            }}}
        }
    }
}

//! Intentions: which service may open connections to which, and Consul's
//! rules for which intention decides when several match.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Allow or deny.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Connections may be made.
    #[default]
    Allow,
    /// Connections are refused.
    Deny,
}

/// An intention, as Consul's API shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Intention {
    /// Its ID (a UUID the servers picked).
    #[serde(rename = "ID")]
    pub id: String,
    /// Source service name, or `*`.
    pub source_name: String,
    /// Destination service name, or `*`.
    pub destination_name: String,
    /// Always `consul`.
    pub source_type: String,
    /// Allow or deny.
    pub action: Action,
    /// Free text.
    pub description: String,
    /// Operator metadata.
    pub meta: BTreeMap<String, String>,
    /// Which intention wins when several match (higher wins).
    pub precedence: u32,
    /// Index that created it.
    pub create_index: u64,
    /// Index of its last change.
    pub modify_index: u64,
}

impl Intention {
    /// `source -> destination`, named by the pair (the servers give
    /// intentions made through the API a UUID instead).
    pub fn new(source: &str, destination: &str, action: Action) -> Intention {
        Intention {
            id: format!("{source}->{destination}"),
            source_name: source.into(),
            destination_name: destination.into(),
            action,
            ..Intention::default()
        }
    }
}

/// Consul's precedence of an intention by its wildcards (the levels for
/// namespace wildcards are unused: cairn has one namespace).
pub fn precedence(source: &str, destination: &str) -> u32 {
    match (source == "*", destination == "*") {
        (false, false) => 9,
        (true, false) => 8,
        (false, true) => 6,
        (true, true) => 5,
    }
}

/// What makes an intention invalid, if anything.
pub fn validate(i: &Intention) -> Result<(), String> {
    for (what, name) in [
        ("SourceName", &i.source_name),
        ("DestinationName", &i.destination_name),
    ] {
        if name.is_empty() {
            return Err(format!("{what} must be set"));
        }
        if name.contains('*') && name != "*" {
            return Err(format!(
                "{what} {name:?}: a wildcard must be the whole name (\"*\")"
            ));
        }
        if name.len() > 256 || name.chars().any(|c| c.is_control() || c == '/') {
            return Err(format!("{what} {name:?} is not a service name"));
        }
    }
    if !i.source_type.is_empty() && i.source_type != "consul" {
        return Err(format!(
            "SourceType {:?}: only \"consul\" is supported",
            i.source_type
        ));
    }
    Ok(())
}

/// Whether an intention's name pattern covers `name`.
fn covers(pattern: &str, name: &str) -> bool {
    pattern == "*" || pattern == name
}

/// The intentions bearing on `source` -> `destination`, the deciding one
/// first: highest precedence, and deny before allow at equal precedence.
pub fn matching<'a>(
    all: impl IntoIterator<Item = &'a Intention>,
    source: &str,
    destination: &str,
) -> Vec<&'a Intention> {
    let mut m: Vec<&Intention> = all
        .into_iter()
        .filter(|i| covers(&i.source_name, source) && covers(&i.destination_name, destination))
        .collect();
    m.sort_by_key(|i| {
        (
            std::cmp::Reverse(precedence(&i.source_name, &i.destination_name)),
            i.action != Action::Deny,
        )
    });
    m
}

/// Whether `source` may connect to `destination`, and why: the deciding
/// intention, or none (then `default_allow` decides, as Consul's ACL
/// default policy does).
pub fn authorize<'a>(
    all: impl IntoIterator<Item = &'a Intention>,
    source: &str,
    destination: &str,
    default_allow: bool,
) -> (bool, Option<&'a Intention>) {
    match matching(all, source, destination).first() {
        Some(i) => (i.action == Action::Allow, Some(i)),
        None => (default_allow, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn i(src: &str, dst: &str, action: Action) -> Intention {
        Intention::new(src, dst, action)
    }

    #[test]
    fn exact_beats_wildcard_and_the_default_decides_when_nothing_matches() {
        let all = [
            i("*", "*", Action::Deny),
            i("web", "db", Action::Allow),
            i("*", "db", Action::Deny),
            i("web", "*", Action::Allow),
        ];
        assert!(authorize(&all, "web", "db", false).0);
        assert!(!authorize(&all, "api", "db", true).0, "* -> db");
        assert!(authorize(&all, "web", "cache", false).0, "web -> *");
        assert!(!authorize(&all, "api", "cache", true).0, "* -> *");
        assert_eq!(authorize(&all[1..2], "api", "cache", true), (true, None));
        assert_eq!(authorize(&all[1..2], "api", "cache", false), (false, None));
    }

    #[test]
    fn bad_intentions_are_refused() {
        assert!(validate(&i("web", "db", Action::Allow)).is_ok());
        assert!(validate(&i("", "db", Action::Allow)).is_err());
        assert!(validate(&i("we*", "db", Action::Allow)).is_err());
        assert!(validate(&i("web", "d/b", Action::Allow)).is_err());
    }

    proptest! {
        /// Whatever the set, the decision is the action of a matching
        /// intention of the highest precedence, with deny winning ties.
        #[test]
        fn the_decision_is_the_most_precise_match(
            set in proptest::collection::vec(
                (prop_oneof![Just("*"), Just("a"), Just("b")],
                 prop_oneof![Just("*"), Just("x"), Just("y")],
                 any::<bool>()), 0..12),
            src in prop_oneof![Just("a"), Just("b"), Just("c")],
            dst in prop_oneof![Just("x"), Just("y"), Just("z")],
        ) {
            let all: Vec<Intention> = set.iter().map(|(s, d, allow)| {
                i(s, d, if *allow { Action::Allow } else { Action::Deny })
            }).collect();
            let covering: Vec<&Intention> = all.iter()
                .filter(|x| covers(&x.source_name, src) && covers(&x.destination_name, dst))
                .collect();
            let (allowed, by) = authorize(&all, src, dst, true);
            match covering.iter().map(|x| precedence(&x.source_name, &x.destination_name)).max() {
                None => prop_assert!(allowed && by.is_none()),
                Some(top) => {
                    let any_deny = covering.iter().any(|x| {
                        precedence(&x.source_name, &x.destination_name) == top
                            && x.action == Action::Deny
                    });
                    prop_assert_eq!(allowed, !any_deny);
                }
            }
        }
    }
}

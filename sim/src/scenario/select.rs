//! Node selectors: how events and checks say which nodes they are about.
//!
//! A selector is a node name (`dc1-3`), `all`, `leader`, `followers`, or
//! filters separated by spaces: `dc=NAME`,
//! `role=client|server|leader|follower`, then optionally `fraction=F` or
//! `count=N` to pick that many of the matching nodes at random (seeded by
//! the run's seed, so a replay picks the same ones).
//!
//! `leader` (or `role=leader`) and `followers` (or `role=follower`) are
//! known only while the run goes: the server that leads its datacenter's
//! Raft group when the event happens, and the other servers of that
//! datacenter. A timeline holds them as a placeholder per datacenter
//! ([`leader_placeholder`], [`followers_placeholder`]) that the engine
//! resolves at that moment.

use std::collections::BTreeSet;

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use crate::net::topology::Topology;
use crate::seed::derive_seed;

/// How many of the matching nodes to take.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Pick {
    /// All of them.
    All,
    /// This share, rounded up (at least one when any match).
    Fraction(f64),
    /// This many (or all, when fewer match).
    Count(usize),
}

/// A parsed selector.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// The text, for messages.
    pub text: String,
    /// An exact node name.
    node: Option<String>,
    dc: Option<String>,
    role: Option<String>,
    /// Whom the run decides, at the event.
    at_event: Option<AtEvent>,
    /// How many of the matching nodes to take.
    pub pick: Pick,
}

/// The servers a selector names by their part in Raft when the event
/// happens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AtEvent {
    /// The leader of each matching datacenter.
    Leader,
    /// Every other server of each matching datacenter.
    Followers,
}

/// What a timeline holds for "the leader of `dc`" until the run knows it.
pub fn leader_placeholder(dc: &str) -> String {
    format!("{LEADER_MARK}{dc}")
}

/// "The leader of `dc`", remembered under `tag` so that a later event can
/// name the same server with [`picked_placeholder`]: a generated fault
/// that crashes the leader restarts that server, whoever leads by then.
pub fn tagged_leader_placeholder(dc: &str, tag: usize) -> String {
    format!("{LEADER_MARK}{dc}{TAG_MARK}{tag}")
}

/// What a timeline holds for "the servers of `dc` but its leader" until
/// the run knows who leads.
pub fn followers_placeholder(dc: &str) -> String {
    format!("{FOLLOWERS_MARK}{dc}")
}

/// "Whatever the leader placeholder tagged `tag` stood for when its event
/// happened" (no node, when it stood for none).
pub fn picked_placeholder(tag: usize) -> String {
    format!("{PICKED_MARK}{tag}")
}

/// What a name in a resolved timeline stands for, if it is a placeholder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placeholder<'a> {
    /// The leader of this datacenter at the event, remembered under the
    /// tag if there is one.
    Leader(&'a str, Option<usize>),
    /// What the leader placeholder with this tag stood for.
    Picked(usize),
    /// The servers of this datacenter but the one leading at the event
    /// (all of them while none leads).
    Followers(&'a str),
}

/// Reads a placeholder; `None` for a node's name.
pub fn placeholder(name: &str) -> Option<Placeholder<'_>> {
    if let Some(tag) = name.strip_prefix(PICKED_MARK) {
        return tag.parse().ok().map(Placeholder::Picked);
    }
    if let Some(dc) = name.strip_prefix(FOLLOWERS_MARK) {
        return Some(Placeholder::Followers(dc));
    }
    let rest = name.strip_prefix(LEADER_MARK)?;
    Some(match rest.rsplit_once(TAG_MARK) {
        Some((dc, tag)) => Placeholder::Leader(dc, tag.parse().ok()),
        None => Placeholder::Leader(rest, None),
    })
}

/// The datacenter a [`leader_placeholder`] stands for.
pub fn leader_of_placeholder(name: &str) -> Option<&str> {
    match placeholder(name)? {
        Placeholder::Leader(dc, _) => Some(dc),
        Placeholder::Picked(_) | Placeholder::Followers(_) => None,
    }
}

const LEADER_MARK: &str = "@leader:";
const FOLLOWERS_MARK: &str = "@followers:";
const TAG_MARK: &str = "#";
const PICKED_MARK: &str = "@picked:";

impl Selector {
    /// Parses and validates `text` against the topology.
    pub fn parse(text: &str, topo: &Topology) -> Result<Selector, String> {
        let mut s = Selector {
            text: text.to_owned(),
            node: None,
            dc: None,
            role: None,
            at_event: None,
            pick: Pick::All,
        };
        let t = text.trim();
        if t == "all" {
            return Ok(s);
        }
        for (word, role) in [("leader", "role=leader"), ("followers", "role=follower")] {
            if t == word {
                return Selector::parse(role, topo)
                    .map(|l| Selector {
                        text: text.to_owned(),
                        ..l
                    })
                    .map_err(|e| e.replace(&format!("{role:?}"), &format!("{text:?}")));
            }
        }
        if !t.contains('=') {
            if topo.index(t).is_none() {
                return Err(format!(
                    "{t:?} is neither a node nor a selector (nodes are like {}; selectors are `all` or filters like \"dc=NAME role=client fraction=0.5\")",
                    topo.nodes.first().map_or("dc1-0", |n| n.name.as_str())
                ));
            }
            s.node = Some(t.to_owned());
            return Ok(s);
        }
        for term in t.split_whitespace() {
            let (k, v) = term
                .split_once('=')
                .ok_or_else(|| format!("selector {text:?}: {term:?} is not key=value"))?;
            match k {
                "dc" => {
                    if !topo.datacenters.iter().any(|d| d.name == v) {
                        let known: Vec<&str> =
                            topo.datacenters.iter().map(|d| d.name.as_str()).collect();
                        return Err(format!(
                            "selector {text:?}: unknown datacenter {v:?} (datacenters: {})",
                            known.join(", ")
                        ));
                    }
                    s.dc = Some(v.to_owned());
                }
                "role" => {
                    s.at_event = match v {
                        "client" | "server" => None,
                        "leader" => Some(AtEvent::Leader),
                        "follower" => Some(AtEvent::Followers),
                        _ => {
                            return Err(format!(
                                "selector {text:?}: role is client, server, leader or follower, not {v:?}"
                            ))
                        }
                    };
                    s.role = Some(if s.at_event.is_some() { "server" } else { v }.to_owned());
                }
                "fraction" => {
                    let f: f64 = v
                        .parse()
                        .ok()
                        .filter(|f| *f > 0.0 && *f <= 1.0)
                        .ok_or_else(|| {
                            format!("selector {text:?}: fraction is a number in (0, 1], not {v:?}")
                        })?;
                    s.pick = Pick::Fraction(f);
                }
                "count" => {
                    let n: usize = v.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                        format!("selector {text:?}: count is a positive integer, not {v:?}")
                    })?;
                    s.pick = Pick::Count(n);
                }
                _ => {
                    return Err(format!(
                    "selector {text:?}: unknown filter {k:?} (filters: dc, role, fraction, count)"
                ))
                }
            }
        }
        if s.resolve_all(topo).is_empty() {
            return Err(format!("selector {text:?} matches no node"));
        }
        if s.at_event.is_some() && s.pick != Pick::All {
            return Err(format!(
                "selector {text:?}: who leads and who follows is known only at the event; fraction and count do not apply"
            ));
        }
        Ok(s)
    }

    /// Whether the selector picks at random.
    pub fn is_random(&self) -> bool {
        self.pick != Pick::All
    }

    /// Whether the selector is known only during the run (`leader`,
    /// `followers`).
    pub fn is_dynamic(&self) -> bool {
        self.at_event.is_some()
    }

    /// Every node matching the filters, before any random pick, in order.
    fn resolve_all(&self, topo: &Topology) -> Vec<usize> {
        (0..topo.nodes.len())
            .filter(|&i| {
                let n = &topo.nodes[i];
                self.node.as_ref().is_none_or(|x| *x == n.name)
                    && self
                        .dc
                        .as_ref()
                        .is_none_or(|d| *d == topo.datacenters[n.dc].name)
                    && self.role.as_deref().is_none_or(|r| r == n.role.as_str())
            })
            .collect()
    }

    /// The nodes selected, as indices in order; random picks draw from
    /// `seed` and `salt` (which names the event, so each event picks anew).
    pub fn resolve(&self, topo: &Topology, seed: u64, salt: &str) -> Vec<usize> {
        let mut all = self.resolve_all(topo);
        let take = match self.pick {
            Pick::All => return all,
            Pick::Fraction(f) => ((all.len() as f64 * f).ceil() as usize).max(1),
            Pick::Count(n) => n,
        };
        let mut rng = ChaCha8Rng::seed_from_u64(derive_seed(seed, &self.text, 0, salt));
        all.shuffle(&mut rng);
        all.truncate(take);
        all.sort_unstable();
        all
    }
}

/// The union of several selectors' nodes, as names in topology order
/// (then a [`leader_placeholder`] per datacenter whose leader is named,
/// then a [`followers_placeholder`] per datacenter whose followers are).
pub fn resolve_names(sel: &[Selector], topo: &Topology, seed: u64, salt: &str) -> Vec<String> {
    let set: BTreeSet<usize> = sel
        .iter()
        .filter(|s| !s.is_dynamic())
        .flat_map(|s| s.resolve(topo, seed, salt))
        .collect();
    let dcs = |part: AtEvent| -> BTreeSet<usize> {
        sel.iter()
            .filter(|s| s.at_event == Some(part))
            .flat_map(|s| s.resolve_all(topo))
            .map(|i| topo.nodes[i].dc)
            .collect()
    };
    let name = |d: usize| topo.datacenters[d].name.as_str();
    set.into_iter()
        .map(|i| topo.nodes[i].name.clone())
        .chain(
            dcs(AtEvent::Leader)
                .into_iter()
                .map(|d| leader_placeholder(name(d))),
        )
        .chain(
            dcs(AtEvent::Followers)
                .into_iter()
                .map(|d| followers_placeholder(name(d))),
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::topology::{Datacenter, LatencyModel, Location, PoolScope};

    fn topo() -> Topology {
        let dc = |name: &str, clients| Datacenter {
            name: name.into(),
            clients,
            servers: 0,
            location: Location::Unplaced,
        };
        Topology::new(
            vec![dc("a", 4), dc("b", 6)],
            PoolScope::Global,
            LatencyModel::default(),
        )
    }

    #[test]
    fn selects_by_name_dc_role_and_share() {
        let t = topo();
        let names =
            |s: &str, seed| resolve_names(&[Selector::parse(s, &t).unwrap()], &t, seed, "e1");
        assert_eq!(names("a-2", 1), ["a-2"]);
        assert_eq!(names("all", 1).len(), 10);
        assert_eq!(names("dc=a", 1), ["a-0", "a-1", "a-2", "a-3"]);
        assert_eq!(names("dc=b role=client", 1).len(), 6);
        let half = names("dc=b fraction=0.5", 1);
        assert_eq!(half.len(), 3);
        assert!(half.iter().all(|n| n.starts_with("b-")));
        assert_eq!(half, names("dc=b fraction=0.5", 1), "same seed, same pick");
        assert_eq!(names("count=2", 4).len(), 2);
    }

    #[test]
    fn bad_selectors_say_what_is_allowed() {
        let t = topo();
        for (s, want) in [
            ("c-1", "neither a node"),
            ("dc=z", "unknown datacenter"),
            ("role=boss", "client, server, leader or follower"),
            ("followers", "matches no node"),
            ("leader", "matches no node"),
            ("fraction=2", "fraction"),
            ("count=0", "count"),
            ("colour=red", "unknown filter"),
            ("role=server", "matches no node"),
            ("dc", "neither a node"),
        ] {
            let e = Selector::parse(s, &t).unwrap_err();
            assert!(e.contains(want), "{s}: {e}");
        }
    }

    #[test]
    fn the_leader_is_a_placeholder_per_datacenter() {
        let dc = |name: &str, servers| Datacenter {
            name: name.into(),
            clients: 2,
            servers,
            location: Location::Unplaced,
        };
        let t = Topology::new(
            vec![dc("a", 3), dc("b", 0), dc("c", 1)],
            PoolScope::Datacenter,
            LatencyModel::default(),
        );
        let names = |s: &str| resolve_names(&[Selector::parse(s, &t).unwrap()], &t, 1, "e");
        assert_eq!(names("leader"), ["@leader:a", "@leader:c"]);
        assert_eq!(names("role=leader dc=c"), ["@leader:c"]);
        assert_eq!(names("followers"), ["@followers:a", "@followers:c"]);
        assert_eq!(
            resolve_names(
                &[
                    Selector::parse("role=follower dc=a", &t).unwrap(),
                    Selector::parse("leader", &t).unwrap(),
                    Selector::parse("b-0", &t).unwrap(),
                ],
                &t,
                1,
                "e"
            ),
            ["b-0", "@leader:a", "@leader:c", "@followers:a"]
        );
        assert_eq!(
            placeholder("@followers:a"),
            Some(Placeholder::Followers("a"))
        );
        assert!(Selector::parse("followers count=1", &t).is_err());
        assert!(Selector::parse("leader", &t).unwrap().is_dynamic());
        assert_eq!(leader_of_placeholder("@leader:a"), Some("a"));
        assert_eq!(leader_of_placeholder("a-server-0"), None);
        assert_eq!(
            placeholder(&tagged_leader_placeholder("a", 7)),
            Some(Placeholder::Leader("a", Some(7)))
        );
        assert_eq!(
            placeholder(&picked_placeholder(7)),
            Some(Placeholder::Picked(7))
        );
        assert!(Selector::parse("role=leader dc=b", &t).is_err());
        let e = Selector::parse("role=leader count=1", &t).unwrap_err();
        assert!(e.contains("known only at the event"), "{e}");
    }
}

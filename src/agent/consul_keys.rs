//! Consul's agent configuration keys, so that a Consul user's config files
//! start a cairn agent unchanged. The list (`consul_keys.txt`) is taken
//! from Consul's own source (its header names the commit): every key there
//! is one Consul accepts.
//!
//! A key cairn implements is read by [`super::config`]. Any other key of
//! Consul's is accepted and reported once ([`AgentConfig::ignored`](super::config::AgentConfig::ignored)),
//! except a key that would turn on a protection cairn does not have
//! (TLS verification, encryption, ACL features, `auto_config`): the agent
//! refuses to start and names it, so nobody believes a protection is on
//! when it is not. A key Consul does not know either is refused with the
//! closest known key suggested.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use serde_json::Value;

/// Consul's agent configuration keys (see the file's header).
const KEYS: &str = include_str!("consul_keys.txt");

/// `consul agent`'s flags and the key each sets (see the file's header).
const FLAGS: &str = include_str!("consul_flags.txt");

/// Consul's `agent` flags that take no value (`-ui`, `-rejoin`).
const BOOL_FLAGS: &[&str] = &[
    "auto-reload-config",
    "bootstrap",
    "dev",
    "disable-host-node-id",
    "disable-keyring-file",
    "enable-local-script-checks",
    "enable-script-checks",
    "log-json",
    "non-voting-server",
    "read-replica",
    "rejoin",
    "server",
    "syslog",
    "ui",
];

/// Whether `consul agent` knows flag `name` (without dashes), and the
/// configuration key it sets (`None` for flags that set none, like `-hcl`).
pub fn flag(name: &str) -> Option<Option<&'static str>> {
    FLAGS.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut w = l.split_whitespace();
        (w.next()? == name).then(|| w.next().filter(|k| *k != "-"))
    })
}

/// Whether Consul's flag `name` takes no value.
pub fn is_bool_flag(name: &str) -> bool {
    BOOL_FLAGS.contains(&name)
}

/// What Consul's list says of a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Known {
    /// Its value holds user-defined keys or definitions (`node_meta`,
    /// `services`): the whole value is the key's.
    pub open: bool,
    /// Consul still reads it, but under another name (if it says which).
    pub deprecated: Option<&'static str>,
}

fn keys() -> &'static BTreeMap<&'static str, Known> {
    static KEYS_MAP: OnceLock<BTreeMap<&'static str, Known>> = OnceLock::new();
    KEYS_MAP.get_or_init(|| {
        KEYS.lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let key = words.next()?;
                let rest: Vec<&str> = words.collect();
                let deprecated =
                    rest.iter()
                        .position(|w| *w == "deprecated")
                        .map(|i| match rest.get(i + 1) {
                            Some(&"->") => rest.get(i + 2).copied().unwrap_or(""),
                            _ => "",
                        });
                Some((
                    key,
                    Known {
                        open: rest.contains(&"*"),
                        deprecated,
                    },
                ))
            })
            .collect()
    })
}

/// What Consul's list says of `path` (a dotted key, such as
/// `acl.enable_token_persistence`), if it lists it.
pub fn lookup(path: &str) -> Option<Known> {
    keys().get(path).copied()
}

/// Whether Consul has keys below `path` (`tls` has `tls.defaults...`).
pub fn is_block(path: &str) -> bool {
    let prefix = format!("{path}.");
    keys()
        .range(prefix.as_str()..)
        .next()
        .is_some_and(|(k, _)| k.starts_with(&prefix))
}

/// Whether `path` can turn on a protection: TLS and its verification,
/// gossip encryption, ACL features, `auto_encrypt` and `auto_config`, and
/// limits on who may write over HTTP.
pub fn is_protection(path: &str) -> bool {
    let first = path.split('.').next().unwrap_or(path);
    matches!(first, "tls" | "auto_encrypt" | "auto_config" | "acl")
        || first.starts_with("verify_")
        || first.starts_with("encrypt")
        || first.starts_with("acl_")
        || first.starts_with("tls_")
        || first == "enable_acl_replication"
        || path.contains(".verify_")
        || path == "http_config.allow_write_http_from"
}

/// Whether `v` leaves a setting off: `false`, zero, empty, or `null`.
pub fn is_off(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.iter().all(is_off),
        Value::Object(o) => o.values().all(is_off),
    }
}

/// The key of Consul's list nearest to `path` by edit distance, if one is
/// near enough to be what was meant.
pub fn closest(path: &str) -> Option<&'static str> {
    let (best, d) = keys()
        .keys()
        .map(|k| (*k, edit_distance(path, k)))
        .min_by_key(|(_, d)| *d)?;
    (d <= (path.len() / 3).max(2)).then_some(best)
}

/// Levenshtein distance over bytes.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    let mut cur = vec![0; b.len() + 1];
    for (i, ca) in a.iter().enumerate() {
        cur[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_consuls() {
        // Keys new Consul users bring first, from Consul's reference.
        for k in [
            "primary_datacenter",
            "acl.enable_token_persistence",
            "ui_config.enabled",
            "ports.grpc",
            "tls.defaults.verify_incoming",
            "telemetry.prometheus_retention_time",
            "connect.enabled",
        ] {
            assert!(lookup(k).is_some(), "{k}");
        }
        assert!(lookup("node_meta").is_some_and(|k| k.open));
        assert_eq!(
            lookup("acl_datacenter").and_then(|k| k.deprecated),
            Some("primary_datacenter")
        );
        assert!(keys().len() > 300, "{}", keys().len());
        assert!(is_block("tls") && is_block("tls.defaults") && !is_block("node_name"));
    }

    #[test]
    fn protections_and_what_leaves_them_off() {
        for k in [
            "tls.defaults.verify_incoming",
            "verify_incoming_rpc",
            "auto_encrypt.tls",
            "auto_config.enabled",
            "encrypt",
            "acl.enable_token_replication",
            "acl_default_policy",
        ] {
            assert!(is_protection(k), "{k}");
        }
        assert!(!is_protection("ui_config.enabled") && !is_protection("primary_datacenter"));
        assert!(is_off(&Value::Bool(false)) && is_off(&serde_json::json!({"a": ""})));
        assert!(!is_off(&Value::Bool(true)) && !is_off(&serde_json::json!("x")));
    }

    #[test]
    fn flags_name_their_keys() {
        assert_eq!(flag("https-port"), Some(Some("ports.https")));
        assert_eq!(flag("ui"), Some(Some("ui_config.enabled")));
        assert_eq!(flag("hcl"), Some(None));
        assert_eq!(flag("no-such-flag"), None);
        assert!(is_bool_flag("ui") && !is_bool_flag("https-port"));
        // Every flag that sets a key sets one Consul's list has.
        for l in FLAGS.lines().filter(|l| !l.starts_with('#')) {
            let mut w = l.split_whitespace();
            let (name, key) = (w.next().unwrap(), w.next().unwrap());
            assert!(
                key == "-" || lookup(key).is_some() || is_block(key),
                "{name} -> {key}"
            );
        }
    }

    #[test]
    fn a_typo_finds_its_key() {
        assert_eq!(
            closest("acl.enable_token_persistance"),
            Some("acl.enable_token_persistence")
        );
        assert_eq!(closest("primary_datacentre"), Some("primary_datacenter"));
        assert_eq!(closest("zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"), None);
    }
}

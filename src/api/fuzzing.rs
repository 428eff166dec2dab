//! Every HTTP request body the API decodes, for the fuzz target
//! `api_bodies` (fuzz/fuzz_targets/api_bodies.rs): each decoder, and what
//! its handler makes of the decoded body before anything reaches the
//! servers or the agent's own state (the same functions the handlers
//! call), and where the servers' checks of it are plain functions, those
//! too. The handlers' decoders are private to their modules, and a fuzz
//! target is another crate: this module is public (hidden from the docs)
//! only to let it in.
//!
//! What must hold for any body: it is taken or refused, never a panic, and
//! a refusal is the caller's mistake (a 4xx), never a 500.

use std::collections::HashMap;
use std::sync::Arc;

use super::acl::{AgentTokenBody, Named, TokenBody};
use super::acl_auth::{LoginBody, MethodBody, RuleBody};
use super::catalog::{DeregisterBody, RegisterBody};
use super::connect::{AuthorizeBody, CaConfigBody, IntentionBody};
use super::error::ApiError;
use crate::acl::{Policy, Role};
use crate::agent::definition::ServiceDef;
use crate::agent::events::Events;
use crate::agent::LocalState;
use crate::state::Command;

/// The wall clock the fuzzed bodies are judged at (tokens' expiry).
const NOW_MS: u64 = 1_800_000_000_000;

/// The ID handlers would pick for what a body creates.
fn new_id() -> String {
    "8f246b77-f3e1-ff88-5b48-8ec93abf3e05".into()
}

/// A decoder: its name (the seeds in fuzz/corpus/api_bodies/ are named
/// after it) and what it runs on a body.
type Decoder = (&'static str, fn(&[u8]) -> Result<(), ApiError>);

/// Every decoder, by mode. New ones go at the end, so that the seeds'
/// first bytes keep their meaning.
const DECODERS: [Decoder; 26] = [
    ("agent_service", agent_service),
    ("agent_check", |b| super::agent::check_of(b, true).map(drop)),
    ("agent_check_update", |b| {
        super::agent::check_update(b).map(drop)
    }),
    ("catalog_register", |b| {
        super::decode::body::<RegisterBody>(b)?
            .into_command("dc1".into())
            .map(drop)
    }),
    ("catalog_deregister", |b| {
        super::decode::body::<DeregisterBody>(b)?
            .into_command()
            .map(drop)
    }),
    ("connect_ca_config", |b| {
        super::decode::body::<CaConfigBody>(b)?.to_op().map(drop)
    }),
    ("connect_intention", |b| {
        super::decode::body::<IntentionBody>(b)?
            .into_intention(new_id())
            .map(drop)
    }),
    ("connect_authorize", |b| {
        super::decode::body::<AuthorizeBody>(b)?
            .client_id()
            .map(drop)
    }),
    ("autopilot_config", |b| {
        super::raft::autopilot_config(b).map(drop)
    }),
    ("txn", |b| super::txn::parse(b).map(drop)),
    ("keyring", keyring),
    ("coordinate_update", |b| {
        super::coordinate::update_of(b).map(drop)
    }),
    ("session_create", |b| {
        super::session::session_of(b, "node-1").map(drop)
    }),
    ("kv_put", |b| super::kv::value_of(b).map(drop)),
    ("prepared_query", prepared_query),
    ("acl_token", acl_token),
    ("acl_policy", |b| Policy::set(new_id(), b).map(drop)),
    ("acl_role", acl_role),
    ("acl_templated_policy_preview", |b| {
        crate::acl::identity::TEMPLATES
            .iter()
            .map(|t| super::acl::preview(t, b).map(drop))
            .collect::<Vec<_>>()
            .into_iter()
            .collect()
    }),
    ("agent_token", |b| {
        super::acl::body::<AgentTokenBody>(b).map(drop)
    }),
    ("acl_auth_method", |b| {
        let m = super::acl::body::<MethodBody>(b)?.into_method()?;
        // The servers' check, before the method is stored.
        let _ = m.validate();
        Ok(())
    }),
    ("acl_binding_rule", |b| {
        let r = super::acl::body::<RuleBody>(b)?.into_rule(new_id());
        // The servers' check, before the rule is stored.
        let _ = r.validate();
        Ok(())
    }),
    ("acl_login", |b| {
        super::acl::body::<LoginBody>(b)?
            .into_login(new_id)
            .map(drop)
    }),
    ("event_fire", event_fire),
    ("snapshot_restore", |b| {
        super::snapshot::snapshot_of(b).map(drop)
    }),
    ("acl_join_token", |b| super::join::asked(b).map(drop)),
];

/// Runs decoder `mode` (modulo their number) on the body `bytes` as its
/// handler does: the fuzz target's entry point. Panics only when the code
/// under test does, or when a body earns a 500.
pub fn body(mode: u8, bytes: &[u8]) {
    let (name, run) = DECODERS[usize::from(mode) % DECODERS.len()];
    if let Err(e) = run(bytes) {
        assert!(
            e.0.is_client_error(),
            "{name}: a body earned {}: {}",
            e.0,
            e.1
        );
    }
}

/// `PUT /v1/agent/service/register`: the service, its checks and its
/// sidecar's (with a sidecar port taken, as on a busy agent).
fn agent_service(b: &[u8]) -> Result<(), ApiError> {
    let d: ServiceDef = super::decode::body(b)?;
    let _ = d.id();
    super::agent::service_parts(&d, &[21000], true).map(drop)
}

/// `/v1/operator/keyring`: the key, as the keyring then reads it.
fn keyring(b: &[u8]) -> Result<(), ApiError> {
    let key = super::operator::key_of(b)?;
    let _ = crate::gossip::keyring::parse_key(&key);
    Ok(())
}

/// `POST /v1/query`: the query, and its lookup as executing it by its
/// name (and by a longer one, for a template) renders it.
fn prepared_query(b: &[u8]) -> Result<(), ApiError> {
    let q = super::query::decode(b)?;
    let _ = crate::agent::prepared::render(&q, &q.name);
    let _ = crate::agent::prepared::render(&q, &format!("{}-web", q.name));
    Ok(())
}

/// `PUT /v1/acl/token`, and the servers' check of its identities.
fn acl_token(b: &[u8]) -> Result<(), ApiError> {
    let t = super::acl::body::<TokenBody>(b)?.token_at(NOW_MS, new_id)?;
    let _ = t.identities.validated(t.local);
    Ok(())
}

/// `PUT /v1/acl/role`, and the servers' check of its identities.
fn acl_role(b: &[u8]) -> Result<(), ApiError> {
    if let Command::AclRoleSet(r) = Role::set(new_id(), b)? {
        let _ = r.identities.validated(false);
    }
    Ok(())
}

/// `PUT /v1/event/fire/deploy`: the event as this agent checks, keeps and
/// encodes it for gossip.
fn event_fire(b: &[u8]) -> Result<(), ApiError> {
    let events = Events::new("node-1", Arc::new(LocalState::new("node-1")));
    let ev = super::event::event_of("deploy".into(), &HashMap::new(), b);
    events.fire(ev)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use serde_json::Value;

    use super::*;

    /// The seed corpus: each file's first byte is its mode.
    fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/api_bodies");
        let mut out: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| {
                let p = e.unwrap().path();
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect();
        out.sort();
        out
    }

    /// `v` with the node at `at` (a preorder position) replaced by `with`,
    /// or with every leaf replaced when `at` is `None`; `n` counts nodes.
    fn replaced(v: &Value, at: Option<usize>, with: &Value, n: &mut usize) -> Value {
        let here = *n;
        *n += 1;
        if at == Some(here) {
            return with.clone();
        }
        match v {
            Value::Object(m) => Value::Object(
                m.iter()
                    .map(|(k, v)| (k.clone(), replaced(v, at, with, n)))
                    .collect(),
            ),
            Value::Array(a) => Value::Array(a.iter().map(|v| replaced(v, at, with, n)).collect()),
            _ if at.is_none() => with.clone(),
            leaf => leaf.clone(),
        }
    }

    /// Values of every wrong type and size, for any field.
    fn nasty_values() -> Vec<Value> {
        let deep = (0..200).fold(Value::Null, |v, _| Value::Array(vec![v]));
        vec![
            Value::Null,
            serde_json::json!(true),
            serde_json::json!(-1),
            serde_json::json!(u64::MAX),
            serde_json::json!(1e308),
            serde_json::json!(-1e308),
            serde_json::json!(0.5),
            serde_json::json!(""),
            serde_json::json!("x"),
            serde_json::json!("9999999999999999999999h"),
            serde_json::json!("\u{0}\u{fffd}${name.full}${match(99)}{{.Name}}"),
            serde_json::json!([]),
            serde_json::json!([null]),
            serde_json::json!({}),
            serde_json::json!({"": null}),
            deep,
        ]
    }

    /// Bodies that are not JSON, or JSON no decoder expects.
    fn nasty_bodies() -> Vec<Vec<u8>> {
        let mut out: Vec<Vec<u8>> = [
            &b""[..],
            b" ",
            b"null",
            b"0",
            b"-0",
            b"1e999999",
            b"123456789012345678901234567890123456789",
            b"\"\"",
            b"[]",
            b"{}",
            b"{\"",
            b"\xff\xfe\x00",
            b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff",
        ]
        .iter()
        .map(|b| b.to_vec())
        .collect();
        out.push(vec![b'['; 10_000]);
        out.push([vec![b'['; 10_000], vec![b']'; 10_000]].concat());
        out.push(b"{\"a\":".repeat(10_000));
        out.push([b"[".repeat(10_000), b"{}".to_vec(), b"]".repeat(10_000)].concat());
        out.push(vec![b'x'; super::super::kv::MAX_VALUE + 1]);
        out
    }

    #[test]
    fn every_mode_has_a_seed_and_takes_it() {
        let seeds = seeds();
        for (mode, (name, run)) in DECODERS.iter().enumerate() {
            let mine: Vec<_> = seeds
                .iter()
                .filter(|(_, b)| b.first() == Some(&(mode as u8)))
                .collect();
            assert!(!mine.is_empty(), "no seed for mode {mode} ({name})");
            for (path, bytes) in mine {
                let file = path.file_name().unwrap().to_string_lossy();
                assert!(file.contains(name), "{file} is not a {name} seed");
                // Realistic bodies: each is taken, so fuzzing starts past
                // the checks rather than at them.
                if let Err(e) = run(&bytes[1..]) {
                    panic!("{file}: {} {}", e.0, e.1);
                }
            }
        }
        assert!(seeds
            .iter()
            .all(|(_, b)| b.first().is_some_and(|&m| usize::from(m) < DECODERS.len())));
    }

    #[test]
    fn no_body_panics_or_earns_a_500() {
        let bodies = nasty_bodies();
        for mode in 0..DECODERS.len() {
            for b in &bodies {
                body(mode as u8, b);
            }
        }
        // Every field of every seed set to each wrong value, one at a time
        // and all at once.
        for (_, seed) in seeds() {
            let (mode, rest) = seed.split_first().unwrap();
            let Ok(v) = serde_json::from_slice::<Value>(rest) else {
                continue;
            };
            let nodes = {
                let mut n = 0;
                replaced(&v, None, &Value::Null, &mut n);
                n
            };
            for with in nasty_values() {
                for at in (0..nodes).map(Some).chain([None]) {
                    let b = serde_json::to_vec(&replaced(&v, at, &with, &mut 0)).unwrap();
                    body(*mode, &b);
                }
            }
        }
    }
}

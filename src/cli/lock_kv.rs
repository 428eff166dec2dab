//! The lock and the semaphore of `cairn lock`, over the KV and session
//! endpoints, in the protocol of Consul's Go API (`api/lock.go`,
//! `api/semaphore.go`): the same keys, flags and JSON, so `cairn lock`,
//! `consul lock` and programs using Consul's API on one prefix exclude
//! each other.
//!
//! A lock is the key `PREFIX/.lock`, acquired with a session. A semaphore
//! of N is a key `PREFIX/<session>` per contender (acquired with its
//! session, which deletes it when it ends) and `PREFIX/.lock` holding
//! `{"Limit": N, "Holders": {"<session>": true}}`, changed only by
//! check-and-set; a holder whose contender key is gone no longer counts.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::http::percent_encode;
use crate::env::TokioEnv;
use crate::format::parse_duration;
use crate::http_client::{self as client, ClientError};

/// The flags of a lock's key (Consul's `LockFlagValue`): a key with other
/// flags is not a lock, and is left alone.
pub(super) const LOCK_FLAG: u64 = 0x2ddc_cbc0_58a5_0c18;
/// The flags of a semaphore's keys (Consul's `SemaphoreFlagValue`).
pub(super) const SEMAPHORE_FLAG: u64 = 0xe0f6_9a2b_aa41_4de0;
/// The key under the prefix that the holders coordinate on.
const LOCK_KEY: &str = ".lock";
/// How long one blocking read waits while acquiring (Consul's
/// `DefaultLockWaitTime`).
const ACQUIRE_WAIT: Duration = Duration::from_secs(15);
/// The pause after an acquisition refused by a lock-delay (Consul's
/// `DefaultLockRetryTime`).
const LOCK_DELAY_RETRY: Duration = Duration::from_secs(5);
/// The pause between the monitor's retries (Consul's `lock` command).
const MONITOR_RETRY_TIME: Duration = Duration::from_secs(1);
/// The monitor's blocking reads wait as long as the agent allows.
const MONITOR_WAIT: Duration = Duration::from_secs(300);

/// Where the lock lives and how it is taken.
#[derive(Debug, Clone)]
pub(super) struct Options {
    /// The KV prefix, without a leading `/`.
    pub prefix: String,
    /// Holders at once: 1 is a lock, more a semaphore.
    pub limit: u32,
    /// With `-timeout`: give up after this long (one attempt, Consul's
    /// "try once").
    pub give_up_after: Option<Duration>,
    /// Failed reads (agent unreachable, 5xx) the monitor rides out before
    /// it declares the lock lost.
    pub monitor_retries: u32,
}

impl Options {
    fn is_lock(&self) -> bool {
        self.limit == 1
    }

    /// `PREFIX/.lock`.
    pub(super) fn lock_key(&self) -> String {
        join(&self.prefix, LOCK_KEY)
    }

    fn contender_key(&self, session: &str) -> String {
        join(&self.prefix, session)
    }

    /// What the session's end does to its keys: a lock's key stays
    /// (released), a contender's key goes.
    pub(super) fn behavior(&self) -> &'static str {
        if self.is_lock() {
            "release"
        } else {
            "delete"
        }
    }
}

/// `prefix/name`, as Go's `path.Join` makes it (no doubled or trailing `/`).
fn join(prefix: &str, name: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        name.to_string()
    } else {
        format!("{prefix}/{name}")
    }
}

/// A KV entry as the API answers it, with what the protocol reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Pair {
    key: String,
    #[serde(default)]
    flags: u64,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    modify_index: u64,
    #[serde(default)]
    session: Option<String>,
}

impl Pair {
    fn holder(&self) -> Option<&str> {
        self.session.as_deref().filter(|s| !s.is_empty())
    }
}

/// The agent every request goes to, and the datacenter they are for.
#[derive(Clone)]
pub(super) struct Agent {
    env: TokioEnv,
    addr: SocketAddr,
    /// `dc=NAME`, or empty.
    dc: String,
}

impl Agent {
    /// `dc_query` is [`super::http::ServerArgs::write_query`]'s.
    pub(super) fn new(env: TokioEnv, addr: SocketAddr, dc_query: String) -> Agent {
        Agent {
            env,
            addr,
            dc: dc_query.trim_end_matches('&').to_string(),
        }
    }

    fn url(&self, path: &str, params: &[String]) -> String {
        let all: Vec<&str> = std::iter::once(self.dc.as_str())
            .chain(params.iter().map(String::as_str))
            .filter(|p| !p.is_empty())
            .collect();
        if all.is_empty() {
            path.to_string()
        } else {
            format!("{path}?{}", all.join("&"))
        }
    }

    fn kv_path(key: &str) -> String {
        let segments: Vec<String> = key.split('/').map(percent_encode).collect();
        format!("/v1/kv/{}", segments.join("/"))
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Vec<u8>,
        limit: Duration,
    ) -> Result<client::Answer, ClientError> {
        client::exchange(&self.env, self.addr, method, path, Bytes::from(body), limit).await
    }

    /// The entries at `key` (with `recurse`: under it), blocking while the
    /// index is `index` (0: not at all); nothing when there are none.
    async fn read(
        &self,
        key: &str,
        recurse: bool,
        index: u64,
        wait: Duration,
        consistent: bool,
    ) -> Result<(Vec<Pair>, u64), ClientError> {
        let mut params = Vec::new();
        if recurse {
            params.push("recurse".to_string());
        }
        if consistent {
            params.push("consistent".to_string());
        }
        if index > 0 {
            params.push(format!("index={index}"));
            params.push(format!("wait={}ms", wait.as_millis()));
        }
        let path = self.url(&Self::kv_path(key), &params);
        // The agent may wait a sixteenth longer (jitter); then slack.
        let limit = wait + wait / 16 + Duration::from_secs(10);
        match self.send("GET", &path, Vec::new(), limit).await {
            Ok(a) => {
                let pairs = serde_json::from_slice(&a.body).map_err(|e| ClientError::Http {
                    addr: self.addr,
                    why: format!("answer is not a list of KV entries: {e}"),
                })?;
                Ok((pairs, a.index.unwrap_or(0)))
            }
            Err(ClientError::Status { status: 404, .. }) => Ok((Vec::new(), 0)),
            Err(e) => Err(e),
        }
    }

    /// The entry at `key`, if any.
    async fn get(
        &self,
        key: &str,
        index: u64,
        wait: Duration,
        consistent: bool,
    ) -> Result<(Option<Pair>, u64), ClientError> {
        let (pairs, index) = self.read(key, false, index, wait, consistent).await?;
        Ok((pairs.into_iter().find(|p| p.key == key), index))
    }

    /// A PUT to `key` with `params` (`acquire=`, `cas=`...): whether it was
    /// written.
    async fn put(&self, key: &str, params: &[String], value: Vec<u8>) -> Result<bool, ClientError> {
        let path = self.url(&Self::kv_path(key), params);
        let a = self.send("PUT", &path, value, REQUEST_LIMIT).await?;
        Ok(a.body.as_ref().starts_with(b"true"))
    }

    /// Deletes `key` (with `cas`: only at that index): whether it was.
    async fn delete(&self, key: &str, cas: Option<u64>) -> Result<bool, ClientError> {
        let params: Vec<String> = cas.map(|c| format!("cas={c}")).into_iter().collect();
        let path = self.url(&Self::kv_path(key), &params);
        let a = self
            .send("DELETE", &path, Vec::new(), REQUEST_LIMIT)
            .await?;
        Ok(a.body.as_ref().starts_with(b"true"))
    }

    /// The agent's node name (the check that it answers at all).
    pub(super) async fn node_name(&self) -> Result<String, ClientError> {
        let me: serde_json::Value =
            client::get_json(&self.env, self.addr, "/v1/agent/self").await?;
        Ok(me["Config"]["NodeName"]
            .as_str()
            .unwrap_or_default()
            .to_string())
    }

    /// Creates the session: its ID. The TTL and lock-delay are durations
    /// as the user wrote them (checked already), `""` for none.
    pub(super) async fn create_session(
        &self,
        name: &str,
        ttl: &str,
        behavior: &str,
        lock_delay: &str,
    ) -> Result<String, ClientError> {
        let mut body = serde_json::json!({ "Name": name, "Behavior": behavior });
        if !ttl.is_empty() {
            body["TTL"] = ttl.into();
        }
        if !lock_delay.is_empty() {
            body["LockDelay"] = lock_delay.into();
        }
        let path = self.url("/v1/session/create", &[]);
        let a = self
            .send("PUT", &path, body.to_string().into_bytes(), REQUEST_LIMIT)
            .await?;
        let created: serde_json::Value =
            serde_json::from_slice(&a.body).map_err(|e| ClientError::Http {
                addr: self.addr,
                why: format!("session answer is not JSON: {e}"),
            })?;
        created["ID"]
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| ClientError::Http {
                addr: self.addr,
                why: "the session answer has no ID".into(),
            })
    }

    /// Renews the session: its TTL as the servers now say, or `None` when
    /// it is gone.
    async fn renew_session(&self, id: &str) -> Result<Option<Duration>, ClientError> {
        let path = self.url(&format!("/v1/session/renew/{}", percent_encode(id)), &[]);
        match self.send("PUT", &path, Vec::new(), REQUEST_LIMIT).await {
            Ok(a) => {
                let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap_or_default();
                let ttl = v[0]["TTL"].as_str().and_then(|t| parse_duration(t).ok());
                Ok(Some(ttl.unwrap_or_default()))
            }
            Err(ClientError::Status { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Destroys the session (its keys are released or deleted).
    pub(super) async fn destroy_session(&self, id: &str) -> Result<(), ClientError> {
        let path = self.url(&format!("/v1/session/destroy/{}", percent_encode(id)), &[]);
        self.send("PUT", &path, Vec::new(), REQUEST_LIMIT)
            .await
            .map(|_| ())
    }
}

/// The limit on a request that does not block.
const REQUEST_LIMIT: Duration = Duration::from_secs(30);

/// Renews the session every half TTL until aborted (Consul's
/// `RenewPeriodic`): a failed renewal is retried every second until a
/// whole TTL has passed without one; a session found gone ends it.
pub(super) fn keep_alive(agent: Agent, id: String, ttl: Duration) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if ttl.is_zero() {
            return;
        }
        let (mut ttl, mut wait, mut renewed) = (ttl, ttl / 2, Instant::now());
        loop {
            if renewed.elapsed() > ttl {
                return;
            }
            tokio::time::sleep(wait).await;
            match agent.renew_session(&id).await {
                Ok(Some(t)) => {
                    if !t.is_zero() {
                        ttl = t;
                    }
                    wait = ttl / 2;
                    renewed = Instant::now();
                }
                Ok(None) => return,
                Err(_) => wait = Duration::from_secs(1),
            }
        }
    })
}

/// The semaphore's coordination record, Consul's `semaphoreLock`.
#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Record {
    #[serde(alias = "limit", default)]
    limit: i64,
    /// The holders' sessions (a set: the values are `true`).
    #[serde(alias = "holders", default)]
    holders: Option<BTreeMap<String, bool>>,
}

impl Record {
    fn holders(&mut self) -> &mut BTreeMap<String, bool> {
        self.holders.get_or_insert_with(BTreeMap::new)
    }

    /// The record in `pair`, or a new one for `limit` holders.
    fn decode(pair: Option<&Pair>, limit: u32) -> anyhow::Result<Record> {
        let value = pair.and_then(|p| p.value.as_deref()).unwrap_or_default();
        if value.is_empty() {
            return Ok(Record {
                limit: i64::from(limit),
                holders: Some(BTreeMap::new()),
            });
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(value)
            .map_err(|e| anyhow::anyhow!("lock decoding failed: {e}"))?;
        serde_json::from_slice(&bytes).map_err(|e| anyhow::anyhow!("lock decoding failed: {e}"))
    }

    /// Forgets the holders whose sessions hold no key under the prefix.
    fn prune(&mut self, pairs: &[Pair]) {
        let alive: std::collections::HashSet<&str> =
            pairs.iter().filter_map(Pair::holder).collect();
        self.holders().retain(|h, _| alive.contains(h.as_str()));
    }

    fn encode(&self) -> anyhow::Result<Vec<u8>> {
        serde_json::to_vec(self).map_err(|e| anyhow::anyhow!("lock encoding failed: {e}"))
    }
}

/// How long the next blocking read may wait, or `None` when `-timeout`
/// has run out (checked from the second attempt on, as Consul does).
fn next_wait(o: &Options, start: Instant, attempts: &mut u32) -> Option<Duration> {
    let first = *attempts == 0;
    *attempts += 1;
    match o.give_up_after {
        Some(limit) if first => Some(limit),
        // Under a millisecond left is none: `wait=0ms` would be the
        // agent's default wait.
        Some(limit) => limit
            .checked_sub(start.elapsed())
            .filter(|d| *d >= Duration::from_millis(1)),
        None => Some(ACQUIRE_WAIT),
    }
}

/// Waits for the lock or a slot of the semaphore, for `session`: `false`
/// when `-timeout` ran out first.
pub(super) async fn acquire(agent: &Agent, o: &Options, session: &str) -> anyhow::Result<bool> {
    if o.is_lock() {
        acquire_lock(agent, o, session).await
    } else {
        acquire_slot(agent, o, session).await
    }
}

async fn acquire_lock(agent: &Agent, o: &Options, session: &str) -> anyhow::Result<bool> {
    let key = o.lock_key();
    let (start, mut attempts, mut index) = (Instant::now(), 0, 0);
    loop {
        let Some(wait) = next_wait(o, start, &mut attempts) else {
            return Ok(false);
        };
        let (pair, at) = agent
            .get(&key, index, wait, false)
            .await
            .map_err(|e| anyhow::anyhow!("failed to read lock: {e}"))?;
        if let Some(p) = &pair {
            if p.flags != LOCK_FLAG {
                anyhow::bail!("Existing key does not match lock use");
            }
            if p.holder() == Some(session) {
                return Ok(true);
            }
            if p.holder().is_some() {
                index = at;
                continue;
            }
        }
        let params = [format!("acquire={session}"), format!("flags={LOCK_FLAG}")];
        if agent.put(&key, &params, Vec::new()).await? {
            return Ok(true);
        }
        // Refused: someone took it meanwhile (wait for them), or a
        // lock-delay of a lost session is running (wait a while).
        let (pair, at) = agent.get(&key, 0, wait, false).await?;
        if pair.as_ref().and_then(Pair::holder).is_some() {
            index = at;
            continue;
        }
        index = 0;
        let pause = match o.give_up_after {
            Some(limit) => LOCK_DELAY_RETRY.min(limit.saturating_sub(start.elapsed())),
            None => LOCK_DELAY_RETRY,
        };
        tokio::time::sleep(pause).await;
    }
}

async fn acquire_slot(agent: &Agent, o: &Options, session: &str) -> anyhow::Result<bool> {
    let params = [
        format!("acquire={session}"),
        format!("flags={SEMAPHORE_FLAG}"),
    ];
    let made = agent
        .put(&o.contender_key(session), &params, Vec::new())
        .await;
    match made {
        Ok(true) => {}
        Ok(false) => anyhow::bail!("failed to make contender entry"),
        Err(e) => anyhow::bail!("failed to make contender entry: {e}"),
    }
    let key = o.lock_key();
    let (start, mut attempts, mut index) = (Instant::now(), 0, 0);
    loop {
        let Some(wait) = next_wait(o, start, &mut attempts) else {
            return Ok(false);
        };
        let (pairs, at) = agent
            .read(&o.prefix, true, index, wait, false)
            .await
            .map_err(|e| anyhow::anyhow!("failed to read prefix: {e}"))?;
        let lock = pairs.iter().find(|p| p.key == key);
        if lock.is_some_and(|p| p.flags != SEMAPHORE_FLAG) {
            anyhow::bail!("Existing key does not match semaphore use");
        }
        let mut record = Record::decode(lock, o.limit)?;
        if record.limit != i64::from(o.limit) {
            anyhow::bail!(
                "semaphore limit conflict (lock: {}, local: {})",
                record.limit,
                o.limit
            );
        }
        record.prune(&pairs);
        if record.holders().len() >= o.limit as usize {
            index = at;
            continue;
        }
        record.holders().insert(session.to_string(), true);
        let cas = lock.map_or(0, |p| p.modify_index);
        let params = [format!("cas={cas}"), format!("flags={SEMAPHORE_FLAG}")];
        let set = agent
            .put(&key, &params, record.encode()?)
            .await
            .map_err(|e| anyhow::anyhow!("failed to update lock: {e}"))?;
        if set {
            return Ok(true);
        }
        // Another contender changed the record first: read it again.
        index = 0;
    }
}

/// Whether `session` still holds the lock (or its slot), by a consistent
/// read blocking while the index is `index`; the index to block on next.
async fn still_held(
    agent: &Agent,
    o: &Options,
    session: &str,
    index: u64,
) -> Result<(bool, u64), ClientError> {
    if o.is_lock() {
        let (pair, at) = agent.get(&o.lock_key(), index, MONITOR_WAIT, true).await?;
        return Ok((pair.as_ref().and_then(Pair::holder) == Some(session), at));
    }
    let (pairs, at) = agent
        .read(&o.prefix, true, index, MONITOR_WAIT, true)
        .await?;
    let key = o.lock_key();
    let Ok(mut record) = Record::decode(pairs.iter().find(|p| p.key == key), o.limit) else {
        return Ok((false, at));
    };
    record.prune(&pairs);
    Ok((record.holders().contains_key(session), at))
}

/// Watches the lock with blocking reads; `lost` fires when it is no
/// longer held (the key taken away, the session gone, the holder record
/// changed) or the agent stays unreachable past the retries.
pub(super) fn monitor(
    agent: Agent,
    o: Options,
    session: String,
) -> (
    tokio::task::JoinHandle<()>,
    tokio::sync::oneshot::Receiver<()>,
) {
    let (lost, on_lost) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut index = 0;
        let mut retries = o.monitor_retries;
        loop {
            match still_held(&agent, &o, &session, index).await {
                Ok((true, at)) => {
                    index = at;
                    retries = o.monitor_retries;
                }
                Ok((false, _)) => break,
                Err(e) if retries > 0 && retryable(&e) => {
                    retries -= 1;
                    index = 0;
                    tokio::time::sleep(MONITOR_RETRY_TIME).await;
                }
                Err(_) => break,
            }
        }
        let _ = lost.send(());
    });
    (task, on_lost)
}

/// An error worth another try (Consul's `IsRetryableError`: the agent
/// unreachable, or a 5xx).
fn retryable(e: &ClientError) -> bool {
    match e {
        ClientError::Status { status, .. } => *status >= 500,
        ClientError::Address(..) => false,
        _ => true,
    }
}

/// Gives the lock (or the slot) back: the key released, or this session
/// taken out of the holders and its contender key deleted.
pub(super) async fn release(agent: &Agent, o: &Options, session: &str) -> anyhow::Result<()> {
    let key = o.lock_key();
    if o.is_lock() {
        let params = [format!("release={session}"), format!("flags={LOCK_FLAG}")];
        agent
            .put(&key, &params, Vec::new())
            .await
            .map_err(|e| anyhow::anyhow!("failed to release lock: {e}"))?;
        return Ok(());
    }
    loop {
        let (pair, _) = agent.get(&key, 0, ACQUIRE_WAIT, false).await?;
        let mut record = Record::decode(pair.as_ref(), o.limit)?;
        if record.holders().remove(session).is_none() {
            break;
        }
        let cas = pair.as_ref().map_or(0, |p| p.modify_index);
        let params = [format!("cas={cas}"), format!("flags={SEMAPHORE_FLAG}")];
        if agent
            .put(&key, &params, record.encode()?)
            .await
            .map_err(|e| anyhow::anyhow!("failed to update lock: {e}"))?
        {
            break;
        }
    }
    agent.delete(&o.contender_key(session), None).await?;
    Ok(())
}

/// What [`cleanup`] found.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Cleanup {
    /// The `.lock` key is gone (or was never there).
    Removed,
    /// Someone holds or waits for it: it stays.
    InUse,
}

/// Deletes the `.lock` key if nobody holds it (Consul's `Destroy`).
pub(super) async fn cleanup(agent: &Agent, o: &Options) -> anyhow::Result<Cleanup> {
    let key = o.lock_key();
    let pair = if o.is_lock() {
        let (pair, _) = agent
            .get(&key, 0, ACQUIRE_WAIT, false)
            .await
            .map_err(|e| anyhow::anyhow!("failed to read lock: {e}"))?;
        let Some(p) = pair else {
            return Ok(Cleanup::Removed);
        };
        if p.flags != LOCK_FLAG {
            anyhow::bail!("Existing key does not match lock use");
        }
        if p.holder().is_some() {
            return Ok(Cleanup::InUse);
        }
        p
    } else {
        let (pairs, _) = agent
            .read(&o.prefix, true, 0, ACQUIRE_WAIT, false)
            .await
            .map_err(|e| anyhow::anyhow!("failed to read prefix: {e}"))?;
        let Some(p) = pairs.iter().find(|p| p.key == key).cloned() else {
            return Ok(Cleanup::Removed);
        };
        if p.flags != SEMAPHORE_FLAG {
            anyhow::bail!("Existing key does not match semaphore use");
        }
        let mut record = Record::decode(Some(&p), o.limit)?;
        record.prune(&pairs);
        if !record.holders().is_empty() {
            return Ok(Cleanup::InUse);
        }
        p
    };
    let removed = agent
        .delete(&key, Some(pair.modify_index))
        .await
        .map_err(|e| anyhow::anyhow!("failed to remove lock: {e}"))?;
    Ok(if removed {
        Cleanup::Removed
    } else {
        Cleanup::InUse
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(key: &str, session: Option<&str>, value: &[u8]) -> Pair {
        Pair {
            key: key.into(),
            flags: SEMAPHORE_FLAG,
            value: (!value.is_empty())
                .then(|| base64::engine::general_purpose::STANDARD.encode(value)),
            modify_index: 7,
            session: session.map(str::to_owned),
        }
    }

    #[test]
    fn keys_join_as_go_paths() {
        let o = Options {
            prefix: "svc/leader/".into(),
            limit: 1,
            give_up_after: None,
            monitor_retries: 3,
        };
        assert_eq!(o.lock_key(), "svc/leader/.lock");
        assert_eq!(o.contender_key("abc"), "svc/leader/abc");
        assert_eq!(join("", ".lock"), ".lock");
    }

    #[test]
    fn the_holder_record_is_consuls_json_and_drops_dead_holders() {
        let raw = br#"{"Limit":2,"Holders":{"a":true,"b":true}}"#;
        let lock = pair("p/.lock", None, raw);
        let mut r = Record::decode(Some(&lock), 2).unwrap();
        assert_eq!(r.limit, 2);
        // Only "a" still holds its contender key.
        r.prune(&[lock.clone(), pair("p/a", Some("a"), b"")]);
        assert_eq!(r.holders().keys().collect::<Vec<_>>(), ["a"]);
        r.holders().insert("c".into(), true);
        assert_eq!(
            r.encode().unwrap(),
            br#"{"Limit":2,"Holders":{"a":true,"c":true}}"#
        );
        // No record yet: a new one with the caller's limit.
        let fresh = Record::decode(None, 3).unwrap();
        assert_eq!((fresh.limit, fresh.holders.map(|h| h.len())), (3, Some(0)));
        assert!(Record::decode(Some(&pair("p/.lock", None, b"{no")), 2).is_err());
    }

    #[test]
    fn timeout_counts_from_the_second_attempt() {
        let mut o = Options {
            prefix: "p".into(),
            limit: 1,
            give_up_after: Some(Duration::ZERO),
            monitor_retries: 0,
        };
        let (start, mut n) = (Instant::now(), 0);
        assert_eq!(next_wait(&o, start, &mut n), Some(Duration::ZERO));
        std::thread::sleep(Duration::from_millis(2));
        assert_eq!(next_wait(&o, start, &mut n), None);
        o.give_up_after = None;
        assert_eq!(next_wait(&o, start, &mut n), Some(ACQUIRE_WAIT));
    }
}

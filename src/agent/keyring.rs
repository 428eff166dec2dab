//! The gossip keyring of a pool, kept across restarts and rotated over a
//! running cluster (Consul's `keyring` command and
//! `/v1/operator/keyring`).
//!
//! The keys live in `<data_dir>/serf/local.keyring` (the LAN pool) and
//! `remote.keyring` (a server's WAN pool): a JSON list of base64 keys, the
//! primary first, as Consul writes them. `encrypt` seeds the file the first
//! time; after that the file wins, so rotations survive restarts.
//!
//! An operation (install, use, remove) is applied here, then gossiped to
//! the pool as an application message that every member applies and passes
//! on once, as user events spread. Each member advertises which keys it
//! holds as a tag (`kr`: short fingerprints, the primary first), so any
//! member can tell how many hold each key, which is what `-list` shows and
//! what an operator waits on between the steps of a rotation.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::config::{AgentConfig, ConfigError};
use super::events::Seen;
use crate::env::Env;
use crate::gossip::keyring::{encode_key, parse_key, KeyError, Keyring};
use crate::gossip::Encryption;
use crate::gossip::{tags, Gossip};

/// Marks a gossip application message as a keyring operation (version 1).
const TAG: u8 = 0xE2;
/// The member tag listing the fingerprints of the keys a member holds.
pub const KEYS_TAG: &str = "kr";
/// Operation IDs remembered for de-duplication.
const SEEN: usize = 1024;

/// Where a pool's keyring is kept.
pub fn path(data_dir: &Path, wan: bool) -> PathBuf {
    data_dir.join("serf").join(if wan {
        "remote.keyring"
    } else {
        "local.keyring"
    })
}

/// A short, public fingerprint of a key: the first 4 bytes of its SHA-256.
pub fn fingerprint(key: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(key);
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

fn read_file(file: &Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError(format!("cannot read the keyring {}: {e}", file.display())))?;
    let list: Vec<String> = serde_json::from_str(&text).map_err(|e| {
        ConfigError(format!(
            "the keyring {} is not a JSON list of base64 keys: {e}",
            file.display()
        ))
    })?;
    list.iter()
        .map(|k| parse_key(k))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError(format!("the keyring {}: {e}", file.display())))
}

fn write_file(file: &Path, keys: &[Vec<u8>]) -> std::io::Result<()> {
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let list: Vec<String> = keys.iter().map(|k| encode_key(k)).collect();
    // Only the agent may read its keys.
    super::files::write_private(file, &serde_json::to_vec(&list).unwrap_or_default())
}

/// The encryption of a pool (`wan`: a server's WAN pool), from its keyring
/// file or else `encrypt` (which then seeds the file); `None` when neither
/// gives a key.
pub fn load<E: Env>(
    env: &E,
    config: &AgentConfig,
    wan: bool,
) -> Result<Option<(Encryption, Option<PathBuf>)>, ConfigError> {
    let file = config.data_dir.as_deref().map(|d| path(d, wan));
    let keys = match &file {
        Some(f) if f.exists() => read_file(f)?,
        _ => match &config.encrypt {
            Some(k) => {
                let key = parse_key(k).map_err(|e| ConfigError(format!("encrypt: {e}")))?;
                if let Some(f) = &file {
                    write_file(f, std::slice::from_ref(&key)).map_err(|e| {
                        ConfigError(format!("cannot write the keyring {}: {e}", f.display()))
                    })?;
                }
                vec![key]
            }
            None => return Ok(None),
        },
    };
    let scope = if wan { "wan-" } else { "" };
    let mut seed = [0u8; 32];
    for (i, chunk) in seed.chunks_mut(8).enumerate() {
        chunk.copy_from_slice(&env.seed(&format!("{scope}gossip-nonce-{i}")).to_le_bytes());
    }
    let keyring = Keyring::new(keys, seed).map_err(|e| ConfigError(e.to_string()))?;
    let mut enc = Encryption::new(keyring);
    enc.verify_incoming = config.encrypt_verify_incoming;
    enc.verify_outgoing = config.encrypt_verify_outgoing;
    Ok(Some((enc, file)))
}

/// A keyring operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    /// Add a key.
    Install,
    /// Make a key primary (installing it if need be).
    Use,
    /// Remove a key (never the primary).
    Remove,
}

#[derive(Serialize, Deserialize)]
struct Message {
    id: u64,
    op: Op,
    key: String,
}

/// One pool's keyring, as the agent manages it.
pub struct PoolKeyring {
    /// `"lan"` or `"wan"`.
    pub pool: &'static str,
    gossip: Gossip,
    keyring: Keyring,
    file: Option<PathBuf>,
    seen: Mutex<Seen<u64, SEEN>>,
    next_id: Mutex<rand_chacha::ChaCha8Rng>,
}

/// How many members of a pool hold a key, as `-list` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct KeyringStatus {
    /// Whether this is the WAN pool.
    #[serde(rename = "WAN")]
    pub wan: bool,
    /// Datacenter.
    pub datacenter: String,
    /// Network segment (always the default).
    pub segment: String,
    /// Each key (base64; a key this agent does not hold appears by its
    /// fingerprint) and how many alive members hold it.
    pub keys: BTreeMap<String, usize>,
    /// The same, for the members whose primary key it is.
    pub primary_keys: BTreeMap<String, usize>,
    /// Alive members.
    pub num_nodes: usize,
}

impl PoolKeyring {
    /// Manages `keyring`, the keys of `gossip`'s pool, kept in `file`.
    pub fn new<E: Env>(
        env: &E,
        pool: &'static str,
        gossip: Gossip,
        keyring: Keyring,
        file: Option<PathBuf>,
    ) -> Arc<Self> {
        use rand::SeedableRng;
        Arc::new(PoolKeyring {
            pool,
            gossip,
            keyring,
            file,
            seen: Mutex::default(),
            next_id: Mutex::new(rand_chacha::ChaCha8Rng::seed_from_u64(
                env.seed(&format!("{pool}-keyring-ops")),
            )),
        })
    }

    /// The pool's primary key (base64), the one a new member needs.
    pub fn primary_key(&self) -> Option<String> {
        self.keyring
            .keys()
            .first()
            .map(|k| crate::gossip::keyring::encode_key(k))
    }

    /// Applies `op` here and gossips it to the pool.
    pub async fn operate(&self, op: Op, key: &str) -> Result<(), String> {
        let raw = parse_key(key).map_err(|e| e.to_string())?;
        // Gossiped in its canonical form, whatever spacing it came with.
        let key = encode_key(&raw);
        self.apply(op, raw).map_err(|e| e.to_string())?;
        let id = {
            use rand::RngCore;
            self.next_id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .next_u64()
        };
        self.remember(id);
        self.advertise().await;
        self.broadcast(&Message { id, op, key }).await
    }

    async fn broadcast(&self, m: &Message) -> Result<(), String> {
        let mut bytes = vec![TAG];
        bytes.extend_from_slice(&serde_json::to_vec(m).map_err(|e| e.to_string())?);
        match self.gossip.broadcast_user(bytes).await {
            Ok(true) => Ok(()),
            Ok(false) => Err("the keyring operation is too large to gossip".into()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Whether `id` is new (and now remembered).
    fn remember(&self, id: u64) -> bool {
        self.seen
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id)
    }

    fn apply(&self, op: Op, key: Vec<u8>) -> Result<(), KeyError> {
        match op {
            Op::Install => self.keyring.install(key)?,
            Op::Use => {
                self.keyring.install(key.clone())?;
                self.keyring.use_key(&key)?;
            }
            Op::Remove => self.keyring.remove(&key)?,
        }
        if let Some(f) = &self.file {
            if let Err(e) = write_file(f, &self.keyring.keys()) {
                tracing::error!(file = %f.display(), error = %e, "cannot save the gossip keyring");
            }
        }
        Ok(())
    }

    /// Publishes which keys this member holds (the `kr` tag).
    async fn advertise(&self) {
        let prints: Vec<String> = self.keyring.keys().iter().map(|k| fingerprint(k)).collect();
        let Ok(members) = self.gossip.members().await else {
            return;
        };
        let Some(me) = members.iter().find(|m| m.name == self.gossip.name()) else {
            return;
        };
        let mut t = me.tags();
        t.insert(KEYS_TAG.into(), prints.join(","));
        if let Ok(meta) = tags::encode(&t) {
            let _ = self.gossip.set_meta(meta).await;
        }
    }

    /// Takes in the pool's keyring operations and passes new ones on,
    /// until gossip stops. Advertises this member's keys first.
    pub async fn run(self: Arc<Self>) {
        self.advertise().await;
        let Ok(mut rx) = self.gossip.subscribe_user().await else {
            return;
        };
        while let Some(bytes) = rx.recv().await {
            let Some((&TAG, body)) = bytes.split_first() else {
                continue;
            };
            let Ok(m) = serde_json::from_slice::<Message>(body) else {
                tracing::debug!("undecodable keyring operation");
                continue;
            };
            if !self.remember(m.id) {
                continue;
            }
            match parse_key(&m.key).map(|k| self.apply(m.op, k)) {
                Ok(Ok(())) => self.advertise().await,
                Ok(Err(e)) | Err(e) => {
                    tracing::warn!(pool = self.pool, op = ?m.op, error = %e, "keyring operation not applied here");
                }
            }
            if self.broadcast(&m).await.is_err() {
                return;
            }
        }
    }

    /// How many alive members hold each key, from their `kr` tags.
    pub async fn status(&self, datacenter: &str) -> Result<KeyringStatus, String> {
        let members = self.gossip.members().await.map_err(|e| e.to_string())?;
        let ours: BTreeMap<String, String> = self
            .keyring
            .keys()
            .iter()
            .map(|k| (fingerprint(k), encode_key(k)))
            .collect();
        let name = |print: &str| {
            ours.get(print)
                .cloned()
                .unwrap_or_else(|| format!("(a key this agent lacks, fingerprint {print})"))
        };
        let mut st = KeyringStatus {
            wan: self.pool == "wan",
            datacenter: datacenter.to_string(),
            segment: String::new(),
            keys: BTreeMap::new(),
            primary_keys: BTreeMap::new(),
            num_nodes: 0,
        };
        for m in members
            .iter()
            .filter(|m| m.status == crate::gossip::MemberStatus::Alive)
        {
            st.num_nodes += 1;
            let t = m.tags();
            let prints: Vec<&str> = t
                .get(KEYS_TAG)
                .map(|v| v.split(',').filter(|p| !p.is_empty()).collect())
                .unwrap_or_default();
            for (i, p) in prints.iter().enumerate() {
                *st.keys.entry(name(p)).or_default() += 1;
                if i == 0 {
                    *st.primary_keys.entry(name(p)).or_default() += 1;
                }
            }
        }
        Ok(st)
    }
}

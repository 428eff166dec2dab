//! Gossip encryption, compatible with memberlist's: AES-GCM under a keyring
//! of 16, 24 or 32-byte keys (AES-128, -192, -256).
//!
//! Outgoing messages are sealed with the primary key; incoming ones are
//! opened with whichever installed key works, so keys can be rotated over a
//! running cluster: install the new key everywhere, make it primary
//! everywhere, then remove the old one.
//!
//! The format is memberlist's (`security.go`): a version byte, a 12-byte
//! nonce, then the GCM ciphertext and 16-byte tag. Version 1 seals the
//! message as it is; version 0 (protocol version 1 peers) pads it PKCS#7
//! first, and is accepted. A UDP packet is sealed whole, with no associated
//! data. A stream message is `[10 (encryptMsg), length: u32 BE]` followed
//! by the sealed message, the 5-byte header being the associated data.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm};
use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use super::wire::MessageType;

/// AES-192-GCM with the usual 96-bit nonce (memberlist accepts 24-byte keys).
type Aes192Gcm = AesGcm<aes_gcm::aes::Aes192, aes_gcm::aead::consts::U12>;

const VERSION_SIZE: usize = 1;
const NONCE_SIZE: usize = 12;
const TAG_SIZE: usize = 16;
const BLOCK_SIZE: usize = 16;
/// The version cairn writes (memberlist's for protocol versions 2 to 5).
const SEAL_VERSION: u8 = 1;
/// Bytes sealing adds to a message: version, nonce and tag.
pub const OVERHEAD: usize = VERSION_SIZE + NONCE_SIZE + TAG_SIZE;
/// The largest sealed stream message accepted (memberlist's
/// `maxPushStateBytes`).
pub const MAX_STREAM_BYTES: usize = 20 * 1024 * 1024;

/// What is wrong with a key or a keyring operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not base64.
    #[error("the key is not valid base64: {0}")]
    Base64(String),
    /// Not 16, 24 or 32 bytes.
    #[error("the key is {0} bytes; gossip keys are 16, 24 or 32 bytes (AES-128, -192, -256), base64-encoded, as `cairn keygen` makes them")]
    Length(usize),
    /// An operation names a key that is not installed.
    #[error("the key {0} is not installed")]
    NotInstalled(String),
    /// The primary key cannot be removed.
    #[error("the key {0} is the primary key; make another primary first (keyring -use)")]
    RemovePrimary(String),
    /// A keyring needs at least one key.
    #[error("a keyring needs at least one key")]
    Empty,
}

/// Why a message could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    /// Too short to hold a version, nonce and tag.
    #[error("encrypted message too short ({0} bytes)")]
    TooShort(usize),
    /// A version memberlist never wrote.
    #[error("unsupported encryption version {0}")]
    Version(u8),
    /// No installed key opens it (a wrong key, a plain message, or damage).
    #[error("no installed key could decrypt the message")]
    NoKey,
    /// Version 0 with padding that does not check out.
    #[error("bad PKCS#7 padding")]
    Padding,
}

/// Parses a base64 key (standard alphabet, padded) and checks its length.
pub fn parse_key(b64: &str) -> Result<Vec<u8>, KeyError> {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| KeyError::Base64(e.to_string()))?;
    check_len(&key)?;
    Ok(key)
}

/// A key in the base64 form configuration and the API use.
pub fn encode_key(key: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(key)
}

fn check_len(key: &[u8]) -> Result<(), KeyError> {
    match key.len() {
        16 | 24 | 32 => Ok(()),
        n => Err(KeyError::Length(n)),
    }
}

/// Seals `msg` under `key` with `nonce`, as memberlist's `encryptPayload`
/// at version 1: `[1][nonce][ciphertext+tag]`.
pub fn seal(key: &[u8], nonce: &[u8; NONCE_SIZE], msg: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(VERSION_SIZE + NONCE_SIZE + msg.len() + TAG_SIZE);
    out.push(SEAL_VERSION);
    out.extend_from_slice(nonce);
    let payload = Payload { msg, aad };
    // Keys are checked when installed, and GCM sealing cannot fail for
    // messages under 64 GiB; an empty result would be dropped by peers.
    let sealed = match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .ok()
            .and_then(|c| c.encrypt(nonce.into(), payload).ok()),
        24 => Aes192Gcm::new_from_slice(key)
            .ok()
            .and_then(|c| c.encrypt(nonce.into(), payload).ok()),
        _ => Aes256Gcm::new_from_slice(key)
            .ok()
            .and_then(|c| c.encrypt(nonce.into(), payload).ok()),
    };
    out.extend_from_slice(&sealed.unwrap_or_default());
    out
}

fn open_with(key: &[u8], nonce: &[u8], ciphertext: &[u8], aad: &[u8]) -> Option<Vec<u8>> {
    let payload = Payload {
        msg: ciphertext,
        aad,
    };
    let nonce = aes_gcm::Nonce::from_slice(nonce);
    match key.len() {
        16 => Aes128Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        24 => Aes192Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        32 => Aes256Gcm::new_from_slice(key)
            .ok()?
            .decrypt(nonce, payload)
            .ok(),
        _ => None,
    }
}

/// Opens `msg` with the first of `keys` that works, as memberlist's
/// `decryptPayload`.
pub fn open(keys: &[Vec<u8>], msg: &[u8], aad: &[u8]) -> Result<Vec<u8>, OpenError> {
    let Some(&version) = msg.first() else {
        return Err(OpenError::TooShort(0));
    };
    if version > 1 {
        return Err(OpenError::Version(version));
    }
    // Version 0 carries at least one byte of padding.
    let min = VERSION_SIZE + NONCE_SIZE + TAG_SIZE + usize::from(version == 0);
    if msg.len() < min {
        return Err(OpenError::TooShort(msg.len()));
    }
    let nonce = &msg[VERSION_SIZE..VERSION_SIZE + NONCE_SIZE];
    let ciphertext = &msg[VERSION_SIZE + NONCE_SIZE..];
    let plain = keys
        .iter()
        .find_map(|k| open_with(k, nonce, ciphertext, aad))
        .ok_or(OpenError::NoKey)?;
    if version == 1 {
        return Ok(plain);
    }
    // memberlist pads to whole blocks, always adding at least one byte.
    let pad = usize::from(*plain.last().ok_or(OpenError::Padding)?);
    if pad == 0 || pad > BLOCK_SIZE || pad > plain.len() {
        return Err(OpenError::Padding);
    }
    Ok(plain[..plain.len() - pad].to_vec())
}

/// A node's gossip keys, shared by its driver and whoever manages them
/// (the agent's keyring API). Cloning shares the same keyring.
#[derive(Clone)]
pub struct Keyring {
    /// Installed keys, the primary first.
    keys: Arc<RwLock<Vec<Vec<u8>>>>,
    /// Nonces: unique per key for GCM. Seeded from the Env (random on a
    /// real node, reproducible in the simulator).
    rng: Arc<Mutex<ChaCha20Rng>>,
    /// Packets and streams dropped because no key opened them, or because
    /// they were not encrypted at all.
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the keys themselves.
        f.debug_struct("Keyring")
            .field("keys", &self.read().len())
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl Keyring {
    /// A keyring of `keys` (the first is primary), drawing nonces from a
    /// generator seeded with `seed`.
    pub fn new(keys: Vec<Vec<u8>>, seed: [u8; 32]) -> Result<Keyring, KeyError> {
        if keys.is_empty() {
            return Err(KeyError::Empty);
        }
        for k in &keys {
            check_len(k)?;
        }
        let mut unique: Vec<Vec<u8>> = Vec::with_capacity(keys.len());
        for k in keys {
            if !unique.contains(&k) {
                unique.push(k);
            }
        }
        Ok(Keyring {
            keys: Arc::new(RwLock::new(unique)),
            rng: Arc::new(Mutex::new(ChaCha20Rng::from_seed(seed))),
            dropped: Arc::default(),
        })
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Vec<u8>>> {
        self.keys.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Vec<Vec<u8>>> {
        self.keys.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Every installed key, the primary first.
    pub fn keys(&self) -> Vec<Vec<u8>> {
        self.read().clone()
    }

    /// Adds `key` (a no-op when it is installed already).
    pub fn install(&self, key: Vec<u8>) -> Result<(), KeyError> {
        check_len(&key)?;
        let mut keys = self.write();
        if !keys.contains(&key) {
            keys.push(key);
        }
        Ok(())
    }

    /// Makes the installed `key` the primary one, which seals from now on.
    pub fn use_key(&self, key: &[u8]) -> Result<(), KeyError> {
        let mut keys = self.write();
        let at = keys
            .iter()
            .position(|k| k == key)
            .ok_or_else(|| KeyError::NotInstalled(encode_key(key)))?;
        let k = keys.remove(at);
        keys.insert(0, k);
        Ok(())
    }

    /// Removes `key`; never the primary one.
    pub fn remove(&self, key: &[u8]) -> Result<(), KeyError> {
        let mut keys = self.write();
        match keys.iter().position(|k| k == key) {
            None => Err(KeyError::NotInstalled(encode_key(key))),
            Some(0) => Err(KeyError::RemovePrimary(encode_key(key))),
            Some(at) => {
                keys.remove(at);
                Ok(())
            }
        }
    }

    fn nonce(&self) -> [u8; NONCE_SIZE] {
        let mut n = [0u8; NONCE_SIZE];
        self.rng
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .fill_bytes(&mut n);
        n
    }

    /// Seals a UDP packet with the primary key.
    pub fn seal_packet(&self, packet: &[u8]) -> Vec<u8> {
        let key = self.read()[0].clone();
        seal(&key, &self.nonce(), packet, &[])
    }

    /// Opens a UDP packet.
    pub fn open_packet(&self, packet: &[u8]) -> Result<Vec<u8>, OpenError> {
        open(&self.read(), packet, &[])
    }

    /// Wraps a stream message: `[encryptMsg, length]` and the sealed
    /// message, the header as associated data.
    pub fn seal_stream(&self, msg: &[u8]) -> Vec<u8> {
        let sealed_len = VERSION_SIZE + NONCE_SIZE + msg.len() + TAG_SIZE;
        let mut header = vec![MessageType::Encrypt as u8];
        header.extend_from_slice(&(sealed_len as u32).to_be_bytes());
        let key = self.read()[0].clone();
        let sealed = seal(&key, &self.nonce(), msg, &header);
        header.extend_from_slice(&sealed);
        header
    }

    /// Opens a stream message's sealed part, given the 5-byte header it
    /// came with.
    pub fn open_stream(&self, header: &[u8; 5], sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        open(&self.read(), sealed, header)
    }

    /// Counts a packet or stream dropped: no key opened it, or it was not
    /// encrypted at all.
    pub fn count_dropped(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Packets and streams dropped so far: undecryptable, or plain.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// How a node encrypts its gossip (Consul's `encrypt`,
/// `encrypt_verify_incoming`, `encrypt_verify_outgoing`).
#[derive(Debug, Clone)]
pub struct Encryption {
    /// The keys; shared with whoever rotates them.
    pub keyring: Keyring,
    /// Drop what is not encrypted with an installed key (off only while a
    /// running cluster turns encryption on).
    pub verify_incoming: bool,
    /// Encrypt what is sent (off only while turning encryption on).
    pub verify_outgoing: bool,
}

impl Encryption {
    /// Full encryption with `keyring`, both ways.
    pub fn new(keyring: Keyring) -> Self {
        Encryption {
            keyring,
            verify_incoming: true,
            verify_outgoing: true,
        }
    }

    /// What is sent as a UDP packet.
    pub(super) fn seal_packet(&self, data: Vec<u8>) -> Vec<u8> {
        if self.verify_outgoing {
            self.keyring.seal_packet(&data)
        } else {
            data
        }
    }

    /// The plain packet, or `None` (counted) to drop it.
    pub(super) fn open_packet(&self, data: &[u8]) -> Option<Vec<u8>> {
        match self.keyring.open_packet(data) {
            Ok(plain) => Some(plain),
            Err(_) if !self.verify_incoming => Some(data.to_vec()),
            Err(_) => {
                self.keyring.count_dropped();
                None
            }
        }
    }

    /// What is written to a stream.
    pub(super) fn seal_stream(&self, data: &[u8]) -> Vec<u8> {
        if self.verify_outgoing {
            self.keyring.seal_stream(data)
        } else {
            data.to_vec()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Sealed by HashiCorp memberlist's own `encryptPayload` (Debian's
    /// golang-github-hashicorp-memberlist-dev), for the message
    /// "cairn gossip: hello memberlist" and the key 1, 2, 3, ...:
    /// (key length, version, associated data, sealed), in hex.
    const FROM_GO: &[(usize, u8, &str, &str)] = &[
        (16, 0, "", "0079d5fe1a8d9cd6fedfa96c6f95f1f9127c7a8dfc94c5eeffe51f8c920ac4833cc550eb55093e48cd72ca5261a60b7e9ebd9443dd2725a641b2944560"),
        (16, 0, "0a0000002a", "003c9292819123163c583c72105672a791179d0a3aad06dfb192ed8da8677cd5eafe907ae9afbaa6099fa5bd1d6d89e765898ec1c84d5ef66909daa064"),
        (16, 1, "", "01648f0a3d1aaad9beb64a3c2973899252d1fb2cc3168aebc7105fe5abd45c62eb7bf50d741b82832c5588c348bfc60f5a0c9e51239d2990933ba9"),
        (16, 1, "0a0000002a", "01e8417851cd8e81b6bfb960f349cf7dbe81ba2b422ac8e65dd2e90b6ea15d918d16ffc3cd0aa46f0b0fa0109925cb406454803cd15065e6ecaa5b"),
        (24, 0, "", "0053d945c57cb5682e9f9cb40979fe42032f9433f52a42fc2b6552492a1b2a772e99cba475a1226588c941239e7bde5d9904bb3a976e89e1be11afbe0b"),
        (24, 0, "0a0000002a", "00ce7a5a8b883a3a70af4984ab53d64b66277bb0f5275f4c896bff91d1dc83ff8b493175e574068a9eb5bfbed52566bf917894bdf99cfe35edacb7756a"),
        (24, 1, "", "010f5aa25f5065c67ba602e719b3daa0f7596e196c3131239e2e0904c4c3ced7a65484b95af726a718068f74f1269b12ff871e304605f7fa1755f3"),
        (24, 1, "0a0000002a", "014aa21cc22bd5ce5f55b25206a25f82516c78c110d5b5c118985c64b08e694e47147fdc061473ac0fc672b37b5efc61b153bb3652ac38d73987a5"),
        (32, 0, "", "009c79d1d2745c86ff7652fb99a4ae0724cc72a4de4106e2f3797bf7a0642d61ca13978749d260f95594a44ce12f2a1f56737011ec6567cb8631f59088"),
        (32, 0, "0a0000002a", "001f389528b21bf1c29dcb5c8686b5d1e298ba19b098d9bbeecaa83c141bc54dca3715227e61f87b63cd006f48f33a180ba0348bfb9300e51b2eb4961d"),
        (32, 1, "", "019ffb62432cd43ee1d0cdf5081710b32fba8fa77c441364489a7b1347437e8ca488e06883d90b15facd4cff0325f2d7a7f3332ab5c5905b3bfbef"),
        (32, 1, "0a0000002a", "012d4c3380481f9997297b98f2b4405b49f5bfed664f2d09a1ad186780c3b3b3f07f172bde7ed8ce5aeefdb8560d2112031e0f1e162756757779fa"),
    ];

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len() / 2)
            .map(|i| u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap())
            .collect()
    }

    fn key(len: usize) -> Vec<u8> {
        (1..=len as u8).collect()
    }

    #[test]
    fn opens_what_memberlist_sealed() {
        for (len, version, aad, sealed) in FROM_GO {
            let sealed = hex(sealed);
            assert_eq!(sealed[0], *version);
            let plain = open(&[key(*len)], &sealed, &hex(aad)).unwrap();
            assert_eq!(plain, b"cairn gossip: hello memberlist", "{len} {version}");
            // The wrong associated data, or the wrong key, opens nothing.
            assert_eq!(open(&[key(*len)], &sealed, b"x"), Err(OpenError::NoKey));
            assert_eq!(
                open(&[vec![9; 32]], &sealed, &hex(aad)),
                Err(OpenError::NoKey)
            );
        }
    }

    #[test]
    fn seals_as_memberlist_does() {
        // Same key, nonce and message: the same bytes as Go's version 1.
        for (len, version, aad, sealed) in FROM_GO.iter().filter(|v| v.1 == 1) {
            let sealed = hex(sealed);
            let nonce: [u8; 12] = sealed[1..13].try_into().unwrap();
            let ours = seal(
                &key(*len),
                &nonce,
                b"cairn gossip: hello memberlist",
                &hex(aad),
            );
            assert_eq!(ours, sealed, "{len} {version}");
        }
    }

    #[test]
    fn rotation_keeps_old_keys_opening_until_removed() {
        let (k1, k2) = (key(32), vec![7u8; 16]);
        let ring = Keyring::new(vec![k1.clone()], [1; 32]).unwrap();
        let old = ring.seal_packet(b"ping");
        assert_eq!(
            ring.use_key(&k2),
            Err(KeyError::NotInstalled(encode_key(&k2)))
        );
        ring.install(k2.clone()).unwrap();
        ring.use_key(&k2).unwrap();
        assert_eq!(ring.keys(), vec![k2.clone(), k1.clone()]);
        let new = ring.seal_packet(b"ping");
        assert_eq!(ring.open_packet(&old).unwrap(), b"ping");
        assert_eq!(open(std::slice::from_ref(&k2), &new, &[]).unwrap(), b"ping");
        assert!(matches!(ring.remove(&k2), Err(KeyError::RemovePrimary(_))));
        ring.remove(&k1).unwrap();
        assert_eq!(ring.open_packet(&old), Err(OpenError::NoKey));
        // Streams carry their header as associated data.
        let s = ring.seal_stream(b"push-pull");
        let header: [u8; 5] = s[..5].try_into().unwrap();
        assert_eq!(header[0], MessageType::Encrypt as u8);
        assert_eq!(
            u32::from_be_bytes(s[1..5].try_into().unwrap()) as usize,
            s.len() - 5
        );
        assert_eq!(ring.open_stream(&header, &s[5..]).unwrap(), b"push-pull");
        let mut bad = header;
        bad[4] ^= 1;
        assert!(ring.open_stream(&bad, &s[5..]).is_err());
    }

    #[test]
    fn keys_are_checked() {
        assert_eq!(parse_key("AAAA"), Err(KeyError::Length(3)));
        assert!(matches!(parse_key("not base64!"), Err(KeyError::Base64(_))));
        let k = encode_key(&key(24));
        assert_eq!(parse_key(&format!(" {k}\n")).unwrap(), key(24));
        assert!(matches!(
            Keyring::new(vec![], [0; 32]),
            Err(KeyError::Empty)
        ));
        assert!(Keyring::new(vec![vec![1; 15]], [0; 32]).is_err());
    }

    proptest! {
        /// Any bytes, under any key, open to an error or a message, never a
        /// panic; what is sealed opens to itself.
        #[test]
        fn open_never_panics(msg in proptest::collection::vec(any::<u8>(), 0..200),
                             len in prop::sample::select(vec![16usize, 24, 32])) {
            let _ = open(&[key(len)], &msg, &[]);
            let mut v0 = msg.clone();
            if !v0.is_empty() {
                v0[0] = 0;
                let _ = open(&[key(len)], &v0, &[]);
            }
            let sealed = seal(&key(len), &[3; 12], &msg, b"h");
            prop_assert_eq!(open(&[key(len)], &sealed, b"h").unwrap(), msg);
        }
    }
}

//! The material of `cairn agent -secure`, the one-command way to a secured
//! cluster: the first server makes a gossip key, an agent CA, its own
//! server certificate and a bootstrap management token, and keeps them in
//! `<data_dir>/secure/` (the directory and every secret in it readable by
//! the agent's user alone). Other agents join with a one-time join token
//! ([`JoinToken`]), which carries what they need to trust the servers and
//! be trusted by them: the gossip key, the CA's root, and the secret that
//! buys them a certificate once.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::files::write_private;
use super::tls::{create_ca, create_cert, CertSpec, Pair, Role};

/// What every join token starts with: the format's name and version.
pub const TOKEN_PREFIX: &str = "cairn-join-1.";

/// Why secure material could not be made, read or used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct SecureError(pub String);

fn fail(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> SecureError {
    move |e| SecureError(format!("{what}: {e}"))
}

/// A one-time join token: where the servers are, what the cluster's
/// agents share, and the secret the servers know by its hash alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
pub struct JoinToken {
    /// The cluster's datacenter.
    pub datacenter: String,
    /// Its DNS domain (servers prove `server.<datacenter>.<domain>`).
    pub domain: String,
    /// Servers' RPC addresses (`host:port`), where the join is asked.
    pub servers: Vec<String>,
    /// Servers' LAN gossip addresses, to join once admitted.
    pub join: Vec<String>,
    /// The gossip encryption key, base64.
    pub gossip_key: String,
    /// The agent CA's certificate, PEM: the servers must chain to it.
    pub ca_pem: String,
    /// The one-time secret.
    pub secret: String,
    /// Whether it admits a server (else a client agent).
    pub server: bool,
}

impl JoinToken {
    /// The token as one line to copy: [`TOKEN_PREFIX`] and its JSON in
    /// URL-safe base64.
    pub fn encode(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        format!(
            "{TOKEN_PREFIX}{}",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
        )
    }

    /// Reads a token as [`encode`](Self::encode) writes it, saying what
    /// is wrong with one that is not.
    pub fn decode(text: &str) -> Result<JoinToken, SecureError> {
        let bad = |why: &str| SecureError(format!("not a cairn join token: {why}"));
        let body = text
            .trim()
            .strip_prefix(TOKEN_PREFIX)
            .ok_or_else(|| bad(&format!("it must start with {TOKEN_PREFIX:?}")))?;
        let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(body)
            .map_err(|e| {
                bad(&format!(
                    "its body is not URL-safe base64 ({e}); was it cut short?"
                ))
            })?;
        let t: JoinToken = serde_json::from_slice(&json)
            .map_err(|e| bad(&format!("its contents do not read ({e})")))?;
        if t.servers.is_empty() {
            return Err(bad("it names no server"));
        }
        if t.secret.is_empty() || t.ca_pem.is_empty() || t.gossip_key.is_empty() {
            return Err(bad("its secret, CA or gossip key is missing"));
        }
        Ok(t)
    }
}

/// The hash by which servers know a join token's secret (hex SHA-256):
/// what their Raft log keeps, so that reading it admits nobody.
pub fn secret_hash(secret: &str) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// An agent's secure material, as kept in `<data_dir>/secure/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Material {
    /// The gossip encryption key, base64.
    pub gossip_key: String,
    /// The agent CA (its key only on the server that made it).
    pub ca: Pair,
    /// This agent's certificate and key.
    pub cert: Pair,
    /// The token the agent acts with.
    pub agent_token: String,
    /// The bootstrap management token (the first server's alone).
    pub bootstrap_token: Option<String>,
}

/// `<data_dir>/secure/` and the files in it.
#[derive(Debug, Clone)]
pub struct SecureDir(PathBuf);

impl SecureDir {
    /// The directory under `data_dir`.
    pub fn new(data_dir: &Path) -> SecureDir {
        SecureDir(data_dir.join("secure"))
    }

    fn file(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }

    /// Where the bootstrap management token is.
    pub fn bootstrap_token_file(&self) -> PathBuf {
        self.file("bootstrap-token")
    }

    /// Whether an earlier start left material here.
    pub fn exists(&self) -> bool {
        self.file("agent-token").exists()
    }

    /// Keeps `m`: the directory for its owner alone, secrets 0600.
    pub fn save(&self, m: &Material) -> Result<(), SecureError> {
        let dir = self.0.display().to_string();
        std::fs::create_dir_all(&self.0).map_err(fail(&dir))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.0, std::fs::Permissions::from_mode(0o700))
                .map_err(fail(&dir))?;
        }
        let mut files: Vec<(&str, &str, bool)> = vec![
            ("gossip.key", &m.gossip_key, true),
            ("ca.pem", &m.ca.cert_pem, false),
            ("agent.pem", &m.cert.cert_pem, false),
            ("agent-key.pem", &m.cert.key_pem, true),
        ];
        if !m.ca.key_pem.is_empty() {
            files.push(("ca-key.pem", &m.ca.key_pem, true));
        }
        if let Some(t) = &m.bootstrap_token {
            files.push(("bootstrap-token", t, true));
        }
        // Last: its presence says the rest is there.
        files.push(("agent-token", &m.agent_token, true));
        for (name, text, private) in files {
            let path = self.file(name);
            let what = path.display().to_string();
            if private {
                write_private(&path, text.as_bytes()).map_err(fail(&what))?;
            } else {
                super::files::write_atomically(&path, text.as_bytes()).map_err(fail(&what))?;
            }
        }
        Ok(())
    }

    /// Reads back what [`save`](Self::save) kept.
    pub fn load(&self) -> Result<Material, SecureError> {
        let read = |name: &str| {
            let path = self.file(name);
            std::fs::read_to_string(&path)
                .map(|s| s.trim_end().to_string())
                .map_err(fail(format!(
                    "{} (remove {} to start the secure setup again)",
                    path.display(),
                    self.0.display()
                )))
        };
        let optional = |name: &str| read(name).ok().filter(|s| !s.is_empty());
        Ok(Material {
            gossip_key: read("gossip.key")?,
            ca: Pair {
                cert_pem: read("ca.pem")? + "\n",
                key_pem: optional("ca-key.pem").map(|k| k + "\n").unwrap_or_default(),
            },
            cert: Pair {
                cert_pem: read("agent.pem")? + "\n",
                key_pem: read("agent-key.pem")? + "\n",
            },
            agent_token: read("agent-token")?,
            bootstrap_token: optional("bootstrap-token"),
        })
    }
}

/// `n` bytes from the operating system's generator: keys and secrets
/// must not come from a seeded one.
fn random_bytes<const N: usize>() -> Result<[u8; N], SecureError> {
    let mut b = [0u8; N];
    rand::TryRngCore::try_fill_bytes(&mut rand::rngs::OsRng, &mut b)
        .map_err(|e| SecureError(format!("the system's random generator failed: {e}")))?;
    Ok(b)
}

/// A new random UUID (a token secret).
pub fn new_secret() -> Result<String, SecureError> {
    let mut b = random_bytes::<16>()?;
    // Version 4, variant 1, as every UUID a Consul client may parse.
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    Ok(crate::format::format_uuid(b))
}

/// The first server's material: a gossip key, an agent CA, its server
/// certificate (naming `ips` too), and one management token it bootstraps
/// ACLs with and acts with itself.
pub fn bootstrap(
    dc: &str,
    domain: &str,
    ips: Vec<std::net::IpAddr>,
    now: SystemTime,
) -> Result<Material, SecureError> {
    let tls = |e: super::tls::TlsSetupError| SecureError(e.to_string());
    let ca = create_ca(domain, 5 * 365, now).map_err(tls)?;
    let cert = create_cert(
        &ca,
        &CertSpec {
            role: Role::Server,
            dc: dc.to_string(),
            domain: domain.to_string(),
            extra_dns: vec!["localhost".into()],
            extra_ips: ips,
            days: 365,
        },
        now,
    )
    .map_err(tls)?;
    let token = new_secret()?;
    Ok(Material {
        gossip_key: base64::engine::general_purpose::STANDARD.encode(random_bytes::<32>()?),
        ca,
        cert,
        agent_token: token.clone(),
        bootstrap_token: Some(token),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token() -> JoinToken {
        JoinToken {
            datacenter: "dc1".into(),
            domain: "consul".into(),
            servers: vec!["10.0.0.1:8300".into()],
            join: vec!["10.0.0.1:8301".into()],
            gossip_key: "a2V5".into(),
            ca_pem: "-----BEGIN CERTIFICATE-----\n...".into(),
            secret: "s3cret".into(),
            server: false,
        }
    }

    #[test]
    fn join_tokens_round_trip_and_damaged_ones_say_what_is_wrong() {
        let t = token();
        let text = t.encode();
        assert!(text.starts_with(TOKEN_PREFIX));
        assert!(!text.contains(['+', '/', '=', '\n']), "one line, URL-safe");
        assert_eq!(JoinToken::decode(&format!("  {text}\n")), Ok(t.clone()));
        for (bad, says) in [
            ("hello", "must start with"),
            (&text[..text.len() - 7], "cut short"),
            (&text[..text.len() - 8], "do not read"),
            (&format!("{TOKEN_PREFIX}!!!"), "base64"),
            (
                &JoinToken {
                    servers: vec![],
                    ..t.clone()
                }
                .encode(),
                "no server",
            ),
            (
                &JoinToken {
                    secret: String::new(),
                    ..t
                }
                .encode(),
                "missing",
            ),
        ] {
            let e = JoinToken::decode(bad).unwrap_err();
            assert!(e.0.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn secrets_are_known_by_hash_and_fresh_each_time() {
        assert_eq!(secret_hash("x"), secret_hash("x"));
        assert_ne!(secret_hash("x"), secret_hash("y"));
        assert_eq!(secret_hash("x").len(), 64);
        let (a, b) = (new_secret().unwrap(), new_secret().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.as_bytes()[14], b'4', "{a}");
    }

    #[test]
    fn the_first_servers_material_is_kept_for_its_owner_alone() {
        let dir = tempfile::tempdir().unwrap();
        let m = bootstrap("dc1", "consul", vec![], SystemTime::now()).unwrap();
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(&m.gossip_key)
                .unwrap()
                .len(),
            32
        );
        let d = SecureDir::new(dir.path());
        assert!(!d.exists());
        d.save(&m).unwrap();
        assert!(d.exists());
        assert_eq!(d.load().unwrap(), m);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir.path().join("secure")), 0o700);
            for f in [
                "gossip.key",
                "ca-key.pem",
                "agent-key.pem",
                "bootstrap-token",
                "agent-token",
            ] {
                assert_eq!(mode(&dir.path().join("secure").join(f)), 0o600, "{f}");
            }
        }
        std::fs::remove_file(dir.path().join("secure/agent.pem")).unwrap();
        let e = d.load().unwrap_err();
        assert!(
            e.0.contains("agent.pem") && e.0.contains("start the secure setup again"),
            "{e}"
        );
    }
}

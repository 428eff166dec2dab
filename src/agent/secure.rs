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

pub use crate::state::join::secret_hash;

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
    /// Servers' LAN addresses, to join at every start (from the join
    /// token; none on the first server).
    pub join: Vec<String>,
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
        let join = m.join.join("\n");
        if !join.is_empty() {
            files.push(("join", &join, false));
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
            join: optional("join")
                .map(|j| j.lines().map(str::to_string).collect())
                .unwrap_or_default(),
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
        join: Vec::new(),
    })
}

/// What [`prepare`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    /// Made the cluster's material: this is its first server.
    Bootstrapped,
    /// Joined with a join token.
    Joined,
    /// Found the material of an earlier start.
    Again,
}

/// `cairn agent -secure`: the agent's secure material (made, on the
/// first server; bought with `join_token`, on any other agent; or kept
/// from an earlier start), and `config` set to use it (see [`apply`]).
pub async fn prepare<E: crate::env::Env>(
    env: &E,
    config: &mut super::AgentConfig,
    join_token: Option<&str>,
) -> Result<Started, SecureError> {
    let dir = secure_dir(config)?;
    let started = if dir.exists() {
        if join_token.is_some() {
            tracing::warn!(
                "this agent joined before ({} exists): the join token is not used",
                dir.0.display()
            );
        }
        Started::Again
    } else if let Some(text) = join_token {
        let token = JoinToken::decode(text)?;
        let m = request_join(env, &token, &config.node_name, config.server).await?;
        dir.save(&m)?;
        Started::Joined
    } else if config.server {
        if config.bootstrap_expect > 1 {
            return Err(SecureError(
                "with -secure the first server starts alone: leave out -bootstrap-expect, and start the other servers with join tokens made by `cairn acl join-token create -server`".into(),
            ));
        }
        let ips: Vec<std::net::IpAddr> = [Some(config.bind_addr), config.advertise_addr]
            .into_iter()
            .flatten()
            .filter(|ip| !ip.is_unspecified())
            .collect();
        let m = bootstrap(
            &config.datacenter,
            &config.dns.domain,
            ips,
            env.wall_clock(),
        )?;
        dir.save(&m)?;
        Started::Bootstrapped
    } else {
        return Err(SecureError(
            "a client agent joins a -secure cluster with -join-token (make one on a server with `cairn acl join-token create`)".into(),
        ));
    };
    apply(config)?;
    Ok(started)
}

fn secure_dir(config: &super::AgentConfig) -> Result<SecureDir, SecureError> {
    match (&config.data_dir, config.dev) {
        (Some(d), false) => Ok(SecureDir::new(d)),
        _ => Err(SecureError(
            "-secure keeps keys and certificates in the data directory: give -data-dir (and not -dev)".into(),
        )),
    }
}

/// Sets `config` to use the material kept in `<data_dir>/secure`: gossip
/// encryption with its key; TLS on the RPC port with its certificate,
/// verifying both ways and servers' names; ACLs on, default deny, with
/// its agent token (and on the first server, its bootstrap token as the
/// initial management token); and its servers to join. What the
/// configuration set for these is overridden: `-secure` means exactly
/// this.
pub fn apply(config: &mut super::AgentConfig) -> Result<(), SecureError> {
    let dir = secure_dir(config)?;
    let m = dir.load()?;
    config.secure = true;
    config.encrypt = Some(m.gossip_key);
    config.ca_file = Some(dir.file("ca.pem"));
    config.cert_file = Some(dir.file("agent.pem"));
    config.key_file = Some(dir.file("agent-key.pem"));
    config.verify_incoming = true;
    config.verify_outgoing = true;
    config.verify_server_hostname = true;
    config.acl.enabled = true;
    config.acl.default_allow = false;
    config.acl.tokens.agent = Some(m.agent_token);
    if let Some(t) = m.bootstrap_token {
        config.acl.tokens.initial_management = Some(t);
        if config.bootstrap_expect == 0 {
            config.bootstrap_expect = 1;
        }
    }
    if config.retry_join.is_empty() {
        config.retry_join = m.join;
    }
    Ok(())
}

/// The agent CA with its key, on the first server (which stores it in
/// Raft, so that any leader can sign for agents that join).
pub fn agent_ca(config: &super::AgentConfig) -> Option<crate::state::join::AgentCa> {
    let m = secure_dir(config).ok()?.load().ok()?;
    (!m.ca.key_pem.is_empty()).then(|| crate::state::join::AgentCa {
        cert_pem: m.ca.cert_pem,
        key_pem: m.ca.key_pem,
        domain: config.dns.domain.trim_matches('.').to_string(),
    })
}

/// What an agent started with `-secure` puts in the join tokens it makes,
/// besides the servers and gossip key it learns as it runs.
#[derive(Debug, Clone)]
pub struct JoinIssuer {
    /// The datacenter.
    pub datacenter: String,
    /// The domain servers' names are in.
    pub domain: String,
    /// The agent CA's certificate (PEM).
    pub ca_pem: String,
}

impl JoinIssuer {
    /// From the agent's configuration, after [`apply`].
    pub fn of(config: &super::AgentConfig) -> Result<JoinIssuer, SecureError> {
        Ok(JoinIssuer {
            datacenter: config.datacenter.clone(),
            domain: config.dns.domain.trim_matches('.').to_string(),
            ca_pem: secure_dir(config)?.load()?.ca.cert_pem,
        })
    }

    /// A join token for `secret`, naming `servers` (RPC and LAN
    /// addresses).
    pub fn token(
        &self,
        servers: &[(std::net::SocketAddr, std::net::SocketAddr)],
        gossip_key: String,
        secret: String,
        server: bool,
    ) -> JoinToken {
        JoinToken {
            datacenter: self.datacenter.clone(),
            domain: self.domain.clone(),
            servers: servers.iter().map(|(rpc, _)| rpc.to_string()).collect(),
            join: servers.iter().map(|(_, lan)| lan.to_string()).collect(),
            gossip_key,
            ca_pem: self.ca_pem.clone(),
            secret,
            server,
        }
    }
}

/// How long a joining agent waits for one server's answer.
const JOIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// Rounds over the token's servers before giving up, when none answered
/// for sure (unreachable, or no leader yet).
const JOIN_ROUNDS: u32 = 5;

/// Asks the token's servers to admit this agent: over TLS that proves
/// `server.<dc>.<domain>` with the token's CA, presenting no certificate
/// (it has none yet), it sends the secret and a CSR for a key made here,
/// and gets its certificate and agent token. A definite refusal (a used
/// or expired token) ends it at once; unreachable servers are tried in
/// turn, a few rounds.
pub async fn request_join<E: crate::env::Env>(
    env: &E,
    token: &JoinToken,
    node: &str,
    server: bool,
) -> Result<Material, SecureError> {
    use crate::server::request::{Answer, ClientRequest, JoinRequest, ServerReply, ServerRpc};
    let tls = |e: super::tls::TlsSetupError| SecureError(e.to_string());
    let (key, csr_pem) = crate::pki::key_and_csr().map_err(tls)?;
    let roots = crate::connect::tls::root_store(std::slice::from_ref(&token.ca_pem))
        .map_err(|e| SecureError(format!("the join token's CA does not read: {e}")))?;
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SecureError(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    let client = crate::rpc::Client::<E, ServerRpc, ServerReply>::with_tls(
        env.clone(),
        Some(crate::rpc::ClientTls {
            config: std::sync::Arc::new(config),
            datacenter: token.datacenter.clone(),
            domain: token.domain.clone(),
        }),
    );
    let req = ServerRpc::Client(ClientRequest::Join {
        join: Box::new(JoinRequest {
            secret: token.secret.clone(),
            node: node.to_string(),
            server,
            csr_pem,
        }),
        hops: 0,
    });
    let mut last = String::from("no server answered");
    for round in 0..JOIN_ROUNDS {
        if round > 0 {
            env.sleep(std::time::Duration::from_secs(2)).await;
        }
        for addr in super::join::resolve_all(env, &token.servers, 8300).await {
            let deadline = env.now() + JOIN_TIMEOUT;
            let reply = match client.call(addr, &req, deadline).await {
                Ok(ServerReply::Client(r)) => r,
                Ok(ServerReply::Raft(_)) => {
                    last = format!("{addr} answered with a Raft message");
                    continue;
                }
                Err(e) => {
                    last = format!("{addr}: {e}");
                    tracing::warn!(server = %addr, error = %e, "cannot ask to join");
                    continue;
                }
            };
            match reply.answer {
                Ok(Answer::Admitted(a)) => {
                    return Ok(Material {
                        gossip_key: token.gossip_key.clone(),
                        ca: Pair {
                            cert_pem: token.ca_pem.clone(),
                            key_pem: String::new(),
                        },
                        cert: Pair {
                            cert_pem: a.cert_pem,
                            key_pem: key.serialize_pem(),
                        },
                        agent_token: a.agent_token,
                        bootstrap_token: None,
                        join: token.join.clone(),
                    })
                }
                Ok(other) => last = format!("{addr} answered {other:?}"),
                // No leader yet, or one being elected: ask again.
                Err(e) if e.contains("leader") => last = format!("{addr}: {e}"),
                Err(e) => {
                    return Err(SecureError(format!(
                        "the cluster refused to admit this agent: {e}"
                    )))
                }
            }
        }
    }
    Err(SecureError(format!(
        "could not join: {last} (the join token names {:?})",
        token.servers
    )))
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

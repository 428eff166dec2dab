//! Agent configuration: Consul's config-file keys (JSON or HCL) and flags.
//!
//! Precedence is Consul's: built-in defaults, then config files in the order
//! given (a directory contributes its `*.json` and `*.hcl` files in name
//! order), then command-line flags. Unknown keys are errors that name the
//! file and the key, so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::consul_keys;
use super::definition::{decode, CheckDef, ScriptPolicy, ServiceDef};
use crate::gossip::Config as GossipConfig;

/// Consul's default ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// DNS interface (8600).
    pub dns: u16,
    /// HTTP API (8500).
    pub http: u16,
    /// LAN gossip, UDP and TCP (8301).
    pub serf_lan: u16,
    /// WAN gossip (8302).
    pub serf_wan: u16,
    /// Server RPC (8300).
    pub server: u16,
    /// HTTPS API (0: off, as Consul's -1).
    pub https: u16,
}

impl Default for Ports {
    fn default() -> Self {
        Ports {
            dns: 8600,
            http: 8500,
            serf_lan: 8301,
            serf_wan: 8302,
            server: 8300,
            https: 0,
        }
    }
}

/// `base` with the overrides of `g` (the `name` block).
fn tuned(mut c: GossipConfig, g: &GossipTuning, name: &str) -> Result<GossipConfig, ConfigError> {
    if let Some(v) = g.gossip_nodes {
        c.gossip_nodes = v;
    }
    if let Some(v) = g.gossip_interval {
        c.gossip_interval = v;
    }
    if let Some(v) = g.probe_interval {
        c.probe_interval = v;
    }
    if let Some(v) = g.probe_timeout {
        c.probe_timeout = v;
    }
    if let Some(v) = g.suspicion_mult {
        c.suspicion_mult = v;
    }
    if let Some(v) = g.retransmit_mult {
        c.retransmit_mult = v;
    }
    c.validate()
        .map_err(|e| ConfigError(format!("{name}: {e}")))?;
    Ok(c)
}

/// Applies a `gossip_lan` or `gossip_wan` block (`key`) to `g`.
fn merge_tuning(
    origin: &str,
    key: &str,
    v: &Value,
    g: &mut GossipTuning,
) -> Result<(), ConfigError> {
    for (k, gv) in as_object(origin, key, v)? {
        let path = format!("{key}.{k}");
        let f = Field { origin, key: &path };
        match k.as_str() {
            "gossip_nodes" => g.gossip_nodes = Some(f.uint(gv)? as usize),
            "gossip_interval" => g.gossip_interval = Some(f.duration(gv)?),
            "probe_interval" => g.probe_interval = Some(f.duration(gv)?),
            "probe_timeout" => g.probe_timeout = Some(f.duration(gv)?),
            "suspicion_mult" => g.suspicion_mult = Some(f.uint(gv)? as usize),
            "retransmit_mult" => g.retransmit_mult = Some(f.uint(gv)? as usize),
            _ => return Err(f.unknown()),
        }
    }
    Ok(())
}

/// Overrides of a gossip pool's timing (Consul's `gossip_lan` and
/// `gossip_wan` blocks).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GossipTuning {
    /// `gossip_nodes`.
    pub gossip_nodes: Option<usize>,
    /// `gossip_interval`.
    pub gossip_interval: Option<Duration>,
    /// `probe_interval`.
    pub probe_interval: Option<Duration>,
    /// `probe_timeout`.
    pub probe_timeout: Option<Duration>,
    /// `suspicion_mult`.
    pub suspicion_mult: Option<usize>,
    /// `retransmit_mult`.
    pub retransmit_mult: Option<usize>,
}

/// Everything `cairn agent` needs to run.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Node name, unique in the datacenter.
    pub node_name: String,
    /// Node ID (a UUID); generated and kept in the data dir when absent.
    pub node_id: Option<String>,
    /// Datacenter name.
    pub datacenter: String,
    /// The datacenter that owns ACL policies, roles and global tokens
    /// (`primary_datacenter`; `None`: this one). Other datacenters'
    /// servers replicate them from it.
    pub primary_datacenter: Option<String>,
    /// Where state is kept (not needed in dev mode).
    pub data_dir: Option<PathBuf>,
    /// Address the cluster-facing listeners bind to.
    pub bind_addr: IpAddr,
    /// Address advertised to other agents (defaults to `bind_addr`).
    pub advertise_addr: Option<IpAddr>,
    /// Address the client interfaces (HTTP, DNS) bind to.
    pub client_addr: IpAddr,
    /// Listening ports.
    pub ports: Ports,
    /// Agents to join at start; failure to join any is fatal.
    pub start_join: Vec<String>,
    /// Agents to join at start, retried until one answers.
    pub retry_join: Vec<String>,
    /// Servers of other datacenters to join at start in the WAN pool.
    pub start_join_wan: Vec<String>,
    /// The same, retried until one answers.
    pub retry_join_wan: Vec<String>,
    /// Overrides of the WAN pool's timing (Consul's `gossip_wan`).
    pub gossip_wan: GossipTuning,
    /// The CA certificates (PEM) that TLS peers must chain to.
    pub ca_file: Option<PathBuf>,
    /// This agent's certificate (PEM), for HTTPS (and RPC TLS).
    pub cert_file: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Require a client certificate from `ca_file` on HTTPS.
    pub verify_incoming: bool,
    /// Dial servers over TLS and verify their certificates.
    pub verify_outgoing: bool,
    /// With TLS to servers: check they prove `server.<dc>.<domain>` (on by
    /// default; Consul's default is off).
    pub verify_server_hostname: bool,
    /// The gossip encryption key, base64 (Consul's `encrypt`); a keyring
    /// file in the data directory, once written, takes precedence.
    pub encrypt: Option<String>,
    /// Drop gossip that is not encrypted with an installed key.
    pub encrypt_verify_incoming: bool,
    /// Encrypt the gossip sent.
    pub encrypt_verify_outgoing: bool,
    /// Pause between `retry_join` attempts.
    pub retry_interval: Duration,
    /// Give up `retry_join` after this many attempts (0: never).
    pub retry_max: u32,
    /// Log filter (`trace`, `debug`, `info`, `warn`, `error`).
    pub log_level: String,
    /// Arbitrary key/value metadata for this node.
    pub node_meta: BTreeMap<String, String>,
    /// Leave gracefully on SIGTERM (on SIGINT the agent always leaves).
    pub leave_on_terminate: bool,
    /// Development mode: one node on loopback, nothing persisted.
    pub dev: bool,
    /// Gossip timing before `gossip_lan` overrides: memberlist's LAN preset,
    /// or the local preset in dev mode (the simulator sets its own).
    pub gossip_base: GossipConfig,
    /// Gossip timing overrides.
    pub gossip_lan: GossipTuning,
    /// Run a server: keep the replicated state and answer RPC.
    pub server: bool,
    /// Bootstrap the Raft group once this many servers are seen (0: wait
    /// to be added to an existing one).
    pub bootstrap_expect: u32,
    /// Scales every Raft timeout (Consul's `performance.raft_multiplier`;
    /// 1 is tight LAN timing, higher tolerates slower machines and links).
    pub raft_multiplier: u32,
    /// Take a snapshot after this many log entries (`raft_snapshot_threshold`).
    pub raft_snapshot_threshold: u64,
    /// Log entries kept behind a snapshot, for followers that lag a little
    /// (`raft_trailing_logs`).
    pub raft_trailing_logs: u64,
    /// How long a server must have failed before the leader removes it
    /// from the Raft group (autopilot's `server_stabilization_time`-like
    /// grace for `cleanup_dead_servers`).
    pub dead_server_grace: Duration,
    /// The `autopilot` block: the settings the first leader stores when
    /// the cluster has none (`/v1/operator/autopilot/configuration`
    /// changes them afterwards).
    pub autopilot: crate::state::AutopilotConfig,
    /// Keep the server's Raft state on this simulated disk instead of in
    /// `data_dir` (the simulator's: a disk that survives crashes).
    pub sim_disk: Option<crate::consensus::MemoryDisk>,
    /// Keep the Serf snapshot (the members to rejoin after a restart)
    /// here instead of `<data_dir>/serf/local.snapshot` (the simulator
    /// keeps it in memory that survives the node's crashes).
    pub serf_snapshot: Option<crate::agent::snapshot::SnapshotStore>,
    /// Started with `-secure` (cairn's own): TLS, gossip encryption and
    /// default-deny ACLs from `<data_dir>/secure`, and on a server, TLS
    /// connections without a client certificate taken for joins by join
    /// token ([`crate::agent::secure`]).
    pub secure: bool,
    /// Services defined in config files (`service`, `services`).
    pub services: Vec<Defined<ServiceDef>>,
    /// Checks defined in config files (`check`, `checks`).
    pub checks: Vec<Defined<CheckDef>>,
    /// Allow script checks from the API and config files.
    pub enable_script_checks: bool,
    /// Allow script checks from config files only.
    pub enable_local_script_checks: bool,
    /// How the DNS interface answers (its port is `ports.dns`; 0: off).
    pub dns: crate::dns::config::DnsConfig,
    /// Access control (`acl { ... }`).
    pub acl: crate::acl::AclConfig,
    /// Consul keys the files set that cairn accepts without acting on
    /// them, in the order met (the agent warns of each once at start).
    pub ignored: Vec<String>,
}

impl AgentConfig {
    /// Consul's agent flag `-name` (given `value`, none for a flag that
    /// takes none), which cairn's `agent` has no flag for: applied as the
    /// key it sets would be from a file, or noted as accepted without
    /// effect when it sets none.
    pub fn merge_flag(&mut self, name: &str, value: Option<&str>) -> Result<(), ConfigError> {
        let origin = format!("-{name}");
        let Some(key) = consul_keys::flag(name) else {
            return Err(ConfigError(format!(
                "{origin}: not a flag of Consul's agent"
            )));
        };
        let Some(key) = key else {
            if !self.ignored.contains(&origin) {
                self.ignored.push(origin);
            }
            return Ok(());
        };
        let v = match value {
            None => Value::Bool(true),
            Some(v) => match (v.parse::<i64>(), v) {
                (Ok(n), _) => Value::from(n),
                (_, "true") => Value::Bool(true),
                (_, "false") => Value::Bool(false),
                (_, text) => Value::from(text),
            },
        };
        let nested = key
            .rsplit('.')
            .fold(v, |inner, part| serde_json::json!({ part: inner }));
        self.merge_value(&origin, &nested)
    }

    /// A key cairn does not read (`path`, dotted, set to `v`). Consul's
    /// other keys are accepted and noted in [`ignored`](Self::ignored),
    /// unless they would turn on a protection cairn lacks; a key Consul
    /// does not know either is refused, with the nearest known one named.
    fn other_key(&mut self, origin: &str, path: &str, v: &Value) -> Result<(), ConfigError> {
        let f = Field { origin, key: path };
        match consul_keys::lookup(path) {
            Some(_) if consul_keys::is_protection(path) && !consul_keys::is_off(v) => Err(f.err(
                "turns on a protection cairn does not implement; remove it (cairn will not run as if it were on)",
            )),
            Some(_) => {
                if !self.ignored.iter().any(|k| k == path) {
                    self.ignored.push(path.to_string());
                }
                Ok(())
            }
            None if consul_keys::is_block(path) => {
                for (k, sub) in as_object(origin, path, v)? {
                    self.other_key(origin, &format!("{path}.{k}"), sub)?;
                }
                Ok(())
            }
            None => Err(f.unknown()),
        }
    }

    /// Applies an `acl` block.
    fn merge_acl(&mut self, origin: &str, v: &Value) -> Result<(), ConfigError> {
        let mut others = Vec::new();
        for (k, av) in as_object(origin, "acl", v)? {
            let path = format!("acl.{k}");
            let f = Field { origin, key: &path };
            let a = &mut self.acl;
            match k.as_str() {
                "enabled" => a.enabled = f.bool(av)?,
                "default_policy" => {
                    a.default_allow = match f.string(av)?.as_str() {
                        "allow" => true,
                        "deny" => false,
                        other => {
                            return Err(f.err(&format!(
                                "invalid default_policy {other:?} (expected allow or deny)"
                            )))
                        }
                    }
                }
                "down_policy" => {
                    a.down_policy = f.string(av)?.parse().map_err(|e: String| f.err(&e))?
                }
                "token_ttl" => a.token_ttl = f.duration(av)?,
                // Consul's: policies and roles are resolved with the token.
                "policy_ttl" | "role_ttl" => {
                    f.duration(av)?;
                }
                "tokens" => {
                    for (name, tv) in as_object(origin, &path, av)? {
                        let sub = format!("{path}.{name}");
                        let g = Field { origin, key: &sub };
                        let mine = matches!(
                            name.as_str(),
                            "initial_management"
                                | "master"
                                | "agent"
                                | "default"
                                | "dns"
                                | "agent_recovery"
                                | "agent_master"
                                | "replication"
                                | "config_file_service_registration"
                        );
                        if !mine {
                            others.push((sub.clone(), tv));
                            continue;
                        }
                        let t = Some(g.string(tv)?).filter(|t| !t.is_empty());
                        match name.as_str() {
                            "initial_management" | "master" => a.tokens.initial_management = t,
                            "agent" => a.tokens.agent = t,
                            "default" => a.tokens.default = t,
                            "dns" => a.tokens.dns = t,
                            "agent_recovery" | "agent_master" => a.tokens.agent_recovery = t,
                            "replication" => a.tokens.replication = t,
                            "config_file_service_registration" => {
                                a.tokens.config_file_service_registration = t
                            }
                            _ => {}
                        }
                    }
                }
                "enable_token_persistence" => a.enable_token_persistence = f.bool(av)?,
                "enable_token_replication" => a.enable_token_replication = f.bool(av)?,
                _ => others.push((path.clone(), av)),
            }
        }
        for (path, v) in others {
            self.other_key(origin, &path, v)?;
        }
        Ok(())
    }

    /// Applies a `dns_config` block.
    fn merge_dns(&mut self, origin: &str, v: &Value) -> Result<(), ConfigError> {
        let mut others = Vec::new();
        for (k, dv) in as_object(origin, "dns_config", v)? {
            let path = format!("dns_config.{k}");
            let f = Field { origin, key: &path };
            let d = &mut self.dns;
            let secs = |f: &Field, v: &Value| -> Result<u32, ConfigError> {
                Ok(f.duration(v)?.as_secs().min(u64::from(u32::MAX)) as u32)
            };
            match k.as_str() {
                "allow_stale" => d.allow_stale = f.bool(dv)?,
                "max_stale" => d.max_stale = f.duration(dv)?,
                "only_passing" => d.only_passing = f.bool(dv)?,
                "near" => {
                    let n = f.string(dv)?;
                    d.near = (!n.is_empty()).then_some(n);
                }
                "udp_answer_limit" => d.udp_answer_limit = f.uint(dv)? as usize,
                "node_ttl" => d.node_ttl = secs(&f, dv)?,
                "service_ttl" => {
                    for (name, tv) in as_object(origin, &path, dv)? {
                        let sub = format!("{path}.{name}");
                        let g = Field { origin, key: &sub };
                        let ttl = secs(&g, tv)?;
                        d.service_ttls.insert(name.clone(), ttl);
                    }
                }
                "soa" => {
                    for (name, sv) in as_object(origin, &path, dv)? {
                        let sub = format!("{path}.{name}");
                        let g = Field { origin, key: &sub };
                        match name.as_str() {
                            "min_ttl" => d.soa_min_ttl = g.uint(sv)? as u32,
                            _ => others.push((sub.clone(), sv)),
                        }
                    }
                }
                _ => others.push((path.clone(), dv)),
            }
        }
        for (path, v) in others {
            self.other_key(origin, &path, v)?;
        }
        Ok(())
    }

    /// The settings `/v1/agent/self` shows as `DebugConfig`, under the
    /// names Consul's runtime configuration gives them.
    pub fn debug_config(&self, node_id: &str) -> serde_json::Value {
        let secs = |d: Duration| format!("{}s", d.as_secs_f64());
        serde_json::json!({
            "NodeName": self.node_name,
            "NodeID": node_id,
            "Datacenter": self.datacenter,
            "DataDir": self.data_dir.as_ref().map(|d| d.display().to_string()),
            "DevMode": self.dev,
            "BindAddr": self.bind_addr.to_string(),
            "AdvertiseAddrLAN": self.advertise_addr.unwrap_or(self.bind_addr).to_string(),
            "ClientAddrs": [self.client_addr.to_string()],
            "HTTPPort": self.ports.http,
            "DNSPort": self.ports.dns,
            "SerfPortLAN": self.ports.serf_lan,
            "SerfPortWAN": self.ports.serf_wan,
            "ServerPort": self.ports.server,
            "ServerMode": self.server,
            "BootstrapExpect": self.bootstrap_expect,
            "RaftSnapshotThreshold": self.raft_snapshot_threshold,
            "RaftTrailingLogs": self.raft_trailing_logs,
            "StartJoinAddrsLAN": self.start_join,
            "RetryJoinLAN": self.retry_join,
            "StartJoinAddrsWAN": self.start_join_wan,
            "RetryJoinWAN": self.retry_join_wan,
            "RetryJoinIntervalLAN": secs(self.retry_interval),
            "RetryJoinMaxAttemptsLAN": self.retry_max,
            "LogLevel": self.log_level,
            "NodeMeta": self.node_meta,
            "LeaveOnTerm": self.leave_on_terminate,
            "EnableRemoteScriptChecks": self.enable_script_checks,
            "EnableLocalScriptChecks": self.enable_local_script_checks || self.enable_script_checks,
        })
    }
}

/// A DNS domain as `domain`, `alt_domain` and their flags give it, like
/// `consul` or `cairn.example.`: lowercased, without dots around it.
pub fn parse_domain(s: &str) -> Result<String, String> {
    let d = s.trim_matches('.').to_ascii_lowercase();
    if d.is_empty() || !d.split('.').all(valid_dns_label) {
        return Err(format!("must be a domain name like \"consul\", not {s:?}"));
    }
    Ok(d)
}

/// A recursor as `recursors` and `-recursor` give it: an address, with
/// port 53 unless one is given.
pub fn parse_recursor(s: &str) -> Result<std::net::SocketAddr, String> {
    let s = s.trim();
    if let Ok(a) = s.parse::<std::net::SocketAddr>() {
        return Ok(a);
    }
    s.trim_matches(|c| c == '[' || c == ']')
        .parse::<IpAddr>()
        .map(|ip| std::net::SocketAddr::new(ip, 53))
        .map_err(|_| format!("recursor {s:?} is not an IP address (with an optional port)"))
}

/// A definition and the file it came from (for errors).
#[derive(Debug, Clone, PartialEq)]
pub struct Defined<T> {
    /// The config file.
    pub origin: String,
    /// The definition.
    pub def: T,
}

impl Default for AgentConfig {
    fn default() -> Self {
        AgentConfig {
            node_name: default_node_name(),
            node_id: None,
            datacenter: "dc1".into(),
            primary_datacenter: None,
            data_dir: None,
            bind_addr: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            advertise_addr: None,
            client_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            ports: Ports::default(),
            start_join: Vec::new(),
            retry_join: Vec::new(),
            start_join_wan: Vec::new(),
            retry_join_wan: Vec::new(),
            gossip_wan: GossipTuning::default(),
            ca_file: None,
            cert_file: None,
            key_file: None,
            verify_incoming: false,
            verify_outgoing: false,
            verify_server_hostname: true,
            encrypt: None,
            encrypt_verify_incoming: true,
            encrypt_verify_outgoing: true,
            retry_interval: Duration::from_secs(30),
            retry_max: 0,
            log_level: "info".into(),
            node_meta: BTreeMap::new(),
            leave_on_terminate: true,
            dev: false,
            gossip_base: GossipConfig::lan(),
            gossip_lan: GossipTuning::default(),
            server: false,
            bootstrap_expect: 0,
            raft_multiplier: 1,
            raft_snapshot_threshold: 16384,
            raft_trailing_logs: 10240,
            dead_server_grace: Duration::from_secs(30),
            autopilot: crate::state::AutopilotConfig::default(),
            sim_disk: None,
            serf_snapshot: None,
            secure: false,
            services: Vec::new(),
            checks: Vec::new(),
            enable_script_checks: false,
            enable_local_script_checks: false,
            dns: crate::dns::config::DnsConfig::default(),
            acl: crate::acl::AclConfig::default(),
            ignored: Vec::new(),
        }
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .map(|s| s.trim().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "cairn".into())
}

/// A configuration problem, saying where and what to fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(pub String);

impl AgentConfig {
    /// Development defaults: loopback everywhere, no data dir needed, and a
    /// server that elects itself.
    pub fn dev() -> Self {
        AgentConfig {
            dev: true,
            server: true,
            bootstrap_expect: 1,
            bind_addr: IpAddr::V4(Ipv4Addr::LOCALHOST),
            gossip_base: GossipConfig::local(),
            ..AgentConfig::default()
        }
    }

    /// Reads one config file (`.json` or `.hcl`) over this configuration.
    pub fn merge_file(&mut self, path: &Path) -> Result<(), ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("cannot read config file {}: {e}", path.display())))?;
        self.merge_text(path, &text)
    }

    /// Reads the text of a config file named `path` (`.json`, else HCL)
    /// over this configuration.
    pub fn merge_text(&mut self, path: &Path, text: &str) -> Result<(), ConfigError> {
        let value = parse_document(path, text)?;
        self.merge_value(&path.display().to_string(), &value)
    }

    /// Reads every `*.json` and `*.hcl` file of `dir`, in name order.
    pub fn merge_dir(&mut self, dir: &Path) -> Result<(), ConfigError> {
        let entries = std::fs::read_dir(dir)
            .map_err(|e| ConfigError(format!("cannot read config dir {}: {e}", dir.display())))?;
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| matches!(p.extension().and_then(|e| e.to_str()), Some("json" | "hcl")))
            .collect();
        files.sort();
        for f in files {
            self.merge_file(&f)?;
        }
        Ok(())
    }

    /// Applies a parsed document; `origin` names it in errors.
    pub fn merge_value(&mut self, origin: &str, value: &Value) -> Result<(), ConfigError> {
        let obj = as_object(origin, "", value)?;
        for (key, v) in obj {
            let at = Field { origin, key };
            match key.as_str() {
                "node_name" => self.node_name = at.string(v)?,
                "node_id" => self.node_id = Some(at.string(v)?),
                "datacenter" => self.datacenter = at.string(v)?,
                "primary_datacenter" | "acl_datacenter" => {
                    self.primary_datacenter = Some(at.string(v)?).filter(|d| !d.is_empty())
                }
                "data_dir" => self.data_dir = Some(PathBuf::from(at.string(v)?)),
                "bind_addr" => self.bind_addr = at.ip(v)?,
                "advertise_addr" => self.advertise_addr = Some(at.ip(v)?),
                "client_addr" => self.client_addr = at.ip(v)?,
                "start_join" => self.start_join = at.strings(v)?,
                "retry_join" => self.retry_join = at.strings(v)?,
                "start_join_wan" => self.start_join_wan = at.strings(v)?,
                "retry_join_wan" => self.retry_join_wan = at.strings(v)?,
                "encrypt" => self.encrypt = Some(at.string(v)?),
                "ca_file" => self.ca_file = Some(PathBuf::from(at.string(v)?)),
                "cert_file" => self.cert_file = Some(PathBuf::from(at.string(v)?)),
                "key_file" => self.key_file = Some(PathBuf::from(at.string(v)?)),
                "verify_incoming" => self.verify_incoming = at.bool(v)?,
                "verify_outgoing" => self.verify_outgoing = at.bool(v)?,
                "verify_server_hostname" => self.verify_server_hostname = at.bool(v)?,
                "encrypt_verify_incoming" => self.encrypt_verify_incoming = at.bool(v)?,
                "encrypt_verify_outgoing" => self.encrypt_verify_outgoing = at.bool(v)?,
                "retry_interval" => self.retry_interval = at.duration(v)?,
                "retry_max" => self.retry_max = at.uint(v)? as u32,
                "log_level" => self.log_level = at.string(v)?,
                "leave_on_terminate" => self.leave_on_terminate = at.bool(v)?,
                "server" => self.server = at.bool(v)?,
                "bootstrap_expect" => self.bootstrap_expect = at.uint(v)? as u32,
                "raft_snapshot_threshold" => self.raft_snapshot_threshold = at.uint(v)?,
                "raft_trailing_logs" => self.raft_trailing_logs = at.uint(v)?,
                "performance" => {
                    for (k, pv) in as_object(origin, key, v)? {
                        let path = format!("performance.{k}");
                        let f = Field { origin, key: &path };
                        match k.as_str() {
                            "raft_multiplier" => self.raft_multiplier = f.uint(pv)? as u32,
                            _ => self.other_key(origin, &path, pv)?,
                        }
                    }
                }
                "autopilot" => {
                    for (k, av) in as_object(origin, key, v)? {
                        let path = format!("autopilot.{k}");
                        let f = Field { origin, key: &path };
                        let ap = &mut self.autopilot;
                        match k.as_str() {
                            "server_stabilization_time" => {
                                self.dead_server_grace = f.duration(av)?;
                                ap.server_stabilization_time =
                                    crate::format::go_duration(self.dead_server_grace);
                            }
                            "cleanup_dead_servers" => ap.cleanup_dead_servers = f.bool(av)?,
                            "last_contact_threshold" => {
                                ap.last_contact_threshold =
                                    crate::format::go_duration(f.duration(av)?)
                            }
                            "max_trailing_logs" => ap.max_trailing_logs = f.uint(av)?,
                            "min_quorum" => ap.min_quorum = f.uint(av)? as u32,
                            "redundancy_zone_tag" => ap.redundancy_zone_tag = f.string(av)?,
                            "disable_upgrade_migration" => {
                                ap.disable_upgrade_migration = f.bool(av)?
                            }
                            "upgrade_version_tag" => ap.upgrade_version_tag = f.string(av)?,
                            _ => self.other_key(origin, &path, av)?,
                        }
                    }
                }
                "node_meta" => {
                    for (k, mv) in as_object(origin, key, v)? {
                        let f = Field {
                            origin,
                            key: &format!("{key}.{k}"),
                        };
                        self.node_meta.insert(k.clone(), f.string(mv)?);
                    }
                }
                "domain" => self.dns.domain = at.domain(v)?,
                "alt_domain" => self.dns.alt_domain = Some(at.domain(v)?),
                "recursors" => {
                    self.dns.recursors = at
                        .strings(v)?
                        .iter()
                        .map(|r| parse_recursor(r).map_err(|e| at.err(&e)))
                        .collect::<Result<_, _>>()?
                }
                "dns_config" => self.merge_dns(origin, v)?,
                "acl" => self.merge_acl(origin, v)?,
                "ports" => {
                    for (k, pv) in as_object(origin, key, v)? {
                        let path = format!("ports.{k}");
                        let f = Field { origin, key: &path };
                        // Consul turns DNS, and a server's WAN pool, off
                        // with -1.
                        if pv.as_i64() == Some(-1) {
                            match k.as_str() {
                                "dns" => self.ports.dns = 0,
                                "serf_wan" => self.ports.serf_wan = 0,
                                "https" => self.ports.https = 0,
                                // cairn serves no gRPC yet: already off.
                                "grpc" | "grpc_tls" => {}
                                _ => {
                                    return Err(f.err(
                                        "-1 turns off only dns, https, grpc, grpc_tls and serf_wan",
                                    ))
                                }
                            }
                            continue;
                        }
                        let port = f.port(pv)?;
                        match k.as_str() {
                            "dns" => self.ports.dns = port,
                            "http" => self.ports.http = port,
                            "serf_lan" => self.ports.serf_lan = port,
                            "serf_wan" => self.ports.serf_wan = port,
                            "server" => self.ports.server = port,
                            "https" => self.ports.https = port,
                            _ => self.other_key(origin, &path, pv)?,
                        }
                    }
                }
                "gossip_lan" => merge_tuning(origin, key, v, &mut self.gossip_lan)?,
                "gossip_wan" => merge_tuning(origin, key, v, &mut self.gossip_wan)?,
                "enable_script_checks" => self.enable_script_checks = at.bool(v)?,
                "enable_local_script_checks" => self.enable_local_script_checks = at.bool(v)?,
                "service" | "services" => {
                    for (i, item) in at.items(v).into_iter().enumerate() {
                        let def: ServiceDef = at.definition(i, item)?;
                        def.to_parts(true).map_err(|e| at.item_err(i, &e))?;
                        self.services.push(Defined {
                            origin: origin.to_owned(),
                            def,
                        });
                    }
                }
                "check" | "checks" => {
                    for (i, item) in at.items(v).into_iter().enumerate() {
                        let def: CheckDef = at.definition(i, item)?;
                        def.to_check(true).map_err(|e| at.item_err(i, &e))?;
                        self.checks.push(Defined {
                            origin: origin.to_owned(),
                            def,
                        });
                    }
                }
                _ => self.other_key(origin, key, v)?,
            }
        }
        Ok(())
    }

    /// The gossip configuration this agent runs with: the base preset with
    /// `gossip_lan` overrides.
    pub fn gossip_config(&self) -> Result<GossipConfig, ConfigError> {
        tuned(self.gossip_base.clone(), &self.gossip_lan, "gossip_lan")
    }

    /// A server's WAN pool configuration: memberlist's WAN preset with
    /// `gossip_wan` overrides.
    pub fn gossip_wan_config(&self) -> Result<GossipConfig, ConfigError> {
        tuned(GossipConfig::wan(), &self.gossip_wan, "gossip_wan")
    }

    /// Checks the combination of settings before the agent starts.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node_name.is_empty() || self.node_name.len() > crate::gossip::wire::MAX_NAME_LEN {
            return Err(ConfigError(format!(
                "node_name must be 1 to {} bytes long",
                crate::gossip::wire::MAX_NAME_LEN
            )));
        }
        if !valid_dns_label(&self.datacenter) {
            return Err(ConfigError(format!(
                "datacenter {:?} is not valid: use letters, digits, '-' and '_'",
                self.datacenter
            )));
        }
        if !self.dev && self.data_dir.is_none() {
            return Err(ConfigError(
                "data_dir is required (set -data-dir, or use -dev for a throw-away agent)".into(),
            ));
        }
        if self.bind_addr.is_unspecified() && self.advertise_addr.is_none() {
            return Err(ConfigError(format!(
                "bind_addr is {}; set -advertise (or -bind) to the address other agents should use",
                self.bind_addr
            )));
        }
        if self.ports.https != 0 && (self.cert_file.is_none() || self.key_file.is_none()) {
            return Err(ConfigError(
                "ports.https needs cert_file and key_file (cairn tls cert create makes them)"
                    .into(),
            ));
        }
        if self.verify_outgoing && self.ca_file.is_none() {
            return Err(ConfigError(
                "verify_outgoing needs ca_file, the CA servers' certificates must chain to".into(),
            ));
        }
        if self.verify_incoming && self.ca_file.is_none() {
            return Err(ConfigError(
                "verify_incoming needs ca_file, the CA client certificates must chain to".into(),
            ));
        }
        if let Some(k) = &self.encrypt {
            crate::gossip::keyring::parse_key(k)
                .map_err(|e| ConfigError(format!("encrypt: {e}")))?;
        }
        let joins_wan = !(self.start_join_wan.is_empty() && self.retry_join_wan.is_empty());
        if joins_wan && !self.server {
            return Err(ConfigError(
                "only servers join the WAN pool: drop -join-wan/-retry-join-wan, or add -server"
                    .into(),
            ));
        }
        if joins_wan && self.ports.serf_wan == 0 {
            return Err(ConfigError(
                "the WAN pool is off (serf_wan = -1), so there is nothing to join it with".into(),
            ));
        }
        if let Some(id) = &self.node_id {
            crate::format::parse_uuid(id).ok_or_else(|| {
                ConfigError(format!(
                    "node_id {id:?} is not a UUID (like 5f0cbb5c-2a43-4a5e-bd27-8f3d2b0e1a67)"
                ))
            })?;
        }
        tracing_level(&self.log_level)?;
        self.gossip_config()?;
        if self.bootstrap_expect > 0 && !self.server {
            return Err(ConfigError(
                "bootstrap_expect is set but this agent is not a server (add -server)".into(),
            ));
        }
        if !(1..=10).contains(&self.raft_multiplier) {
            return Err(ConfigError(format!(
                "performance.raft_multiplier is {}; it must be 1 to 10",
                self.raft_multiplier
            )));
        }
        if !self.script_policy().config {
            let scripted = self
                .services
                .iter()
                .map(|d| (&d.origin, d.def.check.iter().chain(&d.def.checks).collect()))
                .chain(self.checks.iter().map(|d| (&d.origin, vec![&d.def])))
                .find(|(_, checks): &(_, Vec<&CheckDef>)| checks.iter().any(|c| c.args.is_some()));
            if let Some((origin, _)) = scripted {
                return Err(ConfigError(format!(
                    "{origin}: a check runs a script (\"args\"), but script checks are disabled; set enable_local_script_checks = true to allow them from config files"
                )));
            }
        }
        if self.raft_snapshot_threshold == 0 {
            return Err(ConfigError(
                "raft_snapshot_threshold must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Where script checks may come from.
    pub fn script_policy(&self) -> ScriptPolicy {
        ScriptPolicy {
            api: self.enable_script_checks,
            config: self.enable_script_checks || self.enable_local_script_checks,
        }
    }

    /// The Raft timing and log policy of a server with this configuration.
    /// The base timing is Consul's at `raft_multiplier = 1`: a leader that
    /// is silent for a second is replaced.
    pub fn raft_config(&self) -> Result<openraft::Config, ConfigError> {
        let m = u64::from(self.raft_multiplier);
        openraft::Config {
            cluster_name: self.datacenter.clone(),
            // A follower of a leader it has voted for calls an election
            // after openraft's leader lease (election_timeout_max) plus a
            // random election timeout: 1.5 to 2 s at multiplier 1, what a
            // Consul LAN cluster takes to replace a dead leader.
            heartbeat_interval: 100 * m,
            election_timeout_min: 500 * m,
            election_timeout_max: 1000 * m,
            install_snapshot_timeout: 10_000 * m,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.raft_snapshot_threshold),
            max_in_snapshot_log_to_keep: self.raft_trailing_logs,
            // Under load a follower's one append in flight carries everything
            // queued since the last; openraft's 300 caps that batch.
            max_payload_entries: 4096,
            ..openraft::Config::default()
        }
        .validate()
        .map_err(|e| ConfigError(format!("Raft settings: {e}")))
    }
}

/// The tracing filter for a Consul log level.
pub fn tracing_level(level: &str) -> Result<&'static str, ConfigError> {
    Ok(match level.to_ascii_lowercase().as_str() {
        "trace" => "trace",
        "debug" => "debug",
        "info" => "info",
        "warn" | "warning" => "warn",
        "err" | "error" => "error",
        _ => {
            return Err(ConfigError(format!(
                "log_level {level:?} is not one of trace, debug, info, warn, error"
            )))
        }
    })
}

fn valid_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// HCL blocks come as one-element lists of objects; a definition wants the
/// object. (`checks`, a real list, keeps its elements.)
fn unwrap_blocks(v: Value) -> Value {
    match v {
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| {
                    let v = match v {
                        Value::Array(mut items)
                            if items.len() == 1
                                && items[0].is_object()
                                && !k.eq_ignore_ascii_case("checks") =>
                        {
                            unwrap_blocks(items.remove(0))
                        }
                        Value::Array(items) => {
                            Value::Array(items.into_iter().map(unwrap_blocks).collect())
                        }
                        other => unwrap_blocks(other),
                    };
                    (k, v)
                })
                .collect(),
        ),
        other => other,
    }
}

fn parse_document(path: &Path, text: &str) -> Result<Value, ConfigError> {
    match path.extension().and_then(|e| e.to_str()) {
        Some("json") => serde_json::from_str(text).map_err(|e| {
            ConfigError(format!(
                "{}:{}:{}: invalid JSON: {e}",
                path.display(),
                e.line(),
                e.column()
            ))
        }),
        Some("hcl") => hcl::from_str(text)
            .map_err(|e| ConfigError(format!("{}: invalid HCL: {e}", path.display()))),
        _ => Err(ConfigError(format!(
            "config file {} must end in .json or .hcl",
            path.display()
        ))),
    }
}

fn as_object<'a>(
    origin: &str,
    key: &str,
    v: &'a Value,
) -> Result<&'a serde_json::Map<String, Value>, ConfigError> {
    match v {
        Value::Object(m) => Ok(m),
        // HCL writes repeated blocks as a list of objects; one is fine.
        Value::Array(items) if items.len() == 1 => as_object(origin, key, &items[0]),
        _ if key.is_empty() => Err(ConfigError(format!(
            "{origin}: the top level must be an object"
        ))),
        _ => Err(ConfigError(format!(
            "{origin}: \"{key}\" must be an object"
        ))),
    }
}

struct Field<'a> {
    origin: &'a str,
    key: &'a str,
}

impl Field<'_> {
    fn err(&self, what: &str) -> ConfigError {
        ConfigError(format!("{}: \"{}\" {what}", self.origin, self.key))
    }

    /// A key that neither cairn nor Consul knows, with the nearest one
    /// Consul knows.
    fn unknown(&self) -> ConfigError {
        let hint = consul_keys::closest(self.key)
            .map(|k| format!("; did you mean \"{k}\"?"))
            .unwrap_or_default();
        ConfigError(format!(
            "{}: unknown key \"{}\" (not one of Consul's agent settings){hint}",
            self.origin, self.key
        ))
    }

    fn string(&self, v: &Value) -> Result<String, ConfigError> {
        v.as_str()
            .map(str::to_owned)
            .ok_or_else(|| self.err("must be a string"))
    }

    fn strings(&self, v: &Value) -> Result<Vec<String>, ConfigError> {
        match v {
            Value::String(s) => Ok(vec![s.clone()]),
            Value::Array(items) => items.iter().map(|i| self.string(i)).collect(),
            _ => Err(self.err("must be a list of strings")),
        }
    }

    fn bool(&self, v: &Value) -> Result<bool, ConfigError> {
        v.as_bool().ok_or_else(|| self.err("must be true or false"))
    }

    fn uint(&self, v: &Value) -> Result<u64, ConfigError> {
        v.as_u64()
            .ok_or_else(|| self.err("must be a non-negative integer"))
    }

    fn port(&self, v: &Value) -> Result<u16, ConfigError> {
        match v.as_i64() {
            Some(p) if (1..=65535).contains(&p) => Ok(p as u16),
            _ => Err(self.err("must be a port number between 1 and 65535")),
        }
    }

    fn domain(&self, v: &Value) -> Result<String, ConfigError> {
        parse_domain(&self.string(v)?).map_err(|e| self.err(&e))
    }

    fn ip(&self, v: &Value) -> Result<IpAddr, ConfigError> {
        let s = self.string(v)?;
        s.parse()
            .map_err(|_| self.err(&format!("must be an IP address, not {s:?}")))
    }

    /// A block or a list of blocks, as one item each.
    fn items<'v>(&self, v: &'v Value) -> Vec<&'v Value> {
        match v {
            Value::Array(items) => items.iter().collect(),
            one => vec![one],
        }
    }

    fn item_err(&self, i: usize, what: &str) -> ConfigError {
        ConfigError(format!("{}: \"{}\"[{i}]: {what}", self.origin, self.key))
    }

    /// Decodes a service or check definition, in any key spelling.
    fn definition<T: serde::de::DeserializeOwned>(
        &self,
        i: usize,
        v: &Value,
    ) -> Result<T, ConfigError> {
        if !v.is_object() {
            return Err(self.item_err(i, "must be an object"));
        }
        // HCL gives nested blocks (`check { ... }`) as one-element lists.
        decode(unwrap_blocks(v.clone())).map_err(|e| self.item_err(i, &e.to_string()))
    }

    fn duration(&self, v: &Value) -> Result<Duration, ConfigError> {
        let s = self.string(v)?;
        crate::format::parse_duration(&s).map_err(|e| self.err(&e))
    }
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;

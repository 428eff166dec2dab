//! The `cairn` command line: `agent`, `members`, `join`, `leave`, `kv`,
//! `catalog`, `services`, `info`, `monitor`, `watch`, `lock`, `event`,
//! `maint`, `rtt`, `version`, and more.
//!
//! Flags are spelled as Consul spells them; Consul's single-dash form
//! (`-node=a`, `-dev`) is accepted as well as `--node=a`, so scripts written
//! for `consul` run unchanged.

mod acl;
mod acl_auth;
mod acl_io;
mod catalog;
mod connect;
mod event;
mod http;
mod keyring;
mod kv;
mod lock;
mod lock_kv;
mod maint;
mod members;
mod monitor;
mod operator;
mod services;
mod snapshot;
mod tls;
mod watch;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use self::http::{percent_encode, HttpArgs};
use self::members::MembersArgs;
use crate::agent::{Agent, AgentConfig, ConfigError, VERSION};
use crate::env::{Env, TokioEnv};
use crate::format::parse_duration;
use crate::http_client as client;

#[derive(Parser, Debug)]
#[command(name = "cairn", version = VERSION, about = "A service mesh control plane: agent and tools")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run an agent (gossip membership and the HTTP API).
    Agent(Box<AgentArgs>),
    /// List the members of the cluster, as the local agent sees them.
    Members(MembersArgs),
    /// Tell the local agent to join a cluster through the given addresses.
    Join(JoinArgs),
    /// Tell the local agent to leave the cluster gracefully and stop.
    Leave(HttpArgs),
    /// Tell the local agent to re-read its config files.
    Reload(HttpArgs),
    /// Declare a failed node departed, so the cluster stops retrying it.
    ForceLeave(ForceLeaveArgs),
    /// Estimate the round-trip time between two nodes from their network
    /// coordinates (the second defaults to the local agent's node).
    Rtt(RttArgs),
    /// Read and write the KV store: get, put, delete, export, import.
    Kv(kv::KvArgs),
    /// List datacenters, nodes and services in the catalog.
    Catalog(catalog::CatalogArgs),
    /// Register and deregister services with the local agent.
    Services(services::ServicesArgs),
    /// Show the local agent's state and statistics.
    Info(HttpArgs),
    /// Stream the local agent's log lines as they happen.
    Monitor(monitor::MonitorArgs),
    /// Follow keys, services, nodes or checks and act on every change.
    Watch(Box<watch::WatchArgs>),
    /// Run a command while holding a lock (or, with -n, a semaphore slot)
    /// on a KV prefix; the command is killed if the lock is lost.
    Lock(Box<lock::LockArgs>),
    /// Fire a user event to the datacenter.
    Event(event::EventArgs),
    /// Put the node or a service in maintenance, take it out, or list.
    Maint(maint::MaintArgs),
    /// Connect: run the mutual-TLS sidecar proxy.
    Connect(connect::ConnectArgs),
    /// Manage intentions: which service may connect to which.
    Intention(connect::IntentionArgs),
    /// Print a new gossip encryption key (for `encrypt`).
    Keygen,
    /// Install, use, remove and list gossip encryption keys over the cluster.
    Keyring(keyring::KeyringArgs),
    /// Manage ACLs: bootstrap, tokens, policies and roles.
    Acl(acl::AclArgs),
    /// Trade a bearer token (a JWT) for an ACL token through an auth method.
    Login(acl_auth::LoginArgs),
    /// Delete the ACL token in use, if `login` made it.
    Logout(acl_auth::LogoutArgs),
    /// Make a CA and agent certificates for TLS (RPC and HTTPS).
    Tls(tls::TlsArgs),
    /// Operate the servers: Raft peers and leadership, autopilot.
    Operator(operator::OperatorArgs),
    /// Save, restore and inspect snapshots of the servers' state.
    Snapshot(snapshot::SnapshotArgs),
    /// Print the version.
    Version,
}

#[derive(Args, Debug, Default)]
struct AgentArgs {
    /// Node name (default: the host name).
    #[arg(long = "node")]
    node: Option<String>,
    /// Node ID, a UUID (default: generated once and kept in the data dir).
    #[arg(long = "node-id")]
    node_id: Option<String>,
    /// Datacenter name.
    #[arg(long = "datacenter")]
    datacenter: Option<String>,
    /// Directory for the agent's state.
    #[arg(long = "data-dir")]
    data_dir: Option<PathBuf>,
    /// Address to bind the gossip listeners to.
    #[arg(long = "bind")]
    bind: Option<IpAddr>,
    /// Address to advertise to other agents.
    #[arg(long = "advertise")]
    advertise: Option<IpAddr>,
    /// Address to bind the HTTP API to.
    #[arg(long = "client")]
    client: Option<IpAddr>,
    /// LAN gossip port (UDP and TCP).
    #[arg(long = "serf-lan-port")]
    serf_lan_port: Option<u16>,
    /// WAN gossip port of a server, UDP and TCP (8302; -1 turns the WAN
    /// pool off).
    #[arg(long = "serf-wan-port", allow_negative_numbers = true)]
    serf_wan_port: Option<i32>,
    /// A server of another datacenter to join in the WAN pool at start
    /// (repeatable); failing to join is fatal.
    #[arg(long = "join-wan")]
    join_wan: Vec<String>,
    /// The same, retried until it answers (repeatable).
    #[arg(long = "retry-join-wan")]
    retry_join_wan: Vec<String>,
    /// Gossip encryption key, base64 (16, 24 or 32 bytes; `cairn keygen`).
    #[arg(long = "encrypt")]
    encrypt: Option<String>,
    /// HTTP API port.
    #[arg(long = "http-port")]
    http_port: Option<u16>,
    /// DNS port, UDP and TCP (8600; -1 turns DNS off).
    #[arg(long = "dns-port", allow_negative_numbers = true)]
    dns_port: Option<i32>,
    /// The DNS domain answered (consul).
    #[arg(long = "domain")]
    domain: Option<String>,
    /// A second DNS domain answered the same way.
    #[arg(long = "alt-domain")]
    alt_domain: Option<String>,
    /// Where DNS questions outside the domain go (repeatable).
    #[arg(long = "recursor")]
    recursors: Vec<String>,
    /// Run as a server: keep the replicated catalog and KV store.
    #[arg(long = "server")]
    server: bool,
    /// Servers to wait for before forming the Raft group (needs -server).
    #[arg(long = "bootstrap-expect")]
    bootstrap_expect: Option<u32>,
    /// Form a Raft group of this one server (same as -bootstrap-expect=1).
    #[arg(long = "bootstrap")]
    bootstrap: bool,
    /// Secure by default (cairn's own): gossip encryption, TLS both ways
    /// on the RPC port and ACLs at default deny, with keys, certificates
    /// and tokens kept in <data-dir>/secure. The first server (-server,
    /// no -join-token) makes them; every other agent joins with a one-time
    /// token from `cairn acl join-token create`.
    #[arg(long = "secure")]
    secure: bool,
    /// With -secure: the one-time join token (or @FILE holding it).
    #[arg(long = "join-token", value_name = "TOKEN")]
    join_token: Option<String>,
    /// Server RPC port (8300).
    #[arg(long = "server-port")]
    server_port: Option<u16>,
    /// Scale Raft's timeouts by this factor (1 to 10).
    #[arg(long = "raft-multiplier")]
    raft_multiplier: Option<u32>,
    /// Agent to join at start (repeatable); failing to join is fatal.
    #[arg(long = "join")]
    join: Vec<String>,
    /// Agent to join at start, retried until it answers (repeatable).
    #[arg(long = "retry-join")]
    retry_join: Vec<String>,
    /// Pause between retry-join attempts, like "30s".
    #[arg(long = "retry-interval")]
    retry_interval: Option<String>,
    /// Give up retry-join after this many attempts (0: never).
    #[arg(long = "retry-max")]
    retry_max: Option<u32>,
    /// Config file, JSON or HCL (repeatable; later files win).
    #[arg(long = "config-file")]
    config_file: Vec<PathBuf>,
    /// Directory of config files, read in name order (repeatable).
    #[arg(long = "config-dir")]
    config_dir: Vec<PathBuf>,
    /// Development mode: one throw-away agent on 127.0.0.1.
    #[arg(long = "dev")]
    dev: bool,
    /// Log level: trace, debug, info, warn, error.
    #[arg(long = "log-level")]
    log_level: Option<String>,
    /// Node metadata as key:value (repeatable).
    #[arg(long = "node-meta")]
    node_meta: Vec<String>,
    /// Allow script checks, from the HTTP API and config files.
    #[arg(long = "enable-script-checks")]
    enable_script_checks: bool,
    /// Allow script checks from config files only.
    #[arg(long = "enable-local-script-checks")]
    enable_local_script_checks: bool,
    /// Consul's agent flags cairn has no flag for, with their values (see
    /// [`consul_only_flags`]); applied like the config keys they set.
    #[arg(skip)]
    consul_only: Vec<(String, Option<String>)>,
}

#[derive(Args, Debug)]
struct RttArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Servers in the WAN pool (`<node>.<dc>`), by WAN coordinates.
    #[arg(long = "wan")]
    wan: bool,
    /// The two names are datacenters: print the p50/p90/p99 of the
    /// estimated RTTs between all their servers (WAN coordinates).
    #[arg(long = "datacenters")]
    datacenters: bool,
    /// With `-datacenters`: between all their nodes, not only servers
    /// (each node's LAN leg to its nearest server, plus the servers' WAN
    /// estimate).
    #[arg(long = "all-nodes")]
    all_nodes: bool,
    /// The first node (or datacenter).
    node_a: String,
    /// The second node (default: the agent's own), or datacenter.
    node_b: Option<String>,
}

#[derive(Args, Debug)]
struct JoinArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Addresses of agents to join through.
    #[arg(required = true)]
    addresses: Vec<String>,
}

/// Rewrites Consul's single-dash long flags (`-node=a`, `-dev`) into clap's
/// `--node=a`, `--dev`, for the flags the chosen subcommand knows.
fn normalize_args(args: Vec<OsString>) -> Vec<OsString> {
    let cmd = Cli::command();
    let Some(sub_pos) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
    else {
        return args;
    };
    let sub_pos = sub_pos + 1;
    let sub_name = args[sub_pos].to_string_lossy().into_owned();
    let Some(mut sub) = cmd.find_subcommand(&sub_name) else {
        return args;
    };
    // Nested subcommands (`kv put`): the flags are the innermost one's.
    let mut sub_pos = sub_pos;
    while let Some(next) = args
        .get(sub_pos + 1)
        .map(|a| a.to_string_lossy().into_owned())
        .and_then(|n| sub.find_subcommand(&n))
    {
        sub = next;
        sub_pos += 1;
    }
    let longs: Vec<String> = sub
        .get_arguments()
        .filter_map(|a| a.get_long().map(str::to_owned))
        .chain(["help".to_string()])
        .collect();
    // A command that runs another (`lock PREFIX CHILD...`, `watch ...
    // HANDLER...`) leaves that command's arguments alone: flags end at the
    // first argument that is not one, as with Go's flag package.
    let flags_end = if sub.get_positionals().any(|p| p.is_trailing_var_arg_set()) {
        first_positional(sub, &args, sub_pos + 1)
    } else {
        args.len()
    };
    args.into_iter()
        .enumerate()
        .map(|(i, a)| {
            let s = a.to_string_lossy();
            if i <= sub_pos || i >= flags_end || s.starts_with("--") || !s.starts_with('-') {
                return a;
            }
            let name = s[1..].split('=').next().unwrap_or("");
            if longs.iter().any(|l| l == name) {
                OsString::from(format!("-{s}"))
            } else {
                a
            }
        })
        .collect()
}

/// The position of the first argument from `from` on that is neither a
/// flag of `sub` nor a flag's value (`args.len()` if none).
fn first_positional(sub: &clap::Command, args: &[OsString], from: usize) -> usize {
    let takes_value = |flag: &str| {
        let name = flag.trim_start_matches('-');
        sub.get_arguments().any(|a| {
            let named = if flag.starts_with("--") || name.len() > 1 {
                a.get_long() == Some(name)
            } else {
                a.get_short().map(String::from).as_deref() == Some(name)
            };
            named && a.get_action().takes_values() && !a.is_require_equals_set()
        })
    };
    let mut i = from;
    while i < args.len() {
        let s = args[i].to_string_lossy();
        if s == "--" || !s.starts_with('-') || s == "-" {
            return i;
        }
        // `-flag value`: the value is no positional.
        i += if !s.contains('=') && takes_value(&s) {
            2
        } else {
            1
        };
    }
    args.len()
}

/// Takes out of `consul agent`'s command line the flags of Consul's that
/// cairn's `agent` has no flag for (`-ui`, `-grpc-port=8502`, `-hcl '...'`),
/// with the value each was given, so a Consul user's start-up script runs
/// unchanged; they are applied as the config keys they set.
fn consul_only_flags(args: Vec<OsString>) -> (Vec<OsString>, Vec<(String, Option<String>)>) {
    let Some(sub_pos) = args
        .iter()
        .skip(1)
        .position(|a| !a.to_string_lossy().starts_with('-'))
        .map(|p| p + 1)
        .filter(|p| args[*p] == "agent")
    else {
        return (args, Vec::new());
    };
    let cmd = Cli::command();
    let longs: Vec<String> = cmd
        .find_subcommand("agent")
        .into_iter()
        .flat_map(|sub| {
            sub.get_arguments()
                .filter_map(|a| a.get_long().map(str::to_owned))
        })
        .collect();
    let (mut kept, mut taken) = (Vec::new(), Vec::new());
    let mut it = args.into_iter().enumerate().peekable();
    while let Some((i, a)) = it.next() {
        let s = a.to_string_lossy().into_owned();
        let bare = s.trim_start_matches('-');
        let (name, inline) = match bare.split_once('=') {
            Some((n, v)) => (n.to_string(), Some(v.to_string())),
            None => (bare.to_string(), None),
        };
        let consul_only = i > sub_pos
            && s.starts_with('-')
            && !longs.contains(&name)
            && crate::agent::consul_keys::flag(&name).is_some();
        if !consul_only {
            kept.push(a);
            continue;
        }
        let value = match inline {
            Some(v) => Some(v),
            None if crate::agent::consul_keys::is_bool_flag(&name) => None,
            None => it.next().map(|(_, v)| v.to_string_lossy().into_owned()),
        };
        taken.push((name, value));
    }
    (kept, taken)
}

/// Runs the command line with the process's arguments.
pub fn main() -> ExitCode {
    let (args, consul_only) = consul_only_flags(normalize_args(std::env::args_os().collect()));
    let cli = match Cli::try_parse_from(args) {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(2)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let res = rt.block_on(async move {
        let done = match cli.cmd {
            Cmd::Agent(mut a) => {
                a.consul_only = consul_only;
                run_agent(*a).await
            }
            Cmd::Members(m) => members::run(m).await,
            Cmd::Join(j) => run_join(j).await,
            Cmd::Leave(h) => run_leave(h).await,
            Cmd::Reload(h) => run_reload(h).await,
            Cmd::ForceLeave(f) => run_force_leave(f).await,
            Cmd::Rtt(r) => run_rtt(r).await,
            Cmd::Kv(k) => kv::run(k).await,
            Cmd::Catalog(c) => catalog::run(c).await,
            Cmd::Services(s) => services::run(s).await,
            Cmd::Info(h) => run_info(h).await,
            Cmd::Monitor(m) => monitor::run(m).await,
            Cmd::Watch(w) => watch::run(*w).await,
            Cmd::Lock(l) => return lock::run(*l).await,
            Cmd::Event(e) => event::run(e).await,
            Cmd::Maint(m) => maint::run(m).await,
            Cmd::Connect(c) => connect::run(c).await,
            Cmd::Intention(i) => return connect::run_intention(i).await,
            Cmd::Keygen => keyring::keygen(),
            Cmd::Keyring(k) => keyring::run(k).await,
            Cmd::Acl(a) => acl::run(a).await,
            Cmd::Login(a) => acl_auth::login(a).await,
            Cmd::Logout(a) => acl_auth::logout(a).await,
            Cmd::Tls(t) => tls::run(t),
            Cmd::Operator(o) => operator::run(o).await,
            Cmd::Snapshot(s) => snapshot::run(s).await,
            Cmd::Version => {
                println!("cairn v{VERSION}");
                Ok(())
            }
        };
        done.map(|()| ExitCode::SUCCESS)
    });
    match res {
        Ok(code) => code,
        Err(e) => {
            // Our errors already say what went wrong and why; anyhow's
            // alternate form would repeat the cause.
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn agent_config(a: &AgentArgs) -> Result<AgentConfig, ConfigError> {
    let mut c = if a.dev {
        AgentConfig::dev()
    } else {
        AgentConfig::default()
    };
    for f in &a.config_file {
        c.merge_file(f)?;
    }
    for d in &a.config_dir {
        c.merge_dir(d)?;
    }
    for (name, value) in &a.consul_only {
        c.merge_flag(name, value.as_deref())?;
    }
    let flag = |name: &str, e: String| ConfigError(format!("-{name}: {e}"));
    if let Some(v) = &a.node {
        c.node_name = v.clone();
    }
    if let Some(v) = &a.node_id {
        c.node_id = Some(v.clone());
    }
    if let Some(v) = &a.datacenter {
        c.datacenter = v.clone();
    }
    if let Some(v) = &a.data_dir {
        c.data_dir = Some(v.clone());
    }
    if let Some(v) = a.bind {
        c.bind_addr = v;
    }
    if let Some(v) = a.advertise {
        c.advertise_addr = Some(v);
    }
    if let Some(v) = a.client {
        c.client_addr = v;
    }
    if let Some(v) = a.serf_lan_port {
        c.ports.serf_lan = v;
    }
    if let Some(v) = a.http_port {
        c.ports.http = v;
    }
    match a.serf_wan_port {
        None => {}
        Some(-1) => c.ports.serf_wan = 0,
        Some(p) => {
            c.ports.serf_wan = u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                ConfigError(format!(
                    "-serf-wan-port {p}: use a port 1-65535, or -1 to turn the WAN pool off"
                ))
            })?
        }
    }
    match a.dns_port {
        None => {}
        Some(-1) => c.ports.dns = 0,
        Some(p) => {
            c.ports.dns = u16::try_from(p).ok().filter(|p| *p > 0).ok_or_else(|| {
                ConfigError(format!(
                    "-dns-port {p}: use a port 1-65535, or -1 to turn DNS off"
                ))
            })?
        }
    }
    let domain = |flag: &str, d: &str| {
        crate::agent::config::parse_domain(d).map_err(|e| ConfigError(format!("{flag}: {e}")))
    };
    if let Some(d) = &a.domain {
        c.dns.domain = domain("-domain", d)?;
    }
    if let Some(d) = &a.alt_domain {
        c.dns.alt_domain = Some(domain("-alt-domain", d)?);
    }
    if !a.recursors.is_empty() {
        c.dns.recursors = a
            .recursors
            .iter()
            .map(|r| crate::agent::config::parse_recursor(r).map_err(ConfigError))
            .collect::<Result<_, _>>()?;
    }
    if a.server {
        c.server = true;
    }
    if let Some(v) = a.bootstrap_expect {
        c.bootstrap_expect = v;
    }
    if a.bootstrap {
        c.bootstrap_expect = 1;
    }
    if let Some(v) = a.server_port {
        c.ports.server = v;
    }
    if let Some(v) = a.raft_multiplier {
        c.raft_multiplier = v;
    }
    if !a.join.is_empty() {
        c.start_join = a.join.clone();
    }
    if !a.retry_join.is_empty() {
        c.retry_join = a.retry_join.clone();
    }
    if !a.join_wan.is_empty() {
        c.start_join_wan = a.join_wan.clone();
    }
    if !a.retry_join_wan.is_empty() {
        c.retry_join_wan = a.retry_join_wan.clone();
    }
    if let Some(k) = &a.encrypt {
        c.encrypt = Some(k.clone());
    }
    if let Some(v) = &a.retry_interval {
        c.retry_interval = parse_duration(v).map_err(|e| flag("retry-interval", e))?;
    }
    if let Some(v) = a.retry_max {
        c.retry_max = v;
    }
    if let Some(v) = &a.log_level {
        c.log_level = v.clone();
    }
    c.enable_script_checks |= a.enable_script_checks;
    c.enable_local_script_checks |= a.enable_local_script_checks;
    for kv in &a.node_meta {
        let (k, v) = kv
            .split_once(':')
            .ok_or_else(|| flag("node-meta", format!("{kv:?} is not key:value")))?;
        c.node_meta.insert(k.to_string(), v.to_string());
    }
    c.validate()?;
    Ok(c)
}

async fn run_agent(a: AgentArgs) -> anyhow::Result<()> {
    let mut config = agent_config(&a)?;
    init_logging(&config.log_level)?;
    let env = TokioEnv::new();
    if a.secure {
        secure_start(&env, &mut config, a.join_token.as_deref()).await?;
    } else if a.join_token.is_some() {
        anyhow::bail!("-join-token joins a -secure cluster: add -secure");
    }
    let leave_on_terminate = config.leave_on_terminate;
    let args = std::sync::Arc::new(a);
    let reloader: crate::agent::Reloader = {
        let args = args.clone();
        std::sync::Arc::new(move || {
            let mut c = agent_config(&args)?;
            if args.secure {
                crate::agent::secure::apply(&mut c).map_err(|e| ConfigError(e.to_string()))?;
            }
            Ok(c)
        })
    };
    let mut agent = Agent::start_reloadable(env.clone(), config, reloader).await?;
    enum Why {
        Interrupt,
        Terminate,
        Api,
        Failed(crate::agent::AgentError),
    }
    let mut hangups = hangups();
    let failed = agent.failed();
    tokio::pin!(failed);
    let why = loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break Why::Interrupt,
            _ = terminate() => break Why::Terminate,
            _ = agent.stop_requested() => break Why::Api,
            e = &mut failed => break Why::Failed(e),
            Some(()) = hangups.recv() => {
                if let Err(e) = agent.reload() {
                    tracing::error!("reload failed, nothing was changed: {e}");
                }
            }
        }
    };
    // A second signal while leaving stops at once.
    env.spawn(async {
        let _ = tokio::signal::ctrl_c().await;
        eprintln!("second interrupt: stopping without finishing the leave");
        std::process::exit(1);
    })
    .detach();
    match why {
        // Without a leave: the cluster should see it fail, and the
        // supervisor restarts it.
        Why::Failed(e) => {
            agent.shutdown().await;
            return Err(e.into());
        }
        Why::Terminate if !leave_on_terminate => {
            tracing::info!("terminating without leaving (leave_on_terminate is false)");
            agent.shutdown().await;
        }
        _ => agent.leave().await?,
    }
    Ok(())
}

/// `-secure`: the agent's secure material made, bought with the join
/// token (`@FILE`: read from FILE) or found, and what to do next said.
async fn secure_start(
    env: &TokioEnv,
    config: &mut AgentConfig,
    join_token: Option<&str>,
) -> anyhow::Result<()> {
    use crate::agent::secure::{prepare, SecureDir, Started};
    let token = match join_token {
        Some(t) => Some(match t.strip_prefix('@') {
            Some(file) => std::fs::read_to_string(file)
                .map_err(|e| anyhow::anyhow!("-join-token @{file}: {e}"))?,
            None => t.to_string(),
        }),
        None => None,
    };
    let started = prepare(env, config, token.as_deref()).await?;
    let dir = config.data_dir.as_deref().map(SecureDir::new);
    match (started, dir) {
        (Started::Bootstrapped, Some(dir)) => eprintln!(
            "cairn: made this cluster's gossip key, agent CA and bootstrap token in {}.\n\
             The bootstrap (management) token is in {}.\n\
             Let another agent join: CONSUL_HTTP_TOKEN_FILE={} cairn acl join-token create [-server]\n\
             and start it with: cairn agent -secure -data-dir <dir> -join-token <token>",
            dir.bootstrap_token_file()
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            dir.bootstrap_token_file().display(),
            dir.bootstrap_token_file().display(),
        ),
        (Started::Joined, _) => eprintln!("cairn: admitted to the cluster by the join token"),
        _ => {}
    }
    Ok(())
}

#[cfg(unix)]
async fn terminate() {
    match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(mut s) => {
            s.recv().await;
        }
        Err(_) => std::future::pending().await,
    }
}

/// SIGHUP, Consul's "reload the configuration".
fn hangups() -> tokio::sync::mpsc::Receiver<()> {
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    #[cfg(unix)]
    if let Ok(mut s) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                let _ = tx.try_send(());
            }
        });
    }
    #[cfg(not(unix))]
    drop(tx);
    rx
}

#[cfg(not(unix))]
async fn terminate() {
    std::future::pending().await
}

fn init_logging(level: &str) -> anyhow::Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let level = crate::agent::config::tracing_level(level)?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        // openraft narrates every step at info; its warnings are what matter.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},openraft=warn")));
    // Each layer filters for itself: stderr at the configured level, the
    // monitors (`/v1/agent/monitor`) at whatever level they ask for.
    let stderr = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(stderr)
        .with(crate::telemetry::monitor::install())
        .try_init()
        .map_err(|e| anyhow::anyhow!("cannot set up logging: {e}"))
}

async fn run_join(j: JoinArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &j.http.addr()).await?;
    let mut joined = 0;
    for a in &j.addresses {
        let path = format!("/v1/agent/join/{}", percent_encode(a));
        match client::request(&env, addr, "PUT", &path).await {
            Ok(_) => joined += 1,
            Err(e) => eprintln!("error joining {a}: {e}"),
        }
    }
    if joined == 0 {
        anyhow::bail!("could not join any of {:?}", j.addresses);
    }
    println!("Successfully joined cluster by contacting {joined} nodes.");
    Ok(())
}

async fn run_rtt(r: RttArgs) -> anyhow::Result<()> {
    use crate::api::ApiNodeCoord;
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &r.http.addr()).await?;
    if r.datacenters {
        let Some(to) = &r.node_b else {
            anyhow::bail!(
                "-datacenters needs two datacenters, like: cairn rtt -datacenters dc1 dc2"
            );
        };
        let q: String = form_urlencoded::Serializer::new(String::new())
            .append_pair("source", &r.node_a)
            .append_pair("destination", to)
            .append_pair("nodes", if r.all_nodes { "all" } else { "servers" })
            .finish();
        let p: serde_json::Value =
            client::get_json(&env, addr, &format!("/v1/coordinate/rtt?{q}")).await?;
        let over = if r.all_nodes {
            "node pairs (LAN and WAN coordinates)"
        } else {
            "server pairs (WAN coordinates)"
        };
        println!(
            "Estimated {} <-> {to} rtt over {} {over}: p50 {:.3} ms, p90 {:.3} ms, p99 {:.3} ms (min {:.3}, max {:.3})",
            r.node_a, p["Pairs"], p["P50Ms"].as_f64().unwrap_or(f64::NAN),
            p["P90Ms"].as_f64().unwrap_or(f64::NAN), p["P99Ms"].as_f64().unwrap_or(f64::NAN),
            p["MinMs"].as_f64().unwrap_or(f64::NAN), p["MaxMs"].as_f64().unwrap_or(f64::NAN),
        );
        return Ok(());
    }
    let node_b = match r.node_b {
        Some(b) => b,
        None => {
            let me: serde_json::Value = client::get_json(&env, addr, "/v1/agent/self").await?;
            let name = me["Config"]["NodeName"]
                .as_str()
                .ok_or_else(|| anyhow::anyhow!("the agent did not say its node name"))?;
            if r.wan {
                format!(
                    "{name}.{}",
                    me["Config"]["Datacenter"].as_str().unwrap_or_default()
                )
            } else {
                name.to_string()
            }
        }
    };
    let coords: Vec<ApiNodeCoord> = if r.wan {
        let dcs: Vec<crate::api::ApiDcCoords> =
            client::get_json(&env, addr, "/v1/coordinate/datacenters").await?;
        // The API names servers as the catalog does; `-wan` takes
        // `<node>.<dc>`, as Consul's does.
        dcs.into_iter()
            .flat_map(|d| {
                let dc = d.datacenter;
                d.coordinates.into_iter().map(move |mut c| {
                    c.node = format!("{}.{dc}", c.node);
                    c
                })
            })
            .collect()
    } else {
        client::get_json(&env, addr, "/v1/coordinate/nodes").await?
    };
    let find = |n: &str| {
        coords
            .iter()
            .find(|c| c.node == n)
            .map(|c| crate::coordinate::Coordinate::from(c.coord.clone()))
            .ok_or_else(|| anyhow::anyhow!("could not find a coordinate for node {n:?}"))
    };
    let (a, b) = (find(&r.node_a)?, find(&node_b)?);
    if !a.is_compatible_with(&b) {
        anyhow::bail!(
            "the coordinates of {} and {node_b} have different dimensions",
            r.node_a
        );
    }
    let rtt = a.distance_to(&b);
    println!(
        "Estimated {} <-> {node_b} rtt: {:.3} ms (using {} coordinates)",
        r.node_a,
        rtt.as_secs_f64() * 1000.0,
        if r.wan { "WAN" } else { "LAN" }
    );
    Ok(())
}

/// PUTs `path` to the agent (no body); the answer is not needed.
async fn put_to_agent(h: &HttpArgs, path: &str) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &h.addr()).await?;
    client::request(&env, addr, "PUT", path).await?;
    Ok(())
}

/// `cairn info`: the sections of `/v1/agent/self`'s `Stats`, as Consul
/// prints them.
async fn run_info(h: HttpArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &h.addr()).await?;
    let me: serde_json::Value = client::get_json(&env, addr, "/v1/agent/self").await?;
    let Some(stats) = me["Stats"].as_object() else {
        anyhow::bail!("the agent's /v1/agent/self has no Stats");
    };
    for (section, values) in stats {
        println!("{section}:");
        for (k, v) in values.as_object().into_iter().flatten() {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            println!("\t{k} = {v}");
        }
    }
    Ok(())
}

async fn run_leave(h: HttpArgs) -> anyhow::Result<()> {
    put_to_agent(&h, "/v1/agent/leave").await?;
    println!("Graceful leave complete");
    Ok(())
}

#[derive(Args, Debug)]
struct ForceLeaveArgs {
    /// The failed node's name.
    node: String,
    #[command(flatten)]
    http: HttpArgs,
}

async fn run_force_leave(f: ForceLeaveArgs) -> anyhow::Result<()> {
    let path = format!("/v1/agent/force-leave/{}", percent_encode(&f.node));
    put_to_agent(&f.http, &path).await
}

async fn run_reload(h: HttpArgs) -> anyhow::Result<()> {
    put_to_agent(&h, "/v1/agent/reload").await?;
    println!("Configuration reload triggered");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(v: &[&str]) -> Vec<OsString> {
        v.iter().map(OsString::from).collect()
    }

    #[test]
    fn single_dash_flags_become_long_flags() {
        let got = normalize_args(os(&[
            "cairn", "agent", "-dev", "-node=a", "-join", "x", "--bind", "1.2.3.4", "-q",
        ]));
        assert_eq!(
            got,
            os(&["cairn", "agent", "--dev", "--node=a", "--join", "x", "--bind", "1.2.3.4", "-q"])
        );
        let got = normalize_args(os(&[
            "cairn",
            "members",
            "-detailed",
            "-http-addr=127.0.0.1:1",
        ]));
        assert_eq!(
            got,
            os(&["cairn", "members", "--detailed", "--http-addr=127.0.0.1:1"])
        );
    }

    #[test]
    fn a_child_commands_flags_are_left_alone() {
        let got = normalize_args(os(&[
            "cairn",
            "lock",
            "-verbose",
            "-n",
            "2",
            "-http-addr",
            "x",
            "pfx",
            "ls",
            "-verbose",
        ]));
        assert_eq!(
            got,
            os(&[
                "cairn",
                "lock",
                "--verbose",
                "-n",
                "2",
                "--http-addr",
                "x",
                "pfx",
                "ls",
                "-verbose"
            ])
        );
        let cli = Cli::try_parse_from(got).unwrap();
        assert!(matches!(cli.cmd, Cmd::Lock(_)));
        let got = normalize_args(os(&["cairn", "watch", "-type=nodes", "h.sh", "-type=x"]));
        assert_eq!(
            got,
            os(&["cairn", "watch", "--type=nodes", "h.sh", "-type=x"])
        );
    }

    #[test]
    fn flags_override_config_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.json");
        std::fs::write(&f, r#"{"node_name": "from-file", "datacenter": "east", "data_dir": "/tmp/x", "bind_addr": "10.0.0.1"}"#).unwrap();
        let cli = Cli::try_parse_from(normalize_args(os(&[
            "cairn",
            "agent",
            &format!("-config-file={}", f.display()),
            "-node=from-flag",
            "-node-meta=rack:r1",
        ])))
        .unwrap();
        let Cmd::Agent(a) = cli.cmd else { panic!() };
        let c = agent_config(&a).unwrap();
        assert_eq!(c.node_name, "from-flag");
        assert_eq!(c.datacenter, "east");
        assert_eq!(c.node_meta["rack"], "r1");
        let bad = AgentArgs {
            node_meta: vec!["nocolon".into()],
            dev: true,
            ..Default::default()
        };
        assert!(agent_config(&bad).unwrap_err().0.contains("-node-meta"));
    }

    #[test]
    fn consuls_agent_flags_cairn_lacks_start_the_agent() {
        let (args, consul_only) = consul_only_flags(normalize_args(os(&[
            "cairn",
            "agent",
            "-dev",
            "-ui",
            "-grpc-port=8502",
            "-log-file",
            "/var/log/consul/",
            "-hcl",
            "x = 1",
            "-node=a",
        ])));
        let cli = Cli::try_parse_from(args).unwrap();
        let Cmd::Agent(mut a) = cli.cmd else { panic!() };
        assert_eq!(
            consul_only,
            [
                ("ui".to_string(), None),
                ("grpc-port".to_string(), Some("8502".to_string())),
                ("log-file".to_string(), Some("/var/log/consul/".to_string())),
                ("hcl".to_string(), Some("x = 1".to_string())),
            ]
        );
        a.consul_only = consul_only;
        let c = agent_config(&a).unwrap();
        assert_eq!(c.node_name, "a");
        assert_eq!(
            c.ignored,
            ["ui_config.enabled", "ports.grpc", "log_file", "-hcl"]
        );
        // A flag for a key cairn reads sets it.
        let mut c = AgentConfig::default();
        c.merge_flag("https-port", Some("8501")).unwrap();
        assert_eq!(c.ports.https, 8501);
        // A protection is refused from the command line too.
        let a = AgentArgs {
            dev: true,
            consul_only: vec![("allow-write-http-from".into(), Some("127.0.0.0/8".into()))],
            ..Default::default()
        };
        assert!(agent_config(&a)
            .unwrap_err()
            .0
            .contains("allow_write_http_from"));
    }
}

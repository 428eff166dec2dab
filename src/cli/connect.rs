//! `cairn connect proxy` (Consul's built-in proxy, with its flags) and
//! `cairn intention create|get|delete|check|list`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::json;

use super::http::HttpArgs;
use crate::connect::intention::Intention;
use crate::connect::proxy::{Observed, Proxy, ProxyConfig, UpstreamConfig, OBSERVED_PREFIX};
use crate::connect::suggest::suggest;
use crate::env::TokioEnv;
use crate::http_client as client;
use crate::state::ServiceProxy;

/// `cairn connect`.
#[derive(Args, Debug)]
pub struct ConnectArgs {
    #[command(subcommand)]
    cmd: ConnectCmd,
}

#[derive(Subcommand, Debug)]
enum ConnectCmd {
    /// Run the built-in mutual-TLS proxy for a service.
    Proxy(Box<ProxyArgs>),
}

#[derive(Args, Debug)]
struct ProxyArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Act as the sidecar of this (registered) service instance: the
    /// public port, the application's address and the upstreams come from
    /// its `connect-proxy` registration.
    #[arg(long = "sidecar-for")]
    sidecar_for: Option<String>,
    /// The service this proxy stands for.
    #[arg(long = "service")]
    service: Option<String>,
    /// The local application inbound connections go to.
    #[arg(long = "service-addr")]
    service_addr: Option<String>,
    /// The public mutual-TLS listener.
    #[arg(long = "listen")]
    listen: Option<String>,
    /// An upstream, `DESTINATION:LOCAL_PORT` (repeatable).
    #[arg(long = "upstream")]
    upstreams: Vec<String>,
    /// Register the proxy in the catalog (kind `connect-proxy`) while it
    /// runs.
    #[arg(long = "register")]
    register: bool,
    /// The ID to register it under (default `<service>-proxy`).
    #[arg(long = "register-id")]
    register_id: Option<String>,
    /// How long open connections may take to finish at shutdown.
    #[arg(long = "drain", default_value = "10s", value_parser = parse_duration)]
    drain: Duration,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::format::parse_duration(s)
}

fn socket(what: &str, s: &str) -> anyhow::Result<SocketAddr> {
    s.parse()
        .map_err(|_| anyhow!("{what} {s:?}: expected IP:PORT, such as 127.0.0.1:8080"))
}

/// `DEST:PORT` (or `DEST:IP:PORT`).
fn upstream(s: &str) -> anyhow::Result<UpstreamConfig> {
    let bad = || anyhow!("-upstream {s:?}: expected DESTINATION:LOCAL_PORT, such as db:9191");
    let (dest, bind) = s.split_once(':').ok_or_else(bad)?;
    if dest.is_empty() {
        return Err(bad());
    }
    let local_bind = match bind.parse::<u16>() {
        Ok(port) => SocketAddr::from(([127, 0, 0, 1], port)),
        Err(_) => bind.parse().map_err(|_| bad())?,
    };
    Ok(UpstreamConfig {
        destination: dest.to_string(),
        local_bind,
    })
}

/// The agent's registration of a sidecar for `target` (a service ID).
async fn sidecar_config(
    env: &TokioEnv,
    agent: SocketAddr,
    target: &str,
) -> anyhow::Result<ProxyConfig> {
    let services: BTreeMap<String, serde_json::Value> =
        client::get_json(env, agent, "/v1/agent/services").await?;
    let found = services
        .values()
        .find(|s| s["Kind"] == "connect-proxy" && s["Proxy"]["DestinationServiceID"] == target);
    let Some(reg) = found else {
        bail!(
            "no connect-proxy registered for service ID {target:?} on this agent; register the \
             service with Connect.SidecarService, or a connect-proxy with \
             Proxy.DestinationServiceID = {target:?}"
        );
    };
    let proxy: ServiceProxy =
        serde_json::from_value(reg["Proxy"].clone()).context("the sidecar's Proxy settings")?;
    let port = reg["Port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(0);
    if port == 0 {
        bail!("the sidecar registration for {target:?} has no port");
    }
    let host = reg["Address"]
        .as_str()
        .filter(|a| !a.is_empty())
        .unwrap_or("0.0.0.0");
    let public = socket("the sidecar's address", &format!("{host}:{port}"))?;
    let local_host = if proxy.local_service_address.is_empty() {
        "127.0.0.1"
    } else {
        &proxy.local_service_address
    };
    let app_port = if proxy.local_service_port != 0 {
        proxy.local_service_port
    } else {
        services
            .get(target)
            .and_then(|s| s["Port"].as_u64())
            .and_then(|p| u16::try_from(p).ok())
            .unwrap_or(0)
    };
    let app = socket("the application", &format!("{local_host}:{app_port}"))?;
    let upstreams = proxy
        .upstreams
        .iter()
        .map(|u| UpstreamConfig {
            destination: u.destination_name.clone(),
            local_bind: SocketAddr::new(
                u.local_bind_address
                    .parse()
                    .unwrap_or([127, 0, 0, 1].into()),
                u.local_bind_port,
            ),
        })
        .collect();
    Ok(ProxyConfig {
        service: proxy.destination_service_name,
        agent,
        inbound: Some((public, app)),
        upstreams,
    })
}

async fn run_proxy(a: ProxyArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let agent = client::parse_addr(&env, &a.http.addr()).await?;
    let cfg = match (&a.sidecar_for, &a.service) {
        (Some(_), Some(_)) => bail!("give -sidecar-for or -service, not both"),
        (None, None) => bail!("-service NAME (or -sidecar-for ID) is required"),
        (Some(target), None) => sidecar_config(&env, agent, target).await?,
        (None, Some(service)) => {
            let inbound = match (&a.listen, &a.service_addr) {
                (Some(l), Some(app)) => Some((socket("-listen", l)?, socket("-service-addr", app)?)),
                (None, None) => None,
                _ => bail!("-listen and -service-addr go together: one receives, the other is where it sends"),
            };
            ProxyConfig {
                service: service.clone(),
                agent,
                inbound,
                upstreams: a
                    .upstreams
                    .iter()
                    .map(|u| upstream(u))
                    .collect::<Result<_, _>>()?,
            }
        }
    };
    let service = cfg.service.clone();
    let proxy = Proxy::start(env.clone(), cfg).await?;
    if let Some(addr) = proxy.public_addr {
        println!("==> Public listener for {service} on {addr} (mutual TLS)");
    }
    for (u, addr) in a.upstreams.iter().zip(&proxy.upstream_addrs) {
        println!("==> Upstream {u} listening on {addr}");
    }
    let registered = match (a.register, proxy.public_addr) {
        (true, Some(addr)) => {
            let id = a
                .register_id
                .clone()
                .unwrap_or_else(|| format!("{service}-proxy"));
            let body = json!({
                "ID": id,
                "Name": format!("{service}-proxy"),
                "Kind": "connect-proxy",
                "Address": addr.ip().to_string(),
                "Port": addr.port(),
                "Proxy": { "DestinationServiceName": service },
                "Check": { "Name": "Proxy public listener", "TCP": addr.to_string(), "Interval": "10s" },
            });
            client::request_with(
                &env,
                agent,
                "PUT",
                "/v1/agent/service/register",
                Bytes::from(body.to_string()),
            )
            .await?;
            println!("==> Registered {id} (connect-proxy for {service})");
            Some(id)
        }
        (true, None) => bail!("-register needs a public listener (-listen)"),
        _ => None,
    };
    wait_for_signal().await;
    println!(
        "==> Shutting down: draining connections for up to {:?}",
        a.drain
    );
    if let Some(id) = registered {
        let path = format!("/v1/agent/service/deregister/{id}");
        if let Err(e) = client::request_with(&env, agent, "PUT", &path, Bytes::new()).await {
            eprintln!("warning: could not deregister {id}: {e}");
        }
    }
    let left = proxy.shutdown(a.drain).await;
    if left > 0 {
        println!("==> {left} connection(s) still open at the end of the drain; closed");
    }
    Ok(())
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// Runs `cairn connect ...`.
pub async fn run(args: ConnectArgs) -> anyhow::Result<()> {
    match args.cmd {
        ConnectCmd::Proxy(p) => run_proxy(*p).await,
    }
}

/// `cairn intention`.
#[derive(Args, Debug)]
pub struct IntentionArgs {
    #[command(subcommand)]
    cmd: IntentionCmd,
}

#[derive(Subcommand, Debug)]
enum IntentionCmd {
    /// Create an intention SRC -> DST (allow unless -deny).
    Create(CreateArgs),
    /// Show the intention SRC -> DST.
    Get(PairArgs),
    /// Delete the intention SRC -> DST.
    Delete(PairArgs),
    /// Would SRC be allowed to connect to DST? Exit status 0 if so, 2 if not.
    Check(PairArgs),
    /// List every intention, deciding-first.
    List(ListArgs),
    /// Propose least-privilege intentions from the traffic the proxies
    /// observed: an allow for each pair seen working, and a default deny.
    Suggest(SuggestArgs),
}

#[derive(Args, Debug)]
struct SuggestArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Create the proposed intentions (allows first, then the deny).
    #[arg(long = "apply")]
    apply: bool,
    /// Print the proposal as JSON.
    #[arg(long = "json")]
    json: bool,
}

#[derive(Args, Debug)]
struct CreateArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Deny instead of allow.
    #[arg(long = "deny")]
    deny: bool,
    /// Allow (the default).
    #[arg(long = "allow")]
    allow: bool,
    /// Replace an existing intention for the pair instead of failing.
    #[arg(long = "replace")]
    replace: bool,
    /// A description.
    #[arg(long = "description", default_value = "")]
    description: String,
    /// Metadata as key=value (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
    /// Source service (or `*`).
    source: String,
    /// Destination service (or `*`).
    destination: String,
}

#[derive(Args, Debug)]
struct PairArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Source service (or `*`).
    source: String,
    /// Destination service (or `*`).
    destination: String,
}

#[derive(Args, Debug)]
struct ListArgs {
    #[command(flatten)]
    http: HttpArgs,
}

fn exact(src: &str, dst: &str) -> String {
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("source", src)
        .append_pair("destination", dst)
        .finish();
    format!("/v1/connect/intentions/exact?{q}")
}

fn print_intentions(list: &[Intention]) {
    let w = list
        .iter()
        .map(|i| i.source_name.len())
        .max()
        .unwrap_or(0)
        .max(6);
    let d = list
        .iter()
        .map(|i| i.destination_name.len())
        .max()
        .unwrap_or(0)
        .max(11);
    println!(
        "{:<w$}  {:<6}  {:<d$}  Precedence",
        "Source", "Action", "Destination"
    );
    for i in list {
        let action = format!("{:?}", i.action).to_lowercase();
        println!(
            "{:<w$}  {:<6}  {:<d$}  {}",
            i.source_name, action, i.destination_name, i.precedence
        );
    }
}

/// Runs `cairn intention ...`; the exit status for `check`.
pub async fn run_intention(args: IntentionArgs) -> anyhow::Result<std::process::ExitCode> {
    let env = TokioEnv::new();
    match args.cmd {
        IntentionCmd::Create(a) => {
            if a.deny && a.allow {
                bail!("give -allow or -deny, not both");
            }
            let agent = client::parse_addr(&env, &a.http.addr()).await?;
            let path = exact(&a.source, &a.destination);
            if !a.replace && client::request(&env, agent, "GET", &path).await.is_ok() {
                bail!(
                    "an intention {} => {} exists already; use -replace to change it",
                    a.source,
                    a.destination
                );
            }
            let meta = super::services::parse_meta(&a.meta)?;
            let body = json!({
                "Action": if a.deny { "deny" } else { "allow" },
                "Description": a.description,
                "Meta": meta,
            });
            client::request_with(&env, agent, "PUT", &path, Bytes::from(body.to_string())).await?;
            println!(
                "Created: {} => {} ({})",
                a.source,
                a.destination,
                if a.deny { "deny" } else { "allow" }
            );
        }
        IntentionCmd::Get(a) => {
            let agent = client::parse_addr(&env, &a.http.addr()).await?;
            let i: Intention =
                client::get_json(&env, agent, &exact(&a.source, &a.destination)).await?;
            print_intentions(&[i]);
        }
        IntentionCmd::Delete(a) => {
            let agent = client::parse_addr(&env, &a.http.addr()).await?;
            client::request(&env, agent, "DELETE", &exact(&a.source, &a.destination)).await?;
            println!("Intention deleted.");
        }
        IntentionCmd::Check(a) => {
            let agent = client::parse_addr(&env, &a.http.addr()).await?;
            let q: String = form_urlencoded::Serializer::new(String::new())
                .append_pair("source", &a.source)
                .append_pair("destination", &a.destination)
                .finish();
            let v: serde_json::Value =
                client::get_json(&env, agent, &format!("/v1/connect/intentions/check?{q}")).await?;
            if v["Allowed"] == true {
                println!("Allowed");
            } else {
                println!("Denied");
                return Ok(std::process::ExitCode::from(2));
            }
        }
        IntentionCmd::Suggest(a) => run_suggest(&env, a).await?,
        IntentionCmd::List(a) => {
            let agent = client::parse_addr(&env, &a.http.addr()).await?;
            let list: Vec<Intention> =
                client::get_json(&env, agent, "/v1/connect/intentions").await?;
            print_intentions(&list);
        }
    }
    Ok(std::process::ExitCode::SUCCESS)
}

/// What the proxies observed, summed over their instances.
async fn observed(
    env: &TokioEnv,
    agent: SocketAddr,
) -> anyhow::Result<BTreeMap<(String, String), Observed>> {
    let path = format!("/v1/kv/{OBSERVED_PREFIX}?recurse");
    let entries: Vec<serde_json::Value> = match client::get_json(env, agent, &path).await {
        Ok(v) => v,
        Err(client::ClientError::Status { status: 404, .. }) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut out: BTreeMap<(String, String), Observed> = BTreeMap::new();
    for e in entries {
        let key = e["Key"].as_str().unwrap_or_default();
        let mut parts = key.trim_start_matches(OBSERVED_PREFIX).split('/');
        let (Some(dst), Some(src)) = (parts.next(), parts.next()) else {
            continue;
        };
        let raw = e["Value"].as_str().unwrap_or_default();
        let Ok(bytes) = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, raw)
        else {
            continue;
        };
        let Ok(o) = serde_json::from_slice::<Observed>(&bytes) else {
            continue;
        };
        let sum = out.entry((src.to_string(), dst.to_string())).or_default();
        sum.allowed += o.allowed;
        sum.denied += o.denied;
    }
    Ok(out)
}

/// The Connect-enabled services: those some proxy stands in front of.
async fn connect_services(env: &TokioEnv, agent: SocketAddr) -> anyhow::Result<BTreeSet<String>> {
    let names: BTreeMap<String, serde_json::Value> =
        client::get_json(env, agent, "/v1/catalog/services").await?;
    let mut out = BTreeSet::new();
    for name in names.keys() {
        let path = format!("/v1/catalog/service/{name}");
        let instances: Vec<serde_json::Value> = client::get_json(env, agent, &path).await?;
        for i in instances {
            if let Some(d) = i["ServiceProxy"]["DestinationServiceName"].as_str() {
                out.insert(d.to_string());
            }
        }
    }
    Ok(out)
}

async fn run_suggest(env: &TokioEnv, a: SuggestArgs) -> anyhow::Result<()> {
    let agent = client::parse_addr(env, &a.http.addr()).await?;
    let observed = observed(env, agent).await?;
    let current: Vec<Intention> = client::get_json(env, agent, "/v1/connect/intentions").await?;
    let mut services = connect_services(env, agent).await?;
    services.extend(observed.keys().flat_map(|(s, d)| [s.clone(), d.clone()]));
    let s = suggest(&observed, &current, &services, true);
    if a.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        println!("Observed traffic (source => destination: allowed / refused connections):");
        if observed.is_empty() {
            println!("  (none yet: proxies record what they see every few seconds)");
        }
        for ((src, dst), o) in &observed {
            println!("  {src} => {dst}: {} / {}", o.allowed, o.denied);
        }
        println!("Proposed intentions:");
        for (src, dst) in &s.allow {
            println!("  allow {src} => {dst}");
        }
        if s.default_deny {
            println!("  deny  * => *   (default deny)");
        }
        if s.allow.is_empty() && !s.default_deny {
            println!("  (nothing to change)");
        }
        if !s.cut.is_empty() {
            println!("Would cut (allowed today, never observed):");
            for (src, dst) in &s.cut {
                println!("  {src} => {dst}");
            }
        }
        for (src, dst, n) in &s.refused {
            println!("Refused while observed, stays refused: {src} => {dst} ({n} connections)");
        }
        for (src, dst) in &s.unused_allows {
            println!("Allow intention no observed traffic used: {src} => {dst}");
        }
    }
    if a.apply {
        let mut todo: Vec<(&str, &str, &str)> = s
            .allow
            .iter()
            .map(|(src, dst)| (src.as_str(), dst.as_str(), "allow"))
            .collect();
        // The deny last, so no observed pair is refused in between.
        if s.default_deny {
            todo.push(("*", "*", "deny"));
        }
        for (src, dst, action) in todo {
            let body = json!({ "Action": action, "Description": "cairn intention suggest" });
            let path = exact(src, dst);
            client::request_with(env, agent, "PUT", &path, Bytes::from(body.to_string())).await?;
        }
        println!(
            "Applied {} intention(s).",
            s.allow.len() + usize::from(s.default_deny)
        );
    } else if !s.allow.is_empty() || s.default_deny {
        println!("Run with -apply to create them.");
    }
    Ok(())
}

//! `cairn services register|deregister`, as `consul services` does it:
//! a service from flags, or every service defined in the given files (the
//! agent's own config format, JSON or HCL).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;
use clap::{Args, Subcommand};

use super::http::HttpArgs;
use crate::agent::definition::ServiceDef;
use crate::agent::AgentConfig;
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn services`.
#[derive(Args, Debug)]
pub struct ServicesArgs {
    #[command(subcommand)]
    cmd: ServicesCmd,
}

#[derive(Subcommand, Debug)]
enum ServicesCmd {
    /// Register a service with the local agent, from flags or from files.
    Register(RegisterArgs),
    /// Deregister a service from the local agent, by ID or as the files
    /// define it.
    Deregister(DeregisterArgs),
}

#[derive(Args, Debug)]
struct RegisterArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Service name.
    #[arg(long = "name")]
    name: Option<String>,
    /// Service ID (default: the name).
    #[arg(long = "id")]
    id: Option<String>,
    /// A tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// Address, if not the node's.
    #[arg(long = "address")]
    address: Option<String>,
    /// Port.
    #[arg(long = "port")]
    port: Option<u16>,
    /// Metadata as key=value (repeatable).
    #[arg(long = "meta")]
    meta: Vec<String>,
    /// Files with `service` or `services` definitions.
    files: Vec<PathBuf>,
}

#[derive(Args, Debug)]
struct DeregisterArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// The service ID.
    #[arg(long = "id")]
    id: Option<String>,
    /// Files with `service` or `services` definitions.
    files: Vec<PathBuf>,
}

/// The service definitions in `files`, checked as the agent checks them.
fn from_files(files: &[PathBuf]) -> anyhow::Result<Vec<ServiceDef>> {
    let mut config = AgentConfig::default();
    for f in files {
        config.merge_file(f)?;
    }
    let defs: Vec<ServiceDef> = config.services.into_iter().map(|d| d.def).collect();
    if defs.is_empty() {
        anyhow::bail!(
            "no service definitions in {}: expected a \"service\" or \"services\" key",
            files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(defs)
}

/// `-meta key=value` flags as a map.
pub(super) fn parse_meta(flags: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    flags
        .iter()
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
            _ => anyhow::bail!("-meta must be key=value, not {kv:?}"),
        })
        .collect()
}

/// The service the flags describe.
fn from_flags(a: &RegisterArgs) -> anyhow::Result<ServiceDef> {
    let Some(name) = a.name.clone().filter(|n| !n.is_empty()) else {
        anyhow::bail!("give the service's -name, or files that define services");
    };
    let meta = parse_meta(&a.meta)?;
    Ok(ServiceDef {
        id: a.id.clone().unwrap_or_default(),
        name,
        tags: a.tags.clone(),
        address: a.address.clone().unwrap_or_default(),
        port: a.port.unwrap_or(0),
        meta,
        ..ServiceDef::default()
    })
}

/// Runs `cairn services ...`.
pub async fn run(args: ServicesArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    match args.cmd {
        ServicesCmd::Register(a) => {
            let defs = if a.files.is_empty() {
                vec![from_flags(&a)?]
            } else {
                if a.name.is_some() || a.id.is_some() {
                    anyhow::bail!("give either flags or files, not both");
                }
                from_files(&a.files)?
            };
            let addr = client::parse_addr(&env, &a.http.addr()).await?;
            for d in defs {
                // Checked here too, so a bad file fails before anything is sent.
                d.to_parts(true)
                    .map_err(|e| anyhow::anyhow!("service {:?}: {e}", d.name))?;
                let body = Bytes::from(serde_json::to_vec(&d)?);
                client::request_with(&env, addr, "PUT", "/v1/agent/service/register", body).await?;
                println!("Registered service: {}", d.name);
            }
        }
        ServicesCmd::Deregister(a) => {
            let ids: Vec<String> = match (&a.id, a.files.is_empty()) {
                (Some(id), true) => vec![id.clone()],
                (None, false) => from_files(&a.files)?
                    .into_iter()
                    .map(|d| if d.id.is_empty() { d.name } else { d.id })
                    .collect(),
                (Some(_), false) => anyhow::bail!("give either -id or files, not both"),
                (None, true) => {
                    anyhow::bail!("give the service's -id, or files that define services")
                }
            };
            let addr = client::parse_addr(&env, &a.http.addr()).await?;
            for id in ids {
                let path = format!(
                    "/v1/agent/service/deregister/{}",
                    super::http::percent_encode(&id)
                );
                client::request(&env, addr, "PUT", &path).await?;
                println!("Deregistered service: {id}");
            }
        }
    }
    Ok(())
}

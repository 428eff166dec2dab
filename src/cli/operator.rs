//! `cairn operator raft ...` and `cairn operator autopilot ...`, as
//! Consul's commands of those names: list the Raft peers, remove one,
//! hand leadership over, and read or change autopilot's settings.

use bytes::Bytes;
use clap::{Args, Subcommand};
use serde_json::Value;

use super::http::{percent_encode, HttpArgs};
use crate::env::TokioEnv;
use crate::http_client as client;
use crate::state::AutopilotConfig;

/// `cairn operator`.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    #[command(subcommand)]
    cmd: OperatorCmd,
}

#[derive(Subcommand, Debug)]
enum OperatorCmd {
    /// The Raft group: list-peers, remove-peer, transfer-leader.
    #[command(subcommand)]
    Raft(RaftCmd),
    /// Autopilot: get-config, set-config, state.
    #[command(subcommand)]
    Autopilot(AutopilotCmd),
}

#[derive(Subcommand, Debug)]
enum RaftCmd {
    /// List the servers of the Raft group.
    ListPeers {
        #[command(flatten)]
        http: HttpArgs,
        /// Let any server answer, not only the leader.
        #[arg(long = "stale")]
        stale: bool,
    },
    /// Remove a server from the Raft group (a failed one: the leader adds
    /// a server that is alive back).
    RemovePeer {
        #[command(flatten)]
        http: HttpArgs,
        /// The server's ID, as list-peers shows it.
        #[arg(long = "id")]
        id: Option<String>,
        /// The server's RPC address (`ip:port`).
        #[arg(long = "address")]
        address: Option<String>,
    },
    /// Hand leadership to another voter.
    TransferLeader {
        #[command(flatten)]
        http: HttpArgs,
        /// The voter to hand it to (default: the most up to date).
        #[arg(long = "id")]
        id: Option<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AutopilotCmd {
    /// Print autopilot's settings.
    GetConfig {
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Change autopilot's settings (the rest stay as they are).
    SetConfig(Box<SetConfig>),
    /// Print autopilot's view of every server.
    State {
        #[command(flatten)]
        http: HttpArgs,
    },
}

#[derive(Args, Debug)]
struct SetConfig {
    #[command(flatten)]
    http: HttpArgs,
    /// Remove failed servers once a replacement could take their place.
    #[arg(long = "cleanup-dead-servers")]
    cleanup_dead_servers: Option<bool>,
    /// A server that has not heard from the leader for longer is unhealthy.
    #[arg(long = "last-contact-threshold")]
    last_contact_threshold: Option<String>,
    /// A server this many entries behind the leader is unhealthy.
    #[arg(long = "max-trailing-logs")]
    max_trailing_logs: Option<u64>,
    /// Never clean up dead servers below this many voters.
    #[arg(long = "min-quorum")]
    min_quorum: Option<u32>,
    /// How long a server must be healthy before it counts as stable.
    #[arg(long = "server-stabilization-time")]
    server_stabilization_time: Option<String>,
}

/// Runs `cairn operator`.
pub async fn run(a: OperatorArgs) -> anyhow::Result<()> {
    match a.cmd {
        OperatorCmd::Raft(r) => raft(r).await,
        OperatorCmd::Autopilot(c) => autopilot(c).await,
    }
}

async fn raft(cmd: RaftCmd) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    match cmd {
        RaftCmd::ListPeers { http, stale } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let path = match stale {
                true => "/v1/operator/raft/configuration?stale",
                false => "/v1/operator/raft/configuration",
            };
            let config: Value = client::get_json(&env, addr, path).await?;
            let mut rows = vec![["Node", "ID", "Address", "State", "Voter", "RaftProtocol"]
                .map(String::from)
                .to_vec()];
            for s in config["Servers"].as_array().into_iter().flatten() {
                let text = |k: &str| s[k].as_str().unwrap_or_default().to_string();
                let state = if s["Leader"] == true {
                    "leader"
                } else {
                    "follower"
                };
                rows.push(vec![
                    text("Node"),
                    text("ID"),
                    text("Address"),
                    state.into(),
                    (s["Voter"] == true).to_string(),
                    text("ProtocolVersion"),
                ]);
            }
            print!("{}", super::catalog::table(&rows));
        }
        RaftCmd::RemovePeer { http, id, address } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let (query, what) = match (&id, &address) {
                (Some(id), None) => (format!("id={}", percent_encode(id)), id),
                (None, Some(a)) => (format!("address={}", percent_encode(a)), a),
                _ => anyhow::bail!("give exactly one of -id and -address"),
            };
            let path = format!("/v1/operator/raft/peer?{query}");
            client::request(&env, addr, "DELETE", &path).await?;
            println!(
                "Removed peer with {} {what}",
                query.split('=').next().unwrap_or("")
            );
        }
        RaftCmd::TransferLeader { http, id } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let path = match &id {
                Some(id) => format!(
                    "/v1/operator/raft/transfer-leader?id={}",
                    percent_encode(id)
                ),
                None => "/v1/operator/raft/transfer-leader".into(),
            };
            client::request(&env, addr, "POST", &path).await?;
            println!("Success");
        }
    }
    Ok(())
}

async fn autopilot(cmd: AutopilotCmd) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    const PATH: &str = "/v1/operator/autopilot/configuration";
    match cmd {
        AutopilotCmd::GetConfig { http } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let c: AutopilotConfig = client::get_json(&env, addr, PATH).await?;
            print!("{}", describe(&c));
        }
        AutopilotCmd::SetConfig(set) => {
            let addr = client::parse_addr(&env, &set.http.addr()).await?;
            let mut c: AutopilotConfig = client::get_json(&env, addr, PATH).await?;
            let cas = c.modify_index;
            set.apply(&mut c);
            c.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
            let body = Bytes::from(serde_json::to_vec(&c)?);
            let path = format!("{PATH}?cas={cas}");
            let done = client::request_with(&env, addr, "PUT", &path, body).await?;
            if serde_json::from_slice::<bool>(&done).unwrap_or(false) {
                println!("Configuration updated!");
            } else {
                anyhow::bail!("Configuration could not be atomically updated, please try again");
            }
        }
        AutopilotCmd::State { http } => {
            let addr = client::parse_addr(&env, &http.addr()).await?;
            let state: Value = client::get_json(&env, addr, "/v1/operator/autopilot/state").await?;
            println!("Healthy: {}", state["Healthy"]);
            println!("Failure Tolerance: {}", state["FailureTolerance"]);
            println!(
                "Optimistic Failure Tolerance: {}",
                state["OptimisticFailureTolerance"]
            );
            println!("Leader: {}", state["Leader"].as_str().unwrap_or(""));
            println!("Voters:");
            for v in state["Voters"].as_array().into_iter().flatten() {
                println!("   {}", v.as_str().unwrap_or(""));
            }
            println!("\nServers:");
            for s in state["Servers"]
                .as_object()
                .into_iter()
                .flat_map(|m| m.values())
            {
                let text = |k: &str| s[k].as_str().map_or_else(|| s[k].to_string(), String::from);
                println!("   {}", text("ID"));
                for k in [
                    "Name",
                    "Address",
                    "Status",
                    "NodeStatus",
                    "Healthy",
                    "LastContact",
                    "LastTerm",
                    "LastIndex",
                ] {
                    println!("      {k}: {}", text(k));
                }
            }
        }
    }
    Ok(())
}

impl SetConfig {
    /// Sets the fields given on the command line.
    fn apply(&self, c: &mut AutopilotConfig) {
        if let Some(v) = self.cleanup_dead_servers {
            c.cleanup_dead_servers = v;
        }
        if let Some(v) = &self.last_contact_threshold {
            c.last_contact_threshold = v.clone();
        }
        if let Some(v) = self.max_trailing_logs {
            c.max_trailing_logs = v;
        }
        if let Some(v) = self.min_quorum {
            c.min_quorum = v;
        }
        if let Some(v) = &self.server_stabilization_time {
            c.server_stabilization_time = v.clone();
        }
    }
}

/// Autopilot's settings as Consul's `get-config` prints them.
fn describe(c: &AutopilotConfig) -> String {
    format!(
        "CleanupDeadServers = {}\nLastContactThreshold = {}\nMaxTrailingLogs = {}\nMinQuorum = {}\nServerStabilizationTime = {}\nRedundancyZoneTag = {:?}\nDisableUpgradeMigration = {}\nUpgradeVersionTag = {:?}\n",
        c.cleanup_dead_servers,
        c.last_contact_threshold,
        c.max_trailing_logs,
        c.min_quorum,
        c.server_stabilization_time,
        c.redundancy_zone_tag,
        c.disable_upgrade_migration,
        c.upgrade_version_tag,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_config_prints_consul_lines() {
        let text = describe(&AutopilotConfig::default());
        assert!(text.starts_with("CleanupDeadServers = true\nLastContactThreshold = 200ms\n"));
        assert!(text.contains("RedundancyZoneTag = \"\"\n"));
    }
}

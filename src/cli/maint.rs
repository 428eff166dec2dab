//! `cairn maint` (as `consul maint`): puts the agent's node, or one of its
//! services, in maintenance (a critical `_node_maintenance` or
//! `_service_maintenance:<id>` check), takes it out again, or lists what is
//! in maintenance.

use std::collections::BTreeMap;

use clap::Args;
use serde::Deserialize;

use super::http::{percent_encode, HttpArgs};
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn maint`.
#[derive(Args, Debug)]
pub struct MaintArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Enable maintenance mode.
    #[arg(long = "enable")]
    enable: bool,
    /// Disable maintenance mode.
    #[arg(long = "disable")]
    disable: bool,
    /// Text describing the maintenance reason (with -enable).
    #[arg(long = "reason", default_value = "")]
    reason: String,
    /// The service ID to act on, instead of the whole node.
    #[arg(long = "service", default_value = "")]
    service: String,
}

/// The fields of an agent check the listing needs.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AgentCheck {
    #[serde(rename = "CheckID")]
    check_id: String,
    #[serde(default)]
    notes: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
}

/// Refuses the flag combinations Consul refuses, with its messages.
fn check(m: &MaintArgs) -> anyhow::Result<()> {
    if m.enable && m.disable {
        anyhow::bail!("Only one of -enable or -disable may be provided");
    }
    if !m.enable && !m.reason.is_empty() {
        anyhow::bail!("Reason may only be provided with -enable");
    }
    if !m.enable && !m.disable && !m.service.is_empty() {
        anyhow::bail!("Service requires either -enable or -disable");
    }
    Ok(())
}

/// The listing: the node's maintenance first, then each service's.
fn listing(node: &str, checks: &BTreeMap<String, AgentCheck>) -> String {
    let mut out = String::new();
    if let Some(c) = checks.get("_node_maintenance") {
        out += &format!("Node:\n  Name:   {node}\n  Reason: {}\n\n", c.notes);
    }
    for c in checks.values() {
        if c.check_id.starts_with("_service_maintenance:") {
            out += &format!(
                "Service:\n  ID:     {}\n  Reason: {}\n\n",
                c.service_id, c.notes
            );
        }
    }
    out
}

/// Runs `cairn maint`.
pub async fn run(m: MaintArgs) -> anyhow::Result<()> {
    check(&m)?;
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &m.http.addr()).await?;
    let me: serde_json::Value = client::get_json(&env, addr, "/v1/agent/self")
        .await
        .map_err(|e| anyhow::anyhow!("Error querying Consul agent: {e}"))?;
    if !m.enable && !m.disable {
        let node = me["Config"]["NodeName"].as_str().unwrap_or_default();
        let checks: BTreeMap<String, AgentCheck> = client::get_json(&env, addr, "/v1/agent/checks")
            .await
            .map_err(|e| anyhow::anyhow!("Error getting checks: {e}"))?;
        print!("{}", listing(node, &checks));
        return Ok(());
    }
    let (verb, state) = if m.enable {
        ("enabling", "enabled")
    } else {
        ("disabling", "disabled")
    };
    let mut q = form_urlencoded::Serializer::new(String::new());
    q.append_pair("enable", if m.enable { "true" } else { "false" });
    if !m.reason.is_empty() {
        q.append_pair("reason", &m.reason);
    }
    let q = q.finish();
    let (path, what) = if m.service.is_empty() {
        (format!("/v1/agent/maintenance?{q}"), "node")
    } else {
        (
            format!(
                "/v1/agent/service/maintenance/{}?{q}",
                percent_encode(&m.service)
            ),
            "service",
        )
    };
    client::request(&env, addr, "PUT", &path)
        .await
        .map_err(|e| anyhow::anyhow!("Error {verb} {what} maintenance: {e}"))?;
    if m.service.is_empty() {
        println!("Node maintenance is now {state}");
    } else {
        println!("Service maintenance is now {state} for {:?}", m.service);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct T {
        #[command(flatten)]
        m: MaintArgs,
    }

    fn maint(v: &[&str]) -> MaintArgs {
        let args = std::iter::once("maint").chain(v.iter().copied());
        <T as clap::Parser>::try_parse_from(args).unwrap().m
    }

    #[test]
    fn consuls_flag_rules_and_listing() {
        let e = |v: &[&str]| check(&maint(v)).unwrap_err().to_string();
        assert!(e(&["--enable", "--disable"]).contains("Only one of"));
        assert!(e(&["--disable", "--reason=r"]).contains("only be provided with -enable"));
        assert!(e(&["--service=web"]).contains("requires either"));
        check(&maint(&["--enable", "--reason=r", "--service=web"])).unwrap();
        let checks: BTreeMap<String, AgentCheck> = serde_json::from_str(
            r#"{"_service_maintenance:web": {"CheckID": "_service_maintenance:web", "Notes": "deploy", "ServiceID": "web"},
                "_node_maintenance": {"CheckID": "_node_maintenance", "Notes": "upgrade"},
                "serfHealth": {"CheckID": "serfHealth"}}"#,
        )
        .unwrap();
        assert_eq!(
            listing("n1", &checks),
            "Node:\n  Name:   n1\n  Reason: upgrade\n\nService:\n  ID:     web\n  Reason: deploy\n\n"
        );
    }
}

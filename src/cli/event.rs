//! `cairn event` (as `consul event`): fires a user event through the local
//! agent, which gossips it to the datacenter.

use bytes::Bytes;
use clap::Args;
use serde::Deserialize;

use super::http::{percent_encode, HttpArgs};
use crate::env::TokioEnv;
use crate::http_client as client;

/// `cairn event`.
#[derive(Args, Debug)]
pub struct EventArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// Name of the event.
    #[arg(long = "name", default_value = "")]
    name: String,
    /// Regular expression the node names must match.
    #[arg(long = "node", default_value = "")]
    node: String,
    /// Regular expression the service instances must match.
    #[arg(long = "service", default_value = "")]
    service: String,
    /// Regular expression the service tags must match (needs -service).
    #[arg(long = "tag", default_value = "")]
    tag: String,
    /// The payload (optional).
    payload: Option<String>,
}

/// The part of the fired event this command prints.
#[derive(Deserialize)]
struct Fired {
    #[serde(rename = "ID")]
    id: String,
}

/// Checks the flags as Consul's `event` does, before anything is sent.
fn check(a: &EventArgs) -> anyhow::Result<()> {
    if a.name.is_empty() {
        anyhow::bail!("Event name must be specified (-name=NAME)");
    }
    for (what, re) in [("node", &a.node), ("service", &a.service), ("tag", &a.tag)] {
        if !re.is_empty() {
            regex::Regex::new(re)
                .map_err(|e| anyhow::anyhow!("Failed to compile {what} filter regexp: {e}"))?;
        }
    }
    if !a.tag.is_empty() && a.service.is_empty() {
        anyhow::bail!("Cannot provide tag filter without service filter.");
    }
    Ok(())
}

/// The fire request's path: the name and the filters that are set.
fn fire_path(a: &EventArgs) -> String {
    let mut q = form_urlencoded::Serializer::new(String::new());
    for (k, v) in [("node", &a.node), ("service", &a.service), ("tag", &a.tag)] {
        if !v.is_empty() {
            q.append_pair(k, v);
        }
    }
    let q = q.finish();
    let path = format!("/v1/event/fire/{}", percent_encode(&a.name));
    if q.is_empty() {
        path
    } else {
        format!("{path}?{q}")
    }
}

/// Runs `cairn event`: prints `Event ID: <id>`.
pub async fn run(a: EventArgs) -> anyhow::Result<()> {
    check(&a)?;
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &a.http.addr()).await?;
    let payload = Bytes::from(a.payload.clone().unwrap_or_default());
    let body = client::request_with(&env, addr, "PUT", &fire_path(&a), payload)
        .await
        .map_err(|e| anyhow::anyhow!("Error firing event: {e}"))?;
    let fired: Fired = serde_json::from_slice(&body)
        .map_err(|e| anyhow::anyhow!("Error firing event: the agent's answer has no ID: {e}"))?;
    println!("Event ID: {}", fired.id);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: EventArgs,
    }

    fn args(v: &[&str]) -> EventArgs {
        T::try_parse_from(std::iter::once("event").chain(v.iter().copied()))
            .unwrap()
            .a
    }

    #[test]
    fn flags_are_checked_and_filters_sent() {
        let e = |v: &[&str]| check(&args(v)).unwrap_err().to_string();
        assert!(e(&[]).contains("Event name must be specified"));
        assert!(e(&["--name=x", "--node=("]).contains("Failed to compile node filter"));
        assert!(e(&["--name=x", "--tag=v1"]).contains("without service filter"));
        let a = args(&["--name=de ploy", "--service=web", "--tag=v.*", "pay"]);
        check(&a).unwrap();
        assert_eq!(
            fire_path(&a),
            "/v1/event/fire/de%20ploy?service=web&tag=v.*"
        );
        assert_eq!(fire_path(&args(&["--name=x"])), "/v1/event/fire/x");
    }
}

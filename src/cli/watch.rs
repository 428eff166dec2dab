//! `cairn watch` (as `consul watch`): follows a view of the catalog or KV
//! store with blocking queries and, on every change, prints it as JSON or
//! hands it to a handler program on its standard input.

use std::time::Duration;

use bytes::Bytes;
use clap::Args;

use super::http::{percent_encode, HttpArgs};
use crate::env::{Env, TokioEnv};
use crate::http_client::{self as client, ClientError};

/// `cairn watch`.
#[derive(Args, Debug)]
pub struct WatchArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// What to watch: key, keyprefix, service, services, nodes, checks.
    #[arg(long = "type")]
    kind: String,
    /// For `-type=key`: the key.
    #[arg(long = "key")]
    key: Option<String>,
    /// For `-type=keyprefix`: the prefix.
    #[arg(long = "prefix")]
    prefix: Option<String>,
    /// For `-type=service` (and `checks`): the service.
    #[arg(long = "service")]
    service: Option<String>,
    /// For `-type=service`: only instances with this tag (repeatable).
    #[arg(long = "tag")]
    tags: Vec<String>,
    /// For `-type=service`: only instances whose checks all pass.
    #[arg(long = "passingonly")]
    passing_only: bool,
    /// For `-type=checks`: only checks in this state.
    #[arg(long = "state")]
    state: Option<String>,
    /// Stop after this many changes (0: never); the first answer counts.
    #[arg(long = "max-changes", default_value_t = 0)]
    max_changes: u64,
    /// The handler to run on every change, with the JSON on its stdin
    /// (default: print the JSON).
    #[arg(trailing_var_arg = true)]
    handler: Vec<String>,
}

/// The API path (without `index`/`wait`) the watch follows. Keys are
/// watched with the answer's body as JSON, as Consul's watch hands them on.
fn watch_path(a: &WatchArgs) -> anyhow::Result<String> {
    let need = |v: &Option<String>, flag: &str| {
        v.clone()
            .ok_or_else(|| anyhow::anyhow!("-type={} needs -{flag}", a.kind))
    };
    Ok(match a.kind.as_str() {
        "key" => format!("/v1/kv/{}?", percent_encode(&need(&a.key, "key")?)),
        "keyprefix" => format!(
            "/v1/kv/{}?recurse&",
            percent_encode(&need(&a.prefix, "prefix")?)
        ),
        "service" => {
            let mut p = format!(
                "/v1/health/service/{}?",
                percent_encode(&need(&a.service, "service")?)
            );
            for t in &a.tags {
                p.push_str(&format!("tag={}&", percent_encode(t)));
            }
            if a.passing_only {
                p.push_str("passing&");
            }
            p
        }
        "services" => "/v1/catalog/services?".into(),
        "nodes" => "/v1/catalog/nodes?".into(),
        "checks" => match (&a.service, &a.state) {
            (Some(s), None) => format!("/v1/health/checks/{}?", percent_encode(s)),
            (None, s) => format!(
                "/v1/health/state/{}?",
                percent_encode(s.as_deref().unwrap_or("any"))
            ),
            (Some(_), Some(_)) => anyhow::bail!("-type=checks takes -service or -state, not both"),
        },
        other => anyhow::bail!(
            "unknown watch type {other:?}: use key, keyprefix, service, services, nodes or checks"
        ),
    })
}

/// How long each blocking read waits at the agent.
const WAIT: &str = "5m";
/// The read's own deadline: the wait, the agent's jitter, and slack.
const READ_LIMIT: Duration = Duration::from_secs(5 * 60 + 60);

/// Runs `cairn watch`.
pub async fn run(a: WatchArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let base = watch_path(&a)?;
    let addr = client::parse_addr(&env, &a.http.addr()).await?;
    let mut index = 0u64;
    let mut last: Option<Bytes> = None;
    let mut changes = 0u64;
    let mut backoff = Duration::from_millis(500);
    loop {
        let path = format!("{base}index={index}&wait={WAIT}");
        let answer =
            match client::exchange(&env, addr, "GET", &path, Bytes::new(), READ_LIMIT).await {
                Ok(ans) => ans,
                // A key that does not exist (yet) reads as null, as in Consul.
                Err(ClientError::Status { status: 404, .. }) if a.kind.starts_with("key") => {
                    client::Answer {
                        index: Some(index.max(1)),
                        body: Bytes::from_static(b"null"),
                    }
                }
                Err(e @ ClientError::Status { .. }) => return Err(e.into()),
                Err(e) => {
                    eprintln!("watch: {e}; retrying in {backoff:?}");
                    env.sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
        backoff = Duration::from_millis(500);
        // An index that goes backwards (a restored snapshot, a new cluster)
        // starts over, as Consul's watches do.
        let next = answer.index.unwrap_or(0);
        index = if next < index { 0 } else { next };
        if last.as_ref() == Some(&answer.body) {
            continue;
        }
        let mut json: serde_json::Value = serde_json::from_slice(&answer.body)?;
        // A key watch hands on the entry itself, not a list of one.
        if a.kind == "key" {
            if let Some(entry) = json.as_array_mut().and_then(|v| v.pop()) {
                json = entry;
            }
        }
        let text = serde_json::to_string_pretty(&json)?;
        if a.handler.is_empty() {
            println!("{text}");
        } else {
            run_handler(&a.handler, &text).await?;
        }
        last = Some(answer.body);
        changes += 1;
        if a.max_changes > 0 && changes >= a.max_changes {
            return Ok(());
        }
    }
}

/// Runs the handler with `json` on its standard input; its failure is
/// reported but does not stop the watch, as with Consul.
async fn run_handler(handler: &[String], json: &str) -> anyhow::Result<()> {
    use tokio::io::AsyncWriteExt;
    let (program, args) = handler
        .split_first()
        .ok_or_else(|| anyhow::anyhow!("empty handler"))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot run the handler {program:?}: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A handler that does not read its input is its own business.
        let _ = stdin.write_all(json.as_bytes()).await;
        let _ = stdin.write_all(b"\n").await;
    }
    let status = child.wait().await?;
    if !status.success() {
        eprintln!("watch: handler {program:?} exited with {status}");
    }
    Ok(())
}

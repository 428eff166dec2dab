//! What the ACL commands share: the output flag, one request to the
//! agent, and printing answers as JSON or as Consul prints them.

use bytes::Bytes;
use clap::Args;
use serde_json::Value;

use super::http::HttpArgs;
use crate::env::TokioEnv;
use crate::http_client as client;

#[derive(Args, Debug)]
pub(super) struct Output {
    #[command(flatten)]
    pub(super) http: HttpArgs,
    /// `pretty` (default) or `json`.
    #[arg(long = "format", default_value = "pretty")]
    pub(super) format: String,
}

/// One request to the agent; the JSON answer.
pub(super) async fn call(
    http: &HttpArgs,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<Value> {
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &http.addr()).await?;
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    let answer = client::request_with(&env, addr, method, path, body).await?;
    if answer.is_empty() {
        return Ok(Value::Null);
    }
    Ok(serde_json::from_slice(&answer)?)
}

pub(super) fn show(out: &Output, v: &Value, pretty: fn(&Value)) -> anyhow::Result<()> {
    match out.format.as_str() {
        "json" => println!("{}", serde_json::to_string_pretty(v)?),
        "pretty" => pretty(v),
        other => anyhow::bail!("invalid -format {other:?} (expected pretty or json)"),
    }
    Ok(())
}

pub(super) fn show_list(out: &Output, v: &Value, pretty: fn(&Value)) -> anyhow::Result<()> {
    if out.format == "json" {
        return show(out, v, pretty);
    }
    for (i, item) in v.as_array().into_iter().flatten().enumerate() {
        if i > 0 {
            println!();
        }
        show(out, item, pretty)?;
    }
    Ok(())
}

pub(super) fn s(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

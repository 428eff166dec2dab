//! `cairn monitor`: the agent's log lines as they happen, through
//! `/v1/agent/monitor`, until interrupted or the agent goes away.

use std::io::Write;

use bytes::Bytes;
use clap::Args;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

use super::http::HttpArgs;
use crate::env::{Env, TokioEnv};
use crate::http_client as client;

/// `cairn monitor`.
#[derive(Args, Debug)]
pub(crate) struct MonitorArgs {
    #[command(flatten)]
    http: HttpArgs,
    /// The level to stream at: trace, debug, info, warn or err (any case).
    #[arg(long = "log-level", default_value = "INFO")]
    log_level: String,
    /// JSON lines instead of plain text.
    #[arg(long = "log-json")]
    log_json: bool,
}

/// Streams the log to stdout; returns when the agent closes the stream or
/// on Ctrl-C.
pub(crate) async fn run(m: MonitorArgs) -> anyhow::Result<()> {
    let env = TokioEnv::new();
    let addr = client::parse_addr(&env, &m.http.addr()).await?;
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.append_pair("loglevel", &m.log_level);
    if m.log_json {
        query.append_key_only("logjson");
    }
    let path = format!("/v1/agent/monitor?{}", query.finish());
    let stream = env
        .connect_tcp(addr)
        .await
        .map_err(|source| client::ClientError::Connect { addr, source })?;
    let http = |e: hyper::Error| client::ClientError::Http {
        addr,
        why: e.to_string(),
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    let _driver = env.spawn(async move {
        let _ = conn.await;
    });
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, addr.to_string());
    if let Some(token) = m.http.token() {
        req = req.header("x-consul-token", token);
    }
    let resp = sender.send_request(req.body(Empty::<Bytes>::new())?).await;
    let resp = resp.map_err(http)?;
    let status = resp.status();
    let mut body = resp.into_body();
    if !status.is_success() {
        let text = body.collect().await.map_err(http)?.to_bytes();
        return Err(client::ClientError::Status {
            status: status.as_u16(),
            body: String::from_utf8_lossy(&text).trim().to_string(),
        }
        .into());
    }
    loop {
        let frame = tokio::select! {
            f = body.frame() => f,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        // As Consul's, a monitor whose agent goes away ends with a note,
        // not an error.
        let Some(Ok(frame)) = frame else {
            eprintln!("the agent ended the monitor: it has probably stopped or crashed");
            return Ok(());
        };
        if let Ok(data) = frame.into_data() {
            // A closed stdout (`| head`) ends the command quietly.
            let mut out = std::io::stdout().lock();
            if out.write_all(&data).and_then(|()| out.flush()).is_err() {
                return Ok(());
            }
        }
    }
}

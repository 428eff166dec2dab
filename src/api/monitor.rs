//! `GET /v1/agent/monitor?loglevel=LEVEL[&logjson]`: the agent's log
//! lines as they happen, one per record, as a streamed (chunked) body
//! that lasts until the client goes away. Plain lines are in hclog's
//! format, as Consul's; `logjson` gives hclog's JSON lines.

use std::collections::HashMap;

use axum::body::Body;
use axum::extract::Query as UrlQuery;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::context::{require, Api};
use super::error::{bad, ApiError};
use crate::acl::{Access, Resource};
use crate::env::Env;
use crate::telemetry::monitor::{self, LogLevel};

/// `GET /v1/agent/monitor` (`agent:read`).
pub async fn monitor<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    require(&s, Resource::Agent, &s.info.node_name, Access::Read).await?;
    let asked = params
        .get("loglevel")
        .map(String::as_str)
        .filter(|l| !l.is_empty())
        .unwrap_or("INFO");
    let level = LogLevel::parse(asked).ok_or_else(|| bad(format!("Unknown log level: {asked}")))?;
    let json = params.contains_key("logjson");
    // The stream is a layer of the process's logging, which the `cairn`
    // binary sets up; an agent embedded elsewhere has none.
    let Some(hub) = monitor::hub() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "this agent has no log stream to monitor: its process did not set up \
             cairn's logging (run the agent with `cairn agent`)"
                .into(),
        ));
    };
    let sub = hub.subscribe(level);
    // The subscription lives in the body: when the client goes away the
    // body is dropped, and the monitor with it.
    let lines = futures_util::stream::unfold(sub, move |mut sub| async move {
        let lines = sub.next_lines(json).await?;
        Some((Ok::<_, std::convert::Infallible>(Bytes::from(lines)), sub))
    });
    Ok((
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        Body::from_stream(lines),
    )
        .into_response())
}

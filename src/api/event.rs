//! `/v1/event/fire/<name>` and `/v1/event/list`: user events
//! ([`crate::agent::events`]).

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query as UrlQuery};
use axum::http::{HeaderMap, HeaderValue};
use axum::Json;

use super::context::{blocking_of, Api};
use super::error::{bad, ApiError};
use crate::agent::events::{self, EventError, UserEvent};
use crate::env::Env;

impl From<EventError> for ApiError {
    fn from(e: EventError) -> Self {
        match e {
            EventError::Invalid(m) => bad(m),
            EventError::Stopped => super::error::internal(e),
        }
    }
}

/// `PUT /v1/event/fire/<name>` (`?node=`, `?service=`, `?tag=` filters,
/// the body as payload): the event as fired.
pub async fn fire<E: Env>(
    s: Api<E>,
    Path(name): Path<String>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
    body: Bytes,
) -> Result<Json<UserEvent>, ApiError> {
    let ev = UserEvent {
        id: s.new_id(),
        ..event_of(name, &params, &body)
    };
    Ok(Json(events::fire(&s.events, &s.gossip, ev).await?))
}

/// The event `name` with the body as its payload and the filters of
/// `params` (without its ID; [`events::fire`] checks it). Apart from the
/// handler so the fuzz target fires the same.
pub(super) fn event_of(name: String, params: &HashMap<String, String>, body: &[u8]) -> UserEvent {
    let param = |k: &str| params.get(k).cloned().unwrap_or_default();
    UserEvent {
        name,
        payload: body.to_vec(),
        node_filter: param("node"),
        service_filter: param("service"),
        tag_filter: param("tag"),
        ..UserEvent::default()
    }
}

/// `GET /v1/event/list` (`?name=`, blocking with `?index=` and `?wait=`):
/// the events this agent has kept, oldest first.
pub async fn list<E: Env>(
    s: Api<E>,
    UrlQuery(params): UrlQuery<HashMap<String, String>>,
) -> Result<(HeaderMap, Json<Vec<UserEvent>>), ApiError> {
    let name = params.get("name").map(String::as_str);
    let (seen, wait) = blocking_of(&params)?;
    let mut changes = s.events.watch();
    if seen != 0 && *changes.borrow_and_update() == seen {
        let deadline = s.env.now() + wait;
        // Woken by a new event, or the wait runs out: either way the list
        // goes back as it is now.
        let _ = crate::env::timeout_at(&s.env, deadline, changes.changed()).await;
    }
    let (index, list) = s.events.list(name);
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&index.to_string()) {
        headers.insert("x-consul-index", v);
    }
    Ok((headers, Json(list)))
}

//! User events (Consul's `consul event`): a name and a small payload
//! gossiped to every agent of the datacenter, as Serf's user events are.
//! The gossip layer carries them as application messages; each agent that
//! hears an event for the first time passes it on (so it spreads like a
//! rumour, not only from its sender), delivers it if the event's node,
//! service and tag filters match it, and keeps the last
//! [`EVENT_BUFFER`] for `/v1/event/list`. A Lamport clock orders them.

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::LocalState;
use crate::gossip::Gossip;

/// Events each agent keeps for listing (Consul's 256).
pub const EVENT_BUFFER: usize = 256;

/// Largest name plus payload (Serf's `UserEventSizeLimit`).
pub const MAX_EVENT_SIZE: usize = 512;

/// Event IDs remembered for de-duplication.
const SEEN: usize = 4096;

/// Marks a gossip application message as a user event (version 1).
const TAG: u8 = 0xE1;

/// A user event.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct UserEvent {
    /// Unique ID (a UUID).
    #[serde(rename = "ID")]
    pub id: String,
    /// Name.
    pub name: String,
    /// Opaque payload.
    #[serde(with = "payload")]
    pub payload: Vec<u8>,
    /// Regular expression on node names ("" for all).
    pub node_filter: String,
    /// Regular expression on local service names ("" for all).
    pub service_filter: String,
    /// Regular expression on those services' tags ("" for all).
    pub tag_filter: String,
    /// Format version (1).
    pub version: u32,
    /// Lamport time at which it was fired.
    #[serde(rename = "LTime")]
    pub ltime: u64,
}

/// Payloads as Consul writes them: base64, null when empty.
mod payload {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        if v.is_empty() {
            s.serialize_none()
        } else {
            s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(v))
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s: Option<String> = Option::deserialize(d)?;
        match s {
            None => Ok(Vec::new()),
            Some(s) => base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(serde::de::Error::custom),
        }
    }
}

/// Why an event cannot be fired.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    /// Something about the event is wrong.
    #[error("{0}")]
    Invalid(String),
    /// Gossip is not running.
    #[error("gossip has stopped")]
    Stopped,
}

impl UserEvent {
    fn filters(&self) -> Result<[Option<regex::Regex>; 3], EventError> {
        let compile = |what: &str, re: &str| {
            if re.is_empty() {
                return Ok(None);
            }
            regex::Regex::new(re)
                .map(Some)
                .map_err(|e| EventError::Invalid(format!("Invalid {what} filter: {e}")))
        };
        Ok([
            compile("node", &self.node_filter)?,
            compile("service", &self.service_filter)?,
            compile("tag", &self.tag_filter)?,
        ])
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = vec![TAG];
        // Plain strings, numbers and bytes: serialising cannot fail.
        out.extend(serde_json::to_vec(self).unwrap_or_default());
        out
    }

    fn decode(bytes: &[u8]) -> Option<UserEvent> {
        match bytes.split_first() {
            Some((&TAG, rest)) => serde_json::from_slice(rest).ok(),
            _ => None,
        }
    }
}

/// Consul's index for an event list: the last event's UUID folded into
/// 64 bits (its two halves XORed).
fn index_of(id: &str) -> u64 {
    match crate::format::parse_uuid(id) {
        Some(b) => {
            let (hi, lo) = b.split_at(8);
            let word = |s: &[u8]| s.iter().fold(0u64, |acc, &x| (acc << 8) | u64::from(x));
            word(hi) ^ word(lo)
        }
        None => 0,
    }
}

/// The last IDs seen of something gossiped, to pass each on once: at most
/// `N` are remembered, the oldest forgotten first.
#[derive(Debug)]
pub(crate) struct Seen<T, const N: usize> {
    set: HashSet<T>,
    order: VecDeque<T>,
}

impl<T, const N: usize> Default for Seen<T, N> {
    fn default() -> Self {
        Seen {
            set: HashSet::new(),
            order: VecDeque::new(),
        }
    }
}

impl<T: std::hash::Hash + Eq + Clone, const N: usize> Seen<T, N> {
    /// Whether `id` is new (and now remembered).
    pub(crate) fn insert(&mut self, id: T) -> bool {
        if !self.set.insert(id.clone()) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > N {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

#[derive(Debug, Default)]
struct Inner {
    clock: u64,
    seen: Seen<String, SEEN>,
    buffer: VecDeque<UserEvent>,
}

/// An agent's user events; see the [module docs](self).
#[derive(Debug)]
pub struct Events {
    node: String,
    local: Arc<LocalState>,
    inner: Mutex<Inner>,
    index: watch::Sender<u64>,
}

impl Events {
    /// The events of agent `node`, whose services `local` holds (for the
    /// service and tag filters).
    pub fn new(node: &str, local: Arc<LocalState>) -> Self {
        Events {
            node: node.to_owned(),
            local,
            inner: Mutex::default(),
            index: watch::channel(0).0,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks `ev`, stamps it with the next Lamport time, delivers it here
    /// and returns it with the bytes to gossip.
    pub fn fire(&self, mut ev: UserEvent) -> Result<(UserEvent, Vec<u8>), EventError> {
        if ev.name.is_empty() {
            return Err(EventError::Invalid("Missing name".into()));
        }
        if ev.name.len() + ev.payload.len() > MAX_EVENT_SIZE {
            return Err(EventError::Invalid(format!(
                "user event exceeds limit of {MAX_EVENT_SIZE} bytes (name and payload are {})",
                ev.name.len() + ev.payload.len()
            )));
        }
        if !ev.tag_filter.is_empty() && ev.service_filter.is_empty() {
            return Err(EventError::Invalid(
                "a tag filter needs a service filter".into(),
            ));
        }
        ev.filters()?;
        ev.version = 1;
        ev.ltime = {
            let mut inner = self.lock();
            inner.clock += 1;
            inner.clock
        };
        self.ingest(&ev);
        let bytes = ev.encode();
        Ok((ev, bytes))
    }

    /// Takes in a gossiped event: the bytes to pass on if it is new.
    pub fn receive(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let ev = UserEvent::decode(bytes)?;
        if !self.ingest(&ev) {
            return None;
        }
        Some(bytes.to_vec())
    }

    /// Records `ev` if it is new (and keeps it if it is for this agent);
    /// whether it was new.
    fn ingest(&self, ev: &UserEvent) -> bool {
        let mut inner = self.lock();
        if !inner.seen.insert(ev.id.clone()) {
            return false;
        }
        inner.clock = inner.clock.max(ev.ltime);
        if !self.matches(ev) {
            return true;
        }
        inner.buffer.push_back(ev.clone());
        if inner.buffer.len() > EVENT_BUFFER {
            inner.buffer.pop_front();
        }
        drop(inner);
        self.index.send_replace(index_of(&ev.id));
        true
    }

    /// Whether this agent is among the event's targets.
    fn matches(&self, ev: &UserEvent) -> bool {
        let Ok([node, service, tag]) = ev.filters() else {
            return false;
        };
        if node.is_some_and(|re| !re.is_match(&self.node)) {
            return false;
        }
        let Some(service) = service else {
            return true;
        };
        self.local.services().iter().any(|s| {
            service.is_match(&s.service)
                && tag
                    .as_ref()
                    .is_none_or(|t| s.tags.iter().any(|tag| t.is_match(tag)))
        })
    }

    /// The kept events (oldest first), those named `name` if given, and
    /// the list's index.
    pub fn list(&self, name: Option<&str>) -> (u64, Vec<UserEvent>) {
        let inner = self.lock();
        let events = inner
            .buffer
            .iter()
            .filter(|e| name.is_none_or(|n| e.name == n))
            .cloned()
            .collect();
        (*self.index.borrow(), events)
    }

    /// Changes of the list's index, for blocking readers.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }
}

/// Fires `ev`: delivers it here and gossips it.
pub async fn fire(
    events: &Events,
    gossip: &Gossip,
    ev: UserEvent,
) -> Result<UserEvent, EventError> {
    let (ev, bytes) = events.fire(ev)?;
    match gossip.broadcast_user(bytes).await {
        Ok(true) => Ok(ev),
        Ok(false) => Err(EventError::Invalid(
            "user event is too large to gossip".into(),
        )),
        Err(_) => Err(EventError::Stopped),
    }
}

/// Takes in gossiped events and passes new ones on, until gossip stops.
pub async fn run(gossip: Gossip, events: Arc<Events>) {
    let Ok(mut rx) = gossip.subscribe_user().await else {
        return;
    };
    while let Some(bytes) = rx.recv().await {
        if let Some(again) = events.receive(&bytes) {
            if gossip.broadcast_user(again).await.is_err() {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Service;

    fn ev(id: u8, name: &str) -> UserEvent {
        UserEvent {
            id: format!("00000000-0000-0000-0000-0000000000{id:02x}"),
            name: name.into(),
            payload: b"p".to_vec(),
            ..UserEvent::default()
        }
    }

    #[test]
    fn events_are_kept_once_and_passed_on_once() {
        let e = Events::new("n1", Arc::default());
        let (fired, bytes) = e.fire(ev(1, "deploy")).unwrap();
        assert_eq!(fired.ltime, 1);
        // Our own event coming back is not new.
        assert_eq!(e.receive(&bytes), None);
        let mut other = ev(2, "deploy");
        other.ltime = 10;
        assert!(e.receive(&other.encode()).is_some());
        assert!(e.receive(&other.encode()).is_none());
        let (index, list) = e.list(Some("deploy"));
        assert_eq!(list.len(), 2);
        assert_eq!(index, index_of(&other.id));
        // The clock moved past what it saw.
        assert_eq!(e.fire(ev(3, "x")).unwrap().0.ltime, 11);
        assert!(e.receive(b"garbage").is_none());
        assert!(e.receive(&[TAG, b'{']).is_none());
    }

    #[test]
    fn filters_pick_the_agents_that_keep_an_event() {
        let local = Arc::new(LocalState::new("web-1"));
        let svc = Service {
            id: "api".into(),
            service: "api".into(),
            tags: vec!["v2".into()],
            ..Service::default()
        };
        local
            .add_service(svc, vec![], crate::time::Instant::ZERO)
            .unwrap();
        let e = Events::new("web-1", local);
        let with = |id, node: &str, service: &str, tag: &str| UserEvent {
            node_filter: node.into(),
            service_filter: service.into(),
            tag_filter: tag.into(),
            ..ev(id, "f")
        };
        for (i, (node, service, tag, kept)) in [
            ("^web-", "", "", true),
            ("^db-", "", "", false),
            ("", "^api$", "", true),
            ("", "^api$", "v1", false),
            ("", "a.i", "^v2$", true),
        ]
        .into_iter()
        .enumerate()
        {
            let before = e.list(None).1.len();
            e.receive(&with(i as u8 + 1, node, service, tag).encode());
            assert_eq!(
                e.list(None).1.len() > before,
                kept,
                "{node} {service} {tag}"
            );
        }
        let bad = |ev: UserEvent| e.fire(ev).unwrap_err();
        assert!(
            matches!(bad(with(9, "(", "", "")), EventError::Invalid(m) if m.contains("node filter"))
        );
        assert!(
            matches!(bad(with(9, "", "", "v1")), EventError::Invalid(m) if m.contains("service filter"))
        );
        let mut big = ev(9, "big");
        big.payload = vec![0; MAX_EVENT_SIZE];
        assert!(matches!(bad(big), EventError::Invalid(m) if m.contains("512")));
    }

    #[test]
    fn the_buffer_keeps_the_newest() {
        let e = Events::new("n", Arc::default());
        for i in 0..300u32 {
            let mut x = ev(0, "e");
            x.id = format!("00000000-0000-0000-0000-{i:012x}");
            e.receive(&x.encode());
        }
        let (_, list) = e.list(None);
        assert_eq!(list.len(), EVENT_BUFFER);
        assert!(list[0]
            .id
            .ends_with(&format!("{:012x}", 300 - EVENT_BUFFER)));
    }
}

//! What the `kv_load` clients share: how they call the servers, and the
//! records every host of a run appends to (the lock clients' holds, the
//! transaction clients' transactions), each still open to change by the
//! client that made it until its call returns.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::agent::Servers;
use cairn::env::Env;
use cairn::server::{ClientReply, ClientRequest};
use cairn::state::{Command, KvOp};

/// `req` through the node's agent to the servers; `None` if no answer
/// came within `limit` (the outcome is then unknown).
pub(super) async fn call_within<E: Env>(
    env: &E,
    servers: &Servers<E>,
    req: ClientRequest,
    limit: Duration,
) -> Option<ClientReply> {
    tokio::select! {
        r = servers.call(req) => Some(r),
        _ = env.sleep(limit) => None,
    }
}

/// A KV write of `value` to `key`.
pub(super) fn kv_write(op: KvOp, key: &str, value: &[u8]) -> ClientRequest {
    ClientRequest::Write {
        cmd: Box::new(Command::Kv {
            op,
            key: key.to_owned(),
            value: value.to_vec(),
            flags: 0,
        }),
        hops: 0,
    }
}

/// Records of one kind, shared by all hosts of a run.
#[derive(Debug, Clone)]
pub struct Records<T>(Arc<Mutex<Vec<T>>>);

impl<T> Default for Records<T> {
    fn default() -> Self {
        Records(Arc::default())
    }
}

impl<T: Clone> Records<T> {
    /// The records so far, in the order they were made.
    pub fn all(&self) -> Vec<T> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<T>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a record; its position, for [`update`](Self::update).
    pub(super) fn push(&self, record: T) -> usize {
        let mut v = self.lock();
        v.push(record);
        v.len() - 1
    }

    /// Changes record `at`.
    pub(super) fn update(&self, at: usize, change: impl FnOnce(&mut T)) {
        if let Some(r) = self.lock().get_mut(at) {
            change(r);
        }
    }
}

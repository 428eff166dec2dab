//! Group commit: writes queue up, and a few batchers propose what has
//! queued as one log entry each, so the leader replicates many writes per
//! round instead of one.

use std::sync::Arc;
use std::time::UNIX_EPOCH;

use openraft::Raft;
use tokio::sync::{mpsc, oneshot};

use crate::consensus::{Request, TypeConfig};
use crate::env::Env;
use crate::state::{Applied, Command, StateError};

/// A write waiting to be proposed.
pub(super) struct Proposal {
    pub(super) cmd: Command,
    pub(super) done: oneshot::Sender<Result<Written, Refusal>>,
}

/// A write's log index and its own result.
pub(super) type Written = (u64, Result<Applied, StateError>);

/// Why a batch was not written.
pub(super) enum Refusal {
    /// This server no longer leads.
    NotLeader,
    /// Anything else.
    Failed(String),
}

/// Most writes in one log entry.
const MAX_BATCH: usize = 256;

/// Batches in flight at once. openraft appends every proposal as its own
/// log write and replication round, so a leader that proposed each client
/// write alone would do that work per write; batchers group the writes
/// that arrive while earlier batches are in flight (group commit), and a
/// few of them keep replication busy while the next batch fills.
pub(super) const BATCHERS: usize = 4;

/// Proposes queued writes in batches until the queue closes.
pub(super) async fn propose_batches<E: Env>(
    env: E,
    raft: Raft<TypeConfig>,
    queue: Arc<tokio::sync::Mutex<mpsc::UnboundedReceiver<Proposal>>>,
) {
    loop {
        let batch = {
            let mut q = queue.lock().await;
            let Some(first) = q.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match q.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            batch
        };
        let at_ms = env
            .wall_clock()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let (mut cmds, dones): (Vec<Command>, Vec<_>) =
            batch.into_iter().map(|p| (p.cmd, p.done)).unzip();
        let cmd = match cmds.len() {
            1 => cmds.remove(0),
            _ => Command::Batch(cmds),
        };
        match raft.client_write(Request { at_ms, cmd }).await {
            Ok(resp) => {
                let index = resp.log_id.index;
                let mut results = resp.data.0.into_iter();
                for done in dones {
                    let r = results.next().unwrap_or_else(|| {
                        Err(StateError::Invalid(
                            "the batch gave no result for this write".into(),
                        ))
                    });
                    let _ = done.send(Ok((index, r)));
                }
            }
            Err(e) => {
                let not_leader = e.forward_to_leader().is_some();
                for done in dones {
                    let _ = done.send(Err(if not_leader {
                        Refusal::NotLeader
                    } else {
                        Refusal::Failed(e.to_string())
                    }));
                }
            }
        }
    }
}

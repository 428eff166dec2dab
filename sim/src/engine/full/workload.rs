//! A KV client workload for the full engine (`kv_load` events): clients on
//! chosen nodes read, write, check-and-set and delete a few shared keys
//! through their agent, and every operation goes into one [`History`] with
//! the virtual times it was called and returned, for the linearizability
//! check and the lost-write check.
//!
//! Each client has one operation outstanding at a time, as a Jepsen
//! client does. Written values are unique (`<node>/<client>/<n>`), so a
//! value names the write that made it, and a check-and-set on the
//! `ModifyIndex` a client last read is a check-and-set on the value it
//! read. An operation whose outcome the client never learned (a timeout,
//! an error after the request may have arrived, or the client's node
//! crashed) stays without a return: it may or may not have happened.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn::agent::Servers;
use cairn::env::Task;

use crate::engine::full::clock::SimClock;
use cairn::server::{Answer, ClientReply, ClientRequest, Consistency, Query, Read};
use cairn::state::KvOp;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use tokio::sync::watch;

use super::clients::{call_within, kv_write};
use super::locks::{Hold, Holds, LockClient};
use super::txns::{TxnClient, Txns};
use crate::checks::linearizability::{Input, Op, Output};
use crate::checks::serializability::Txn;

/// What a `kv_load` event asks of each node it names.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KvLoad {
    /// How long the clients keep going.
    pub duration: Duration,
    /// Clients per node.
    pub clients: u32,
    /// Pause between one client's operations.
    pub interval: Duration,
    /// Keys the clients share (fewer: more contention).
    pub keys: u32,
    /// How reads are made.
    pub consistency: Consistency,
    /// Lock clients per node (see [`super::locks`]).
    pub locks: u32,
    /// Transaction clients per node (see [`super::txns`]).
    pub txns: u32,
    /// Whether the KV clients write too; `false` makes readers only, whose
    /// reads must stay linearizable while other nodes' clients write (a
    /// writer stuck behind a lost quorum would stop reading too).
    pub writes: bool,
}

impl Default for KvLoad {
    fn default() -> Self {
        KvLoad {
            duration: Duration::from_secs(30),
            clients: 2,
            interval: Duration::from_millis(100),
            keys: 4,
            consistency: Consistency::Consistent,
            locks: 0,
            txns: 0,
            writes: true,
        }
    }
}

impl KvLoad {
    /// The parameters, for the trace.
    pub fn detail(&self) -> String {
        let mut d = format!(
            "for={:?} clients={} interval={:?} keys={} reads={}",
            self.duration,
            self.clients,
            self.interval,
            self.keys,
            consistency_name(self.consistency)
        );
        // Only when there are any, so the traces of loads without locks
        // keep their hashes.
        if self.locks > 0 {
            d.push_str(&format!(" locks={}", self.locks));
        }
        if self.txns > 0 {
            d.push_str(&format!(" txns={}", self.txns));
        }
        if !self.writes {
            d.push_str(" writes=false");
        }
        d
    }
}

/// Parses a read consistency mode's name.
pub fn parse_consistency(s: &str) -> Result<Consistency, String> {
    match s {
        "default" => Ok(Consistency::Default),
        "consistent" => Ok(Consistency::Consistent),
        "stale" => Ok(Consistency::Stale),
        other => Err(format!(
            "consistency is default, consistent or stale, not {other:?}"
        )),
    }
}

fn consistency_name(c: Consistency) -> &'static str {
    match c {
        Consistency::Default => "default",
        Consistency::Consistent => "consistent",
        Consistency::Stale => "stale",
    }
}

/// A load a node was told to run, until a virtual time.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Order {
    /// The load.
    pub load: KvLoad,
    /// Virtual time it ends.
    pub until: Duration,
}

/// Every operation of a run's clients, shared by all hosts.
#[derive(Debug, Clone, Default)]
pub struct History {
    /// In call order; `None` for a read that failed (it saw nothing, so it
    /// stays out of the history rather than counting as unknown).
    ops: Arc<Mutex<Vec<Option<Op>>>>,
    next_client: Arc<Mutex<u32>>,
    holds: Holds,
    txns: Txns,
}

impl History {
    /// The operations so far, in call order.
    pub fn ops(&self) -> Vec<Op> {
        self.lock().iter().flatten().cloned().collect()
    }

    /// Every time a lock client believed it held a lock.
    pub fn holds(&self) -> Vec<Hold> {
        self.holds.all()
    }

    /// Every transaction of the transaction clients.
    pub fn txns(&self) -> Vec<Txn> {
        self.txns.all()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Option<Op>>> {
        self.ops.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn new_client(&self) -> u32 {
        let mut n = self.next_client.lock().unwrap_or_else(|p| p.into_inner());
        *n += 1;
        *n
    }

    /// Records a call; its return is filled in by [`finish`](Self::finish).
    fn call(&self, op: Op) -> usize {
        let mut ops = self.lock();
        ops.push(Some(op));
        ops.len() - 1
    }

    fn finish(&self, at: usize, t_us: u64, out: Output) {
        if let Some(Some(op)) = self.lock().get_mut(at) {
            op.ret = Some((t_us, out));
        }
    }

    fn forget(&self, at: usize) {
        if let Some(op) = self.lock().get_mut(at) {
            *op = None;
        }
    }
}

/// Runs the orders `orders` brings on this node (of datacenter `dc`)
/// until the node stops. History keys are `<dc>/<key>`: each datacenter
/// keeps its own KV store.
pub fn drive<E: SimClock>(
    env: E,
    node: String,
    dc: String,
    servers: Arc<Servers<E>>,
    mut orders: watch::Receiver<Option<Order>>,
    history: History,
) -> Task {
    env.clone().spawn(async move {
        let mut clients: Vec<Task> = Vec::new();
        loop {
            let order = *orders.borrow_and_update();
            // A new order replaces the last one's clients.
            clients.clear();
            if let Some(order) = order {
                if env.true_now() < order.until {
                    for _ in 0..order.load.clients {
                        let c = Client {
                            env: env.clone(),
                            id: history.new_client(),
                            node: node.clone(),
                            dc: dc.clone(),
                            servers: servers.clone(),
                            history: history.clone(),
                            order,
                        };
                        clients.push(env.spawn(c.run()));
                    }
                    for _ in 0..order.load.locks {
                        let c = LockClient {
                            env: env.clone(),
                            id: history.new_client(),
                            node: node.clone(),
                            dc: dc.clone(),
                            servers: servers.clone(),
                            holds: history.holds.clone(),
                            until: order.until,
                        };
                        clients.push(env.spawn(c.run()));
                    }
                    for _ in 0..order.load.txns {
                        let c = TxnClient {
                            env: env.clone(),
                            id: history.new_client(),
                            dc: dc.clone(),
                            servers: servers.clone(),
                            txns: history.txns.clone(),
                            until: order.until,
                            interval: order.load.interval,
                        };
                        clients.push(env.spawn(c.run()));
                    }
                }
            }
            if orders.changed().await.is_err() {
                return;
            }
        }
    })
}

/// The longest a client waits for one operation before it counts the
/// outcome as unknown and goes on.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

struct Client<E: SimClock> {
    env: E,
    id: u32,
    node: String,
    dc: String,
    servers: Arc<Servers<E>>,
    history: History,
    order: Order,
}

impl<E: SimClock> Client<E> {
    async fn run(self) {
        let load = self.order.load;
        let mut rng = ChaCha8Rng::seed_from_u64(self.env.seed(&format!("kv-client-{}", self.id)));
        // What this client last read of each key: (value, ModifyIndex).
        let mut seen: HashMap<String, Option<(Vec<u8>, u64)>> = HashMap::new();
        let mut n = 0u64;
        while self.env.true_now() < self.order.until {
            let key = format!("load/k{}", rng.random_range(0..load.keys.max(1)));
            n += 1;
            let value = format!("{}/{}/{n}", self.node, self.id).into_bytes();
            let roll = rng.random_range(0..10);
            let (input, req) = match if load.writes { roll } else { 0 } {
                0..4 => (
                    Input::Get,
                    ClientRequest::Read {
                        read: Read {
                            consistency: load.consistency,
                            min_index: 0,
                            max_wait_ms: 0,
                            query: Query::Kv(key.clone()),
                        },
                        hops: 0,
                    },
                ),
                4..7 => (Input::Put(value.clone()), kv_write(KvOp::Set, &key, &value)),
                7..9 => {
                    let last = seen.get(&key).cloned().flatten();
                    let index = last.as_ref().map_or(0, |l| l.1);
                    (
                        Input::Cas {
                            expect: last.map(|l| l.0),
                            new: value.clone(),
                        },
                        kv_write(KvOp::Cas { index }, &key, &value),
                    )
                }
                _ => (Input::Delete, kv_write(KvOp::Delete, &key, b"")),
            };
            let at = self.history.call(Op {
                client: self.id,
                key: format!("{}/{key}", self.dc),
                call: self.now_us(),
                ret: None,
                input: input.clone(),
            });
            let reply = call_within(&self.env, &self.servers, req, OP_TIMEOUT).await;
            match (input, reply.map(|r: ClientReply| r.answer)) {
                (Input::Get, Some(Ok(Answer::Kv(entry)))) => {
                    let entry = entry.map(|e| (e.value, e.modify_index));
                    let out = Output::Value(entry.as_ref().map(|e| e.0.clone()));
                    seen.insert(key, entry);
                    self.history.finish(at, self.now_us(), out);
                }
                (Input::Get, _) => self.history.forget(at),
                (Input::Cas { .. }, Some(Ok(Answer::Written(swapped)))) => {
                    self.history
                        .finish(at, self.now_us(), Output::Swapped(swapped));
                }
                (_, Some(Ok(Answer::Written(true)))) => {
                    self.history.finish(at, self.now_us(), Output::Done);
                }
                // Refused, timed out, or an error after the request may
                // have arrived: the outcome is unknown.
                _ => {}
            }
            self.env.sleep(load.interval).await;
        }
    }

    fn now_us(&self) -> u64 {
        self.env.true_now().as_micros() as u64
    }
}

//! Transaction clients for `kv_load` events with `txns = N`: list-append
//! transactions through `/v1/txn`'s operations, for the
//! `strict_serializable` check (an Elle-style checker,
//! [`crate::checks::serializability`]).
//!
//! Each key holds a list of numbers, comma-separated. A transaction reads
//! or appends to one to three distinct keys of four (new ones every five
//! seconds). Consul's transactions cannot
//! append, so a client reads the lists it will append to first (a stale
//! read will do) and appends with a check-and-set on the `ModifyIndex` it
//! saw: when another append came in between, the transaction fails as a
//! whole, and the client knows it took no effect. Elements are unique in
//! the run, so a read names every append it saw, in order.

use std::sync::Arc;
use std::time::Duration;

use cairn::agent::Servers;

use crate::engine::full::clock::SimClock;
use cairn::server::{Answer, ClientReply, ClientRequest, Consistency, Query, Read};
use cairn::state::{Command, TxnOp, TxnVerb};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clients::{call_within, Records};
use crate::checks::serializability::{Mop, Status, Txn};

/// The keys the transaction clients of a datacenter share at a time.
const TXN_KEYS: u32 = 4;
/// How long they share them before moving on to new ones, so that lists
/// (which every append writes whole) stay short, as Elle rotates keys.
const KEY_LIFE: Duration = Duration::from_secs(5);
/// The longest a client waits for one request before it counts the
/// outcome as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Elements a client may append before its numbers would run into the
/// next client's.
const PER_CLIENT: u64 = 1_000_000;

/// Every transaction of a run's clients, in call order.
pub type Txns = Records<Txn>;

/// One transaction client.
pub(super) struct TxnClient<E: SimClock> {
    pub(super) env: E,
    pub(super) id: u32,
    pub(super) dc: String,
    pub(super) servers: Arc<Servers<E>>,
    pub(super) txns: Txns,
    /// Virtual time the client stops.
    pub(super) until: Duration,
    /// Pause between its transactions.
    pub(super) interval: Duration,
}

impl<E: SimClock> TxnClient<E> {
    pub(super) async fn run(self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.env.seed(&format!("txn-client-{}", self.id)));
        let mut n = u64::from(self.id) * PER_CLIENT;
        while self.now() < self.until {
            // One to three distinct keys, each read or appended to.
            let mut keys: Vec<u32> = (0..TXN_KEYS).collect();
            let count = rng.random_range(1..=3usize);
            let generation = self.now().as_millis() / KEY_LIFE.as_millis();
            let mut plan: Vec<(String, bool)> = Vec::new();
            for _ in 0..count {
                let k = keys.swap_remove(rng.random_range(0..keys.len()));
                plan.push((format!("txn/g{generation}/x{k}"), rng.random_bool(0.5)));
            }
            let mut ops = Vec::new();
            let mut mops = Vec::new();
            let mut known = true;
            for (key, append) in &plan {
                if !append {
                    ops.push(op(TxnVerb::GetTree, key, Vec::new(), 0));
                    mops.push(Mop::Read {
                        key: format!("{}/{key}", self.dc),
                        seen: None,
                    });
                    continue;
                }
                let Some((list, index)) = self.current(key).await else {
                    known = false;
                    break;
                };
                n += 1;
                let mut value = list;
                if !value.is_empty() {
                    value.push(b',');
                }
                value.extend_from_slice(n.to_string().as_bytes());
                ops.push(op(TxnVerb::Cas, key, value, index));
                mops.push(Mop::Append {
                    key: format!("{}/{key}", self.dc),
                    value: n,
                });
            }
            if known {
                self.transact(ops, mops).await;
            }
            self.env.sleep(self.interval).await;
        }
    }

    /// Runs one transaction and records it.
    async fn transact(&self, ops: Vec<TxnOp>, mut mops: Vec<Mop>) {
        // Recorded at the call, of unknown outcome until the answer says
        // otherwise (a client whose node crashes never hears it).
        let at = self.txns.push(Txn {
            client: self.id,
            call: self.micros(),
            ret: None,
            status: Status::Unknown,
            mops: mops.clone(),
        });
        let reply = self
            .call(ClientRequest::Write {
                cmd: Box::new(Command::Txn(ops)),
                hops: 0,
            })
            .await;
        let status = match reply.map(|r| r.answer) {
            Some(Ok(Answer::Txn(Ok(entries)))) => {
                for m in &mut mops {
                    if let Mop::Read { key, seen } = m {
                        let bare = key.split_once('/').map_or(key.as_str(), |k| k.1);
                        let value = entries
                            .iter()
                            .find(|e| e.key == bare)
                            .map(|e| e.value.as_slice());
                        *seen = Some(parse_list(value.unwrap_or_default()));
                    }
                }
                Status::Ok
            }
            Some(Ok(Answer::Txn(Err(_)))) => Status::Failed,
            // No answer, or an error after the request may have arrived.
            _ => return,
        };
        let ret = self.micros();
        self.txns.update(at, |t| {
            t.status = status;
            t.ret = Some(ret);
            t.mops = mops;
        });
    }

    /// A key's list and `ModifyIndex` (0: absent), read from any server.
    async fn current(&self, key: &str) -> Option<(Vec<u8>, u64)> {
        let reply = self
            .call(ClientRequest::Read {
                read: Read {
                    consistency: Consistency::Stale,
                    min_index: 0,
                    max_wait_ms: 0,
                    query: Query::Kv(key.to_string()),
                },
                hops: 0,
            })
            .await?;
        match reply.answer {
            Ok(Answer::Kv(Some(e))) => Some((e.value, e.modify_index)),
            Ok(Answer::Kv(None)) => Some((Vec::new(), 0)),
            _ => None,
        }
    }

    async fn call(&self, req: ClientRequest) -> Option<ClientReply> {
        call_within(&self.env, &self.servers, req, CALL_TIMEOUT).await
    }

    fn now(&self) -> Duration {
        self.env.true_now()
    }

    fn micros(&self) -> u64 {
        self.now().as_micros() as u64
    }
}

fn op(verb: TxnVerb, key: &str, value: Vec<u8>, index: u64) -> TxnOp {
    TxnOp {
        verb,
        key: key.to_string(),
        value,
        flags: 0,
        index,
        session: String::new(),
    }
}

/// A stored list. Bytes that are not one (which no client writes) become
/// an element no transaction appended, so the check names them.
fn parse_list(bytes: &[u8]) -> Vec<u64> {
    if bytes.is_empty() {
        return Vec::new();
    }
    std::str::from_utf8(bytes)
        .ok()
        .and_then(|s| s.split(',').map(|x| x.parse().ok()).collect())
        .unwrap_or_else(|| vec![u64::MAX])
}

#[cfg(test)]
mod tests {
    use super::parse_list;

    #[test]
    fn lists_parse_and_damage_shows() {
        assert_eq!(parse_list(b""), Vec::<u64>::new());
        assert_eq!(parse_list(b"3,1,2"), vec![3, 1, 2]);
        assert_eq!(parse_list(b"3,x"), vec![u64::MAX]);
        assert_eq!(parse_list(&[0xff]), vec![u64::MAX]);
    }
}

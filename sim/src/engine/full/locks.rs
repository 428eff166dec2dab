//! Lock clients for `kv_load` events with `locks = N`: each takes a TTL
//! session on its node and contends for a few lock keys the way a leader
//! election client does (`PUT /v1/kv/<key>?acquire=`), holds a lock it
//! wins for a while, renewing its session, and releases it. Every time a
//! client believed it held a lock goes into the run's [`Hold`]s, for the
//! `locks_exclusive` check.
//!
//! A client believes it holds a lock from the moment its acquire returned
//! true until it calls release, or until its session's lease runs out: one
//! TTL after the call of the last create or renew the servers confirmed,
//! whichever comes first. The servers keep the session at least two TTLs
//! past that renewal, and a lock its session lost stays free for the lock
//! delay (longer than the TTL), so a correct cluster never lets a second
//! client in while the first still believes it holds the lock, even when
//! the first one's node is declared failed the instant after a renewal.

use std::sync::Arc;
use std::time::Duration;

use crate::engine::full::clock::SimClock;
use cairn::agent::Servers;
use cairn::server::{Answer, ClientReply, ClientRequest, SERF_CHECK};
use cairn::state::{Behavior, Command, KvOp, Session};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::clients::{call_within, kv_write, Records};

/// A session's time to live (Consul's least).
pub const SESSION_TTL: Duration = Duration::from_secs(10);
/// How long a lock its session lost stays free (Consul's default).
pub const LOCK_DELAY: Duration = Duration::from_secs(15);
/// The lock keys the clients of a datacenter contend for.
const LOCK_KEYS: u32 = 2;
/// The longest a client holds a lock it won.
const HOLD_MAX_MS: u64 = 20_000;
/// How long a client waits between tries to take a lock.
const RETRY: Duration = Duration::from_millis(200);
/// The longest a client waits for one request before it counts the
/// outcome as unknown.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// A time a client believed it held a lock, virtual microseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    /// The client (unique in the run).
    pub client: u32,
    /// Its node.
    pub node: String,
    /// The lock: `<dc>/<key>`.
    pub key: String,
    /// The session it held the lock with.
    pub session: String,
    /// When its acquire returned true.
    pub from_us: u64,
    /// When it stopped believing: it called release, or its lease ran out.
    pub until_us: u64,
}

/// Every hold of a run's lock clients, in the order they began.
pub type Holds = Records<Hold>;

/// A session this client took, and when the call that last kept it alive
/// (its create or a renew the servers confirmed) was made.
struct Lease {
    id: String,
    confirmed: Duration,
}

impl Lease {
    fn end(&self) -> Duration {
        self.confirmed + SESSION_TTL
    }
}

/// What a request's reply said, as far as the client can tell.
enum Outcome {
    /// Done.
    Yes,
    /// Refused, surely without effect.
    No,
    /// The session is gone.
    Gone,
    /// An error or no answer: it may or may not have happened.
    Unknown,
}

/// One lock client.
pub(super) struct LockClient<E: SimClock> {
    pub(super) env: E,
    pub(super) id: u32,
    pub(super) node: String,
    pub(super) dc: String,
    pub(super) servers: Arc<Servers<E>>,
    pub(super) holds: Holds,
    /// Virtual time the client stops.
    pub(super) until: Duration,
}

impl<E: SimClock> LockClient<E> {
    pub(super) async fn run(self) {
        let mut rng = ChaCha8Rng::seed_from_u64(self.env.seed(&format!("lock-client-{}", self.id)));
        while self.env.true_now() < self.until {
            let Some(mut lease) = self.create(&mut rng).await else {
                self.env.sleep(RETRY).await;
                continue;
            };
            // Contend with this session until it is gone or in doubt.
            while self.env.true_now() < self.until {
                if !self.keep(&mut lease).await {
                    break;
                }
                let key = format!("locks/l{}", rng.random_range(0..LOCK_KEYS));
                let called = self.now();
                match self.acquire(&lease, &key, called).await {
                    Outcome::Yes => {
                        if !self.hold(&mut rng, &mut lease, &key).await {
                            break;
                        }
                    }
                    Outcome::No => {}
                    Outcome::Gone => break,
                    Outcome::Unknown => {
                        // The lock may be ours without our knowing: give
                        // the session up, which frees it after the delay.
                        self.destroy(&lease).await;
                        break;
                    }
                }
                self.env.sleep(RETRY).await;
            }
        }
    }

    /// Holds the lock on `key` just won: records the hold, renews the
    /// session while holding, and releases the lock after a while. False
    /// when the session was lost meanwhile, or given up.
    ///
    /// The client times its lease by its node's clock, as a real one
    /// does; the hold is recorded in true time: from now until the true
    /// time at which that clock will read the lease's end.
    async fn hold(&self, rng: &mut ChaCha8Rng, lease: &mut Lease, key: &str) -> bool {
        let won = self.now();
        let at = self.holds.push(Hold {
            client: self.id,
            node: self.node.clone(),
            key: format!("{}/{key}", self.dc),
            session: lease.id.clone(),
            from_us: micros(self.env.true_now()),
            until_us: self.true_us(lease.end()),
        });
        let release = won + Duration::from_millis(rng.random_range(500..=HOLD_MAX_MS));
        loop {
            let now = self.now();
            if now >= release || self.env.true_now() >= self.until {
                break;
            }
            let renew_at = lease.confirmed + SESSION_TTL / 2;
            if now < renew_at {
                self.env.sleep(renew_at.min(release) - now).await;
                continue;
            }
            if !self.keep(lease).await {
                // Gone, or in doubt past its lease: the lock is lost.
                self.holds.update(at, |h| {
                    h.until_us = self.true_us(lease.end().min(self.now()))
                });
                return false;
            }
            self.holds
                .update(at, |h| h.until_us = self.true_us(lease.end()));
        }
        // From the call on, the client no longer counts on the lock,
        // whether or not the release gets through.
        let now = self.now();
        self.holds
            .update(at, |h| h.until_us = self.true_us(now.min(lease.end())));
        let reply = self
            .call(kv_write(
                KvOp::Unlock {
                    session: lease.id.clone(),
                },
                key,
                b"",
            ))
            .await;
        // A release whose fate is unknown may still apply later, and would
        // then free a lock this session won again meanwhile: give the
        // session up instead.
        if matches!(reply.map(|r| r.answer), Some(Ok(Answer::Written(_)))) {
            return true;
        }
        self.destroy(lease).await;
        false
    }

    /// Gives the session up (best effort: if this fails, its TTL ends it).
    async fn destroy(&self, lease: &Lease) {
        self.call(ClientRequest::Write {
            cmd: Box::new(Command::SessionDestroy {
                id: lease.id.clone(),
            }),
            hops: 0,
        })
        .await;
    }

    /// Renews the session if half its TTL has passed since it was last
    /// confirmed. False once it is gone or its lease ran out.
    async fn keep(&self, lease: &mut Lease) -> bool {
        let called = self.now();
        if called < lease.confirmed + SESSION_TTL / 2 {
            return true;
        }
        let reply = self
            .call(ClientRequest::SessionRenew {
                id: lease.id.clone(),
                hops: 0,
            })
            .await;
        match reply.map(|r| r.answer) {
            Some(Ok(Answer::Sessions(s))) if !s.is_empty() => {
                lease.confirmed = called;
                true
            }
            Some(Ok(Answer::Sessions(_))) => false,
            // In doubt: wait before asking again (an error can come back
            // at once), for as long as the lease still holds.
            _ => {
                self.env.sleep(RETRY).await;
                self.now() < lease.end()
            }
        }
    }

    /// Takes a new session on this node.
    async fn create(&self, rng: &mut ChaCha8Rng) -> Option<Lease> {
        let id = cairn::format::format_uuid(rng.random());
        let called = self.now();
        let session = Session {
            id: id.clone(),
            name: format!("lock-client-{}", self.id),
            node: self.node.clone(),
            checks: vec![SERF_CHECK.to_string()],
            lock_delay_ms: LOCK_DELAY.as_millis() as u64,
            behavior: Behavior::Release,
            ttl: format!("{}s", SESSION_TTL.as_secs()),
            ..Session::default()
        };
        let reply = self
            .call(ClientRequest::Write {
                cmd: Box::new(Command::SessionCreate(session)),
                hops: 0,
            })
            .await;
        match reply.map(|r| r.answer) {
            Some(Ok(Answer::Written(true))) => Some(Lease {
                id,
                confirmed: called,
            }),
            _ => None,
        }
    }

    async fn acquire(&self, lease: &Lease, key: &str, called: Duration) -> Outcome {
        let value = format!("{}/{}/{}", self.node, self.id, called.as_micros());
        let reply = self
            .call(kv_write(
                KvOp::Lock {
                    session: lease.id.clone(),
                },
                key,
                value.as_bytes(),
            ))
            .await;
        match reply.map(|r| r.answer) {
            Some(Ok(Answer::Written(true))) => Outcome::Yes,
            Some(Ok(Answer::Written(false))) => Outcome::No,
            Some(Err(e)) if e.to_string().contains("invalid session") => Outcome::Gone,
            _ => Outcome::Unknown,
        }
    }

    async fn call(&self, req: ClientRequest) -> Option<ClientReply> {
        call_within(&self.env, &self.servers, req, CALL_TIMEOUT).await
    }

    /// The node's clock, by which the client decides.
    fn now(&self) -> Duration {
        self.env.now().as_duration()
    }

    /// When (true time, µs) the node's clock reads `reading`.
    fn true_us(&self, reading: Duration) -> u64 {
        micros(self.env.true_time(reading))
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

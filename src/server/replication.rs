//! ACL replication, Consul's model: the primary datacenter owns policies,
//! roles and global tokens. A secondary's leader copies them from the
//! primary with blocking reads (as the replication token) and writes the
//! copy through its own Raft log, so its servers resolve tokens
//! themselves, even while the primary is out of reach. A secondary sends
//! writes of what the primary owns to the primary, and answers once its
//! copy has caught up with them.

use std::time::Duration;

use super::node::{wall_ms, Server};
use super::request::{
    Answer, ClientReply, ClientRequest, Consistency, Query, Read, ReplicationConfig,
    ReplicationStatus,
};
use crate::env::Env;
use crate::state::Command;

/// How long a blocking read of the primary waits for a change.
const BLOCK_MS: u64 = 30_000;
/// The pause after a failed round (doubling up to `MAX_BACKOFF`).
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How long a write sent to the primary waits for the copy to catch up.
const CATCH_UP: Duration = Duration::from_secs(10);

impl<E: Env> Server<E> {
    /// Makes this server a secondary that replicates ACLs from
    /// `config.primary`; the returned task runs the replication while
    /// this server leads.
    pub fn replicate_acls(
        self: &std::sync::Arc<Self>,
        config: ReplicationConfig,
    ) -> crate::env::Task {
        {
            let mut st = self
                .replication
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            st.enabled = true;
            st.source_datacenter = config.primary.clone();
            st.replication_type = if config.tokens { "tokens" } else { "policies" }.into();
        }
        let _ = self.replication.config.set(config);
        let me = std::sync::Arc::downgrade(self);
        self.env.spawn(async move {
            let mut backoff = MIN_BACKOFF;
            loop {
                let Some(server) = me.upgrade() else {
                    return;
                };
                let env = server.env.clone();
                if !server.is_leader() {
                    server.set_running(false);
                    drop(server);
                    env.sleep(Duration::from_secs(1)).await;
                    continue;
                }
                server.set_running(true);
                let pause = match server.replicate_once().await {
                    Ok(()) => {
                        backoff = MIN_BACKOFF;
                        None
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "ACL replication failed");
                        server.record_error(&e);
                        let p = backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        Some(p)
                    }
                };
                drop(server);
                if let Some(p) = pause {
                    env.sleep(p).await;
                }
            }
        })
    }

    fn set_running(&self, running: bool) {
        let mut st = self
            .replication
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        st.running = running;
    }

    fn record_error(&self, why: &str) {
        let mut st = self
            .replication
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        st.last_error_ms = Some(wall_ms(&self.env));
        st.last_error_message = why.to_string();
    }

    /// The primary datacenter, if this server replicates from one.
    pub(super) fn primary(&self) -> Option<&ReplicationConfig> {
        self.replication.config.get()
    }

    /// One read of the primary's ACLs: blocking until they change past
    /// what was copied, then copied through our log.
    async fn replicate_once(&self) -> Result<(), String> {
        let config = self.primary().ok_or("not a secondary")?.clone();
        let since = *self.replication.reached.borrow();
        let read = |query: Query, min_index: u64, max_wait_ms: u64| {
            let req = ClientRequest::Read {
                read: Read {
                    consistency: Consistency::Default,
                    min_index,
                    max_wait_ms,
                    query,
                },
                hops: 0,
            };
            match &config.token {
                Some(t) => req.with_token(t),
                None => req,
            }
        };
        let ask = |req: ClientRequest| async {
            let reply = self.remote(config.primary.clone(), req, None).await;
            match reply.answer {
                Ok(a) => Ok((reply.index, a)),
                Err(e) => Err(format!("reading the primary's ACLs: {e}")),
            }
        };
        let (index, policies) = match ask(read(Query::AclPolicies, since, BLOCK_MS)).await? {
            (i, Answer::AclPolicies(p)) => (i, p),
            (_, other) => return Err(format!("unexpected answer {other:?}")),
        };
        if index == since && since > 0 {
            // The wait ran out with nothing new.
            self.record_success(index);
            return Ok(());
        }
        let roles = match ask(read(Query::AclRoles, 0, 0)).await? {
            (_, Answer::AclRoles(r)) => r,
            (_, other) => return Err(format!("unexpected answer {other:?}")),
        };
        let tokens = if config.tokens {
            match ask(read(Query::AclTokens, 0, 0)).await? {
                (_, Answer::AclTokens(t)) => {
                    if t.iter().any(|t| t.secret_id == "<hidden>") {
                        return Err(
                            "the replication token may not read secrets (it needs acl = \"write\"); tokens are not replicated"
                                .into(),
                        );
                    }
                    Some(t)
                }
                (_, other) => return Err(format!("unexpected answer {other:?}")),
            }
        } else {
            None
        };
        let cmd = Command::AclReplicate {
            policies,
            roles,
            tokens,
        };
        self.write(cmd, 0, None)
            .await
            .answer
            .map_err(|e| format!("writing the copy: {e}"))?;
        self.record_success(index);
        Ok(())
    }

    fn record_success(&self, index: u64) {
        {
            let mut st = self
                .replication
                .status
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            st.replicated_index = index;
            st.last_success_ms = Some(wall_ms(&self.env));
        }
        self.replication.reached.send_replace(index);
    }

    /// Whether `cmd` changes what the primary owns (so a secondary sends
    /// it there).
    pub(super) fn owned_by_primary(&self, cmd: &Command) -> bool {
        if self.primary().is_none() {
            return false;
        }
        match cmd {
            Command::AclBootstrap(_)
            | Command::AclPolicySet(_)
            | Command::AclPolicyDelete { .. }
            | Command::AclRoleSet(_)
            | Command::AclRoleDelete { .. } => true,
            Command::AclTokenSet(t) => !t.local,
            Command::AclTokenDelete { accessor_id } => {
                let store = self.store.read().unwrap_or_else(|e| e.into_inner());
                store.acl().token(accessor_id).is_some_and(|t| !t.local)
            }
            _ => false,
        }
    }

    /// Sends a write of what the primary owns there, and answers once our
    /// copy has caught up with it (or after `CATCH_UP`: the write is done
    /// either way), so what a client wrote it can read here.
    pub(super) async fn write_at_primary(&self, cmd: Command, token: Option<&str>) -> ClientReply {
        let Some(primary) = self.primary().map(|p| p.primary.clone()) else {
            return ClientReply::refused("not a secondary datacenter");
        };
        let req = ClientRequest::Write {
            cmd: Box::new(cmd),
            hops: 0,
        };
        let req = match token {
            Some(t) => req.with_token(t),
            None => req,
        };
        let reply = self.remote(primary, req, None).await;
        if reply.answer.is_ok() {
            let mut reached = self.replication.reached.subscribe();
            let index = reply.index;
            let _ =
                crate::env::timeout(&self.env, CATCH_UP, reached.wait_for(|r| *r >= index)).await;
        }
        reply
    }

    /// This server's replication status (the leader's is the one that
    /// runs).
    pub(super) fn replication_status(&self) -> ReplicationStatus {
        self.replication
            .status
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

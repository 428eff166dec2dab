//! The agent's own services and checks, and anti-entropy: keeping the
//! servers' catalog entry for this node equal to them, as Consul's agents
//! do. Registrations change only the local state; a sync task writes the
//! difference to the catalog at once and then every minute or so (longer in
//! big clusters), so a catalog that lost or changed something (a server
//! restored from an old snapshot, an operator's stray deregistration) is
//! put right.
//!
//! TTL checks live here too: each must be refreshed (`pass`, `warn`,
//! `fail`, `update`) within its TTL, or it turns critical. So do alias
//! checks of this agent's own services: they are worked out again
//! whenever a check changes. Probes and aliases of other nodes run in
//! tasks ([`run_probes`], [`run_remote_aliases`]) that report here.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use super::probes::{self, alias, AliasTarget, Probe};
use super::Servers;
use crate::env::{Env, Task};
use crate::server::{Answer, ClientRequest, Consistency, Query, Read, SERF_CHECK};
use crate::state::{Check, Command, Health, Node, Service};
use crate::time::Instant;

/// A check the agent owns.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalCheck {
    /// The check as the catalog will hold it.
    pub check: Check,
    /// For TTL checks: how long an update holds.
    pub ttl: Option<Duration>,
    /// When the TTL runs out.
    pub expires: Option<Instant>,
    /// For probed checks: what the agent probes, and when next.
    pub probe: Option<(Probe, Instant)>,
    /// For alias checks: what they mirror.
    pub alias: Option<AliasTarget>,
    /// Remove the check's service once it has been critical this long.
    pub deregister_after: Option<Duration>,
    /// Since when it has been critical.
    pub critical_since: Option<Instant>,
}

/// A check to register.
#[derive(Debug, Clone, PartialEq)]
pub struct NewCheck {
    /// The check.
    pub check: Check,
    /// How it is kept up to date (`None`: only through updates).
    pub kind: Option<Kind>,
    /// Consul's `DeregisterCriticalServiceAfter`.
    pub deregister_after: Option<Duration>,
}

impl NewCheck {
    /// A check of `kind` and nothing more.
    pub fn new(check: Check, kind: Option<Kind>) -> Self {
        NewCheck {
            check,
            kind,
            deregister_after: None,
        }
    }
}

/// How a check is kept up to date.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    /// Updated through the API within a time to live.
    Ttl(Duration),
    /// Probed by the agent.
    Probe(Probe),
    /// The health of another node's or service's checks.
    Alias(AliasTarget),
}

/// Why a change to the local state was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocalError {
    /// No such check.
    #[error("Unknown check ID {0:?}. Ensure that the check ID is passed, not the check name.")]
    UnknownCheck(String),
    /// No such service.
    #[error(
        "Unknown service ID {0:?}. Ensure that the service ID is passed, not the service name."
    )]
    UnknownService(String),
    /// A check names a service this agent does not have.
    #[error("ServiceID {0:?} does not exist")]
    MissingService(String),
    /// Anything else wrong with the request.
    #[error("{0}")]
    Invalid(String),
}

#[derive(Debug, Default)]
struct Inner {
    services: BTreeMap<String, Service>,
    checks: BTreeMap<String, LocalCheck>,
    /// The latest time a change came with (a removal comes with none, and
    /// an alias it turns critical is critical since then).
    now: Instant,
}

impl Inner {
    /// Works out this agent's own alias checks again; whether one changed.
    fn refresh_aliases(&mut self, now: Instant) -> bool {
        self.now = self.now.max(now);
        let now = self.now;
        let ids: Vec<String> = self
            .checks
            .iter()
            .filter(|(_, c)| c.alias.as_ref().is_some_and(|a| a.node.is_empty()))
            .map(|(id, _)| id.clone())
            .collect();
        let mut changed = false;
        // An alias may mirror a service with an alias of its own: go round
        // until nothing moves (a chain settles in one round per alias).
        for _ in 0..=ids.len() {
            let mut moved = false;
            for id in &ids {
                let Some(target) = self.checks.get(id).and_then(|c| c.alias.clone()) else {
                    continue;
                };
                // Not itself: its own status would hold it where it is.
                let others = self
                    .checks
                    .iter()
                    .filter(|(k, _)| *k != id)
                    .map(|(_, c)| &c.check);
                let v = alias::evaluate(&target, others);
                let (status, output) =
                    if !v.service_found && !self.services.contains_key(&target.service) {
                        alias::not_found(&target)
                    } else {
                        (v.status, v.output)
                    };
                if let Some(c) = self.checks.get_mut(id) {
                    moved |= set_status(c, status, &output, now);
                }
            }
            changed |= moved;
            if !moved {
                break;
            }
        }
        changed
    }
}

/// Sets a check's status and output; whether either changed.
fn set_status(c: &mut LocalCheck, status: Health, output: &str, now: Instant) -> bool {
    if c.check.status == status && c.check.output == output {
        return false;
    }
    c.check.status = status;
    c.check.output = output.to_owned();
    c.critical_since = match (status, c.critical_since) {
        (Health::Critical, None) => Some(now),
        (Health::Critical, since) => since,
        _ => None,
    };
    true
}

/// The agent's services and checks; see the [module docs](self).
#[derive(Debug, Default)]
pub struct LocalState {
    node: String,
    inner: Mutex<Inner>,
    changed: Notify,
}

impl LocalState {
    /// The state of the agent called `node`.
    pub fn new(node: &str) -> Self {
        LocalState {
            node: node.to_owned(),
            ..LocalState::default()
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds or replaces a service and the checks that come with it.
    pub fn add_service(
        &self,
        mut service: Service,
        checks: Vec<NewCheck>,
        now: Instant,
    ) -> Result<(), LocalError> {
        if service.service.is_empty() {
            return Err(LocalError::Invalid("Missing service name".into()));
        }
        if service.id.is_empty() {
            service.id = service.service.clone();
        }
        let mut inner = self.lock();
        // Consul numbers a service's checks from 1 only when it has several.
        let several = checks.len() > 1;
        for (i, mut spec) in checks.into_iter().enumerate() {
            let c = &mut spec.check;
            if c.check_id.is_empty() {
                c.check_id = if several {
                    format!("service:{}:{}", service.id, i + 1)
                } else {
                    format!("service:{}", service.id)
                };
            }
            if c.name.is_empty() {
                c.name = format!("Service '{}' check", service.service);
            }
            c.service_id = service.id.clone();
            self.put_check(&mut inner, spec, &service, now);
        }
        inner.services.insert(service.id.clone(), service);
        inner.refresh_aliases(now);
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    fn put_check(&self, inner: &mut Inner, spec: NewCheck, service: &Service, now: Instant) {
        let mut c = spec.check;
        c.node = self.node.clone();
        c.service_name = service.service.clone();
        c.service_tags = service.tags.clone();
        c.check_type = match &spec.kind {
            Some(Kind::Ttl(_)) => "ttl".into(),
            Some(Kind::Probe(p)) => p.target.check_type().into(),
            Some(Kind::Alias(_)) => "alias".into(),
            None => c.check_type,
        };
        let (ttl, probe, alias) = match spec.kind {
            Some(Kind::Ttl(t)) => (Some(t), None, None),
            // The first probe goes out at once.
            Some(Kind::Probe(p)) => (None, Some((p, now)), None),
            Some(Kind::Alias(a)) => (None, None, Some(a)),
            None => (None, None, None),
        };
        let critical_since = (c.status == Health::Critical).then_some(now);
        inner.checks.insert(
            c.check_id.clone(),
            LocalCheck {
                check: c,
                ttl,
                expires: ttl.map(|t| now + t),
                probe,
                alias,
                deregister_after: spec.deregister_after,
                critical_since,
            },
        );
    }

    /// The probes due at `now`. Each is due again an interval after it
    /// ends ([`probe_done`](Self::probe_done)), as Consul's run one after
    /// the other; until then, no sooner than its timeout and interval.
    fn due_probes(&self, now: Instant) -> Vec<(String, Probe)> {
        let mut due = Vec::new();
        for (id, c) in self.lock().checks.iter_mut() {
            if let Some((p, next)) = &mut c.probe {
                if *next <= now {
                    *next = now + p.timeout + p.interval;
                    due.push((id.clone(), p.clone()));
                }
            }
        }
        due
    }

    /// A try of check `id`'s `probe` ended at `now`: the next is due an
    /// interval later (unless the check changed meanwhile).
    fn probe_done(&self, id: &str, probe: &Probe, now: Instant) {
        if let Some(c) = self.lock().checks.get_mut(id) {
            if let Some((p, next)) = &mut c.probe {
                if p == probe {
                    *next = now + p.interval;
                }
            }
        }
    }

    /// The alias checks that mirror another node, by check ID.
    fn remote_aliases(&self) -> BTreeMap<String, AliasTarget> {
        self.lock()
            .checks
            .iter()
            .filter_map(|(id, c)| match &c.alias {
                Some(a) if !a.node.is_empty() => Some((id.clone(), a.clone())),
                _ => None,
            })
            .collect()
    }

    /// Removes a service and its checks.
    pub fn remove_service(&self, id: &str) -> Result<(), LocalError> {
        let mut inner = self.lock();
        if inner.services.remove(id).is_none() {
            return Err(LocalError::UnknownService(id.into()));
        }
        inner.checks.retain(|_, c| c.check.service_id != id);
        let now = inner.now;
        inner.refresh_aliases(now);
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// Adds or replaces a check (of the node, or of a local service).
    pub fn add_check(&self, spec: NewCheck, now: Instant) -> Result<(), LocalError> {
        let NewCheck {
            mut check,
            kind,
            deregister_after,
        } = spec;
        if check.check_id.is_empty() {
            check.check_id = check.name.clone();
        }
        if check.check_id.is_empty() {
            return Err(LocalError::Invalid("Missing check name".into()));
        }
        if check.name.is_empty() {
            check.name = check.check_id.clone();
        }
        let mut inner = self.lock();
        let service = if check.service_id.is_empty() {
            Service::default()
        } else {
            inner
                .services
                .get(&check.service_id)
                .cloned()
                .ok_or_else(|| LocalError::MissingService(check.service_id.clone()))?
        };
        let spec = NewCheck {
            check,
            kind,
            deregister_after,
        };
        self.put_check(&mut inner, spec, &service, now);
        inner.refresh_aliases(now);
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// Removes a check.
    pub fn remove_check(&self, id: &str) -> Result<(), LocalError> {
        let mut inner = self.lock();
        if inner.checks.remove(id).is_none() {
            return Err(LocalError::UnknownCheck(id.into()));
        }
        let now = inner.now;
        inner.refresh_aliases(now);
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// Sets a check's status and output, and restarts its TTL.
    pub fn update_check(
        &self,
        id: &str,
        status: Health,
        output: &str,
        now: Instant,
    ) -> Result<(), LocalError> {
        let mut inner = self.lock();
        let c = inner
            .checks
            .get_mut(id)
            .ok_or_else(|| LocalError::UnknownCheck(id.into()))?;
        c.expires = c.ttl.map(|t| now + t);
        if !set_status(c, status, output, now) {
            return Ok(());
        }
        inner.refresh_aliases(now);
        drop(inner);
        self.changed.notify_one();
        Ok(())
    }

    /// TTL checks whose time ran out turn critical; whether any did.
    pub fn expire(&self, now: Instant) -> bool {
        let mut expired = false;
        let mut inner = self.lock();
        for c in inner.checks.values_mut() {
            if c.expires.is_some_and(|t| t <= now) && c.check.status != Health::Critical {
                c.check.status = Health::Critical;
                c.check.output = "TTL expired".into();
                c.critical_since = Some(now);
                expired = true;
            }
        }
        if expired {
            inner.refresh_aliases(now);
        }
        drop(inner);
        if expired {
            self.changed.notify_one();
        }
        expired
    }

    /// When the next TTL runs out, if one is running.
    fn next_expiry(&self) -> Option<Instant> {
        self.lock()
            .checks
            .values()
            .filter(|c| c.check.status != Health::Critical)
            .filter_map(|c| c.expires)
            .min()
    }

    /// Removes the services with a check that has been critical for longer
    /// than its `deregister_after`; their IDs.
    pub fn reap_critical(&self, now: Instant) -> Vec<String> {
        let doomed: Vec<String> = self
            .lock()
            .checks
            .values()
            .filter(|c| !c.check.service_id.is_empty())
            .filter(|c| match (c.deregister_after, c.critical_since) {
                (Some(after), Some(since)) => now.saturating_duration_since(since) >= after,
                _ => false,
            })
            .map(|c| c.check.service_id.clone())
            .collect();
        for id in &doomed {
            tracing::info!(service = %id, "deregistering a service critical for too long");
            let _ = self.remove_service(id);
        }
        doomed
    }

    /// Every local service, by ID.
    pub fn services(&self) -> Vec<Service> {
        self.lock().services.values().cloned().collect()
    }

    /// Every local check, by ID.
    pub fn checks(&self) -> Vec<Check> {
        self.lock()
            .checks
            .values()
            .map(|c| c.check.clone())
            .collect()
    }
}

/// Runs the probed checks of `local` until the agent stops, each every
/// interval, each try bounded by its timeout.
pub async fn run_probes<E: Env>(env: E, local: Arc<LocalState>) {
    let mut running: Vec<crate::env::Task> = Vec::new();
    loop {
        running.retain(|t| !t.is_finished());
        for (id, probe) in local.due_probes(env.now()) {
            let (env2, local2) = (env.clone(), local.clone());
            running.push(env.spawn(async move {
                let (status, output) = probes::probe_once(&env2, &probe).await;
                // Deregistered meanwhile: nothing to update.
                let _ = local2.update_check(&id, status, &output, env2.now());
                local2.probe_done(&id, &probe, env2.now());
            }));
        }
        env.sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the alias checks of `local` that mirror another node until the
/// agent stops: one task follows each through the servers
/// ([`alias::watch`]), started when the check is added and stopped when
/// it goes or changes.
pub async fn run_remote_aliases<E: Env>(env: E, local: Arc<LocalState>, servers: Arc<Servers<E>>) {
    let mut watching: BTreeMap<String, (AliasTarget, Task)> = BTreeMap::new();
    loop {
        let wanted = local.remote_aliases();
        watching.retain(|id, (target, _)| wanted.get(id) == Some(target));
        for (id, target) in wanted {
            if watching.contains_key(&id) {
                continue;
            }
            let (env2, local2, id2) = (env.clone(), local.clone(), id.clone());
            let report = move |status: Health, output: String| {
                // Deregistered meanwhile: nothing to update.
                let _ = local2.update_check(&id2, status, &output, env2.now());
            };
            let task = env.spawn(alias::watch(
                env.clone(),
                servers.clone(),
                target.clone(),
                report,
            ));
            watching.insert(id, (target, task));
        }
        env.sleep(Duration::from_millis(500)).await;
    }
}

/// A full sync at least this often (Consul's anti-entropy interval), more
/// rarely in big clusters: × (1 + log2(N / 128)) above 128 nodes.
const SYNC_INTERVAL: Duration = Duration::from_secs(60);

fn sync_interval(members: usize) -> Duration {
    if members <= 128 {
        return SYNC_INTERVAL;
    }
    SYNC_INTERVAL.mul_f64(1.0 + (members as f64 / 128.0).log2())
}

/// Runs anti-entropy for `local` until the agent stops: syncs at start, on
/// every change, and every [`sync_interval`]; expires TTL checks when they
/// run out.
pub async fn anti_entropy<E: Env>(
    env: E,
    local: Arc<LocalState>,
    node: Node,
    servers: Arc<Servers<E>>,
    gossip: crate::gossip::Gossip,
) {
    // Aliases of other nodes read through the servers, which only this
    // task is given; they stop with it.
    let _aliases = env.spawn(run_remote_aliases(
        env.clone(),
        local.clone(),
        servers.clone(),
    ));
    let mut next_full = env.now();
    let mut dirty = true;
    loop {
        local.expire(env.now());
        local.reap_critical(env.now());
        if dirty || env.now() >= next_full {
            match sync_once(&local, &node, &servers).await {
                Ok(()) => {
                    dirty = false;
                    let members = gossip.members().await.map_or(1, |m| m.len());
                    next_full = env.now() + sync_interval(members);
                }
                // No servers yet, or no leader: try again shortly.
                Err(e) => tracing::debug!(error = %e, "anti-entropy sync failed; will retry"),
            }
        }
        // Wake when a TTL runs out, so its check turns critical on time.
        let tick = Duration::from_secs(1);
        let wait = local
            .next_expiry()
            .map_or(tick, |t| t.saturating_duration_since(env.now()).min(tick));
        tokio::select! {
            _ = local.changed.notified() => dirty = true,
            _ = env.sleep(wait) => {}
        }
    }
}

/// Service and check fields that matter, indexes aside.
fn same_service(a: &Service, b: &Service) -> bool {
    let strip = |s: &Service| Service {
        create_index: 0,
        modify_index: 0,
        ..s.clone()
    };
    strip(a) == strip(b)
}

fn same_check(a: &Check, b: &Check) -> bool {
    let strip = |c: &Check| Check {
        create_index: 0,
        modify_index: 0,
        ..c.clone()
    };
    strip(a) == strip(b)
}

/// One pass: reads this node's catalog entry and writes what differs.
async fn sync_once<E: Env>(
    local: &LocalState,
    node: &Node,
    servers: &Servers<E>,
) -> Result<(), String> {
    let read = |query| ClientRequest::Read {
        read: Read {
            consistency: Consistency::Default,
            min_index: 0,
            max_wait_ms: 0,
            query,
        },
        hops: 0,
    };
    let remote_services = match servers
        .call(read(Query::NodeServices(node.node.clone())))
        .await
        .answer?
    {
        Answer::NodeServices(v) => v.map(|(_, s)| s).unwrap_or_default(),
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let remote_checks = match servers
        .call(read(Query::NodeChecks(node.node.clone())))
        .await
        .answer?
    {
        Answer::Checks(c) => c,
        other => return Err(format!("unexpected answer {other:?}")),
    };
    let services = local.services();
    let checks = local.checks();
    let mut writes = Vec::new();
    for s in &services {
        let mine: Vec<Check> = checks
            .iter()
            .filter(|c| c.service_id == s.id)
            .cloned()
            .collect();
        let in_sync = remote_services
            .iter()
            .any(|r| r.id == s.id && same_service(r, s))
            && mine.iter().all(|c| {
                remote_checks
                    .iter()
                    .any(|r| r.check_id == c.check_id && same_check(r, c))
            });
        if !in_sync {
            writes.push(Command::Register {
                node: node.clone(),
                service: Some(Box::new(s.clone())),
                checks: mine,
            });
        }
    }
    for c in checks.iter().filter(|c| c.service_id.is_empty()) {
        if !remote_checks
            .iter()
            .any(|r| r.check_id == c.check_id && same_check(r, c))
        {
            writes.push(Command::Register {
                node: node.clone(),
                service: None,
                checks: vec![c.clone()],
            });
        }
    }
    for r in &remote_services {
        // The servers' own "consul" service is the leader's to keep.
        if r.id != crate::server::reconcile::CONSUL_SERVICE
            && !services.iter().any(|s| s.id == r.id)
        {
            writes.push(Command::Deregister {
                node: node.node.clone(),
                service_id: Some(r.id.clone()),
                check_id: None,
            });
        }
    }
    for r in &remote_checks {
        let service_gone =
            !r.service_id.is_empty() && !services.iter().any(|s| s.id == r.service_id);
        if r.check_id != SERF_CHECK
            && !service_gone
            && !checks.iter().any(|c| c.check_id == r.check_id)
        {
            writes.push(Command::Deregister {
                node: node.node.clone(),
                service_id: None,
                check_id: Some(r.check_id.clone()),
            });
        }
    }
    for cmd in writes {
        servers
            .call(ClientRequest::Write {
                cmd: Box::new(cmd),
                hops: 0,
            })
            .await
            .answer?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn svc(id: &str, name: &str) -> Service {
        Service {
            id: id.into(),
            service: name.into(),
            ..Service::default()
        }
    }

    #[test]
    fn services_bring_their_checks_and_take_them_away() {
        let l = LocalState::new("n1");
        let t0 = Instant::ZERO;
        let ttl = NewCheck::new(Check::default(), Some(Kind::Ttl(Duration::from_secs(10))));
        l.add_service(svc("", "web"), vec![ttl.clone(), ttl], t0)
            .unwrap();
        let checks = l.checks();
        let ids: Vec<&str> = checks.iter().map(|c| c.check_id.as_str()).collect();
        assert_eq!(ids, ["service:web:1", "service:web:2"]);
        assert!(checks
            .iter()
            .all(|c| c.node == "n1" && c.service_name == "web"));
        assert_eq!(
            checks[0].status,
            Health::Critical,
            "Consul's initial status"
        );
        l.remove_service("web").unwrap();
        assert!(l.checks().is_empty());
        assert_eq!(
            l.remove_service("web"),
            Err(LocalError::UnknownService("web".into()))
        );
    }

    #[test]
    fn ttl_checks_expire_unless_refreshed() {
        let l = LocalState::new("n1");
        let t0 = Instant::ZERO;
        let c = Check {
            check_id: "beat".into(),
            ..Check::default()
        };
        l.add_check(
            NewCheck::new(c, Some(Kind::Ttl(Duration::from_secs(5)))),
            t0,
        )
        .unwrap();
        l.update_check("beat", Health::Passing, "ok", t0).unwrap();
        assert!(!l.expire(t0 + Duration::from_secs(4)));
        l.update_check("beat", Health::Passing, "ok", t0 + Duration::from_secs(4))
            .unwrap();
        assert!(!l.expire(t0 + Duration::from_secs(8)));
        assert!(l.expire(t0 + Duration::from_secs(9)));
        let c = &l.checks()[0];
        assert_eq!(
            (c.status, c.output.as_str()),
            (Health::Critical, "TTL expired")
        );
        assert_eq!(
            l.update_check("nope", Health::Passing, "", t0),
            Err(LocalError::UnknownCheck("nope".into()))
        );
        let orphan = Check {
            check_id: "x".into(),
            service_id: "ghost".into(),
            ..Check::default()
        };
        assert!(matches!(
            l.add_check(NewCheck::new(orphan, None), t0),
            Err(LocalError::MissingService(_))
        ));
    }

    #[test]
    fn a_service_critical_for_too_long_is_deregistered() {
        let l = LocalState::new("n1");
        let t0 = Instant::ZERO;
        let check = NewCheck {
            deregister_after: Some(Duration::from_secs(60)),
            ..NewCheck::new(Check::default(), Some(Kind::Ttl(Duration::from_secs(10))))
        };
        l.add_service(svc("web", "web"), vec![check], t0).unwrap();
        // Critical from the start; passing at 30 s resets the clock.
        l.update_check(
            "service:web",
            Health::Passing,
            "",
            t0 + Duration::from_secs(30),
        )
        .unwrap();
        assert!(l.expire(t0 + Duration::from_secs(40)));
        assert!(l.reap_critical(t0 + Duration::from_secs(99)).is_empty());
        assert_eq!(l.reap_critical(t0 + Duration::from_secs(100)), ["web"]);
        assert!(l.services().is_empty() && l.checks().is_empty());
    }

    #[test]
    fn local_aliases_follow_the_service_they_mirror() {
        let l = LocalState::new("n1");
        let t0 = Instant::ZERO;
        let named = |id: &str| Check {
            check_id: id.into(),
            name: id.into(),
            ..Check::default()
        };
        let ttl = |id: &str| NewCheck::new(named(id), Some(Kind::Ttl(Duration::from_secs(60))));
        let alias = |id: &str, service: &str| {
            let target = AliasTarget {
                node: String::new(),
                service: service.into(),
            };
            NewCheck::new(named(id), Some(Kind::Alias(target)))
        };
        l.add_service(svc("web", "web"), vec![ttl("web-ttl")], t0)
            .unwrap();
        // A sidecar's alias of web, and an alias of the sidecar.
        l.add_service(svc("side", "side"), vec![alias("side-alias", "web")], t0)
            .unwrap();
        l.add_service(
            svc("outer", "outer"),
            vec![alias("outer-alias", "side")],
            t0,
        )
        .unwrap();
        let status = |id: &str| {
            let c = l.checks().into_iter().find(|c| c.check_id == id).unwrap();
            (c.status, c.output, c.check_type)
        };
        let (s, out, kind) = status("side-alias");
        assert_eq!((s, kind.as_str()), (Health::Critical, "alias"));
        assert_eq!(out, "Aliased check \"web-ttl\" failing: ");
        l.update_check("web-ttl", Health::Passing, "ok", t0)
            .unwrap();
        assert_eq!(status("side-alias").0, Health::Passing);
        assert_eq!(status("outer-alias").0, Health::Passing, "chains settle");
        l.update_check("web-ttl", Health::Warning, "slow", t0)
            .unwrap();
        assert_eq!(
            status("outer-alias").1,
            "Aliased check \"side-alias\" failing: Aliased check \"web-ttl\" failing: slow"
        );
        assert_eq!(status("outer-alias").0, Health::Warning);
        // A node check counts for every service of the node.
        l.add_check(ttl("node-ttl"), t0).unwrap();
        assert_eq!(status("side-alias").0, Health::Critical);
        l.remove_check("node-ttl").unwrap();
        assert_eq!(status("side-alias").0, Health::Warning);
        l.remove_service("web").unwrap();
        assert_eq!(
            status("side-alias"),
            (
                Health::Critical,
                "Service web could not be found on node ".into(),
                "alias".into()
            )
        );
    }

    #[test]
    fn big_clusters_sync_less_often() {
        assert_eq!(sync_interval(5), Duration::from_secs(60));
        assert_eq!(sync_interval(512), Duration::from_secs(180));
    }
}

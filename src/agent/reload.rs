//! Re-reading the configuration files (`cairn reload`, `PUT
//! /v1/agent/reload`): the services and checks they define replace the
//! ones the last load put in place, and those registered through the API
//! stay.

use std::sync::Arc;

use super::config::{AgentConfig, ConfigError};
use super::local::LocalState;

/// Makes the agent's configuration afresh (re-reading its files).
pub type Reloader = Arc<dyn Fn() -> Result<AgentConfig, ConfigError> + Send + Sync>;

/// The services and checks the config files put in place last, so that a
/// reload can take away the ones no longer defined.
#[derive(Debug, Default)]
struct Loaded {
    services: Vec<String>,
    checks: Vec<String>,
}

/// Applies config-file services and checks, at start and on reload.
pub struct ConfigReload {
    reloader: Reloader,
    local: Arc<LocalState>,
    loaded: std::sync::Mutex<Loaded>,
}

impl ConfigReload {
    /// Reloads with `reloader`, into `local`; nothing loaded yet.
    pub fn new(reloader: Reloader, local: Arc<LocalState>) -> Self {
        ConfigReload {
            reloader,
            local,
            loaded: std::sync::Mutex::new(Loaded::default()),
        }
    }

    /// Reads the configuration again and applies it.
    pub fn reload(&self, now: crate::time::Instant) -> Result<(), ConfigError> {
        let config = (self.reloader)()?;
        config.validate()?;
        self.apply(&config, now)?;
        tracing::info!(
            services = config.services.len(),
            checks = config.checks.len(),
            "configuration reloaded"
        );
        Ok(())
    }

    /// Puts `config`'s services and checks in place, replacing those of
    /// the last load; services and checks registered through the API stay.
    pub(super) fn apply(
        &self,
        config: &AgentConfig,
        now: crate::time::Instant,
    ) -> Result<(), ConfigError> {
        let scripts = config.script_policy().config;
        let mut services = Vec::new();
        let mut sidecar_ports = Vec::new();
        for d in &config.services {
            let fail =
                |e: String| ConfigError(format!("{}: service {:?}: {e}", d.origin, d.def.name));
            let (service, checks) = d.def.to_parts(scripts).map_err(fail)?;
            services.push((service, checks));
            if let Some(sc) = d.def.sidecar(&sidecar_ports).map_err(fail)? {
                sidecar_ports.push(sc.port);
                services.push(sc.to_parts(scripts).map_err(fail)?);
            }
        }
        let mut checks = Vec::new();
        for d in &config.checks {
            let fail =
                |e: String| ConfigError(format!("{}: check {:?}: {e}", d.origin, d.def.name));
            checks.push((d.origin.clone(), d.def.to_check(scripts).map_err(fail)?));
        }
        let mut loaded = self.loaded.lock().unwrap_or_else(|e| e.into_inner());
        // Refuse before changing anything: a check of a service that will
        // not exist.
        let current = self.local.services();
        for (origin, c) in &checks {
            let sid = &c.check.service_id;
            let kept = current
                .iter()
                .any(|s| &s.id == sid && !loaded.services.contains(sid));
            if !sid.is_empty() && !kept && !services.iter().any(|(s, _)| &s.id == sid) {
                return Err(ConfigError(format!(
                    "{origin}: check {:?}: ServiceID {sid:?} does not exist",
                    c.check.name
                )));
            }
        }
        let now_services: Vec<String> = services.iter().map(|(s, _)| s.id.clone()).collect();
        for gone in loaded
            .services
            .iter()
            .filter(|id| !now_services.contains(id))
        {
            let _ = self.local.remove_service(gone);
        }
        for gone in &loaded.checks {
            let _ = self.local.remove_check(gone);
        }
        for (service, checks) in services {
            self.local
                .add_service(service, checks, now)
                .map_err(|e| ConfigError(e.to_string()))?;
        }
        let mut check_ids = Vec::new();
        for (origin, check) in checks {
            let id = if check.check.check_id.is_empty() {
                check.check.name.clone()
            } else {
                check.check.check_id.clone()
            };
            self.local
                .add_check(check, now)
                .map_err(|e| ConfigError(format!("{origin}: check {id:?}: {e}")))?;
            check_ids.push(id);
        }
        *loaded = Loaded {
            services: now_services,
            checks: check_ids,
        };
        Ok(())
    }
}

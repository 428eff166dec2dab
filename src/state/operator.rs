//! What operators set for the whole cluster: autopilot's configuration
//! (Consul's `/v1/operator/autopilot/configuration`), and restoring the
//! store from a snapshot (`PUT /v1/snapshot`).

use serde::{Deserialize, Serialize};

use super::{invalid, StateError, Table, Tx};

/// Autopilot's settings, in Consul's JSON shape. Durations are Go
/// duration strings, as Consul's API writes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct AutopilotConfig {
    /// Remove servers that have failed (after the grace period), as long
    /// as the rest keep a majority and `min_quorum`.
    pub cleanup_dead_servers: bool,
    /// A server that has not heard from the leader for longer is unhealthy.
    pub last_contact_threshold: String,
    /// A server more entries behind the leader than this is unhealthy.
    pub max_trailing_logs: u64,
    /// Dead servers are never cleaned up below this many voters.
    pub min_quorum: u32,
    /// How long a server must be healthy before it counts as stable.
    pub server_stabilization_time: String,
    /// Enterprise's redundancy zones (kept, not acted on).
    pub redundancy_zone_tag: String,
    /// Enterprise's upgrade migrations (kept, not acted on).
    pub disable_upgrade_migration: bool,
    /// Enterprise's upgrade version tag (kept, not acted on).
    pub upgrade_version_tag: String,
    /// Index that created it (0: the defaults, never written).
    pub create_index: u64,
    /// Index of its last change (what `?cas=` compares with).
    pub modify_index: u64,
}

impl Default for AutopilotConfig {
    /// Consul's defaults.
    fn default() -> Self {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold: "200ms".into(),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: "10s".into(),
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            create_index: 0,
            modify_index: 0,
        }
    }
}

impl AutopilotConfig {
    /// Says what is wrong with the settings, if anything.
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("LastContactThreshold", &self.last_contact_threshold),
            ("ServerStabilizationTime", &self.server_stabilization_time),
        ] {
            crate::format::parse_duration(value).map_err(|e| format!("{name} {e}"))?;
        }
        Ok(())
    }

    /// `last_contact_threshold`, read (the default if it does not parse,
    /// which [`validate`](Self::validate) keeps out of the store).
    pub fn last_contact(&self) -> std::time::Duration {
        crate::format::parse_duration(&self.last_contact_threshold)
            .unwrap_or(std::time::Duration::from_millis(200))
    }

    /// `server_stabilization_time`, read.
    pub fn stabilization(&self) -> std::time::Duration {
        crate::format::parse_duration(&self.server_stabilization_time)
            .unwrap_or(std::time::Duration::from_secs(10))
    }
}

impl Tx<'_> {
    /// Sets autopilot's configuration; with `cas`, only if the stored one's
    /// `modify_index` is `cas` (`Ok(false)` otherwise, as Consul answers).
    pub(super) fn autopilot_set(
        &mut self,
        config: &AutopilotConfig,
        cas: Option<u64>,
    ) -> Result<bool, StateError> {
        config.validate().map_err(invalid)?;
        let current = self.data.autopilot.as_ref();
        if cas.is_some_and(|cas| cas != current.map_or(0, |c| c.modify_index)) {
            return Ok(false);
        }
        let mut config = config.clone();
        config.create_index = current.map_or(self.index, |c| c.create_index);
        config.modify_index = self.index;
        self.data.autopilot = Some(config);
        self.touch(Table::Autopilot);
        Ok(true)
    }
}

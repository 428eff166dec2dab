//! Shared by the real-socket tests.

use std::time::Duration;

use cairn::gossip::Config;

/// memberlist's local preset, sped up so socket tests take seconds.
pub fn fast_config() -> Config {
    Config {
        probe_interval: Duration::from_millis(200),
        probe_timeout: Duration::from_millis(100),
        gossip_interval: Duration::from_millis(50),
        push_pull_interval: Duration::from_secs(2),
        suspicion_mult: 3,
        ..Config::local()
    }
}

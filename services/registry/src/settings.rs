//! The registry's own settings (the `[registry]` table).

use std::{collections::BTreeMap, time::Duration};

use agentmesh_chassis::ServiceSettings;
use agentmesh_netguard::NetworkMode;
use serde::{Deserialize, Serialize};

use crate::model::RuntimeKind;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RegistrySettings {
    /// Seconds without a heartbeat before an online workspace goes offline.
    pub liveness_ttl_secs: u64,
    /// Liveness TTL per runtime kind (docker, kubernetes, process, external).
    pub liveness_ttl_secs_by_runtime_kind: BTreeMap<String, u64>,
    /// Seconds a workspace may stay provisioning before it fails.
    pub provisioning_timeout_secs: u64,
    /// Provisioning deadline per agent runtime name, for runtimes that
    /// legitimately take long to boot.
    pub provisioning_timeout_secs_by_agent_runtime: BTreeMap<String, u64>,
    /// How often the sweeps run, in milliseconds.
    pub sweep_interval_ms: u64,
    /// How long events stay available for resuming watchers.
    pub event_retention_secs: u64,
    /// How long heartbeat events stay available (they are many and age fast).
    pub heartbeat_event_retention_secs: u64,
    /// How often the event pump looks for events without being woken.
    pub event_poll_ms: u64,
    /// Which agent URLs are allowed: strict (public only), cluster (also
    /// private ranges) or dev (also loopback).
    pub network_mode: String,
}

impl Default for RegistrySettings {
    fn default() -> Self {
        Self {
            liveness_ttl_secs: 180,
            liveness_ttl_secs_by_runtime_kind: BTreeMap::new(),
            provisioning_timeout_secs: 600,
            provisioning_timeout_secs_by_agent_runtime: BTreeMap::new(),
            sweep_interval_ms: 5_000,
            event_retention_secs: 24 * 3600,
            heartbeat_event_retention_secs: 15 * 60,
            event_poll_ms: 1_000,
            network_mode: NetworkMode::Strict.to_string(),
        }
    }
}

impl ServiceSettings for RegistrySettings {
    const SECTION: &'static str = "registry";

    fn validate(&self, errors: &mut Vec<String>) {
        let positive = |errors: &mut Vec<String>, name: &str, value: u64| {
            if value == 0 {
                errors.push(format!("registry.{name}: must be positive"));
            }
        };
        positive(errors, "liveness_ttl_secs", self.liveness_ttl_secs);
        positive(errors, "provisioning_timeout_secs", self.provisioning_timeout_secs);
        positive(errors, "sweep_interval_ms", self.sweep_interval_ms);
        positive(errors, "event_retention_secs", self.event_retention_secs);
        positive(errors, "heartbeat_event_retention_secs", self.heartbeat_event_retention_secs);
        positive(errors, "event_poll_ms", self.event_poll_ms);
        for (kind, ttl) in &self.liveness_ttl_secs_by_runtime_kind {
            if kind.parse::<RuntimeKind>().is_err() {
                errors.push(format!("registry.liveness_ttl_secs_by_runtime_kind: unknown runtime kind {kind:?}"));
            }
            positive(errors, "liveness_ttl_secs_by_runtime_kind", *ttl);
        }
        for ttl in self.provisioning_timeout_secs_by_agent_runtime.values() {
            positive(errors, "provisioning_timeout_secs_by_agent_runtime", *ttl);
        }
        if let Err(e) = self.network_mode.parse::<NetworkMode>() {
            errors.push(format!("registry.network_mode: {e}"));
        }
    }
}

impl RegistrySettings {
    pub fn network(&self) -> NetworkMode {
        self.network_mode.parse().unwrap_or_default()
    }

    /// The liveness TTL of a runtime kind.
    pub fn liveness_ttl(&self, kind: RuntimeKind) -> Duration {
        let secs = self.liveness_ttl_secs_by_runtime_kind.get(kind.as_str()).copied().unwrap_or(self.liveness_ttl_secs);
        Duration::from_secs(secs)
    }

    /// The provisioning deadline of an agent runtime.
    pub fn provisioning_timeout(&self, agent_runtime: &str) -> Duration {
        let secs = self
            .provisioning_timeout_secs_by_agent_runtime
            .get(agent_runtime)
            .copied()
            .unwrap_or(self.provisioning_timeout_secs);
        Duration::from_secs(secs)
    }

    pub fn shortest_provisioning_timeout(&self) -> Duration {
        let overrides = self.provisioning_timeout_secs_by_agent_runtime.values().copied();
        Duration::from_secs(overrides.chain([self.provisioning_timeout_secs]).min().unwrap_or_default())
    }
}

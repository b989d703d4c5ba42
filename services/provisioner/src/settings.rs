//! The provisioner's own settings (the `[provisioner]` table).

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use agentmesh_chassis::ServiceSettings;
use serde::{Deserialize, Serialize};

use crate::runtime::ResourceLimits;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvisionerSettings {
    /// This mesh installation's id, stamped on every workload and volume.
    /// The orphan sweeper reaps only workloads carrying it, which is what
    /// keeps installations sharing an engine apart. Empty (the default)
    /// means the id generated at first start and kept in
    /// `<data_dir>/mesh-id`; keep it stable (a changed id strands the
    /// workloads stamped with the old one).
    pub mesh_id: String,
    /// Where the provisioner reaches the registry.
    pub registry_address: String,
    /// The service token presented to the registry (one of its
    /// `auth.service_tokens`). Empty when the registry runs without one.
    pub registry_token: String,
    /// The registry address injected into workloads (AGENTMESH_REGISTRY_ADDR);
    /// empty means `registry_address`. Containers usually need an address
    /// other than the provisioner's loopback one.
    pub workload_registry_address: String,
    /// The registry address handed to external agents; empty means
    /// `workload_registry_address`.
    pub external_registry_address: String,
    /// The runtime instances this provisioner manages.
    pub runtimes: Vec<RuntimeConfig>,
    /// A TOML policy file; applied at start when it differs from the stored
    /// policy, and re-read by ReloadPolicy and SIGHUP.
    pub policy_file: Option<PathBuf>,
    /// The resource tiers specs may name.
    pub tiers: Vec<TierConfig>,
    /// The tier of a spec that names none.
    pub default_tier: String,
    /// How long a stopping agent gets before it is killed, by default.
    pub stop_grace_secs: u64,
    /// How often every workload is compared with its record, besides the
    /// engines' events, in milliseconds.
    pub resync_interval_ms: u64,
    /// The first delay of a restart made by a restart policy; it doubles per
    /// consecutive restart.
    pub restart_backoff_initial_ms: u64,
    /// The longest delay between restarts.
    pub restart_backoff_max_ms: u64,
    /// A run that lasted this long resets the restart backoff.
    pub restart_reset_after_secs: u64,
    /// Idle seconds before a workspace hibernates, for specs that do not say;
    /// 0 means never.
    pub hibernate_after_idle_secs: u32,
    /// How often idle workspaces are looked for, in milliseconds.
    pub hibernate_check_interval_ms: u64,
}

impl Default for ProvisionerSettings {
    fn default() -> Self {
        Self {
            mesh_id: String::new(),
            registry_address: "http://127.0.0.1:50051".to_owned(),
            registry_token: String::new(),
            workload_registry_address: String::new(),
            external_registry_address: String::new(),
            runtimes: vec![
                RuntimeConfig::named(RuntimeKindName::Docker, "docker:local"),
                RuntimeConfig::named(RuntimeKindName::Process, "process:local"),
                RuntimeConfig::named(RuntimeKindName::External, "external"),
            ],
            policy_file: None,
            tiers: vec![
                TierConfig::new("small", "half a core, 512 MiB", 500, 512 << 20, 256),
                TierConfig::new("medium", "one core, 1 GiB", 1000, 1 << 30, 512),
                TierConfig::new("large", "two cores, 4 GiB", 2000, 4 << 30, 1024),
            ],
            default_tier: "small".to_owned(),
            stop_grace_secs: 30,
            resync_interval_ms: 30_000,
            restart_backoff_initial_ms: 1_000,
            restart_backoff_max_ms: 300_000,
            restart_reset_after_secs: 600,
            hibernate_after_idle_secs: 0,
            hibernate_check_interval_ms: 10_000,
        }
    }
}

/// The kinds of runtime, as configuration names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKindName {
    Docker,
    Kubernetes,
    Process,
    External,
}

/// One runtime instance.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    pub kind: RuntimeKindName,
    /// The instance's name, recorded as each workspace's owner; unique.
    pub name: String,
    /// Specs of this kind that name no instance land on the default one;
    /// the first instance of a kind is the default unless another says so.
    #[serde(default)]
    pub default: bool,
    /// Docker: the engine endpoint (`unix:///var/run/docker.sock`,
    /// `tcp://host:2375`); empty means the local default.
    #[serde(default)]
    pub endpoint: String,
    /// Docker: the network workloads join; empty means the engine's default.
    #[serde(default)]
    pub network: String,
    /// Kubernetes: the namespace workloads run in.
    #[serde(default)]
    pub namespace: String,
    /// Process: where workloads keep their data and logs; empty means
    /// `<data_dir>/process`.
    #[serde(default)]
    pub state_dir: Option<PathBuf>,
}

impl RuntimeConfig {
    /// An instance of `kind` called `name`, with its kind's defaults.
    pub fn named(kind: RuntimeKindName, name: &str) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            default: false,
            endpoint: String::new(),
            network: String::new(),
            namespace: String::new(),
            state_dir: None,
        }
    }
}

/// A resource tier.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub cpu_millis: u32,
    #[serde(default)]
    pub memory_bytes: u64,
    #[serde(default)]
    pub pids_limit: u32,
}

impl TierConfig {
    fn new(name: &str, description: &str, cpu_millis: u32, memory_bytes: u64, pids_limit: u32) -> Self {
        Self { name: name.to_owned(), description: description.to_owned(), cpu_millis, memory_bytes, pids_limit }
    }

    pub fn limits(&self) -> ResourceLimits {
        ResourceLimits { cpu_millis: self.cpu_millis, memory_bytes: self.memory_bytes, pids_limit: self.pids_limit }
    }
}

/// Where a generated mesh id is kept, under the data directory.
pub const MESH_ID_FILE: &str = "mesh-id";

impl ProvisionerSettings {
    /// Settles the mesh id: as configured, else the one kept in
    /// `<data_dir>/mesh-id`, generated there at first start. It lives beside
    /// the store rather than in it, so that a wiped store still knows which
    /// workloads were its own and the orphan sweeper reaps them.
    pub fn settle_mesh_id(&mut self, data_dir: &Path) -> std::io::Result<()> {
        if self.mesh_id.is_empty() {
            let generate = || uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
            self.mesh_id =
                agentmesh_chassis::installation::load_or_create(&data_dir.join(MESH_ID_FILE), generate, is_mesh_id)?;
        }
        Ok(())
    }
}

fn is_mesh_id(id: &str) -> bool {
    (1..=40).contains(&id.len())
        && id.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !id.starts_with('-')
        && !id.ends_with('-')
}

fn is_tier_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl ServiceSettings for ProvisionerSettings {
    const SECTION: &'static str = "provisioner";

    fn validate(&self, errors: &mut Vec<String>) {
        if !self.mesh_id.is_empty() && !is_mesh_id(&self.mesh_id) {
            errors.push("provisioner.mesh_id: 1-40 characters of [a-z0-9-], not starting or ending with '-'".into());
        }
        for (name, address) in [
            ("registry_address", &self.registry_address),
            ("workload_registry_address", &self.workload_registry_address),
            ("external_registry_address", &self.external_registry_address),
        ] {
            let required = name == "registry_address";
            if (required || !address.is_empty()) && url::Url::parse(address).is_err() {
                errors.push(format!("provisioner.{name}: not a URL (e.g. http://127.0.0.1:50051)"));
            }
        }
        if self.runtimes.is_empty() {
            errors.push("provisioner.runtimes: configure at least one runtime instance".into());
        }
        let mut names = std::collections::BTreeSet::new();
        for runtime in &self.runtimes {
            if runtime.name.is_empty() || runtime.name.len() > 256 || runtime.name.chars().any(char::is_control) {
                errors.push("provisioner.runtimes.name: 1-256 printable characters".into());
            }
            if !names.insert(runtime.name.as_str()) {
                errors.push(format!("provisioner.runtimes.name: {:?} is configured twice", runtime.name));
            }
            if runtime.kind == RuntimeKindName::Kubernetes && runtime.namespace.is_empty() {
                errors
                    .push(format!("provisioner.runtimes.namespace: kubernetes instance {:?} needs one", runtime.name));
            }
        }
        for kind in
            [RuntimeKindName::Docker, RuntimeKindName::Kubernetes, RuntimeKindName::Process, RuntimeKindName::External]
        {
            if self.runtimes.iter().filter(|r| r.kind == kind && r.default).count() > 1 {
                errors.push(format!("provisioner.runtimes.default: more than one default {kind:?} instance"));
            }
        }
        for tier in &self.tiers {
            if !is_tier_name(&tier.name) {
                errors.push(format!("provisioner.tiers.name: {:?} is not 1-64 characters of [a-z0-9_-]", tier.name));
            }
        }
        if !self.tiers.iter().any(|t| t.name == self.default_tier) {
            errors
                .push(format!("provisioner.default_tier: {:?} is not one of the configured tiers", self.default_tier));
        }
        for (name, value) in [
            ("stop_grace_secs", self.stop_grace_secs),
            ("resync_interval_ms", self.resync_interval_ms),
            ("restart_backoff_initial_ms", self.restart_backoff_initial_ms),
            ("restart_backoff_max_ms", self.restart_backoff_max_ms),
            ("hibernate_check_interval_ms", self.hibernate_check_interval_ms),
        ] {
            if value == 0 {
                errors.push(format!("provisioner.{name}: must be positive"));
            }
        }
        if self.restart_backoff_max_ms < self.restart_backoff_initial_ms {
            errors.push("provisioner.restart_backoff_max_ms: must not be below restart_backoff_initial_ms".into());
        }
        if self.hibernate_after_idle_secs != 0 && !(60..=2_592_000).contains(&self.hibernate_after_idle_secs) {
            errors.push("provisioner.hibernate_after_idle_secs: 0 (never) or 60..2592000".into());
        }
    }

    fn redacted(&self) -> Self {
        let mut copy = self.clone();
        if !copy.registry_token.is_empty() {
            copy.registry_token = "<redacted>".to_owned();
        }
        copy
    }
    fn default_service_token(&mut self, token: &str) {
        if self.registry_token.is_empty() {
            token.clone_into(&mut self.registry_token);
        }
    }
}

impl ProvisionerSettings {
    pub fn stop_grace(&self) -> Duration {
        Duration::from_secs(self.stop_grace_secs)
    }

    pub fn workload_registry_address(&self) -> &str {
        if self.workload_registry_address.is_empty() { &self.registry_address } else { &self.workload_registry_address }
    }

    pub fn external_registry_address(&self) -> &str {
        if self.external_registry_address.is_empty() {
            self.workload_registry_address()
        } else {
            &self.external_registry_address
        }
    }

    /// The delay before the `attempt`-th consecutive restart (0-based).
    pub fn restart_backoff(&self, attempt: u32) -> Duration {
        let factor = 1u64.checked_shl(attempt.min(32)).unwrap_or(u64::MAX);
        Duration::from_millis(self.restart_backoff_initial_ms.saturating_mul(factor).min(self.restart_backoff_max_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_backoff_doubles_up_to_the_cap() {
        let settings = ProvisionerSettings {
            restart_backoff_initial_ms: 1_000,
            restart_backoff_max_ms: 5_000,
            ..ProvisionerSettings::default()
        };
        let delays: Vec<u64> = (0..5).map(|n| settings.restart_backoff(n).as_millis() as u64).collect();
        assert_eq!(delays, [1_000, 2_000, 4_000, 5_000, 5_000]);
        assert_eq!(settings.restart_backoff(u32::MAX), Duration::from_millis(5_000), "no overflow");
    }
}

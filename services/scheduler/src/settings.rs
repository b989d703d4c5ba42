//! The scheduler's own settings (the `[scheduler]` table).

use std::time::Duration;

use agentmesh_chassis::ServiceSettings;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SchedulerSettings {
    /// Where the scheduler reaches the registry (workspace records and their
    /// events).
    pub registry_address: String,
    /// Where the scheduler reaches the gateway's gRPC A2A binding, through
    /// which every run is sent.
    pub gateway_address: String,
    /// The service token presented to the registry and the gateway.
    pub service_token: String,
    /// How long a replica holds a run before another may take it over;
    /// renewed while the run is being sent.
    pub lease_secs: u64,
    /// A run reached more than this long after its scheduled time counts as
    /// missed, and the schedule's catch-up policy decides what happens.
    pub missed_grace_secs: u64,
    /// Runs in a row with an empty reply before a schedule is marked stale.
    pub stale_after_empty_replies: u32,
    /// The most schedules one workspace may have.
    pub max_schedules_per_workspace: u32,
    /// The most runs one replica sends at once.
    pub max_in_flight: u32,
    /// Due schedules taken per claim transaction.
    pub claim_batch: u32,
    /// How long the scheduler waits for the agent's reply to one run.
    pub send_timeout_secs: u64,
    /// How long finished runs stay in the history.
    pub retention_secs: u64,
}

impl Default for SchedulerSettings {
    fn default() -> Self {
        Self {
            registry_address: "http://127.0.0.1:50051".to_owned(),
            gateway_address: "http://127.0.0.1:50053".to_owned(),
            service_token: String::new(),
            lease_secs: 30,
            missed_grace_secs: 60,
            stale_after_empty_replies: 3,
            max_schedules_per_workspace: 1000,
            max_in_flight: 512,
            claim_batch: 200,
            send_timeout_secs: 600,
            retention_secs: 30 * 24 * 3600,
        }
    }
}

impl ServiceSettings for SchedulerSettings {
    const SECTION: &'static str = "scheduler";

    fn validate(&self, errors: &mut Vec<String>) {
        if self.registry_address.trim().is_empty() {
            errors.push("scheduler.registry_address: must not be empty".to_owned());
        }
        if self.gateway_address.trim().is_empty() {
            errors.push("scheduler.gateway_address: must not be empty".to_owned());
        }
        if !(2..=3600).contains(&self.lease_secs) {
            errors.push("scheduler.lease_secs: must be between 2 and 3600".to_owned());
        }
        if self.missed_grace_secs > 86_400 {
            errors.push("scheduler.missed_grace_secs: must be at most 86400".to_owned());
        }
        if self.stale_after_empty_replies == 0 {
            errors.push("scheduler.stale_after_empty_replies: must be positive".to_owned());
        }
        if self.max_schedules_per_workspace == 0 {
            errors.push("scheduler.max_schedules_per_workspace: must be positive".to_owned());
        }
        if !(1..=10_000).contains(&self.max_in_flight) {
            errors.push("scheduler.max_in_flight: must be between 1 and 10000".to_owned());
        }
        if !(1..=5_000).contains(&self.claim_batch) {
            errors.push("scheduler.claim_batch: must be between 1 and 5000".to_owned());
        }
        if self.send_timeout_secs == 0 {
            errors.push("scheduler.send_timeout_secs: must be positive".to_owned());
        }
    }

    fn redacted(&self) -> Self {
        let service_token = if self.service_token.is_empty() { String::new() } else { "<redacted>".to_owned() };
        Self { service_token, ..self.clone() }
    }
    fn default_service_token(&mut self, token: &str) {
        if self.service_token.is_empty() {
            token.clone_into(&mut self.service_token);
        }
    }
}

impl SchedulerSettings {
    pub fn lease(&self) -> Duration {
        Duration::from_secs(self.lease_secs)
    }

    pub fn missed_grace(&self) -> Duration {
        Duration::from_secs(self.missed_grace_secs)
    }

    pub fn send_timeout(&self) -> Duration {
        Duration::from_secs(self.send_timeout_secs)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.retention_secs)
    }
}

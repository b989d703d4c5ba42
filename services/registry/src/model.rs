//! The registry's domain types, independent of gRPC and of the store.

use std::{collections::BTreeMap, fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A workspace's lifecycle status (REG-2). The store holds exactly these
/// names; a CHECK constraint refuses anything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Provisioning,
    AwaitingAgent,
    Online,
    Degraded,
    Offline,
    Failed,
    Stopping,
    Stopped,
    PolicyStopped,
    Hibernated,
    Removed,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Provisioning,
        Status::AwaitingAgent,
        Status::Online,
        Status::Degraded,
        Status::Offline,
        Status::Failed,
        Status::Stopping,
        Status::Stopped,
        Status::PolicyStopped,
        Status::Hibernated,
        Status::Removed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Provisioning => "provisioning",
            Status::AwaitingAgent => "awaiting_agent",
            Status::Online => "online",
            Status::Degraded => "degraded",
            Status::Offline => "offline",
            Status::Failed => "failed",
            Status::Stopping => "stopping",
            Status::Stopped => "stopped",
            Status::PolicyStopped => "policy_stopped",
            Status::Hibernated => "hibernated",
            Status::Removed => "removed",
        }
    }

    /// Statuses in which the agent is expected to heartbeat.
    pub fn expects_heartbeats(self) -> bool {
        matches!(self, Status::Online | Status::Degraded)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownValue(pub String);

impl FromStr for Status {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Status::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// Where a workspace's workload runs (ARCH-4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RuntimeKind {
    Docker,
    Kubernetes,
    Process,
    External,
}

impl RuntimeKind {
    pub const ALL: [RuntimeKind; 4] =
        [RuntimeKind::Docker, RuntimeKind::Kubernetes, RuntimeKind::Process, RuntimeKind::External];

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Docker => "docker",
            RuntimeKind::Kubernetes => "kubernetes",
            RuntimeKind::Process => "process",
            RuntimeKind::External => "external",
        }
    }
}

impl FromStr for RuntimeKind {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RuntimeKind::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// What an agent runtime says it does on its own (REG-4).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Capabilities {
    pub native_scheduler: bool,
    pub native_session: bool,
    pub native_status_mgmt: bool,
    pub extra: BTreeMap<String, bool>,
}

/// A workspace record (REG-1).
#[derive(Debug, Clone, PartialEq)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub role: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub parent_id: Option<Uuid>,
    pub runtime_kind: RuntimeKind,
    pub runtime_instance: String,
    pub agent_runtime: String,
    pub url: String,
    pub agent_card_json: String,
    pub status: Status,
    pub status_reason: String,
    /// When the status last changed, in Unix milliseconds; the provisioning
    /// deadline counts from here.
    pub status_changed_at: i64,
    pub capabilities: Capabilities,
    pub idle_timeout_seconds: Option<u32>,
    pub max_concurrent_tasks: u32,
    pub active_tasks: u32,
    pub current_task: String,
    pub error_rate: f64,
    pub sample_error: String,
    pub runtime_state: String,
    pub uptime_seconds: u64,
    pub last_heartbeat_at: Option<i64>,
    pub created_at: i64,
    pub updated_at: i64,
    /// SHA-256 of the bearer token, once one is issued.
    pub token_digest: Option<[u8; 32]>,
}

/// Kinds of registry events (REG-8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    WorkspaceCreated,
    WorkspaceRegistered,
    Heartbeat,
    StatusChanged,
    CapabilitiesChanged,
    LivenessExpired,
    ProvisionFailed,
}

impl EventKind {
    pub const ALL: [EventKind; 7] = [
        EventKind::WorkspaceCreated,
        EventKind::WorkspaceRegistered,
        EventKind::Heartbeat,
        EventKind::StatusChanged,
        EventKind::CapabilitiesChanged,
        EventKind::LivenessExpired,
        EventKind::ProvisionFailed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EventKind::WorkspaceCreated => "workspace_created",
            EventKind::WorkspaceRegistered => "workspace_registered",
            EventKind::Heartbeat => "heartbeat",
            EventKind::StatusChanged => "status_changed",
            EventKind::CapabilitiesChanged => "capabilities_changed",
            EventKind::LivenessExpired => "liveness_expired",
            EventKind::ProvisionFailed => "provision_failed",
        }
    }
}

impl FromStr for EventKind {
    type Err = UnknownValue;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        EventKind::ALL.into_iter().find(|v| v.as_str() == s).ok_or_else(|| UnknownValue(s.to_owned()))
    }
}

/// What an event says about its workspace, beyond its kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventData {
    pub status: Status,
    pub previous_status: Option<Status>,
    pub reason: String,
    pub active_tasks: u32,
    pub max_concurrent_tasks: u32,
    pub capabilities: Capabilities,
    pub idle_timeout_seconds: Option<u32>,
    pub runtime_instance: String,
}

/// An event before the store numbers it.
#[derive(Debug, Clone, PartialEq)]
pub struct EventDraft {
    pub kind: EventKind,
    pub workspace_id: Uuid,
    pub at: i64,
    pub data: EventData,
}

impl EventDraft {
    /// An event describing `workspace` as it is now.
    pub fn of(kind: EventKind, workspace: &Workspace, previous_status: Option<Status>, at: i64) -> Self {
        Self {
            kind,
            workspace_id: workspace.id,
            at,
            data: EventData {
                status: workspace.status,
                previous_status,
                reason: workspace.status_reason.clone(),
                active_tasks: workspace.active_tasks,
                max_concurrent_tasks: workspace.max_concurrent_tasks,
                capabilities: workspace.capabilities.clone(),
                idle_timeout_seconds: workspace.idle_timeout_seconds,
                runtime_instance: workspace.runtime_instance.clone(),
            },
        }
    }
}

/// A numbered, stored event.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub cursor: u64,
    pub draft: EventDraft,
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    let elapsed = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
}

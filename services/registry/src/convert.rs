//! Conversions between the registry's domain types and its v1 contract.

use agentmesh_proto::registry::v1 as pb;
use prost_types::Timestamp;

use crate::model::{Capabilities, Event, EventKind, RuntimeKind, Status, Workspace};

pub fn timestamp(millis: i64) -> Timestamp {
    Timestamp {
        seconds: millis.div_euclid(1000),
        nanos: i32::try_from(millis.rem_euclid(1000) * 1_000_000).unwrap_or(0),
    }
}

impl From<Status> for pb::WorkspaceStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Provisioning => Self::Provisioning,
            Status::AwaitingAgent => Self::AwaitingAgent,
            Status::Online => Self::Online,
            Status::Degraded => Self::Degraded,
            Status::Offline => Self::Offline,
            Status::Failed => Self::Failed,
            Status::Stopping => Self::Stopping,
            Status::Stopped => Self::Stopped,
            Status::PolicyStopped => Self::PolicyStopped,
            Status::Hibernated => Self::Hibernated,
            Status::Removed => Self::Removed,
        }
    }
}

/// The domain status of a wire value; `None` for UNSPECIFIED.
pub fn status_from_pb(status: pb::WorkspaceStatus) -> Option<Status> {
    Some(match status {
        pb::WorkspaceStatus::Unspecified => return None,
        pb::WorkspaceStatus::Provisioning => Status::Provisioning,
        pb::WorkspaceStatus::AwaitingAgent => Status::AwaitingAgent,
        pb::WorkspaceStatus::Online => Status::Online,
        pb::WorkspaceStatus::Degraded => Status::Degraded,
        pb::WorkspaceStatus::Offline => Status::Offline,
        pb::WorkspaceStatus::Failed => Status::Failed,
        pb::WorkspaceStatus::Stopping => Status::Stopping,
        pb::WorkspaceStatus::Stopped => Status::Stopped,
        pb::WorkspaceStatus::PolicyStopped => Status::PolicyStopped,
        pb::WorkspaceStatus::Hibernated => Status::Hibernated,
        pb::WorkspaceStatus::Removed => Status::Removed,
    })
}

impl From<RuntimeKind> for pb::RuntimeKind {
    fn from(kind: RuntimeKind) -> Self {
        match kind {
            RuntimeKind::Docker => Self::Docker,
            RuntimeKind::Kubernetes => Self::Kubernetes,
            RuntimeKind::Process => Self::Process,
            RuntimeKind::External => Self::External,
        }
    }
}

/// The domain runtime kind of a wire value; `None` for UNSPECIFIED.
pub fn runtime_kind_from_pb(kind: pb::RuntimeKind) -> Option<RuntimeKind> {
    Some(match kind {
        pb::RuntimeKind::Unspecified => return None,
        pb::RuntimeKind::Docker => RuntimeKind::Docker,
        pb::RuntimeKind::Kubernetes => RuntimeKind::Kubernetes,
        pb::RuntimeKind::Process => RuntimeKind::Process,
        pb::RuntimeKind::External => RuntimeKind::External,
    })
}

impl From<EventKind> for pb::EventType {
    fn from(kind: EventKind) -> Self {
        match kind {
            EventKind::WorkspaceCreated => Self::WorkspaceCreated,
            EventKind::WorkspaceRegistered => Self::WorkspaceRegistered,
            EventKind::Heartbeat => Self::Heartbeat,
            EventKind::StatusChanged => Self::StatusChanged,
            EventKind::CapabilitiesChanged => Self::CapabilitiesChanged,
            EventKind::LivenessExpired => Self::LivenessExpired,
            EventKind::ProvisionFailed => Self::ProvisionFailed,
        }
    }
}

/// The domain event kind of a wire value; `None` for UNSPECIFIED.
pub fn event_kind_from_pb(kind: pb::EventType) -> Option<EventKind> {
    Some(match kind {
        pb::EventType::Unspecified => return None,
        pb::EventType::WorkspaceCreated => EventKind::WorkspaceCreated,
        pb::EventType::WorkspaceRegistered => EventKind::WorkspaceRegistered,
        pb::EventType::Heartbeat => EventKind::Heartbeat,
        pb::EventType::StatusChanged => EventKind::StatusChanged,
        pb::EventType::CapabilitiesChanged => EventKind::CapabilitiesChanged,
        pb::EventType::LivenessExpired => EventKind::LivenessExpired,
        pb::EventType::ProvisionFailed => EventKind::ProvisionFailed,
    })
}

impl From<&Capabilities> for pb::Capabilities {
    fn from(c: &Capabilities) -> Self {
        Self {
            native_scheduler: c.native_scheduler,
            native_session: c.native_session,
            native_status_mgmt: c.native_status_mgmt,
            extra: c.extra.clone().into_iter().collect(),
        }
    }
}

impl From<&Workspace> for pb::Workspace {
    fn from(w: &Workspace) -> Self {
        Self {
            id: w.id.to_string(),
            name: w.name.clone(),
            role: w.role.clone(),
            description: w.description.clone(),
            labels: w.labels.clone().into_iter().collect(),
            parent_id: w.parent_id.map(|p| p.to_string()),
            runtime_kind: pb::RuntimeKind::from(w.runtime_kind).into(),
            runtime_instance: w.runtime_instance.clone(),
            agent_runtime: w.agent_runtime.clone(),
            url: w.url.clone(),
            agent_card_json: w.agent_card_json.clone(),
            status: pb::WorkspaceStatus::from(w.status).into(),
            status_reason: w.status_reason.clone(),
            capabilities: Some((&w.capabilities).into()),
            idle_timeout_seconds: w.idle_timeout_seconds,
            max_concurrent_tasks: w.max_concurrent_tasks,
            active_tasks: w.active_tasks,
            current_task: w.current_task.clone(),
            error_rate: w.error_rate,
            sample_error: w.sample_error.clone(),
            runtime_state: w.runtime_state.clone(),
            uptime_seconds: w.uptime_seconds,
            last_heartbeat_at: w.last_heartbeat_at.map(timestamp),
            created_at: Some(timestamp(w.created_at)),
            updated_at: Some(timestamp(w.updated_at)),
        }
    }
}

impl From<&Event> for pb::Event {
    fn from(e: &Event) -> Self {
        let data = &e.draft.data;
        Self {
            cursor: e.cursor,
            r#type: pb::EventType::from(e.draft.kind).into(),
            workspace_id: e.draft.workspace_id.to_string(),
            time: Some(timestamp(e.draft.at)),
            status: pb::WorkspaceStatus::from(data.status).into(),
            previous_status: data.previous_status.map_or(pb::WorkspaceStatus::Unspecified, Into::into).into(),
            reason: data.reason.clone(),
            active_tasks: data.active_tasks,
            max_concurrent_tasks: data.max_concurrent_tasks,
            capabilities: Some((&data.capabilities).into()),
            idle_timeout_seconds: data.idle_timeout_seconds,
            runtime_instance: data.runtime_instance.clone(),
        }
    }
}

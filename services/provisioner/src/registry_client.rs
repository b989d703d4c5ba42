//! The provisioner's calls to the registry (ARCH-3): it creates records,
//! reports what its runtimes observe as status transitions (always naming
//! the acting runtime instance, so the registry refuses changes to another
//! instance's workspaces), and reads records back.

use std::time::Duration;

use agentmesh_chassis::client::{ServiceChannel, service_channel};
use agentmesh_proto::registry::v1::{self as pb, registry_service_client::RegistryServiceClient};
use tonic::{Code, Status};

use crate::{
    error::{ProvisionerError, Result},
    spec::WorkspaceSpec,
};

pub use pb::WorkspaceStatus;

#[derive(Clone)]
pub struct RegistryClient {
    client: RegistryServiceClient<ServiceChannel>,
}

/// How long one registry call may take before the registry counts as down.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);

impl RegistryClient {
    /// A client that connects on first use (and reconnects after outages),
    /// so the provisioner starts even while the registry is down.
    pub fn new(address: &str, service_token: &str) -> anyhow::Result<Self> {
        Ok(Self { client: RegistryServiceClient::new(service_channel(address, service_token, Some(CALL_TIMEOUT))?) })
    }

    /// Creates the record in PROVISIONING (AWAITING_AGENT for external) and
    /// returns it with the workspace's token.
    pub async fn create(&self, spec: &WorkspaceSpec) -> Result<(pb::Workspace, String)> {
        let request = pb::CreateWorkspaceRequest {
            name: spec.name.clone(),
            role: spec.role.clone(),
            description: spec.description.clone(),
            labels: spec.labels.clone().into_iter().collect(),
            parent_id: spec.parent_id.clone(),
            runtime_kind: spec.runtime_kind as i32,
            runtime_instance: spec.runtime_instance.clone(),
            agent_runtime: spec.agent_runtime.clone(),
            max_concurrent_tasks: spec.max_concurrent_tasks,
            issue_token: true,
        };
        let reply = self.client.clone().create_workspace(request).await.map_err(from_registry)?.into_inner();
        let workspace = reply.workspace.ok_or_else(|| ProvisionerError::RegistryUnavailable("empty reply".into()))?;
        Ok((workspace, reply.token))
    }

    pub async fn get(&self, workspace_id: &str) -> Result<pb::Workspace> {
        let request = pb::GetWorkspaceRequest { workspace_id: workspace_id.to_owned() };
        let reply = self.client.clone().get_workspace(request).await.map_err(from_registry)?.into_inner();
        reply.workspace.ok_or_else(|| ProvisionerError::RegistryUnavailable("empty reply".into()))
    }

    /// Moves the workspace to `to` as `actor`, but only from one of `from`
    /// (any status the lifecycle allows when empty). Already being in `to`
    /// is a no-op. Returns the record and whether it changed.
    pub async fn transition(
        &self,
        workspace_id: &str,
        to: WorkspaceStatus,
        reason: &str,
        actor: &str,
        from: &[WorkspaceStatus],
    ) -> Result<(pb::Workspace, bool)> {
        let mut expected: Vec<i32> = from.iter().map(|s| *s as i32).collect();
        if !expected.is_empty() {
            expected.push(to as i32);
        }
        let request = pb::TransitionWorkspaceRequest {
            workspace_id: workspace_id.to_owned(),
            status: to as i32,
            reason: reason.to_owned(),
            acting_runtime_instance: actor.to_owned(),
            confirmed_healthy: false,
            expected_current: expected,
        };
        let reply = self.client.clone().transition_workspace(request).await.map_err(from_registry)?.into_inner();
        let workspace = reply.workspace.ok_or_else(|| ProvisionerError::RegistryUnavailable("empty reply".into()))?;
        Ok((workspace, reply.changed))
    }

    /// Every record an instance owns in one of `statuses` (all but REMOVED
    /// when empty).
    pub async fn list_owned(&self, instance: &str, statuses: &[WorkspaceStatus]) -> Result<Vec<pb::Workspace>> {
        let mut all = Vec::new();
        let mut page_token = String::new();
        loop {
            let request = pb::ListWorkspacesRequest {
                statuses: statuses.iter().map(|s| *s as i32).collect(),
                runtime_instance: instance.to_owned(),
                page_size: 1000,
                page_token: std::mem::take(&mut page_token),
                ..Default::default()
            };
            let reply = self.client.clone().list_workspaces(request).await.map_err(from_registry)?.into_inner();
            all.extend(reply.workspaces);
            if reply.next_page_token.is_empty() {
                return Ok(all);
            }
            page_token = reply.next_page_token;
        }
    }
}

/// Outages become REGISTRY_UNAVAILABLE; refusals the caller can act on (an
/// invalid field, an unknown parent, a removed one) pass through as the
/// registry worded them.
fn from_registry(status: Status) -> ProvisionerError {
    match status.code() {
        Code::Unavailable | Code::DeadlineExceeded | Code::Unknown | Code::Internal | Code::Cancelled => {
            ProvisionerError::RegistryUnavailable(status.message().to_owned())
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(message = status.message(), "the registry refused the provisioner's service token");
            ProvisionerError::RegistryUnavailable("the registry refused the provisioner's credentials".into())
        }
        Code::NotFound => ProvisionerError::RegistryNotFound { message: status.message().to_owned() },
        _ => ProvisionerError::Registry(status),
    }
}

/// Whether a status means the workload should be running now.
pub fn is_live(status: WorkspaceStatus) -> bool {
    matches!(
        status,
        WorkspaceStatus::Provisioning | WorkspaceStatus::Online | WorkspaceStatus::Degraded | WorkspaceStatus::Offline
    )
}

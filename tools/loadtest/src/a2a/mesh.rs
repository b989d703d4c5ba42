//! The workspace a benchmark sends to: created in the registry as the
//! operator, then registered and kept online as its agent's shim would.

use std::{fs, path::Path, time::Duration};

use agentmesh_proto::{
    gateway::v1::{GetQueueStatsRequest, QueueStats, gateway_service_client::GatewayServiceClient},
    registry::v1::{self as pb, registry_service_client::RegistryServiceClient},
};
use anyhow::{Context, ensure};
use serde_json::json;
use tokio::task::JoinHandle;

use crate::auth::{authorised, bearer};
use tonic::{
    metadata::AsciiMetadataValue,
    transport::{Channel, Endpoint},
};

/// Reads a token file, without the trailing newline.
pub fn read_token(path: &Path) -> anyhow::Result<String> {
    let token = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    Ok(token.trim().to_owned())
}

async fn channel(address: &str) -> anyhow::Result<Channel> {
    let endpoint = Endpoint::from_shared(address.to_owned()).with_context(|| format!("invalid address {address}"))?;
    endpoint.connect().await.with_context(|| format!("cannot connect to {address}"))
}

/// An online workspace and its agent's credential.
pub struct Workspace {
    pub id: String,
    token: AsciiMetadataValue,
    registry: RegistryServiceClient<Channel>,
}

impl Workspace {
    /// Creates an external workspace for the agent at `agent_url`, registers
    /// the URL and a small card with the workspace's own token, and
    /// heartbeats it ONLINE.
    pub async fn online(
        registry_address: &str,
        operator_token: &str,
        name: &str,
        agent_url: &str,
        max_concurrent_tasks: u32,
    ) -> anyhow::Result<Self> {
        let operator = bearer(operator_token)?;
        let mut registry = RegistryServiceClient::new(channel(registry_address).await?);
        let create = pb::CreateWorkspaceRequest {
            name: name.to_owned(),
            role: "gateway benchmark target".to_owned(),
            runtime_kind: pb::RuntimeKind::External.into(),
            runtime_instance: "external".to_owned(),
            max_concurrent_tasks,
            issue_token: true,
            ..Default::default()
        };
        let created =
            registry.create_workspace(authorised(create, &operator)).await.context("CreateWorkspace")?.into_inner();
        let id = created.workspace.context("CreateWorkspace returned no workspace")?.id;
        let workspace = Self { id, token: bearer(&created.token)?, registry };
        let card = json!({"name": name, "description": "echo agent under benchmark", "version": "1.0.0",
            "capabilities": {}, "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"],
            "skills": []});
        let register = pb::RegisterRequest {
            workspace_id: workspace.id.clone(),
            url: agent_url.to_owned(),
            agent_card_json: card.to_string(),
            ..Default::default()
        };
        workspace.registry.clone().register(authorised(register, &workspace.token)).await.context("Register")?;
        let status = workspace.heartbeat(0).await?;
        ensure!(
            status == pb::WorkspaceStatus::Online,
            "workspace {} is {status:?} after its first heartbeat",
            workspace.id
        );
        Ok(workspace)
    }

    /// One heartbeat reporting `active_tasks` and no errors; the status after it.
    pub async fn heartbeat(&self, active_tasks: u32) -> anyhow::Result<pb::WorkspaceStatus> {
        let request = pb::HeartbeatRequest { workspace_id: self.id.clone(), active_tasks, ..Default::default() };
        let reply = self.registry.clone().heartbeat(authorised(request, &self.token)).await.context("Heartbeat")?;
        Ok(reply.into_inner().status())
    }

    /// Heartbeats every `every` with no active tasks until the returned
    /// guard is dropped, as the agent shim does, so that the registry's
    /// liveness sweep leaves the workspace online during a long run.
    pub fn keep_online(&self, every: Duration) -> KeepOnline {
        let request = pb::HeartbeatRequest { workspace_id: self.id.clone(), ..Default::default() };
        let token = self.token.clone();
        let mut registry = self.registry.clone();
        KeepOnline(tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                if let Err(status) = registry.heartbeat(authorised(request.clone(), &token)).await {
                    eprintln!("warning: a keep-alive heartbeat failed: {status}");
                }
            }
        }))
    }
}

/// Stops the periodic heartbeats when dropped.
pub struct KeepOnline(JoinHandle<()>);

impl Drop for KeepOnline {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The gateway's control API, as the operator.
pub struct Control {
    client: GatewayServiceClient<Channel>,
    operator: AsciiMetadataValue,
}

impl Control {
    pub async fn connect(address: &str, operator_token: &str) -> anyhow::Result<Self> {
        Ok(Self { client: GatewayServiceClient::new(channel(address).await?), operator: bearer(operator_token)? })
    }

    /// The queue figures of one workspace.
    pub async fn queue_stats(&self, workspace_id: &str) -> anyhow::Result<QueueStats> {
        let request = GetQueueStatsRequest { workspace_ids: vec![workspace_id.to_owned()], ..Default::default() };
        let reply =
            self.client.clone().get_queue_stats(authorised(request, &self.operator)).await.context("GetQueueStats")?;
        Ok(reply.into_inner().totals.unwrap_or_default())
    }
}

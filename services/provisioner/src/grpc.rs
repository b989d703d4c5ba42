//! The tonic adapter: authorise, validate, call the provisioner, convert,
//! map errors.

use std::{pin::Pin, sync::Arc, time::Duration};

use agentmesh_chassis::Caller;
use agentmesh_proto::provisioner::v1::{self as pb, provisioner_service_server::ProvisionerService};
use futures::{Stream, StreamExt};
use prost_types::Timestamp;
use tonic::{Request, Response, Status};

use crate::{
    error::ProvisionerError,
    policy::{ActivePolicy, Policy, kind_from_name, kind_name},
    provisioner::{Provisioner, Violation},
    runtime::{LogRequest, LogStream, Probe, RuntimeKind},
    spec::{self, WorkspaceSpec},
};

pub struct ProvisionerGrpc {
    provisioner: Arc<Provisioner>,
}

impl ProvisionerGrpc {
    pub fn new(provisioner: Arc<Provisioner>) -> Self {
        Self { provisioner }
    }
}

fn authorise<T>(request: &Request<T>) -> Result<(), Status> {
    Caller::of(request).require_management()
}

fn timestamp(time: std::time::SystemTime) -> Timestamp {
    Timestamp::from(time)
}

fn timestamp_ms(ms: i64) -> Timestamp {
    Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: i32::try_from(ms.rem_euclid(1000) * 1_000_000).unwrap_or_default(),
    }
}

const MAX_TAIL: u32 = 10_000;
const MAX_EXEC_ARGS: usize = 256;
const MAX_EXEC_ARG: usize = 4096;
const MAX_EXEC_TIMEOUT: u32 = 600;
const MAX_LOG_LINE: usize = 16_384;
const LOG_BATCH: usize = 500;
const MAX_EXEC_OUTPUT: usize = 1 << 20;
const MAX_VIOLATIONS: usize = 1000;

type LogStreamResponse = Pin<Box<dyn Stream<Item = Result<pb::GetLogsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ProvisionerService for ProvisionerGrpc {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        authorise(&request)?;
        let spec = WorkspaceSpec::from_request(request.into_inner().spec)?;
        let (workspace, connection) = self.provisioner.create(spec).await?;
        let connection = connection.map(|c| pb::ExternalConnection {
            registry_address: c.registry_address,
            workspace_id: c.workspace_id,
            token: c.token,
        });
        Ok(Response::new(pb::CreateWorkspaceResponse { workspace: Some(workspace), connection }))
    }

    async fn stop_workspace(
        &self,
        request: Request<pb::StopWorkspaceRequest>,
    ) -> Result<Response<pb::StopWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let grace = spec::grace(request.grace_period_seconds, self.provisioner.settings.stop_grace())?;
        let (workspace, already_gone) = self.provisioner.stop(&id, &reason, grace).await?;
        Ok(Response::new(pb::StopWorkspaceResponse { workspace: Some(workspace), already_gone }))
    }

    async fn start_workspace(
        &self,
        request: Request<pb::StartWorkspaceRequest>,
    ) -> Result<Response<pb::StartWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let (workspace, changed) = self.provisioner.start(&id, &reason).await?;
        Ok(Response::new(pb::StartWorkspaceResponse { workspace: Some(workspace), changed }))
    }

    async fn restart_workspace(
        &self,
        request: Request<pb::RestartWorkspaceRequest>,
    ) -> Result<Response<pb::RestartWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let grace = spec::grace(request.grace_period_seconds, self.provisioner.settings.stop_grace())?;
        let workspace = self.provisioner.restart(&id, &reason, grace).await?;
        Ok(Response::new(pb::RestartWorkspaceResponse { workspace: Some(workspace) }))
    }

    async fn delete_workspace(
        &self,
        request: Request<pb::DeleteWorkspaceRequest>,
    ) -> Result<Response<pb::DeleteWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let grace = spec::grace(request.grace_period_seconds, self.provisioner.settings.stop_grace())?;
        let (workspace, cleanup_error) = self.provisioner.delete(&id, &reason, grace).await?;
        Ok(Response::new(pb::DeleteWorkspaceResponse {
            workspace: Some(workspace),
            workload_removed: cleanup_error.is_none(),
            cleanup_error: cleanup_error.unwrap_or_default(),
        }))
    }

    async fn hibernate_workspace(
        &self,
        request: Request<pb::HibernateWorkspaceRequest>,
    ) -> Result<Response<pb::HibernateWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let (workspace, changed) = self.provisioner.hibernate(&id, &reason).await?;
        Ok(Response::new(pb::HibernateWorkspaceResponse { workspace: Some(workspace), changed }))
    }

    async fn wake_workspace(
        &self,
        request: Request<pb::WakeWorkspaceRequest>,
    ) -> Result<Response<pb::WakeWorkspaceResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let reason = spec::reason(&request.reason)?;
        let (workspace, changed) = self.provisioner.wake(&id, &reason).await?;
        Ok(Response::new(pb::WakeWorkspaceResponse { workspace: Some(workspace), changed }))
    }

    async fn get_workspace_runtime(
        &self,
        request: Request<pb::GetWorkspaceRuntimeRequest>,
    ) -> Result<Response<pb::GetWorkspaceRuntimeResponse>, Status> {
        authorise(&request)?;
        let id = spec::workspace_id("workspace_id", &request.into_inner().workspace_id)?;
        let view = self.provisioner.runtime_view(&id).await?;
        let (state, info, detail) = match view.probe {
            Probe::Running(info) => (pb::RunningState::Running, Some(info.clone()), info.detail),
            Probe::Exited(info) => (pb::RunningState::NotRunning, Some(info.clone()), info.detail),
            Probe::Absent => (pb::RunningState::NotRunning, None, "no workload exists".to_owned()),
            Probe::Unknown(detail) => (pb::RunningState::Unknown, None, detail),
        };
        let info = info.unwrap_or_default();
        Ok(Response::new(pb::GetWorkspaceRuntimeResponse {
            workspace_id: id,
            state: state as i32,
            detail,
            runtime_kind: view.kind as i32,
            runtime_instance: view.instance,
            workload_id: info.workload_id,
            exit_code: info.exit_code,
            started_at: info.started_at.map(timestamp),
            finished_at: info.finished_at.map(timestamp),
            restart_count: view.restart_count,
            next_restart_at: view.next_restart_at.map(timestamp_ms),
            status: view.status.map(|s| s as i32).unwrap_or_default(),
            observed_at: Some(timestamp(view.observed_at)),
        }))
    }

    type GetLogsStream = LogStreamResponse;

    async fn get_logs(&self, request: Request<pb::GetLogsRequest>) -> Result<Response<Self::GetLogsStream>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        let tail_lines = match request.tail_lines {
            0 => 100,
            n if n <= MAX_TAIL => n,
            _ => return Err(ProvisionerError::invalid("tail_lines", format!("at most {MAX_TAIL}")).into()),
        };
        let since = request
            .since
            .map(std::time::SystemTime::try_from)
            .transpose()
            .map_err(|_| ProvisionerError::invalid("since", "not a valid time"))?;
        let lines = self.provisioner.logs(&id, LogRequest { tail_lines, since, follow: request.follow }).await?;
        let batches = lines.ready_chunks(LOG_BATCH).map(move |chunk| {
            let mut out = Vec::with_capacity(chunk.len());
            for line in chunk {
                let line = line.map_err(|e| Status::from(ProvisionerError::from_runtime(e, &id)))?;
                let truncated = line.text.chars().count() > MAX_LOG_LINE;
                out.push(pb::LogLine {
                    time: line.time.map(timestamp),
                    stream: match line.stream {
                        LogStream::Stdout => pb::LogStream::Stdout,
                        LogStream::Stderr => pb::LogStream::Stderr,
                        LogStream::Unknown => pb::LogStream::Unspecified,
                    } as i32,
                    text: if truncated { line.text.chars().take(MAX_LOG_LINE).collect() } else { line.text },
                    truncated,
                });
            }
            Ok(pb::GetLogsResponse { lines: out })
        });
        Ok(Response::new(Box::pin(batches)))
    }

    async fn exec(&self, request: Request<pb::ExecRequest>) -> Result<Response<pb::ExecResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let id = spec::workspace_id("workspace_id", &request.workspace_id)?;
        if request.command.is_empty() || request.command.len() > MAX_EXEC_ARGS {
            return Err(ProvisionerError::invalid("command", format!("1-{MAX_EXEC_ARGS} elements")).into());
        }
        if request.command.iter().any(|a| a.chars().count() > MAX_EXEC_ARG || a.contains('\0')) {
            return Err(ProvisionerError::invalid(
                "command",
                format!("each element at most {MAX_EXEC_ARG} characters"),
            )
            .into());
        }
        let timeout = match request.timeout_seconds {
            0 => Duration::from_secs(30),
            n if n <= MAX_EXEC_TIMEOUT => Duration::from_secs(n.into()),
            _ => return Err(ProvisionerError::invalid("timeout_seconds", format!("at most {MAX_EXEC_TIMEOUT}")).into()),
        };
        let output = self.provisioner.exec(&id, &request.command, timeout).await?;
        let cut = |bytes: &[u8]| {
            let truncated = bytes.len() > MAX_EXEC_OUTPUT;
            (String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_EXEC_OUTPUT)]).into_owned(), truncated)
        };
        let (stdout, stdout_truncated) = cut(&output.stdout);
        let (stderr, stderr_truncated) = cut(&output.stderr);
        Ok(Response::new(pb::ExecResponse {
            exit_code: output.exit_code,
            stdout,
            stderr,
            stdout_truncated,
            stderr_truncated,
        }))
    }

    async fn get_policy(
        &self,
        request: Request<pb::GetPolicyRequest>,
    ) -> Result<Response<pb::GetPolicyResponse>, Status> {
        authorise(&request)?;
        let active = self.provisioner.policy().await?;
        let tiers = self
            .provisioner
            .tiers()
            .iter()
            .map(|t| pb::ResourceTier {
                name: t.name.clone(),
                description: t.description.clone(),
                cpu_millis: t.cpu_millis,
                memory_bytes: t.memory_bytes,
                pids_limit: t.pids_limit,
            })
            .collect();
        Ok(Response::new(pb::GetPolicyResponse {
            policy: Some(policy_to_wire(active)),
            tiers,
            default_tier: self.provisioner.default_tier().to_owned(),
        }))
    }

    async fn reload_policy(
        &self,
        request: Request<pb::ReloadPolicyRequest>,
    ) -> Result<Response<pb::ReloadPolicyResponse>, Status> {
        authorise(&request)?;
        let request = request.into_inner();
        let candidate = request.policy.map(policy_from_wire).transpose()?;
        let change = self.provisioner.reload_policy(candidate, request.expected_revision, request.dry_run).await?;
        let violation_count = change.violations.len() as u64;
        let violations = change.violations.into_iter().take(MAX_VIOLATIONS).map(violation_to_wire).collect();
        Ok(Response::new(pb::ReloadPolicyResponse {
            policy: Some(policy_to_wire(change.policy)),
            changed: change.changed,
            would_change: change.would_change,
            violation_count,
            violations,
        }))
    }

    async fn list_runtimes(
        &self,
        request: Request<pb::ListRuntimesRequest>,
    ) -> Result<Response<pb::ListRuntimesResponse>, Status> {
        authorise(&request)?;
        let kind = RuntimeKind::try_from(request.into_inner().kind)
            .map_err(|_| ProvisionerError::invalid("kind", "unknown runtime kind"))?;
        let runtimes = self
            .provisioner
            .runtimes()
            .all()
            .iter()
            .filter(|i| kind == RuntimeKind::Unspecified || i.runtime.kind() == kind)
            .map(|instance| {
                let health = instance.health();
                pb::RuntimeInstance {
                    name: instance.name().to_owned(),
                    kind: instance.runtime.kind() as i32,
                    is_default: instance.is_default,
                    health: match health.healthy {
                        None => pb::RuntimeHealth::Unspecified,
                        Some(true) => pb::RuntimeHealth::Healthy,
                        Some(false) => pb::RuntimeHealth::Unreachable,
                    } as i32,
                    detail: health.detail,
                    engine_version: health.engine_version,
                    workload_count: health.workload_count,
                    last_resync_at: health.last_resync_at.map(timestamp),
                    checked_at: health.checked_at.map(timestamp),
                }
            })
            .collect();
        Ok(Response::new(pb::ListRuntimesResponse { mesh_id: self.provisioner.mesh_id().to_owned(), runtimes }))
    }
}

fn policy_to_wire(active: ActivePolicy) -> pb::Policy {
    let policy = active.policy;
    pb::Policy {
        revision: active.revision,
        allowed_images: policy.allowed_images,
        allowed_registries: policy.allowed_registries,
        allowed_runtime_kinds: policy
            .allowed_runtime_kinds
            .iter()
            .filter_map(|name| kind_from_name(name))
            .map(|k| k as i32)
            .collect(),
        allowed_tiers: policy.allowed_tiers,
        allowed_commands: policy.allowed_commands,
        allow_exec: policy.allow_exec,
        source: active.source,
        updated_at: (active.updated_at > 0).then(|| timestamp_ms(active.updated_at)),
    }
}

fn policy_from_wire(policy: pb::Policy) -> Result<Policy, ProvisionerError> {
    let mut kinds = Vec::with_capacity(policy.allowed_runtime_kinds.len());
    for value in &policy.allowed_runtime_kinds {
        match RuntimeKind::try_from(*value) {
            Ok(RuntimeKind::Unspecified) | Err(_) => {
                return Err(ProvisionerError::invalid(
                    "policy.allowed_runtime_kinds",
                    format!("invalid value {value}"),
                ));
            }
            Ok(kind) => kinds.push(kind_name(kind).to_owned()),
        }
    }
    let candidate = Policy {
        allowed_images: policy.allowed_images,
        allowed_registries: policy.allowed_registries,
        allowed_runtime_kinds: kinds,
        allowed_tiers: policy.allowed_tiers,
        allowed_commands: policy.allowed_commands,
        allow_exec: policy.allow_exec,
    };
    candidate.validate().map_err(|(field, problem)| ProvisionerError::InvalidArgument {
        field: match field {
            "allowed_images" => "policy.allowed_images",
            "allowed_registries" => "policy.allowed_registries",
            "allowed_tiers" => "policy.allowed_tiers",
            "allowed_commands" => "policy.allowed_commands",
            _ => "policy.allowed_runtime_kinds",
        },
        problem,
    })?;
    Ok(candidate)
}

fn violation_to_wire(v: Violation) -> pb::PolicyViolation {
    pb::PolicyViolation { workspace_id: v.workspace_id, workspace_name: v.workspace_name, reason: v.reason }
}

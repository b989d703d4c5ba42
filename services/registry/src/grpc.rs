//! The tonic adapter: validate, call the registry, convert, map errors.

use std::{pin::Pin, sync::Arc};

use agentmesh_chassis::Caller;
use agentmesh_proto::registry::v1::{self as pb, registry_service_server::RegistryService};
use futures::{Stream, StreamExt};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::{
    convert::{event_kind_from_pb, runtime_kind_from_pb, status_from_pb},
    error::RegistryError,
    events::{EventFilter, EventHub},
    registry::{AgentCredential, HeartbeatReport, NewWorkspace, Registration, Registry, TransitionCommand},
    store::ListFilter,
    validate,
};

pub struct RegistryGrpc {
    registry: Arc<Registry>,
    events: Arc<EventHub>,
    shutdown: CancellationToken,
}

impl RegistryGrpc {
    pub fn new(registry: Arc<Registry>, events: Arc<EventHub>, shutdown: CancellationToken) -> Self {
        Self { registry, events, shutdown }
    }
}

fn agent_credential(caller: &Caller) -> AgentCredential {
    match caller {
        Caller::Operator | Caller::Service => AgentCredential::Privileged,
        Caller::Bearer(token) => AgentCredential::Token(token.clone()),
        Caller::Anonymous => AgentCredential::None,
    }
}

/// A wire enum value as its domain value; `None` for UNSPECIFIED.
fn from_wire<W: TryFrom<i32>, D>(
    field: &'static str,
    value: i32,
    convert: fn(W) -> Option<D>,
) -> Result<Option<D>, RegistryError> {
    let wire = W::try_from(value).map_err(|_| RegistryError::invalid(field, format!("unknown value {value}")))?;
    Ok(convert(wire))
}

/// A wire enum value that must be given.
fn required<W: TryFrom<i32>, D>(
    field: &'static str,
    value: i32,
    convert: fn(W) -> Option<D>,
) -> Result<D, RegistryError> {
    from_wire(field, value, convert)?.ok_or_else(|| RegistryError::invalid(field, "is required"))
}

/// A list of wire enum values, none of them UNSPECIFIED.
fn each<W: TryFrom<i32>, D, C: FromIterator<D>>(
    field: &'static str,
    values: &[i32],
    convert: fn(W) -> Option<D>,
) -> Result<C, RegistryError> {
    values
        .iter()
        .map(|value| {
            from_wire(field, *value, convert)?
                .ok_or_else(|| RegistryError::invalid(field, "UNSPECIFIED is not a value to filter on"))
        })
        .collect()
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::WatchEventsResponse, Status>> + Send>>;

#[tonic::async_trait]
impl RegistryService for RegistryGrpc {
    async fn create_workspace(
        &self,
        request: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        Caller::of(&request).require_management()?;
        let r = request.into_inner();
        let new = NewWorkspace {
            name: validate::required_line("name", &r.name, validate::MAX_NAME)?,
            role: validate::text("role", &r.role, validate::MAX_ROLE)?,
            description: validate::text("description", &r.description, validate::MAX_DESCRIPTION)?,
            labels: validate::labels(r.labels)?,
            parent_id: r.parent_id.as_deref().map(|p| validate::uuid("parent_id", p)).transpose()?,
            runtime_kind: required("runtime_kind", r.runtime_kind, runtime_kind_from_pb)?,
            runtime_instance: validate::required_line(
                "runtime_instance",
                &r.runtime_instance,
                validate::MAX_RUNTIME_INSTANCE,
            )?,
            agent_runtime: validate::slug("agent_runtime", &r.agent_runtime, validate::MAX_AGENT_RUNTIME, false)?,
            max_concurrent_tasks: match r.max_concurrent_tasks {
                0 => 1,
                n if n <= validate::MAX_CONCURRENT_TASKS => n,
                _ => {
                    let limit = format!("at most {}", validate::MAX_CONCURRENT_TASKS);
                    return Err(RegistryError::invalid("max_concurrent_tasks", limit).into());
                }
            },
            issue_token: r.issue_token,
        };
        let (workspace, token) = self.registry.create(new).await?;
        Ok(Response::new(pb::CreateWorkspaceResponse {
            workspace: Some((&workspace).into()),
            token: token.unwrap_or_default(),
        }))
    }

    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let credential = agent_credential(&Caller::of(&request));
        let r = request.into_inner();
        let workspace_id = validate::uuid("workspace_id", &r.workspace_id)?;
        let agent_card_json = validate::agent_card(&r.agent_card_json)?;
        let metadata = validate::runtime_metadata(r.runtime_metadata)?;
        let url = self
            .registry
            .url_guard()
            .check(&r.url)
            .await
            .map_err(|rejected| RegistryError::invalid("url", rejected.to_string()))?;
        let registration = Registration { workspace_id, url: url.as_str().to_owned(), agent_card_json, metadata };
        let (workspace, token) = self.registry.register(registration, credential).await?;
        Ok(Response::new(pb::RegisterResponse {
            workspace: Some((&workspace).into()),
            token: token.unwrap_or_default(),
        }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        let credential = agent_credential(&Caller::of(&request));
        let r = request.into_inner();
        let report = HeartbeatReport {
            workspace_id: validate::uuid("workspace_id", &r.workspace_id)?,
            error_rate: validate::error_rate(r.error_rate)?,
            sample_error: validate::text("sample_error", &r.sample_error, validate::MAX_SAMPLE_ERROR)?,
            active_tasks: r.active_tasks,
            current_task: validate::text("current_task", &r.current_task, validate::MAX_CURRENT_TASK)?,
            uptime_seconds: r.uptime_seconds,
            runtime_state: validate::text("runtime_state", r.runtime_state.trim(), validate::MAX_RUNTIME_STATE)?,
            metadata: validate::runtime_metadata(r.runtime_metadata)?,
        };
        let workspace = self.registry.heartbeat(report, credential).await?;
        Ok(Response::new(pb::HeartbeatResponse {
            status: pb::WorkspaceStatus::from(workspace.status).into(),
            status_reason: workspace.status_reason,
        }))
    }

    async fn transition_workspace(
        &self,
        request: Request<pb::TransitionWorkspaceRequest>,
    ) -> Result<Response<pb::TransitionWorkspaceResponse>, Status> {
        Caller::of(&request).require_management()?;
        let r = request.into_inner();
        let to = required("status", r.status, status_from_pb)?;
        let expected_current = each("expected_current", &r.expected_current, status_from_pb)?;
        let actor = r.acting_runtime_instance.trim();
        let command = TransitionCommand {
            workspace_id: validate::uuid("workspace_id", &r.workspace_id)?,
            to,
            reason: validate::text("reason", &r.reason, validate::MAX_REASON)?,
            acting_runtime_instance: (!actor.is_empty())
                .then(|| validate::required_line("acting_runtime_instance", actor, validate::MAX_RUNTIME_INSTANCE))
                .transpose()?,
            confirmed_healthy: r.confirmed_healthy,
            expected_current,
        };
        let (workspace, changed) = self.registry.transition(command).await?;
        Ok(Response::new(pb::TransitionWorkspaceResponse { workspace: Some((&workspace).into()), changed }))
    }

    async fn get_workspace(
        &self,
        request: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::GetWorkspaceResponse>, Status> {
        Caller::of(&request).require_management()?;
        let id = validate::uuid("workspace_id", &request.get_ref().workspace_id)?;
        let workspace = self.registry.get(id).await?;
        Ok(Response::new(pb::GetWorkspaceResponse { workspace: Some((&workspace).into()) }))
    }

    async fn list_workspaces(
        &self,
        request: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        Caller::of(&request).require_management()?;
        let r = request.into_inner();
        let statuses = each("statuses", &r.statuses, status_from_pb)?;
        let query = validate::text("query", r.query.trim(), validate::MAX_QUERY)?.to_lowercase();
        let instance = r.runtime_instance.trim();
        let filter = ListFilter {
            statuses,
            runtime_kind: from_wire("runtime_kind", r.runtime_kind, runtime_kind_from_pb)?,
            runtime_instance: (!instance.is_empty())
                .then(|| validate::text("runtime_instance", instance, validate::MAX_RUNTIME_INSTANCE))
                .transpose()?,
            parent_id: r.parent_id.as_deref().map(|p| validate::uuid("parent_id", p)).transpose()?,
            labels: validate::label_selector(&r.label_selector)?,
            // Whitespace only means no filter.
            query: (!query.is_empty()).then_some(query),
        };
        let (page, next) = self
            .registry
            .list(&filter, validate::page_token(&r.page_token)?, validate::page_size(r.page_size)?)
            .await?;
        Ok(Response::new(pb::ListWorkspacesResponse {
            workspaces: page.iter().map(Into::into).collect(),
            next_page_token: next.map(validate::encode_page_token).unwrap_or_default(),
        }))
    }

    async fn list_peers(
        &self,
        request: Request<pb::ListPeersRequest>,
    ) -> Result<Response<pb::ListPeersResponse>, Status> {
        Caller::of(&request).require_management()?;
        let id = validate::uuid("workspace_id", &request.get_ref().workspace_id)?;
        let peers = self.registry.peers(id).await?;
        Ok(Response::new(pb::ListPeersResponse { peers: peers.iter().map(Into::into).collect() }))
    }

    async fn can_communicate(
        &self,
        request: Request<pb::CanCommunicateRequest>,
    ) -> Result<Response<pb::CanCommunicateResponse>, Status> {
        Caller::of(&request).require_management()?;
        let caller = validate::uuid("caller_id", &request.get_ref().caller_id)?;
        let target = validate::uuid("target_id", &request.get_ref().target_id)?;
        let (allowed, reason) = self.registry.can_communicate(caller, target).await?;
        Ok(Response::new(pb::CanCommunicateResponse { allowed, reason }))
    }

    type WatchEventsStream = EventStream;

    async fn watch_events(&self, request: Request<pb::WatchEventsRequest>) -> Result<Response<EventStream>, Status> {
        Caller::of(&request).require_management()?;
        let r = request.into_inner();
        if r.workspace_ids.len() > validate::MAX_WATCH_IDS {
            return Err(RegistryError::invalid("workspace_ids", format!("at most {}", validate::MAX_WATCH_IDS)).into());
        }
        let filter = EventFilter {
            workspaces: r
                .workspace_ids
                .iter()
                .map(|id| validate::uuid("workspace_ids", id))
                .collect::<Result<_, _>>()?,
            kinds: each("types", &r.types, event_kind_from_pb)?,
        };
        let receiver = self.events.watch(filter, r.after_cursor, self.shutdown.child_token()).await?;
        let stream = ReceiverStream::new(receiver).map(|item| match item {
            Ok(event) => Ok(pb::WatchEventsResponse { event: Some(event.as_ref().into()) }),
            Err(error) => Err(error.into()),
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn authenticate_workspace(
        &self,
        request: Request<pb::AuthenticateWorkspaceRequest>,
    ) -> Result<Response<pb::AuthenticateWorkspaceResponse>, Status> {
        Caller::of(&request).require_management()?;
        let token = validate::required_line("token", &request.get_ref().token, validate::MAX_TOKEN)?;
        let workspace = self.registry.authenticate(&token).await?;
        Ok(Response::new(pb::AuthenticateWorkspaceResponse { workspace: Some((&workspace).into()) }))
    }
}

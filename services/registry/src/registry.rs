//! The registry's domain operations. Nothing here knows about gRPC: the
//! adapter in `grpc.rs` validates requests into these commands and maps
//! [`RegistryError`] back to status codes.

use std::{collections::BTreeMap, panic::AssertUnwindSafe, sync::Arc};

use agentmesh_chassis::auth::{generate_token, token_digest};
use agentmesh_netguard::UrlGuard;
use futures::FutureExt;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::{
    error::{RegistryError, Result},
    model::{Capabilities, EventDraft, EventKind, RuntimeKind, Status, Workspace, now_millis},
    store::{ListFilter, Mutation, Mutator, PageCursor, RegistryStore},
    transition::{HealthReport, status_after_heartbeat},
};

/// A new workspace record, validated.
#[derive(Debug, Clone)]
pub struct NewWorkspace {
    pub name: String,
    pub role: String,
    pub description: String,
    pub labels: BTreeMap<String, String>,
    pub parent_id: Option<Uuid>,
    pub runtime_kind: RuntimeKind,
    pub runtime_instance: String,
    pub agent_runtime: String,
    pub max_concurrent_tasks: u32,
    pub issue_token: bool,
}

/// What an agent declares about its runtime; `None` fields keep what is stored.
#[derive(Debug, Clone, Default)]
pub struct RuntimeMetadata {
    pub capabilities: Option<Capabilities>,
    /// `Some(None)` clears the override.
    pub idle_timeout_seconds: Option<Option<u32>>,
}

/// An agent's registration, validated (the URL has passed the SSRF guard).
#[derive(Debug, Clone)]
pub struct Registration {
    pub workspace_id: Uuid,
    pub url: String,
    pub agent_card_json: String,
    pub metadata: RuntimeMetadata,
}

/// One heartbeat, validated.
#[derive(Debug, Clone)]
pub struct HeartbeatReport {
    pub workspace_id: Uuid,
    pub error_rate: f64,
    pub sample_error: String,
    pub active_tasks: u32,
    pub current_task: String,
    pub uptime_seconds: u64,
    pub runtime_state: String,
    pub metadata: RuntimeMetadata,
}

/// A lifecycle operation or runtime observation.
#[derive(Debug, Clone)]
pub struct TransitionCommand {
    pub workspace_id: Uuid,
    pub to: Status,
    pub reason: String,
    pub acting_runtime_instance: Option<String>,
    pub confirmed_healthy: bool,
    pub expected_current: Vec<Status>,
}

/// Who is acting on a workspace through an agent call.
#[derive(Debug, Clone)]
pub enum AgentCredential {
    /// An operator or another service, which may act for any workspace.
    Privileged,
    /// A bearer token, to be checked against the workspace's.
    Token(String),
    None,
}

impl AgentCredential {
    /// Checks the credential against `workspace`; `Ok(false)` means the
    /// workspace has no token yet.
    fn check(&self, workspace: &Workspace) -> Result<bool> {
        let Some(expected) = workspace.token_digest else {
            return Ok(false);
        };
        match self {
            AgentCredential::Privileged => Ok(true),
            AgentCredential::Token(token) if token_digest(token) == expected => Ok(true),
            AgentCredential::Token(_) => {
                Err(RegistryError::PermissionDenied("the token does not belong to this workspace"))
            }
            AgentCredential::None => Err(RegistryError::Unauthenticated(
                "this workspace has a token: send `authorization: Bearer <workspace token>`",
            )),
        }
    }
}

type BatchReply = oneshot::Sender<Result<(Workspace, Vec<crate::model::Event>)>>;

/// The registry.
pub struct Registry {
    store: Arc<dyn RegistryStore>,
    url_guard: UrlGuard,
    heartbeats: mpsc::Sender<(Uuid, Mutator, BatchReply)>,
}

/// Heartbeats waiting to be written together; larger batches amortise one
/// transaction (and one fsync) over many agents.
const HEARTBEAT_BATCH: usize = 512;

impl Registry {
    /// Creates the registry and starts its heartbeat writer, which stops
    /// once the registry is dropped.
    pub fn new(store: Arc<dyn RegistryStore>, url_guard: UrlGuard) -> Self {
        let (heartbeats, receiver) = mpsc::channel(HEARTBEAT_BATCH * 8);
        tokio::spawn(write_heartbeats(store.clone(), receiver));
        Self { store, url_guard, heartbeats }
    }

    pub fn url_guard(&self) -> &UrlGuard {
        &self.url_guard
    }

    /// Creates a workspace record; returns it and, if asked, its token.
    pub async fn create(&self, new: NewWorkspace) -> Result<(Workspace, Option<String>)> {
        if let Some(parent_id) = new.parent_id {
            match self.store.get(parent_id).await? {
                Some(parent) if parent.status == Status::Removed => {
                    return Err(RegistryError::FailedPrecondition(format!("parent workspace {parent_id} is removed")));
                }
                Some(_) => {}
                None => {
                    return Err(RegistryError::FailedPrecondition(format!(
                        "parent workspace {parent_id} does not exist"
                    )));
                }
            }
        }
        let now = now_millis();
        let token = new.issue_token.then(generate_token);
        let (status, reason) = match new.runtime_kind {
            RuntimeKind::External => (Status::AwaitingAgent, "waiting for the agent to register"),
            _ => (Status::Provisioning, "workload is being created"),
        };
        let workspace = Workspace {
            id: Uuid::new_v4(),
            name: new.name,
            role: new.role,
            description: new.description,
            labels: new.labels,
            parent_id: new.parent_id,
            runtime_kind: new.runtime_kind,
            runtime_instance: new.runtime_instance,
            agent_runtime: new.agent_runtime,
            url: String::new(),
            agent_card_json: String::new(),
            status,
            status_reason: reason.to_owned(),
            status_changed_at: now,
            capabilities: Capabilities::default(),
            idle_timeout_seconds: None,
            max_concurrent_tasks: new.max_concurrent_tasks,
            active_tasks: 0,
            current_task: String::new(),
            error_rate: 0.0,
            sample_error: String::new(),
            runtime_state: String::new(),
            uptime_seconds: 0,
            last_heartbeat_at: None,
            created_at: now,
            updated_at: now,
            token_digest: token.as_deref().map(token_digest),
        };
        self.store.create(&workspace, EventDraft::of(EventKind::WorkspaceCreated, &workspace, None, now)).await?;
        Ok((workspace, token))
    }

    /// Records an agent's URL, card and runtime metadata. The first
    /// registration of a workspace without a token issues one.
    pub async fn register(
        &self,
        registration: Registration,
        credential: AgentCredential,
    ) -> Result<(Workspace, Option<String>)> {
        let candidate = generate_token();
        let candidate_digest = token_digest(&candidate);
        let mutator: Mutator = Box::new(move |mut workspace: Workspace| {
            if workspace.status == Status::Removed {
                return Err(RegistryError::Removed(workspace.id));
            }
            if !credential.check(&workspace)? {
                workspace.token_digest = Some(candidate_digest);
            }
            workspace.url = registration.url;
            workspace.agent_card_json = registration.agent_card_json;
            // Registering proves the agent is up, as a heartbeat does.
            let events = proof_of_life(&mut workspace, EventKind::WorkspaceRegistered, registration.metadata)?;
            Ok(Mutation::changed(workspace, events))
        });
        let (workspace, _) = self.mutate(registration.workspace_id, mutator).await?;
        let issued = workspace.token_digest == Some(candidate_digest);
        Ok((workspace, issued.then_some(candidate)))
    }

    /// Applies one heartbeat. Heartbeats from many agents are written in
    /// shared transactions.
    pub async fn heartbeat(&self, report: HeartbeatReport, credential: AgentCredential) -> Result<Workspace> {
        let id = report.workspace_id;
        let mutator: Mutator = Box::new(move |mut workspace: Workspace| {
            if workspace.status == Status::Removed {
                return Err(RegistryError::Removed(workspace.id));
            }
            if !credential.check(&workspace)? {
                return Err(RegistryError::FailedPrecondition(
                    "this workspace has not registered yet: call Register first".to_owned(),
                ));
            }
            workspace.error_rate = report.error_rate;
            workspace.sample_error = report.sample_error;
            workspace.active_tasks = report.active_tasks;
            workspace.current_task = report.current_task;
            workspace.uptime_seconds = report.uptime_seconds;
            workspace.runtime_state = report.runtime_state;
            // Every heartbeat is announced, changed or not: other services
            // use it as proof of life (idle timeouts, drains).
            let events = proof_of_life(&mut workspace, EventKind::Heartbeat, report.metadata)?;
            Ok(Mutation::changed(workspace, events))
        });
        let (reply, answer) = oneshot::channel();
        self.heartbeats.send((id, mutator, reply)).await.map_err(|_| RegistryError::ShuttingDown)?;
        let (workspace, _) = answer.await.map_err(|_| RegistryError::ShuttingDown)??;
        Ok(workspace)
    }

    /// Moves a workspace through the guarded transition function, on behalf
    /// of a lifecycle operation or a runtime's observation (REG-10).
    pub async fn transition(&self, command: TransitionCommand) -> Result<(Workspace, bool)> {
        let id = command.workspace_id;
        let mutator: Mutator = Box::new(move |mut workspace: Workspace| {
            let mut adopted = false;
            if let Some(actor) = &command.acting_runtime_instance {
                if workspace.runtime_instance.is_empty() {
                    // A record from before ownership was tracked: adopt it
                    // only once its runtime confirms the workload is healthy.
                    if !command.confirmed_healthy {
                        return Err(RegistryError::NotOwner { id, owner: String::new(), actor: actor.clone() });
                    }
                    workspace.runtime_instance = actor.clone();
                    adopted = true;
                } else if &workspace.runtime_instance != actor {
                    let owner = workspace.runtime_instance.clone();
                    return Err(RegistryError::NotOwner { id, owner, actor: actor.clone() });
                }
            }
            if !command.expected_current.is_empty() && !command.expected_current.contains(&workspace.status) {
                return Err(RegistryError::FailedPrecondition(format!(
                    "workspace {id} is {}, not one of the expected statuses",
                    workspace.status
                )));
            }
            let now = now_millis();
            match workspace.move_to(command.to, command.reason, now)? {
                Some(previous) => {
                    workspace.updated_at = now;
                    let event = EventDraft::of(EventKind::StatusChanged, &workspace, Some(previous), now);
                    Ok(Mutation::changed(workspace, vec![event]))
                }
                None if adopted => {
                    workspace.updated_at = now;
                    Ok(Mutation::changed(workspace, Vec::new()))
                }
                None => Ok(Mutation::unchanged(workspace)),
            }
        });
        let (workspace, events) = self.mutate(id, mutator).await?;
        Ok((workspace, !events.is_empty()))
    }

    /// The workspace a bearer token belongs to, so that other services know
    /// who an agent caller is (SEC-1: a workspace acts only as itself). A
    /// removed workspace's token identifies no one any more.
    pub async fn authenticate(&self, token: &str) -> Result<Workspace> {
        match self.store.get_by_token_digest(&token_digest(token)).await? {
            Some(workspace) if workspace.status != Status::Removed => Ok(workspace),
            // One answer for unknown and removed alike: a revoked token must
            // not confirm that its workspace ever existed.
            _ => Err(RegistryError::Unauthenticated("no workspace holds this token")),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Workspace> {
        self.store.get(id).await?.ok_or(RegistryError::NotFound(id))
    }

    /// One page of workspaces and the cursor of the next, if any.
    pub async fn list(
        &self,
        filter: &ListFilter,
        after: Option<PageCursor>,
        limit: u32,
    ) -> Result<(Vec<Workspace>, Option<PageCursor>)> {
        // One extra row tells whether another page exists.
        let mut page = self.store.list(filter, after, limit + 1).await?;
        let next = if page.len() > limit as usize {
            page.truncate(limit as usize);
            page.last().map(|w| (w.created_at, w.id))
        } else {
            None
        };
        Ok((page, next))
    }

    /// Parent, siblings and children of a workspace, none of them removed.
    pub async fn peers(&self, id: Uuid) -> Result<Vec<Workspace>> {
        let workspace = self.get(id).await?;
        let mut peers = Vec::new();
        if let Some(parent_id) = workspace.parent_id {
            if let Some(parent) = self.store.get(parent_id).await?.filter(|p| p.status != Status::Removed) {
                peers.push(parent);
            }
            let siblings = self.children(parent_id).await?;
            peers.extend(siblings.into_iter().filter(|s| s.id != id));
        }
        peers.extend(self.children(id).await?);
        Ok(peers)
    }

    async fn children(&self, parent_id: Uuid) -> Result<Vec<Workspace>> {
        let filter = ListFilter { parent_id: Some(parent_id), ..ListFilter::default() };
        let mut all = Vec::new();
        let mut after = None;
        loop {
            let page = self.store.list(&filter, after, 1000).await?;
            let full = page.len() == 1000;
            after = page.last().map(|w| (w.created_at, w.id));
            all.extend(page);
            if !full {
                return Ok(all);
            }
        }
    }

    /// Whether `caller` may message `target`: itself, a sibling, an ancestor
    /// or a descendant. Anything doubtful (unknown, removed, too deep) is no.
    pub async fn can_communicate(&self, caller: Uuid, target: Uuid) -> Result<(bool, String)> {
        let (Some(a), Some(b)) = (self.store.get(caller).await?, self.store.get(target).await?) else {
            return Ok((false, "unknown workspace".to_owned()));
        };
        if a.status == Status::Removed || b.status == Status::Removed {
            return Ok((false, "a removed workspace takes part in no conversation".to_owned()));
        }
        if caller == target {
            return Ok((true, "same workspace".to_owned()));
        }
        if a.parent_id.is_some() && a.parent_id == b.parent_id {
            return Ok((true, "siblings".to_owned()));
        }
        if self.is_ancestor(caller, &b).await? {
            return Ok((true, "caller is an ancestor of the target".to_owned()));
        }
        if self.is_ancestor(target, &a).await? {
            return Ok((true, "caller is a descendant of the target".to_owned()));
        }
        Ok((false, "not related as self, siblings, ancestor or descendant".to_owned()))
    }

    async fn is_ancestor(&self, ancestor: Uuid, of: &Workspace) -> Result<bool> {
        // Parents are fixed at creation and must already exist, so the chain
        // cannot loop; the bound only guards against absurd depths.
        const MAX_DEPTH: usize = 64;
        let mut next = of.parent_id;
        for _ in 0..MAX_DEPTH {
            let Some(id) = next else { return Ok(false) };
            if id == ancestor {
                return Ok(true);
            }
            next = self.store.get(id).await?.and_then(|w| w.parent_id);
        }
        Ok(false)
    }

    /// Applies one mutator in its own transaction.
    pub async fn mutate(&self, id: Uuid, mutator: Mutator) -> Result<(Workspace, Vec<crate::model::Event>)> {
        let mut outcomes = self.store.mutate_batch(vec![(id, mutator)]).await?;
        outcomes.pop().unwrap_or(Err(RegistryError::NotFound(id)))
    }
}

/// What a register or a heartbeat does beyond its own fields: records the
/// contact and the declared runtime metadata, infers the status from the
/// health the workspace now reports, and returns its events — `kind` always,
/// then capability and status changes when there were any.
fn proof_of_life(workspace: &mut Workspace, kind: EventKind, metadata: RuntimeMetadata) -> Result<Vec<EventDraft>> {
    let now = now_millis();
    workspace.last_heartbeat_at = Some(now);
    workspace.updated_at = now;
    let capabilities_changed = apply_metadata(workspace, metadata);
    let health = HealthReport {
        error_rate: workspace.error_rate,
        runtime_state: &workspace.runtime_state,
        sample_error: &workspace.sample_error,
    };
    let previous = match status_after_heartbeat(workspace.status, health, workspace.capabilities.native_status_mgmt) {
        Some((to, reason)) => workspace.move_to(to, reason, now)?,
        None => None,
    };
    let mut events = vec![EventDraft::of(kind, workspace, None, now)];
    if capabilities_changed {
        events.push(EventDraft::of(EventKind::CapabilitiesChanged, workspace, None, now));
    }
    if let Some(previous) = previous {
        events.push(EventDraft::of(EventKind::StatusChanged, workspace, Some(previous), now));
    }
    Ok(events)
}

/// Applies declared runtime metadata; returns whether it changed anything.
fn apply_metadata(workspace: &mut Workspace, metadata: RuntimeMetadata) -> bool {
    let mut changed = false;
    if let Some(capabilities) = metadata.capabilities
        && capabilities != workspace.capabilities
    {
        workspace.capabilities = capabilities;
        changed = true;
    }
    if let Some(idle) = metadata.idle_timeout_seconds
        && idle != workspace.idle_timeout_seconds
    {
        workspace.idle_timeout_seconds = idle;
        changed = true;
    }
    changed
}

async fn write_heartbeats(store: Arc<dyn RegistryStore>, mut receiver: mpsc::Receiver<(Uuid, Mutator, BatchReply)>) {
    let mut buffer = Vec::with_capacity(HEARTBEAT_BATCH);
    while receiver.recv_many(&mut buffer, HEARTBEAT_BATCH).await > 0 {
        let (items, replies): (Vec<_>, Vec<_>) = buffer.drain(..).map(|(id, m, reply)| ((id, m), reply)).unzip();
        // A bug that panics in one batch must not stop every later heartbeat.
        let written = AssertUnwindSafe(store.mutate_batch(items)).catch_unwind().await;
        match written {
            Ok(Ok(outcomes)) => {
                for (reply, outcome) in replies.into_iter().zip(outcomes) {
                    let _ = reply.send(outcome);
                }
            }
            Ok(Err(error)) => {
                for reply in replies {
                    let _ = reply.send(Err(error.clone()));
                }
            }
            Err(_) => {
                tracing::error!(batch = replies.len(), "writing a heartbeat batch panicked");
                for reply in replies {
                    let _ = reply.send(Err(RegistryError::Internal("writing the heartbeat failed")));
                }
            }
        }
    }
}

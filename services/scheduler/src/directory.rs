//! What the scheduler knows about workspaces: their status, declared
//! capabilities and load, kept fresh by the registry's event stream so that a
//! run is decided without a registry call (ARCH-3). A workspace not seen yet
//! is fetched once and then followed; while the stream is down every lookup
//! asks the registry.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use agentmesh_chassis::{
    client::{ServiceChannel, service_channel},
    registry_events::{self, StreamChange, StreamState},
    workspace_credentials::{CredentialError, WorkspaceCredentials},
};
use agentmesh_proto::registry::v1::{
    self as pb, GetWorkspaceRequest, WorkspaceStatus, registry_service_client::RegistryServiceClient,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

use crate::error::{Result, SchedulerError};

/// A workspace as deciding a run needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkspaceView {
    pub id: Uuid,
    pub status: WorkspaceStatus,
    pub capabilities: pb::Capabilities,
    pub active_tasks: u32,
    pub max_concurrent_tasks: u32,
}

impl WorkspaceView {
    /// No free slot for another task (SCH-4).
    pub fn is_busy(&self) -> bool {
        self.active_tasks >= self.max_concurrent_tasks.max(1)
    }
}

const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(5);

pub struct Workspaces {
    registry: RegistryServiceClient<ServiceChannel>,
    watcher: RegistryServiceClient<ServiceChannel>,
    cache: RwLock<HashMap<Uuid, Arc<WorkspaceView>>>,
    following: StreamState,
    credentials: WorkspaceCredentials,
    removed: mpsc::UnboundedSender<Uuid>,
}

impl Workspaces {
    /// Workspaces as the registry at `registry_address` knows them; the
    /// receiver gets the id of every workspace reported REMOVED.
    pub fn new(
        registry_address: &str,
        service_token: &str,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<Uuid>)> {
        let registry =
            RegistryServiceClient::new(service_channel(registry_address, service_token, Some(REGISTRY_CALL_TIMEOUT))?);
        let watcher = RegistryServiceClient::new(service_channel(registry_address, service_token, None)?);
        let (removed, receiver) = mpsc::unbounded_channel();
        let workspaces = Self {
            credentials: WorkspaceCredentials::new(registry.clone()),
            registry,
            watcher,
            cache: RwLock::default(),
            following: StreamState::default(),
            removed,
        };
        Ok((Arc::new(workspaces), receiver))
    }

    /// The workspace `id`, or `None` when the registry has no such workspace.
    pub async fn get(&self, id: Uuid) -> Result<Option<Arc<WorkspaceView>>> {
        if self.is_following()
            && let Some(view) = self.cache.read().expect("cache lock").get(&id)
        {
            return Ok(Some(view.clone()));
        }
        let request = GetWorkspaceRequest { workspace_id: id.to_string() };
        let record = match self.registry.clone().get_workspace(request).await {
            Ok(reply) => reply.into_inner().workspace,
            Err(status) if status.code() == Code::NotFound => return Ok(None),
            Err(status) => return Err(from_registry(status)),
        };
        let record = record.ok_or_else(|| SchedulerError::registry_unavailable("the registry sent an empty reply"))?;
        let view = Arc::new(WorkspaceView {
            id,
            status: record.status(),
            capabilities: record.capabilities.unwrap_or_default(),
            active_tasks: record.active_tasks,
            max_concurrent_tasks: record.max_concurrent_tasks,
        });
        if self.is_following() {
            self.cache.write().expect("cache lock").insert(id, view.clone());
        }
        Ok(Some(view))
    }

    /// The workspace whose bearer token this is (SEC-1).
    pub async fn authenticate(&self, token: &str) -> Result<Uuid> {
        self.credentials.authenticate(token).await.map_err(|error| match error {
            CredentialError::NotAWorkspaceToken => {
                SchedulerError::Unauthenticated("the bearer token is not an operator, service or workspace token")
            }
            CredentialError::Registry(status) => from_registry(status),
            malformed @ CredentialError::Malformed => SchedulerError::registry_unavailable(malformed.to_string()),
        })
    }

    /// Whether the registry's event stream is up.
    pub fn is_following(&self) -> bool {
        self.following.is_up()
    }

    /// Notified when the event stream goes up or down: readiness follows it.
    pub fn following_changes(&self) -> Arc<tokio::sync::Notify> {
        self.following.changes()
    }

    /// Follows the registry's events until `shutdown`.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        registry_events::follow(self.watcher.clone(), shutdown, |change| match change {
            StreamChange::Connected => self.following.set(true),
            StreamChange::Event(event) => self.apply(event),
            StreamChange::Disconnected => {
                self.following.set(false);
                self.cache.write().expect("cache lock").clear();
            }
        })
        .await;
    }

    fn apply(&self, event: pb::Event) {
        let Ok(id) = event.workspace_id.parse::<Uuid>() else { return };
        let status = event.status();
        if status == WorkspaceStatus::Removed {
            self.cache.write().expect("cache lock").remove(&id);
            self.credentials.forget(id);
            let _ = self.removed.send(id);
            return;
        }
        // Every event carries the workspace's status, load and capabilities
        // after it, so the view is complete without asking the registry.
        let mut cache = self.cache.write().expect("cache lock");
        let previous = cache.get(&id).map(|view| view.capabilities.clone());
        let capabilities = event.capabilities.or(previous).unwrap_or_default();
        let view = WorkspaceView {
            id,
            status,
            capabilities,
            active_tasks: event.active_tasks,
            max_concurrent_tasks: event.max_concurrent_tasks,
        };
        cache.insert(id, Arc::new(view));
    }
}

/// Outages, and a registry that refuses our credentials, are the registry
/// being unavailable to this caller.
fn from_registry(status: tonic::Status) -> SchedulerError {
    if matches!(status.code(), Code::Unauthenticated | Code::PermissionDenied) {
        tracing::error!(message = status.message(), "the registry refused the scheduler's service token");
        return SchedulerError::registry_unavailable("the registry refused the scheduler's credentials");
    }
    SchedulerError::registry_unavailable(format!("the registry is unavailable ({:?})", status.code()))
}

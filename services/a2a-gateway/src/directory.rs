//! What the gateway knows about workspaces, from the registry (ARCH-3).
//!
//! The registry's event stream keeps a cache of targets fresh, resets idle
//! clocks (any event about a workspace is proof that it is alive, on
//! whichever registry replica it arrived, since the registry fans events out
//! to watchers on every replica), and tells the drainer when a workspace has
//! room again. The cache is trusted only while the stream is up: after a
//! disconnect every lookup asks the registry until the stream is back.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use agentmesh_chassis::{
    client::{ServiceChannel, service_channel},
    registry_events::{self, StreamChange, StreamState},
    workspace_credentials::{CredentialError, WorkspaceCredentials},
};
use agentmesh_proto::{
    provisioner::v1::{WakeWorkspaceRequest, provisioner_service_client::ProvisionerServiceClient},
    registry::v1::{
        self as pb, CanCommunicateRequest, EventType, GetWorkspaceRequest, WorkspaceStatus,
        registry_service_client::RegistryServiceClient,
    },
};
use tokio::{sync::mpsc, time::Instant};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use uuid::Uuid;

use crate::{
    agent_client::AgentEndpoint,
    error::{GatewayError, Result},
};

/// A workspace as a dispatch needs it.
#[derive(Debug, Clone)]
pub struct Target {
    pub id: Uuid,
    pub status: WorkspaceStatus,
    pub status_reason: String,
    pub url: String,
    /// `url` parsed, if it parses.
    pub endpoint: Option<AgentEndpoint>,
    pub agent_card_json: String,
    pub capabilities: pb::Capabilities,
    /// The workspace's own idle timeout, which wins over the gateway's.
    pub idle_timeout: Option<Duration>,
    /// When the workspace last showed signs of life.
    pub activity: Arc<Activity>,
    pub max_concurrent_tasks: u32,
    pub active_tasks: u32,
}

impl Target {
    fn from_record(workspace: pb::Workspace, activity: Arc<Activity>) -> Result<Self> {
        let id = workspace
            .id
            .parse()
            .map_err(|_| GatewayError::registry_unavailable("the registry returned a malformed workspace id"))?;
        Ok(Self {
            id,
            status: workspace.status(),
            status_reason: workspace.status_reason,
            endpoint: AgentEndpoint::parse(&workspace.url),
            url: workspace.url,
            agent_card_json: workspace.agent_card_json,
            capabilities: workspace.capabilities.unwrap_or_default(),
            idle_timeout: workspace.idle_timeout_seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(s.into())),
            activity,
            max_concurrent_tasks: workspace.max_concurrent_tasks.max(1),
            active_tasks: workspace.active_tasks,
        })
    }

    /// Online (or degraded, which still works) with a free slot (GW-7).
    pub fn has_room(&self) -> bool {
        self.is_up() && self.active_tasks < self.max_concurrent_tasks
    }

    pub fn is_up(&self) -> bool {
        matches!(self.status, WorkspaceStatus::Online | WorkspaceStatus::Degraded)
    }

    /// Free slots as the registry last saw them; at least one, since the
    /// agent's own busy answer is the final word.
    pub fn free_slots(&self) -> u32 {
        self.max_concurrent_tasks.saturating_sub(self.active_tasks).max(1)
    }
}

/// When a workspace last showed signs of life: any registry event of it,
/// on whichever registry replica it arrived, or an event it streamed. The
/// idle clock of every dispatch to it runs from here (GW-4); the clocks
/// read it only when they would otherwise expire, so an event costs one
/// store and a dispatch nothing.
#[derive(Debug)]
pub struct Activity {
    origin: Instant,
    /// Nanoseconds after `origin`; 0 until the first sign.
    last: AtomicU64,
}

impl Default for Activity {
    fn default() -> Self {
        Self { origin: Instant::now(), last: AtomicU64::new(0) }
    }
}

impl Activity {
    pub fn touch(&self) {
        let nanos = u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX).max(1);
        self.last.fetch_max(nanos, Ordering::Relaxed);
    }

    /// The latest sign of life, if any was seen.
    pub fn last(&self) -> Option<Instant> {
        match self.last.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(self.origin + Duration::from_nanos(nanos)),
        }
    }
}

/// Why the drainer should look at a workspace now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainSignal {
    /// It reported room for more work.
    Room(Uuid),
    /// It was removed: its queue is dropped.
    Removed(Uuid),
}

const REGISTRY_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an access decision is reused.
const ACCESS_TTL: Duration = Duration::from_secs(10);

pub struct Directory {
    registry: RegistryServiceClient<ServiceChannel>,
    watcher: RegistryServiceClient<ServiceChannel>,
    provisioner: Option<ProvisionerServiceClient<ServiceChannel>>,
    targets: RwLock<HashMap<Uuid, Arc<Target>>>,
    following: StreamState,
    activity: Mutex<HashMap<Uuid, Arc<Activity>>>,
    credentials: WorkspaceCredentials,
    access: Mutex<HashMap<(Uuid, Uuid), (bool, Instant)>>,
    signals: mpsc::UnboundedSender<DrainSignal>,
}

impl Directory {
    /// A directory over the registry at `registry_address` and, when given,
    /// the provisioner that wakes hibernated workspaces. The receiver gets
    /// the drain signals.
    pub fn new(
        registry_address: &str,
        provisioner_address: &str,
        service_token: &str,
    ) -> anyhow::Result<(Arc<Self>, mpsc::UnboundedReceiver<DrainSignal>)> {
        let registry =
            RegistryServiceClient::new(service_channel(registry_address, service_token, Some(REGISTRY_CALL_TIMEOUT))?);
        let watcher = RegistryServiceClient::new(service_channel(registry_address, service_token, None)?);
        let provisioner = if provisioner_address.is_empty() {
            None
        } else {
            Some(ProvisionerServiceClient::new(service_channel(
                provisioner_address,
                service_token,
                Some(REGISTRY_CALL_TIMEOUT),
            )?))
        };
        let (signals, receiver) = mpsc::unbounded_channel();
        let directory = Self {
            credentials: WorkspaceCredentials::new(registry.clone()),
            registry,
            watcher,
            provisioner,
            targets: RwLock::default(),
            following: StreamState::default(),
            activity: Mutex::default(),
            access: Mutex::default(),
            signals,
        };
        Ok((Arc::new(directory), receiver))
    }

    /// The workspace `id`, from the cache while the event stream keeps it
    /// fresh, else from the registry.
    pub async fn target(&self, id: Uuid) -> Result<Arc<Target>> {
        if self.following.is_up()
            && let Some(target) = self.targets.read().expect("targets lock").get(&id)
        {
            return Ok(target.clone());
        }
        self.fetch(id).await
    }

    /// The workspace `id` as the registry has it now.
    pub async fn fetch(&self, id: Uuid) -> Result<Arc<Target>> {
        let request = GetWorkspaceRequest { workspace_id: id.to_string() };
        let reply = self.registry.clone().get_workspace(request).await.map_err(|status| match status.code() {
            Code::NotFound => GatewayError::NotFound(format!("workspace {id} not found")),
            _ => from_registry(status),
        })?;
        let record = reply.into_inner().workspace.ok_or_else(|| GatewayError::registry_unavailable("empty reply"))?;
        let target = Arc::new(Target::from_record(record, self.activity(id))?);
        if self.following.is_up() {
            self.targets.write().expect("targets lock").insert(id, target.clone());
        }
        Ok(target)
    }

    /// The workspace whose bearer token this is (SEC-1).
    pub async fn authenticate(&self, token: &str) -> Result<Uuid> {
        self.credentials.authenticate(token).await.map_err(|error| match error {
            CredentialError::NotAWorkspaceToken => {
                GatewayError::Unauthenticated("the bearer token is not an operator, service or workspace token")
            }
            CredentialError::Registry(status) => from_registry(status),
            malformed @ CredentialError::Malformed => GatewayError::registry_unavailable(malformed.to_string()),
        })
    }

    /// Whether workspace `caller` may send to `target` (REG-9; deny on doubt).
    pub async fn can_communicate(&self, caller: Uuid, target: Uuid) -> Result<bool> {
        if let Some((allowed, at)) = self.access.lock().expect("access lock").get(&(caller, target))
            && at.elapsed() < ACCESS_TTL
        {
            return Ok(*allowed);
        }
        let request = CanCommunicateRequest { caller_id: caller.to_string(), target_id: target.to_string() };
        let allowed = match self.registry.clone().can_communicate(request).await {
            Ok(reply) => reply.into_inner().allowed,
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => return Err(from_registry(status)),
        };
        self.access.lock().expect("access lock").insert((caller, target), (allowed, Instant::now()));
        Ok(allowed)
    }

    /// Asks the provisioner to wake a hibernated workspace; a failure is
    /// logged, since the queued message waits for the workspace either way.
    pub async fn wake(&self, id: Uuid) {
        let Some(provisioner) = &self.provisioner else {
            tracing::info!(workspace_id = %id, "hibernated target; no provisioner is configured to wake it");
            return;
        };
        let request =
            WakeWorkspaceRequest { workspace_id: id.to_string(), reason: "a message was queued for it".to_owned() };
        if let Err(status) = provisioner.clone().wake_workspace(request).await {
            tracing::warn!(workspace_id = %id, code = ?status.code(), message = status.message(), "waking failed");
        }
    }

    /// The signs of life of workspace `id` (GW-4); cached targets carry it.
    fn activity(&self, id: Uuid) -> Arc<Activity> {
        let mut activity = self.activity.lock().expect("activity lock");
        activity.entry(id).or_default().clone()
    }

    /// Records a sign of life of workspace `id` (a registry event of it).
    fn touch(&self, id: Uuid) {
        if let Some(activity) = self.activity.lock().expect("activity lock").get(&id) {
            activity.touch();
        }
    }

    /// Whether the registry's event stream is up.
    pub fn is_following(&self) -> bool {
        self.following.is_up()
    }

    /// Notified when the event stream goes up or down: readiness follows it.
    pub fn following_changes(&self) -> Arc<tokio::sync::Notify> {
        self.following.changes()
    }

    /// Follows the registry's events until `shutdown`; while the stream is
    /// down the cache is dropped and every lookup asks the registry.
    pub async fn follow(self: Arc<Self>, shutdown: CancellationToken) {
        registry_events::follow(self.watcher.clone(), shutdown, |change| match change {
            StreamChange::Connected => self.following.set(true),
            StreamChange::Event(event) => self.apply(event),
            StreamChange::Disconnected => {
                self.following.set(false);
                self.targets.write().expect("targets lock").clear();
            }
        })
        .await;
    }

    fn apply(&self, event: pb::Event) {
        let Ok(id) = event.workspace_id.parse::<Uuid>() else { return };
        self.touch(id);
        let status = event.status();
        if status == WorkspaceStatus::Removed {
            self.targets.write().expect("targets lock").remove(&id);
            self.activity.lock().expect("activity lock").remove(&id);
            self.credentials.forget(id);
            let _ = self.signals.send(DrainSignal::Removed(id));
            return;
        }
        let room = {
            let mut targets = self.targets.write().expect("targets lock");
            if event.r#type() == EventType::WorkspaceRegistered {
                // The URL or card changed: the next lookup fetches them.
                targets.remove(&id);
            } else if let Some(cached) = targets.get_mut(&id) {
                let target = Arc::make_mut(cached);
                target.status = status;
                target.status_reason = event.reason.clone();
                target.active_tasks = event.active_tasks;
                target.max_concurrent_tasks = event.max_concurrent_tasks.max(1);
                if let Some(capabilities) = event.capabilities.clone() {
                    target.capabilities = capabilities;
                }
                target.idle_timeout =
                    event.idle_timeout_seconds.filter(|s| *s > 0).map(|s| Duration::from_secs(s.into()));
            }
            matches!(status, WorkspaceStatus::Online | WorkspaceStatus::Degraded)
                && event.active_tasks < event.max_concurrent_tasks.max(1)
        };
        if room {
            let _ = self.signals.send(DrainSignal::Room(id));
        }
    }
}

/// Outages, and a registry that refuses our credentials, are the registry
/// being unavailable to this caller.
fn from_registry(status: tonic::Status) -> GatewayError {
    match status.code() {
        Code::Unauthenticated | Code::PermissionDenied => {
            tracing::error!(message = status.message(), "the registry refused the gateway's service token");
            GatewayError::registry_unavailable("the registry refused the gateway's credentials")
        }
        _ => GatewayError::registry_unavailable(format!("the registry is unavailable ({:?})", status.code())),
    }
}

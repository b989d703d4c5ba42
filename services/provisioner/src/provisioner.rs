//! The provisioner's operations (PRV-1, PRV-5 … PRV-7, PRV-10): each checks
//! ownership and the policy, records what the workload should be doing,
//! then acts on the runtime and tells the registry what happened.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, Weak},
    time::{Duration, SystemTime},
};

mod enforcement;

use agentmesh_chassis::status::echo;
use agentmesh_proto::registry::v1::Workspace;
use futures::stream::BoxStream;

use crate::{
    error::{ProvisionerError, Result},
    metrics::ProvisionerMetrics,
    registry_client::{RegistryClient, WorkspaceStatus, is_live},
    runtime::{ExecOutput, LogLine, LogRequest, Probe, RuntimeError, RuntimeKind, StopOutcome, WorkloadSpec},
    runtimes::{Instance, Runtimes},
    settings::{ProvisionerSettings, TierConfig},
    spec::{ENV_REGISTRY_ADDR, ENV_TOKEN, ENV_WORKSPACE_ID, WorkspaceSpec},
    store::{Desired, Store, WorkloadRecord, now_ms},
};

pub use enforcement::{PolicyChange, Violation};

/// What an external agent needs to join.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub registry_address: String,
    pub workspace_id: String,
    pub token: String,
}

/// The answer to "is it running?" with what the registry says beside it.
#[derive(Debug, Clone)]
pub struct RuntimeView {
    pub probe: Probe,
    pub kind: RuntimeKind,
    pub instance: String,
    pub restart_count: u32,
    pub next_restart_at: Option<i64>,
    pub status: Option<WorkspaceStatus>,
    pub observed_at: SystemTime,
}

/// Serialises operations on one workspace within this process, so that a
/// resync or an engine event never interleaves with a stop or a restart
/// (across replicas the registry's compare-and-set guards the status).
#[derive(Default)]
pub(crate) struct WorkspaceLocks(Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>);

impl WorkspaceLocks {
    pub(crate) async fn lock(&self, workspace_id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            map.retain(|_, weak| weak.strong_count() > 0);
            match map.get(workspace_id).and_then(Weak::upgrade) {
                Some(lock) => lock,
                None => {
                    let lock = Arc::new(tokio::sync::Mutex::new(()));
                    map.insert(workspace_id.to_owned(), Arc::downgrade(&lock));
                    lock
                }
            }
        };
        lock.lock_owned().await
    }
}

pub struct Provisioner {
    pub(crate) store: Arc<Store>,
    pub(crate) registry: RegistryClient,
    pub(crate) runtimes: Arc<Runtimes>,
    pub(crate) settings: ProvisionerSettings,
    pub(crate) locks: WorkspaceLocks,
    pub(crate) metrics: ProvisionerMetrics,
}

fn external_hint(what: &str) -> ProvisionerError {
    let (message, hint) = match what {
        "restart" => ("restart", "restart the agent where it runs; it rejoins with its token"),
        "hibernate" => ("hibernate", "stop the agent where it runs, or StopWorkspace to stop routing to it"),
        "wake" => ("wake", "external workspaces are never hibernated; start the agent where it runs"),
        "runtime" => ("a runtime check", "the registry status, kept current by the agent's heartbeats, tells"),
        "logs" => ("reading logs", "read the logs where the agent runs"),
        _ => ("exec", "run the command where the agent runs"),
    };
    ProvisionerError::External {
        message: format!("{message} is not available for external workspaces: the mesh does not run their agent"),
        hint: hint.to_owned(),
    }
}

impl Provisioner {
    pub fn new(
        store: Arc<Store>,
        registry: RegistryClient,
        runtimes: Arc<Runtimes>,
        settings: ProvisionerSettings,
        metrics: ProvisionerMetrics,
    ) -> Self {
        Self { store, registry, runtimes, settings, locks: WorkspaceLocks::default(), metrics }
    }

    pub fn runtimes(&self) -> &Runtimes {
        &self.runtimes
    }

    pub fn tiers(&self) -> &[TierConfig] {
        &self.settings.tiers
    }

    pub fn default_tier(&self) -> &str {
        &self.settings.default_tier
    }

    pub fn mesh_id(&self) -> &str {
        &self.settings.mesh_id
    }

    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await
    }

    /// PRV-1: policy first, then the record, then the workload.
    pub async fn create(&self, mut spec: WorkspaceSpec) -> Result<(Workspace, Option<Connection>)> {
        let instance = self.runtimes.resolve(spec.runtime_kind, &spec.runtime_instance)?.clone();
        spec.runtime_instance = instance.name().to_owned();
        if spec.runtime_kind != RuntimeKind::External {
            if spec.tier.is_empty() {
                spec.tier = self.settings.default_tier.clone();
            }
            if !self.settings.tiers.iter().any(|t| t.name == spec.tier) {
                return Err(ProvisionerError::invalid(
                    "spec.tier",
                    format!("unknown tier {} (see GetPolicy)", echo(&spec.tier)),
                ));
            }
        }
        self.admit(&spec).await?;
        let (workspace, token) = self.registry.create(&spec).await?;
        let id = workspace.id.clone();
        let now = now_ms();
        let record = WorkloadRecord {
            workspace_id: id.clone(),
            spec,
            token,
            desired: Desired::Running,
            restart_count: 0,
            next_restart_at: None,
            last_started_at: now,
            last_active_at: now,
            created_at: now,
        };
        if let Err(e) = self.store.insert(&record).await {
            // The record must not be left promising a workload nobody will run.
            if let Err(failed) = self
                .registry
                .transition(
                    &id,
                    WorkspaceStatus::Failed,
                    "the provisioner could not store the workspace",
                    instance.name(),
                    &[],
                )
                .await
            {
                tracing::error!(
                    workspace_id = %id, error = %failed,
                    "the workspace could not be stored, nor marked failed: the registry keeps it as it is, \
                     with no workload behind it; delete it"
                );
            }
            return Err(e);
        }
        let _guard = self.locks.lock(&id).await;
        if !instance.runtime.runs_workloads() {
            let connection = Connection {
                registry_address: self.settings.external_registry_address().to_owned(),
                workspace_id: id,
                token: record.token,
            };
            return Ok((workspace, Some(connection)));
        }
        if let Err(e) = instance.runtime.start(&self.workload_spec(&record)).await {
            return Err(self.start_failed(&instance, &id, e).await);
        }
        Ok((workspace, None))
    }

    /// PRV-5: "already gone" is success; other failures leave the record
    /// STOPPING with the reason.
    pub async fn stop(&self, workspace_id: &str, reason: &str, grace: Duration) -> Result<(Workspace, bool)> {
        let (_, instance) = self.owned(workspace_id).await?;
        let _guard = self.locks.lock(workspace_id).await;
        let current = self.registry.get(workspace_id).await?;
        self.store.set_desired(workspace_id, Desired::Stopped).await?;
        let keeps_status = matches!(
            current.status(),
            WorkspaceStatus::Stopped | WorkspaceStatus::PolicyStopped | WorkspaceStatus::Failed
        );
        let actor = instance.name();
        if !keeps_status {
            self.registry
                .transition(workspace_id, WorkspaceStatus::Stopping, &or(reason, "stop requested"), actor, &[])
                .await?;
        }
        let outcome = match instance.runtime.stop(workspace_id, grace).await {
            Ok(outcome) => outcome,
            Err(e) => {
                let why = format!("stop failed: {e}");
                if !keeps_status
                    && let Err(failed) =
                        self.registry.transition(workspace_id, WorkspaceStatus::Stopping, &why, actor, &[]).await
                {
                    tracing::warn!(
                        %workspace_id, error = %failed,
                        "the stop failed, and the reason could not be recorded: the registry shows it stopping"
                    );
                }
                return Err(ProvisionerError::from_runtime(e, workspace_id));
            }
        };
        let workspace = if keeps_status {
            current
        } else {
            self.registry
                .transition(workspace_id, WorkspaceStatus::Stopped, &or(reason, "stopped on request"), actor, &[])
                .await?
                .0
        };
        Ok((workspace, outcome == StopOutcome::AlreadyGone))
    }

    /// Starts a stopped workspace again from its stored spec.
    pub async fn start(&self, workspace_id: &str, reason: &str) -> Result<(Workspace, bool)> {
        let (record, instance) = self.owned(workspace_id).await?;
        let _guard = self.locks.lock(workspace_id).await;
        let current = self.registry.get(workspace_id).await?;
        match current.status() {
            WorkspaceStatus::Stopping => {
                return Err(ProvisionerError::IllegalTransition(format!(
                    "workspace {workspace_id} is stopping; start it once it is stopped"
                )));
            }
            WorkspaceStatus::Hibernated => {
                return Err(ProvisionerError::IllegalTransition(format!(
                    "workspace {workspace_id} is hibernated; use WakeWorkspace"
                )));
            }
            WorkspaceStatus::AwaitingAgent => return Ok((current, false)),
            WorkspaceStatus::Provisioning | WorkspaceStatus::Online | WorkspaceStatus::Degraded
                if record.desired == Desired::Running
                    && (!instance.runtime.runs_workloads()
                        || matches!(instance.runtime.probe(workspace_id).await, Probe::Running(_))) =>
            {
                return Ok((current, false));
            }
            _ => {}
        }
        self.admit(&record.spec).await?;
        self.store.set_desired(workspace_id, Desired::Running).await?;
        let workspace = self.launch(&instance, &record, current.status(), &or(reason, "started on request")).await?;
        Ok((workspace, true))
    }

    /// Stop and start from the stored spec; the policy is checked before
    /// anything is stopped (PRV-6).
    pub async fn restart(&self, workspace_id: &str, reason: &str, grace: Duration) -> Result<Workspace> {
        let (record, instance) = self.owned(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("restart"));
        }
        let _guard = self.locks.lock(workspace_id).await;
        let current = self.registry.get(workspace_id).await?;
        if matches!(current.status(), WorkspaceStatus::Hibernated | WorkspaceStatus::Stopping) {
            return Err(ProvisionerError::IllegalTransition(format!(
                "workspace {workspace_id} is {}; a restart needs a running or stopped workspace",
                status_name(current.status())
            )));
        }
        if let Err(denied) = self.admit(&record.spec).await {
            let ProvisionerError::PolicyDenied(why) = &denied else { return Err(denied) };
            self.stop_for_policy(&instance, workspace_id, why).await;
            return Err(denied);
        }
        self.store.set_desired(workspace_id, Desired::Running).await?;
        let actor = instance.name();
        let mut status = current.status();
        if is_live(status) {
            self.registry
                .transition(workspace_id, WorkspaceStatus::Stopping, &or(reason, "restart requested"), actor, &[])
                .await?;
            status = WorkspaceStatus::Stopping;
        }
        if let Err(e) = instance.runtime.stop(workspace_id, grace).await {
            let why = format!("restart: stop failed: {e}");
            if let Err(failed) = self.registry.transition(workspace_id, status, &why, actor, &[]).await {
                tracing::warn!(
                    %workspace_id, error = %failed,
                    "the restart's stop failed, and the reason could not be recorded: the old workload may still run"
                );
            }
            return Err(ProvisionerError::from_runtime(e, workspace_id));
        }
        self.launch(&instance, &record, status, &or(reason, "restarted on request")).await
    }

    /// PRV-5: tombstone first, then stop, then remove the volumes once the
    /// workload is confirmed gone. Returns the cleanup error, if any.
    pub async fn delete(
        &self,
        workspace_id: &str,
        reason: &str,
        grace: Duration,
    ) -> Result<(Workspace, Option<String>)> {
        let record = match self.store.get(workspace_id).await? {
            Some(record) => record,
            None => {
                return match self.not_ours(workspace_id).await {
                    // Removed and cleaned up earlier: deleting again succeeds.
                    ProvisionerError::Removed(_) => Ok((self.registry.get(workspace_id).await?, None)),
                    other => Err(other),
                };
            }
        };
        let instance = self.instance_of(&record)?;
        let _guard = self.locks.lock(workspace_id).await;
        let (workspace, _) = self
            .registry
            .transition(workspace_id, WorkspaceStatus::Removed, &or(reason, "deleted"), instance.name(), &[])
            .await?;
        self.store.set_desired(workspace_id, Desired::Removed).await?;
        let cleanup = self.clean_up(&instance, workspace_id, grace).await.err();
        Ok((workspace, cleanup))
    }

    /// Stops the workload and removes its volumes, then forgets it.
    pub(crate) async fn clean_up(
        &self,
        instance: &Instance,
        workspace_id: &str,
        grace: Duration,
    ) -> Result<(), String> {
        instance.runtime.stop(workspace_id, grace).await.map_err(|e| format!("stopping the workload failed: {e}"))?;
        instance.runtime.purge(workspace_id).await.map_err(|e| format!("removing the volumes failed: {e}"))?;
        self.store.forget(workspace_id).await.map_err(|e| e.to_string())
    }

    pub async fn hibernate(&self, workspace_id: &str, reason: &str) -> Result<(Workspace, bool)> {
        let (_, instance) = self.owned(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("hibernate"));
        }
        let _guard = self.locks.lock(workspace_id).await;
        self.hibernate_locked(&instance, workspace_id, reason).await
    }

    pub(crate) async fn hibernate_locked(
        &self,
        instance: &Instance,
        workspace_id: &str,
        reason: &str,
    ) -> Result<(Workspace, bool)> {
        let current = self.registry.get(workspace_id).await?;
        match current.status() {
            WorkspaceStatus::Hibernated => return Ok((current, false)),
            WorkspaceStatus::Online | WorkspaceStatus::Degraded => {}
            other => {
                return Err(ProvisionerError::IllegalTransition(format!(
                    "workspace {workspace_id} is {}; only online or degraded workspaces hibernate",
                    status_name(other)
                )));
            }
        }
        self.store.set_desired(workspace_id, Desired::Hibernated).await?;
        if let Err(e) = instance.runtime.stop(workspace_id, self.settings.stop_grace()).await {
            self.store.set_desired(workspace_id, Desired::Running).await?;
            return Err(ProvisionerError::from_runtime(e, workspace_id));
        }
        let from = [WorkspaceStatus::Online, WorkspaceStatus::Degraded];
        let (workspace, _) = self
            .registry
            .transition(workspace_id, WorkspaceStatus::Hibernated, &or(reason, "hibernated"), instance.name(), &from)
            .await?;
        Ok((workspace, true))
    }

    pub async fn wake(&self, workspace_id: &str, reason: &str) -> Result<(Workspace, bool)> {
        let (record, instance) = self.owned(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("wake"));
        }
        let _guard = self.locks.lock(workspace_id).await;
        let current = self.registry.get(workspace_id).await?;
        match current.status() {
            WorkspaceStatus::Provisioning | WorkspaceStatus::Online | WorkspaceStatus::Degraded => {
                return Ok((current, false));
            }
            WorkspaceStatus::Hibernated => {}
            other => {
                return Err(ProvisionerError::IllegalTransition(format!(
                    "workspace {workspace_id} is {}; use StartWorkspace",
                    status_name(other)
                )));
            }
        }
        if let Err(denied) = self.admit(&record.spec).await {
            let ProvisionerError::PolicyDenied(why) = &denied else { return Err(denied) };
            self.stop_for_policy(&instance, workspace_id, why).await;
            return Err(denied);
        }
        self.store.set_desired(workspace_id, Desired::Running).await?;
        let workspace = self.launch(&instance, &record, current.status(), &or(reason, "woken on demand")).await?;
        Ok((workspace, true))
    }

    /// PRV-4, asked by an operator.
    pub async fn runtime_view(&self, workspace_id: &str) -> Result<RuntimeView> {
        let (record, instance) = self.owned_any(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("runtime"));
        }
        let probe = instance.runtime.probe(workspace_id).await;
        let status = self.registry.get(workspace_id).await.ok().map(|w| w.status());
        Ok(RuntimeView {
            probe,
            kind: instance.runtime.kind(),
            instance: instance.name().to_owned(),
            restart_count: record.restart_count,
            next_restart_at: record.next_restart_at,
            status,
            observed_at: SystemTime::now(),
        })
    }

    pub async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>> {
        let (_, instance) = self.owned_any(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("logs"));
        }
        instance.runtime.logs(workspace_id, request).await.map_err(|e| ProvisionerError::from_runtime(e, workspace_id))
    }

    pub async fn exec(&self, workspace_id: &str, command: &[String], timeout: Duration) -> Result<ExecOutput> {
        let (_, instance) = self.owned(workspace_id).await?;
        if !instance.runtime.runs_workloads() {
            return Err(external_hint("exec"));
        }
        if !self.store.policy().await?.policy.allow_exec {
            return Err(ProvisionerError::PolicyDenied("exec is not allowed (the policy's allow_exec is off)".into()));
        }
        instance
            .runtime
            .exec(workspace_id, command, timeout)
            .await
            .map_err(|e| ProvisionerError::from_runtime(e, workspace_id))
    }

    /// Marks the record PROVISIONING (AWAITING_AGENT for external agents)
    /// and starts the workload; a failed start leaves it FAILED.
    pub(crate) async fn launch(
        &self,
        instance: &Instance,
        record: &WorkloadRecord,
        from: WorkspaceStatus,
        reason: &str,
    ) -> Result<Workspace> {
        let id = &record.workspace_id;
        let actor = instance.name();
        if !instance.runtime.runs_workloads() {
            return Ok(self.registry.transition(id, WorkspaceStatus::AwaitingAgent, reason, actor, &[]).await?.0);
        }
        if matches!(from, WorkspaceStatus::Online | WorkspaceStatus::Degraded) {
            // The lifecycle re-provisions only from a status that admits the
            // workload is not serving.
            self.registry.transition(id, WorkspaceStatus::Offline, "the workload is not running", actor, &[]).await?;
        }
        let (workspace, _) = self.registry.transition(id, WorkspaceStatus::Provisioning, reason, actor, &[]).await?;
        match instance.runtime.start(&self.workload_spec(record)).await {
            Ok(_) => Ok(workspace),
            Err(e) => Err(self.start_failed(instance, id, e).await),
        }
    }

    async fn start_failed(&self, instance: &Instance, workspace_id: &str, error: RuntimeError) -> ProvisionerError {
        let reason = format!("the workload could not be started: {error}");
        if let Err(e) =
            self.registry.transition(workspace_id, WorkspaceStatus::Failed, &reason, instance.name(), &[]).await
        {
            tracing::warn!(workspace_id, error = %e, "cannot record a failed start");
        }
        ProvisionerError::from_runtime(error, workspace_id)
    }

    /// The workload as the runtime runs it: the stored spec plus the
    /// injected identity, registry address and token.
    pub(crate) fn workload_spec(&self, record: &WorkloadRecord) -> WorkloadSpec {
        let spec = &record.spec;
        let mut env = spec.env.clone();
        env.insert(ENV_WORKSPACE_ID.to_owned(), record.workspace_id.clone());
        env.insert(ENV_REGISTRY_ADDR.to_owned(), self.settings.workload_registry_address().to_owned());
        env.insert(ENV_TOKEN.to_owned(), record.token.clone());
        let limits =
            self.settings.tiers.iter().find(|t| t.name == spec.tier).map(TierConfig::limits).unwrap_or_default();
        WorkloadSpec {
            workspace_id: record.workspace_id.clone(),
            workspace_name: spec.name.clone(),
            image: spec.image.clone(),
            command: spec.command.clone(),
            args: spec.args.clone(),
            env,
            limits,
        }
    }

    pub(crate) fn instance_of(&self, record: &WorkloadRecord) -> Result<Arc<Instance>> {
        self.runtimes.get(&record.spec.runtime_instance).cloned().ok_or_else(|| ProvisionerError::NotOwned {
            id: record.workspace_id.clone(),
            owner: record.spec.runtime_instance.clone(),
        })
    }

    /// A workspace this provisioner manages, tombstones included.
    async fn owned_any(&self, workspace_id: &str) -> Result<(WorkloadRecord, Arc<Instance>)> {
        let Some(record) = self.store.get(workspace_id).await? else {
            return Err(self.not_ours(workspace_id).await);
        };
        let instance = self.instance_of(&record)?;
        Ok((record, instance))
    }

    /// Why a workspace has no workload record here: it was removed and its
    /// cleanup finished, another provisioner's instance owns it, or it does
    /// not exist.
    async fn not_ours(&self, workspace_id: &str) -> ProvisionerError {
        match self.registry.get(workspace_id).await {
            Ok(workspace) if workspace.status() == WorkspaceStatus::Removed => {
                ProvisionerError::Removed(workspace_id.to_owned())
            }
            Ok(workspace) => ProvisionerError::NotOwned { id: workspace.id, owner: workspace.runtime_instance },
            Err(ProvisionerError::RegistryNotFound { .. }) => ProvisionerError::NotFound(workspace_id.to_owned()),
            Err(e) => e,
        }
    }

    /// A live (not removed) workspace this provisioner manages.
    async fn owned(&self, workspace_id: &str) -> Result<(WorkloadRecord, Arc<Instance>)> {
        let (record, instance) = self.owned_any(workspace_id).await?;
        if record.desired == Desired::Removed {
            return Err(ProvisionerError::Removed(workspace_id.to_owned()));
        }
        Ok((record, instance))
    }
}

fn or(reason: &str, default: &str) -> String {
    if reason.trim().is_empty() { default.to_owned() } else { reason.to_owned() }
}

pub(crate) fn status_name(status: WorkspaceStatus) -> String {
    status.as_str_name().trim_start_matches("WORKSPACE_STATUS_").to_ascii_lowercase()
}

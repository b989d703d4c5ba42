//! Keeping the registry truthful about what runs (PRV-8 … PRV-10): engine
//! events and a periodic resync both end in [`Provisioner::reconcile`], which
//! asks the one three-answer check (PRV-4) and acts only on a definite
//! answer. Also here: the orphan sweeper, the restart policy, policy
//! enforcement after a change, and hibernation of idle workspaces.

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::{
    provisioner::Provisioner,
    registry_client::WorkspaceStatus,
    runtime::{Probe, WorkloadInfo},
    runtimes::Instance,
    store::{Desired, WorkloadRecord, now_ms},
};

/// Statuses in which a workload is expected to run; an exit observed in any
/// of them is the workload's own doing.
const EXPECTED_RUNNING: [WorkspaceStatus; 4] =
    [WorkspaceStatus::Provisioning, WorkspaceStatus::Online, WorkspaceStatus::Degraded, WorkspaceStatus::Offline];

impl Provisioner {
    /// Starts the background work of every instance: event watching, resync,
    /// health checks, and hibernation.
    pub fn spawn_background(self: &Arc<Self>, shutdown: &CancellationToken) {
        for instance in self.runtimes.all() {
            tokio::spawn(self.clone().check_health(instance.clone(), shutdown.clone()));
            if instance.runtime.runs_workloads() {
                let resync_now = Arc::new(tokio::sync::Notify::new());
                tokio::spawn(self.clone().watch_events(instance.clone(), resync_now.clone(), shutdown.clone()));
                tokio::spawn(self.clone().resync_loop(instance.clone(), resync_now, shutdown.clone()));
                tokio::spawn(self.clone().hibernate_idle(instance.clone(), shutdown.clone()));
            }
        }
    }

    async fn check_health(self: Arc<Self>, instance: Arc<Instance>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_secs(5));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let result = instance.runtime.engine_info().await;
            instance.update_health(|health| {
                health.checked_at = Some(std::time::SystemTime::now());
                match result {
                    Ok(info) => {
                        health.healthy = Some(true);
                        health.detail.clear();
                        health.engine_version = info.version;
                    }
                    Err(e) => {
                        health.healthy = Some(false);
                        health.detail = e.to_string();
                    }
                }
            });
        }
    }

    /// Follows the engine's events; a broken stream is watched again after
    /// a pause, followed by a resync for whatever happened meanwhile.
    async fn watch_events(
        self: Arc<Self>,
        instance: Arc<Instance>,
        resync_now: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) {
        let mut pause = Duration::from_millis(200);
        loop {
            match instance.runtime.watch().await {
                Ok(mut events) => {
                    pause = Duration::from_millis(200);
                    resync_now.notify_one();
                    loop {
                        let event = tokio::select! {
                            _ = shutdown.cancelled() => return,
                            event = events.next() => event,
                        };
                        let Some(event) = event else { break };
                        let this = self.clone();
                        let instance = instance.clone();
                        tokio::spawn(async move { this.reconcile(&instance, &event.workspace_id).await });
                    }
                    tracing::info!(instance = instance.name(), "engine event stream ended; watching again");
                }
                Err(e) => tracing::warn!(instance = instance.name(), error = %e, "cannot watch engine events"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(pause) => {}
            }
            pause = (pause * 2).min(Duration::from_secs(10));
        }
    }

    async fn resync_loop(
        self: Arc<Self>,
        instance: Arc<Instance>,
        resync_now: Arc<tokio::sync::Notify>,
        shutdown: CancellationToken,
    ) {
        let interval = Duration::from_millis(self.settings.resync_interval_ms);
        loop {
            self.resync(&instance).await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
                _ = resync_now.notified() => {}
            }
        }
    }

    /// Compares every workload with its record, and every record with its
    /// workload. Engine errors skip the round: they never change a status.
    pub async fn resync(self: &Arc<Self>, instance: &Arc<Instance>) {
        let workloads = match instance.runtime.list().await {
            Ok(workloads) => workloads,
            Err(e) => {
                tracing::warn!(instance = instance.name(), error = %e, "resync skipped: cannot list workloads");
                return;
            }
        };
        let records = match self.store.list(instance.name(), None).await {
            Ok(records) => records,
            Err(e) => {
                tracing::warn!(instance = instance.name(), error = %e, "resync skipped: store unavailable");
                return;
            }
        };
        let known: std::collections::HashMap<&str, &WorkloadRecord> =
            records.iter().map(|r| (r.workspace_id.as_str(), r)).collect();
        // PRV-9: ours by label and name, but no record, or a removed one.
        for workload in &workloads {
            let orphan = known.get(workload.workspace_id.as_str()).is_none_or(|r| r.desired == Desired::Removed);
            if orphan {
                let _guard = self.locks.lock(&workload.workspace_id).await;
                tracing::info!(instance = instance.name(), workspace_id = %workload.workspace_id, name = %workload.name, "reaping an orphaned workload");
                match self.reap(instance, &workload.workspace_id).await {
                    Ok(()) => self.metrics.reaped_orphan(),
                    Err(e) => {
                        tracing::warn!(workspace_id = %workload.workspace_id, error = %e, "cannot reap an orphan; will retry")
                    }
                }
            }
        }
        self.forget_removed_in_registry(instance, &records).await;
        if let Ok(active) = self.store.policy().await {
            for record in records.iter().filter(|r| matches!(r.desired, Desired::Running | Desired::Hibernated)) {
                if let Err(why) = active.policy.admit(&record.spec, &record.spec.tier) {
                    let _guard = self.locks.lock(&record.workspace_id).await;
                    self.stop_for_policy(instance, &record.workspace_id, &why).await;
                }
            }
        }
        for record in &records {
            if let Some(due) = record.next_restart_at {
                self.schedule_restart_task(instance, &record.workspace_id, due);
            } else {
                self.reconcile(instance, &record.workspace_id).await;
            }
        }
        instance.update_health(|health| {
            health.workload_count = workloads.len() as u64;
            health.last_resync_at = Some(std::time::SystemTime::now());
        });
    }

    /// Stops and removes a workload whose workspace is gone, with its volumes.
    async fn reap(&self, instance: &Instance, workspace_id: &str) -> Result<(), String> {
        if let Ok(Some(record)) = self.store.get(workspace_id).await
            && record.desired != Desired::Removed
        {
            return Ok(());
        }
        self.clean_up(instance, workspace_id, self.settings.stop_grace()).await
    }

    /// Records the registry removed (by an operator, directly) are
    /// tombstoned here too, so their workloads go.
    async fn forget_removed_in_registry(&self, instance: &Instance, records: &[WorkloadRecord]) {
        let Ok(removed) = self.registry.list_owned(instance.name(), &[WorkspaceStatus::Removed]).await else { return };
        let removed: std::collections::HashSet<&str> = removed.iter().map(|w| w.id.as_str()).collect();
        for record in
            records.iter().filter(|r| r.desired != Desired::Removed && removed.contains(r.workspace_id.as_str()))
        {
            let _guard = self.locks.lock(&record.workspace_id).await;
            if self.store.set_desired(&record.workspace_id, Desired::Removed).await.is_ok()
                && let Err(left) = self.clean_up(instance, &record.workspace_id, self.settings.stop_grace()).await
            {
                // Its record stays, so the next reconcile tries again.
                tracing::warn!(
                    workspace_id = %record.workspace_id, error = %left,
                    "a workspace removed in the registry could not be cleaned up yet: its workload or volumes remain"
                );
            }
        }
    }

    /// Brings one workspace's record and workload in line, on a definite
    /// answer from the engine only (PRV-4, PRV-8).
    pub async fn reconcile(self: &Arc<Self>, instance: &Arc<Instance>, workspace_id: &str) {
        let _guard = self.locks.lock(workspace_id).await;
        let record = match self.store.get(workspace_id).await {
            Ok(Some(record)) if record.spec.runtime_instance == instance.name() => record,
            // Unknown here: the resync's orphan sweep decides.
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(workspace_id, error = %e, "reconcile skipped: store unavailable");
                return;
            }
        };
        let probe = instance.runtime.probe(workspace_id).await;
        self.metrics.reconciled(&probe);
        match (record.desired, probe) {
            (_, Probe::Unknown(detail)) => {
                tracing::debug!(workspace_id, detail, "engine could not tell whether the workload runs; status kept");
            }
            (Desired::Running, Probe::Running(_)) => {}
            (Desired::Running, Probe::Exited(info)) => self.workload_ended(instance, &record, Some(info)).await,
            (Desired::Running, Probe::Absent) => self.workload_ended(instance, &record, None).await,
            (Desired::Removed, _) => {
                if let Err(e) = self.clean_up(instance, workspace_id, self.settings.stop_grace()).await {
                    tracing::warn!(workspace_id, error = %e, "cleanup of a removed workspace failed; will retry");
                }
            }
            (Desired::Stopped | Desired::Hibernated, Probe::Running(_)) => {
                // A stop that failed half-way, or a workload started behind our back.
                if let Err(e) = instance.runtime.stop(workspace_id, self.settings.stop_grace()).await {
                    tracing::warn!(workspace_id, error = %e, "cannot stop a workload that should not run; will retry");
                }
            }
            (Desired::Stopped | Desired::Hibernated, Probe::Exited(_) | Probe::Absent) => {}
        }
    }

    /// The workload ended on its own: tell the registry, then apply the
    /// restart policy (PRV-10).
    async fn workload_ended(
        self: &Arc<Self>,
        instance: &Arc<Instance>,
        record: &WorkloadRecord,
        info: Option<WorkloadInfo>,
    ) {
        if record.next_restart_at.is_some() {
            return;
        }
        let id = record.workspace_id.as_str();
        let exit_code = info.as_ref().and_then(|i| i.exit_code);
        let (status, reason) = match (&info, exit_code) {
            (None, _) => (WorkspaceStatus::Offline, "the workload is gone (removed outside the mesh)".to_owned()),
            (Some(_), Some(0)) => (WorkspaceStatus::Stopped, "the workload exited with code 0".to_owned()),
            // Killed from outside (by a signal): the agent did not fail, it
            // was taken away.
            (Some(_), Some(code)) if code > 128 => (
                WorkspaceStatus::Offline,
                format!("the workload was killed by signal {} (exit code {code})", code - 128),
            ),
            (Some(_), Some(code)) => (WorkspaceStatus::Failed, format!("the workload exited with code {code}")),
            // It never ran (an image that cannot be pulled) or ended unseen.
            (Some(info), None) => (WorkspaceStatus::Failed, format!("the workload ended: {}", info.detail)),
        };
        match self.registry.transition(id, status, &reason, instance.name(), &EXPECTED_RUNNING).await {
            Ok(_) => tracing::info!(workspace_id = id, reason, "workload ended"),
            // The status moved on meanwhile (a stop, a newer start): that wins.
            Err(crate::error::ProvisionerError::Registry(_)) => return,
            Err(e) => {
                tracing::warn!(workspace_id = id, error = %e, "cannot report an ended workload; the resync retries");
                return;
            }
        }
        if !record.spec.restart_policy.restarts(exit_code == Some(0)) {
            return;
        }
        let mut attempts = record.restart_count;
        let ran_for = info.as_ref().and_then(|i| i.finished_at?.duration_since(i.started_at?).ok());
        if ran_for.is_some_and(|d| d.as_secs() >= self.settings.restart_reset_after_secs) && attempts > 0 {
            if self.store.reset_restarts(id).await.is_err() {
                return;
            }
            attempts = 0;
        }
        let delay = self.settings.restart_backoff(attempts);
        let due = now_ms() + i64::try_from(delay.as_millis()).unwrap_or(i64::MAX);
        match self.store.schedule_restart(id, attempts, due).await {
            Ok(true) => self.schedule_restart_task(instance, id, due),
            Ok(false) => {}
            Err(e) => tracing::warn!(workspace_id = id, error = %e, "cannot schedule a restart; the resync retries"),
        }
    }

    fn schedule_restart_task(self: &Arc<Self>, instance: &Arc<Instance>, workspace_id: &str, due: i64) {
        let this = self.clone();
        let instance = instance.clone();
        let id = workspace_id.to_owned();
        tokio::spawn(async move {
            let wait = u64::try_from(due - now_ms()).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(wait)).await;
            this.restart_due(&instance, &id, due).await;
        });
    }

    /// A restart the restart policy scheduled; it passes the policy gate
    /// like any other start (PRV-6).
    async fn restart_due(&self, instance: &Instance, workspace_id: &str, due: i64) {
        let _guard = self.locks.lock(workspace_id).await;
        let Ok(Some(record)) = self.store.get(workspace_id).await else { return };
        if record.desired != Desired::Running || record.next_restart_at != Some(due) {
            return;
        }
        if let Err(crate::error::ProvisionerError::PolicyDenied(why)) = self.admit(&record.spec).await {
            self.stop_for_policy(instance, workspace_id, &why).await;
            return;
        }
        if !matches!(self.store.claim_restart(workspace_id, due).await, Ok(true)) {
            return;
        }
        let status = self.registry.get(workspace_id).await.map(|w| w.status()).unwrap_or(WorkspaceStatus::Offline);
        let reason = format!("restarted by its restart policy (attempt {})", record.restart_count);
        match self.launch(instance, &record, status, &reason).await {
            Ok(_) => self.metrics.restarted(),
            Err(e) => tracing::warn!(workspace_id, error = %e, "restart failed"),
        }
    }

    /// Hibernates workspaces idle for longer than their spec (or the
    /// default) allows; a busy heartbeat counts as activity.
    async fn hibernate_idle(self: Arc<Self>, instance: Arc<Instance>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(Duration::from_millis(self.settings.hibernate_check_interval_ms));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = ticker.tick() => {}
            }
            let Ok(records) = self.store.list(instance.name(), Some(Desired::Running)).await else { continue };
            let idle_limit = |r: &WorkloadRecord| {
                u64::from(r.spec.hibernate_after_idle_secs.unwrap_or(self.settings.hibernate_after_idle_secs)) * 1000
            };
            if records.iter().all(|r| idle_limit(r) == 0) {
                continue;
            }
            let awake = [WorkspaceStatus::Online, WorkspaceStatus::Degraded];
            let Ok(workspaces) = self.registry.list_owned(instance.name(), &awake).await else { continue };
            let now = now_ms();
            for workspace in workspaces {
                let Some(record) = records.iter().find(|r| r.workspace_id == workspace.id) else { continue };
                let limit = idle_limit(record);
                if limit == 0 {
                    continue;
                }
                if workspace.active_tasks > 0 {
                    if let Err(failed) = self.store.touch_active(&record.workspace_id, now).await {
                        tracing::warn!(
                            workspace_id = %record.workspace_id, error = %failed,
                            "cannot record the workspace as active; its idle clock runs from its last recorded activity"
                        );
                    }
                } else if u64::try_from(now - record.last_active_at).unwrap_or_default() >= limit {
                    let _guard = self.locks.lock(&record.workspace_id).await;
                    let reason = format!("idle for {} s", limit / 1000);
                    match self.hibernate_locked(&instance, &record.workspace_id, &reason).await {
                        Ok(_) => tracing::info!(workspace_id = %record.workspace_id, "hibernated an idle workspace"),
                        Err(e) => tracing::warn!(workspace_id = %record.workspace_id, error = %e, "cannot hibernate"),
                    }
                }
            }
        }
    }
}

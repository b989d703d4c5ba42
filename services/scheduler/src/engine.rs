//! Firing schedules (SCH-2 … SCH-8).
//!
//! The loop sleeps until the earliest `next_run_at` (or until a schedule
//! changes), then claims what is due. A claim is one transaction that
//! records the run and moves the schedule to its next time together, so a
//! run is recorded exactly once however many replicas race for it, and the
//! schedule has advanced before anything is sent: an error or a panic while
//! firing cannot hold it back (SCH-7). Claimed runs are held under a lease
//! that this replica renews; when a replica dies, another takes its
//! unfinished runs over and sends them again with the same message id.

use std::{
    any::Any,
    panic::AssertUnwindSafe,
    sync::Arc,
    time::{Duration, Instant},
};

use agentmesh_proto::{
    registry::v1::WorkspaceStatus,
    scheduler::v1::{OverlapPolicy, RunOutcome},
};
use chrono::{DateTime, Utc};
use futures::FutureExt;
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    directory::Workspaces,
    dispatch::{Delivery, DispatchError, Dispatcher, Outgoing},
    error::Result,
    metrics::SchedulerMetrics,
    settings::SchedulerSettings,
    store::{ClaimedRun, Finish, Run, Schedule, ScheduleStore, StoreError},
    timetable,
};

/// The longest the loop sleeps without looking at the store: schedules
/// created through another replica, and runs whose replica died, are seen
/// at least this often.
const MAX_SLEEP: Duration = Duration::from_secs(5);
/// How long the loop waits after the store failed before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);
const PURGE_INTERVAL: Duration = Duration::from_secs(3600);

pub struct Engine {
    store: ScheduleStore,
    workspaces: Arc<Workspaces>,
    dispatcher: Arc<dyn Dispatcher>,
    settings: SchedulerSettings,
    replica: String,
    changed: Notify,
    slots: Arc<Semaphore>,
    metrics: SchedulerMetrics,
}

/// What a run does once its workspace has been looked at.
enum Decision {
    Finish(Finish),
    Send,
}

impl Engine {
    pub fn new(
        store: ScheduleStore,
        workspaces: Arc<Workspaces>,
        dispatcher: Arc<dyn Dispatcher>,
        settings: SchedulerSettings,
        metrics: SchedulerMetrics,
    ) -> Arc<Self> {
        let slots = Arc::new(Semaphore::new(settings.max_in_flight as usize));
        Arc::new(Self {
            store,
            workspaces,
            dispatcher,
            settings,
            replica: format!("scheduler-{}", Uuid::new_v4()),
            changed: Notify::new(),
            slots,
            metrics,
        })
    }

    /// Tells the loop that a schedule changed, so that a new or earlier
    /// `next_run_at` is not slept past.
    pub fn schedules_changed(&self) {
        self.changed.notify_one();
    }

    /// Fires `schedule` now, outside its timetable (TriggerSchedule). A run
    /// decided without sending (skipped) comes back final; one being sent
    /// comes back IN_PROGRESS.
    pub async fn trigger(self: &Arc<Self>, schedule: &Schedule, request_id: Option<&str>) -> Result<Run> {
        let (claimed, created) = self
            .store
            .record_manual_run(schedule, request_id, Utc::now(), &self.replica, self.settings.lease())
            .await?;
        if !created {
            return Ok(claimed.run);
        }
        let decision = AssertUnwindSafe(self.decide(&claimed)).catch_unwind().await;
        let fired_at = Some(Utc::now());
        let finish = match decision {
            Ok(Decision::Finish(finish)) => finish,
            Err(panic) => panicked(panic),
            Ok(Decision::Send) => {
                let run = claimed.run.clone();
                let permit = self.slots.clone().acquire_owned().await.expect("the slots are never closed");
                let engine = self.clone();
                tokio::spawn(async move {
                    let finish = Finish { fired_at, ..engine.send_caught(&claimed).await };
                    engine.finish(&claimed, &finish).await;
                    drop(permit);
                });
                return Ok(run);
            }
        };
        self.finish(&claimed, &Finish { fired_at, ..finish }).await;
        Ok(self.store.get_run(claimed.run.id).await?.unwrap_or(claimed.run))
    }

    /// Runs the scheduler until `shutdown`: repairs at start, then fires due
    /// runs, takes over dead replicas' runs, renews its leases, disables the
    /// schedules of removed workspaces and purges old history.
    pub async fn run(self: Arc<Self>, removed: mpsc::UnboundedReceiver<Uuid>, shutdown: CancellationToken) {
        tracing::info!(replica = self.replica, "scheduler engine starting");
        self.repair().await;
        tokio::spawn(self.clone().disable_removed(removed, shutdown.clone()));
        tokio::spawn(self.clone().renew_leases(shutdown.clone()));
        let mut last_purge: Option<Instant> = None;
        loop {
            let wake_at = match self.tick(&mut last_purge).await {
                Ok(next_due) => next_due,
                Err(error) => {
                    tracing::warn!(error = %error, "the scheduler's store failed; retrying");
                    Some(Utc::now() + STORE_RETRY)
                }
            };
            let sleep = wake_at
                .map(|at| (at - Utc::now()).to_std().unwrap_or(Duration::ZERO))
                .unwrap_or(MAX_SLEEP)
                .min(MAX_SLEEP);
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = self.changed.notified() => {}
                () = tokio::time::sleep(sleep) => {}
            }
        }
        tracing::info!(replica = self.replica, "scheduler engine stopped");
    }

    /// Claims and fires everything due, takes over expired runs, and returns
    /// when the next schedule falls due.
    async fn tick(self: &Arc<Self>, last_purge: &mut Option<Instant>) -> Result<Option<DateTime<Utc>>, StoreError> {
        let lease = self.settings.lease();
        let batch = self.settings.claim_batch;
        loop {
            let now = Utc::now();
            let grace = self.settings.missed_grace();
            let claimed =
                self.store.claim_due(now, batch, &self.replica, lease, |due| timetable::plan(due, now, grace)).await?;
            let full = claimed.len() as u32 >= batch;
            for run in claimed {
                self.fire(run).await;
            }
            if !full {
                break;
            }
        }
        loop {
            let taken = self.store.take_over_expired(Utc::now(), batch, &self.replica, lease).await?;
            let full = taken.len() as u32 >= batch;
            self.metrics.took_over(taken.len());
            for run in taken {
                tracing::warn!(run_id = %run.run.id, "taking over a run whose replica stopped renewing it");
                self.fire(run).await;
            }
            if !full {
                break;
            }
        }
        if last_purge.is_none_or(|at| at.elapsed() >= PURGE_INTERVAL) {
            *last_purge = Some(Instant::now());
            let before = Utc::now() - self.settings.retention();
            match self.store.purge_runs(before).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!(purged, "purged old run history"),
                Err(error) => tracing::warn!(error = %error, "purging run history failed"),
            }
        }
        self.store.next_due_at().await
    }

    /// Sends (or skips) one claimed run in the background, holding one of
    /// this replica's send slots.
    async fn fire(self: &Arc<Self>, claimed: ClaimedRun) {
        let permit = self.slots.clone().acquire_owned().await.expect("the slots are never closed");
        let span = tracing::info_span!(
            "schedule.fire",
            schedule_id = %claimed.run.schedule_id,
            run_id = %claimed.run.id,
            workspace_id = %claimed.run.workspace_id,
            trigger = claimed.run.trigger.as_str_name(),
            lag_ms = tracing::field::Empty,
            outcome = tracing::field::Empty,
            trace_id = tracing::field::Empty,
        );
        agentmesh_chassis::telemetry::record_trace_id(&span);
        let engine = self.clone();
        tokio::spawn(
            async move {
                let decision = AssertUnwindSafe(engine.decide(&claimed)).catch_unwind().await;
                let fired_at = Utc::now();
                let lag = fired_at - claimed.run.scheduled_at;
                engine.metrics.fired_late_by(lag);
                tracing::Span::current().record("lag_ms", lag.num_milliseconds());
                let finish = match decision {
                    Ok(Decision::Finish(finish)) => finish,
                    Ok(Decision::Send) => engine.send_caught(&claimed).await,
                    Err(panic) => panicked(panic),
                };
                let finish = Finish { fired_at: Some(fired_at), ..finish };
                tracing::Span::current().record("outcome", finish.outcome.as_str_name());
                engine.finish(&claimed, &finish).await;
                drop(permit);
            }
            .instrument(span),
        );
    }

    /// Decides from the workspace's declared capabilities and load whether
    /// the run is sent (SCH-3, SCH-4).
    async fn decide(&self, claimed: &ClaimedRun) -> Decision {
        let workspace_id = claimed.run.workspace_id;
        let workspace = match self.workspaces.get(workspace_id).await {
            Ok(Some(workspace)) => workspace,
            Ok(None) => return Decision::Finish(failed(format!("workspace {workspace_id} does not exist"))),
            Err(error) => return Decision::Finish(failed(error.to_string())),
        };
        if workspace.status == WorkspaceStatus::Removed {
            self.disable_workspace(workspace_id).await;
            return Decision::Finish(failed(format!("workspace {workspace_id} was removed")));
        }
        if workspace.capabilities.native_scheduler {
            return Decision::Finish(Finish { outcome: RunOutcome::SkippedNative, ..Finish::default() });
        }
        if workspace.is_busy() && claimed.overlap_policy != OverlapPolicy::Queue {
            let error = format!(
                "the workspace is busy ({} of {} tasks) and the overlap policy is to skip",
                workspace.active_tasks,
                workspace.max_concurrent_tasks.max(1)
            );
            return Decision::Finish(Finish { outcome: RunOutcome::SkippedBusy, error, ..Finish::default() });
        }
        Decision::Send
    }

    /// Sends the run through the gateway; a panic becomes a failed run.
    async fn send_caught(&self, claimed: &ClaimedRun) -> Finish {
        let message = Outgoing {
            workspace_id: claimed.run.workspace_id,
            message_id: claimed.run.message_id.clone(),
            text: claimed.message_text.clone(),
            metadata_json: claimed.message_metadata_json.clone(),
        };
        let sent = match AssertUnwindSafe(async { self.dispatcher.send(message).await }).catch_unwind().await {
            Ok(sent) => sent,
            Err(panic) => return panicked(panic),
        };
        let blank = || Finish { outcome: RunOutcome::Delivered, ..Finish::default() };
        match sent {
            Ok(Delivery::Replied { summary }) if summary.is_empty() => {
                Finish { outcome: RunOutcome::EmptyReply, ..blank() }
            }
            Ok(Delivery::Replied { summary }) => Finish { summary, ..blank() },
            Ok(Delivery::Queued { queue_id }) => Finish { outcome: RunOutcome::Queued, queue_id, ..blank() },
            Err(DispatchError::NativeSessionBusy) => Finish {
                outcome: RunOutcome::SkippedBusy,
                error: DispatchError::NativeSessionBusy.to_string(),
                ..blank()
            },
            Err(DispatchError::Failed(error)) => failed(error),
        }
    }

    /// Records the outcome. A store outage is retried for as long as the
    /// lease lasts; after that another replica owns the run.
    async fn finish(&self, claimed: &ClaimedRun, finish: &Finish) {
        let deadline = Instant::now() + self.settings.lease();
        loop {
            let recorded = self
                .store
                .finish_run(claimed.run.id, &self.replica, finish, Utc::now(), self.settings.stale_after_empty_replies)
                .await;
            match recorded {
                Ok(true) => {
                    self.metrics.finished(finish.outcome);
                    return;
                }
                Ok(false) => {
                    tracing::warn!(run_id = %claimed.run.id, "the run was taken over or deleted before its outcome was recorded");
                    return;
                }
                Err(error) if Instant::now() < deadline => {
                    tracing::warn!(run_id = %claimed.run.id, error = %error, "recording the outcome failed; retrying");
                    tokio::time::sleep(STORE_RETRY).await;
                }
                Err(error) => {
                    tracing::error!(run_id = %claimed.run.id, error = %error, "the outcome could not be recorded");
                    return;
                }
            }
        }
    }

    /// Start-up repairs (SCH-7): enabled schedules without a next time get
    /// one, and schedules of workspaces removed while no scheduler ran are
    /// disabled.
    async fn repair(&self) {
        let now = Utc::now();
        match self.store.missing_next_run(10_000).await {
            Ok(broken) => {
                for schedule in broken {
                    let (next, error) = match timetable::Timetable::parse(&schedule.cron_expression, &schedule.timezone)
                        .ok()
                        .and_then(|t| t.next_after(now))
                    {
                        Some(next) => (next, None),
                        None => (now + timetable::BAD_TIMETABLE_RETRY, Some("the timetable cannot be read")),
                    };
                    match self.store.repair_next_run(schedule.id, next, error).await {
                        Ok(true) => tracing::warn!(schedule_id = %schedule.id, %next, "repaired a missing next_run_at"),
                        Ok(false) => {}
                        Err(error) => tracing::warn!(error = %error, "repairing a schedule failed"),
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "looking for schedules to repair failed"),
        }
        match self.store.workspaces_with_enabled_schedules().await {
            Ok(ids) => {
                for id in ids {
                    match self.workspaces.get(id).await {
                        Ok(Some(workspace)) if workspace.status != WorkspaceStatus::Removed => {}
                        Ok(_) => self.disable_workspace(id).await,
                        Err(error) => {
                            tracing::warn!(error = %error, "cannot check the workspaces of the schedules now");
                            return;
                        }
                    }
                }
            }
            Err(error) => tracing::warn!(error = %error, "listing the workspaces of the schedules failed"),
        }
    }

    async fn disable_removed(self: Arc<Self>, mut removed: mpsc::UnboundedReceiver<Uuid>, shutdown: CancellationToken) {
        loop {
            let id = tokio::select! {
                () = shutdown.cancelled() => return,
                id = removed.recv() => match id { Some(id) => id, None => return },
            };
            self.disable_workspace(id).await;
        }
    }

    async fn disable_workspace(&self, id: Uuid) {
        match self.store.disable_workspace(id, "workspace removed", Utc::now()).await {
            Ok(0) => {}
            Ok(disabled) => {
                tracing::info!(workspace_id = %id, disabled, "disabled the schedules of a removed workspace")
            }
            Err(error) => {
                tracing::warn!(workspace_id = %id, error = %error, "disabling the schedules of a removed workspace failed")
            }
        }
    }

    async fn renew_leases(self: Arc<Self>, shutdown: CancellationToken) {
        let every = self.settings.lease() / 3;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            let until = Utc::now() + self.settings.lease();
            if let Err(error) = self.store.renew_leases(&self.replica, until).await {
                tracing::warn!(error = %error, "renewing run leases failed");
            }
        }
    }
}

fn failed(error: String) -> Finish {
    Finish { outcome: RunOutcome::Failed, error, ..Finish::default() }
}

fn panicked(panic: Box<dyn Any + Send>) -> Finish {
    let what = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic without a message".to_owned());
    tracing::error!(panic = what, "firing a run panicked");
    failed(format!("firing panicked: {what}"))
}

//! The liveness (REG-6) and provisioning-timeout (REG-7) sweeps, and event
//! pruning. Every flip re-checks its condition inside the store's
//! transaction, so replicas sweeping at once neither double-flip nor undo a
//! heartbeat that arrived in between.

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    error::{RegistryError, Result},
    metrics::RegistryMetrics,
    model::{EventDraft, EventKind, RuntimeKind, Status, Workspace},
    settings::RegistrySettings,
    store::{Mutation, Mutator, RegistryStore, SweepQuery},
};

const BATCH: u32 = 500;

/// What one sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub marked_offline: usize,
    pub failed_provisioning: usize,
    pub pruned_events: u64,
}

pub struct Sweeper {
    store: Arc<dyn RegistryStore>,
    settings: RegistrySettings,
    metrics: RegistryMetrics,
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

impl Sweeper {
    pub fn new(store: Arc<dyn RegistryStore>, settings: RegistrySettings) -> Self {
        Self { store, settings, metrics: RegistryMetrics::default() }
    }

    /// Counts the sweeps `run` does, and what they flip, in `metrics`.
    pub fn measured(self, metrics: RegistryMetrics) -> Self {
        Self { metrics, ..self }
    }

    /// Sweeps every `sweep_interval_ms` until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(self.settings.sweep_interval_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            match self.sweep_once(crate::model::now_millis()).await {
                Ok(report) => {
                    self.metrics.swept(report);
                    if report != SweepReport::default() {
                        tracing::info!(?report, "sweep");
                    }
                }
                Err(error) => tracing::warn!(%error, "sweep failed; will retry"),
            }
        }
    }

    /// One pass of every sweep as of `now` (Unix ms).
    pub async fn sweep_once(&self, now: i64) -> Result<SweepReport> {
        let marked_offline = self.expire_silent(now).await?;
        let failed_provisioning = self.expire_provisioning(now).await?;
        let pruned_events = self
            .store
            .prune_events(
                now - millis(Duration::from_secs(self.settings.heartbeat_event_retention_secs)),
                now - millis(Duration::from_secs(self.settings.event_retention_secs)),
            )
            .await?;
        Ok(SweepReport { marked_offline, failed_provisioning, pruned_events })
    }

    /// One pass per runtime kind, so that a kind with a long TTL never
    /// crowds out the candidates of a kind with a short one.
    async fn expire_silent(&self, now: i64) -> Result<usize> {
        let mut flipped = 0;
        for kind in RuntimeKind::ALL {
            let ttl = self.settings.liveness_ttl(kind);
            let cutoff = now - millis(ttl);
            flipped += self
                .flip_all(SweepQuery::SilentSince(kind, cutoff), move |workspace| {
                    let silent = workspace.last_heartbeat_at.is_none_or(|at| at < cutoff);
                    (workspace.status.expects_heartbeats() && silent).then(|| Flip {
                        to: Status::Offline,
                        reason: format!("no heartbeat for {}s (liveness TTL)", ttl.as_secs()),
                        kind: EventKind::LivenessExpired,
                    })
                })
                .await?;
        }
        Ok(flipped)
    }

    async fn expire_provisioning(&self, now: i64) -> Result<usize> {
        let settings = self.settings.clone();
        let since = now - millis(settings.shortest_provisioning_timeout());
        self.flip_all(SweepQuery::ProvisioningSince(since), move |workspace| {
            let deadline = settings.provisioning_timeout(&workspace.agent_runtime);
            let late = workspace.status_changed_at < now - millis(deadline);
            (workspace.status == Status::Provisioning && late).then(|| Flip {
                to: Status::Failed,
                reason: format!("still provisioning after {}s (provisioning deadline)", deadline.as_secs()),
                kind: EventKind::ProvisionFailed,
            })
        })
        .await
    }

    /// Flips every candidate of `query` for which `decide` (evaluated on the
    /// locked, current record) says so.
    async fn flip_all<F>(&self, query: SweepQuery, decide: F) -> Result<usize>
    where
        F: Fn(&Workspace) -> Option<Flip> + Clone + Send + 'static,
    {
        let mut flipped = 0;
        loop {
            let candidates = self.store.sweep_candidates(query, BATCH).await?;
            let items: Vec<_> = candidates
                .iter()
                .filter(|w| decide(w).is_some())
                .map(|w| {
                    let decide = decide.clone();
                    let mutator: Mutator = Box::new(move |mut workspace: Workspace| {
                        let Some(flip) = decide(&workspace) else {
                            return Ok(Mutation::unchanged(workspace));
                        };
                        let now = crate::model::now_millis();
                        let previous = workspace.move_to(flip.to, flip.reason, now)?;
                        workspace.updated_at = now;
                        let event = EventDraft::of(flip.kind, &workspace, previous, now);
                        Ok(Mutation::changed(workspace, vec![event]))
                    });
                    (w.id, mutator)
                })
                .collect();
            if items.is_empty() {
                return Ok(flipped);
            }
            let outcomes = self.store.mutate_batch(items).await?;
            let mut progressed = 0;
            for outcome in outcomes {
                match outcome {
                    Ok((_, events)) if !events.is_empty() => progressed += 1,
                    Ok(_) | Err(RegistryError::NotFound(_)) => {}
                    Err(error) => tracing::warn!(%error, "sweep could not flip a workspace"),
                }
            }
            flipped += progressed;
            if candidates.len() < BATCH as usize || progressed == 0 {
                return Ok(flipped);
            }
        }
    }
}

struct Flip {
    to: Status,
    reason: String,
    kind: EventKind,
}

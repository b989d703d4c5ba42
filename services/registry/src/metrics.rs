//! What the registry reports to Prometheus (docs/metrics.md): workspaces by
//! status, heartbeats, status transitions and sweeps; the event hub counts
//! its watchers itself.
//!
//! Heartbeats and transitions are counted from the events this replica
//! writes, by a store that wraps the real one, so that no write path can be
//! left out; the workspace counts are read from the store at each scrape,
//! so every replica reports the same totals.

use std::sync::Arc;

use agentmesh_chassis::metrics::Metrics;
use async_trait::async_trait;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};
use uuid::Uuid;

use crate::{
    error::Result,
    model::{Event, EventDraft, EventKind, RuntimeKind, Status, Workspace},
    store::{ListFilter, Mutator, PageCursor, PrunedThrough, RegistryStore, StatusCount, SweepQuery},
    sweeper::SweepReport,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkspaceLabels {
    status: &'static str,
    runtime: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    from: &'static str,
    to: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SweptLabels {
    to: &'static str,
}

/// The registry's own metrics; a default set is counted but never served.
#[derive(Clone, Default)]
pub struct RegistryMetrics {
    workspaces: Family<WorkspaceLabels, Gauge>,
    heartbeats: Counter,
    transitions: Family<TransitionLabels, Counter>,
    sweeps: Counter,
    swept: Family<SweptLabels, Counter>,
}

impl RegistryMetrics {
    /// Registers the registry's metrics with `metrics`, the workspace counts
    /// read from `store` at each scrape.
    pub fn register(metrics: &mut Metrics, store: Arc<dyn RegistryStore>) -> Self {
        let this = Self::default();
        let section = metrics.section("registry");
        section.register(
            "workspaces",
            "Workspaces by status and runtime kind, as the store holds them",
            this.workspaces.clone(),
        );
        section.register(
            "heartbeats",
            "Heartbeats and registrations accepted by this replica",
            this.heartbeats.clone(),
        );
        section.register(
            "status_transitions",
            "Status changes this replica wrote, by previous and new status",
            this.transitions.clone(),
        );
        section.register("sweeps", "Liveness and provisioning sweeps this replica ran", this.sweeps.clone());
        section.register(
            "swept_workspaces",
            "Workspaces the sweeps flipped, by the status they got",
            this.swept.clone(),
        );
        let workspaces = this.workspaces.clone();
        metrics.on_scrape(move || {
            let store = store.clone();
            let workspaces = workspaces.clone();
            async move {
                match store.count_by_status().await {
                    Ok(counts) => set_counts(&workspaces, &counts),
                    Err(error) => tracing::warn!(%error, "cannot count workspaces for the metrics"),
                }
            }
        });
        this
    }

    pub fn swept(&self, report: SweepReport) {
        self.sweeps.inc();
        for (to, count) in [(Status::Offline, report.marked_offline), (Status::Failed, report.failed_provisioning)] {
            if count > 0 {
                self.swept.get_or_create(&SweptLabels { to: to.as_str() }).inc_by(count as u64);
            }
        }
    }

    fn wrote(&self, event: &EventDraft) {
        if matches!(event.kind, EventKind::Heartbeat | EventKind::WorkspaceRegistered) {
            self.heartbeats.inc();
        }
        if let Some(from) = event.data.previous_status
            && from != event.data.status
        {
            let labels = TransitionLabels { from: from.as_str(), to: event.data.status.as_str() };
            self.transitions.get_or_create(&labels).inc();
        }
    }
}

/// Every status and runtime kind, zero where there is none, so that a
/// status emptied since the last scrape reads 0 rather than its old count.
fn set_counts(workspaces: &Family<WorkspaceLabels, Gauge>, counts: &[StatusCount]) {
    for status in Status::ALL {
        for runtime in RuntimeKind::ALL {
            let count =
                counts.iter().find(|c| c.status == status && c.runtime_kind == runtime).map_or(0, |c| c.workspaces);
            let labels = WorkspaceLabels { status: status.as_str(), runtime: runtime.as_str() };
            workspaces.get_or_create(&labels).set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

/// A store that counts the events written through it.
pub struct MeasuredStore {
    store: Arc<dyn RegistryStore>,
    metrics: RegistryMetrics,
}

impl MeasuredStore {
    pub fn new(store: Arc<dyn RegistryStore>, metrics: RegistryMetrics) -> Self {
        Self { store, metrics }
    }
}

#[async_trait]
impl RegistryStore for MeasuredStore {
    async fn create(&self, workspace: &Workspace, event: EventDraft) -> Result<Event> {
        let written = self.store.create(workspace, event).await?;
        self.metrics.wrote(&written.draft);
        Ok(written)
    }

    async fn get(&self, id: Uuid) -> Result<Option<Workspace>> {
        self.store.get(id).await
    }

    async fn get_by_token_digest(&self, digest: &[u8; 32]) -> Result<Option<Workspace>> {
        self.store.get_by_token_digest(digest).await
    }

    async fn mutate_batch(&self, items: Vec<(Uuid, Mutator)>) -> Result<Vec<Result<(Workspace, Vec<Event>)>>> {
        let outcomes = self.store.mutate_batch(items).await?;
        for (_, events) in outcomes.iter().flatten() {
            for event in events {
                self.metrics.wrote(&event.draft);
            }
        }
        Ok(outcomes)
    }

    async fn list(&self, filter: &ListFilter, after: Option<PageCursor>, limit: u32) -> Result<Vec<Workspace>> {
        self.store.list(filter, after, limit).await
    }

    async fn sweep_candidates(&self, query: SweepQuery, limit: u32) -> Result<Vec<Workspace>> {
        self.store.sweep_candidates(query, limit).await
    }

    async fn events_after(&self, cursor: u64, limit: u32) -> Result<Vec<Event>> {
        self.store.events_after(cursor, limit).await
    }

    async fn head(&self) -> Result<u64> {
        self.store.head().await
    }

    async fn prune_events(&self, heartbeats_before: i64, others_before: i64) -> Result<u64> {
        self.store.prune_events(heartbeats_before, others_before).await
    }

    async fn pruned_through(&self) -> Result<PrunedThrough> {
        self.store.pruned_through().await
    }

    async fn count_by_status(&self) -> Result<Vec<StatusCount>> {
        self.store.count_by_status().await
    }

    async fn ping(&self) -> Result<()> {
        self.store.ping().await
    }
}

//! What the scheduler reports to Prometheus (docs/metrics.md): runs by
//! outcome, how late they fired, lease takeovers, and, read from the store
//! at each scrape so that every replica agrees, schedules due and runs in
//! flight.

use agentmesh_chassis::metrics::{Metrics, latency_histogram};
use agentmesh_proto::scheduler::v1::RunOutcome;
use chrono::Utc;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
};

use crate::store::ScheduleStore;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

/// The scheduler's own metrics; a default set is counted but never served.
#[derive(Clone)]
pub struct SchedulerMetrics {
    runs: Family<OutcomeLabels, Counter>,
    fire_lag: Histogram,
    takeovers: Counter,
    due: Gauge,
    in_flight: Gauge,
}

impl Default for SchedulerMetrics {
    fn default() -> Self {
        Self {
            runs: Family::default(),
            fire_lag: latency_histogram(),
            takeovers: Counter::default(),
            due: Gauge::default(),
            in_flight: Gauge::default(),
        }
    }
}

impl SchedulerMetrics {
    /// Registers the scheduler's metrics with `metrics`, the gauges read
    /// from `store` at each scrape.
    pub fn register(metrics: &mut Metrics, store: ScheduleStore) -> Self {
        let this = Self::default();
        let section = metrics.section("scheduler");
        section.register("runs", "Runs this replica finished, by outcome", this.runs.clone());
        section.register(
            "fire_lag_seconds",
            "How long after its scheduled time a run was fired, in seconds",
            this.fire_lag.clone(),
        );
        section.register(
            "lease_takeovers",
            "Runs this replica took over from a replica that stopped renewing their lease",
            this.takeovers.clone(),
        );
        section.register("schedules_due", "Enabled schedules whose time has come, on every replica", this.due.clone());
        section.register("runs_in_flight", "Runs being sent, on every replica", this.in_flight.clone());
        let (due, in_flight) = (this.due.clone(), this.in_flight.clone());
        metrics.on_scrape(move || {
            let (store, due, in_flight) = (store.clone(), due.clone(), in_flight.clone());
            async move {
                match store.load(Utc::now()).await {
                    Ok(load) => {
                        due.set(i64::try_from(load.due).unwrap_or(i64::MAX));
                        in_flight.set(i64::try_from(load.in_flight).unwrap_or(i64::MAX));
                    }
                    Err(error) => tracing::warn!(%error, "cannot read the scheduler's load for the metrics"),
                }
            }
        });
        this
    }

    pub fn finished(&self, outcome: RunOutcome) {
        self.runs.get_or_create(&OutcomeLabels { outcome: outcome_name(outcome) }).inc();
    }

    pub fn fired_late_by(&self, lag: chrono::TimeDelta) {
        self.fire_lag.observe(lag.num_microseconds().unwrap_or(i64::MAX).max(0) as f64 / 1e6);
    }

    pub fn took_over(&self, runs: usize) {
        self.takeovers.inc_by(runs as u64);
    }
}

/// `RUN_OUTCOME_SKIPPED_BUSY` as `skipped_busy`.
fn outcome_name(outcome: RunOutcome) -> &'static str {
    match outcome {
        RunOutcome::Unspecified => "unspecified",
        RunOutcome::InProgress => "in_progress",
        RunOutcome::Delivered => "delivered",
        RunOutcome::Queued => "queued",
        RunOutcome::EmptyReply => "empty_reply",
        RunOutcome::SkippedNative => "skipped_native",
        RunOutcome::SkippedBusy => "skipped_busy",
        RunOutcome::Failed => "failed",
    }
}

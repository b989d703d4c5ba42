//! What the gateway reports to Prometheus (docs/metrics.md): dispatches by
//! outcome with their latency, the A2A front's requests, failures talking
//! to agents (SSRF refusals and idle timeouts among them), deliveries from
//! the queue, redeliveries after a takeover and dead letters, and, read from
//! the store at each scrape so that every replica agrees, the queue's depth
//! and oldest item per state.

use std::time::{Instant, SystemTime};

use agentmesh_chassis::metrics::{LatencyFamily, Metrics, latency_family};
use agentmesh_proto::gateway::v1::{QueueItemState, QueueReason};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
};

use crate::{
    agent_client::Failure,
    error::GatewayError,
    store::{QueueStore, reason_text, state_text},
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DispatchLabels {
    outcome: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    state: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontLabels {
    binding: &'static str,
    method: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FrontMethodLabels {
    binding: &'static str,
    method: &'static str,
}

/// The gateway's own metrics; a default set is counted but never served.
#[derive(Clone)]
pub struct GatewayMetrics {
    dispatches: Family<DispatchLabels, Counter>,
    dispatch_seconds: LatencyFamily<OutcomeLabels>,
    front_requests: Family<FrontLabels, Counter>,
    front_seconds: LatencyFamily<FrontMethodLabels>,
    agent_failures: Family<FailureLabels, Counter>,
    ssrf_refusals: Counter,
    deliveries: Counter,
    failed_attempts: Counter,
    dead_letters: Counter,
    redeliveries: Counter,
    queue_items: Family<StateLabels, Gauge>,
    queue_oldest: Family<StateLabels, Gauge>,
}

impl Default for GatewayMetrics {
    fn default() -> Self {
        Self {
            dispatches: Family::default(),
            dispatch_seconds: latency_family(),
            front_requests: Family::default(),
            front_seconds: latency_family(),
            agent_failures: Family::default(),
            ssrf_refusals: Counter::default(),
            deliveries: Counter::default(),
            failed_attempts: Counter::default(),
            dead_letters: Counter::default(),
            redeliveries: Counter::default(),
            queue_items: Family::default(),
            queue_oldest: Family::default(),
        }
    }
}

/// The unfinished states, whose gauges are always reported.
const WAITING: [QueueItemState; 3] = [QueueItemState::Queued, QueueItemState::InFlight, QueueItemState::DeadLetter];

impl GatewayMetrics {
    /// Registers the gateway's metrics with `metrics`, the queue's gauges
    /// read from `store` at each scrape.
    pub fn register(metrics: &mut Metrics, store: QueueStore) -> Self {
        let this = Self::default();
        let section = metrics.section("gateway");
        section.register(
            "dispatches",
            "Messages sent to the gateway, by outcome (delivered, queued, refused) and its reason",
            this.dispatches.clone(),
        );
        section.register(
            "dispatch_seconds",
            "Time from a message's arrival to its outcome, in seconds",
            this.dispatch_seconds.clone(),
        );
        section.register(
            "a2a_requests",
            "Requests on the A2A HTTP front, by binding, A2A method and HTTP status",
            this.front_requests.clone(),
        );
        section.register(
            "a2a_request_seconds",
            "Time to answer a request on the A2A HTTP front (its head, for streams), in seconds",
            this.front_seconds.clone(),
        );
        section.register("agent_failures", "Calls to agents that failed, by kind", this.agent_failures.clone());
        section.register("ssrf_refusals", "Agent URLs the SSRF guard refused at dispatch", this.ssrf_refusals.clone());
        section.register("queue_deliveries", "Queued messages delivered and answered", this.deliveries.clone());
        section.register(
            "queue_failed_attempts",
            "Delivery attempts from the queue that failed",
            this.failed_attempts.clone(),
        );
        section.register("dead_letters", "Queued messages that ran out of attempts", this.dead_letters.clone());
        section.register(
            "redeliveries",
            "In-flight messages taken over from a replica that lost its drain lease, to be delivered again",
            this.redeliveries.clone(),
        );
        section.register("queue_items", "Queue items by state, on every replica", this.queue_items.clone());
        section.register(
            "queue_oldest_age_seconds",
            "Age of the oldest item in each state, 0 when there is none, in seconds",
            this.queue_oldest.clone(),
        );
        let (items, oldest) = (this.queue_items.clone(), this.queue_oldest.clone());
        metrics.on_scrape(move || {
            let (store, items, oldest) = (store.clone(), items.clone(), oldest.clone());
            async move {
                let depths = match store.depth_by_state().await {
                    Ok(depths) => depths,
                    Err(error) => {
                        tracing::warn!(%error, "cannot read the queue's depth for the metrics");
                        return;
                    }
                };
                let now = SystemTime::now();
                for state in WAITING {
                    let labels = StateLabels { state: state_text(state) };
                    let depth = depths.iter().find(|d| d.state == state);
                    items.get_or_create(&labels).set(depth.map_or(0, |d| i64::try_from(d.items).unwrap_or(i64::MAX)));
                    let age = depth.and_then(|d| now.duration_since(d.oldest_enqueued_at).ok()).unwrap_or_default();
                    oldest.get_or_create(&labels).set(i64::try_from(age.as_secs()).unwrap_or(i64::MAX));
                }
            }
        });
        this
    }

    /// A message reached its outcome: delivered (`Ok(None)`), queued for
    /// a reason (`Ok(Some(reason))`) or refused (the error).
    pub fn dispatched(&self, started: Instant, outcome: Result<Option<QueueReason>, &GatewayError>) {
        let (outcome, reason) = match outcome {
            Ok(None) => ("delivered", ""),
            Ok(Some(reason)) => ("queued", reason_text(reason)),
            Err(error) => ("refused", error.reason()),
        };
        self.dispatches.get_or_create(&DispatchLabels { outcome, reason }).inc();
        self.dispatch_seconds.get_or_create(&OutcomeLabels { outcome }).observe(started.elapsed().as_secs_f64());
    }

    /// A request on the A2A front was answered with `status`.
    pub fn answered(&self, binding: &'static str, method: &'static str, status: u16, started: Instant) {
        self.front_requests.get_or_create(&FrontLabels { binding, method, status }).inc();
        self.front_seconds
            .get_or_create(&FrontMethodLabels { binding, method })
            .observe(started.elapsed().as_secs_f64());
    }

    pub fn agent_failed(&self, failure: &Failure) {
        let kind = match failure {
            Failure::Busy { .. } => "busy",
            Failure::Dropped(_) => "dropped",
            Failure::Unreachable(_) => "unreachable",
            Failure::IdleTimeout(_) => "idle_timeout",
            Failure::Refused(_) => "refused",
            Failure::TooLarge => "too_large",
            Failure::Http { .. } => "http",
        };
        self.agent_failures.get_or_create(&FailureLabels { kind }).inc();
    }

    pub fn ssrf_refused(&self) {
        self.ssrf_refusals.inc();
    }

    pub fn delivered(&self, count: usize) {
        self.deliveries.inc_by(count as u64);
    }

    pub fn attempt_failed(&self, state: QueueItemState) {
        self.failed_attempts.inc();
        if state == QueueItemState::DeadLetter {
            self.dead_letters.inc();
        }
    }

    pub fn redelivering(&self, items: u64) {
        self.redeliveries.inc_by(items);
    }
}

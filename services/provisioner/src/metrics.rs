//! What the provisioner reports to Prometheus (docs/metrics.md): every call
//! into a runtime by runtime kind, operation and result, with its latency
//! (counted by a runtime that wraps the real one, so that no call path is
//! left out), reconciles, orphans reaped, policy denials and stops, and
//! restarts.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use agentmesh_chassis::metrics::{LatencyFamily, Metrics, latency_family};
use async_trait::async_trait;
use futures::stream::BoxStream;
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family},
};

use crate::{
    policy::kind_name,
    runtime::{
        EngineInfo, ExecOutput, Identity, LogLine, LogRequest, ManagedWorkload, Probe, Runtime, RuntimeError,
        RuntimeKind, StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec,
    },
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    runtime: &'static str,
    operation: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    runtime: &'static str,
    operation: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProbeLabels {
    found: &'static str,
}

/// The provisioner's own metrics; a default set is counted but never served.
#[derive(Clone)]
pub struct ProvisionerMetrics {
    operations: Family<ResultLabels, Counter>,
    seconds: LatencyFamily<OperationLabels>,
    reconciles: Family<ProbeLabels, Counter>,
    orphans_reaped: Counter,
    policy_denials: Counter,
    policy_stops: Counter,
    restarts: Counter,
}

impl Default for ProvisionerMetrics {
    fn default() -> Self {
        Self {
            operations: Family::default(),
            seconds: latency_family(),
            reconciles: Family::default(),
            orphans_reaped: Counter::default(),
            policy_denials: Counter::default(),
            policy_stops: Counter::default(),
            restarts: Counter::default(),
        }
    }
}

impl ProvisionerMetrics {
    pub fn register(metrics: &mut Metrics) -> Self {
        let this = Self::default();
        let section = metrics.section("provisioner");
        section.register(
            "runtime_operations",
            "Calls into runtimes, by runtime kind, operation and result",
            this.operations.clone(),
        );
        section.register(
            "runtime_operation_seconds",
            "How long calls into runtimes took, by runtime kind and operation, in seconds",
            this.seconds.clone(),
        );
        section.register(
            "reconciles",
            "Workloads checked against their records, by what the runtime found",
            this.reconciles.clone(),
        );
        section.register(
            "orphans_reaped",
            "Workloads of this installation without a record, removed",
            this.orphans_reaped.clone(),
        );
        section.register("policy_denials", "Starts the policy refused", this.policy_denials.clone());
        section.register("policy_stops", "Workloads stopped because they break the policy", this.policy_stops.clone());
        section.register("restarts", "Workloads restarted by their restart policy", this.restarts.clone());
        this
    }

    pub fn reconciled(&self, probe: &Probe) {
        let found = match probe {
            Probe::Running(_) => "running",
            Probe::Exited(_) => "exited",
            Probe::Absent => "absent",
            Probe::Unknown(_) => "unknown",
        };
        self.reconciles.get_or_create(&ProbeLabels { found }).inc();
    }

    pub fn reaped_orphan(&self) {
        self.orphans_reaped.inc();
    }

    pub fn denied(&self) {
        self.policy_denials.inc();
    }

    pub fn stopped_for_policy(&self) {
        self.policy_stops.inc();
    }

    pub fn restarted(&self) {
        self.restarts.inc();
    }

    /// `runtime`, with every call counted and timed.
    pub fn measure(&self, runtime: Arc<dyn Runtime>) -> Arc<dyn Runtime> {
        Arc::new(MeasuredRuntime { kind: kind_name(runtime.kind()), runtime, metrics: self.clone() })
    }

    fn observe(&self, runtime: &'static str, operation: &'static str, started: Instant, ok: bool) {
        self.seconds.get_or_create(&OperationLabels { runtime, operation }).observe(started.elapsed().as_secs_f64());
        let result = if ok { "ok" } else { "error" };
        self.operations.get_or_create(&ResultLabels { runtime, operation, result }).inc();
    }
}

struct MeasuredRuntime {
    runtime: Arc<dyn Runtime>,
    kind: &'static str,
    metrics: ProvisionerMetrics,
}

impl MeasuredRuntime {
    fn observe<T>(&self, operation: &'static str, started: Instant, result: &Result<T, RuntimeError>) {
        self.metrics.observe(self.kind, operation, started, result.is_ok());
    }
}

#[async_trait]
impl Runtime for MeasuredRuntime {
    fn kind(&self) -> RuntimeKind {
        self.runtime.kind()
    }

    fn identity(&self) -> &Identity {
        self.runtime.identity()
    }

    fn runs_workloads(&self) -> bool {
        self.runtime.runs_workloads()
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.engine_info().await;
        self.observe("engine_info", started, &result);
        result
    }

    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.start(spec).await;
        self.observe("start", started, &result);
        result
    }

    async fn stop(&self, workspace_id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.stop(workspace_id, grace).await;
        self.observe("stop", started, &result);
        result
    }

    async fn purge(&self, workspace_id: &str) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.purge(workspace_id).await;
        self.observe("purge", started, &result);
        result
    }

    async fn probe(&self, workspace_id: &str) -> Probe {
        let started = Instant::now();
        let probe = self.runtime.probe(workspace_id).await;
        self.metrics.observe(self.kind, "probe", started, !matches!(probe, Probe::Unknown(_)));
        probe
    }

    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.list().await;
        self.observe("list", started, &result);
        result
    }

    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.watch().await;
        self.observe("watch", started, &result);
        result
    }

    async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.logs(workspace_id, request).await;
        self.observe("logs", started, &result);
        result
    }

    async fn exec(
        &self,
        workspace_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let started = Instant::now();
        let result = self.runtime.exec(workspace_id, command, timeout).await;
        self.observe("exec", started, &result);
        result
    }
}

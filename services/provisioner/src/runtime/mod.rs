//! The one seam between the provisioner and the engines that run workloads
//! (ARCH-4): Docker, Kubernetes, local processes and external agents all sit
//! behind [`Runtime`], and one shared test suite runs every implementation.
//!
//! A runtime instance only ever sees workloads stamped with its own
//! [`Identity`] (mesh id + instance name), so two meshes, or two instances of
//! one mesh, can share an engine without touching each other's workloads.

use std::{collections::BTreeMap, time::SystemTime};

use async_trait::async_trait;
use futures::stream::BoxStream;

pub mod docker;
pub mod external;
pub mod kubernetes;
pub mod process;

pub use agentmesh_proto::registry::v1::RuntimeKind;

/// Label (Docker, Kubernetes) or environment variable (process) keys that
/// mark a workload as ours. Kubernetes label keys allow the prefix form.
pub mod labels {
    /// Which mesh installation manages the workload.
    pub const MESH_ID: &str = "dev.agentmesh/mesh-id";
    /// Which runtime instance of that mesh owns it (a hash when the name does
    /// not fit a label value; see [`super::Identity::instance_label`]).
    pub const RUNTIME_INSTANCE: &str = "dev.agentmesh/runtime-instance";
    /// The workspace id (UUID) the workload runs.
    pub const WORKSPACE_ID: &str = "dev.agentmesh/workspace-id";
    /// Always "agentmesh-provisioner".
    pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
    pub const MANAGED_BY_VALUE: &str = "agentmesh-provisioner";
}

/// Who a runtime instance is: it creates, lists and touches only workloads
/// carrying both values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The mesh installation's id (1-63 characters of [a-z0-9-]).
    pub mesh_id: String,
    /// The runtime instance's name as the registry records it, e.g. "docker:local".
    pub instance: String,
}

impl Identity {
    /// The instance name as a label value: names that are not valid label
    /// values (":" and "/" are common) become "i-" + 16 hex digits of their SHA-256.
    pub fn instance_label(&self) -> String {
        let valid = self.instance.len() <= 63
            && self.instance.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if valid {
            return self.instance.clone();
        }
        let digest = agentmesh_chassis::auth::token_digest(&self.instance);
        format!("i-{}", hex::encode(&digest[..8]))
    }

    /// The workload's name on the engine: "am-<mesh id>-<workspace id>".
    /// Names that do not have this shape are never ours (PRV-9).
    pub fn workload_name(&self, workspace_id: &str) -> String {
        format!("am-{}-{workspace_id}", self.mesh_id)
    }

    /// The workspace id a workload name of ours carries, if it is ours.
    pub fn workspace_of_name<'a>(&self, name: &'a str) -> Option<&'a str> {
        let id =
            name.trim_start_matches('/').strip_prefix("am-")?.strip_prefix(self.mesh_id.as_str())?.strip_prefix('-')?;
        uuid::Uuid::parse_str(id).ok().map(|_| id)
    }
}

/// Limits a workload gets from its resource tier; 0 means no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceLimits {
    pub cpu_millis: u32,
    pub memory_bytes: u64,
    pub pids_limit: u32,
}

/// Everything a runtime needs to start one workspace's workload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadSpec {
    /// The workspace id (UUID, lower-case hyphenated).
    pub workspace_id: String,
    /// The workspace's human name, for engine-side display only.
    pub workspace_name: String,
    /// Container image; empty for process workloads.
    pub image: String,
    /// Program to run; for containers empty means the image's entrypoint.
    pub command: String,
    pub args: Vec<String>,
    /// The full environment, the provisioner's injected AGENTMESH_* values included.
    pub env: BTreeMap<String, String>,
    pub limits: ResourceLimits,
}

/// What the engine knows about one workload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WorkloadInfo {
    /// Container id, pod name or process id.
    pub workload_id: String,
    /// The engine's own words for the state, e.g. "running", "exited (137)".
    pub detail: String,
    /// Set once the workload has exited.
    pub exit_code: Option<i32>,
    pub started_at: Option<SystemTime>,
    pub finished_at: Option<SystemTime>,
}

/// The three answers to "is it running?" (PRV-4).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// The engine reports the workload running.
    Running(WorkloadInfo),
    /// The workload exists and has exited.
    Exited(WorkloadInfo),
    /// The engine has no such workload.
    Absent,
    /// The engine could not tell (it errored or timed out). Never a reason
    /// to change a status.
    Unknown(String),
}

/// A workload carrying this instance's labels, as a listing found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedWorkload {
    /// Container id, pod name or process id.
    pub workload_id: String,
    /// The engine-side name.
    pub name: String,
    /// The workspace id from the workload's labels.
    pub workspace_id: String,
    /// Whether it is running (false: created, exited, terminating).
    pub running: bool,
}

/// How a stop went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopOutcome {
    /// The workload was running, or present, and is now gone.
    Stopped,
    /// There was nothing to stop (PRV-5: counts as success).
    AlreadyGone,
}

/// A hint from the engine that a workload's state may have changed. The
/// reconciler answers it by probing, so an event only has to name the
/// workspace; lost or duplicated hints are harmless.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadEvent {
    pub workspace_id: String,
}

/// One line of a workload's output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: Option<SystemTime>,
    pub stream: LogStream,
    pub text: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogStream {
    Unknown,
    Stdout,
    Stderr,
}

/// Which logs to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRequest {
    pub tail_lines: u32,
    pub since: Option<SystemTime>,
    pub follow: bool,
}

/// What a command run inside a workload produced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecOutput {
    pub exit_code: i32,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

/// What the engine says about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    /// e.g. "Docker 20.10.24" or "Kubernetes v1.31.0".
    pub version: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The engine could not be reached or did not answer in time; safe to retry.
    #[error("runtime unavailable: {0}")]
    Unavailable(String),
    /// The engine answered and refused, e.g. an image that does not exist.
    #[error("{0}")]
    Workload(String),
    /// The engine keeps no workload for the workspace.
    #[error("no workload for workspace {0}")]
    NoWorkload(String),
    /// The operation does not exist for this kind of runtime.
    #[error("{message}")]
    NotSupported { message: String, hint: String },
    /// The operation ran out of time (exec).
    #[error("timed out after {0:?}")]
    TimedOut(std::time::Duration),
}

/// One runtime instance: a Docker engine, a Kubernetes namespace, the local
/// host, or the stand-in for agents that run elsewhere.
///
/// Every method that takes a workspace id acts only on the workload named by
/// [`Identity::workload_name`] and labelled with this instance's identity.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    fn kind(&self) -> RuntimeKind;

    fn identity(&self) -> &Identity;

    /// Whether this runtime runs workloads at all (false only for external
    /// agents, which the mesh does not run).
    fn runs_workloads(&self) -> bool {
        true
    }

    /// The engine's version; an error means the engine is unreachable.
    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError>;

    /// Creates and starts the workload, replacing an exited one left from an
    /// earlier run. The workspace's volumes are created on first use and
    /// kept across starts.
    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError>;

    /// Stops the workload, giving it `grace` to exit before it is killed,
    /// and removes it from the engine. Volumes are kept.
    async fn stop(&self, workspace_id: &str, grace: std::time::Duration) -> Result<StopOutcome, RuntimeError>;

    /// Removes the workspace's volumes. Refuses (with `Workload`) while a
    /// workload of the workspace still exists: resources go only after the
    /// workload is confirmed gone (PRV-5).
    async fn purge(&self, workspace_id: &str) -> Result<(), RuntimeError>;

    /// The three-answer running check (PRV-4). Never fails: engine errors are
    /// [`Probe::Unknown`].
    async fn probe(&self, workspace_id: &str) -> Probe;

    /// Every workload carrying this instance's identity, running or not.
    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError>;

    /// Hints about workloads whose state may have changed, as the engine
    /// reports them (Docker events, Kubernetes watches). The stream ends
    /// when the engine connection breaks; the caller watches again.
    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError>;

    /// The workload's output: the last `tail_lines` lines, then, with
    /// `follow`, new lines until the workload exits or the stream is dropped.
    async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError>;

    /// Runs a command inside the running workload.
    async fn exec(
        &self,
        workspace_id: &str,
        command: &[String],
        timeout: std::time::Duration,
    ) -> Result<ExecOutput, RuntimeError>;
}

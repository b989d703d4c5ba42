//! The Kubernetes runtime (PRV-3): one bare pod per workspace in a
//! configured namespace, with a PersistentVolumeClaim for its /data.
//!
//! Pods are named [`Identity::workload_name`] ("am-<mesh id>-<uuid>", at most
//! 103 characters): pod and claim names may have 253, and the kubelet cuts a
//! pod's hostname to 63 on its own, so the name every runtime shares is kept
//! rather than shortened into something [`Identity::workspace_of_name`] would
//! not recognise.
//!
//! Every API call is bounded by [`KubernetesSettings::api_timeout`]. Only the
//! API server's own NotFound for the workspace's object counts as absence; any
//! other failure, including a 404 without that reason (a proxy, a wrong base
//! URL), is an error, never "absent" (PRV-4).

mod objects;
mod status;

use std::{
    fmt::Debug,
    future::{Future, ready},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt, stream::BoxStream};
use k8s_openapi::{
    api::core::v1::{PersistentVolumeClaim, Pod},
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, Status as ExecStatus},
    jiff::Timestamp,
};
use kube::{
    Api, Client, Resource,
    api::{AttachParams, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams},
    core::Status,
};
use serde::de::DeserializeOwned;
use tokio::{io::AsyncReadExt, time::Instant};

use super::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, LogStream, ManagedWorkload, Probe, Runtime, RuntimeError,
    RuntimeKind, StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec, labels,
};

/// The workload's container; the pod has no other.
const CONTAINER: &str = "workload";
/// Where the workspace volume is mounted.
const DATA_MOUNT: &str = "/data";
/// How long a watch request stays open before the server ends it and the
/// caller watches again; below the API server's own limit.
const WATCH_SECONDS: u32 = 290;

/// When the kubelet pulls the workload's image.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImagePullPolicy {
    Always,
    /// Images already on the node (`kind load`, `minikube image load`) run
    /// without a registry.
    #[default]
    IfNotPresent,
    Never,
}

impl ImagePullPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "Always",
            Self::IfNotPresent => "IfNotPresent",
            Self::Never => "Never",
        }
    }
}

/// What backs a workspace's /data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkspaceVolume {
    /// A PersistentVolumeClaim per workspace, named "<pod name>-data",
    /// created on first start, kept across restarts and deleted by purge.
    Claim {
        /// `None` takes the cluster's default storage class.
        storage_class: Option<String>,
        /// The requested size, as a Kubernetes quantity ("1Gi").
        size: String,
    },
    /// An emptyDir: the data lives only as long as the pod, for clusters
    /// without a storage provisioner.
    Ephemeral,
}

impl Default for WorkspaceVolume {
    fn default() -> Self {
        Self::Claim { storage_class: None, size: "1Gi".to_owned() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubernetesSettings {
    pub image_pull_policy: ImagePullPolicy,
    /// The pods' service account; without one, pods get no API token.
    pub service_account: Option<String>,
    pub volume: WorkspaceVolume,
    /// The bound on every API call.
    pub api_timeout: Duration,
    /// How long, beyond a stop's grace period, a deleted pod may take to
    /// disappear before the stop is reported as failed.
    pub deletion_timeout: Duration,
}

impl Default for KubernetesSettings {
    fn default() -> Self {
        Self {
            image_pull_policy: ImagePullPolicy::default(),
            service_account: None,
            volume: WorkspaceVolume::default(),
            api_timeout: Duration::from_secs(10),
            deletion_timeout: Duration::from_secs(30),
        }
    }
}

pub struct KubernetesRuntime {
    client: Client,
    pods: Api<Pod>,
    claims: Api<PersistentVolumeClaim>,
    ours: Ours,
    settings: KubernetesSettings,
    /// Selects exactly this instance's pods.
    selector: String,
}

impl KubernetesRuntime {
    pub fn new(client: Client, namespace: String, identity: Identity, settings: KubernetesSettings) -> Self {
        let selector = format!(
            "{}={},{}={}",
            labels::MESH_ID,
            identity.mesh_id,
            labels::RUNTIME_INSTANCE,
            identity.instance_label()
        );
        Self {
            pods: Api::namespaced(client.clone(), &namespace),
            claims: Api::namespaced(client.clone(), &namespace),
            client,
            ours: Ours { instance_label: identity.instance_label(), identity },
            settings,
            selector,
        }
    }

    /// The pod name for a workspace id, refusing ids that are not UUIDs: the
    /// id ends up in an API path.
    fn pod_name(&self, workspace_id: &str) -> Result<String, RuntimeError> {
        let name = self.ours.identity.workload_name(workspace_id);
        match self.ours.identity.workspace_of_name(&name) {
            Some(_) => Ok(name),
            None => Err(RuntimeError::Workload(format!("invalid workspace id {workspace_id:?}"))),
        }
    }

    async fn call<T>(&self, request: impl Future<Output = kube::Result<T>>) -> Result<T, ApiError> {
        match tokio::time::timeout(self.settings.api_timeout, request).await {
            Ok(result) => result.map_err(ApiError::Kube),
            Err(_) => Err(ApiError::Timeout(self.settings.api_timeout)),
        }
    }

    /// The named object, `None` when the API server says it does not exist.
    async fn get<K>(&self, api: &Api<K>, name: &str) -> Result<Option<K>, ApiError>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        match self.call(api.get(name)).await {
            Ok(object) => Ok(Some(object)),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(error),
        }
    }

    /// The workspace's pod if it exists and is ours; a pod of that name with
    /// other labels is not this instance's workload.
    async fn own_pod(&self, workspace_id: &str, name: &str) -> Result<Option<Pod>, ApiError> {
        Ok(self.get(&self.pods, name).await?.filter(|pod| self.ours.owns(&pod.metadata, workspace_id)))
    }

    async fn delete<K>(&self, api: &Api<K>, name: &str, grace: Duration) -> Result<(), ApiError>
    where
        K: Clone + DeserializeOwned + Debug,
    {
        // Whole seconds, rounded up: a grace of 0 means "kill now".
        let grace = u32::try_from(grace.as_secs() + u64::from(grace.subsec_nanos() > 0)).unwrap_or(u32::MAX);
        let params = DeleteParams { grace_period_seconds: Some(grace), ..DeleteParams::default() };
        match self.call(api.delete(name, &params)).await {
            Ok(_) => Ok(()),
            Err(error) if error.is_not_found() => Ok(()),
            Err(error) => Err(error),
        }
    }

    /// Polls until the object with `uid` is gone (a new object under the same
    /// name counts as gone) or `bound` runs out. Errors along the way are
    /// retried: a blip should not fail a stop that is otherwise going fine.
    async fn wait_gone<K>(
        &self,
        api: &Api<K>,
        name: &str,
        uid: Option<&str>,
        bound: Duration,
    ) -> Result<(), RuntimeError>
    where
        K: Clone + DeserializeOwned + Debug + Resource,
    {
        let deadline = Instant::now() + bound;
        let mut pause = Duration::from_millis(50);
        loop {
            let last_error = match self.get(api, name).await {
                Ok(None) => return Ok(()),
                Ok(Some(object)) if object.meta().uid.as_deref() != uid => return Ok(()),
                Ok(Some(_)) => None,
                Err(error) => Some(error),
            };
            if Instant::now() + pause > deadline {
                return Err(match last_error {
                    Some(error) => error.into(),
                    None => RuntimeError::TimedOut(bound),
                });
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(1));
        }
    }

    /// Deletes an object and waits until it is gone.
    async fn remove<K>(&self, api: &Api<K>, object: &K, grace: Duration, bound: Duration) -> Result<(), RuntimeError>
    where
        K: Clone + DeserializeOwned + Debug + Resource,
    {
        let name = object.meta().name.as_deref().unwrap_or_default();
        if object.meta().deletion_timestamp.is_none() {
            self.delete(api, name, grace).await?;
        }
        self.wait_gone(api, name, object.meta().uid.as_deref(), bound).await
    }

    /// Makes sure the workspace's claim exists and is not on its way out.
    async fn ensure_claim(&self, workspace_id: &str, pod_name: &str) -> Result<(), RuntimeError> {
        let WorkspaceVolume::Claim { storage_class, size } = &self.settings.volume else {
            return Ok(());
        };
        let name = objects::claim_name(pod_name);
        if let Some(claim) = self.get(&self.claims, &name).await? {
            if !self.ours.owns(&claim.metadata, workspace_id) {
                return Err(RuntimeError::Workload(format!(
                    "persistent volume claim {name} exists and is not managed by this runtime instance"
                )));
            }
            if claim.metadata.deletion_timestamp.is_none() {
                return Ok(());
            }
            // A purge just deleted it: a pod bound to a terminating claim would never start.
            self.wait_gone(&self.claims, &name, claim.metadata.uid.as_deref(), self.settings.deletion_timeout).await?;
        }
        let claim = objects::claim(&self.ours.identity, workspace_id, &name, storage_class.as_deref(), size);
        match self.call(self.claims.create(&PostParams::default(), &claim)).await {
            Ok(_) => Ok(()),
            // Another start got there first; the claim is the same either way.
            Err(error) if error.is_already_exists() => Ok(()),
            Err(error) => Err(error.into()),
        }
    }

    async fn run_exec(&self, pod_name: &str, command: &[String]) -> Result<ExecOutput, RuntimeError> {
        let params = AttachParams { container: Some(CONTAINER.to_owned()), ..AttachParams::default() };
        let mut process = self.pods.exec(pod_name, command.to_vec(), &params).await.map_err(ApiError::Kube)?;
        let status = process.take_status();
        let (stdout, stderr) = (process.stdout(), process.stderr());
        let (stdout, stderr) = tokio::join!(read_all(stdout), read_all(stderr));
        let status = match status {
            Some(status) => status.await,
            None => None,
        };
        process.join().await.map_err(|e| RuntimeError::Unavailable(format!("exec in pod {pod_name}: {e}")))?;
        let status = status
            .ok_or_else(|| RuntimeError::Unavailable(format!("exec in pod {pod_name} ended without an exit status")))?;
        Ok(ExecOutput { exit_code: exit_code(&status)?, stdout: stdout?, stderr: stderr? })
    }
}

#[async_trait]
impl Runtime for KubernetesRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Kubernetes
    }

    fn identity(&self) -> &Identity {
        &self.ours.identity
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let info = self
            .call(self.client.apiserver_version())
            .await
            .map_err(|error| RuntimeError::Unavailable(error.to_string()))?;
        Ok(EngineInfo { version: format!("Kubernetes {}", info.git_version) })
    }

    #[tracing::instrument(skip_all, fields(workspace_id = %spec.workspace_id))]
    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        let name = self.pod_name(&spec.workspace_id)?;
        if let Some(pod) = self.get(&self.pods, &name).await? {
            if !self.ours.owns(&pod.metadata, &spec.workspace_id) {
                return Err(RuntimeError::Workload(format!(
                    "pod {name} exists and is not managed by this runtime instance"
                )));
            }
            match status::probe(&pod) {
                Probe::Running(info) if pod.metadata.deletion_timestamp.is_none() => return Ok(info),
                Probe::Unknown(detail) => return Err(RuntimeError::Unavailable(detail)),
                _ => {
                    tracing::debug!(pod = %name, "replacing a finished pod");
                    self.remove(&self.pods, &pod, Duration::ZERO, self.settings.deletion_timeout).await?;
                }
            }
        }
        self.ensure_claim(&spec.workspace_id, &name).await?;
        let pod = objects::pod(&self.ours.identity, &name, spec, &self.settings);
        let created = self.call(self.pods.create(&PostParams::default(), &pod)).await?;
        tracing::info!(pod = %name, "created pod");
        Ok(match status::probe(&created) {
            Probe::Running(info) | Probe::Exited(info) => info,
            Probe::Absent | Probe::Unknown(_) => WorkloadInfo { workload_id: name, ..WorkloadInfo::default() },
        })
    }

    #[tracing::instrument(skip(self))]
    async fn stop(&self, workspace_id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let name = self.pod_name(workspace_id)?;
        let Some(pod) = self.own_pod(workspace_id, &name).await? else {
            return Ok(StopOutcome::AlreadyGone);
        };
        self.remove(&self.pods, &pod, grace, grace + self.settings.deletion_timeout).await?;
        tracing::info!(pod = %name, "deleted pod");
        Ok(StopOutcome::Stopped)
    }

    #[tracing::instrument(skip(self))]
    async fn purge(&self, workspace_id: &str) -> Result<(), RuntimeError> {
        let name = self.pod_name(workspace_id)?;
        // Any pod of that name keeps the claim: even a foreign one may be using it.
        if self.get(&self.pods, &name).await?.is_some() {
            return Err(RuntimeError::Workload(format!("pod {name} still exists; stop it before purging")));
        }
        if !matches!(self.settings.volume, WorkspaceVolume::Claim { .. }) {
            return Ok(());
        }
        let claim_name = objects::claim_name(&name);
        match self.get(&self.claims, &claim_name).await? {
            Some(claim) if self.ours.owns(&claim.metadata, workspace_id) => {
                self.delete(&self.claims, &claim_name, Duration::ZERO).await?;
                tracing::info!(claim = %claim_name, "deleted persistent volume claim");
                Ok(())
            }
            Some(_) => Err(RuntimeError::Workload(format!(
                "persistent volume claim {claim_name} is not managed by this runtime instance"
            ))),
            None => Ok(()),
        }
    }

    async fn probe(&self, workspace_id: &str) -> Probe {
        let name = match self.pod_name(workspace_id) {
            Ok(name) => name,
            Err(error) => return Probe::Unknown(error.to_string()),
        };
        match self.own_pod(workspace_id, &name).await {
            Ok(Some(pod)) => status::probe(&pod),
            Ok(None) => Probe::Absent,
            Err(error) => Probe::Unknown(error.to_string()),
        }
    }

    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        let pods = self.call(self.pods.list(&ListParams::default().labels(&self.selector))).await?;
        Ok(pods
            .items
            .iter()
            .filter_map(|pod| {
                let workspace_id = self.ours.workspace_of(pod)?;
                let name = pod.metadata.name.clone()?;
                Some(ManagedWorkload {
                    workload_id: name.clone(),
                    name,
                    workspace_id,
                    running: status::is_running(pod),
                })
            })
            .collect())
    }

    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        // List, then watch from the list's version: the caller hears about
        // every pod there is, then every change, and a caller that watches
        // again after a break (or a 410 Gone for a version too old) lists
        // again. A watch from version "0" would ask the server for its
        // initial state instead, which servers on an etcd without progress
        // notifications refuse.
        let listed = self.call(self.pods.list(&ListParams::default().labels(&self.selector))).await?;
        let version = listed.metadata.resource_version.clone().unwrap_or_else(|| "0".to_owned());
        let params = WatchParams::default().labels(&self.selector).timeout(WATCH_SECONDS);
        let events = self.call(self.pods.watch(&params, &version)).await?;
        let ours = self.ours.clone();
        let existing: Vec<WorkloadEvent> = listed
            .items
            .iter()
            .filter_map(|pod| ours.workspace_of(pod).map(|workspace_id| WorkloadEvent { workspace_id }))
            .collect();
        let changes = events
            .take_while(|event| ready(matches!(event, Ok(event) if !matches!(event, WatchEvent::Error(_)))))
            .filter_map(move |event| {
                ready(match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod) | WatchEvent::Deleted(pod)) => {
                        ours.workspace_of(&pod).map(|workspace_id| WorkloadEvent { workspace_id })
                    }
                    _ => None,
                })
            });
        Ok(futures::stream::iter(existing).chain(changes).boxed())
    }

    async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        let name = self.pod_name(workspace_id)?;
        if self.own_pod(workspace_id, &name).await?.is_none() {
            return Err(RuntimeError::NoWorkload(workspace_id.to_owned()));
        }
        let params = LogParams {
            container: Some(CONTAINER.to_owned()),
            follow: request.follow,
            tail_lines: Some(i64::from(request.tail_lines)),
            since_time: request.since.and_then(status::timestamp),
            timestamps: true,
            ..LogParams::default()
        };
        let reader = match self.call(self.pods.log_stream(&name, &params)).await {
            Ok(reader) => reader,
            Err(error) if error.is_not_found() => return Err(RuntimeError::NoWorkload(workspace_id.to_owned())),
            Err(error) => return Err(error.into()),
        };
        Ok(reader
            .lines()
            .map_ok(|line| log_line(&line))
            .map_err(|error| RuntimeError::Unavailable(format!("reading logs: {error}")))
            .boxed())
    }

    #[tracing::instrument(skip(self))]
    async fn exec(
        &self,
        workspace_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        let name = self.pod_name(workspace_id)?;
        let Some(pod) = self.own_pod(workspace_id, &name).await? else {
            return Err(RuntimeError::NoWorkload(workspace_id.to_owned()));
        };
        match status::probe(&pod) {
            Probe::Running(_) => {}
            Probe::Exited(info) => {
                return Err(RuntimeError::Workload(format!("pod {name} is not running ({})", info.detail)));
            }
            Probe::Unknown(detail) => return Err(RuntimeError::Unavailable(detail)),
            Probe::Absent => return Err(RuntimeError::NoWorkload(workspace_id.to_owned())),
        }
        if command.is_empty() {
            return Err(RuntimeError::Workload("no command to run".to_owned()));
        }
        match tokio::time::timeout(timeout, self.run_exec(&name, command)).await {
            Ok(output) => output,
            Err(_) => Err(RuntimeError::TimedOut(timeout)),
        }
    }
}

/// Which objects are this instance's: the runtime's test, owned so the
/// watch stream can take a copy and be `'static`.
#[derive(Debug, Clone)]
struct Ours {
    identity: Identity,
    instance_label: String,
}

impl Ours {
    /// Whether an object carries this instance's labels and the workspace's.
    fn owns(&self, meta: &ObjectMeta, workspace_id: &str) -> bool {
        let Some(labels) = &meta.labels else { return false };
        let has = |key: &str, value: &str| labels.get(key).is_some_and(|v| v == value);
        has(labels::MESH_ID, &self.identity.mesh_id)
            && has(labels::RUNTIME_INSTANCE, &self.instance_label)
            && has(labels::WORKSPACE_ID, workspace_id)
    }

    /// The workspace a pod of ours runs; `None` for a pod whose name does not
    /// look like ours or disagrees with its labels (PRV-9).
    fn workspace_of(&self, pod: &Pod) -> Option<String> {
        let id = self.identity.workspace_of_name(pod.metadata.name.as_deref()?)?;
        self.owns(&pod.metadata, id).then(|| id.to_owned())
    }
}

/// One API call's failure, sorted so callers can tell absence from trouble.
#[derive(Debug, thiserror::Error)]
enum ApiError {
    #[error("the Kubernetes API did not answer within {0:?}")]
    Timeout(Duration),
    #[error("kubernetes API: {0}")]
    Kube(kube::Error),
}

impl ApiError {
    fn status(&self) -> Option<&Status> {
        match self {
            Self::Kube(kube::Error::Api(status)) => Some(status),
            _ => None,
        }
    }

    /// Only the API server's own NotFound: a bare 404 from something in
    /// between says nothing about the object.
    fn is_not_found(&self) -> bool {
        self.status().is_some_and(|s| s.code == 404 && s.reason == "NotFound")
    }

    fn is_already_exists(&self) -> bool {
        self.status().is_some_and(|s| s.code == 409 && s.reason == "AlreadyExists")
    }
}

impl From<ApiError> for RuntimeError {
    fn from(error: ApiError) -> Self {
        match error.status() {
            // The API server answered and refused (invalid, forbidden, conflict):
            // the same request will not do better. Its Status always carries a
            // CamelCase reason; kube makes one up with spaces for a body that is
            // not a Status (a proxy's error page), which is trouble on the way.
            Some(status)
                if (400..500).contains(&status.code)
                    && !matches!(status.code, 408 | 429)
                    && !status.reason.is_empty()
                    && status.reason.chars().all(|c| c.is_ascii_alphanumeric()) =>
            {
                Self::Workload(status.message.clone())
            }
            _ => Self::Unavailable(error.to_string()),
        }
    }
}

async fn read_all(reader: Option<impl tokio::io::AsyncRead + Unpin>) -> Result<Vec<u8>, RuntimeError> {
    let mut buffer = Vec::new();
    if let Some(mut reader) = reader {
        reader
            .read_to_end(&mut buffer)
            .await
            .map_err(|e| RuntimeError::Unavailable(format!("reading exec output: {e}")))?;
    }
    Ok(buffer)
}

/// The exit code an exec's final status carries: Success is 0, a
/// NonZeroExitCode failure names its code; any other failure means the
/// command did not run (not found, not executable).
fn exit_code(status: &ExecStatus) -> Result<i32, RuntimeError> {
    if status.status.as_deref() == Some("Success") {
        return Ok(0);
    }
    if status.reason.as_deref() == Some("NonZeroExitCode")
        && let Some(code) = status
            .details
            .iter()
            .flat_map(|details| details.causes.iter().flatten())
            .find(|cause| cause.reason.as_deref() == Some("ExitCode"))
            .and_then(|cause| cause.message.as_deref()?.parse().ok())
    {
        return Ok(code);
    }
    Err(RuntimeError::Workload(status.message.clone().unwrap_or_else(|| "exec failed".to_owned())))
}

/// A log line as the API sends it with timestamps: "<RFC 3339> <text>".
fn log_line(line: &str) -> LogLine {
    let parsed = line.split_once(' ').and_then(|(time, text)| Some((time.parse::<Timestamp>().ok()?, text)));
    let (time, text) = match parsed {
        Some((time, text)) => (Some(SystemTime::from(time)), text),
        None => (None, line),
    };
    LogLine { time, stream: LogStream::Unknown, text: text.to_owned() }
}

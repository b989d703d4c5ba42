//! [`Runtime`] on a Docker engine (PRV-2): one container per workspace, named
//! [`Identity::workload_name`] and labelled with the runtime's identity, and
//! one named volume per workspace mounted at [`DATA_DIR`] that outlives the
//! container. Images must already be on the engine (built or loaded locally)
//! unless [`DockerSettings::pull_missing_images`] is set.

use std::{
    collections::HashMap,
    future::ready,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use async_trait::async_trait;
use bollard::{
    Docker,
    container::LogOutput,
    errors::Error as BollardError,
    exec::{StartExecOptions, StartExecResults},
    models::{ContainerInspectResponse, ExecConfig, VolumeCreateRequest},
    query_parameters::{
        CreateContainerOptions, CreateImageOptions, EventsOptions, ListContainersOptions, LogsOptions,
        RemoveContainerOptions, RemoveVolumeOptions, StopContainerOptions,
    },
};
use futures::{
    StreamExt, TryStreamExt,
    stream::{self, BoxStream},
};
use tokio::sync::OnceCell;

// The log tests parse engine times too.
#[cfg(test)]
use self::container::parse_time;
use self::{
    container::{event_of, is_up, managed, probe_of, status_of, workload_info},
    engine::{EngineError, call, engine_error, open, own_network},
    log_lines::LineSplitter,
};

use super::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, LogStream, ManagedWorkload, Probe, Runtime, RuntimeError,
    RuntimeKind, StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec, labels,
};

mod container;
mod engine;
mod log_lines;

/// Where the workspace's volume is mounted in its container.
pub const DATA_DIR: &str = "/data";

/// The container events after which a probe may answer differently.
const WATCHED_EVENTS: [&str; 6] = ["start", "die", "destroy", "oom", "kill", "stop"];

/// The engine's usual socket, when neither the endpoint nor `DOCKER_HOST` names one.
const DEFAULT_DOCKER_HOST: &str = "unix:///var/run/docker.sock";

/// How a Docker runtime runs its workloads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerSettings {
    /// The network workloads are attached to (e.g. a user-defined bridge that
    /// reaches the registry). `None`: the user-defined network the
    /// provisioner's own container is on, when it runs in a container of
    /// this engine (so that workloads reach the registry under the names the
    /// provisioner uses, as in the Compose stack); else the default bridge.
    pub network: Option<String>,
    /// The grace the engine gives a workload when it stops it on its own
    /// (`docker stop` without a timeout, engine shutdown); the provisioner's
    /// own stops pass theirs.
    pub stop_timeout: Duration,
    /// Pull an image the engine lacks; when off, images must have been built
    /// or loaded on the engine, and a missing one fails the start.
    pub pull_missing_images: bool,
    /// How long a pull may take.
    pub pull_timeout: Duration,
    /// Run an init process as PID 1 so that agents which install no signal
    /// handler still die on SIGTERM, within the grace, and zombies are reaped.
    pub init: bool,
    /// Bound on every engine call that does not wait for a workload.
    pub request_timeout: Duration,
}

impl Default for DockerSettings {
    fn default() -> Self {
        Self {
            network: None,
            stop_timeout: Duration::from_secs(10),
            pull_missing_images: false,
            pull_timeout: Duration::from_secs(300),
            init: true,
            request_timeout: Duration::from_secs(10),
        }
    }
}

/// Where the client comes from; it is built on first use so that the
/// provisioner can start before the engine and ride out its restarts.
#[derive(Debug)]
enum ClientSource {
    Endpoint(String),
    Client(Docker),
}

/// A Docker engine as a [`Runtime`].
#[derive(Debug)]
pub struct DockerRuntime {
    identity: Identity,
    /// [`Identity::instance_label`], computed once.
    instance_label: String,
    settings: DockerSettings,
    source: ClientSource,
    client: OnceCell<Docker>,
    /// The network of the provisioner's own container, looked up once.
    own_network: OnceCell<Option<String>>,
}

impl DockerRuntime {
    /// A runtime on the engine at `endpoint`: "unix:///path", "tcp://host:port",
    /// "http://host:port", or "" for `DOCKER_HOST` or the local socket. Nothing is
    /// contacted yet: an unreachable engine shows in the calls, not here.
    pub fn connect(endpoint: &str, identity: Identity, settings: DockerSettings) -> Result<Self, RuntimeError> {
        let endpoint = match endpoint.trim() {
            "" => std::env::var("DOCKER_HOST").unwrap_or_else(|_| DEFAULT_DOCKER_HOST.to_owned()),
            given => given.to_owned(),
        };
        if !["unix://", "tcp://", "http://"].iter().any(|scheme| endpoint.starts_with(scheme)) {
            return Err(RuntimeError::NotSupported {
                message: format!("unsupported docker endpoint {endpoint:?}"),
                hint: "use unix:///path/to/docker.sock, tcp://host:port or http://host:port".to_owned(),
            });
        }
        Ok(Self::with_source(ClientSource::Endpoint(endpoint), identity, settings))
    }

    /// A runtime on an existing client. Its API version is still negotiated
    /// with the engine on first use; its own timeout must exceed the longest
    /// stop grace.
    pub fn new(docker: Docker, identity: Identity, settings: DockerSettings) -> Self {
        Self::with_source(ClientSource::Client(docker), identity, settings)
    }

    fn with_source(source: ClientSource, identity: Identity, settings: DockerSettings) -> Self {
        Self {
            instance_label: identity.instance_label(),
            identity,
            settings,
            source,
            client: OnceCell::new(),
            own_network: OnceCell::new(),
        }
    }

    /// The client, speaking the engine's API version.
    async fn client(&self) -> Result<&Docker, EngineError> {
        self.client
            .get_or_try_init(|| async {
                let docker = match &self.source {
                    ClientSource::Client(docker) => docker.clone(),
                    ClientSource::Endpoint(endpoint) => open(endpoint)?,
                };
                // bollard speaks a newer API than many engines (20.10 knows 1.41);
                // the negotiated version is shared by every clone of the client.
                call("negotiate api version", self.timeout(), docker.negotiate_version()).await
            })
            .await
    }

    fn timeout(&self) -> Duration {
        self.settings.request_timeout
    }

    fn volume_name(&self, workspace_id: &str) -> String {
        format!("{}-data", self.identity.workload_name(workspace_id))
    }

    fn labels(&self, workspace_id: &str) -> HashMap<String, String> {
        HashMap::from([
            (labels::MESH_ID.to_owned(), self.identity.mesh_id.clone()),
            (labels::RUNTIME_INSTANCE.to_owned(), self.instance_label.clone()),
            (labels::WORKSPACE_ID.to_owned(), workspace_id.to_owned()),
            (labels::MANAGED_BY.to_owned(), labels::MANAGED_BY_VALUE.to_owned()),
        ])
    }

    /// The engine-side filter selecting what carries this instance's identity.
    fn label_filter(&self) -> Vec<String> {
        vec![
            format!("{}={}", labels::MESH_ID, self.identity.mesh_id),
            format!("{}={}", labels::RUNTIME_INSTANCE, self.instance_label),
        ]
    }

    fn owns(&self, labels: Option<&HashMap<String, String>>, workspace_id: &str) -> bool {
        labels.is_some_and(|labels| {
            labels.get(labels::MESH_ID) == Some(&self.identity.mesh_id)
                && labels.get(labels::RUNTIME_INSTANCE) == Some(&self.instance_label)
                && labels.get(labels::WORKSPACE_ID).map(String::as_str) == Some(workspace_id)
        })
    }

    /// The workspace's container, if there is one. A container that has the
    /// name but not our labels is an error: it is never ours to touch.
    async fn find(&self, workspace_id: &str) -> Result<Option<ContainerInspectResponse>, EngineError> {
        let docker = self.client().await?;
        let name = self.identity.workload_name(workspace_id);
        let container = match call("inspect container", self.timeout(), docker.inspect_container(&name, None)).await {
            Ok(container) => container,
            Err(err) if err.is_not_found() => return Ok(None),
            Err(err) => return Err(err),
        };
        if !self.owns(container.config.as_ref().and_then(|config| config.labels.as_ref()), workspace_id) {
            return Err(EngineError::Foreign(format!(
                "container {name} exists but is not labelled as this runtime instance's"
            )));
        }
        Ok(Some(container))
    }

    async fn remove_container(&self, docker: &Docker, container: &str) -> Result<(), EngineError> {
        let options = RemoveContainerOptions { force: true, ..Default::default() };
        match call("remove container", self.timeout(), docker.remove_container(container, Some(options))).await {
            Err(err) if err.is_not_found() => Ok(()),
            done => done,
        }
    }

    async fn ensure_image(&self, docker: &Docker, image: &str) -> Result<(), RuntimeError> {
        match call("inspect image", self.timeout(), docker.inspect_image(image)).await {
            Ok(_) => Ok(()),
            Err(err) if err.is_not_found() && self.settings.pull_missing_images => {
                tracing::info!(image, "pulling missing image");
                let options = CreateImageOptions {
                    from_image: Some(image.to_owned()),
                    tag: pull_tag(image),
                    ..Default::default()
                };
                let pull = docker.create_image(Some(options), None, None).try_for_each(|_| ready(Ok(())));
                Ok(call("pull image", self.settings.pull_timeout, pull).await?)
            }
            Err(err) if err.is_not_found() => {
                Err(RuntimeError::Workload(format!("image {image} not found on the engine")))
            }
            Err(err) => Err(err.into()),
        }
    }

    /// Creates the workspace's volume, or finds it from an earlier start.
    async fn ensure_volume(&self, docker: &Docker, workspace_id: &str) -> Result<String, EngineError> {
        let name = self.volume_name(workspace_id);
        let request = VolumeCreateRequest {
            name: Some(name.clone()),
            labels: Some(self.labels(workspace_id)),
            ..Default::default()
        };
        let volume = call("create volume", self.timeout(), docker.create_volume(request)).await?;
        if !self.owns(Some(&volume.labels), workspace_id) {
            return Err(EngineError::Foreign(format!(
                "volume {name} exists but is not labelled as this runtime instance's"
            )));
        }
        Ok(name)
    }

    /// The network a workload joins (see [`DockerSettings::network`]).
    async fn workload_network(&self, docker: &Docker) -> Result<Option<String>, EngineError> {
        if let Some(network) = &self.settings.network {
            return Ok(Some(network.clone()));
        }
        let own = self.own_network.get_or_try_init(|| own_network(docker, self.timeout())).await?;
        Ok(own.clone())
    }
}

#[async_trait]
impl Runtime for DockerRuntime {
    fn kind(&self) -> RuntimeKind {
        RuntimeKind::Docker
    }

    fn identity(&self) -> &Identity {
        &self.identity
    }

    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        let docker = self.client().await?;
        let version = call("version", self.timeout(), docker.version()).await?;
        Ok(EngineInfo {
            version: format!(
                "Docker {} (API {})",
                version.version.as_deref().unwrap_or("unknown"),
                version.api_version.as_deref().unwrap_or("unknown")
            ),
        })
    }

    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        if spec.image.is_empty() {
            return Err(RuntimeError::Workload("a docker workload needs an image".to_owned()));
        }
        let docker = self.client().await?;
        let name = self.identity.workload_name(&spec.workspace_id);
        if let Some(existing) = self.find(&spec.workspace_id).await? {
            if is_up(&status_of(&existing)) {
                return Ok(workload_info(&existing));
            }
            // An exited container from an earlier run holds the name; the workspace's data is in the volume.
            self.remove_container(docker, existing.id.as_deref().unwrap_or(&name)).await?;
        }
        self.ensure_image(docker, &spec.image).await?;
        let volume = self.ensure_volume(docker, &spec.workspace_id).await?;
        let options = CreateContainerOptions { name: Some(name.clone()), ..Default::default() };
        let network = self.workload_network(docker).await?;
        let body = self.container_body(spec, volume, network);
        let created = call("create container", self.timeout(), docker.create_container(Some(options), body)).await?;
        if let Err(err) = call("start container", self.timeout(), docker.start_container(&created.id, None)).await {
            // A container that never ran would only hold the name and read as exited.
            if let Err(cleanup) = self.remove_container(docker, &created.id).await {
                tracing::warn!(container = %name, error = %cleanup, "could not remove a container that failed to start");
            }
            return Err(err.into());
        }
        tracing::info!(workspace_id = %spec.workspace_id, container = %name, "started container");
        let started = call("inspect container", self.timeout(), docker.inspect_container(&created.id, None)).await?;
        Ok(workload_info(&started))
    }

    async fn stop(&self, workspace_id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        let Some(container) = self.find(workspace_id).await? else {
            return Ok(StopOutcome::AlreadyGone);
        };
        let docker = self.client().await?;
        let id = container.id.unwrap_or_else(|| self.identity.workload_name(workspace_id));
        let seconds = grace.as_secs() + u64::from(grace.subsec_nanos() > 0);
        let options = StopContainerOptions { t: Some(i32::try_from(seconds).unwrap_or(i32::MAX)), signal: None };
        match call("stop container", grace + self.timeout(), docker.stop_container(&id, Some(options))).await {
            Ok(()) => {}
            Err(err) if err.is_not_found() => return Ok(StopOutcome::AlreadyGone),
            Err(err) => return Err(err.into()),
        }
        self.remove_container(docker, &id).await?;
        tracing::info!(workspace_id, container = %id, "stopped and removed container");
        Ok(StopOutcome::Stopped)
    }

    async fn purge(&self, workspace_id: &str) -> Result<(), RuntimeError> {
        if self.find(workspace_id).await?.is_some() {
            return Err(RuntimeError::Workload(format!(
                "the workload of workspace {workspace_id} still exists: stop it before removing its volume"
            )));
        }
        let docker = self.client().await?;
        let name = self.volume_name(workspace_id);
        match call("inspect volume", self.timeout(), docker.inspect_volume(&name)).await {
            Ok(volume) if self.owns(Some(&volume.labels), workspace_id) => {}
            Ok(_) => {
                return Err(RuntimeError::Workload(format!(
                    "volume {name} is not labelled as this runtime instance's; left in place"
                )));
            }
            Err(err) if err.is_not_found() => return Ok(()),
            Err(err) => return Err(err.into()),
        }
        match call("remove volume", self.timeout(), docker.remove_volume(&name, None::<RemoveVolumeOptions>)).await {
            Err(err) if !err.is_not_found() => return Err(err.into()),
            _ => {}
        }
        tracing::info!(workspace_id, volume = %name, "removed volume");
        Ok(())
    }

    async fn probe(&self, workspace_id: &str) -> Probe {
        match self.find(workspace_id).await {
            Ok(Some(container)) => probe_of(&container),
            Ok(None) => Probe::Absent,
            Err(err) => Probe::Unknown(err.to_string()),
        }
    }

    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        let docker = self.client().await?;
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), self.label_filter())])),
            ..Default::default()
        };
        let containers = call("list containers", self.timeout(), docker.list_containers(Some(options))).await?;
        Ok(containers.into_iter().filter_map(|container| managed(&self.identity, container)).collect())
    }

    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        let docker = self.client().await?;
        // The engine subscribes only when the stream is first polled; replaying
        // from just before this call keeps the events in between. Duplicated
        // hints are harmless.
        let since = SystemTime::now() - Duration::from_secs(1);
        let since = since.duration_since(UNIX_EPOCH).unwrap_or_default();
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("label".to_owned(), self.label_filter()),
            ("event".to_owned(), WATCHED_EVENTS.iter().map(|event| (*event).to_owned()).collect()),
        ]);
        let options = EventsOptions {
            since: Some(format!("{}.{:09}", since.as_secs(), since.subsec_nanos())),
            until: None,
            filters: Some(filters),
        };
        let identity = self.identity.clone();
        let events = docker
            .events(Some(options))
            .take_while(|event| {
                if let Err(err) = event {
                    tracing::debug!(error = %err, "docker event stream ended");
                }
                ready(event.is_ok())
            })
            .filter_map(move |event| ready(event.ok().and_then(|event| event_of(&identity, event))));
        Ok(events.boxed())
    }

    async fn logs(
        &self,
        workspace_id: &str,
        request: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        let container =
            self.find(workspace_id).await?.ok_or_else(|| RuntimeError::NoWorkload(workspace_id.to_owned()))?;
        let docker = self.client().await?;
        let id = container.id.unwrap_or_else(|| self.identity.workload_name(workspace_id));
        let since_secs = request
            .since
            .and_then(|since| since.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |since| i32::try_from(since.as_secs()).unwrap_or(i32::MAX));
        let options = LogsOptions {
            follow: request.follow,
            stdout: true,
            stderr: true,
            since: since_secs,
            until: 0,
            timestamps: true,
            tail: request.tail_lines.to_string(),
        };
        let mut splitter = LineSplitter::new(request.since);
        let lines = docker
            .logs(&id, Some(options))
            .map(Some)
            // The end of the stream flushes a last line that had no line ending.
            .chain(stream::once(ready(None)))
            .flat_map(move |frame| stream::iter(splitter.push(frame)));
        Ok(lines.boxed())
    }

    async fn exec(
        &self,
        workspace_id: &str,
        command: &[String],
        timeout: Duration,
    ) -> Result<ExecOutput, RuntimeError> {
        if command.is_empty() {
            return Err(RuntimeError::Workload("exec needs a command".to_owned()));
        }
        let no_workload = || RuntimeError::NoWorkload(workspace_id.to_owned());
        let container = self.find(workspace_id).await?.ok_or_else(no_workload)?;
        if !is_up(&status_of(&container)) {
            return Err(no_workload());
        }
        let docker = self.client().await?;
        let id = container.id.unwrap_or_else(|| self.identity.workload_name(workspace_id));
        let config = ExecConfig {
            cmd: Some(command.to_vec()),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            ..Default::default()
        };
        let exec = match call("create exec", self.timeout(), docker.create_exec(&id, config)).await {
            Ok(exec) => exec,
            // 409: the container stopped (or was paused) since we looked.
            Err(EngineError::Refused { status: Some(409), .. }) => return Err(no_workload()),
            Err(err) => return Err(err.into()),
        };
        let run = async {
            let options = StartExecOptions { detach: false, tty: false, output_capacity: None };
            let StartExecResults::Attached { mut output, .. } = docker.start_exec(&exec.id, Some(options)).await?
            else {
                return Err(BollardError::DockerStreamError { error: "the engine detached the exec".to_owned() });
            };
            let mut collected = ExecOutput::default();
            while let Some(frame) = output.try_next().await? {
                match frame {
                    LogOutput::StdErr { message } => collected.stderr.extend_from_slice(&message),
                    LogOutput::StdOut { message } | LogOutput::Console { message } => {
                        collected.stdout.extend_from_slice(&message)
                    }
                    LogOutput::StdIn { .. } => {}
                }
            }
            Ok(collected)
        };
        let mut output = match tokio::time::timeout(timeout, run).await {
            Ok(Ok(output)) => output,
            Ok(Err(err)) => return Err(engine_error("run exec", err).into()),
            Err(_) => {
                // The engine API has no way to kill an exec, and dropping the
                // connection does not end it: say where it runs so that an
                // operator can.
                let pid =
                    call("inspect exec", self.timeout(), docker.inspect_exec(&exec.id)).await.ok().and_then(|e| e.pid);
                tracing::warn!(
                    workspace_id,
                    exec_id = %exec.id,
                    host_pid = ?pid,
                    "exec timed out and keeps running until it exits or the workload stops"
                );
                return Err(RuntimeError::TimedOut(timeout));
            }
        };
        let exit_code = async {
            loop {
                let inspected = docker.inspect_exec(&exec.id).await?;
                // The output can end a moment before the engine records the exit.
                match (inspected.running, inspected.exit_code) {
                    (Some(false), Some(code)) => return Ok(code),
                    _ => tokio::time::sleep(Duration::from_millis(10)).await,
                }
            }
        };
        let code = call("inspect exec", self.timeout(), exit_code).await?;
        output.exit_code = i32::try_from(code).unwrap_or(i32::MAX);
        Ok(output)
    }
}

/// The tag to pull: without one the engine would pull every tag of the repository.
fn pull_tag(image: &str) -> Option<String> {
    let last_segment = image.rsplit('/').next().unwrap_or(image);
    (!image.contains('@') && !last_segment.contains(':')).then(|| "latest".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(stream: LogStream, text: &str) -> Option<Result<LogOutput, BollardError>> {
        let message = text.to_owned().into();
        Some(Ok(match stream {
            LogStream::Stderr => LogOutput::StdErr { message },
            _ => LogOutput::StdOut { message },
        }))
    }

    fn texts(lines: Vec<Result<LogLine, RuntimeError>>) -> Vec<(LogStream, String)> {
        lines.into_iter().map(|line| line.expect("a line")).map(|line| (line.stream, line.text)).collect()
    }

    #[test]
    fn splits_frames_into_lines_per_stream() {
        let mut splitter = LineSplitter::new(None);
        let first = splitter.push(frame(LogStream::Stdout, "2024-05-01T10:00:00.123456789Z hello\n"));
        let first = first.into_iter().next().expect("one line").expect("a line");
        assert_eq!(first.text, "hello");
        let expected = UNIX_EPOCH + Duration::new(1_714_557_600, 123_456_789);
        assert_eq!(first.time, Some(expected));

        // A long message arrives in frames without line endings, interleaved with the other stream.
        assert!(splitter.push(frame(LogStream::Stdout, "2024-05-01T10:00:01Z part one, ")).is_empty());
        let err = splitter.push(frame(LogStream::Stderr, "2024-05-01T10:00:01Z oops\r\n"));
        assert_eq!(texts(err), vec![(LogStream::Stderr, "oops".to_owned())]);
        let joined = splitter.push(frame(LogStream::Stdout, "2024-05-01T10:00:02Z part two\n"));
        assert_eq!(texts(joined), vec![(LogStream::Stdout, "part one, part two".to_owned())]);

        assert!(splitter.push(frame(LogStream::Stdout, "no time and no ending")).is_empty());
        let last = splitter.push(None);
        assert_eq!(texts(last), vec![(LogStream::Stdout, "no time and no ending".to_owned())]);
    }

    #[test]
    fn drops_lines_older_than_since() {
        let since = UNIX_EPOCH + Duration::new(1_714_557_600, 500_000_000);
        let mut splitter = LineSplitter::new(Some(since));
        assert!(splitter.push(frame(LogStream::Stdout, "2024-05-01T10:00:00.4Z early\n")).is_empty());
        let late = splitter.push(frame(LogStream::Stdout, "2024-05-01T10:00:00.6Z late\n"));
        assert_eq!(texts(late), vec![(LogStream::Stdout, "late".to_owned())]);
    }

    #[test]
    fn zero_times_are_none() {
        assert_eq!(parse_time("0001-01-01T00:00:00Z"), None);
        assert!(parse_time("2024-05-01T10:00:00.5Z").is_some());
    }

    #[test]
    fn pulls_a_tag_only_when_the_image_names_none() {
        assert_eq!(pull_tag("busybox").as_deref(), Some("latest"));
        assert_eq!(pull_tag("registry:5000/team/agent").as_deref(), Some("latest"));
        assert_eq!(pull_tag("registry:5000/team/agent:v1"), None);
        assert_eq!(pull_tag("agent@sha256:abc"), None);
    }
}

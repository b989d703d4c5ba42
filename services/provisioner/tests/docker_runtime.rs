//! `DockerRuntime` against the real engine of the test machine. The engine has
//! no registry: the workload image is built here, `FROM scratch` with the
//! static binary of `fixtures/sleeper.rs`. Every test uses its own mesh id, so
//! the tests run in parallel and clean up by label and name.

use std::{
    collections::{BTreeMap, HashMap},
    fs::File,
    path::{Path, PathBuf},
    process::Command,
    sync::OnceLock,
    time::{Duration, Instant},
};

use agentmesh_provisioner::runtime::{
    Identity, LogRequest, LogStream, Probe, ResourceLimits, Runtime, RuntimeError, StopOutcome, WorkloadEvent,
    WorkloadSpec,
    docker::{DockerRuntime, DockerSettings},
    labels,
};
use bollard::{
    Docker,
    models::{ContainerCreateBody, RestartPolicyNameEnum},
    query_parameters::{CreateContainerOptions, KillContainerOptions, RemoveContainerOptions},
};
use futures::{StreamExt, stream::BoxStream};

const IMAGE: &str = "agentmesh-test/sleeper:dev";
/// How long a test waits for something the engine does promptly.
const PATIENCE: Duration = Duration::from_secs(30);

/// Builds the sleeper image once per test run; the file lock keeps concurrent
/// test binaries from importing it at the same time.
fn sleeper_image() -> &'static str {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("docker-runtime-sleeper");
        std::fs::create_dir_all(&dir).expect("create the fixture dir");
        let lock = File::create(dir.join("build.lock")).expect("create the build lock");
        lock.lock().expect("take the build lock");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sleeper.rs");
        let binary = dir.join("sleeper");
        run(Command::new("rustc")
            .args(["--edition", "2024", "-O", "-C", "target-feature=+crt-static", "-C", "strip=symbols"])
            .args(["--target", "x86_64-unknown-linux-gnu", "-o"])
            .arg(&binary)
            .arg(&source));
        let tarball = dir.join("sleeper.tar");
        run(Command::new("tar").arg("-C").arg(&dir).arg("-cf").arg(&tarball).arg("sleeper"));
        run(Command::new("docker").args(["import", "--change", r#"ENTRYPOINT ["/sleeper"]"#]).arg(&tarball).arg(IMAGE));
    });
    IMAGE
}

fn run(command: &mut Command) {
    let output = command.output().unwrap_or_else(|err| panic!("{command:?}: {err}"));
    assert!(output.status.success(), "{command:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Removes, on drop, every container and volume a test made: by our label and by name.
struct Cleanup {
    mesh_id: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let label = format!("label={}={}", labels::MESH_ID, self.mesh_id);
        let name = format!("name={}", self.mesh_id);
        for filter in [&label, &name] {
            let script = format!(
                "docker ps -aq --filter '{filter}' | xargs -r docker rm -f >/dev/null; docker volume ls -q --filter '{filter}' | xargs -r docker volume rm -f >/dev/null"
            );
            let _ = Command::new("sh").arg("-c").arg(script).status();
        }
    }
}

struct Harness {
    runtime: DockerRuntime,
    /// The engine as an outsider sees it.
    docker: Docker,
    mesh_id: String,
    _cleanup: Cleanup,
}

impl Harness {
    async fn new() -> Self {
        Self::with_settings(DockerSettings::default()).await
    }

    async fn with_settings(settings: DockerSettings) -> Self {
        sleeper_image();
        let mesh_id = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let identity = Identity { mesh_id: mesh_id.clone(), instance: "docker:test".to_owned() };
        let runtime = DockerRuntime::connect("", identity, settings).expect("connect");
        let docker =
            Docker::connect_with_local_defaults().expect("docker client").negotiate_version().await.expect("engine");
        Self { runtime, docker, _cleanup: Cleanup { mesh_id: mesh_id.clone() }, mesh_id }
    }

    fn name(&self, workspace_id: &str) -> String {
        format!("am-{}-{workspace_id}", self.mesh_id)
    }

    async fn exists(&self, container: &str) -> bool {
        match self.docker.inspect_container(container, None).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(err) => panic!("inspect {container}: {err}"),
        }
    }

    async fn volume_exists(&self, volume: &str) -> bool {
        match self.docker.inspect_volume(volume).await {
            Ok(_) => true,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => false,
            Err(err) => panic!("inspect volume {volume}: {err}"),
        }
    }

    /// Probes after each event for the workspace until `done` accepts the answer.
    async fn await_probe(
        &self,
        events: &mut BoxStream<'static, WorkloadEvent>,
        workspace_id: &str,
        done: impl Fn(&Probe) -> bool,
    ) -> Probe {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let probe = self.runtime.probe(workspace_id).await;
            if done(&probe) {
                return probe;
            }
            loop {
                let event = tokio::time::timeout_at(deadline.into(), events.next())
                    .await
                    .unwrap_or_else(|_| panic!("no event for {workspace_id} in time; last probe {probe:?}"))
                    .expect("the event stream ended");
                if event.workspace_id == workspace_id {
                    break;
                }
            }
        }
    }
}

fn workspace() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn spec(workspace_id: &str, args: &[&str]) -> WorkloadSpec {
    WorkloadSpec {
        workspace_id: workspace_id.to_owned(),
        workspace_name: "sleeper".to_owned(),
        image: sleeper_image().to_owned(),
        command: String::new(),
        args: args.iter().map(|arg| (*arg).to_owned()).collect(),
        env: BTreeMap::from([
            ("AGENTMESH_WORKSPACE_ID".to_owned(), workspace_id.to_owned()),
            ("GREETING".to_owned(), "hello world".to_owned()),
        ]),
        limits: ResourceLimits::default(),
    }
}

fn strings(words: &[&str]) -> Vec<String> {
    words.iter().map(|word| (*word).to_owned()).collect()
}

#[tokio::test]
async fn start_creates_a_labelled_limited_container_with_a_volume() {
    let h = Harness::new().await;
    let ws = workspace();
    let mut spec = spec(&ws, &[]);
    spec.limits = ResourceLimits { cpu_millis: 500, memory_bytes: 64 << 20, pids_limit: 64 };

    let began = Instant::now();
    let info = h.runtime.start(&spec).await.expect("start");
    eprintln!("start took {:?}", began.elapsed());
    assert!(!info.workload_id.is_empty());
    assert_eq!(info.detail, "running");
    assert!(info.started_at.is_some());

    let container = h.docker.inspect_container(&h.name(&ws), None).await.expect("inspect");
    assert_eq!(container.id.as_deref(), Some(info.workload_id.as_str()));
    let config = container.config.expect("config");
    let container_labels = config.labels.expect("labels");
    assert_eq!(container_labels[labels::MESH_ID], h.mesh_id);
    assert_eq!(container_labels[labels::RUNTIME_INSTANCE], h.runtime.identity().instance_label());
    assert_eq!(container_labels[labels::WORKSPACE_ID], ws);
    assert_eq!(container_labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    let env = config.env.expect("env");
    assert!(env.contains(&"GREETING=hello world".to_owned()), "{env:?}");
    assert!(env.contains(&format!("AGENTMESH_WORKSPACE_ID={ws}")), "{env:?}");
    let host = container.host_config.expect("host config");
    assert_eq!(host.nano_cpus, Some(500_000_000));
    assert_eq!(host.memory, Some(64 << 20));
    assert_eq!(host.pids_limit, Some(64));
    let restart = host.restart_policy.and_then(|policy| policy.name);
    assert!(matches!(restart, None | Some(RestartPolicyNameEnum::NO | RestartPolicyNameEnum::EMPTY)), "{restart:?}");
    let volume = format!("{}-data", h.name(&ws));
    let mounts = container.mounts.expect("mounts");
    assert!(
        mounts.iter().any(|mount| mount.typ.as_deref() == Some("volume")
            && mount.name.as_deref() == Some(volume.as_str())
            && mount.destination.as_deref() == Some("/data")),
        "{mounts:?}"
    );
    let volume_labels = h.docker.inspect_volume(&volume).await.expect("volume").labels;
    assert_eq!(volume_labels[labels::MESH_ID], h.mesh_id);
    assert_eq!(volume_labels[labels::WORKSPACE_ID], ws);

    let Probe::Running(running) = h.runtime.probe(&ws).await else { panic!("not running") };
    assert_eq!(running.workload_id, info.workload_id);
    assert!(running.started_at.is_some() && running.exit_code.is_none());

    // Starting a running workload again is a no-op.
    let again = h.runtime.start(&spec).await.expect("start again");
    assert_eq!(again.workload_id, info.workload_id);

    let listed = h.runtime.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].workspace_id, ws);
    assert_eq!(listed[0].name, h.name(&ws));
    assert!(listed[0].running);

    let greeting = h.runtime.exec(&ws, &strings(&["/sleeper", "env", "GREETING"]), PATIENCE).await.expect("exec");
    assert_eq!(String::from_utf8_lossy(&greeting.stdout), "hello world\n");
}

#[tokio::test]
async fn stop_keeps_the_volume_and_purge_removes_it() {
    let h = Harness::new().await;
    let ws = workspace();
    h.runtime.start(&spec(&ws, &[])).await.expect("start");
    let volume = format!("{}-data", h.name(&ws));
    let wrote = h.runtime.exec(&ws, &strings(&["/sleeper", "write", "/data/marker", "kept"]), PATIENCE).await;
    assert_eq!(wrote.expect("write").exit_code, 0);

    let refused = h.runtime.purge(&ws).await;
    assert!(matches!(refused, Err(RuntimeError::Workload(_))), "{refused:?}");
    assert!(h.volume_exists(&volume).await);

    // The init process passes SIGTERM on, so the sleeper dies well within the grace.
    let began = Instant::now();
    assert_eq!(h.runtime.stop(&ws, Duration::from_secs(20)).await.expect("stop"), StopOutcome::Stopped);
    let took = began.elapsed();
    eprintln!("stop took {took:?}");
    assert!(took < Duration::from_secs(10), "stop took {took:?}");
    assert!(!h.exists(&h.name(&ws)).await);
    assert!(h.volume_exists(&volume).await);
    assert_eq!(h.runtime.probe(&ws).await, Probe::Absent);
    assert_eq!(h.runtime.stop(&ws, Duration::from_secs(1)).await.expect("stop again"), StopOutcome::AlreadyGone);

    // The data outlives the container.
    h.runtime.start(&spec(&ws, &[])).await.expect("restart");
    let read = h.runtime.exec(&ws, &strings(&["/sleeper", "cat", "/data/marker"]), PATIENCE).await.expect("cat");
    assert_eq!(String::from_utf8_lossy(&read.stdout), "kept");
    assert_eq!(h.runtime.stop(&ws, Duration::ZERO).await.expect("stop"), StopOutcome::Stopped);

    h.runtime.purge(&ws).await.expect("purge");
    assert!(!h.volume_exists(&volume).await);
    h.runtime.purge(&ws).await.expect("purging twice is fine");
}

#[tokio::test]
async fn exits_are_probed_with_their_code_after_an_event() {
    let h = Harness::new().await;
    let mut events = h.runtime.watch().await.expect("watch");
    let ws = workspace();

    let mut failing = spec(&ws, &["exit", "3", "200"]);
    // An explicit command replaces the image's entrypoint.
    failing.command = "/sleeper".to_owned();
    let first = h.runtime.start(&failing).await.expect("start");
    let exited = h.await_probe(&mut events, &ws, |probe| matches!(probe, Probe::Exited(_))).await;
    let Probe::Exited(info) = exited else { unreachable!() };
    assert_eq!(info.workload_id, first.workload_id);
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(info.detail, "exited (3)");
    assert!(info.finished_at.is_some() && info.started_at.is_some());
    assert!(!h.runtime.list().await.expect("list")[0].running);

    // Starting again replaces the exited container.
    let second = h.runtime.start(&spec(&ws, &["exit", "0", "200"])).await.expect("start again");
    assert_ne!(second.workload_id, first.workload_id);
    let exited = h
        .await_probe(
            &mut events,
            &ws,
            |probe| matches!(probe, Probe::Exited(info) if info.workload_id == second.workload_id),
        )
        .await;
    let Probe::Exited(info) = exited else { unreachable!() };
    assert_eq!(info.exit_code, Some(0));
    assert_eq!(info.detail, "exited (0)");
}

#[tokio::test]
async fn outside_kill_and_removal_are_seen() {
    let h = Harness::new().await;
    let mut events = h.runtime.watch().await.expect("watch");
    let ws = workspace();
    h.runtime.start(&spec(&ws, &[])).await.expect("start");

    h.docker
        .kill_container(&h.name(&ws), Some(KillContainerOptions { signal: "SIGKILL".to_owned() }))
        .await
        .expect("kill");
    let killed = h.await_probe(&mut events, &ws, |probe| matches!(probe, Probe::Exited(_))).await;
    let Probe::Exited(info) = killed else { unreachable!() };
    assert_eq!(info.exit_code, Some(137));
    assert_eq!(info.detail, "exited (137)");

    h.docker
        .remove_container(&h.name(&ws), Some(RemoveContainerOptions { force: true, ..Default::default() }))
        .await
        .expect("rm -f");
    h.await_probe(&mut events, &ws, |probe| *probe == Probe::Absent).await;
    assert_eq!(h.runtime.stop(&ws, Duration::from_secs(1)).await.expect("stop"), StopOutcome::AlreadyGone);
}

#[tokio::test]
async fn list_and_probe_ignore_what_is_not_ours() {
    let h = Harness::new().await;
    let ours = workspace();
    h.runtime.start(&spec(&ours, &[])).await.expect("start");
    let our_labels = |workspace_id: &str| {
        HashMap::from([
            (labels::MESH_ID.to_owned(), h.mesh_id.clone()),
            (labels::RUNTIME_INSTANCE.to_owned(), h.runtime.identity().instance_label()),
            (labels::WORKSPACE_ID.to_owned(), workspace_id.to_owned()),
        ])
    };
    let create = |name: String, labels: Option<HashMap<String, String>>| {
        let docker = h.docker.clone();
        async move {
            let body = ContainerCreateBody { image: Some(IMAGE.to_owned()), labels, ..Default::default() };
            let options = CreateContainerOptions { name: Some(name), ..Default::default() };
            docker.create_container(Some(options), body).await.expect("create");
        }
    };
    // Our labels, but a name that is not a workload name of ours.
    let odd = workspace();
    create(format!("am-{}-not-a-uuid", h.mesh_id), Some(our_labels(&odd))).await;
    // A workload name, but a workspace label that disagrees with it.
    let mismatched = workspace();
    create(h.name(&mismatched), Some(our_labels(&workspace()))).await;
    // A workload name without any labels.
    let unlabelled = workspace();
    create(h.name(&unlabelled), None).await;

    let listed = h.runtime.list().await.expect("list");
    assert_eq!(listed.iter().map(|workload| workload.workspace_id.as_str()).collect::<Vec<_>>(), vec![ours.as_str()]);

    for foreign in [&mismatched, &unlabelled] {
        let probe = h.runtime.probe(foreign).await;
        assert!(matches!(probe, Probe::Unknown(_)), "{probe:?}");
        let start = h.runtime.start(&spec(foreign, &[])).await;
        assert!(matches!(start, Err(RuntimeError::Workload(_))), "{start:?}");
        let stop = h.runtime.stop(foreign, Duration::ZERO).await;
        assert!(matches!(stop, Err(RuntimeError::Workload(_))), "{stop:?}");
        assert!(h.exists(&h.name(foreign)).await, "a foreign container was touched");
    }
}

#[tokio::test]
async fn logs_keep_streams_apart_and_follow_until_exit() {
    let h = Harness::new().await;
    let mut events = h.runtime.watch().await.expect("watch");
    let ws = workspace();
    h.runtime.start(&spec(&ws, &["exit", "0", "100"])).await.expect("start");
    h.await_probe(&mut events, &ws, |probe| matches!(probe, Probe::Exited(_))).await;

    let request = LogRequest { tail_lines: 10, since: None, follow: false };
    let lines: Vec<_> =
        h.runtime.logs(&ws, request).await.expect("logs").map(|line| line.expect("line")).collect().await;
    let mut seen: Vec<_> = lines.iter().map(|line| (line.stream, line.text.as_str())).collect();
    seen.sort_by_key(|(_, text)| *text);
    assert_eq!(
        seen,
        vec![
            (LogStream::Stdout, "exiting with 0"),
            (LogStream::Stdout, "sleeper started"),
            (LogStream::Stderr, "sleeper stderr says hello"),
        ]
    );
    assert!(lines.iter().all(|line| line.time.is_some()), "{lines:?}");

    let request = LogRequest { tail_lines: 1, since: None, follow: false };
    let tail: Vec<_> = h.runtime.logs(&ws, request).await.expect("logs").collect().await;
    assert_eq!(tail.len(), 1, "{tail:?}");

    let later = lines.iter().filter_map(|line| line.time).max().expect("a time") + Duration::from_secs(1);
    let request = LogRequest { tail_lines: 10, since: Some(later), follow: false };
    assert_eq!(h.runtime.logs(&ws, request).await.expect("logs").count().await, 0);

    // Following a running workload: the lines so far, then the end when it stops.
    let follower = workspace();
    h.runtime.start(&spec(&follower, &[])).await.expect("start");
    let request = LogRequest { tail_lines: 100, since: None, follow: true };
    let mut followed = h.runtime.logs(&follower, request).await.expect("logs");
    for _ in 0..2 {
        let line = tokio::time::timeout(PATIENCE, followed.next()).await.expect("a line in time").expect("open");
        line.expect("line");
    }
    h.runtime.stop(&follower, Duration::ZERO).await.expect("stop");
    let end = tokio::time::timeout(PATIENCE, followed.next()).await.expect("the stream ends in time");
    assert!(end.is_none(), "{end:?}");

    let gone = h.runtime.logs(&follower, LogRequest { tail_lines: 1, since: None, follow: false }).await;
    assert!(matches!(gone, Err(RuntimeError::NoWorkload(_))), "{:?}", gone.err());
}

#[tokio::test]
async fn exec_runs_commands_in_the_running_workload() {
    let h = Harness::new().await;
    let ws = workspace();
    h.runtime.start(&spec(&ws, &[])).await.expect("start");

    let began = Instant::now();
    let echoed = h.runtime.exec(&ws, &strings(&["/sleeper", "echo", "hi", "there"]), PATIENCE).await.expect("exec");
    eprintln!("exec took {:?}", began.elapsed());
    assert_eq!(echoed.exit_code, 0);
    assert_eq!(String::from_utf8_lossy(&echoed.stdout), "hi there\n");
    assert_eq!(String::from_utf8_lossy(&echoed.stderr), "err: hi there\n");

    let failed = h.runtime.exec(&ws, &strings(&["/sleeper", "exit", "5", "0"]), PATIENCE).await.expect("exec");
    assert_eq!(failed.exit_code, 5);

    let missing = h.runtime.exec(&ws, &strings(&["/no-such-binary"]), PATIENCE).await;
    assert!(
        matches!(&missing, Ok(output) if output.exit_code != 0) || matches!(missing, Err(RuntimeError::Workload(_)))
    );

    let timeout = Duration::from_millis(500);
    let hung = h.runtime.exec(&ws, &strings(&["/sleeper"]), timeout).await;
    assert!(matches!(hung, Err(RuntimeError::TimedOut(t)) if t == timeout), "{hung:?}");

    let absent = h.runtime.exec(&workspace(), &strings(&["/sleeper", "echo"]), PATIENCE).await;
    assert!(matches!(absent, Err(RuntimeError::NoWorkload(_))), "{absent:?}");

    let mut events = h.runtime.watch().await.expect("watch");
    let exiting = workspace();
    h.runtime.start(&spec(&exiting, &["exit", "0", "0"])).await.expect("start");
    h.await_probe(&mut events, &exiting, |probe| matches!(probe, Probe::Exited(_))).await;
    let exited = h.runtime.exec(&exiting, &strings(&["/sleeper", "echo"]), PATIENCE).await;
    assert!(matches!(exited, Err(RuntimeError::NoWorkload(_))), "{exited:?}");
}

#[tokio::test]
async fn a_missing_image_is_a_workload_error() {
    let h = Harness::new().await;
    let ws = workspace();
    let mut spec = spec(&ws, &[]);
    spec.image = "agentmesh-test/no-such-image:dev".to_owned();
    let err = h.runtime.start(&spec).await.expect_err("start");
    let RuntimeError::Workload(message) = err else { panic!("{err:?}") };
    assert!(message.contains("agentmesh-test/no-such-image:dev not found on the engine"), "{message}");
    assert!(!h.exists(&h.name(&ws)).await);
    assert_eq!(h.runtime.probe(&ws).await, Probe::Absent);
}

#[tokio::test]
async fn engine_info_names_docker_and_its_api_on_any_client() {
    let h = Harness::new().await;
    let info = h.runtime.engine_info().await.expect("engine info");
    assert!(info.version.starts_with("Docker ") && info.version.contains("(API 1."), "{}", info.version);

    // A client that speaks bollard's newer default API still works: the runtime negotiates.
    let client = Docker::connect_with_local_defaults().expect("docker client");
    let wrapped = DockerRuntime::new(client, h.runtime.identity().clone(), DockerSettings::default());
    assert_eq!(wrapped.engine_info().await.expect("engine info"), info);
    assert_eq!(wrapped.probe(&workspace()).await, Probe::Absent);
}

#[tokio::test]
async fn an_unreachable_engine_is_unknown_or_unavailable() {
    let identity = Identity { mesh_id: "test-unreachable".to_owned(), instance: "docker:test".to_owned() };
    let settings = DockerSettings { request_timeout: Duration::from_secs(2), ..Default::default() };
    for endpoint in ["unix:///nonexistent.sock", "tcp://127.0.0.1:1"] {
        let runtime = DockerRuntime::connect(endpoint, identity.clone(), settings.clone()).expect("connect");
        let ws = workspace();
        let probe = runtime.probe(&ws).await;
        assert!(matches!(probe, Probe::Unknown(_)), "{endpoint}: {probe:?}");
        let start = runtime.start(&spec(&ws, &[])).await;
        assert!(matches!(start, Err(RuntimeError::Unavailable(_))), "{endpoint}: {start:?}");
        let stop = runtime.stop(&ws, Duration::ZERO).await;
        assert!(matches!(stop, Err(RuntimeError::Unavailable(_))), "{endpoint}: {stop:?}");
        let list = runtime.list().await;
        assert!(matches!(list, Err(RuntimeError::Unavailable(_))), "{endpoint}: {list:?}");
        assert!(matches!(runtime.purge(&ws).await, Err(RuntimeError::Unavailable(_))));
        assert!(matches!(runtime.engine_info().await, Err(RuntimeError::Unavailable(_))));
        assert!(runtime.watch().await.is_err());
    }
    let unsupported = DockerRuntime::connect("ftp://engine", identity, settings);
    assert!(matches!(unsupported, Err(RuntimeError::NotSupported { .. })));
}

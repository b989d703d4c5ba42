//! The process runtime against real processes: /bin/sh scripts stand in for
//! agents. Each test has its own mesh id, so the parallel tests' workloads
//! never show up in one another's listings.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    process::{Child as StdChild, Command as StdCommand},
    time::{Duration, Instant},
};

use agentmesh_provisioner::runtime::{
    Identity, LogLine, LogRequest, LogStream, Probe, Runtime, RuntimeError, RuntimeKind, StopOutcome, WorkloadEvent,
    WorkloadInfo, WorkloadSpec,
    process::{MESH_ID_ENV, ProcessRuntime, RUNTIME_INSTANCE_ENV, WORKSPACE_ID_ENV},
};
use futures::{StreamExt, TryStreamExt, stream::BoxStream};
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tempfile::TempDir;
use tokio::time::timeout;

const INSTANCE: &str = "process:local";
/// Generous: these only bound a test that would otherwise hang.
const PATIENCE: Duration = Duration::from_secs(10);
const GRACE: Duration = Duration::from_secs(5);

struct Fixture {
    state: TempDir,
    identity: Identity,
    runtime: ProcessRuntime,
}

impl Fixture {
    fn new() -> Self {
        let state = tempfile::tempdir().expect("state dir");
        let mesh_id = format!("test-{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let identity = Identity { mesh_id, instance: INSTANCE.to_owned() };
        let runtime = ProcessRuntime::new(identity.clone(), state.path().to_owned());
        Self { state, identity, runtime }
    }

    /// Another runtime on the same state, as a restarted provisioner would be.
    fn restarted(&self) -> ProcessRuntime {
        ProcessRuntime::new(self.identity.clone(), self.state.path().to_owned())
    }

    fn workspace_dir(&self, workspace_id: &str) -> PathBuf {
        self.state.path().join(workspace_id)
    }

    async fn start(&self, workspace_id: &str, script: &str) -> i32 {
        let info = self.runtime.start(&shell(workspace_id, script)).await.expect("start");
        pid(&info)
    }

    async fn probe_exit(&self, workspace_id: &str) -> WorkloadInfo {
        match self.runtime.probe(workspace_id).await {
            Probe::Exited(info) => info,
            other => panic!("expected an exited workload, got {other:?}"),
        }
    }
}

fn workspace() -> String {
    uuid::Uuid::new_v4().to_string()
}

fn shell(workspace_id: &str, script: &str) -> WorkloadSpec {
    WorkloadSpec {
        workspace_id: workspace_id.to_owned(),
        workspace_name: "test".to_owned(),
        image: String::new(),
        command: "/bin/sh".to_owned(),
        args: vec!["-c".to_owned(), script.to_owned()],
        env: BTreeMap::from([
            (WORKSPACE_ID_ENV.to_owned(), workspace_id.to_owned()),
            ("GREETING".to_owned(), "hello".to_owned()),
        ]),
        limits: Default::default(),
    }
}

fn pid(info: &WorkloadInfo) -> i32 {
    info.workload_id.parse().expect("a pid as workload id")
}

fn environ(pid: i32) -> BTreeMap<String, String> {
    let bytes = std::fs::read(format!("/proc/{pid}/environ")).expect("environ");
    String::from_utf8_lossy(&bytes)
        .split('\0')
        .filter_map(|entry| entry.split_once('='))
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect()
}

/// Whether the process is alive and not a zombie waiting to be reaped.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| stat.rsplit_once(')').is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z')))
}

async fn next_event(events: &mut BoxStream<'static, WorkloadEvent>, workspace_id: &str) {
    timeout(PATIENCE, async {
        while let Some(event) = events.next().await {
            if event.workspace_id == workspace_id {
                return;
            }
        }
        panic!("the event stream ended");
    })
    .await
    .expect("an event in time");
}

/// Waits until the workload has written `text` to stdout, e.g. once its
/// traps are set, following its output as GetLogs does.
async fn wait_for_output(runtime: &ProcessRuntime, workspace_id: &str, text: &str) {
    let request = LogRequest { tail_lines: 1000, since: None, follow: true };
    let mut lines = runtime.logs(workspace_id, request).await.expect("logs");
    let seen = timeout(PATIENCE, async {
        while let Some(line) = lines.next().await {
            if line.expect("log line").text.contains(text) {
                return true;
            }
        }
        false
    });
    assert!(seen.await.unwrap_or(false), "{text:?} never appeared in the output of {workspace_id}");
}

async fn collect_logs(runtime: &ProcessRuntime, workspace_id: &str, request: LogRequest) -> Vec<LogLine> {
    let lines = runtime.logs(workspace_id, request).await.expect("logs");
    timeout(PATIENCE, lines.try_collect()).await.expect("logs end in time").expect("log lines")
}

fn texts(lines: &[LogLine], stream: LogStream) -> Vec<&str> {
    lines.iter().filter(|line| line.stream == stream).map(|line| line.text.as_str()).collect()
}

/// A `sleep` outside the runtime, with the given environment only.
fn foreign_sleep(env: &[(&str, &str)]) -> StdChild {
    StdCommand::new("/bin/sleep")
        .arg("30")
        .env_clear()
        .envs(env.iter().copied())
        .spawn()
        .expect("spawn a foreign process")
}

#[tokio::test]
async fn start_runs_the_command_in_its_data_dir_with_the_marks() {
    let fx = Fixture::new();
    let id = workspace();
    assert_eq!(fx.runtime.kind(), RuntimeKind::Process);

    let info = fx.runtime.start(&shell(&id, "echo started; exec sleep 30")).await.expect("start");
    let pid = pid(&info);
    assert!(info.started_at.is_some());
    wait_for_output(&fx.runtime, &id, "started").await;

    let Probe::Running(probed) = fx.runtime.probe(&id).await else { panic!("expected running") };
    assert_eq!(probed.workload_id, info.workload_id);

    let env = environ(pid);
    assert_eq!(env.get(MESH_ID_ENV), Some(&fx.identity.mesh_id));
    assert_eq!(env.get(RUNTIME_INSTANCE_ENV).map(String::as_str), Some(INSTANCE));
    assert_eq!(env.get(WORKSPACE_ID_ENV), Some(&id));
    assert_eq!(env.get("GREETING").map(String::as_str), Some("hello"));
    assert!(env.contains_key("PATH"), "PATH comes from the provisioner");
    let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).expect("cwd");
    assert_eq!(cwd, fx.workspace_dir(&id).join("data").canonicalize().expect("data dir"));

    // A second start while it runs is the same run, not a second process.
    let again = fx.runtime.start(&shell(&id, "exec sleep 30")).await.expect("start again");
    assert_eq!(again.workload_id, info.workload_id);

    assert_eq!(fx.runtime.stop(&id, GRACE).await.expect("stop"), StopOutcome::Stopped);
}

#[tokio::test]
async fn exits_are_recorded_and_announced() {
    let fx = Fixture::new();
    let id = workspace();
    let mut events = fx.runtime.watch().await.expect("watch");

    fx.start(&id, "echo kept > marker; exit 0").await;
    next_event(&mut events, &id).await;
    let info = fx.probe_exit(&id).await;
    assert_eq!(info.exit_code, Some(0));
    assert!(info.finished_at.is_some());

    // A start replaces the exited run; data/ is kept across starts.
    fx.start(&id, "test -f marker && exit 3").await;
    next_event(&mut events, &id).await;
    let info = fx.probe_exit(&id).await;
    assert_eq!(info.exit_code, Some(3));
    assert_eq!(info.detail, "exited (3)");

    // Stopping an exited run removes it.
    assert_eq!(fx.runtime.stop(&id, GRACE).await.expect("stop"), StopOutcome::Stopped);
    assert_eq!(fx.runtime.probe(&id).await, Probe::Absent);
}

#[tokio::test]
async fn a_kill_from_outside_is_an_exit_by_signal() {
    let fx = Fixture::new();
    let id = workspace();
    let mut events = fx.runtime.watch().await.expect("watch");
    let pid = fx.start(&id, "sleep 30 & wait").await;

    kill(Pid::from_raw(pid), Signal::SIGKILL).expect("kill -9");
    next_event(&mut events, &id).await;
    assert_eq!(fx.probe_exit(&id).await.exit_code, Some(137));
    // What the main process left behind goes with it, as in a container.
    let stragglers = fx.runtime.list().await.expect("list");
    assert!(stragglers.iter().all(|workload| !workload.running), "{stragglers:?}");
}

#[tokio::test]
async fn stop_ends_the_run_and_a_second_stop_finds_nothing() {
    let fx = Fixture::new();
    let id = workspace();
    let pid = fx.start(&id, "echo out; exec sleep 30").await;
    wait_for_output(&fx.runtime, &id, "out").await;

    assert_eq!(fx.runtime.stop(&id, GRACE).await.expect("stop"), StopOutcome::Stopped);
    assert!(!alive(pid));
    assert_eq!(fx.runtime.probe(&id).await, Probe::Absent);
    assert_eq!(fx.runtime.stop(&id, GRACE).await.expect("stop again"), StopOutcome::AlreadyGone);
    // The volume and the logs stay.
    assert!(fx.workspace_dir(&id).join("data").is_dir());
    assert!(std::fs::read_to_string(fx.workspace_dir(&id).join("stdout.log")).expect("log").contains("out"));
    // Never started at all.
    assert_eq!(fx.runtime.stop(&workspace(), GRACE).await.expect("stop"), StopOutcome::AlreadyGone);
}

#[tokio::test]
async fn stop_kills_what_ignores_sigterm_after_the_grace_period() {
    let fx = Fixture::new();
    let id = workspace();
    let pid = fx.start(&id, "trap '' TERM; echo ready; sleep 30").await;
    wait_for_output(&fx.runtime, &id, "ready").await;

    let grace = Duration::from_millis(500);
    let began = Instant::now();
    assert_eq!(fx.runtime.stop(&id, grace).await.expect("stop"), StopOutcome::Stopped);
    assert!(began.elapsed() >= grace, "killed before the grace period ran out");
    assert!(!alive(pid));
    assert_eq!(fx.runtime.probe(&id).await, Probe::Absent);
}

#[tokio::test]
async fn purge_waits_for_the_workload_to_be_gone() {
    let fx = Fixture::new();
    let id = workspace();
    fx.start(&id, "exec sleep 30").await;

    let refused = fx.runtime.purge(&id).await.expect_err("purge while running");
    assert!(matches!(refused, RuntimeError::Workload(_)), "{refused:?}");
    assert!(fx.workspace_dir(&id).join("data").is_dir());

    fx.runtime.stop(&id, GRACE).await.expect("stop");
    fx.runtime.purge(&id).await.expect("purge");
    assert!(!fx.workspace_dir(&id).exists());
    assert_eq!(fx.runtime.probe(&id).await, Probe::Absent);
    fx.runtime.purge(&id).await.expect("purge again");
    assert!(matches!(
        fx.runtime.logs(&id, LogRequest { tail_lines: 10, since: None, follow: false }).await,
        Err(RuntimeError::NoWorkload(_))
    ));
}

#[tokio::test]
async fn a_restarted_provisioner_recognises_its_workloads() {
    let fx = Fixture::new();
    let (stopped, killed) = (workspace(), workspace());
    // Started by a provisioner that then goes away: its reapers end with its
    // tokio runtime, and the children live on.
    let first = fx.restarted();
    let specs = [shell(&stopped, "exec sleep 30"), shell(&killed, "exec sleep 30")];
    let pids = std::thread::spawn(move || {
        let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio");
        tokio.block_on(async {
            let mut pids = Vec::new();
            for spec in &specs {
                pids.push(pid(&first.start(spec).await.expect("start")));
            }
            pids
        })
    })
    .join()
    .expect("first provisioner");

    let runtime = &fx.runtime;
    let mut listed = runtime.list().await.expect("list");
    listed.sort_by(|a, b| a.workspace_id.cmp(&b.workspace_id));
    let mut expected = [(&stopped, pids[0]), (&killed, pids[1])];
    expected.sort();
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (workload, (id, pid)) in listed.iter().zip(expected) {
        assert_eq!(&workload.workspace_id, id);
        assert_eq!(workload.workload_id, pid.to_string());
        assert_eq!(workload.name, fx.identity.workload_name(id));
        assert!(workload.running);
    }
    assert!(matches!(runtime.probe(&stopped).await, Probe::Running(_)));

    assert_eq!(runtime.stop(&stopped, GRACE).await.expect("stop"), StopOutcome::Stopped);
    assert!(!alive(pids[0]));
    assert_eq!(runtime.probe(&stopped).await, Probe::Absent);

    // Not our child: its death is seen by polling, its exit code by nobody.
    let mut events = runtime.watch().await.expect("watch");
    kill(Pid::from_raw(pids[1]), Signal::SIGKILL).expect("kill -9");
    next_event(&mut events, &killed).await;
    let info = fx.probe_exit(&killed).await;
    assert_eq!(info.exit_code, None);
    assert_eq!(info.detail, "exited while the provisioner was not watching");
    assert_eq!(runtime.stop(&killed, GRACE).await.expect("stop"), StopOutcome::Stopped);
    assert_eq!(runtime.probe(&killed).await, Probe::Absent);
}

#[tokio::test]
async fn list_and_stop_touch_only_processes_with_this_instances_marks() {
    let fx = Fixture::new();
    let ours = workspace();
    let pid = fx.start(&ours, "exec sleep 30").await;

    let theirs = workspace();
    let mesh = fx.identity.mesh_id.as_str();
    let mut strangers = [
        foreign_sleep(&[]),
        foreign_sleep(&[(MESH_ID_ENV, "another-mesh"), (RUNTIME_INSTANCE_ENV, INSTANCE), (WORKSPACE_ID_ENV, &theirs)]),
        foreign_sleep(&[(MESH_ID_ENV, mesh), (RUNTIME_INSTANCE_ENV, "process:other"), (WORKSPACE_ID_ENV, &theirs)]),
        foreign_sleep(&[(MESH_ID_ENV, mesh), (RUNTIME_INSTANCE_ENV, INSTANCE), (WORKSPACE_ID_ENV, "not-a-uuid")]),
    ];

    let listed = fx.runtime.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].workspace_id, ours);
    assert_eq!(listed[0].workload_id, pid.to_string());
    assert_eq!(fx.runtime.probe(&theirs).await, Probe::Absent);
    assert_eq!(fx.runtime.stop(&theirs, GRACE).await.expect("stop"), StopOutcome::AlreadyGone);

    for stranger in &mut strangers {
        assert!(stranger.try_wait().expect("try_wait").is_none(), "a stranger was touched");
        stranger.kill().expect("kill stranger");
        stranger.wait().expect("reap stranger");
    }
    fx.runtime.stop(&ours, GRACE).await.expect("stop");
}

#[tokio::test]
async fn logs_tail_the_output_files() {
    let fx = Fixture::new();
    let id = workspace();
    let mut events = fx.runtime.watch().await.expect("watch");
    fx.start(&id, "printf 'one\\ntwo\\nthree\\n'; echo oops >&2; printf 'no newline'").await;
    next_event(&mut events, &id).await;

    let lines = collect_logs(&fx.runtime, &id, LogRequest { tail_lines: 2, since: None, follow: false }).await;
    assert_eq!(texts(&lines, LogStream::Stdout), ["three", "no newline"]);
    assert_eq!(texts(&lines, LogStream::Stderr), ["oops"]);
    assert!(lines.iter().all(|line| line.time.is_none()));
    // stdout before stderr: interleaving is not recorded.
    assert_eq!(lines.last().map(|line| line.stream), Some(LogStream::Stderr));

    // Following an exited workload gives the tail and ends.
    let lines = collect_logs(&fx.runtime, &id, LogRequest { tail_lines: 100, since: None, follow: true }).await;
    assert_eq!(texts(&lines, LogStream::Stdout), ["one", "two", "three", "no newline"]);
}

#[tokio::test]
async fn logs_follow_until_the_workload_exits() {
    let fx = Fixture::new();
    let id = workspace();
    fx.start(&id, "echo a; sleep 0.5; echo b >&2; sleep 0.5; printf c; sleep 0.3; echo d").await;

    let lines = collect_logs(&fx.runtime, &id, LogRequest { tail_lines: 100, since: None, follow: true }).await;
    assert_eq!(texts(&lines, LogStream::Stdout), ["a", "cd"]);
    assert_eq!(texts(&lines, LogStream::Stderr), ["b"]);
    assert!(matches!(fx.runtime.probe(&id).await, Probe::Exited(_)));
}

#[tokio::test]
async fn a_program_that_cannot_start_is_a_workload_error() {
    let fx = Fixture::new();
    let id = workspace();
    let mut spec = shell(&id, "");
    spec.command = "/nonexistent/agent".to_owned();
    spec.args.clear();

    let err = fx.runtime.start(&spec).await.expect_err("start a missing program");
    let RuntimeError::Workload(message) = err else { panic!("expected a workload error, got {err:?}") };
    assert!(message.contains("/nonexistent/agent"), "{message}");
    assert_eq!(fx.runtime.probe(&id).await, Probe::Absent);

    let bad_id = shell("../escape", "exit 0");
    assert!(matches!(fx.runtime.start(&bad_id).await, Err(RuntimeError::Workload(_))));
    assert_eq!(fx.runtime.probe("../escape").await, Probe::Absent);
}

#[tokio::test]
async fn exec_is_not_supported_and_the_engine_names_the_host() {
    let fx = Fixture::new();
    let err = fx.runtime.exec(&workspace(), &["true".to_owned()], GRACE).await.expect_err("exec");
    let RuntimeError::NotSupported { message, hint } = err else { panic!("expected NotSupported, got {err:?}") };
    assert_eq!(message, "exec is not supported for process workloads");
    assert_eq!(hint, "run the command on the provisioner's host");

    let version = fx.runtime.engine_info().await.expect("engine info").version;
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").expect("hostname");
    assert!(version.starts_with(&format!("process runtime on {} (linux ", host.trim())), "{version}");
}

//! The Kubernetes runtime where a real API server without a kubelet cannot
//! take it (tests/kubernetes_runtime.rs has the rest, on a real server): an
//! API server that answers 500, hangs, drops the connection, rate-limits or
//! breaks a watch, and the kubelet's own logs and exec. kube's client talks
//! to a stateful fake through a tower-test mock.

#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::{collections::BTreeMap, time::Duration};

use agentmesh_provisioner::runtime::{
    Identity, LogRequest, Probe, ResourceLimits, Runtime, RuntimeError, WorkloadEvent, WorkloadSpec,
    kubernetes::{KubernetesRuntime, KubernetesSettings},
};
use fake_kube::{ExecReply, Failure, FakeKube};
use futures::{StreamExt, stream::BoxStream};

const NAMESPACE: &str = "agents";
const WORKSPACE: &str = "3f1c2a9e-8d4b-4c7a-9e21-5b6d7f8a9c0d";
const OTHER_WORKSPACE: &str = "7a0e9d4c-1b2f-4e3a-8c5d-6f7e8a9b0c1d";

fn identity() -> Identity {
    // ":" is not allowed in a label value, so the instance label is a hash.
    Identity { mesh_id: "test-mesh".to_owned(), instance: "kubernetes:kind".to_owned() }
}

struct Fixture {
    fake: FakeKube,
    runtime: KubernetesRuntime,
    pod: String,
}

fn fixture_with(settings: KubernetesSettings) -> Fixture {
    let fake = FakeKube::new(NAMESPACE, &identity());
    let runtime = KubernetesRuntime::new(fake.client(), NAMESPACE.to_owned(), identity(), settings);
    Fixture { pod: fake.pod_name(WORKSPACE), fake, runtime }
}

fn settings() -> KubernetesSettings {
    KubernetesSettings {
        api_timeout: Duration::from_secs(1),
        deletion_timeout: Duration::from_secs(2),
        ..KubernetesSettings::default()
    }
}

fn fixture() -> Fixture {
    fixture_with(settings())
}

fn spec(workspace_id: &str) -> WorkloadSpec {
    WorkloadSpec {
        workspace_id: workspace_id.to_owned(),
        workspace_name: "research bot".to_owned(),
        image: "agentmesh/echo:dev".to_owned(),
        command: String::new(),
        args: vec!["--listen".to_owned(), "0.0.0.0:8080".to_owned()],
        env: BTreeMap::from([
            ("AGENTMESH_WORKSPACE_ID".to_owned(), workspace_id.to_owned()),
            ("AGENTMESH_REGISTRY_ADDR".to_owned(), "http://registry:7000".to_owned()),
        ]),
        limits: ResourceLimits { cpu_millis: 500, memory_bytes: 256 * 1024 * 1024, pids_limit: 64 },
    }
}

impl Fixture {
    async fn start_running(&self) {
        self.runtime.start(&spec(WORKSPACE)).await.expect("start");
        self.fake.wait_until("the pod runs", |f| f.phase(&self.pod).as_deref() == Some("Running")).await;
    }
}

async fn next_event(events: &mut BoxStream<'static, WorkloadEvent>) -> Option<WorkloadEvent> {
    tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an event in time")
}

#[tokio::test]
async fn engine_errors_are_unknown_never_absent_or_exited() {
    let f = fixture();
    for failure in [Failure::ServerError, Failure::Hang, Failure::Disconnect, Failure::Plain(404), Failure::Plain(502)]
    {
        f.fake.fail_next(1, failure.clone());
        let probe = f.runtime.probe(WORKSPACE).await;
        assert!(matches!(probe, Probe::Unknown(_)), "{failure:?} gave {probe:?}");
    }
    f.start_running().await;
    f.fake.fail_next(1, Failure::Hang);
    let started = tokio::time::Instant::now();
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Unknown(_)));
    assert!(started.elapsed() < Duration::from_secs(2), "each API call is bounded");
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Running(_)));

    f.fake.fail_next(1, Failure::ServerError);
    assert!(matches!(f.runtime.list().await, Err(RuntimeError::Unavailable(_))));
    f.fake.fail_next(1, Failure::ServerError);
    assert!(matches!(f.runtime.stop(WORKSPACE, Duration::ZERO).await, Err(RuntimeError::Unavailable(_))));
    f.fake.fail_next(1, Failure::Plain(404));
    let stop = f.runtime.stop(WORKSPACE, Duration::ZERO).await;
    assert!(matches!(stop, Err(RuntimeError::Unavailable(_))), "a proxy's 404 is not \"already gone\": {stop:?}");
    assert!(f.fake.pod(&f.pod).is_some());
    f.fake.fail_next(1, Failure::Disconnect);
    assert!(matches!(f.runtime.watch().await, Err(RuntimeError::Unavailable(_))));
    f.fake.assert_clean();
}

#[tokio::test]
async fn logs_tail_with_timestamps_and_follow_until_the_container_ends() {
    let f = fixture();
    f.start_running().await;
    for line in ["one", "two", "three"] {
        f.fake.write_log(&f.pod, line);
    }
    let request = LogRequest { tail_lines: 2, since: None, follow: false };
    let lines: Vec<_> = f.runtime.logs(WORKSPACE, request).await.expect("logs").collect().await;
    let lines: Vec<_> = lines.into_iter().map(|l| l.expect("line")).collect();
    assert_eq!(lines.iter().map(|l| l.text.as_str()).collect::<Vec<_>>(), ["two", "three"]);
    assert!(lines.iter().all(|l| l.time.is_some()));
    let logs = f.fake.requests().into_iter().find(|r| r.path.ends_with("/log")).expect("a log request");
    assert_eq!(logs.param("tailLines"), Some("2"));
    assert_eq!(logs.param("container"), Some("workload"));

    let since = std::time::SystemTime::now() + Duration::from_secs(3600);
    let request = LogRequest { tail_lines: 100, since: Some(since), follow: false };
    assert_eq!(f.runtime.logs(WORKSPACE, request).await.expect("logs").count().await, 0);

    let request = LogRequest { tail_lines: 0, since: None, follow: true };
    let mut stream = f.runtime.logs(WORKSPACE, request).await.expect("follow");
    f.fake.write_log(&f.pod, "four");
    let next = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("a line in time");
    assert_eq!(next.expect("line").expect("ok").text, "four");
    f.fake.terminate(&f.pod, 0);
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next()).await.expect("the end in time");
    assert!(end.is_none(), "following ends with the container");

    assert!(matches!(
        f.runtime.logs(OTHER_WORKSPACE, request).await.err(),
        Some(RuntimeError::NoWorkload(id)) if id == OTHER_WORKSPACE
    ));
    f.fake.assert_clean();
}

#[tokio::test]
async fn exec_runs_over_the_websocket_channel_protocol() {
    let f = fixture();
    let command = |words: &[&str]| words.iter().map(|w| (*w).to_owned()).collect::<Vec<_>>();
    let timeout = Duration::from_secs(5);
    assert!(matches!(f.runtime.exec(WORKSPACE, &command(&["true"]), timeout).await, Err(RuntimeError::NoWorkload(_))));
    f.start_running().await;

    let output = f.runtime.exec(WORKSPACE, &command(&["echo", "hello", "mesh"]), timeout).await.expect("echo");
    assert_eq!((output.exit_code, output.stdout.as_slice()), (0, &b"hello mesh\n"[..]));
    let output = f.runtime.exec(WORKSPACE, &command(&["printenv", "AGENTMESH_WORKSPACE_ID"]), timeout).await;
    assert_eq!(output.expect("printenv").stdout, format!("{WORKSPACE}\n").into_bytes());
    assert_eq!(f.runtime.exec(WORKSPACE, &command(&["false"]), timeout).await.expect("false").exit_code, 1);
    let missing = f.runtime.exec(WORKSPACE, &command(&["nope"]), timeout).await;
    assert!(matches!(missing, Err(RuntimeError::Workload(message)) if message.contains("not found")));
    let slow = f.runtime.exec(WORKSPACE, &command(&["sleep", "10"]), Duration::from_millis(200)).await;
    assert!(matches!(slow, Err(RuntimeError::TimedOut(_))), "{slow:?}");

    f.fake.on_exec(|call| ExecReply::exit(7, "out", &format!("{} says no", call.command[0])));
    let output = f.runtime.exec(WORKSPACE, &command(&["check"]), timeout).await.expect("custom");
    assert_eq!((output.exit_code, output.stdout, output.stderr), (7, b"out".to_vec(), b"check says no".to_vec()));
    let exec = f.fake.requests().into_iter().find(|r| r.path.ends_with("/exec")).expect("an exec request");
    assert_eq!(exec.param("container"), Some("workload"));

    f.fake.terminate(&f.pod, 0);
    assert!(matches!(f.runtime.exec(WORKSPACE, &command(&["true"]), timeout).await, Err(RuntimeError::Workload(_))));
    f.fake.assert_clean();
}
#[tokio::test]
async fn a_broken_watch_ends_the_stream_so_the_caller_watches_again() {
    let f = fixture();
    f.start_running().await;
    let mut events = f.runtime.watch().await.expect("watch");
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);
    f.fake.break_watches();
    assert!(next_event(&mut events).await.is_none(), "the stream ends with the watch");
    f.fake.assert_clean();
}

#[tokio::test]
async fn rate_limiting_is_unavailable_and_an_unanswered_version_too() {
    let f = fixture();
    f.fake.fail_next(1, Failure::Refused(429, "TooManyRequests"));
    assert!(matches!(f.runtime.list().await, Err(RuntimeError::Unavailable(_))));
    f.fake.fail_next(1, Failure::ServerError);
    assert!(matches!(f.runtime.engine_info().await, Err(RuntimeError::Unavailable(_))));
    f.fake.fail_next(1, Failure::Hang);
    assert!(matches!(f.runtime.engine_info().await, Err(RuntimeError::Unavailable(_))));
    f.fake.assert_clean();
}

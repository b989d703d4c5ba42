//! The Kubernetes runtime against the stateful fake API server (PRV-3, PRV-4,
//! PRV-5, PRV-9): every request it makes is checked by the fake.

#[path = "support/fake_kube.rs"]
mod fake_kube;

use std::{collections::BTreeMap, time::Duration};

use agentmesh_provisioner::runtime::{
    Identity, LogRequest, Probe, ResourceLimits, Runtime, RuntimeError, StopOutcome, WorkloadEvent, WorkloadSpec,
    kubernetes::{KubernetesRuntime, KubernetesSettings, WorkspaceVolume},
    labels,
};
use fake_kube::{ExecReply, Failure, FakeKube, running_pod};
use futures::{StreamExt, stream::BoxStream};
use http::Method;
use serde_json::json;

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

    fn requests(&self, method: Method, path_suffix: &str) -> usize {
        let path = format!("/api/v1/namespaces/{NAMESPACE}/{path_suffix}");
        self.fake.requests().iter().filter(|r| r.is(method.clone(), &path)).count()
    }
}

async fn next_event(events: &mut BoxStream<'static, WorkloadEvent>) -> Option<WorkloadEvent> {
    tokio::time::timeout(Duration::from_secs(5), events.next()).await.expect("an event in time")
}

fn exit_code(probe: &Probe) -> Option<i32> {
    match probe {
        Probe::Exited(info) => info.exit_code,
        other => panic!("expected an exit, got {other:?}"),
    }
}

#[tokio::test]
async fn start_creates_the_claim_then_a_labelled_pod() {
    let f = fixture();
    let info = f.runtime.start(&spec(WORKSPACE)).await.expect("start");
    assert_eq!(info.workload_id, f.pod);
    assert_eq!(info.exit_code, None);

    let pod = f.fake.pod(&f.pod).expect("pod");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels[labels::MESH_ID], "test-mesh");
    assert_eq!(labels[labels::RUNTIME_INSTANCE], identity().instance_label().as_str());
    assert_eq!(labels[labels::WORKSPACE_ID], WORKSPACE);
    assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    assert_eq!(pod["metadata"]["annotations"]["dev.agentmesh/workspace-name"], "research bot");
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    let container = &spec["containers"][0];
    assert_eq!(container["image"], "agentmesh/echo:dev");
    assert_eq!(container["imagePullPolicy"], "IfNotPresent");
    assert!(container["command"].is_null(), "an empty command keeps the image's entrypoint");
    assert_eq!(container["args"], json!(["--listen", "0.0.0.0:8080"]));
    assert_eq!(
        container["env"],
        json!([
            {"name": "AGENTMESH_REGISTRY_ADDR", "value": "http://registry:7000"},
            {"name": "AGENTMESH_WORKSPACE_ID", "value": WORKSPACE},
        ])
    );
    assert_eq!(container["resources"]["limits"], json!({"cpu": "500m", "memory": "268435456"}));
    assert_eq!(container["volumeMounts"][0]["mountPath"], "/data");
    let claim_name = format!("{}-data", f.pod);
    assert_eq!(spec["volumes"][0]["persistentVolumeClaim"]["claimName"], claim_name.as_str());

    let claim = f.fake.claim(&claim_name).expect("claim");
    assert_eq!(claim["metadata"]["labels"][labels::WORKSPACE_ID], WORKSPACE);
    assert_eq!(claim["metadata"]["labels"][labels::MESH_ID], "test-mesh");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
    assert_eq!(f.requests(Method::POST, "persistentvolumeclaims"), 1);
    assert_eq!(f.requests(Method::POST, "pods"), 1);
    f.fake.assert_clean();
}

#[tokio::test]
async fn start_passes_a_command_and_skips_zero_limits() {
    let f = fixture_with(KubernetesSettings {
        service_account: Some("agent".to_owned()),
        volume: WorkspaceVolume::Ephemeral,
        ..settings()
    });
    let mut spec = spec(WORKSPACE);
    spec.command = "/usr/local/bin/agent".to_owned();
    spec.limits = ResourceLimits::default();
    f.runtime.start(&spec).await.expect("start");

    let pod = f.fake.pod(&f.pod).expect("pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["/usr/local/bin/agent"]));
    assert!(container["resources"]["limits"].is_null());
    assert_eq!(pod["spec"]["serviceAccountName"], "agent");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], true);
    assert!(pod["spec"]["volumes"][0]["emptyDir"].is_object());
    assert!(f.fake.claim_names().is_empty(), "an ephemeral volume needs no claim");
    f.fake.assert_clean();
}

#[tokio::test]
async fn a_started_pod_probes_running_even_while_pending() {
    let f = fixture();
    f.fake.set_auto_run(false);
    f.runtime.start(&spec(WORKSPACE)).await.expect("start");
    match f.runtime.probe(WORKSPACE).await {
        Probe::Running(info) => assert_eq!(info.detail, "pending: ContainerCreating"),
        other => panic!("a scheduled pod is on its way to running, got {other:?}"),
    }

    f.fake.run_pod(&f.pod);
    match f.runtime.probe(WORKSPACE).await {
        Probe::Running(info) => {
            assert_eq!(info.workload_id, f.pod);
            assert_eq!(info.detail, "running");
            assert!(info.started_at.is_some());
        }
        other => panic!("expected running, got {other:?}"),
    }
    assert_eq!(f.runtime.probe(OTHER_WORKSPACE).await, Probe::Absent);
    f.fake.assert_clean();
}

#[tokio::test]
async fn a_pod_stuck_pulling_its_image_has_exited() {
    let f = fixture();
    f.start_running().await;
    f.fake.set_waiting(&f.pod, "ImagePullBackOff", "Back-off pulling image \"agentmesh/echo:dev\"");
    match f.runtime.probe(WORKSPACE).await {
        Probe::Exited(info) => {
            assert_eq!(info.exit_code, None);
            assert!(info.detail.contains("ImagePullBackOff"), "{}", info.detail);
        }
        other => panic!("expected an exit without a code, got {other:?}"),
    }
}

#[tokio::test]
async fn phases_and_container_exits_map_to_exit_codes() {
    let f = fixture();
    f.start_running().await;
    f.fake.terminate(&f.pod, 0);
    let probe = f.runtime.probe(WORKSPACE).await;
    assert_eq!(exit_code(&probe), Some(0));
    let Probe::Exited(info) = probe else { unreachable!() };
    assert!(info.finished_at.is_some() && info.started_at.is_some());

    f.runtime.start(&spec(WORKSPACE)).await.expect("restart");
    f.fake.wait_until("the new pod runs", |fake| fake.phase(&f.pod).as_deref() == Some("Running")).await;
    f.fake.terminate(&f.pod, 1);
    assert_eq!(f.fake.phase(&f.pod).as_deref(), Some("Failed"));
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(1));
    f.fake.assert_clean();
}

#[tokio::test]
async fn a_terminated_container_wins_over_a_running_phase() {
    for code in [0, 1] {
        let f = fixture();
        f.start_running().await;
        f.fake.terminate_container(&f.pod, code);
        assert_eq!(f.fake.phase(&f.pod).as_deref(), Some("Running"));
        assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(code));
        let listed = f.runtime.list().await.expect("list");
        assert!(!listed[0].running);
    }
}

#[tokio::test]
async fn a_failed_pod_without_a_container_exit_is_exit_one_and_phase_unknown_is_unknown() {
    let f = fixture();
    f.start_running().await;
    f.fake.set_phase(&f.pod, "Unknown");
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Unknown(detail) if detail.contains("Unknown")));
    f.fake.set_phase(&f.pod, "Failed");
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(1));
}

#[tokio::test]
async fn exit_flags_make_the_fake_end_the_container() {
    let f = fixture();
    let mut spec = spec(WORKSPACE);
    spec.args = vec!["--exit-after-ms".to_owned(), "50".to_owned(), "--exit-code".to_owned(), "3".to_owned()];
    f.runtime.start(&spec).await.expect("start");
    f.fake.wait_until("the container exits", |fake| fake.phase(&f.pod).as_deref() == Some("Failed")).await;
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(3));
}

#[tokio::test]
async fn watch_hints_at_every_change_of_our_pods_and_ends_when_the_watch_breaks() {
    let f = fixture();
    f.start_running().await;
    f.fake.insert_pod(running_pod(&f.fake.pod_name(OTHER_WORKSPACE), &[("app", "unrelated")]));
    let mut events = f.runtime.watch().await.expect("watch");
    let watch = f.fake.requests().into_iter().find(|r| r.param("watch") == Some("true")).expect("a watch request");
    assert_eq!(
        watch.param("labelSelector"),
        Some(
            format!("{}=test-mesh,{}={}", labels::MESH_ID, labels::RUNTIME_INSTANCE, identity().instance_label())
                .as_str()
        )
    );

    // The initial ADDED for the existing pod.
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);
    f.fake.terminate(&f.pod, 2);
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(2));
    f.fake.remove_pod(&f.pod);
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);

    f.fake.break_watches();
    assert!(next_event(&mut events).await.is_none(), "the stream ends with the watch");
    f.fake.assert_clean();
}

#[tokio::test]
async fn stop_deletes_with_the_grace_period_and_waits_until_the_pod_is_gone() {
    let f = fixture();
    f.start_running().await;
    f.fake.set_deletion_delay(Duration::from_millis(200));
    let outcome = f.runtime.stop(WORKSPACE, Duration::from_secs(5)).await.expect("stop");
    assert_eq!(outcome, StopOutcome::Stopped);
    assert!(f.fake.pod(&f.pod).is_none(), "stop returns only once the pod is gone");
    let delete = f.fake.requests().into_iter().find(|r| r.method == Method::DELETE).expect("a delete");
    assert_eq!(delete.body.expect("delete options")["gracePeriodSeconds"], 5);
    assert!(f.fake.claim(&format!("{}-data", f.pod)).is_some(), "stop keeps the volume");

    assert_eq!(f.runtime.stop(WORKSPACE, Duration::from_secs(5)).await.expect("stop"), StopOutcome::AlreadyGone);
    assert_eq!(f.runtime.probe(WORKSPACE).await, Probe::Absent);
    f.fake.assert_clean();
}

#[tokio::test]
async fn a_pod_that_never_goes_away_fails_the_stop() {
    let f = fixture_with(KubernetesSettings { deletion_timeout: Duration::from_millis(300), ..settings() });
    f.start_running().await;
    f.fake.set_deletion_delay(Duration::from_secs(60));
    let error = f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect_err("stuck");
    assert!(matches!(error, RuntimeError::TimedOut(_)), "{error:?}");
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Running(info) if info.detail == "terminating"));
}

#[tokio::test]
async fn start_returns_a_running_pod_and_replaces_an_exited_one() {
    let f = fixture();
    f.start_running().await;
    let uid = |f: &Fixture| f.fake.pod(&f.pod).expect("pod")["metadata"]["uid"].clone();
    let first = uid(&f);

    let info = f.runtime.start(&spec(WORKSPACE)).await.expect("start again");
    assert_eq!(info.detail, "running");
    assert_eq!(uid(&f), first, "a running pod is kept");
    assert_eq!(f.requests(Method::POST, "pods"), 1);

    f.fake.terminate(&f.pod, 1);
    f.runtime.start(&spec(WORKSPACE)).await.expect("restart");
    assert_ne!(uid(&f), first, "an exited pod is replaced");
    assert_eq!(f.requests(Method::DELETE, &format!("pods/{}", f.pod)), 1);
    assert_eq!(f.requests(Method::POST, "persistentvolumeclaims"), 1, "the claim is kept across starts");
    f.fake.assert_clean();
}

#[tokio::test]
async fn purge_waits_for_the_pod_then_deletes_the_claim() {
    let f = fixture();
    f.start_running().await;
    let claim = format!("{}-data", f.pod);
    let error = f.runtime.purge(WORKSPACE).await.expect_err("the pod still exists");
    assert!(matches!(error, RuntimeError::Workload(_)), "{error:?}");
    assert!(f.fake.claim(&claim).is_some());

    f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect("stop");
    f.runtime.purge(WORKSPACE).await.expect("purge");
    assert!(f.fake.claim(&claim).is_none());
    f.runtime.purge(WORKSPACE).await.expect("purging twice is fine");

    // A later start makes a fresh claim.
    f.runtime.start(&spec(WORKSPACE)).await.expect("start");
    assert!(f.fake.claim(&claim).is_some());
    f.fake.assert_clean();
}

#[tokio::test]
async fn list_returns_only_pods_that_are_ours_by_name_and_labels() {
    let f = fixture();
    f.start_running().await;
    let instance = identity().instance_label();
    let ours = |workspace: &'static str| {
        [
            (labels::MESH_ID, "test-mesh"),
            (labels::RUNTIME_INSTANCE, instance.as_str()),
            (labels::WORKSPACE_ID, workspace),
            (labels::MANAGED_BY, labels::MANAGED_BY_VALUE),
        ]
    };
    // Our labels, but a name that is not ours.
    f.fake.insert_pod(running_pod("am-test-mesh-not-a-uuid", &ours(OTHER_WORKSPACE)));
    f.fake.insert_pod(running_pod("postgres-0", &ours(OTHER_WORKSPACE)));
    // Our name shape, but the workspace label disagrees.
    f.fake.insert_pod(running_pod(&f.fake.pod_name(OTHER_WORKSPACE), &ours(WORKSPACE)));
    // Our name shape without our labels, and another instance's pod.
    f.fake.insert_pod(running_pod(&identity().workload_name("0b6f4c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e"), &[]));
    let mut other_instance = ours("9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d");
    other_instance[1].1 = "docker-local";
    f.fake.insert_pod(running_pod(&identity().workload_name("9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"), &other_instance));

    let listed = f.runtime.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].workspace_id, WORKSPACE);
    assert_eq!(listed[0].name, f.pod);
    assert!(listed[0].running);
    let list =
        f.fake.requests().into_iter().find(|r| r.is(Method::GET, "/api/v1/namespaces/agents/pods")).expect("list");
    assert!(list.param("labelSelector").is_some_and(|s| s.contains(labels::RUNTIME_INSTANCE)));
    f.fake.assert_clean();
}

#[tokio::test]
async fn a_foreign_pod_under_our_name_is_never_touched() {
    let f = fixture();
    f.fake.insert_pod(running_pod(&f.pod, &[("app", "someone-else")]));
    assert_eq!(f.runtime.probe(WORKSPACE).await, Probe::Absent);
    assert_eq!(f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect("stop"), StopOutcome::AlreadyGone);
    assert!(matches!(f.runtime.start(&spec(WORKSPACE)).await, Err(RuntimeError::Workload(_))));
    assert!(matches!(f.runtime.purge(WORKSPACE).await, Err(RuntimeError::Workload(_))));
    assert!(f.fake.pod(&f.pod).is_some());
    assert_eq!(f.requests(Method::DELETE, &format!("pods/{}", f.pod)), 0);
    f.fake.assert_clean();
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
async fn an_api_refusal_is_a_workload_error_but_only_unknown_to_a_probe() {
    let f = fixture();
    f.fake.fail_next(1, Failure::Refused(403, "Forbidden"));
    assert!(matches!(f.runtime.start(&spec(WORKSPACE)).await, Err(RuntimeError::Workload(_))));
    f.fake.fail_next(1, Failure::Refused(403, "Forbidden"));
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Unknown(_)));
    f.fake.fail_next(1, Failure::Refused(429, "TooManyRequests"));
    assert!(matches!(f.runtime.list().await, Err(RuntimeError::Unavailable(_))));
    f.fake.assert_clean();
}

#[tokio::test]
async fn an_invalid_workspace_id_never_reaches_the_api() {
    let f = fixture();
    assert!(matches!(f.runtime.probe("not-a-uuid").await, Probe::Unknown(_)));
    assert!(matches!(f.runtime.start(&spec("../../secrets")).await, Err(RuntimeError::Workload(_))));
    assert!(f.fake.requests().is_empty(), "an invalid id never reaches the API");
    f.fake.assert_clean();
}

#[tokio::test]
async fn engine_info_reports_the_api_server_version() {
    let f = fixture();
    f.fake.set_version("v1.30.4");
    assert_eq!(f.runtime.engine_info().await.expect("version").version, "Kubernetes v1.30.4");
    f.fake.fail_next(1, Failure::ServerError);
    assert!(matches!(f.runtime.engine_info().await, Err(RuntimeError::Unavailable(_))));
    f.fake.fail_next(1, Failure::Hang);
    assert!(matches!(f.runtime.engine_info().await, Err(RuntimeError::Unavailable(_))));
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

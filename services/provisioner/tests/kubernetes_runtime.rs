//! The Kubernetes runtime against a real API server (PRV-3, PRV-4, PRV-5,
//! PRV-9): what it creates passes the server's validation, and every probe,
//! stop and purge reads what the server holds. Each test has a namespace of
//! its own and plays the kubelet where a pod must move. What a real server
//! cannot be made to do is in kubernetes_runtime_faults.rs.

use std::{collections::BTreeMap, time::Duration};

use agentmesh_provisioner::runtime::{
    Identity, Probe, ResourceLimits, Runtime, RuntimeError, StopOutcome, WorkloadEvent, WorkloadSpec,
    kubernetes::{KubernetesRuntime, KubernetesSettings, WorkspaceVolume},
    labels,
};
use agentmesh_testkit::kube::{ApiServer, Kubelet};
use futures::{StreamExt, stream::BoxStream};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, ServiceAccount};
use kube::{
    Api, Client,
    api::{DeleteParams, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

const WORKSPACE: &str = "3f1c2a9e-8d4b-4c7a-9e21-5b6d7f8a9c0d";
const OTHER_WORKSPACE: &str = "7a0e9d4c-1b2f-4e3a-8c5d-6f7e8a9b0c1d";

fn identity() -> Identity {
    // ":" is not allowed in a label value, so the instance label is a hash.
    Identity { mesh_id: "test-mesh".to_owned(), instance: "kubernetes:kind".to_owned() }
}

struct Fixture {
    server: &'static ApiServer,
    admin: Client,
    namespace: String,
    runtime: KubernetesRuntime,
    kubelet: Kubelet,
    pod: String,
}

fn settings() -> KubernetesSettings {
    KubernetesSettings {
        api_timeout: Duration::from_secs(5),
        deletion_timeout: Duration::from_secs(5),
        ..KubernetesSettings::default()
    }
}

async fn fixture_with(settings: KubernetesSettings) -> Option<Fixture> {
    let server = ApiServer::shared()?;
    let namespace = server.namespace("runtime").await;
    let admin = server.admin().await;
    let runtime = KubernetesRuntime::new(admin.clone(), namespace.clone(), identity(), settings);
    let kubelet = Kubelet::new(admin.clone(), &namespace);
    Some(Fixture { server, admin, namespace, runtime, kubelet, pod: identity().workload_name(WORKSPACE) })
}

async fn fixture() -> Option<Fixture> {
    fixture_with(settings()).await
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
    fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    fn claims(&self) -> Api<PersistentVolumeClaim> {
        Api::namespaced(self.admin.clone(), &self.namespace)
    }

    /// The object as the server holds it, as JSON; `None` when it has none.
    async fn pod(&self, name: &str) -> Option<Value> {
        self.pods().get_opt(name).await.unwrap().map(|pod| serde_json::to_value(pod).unwrap())
    }

    async fn claim(&self, name: &str) -> Option<Value> {
        self.claims().get_opt(name).await.unwrap().map(|claim| serde_json::to_value(claim).unwrap())
    }

    async fn start_running(&self) {
        self.runtime.start(&spec(WORKSPACE)).await.expect("start");
        self.kubelet.run(&self.pod).await;
    }

    /// Creates a pod behind the runtime's back, as another party would.
    async fn insert_pod(&self, name: &str, labels: &[(&str, &str)]) {
        let labels: BTreeMap<&str, &str> = labels.iter().copied().collect();
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "workload", "image": "agentmesh/echo:dev"}], "restartPolicy": "Never"}
        }))
        .unwrap();
        self.pods().create(&PostParams::default(), &pod).await.unwrap();
        self.kubelet.run(name).await;
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

#[tokio::test(flavor = "multi_thread")]
async fn start_creates_the_claim_then_a_labelled_pod_the_server_accepts() {
    let Some(f) = fixture().await else { return };
    let info = f.runtime.start(&spec(WORKSPACE)).await.expect("start");
    assert_eq!(info.workload_id, f.pod);
    assert_eq!(info.exit_code, None);

    let pod = f.pod(&f.pod).await.expect("pod");
    let labels = &pod["metadata"]["labels"];
    assert_eq!(labels[labels::MESH_ID], "test-mesh");
    assert_eq!(labels[labels::RUNTIME_INSTANCE], identity().instance_label().as_str());
    assert_eq!(labels[labels::WORKSPACE_ID], WORKSPACE);
    assert_eq!(labels[labels::MANAGED_BY], labels::MANAGED_BY_VALUE);
    assert_eq!(pod["metadata"]["annotations"]["dev.agentmesh/workspace-name"], "research bot");
    let spec = &pod["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["automountServiceAccountToken"], false);
    assert_eq!(spec["enableServiceLinks"], false);
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

    let claim = f.claim(&claim_name).await.expect("claim");
    assert_eq!(claim["metadata"]["labels"][labels::WORKSPACE_ID], WORKSPACE);
    assert_eq!(claim["metadata"]["labels"][labels::MESH_ID], "test-mesh");
    assert_eq!(claim["spec"]["resources"]["requests"]["storage"], "1Gi");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_passes_a_command_and_skips_zero_limits() {
    let Some(f) = fixture_with(KubernetesSettings {
        service_account: Some("agent".to_owned()),
        volume: WorkspaceVolume::Ephemeral,
        ..settings()
    })
    .await
    else {
        return;
    };
    let mut spec = spec(WORKSPACE);
    spec.command = "/usr/local/bin/agent".to_owned();
    spec.limits = ResourceLimits::default();
    f.runtime.start(&spec).await.expect("start");

    let pod = f.pod(&f.pod).await.expect("pod");
    let container = &pod["spec"]["containers"][0];
    assert_eq!(container["command"], json!(["/usr/local/bin/agent"]));
    assert!(container["resources"]["limits"].is_null());
    assert_eq!(pod["spec"]["serviceAccountName"], "agent");
    assert_eq!(pod["spec"]["automountServiceAccountToken"], true);
    assert!(pod["spec"]["volumes"][0]["emptyDir"].is_object());
    assert!(f.claim(&format!("{}-data", f.pod)).await.is_none(), "an ephemeral volume needs no claim");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_started_pod_probes_running_even_while_pending() {
    let Some(f) = fixture().await else { return };
    f.runtime.start(&spec(WORKSPACE)).await.expect("start");
    match f.runtime.probe(WORKSPACE).await {
        Probe::Running(info) => assert_eq!(info.detail, "pending: scheduling"),
        other => panic!("a pod not yet scheduled is on its way to running, got {other:?}"),
    }

    f.kubelet.run(&f.pod).await;
    match f.runtime.probe(WORKSPACE).await {
        Probe::Running(info) => {
            assert_eq!(info.workload_id, f.pod);
            assert_eq!(info.detail, "running");
            assert!(info.started_at.is_some());
        }
        other => panic!("expected running, got {other:?}"),
    }
    assert_eq!(f.runtime.probe(OTHER_WORKSPACE).await, Probe::Absent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_stuck_pulling_its_image_has_exited() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    f.kubelet.waiting(&f.pod, "ImagePullBackOff", "Back-off pulling image \"agentmesh/echo:dev\"").await;
    match f.runtime.probe(WORKSPACE).await {
        Probe::Exited(info) => {
            assert_eq!(info.exit_code, None);
            assert!(info.detail.contains("ImagePullBackOff"), "{}", info.detail);
        }
        other => panic!("expected an exit without a code, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn phases_and_container_exits_map_to_exit_codes() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    f.kubelet.exit(&f.pod, 0).await;
    let probe = f.runtime.probe(WORKSPACE).await;
    assert_eq!(exit_code(&probe), Some(0));
    let Probe::Exited(info) = probe else { unreachable!() };
    assert!(info.finished_at.is_some() && info.started_at.is_some());

    f.runtime.start(&spec(WORKSPACE)).await.expect("restart");
    f.kubelet.run(&f.pod).await;
    f.kubelet.exit(&f.pod, 1).await;
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_terminated_container_wins_over_a_running_phase() {
    let Some(f) = fixture().await else { return };
    for code in [0, 1] {
        f.runtime.stop(WORKSPACE, Duration::ZERO).await.unwrap();
        f.start_running().await;
        f.kubelet.container_exit(&f.pod, code, "Running").await;
        assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(code));
        let listed = f.runtime.list().await.expect("list");
        assert!(!listed[0].running);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_failed_pod_without_a_container_exit_is_exit_one_and_phase_unknown_is_unknown() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    f.kubelet.set_status(&f.pod, json!({"phase": "Unknown"})).await;
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Unknown(detail) if detail.contains("Unknown")));
    f.kubelet.set_status(&f.pod, json!({"phase": "Failed", "containerStatuses": null, "reason": "Evicted"})).await;
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(1));
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_hints_at_every_change_of_our_pods_and_of_nothing_else() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    let mut events = f.runtime.watch().await.expect("watch");
    // The initial ADDED for the existing pod.
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);
    // Someone else's pod in the namespace changes: no hint.
    f.insert_pod(&identity().workload_name(OTHER_WORKSPACE), &[("app", "unrelated")]).await;
    f.kubelet.exit(&f.pod, 2).await;
    assert_eq!(next_event(&mut events).await.expect("event").workspace_id, WORKSPACE);
    assert_eq!(exit_code(&f.runtime.probe(WORKSPACE).await), Some(2));
    f.pods().delete(&f.pod, &DeleteParams::default()).await.unwrap();
    let deleted = next_event(&mut events).await.expect("event");
    assert_eq!(deleted.workspace_id, WORKSPACE);
    assert_eq!(f.runtime.probe(WORKSPACE).await, Probe::Absent);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_deletes_the_pod_keeps_the_claim_and_a_second_stop_finds_nothing() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    let outcome = f.runtime.stop(WORKSPACE, Duration::from_secs(5)).await.expect("stop");
    assert_eq!(outcome, StopOutcome::Stopped);
    assert!(f.pod(&f.pod).await.is_none(), "stop returns only once the pod is gone");
    assert!(f.claim(&format!("{}-data", f.pod)).await.is_some(), "stop keeps the volume");

    assert_eq!(f.runtime.stop(WORKSPACE, Duration::from_secs(5)).await.expect("stop"), StopOutcome::AlreadyGone);
    assert_eq!(f.runtime.probe(WORKSPACE).await, Probe::Absent);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_pod_that_never_goes_away_fails_the_stop() {
    let Some(f) = fixture_with(KubernetesSettings { deletion_timeout: Duration::from_millis(500), ..settings() }).await
    else {
        return;
    };
    f.start_running().await;
    // A finalizer nobody removes holds the pod after its deletion.
    let hold = Patch::Merge(json!({"metadata": {"finalizers": ["agentmesh.dev/test-hold"]}}));
    f.pods().patch(&f.pod, &PatchParams::default(), &hold).await.unwrap();
    let error = f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect_err("stuck");
    assert!(matches!(error, RuntimeError::TimedOut(_)), "{error:?}");
    assert!(matches!(f.runtime.probe(WORKSPACE).await, Probe::Running(info) if info.detail == "terminating"));
    let release = Patch::Merge(json!({"metadata": {"finalizers": null}}));
    f.pods().patch(&f.pod, &PatchParams::default(), &release).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn start_returns_a_running_pod_and_replaces_an_exited_one_keeping_the_claim() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    let uid = |object: Value| object["metadata"]["uid"].clone();
    let first = uid(f.pod(&f.pod).await.unwrap());
    let claim = uid(f.claim(&format!("{}-data", f.pod)).await.unwrap());

    let info = f.runtime.start(&spec(WORKSPACE)).await.expect("start again");
    assert_eq!(info.detail, "running");
    assert_eq!(uid(f.pod(&f.pod).await.unwrap()), first, "a running pod is kept");

    f.kubelet.exit(&f.pod, 1).await;
    f.runtime.start(&spec(WORKSPACE)).await.expect("restart");
    assert_ne!(uid(f.pod(&f.pod).await.unwrap()), first, "an exited pod is replaced");
    assert_eq!(uid(f.claim(&format!("{}-data", f.pod)).await.unwrap()), claim, "the claim is kept across starts");
}

#[tokio::test(flavor = "multi_thread")]
async fn purge_waits_for_the_pod_then_deletes_the_claim() {
    let Some(f) = fixture().await else { return };
    f.start_running().await;
    let claim = format!("{}-data", f.pod);
    let error = f.runtime.purge(WORKSPACE).await.expect_err("the pod still exists");
    assert!(matches!(error, RuntimeError::Workload(_)), "{error:?}");
    assert!(f.claim(&claim).await.is_some());

    f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect("stop");
    f.runtime.purge(WORKSPACE).await.expect("purge");
    // Without a controller manager nothing removes the claim's protection
    // finalizer: it is deleted, and on its way out.
    let left = f.claim(&claim).await;
    assert!(left.is_none_or(|claim| !claim["metadata"]["deletionTimestamp"].is_null()), "the claim is deleted");
    f.runtime.purge(WORKSPACE).await.expect("purging twice is fine");
}

#[tokio::test(flavor = "multi_thread")]
async fn list_returns_only_pods_that_are_ours_by_name_and_labels() {
    let Some(f) = fixture().await else { return };
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
    f.insert_pod("am-test-mesh-not-a-uuid", &ours(OTHER_WORKSPACE)).await;
    f.insert_pod("postgres-0", &ours(OTHER_WORKSPACE)).await;
    // Our name shape, but the workspace label disagrees.
    f.insert_pod(&identity().workload_name(OTHER_WORKSPACE), &ours(WORKSPACE)).await;
    // Our name shape without our labels, and another instance's pod.
    f.insert_pod(&identity().workload_name("0b6f4c1e-2d3a-4b5c-8d9e-0f1a2b3c4d5e"), &[]).await;
    let mut other_instance = ours("9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d");
    other_instance[1].1 = "docker-local";
    f.insert_pod(&identity().workload_name("9c8b7a6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"), &other_instance).await;

    let listed = f.runtime.list().await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].workspace_id, WORKSPACE);
    assert_eq!(listed[0].name, f.pod);
    assert!(listed[0].running);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_foreign_pod_under_our_name_is_never_touched() {
    let Some(f) = fixture().await else { return };
    f.insert_pod(&f.pod, &[("app", "someone-else")]).await;
    assert_eq!(f.runtime.probe(WORKSPACE).await, Probe::Absent);
    assert_eq!(f.runtime.stop(WORKSPACE, Duration::ZERO).await.expect("stop"), StopOutcome::AlreadyGone);
    assert!(matches!(f.runtime.start(&spec(WORKSPACE)).await, Err(RuntimeError::Workload(_))));
    assert!(matches!(f.runtime.purge(WORKSPACE).await, Err(RuntimeError::Workload(_))));
    let pod = f.pod(&f.pod).await.expect("still there");
    assert!(pod["metadata"]["deletionTimestamp"].is_null(), "never deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn an_api_refusal_is_a_workload_error_but_only_unknown_to_a_probe() {
    let Some(f) = fixture().await else { return };
    // An identity with no rights at all: the server's RBAC refuses it.
    let accounts: Api<ServiceAccount> = Api::namespaced(f.admin.clone(), &f.namespace);
    let account: ServiceAccount = serde_json::from_value(json!({"metadata": {"name": "nobody"}})).unwrap();
    accounts.create(&PostParams::default(), &account).await.unwrap();
    let request = serde_json::from_value(json!({"spec": {"audiences": [], "expirationSeconds": 3600}})).unwrap();
    let token = accounts.create_token_request("nobody", &PostParams::default(), &request).await.unwrap();
    let token = token.status.and_then(|status| status.token).expect("a token");
    let nobody = f.server.client_with_token(&token).await;
    let runtime = KubernetesRuntime::new(nobody, f.namespace.clone(), identity(), settings());
    let refused = runtime.start(&spec(WORKSPACE)).await;
    assert!(matches!(&refused, Err(RuntimeError::Workload(message)) if message.contains("forbidden")), "{refused:?}");
    assert!(matches!(runtime.probe(WORKSPACE).await, Probe::Unknown(_)));
    assert!(matches!(runtime.list().await, Err(RuntimeError::Workload(_))));
}

#[tokio::test(flavor = "multi_thread")]
async fn an_invalid_workspace_id_never_reaches_the_api() {
    let Some(f) = fixture().await else { return };
    assert!(matches!(f.runtime.probe("not-a-uuid").await, Probe::Unknown(_)));
    assert!(matches!(f.runtime.start(&spec("../../secrets")).await, Err(RuntimeError::Workload(_))));
    let audit = std::fs::read_to_string(&f.server.audit_log).unwrap();
    assert!(!audit.contains("not-a-uuid") && !audit.contains("../../secrets"), "an invalid id reached the API");
}

#[tokio::test(flavor = "multi_thread")]
async fn engine_info_reports_the_api_server_version() {
    let Some(f) = fixture().await else { return };
    let version = f.runtime.engine_info().await.expect("version").version;
    assert!(version.starts_with("Kubernetes v1."), "{version}");
}

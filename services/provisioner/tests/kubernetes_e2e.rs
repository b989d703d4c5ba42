//! The provisioner end to end on a real Kubernetes API server (PRV-3,
//! PRV-8, PRV-9, REG-10): the test plays the kubelet, patching pod status
//! as a node would, and the registry must follow every change the watch
//! reports, within a second; orphans are reaped and nothing foreign is
//! touched; a second provisioner on another namespace never changes the
//! first one's workspaces.

mod common;

use std::{sync::Arc, time::Duration};

use agentmesh_proto::{provisioner::v1 as ppb, registry::v1 as rpb, registry::v1::WorkspaceStatus};
use agentmesh_provisioner::runtime::{
    Identity, Runtime,
    kubernetes::{KubernetesRuntime, KubernetesSettings},
};
use agentmesh_testkit::kube::{ApiServer, Kubelet};
use common::{ProvisionerNode, RegistryNode};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod};
use kube::{
    Api,
    api::{DeleteParams, ListParams, PostParams},
};
use serde_json::json;

/// How soon the registry must show what a pod's status patch said.
const REACT: Duration = Duration::from_secs(1);

struct Cluster {
    server: &'static ApiServer,
    namespace: String,
    mesh_id: String,
    instance: String,
}

impl Cluster {
    async fn new() -> Option<Self> {
        let server = ApiServer::shared()?;
        let namespace = server.namespace("e2e").await;
        let mesh_id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
        let instance = format!("kubernetes:{namespace}");
        Some(Self { server, namespace, mesh_id, instance })
    }

    fn identity(&self) -> Identity {
        Identity { mesh_id: self.mesh_id.clone(), instance: self.instance.clone() }
    }

    async fn runtime(&self) -> Arc<dyn Runtime> {
        let client = self.server.admin().await;
        Arc::new(KubernetesRuntime::new(client, self.namespace.clone(), self.identity(), KubernetesSettings::default()))
    }

    async fn pods(&self) -> Api<Pod> {
        Api::namespaced(self.server.admin().await, &self.namespace)
    }

    async fn kubelet(&self) -> Kubelet {
        Kubelet::new(self.server.admin().await, &self.namespace)
    }

    fn pod_name(&self, workspace_id: &str) -> String {
        self.identity().workload_name(workspace_id)
    }

    async fn provisioner(&self, registry: &RegistryNode) -> ProvisionerNode {
        let mesh_id = self.mesh_id.clone();
        ProvisionerNode::start(registry, vec![self.runtime().await], |s| s.mesh_id = mesh_id).await
    }
}

fn spec(name: &str, restart_policy: ppb::RestartPolicy) -> ppb::WorkspaceSpec {
    ppb::WorkspaceSpec {
        name: name.into(),
        runtime_kind: rpb::RuntimeKind::Kubernetes as i32,
        image: "agentmesh/echo-agent:dev".into(),
        restart_policy: restart_policy as i32,
        ..Default::default()
    }
}

/// Waits for the status and reports how long after `since` it came.
async fn reached(
    watch: &mut common::StatusWatch,
    status: WorkspaceStatus,
    since: tokio::time::Instant,
) -> (String, Duration) {
    let reason = watch.until(status, REACT).await;
    (reason, since.elapsed())
}

#[tokio::test(flavor = "multi_thread")]
async fn pod_phases_and_exits_reach_the_registry_within_a_second() {
    let Some(cluster) = Cluster::new().await else { return };
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let provisioner = cluster.provisioner(&registry).await;
    let kubelet = cluster.kubelet().await;

    let mut latencies = Vec::new();
    for (name, exit_code, status) in [("clean", 0, WorkspaceStatus::Stopped), ("broken", 3, WorkspaceStatus::Failed)] {
        let created = provisioner.create(spec(name, ppb::RestartPolicy::Never)).await.unwrap().workspace.unwrap();
        assert_eq!(created.status(), WorkspaceStatus::Provisioning);
        let pod = cluster.pod_name(&created.id);
        let mut watch = registry.watch(&created.id).await;
        kubelet.run(&pod).await;
        // The floor: how long the same change takes to reach a bare watch.
        let pods = cluster.pods().await;
        let version = pods.get(&pod).await.unwrap().metadata.resource_version.unwrap();
        let mut bare = pods.watch(&kube::api::WatchParams::default(), &version).await.unwrap().boxed();
        let patched = tokio::time::Instant::now();
        kubelet.exit(&pod, exit_code).await;
        bare.next().await.expect("the change reaches a watch").unwrap();
        let floor = patched.elapsed();
        let (reason, took) = reached(&mut watch, status, patched).await;
        assert!(reason.contains(&format!("exited with code {exit_code}")), "{reason}");
        latencies.push((took, floor));
    }

    // A pod deleted from outside the mesh: the workspace is offline.
    let created = provisioner.create(spec("deleted", ppb::RestartPolicy::Never)).await.unwrap().workspace.unwrap();
    let pod = cluster.pod_name(&created.id);
    kubelet.run(&pod).await;
    let mut watch = registry.watch(&created.id).await;
    let deleted = tokio::time::Instant::now();
    cluster.pods().await.delete(&pod, &DeleteParams::default()).await.unwrap();
    let (_, took) = reached(&mut watch, WorkspaceStatus::Offline, deleted).await;
    println!("kubernetes figure: pod deleted outside to registry offline: {:.0} ms", took.as_secs_f64() * 1e3);
    for (took, floor) in latencies {
        println!(
            "kubernetes figure: pod status patch to registry transition: {:.0} ms, to a bare watch event: {:.1} ms",
            took.as_secs_f64() * 1e3,
            floor.as_secs_f64() * 1e3
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_workspace_is_created_restarted_on_failure_and_deleted_without_a_trace() {
    let Some(cluster) = Cluster::new().await else { return };
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let provisioner = cluster.provisioner(&registry).await;
    let kubelet = cluster.kubelet().await;

    let created =
        provisioner.create(spec("restarted", ppb::RestartPolicy::OnFailure)).await.unwrap().workspace.unwrap();
    let id = created.id.clone();
    let pod_name = cluster.pod_name(&id);
    let pods = cluster.pods().await;
    let pod = pods.get(&pod_name).await.unwrap();
    let labels = pod.metadata.labels.unwrap();
    assert_eq!(labels["dev.agentmesh/workspace-id"], id);
    assert_eq!(labels["dev.agentmesh/mesh-id"], cluster.mesh_id);
    let env = pod.spec.unwrap().containers[0].env.clone().unwrap();
    let value = |name: &str| env.iter().find(|e| e.name == name).and_then(|e| e.value.clone());
    assert_eq!(value("AGENTMESH_WORKSPACE_ID").as_deref(), Some(id.as_str()));
    assert!(value("AGENTMESH_TOKEN").is_some_and(|token| !token.is_empty()), "the workload gets its token");
    let claims: Api<PersistentVolumeClaim> = Api::namespaced(cluster.server.admin().await, &cluster.namespace);
    claims.get(&format!("{pod_name}-data")).await.expect("the workspace's claim");

    // It fails; the on-failure policy replaces the pod.
    let mut watch = registry.watch(&id).await;
    kubelet.run(&pod_name).await;
    let first_uid = pods.get(&pod_name).await.unwrap().metadata.uid;
    kubelet.exit(&pod_name, 1).await;
    watch.until(WorkspaceStatus::Failed, REACT).await;
    watch.until(WorkspaceStatus::Provisioning, Duration::from_secs(10)).await;
    // The restart is recorded first, then the new pod created.
    agentmesh_testkit::eventually(Duration::from_secs(10), || async {
        let pod = pods.get_opt(&pod_name).await.unwrap()?;
        (pod.metadata.uid != first_uid).then_some(())
    })
    .await;

    let request = ppb::DeleteWorkspaceRequest { workspace_id: id.clone(), ..Default::default() };
    let deleted = provisioner.client.clone().delete_workspace(request).await.unwrap().into_inner();
    assert_eq!(deleted.workspace.unwrap().status(), WorkspaceStatus::Removed);
    assert!(deleted.workload_removed, "{}", deleted.cleanup_error);
    assert!(pods.get_opt(&pod_name).await.unwrap().is_none(), "the pod is gone");
    // Without a controller manager nothing lifts the claim's protection
    // finalizer: it is deleted, and on its way out.
    let claim = claims.get_opt(&format!("{pod_name}-data")).await.unwrap();
    assert!(claim.is_none_or(|c| c.metadata.deletion_timestamp.is_some()), "the claim is deleted");
}

#[tokio::test(flavor = "multi_thread")]
async fn orphans_of_ours_are_reaped_and_nothing_foreign_is_touched() {
    let Some(cluster) = Cluster::new().await else { return };
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let provisioner = cluster.provisioner(&registry).await;
    let created = provisioner.create(spec("orphan-to-be", ppb::RestartPolicy::Never)).await.unwrap();
    let orphan = cluster.pod_name(&created.workspace.unwrap().id);

    // Strangers in the same namespace: a pod without our labels under our
    // name's shape, and a pod of another mesh with all its labels.
    let pods = cluster.pods().await;
    let stranger = |name: &str, labels: serde_json::Value| -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels},
            "spec": {"containers": [{"name": "workload", "image": "agentmesh/echo-agent:dev"}]}
        }))
        .unwrap()
    };
    let unlabelled = format!("am-{}-{}", cluster.mesh_id, uuid::Uuid::new_v4());
    pods.create(&PostParams::default(), &stranger(&unlabelled, json!({}))).await.unwrap();
    let other_mesh = Identity { mesh_id: "another-mesh".into(), instance: cluster.instance.clone() };
    let other_id = uuid::Uuid::new_v4().to_string();
    let foreign = other_mesh.workload_name(&other_id);
    let foreign_labels = json!({
        "dev.agentmesh/mesh-id": "another-mesh",
        "dev.agentmesh/runtime-instance": other_mesh.instance_label(),
        "dev.agentmesh/workspace-id": other_id,
        "app.kubernetes.io/managed-by": "agentmesh-provisioner",
    });
    pods.create(&PostParams::default(), &stranger(&foreign, foreign_labels)).await.unwrap();

    // The provisioner's store is wiped: a fresh one finds a pod of its mesh
    // with no record.
    provisioner.stop().await;
    let _fresh = cluster.provisioner(&registry).await;
    let gone = agentmesh_testkit::eventually(Duration::from_secs(30), || async {
        pods.get_opt(&orphan).await.unwrap().is_none().then_some(())
    });
    gone.await;
    let names: Vec<String> =
        pods.list(&ListParams::default()).await.unwrap().items.into_iter().filter_map(|p| p.metadata.name).collect();
    assert!(names.contains(&unlabelled), "a pod without our labels is never touched: {names:?}");
    assert!(names.contains(&foreign), "another mesh's pod is never touched: {names:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_provisioner_on_another_namespace_never_changes_the_first_ones_workspaces() {
    let (Some(first), Some(second)) = (Cluster::new().await, Cluster::new().await) else { return };
    let second = Cluster { mesh_id: first.mesh_id.clone(), ..second };
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let owner = first.provisioner(&registry).await;
    let created = owner.create(spec("owned", ppb::RestartPolicy::Never)).await.unwrap().workspace.unwrap();
    let kubelet = first.kubelet().await;
    kubelet.run(&first.pod_name(&created.id)).await;

    // Another provisioner of the same mesh, on another namespace, sees no
    // pod of that workspace in its own namespace; it must not conclude the
    // workspace is gone.
    let other = second.provisioner(&registry).await;
    let mut watch = registry.watch(&created.id).await;
    kubelet.exit(&first.pod_name(&created.id), 0).await;
    watch.until(WorkspaceStatus::Stopped, REACT).await;
    assert_eq!(watch.seen, [WorkspaceStatus::Provisioning, WorkspaceStatus::Stopped], "only its owner moved it");
    assert_eq!(registry.get(&created.id).await.runtime_instance, first.instance);
    drop(other);
}

#[tokio::test(flavor = "multi_thread")]
async fn stop_start_restart_hibernate_and_wake_act_on_the_pod() {
    let Some(cluster) = Cluster::new().await else { return };
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let provisioner = cluster.provisioner(&registry).await;
    let created = provisioner.create(spec("lifecycle", ppb::RestartPolicy::Never)).await.unwrap().workspace.unwrap();
    let (id, pod_name) = (created.id.clone(), cluster.pod_name(&created.id));
    let pods = cluster.pods().await;
    let uid = || async { pods.get_opt(&pod_name).await.unwrap().and_then(|pod| pod.metadata.uid) };
    let mut client = provisioner.client.clone();
    let mut watch = registry.watch(&id).await;

    client.stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() }).await.unwrap();
    watch.until(WorkspaceStatus::Stopped, REACT).await;
    assert_eq!(uid().await, None, "a stopped workspace has no pod");

    client
        .start_workspace(ppb::StartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap();
    watch.until(WorkspaceStatus::Provisioning, REACT).await;
    let started = uid().await.expect("a started workspace has a pod");

    let request = ppb::RestartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() };
    client.restart_workspace(request).await.unwrap();
    let restarted = uid().await.expect("a restarted workspace has a pod");
    assert_ne!(restarted, started, "a restart replaces the pod");

    // Only an online workspace hibernates: its agent registers and
    // heartbeats, as the shim in the pod would, with the token it was given.
    agent_comes_online(&registry, &pods, &pod_name, &id).await;
    watch.until(WorkspaceStatus::Online, REACT).await;
    let request = ppb::HibernateWorkspaceRequest { workspace_id: id.clone(), ..Default::default() };
    client.hibernate_workspace(request).await.unwrap();
    watch.until(WorkspaceStatus::Hibernated, REACT).await;
    assert_eq!(uid().await, None, "a hibernated workspace has no pod");

    client.wake_workspace(ppb::WakeWorkspaceRequest { workspace_id: id.clone(), ..Default::default() }).await.unwrap();
    assert!(uid().await.is_some(), "waking starts a pod again");
}

/// Registers and heartbeats for the agent of `pod`, with the token the
/// provisioner put in its environment.
async fn agent_comes_online(registry: &RegistryNode, pods: &Api<Pod>, pod: &str, workspace_id: &str) {
    let spec = pods.get(pod).await.unwrap().spec.unwrap();
    let env = spec.containers[0].env.clone().unwrap_or_default();
    let token = env.into_iter().find(|e| e.name == "AGENTMESH_TOKEN").and_then(|e| e.value).expect("a token");
    let channel = tonic::transport::Channel::from_shared(registry.url()).unwrap().connect().await.unwrap();
    let mut agent = rpb::registry_service_client::RegistryServiceClient::new(channel);
    fn with_token<T>(message: T, token: &str) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
        request
    }
    let url = "http://10.0.0.9:8080/".to_owned();
    let register = rpb::RegisterRequest { workspace_id: workspace_id.into(), url, ..Default::default() };
    agent.register(with_token(register, &token)).await.unwrap();
    let heartbeat = rpb::HeartbeatRequest { workspace_id: workspace_id.into(), ..Default::default() };
    agent.heartbeat(with_token(heartbeat, &token)).await.unwrap();
}

//! The provisioner end to end on the real Docker engine, with the echo
//! agent image built locally: records, workloads and the registry's view
//! must agree through every lifecycle step, including those taken outside
//! the mesh.

mod common;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use agentmesh_proto::provisioner::v1 as ppb;
use agentmesh_proto::registry::v1::WorkspaceStatus;
use agentmesh_provisioner::runtime::{
    EngineInfo, ExecOutput, Identity, LogLine, LogRequest, ManagedWorkload, Probe, Runtime, RuntimeError, RuntimeKind,
    StopOutcome, WorkloadEvent, WorkloadInfo, WorkloadSpec,
};
use async_trait::async_trait;
use common::{
    ProvisionerNode, RegistryNode,
    docker::{TestNetwork, docker, echo_image, echo_spec, engine_event, unix_now},
};
use futures::stream::BoxStream;
use tonic::Code;

const BOOT: Duration = Duration::from_secs(30);
const REACT: Duration = Duration::from_secs(10);

struct Mesh {
    network: TestNetwork,
    registry: RegistryNode,
    provisioner: ProvisionerNode,
    image: String,
}

async fn mesh() -> Mesh {
    let image = echo_image().await;
    let network = TestNetwork::create();
    let registry = RegistryNode::start(network.gateway).await;
    let runtime = network.runtime("docker:test");
    let mesh_id = network.mesh_id.clone();
    let provisioner = ProvisionerNode::start(&registry, vec![runtime], |s| s.mesh_id = mesh_id).await;
    Mesh { network, registry, provisioner, image }
}

#[tokio::test]
async fn a_workspace_lives_dies_outside_is_restarted_and_is_deleted_without_a_trace() {
    let mesh = mesh().await;
    let spec = echo_spec("kill-me", &mesh.image, &[], ppb::RestartPolicy::OnFailure);
    let created = mesh.provisioner.create(spec).await.unwrap().workspace.unwrap();
    assert_eq!(created.status(), WorkspaceStatus::Provisioning);
    let id = created.id.clone();
    let mut watch = mesh.registry.watch(&id).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;
    let record = mesh.registry.get(&id).await;
    assert!(record.url.starts_with("http://"), "the agent registered its URL: {record:?}");
    assert_eq!(record.runtime_instance, "docker:test");

    // Killed from outside: the engine's event, not a poll, reports it.
    let name = mesh.network.container_name(&id);
    assert!(docker(&["kill", &name]).0);
    let reason = watch.until(WorkspaceStatus::Offline, REACT).await;
    assert!(reason.contains("killed by signal 9"), "{reason}");
    // …and the on-failure policy starts it again.
    watch.until(WorkspaceStatus::Provisioning, REACT).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;
    let runtime = mesh
        .provisioner
        .client
        .clone()
        .get_workspace_runtime(ppb::GetWorkspaceRuntimeRequest { workspace_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(runtime.state(), ppb::RunningState::Running);
    assert_eq!(runtime.restart_count, 1);

    let deleted = mesh
        .provisioner
        .client
        .clone()
        .delete_workspace(ppb::DeleteWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.workspace.unwrap().status(), WorkspaceStatus::Removed);
    assert!(deleted.workload_removed, "{}", deleted.cleanup_error);
    assert!(mesh.network.containers().is_empty(), "containers left: {:?}", mesh.network.containers());
    assert!(mesh.network.volumes().is_empty(), "volumes left: {:?}", mesh.network.volumes());
    // A removed workspace stays removed, also for the operations that would start it.
    let refused = mesh
        .provisioner
        .client
        .clone()
        .start_workspace(ppb::StartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
    assert_eq!(common::error_info(&refused).0, "WORKSPACE_REMOVED");
}

#[tokio::test]
async fn exit_code_zero_is_stopped_and_one_is_failed() {
    let mesh = mesh().await;
    let mut watches = Vec::new();
    for (name, code) in [("clean", "0"), ("broken", "1")] {
        let args = ["--exit-after-ms", "1500", "--exit-code", code];
        let spec = echo_spec(name, &mesh.image, &args, ppb::RestartPolicy::Never);
        let id = mesh.provisioner.create(spec).await.unwrap().workspace.unwrap().id;
        watches.push(mesh.registry.watch(&id).await);
    }
    let reason = watches[0].until(WorkspaceStatus::Stopped, BOOT).await;
    assert!(reason.contains("exited with code 0"), "{reason}");
    let reason = watches[1].until(WorkspaceStatus::Failed, BOOT).await;
    assert!(reason.contains("exited with code 1"), "{reason}");
}

#[tokio::test]
async fn orphans_with_our_label_are_reaped_and_nothing_else_is_touched() {
    let mesh = mesh().await;
    let spec = echo_spec("orphan-to-be", &mesh.image, &[], ppb::RestartPolicy::Never);
    let id = mesh.provisioner.create(spec).await.unwrap().workspace.unwrap().id;
    let name = mesh.network.container_name(&id);
    // Strangers: our name shape without our labels, and our labels with a
    // name that is not ours.
    let unlabelled = format!("am-{}-unlabelled", mesh.network.mesh_id);
    assert!(docker(&["create", "--name", &unlabelled, &mesh.image]).0);
    let stranger = format!("am-{}-stranger", mesh.network.mesh_id);
    let mesh_label = format!("dev.agentmesh/mesh-id={}", mesh.network.mesh_id);
    let identity = Identity { mesh_id: mesh.network.mesh_id.clone(), instance: "docker:test".into() };
    let instance_label = format!("dev.agentmesh/runtime-instance={}", identity.instance_label());
    let id_label = format!("dev.agentmesh/workspace-id={}", uuid::Uuid::new_v4());
    assert!(
        docker(&[
            "create",
            "--name",
            &stranger,
            "--label",
            &mesh_label,
            "--label",
            &instance_label,
            "--label",
            &id_label,
            &mesh.image
        ])
        .0
    );

    // The provisioner's database is wiped: a new provisioner with an empty
    // store finds a container carrying this mesh's label and no record.
    let since = unix_now();
    mesh.provisioner.stop().await;
    let mesh_id = mesh.network.mesh_id.clone();
    let _fresh =
        ProvisionerNode::start(&mesh.registry, vec![mesh.network.runtime("docker:test")], |s| s.mesh_id = mesh_id)
            .await;
    engine_event("container", &name, "destroy", since, REACT).await;
    engine_event("volume", &format!("{name}-data"), "destroy", since, REACT).await;
    assert!(!docker(&["inspect", &name]).0, "the orphan is gone");
    assert!(docker(&["inspect", &unlabelled]).0, "a container without our label is never touched");
    assert!(docker(&["inspect", &stranger]).0, "a name that does not look like ours is skipped");
    let left: Vec<_> = mesh.network.volumes();
    assert!(left.is_empty(), "the orphan's volume is reaped too: {left:?}");
}

#[tokio::test]
async fn a_second_provisioner_never_changes_the_first_ones_workspaces() {
    let mesh = mesh().await;
    let spec = echo_spec("first", &mesh.image, &[], ppb::RestartPolicy::Never);
    let id = mesh.provisioner.create(spec).await.unwrap().workspace.unwrap().id;
    let mut watch = mesh.registry.watch(&id).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;

    // Same engine, same mesh, another runtime instance and its own store,
    // resyncing often.
    let mesh_id = mesh.network.mesh_id.clone();
    let engine = FlakyEngine::around(mesh.network.runtime("docker:second"));
    let second = ProvisionerNode::start(&mesh.registry, vec![engine.clone()], |s| {
        s.mesh_id = mesh_id;
        s.resync_interval_ms = 100;
    })
    .await;
    let mut client = second.client.clone();
    for _ in 0..2 {
        let refused = client
            .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(common::error_info(&refused).0, "NOT_OWNED");
    }
    // Several complete resyncs of the second provisioner, each of which
    // lists the engine's workloads.
    engine.await_calls(&engine.lists, 3).await;
    assert!(docker(&["inspect", &mesh.network.container_name(&id)]).0);
    assert_eq!(mesh.registry.get(&id).await.status(), WorkspaceStatus::Online);
}

/// The real Docker runtime behind a switch that makes the engine look
/// broken: every probe is unknown, every listing and watch fails. It
/// counts the calls it sees, so tests can await the provisioner's work.
struct FlakyEngine {
    inner: Arc<dyn Runtime>,
    broken: AtomicBool,
    failed_calls: AtomicUsize,
    lists: AtomicUsize,
    calls_changed: tokio::sync::Notify,
}

impl FlakyEngine {
    fn around(inner: Arc<dyn Runtime>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            broken: AtomicBool::new(false),
            failed_calls: AtomicUsize::new(0),
            lists: AtomicUsize::new(0),
            calls_changed: tokio::sync::Notify::new(),
        })
    }

    fn fail(&self) -> Option<RuntimeError> {
        if !self.broken.load(Ordering::SeqCst) {
            return None;
        }
        self.failed_calls.fetch_add(1, Ordering::SeqCst);
        self.calls_changed.notify_waiters();
        Some(RuntimeError::Unavailable("injected: engine socket gone".into()))
    }

    /// Waits until `counter` reaches `at_least`.
    async fn await_calls(&self, counter: &AtomicUsize, at_least: usize) {
        loop {
            let changed = self.calls_changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if counter.load(Ordering::SeqCst) >= at_least {
                return;
            }
            tokio::time::timeout(REACT, changed).await.expect("the provisioner kept asking the engine");
        }
    }
}

#[async_trait]
impl Runtime for FlakyEngine {
    fn kind(&self) -> RuntimeKind {
        self.inner.kind()
    }
    fn identity(&self) -> &Identity {
        self.inner.identity()
    }
    async fn engine_info(&self) -> Result<EngineInfo, RuntimeError> {
        match self.fail() {
            Some(e) => Err(e),
            None => self.inner.engine_info().await,
        }
    }
    async fn start(&self, spec: &WorkloadSpec) -> Result<WorkloadInfo, RuntimeError> {
        match self.fail() {
            Some(e) => Err(e),
            None => self.inner.start(spec).await,
        }
    }
    async fn stop(&self, id: &str, grace: Duration) -> Result<StopOutcome, RuntimeError> {
        match self.fail() {
            Some(e) => Err(e),
            None => self.inner.stop(id, grace).await,
        }
    }
    async fn purge(&self, id: &str) -> Result<(), RuntimeError> {
        match self.fail() {
            Some(e) => Err(e),
            None => self.inner.purge(id).await,
        }
    }
    async fn probe(&self, id: &str) -> Probe {
        match self.fail() {
            Some(e) => Probe::Unknown(e.to_string()),
            None => self.inner.probe(id).await,
        }
    }
    async fn list(&self) -> Result<Vec<ManagedWorkload>, RuntimeError> {
        self.lists.fetch_add(1, Ordering::SeqCst);
        self.calls_changed.notify_waiters();
        match self.fail() {
            Some(e) => Err(e),
            None => self.inner.list().await,
        }
    }
    async fn watch(&self) -> Result<BoxStream<'static, WorkloadEvent>, RuntimeError> {
        // Events still flow while "broken", so every one of them meets an
        // unknown probe.
        self.inner.watch().await
    }
    async fn logs(
        &self,
        id: &str,
        r: LogRequest,
    ) -> Result<BoxStream<'static, Result<LogLine, RuntimeError>>, RuntimeError> {
        self.inner.logs(id, r).await
    }
    async fn exec(&self, id: &str, c: &[String], t: Duration) -> Result<ExecOutput, RuntimeError> {
        self.inner.exec(id, c, t).await
    }
}

#[tokio::test]
async fn engine_errors_never_flip_a_status() {
    let image = echo_image().await;
    let network = TestNetwork::create();
    let registry = RegistryNode::start(network.gateway).await;
    let engine = FlakyEngine::around(network.runtime("docker:test"));
    let mesh_id = network.mesh_id.clone();
    let provisioner = ProvisionerNode::start(&registry, vec![engine.clone()], |s| {
        s.mesh_id = mesh_id;
        s.resync_interval_ms = 100;
    })
    .await;
    let spec = echo_spec("steady", &image, &[], ppb::RestartPolicy::Never);
    let id = provisioner.create(spec).await.unwrap().workspace.unwrap().id;
    let mut watch = registry.watch(&id).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;

    // The engine breaks, and meanwhile the container dies: nothing may be
    // concluded from errors, so the record stays online…
    engine.broken.store(true, Ordering::SeqCst);
    assert!(docker(&["rm", "-f", &network.container_name(&id)]).0);
    engine.await_calls(&engine.failed_calls, 20).await;
    assert_eq!(registry.get(&id).await.status(), WorkspaceStatus::Online);
    let state = provisioner
        .client
        .clone()
        .get_workspace_runtime(ppb::GetWorkspaceRuntimeRequest { workspace_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.state(), ppb::RunningState::Unknown, "{state:?}");

    // …until the engine answers again and says the workload is gone.
    engine.broken.store(false, Ordering::SeqCst);
    let reason = watch.until(WorkspaceStatus::Offline, REACT).await;
    assert!(reason.contains("gone"), "{reason}");
    assert_eq!(watch.seen, vec![WorkspaceStatus::Provisioning, WorkspaceStatus::Online, WorkspaceStatus::Offline]);
}

//! Two installations with default settings on one Docker engine (two
//! users' meshes, or a test and a real one) never touch each other's
//! workloads: each generates its own mesh id at first start, keeps it with
//! its data, and its orphan sweeper reaps only what carries that id.

use std::{
    path::Path,
    process::{Child, Command},
    time::Duration,
};

use agentmesh_e2e::{
    docker::{self, containers_labelled, docker, volumes_labelled},
    mesh::Operator,
};
use agentmesh_proto::{provisioner::v1 as ppb, registry::v1 as rpb};
use agentmesh_testkit::{binary::spawn_until_ready, eventually, images};
use serde_json::Value;

const MESH_LABEL: &str = "dev.agentmesh/mesh-id";
const WORKSPACE_LABEL: &str = "dev.agentmesh/workspace-id";

/// A process killed with the test.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A registry and a provisioner with every setting at its default but the
/// addresses: the data directory they share is the installation.
struct Installation {
    provisioner_address: String,
    operator: Operator,
    mesh_id: String,
    _provisioner: Running,
    _registry: Running,
}

impl Installation {
    async fn start(data_dir: &Path) -> Self {
        let binaries = images::static_binaries();
        let mut registry = Command::new(&binaries.registry);
        registry.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data_dir);
        let (registry, registry_address) = tokio::task::spawn_blocking(|| spawn_until_ready(registry)).await.unwrap();
        let registry = Running(registry);
        let mut provisioner = Command::new(&binaries.provisioner);
        provisioner
            .args(["--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            .env("AGENTMESH_PROVISIONER__REGISTRY_ADDRESS", format!("http://{registry_address}"))
            // Sweep often, so the test need not wait the default 30 s.
            .env("AGENTMESH_PROVISIONER__RESYNC_INTERVAL_MS", "300");
        let (provisioner, provisioner_address) =
            tokio::task::spawn_blocking(|| spawn_until_ready(provisioner)).await.unwrap();
        let provisioner = Running(provisioner);
        let token = std::fs::read_to_string(data_dir.join("operator.token")).unwrap();
        let operator = Operator { token };
        let mut client = operator.provisioner(&provisioner_address);
        let mesh_id = client.list_runtimes(ppb::ListRuntimesRequest::default()).await.unwrap().into_inner().mesh_id;
        Self { provisioner_address, operator, mesh_id, _provisioner: provisioner, _registry: registry }
    }

    async fn create(&self, name: &str) -> String {
        let spec = ppb::WorkspaceSpec {
            name: name.into(),
            runtime_kind: rpb::RuntimeKind::Docker as i32,
            image: images::ECHO_AGENT_IMAGE.into(),
            ..Default::default()
        };
        let created = self
            .operator
            .provisioner(&self.provisioner_address)
            .create_workspace(ppb::CreateWorkspaceRequest { spec: Some(spec) })
            .await
            .unwrap();
        created.into_inner().workspace.unwrap().id
    }

    async fn delete(&self, workspace_id: &str) {
        let request = ppb::DeleteWorkspaceRequest { workspace_id: workspace_id.into(), ..Default::default() };
        let deleted = self.operator.provisioner(&self.provisioner_address).delete_workspace(request).await.unwrap();
        assert!(deleted.into_inner().workload_removed, "{workspace_id}");
    }

    /// Plants a container that carries this installation's labels but no
    /// record of it, as a wiped store leaves behind, and waits until the
    /// orphan sweeper reaps it: proof that the sweeper ran over everything
    /// on the engine after this call.
    async fn sweep_once(&self, like_workspace: &str) {
        let model = containers_labelled(&format!("{WORKSPACE_LABEL}={like_workspace}")).await;
        let labels = docker(&["inspect", "--format", "{{json .Config.Labels}}", &model[0]]).await;
        let labels: Value = serde_json::from_str(&labels).unwrap();
        let stray = uuid::Uuid::new_v4().to_string();
        let name = format!("am-{}-{stray}", self.mesh_id);
        let mut args = vec!["create".to_owned(), "--name".to_owned(), name];
        for (key, value) in labels.as_object().unwrap() {
            let value = if key == WORKSPACE_LABEL { stray.clone() } else { value.as_str().unwrap().to_owned() };
            args.extend(["--label".to_owned(), format!("{key}={value}")]);
        }
        args.push(images::ECHO_AGENT_IMAGE.to_owned());
        docker(&args.iter().map(String::as_str).collect::<Vec<_>>()).await;
        let stray_label = format!("{WORKSPACE_LABEL}={stray}");
        eventually(Duration::from_secs(30), || async {
            containers_labelled(&stray_label).await.is_empty().then_some(())
        })
        .await;
    }
}

/// Removes whatever carries these mesh ids when the test ends, passed or not.
struct Cleanup(Vec<String>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let docker = |args: &[&str]| {
            let output = Command::new("docker").args(args).output().expect("docker CLI");
            docker::lines(&String::from_utf8_lossy(&output.stdout))
        };
        for mesh_id in &self.0 {
            let label = format!("label={MESH_LABEL}={mesh_id}");
            for container in docker(&["ps", "-aq", "--filter", &label]) {
                docker(&["rm", "-f", &container]);
            }
            for volume in docker(&["volume", "ls", "-q", "--filter", &label]) {
                docker(&["volume", "rm", "-f", &volume]);
            }
        }
    }
}

async fn workload_of(workspace_id: &str) -> (Vec<String>, Vec<String>) {
    let label = format!("{WORKSPACE_LABEL}={workspace_id}");
    (containers_labelled(&label).await, volumes_labelled(&label).await)
}

#[tokio::test(flavor = "multi_thread")]
async fn two_default_installations_on_one_engine_leave_each_other_alone() {
    if !docker::engine_available().await {
        return;
    }
    tokio::task::spawn_blocking(images::echo_agent_image).await.unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = Installation::start(dir_a.path()).await;
    let b = Installation::start(dir_b.path()).await;
    let _cleanup = Cleanup(vec![a.mesh_id.clone(), b.mesh_id.clone()]);
    assert_ne!(a.mesh_id, b.mesh_id, "each installation generates its own mesh id");
    assert_eq!(std::fs::read_to_string(dir_a.path().join("mesh-id")).unwrap(), a.mesh_id);

    let (a_kept, a_deleted) = (a.create("a-kept").await, a.create("a-deleted").await);
    let (b_kept, b_deleted) = (b.create("b-kept").await, b.create("b-deleted").await);
    for workspace in [&a_kept, &a_deleted, &b_kept, &b_deleted] {
        let (containers, volumes) = workload_of(workspace).await;
        assert_eq!((containers.len(), volumes.len()), (1, 1), "{workspace}");
    }
    a.delete(&a_deleted).await;
    b.delete(&b_deleted).await;
    a.sweep_once(&a_kept).await;
    b.sweep_once(&b_kept).await;

    for (workspace, left) in [(&a_kept, 1), (&b_kept, 1), (&a_deleted, 0), (&b_deleted, 0)] {
        let (containers, volumes) = workload_of(workspace).await;
        assert_eq!((containers.len(), volumes.len()), (left, left), "{workspace}");
    }

    // The id is the installation's: a restart keeps it.
    let a_mesh_id = a.mesh_id.clone();
    drop(a);
    let a = Installation::start(dir_a.path()).await;
    assert_eq!(a.mesh_id, a_mesh_id);
    assert_eq!(workload_of(&b_kept).await.0.len(), 1);

    a.delete(&a_kept).await;
    b.delete(&b_kept).await;
    for installation in [&a, &b] {
        let label = format!("{MESH_LABEL}={}", installation.mesh_id);
        assert_eq!(containers_labelled(&label).await, Vec::<String>::new());
        assert_eq!(volumes_labelled(&label).await, Vec::<String>::new());
    }
}

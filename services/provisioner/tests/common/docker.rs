//! Docker fixtures: a private bridge network per test (its gateway is where
//! the registry listens, so agents in containers reach it), the echo agent
//! image, and cleanup of everything a test's mesh id labelled.

use std::{net::IpAddr, process::Command, sync::Arc};

use agentmesh_proto::provisioner::v1 as ppb;
use agentmesh_provisioner::runtime::{
    Identity, Runtime, RuntimeKind,
    docker::{DockerRuntime, DockerSettings},
    labels,
};

pub fn docker(args: &[&str]) -> (bool, String) {
    let output = Command::new("docker").args(args).output().expect("docker CLI");
    (output.status.success(), String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// A bridge network and, on drop, the removal of every container and
/// volume carrying the test's mesh id.
pub struct TestNetwork {
    pub name: String,
    pub gateway: IpAddr,
    pub mesh_id: String,
}

impl TestNetwork {
    pub fn create() -> Self {
        let suffix = uuid::Uuid::new_v4().simple().to_string()[..10].to_owned();
        let name = format!("agentmesh-test-{suffix}");
        let (ok, _) = docker(&["network", "create", &name]);
        assert!(ok, "cannot create network {name}");
        let (_, gateway) = docker(&["network", "inspect", &name, "--format", "{{(index .IPAM.Config 0).Gateway}}"]);
        Self { name, gateway: gateway.parse().expect("gateway IP"), mesh_id: format!("t{suffix}") }
    }

    pub fn runtime(&self, instance: &str) -> Arc<dyn Runtime> {
        Arc::new(self.docker_runtime(instance))
    }

    pub fn docker_runtime(&self, instance: &str) -> DockerRuntime {
        let identity = Identity { mesh_id: self.mesh_id.clone(), instance: instance.to_owned() };
        let settings = DockerSettings { network: Some(self.name.clone()), ..DockerSettings::default() };
        DockerRuntime::connect("", identity, settings).expect("docker runtime")
    }

    /// Containers carrying this test's mesh id, by name.
    pub fn containers(&self) -> Vec<String> {
        let filter = format!("label={}={}", labels::MESH_ID, self.mesh_id);
        let (_, out) = docker(&["ps", "-a", "--filter", &filter, "--format", "{{.Names}}"]);
        out.lines().map(str::to_owned).collect()
    }

    pub fn volumes(&self) -> Vec<String> {
        let filter = format!("label={}={}", labels::MESH_ID, self.mesh_id);
        let (_, out) = docker(&["volume", "ls", "-q", "--filter", &filter]);
        out.lines().map(str::to_owned).collect()
    }

    pub fn container_name(&self, workspace_id: &str) -> String {
        format!("am-{}-{workspace_id}", self.mesh_id)
    }
}

impl Drop for TestNetwork {
    fn drop(&mut self) {
        for container in self.containers() {
            docker(&["rm", "-f", &container]);
        }
        for extra in [format!("am-{}-stranger", self.mesh_id), format!("am-{}-unlabelled", self.mesh_id)] {
            docker(&["rm", "-f", &extra]);
        }
        for volume in self.volumes() {
            docker(&["volume", "rm", "-f", &volume]);
        }
        docker(&["network", "rm", &self.name]);
    }
}

/// The locally built echo agent image, built once per test run.
pub async fn echo_image() -> String {
    tokio::task::spawn_blocking(|| agentmesh_testkit::images::echo_agent_image().to_owned()).await.unwrap()
}

/// A Docker workspace running the echo agent with `args`.
pub fn echo_spec(name: &str, image: &str, args: &[&str], restart: ppb::RestartPolicy) -> ppb::WorkspaceSpec {
    ppb::WorkspaceSpec {
        name: name.to_owned(),
        runtime_kind: RuntimeKind::Docker as i32,
        image: image.to_owned(),
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        env: [("AGENTMESH_HEARTBEAT_INTERVAL_MS".to_owned(), "500".to_owned())].into(),
        restart_policy: restart as i32,
        ..Default::default()
    }
}

/// Waits for the engine to report `event` (e.g. "destroy") for an object
/// of `kind` ("container", "volume"), replaying events since `since` (unix
/// seconds) so an earlier one counts.
pub async fn engine_event(kind: &str, name: &str, event: &str, since: u64, within: std::time::Duration) {
    use tokio::io::AsyncBufReadExt;
    let mut child = tokio::process::Command::new("docker")
        .args(["events", "--since", &since.to_string(), "--filter", &format!("{kind}={name}")])
        .args(["--filter", &format!("event={event}"), "--format", "{{.Status}}"])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("docker events");
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(within, lines.next_line()).await;
    assert!(matches!(line, Ok(Ok(Some(_)))), "no {event} event for {name} within {within:?}");
}

pub fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs()
}

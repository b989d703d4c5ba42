//! The README's walk through the mesh runs top to bottom, as written,
//! against both ways the README starts the mesh: `deploy/local/up.sh` and
//! the Compose stack. The commands are taken from the README itself (the
//! `sh` blocks between its walkthrough markers), so the two cannot drift
//! apart.

use std::{
    path::Path,
    process::{Command, Stdio},
    time::Duration,
};

use agentmesh_e2e::{
    compose::{self, HostPorts, Stack},
    docker, mesh,
};
use agentmesh_testkit::images::workspace_root;

/// The documented addresses the walkthrough calls.
const PORTS: [u16; 5] = [
    compose::REGISTRY_PORT,
    compose::PROVISIONER_PORT,
    compose::GATEWAY_PORT,
    compose::SCHEDULER_PORT,
    compose::A2A_PORT,
];

/// The shell commands of the README's walkthrough, in order.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let start = readme.find("<!-- walkthrough -->").expect("the README marks its walkthrough");
    let end = readme.find("<!-- /walkthrough -->").expect("the README marks the walkthrough's end");
    let mut script = String::new();
    let mut blocks = readme[start..end].split("```sh\n").skip(1);
    for block in blocks.by_ref() {
        script.push_str(block.split("```").next().unwrap());
    }
    assert!(script.contains("grpcurl"), "no commands found in the walkthrough");
    script
}

/// Runs the walkthrough with bash in `dir`, stopping at the first failing
/// command, and checks what a reader would look for in its output.
async fn walk(dir: &Path, env: &[(&str, &str)]) {
    let mut command = tokio::process::Command::new("bash");
    command.args(["-euo", "pipefail", "-c", &walkthrough()]).current_dir(dir).stdin(Stdio::null());
    // The command line as a reader's clone has it built, with its contexts
    // kept apart from this machine's.
    command.env("CARGO_TARGET_DIR", target_dir()).env("AGENTMESH_CONFIG", dir.join("agentmesh.toml"));
    for (name, value) in env {
        command.env(name, value);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the walkthrough finishes within 5 minutes")
        .unwrap();
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(output.status.success(), "the walkthrough failed ({}):\n{stdout}\n{stderr}", output.status);
    for expected in [
        "agentmesh.registry.v1.RegistryService",
        "serving",
        "degraded",
        "echo: hi",
        "echo: streamed",
        "RUN_OUTCOME_DELIVERED",
        "deleted: removed",
    ] {
        assert!(stdout.contains(expected), "the walkthrough printed no {expected:?}:\n{stdout}\n{stderr}");
    }
    assert!(stderr.contains("169.254.169.254"), "the hostile URL is refused with the reason:\n{stderr}");
}

/// Where the build puts its output, as the README's commands find it.
fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| workspace_root().join("target"), Into::into)
}

/// Whether the documented ports are free; a machine already running a mesh
/// skips this test, except in CI. The documented ports lie in Linux's
/// ephemeral range, so an earlier test's client connection may hold one in
/// TIME_WAIT; the kernel frees it within a minute, and nothing announces
/// when, so this looks again each second for up to 70 s.
async fn documented_ports_free() -> bool {
    let taken = || -> Vec<u16> {
        PORTS.into_iter().filter(|port| std::net::TcpListener::bind(("127.0.0.1", *port)).is_err()).collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(70);
    let mut held = taken();
    while !held.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(1)).await;
        held = taken();
    }
    if !held.is_empty() {
        assert!(std::env::var_os("CI").is_none(), "CI needs the documented ports free, taken: {held:?}");
        eprintln!("skipping: the documented ports {held:?} are taken");
    }
    held.is_empty()
}

/// `deploy/local/up.sh`, stopped (with the services it started) when dropped.
struct LocalRun(std::process::Child);

impl LocalRun {
    fn start(data_dir: &Path) -> Self {
        use std::os::unix::process::CommandExt;
        let child = Command::new(workspace_root().join("deploy/local/up.sh"))
            .env("AGENTMESH_DATA_DIR", data_dir)
            .env("AGENTMESH_CONFIG", data_dir.with_file_name("agentmesh.toml"))
            .stdout(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("starting deploy/local/up.sh");
        Self(child)
    }
}

impl Drop for LocalRun {
    fn drop(&mut self) {
        // up.sh runs `agentmesh dev` in its place, which stops on SIGTERM.
        let _ = Command::new("kill").args(["-s", "TERM", "--", &format!("-{}", self.0.id())]).status();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_readme_walkthrough_runs_as_written_against_the_local_run_and_the_compose_stack() {
    if !docker::engine_available().await || !documented_ports_free().await {
        return;
    }
    let grpc_addresses: Vec<String> = PORTS[..4].iter().map(|port| format!("127.0.0.1:{port}")).collect();

    // The local run, its data directory where the walkthrough looks for it.
    let dir = tempfile::tempdir().unwrap();
    let local = LocalRun::start(&dir.path().join("data"));
    for address in &grpc_addresses {
        mesh::until_serving(address, Duration::from_secs(600)).await;
    }
    walk(dir.path(), &[]).await;
    drop(local);

    // The Compose stack, on the documented ports, reached through the same
    // relative paths a user's clone has.
    let Some(stack) = Stack::up("", &[], HostPorts::Documented).await else { return };
    for address in &grpc_addresses {
        mesh::until_serving(address, Duration::from_secs(120)).await;
    }
    let clone = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(workspace_root().join("deploy"), clone.path().join("deploy")).unwrap();
    walk(clone.path(), &[("COMPOSE_PROJECT_NAME", stack.project())]).await;
    assert_eq!(stack.down().await, Vec::<String>::new(), "left behind by docker-compose down");
}

//! The provisioner's API on a machine without Docker: the process runtime
//! runs the real echo agent under the real shim; external workspaces; the
//! policy gate; validation at the edge.

mod common;

use std::{collections::HashMap, sync::Arc, time::Duration};

use agentmesh_proto::provisioner::v1 as ppb;
use agentmesh_proto::registry::v1::{self as rpb, WorkspaceStatus, registry_service_client::RegistryServiceClient};
use agentmesh_provisioner::runtime::{
    Identity, Runtime, RuntimeKind,
    docker::{DockerRuntime, DockerSettings},
    external::ExternalRuntime,
    process::ProcessRuntime,
};
use common::{ProvisionerNode, RegistryNode, error_info};
use tonic::{Code, Status};

const BOOT: Duration = Duration::from_secs(30);

struct Mesh {
    registry: RegistryNode,
    provisioner: ProvisionerNode,
    mesh_id: String,
    _state: tempfile::TempDir,
}

/// Agents run in process groups of their own and outlive the provisioner
/// (as they should); the test's own are killed when it ends.
impl Drop for Mesh {
    fn drop(&mut self) {
        let mark = format!("AGENTMESH_MESH_ID={}", self.mesh_id);
        let Ok(entries) = std::fs::read_dir("/proc") else { return };
        for entry in entries.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|name| name.parse::<i32>().ok()) else { continue };
            let Ok(environ) = std::fs::read(entry.path().join("environ")) else { continue };
            if environ.split(|&b| b == 0).any(|var| var == mark.as_bytes()) {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// A mesh whose Docker engine does not exist: only processes and external
/// agents can run.
async fn mesh(tune: impl FnOnce(&mut agentmesh_provisioner::settings::ProvisionerSettings)) -> Mesh {
    let registry = RegistryNode::start([127, 0, 0, 1].into()).await;
    let state = tempfile::tempdir().unwrap();
    let mesh_id = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..10]);
    let identity = |instance: &str| Identity { mesh_id: mesh_id.clone(), instance: instance.to_owned() };
    let no_docker =
        DockerRuntime::connect("unix:///nonexistent/docker.sock", identity("docker:none"), DockerSettings::default())
            .unwrap();
    let runtimes: Vec<Arc<dyn Runtime>> = vec![
        Arc::new(no_docker),
        Arc::new(ProcessRuntime::new(identity("process:test"), state.path().to_owned())),
        Arc::new(ExternalRuntime::new(identity("external"))),
    ];
    let provisioner = ProvisionerNode::start(&registry, runtimes, |s| {
        s.mesh_id.clone_from(&mesh_id);
        tune(s);
    })
    .await;
    Mesh { registry, provisioner, mesh_id, _state: state }
}

/// The echo agent as a local process, wrapped by the agent shim.
fn process_spec(name: &str) -> ppb::WorkspaceSpec {
    let binaries = agentmesh_testkit::images::static_binaries();
    ppb::WorkspaceSpec {
        name: name.to_owned(),
        runtime_kind: RuntimeKind::Process as i32,
        command: binaries.shim.display().to_string(),
        args: vec!["--".into(), binaries.echo_agent.display().to_string()],
        env: [
            ("AGENTMESH_HEARTBEAT_INTERVAL_MS".to_owned(), "500".to_owned()),
            ("AGENTMESH_AGENT_PORT".to_owned(), agentmesh_testkit::free_port().to_string()),
        ]
        .into(),
        ..Default::default()
    }
}

fn policy(tune: impl FnOnce(&mut ppb::Policy)) -> ppb::ReloadPolicyRequest {
    let mut policy = ppb::Policy::default();
    tune(&mut policy);
    ppb::ReloadPolicyRequest { policy: Some(policy), ..Default::default() }
}

fn assert_reason(status: &Status, code: Code, reason: &str) -> HashMap<String, String> {
    assert_eq!(status.code(), code, "{status:?}");
    let (got, metadata) = error_info(status);
    assert_eq!(got, reason, "{status:?}");
    metadata
}

#[tokio::test]
async fn the_process_runtime_runs_an_agent_where_no_docker_engine_exists() {
    let mesh = mesh(|_| {}).await;
    let mut client = mesh.provisioner.client.clone();
    let id = mesh.provisioner.create(process_spec("local")).await.unwrap().workspace.unwrap().id;
    let mut watch = mesh.registry.watch(&id).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;

    let runtimes = client.list_runtimes(ppb::ListRuntimesRequest::default()).await.unwrap().into_inner().runtimes;
    let docker = runtimes.iter().find(|r| r.name == "docker:none").unwrap();
    assert_ne!(docker.health(), ppb::RuntimeHealth::Healthy);

    let stopped = client
        .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.workspace.unwrap().status(), WorkspaceStatus::Stopped);
    assert!(!stopped.already_gone);
    let again = client
        .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(again.already_gone, "a second stop finds nothing and still succeeds");

    let started = client
        .start_workspace(ppb::StartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(started.changed);
    watch.until(WorkspaceStatus::Online, BOOT).await;
    let logs = client
        .get_logs(ppb::GetLogsRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner()
        .message()
        .await
        .unwrap();
    assert!(logs.is_some_and(|batch| !batch.lines.is_empty()), "the agent's output is kept");

    // A docker workspace on an engine that is not there: UNAVAILABLE, the
    // record is left FAILED and named.
    let spec = ppb::WorkspaceSpec {
        name: "no-engine".into(),
        runtime_kind: RuntimeKind::Docker as i32,
        image: "agentmesh/echo-agent:dev".into(),
        ..Default::default()
    };
    let refused = mesh.provisioner.create(spec).await.unwrap_err();
    let metadata = assert_reason(&refused, Code::Unavailable, "RUNTIME_UNAVAILABLE");
    let failed = mesh.registry.get(&metadata["workspace_id"]).await;
    assert_eq!(failed.status(), WorkspaceStatus::Failed);
    // Delete tombstones first, so an unreachable engine does not fail it;
    // the reply says the cleanup is pending.
    let deleted = client
        .delete_workspace(ppb::DeleteWorkspaceRequest { workspace_id: failed.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(deleted.workspace.unwrap().status(), WorkspaceStatus::Removed);
    assert!(!deleted.workload_removed);
    assert!(deleted.cleanup_error.contains("unavailable"), "{}", deleted.cleanup_error);
}

#[tokio::test]
async fn a_denied_create_persists_nothing_and_says_why() {
    let mesh = mesh(|_| {}).await;
    let mut client = mesh.provisioner.client.clone();
    client.reload_policy(policy(|p| p.allowed_runtime_kinds = vec![RuntimeKind::External as i32])).await.unwrap();
    let refused = mesh.provisioner.create(process_spec("denied")).await.unwrap_err();
    assert_reason(&refused, Code::FailedPrecondition, "POLICY_DENIED");
    assert!(refused.message().contains("runtime kind process"), "{}", refused.message());
    assert!(mesh.registry.list_all().await.is_empty(), "no record was created");
}

#[tokio::test]
async fn policy_changes_stop_what_no_longer_complies_and_gate_restarts() {
    let policy_file = tempfile::NamedTempFile::new().unwrap();
    let path = policy_file.path().to_owned();
    let mesh = mesh(|s| s.policy_file = Some(path)).await;
    let mut client = mesh.provisioner.client.clone();
    let running = mesh.provisioner.create(process_spec("running")).await.unwrap().workspace.unwrap().id;
    let resting = mesh.provisioner.create(process_spec("resting")).await.unwrap().workspace.unwrap().id;
    let mut running_watch = mesh.registry.watch(&running).await;
    running_watch.until(WorkspaceStatus::Online, BOOT).await;
    mesh.registry.watch(&resting).await.until(WorkspaceStatus::Online, BOOT).await;
    client
        .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: resting.clone(), ..Default::default() })
        .await
        .unwrap();

    // A dry run reports and changes nothing.
    std::fs::write(policy_file.path(), "allowed_commands = [\"/opt/approved/*\"]\n").unwrap();
    let dry = client
        .reload_policy(ppb::ReloadPolicyRequest { dry_run: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((dry.changed, dry.would_change), (false, true));
    assert_eq!(dry.violation_count, 1);
    assert_eq!(dry.violations[0].workspace_id, running);
    let active = client.get_policy(ppb::GetPolicyRequest {}).await.unwrap().into_inner().policy.unwrap();
    assert!(active.allowed_commands.is_empty());

    // For real, from the file: the running workspace breaks it and is stopped.
    let reload = client.reload_policy(ppb::ReloadPolicyRequest::default()).await.unwrap().into_inner();
    let policy = reload.policy.unwrap();
    assert!(reload.changed && reload.would_change);
    assert!(policy.source.starts_with("file:"), "{}", policy.source);
    let reason = running_watch.until(WorkspaceStatus::PolicyStopped, BOOT).await;
    assert!(reason.contains("matches no allowed command pattern"), "{reason}");

    // A restart passes the gate too: refused, and the workspace says why.
    let refused = client
        .restart_workspace(ppb::RestartWorkspaceRequest { workspace_id: resting.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert_reason(&refused, Code::FailedPrecondition, "POLICY_DENIED");
    let record = mesh.registry.get(&resting).await;
    assert_eq!(record.status(), WorkspaceStatus::PolicyStopped);
    assert!(record.status_reason.contains("policy"), "{}", record.status_reason);

    // Compare-and-set on the revision, and a broken file keeps the policy.
    let stale = policy.revision - 1;
    let mut request = policy_request_allowing_all();
    request.expected_revision = Some(stale);
    let refused = client.reload_policy(request).await.unwrap_err();
    assert_reason(&refused, Code::Aborted, "REVISION_MISMATCH");
    std::fs::write(policy_file.path(), "allowed_commands = 3\n").unwrap();
    let refused = client.reload_policy(ppb::ReloadPolicyRequest::default()).await.unwrap_err();
    assert_reason(&refused, Code::FailedPrecondition, "POLICY_INVALID");
    let active = client.get_policy(ppb::GetPolicyRequest {}).await.unwrap().into_inner().policy.unwrap();
    assert_eq!(active.revision, policy.revision);
}

fn policy_request_allowing_all() -> ppb::ReloadPolicyRequest {
    policy(|_| {})
}

#[tokio::test]
async fn external_workspaces_get_what_they_need_to_connect_and_clear_refusals() {
    let mesh = mesh(|s| s.external_registry_address = "https://registry.mesh.example.com:7443".into()).await;
    let mut client = mesh.provisioner.client.clone();
    let spec =
        ppb::WorkspaceSpec { name: "remote".into(), runtime_kind: RuntimeKind::External as i32, ..Default::default() };
    let created = mesh.provisioner.create(spec).await.unwrap();
    let workspace = created.workspace.unwrap();
    assert_eq!(workspace.status(), WorkspaceStatus::AwaitingAgent);
    let connection = created.connection.expect("what the agent needs");
    assert_eq!(connection.registry_address, "https://registry.mesh.example.com:7443");
    assert_eq!(connection.workspace_id, workspace.id);
    let id = workspace.id;

    let hint = |status: Status| assert_reason(&status, Code::FailedPrecondition, "EXTERNAL_WORKSPACE")["hint"].clone();
    let restart = client
        .restart_workspace(ppb::RestartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(!restart.message().contains("not running"), "{}", restart.message());
    assert!(hint(restart).contains("where it runs"));
    let logs =
        client.get_logs(ppb::GetLogsRequest { workspace_id: id.clone(), ..Default::default() }).await.unwrap_err();
    assert!(hint(logs).contains("where the agent runs"));
    let exec = ppb::ExecRequest { workspace_id: id.clone(), command: vec!["ls".into()], timeout_seconds: 0 };
    hint(client.exec(exec).await.unwrap_err());
    let hibernate = ppb::HibernateWorkspaceRequest { workspace_id: id.clone(), ..Default::default() };
    hint(client.hibernate_workspace(hibernate).await.unwrap_err());
    let runtime = ppb::GetWorkspaceRuntimeRequest { workspace_id: id.clone() };
    hint(client.get_workspace_runtime(runtime).await.unwrap_err());

    // The token from the reply is the agent's credential.
    let channel = tonic::transport::Channel::from_shared(mesh.registry.url()).unwrap().connect().await.unwrap();
    let token: tonic::metadata::MetadataValue<_> = format!("Bearer {}", connection.token).parse().unwrap();
    let mut agent = RegistryServiceClient::with_interceptor(channel, move |mut request: tonic::Request<()>| {
        request.metadata_mut().insert("authorization", token.clone());
        Ok(request)
    });
    let register =
        rpb::RegisterRequest { workspace_id: id.clone(), url: "http://127.0.0.1:9".into(), ..Default::default() };
    agent.register(register).await.unwrap();
    let beat = rpb::HeartbeatRequest { workspace_id: id.clone(), ..Default::default() };
    assert_eq!(agent.heartbeat(beat.clone()).await.unwrap().into_inner().status(), WorkspaceStatus::Online);

    // Stopped: heartbeats do not bring it back; a start awaits the agent again.
    let stopped = client
        .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stopped.workspace.unwrap().status(), WorkspaceStatus::Stopped);
    assert_eq!(agent.heartbeat(beat).await.unwrap().into_inner().status(), WorkspaceStatus::Stopped);
    let started = client
        .start_workspace(ppb::StartWorkspaceRequest { workspace_id: id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(started.workspace.unwrap().status(), WorkspaceStatus::AwaitingAgent);
}

#[tokio::test]
async fn bad_input_names_the_field_and_creates_nothing() {
    let mesh = mesh(|_| {}).await;
    let valid = process_spec("valid");
    let cases: Vec<(&str, ppb::WorkspaceSpec)> = vec![
        ("spec.name", ppb::WorkspaceSpec { name: " ".into(), ..valid.clone() }),
        ("spec.runtime_kind", ppb::WorkspaceSpec { runtime_kind: 0, ..valid.clone() }),
        (
            "spec.runtime_kind",
            ppb::WorkspaceSpec { runtime_kind: RuntimeKind::Kubernetes as i32, image: "x".into(), ..valid.clone() },
        ),
        ("spec.command", ppb::WorkspaceSpec { command: String::new(), ..valid.clone() }),
        ("spec.image", ppb::WorkspaceSpec { image: "alpine".into(), ..valid.clone() }),
        ("spec.env", ppb::WorkspaceSpec { env: [("AGENTMESH_TOKEN".into(), "x".into())].into(), ..valid.clone() }),
        ("spec.env", ppb::WorkspaceSpec { env: [("1BAD".into(), "x".into())].into(), ..valid.clone() }),
        ("spec.tier", ppb::WorkspaceSpec { tier: "gigantic".into(), ..valid.clone() }),
        ("spec.parent_id", ppb::WorkspaceSpec { parent_id: Some("nope".into()), ..valid.clone() }),
        ("spec.restart_policy", ppb::WorkspaceSpec { restart_policy: 9, ..valid.clone() }),
        (
            "spec.hibernate_after_idle_seconds",
            ppb::WorkspaceSpec { hibernate_after_idle_seconds: Some(5), ..valid.clone() },
        ),
        ("spec.runtime_instance", ppb::WorkspaceSpec { runtime_instance: "docker:none".into(), ..valid.clone() }),
        (
            "spec.args",
            ppb::WorkspaceSpec { runtime_kind: RuntimeKind::External as i32, command: String::new(), ..valid.clone() },
        ),
    ];
    for (field, spec) in cases {
        let refused = mesh.provisioner.create(spec).await.unwrap_err();
        assert_eq!(refused.code(), Code::InvalidArgument, "{field}: {refused:?}");
        use tonic_types::StatusExt;
        let violations = refused.get_details_bad_request().unwrap().field_violations;
        assert_eq!(violations[0].field, field, "{refused:?}");
    }
    let mut client = mesh.provisioner.client.clone();
    let refused = client
        .stop_workspace(ppb::StopWorkspaceRequest { workspace_id: "x".into(), ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    let unknown = uuid::Uuid::new_v4().to_string();
    let refused = client
        .stop_workspace(ppb::StopWorkspaceRequest {
            workspace_id: unknown,
            grace_period_seconds: 601,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "grace over 600 s");
    assert!(mesh.registry.list_all().await.is_empty());
}

#[tokio::test]
async fn idle_workspaces_hibernate_and_wake_on_demand() {
    let mesh = mesh(|s| {
        s.hibernate_after_idle_secs = 1;
        s.hibernate_check_interval_ms = 100;
    })
    .await;
    let mut client = mesh.provisioner.client.clone();
    let id = mesh.provisioner.create(process_spec("sleepy")).await.unwrap().workspace.unwrap().id;
    let mut watch = mesh.registry.watch(&id).await;
    watch.until(WorkspaceStatus::Online, BOOT).await;
    let reason = watch.until(WorkspaceStatus::Hibernated, BOOT).await;
    assert!(reason.contains("idle"), "{reason}");
    let state = client
        .get_workspace_runtime(ppb::GetWorkspaceRuntimeRequest { workspace_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(state.state(), ppb::RunningState::NotRunning, "a hibernated workspace runs nothing");

    let wake = ppb::WakeWorkspaceRequest { workspace_id: id.clone(), reason: "message queued".into() };
    let woken = client.wake_workspace(wake.clone()).await.unwrap().into_inner();
    assert!(woken.changed);
    assert_eq!(woken.workspace.unwrap().status(), WorkspaceStatus::Provisioning);
    assert!(!client.wake_workspace(wake).await.unwrap().into_inner().changed, "racing wakes are harmless");
    watch.until(WorkspaceStatus::Online, BOOT).await;
}

#[tokio::test]
async fn an_always_policy_restarts_even_a_clean_exit_and_a_stop_is_never_undone() {
    let mesh = mesh(|_| {}).await;
    let mut client = mesh.provisioner.client.clone();
    let mut spec = process_spec("phoenix");
    spec.args.extend(["--exit-after-ms".into(), "2000".into(), "--exit-code".into(), "0".into()]);
    spec.restart_policy = ppb::RestartPolicy::Always as i32;
    let id = mesh.provisioner.create(spec).await.unwrap().workspace.unwrap().id;
    let mut watch = mesh.registry.watch(&id).await;
    watch.until(WorkspaceStatus::Stopped, BOOT).await;
    let reason = watch.until(WorkspaceStatus::Provisioning, BOOT).await;
    assert!(reason.contains("restart policy"), "{reason}");
    watch.until(WorkspaceStatus::Online, BOOT).await;

    client.stop_workspace(ppb::StopWorkspaceRequest { workspace_id: id.clone(), ..Default::default() }).await.unwrap();
    let state = client
        .get_workspace_runtime(ppb::GetWorkspaceRuntimeRequest { workspace_id: id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert!(state.next_restart_at.is_none(), "a stop on request cancels pending restarts: {state:?}");
    assert_eq!(mesh.registry.get(&id).await.status(), WorkspaceStatus::Stopped);
}

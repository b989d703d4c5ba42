//! The shim binary wrapping the echo agent, against a real in-process
//! registry: registration, heartbeats and capabilities, the token claimed on
//! first registration, an agent that stops answering, exit codes and signal
//! forwarding.

use std::{
    path::Path,
    process::{ExitStatus, Stdio},
    time::{Duration, Instant},
};

use agentmesh_chassis::{AuthConfig, ServerConfig, config::Config};
use agentmesh_netguard::{NetworkMode, UrlGuard};
use agentmesh_proto::registry::v1::{
    CreateWorkspaceRequest, GetWorkspaceRequest, RuntimeKind, Workspace, WorkspaceStatus,
    registry_service_client::RegistryServiceClient,
};
use agentmesh_registry::settings::RegistrySettings;
use nix::{
    sys::signal::{Signal, kill},
    unistd::Pid,
};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

const SHIM: &str = env!("CARGO_BIN_EXE_agentmesh-agent-shim");
const OPERATOR_TOKEN: &str = "operator-token-for-shim-tests-0123456789";
const TIMEOUT: Duration = Duration::from_secs(20);

/// A registry gRPC server on 127.0.0.1 that accepts loopback agent URLs.
struct Registry {
    address: std::net::SocketAddr,
    shutdown: CancellationToken,
    _data: tempfile::TempDir,
}

impl Registry {
    async fn start() -> Self {
        let data = tempfile::tempdir().unwrap();
        let mut server = ServerConfig {
            database_url: Some(format!("sqlite://{}", data.path().join("registry.db").display())),
            data_dir: data.path().to_owned(),
            readiness_interval_ms: 200,
            ..ServerConfig::default()
        };
        server.auth = AuthConfig { operator_tokens: vec![OPERATOR_TOKEN.into()], service_tokens: vec![] };
        let service =
            RegistrySettings { sweep_interval_ms: 3_600_000, event_poll_ms: 50, ..RegistrySettings::default() };
        let config = Config { server, service, ignored_env: vec![] };
        let (authenticator, _) = config.server.auth.authenticator(data.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let guard = UrlGuard::new(NetworkMode::Dev);
        tokio::spawn(agentmesh_registry::server::run(config, listener, authenticator, guard, shutdown.clone()));
        Self { address, shutdown, _data: data }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn operator(&self) -> RegistryServiceClient<Channel> {
        let channel = Channel::from_shared(self.url()).unwrap().connect_lazy();
        RegistryServiceClient::new(channel)
    }

    fn authorized<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_TOKEN}").parse().unwrap());
        request
    }

    /// A new workspace's id and, when issued, its token. Retries while the
    /// server is still starting.
    async fn create(&self, kind: RuntimeKind, issue_token: bool) -> (String, String) {
        let mut client = self.operator().await;
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let request = CreateWorkspaceRequest {
                name: "echo".into(),
                runtime_kind: kind as i32,
                runtime_instance: "process:shim-tests".into(),
                issue_token,
                ..CreateWorkspaceRequest::default()
            };
            match client.create_workspace(Self::authorized(request)).await {
                Ok(response) => {
                    let response = response.into_inner();
                    return (response.workspace.unwrap().id, response.token);
                }
                Err(status) => assert!(Instant::now() < deadline, "registry never served: {status}"),
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn workspace(&self, id: &str) -> Workspace {
        let request = Self::authorized(GetWorkspaceRequest { workspace_id: id.to_owned() });
        self.operator().await.get_workspace(request).await.unwrap().into_inner().workspace.unwrap()
    }

    /// Waits until the workspace satisfies `done`.
    async fn wait_for(&self, id: &str, what: &str, done: impl Fn(&Workspace) -> bool) -> Workspace {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let workspace = self.workspace(id).await;
            if done(&workspace) {
                return workspace;
            }
            assert!(Instant::now() < deadline, "workspace never became {what}: {workspace:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A loopback port nobody listens on. The agent binds it a moment later
/// (the shim passes the port down; it cannot hand over a bound socket).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn echo_agent() -> &'static Path {
    &agentmesh_testkit::images::static_binaries().echo_agent
}

/// The shim wrapping `program`, with `env` on top of a clean AGENTMESH_* slate.
fn shim(env: &[(&str, String)], program: &Path, args: &[&str]) -> Child {
    let mut command = Command::new(SHIM);
    for (key, _) in std::env::vars().filter(|(key, _)| key.starts_with("AGENTMESH_") || key == "PORT") {
        command.env_remove(key);
    }
    command.envs(env.iter().map(|(key, value)| (*key, value))).arg("--").arg(program).args(args);
    command.stdin(Stdio::null()).kill_on_drop(true).spawn().unwrap()
}

fn mesh_env(registry: &Registry, workspace_id: &str, port: u16) -> Vec<(&'static str, String)> {
    vec![
        ("AGENTMESH_REGISTRY_ADDR", registry.url()),
        ("AGENTMESH_WORKSPACE_ID", workspace_id.to_owned()),
        ("AGENTMESH_AGENT_PORT", port.to_string()),
        ("AGENTMESH_HEARTBEAT_INTERVAL_MS", "200".to_owned()),
    ]
}

fn signal(child: &Child, signal: Signal) {
    kill(Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()), signal).unwrap();
}

/// The pid of the shim's only child.
fn agent_pid(shim: &Child) -> Pid {
    let pid = shim.id().unwrap();
    let children = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap();
    Pid::from_raw(children.split_whitespace().next().expect("the shim has a child").parse().unwrap())
}

async fn exit_status(child: &mut Child) -> ExitStatus {
    tokio::time::timeout(TIMEOUT, child.wait()).await.expect("the shim did not exit").unwrap()
}

async fn agent_answers(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registers_the_agent_which_comes_online_with_its_declared_capabilities() {
    let agent = echo_agent();
    let registry = Registry::start().await;
    let (id, token) = registry.create(RuntimeKind::Process, true).await;
    let port = free_port();
    let mut env = mesh_env(&registry, &id, port);
    env.push(("AGENTMESH_TOKEN", token));
    let args = ["--listen", "127.0.0.1:0", "--native-session", "--native-status-mgmt", "--idle-timeout-seconds", "120"];
    let mut shim = shim(&env, agent, &args);

    let online = WorkspaceStatus::Online as i32;
    let workspace = registry.wait_for(&id, "online", |w| w.status == online).await;
    let url = format!("http://127.0.0.1:{port}/");
    assert_eq!(workspace.url, url);
    let capabilities = workspace.capabilities.unwrap();
    assert!(capabilities.native_session && capabilities.native_status_mgmt && !capabilities.native_scheduler);
    assert_eq!(workspace.idle_timeout_seconds, Some(120));
    let card: serde_json::Value = serde_json::from_str(&workspace.agent_card_json).unwrap();
    assert_eq!(card["supportedInterfaces"][0]["url"], url, "the card advertises the registered URL");

    // Heartbeats keep coming.
    let first = workspace.last_heartbeat_at.unwrap();
    registry.wait_for(&id, "heartbeated again", |w| w.last_heartbeat_at.as_ref().is_some_and(|t| *t != first)).await;

    signal(&shim, Signal::SIGTERM);
    assert_eq!(exit_status(&mut shim).await.code(), Some(0));
    assert!(!agent_answers(port).await, "the agent outlived the shim");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_registration_claims_the_token_used_for_heartbeats() {
    let agent = echo_agent();
    let registry = Registry::start().await;
    let (id, token) = registry.create(RuntimeKind::External, false).await;
    assert!(token.is_empty());
    let port = free_port();
    let mut env = mesh_env(&registry, &id, port);
    // Declared by the shim because the agent has no status endpoint here.
    env.push(("AGENTMESH_AGENT_STATUS_PATH", "/no-such-status".to_owned()));
    env.push(("AGENTMESH_CAPABILITIES", "native_scheduler".to_owned()));
    let mut shim = shim(&env, agent, &["--listen", "127.0.0.1:0", "--native-session"]);

    let online = WorkspaceStatus::Online as i32;
    let workspace = registry.wait_for(&id, "online", |w| w.status == online).await;
    let capabilities = workspace.capabilities.unwrap();
    assert!(capabilities.native_scheduler && !capabilities.native_session);
    let first = workspace.last_heartbeat_at.unwrap();
    registry.wait_for(&id, "heartbeated again", |w| w.last_heartbeat_at.as_ref().is_some_and(|t| *t != first)).await;

    signal(&shim, Signal::SIGINT);
    assert_eq!(exit_status(&mut shim).await.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_stops_answering_heartbeats_unresponsive() {
    let agent = echo_agent();
    let registry = Registry::start().await;
    let (id, token) = registry.create(RuntimeKind::Process, true).await;
    let port = free_port();
    let mut env = mesh_env(&registry, &id, port);
    env.push(("AGENTMESH_TOKEN", token));
    let mut shim = shim(&env, agent, &["--listen", "127.0.0.1:0"]);
    let online = WorkspaceStatus::Online as i32;
    registry.wait_for(&id, "online", |w| w.status == online).await;

    let agent = agent_pid(&shim);
    kill(agent, Signal::SIGSTOP).unwrap();
    registry.wait_for(&id, "unresponsive", |w| w.runtime_state == "unresponsive").await;
    kill(agent, Signal::SIGCONT).unwrap();
    registry.wait_for(&id, "responsive", |w| w.runtime_state.is_empty()).await;

    signal(&shim, Signal::SIGTERM);
    assert_eq!(exit_status(&mut shim).await.code(), Some(0));
}

#[tokio::test]
async fn exits_with_the_agents_exit_code_even_when_the_registry_is_unreachable() {
    let agent = echo_agent();
    let port = free_port();
    let env = [
        ("AGENTMESH_REGISTRY_ADDR", format!("http://127.0.0.1:{}", free_port())),
        ("AGENTMESH_WORKSPACE_ID", uuid::Uuid::new_v4().to_string()),
        ("AGENTMESH_AGENT_PORT", port.to_string()),
    ];
    let mut shim = shim(&env, agent, &["--listen", "127.0.0.1:0", "--exit-after-ms", "300", "--exit-code", "3"]);
    assert_eq!(exit_status(&mut shim).await.code(), Some(3));
}

#[tokio::test]
async fn reports_death_by_signal_and_missing_programs_like_a_shell() {
    let env = [("AGENTMESH_AGENT_PORT", free_port().to_string())];
    let mut killed = shim(&env, Path::new("/bin/sh"), &["-c", "kill -KILL $$"]);
    assert_eq!(exit_status(&mut killed).await.code(), Some(128 + 9));
    let mut missing = shim(&env, Path::new("/nonexistent/agent"), &[]);
    assert_eq!(exit_status(&mut missing).await.code(), Some(127));
}

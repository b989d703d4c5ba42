//! A small mesh in one process for the services' integration tests: a real
//! registry, a gateway on real listeners, and echo agents that register and
//! heartbeat through the registry's API the way the agent shim does.
//!
//! It depends on the services it starts, which dev-depend on it: Cargo links
//! one copy of each service into an integration test, so that is sound; unit
//! tests (`#[cfg(test)]`) must not use it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agentmesh_a2a_gateway::settings::GatewaySettings;
use agentmesh_chassis::{
    AuthConfig, ServerConfig,
    client::{ServiceChannel, service_channel},
    config::{Config, TlsConfig},
};
use agentmesh_netguard::{NetworkMode, UrlGuard};
use agentmesh_proto::{
    a2a::v1::a2a_service_client::A2aServiceClient,
    gateway::v1::gateway_service_client::GatewayServiceClient,
    registry::v1::{self as rpb, registry_service_client::RegistryServiceClient},
    scheduler::v1::scheduler_service_client::SchedulerServiceClient,
};
use agentmesh_registry::settings::RegistrySettings;
use agentmesh_scheduler::{dispatch::Dispatcher, settings::SchedulerSettings};
pub use agentmesh_testkit::{
    a2a::{Caller, Events, RpcReply, reply_text, send_request},
    eventually,
};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

pub const OPERATOR_TOKEN: &str = "operator-token-for-mesh-tests";
pub const SERVICE_TOKEN: &str = "service-token-for-mesh-tests";

pub type Registry = RegistryServiceClient<ServiceChannel>;

/// A service's server settings in tests: its store, its data directory, the
/// shared test tokens, and readiness checked often.
fn server_config(database_url: &str, data_dir: &std::path::Path) -> ServerConfig {
    ServerConfig {
        database_url: Some(database_url.to_owned()),
        data_dir: data_dir.to_owned(),
        readiness_interval_ms: 100,
        auth: AuthConfig { operator_tokens: vec![OPERATOR_TOKEN.into()], service_tokens: vec![SERVICE_TOKEN.into()] },
        ..ServerConfig::default()
    }
}

pub struct RegistryNode {
    pub address: SocketAddr,
    pub client: Registry,
    pub dir: tempfile::TempDir,
    database_file: std::path::PathBuf,
    shutdown: CancellationToken,
}

impl RegistryNode {
    /// A registry that accepts loopback agent URLs (dev mode).
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("registry.db");
        Self::start_in(dir, file).await
    }

    /// A second replica on the store of another.
    pub async fn start_on(database_file: std::path::PathBuf) -> Self {
        Self::start_in(tempfile::tempdir().unwrap(), database_file).await
    }

    async fn start_in(dir: tempfile::TempDir, database_file: std::path::PathBuf) -> Self {
        let (address, shutdown) = launch_registry(dir.path(), &database_file, None).await;
        agentmesh_testkit::grpc::serving_channel(address).await;
        let client =
            RegistryServiceClient::new(service_channel(&format!("http://{address}"), OPERATOR_TOKEN, None).unwrap());
        Self { address, client, dir, database_file, shutdown }
    }

    /// A replica on this registry's store that serves gRPC over TLS only,
    /// for services told to reach the registry at an https address.
    pub async fn start_tls_replica(&self, tls: TlsConfig) -> TlsRegistryNode {
        let dir = tempfile::tempdir().unwrap();
        let (address, shutdown) = launch_registry(dir.path(), &self.database_file, Some(tls)).await;
        TlsRegistryNode { address, _dir: dir, shutdown }
    }

    /// `workspace` talking to this replica.
    pub fn workspace(&self, workspace: &Workspace) -> Workspace {
        Workspace { registry: self.client.clone(), ..workspace.clone() }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    pub fn database_file(&self) -> std::path::PathBuf {
        self.database_file.clone()
    }

    /// A workspace record, with its token, as the provisioner would create
    /// one for an external agent.
    pub async fn create(&self, name: &str, parent: Option<&Workspace>, max_concurrent_tasks: u32) -> Workspace {
        let request = rpb::CreateWorkspaceRequest {
            name: name.to_owned(),
            parent_id: parent.map(|p| p.id.clone()),
            runtime_kind: rpb::RuntimeKind::External as i32,
            runtime_instance: "external".to_owned(),
            max_concurrent_tasks,
            issue_token: true,
            ..Default::default()
        };
        let reply = self.client.clone().create_workspace(request).await.unwrap().into_inner();
        Workspace { id: reply.workspace.unwrap().id, token: reply.token, registry: self.client.clone() }
    }
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts a registry with a listener already bound, so it can be called at
/// once; serving over TLS when `tls` is given.
async fn launch_registry(
    dir: &std::path::Path,
    database_file: &std::path::Path,
    tls: Option<TlsConfig>,
) -> (SocketAddr, CancellationToken) {
    let server = ServerConfig { tls, ..server_config(&format!("sqlite://{}", database_file.display()), dir) };
    let service = RegistrySettings { event_poll_ms: 50, sweep_interval_ms: 3_600_000, ..RegistrySettings::default() };
    let config = Config { server, service, ignored_env: vec![] };
    let (authenticator, _) = config.server.auth.authenticator(dir).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let guard = UrlGuard::new(NetworkMode::Dev);
    tokio::spawn(agentmesh_registry::server::run(config, listener, authenticator, guard, shutdown.clone()));
    (address, shutdown)
}

/// A registry replica that speaks TLS only; see [`RegistryNode::start_tls_replica`].
pub struct TlsRegistryNode {
    address: SocketAddr,
    _dir: tempfile::TempDir,
    shutdown: CancellationToken,
}

impl TlsRegistryNode {
    /// Its https address, under the name `localhost`.
    pub fn url(&self) -> String {
        format!("https://localhost:{}", self.address.port())
    }
}

impl Drop for TlsRegistryNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A workspace, acting as its agent's shim would.
#[derive(Clone)]
pub struct Workspace {
    pub id: String,
    pub token: String,
    registry: Registry,
}

impl Workspace {
    fn as_agent<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("authorization", format!("Bearer {}", self.token).parse().unwrap());
        request
    }

    /// Registers the agent's URL and declared capabilities.
    pub async fn register(&self, url: &str, capabilities: rpb::Capabilities, idle_timeout_seconds: Option<u32>) {
        let request = rpb::RegisterRequest {
            workspace_id: self.id.clone(),
            url: url.to_owned(),
            agent_card_json: json!({"name": "echo", "description": "echo agent", "version": "1.0.0",
                "capabilities": {"streaming": true}, "defaultInputModes": ["text/plain"],
                "defaultOutputModes": ["text/plain"], "skills": [],
                "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]})
            .to_string(),
            runtime_metadata: Some(rpb::RuntimeMetadata { capabilities: Some(capabilities), idle_timeout_seconds }),
        };
        self.registry.clone().register(self.as_agent(request)).await.unwrap();
    }

    /// One heartbeat reporting `active_tasks`; returns the status after it.
    pub async fn heartbeat(&self, active_tasks: u32) -> rpb::WorkspaceStatus {
        let request = rpb::HeartbeatRequest { workspace_id: self.id.clone(), active_tasks, ..Default::default() };
        self.registry.clone().heartbeat(self.as_agent(request)).await.unwrap().into_inner().status()
    }

    pub async fn transition(&self, status: rpb::WorkspaceStatus) {
        let request = rpb::TransitionWorkspaceRequest {
            workspace_id: self.id.clone(),
            status: status as i32,
            reason: "test".to_owned(),
            ..Default::default()
        };
        self.registry.clone().transition_workspace(request).await.unwrap();
    }
}

/// An echo agent serving on loopback.
pub struct EchoAgent {
    pub url: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
}

impl EchoAgent {
    pub async fn start(config: agentmesh_echo_agent::Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        tokio::spawn(agentmesh_echo_agent::serve(listener, config, shutdown.clone()));
        Self { url, client: reqwest::Client::new(), shutdown }
    }

    /// An echo agent registered as a fresh workspace, online.
    pub async fn online(registry: &RegistryNode, config: agentmesh_echo_agent::Config) -> (Self, Workspace) {
        let agent = Self::start(config).await;
        let workspace = registry.create("echo", None, 1).await;
        workspace.register(&agent.url, rpb::Capabilities::default(), None).await;
        assert_eq!(workspace.heartbeat(0).await, rpb::WorkspaceStatus::Online);
        (agent, workspace)
    }

    pub async fn set_busy(&self, busy: bool) {
        let reply =
            self.client.post(format!("{}/admin/busy", self.url)).json(&json!({ "busy": busy })).send().await.unwrap();
        assert!(reply.status().is_success());
    }

    /// The texts of the messages it received, first deliveries only, in order.
    pub async fn received(&self) -> Vec<String> {
        self.client.get(format!("{}/admin/received", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// What it received, once that is at least `count` messages; fails the
    /// test if that takes longer than `within`.
    pub async fn received_at_least(&self, count: usize, within: Duration) -> Vec<String> {
        eventually(within, || async {
            let received = self.received().await;
            (received.len() >= count).then_some(received)
        })
        .await
    }

    pub async fn stats(&self) -> Value {
        self.client.get(format!("{}/admin/stats", self.url)).send().await.unwrap().json().await.unwrap()
    }

    /// `{"busy_answers": n, "peak_in_flight": n}`: how hard it was pressed.
    pub async fn load(&self) -> Value {
        self.client.get(format!("{}/admin/load", self.url)).send().await.unwrap().json().await.unwrap()
    }
}

impl Drop for EchoAgent {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct GatewayNode {
    pub grpc: SocketAddr,
    pub http: SocketAddr,
    shutdown: CancellationToken,
    _dir: Option<tempfile::TempDir>,
}

impl GatewayNode {
    /// A gateway on its own SQLite store, in dev network mode, fast scans.
    pub async fn start(registry: &RegistryNode, tune: impl FnOnce(&mut GatewaySettings)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("gateway.db").display());
        let mut node = Self::start_on(registry, &url, dir.path(), tune).await;
        node._dir = Some(dir);
        node
    }

    pub async fn start_on(
        registry: &RegistryNode,
        database_url: &str,
        data_dir: &std::path::Path,
        tune: impl FnOnce(&mut GatewaySettings),
    ) -> Self {
        let server = server_config(database_url, data_dir);
        let mut service = GatewaySettings {
            registry_address: registry.url(),
            service_token: SERVICE_TOKEN.to_owned(),
            network_mode: "dev".to_owned(),
            scan_interval_ms: 200,
            retry_backoff_initial_ms: 50,
            retry_backoff_max_ms: 200,
            ..GatewaySettings::default()
        };
        tune(&mut service);
        let config = Config { server, service, ignored_env: vec![] };
        let (authenticator, _) = config.server.auth.authenticator(data_dir).unwrap();
        let grpc_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let grpc = grpc_listener.local_addr().unwrap();
        let http = http_listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        tokio::spawn(agentmesh_a2a_gateway::server::run_with_listeners(
            config,
            grpc_listener,
            http_listener,
            authenticator,
            shutdown.clone(),
        ));
        agentmesh_testkit::grpc::serving_channel(grpc).await;
        Self { grpc, http, shutdown, _dir: None }
    }

    pub fn a2a_url(&self, workspace_id: &str) -> String {
        format!("http://{}/a2a/{workspace_id}", self.http)
    }

    pub fn control(&self) -> GatewayServiceClient<ServiceChannel> {
        GatewayServiceClient::new(service_channel(&format!("http://{}", self.grpc), OPERATOR_TOKEN, None).unwrap())
    }

    /// The A2A gRPC binding, as an operator.
    pub fn a2a(&self) -> A2aServiceClient<ServiceChannel> {
        A2aServiceClient::new(service_channel(&format!("http://{}", self.grpc), OPERATOR_TOKEN, None).unwrap())
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for GatewayNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A scheduler on real listeners.
pub struct SchedulerNode {
    pub address: SocketAddr,
    /// A client with operator credentials.
    pub client: SchedulerServiceClient<ServiceChannel>,
    shutdown: CancellationToken,
}

impl SchedulerNode {
    /// A scheduler on the store at `database_url`, sending through `gateway`.
    pub async fn start(
        registry: &RegistryNode,
        gateway: &GatewayNode,
        database_url: &str,
        data_dir: &std::path::Path,
        tune: impl FnOnce(&mut SchedulerSettings),
    ) -> Self {
        let config = Self::config(registry, &format!("http://{}", gateway.grpc), database_url, data_dir, tune);
        Self::serve(config, data_dir, None).await
    }

    /// A scheduler whose runs go to `dispatcher` instead of the gateway.
    pub async fn start_with_dispatcher(
        registry: &RegistryNode,
        database_url: &str,
        data_dir: &std::path::Path,
        dispatcher: Arc<dyn Dispatcher>,
    ) -> Self {
        // No gateway: nothing is sent to the address configured.
        let config = Self::config(registry, "http://127.0.0.1:9", database_url, data_dir, |_| {});
        Self::serve(config, data_dir, Some(dispatcher)).await
    }

    fn config(
        registry: &RegistryNode,
        gateway_address: &str,
        database_url: &str,
        data_dir: &std::path::Path,
        tune: impl FnOnce(&mut SchedulerSettings),
    ) -> Config<SchedulerSettings> {
        let server = server_config(database_url, data_dir);
        let mut service = SchedulerSettings {
            registry_address: registry.url(),
            gateway_address: gateway_address.to_owned(),
            service_token: SERVICE_TOKEN.to_owned(),
            ..SchedulerSettings::default()
        };
        tune(&mut service);
        Config { server, service, ignored_env: vec![] }
    }

    async fn serve(
        config: Config<SchedulerSettings>,
        data_dir: &std::path::Path,
        dispatcher: Option<Arc<dyn Dispatcher>>,
    ) -> Self {
        let (authenticator, _) = config.server.auth.authenticator(data_dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        match dispatcher {
            Some(dispatcher) => tokio::spawn(agentmesh_scheduler::server::run_with_dispatcher(
                config,
                listener,
                authenticator,
                dispatcher,
                shutdown.clone(),
            )),
            None => tokio::spawn(agentmesh_scheduler::server::run(config, listener, authenticator, shutdown.clone())),
        };
        agentmesh_testkit::grpc::serving_channel(address).await;
        let client =
            SchedulerServiceClient::new(service_channel(&format!("http://{address}"), OPERATOR_TOKEN, None).unwrap());
        Self { address, client, shutdown }
    }

    pub fn stop(&self) {
        self.shutdown.cancel();
    }
}

impl Drop for SchedulerNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The operator's caller of the gateway's A2A front, in meshes started here.
pub trait OperatorCaller {
    fn operator() -> Self;
}

impl OperatorCaller for Caller {
    fn operator() -> Self {
        Caller::new(OPERATOR_TOKEN)
    }
}

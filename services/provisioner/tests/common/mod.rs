//! A small mesh for the provisioner's end-to-end tests: a real registry and
//! a real provisioner, both serving gRPC in process, with clients and a way
//! to await a workspace's status through the registry's event stream.
#![allow(dead_code)] // each test binary uses a different part of the fixtures

pub mod docker;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agentmesh_chassis::{AuthConfig, ServerConfig, config::Config};
use agentmesh_netguard::{NetworkMode, UrlGuard};
use agentmesh_proto::{
    provisioner::v1::{self as ppb, provisioner_service_client::ProvisionerServiceClient},
    registry::v1::{self as rpb, WorkspaceStatus, registry_service_client::RegistryServiceClient},
};
use agentmesh_provisioner::{runtime::Runtime, settings::ProvisionerSettings};
use agentmesh_registry::settings::RegistrySettings;
use tokio_util::sync::CancellationToken;
use tonic::{
    Request, Status,
    service::{Interceptor, interceptor::InterceptedService},
    transport::Channel,
};

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";
pub const SERVICE_TOKEN: &str = "service-token-for-tests-0123456789";

#[derive(Clone)]
pub struct Operator;

impl Interceptor for Operator {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        request.metadata_mut().insert("authorization", format!("Bearer {OPERATOR_TOKEN}").parse().unwrap());
        Ok(request)
    }
}

pub type Registry = RegistryServiceClient<InterceptedService<Channel, Operator>>;
pub type Provisioner = ProvisionerServiceClient<InterceptedService<Channel, Operator>>;

fn auth() -> AuthConfig {
    AuthConfig { operator_tokens: vec![OPERATOR_TOKEN.into()], service_tokens: vec![SERVICE_TOKEN.into()] }
}

/// A registry serving on `ip` (a Docker network's gateway, so containers
/// reach it), accepting loopback and private agent URLs.
pub struct RegistryNode {
    pub address: SocketAddr,
    pub client: Registry,
    shutdown: CancellationToken,
    _dir: tempfile::TempDir,
}

impl RegistryNode {
    pub async fn start(ip: std::net::IpAddr) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let server = ServerConfig {
            database_url: Some(format!("sqlite://{}", dir.path().join("registry.db").display())),
            data_dir: dir.path().to_owned(),
            readiness_interval_ms: 200,
            auth: auth(),
            ..ServerConfig::default()
        };
        let service =
            RegistrySettings { event_poll_ms: 50, sweep_interval_ms: 3_600_000, ..RegistrySettings::default() };
        let config = Config { server, service, ignored_env: vec![] };
        let (authenticator, _) = config.server.auth.authenticator(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let guard = UrlGuard::new(NetworkMode::Dev);
        tokio::spawn(agentmesh_registry::server::run(config, listener, authenticator, guard, shutdown.clone()));
        let channel = agentmesh_testkit::grpc::serving_channel(address).await;
        Self { address, client: RegistryServiceClient::with_interceptor(channel, Operator), shutdown, _dir: dir }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Follows one workspace's events from now on.
    pub async fn watch(&self, workspace_id: &str) -> StatusWatch {
        let request = rpb::WatchEventsRequest {
            workspace_ids: vec![workspace_id.to_owned()],
            types: vec![],
            after_cursor: Some(0),
        };
        let stream = self.client.clone().watch_events(request).await.unwrap().into_inner();
        StatusWatch { stream, client: self.client.clone(), workspace_id: workspace_id.to_owned(), seen: Vec::new() }
    }

    pub async fn get(&self, workspace_id: &str) -> rpb::Workspace {
        let request = rpb::GetWorkspaceRequest { workspace_id: workspace_id.to_owned() };
        self.client.clone().get_workspace(request).await.unwrap().into_inner().workspace.unwrap()
    }

    pub async fn list_all(&self) -> Vec<rpb::Workspace> {
        let request =
            rpb::ListWorkspacesRequest { statuses: (1..=11).collect(), page_size: 1000, ..Default::default() };
        self.client.clone().list_workspaces(request).await.unwrap().into_inner().workspaces
    }
}

impl Drop for RegistryNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The statuses one workspace goes through, as the registry's event stream
/// reports them.
pub struct StatusWatch {
    stream: tonic::Streaming<rpb::WatchEventsResponse>,
    client: Registry,
    workspace_id: String,
    /// Every status seen so far, in order.
    pub seen: Vec<WorkspaceStatus>,
}

impl StatusWatch {
    /// Waits until the workspace reaches `status` and returns the reason.
    /// The stream replays from the start, so a status reached before the
    /// call is found too.
    pub async fn until(&mut self, status: WorkspaceStatus, within: Duration) -> String {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let next = tokio::time::timeout_at(deadline, self.stream.message()).await;
            let Ok(Ok(Some(reply))) = next else {
                let now = self
                    .client
                    .get_workspace(rpb::GetWorkspaceRequest { workspace_id: self.workspace_id.clone() })
                    .await;
                panic!("workspace never became {status:?}; saw {:?}; now {:?}", self.seen, now.map(|r| r.into_inner()));
            };
            let event = reply.event.unwrap();
            let seen = event.status();
            if self.seen.last() != Some(&seen) {
                self.seen.push(seen);
            }
            if seen == status {
                return event.reason;
            }
        }
    }
}

/// A provisioner serving on 127.0.0.1 with the given runtimes.
pub struct ProvisionerNode {
    pub address: SocketAddr,
    pub client: Provisioner,
    shutdown: CancellationToken,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl ProvisionerNode {
    pub async fn start(
        registry: &RegistryNode,
        runtimes: Vec<Arc<dyn Runtime>>,
        tune: impl FnOnce(&mut ProvisionerSettings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("provisioner.db").display());
        Self::start_on(registry, runtimes, &url, dir, tune).await
    }

    pub async fn start_on(
        registry: &RegistryNode,
        runtimes: Vec<Arc<dyn Runtime>>,
        database_url: &str,
        dir: tempfile::TempDir,
        tune: impl FnOnce(&mut ProvisionerSettings),
    ) -> Self {
        let server = ServerConfig {
            database_url: Some(database_url.to_owned()),
            data_dir: dir.path().to_owned(),
            readiness_interval_ms: 200,
            shutdown_grace_secs: 1,
            auth: auth(),
            ..ServerConfig::default()
        };
        let mut service = ProvisionerSettings {
            registry_address: registry.url(),
            registry_token: SERVICE_TOKEN.into(),
            stop_grace_secs: 2,
            restart_backoff_initial_ms: 100,
            ..ProvisionerSettings::default()
        };
        tune(&mut service);
        let config = Config { server, service, ignored_env: vec![] };
        let (authenticator, _) = config.server.auth.authenticator(dir.path()).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let runtimes = runtimes.into_iter().map(|r| (r, false)).collect();
        let task = tokio::spawn(agentmesh_provisioner::server::run_with_runtimes(
            config,
            listener,
            authenticator,
            runtimes,
            shutdown.clone(),
        ));
        let channel = agentmesh_testkit::grpc::serving_channel(address).await;
        Self {
            address,
            client: ProvisionerServiceClient::with_interceptor(channel, Operator),
            shutdown,
            task: Some(task),
            dir,
        }
    }

    /// Stops serving and waits until the provisioner has shut down.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    pub async fn create(&self, spec: ppb::WorkspaceSpec) -> Result<ppb::CreateWorkspaceResponse, Status> {
        self.client
            .clone()
            .create_workspace(ppb::CreateWorkspaceRequest { spec: Some(spec) })
            .await
            .map(|r| r.into_inner())
    }
}

impl Drop for ProvisionerNode {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// The ErrorInfo reason and metadata of an error.
pub fn error_info(status: &Status) -> (String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status.get_details_error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    (info.reason, info.metadata)
}

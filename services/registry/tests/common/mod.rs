//! Test fixtures shared by the registry's suites: a fresh store on SQLite or
//! PostgreSQL, in-process registry nodes, and a real gRPC server.

#![allow(dead_code)] // each test binary uses a different part of the fixtures

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::{
    AuthConfig, ServerConfig,
    config::{Config, TlsConfig},
};
use agentmesh_netguard::{NetworkMode, StaticResolver, UrlGuard};
use agentmesh_proto::registry::v1::registry_service_client::RegistryServiceClient;
use agentmesh_registry::{
    events::EventHub,
    registry::Registry,
    settings::RegistrySettings,
    store::{RegistryStore, SqlStore},
    sweeper::Sweeper,
};
use tokio_util::sync::CancellationToken;
use tonic::{metadata::MetadataValue, transport::Channel};

#[derive(Debug, Clone, Copy)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh, empty database of one backend.
pub struct TestDb {
    pub url: String,
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    /// `None` when PostgreSQL is not configured and this is not CI; in CI a
    /// missing PostgreSQL fails the test rather than skipping it.
    pub async fn new(backend: Backend) -> Option<Self> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().unwrap();
                let url = format!("sqlite://{}", dir.path().join("registry.db").display());
                Some(Self { url, _dir: Some(dir) })
            }
            Backend::Postgres => {
                let url = agentmesh_testkit::postgres::fresh_database("registry_test").await?;
                Some(Self { url, _dir: None })
            }
        }
    }
}

/// Settings with sweeps and polls fast enough for tests.
pub fn test_settings() -> RegistrySettings {
    RegistrySettings { sweep_interval_ms: 3_600_000, event_poll_ms: 50, ..RegistrySettings::default() }
}

/// A resolver where `agent.test` is public, `metadata.test` is the cloud
/// metadata address and `mixed.test` is one public and one private address.
pub fn test_guard(mode: NetworkMode) -> UrlGuard {
    let resolver = StaticResolver::new()
        .with("agent.test", ["93.184.216.34".parse().unwrap()])
        .with("metadata.test", ["169.254.169.254".parse().unwrap()])
        .with("mixed.test", ["93.184.216.34".parse().unwrap(), "10.0.0.7".parse().unwrap()]);
    UrlGuard::with_resolver(mode, Arc::new(resolver))
}

/// One registry replica, in process, without gRPC.
pub struct Node {
    pub store: Arc<dyn RegistryStore>,
    pub registry: Arc<Registry>,
    pub events: Arc<EventHub>,
    pub sweeper: Sweeper,
    pub shutdown: CancellationToken,
}

impl Node {
    pub async fn start(url: &str, settings: RegistrySettings) -> Self {
        let shutdown = CancellationToken::new();
        let store = Arc::new(SqlStore::connect(url).await.unwrap());
        let signal = store.events_signal();
        let store: Arc<dyn RegistryStore> = store;
        let events =
            EventHub::start(store.clone(), signal, Duration::from_millis(settings.event_poll_ms), shutdown.clone())
                .await
                .unwrap();
        let registry = Arc::new(Registry::new(store.clone(), test_guard(NetworkMode::Strict)));
        let sweeper = Sweeper::new(store.clone(), settings);
        Self { store, registry, events, sweeper, shutdown }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub const OPERATOR_TOKEN: &str = "operator-token-for-tests-0123456789";
/// What another agentmesh service (the provisioner, the gateway) presents.
pub const SERVICE_TOKEN: &str = "service-token-for-tests-0123456789";

/// A real registry gRPC server on 127.0.0.1, with a client.
pub struct Server {
    pub address: std::net::SocketAddr,
    pub shutdown: CancellationToken,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Server {
    pub async fn start(url: &str, mode: NetworkMode) -> Self {
        let server = Self::launch(url, mode, None).await;
        agentmesh_testkit::grpc::wait_until_serving(server.channel().await).await;
        server
    }

    /// Starts without waiting for readiness, optionally serving TLS.
    pub async fn launch(url: &str, mode: NetworkMode, tls: Option<TlsConfig>) -> Self {
        let dir = std::env::temp_dir();
        let mut server = ServerConfig {
            database_url: Some(url.to_owned()),
            data_dir: dir.clone(),
            tls,
            readiness_interval_ms: 200,
            ..ServerConfig::default()
        };
        server.auth =
            AuthConfig { operator_tokens: vec![OPERATOR_TOKEN.into()], service_tokens: vec![SERVICE_TOKEN.into()] };
        let config = Config { server, service: test_settings(), ignored_env: vec![] };
        let (authenticator, _) = config.server.auth.authenticator(&dir).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agentmesh_registry::server::run(
            config,
            listener,
            authenticator,
            test_guard(mode),
            shutdown.clone(),
        ));
        Self { address, shutdown, task }
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.address)).unwrap().connect().await.unwrap()
    }

    /// A client that sends `token` as its bearer token, if any.
    pub async fn client(
        &self,
        token: Option<&str>,
    ) -> RegistryServiceClient<
        tonic::service::interceptor::InterceptedService<Channel, impl tonic::service::Interceptor + use<>>,
    > {
        let header: Option<MetadataValue<_>> = token.map(|t| format!("Bearer {t}").parse().unwrap());
        RegistryServiceClient::with_interceptor(self.channel().await, move |mut request: tonic::Request<()>| {
            if let Some(header) = &header {
                request.metadata_mut().insert("authorization", header.clone());
            }
            Ok(request)
        })
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Generates one `#[tokio::test]` per backend for each named async test
/// function taking a `Backend`.
#[macro_export]
macro_rules! on_every_backend {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    super::$test($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

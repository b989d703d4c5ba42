//! Assembles a running registry from its configuration; shared by the
//! binary and by tests that need a real server.

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::{ServeOptions, auth::Authenticator, config::Config, metrics::Metrics};
use agentmesh_netguard::UrlGuard;
use agentmesh_proto::registry::v1::registry_service_server::{RegistryServiceServer, SERVICE_NAME};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    events::EventHub,
    grpc::RegistryGrpc,
    metrics::{MeasuredStore, RegistryMetrics},
    registry::Registry,
    settings::RegistrySettings,
    store::{RegistryStore, SqlStore},
    sweeper::Sweeper,
};

/// Runs a registry on `listener` until `shutdown`, checking agent URLs with
/// `url_guard` (normally `UrlGuard::new` of the configured network mode).
pub async fn run(
    config: Config<RegistrySettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    url_guard: UrlGuard,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let url = config.server.database_url_or_default("registry");
    let store = Arc::new(SqlStore::connect(&url).await?);
    let signal = store.events_signal();
    let mut metrics = Metrics::new("registry");
    let measures = RegistryMetrics::register(&mut metrics, store.clone());
    let store: Arc<dyn RegistryStore> = Arc::new(MeasuredStore::new(store, measures.clone()));
    let settings = config.service.clone();
    let events =
        EventHub::start(store.clone(), signal, Duration::from_millis(settings.event_poll_ms), shutdown.clone()).await?;
    metrics.section("registry").register("event_watchers", "Event streams open on this replica", events.watchers());
    let registry = Arc::new(Registry::new(store.clone(), url_guard));
    tokio::spawn(Sweeper::new(store.clone(), settings).measured(measures).run(shutdown.clone()));

    let routes = Routes::new(RegistryServiceServer::new(RegistryGrpc::new(registry, events, shutdown.clone())));
    let options = ServeOptions::from_config(&config.server, vec![SERVICE_NAME], authenticator, metrics);
    let ready = move || {
        let store = store.clone();
        async move { Ok(store.ping().await?) }
    };
    agentmesh_chassis::serve(listener, routes, options, ready, shutdown).await
}

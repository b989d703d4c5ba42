//! Assembles a running scheduler from its configuration; shared by the
//! binary and by tests that need a real server.

use std::sync::Arc;

use agentmesh_chassis::{ServeOptions, auth::Authenticator, config::Config, metrics::Metrics};
use agentmesh_db::Database;
use agentmesh_proto::scheduler::v1::scheduler_service_server::{SERVICE_NAME, SchedulerServiceServer};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    api::SchedulerApi,
    directory::Workspaces,
    dispatch::{Dispatcher, GatewayDispatcher},
    engine::Engine,
    metrics::SchedulerMetrics,
    settings::SchedulerSettings,
    store::ScheduleStore,
};

/// Runs the scheduler on `listener` until `shutdown`, sending runs through
/// the configured gateway.
pub async fn run(
    config: Config<SchedulerSettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = &config.service;
    let dispatcher =
        GatewayDispatcher::new(&settings.gateway_address, &settings.service_token, settings.send_timeout())?;
    run_with_dispatcher(config, listener, authenticator, dispatcher, shutdown).await
}

/// Runs the scheduler with runs sent by `dispatcher`.
pub async fn run_with_dispatcher(
    config: Config<SchedulerSettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    dispatcher: Arc<dyn Dispatcher>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let settings = config.service.clone();
    let database = Database::connect(&config.server.database_url_or_default("scheduler")).await?;
    let store = ScheduleStore::open(database).await?;
    let (workspaces, removed) = Workspaces::new(&settings.registry_address, &settings.service_token)?;
    let mut metrics = Metrics::new("scheduler");
    let measures = SchedulerMetrics::register(&mut metrics, store.clone());
    let engine = Engine::new(store.clone(), workspaces.clone(), dispatcher, settings.clone(), measures);

    tokio::spawn(workspaces.clone().follow(shutdown.clone()));
    tokio::spawn(engine.clone().run(removed, shutdown.clone()));

    let api = SchedulerApi::new(store.clone(), workspaces.clone(), engine, settings);
    let routes = Routes::new(SchedulerServiceServer::new(api));
    let mut options = ServeOptions::from_config(&config.server, vec![SERVICE_NAME], authenticator, metrics);
    options.recheck = Some(workspaces.following_changes());
    let ready = move || {
        let store = store.clone();
        let workspaces = workspaces.clone();
        async move {
            store.database().ping().await?;
            anyhow::ensure!(workspaces.is_following(), "not following the registry's events yet");
            Ok(())
        }
    };
    agentmesh_chassis::serve(listener, routes, options, ready, shutdown).await
}

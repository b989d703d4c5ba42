//! Assembles a running gateway from its configuration; shared by the binary
//! and by tests that need a real server.

use std::sync::Arc;

use agentmesh_chassis::{ServeOptions, auth::Authenticator, config::Config, metrics::Metrics};
use agentmesh_db::Database;
use agentmesh_proto::{
    a2a::v1::a2a_service_server::{A2aServiceServer, SERVICE_NAME as A2A_SERVICE},
    gateway::v1::gateway_service_server::{GatewayServiceServer, SERVICE_NAME as CONTROL_SERVICE},
};
use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::service::Routes;

use crate::{
    a2a_grpc::A2aGrpc, agent_client::AgentClient, control::ControlApi, directory::Directory, drain::Drainer,
    gateway::Gateway, http::MAX_REQUEST_BYTES, metrics::GatewayMetrics, settings::GatewaySettings, store::QueueStore,
};

/// Binds the A2A front and runs the gateway until `shutdown`.
pub async fn run(
    config: Config<GatewaySettings>,
    listener: TcpListener,
    authenticator: Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let a2a_listen = config.service.a2a_listen(config.server.listen);
    let a2a_listener = agentmesh_chassis::binary::bind(a2a_listen, "gateway.a2a_listen").await?;
    run_with_listeners(config, listener, a2a_listener, authenticator, shutdown).await
}

/// Runs the gateway on already bound listeners (so tests know the
/// addresses first) until `shutdown`.
pub async fn run_with_listeners(
    config: Config<GatewaySettings>,
    grpc_listener: TcpListener,
    a2a_listener: TcpListener,
    authenticator: Authenticator,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let mut settings = config.service.clone();
    let (idle_timeout, warnings) = settings.idle_timeout();
    for warning in warnings {
        tracing::warn!("{warning}");
    }
    let a2a_address = a2a_listener.local_addr()?;
    let a2a_tls = match &settings.a2a_tls {
        Some(tls) => Some(crate::front::tls_acceptor(&tls.cert_file, &tls.key_file).context("gateway.a2a_tls")?),
        None => None,
    };
    // What the agent cards advertise: as configured, else where this
    // replica actually listens.
    let scheme = if a2a_tls.is_some() { "https" } else { "http" };
    settings.public_url = match settings.public_url.trim_end_matches('/') {
        "" => format!("{scheme}://{a2a_address}"),
        configured => configured.to_owned(),
    };
    if settings.public_grpc_address.is_empty() {
        settings.public_grpc_address = grpc_listener.local_addr()?.to_string();
    }

    let database = Database::connect(&config.server.database_url_or_default("gateway")).await?;
    let store = QueueStore::open(database).await?;
    let (directory, signals) =
        Directory::new(&settings.registry_address, &settings.provisioner_address, &settings.service_token)?;
    let mut metrics = Metrics::new("a2a-gateway");
    let measures = GatewayMetrics::register(&mut metrics, store.clone());
    let agents = AgentClient::new(settings.dispatch_guard(), settings.agent_tls().context("gateway.agent_ca_file")?)
        .measured(measures.clone());
    let replica = format!("gateway-{}", uuid::Uuid::new_v4());
    tracing::info!(replica, idle_timeout_secs = idle_timeout.as_secs(), "gateway starting");
    let drainer = Drainer::new(
        store.clone(),
        directory.clone(),
        agents.clone(),
        settings.clone(),
        idle_timeout,
        replica,
        measures.clone(),
    );
    let gateway = Arc::new(Gateway::new(
        directory.clone(),
        agents,
        store.clone(),
        drainer.clone(),
        settings.clone(),
        idle_timeout,
        measures,
    ));

    tokio::spawn(directory.clone().follow(shutdown.clone()));
    let pushes = drainer.pushes().clone();
    let draining = tokio::spawn(drainer.run(signals, shutdown.clone()));

    let front = Arc::new(crate::http::Front::new(gateway.clone(), authenticator.clone()));
    let listening = crate::front::Listening {
        tls: a2a_tls,
        max_connections: crate::front::MAX_CONNECTIONS,
        grace: config.server.shutdown_grace(),
    };
    let front = tokio::spawn(crate::front::serve(a2a_listener, front, listening, shutdown.clone()));
    tracing::info!(address = %a2a_address, "A2A front listening");

    let control = ControlApi::new(store.clone(), directory.clone(), pushes);
    let routes = Routes::new(GatewayServiceServer::new(control)).add_service(
        A2aServiceServer::new(A2aGrpc::new(gateway))
            .max_decoding_message_size(MAX_REQUEST_BYTES)
            .max_encoding_message_size(crate::agent_client::MAX_REPLY_BYTES),
    );
    let mut options =
        ServeOptions::from_config(&config.server, vec![CONTROL_SERVICE, A2A_SERVICE], authenticator, metrics);
    options.recheck = Some(directory.following_changes());
    let grace = options.grace;
    let ready = move || {
        let store = store.clone();
        let directory = directory.clone();
        async move {
            store.database().ping().await?;
            anyhow::ensure!(directory.is_following(), "not following the registry's events yet");
            Ok(())
        }
    };
    let served = agentmesh_chassis::serve(grpc_listener, routes, options, ready, shutdown).await;
    front.await?;
    // Drains put back what they hold unsent; one that outlasts the grace
    // period leaves its items to lease expiry and redelivery.
    if tokio::time::timeout(grace, draining).await.is_err() {
        tracing::warn!("grace period over; messages still held by drains are redelivered once their leases expire");
    }
    served
}

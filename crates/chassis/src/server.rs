//! Serving a service: health, reflection, auth, tracing and shutdown.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use http::HeaderValue;
use tokio::{net::TcpListener, sync::Notify};
use tokio_util::sync::CancellationToken;
use tonic::{
    service::{InterceptorLayer, Routes},
    transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::ServingStatus;
use tower_http::set_header::SetResponseHeaderLayer;

use crate::{auth::Authenticator, config::TlsConfig, metrics::Metrics, telemetry};

/// The response header every call's answer carries: the version of the
/// agentmesh serving it, so that a client can tell what it talks to.
pub const VERSION_HEADER: http::HeaderName = http::HeaderName::from_static("agentmesh-version");

/// The health service name that is SERVING whenever the process serves
/// gRPC at all, ready or not: what a liveness probe asks for.
pub const LIVENESS: &str = "liveness";

/// How often a service that is not ready checks again.
const NOT_READY_RECHECK: Duration = Duration::from_millis(200);

/// What `serve` needs besides the routes.
pub struct ServeOptions {
    /// Fully qualified gRPC service names reported through health.
    pub health_services: Vec<&'static str>,
    pub authenticator: Authenticator,
    /// How long in-flight requests may run on after shutdown begins.
    pub grace: Duration,
    pub tls: Option<TlsConfig>,
    /// How often readiness is checked again once serving.
    pub readiness_interval: Duration,
    /// Notified when readiness may have changed, to check it again at once.
    pub recheck: Option<Arc<Notify>>,
    /// The service's metrics, with the gRPC calls' added by `serve`.
    pub metrics: Metrics,
    /// Where `/metrics` is served; `None` serves none and measures no call.
    pub metrics_listen: Option<SocketAddr>,
}

impl ServeOptions {
    /// The options a service's configuration implies, for its gRPC services.
    pub fn from_config(
        config: &crate::ServerConfig,
        health_services: Vec<&'static str>,
        authenticator: Authenticator,
        metrics: Metrics,
    ) -> Self {
        Self {
            metrics,
            metrics_listen: config.metrics_listen(),
            health_services,
            authenticator,
            grace: config.shutdown_grace(),
            tls: config.tls.clone(),
            readiness_interval: config.readiness_interval(),
            recheck: None,
        }
    }
}

/// Resolves when `signal` is notified; never without one.
async fn recheck(signal: Option<&Notify>) {
    match signal {
        Some(signal) => signal.notified().await,
        None => std::future::pending().await,
    }
}

/// Serves `routes` on an already bound `listener` (so callers, tests
/// included, know the address before serving starts) until `shutdown` is
/// cancelled. Health follows `ready`, checked at once and then every
/// `readiness_interval`: NOT_SERVING until it first passes, NOT_SERVING again
/// while a dependency is down, and NOT_SERVING as soon as shutdown begins, so
/// balancers stop routing here first.
pub async fn serve<Ready, Check>(
    listener: TcpListener,
    routes: Routes,
    options: ServeOptions,
    ready: Ready,
    shutdown: CancellationToken,
) -> anyhow::Result<()>
where
    Ready: Fn() -> Check,
    Check: Future<Output = anyhow::Result<()>>,
{
    let (mut health, health_service) = tonic_health::server::health_reporter();
    let mut names = options.health_services.clone();
    names.push("");
    for name in &names {
        health.set_service_status(*name, ServingStatus::NotServing).await;
    }
    // Liveness is not readiness: a replica whose store is down stops taking
    // traffic but must not be restarted for it.
    health.set_service_status(LIVENESS, ServingStatus::Serving).await;

    let reflection_v1 = reflection(&options.health_services).build_v1()?;
    // grpcurl and many other tools still speak only v1alpha.
    let reflection_v1alpha = reflection(&options.health_services).build_v1alpha()?;

    // Bound first: a taken metrics port is a configuration mistake to
    // report before the service takes any traffic.
    let metrics_listener = match options.metrics_listen {
        Some(address) => Some(crate::metrics::bind(address).await?),
        None => None,
    };
    let metrics_layer = options.metrics.grpc_layer(&options.health_services, metrics_listener.is_some());
    let serving_gauge = options.metrics.serving();

    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        let cert = std::fs::read(&tls.cert_file)?;
        let key = std::fs::read(&tls.key_file)?;
        builder = builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let router = builder
        .trace_fn(telemetry::request_span)
        .layer(metrics_layer)
        .layer(SetResponseHeaderLayer::overriding(VERSION_HEADER, HeaderValue::from_static(env!("CARGO_PKG_VERSION"))))
        .layer(InterceptorLayer::new(options.authenticator.interceptor()))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let address = listener.local_addr()?;
    let stopping = shutdown.clone();
    // Without TCP_NODELAY, a small answer waits on the client's delayed ACK
    // (40 ms on Linux): `agentmesh status`, four health checks, took 50 to
    // 180 ms in steps of 44.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = tokio::spawn(router.serve_with_incoming_shutdown(incoming, stopping.cancelled_owned()));
    tracing::info!(%address, "listening");
    let metrics_server = metrics_listener.map(|listener| {
        if let Ok(address) = listener.local_addr() {
            tracing::info!(url = %format!("http://{address}/metrics"), "serving metrics");
        }
        tokio::spawn(options.metrics.serve(listener, shutdown.clone()))
    });

    let mut server = server;
    let mut serving = false;
    let mut last_problem: Option<String> = None;
    let mut next_check = Duration::ZERO;
    loop {
        tokio::select! {
            // First: the server ends because shutdown began, and then both
            // are ready.
            biased;
            () = shutdown.cancelled() => break,
            // The server ends only after shutdown began; ending before is a
            // failure that balancers and the supervisor must both see.
            ended = &mut server => {
                for name in &names {
                    health.set_service_status(*name, ServingStatus::NotServing).await;
                }
                let why = match ended {
                    Ok(Ok(())) => "it returned".to_owned(),
                    Ok(Err(e)) => e.to_string(),
                    Err(e) => e.to_string(),
                };
                anyhow::bail!("the gRPC server on {address} stopped before shutdown: {why}");
            }
            () = tokio::time::sleep(next_check) => {}
            () = recheck(options.recheck.as_deref()) => {}
        }
        let problem = match tokio::time::timeout(options.readiness_interval, ready()).await {
            Ok(Ok(())) => None,
            Ok(Err(error)) => Some(error.to_string()),
            Err(_) => Some("the readiness check timed out".to_owned()),
        };
        if problem != last_problem {
            if let Some(problem) = &problem {
                tracing::warn!(error = %problem, "not ready");
            }
            last_problem.clone_from(&problem);
        }
        let ready_now = problem.is_none();
        if ready_now != serving {
            serving = ready_now;
            serving_gauge.set(i64::from(serving));
            let status = if serving { ServingStatus::Serving } else { ServingStatus::NotServing };
            for name in &names {
                health.set_service_status(*name, status).await;
            }
            if serving {
                tracing::info!("ready");
            } else {
                tracing::warn!("not ready: health reports NOT_SERVING");
            }
        }
        // Until it is ready, a replica checks often, so that it takes traffic
        // as soon as it can; once ready, at the configured pace.
        next_check =
            if serving { options.readiness_interval } else { options.readiness_interval.min(NOT_READY_RECHECK) };
    }

    serving_gauge.set(0);
    for name in names.iter().chain([&LIVENESS]) {
        health.set_service_status(*name, ServingStatus::NotServing).await;
        // Ends open health watches after they have seen NOT_SERVING, so
        // they do not hold the drain until the grace period runs out.
        health.clear_service_status(name).await;
    }
    tracing::info!(grace_secs = options.grace.as_secs(), "shutting down");
    match tokio::time::timeout(options.grace, server).await {
        Ok(joined) => joined??,
        Err(_) => tracing::warn!("grace period over; dropping in-flight requests"),
    }
    if let Some(metrics_server) = metrics_server
        && let Ok(Err(e)) = metrics_server.await
    {
        tracing::warn!(error = %e, "the metrics listener failed");
    }
    Ok(())
}

/// Reflection over the agentmesh contracts that lists only what this
/// binary serves: every contract is compiled in, but `grpcurl list` should
/// not promise services that answer UNIMPLEMENTED.
fn reflection<'b>(services: &[&'static str]) -> tonic_reflection::server::Builder<'b> {
    services
        .iter()
        .chain(&["grpc.health.v1.Health"])
        .fold(tonic_reflection::server::Builder::configure(), |builder, name| builder.with_service_name(*name))
        .register_encoded_file_descriptor_set(agentmesh_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

/// A token cancelled by the first SIGINT or SIGTERM; a second signal exits
/// at once, for operators who do not want to wait out the grace period.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(term) => term,
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                return;
            }
        };
        for round in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            if round > 0 {
                tracing::warn!("second signal; exiting now");
                std::process::exit(130);
            }
            cancel.cancel();
        }
    });
    token
}

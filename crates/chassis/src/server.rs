//! Serving a service: health, reflection, auth, tracing and shutdown.

use std::{future::Future, time::Duration};

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tonic::{
    service::{InterceptorLayer, Routes},
    transport::{Identity, Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::ServingStatus;

use crate::{auth::Authenticator, config::TlsConfig, telemetry};

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
}

impl ServeOptions {
    /// The options a service's configuration implies, for its gRPC services.
    pub fn from_config(
        config: &crate::ServerConfig,
        health_services: Vec<&'static str>,
        authenticator: Authenticator,
    ) -> Self {
        Self {
            health_services,
            authenticator,
            grace: config.shutdown_grace(),
            tls: config.tls.clone(),
            readiness_interval: config.readiness_interval(),
        }
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

    let reflection_v1 = reflection(&options.health_services).build_v1()?;
    // grpcurl and many other tools still speak only v1alpha.
    let reflection_v1alpha = reflection(&options.health_services).build_v1alpha()?;

    let mut builder = Server::builder();
    if let Some(tls) = &options.tls {
        let cert = std::fs::read(&tls.cert_file)?;
        let key = std::fs::read(&tls.key_file)?;
        builder = builder.tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))?;
    }
    let router = builder
        .trace_fn(telemetry::request_span)
        .layer(InterceptorLayer::new(options.authenticator.interceptor()))
        .add_routes(routes)
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha);

    let address = listener.local_addr()?;
    let stopping = shutdown.clone();
    let server =
        tokio::spawn(router.serve_with_incoming_shutdown(TcpIncoming::from(listener), stopping.cancelled_owned()));
    tracing::info!(%address, "listening");

    let mut serving = false;
    let mut checks = tokio::time::interval(options.readiness_interval);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = checks.tick() => {}
        }
        let ready_now = match tokio::time::timeout(options.readiness_interval, ready()).await {
            Ok(Ok(())) => true,
            Ok(Err(error)) => {
                tracing::warn!(%error, "not ready");
                false
            }
            Err(_) => {
                tracing::warn!("readiness check timed out");
                false
            }
        };
        if ready_now != serving {
            serving = ready_now;
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
    }

    for name in &names {
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

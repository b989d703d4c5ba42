//! What every agentmesh binary does before it serves: load the layered
//! configuration, honour `--print-config`, start telemetry, set up
//! credentials and bind the listener.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::net::TcpListener;

use crate::{
    CommonArgs, ServerConfig, ServiceSettings,
    auth::Authenticator,
    config::Config,
    telemetry::{self, TelemetryGuard},
};

/// A binary ready to serve. Keep `telemetry` alive until the end: dropping
/// it flushes the trace exporter.
pub struct Started<S> {
    pub config: Config<S>,
    pub listener: TcpListener,
    pub authenticator: Authenticator,
    pub telemetry: TelemetryGuard,
}

/// Loads the configuration of `binary` (listening on `default_listen`
/// unless configured otherwise) and prepares it to serve; `None` when it
/// only had to print its configuration.
pub async fn start<S: ServiceSettings>(
    binary: &'static str,
    default_listen: SocketAddr,
    args: &CommonArgs,
) -> anyhow::Result<Option<Started<S>>> {
    let config = Config::<S>::load(ServerConfig::listening_on(default_listen), args)?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(None);
    }
    let telemetry = telemetry::init(binary, &config.server)?;
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, section = S::SECTION, "ignoring an environment variable that names no setting");
    }
    let (authenticator, token_file) =
        config.server.auth.authenticator(&config.server.data_dir).context("cannot set up operator credentials")?;
    if let Some(path) = token_file {
        tracing::info!(path = %path.display(), "operator token (send as `authorization: Bearer <token>`)");
    }
    let listener = TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    Ok(Some(Started { config, listener, authenticator, telemetry }))
}

use agentmesh_chassis::{CommonArgs, ServerConfig, config::Config, server::shutdown_on_signal, telemetry};
use agentmesh_netguard::UrlGuard;
use agentmesh_registry::settings::RegistrySettings;
use anyhow::Context;
use clap::Parser;

/// The agentmesh registry: workspace records, status, capabilities and events.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let config =
        Config::<RegistrySettings>::load(ServerConfig::listening_on(([127, 0, 0, 1], 50051).into()), &args.common)?;
    if args.common.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    let _telemetry = telemetry::init("agentmesh-registry", &config.server)?;
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no registry setting");
    }
    let (authenticator, token_file) =
        config.server.auth.authenticator(&config.server.data_dir).context("cannot set up operator credentials")?;
    if let Some(path) = token_file {
        tracing::info!(path = %path.display(), "operator token (send as `authorization: Bearer <token>`)");
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    let url_guard = UrlGuard::new(config.service.network());
    agentmesh_registry::server::run(config, listener, authenticator, url_guard, shutdown_on_signal()).await
}

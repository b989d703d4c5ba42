use agentmesh_chassis::{CommonArgs, ServerConfig, config::Config, server::shutdown_on_signal, telemetry};
use agentmesh_provisioner::settings::ProvisionerSettings;
use anyhow::Context;
use clap::Parser;

/// The agentmesh provisioner: runs workspaces on Docker, Kubernetes, local
/// processes, or as external agents, and keeps the registry truthful.
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
        Config::<ProvisionerSettings>::load(ServerConfig::listening_on(([127, 0, 0, 1], 50052).into()), &args.common)?;
    if args.common.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(());
    }
    let _telemetry = telemetry::init("agentmesh-provisioner", &config.server)?;
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, "ignoring an environment variable that names no provisioner setting");
    }
    let (authenticator, token_file) =
        config.server.auth.authenticator(&config.server.data_dir).context("cannot set up operator credentials")?;
    if let Some(path) = token_file {
        tracing::info!(path = %path.display(), "operator token (send as `authorization: Bearer <token>`)");
    }
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.server.listen))?;
    agentmesh_provisioner::server::run(config, listener, authenticator, shutdown_on_signal()).await
}

use agentmesh_chassis::{CommonArgs, server::shutdown_on_signal};
use agentmesh_netguard::UrlGuard;
use agentmesh_registry::settings::RegistrySettings;
use clap::Parser;

/// The agentmesh registry: workspace records, status, capabilities and events.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    agentmesh_chassis::binary::exit("agentmesh-registry", run(Args::parse()))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let started = agentmesh_chassis::binary::start::<RegistrySettings>(
        "agentmesh-registry",
        ([127, 0, 0, 1], 50051).into(),
        &args.common,
    )
    .await?;
    let Some(started) = started else { return Ok(()) };
    let url_guard = UrlGuard::new(started.config.service.network());
    let _telemetry = started.telemetry;
    agentmesh_registry::server::run(
        started.config,
        started.listener,
        started.authenticator,
        url_guard,
        shutdown_on_signal(),
    )
    .await
}

use agentmesh_chassis::{CommonArgs, server::shutdown_on_signal};
use agentmesh_provisioner::settings::ProvisionerSettings;
use clap::Parser;

/// The agentmesh provisioner: runs workspaces on Docker, Kubernetes, local
/// processes, or as external agents, and keeps the registry truthful.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    agentmesh_chassis::binary::exit("agentmesh-provisioner", run(Args::parse()))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let started = agentmesh_chassis::binary::start::<ProvisionerSettings>(
        "agentmesh-provisioner",
        ([127, 0, 0, 1], 50052).into(),
        &args.common,
    )
    .await?;
    let Some(started) = started else { return Ok(()) };
    let _telemetry = started.telemetry;
    agentmesh_provisioner::server::run(started.config, started.listener, started.authenticator, shutdown_on_signal())
        .await
}

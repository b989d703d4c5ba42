use agentmesh_a2a_gateway::settings::GatewaySettings;
use agentmesh_chassis::{CommonArgs, server::shutdown_on_signal};
use clap::Parser;

/// Every forwarded message allocates and frees small buffers on whichever
/// worker thread runs it; glibc's allocator spent about a tenth of the
/// gateway's CPU on that under load (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The agentmesh A2A gateway: delivers A2A messages to workspaces, and queues
/// them durably while a workspace cannot take them.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    agentmesh_chassis::binary::exit("agentmesh-a2a-gateway", run(Args::parse()))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let started = agentmesh_chassis::binary::start::<GatewaySettings>(
        "agentmesh-a2a-gateway",
        ([127, 0, 0, 1], 50053).into(),
        &args.common,
    )
    .await?;
    let Some(started) = started else { return Ok(()) };
    let _telemetry = started.telemetry;
    agentmesh_a2a_gateway::server::run(started.config, started.listener, started.authenticator, shutdown_on_signal())
        .await
}

use agentmesh_chassis::{CommonArgs, server::shutdown_on_signal};
use agentmesh_scheduler::settings::SchedulerSettings;
use clap::Parser;

/// The agentmesh scheduler: fires cron schedules into workspaces as A2A
/// messages through the gateway.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[command(flatten)]
    common: CommonArgs,
}

fn main() -> std::process::ExitCode {
    agentmesh_chassis::binary::exit("agentmesh-scheduler", run(Args::parse()))
}

#[tokio::main]
async fn run(args: Args) -> anyhow::Result<()> {
    let started = agentmesh_chassis::binary::start::<SchedulerSettings>(
        "agentmesh-scheduler",
        ([127, 0, 0, 1], 50054).into(),
        &args.common,
    )
    .await?;
    let Some(started) = started else { return Ok(()) };
    let _telemetry = started.telemetry;
    agentmesh_scheduler::server::run(started.config, started.listener, started.authenticator, shutdown_on_signal())
        .await
}

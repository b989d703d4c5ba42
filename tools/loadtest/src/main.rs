//! `agentmesh-loadtest`: drives registry heartbeats and measures them, and
//! serves a bare tonic echo of the registry's Heartbeat RPC as the ceiling a
//! single unary RPC reaches on the same machine.

mod drive;
mod echo;
mod fleet;
mod report;

use std::{net::SocketAddr, path::PathBuf};

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve `RegistryService/Heartbeat` answering a default response at once
    /// (every other RPC is UNIMPLEMENTED).
    EchoServer {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:50151")]
        listen: SocketAddr,
    },
    /// Create workspaces, then drive Heartbeat RPCs and report throughput and latency.
    Heartbeats(HeartbeatArgs),
}

/// Who signs the heartbeats.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// Each workspace's own bearer token, as a real agent sends.
    Workspace,
    /// The operator token, which the registry accepts for any workspace.
    Operator,
}

#[derive(clap::Args)]
pub struct HeartbeatArgs {
    /// The server, e.g. http://127.0.0.1:50051.
    #[arg(long)]
    pub target: String,
    /// File holding the operator token (needed unless --no-setup).
    #[arg(long)]
    pub token_file: Option<PathBuf>,
    /// How many workspaces heartbeat.
    #[arg(long, default_value_t = 10_000)]
    pub workspaces: usize,
    /// Requests in flight at once (one task each).
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Tasks sharing one HTTP/2 connection.
    #[arg(long, default_value_t = 32)]
    pub tasks_per_connection: usize,
    /// Seconds measured, after the warm-up.
    #[arg(long, default_value_t = 30)]
    pub duration_secs: u64,
    /// Seconds driven but not measured first.
    #[arg(long, default_value_t = 5)]
    pub warmup_secs: u64,
    /// Open loop at this many heartbeats per second in total (latency counts
    /// from each request's scheduled start). Without it, a closed loop: each
    /// task sends its next heartbeat as soon as the last one is answered.
    #[arg(long)]
    pub rate: Option<u64>,
    /// Create no workspaces and send no token: for the echo server.
    #[arg(long)]
    pub no_setup: bool,
    /// Reuse the workspaces listed in this file (`id token` per line), or
    /// create them and write it when it does not exist yet.
    #[arg(long)]
    pub workspaces_file: Option<PathBuf>,
    /// Only create the workspaces (and write --workspaces-file), then exit.
    #[arg(long, requires = "workspaces_file", conflicts_with = "no_setup")]
    pub setup_only: bool,
    /// CreateWorkspace calls in flight at once during setup.
    #[arg(long, default_value_t = 32)]
    pub setup_concurrency: usize,
    /// Which token the heartbeats carry.
    #[arg(long, value_enum, default_value_t = AuthMode::Workspace)]
    pub auth: AuthMode,
    /// A name for this run in the report, e.g. "sqlite".
    #[arg(long, default_value = "")]
    pub label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::EchoServer { listen } => echo::serve(listen).await,
        Command::Heartbeats(args) => drive::run(args).await,
    }
}

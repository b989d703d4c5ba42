//! `agentmesh-loadtest`: drives registry heartbeats and measures them, and
//! serves a bare tonic echo of the registry's Heartbeat RPC as the ceiling a
//! single unary RPC reaches on the same machine. Also times workspace
//! creation through the provisioner against `docker run`, and its
//! reconciliation of a container killed outside the mesh. And measures A2A
//! `message/send` through the gateway beside the agent and a reverse proxy,
//! and the gateway draining a backlog. And the scheduler's fire lag with
//! many schedules loaded, and its memory per schedule.

mod a2a;
mod auth;
mod drive;
mod echo;
mod fleet;
mod provision;
mod report;
mod schedule;

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
    /// Time create→ONLINE through the provisioner beside `docker run` of the
    /// same image, and `docker kill`→OFFLINE, as the registry's event stream
    /// reports them.
    Provision(ProvisionArgs),
    /// `message/send` throughput and latency through the A2A gateway, straight
    /// to the agent, and through reverse proxies, interleaved round by round.
    GatewayThroughput(GatewayThroughputArgs),
    /// Time the A2A gateway draining a backlog of queued messages into a
    /// one-at-a-time agent, beside the same messages sent straight to it.
    GatewayDrain(GatewayDrainArgs),
    /// Load many schedules into the scheduler, fire a burst of them in one
    /// second, and report their lag beside the same sends made directly
    /// through the gateway, and the scheduler's memory per schedule.
    ScheduleLag(ScheduleLagArgs),
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

/// One way of bringing up the echo agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Arm {
    /// CreateWorkspace on the provisioner.
    Provisioner,
    /// `docker run -d` of the image with the agent's environment, on the
    /// provisioner's network, and nothing else.
    Docker,
    /// The same, plus what the provisioner's Docker runtime adds: an init
    /// process, the default tier's CPU, memory and pid limits, a volume.
    DockerFlags,
}

impl Arm {
    pub fn name(self) -> &'static str {
        match self {
            Arm::Provisioner => "provisioner",
            Arm::Docker => "docker",
            Arm::DockerFlags => "docker-flags",
        }
    }

    /// For container and workspace names.
    pub fn short(self) -> &'static str {
        match self {
            Arm::Provisioner => "p",
            Arm::Docker => "d",
            Arm::DockerFlags => "f",
        }
    }
}

#[derive(clap::Args)]
pub struct ProvisionArgs {
    /// The registry as this client reaches it, e.g. http://172.18.0.1:50051.
    #[arg(long)]
    pub registry: String,
    /// The registry address `docker run` containers are given
    /// (AGENTMESH_REGISTRY_ADDR); by default --registry.
    #[arg(long)]
    pub workload_registry: Option<String>,
    /// The provisioner, e.g. http://127.0.0.1:50052.
    #[arg(long)]
    pub provisioner: String,
    /// File holding the operator token both services accept.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The agent image.
    #[arg(long, default_value = "agentmesh/echo-agent:dev")]
    pub image: String,
    /// The Docker network of the provisioner's runtime; `docker run`
    /// containers join it too.
    #[arg(long)]
    pub network: String,
    /// Measured rounds; each round brings up one workspace per arm, in turn.
    #[arg(long, default_value_t = 20)]
    pub runs: usize,
    /// Rounds run first and not measured.
    #[arg(long, default_value_t = 1)]
    pub warmup: usize,
    /// The arms, in the order each round runs them.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Arm::Provisioner, Arm::Docker, Arm::DockerFlags])]
    pub arms: Vec<Arm>,
    /// Do not kill the provisioner's workloads (no reconciliation figures).
    #[arg(long)]
    pub no_kill: bool,
    /// Milliseconds to wait after each clean-up, so that the engine's
    /// leftover work does not land in the next measurement.
    #[arg(long, default_value_t = 500)]
    pub pause_ms: u64,
    /// Seconds to wait for each awaited status before counting a failure.
    #[arg(long, default_value_t = 60)]
    pub timeout_secs: u64,
    /// Part of every workspace and container name, and the value of
    /// --bench-label on `docker run` containers.
    #[arg(long, default_value = "run")]
    pub run_id: String,
    /// The label key put on `docker run` containers, for clean-up by the caller.
    #[arg(long, default_value = "dev.agentmesh.bench")]
    pub bench_label: String,
    /// Write one JSON line per measured create and kill here.
    #[arg(long)]
    pub runs_file: Option<PathBuf>,
    /// A name for this run in the report.
    #[arg(long, default_value = "")]
    pub label: String,
}

/// The mesh a gateway benchmark runs against.
#[derive(clap::Args)]
pub struct MeshArgs {
    /// The registry, e.g. http://127.0.0.1:50171.
    #[arg(long)]
    pub registry: String,
    /// File holding the operator token the registry and the gateway accept.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The gateway's A2A front (JSON-RPC over HTTP), e.g. http://127.0.0.1:8173.
    #[arg(long)]
    pub gateway: String,
    /// The echo agent's URL: registered as the workspace's URL, and the
    /// target of the direct sends, e.g. http://127.0.0.1:8175/.
    #[arg(long)]
    pub agent: String,
    /// Seconds between the workspace's heartbeats (the agent shim's default is 10).
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Processes whose CPU use is reported, as name=pid[,pid...]; repeatable.
    #[arg(long = "cpu")]
    pub processes: Vec<a2a::cpu::Watched>,
    /// Append one JSON line per measurement here.
    #[arg(long)]
    pub results_file: Option<PathBuf>,
}

#[derive(clap::Args)]
pub struct GatewayThroughputArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// A reverse proxy in front of the agent, as name=url (e.g.
    /// nginx=http://127.0.0.1:8174/, or h2c://, https://, h2:// for HTTP/2
    /// in the clear, TLS, HTTP/2 over TLS); repeatable.
    #[arg(long = "proxy")]
    pub proxies: Vec<String>,
    /// Another way to the gateway's A2A front, as name=base URL (e.g.
    /// gateway-h2=h2c://127.0.0.1:8173); the workspace's path is added.
    /// Repeatable.
    #[arg(long = "gateway-route")]
    pub gateway_routes: Vec<String>,
    /// PEM file of the authority that issued the TLS targets' certificates.
    #[arg(long)]
    pub ca_file: Option<PathBuf>,
    /// Connections, each with one request in flight at a time.
    #[arg(long, value_delimiter = ',', default_values_t = [1, 16, 64])]
    pub concurrency: Vec<usize>,
    /// Rounds; each runs every concurrency against every target in turn,
    /// starting one target further along each round.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Seconds driven but not measured at the start of each measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Seconds measured per target, concurrency and round.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// The workspace's max_concurrent_tasks: high, so that only the agent's
    /// own answers could ever hold a message back.
    #[arg(long, default_value_t = 10_000)]
    pub max_concurrent_tasks: u32,
}

#[derive(clap::Args)]
pub struct GatewayDrainArgs {
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// The gateway's gRPC address (control API), e.g. http://127.0.0.1:50173.
    #[arg(long)]
    pub gateway_grpc: String,
    /// Messages in the backlog, and sent straight to the agent for comparison.
    #[arg(long, default_value_t = 10_000)]
    pub messages: usize,
    /// Rounds; each sends the messages straight to the agent, then queues
    /// and drains them through the gateway.
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
    /// Connections queueing the backlog at once; with 1 the order of
    /// delivery is checked exactly, else only that each arrived once.
    #[arg(long, default_value_t = 1)]
    pub fill_concurrency: usize,
    /// Milliseconds between reads of the agent's counters while it drains.
    #[arg(long, default_value_t = 10)]
    pub poll_ms: u64,
    /// Seconds a drain may take before the run fails.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// The workspace's max_concurrent_tasks: 1 delivers one message at a time.
    #[arg(long, default_value_t = 1)]
    pub max_concurrent_tasks: u32,
}

#[derive(clap::Args)]
pub struct ScheduleLagArgs {
    /// The registry, e.g. http://127.0.0.1:50181.
    #[arg(long)]
    pub registry: String,
    /// The scheduler, e.g. http://127.0.0.1:50184.
    #[arg(long)]
    pub scheduler: String,
    /// The gateway's gRPC address, where its A2A binding is served, e.g.
    /// http://127.0.0.1:50183: the direct burst goes there.
    #[arg(long)]
    pub gateway_grpc: String,
    /// File holding the operator token every service accepts.
    #[arg(long)]
    pub token_file: PathBuf,
    /// The echo agent's URL, registered for every workspace, e.g. http://127.0.0.1:8185/.
    #[arg(long)]
    pub agent: String,
    /// The scheduler's process id: its resident memory is read from /proc,
    /// and its CPU use reported.
    #[arg(long)]
    pub scheduler_pid: u32,
    /// Other processes whose CPU use is reported, as name=pid[,pid...]; repeatable.
    #[arg(long = "cpu")]
    pub processes: Vec<a2a::cpu::Watched>,
    /// Schedules loaded in all, a round's due ones included.
    #[arg(long, default_value_t = 100_000)]
    pub schedules: usize,
    /// Schedules that fall due in the same second, each round.
    #[arg(long, default_value_t = 1_000)]
    pub due: usize,
    /// Workspaces the schedules are spread over, round-robin.
    #[arg(long, default_value_t = 100)]
    pub workspaces: usize,
    /// Rounds; each creates its due schedules for a new second, and deletes
    /// them once they have run.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// CreateSchedule and DeleteSchedule calls in flight at once.
    #[arg(long, default_value_t = 64)]
    pub concurrency: usize,
    /// Sends in flight at once in the direct burst: the scheduler's max_in_flight.
    #[arg(long, default_value_t = 512)]
    pub burst_concurrency: usize,
    /// Seconds from the start of a round to the second its schedules fall due.
    #[arg(long, default_value_t = 30)]
    pub lead_secs: u64,
    /// Milliseconds between reads of the run history while a burst runs.
    #[arg(long, default_value_t = 500)]
    pub poll_ms: u64,
    /// Seconds after their second by which every run must have an outcome.
    #[arg(long, default_value_t = 300)]
    pub timeout_secs: u64,
    /// Seconds between the workspaces' heartbeats (the agent shim's default is 10).
    #[arg(long, default_value_t = 10)]
    pub heartbeat_secs: u64,
    /// Every workspace's max_concurrent_tasks: high, so that no run finds
    /// its workspace busy.
    #[arg(long, default_value_t = 10_000)]
    pub max_concurrent_tasks: u32,
    /// Append one JSON line for the load and one per round here.
    #[arg(long)]
    pub results_file: Option<PathBuf>,
    /// A name for this run in the results, e.g. "sqlite".
    #[arg(long, default_value = "")]
    pub label: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::EchoServer { listen } => echo::serve(listen).await,
        Command::Heartbeats(args) => drive::run(args).await,
        Command::Provision(args) => provision::run(args).await,
        Command::GatewayThroughput(args) => a2a::throughput::run(args).await,
        Command::GatewayDrain(args) => a2a::drain::run(args).await,
        Command::ScheduleLag(args) => schedule::run(args).await,
    }
}

//! What `agentmesh` accepts on its command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Operate an agentmesh from a terminal: workspaces, messages, schedules,
/// the queue and the event stream; or run the whole mesh in one process
/// (`agentmesh dev`).
///
/// Exit codes: 0 success; 1 the command failed; 2 wrong usage; 3 not found;
/// 4 not authenticated or not allowed; 5 a service is unavailable; 6 the
/// mesh refused the request as invalid or not possible now.
#[derive(Debug, Parser)]
#[command(name = "agentmesh", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct Global {
    /// The context (mesh) to talk to; default the config file's current one.
    #[arg(long, global = true, env = "AGENTMESH_CONTEXT")]
    pub context: Option<String>,
    /// The bearer token to present, instead of the context's.
    #[arg(long, global = true, env = "AGENTMESH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The configuration file of contexts.
    #[arg(long, global = true, env = "AGENTMESH_CONFIG", value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns for people.
    Table,
    /// More columns.
    Wide,
    /// JSON, stable for scripts.
    Json,
    /// YAML.
    Yaml,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Workspaces: list, inspect, create and run them.
    #[command(visible_alias = "ws", subcommand)]
    Workspaces(WorkspaceCommand),
    /// Send an A2A message to a workspace's agent through the gateway.
    Send(SendArgs),
    /// Cron schedules that fire messages into workspaces.
    #[command(visible_alias = "sched", subcommand)]
    Schedules(ScheduleCommand),
    /// The gateway's durable queue of messages waiting for their agent.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Follow the registry's event stream.
    Events(EventsArgs),
    /// The provisioner's runtime instances and their health.
    Runtimes,
    /// The provisioner's policy.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Every service's health and version.
    Status,
    /// View and change contexts.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print a shell completion script.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Run the whole mesh in this process, for development.
    Dev(DevArgs),
}

/// A workspace: its id (or a unique prefix of it) or its name.
pub type WorkspaceRef = String;

#[derive(Debug, Subcommand)]
pub enum WorkspaceCommand {
    /// List workspaces.
    #[command(visible_alias = "ls")]
    List(ListArgs),
    /// Show one workspace.
    Get { workspace: WorkspaceRef },
    /// Create a workspace and start its agent.
    Create(Box<CreateArgs>),
    /// Start a stopped workspace.
    Start { workspace: WorkspaceRef },
    /// Stop a workspace's agent.
    Stop(StopArgs),
    /// Stop and start a workspace's agent.
    Restart(StopArgs),
    /// Stop an idle workspace until a message wakes it.
    Hibernate { workspace: WorkspaceRef },
    /// Start a hibernated workspace.
    Wake { workspace: WorkspaceRef },
    /// Remove a workspace, its agent and its data.
    #[command(visible_alias = "rm")]
    Delete { workspace: WorkspaceRef },
    /// Print a workspace agent's logs.
    Logs(LogsArgs),
    /// Run a command in a workspace's agent.
    Exec(ExecArgs),
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only workspaces with these labels (`key=value,…`).
    #[arg(short = 'l', long = "label")]
    pub label: Option<String>,
    /// Only workspaces in this status (online, degraded, offline, failed, …).
    #[arg(long)]
    pub status: Vec<String>,
    /// Removed workspaces too.
    #[arg(short, long)]
    pub all: bool,
    /// After listing, keep printing workspaces as they change.
    #[arg(short, long)]
    pub watch: bool,
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The workspace's name.
    #[arg(long, required_unless_present = "file")]
    pub name: Option<String>,
    /// A spec file (YAML or JSON, the fields of `workspaces get -o yaml`'s
    /// `spec`); flags given beside it win.
    #[arg(short, long, value_name = "PATH")]
    pub file: Option<PathBuf>,
    /// docker, kubernetes, process or external.
    #[arg(long)]
    pub runtime: Option<String>,
    /// The runtime instance, when there are several of the kind.
    #[arg(long)]
    pub runtime_instance: Option<String>,
    /// The agent's image (docker, kubernetes).
    #[arg(long)]
    pub image: Option<String>,
    /// The agent's program (process) or the image's entrypoint override.
    #[arg(long)]
    pub command: Option<String>,
    /// An argument for the agent's program (repeat for more).
    #[arg(long = "arg", allow_hyphen_values = true)]
    pub args: Vec<String>,
    /// An environment variable for the agent, `NAME=value` (repeat).
    #[arg(short, long)]
    pub env: Vec<String>,
    /// A label, `key=value` (repeat).
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// What the agent is for, in a few words.
    #[arg(long)]
    pub role: Option<String>,
    /// The parent workspace.
    #[arg(long)]
    pub parent: Option<WorkspaceRef>,
    /// The resource tier (small, medium, large).
    #[arg(long)]
    pub tier: Option<String>,
    /// How many tasks the agent takes at once.
    #[arg(long)]
    pub max_tasks: Option<u32>,
    /// never, on-failure or always.
    #[arg(long)]
    pub restart: Option<String>,
    /// Wait until the workspace is online (or fails), showing its progress.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 300)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct StopArgs {
    pub workspace: WorkspaceRef,
    /// Seconds the agent gets to stop before it is killed.
    #[arg(long)]
    pub grace: Option<u32>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    pub workspace: WorkspaceRef,
    /// Keep printing new lines.
    #[arg(short, long)]
    pub follow: bool,
    /// How many of the last lines to print.
    #[arg(long, default_value_t = 100)]
    pub tail: u32,
}

#[derive(Debug, Args)]
pub struct ExecArgs {
    pub workspace: WorkspaceRef,
    /// The command and its arguments.
    #[arg(last = true, required = true)]
    pub command: Vec<String>,
}

#[derive(Debug, Args)]
pub struct SendArgs {
    pub workspace: WorkspaceRef,
    /// The message's text.
    pub text: String,
    /// Send as a stream and print what the agent says as it arrives.
    #[arg(long)]
    pub stream: bool,
    /// When the message is queued, wait for the agent's reply.
    #[arg(long)]
    pub follow: bool,
    /// The A2A message id; default a fresh one. Sending again with the same
    /// id never delivers twice.
    #[arg(long)]
    pub message_id: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ScheduleCommand {
    /// List schedules.
    #[command(visible_alias = "ls")]
    List {
        /// Only this workspace's.
        #[arg(long)]
        workspace: Option<WorkspaceRef>,
    },
    /// Show one schedule.
    Get { schedule: String },
    /// Create a schedule.
    Create(ScheduleCreateArgs),
    /// Change a schedule.
    Update(ScheduleUpdateArgs),
    /// Fire a schedule again on its times.
    Enable { schedule: String },
    /// Stop a schedule firing.
    Disable { schedule: String },
    /// Fire a schedule now, once.
    Trigger { schedule: String },
    /// A schedule's runs: when, how late, and what came of each.
    Runs {
        schedule: String,
        /// At most this many, the latest first.
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// Remove a schedule.
    #[command(visible_alias = "rm")]
    Delete { schedule: String },
}

#[derive(Debug, Args)]
pub struct ScheduleCreateArgs {
    /// The workspace whose agent receives the messages.
    #[arg(long)]
    pub workspace: WorkspaceRef,
    /// The schedule's name, unique in its workspace.
    #[arg(long)]
    pub name: String,
    /// Five fields, or six with seconds first (`0 9 * * MON-FRI`).
    #[arg(long)]
    pub cron: String,
    /// An IANA timezone.
    #[arg(long, default_value = "UTC")]
    pub timezone: String,
    /// The message to send on each run.
    #[arg(long)]
    pub text: String,
    /// When the workspace is busy: skip or queue.
    #[arg(long, default_value = "skip")]
    pub overlap: String,
    /// After downtime: skip-missed or fire-once.
    #[arg(long, default_value = "skip-missed")]
    pub catch_up: String,
    /// Create it disabled.
    #[arg(long)]
    pub disabled: bool,
}

#[derive(Debug, Args)]
pub struct ScheduleUpdateArgs {
    pub schedule: String,
    #[arg(long)]
    pub name: Option<String>,
    #[arg(long)]
    pub cron: Option<String>,
    #[arg(long)]
    pub timezone: Option<String>,
    #[arg(long)]
    pub text: Option<String>,
    #[arg(long)]
    pub overlap: Option<String>,
    #[arg(long)]
    pub catch_up: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// How many messages wait, are in flight or are dead, per workspace.
    Stats,
    /// The queue's items.
    #[command(visible_alias = "ls")]
    List {
        #[arg(long)]
        workspace: Option<WorkspaceRef>,
        /// Only items in these states: queued, in-flight, delivered, dead,
        /// dropped (default: queued, in-flight and dead).
        #[arg(long)]
        state: Vec<String>,
    },
    /// Queue a workspace's dead letters again.
    RequeueDead {
        #[arg(long)]
        workspace: WorkspaceRef,
    },
    /// Drop a workspace's waiting messages: those older than some age, or
    /// past their deadline.
    Drop {
        #[arg(long)]
        workspace: WorkspaceRef,
        /// Those queued more than this many seconds ago.
        #[arg(long, required_unless_present = "expired")]
        older_than: Option<u32>,
        /// Those past their own deadline.
        #[arg(long)]
        expired: bool,
        /// Dead letters too.
        #[arg(long)]
        dead: bool,
        /// Say what would be dropped, drop nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub struct EventsArgs {
    /// Only this workspace's events.
    #[arg(long)]
    pub workspace: Option<WorkspaceRef>,
    /// Only events of these types (created, status, heartbeat, registered, …).
    #[arg(long = "type")]
    pub types: Vec<String>,
    /// Resume after this cursor (printed with every event); 0 replays what
    /// is retained.
    #[arg(long)]
    pub from_cursor: Option<u64>,
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// The policy in force.
    Show,
    /// Apply a policy file (TOML), or re-read the provisioner's own.
    Reload {
        /// A TOML policy; without it the provisioner re-reads its policy_file.
        #[arg(long, value_name = "PATH")]
        file: Option<PathBuf>,
        /// Say what would change and what would be stopped; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Print the configuration (tokens hidden).
    View,
    /// The current context's name.
    CurrentContext,
    /// Make a context the current one.
    UseContext { name: String },
    /// Create or change a context.
    SetContext(SetContextArgs),
    /// Remove a context.
    DeleteContext { name: String },
}

#[derive(Debug, Args)]
pub struct SetContextArgs {
    pub name: String,
    /// The registry's gRPC address (`http://host:port`).
    #[arg(long)]
    pub registry: Option<String>,
    #[arg(long)]
    pub provisioner: Option<String>,
    /// The gateway's gRPC address.
    #[arg(long)]
    pub gateway: Option<String>,
    #[arg(long)]
    pub scheduler: Option<String>,
    /// One address for all four (a balancer in front of the mesh), with
    /// each service on its default port.
    #[arg(long, value_name = "HOST")]
    pub host: Option<String>,
    /// The token to present.
    #[arg(long)]
    pub token: Option<String>,
    /// A file holding the token (read at each command).
    #[arg(long, value_name = "PATH")]
    pub token_file: Option<PathBuf>,
    /// A PEM file of authorities to trust for https addresses.
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct DevArgs {
    /// Where the stores, tokens and mesh id live.
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// The address every service listens on.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: std::net::IpAddr,
    /// The registry's gRPC port (0: any free one).
    #[arg(long, default_value_t = 50051)]
    pub registry_port: u16,
    /// The provisioner's gRPC port.
    #[arg(long, default_value_t = 50052)]
    pub provisioner_port: u16,
    /// The gateway's gRPC port.
    #[arg(long, default_value_t = 50053)]
    pub gateway_port: u16,
    /// The scheduler's gRPC port.
    #[arg(long, default_value_t = 50054)]
    pub scheduler_port: u16,
    /// The gateway's A2A (HTTP) port.
    #[arg(long, default_value_t = 8053)]
    pub a2a_port: u16,
    /// The first of four consecutive ports serving Prometheus metrics at
    /// `/metrics`: registry, provisioner, gateway, scheduler (0: any free ones).
    #[arg(long, default_value_t = 9091, conflicts_with = "no_metrics")]
    pub metrics_port: u16,
    /// Serve no metrics.
    #[arg(long)]
    pub no_metrics: bool,
    /// The context written for this mesh (and made current).
    #[arg(long, default_value = "dev")]
    pub context_name: String,
}

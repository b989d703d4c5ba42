//! The echo agent binary: flags, logging, signals. Prints
//! `listening on <address>` on stdout once bound, so a parent that asked for
//! port 0 can learn the port.

use std::{io::IsTerminal, net::SocketAddr, path::PathBuf, process::ExitCode, time::Duration};

use agentmesh_echo_agent::{BusyStatus, Capabilities, Config, TlsIdentity};
use anyhow::Context;
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// An A2A agent that echoes every text message back, for tests and benchmarks.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, env = "AGENTMESH_ECHO_LISTEN", default_value = "0.0.0.0:8080")]
    listen: SocketAddr,
    /// Overrides the port of --listen (the agent shim sets PORT).
    #[arg(long, env = "PORT")]
    port: Option<u16>,
    /// The agent's externally reachable URL, advertised in its card; derived
    /// from each request's Host header when absent.
    #[arg(long, env = "AGENTMESH_AGENT_URL")]
    public_url: Option<String>,
    /// The agent's name in its card.
    #[arg(long, env = "AGENTMESH_ECHO_NAME", default_value = "echo")]
    name: String,
    /// Milliseconds to wait before answering each message.
    #[arg(long, env = "AGENTMESH_ECHO_DELAY_MS", default_value_t = 0)]
    delay_ms: u64,
    /// While a streamed answer is delayed, repeat its `working` update every
    /// this many milliseconds; 0 sends it once.
    #[arg(long, env = "AGENTMESH_ECHO_PROGRESS_MS", default_value_t = 0)]
    progress_ms: u64,
    /// Messages processed at once before the rest get a busy answer; 0 means no limit.
    #[arg(long, env = "AGENTMESH_ECHO_MAX_CONCURRENT", default_value_t = 0)]
    max_concurrent: usize,
    /// Exit on its own after this many milliseconds, with --exit-code.
    #[arg(long, env = "AGENTMESH_ECHO_EXIT_AFTER_MS")]
    exit_after_ms: Option<u64>,
    /// The code to exit with after --exit-after-ms.
    #[arg(long, env = "AGENTMESH_ECHO_EXIT_CODE", default_value_t = 0)]
    exit_code: u8,
    /// Declare that the agent queues messages in its own session.
    #[arg(long, env = "AGENTMESH_ECHO_NATIVE_SESSION")]
    native_session: bool,
    /// Declare that the agent runs its own scheduler.
    #[arg(long, env = "AGENTMESH_ECHO_NATIVE_SCHEDULER")]
    native_scheduler: bool,
    /// Declare that the agent manages its own status.
    #[arg(long, env = "AGENTMESH_ECHO_NATIVE_STATUS_MGMT")]
    native_status_mgmt: bool,
    /// Declare an idle-timeout override, in seconds.
    #[arg(long, env = "AGENTMESH_ECHO_IDLE_TIMEOUT_SECONDS")]
    idle_timeout_seconds: Option<u32>,
    /// How many of the latest message ids to remember, to answer a
    /// redelivered message as the same message; 0 turns this off.
    #[arg(long, env = "AGENTMESH_ECHO_REMEMBERED_MESSAGE_IDS", default_value_t = 100_000)]
    remembered_message_ids: usize,
    /// Answer every message with an empty text, as an agent that ignores
    /// the prompt would.
    #[arg(long, env = "AGENTMESH_ECHO_SILENT")]
    silent: bool,
    /// The HTTP status of the busy answer: 503 or 429.
    #[arg(long, env = "AGENTMESH_ECHO_BUSY_STATUS", default_value = "503", value_parser = busy_status)]
    busy_status: BusyStatus,
    /// The Retry-After of the busy answer, in seconds.
    #[arg(long, env = "AGENTMESH_ECHO_RETRY_AFTER_SECONDS", default_value_t = 1)]
    retry_after_seconds: u32,
    /// Serve over TLS with this PEM certificate chain (needs --tls-key).
    #[arg(long, env = "AGENTMESH_ECHO_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, env = "AGENTMESH_ECHO_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

fn busy_status(raw: &str) -> Result<BusyStatus, String> {
    match raw {
        "503" => Ok(BusyStatus::Unavailable),
        "429" => Ok(BusyStatus::TooManyRequests),
        _ => Err("503 or 429".to_owned()),
    }
}

impl Args {
    fn config(&self) -> anyhow::Result<Config> {
        let read =
            |path: &PathBuf| std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()));
        let tls = match (&self.tls_cert, &self.tls_key) {
            // Refused here, before the agent says it listens.
            (Some(cert), Some(key)) => Some(TlsIdentity::from_pem(&read(cert)?, &read(key)?)?),
            _ => None,
        };
        Ok(Config {
            name: self.name.clone(),
            public_url: self.public_url.clone().filter(|url| !url.is_empty()),
            delay: Duration::from_millis(self.delay_ms),
            progress_interval: (self.progress_ms > 0).then(|| Duration::from_millis(self.progress_ms)),
            max_concurrent: self.max_concurrent,
            exit_after: self.exit_after_ms.map(|ms| (Duration::from_millis(ms), self.exit_code)),
            capabilities: Capabilities {
                native_session: self.native_session,
                native_scheduler: self.native_scheduler,
                native_status_mgmt: self.native_status_mgmt,
            },
            idle_timeout_seconds: self.idle_timeout_seconds,
            remembered_message_ids: self.remembered_message_ids,
            silent: self.silent,
            busy_status: self.busy_status,
            retry_after_seconds: self.retry_after_seconds,
            tls,
        })
    }
}

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let runtime = tokio::runtime::Runtime::new().context("starting the runtime")?;
    let code = runtime.block_on(run(args))?;
    Ok(ExitCode::from(code))
}

async fn run(args: Args) -> anyhow::Result<u8> {
    let config = args.config()?;
    let mut address = args.listen;
    if let Some(port) = args.port {
        address.set_port(port);
    }
    let listener = tokio::net::TcpListener::bind(address).await.with_context(|| format!("binding {address}"))?;
    let bound = listener.local_addr()?;
    println!("listening on {bound}");
    tracing::info!(address = %bound, name = %args.name, "echo agent listening");

    let shutdown = CancellationToken::new();
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        tracing::info!("signal received, finishing in-flight requests");
        on_signal.cancel();
    });

    let code = agentmesh_echo_agent::serve(listener, config, shutdown).await?;
    Ok(code)
}

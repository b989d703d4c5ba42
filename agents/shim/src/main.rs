//! The agent shim (ARCH-5): joins any A2A agent to the mesh without changing
//! it.
//!
//! ```text
//! agentmesh-agent-shim [OPTIONS] -- <PROGRAM> [ARGS]...
//! ```
//!
//! It starts the agent with the shim's environment plus `PORT`, waits until
//! the agent serves its card on `127.0.0.1:<port>`, registers the agent's
//! URL and card with the registry, then heartbeats with what the agent's
//! status endpoint reports (or, without one, whether the card still
//! answers; an agent that stops answering heartbeats runtime state
//! `unresponsive`). Registration runs beside the agent and never holds it
//! up; without `AGENTMESH_REGISTRY_ADDR` and `AGENTMESH_WORKSPACE_ID` the
//! shim only supervises.
//!
//! It forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//! agent, reaps orphans (it may be PID 1 in a `FROM scratch` image), and
//! exits with the agent's exit code, or 128 + the signal that killed it;
//! 127 when the program cannot be found, 126 when it cannot be started, 2 on
//! invalid options.
//!
//! The status endpoint (default `/agentmesh/status`) answers JSON, every
//! field optional: `{"active_tasks": n, "error_rate": x, "runtime_state":
//! "...", "current_task": "...", "sample_error": "...", "capabilities":
//! {"native_session": b, "native_scheduler": b, "native_status_mgmt": b},
//! "idle_timeout_seconds": n}`; a 404 means the agent has none.

mod mesh;
mod probe;
mod supervise;

use std::{io::IsTerminal, process::ExitCode, time::Duration};

use agentmesh_proto::registry::v1::Capabilities;
use clap::Parser;
use http::Uri;
use tonic::metadata::MetadataValue;

use crate::{mesh::MeshConfig, supervise::Child};

/// Joins any A2A agent to an agentmesh: runs it, registers it and heartbeats on its behalf.
#[derive(Debug, Parser)]
#[command(version, about, override_usage = "agentmesh-agent-shim [OPTIONS] -- <PROGRAM> [ARGS]...")]
struct Args {
    /// The agent's workspace id (UUID).
    #[arg(long, env = "AGENTMESH_WORKSPACE_ID")]
    workspace_id: Option<uuid::Uuid>,
    /// The registry's gRPC address, e.g. http://172.18.0.1:50051.
    #[arg(long, env = "AGENTMESH_REGISTRY_ADDR", value_parser = parse_registry)]
    registry_addr: Option<Uri>,
    /// The workspace's bearer token; without one, the first registration claims it.
    #[arg(long, env = "AGENTMESH_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// The URL to advertise; by default http://<address that reaches the registry>:<port>/.
    #[arg(long, env = "AGENTMESH_AGENT_URL")]
    agent_url: Option<String>,
    /// The port the agent listens on, passed to it as PORT.
    #[arg(long, env = "AGENTMESH_AGENT_PORT", default_value_t = 8080)]
    agent_port: u16,
    /// Milliseconds between heartbeats.
    #[arg(long, env = "AGENTMESH_HEARTBEAT_INTERVAL_MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(1..))]
    heartbeat_interval_ms: u64,
    /// The agent's status endpoint.
    #[arg(long, env = "AGENTMESH_AGENT_STATUS_PATH", default_value = "/agentmesh/status")]
    status_path: String,
    /// Capabilities to declare when the agent has no status endpoint: a comma
    /// list of native_session, native_scheduler, native_status_mgmt.
    #[arg(long, env = "AGENTMESH_CAPABILITIES", value_parser = parse_capabilities)]
    capabilities: Option<Capabilities>,
    /// The agent's program and arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM")]
    command: Vec<String>,
}

fn parse_registry(value: &str) -> Result<Uri, String> {
    let uri: Uri = value.parse().map_err(|error| format!("{error}"))?;
    match (uri.scheme_str(), uri.host()) {
        (Some("http" | "https"), Some(_)) => Ok(uri),
        _ => Err("expected http://<host>:<port>".to_owned()),
    }
}

fn parse_capabilities(value: &str) -> Result<Capabilities, String> {
    let mut capabilities = Capabilities::default();
    for name in value.split(',').map(str::trim).filter(|name| !name.is_empty()) {
        match name {
            "native_session" => capabilities.native_session = true,
            "native_scheduler" => capabilities.native_scheduler = true,
            "native_status_mgmt" => capabilities.native_status_mgmt = true,
            other => {
                return Err(format!(
                    "unknown capability {other:?} (expected native_session, native_scheduler, native_status_mgmt)"
                ));
            }
        }
    }
    Ok(capabilities)
}

impl Args {
    /// The mesh to join, if both the registry and the workspace are named.
    fn mesh(&self) -> Option<MeshConfig> {
        let (registry, workspace_id) = match (&self.registry_addr, self.workspace_id) {
            (Some(registry), Some(workspace_id)) => (registry.clone(), workspace_id),
            (None, None) => {
                tracing::info!("AGENTMESH_REGISTRY_ADDR and AGENTMESH_WORKSPACE_ID unset: not joining a mesh");
                return None;
            }
            _ => {
                tracing::warn!(
                    "only one of AGENTMESH_REGISTRY_ADDR and AGENTMESH_WORKSPACE_ID is set: not joining a mesh"
                );
                return None;
            }
        };
        Some(MeshConfig {
            registry,
            workspace_id: workspace_id.to_string(),
            token: self.token.clone().filter(|token| !token.is_empty()),
            agent_url: self.agent_url.clone().filter(|url| !url.is_empty()),
            agent_port: self.agent_port,
            heartbeat_interval: Duration::from_millis(self.heartbeat_interval_ms),
            status_path: self.status_path.clone(),
            capabilities: self.capabilities.clone(),
        })
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    if let Some(token) = &args.token
        && MetadataValue::try_from(format!("Bearer {token}")).is_err()
    {
        tracing::error!("AGENTMESH_TOKEN is not a valid header value");
        return ExitCode::from(2);
    }
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => {
            tracing::error!(%error, "cannot start the runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(args));
    ExitCode::from(u8::try_from(code).unwrap_or(u8::MAX))
}

async fn run(args: Args) -> i32 {
    let started = std::time::Instant::now();
    let signals = match supervise::Signals::install() {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot install signal handlers");
            return 1;
        }
    };
    let (program, program_args) = args.command.split_first().expect("clap requires a program");
    let child = match Child::spawn(program, program_args, args.agent_port) {
        Ok(child) => child,
        Err(error) => {
            tracing::error!(%error, program, "cannot start the agent");
            return if error.kind() == std::io::ErrorKind::NotFound { 127 } else { 126 };
        }
    };
    // Aborted when the agent exits: nothing else may keep the shim alive.
    let mesh = args.mesh().map(|mesh| tokio::spawn(mesh::join(mesh, started)));
    let code = match child.wait(signals).await {
        Ok(code) => code,
        Err(error) => {
            tracing::error!(%error, "lost track of the agent");
            1
        }
    };
    if let Some(mesh) = mesh {
        mesh.abort();
    }
    tracing::info!(code, "agent exited");
    code
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_parse_from_a_comma_list() {
        let parsed = parse_capabilities("native_session, native_status_mgmt,").unwrap();
        assert!(parsed.native_session && parsed.native_status_mgmt && !parsed.native_scheduler);
        assert_eq!(parse_capabilities("").unwrap(), Capabilities::default());
        assert!(parse_capabilities("native_everything").is_err());
    }

    #[test]
    fn registry_address_needs_a_scheme_and_host() {
        assert!(parse_registry("http://172.18.0.1:50051").is_ok());
        assert!(parse_registry("172.18.0.1:50051").is_err());
    }

    #[test]
    fn program_and_arguments_follow_the_separator() {
        let args = Args::try_parse_from(["shim", "--agent-port", "9000", "--", "agent", "--flag", "x"]).unwrap();
        assert_eq!(args.command, ["agent", "--flag", "x"]);
        assert!(Args::try_parse_from(["shim"]).is_err());
    }
}

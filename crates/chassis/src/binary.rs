//! What every agentmesh binary does before it serves: load the layered
//! configuration, honour `--print-config` and `--health-check`, start
//! telemetry, set up credentials and bind the listener; and how it reports a
//! failure to start.

use std::{
    io::{IsTerminal, Write},
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    process::ExitCode,
    time::Duration,
};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

use crate::{
    CommonArgs, ServerConfig, ServiceSettings,
    auth::Authenticator,
    client::service_channel,
    config::Config,
    telemetry::{self, TelemetryGuard},
};

/// How long `--health-check` waits for an answer.
const HEALTH_CHECK_TIMEOUT: Duration = Duration::from_secs(3);

/// A binary ready to serve. Keep `telemetry` alive until the end: dropping
/// it flushes the trace exporter.
pub struct Started<S> {
    pub config: Config<S>,
    pub listener: TcpListener,
    pub authenticator: Authenticator,
    pub telemetry: TelemetryGuard,
}

/// Loads the configuration of `binary` (listening on `default_listen`
/// unless configured otherwise) and prepares it to serve; `None` when it
/// only had to print its configuration or check a running server's health.
pub async fn start<S: ServiceSettings>(
    binary: &'static str,
    default_listen: SocketAddr,
    args: &CommonArgs,
) -> anyhow::Result<Option<Started<S>>> {
    let mut config = Config::<S>::load(ServerConfig::listening_on(default_listen), args)?;
    if args.print_config {
        print!("{}", config.to_redacted_toml());
        return Ok(None);
    }
    if args.health_check {
        check_health(&config.server).await?;
        return Ok(None);
    }
    let telemetry = telemetry::init(binary, &config.server)?;
    for name in &config.ignored_env {
        tracing::warn!(variable = %name, section = S::SECTION, "ignoring an environment variable that names no setting");
    }
    let data_dir = &config.server.data_dir;
    let (authenticator, token_file) =
        config.server.auth.authenticator(data_dir).context("cannot set up operator credentials")?;
    if let Some(path) = token_file {
        tracing::info!(path = %path.display(), "operator token (send as `authorization: Bearer <token>`)");
    }
    let service_token = config.server.auth.service_token(data_dir).context("cannot set up the service token")?;
    config.service.default_service_token(&service_token);
    let listener = bind(config.server.listen, "listen").await?;
    Ok(Some(Started { config, listener, authenticator, telemetry }))
}

/// Binds `address`, the value of the setting `key`; a failure names the
/// setting, its flag and its variable, since the usual cause (the port is
/// taken) is a configuration matter.
pub async fn bind(address: SocketAddr, key: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(address).await.map_err(|error| {
        let flag = match key {
            "listen" => " (or --listen)",
            _ => "",
        };
        let variable = format!("AGENTMESH_{}", key.to_ascii_uppercase().replace('.', "__"));
        anyhow::anyhow!("cannot listen on {address} ({error}): set `{key}`{flag} or {variable} to a free address")
    })
}

/// Asks the server configured by `server` for its health, over TLS when it
/// serves TLS (its certificate must then name `localhost`, or be trusted
/// through `SSL_CERT_FILE`).
async fn check_health(server: &ServerConfig) -> anyhow::Result<()> {
    let address = reachable(server.listen);
    let url = match &server.tls {
        Some(_) => format!("https://localhost:{}", address.port()),
        None => format!("http://{address}"),
    };
    let mut client = HealthClient::new(service_channel(&url, "", Some(HEALTH_CHECK_TIMEOUT))?);
    let status = client
        .check(HealthCheckRequest { service: String::new() })
        .await
        .with_context(|| format!("health check of {url}"))?
        .into_inner()
        .status();
    match status {
        ServingStatus::Serving => Ok(()),
        other => anyhow::bail!("{url} is {}", other.as_str_name()),
    }
}

/// Where a server listening on `listen` is reached from the same host.
fn reachable(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// The exit of a binary whose run ended with `result`. A failure is one
/// line on stderr (the error and its causes), never a backtrace whatever
/// `RUST_BACKTRACE` says: the usual failure is a configuration mistake or
/// a dependency that is down, not a bug to debug.
pub fn exit(binary: &str, result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            let mut stderr = std::io::stderr().lock();
            let prefix = if stderr.is_terminal() { "\x1b[1;31merror\x1b[0m" } else { "error" };
            let _ = writeln!(stderr, "{binary}: {prefix}: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_on_every_interface_is_checked_on_loopback() {
        assert_eq!(reachable("0.0.0.0:50051".parse().unwrap()), "127.0.0.1:50051".parse().unwrap());
        assert_eq!(reachable("[::]:50051".parse().unwrap()), "[::1]:50051".parse().unwrap());
        assert_eq!(reachable("10.0.0.7:50051".parse().unwrap()), "10.0.0.7:50051".parse().unwrap());
    }

    #[tokio::test]
    async fn a_taken_port_names_the_setting_that_chose_it() {
        let taken = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = taken.local_addr().unwrap();
        let error = bind(address, "gateway.a2a_listen").await.unwrap_err();
        let line = format!("{error:#}");
        assert!(line.starts_with(&format!("cannot listen on {address} (")), "{line}");
        assert!(line.contains("set `gateway.a2a_listen`"), "{line}");
        assert!(line.contains("AGENTMESH_GATEWAY__A2A_LISTEN"), "{line}");
        assert!(!line.contains('\n'), "{line}");
    }
}

//! Talking to the engine: opening the client, bounding each call, and the
//! errors the engine gives back.

use std::{future::Future, time::Duration};

use bollard::{API_DEFAULT_VERSION, Docker, errors::Error as BollardError};

use super::RuntimeError;

/// Our own deadlines bound every call (see [`DockerSettings::request_timeout`]);
/// the client's is only a backstop and must not cut a long stop short.
const CLIENT_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// What went wrong talking to the engine.
#[derive(Debug, thiserror::Error)]
pub(super) enum EngineError {
    /// The engine answered and refused (with the HTTP status when it gave one).
    #[error("{message}")]
    Refused { status: Option<u16>, message: String },
    /// The engine could not be reached, or did not answer in time.
    #[error("{0}")]
    Unreachable(String),
    /// The name is taken by something without our labels.
    #[error("{0}")]
    Foreign(String),
}

impl EngineError {
    pub(super) fn is_not_found(&self) -> bool {
        matches!(self, Self::Refused { status: Some(404), .. })
    }
}

impl From<EngineError> for RuntimeError {
    fn from(err: EngineError) -> Self {
        match err {
            EngineError::Refused { message, .. } | EngineError::Foreign(message) => RuntimeError::Workload(message),
            EngineError::Unreachable(message) => RuntimeError::Unavailable(message),
        }
    }
}

pub(super) fn engine_error(op: &str, err: BollardError) -> EngineError {
    match err {
        BollardError::DockerResponseServerError { status_code, message } => {
            EngineError::Refused { status: Some(status_code), message: format!("{op}: {message}") }
        }
        BollardError::DockerStreamError { error } => {
            EngineError::Refused { status: None, message: format!("{op}: {error}") }
        }
        other => EngineError::Unreachable(format!("{op}: {other}")),
    }
}

/// One engine call, bounded by `limit`.
pub(super) async fn call<T>(
    op: &str,
    limit: Duration,
    request: impl Future<Output = Result<T, BollardError>>,
) -> Result<T, EngineError> {
    match tokio::time::timeout(limit, request).await {
        Ok(result) => result.map_err(|err| engine_error(op, err)),
        Err(_) => Err(EngineError::Unreachable(format!("{op}: the docker engine did not answer within {limit:?}"))),
    }
}

/// The user-defined network of the container this process runs in, if it
/// runs in a container of the engine behind `docker`: Docker names a
/// container's host after its id unless told otherwise.
pub(super) async fn own_network(docker: &Docker, limit: Duration) -> Result<Option<String>, EngineError> {
    if !std::path::Path::new("/.dockerenv").exists() {
        return Ok(None);
    }
    let Ok(hostname) = std::fs::read_to_string("/etc/hostname") else { return Ok(None) };
    let container = match call("inspect own container", limit, docker.inspect_container(hostname.trim(), None)).await {
        Ok(container) => container,
        Err(err) if err.is_not_found() => {
            tracing::info!(
                hostname = hostname.trim(),
                "not a container of this engine: workloads join its default bridge"
            );
            return Ok(None);
        }
        Err(err) => return Err(err),
    };
    let networks = container.network_settings.and_then(|settings| settings.networks).unwrap_or_default();
    let network = networks.into_keys().filter(|name| !["bridge", "host", "none"].contains(&name.as_str())).min();
    if let Some(network) = &network {
        tracing::info!(%network, "workloads join the provisioner's own network");
    }
    Ok(network)
}

pub(super) fn open(endpoint: &str) -> Result<Docker, EngineError> {
    let docker = if endpoint.starts_with("unix://") {
        Docker::connect_with_unix(endpoint, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
    } else {
        Docker::connect_with_http(endpoint, CLIENT_TIMEOUT_SECS, API_DEFAULT_VERSION)
    };
    docker.map_err(|err| EngineError::Unreachable(format!("docker engine at {endpoint}: {err}")))
}

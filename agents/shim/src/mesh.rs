//! Joins the agent to the mesh: waits for its card, registers it, then
//! heartbeats with what its status endpoint reports. Runs beside the agent
//! and never holds up its lifecycle: the registry may be late or down.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, Instant},
};

use agentmesh_proto::registry::v1::{
    Capabilities, HeartbeatRequest, RegisterRequest, RuntimeMetadata, registry_service_client::RegistryServiceClient,
};
use http::Uri;
use tonic::{
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};

use crate::probe::{AgentStatus, Probe};

/// The heartbeat's runtime state when the agent stops answering.
const UNRESPONSIVE: &str = "unresponsive";

/// How to reach the registry and what to tell it.
#[derive(Debug, Clone)]
pub struct MeshConfig {
    pub registry: Uri,
    pub workspace_id: String,
    pub token: Option<String>,
    /// Advertised as is when set; detected otherwise.
    pub agent_url: Option<String>,
    pub agent_port: u16,
    pub heartbeat_interval: Duration,
    pub status_path: String,
    /// Declared for an agent without a status endpoint.
    pub capabilities: Option<Capabilities>,
}

/// Capped exponential backoff.
struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(first: Duration, max: Duration) -> Self {
        Self { next: first, max }
    }

    fn next(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.next()).await;
    }
}

/// Registers the agent and heartbeats forever; the caller drops this future
/// when the agent exits.
pub async fn join(config: MeshConfig, started: Instant) {
    let url = match &config.agent_url {
        Some(url) => url.clone(),
        None => detect_url(&config.registry, config.agent_port).await,
    };
    let host = url.parse::<Uri>().ok().and_then(|uri| uri.authority().map(|a| a.to_string()));
    let probe = Probe::new(
        config.agent_port,
        host.unwrap_or_else(|| format!("127.0.0.1:{}", config.agent_port)),
        config.status_path.clone(),
    );
    let channel = Endpoint::from(config.registry.clone())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let mut registry = Registry { client: RegistryServiceClient::new(channel), token: config.token.clone() };

    let card = wait_for_card(&probe).await;
    let metadata = match probe.status().await {
        Ok(Some(status)) => RuntimeMetadata {
            capabilities: status.capabilities.map(Into::into),
            idle_timeout_seconds: status.idle_timeout_seconds,
        },
        _ => RuntimeMetadata { capabilities: config.capabilities.clone(), idle_timeout_seconds: None },
    };
    let request = RegisterRequest {
        workspace_id: config.workspace_id.clone(),
        url: url.clone(),
        agent_card_json: card,
        runtime_metadata: Some(metadata),
    };
    registry.register(request).await;
    tracing::info!(%url, "registered with the registry");

    // The first tick fires at once: the registry marks the workspace online
    // on its first heartbeat.
    let mut ticks = tokio::time::interval(config.heartbeat_interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut responsive = true;
    loop {
        ticks.tick().await;
        let mut heartbeat = observe(&probe).await;
        heartbeat.workspace_id.clone_from(&config.workspace_id);
        heartbeat.uptime_seconds = started.elapsed().as_secs();
        let now_responsive = heartbeat.runtime_state != UNRESPONSIVE;
        if now_responsive != responsive {
            responsive = now_responsive;
            if responsive {
                tracing::info!("the agent answers again");
            } else {
                tracing::warn!("the agent stopped answering");
            }
        }
        registry.heartbeat(heartbeat).await;
    }
}

/// The heartbeat the agent's current state calls for (without identity).
async fn observe(probe: &Probe) -> HeartbeatRequest {
    let status = match probe.status().await {
        Ok(Some(status)) => status,
        // No status endpoint: only liveness is known, from the card.
        Ok(None) => match probe.card().await {
            Ok(_) => return HeartbeatRequest::default(),
            Err(error) => return unresponsive(&error),
        },
        Err(error) => return unresponsive(&error),
    };
    let AgentStatus {
        active_tasks,
        error_rate,
        runtime_state,
        current_task,
        sample_error,
        capabilities,
        idle_timeout_seconds,
    } = status;
    HeartbeatRequest {
        active_tasks,
        error_rate,
        runtime_state,
        current_task,
        sample_error,
        runtime_metadata: Some(RuntimeMetadata { capabilities: capabilities.map(Into::into), idle_timeout_seconds }),
        ..HeartbeatRequest::default()
    }
}

fn unresponsive(error: &crate::probe::ProbeError) -> HeartbeatRequest {
    tracing::debug!(%error, "agent probe failed");
    HeartbeatRequest { runtime_state: UNRESPONSIVE.to_owned(), ..HeartbeatRequest::default() }
}

async fn wait_for_card(probe: &Probe) -> String {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(1));
    let mut logged = false;
    loop {
        match probe.card().await {
            Ok(card) => return card,
            Err(error) => {
                if !logged {
                    tracing::info!(%error, "waiting for the agent to serve its card");
                    logged = true;
                }
                backoff.wait().await;
            }
        }
    }
}

/// `http://<ip>:<port>/`, where ip is the local address this host uses to
/// reach the registry: the container's address on a bridge network, the
/// host's with host networking. Retried until the registry's name resolves.
async fn detect_url(registry: &Uri, port: u16) -> String {
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
    loop {
        match local_address_towards(registry).await {
            Ok(ip) => return format!("http://{}/", SocketAddr::new(ip, port)),
            Err(error) => {
                tracing::warn!(%error, registry = %registry, "cannot work out the address to advertise");
                backoff.wait().await;
            }
        }
    }
}

async fn local_address_towards(registry: &Uri) -> std::io::Result<IpAddr> {
    let host = registry.host().ok_or_else(|| std::io::Error::other("the registry address names no host"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let port = registry.port_u16().unwrap_or(if registry.scheme_str() == Some("https") { 443 } else { 80 });
    let target = tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| std::io::Error::other(format!("{host} resolves to no address")))?;
    let unspecified = match target {
        SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    // Connecting a UDP socket only picks a route and a source address; no
    // packet is sent.
    let socket = tokio::net::UdpSocket::bind(SocketAddr::new(unspecified, 0)).await?;
    socket.connect(target).await?;
    Ok(socket.local_addr()?.ip())
}

/// The registry client, with the workspace token once known.
struct Registry {
    client: RegistryServiceClient<Channel>,
    token: Option<String>,
}

impl Registry {
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = &self.token
            && let Ok(value) = MetadataValue::try_from(format!("Bearer {token}"))
        {
            request.metadata_mut().insert("authorization", value);
        }
        request
    }

    /// Registers, retrying until the registry accepts; keeps the token the
    /// first registration returns.
    async fn register(&mut self, message: RegisterRequest) {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(30));
        loop {
            match self.client.register(self.request(message.clone())).await {
                Ok(response) => {
                    let response = response.into_inner();
                    if !response.token.is_empty() {
                        self.token = Some(response.token);
                    }
                    return;
                }
                Err(status) => {
                    tracing::warn!(code = ?status.code(), message = status.message(), "registration failed, retrying");
                    backoff.wait().await;
                }
            }
        }
    }

    async fn heartbeat(&mut self, message: HeartbeatRequest) {
        match self.client.heartbeat(self.request(message)).await {
            Ok(response) => tracing::debug!(status = response.into_inner().status, "heartbeat sent"),
            Err(status) => tracing::warn!(code = ?status.code(), message = status.message(), "heartbeat failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn advertises_the_address_that_reaches_the_registry() {
        let registry: Uri = "http://127.0.0.1:50051".parse().unwrap();
        assert_eq!(detect_url(&registry, 8080).await, "http://127.0.0.1:8080/");
        let registry: Uri = "http://[::1]:50051".parse().unwrap();
        if let Ok(ip) = local_address_towards(&registry).await {
            assert_eq!(format!("http://{}/", SocketAddr::new(ip, 9)), "http://[::1]:9/");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(300));
        let waits: Vec<_> = (0..4).map(|_| backoff.next().as_millis()).collect();
        assert_eq!(waits, [100, 200, 300, 300]);
    }
}

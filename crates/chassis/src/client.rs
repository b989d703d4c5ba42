//! Calling another agentmesh service: a lazily connecting channel that
//! presents this service's token and carries the current trace (SEC-1,
//! OBS-1), so that a dependency that is down at start only delays the first
//! call instead of the start.

use std::time::Duration;

use anyhow::Context;

use tonic::{
    Request, Status,
    metadata::{Ascii, MetadataValue},
    service::interceptor::InterceptedService,
    transport::{Channel, ClientTlsConfig, Endpoint},
};

/// A channel to another service, authenticated with a service token.
pub type ServiceChannel = InterceptedService<Channel, ServiceCredentials>;

/// Adds the service token and the W3C trace context to every call.
#[derive(Clone)]
pub struct ServiceCredentials(Option<MetadataValue<Ascii>>);

impl ServiceCredentials {
    /// Credentials presenting `token`; none when it is empty (a peer that
    /// runs without service tokens).
    pub fn new(token: &str) -> anyhow::Result<Self> {
        if token.is_empty() {
            return Ok(Self(None));
        }
        let value = format!("Bearer {token}").parse().map_err(|_| anyhow::anyhow!("the service token is not ASCII"))?;
        Ok(Self(Some(value)))
    }
}

impl tonic::service::Interceptor for ServiceCredentials {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            request.metadata_mut().insert("authorization", token.clone());
        }
        crate::telemetry::inject_trace_context(request.metadata_mut());
        Ok(request)
    }
}

/// A channel to `address` that connects on first use and reconnects after
/// outages; each call may take `call_timeout` (none for channels that carry
/// long-lived streams). An `https://` address is called over TLS, trusting
/// the system's certificate authorities, or those in `SSL_CERT_FILE` /
/// `SSL_CERT_DIR` when set: that is how a mesh on a private authority is
/// told to trust it.
pub fn service_channel(address: &str, token: &str, call_timeout: Option<Duration>) -> anyhow::Result<ServiceChannel> {
    let mut endpoint =
        Endpoint::from_shared(address.to_owned())?.connect_timeout(Duration::from_secs(5)).tcp_nodelay(true);
    if endpoint.uri().scheme_str() == Some("https") {
        endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots()).with_context(|| {
            format!("{address}: no certificate authority to trust; point SSL_CERT_FILE at a PEM bundle")
        })?;
    }
    if let Some(timeout) = call_timeout {
        endpoint = endpoint.timeout(timeout);
    }
    Ok(InterceptedService::new(endpoint.connect_lazy(), ServiceCredentials::new(token)?))
}

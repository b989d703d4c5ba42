//! Clients of a context's four services: one lazily connected channel per
//! service, presenting the context's token and carrying trace context.

use std::{future::Future, time::Duration};

use agentmesh_chassis::client::ServiceCredentials;
use agentmesh_proto::{
    a2a::v1::a2a_service_client::A2aServiceClient, gateway::v1::gateway_service_client::GatewayServiceClient,
    provisioner::v1::provisioner_service_client::ProvisionerServiceClient,
    registry::v1::registry_service_client::RegistryServiceClient,
    scheduler::v1::scheduler_service_client::SchedulerServiceClient,
};
use tonic::{
    Response, Status,
    service::interceptor::InterceptedService,
    transport::{Certificate, Channel, ClientTlsConfig, Endpoint},
};

use crate::{config::Resolved, failure::Failure};

pub type Authenticated = InterceptedService<Channel, ServiceCredentials>;

/// The mesh of one context.
pub struct Mesh {
    pub resolved: Resolved,
}

impl Mesh {
    /// Where `address` is reached: TLS for `https`, trusting the context's
    /// authorities besides the system's.
    fn endpoint(&self, address: &str) -> Result<Endpoint, Failure> {
        let mut endpoint = Endpoint::from_shared(address.to_owned())
            .map_err(|e| self.invalid(address, &e))?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true);
        if endpoint.uri().scheme_str() == Some("https") {
            let mut tls = ClientTlsConfig::new().with_native_roots();
            if let Some(file) = &self.resolved.context.ca_file {
                let pem = std::fs::read(file)
                    .map_err(|e| self.invalid(address, &format!("ca_file {}: {e}", file.display())))?;
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| self.invalid(address, &e))?;
        }
        Ok(endpoint)
    }

    fn invalid(&self, address: &str, error: &dyn std::fmt::Display) -> Failure {
        Failure::Config(format!("context {:?}: {address}: {error}", self.resolved.name))
    }

    fn channel(&self, address: &str) -> Result<Authenticated, Failure> {
        let credentials = ServiceCredentials::new(&self.resolved.token).map_err(|e| self.invalid(address, &e))?;
        Ok(InterceptedService::new(self.endpoint(address)?.connect_lazy(), credentials))
    }

    pub fn registry(&self) -> Result<RegistryServiceClient<Authenticated>, Failure> {
        Ok(RegistryServiceClient::new(self.channel(&self.resolved.context.registry)?))
    }

    pub fn provisioner(&self) -> Result<ProvisionerServiceClient<Authenticated>, Failure> {
        Ok(ProvisionerServiceClient::new(self.channel(&self.resolved.context.provisioner)?))
    }

    pub fn gateway(&self) -> Result<GatewayServiceClient<Authenticated>, Failure> {
        Ok(GatewayServiceClient::new(self.channel(&self.resolved.context.gateway)?))
    }

    pub fn a2a(&self) -> Result<A2aServiceClient<Authenticated>, Failure> {
        Ok(A2aServiceClient::new(self.channel(&self.resolved.context.gateway)?))
    }

    pub fn scheduler(&self) -> Result<SchedulerServiceClient<Authenticated>, Failure> {
        Ok(SchedulerServiceClient::new(self.channel(&self.resolved.context.scheduler)?))
    }

    /// A channel without credentials, for health checks.
    pub fn plain(&self, address: &str) -> Result<Channel, Failure> {
        Ok(self.endpoint(address)?.connect_lazy())
    }
}

/// Awaits a call to the service at `address`: its answer, or a failure that
/// names the address when the service could not be reached at all.
pub async fn ask<T>(address: &str, call: impl Future<Output = Result<Response<T>, Status>>) -> Result<T, Failure> {
    match call.await {
        Ok(response) => Ok(response.into_inner()),
        Err(status) => Err(unreachable_or(address, status)),
    }
}

/// A transport failure (nothing answered) as [`Failure::Unreachable`];
/// anything the service said as itself.
pub fn unreachable_or(address: &str, status: Status) -> Failure {
    match std::error::Error::source(&status) {
        Some(source) if status.code() == tonic::Code::Unavailable => {
            let mut reason = source.to_string();
            let mut cause = source.source();
            while let Some(next) = cause {
                reason = format!("{reason}: {next}");
                cause = next.source();
            }
            Failure::Unreachable { address: address.to_owned(), reason }
        }
        _ => status.into(),
    }
}

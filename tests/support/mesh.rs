//! The four services' gRPC APIs as an operator calls them: with the
//! operator token, at a replica's address or the balancer's.

use std::time::Duration;

use agentmesh_chassis::client::{ServiceChannel, service_channel};
use agentmesh_proto::{
    gateway::v1::gateway_service_client::GatewayServiceClient,
    provisioner::v1::provisioner_service_client::ProvisionerServiceClient,
    registry::v1::{self as rpb, registry_service_client::RegistryServiceClient},
    scheduler::v1::scheduler_service_client::SchedulerServiceClient,
};

/// Calls made with the operator token.
#[derive(Clone)]
pub struct Operator {
    pub token: String,
}

impl Operator {
    fn channel(&self, address: &str) -> ServiceChannel {
        service_channel(&format!("http://{address}"), &self.token, Some(Duration::from_secs(20))).unwrap()
    }

    pub fn registry(&self, address: &str) -> RegistryServiceClient<ServiceChannel> {
        RegistryServiceClient::new(self.channel(address))
    }

    pub fn provisioner(&self, address: &str) -> ProvisionerServiceClient<ServiceChannel> {
        ProvisionerServiceClient::new(self.channel(address))
    }

    pub fn gateway(&self, address: &str) -> GatewayServiceClient<ServiceChannel> {
        GatewayServiceClient::new(self.channel(address))
    }

    pub fn scheduler(&self, address: &str) -> SchedulerServiceClient<ServiceChannel> {
        SchedulerServiceClient::new(self.channel(address))
    }

    /// The workspace as the registry at `address` has it.
    pub async fn workspace(&self, address: &str, workspace_id: &str) -> Result<rpb::Workspace, tonic::Status> {
        let request = rpb::GetWorkspaceRequest { workspace_id: workspace_id.to_owned() };
        let workspace = self.registry(address).get_workspace(request).await?.into_inner().workspace;
        Ok(workspace.expect("GetWorkspace answers with the workspace"))
    }

    /// Follows the registry's event stream until the workspace reaches
    /// `status`, failing after `within`.
    pub async fn until_status(
        &self,
        address: &str,
        workspace_id: &str,
        status: rpb::WorkspaceStatus,
        within: Duration,
    ) -> rpb::Workspace {
        let wait = async {
            let request =
                rpb::WatchEventsRequest { workspace_ids: vec![workspace_id.to_owned()], ..Default::default() };
            let mut events = self.registry(address).watch_events(request).await.unwrap().into_inner();
            loop {
                let workspace = self.workspace(address, workspace_id).await.unwrap();
                if workspace.status() == status {
                    return workspace;
                }
                events.message().await.unwrap().expect("the event stream stays open");
            }
        };
        tokio::time::timeout(within, wait)
            .await
            .unwrap_or_else(|_| panic!("workspace {workspace_id} did not reach {status:?} within {within:?}"))
    }
}

/// Waits until the gRPC server at `address` reports SERVING on its health
/// stream, trying again while it is not up yet; fails after `within`.
pub async fn until_serving(address: &str, within: Duration) {
    let url = format!("http://{address}");
    let wait = async {
        loop {
            if let Ok(channel) = tonic::transport::Channel::from_shared(url.clone()).unwrap().connect().await
                && let Ok(true) = agentmesh_testkit::grpc::watch_until_serving(channel).await
            {
                return;
            }
            // Not listening yet, or (behind the balancer) no replica up yet:
            // there is nothing to await but the next try.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(within, wait).await.unwrap_or_else(|_| panic!("{address} not SERVING within {within:?}"));
}

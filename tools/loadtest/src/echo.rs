//! The ceiling: a bare tonic server that answers Heartbeat at once, with no
//! interceptor, tracing or store behind it.

use std::net::SocketAddr;

use agentmesh_proto::registry::v1::{
    self as pb,
    registry_service_server::{RegistryService, RegistryServiceServer},
};
use tonic::{Request, Response, Status, codegen::BoxStream, transport::Server};

struct EchoRegistry;

fn unimplemented<T>() -> Result<Response<T>, Status> {
    Err(Status::unimplemented("the echo server answers Heartbeat only"))
}

#[tonic::async_trait]
impl RegistryService for EchoRegistry {
    async fn heartbeat(&self, _: Request<pb::HeartbeatRequest>) -> Result<Response<pb::HeartbeatResponse>, Status> {
        Ok(Response::new(pb::HeartbeatResponse::default()))
    }

    async fn create_workspace(
        &self,
        _: Request<pb::CreateWorkspaceRequest>,
    ) -> Result<Response<pb::CreateWorkspaceResponse>, Status> {
        unimplemented()
    }

    async fn register(&self, _: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        unimplemented()
    }

    async fn transition_workspace(
        &self,
        _: Request<pb::TransitionWorkspaceRequest>,
    ) -> Result<Response<pb::TransitionWorkspaceResponse>, Status> {
        unimplemented()
    }

    async fn get_workspace(
        &self,
        _: Request<pb::GetWorkspaceRequest>,
    ) -> Result<Response<pb::GetWorkspaceResponse>, Status> {
        unimplemented()
    }

    async fn list_workspaces(
        &self,
        _: Request<pb::ListWorkspacesRequest>,
    ) -> Result<Response<pb::ListWorkspacesResponse>, Status> {
        unimplemented()
    }

    async fn list_peers(&self, _: Request<pb::ListPeersRequest>) -> Result<Response<pb::ListPeersResponse>, Status> {
        unimplemented()
    }

    async fn can_communicate(
        &self,
        _: Request<pb::CanCommunicateRequest>,
    ) -> Result<Response<pb::CanCommunicateResponse>, Status> {
        unimplemented()
    }

    async fn authenticate_workspace(
        &self,
        _: Request<pb::AuthenticateWorkspaceRequest>,
    ) -> Result<Response<pb::AuthenticateWorkspaceResponse>, Status> {
        unimplemented()
    }

    type WatchEventsStream = BoxStream<pb::WatchEventsResponse>;

    async fn watch_events(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchEventsStream>, Status> {
        unimplemented()
    }
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(listen: SocketAddr) -> anyhow::Result<()> {
    eprintln!("echo server listening on {listen}");
    Server::builder()
        .add_service(RegistryServiceServer::new(EchoRegistry))
        .serve_with_shutdown(listen, shutdown_signal())
        .await?;
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

//! Knowing when a gRPC server serves: by its health stream, not by polling.

use std::net::SocketAddr;

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Waits on the server's health stream until it reports SERVING.
pub async fn wait_until_serving(channel: Channel) {
    let mut health = HealthClient::new(channel);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    while let Some(reply) = watch.message().await.unwrap() {
        if reply.status == ServingStatus::Serving as i32 {
            return;
        }
    }
    panic!("health stream ended before SERVING");
}

/// A channel to the server at `address`, once it serves.
pub async fn serving_channel(address: SocketAddr) -> Channel {
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    wait_until_serving(channel.clone()).await;
    channel
}

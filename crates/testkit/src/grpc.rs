//! Knowing when a gRPC server serves: by its health stream, not by polling.

use std::net::SocketAddr;

use tonic::transport::Channel;
use tonic_health::pb::{HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient};

/// Waits on the server's health stream until it reports SERVING.
pub async fn wait_until_serving(channel: Channel) {
    match watch_until_serving(channel).await {
        Ok(true) => {}
        Ok(false) => panic!("health stream ended before SERVING"),
        Err(status) => panic!("watching health: {status}"),
    }
}

/// Follows the server's health stream: `true` once it reports SERVING,
/// `false` if the stream ends first, or the error that ended it (a balancer
/// with no replica to route to answers the call with one).
pub async fn watch_until_serving(channel: Channel) -> Result<bool, tonic::Status> {
    let mut health = HealthClient::new(channel);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await?.into_inner();
    while let Some(reply) = watch.message().await? {
        if reply.status == ServingStatus::Serving as i32 {
            return Ok(true);
        }
    }
    Ok(false)
}

/// A channel to the server at `address`, once it serves.
pub async fn serving_channel(address: SocketAddr) -> Channel {
    let channel = Channel::from_shared(format!("http://{address}")).unwrap().connect().await.unwrap();
    wait_until_serving(channel.clone()).await;
    channel
}

//! The idle timeout (GW-4): a dispatch is given up only after the target
//! produced no event for the whole timeout; a heartbeat resets the clock,
//! also one that reached another registry replica; the workspace's own
//! override wins.

use std::time::Duration;

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::registry::v1::Capabilities;
use tokio_util::sync::CancellationToken;

/// Heartbeats every 300 ms until cancelled, as a busy agent's shim does.
fn keep_alive(workspace: &Workspace) -> CancellationToken {
    let stop = CancellationToken::new();
    let (workspace, stopped) = (workspace.clone(), stop.clone());
    tokio::spawn(async move {
        while !stopped.is_cancelled() {
            workspace.heartbeat(1).await;
            tokio::select! {
                () = stopped.cancelled() => {}
                () = tokio::time::sleep(Duration::from_millis(300)) => {}
            }
        }
    });
    stop
}

#[tokio::test]
async fn silence_gives_up_the_dispatch_and_queues_the_message() {
    let registry = RegistryNode::start().await;
    let slow = EchoConfig { delay: Duration::from_secs(3), ..EchoConfig::default() };
    let (_agent, workspace) = EchoAgent::online(&registry, slow).await;
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_seconds = toml::Value::Integer(1)).await;

    let started = std::time::Instant::now();
    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "slow", "m-slow").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let queued = &reply.body["result"]["metadata"]["agentmesh"]["queued"];
    assert_eq!(queued["reason"], "QUEUE_REASON_IDLE_TIMEOUT", "{}", reply.body);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_secs(1) && waited < Duration::from_millis(2_500), "{waited:?}");
}

#[tokio::test]
async fn heartbeats_keep_a_long_dispatch_alive_even_through_another_registry_replica() {
    // Two registry replicas on one store: the gateway follows the first,
    // the agent heartbeats to the second.
    let registry = RegistryNode::start().await;
    let second = RegistryNode::start_on(registry.database_file()).await;
    let slow = EchoConfig { delay: Duration::from_millis(2_500), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, slow).await;
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_seconds = toml::Value::Integer(1)).await;

    let alive = keep_alive(&second.workspace(&workspace));
    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "long job", "m-long").await;
    alive.cancel();
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply_text(&reply.body["result"]).contains("long job"), "delivered, not queued: {}", reply.body);
    assert_eq!(agent.received().await, ["long job"]);
}

#[tokio::test]
async fn the_workspace_override_wins_over_the_gateway_default() {
    let registry = RegistryNode::start().await;
    let agent = EchoAgent::start(EchoConfig { delay: Duration::from_secs(3), ..EchoConfig::default() }).await;
    let workspace = registry.create("impatient", None, 1).await;
    workspace.register(&agent.url, Capabilities::default(), Some(1)).await;
    workspace.heartbeat(0).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let started = std::time::Instant::now();
    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "x", "m-x").await;
    assert_eq!(reply.body["result"]["metadata"]["agentmesh"]["queued"]["reason"], "QUEUE_REASON_IDLE_TIMEOUT");
    assert!(started.elapsed() < Duration::from_millis(2_500), "{:?}", started.elapsed());
}

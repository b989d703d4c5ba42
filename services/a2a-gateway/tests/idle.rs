//! The idle timeout (GW-4): a dispatch is given up only after the target
//! produced no event for the whole timeout; a heartbeat resets the clock,
//! also one that reached another registry replica, and so does each event
//! of a stream; the workspace's own override wins.

use std::time::{Duration, Instant};

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{gateway::v1 as gpb, registry::v1::Capabilities};
use serde_json::{Value, json};
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
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_secs = toml::Value::Integer(1)).await;

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
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_secs = toml::Value::Integer(1)).await;

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

/// Streams `text` through the gateway (`message/stream`) and returns the
/// data of every event with the time it arrived, once the stream ends.
async fn stream(url: &str, text: &str, message_id: &str) -> Vec<(Duration, Value)> {
    let request = json!({
        "jsonrpc": "2.0", "id": 7, "method": "message/stream",
        "params": { "message": { "kind": "message", "messageId": message_id, "role": "user",
            "parts": [{ "kind": "text", "text": text }] } }
    });
    let started = Instant::now();
    let mut stream = Caller::operator().events(url, &request).await;
    let mut events = Vec::new();
    while let Some(event) = stream.next().await {
        events.push((started.elapsed(), event));
    }
    events
}

async fn nothing_queued(gateway: &GatewayNode) {
    let all = gpb::ListQueueItemsRequest { states: (1..=5).collect(), ..Default::default() };
    let items = gateway.control().list_queue_items(all).await.unwrap().into_inner().items;
    assert!(items.is_empty(), "{items:?}");
}

#[tokio::test]
async fn each_streamed_event_resets_the_clock_so_a_long_stream_with_progress_is_not_cut() {
    let registry = RegistryNode::start().await;
    // 2.5 s in all, far past the 1 s timeout, but never 1 s without an event.
    let reporting = EchoConfig {
        delay: Duration::from_millis(2_500),
        progress_interval: Some(Duration::from_millis(300)),
        ..EchoConfig::default()
    };
    let (agent, workspace) = EchoAgent::online(&registry, reporting).await;
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_secs = toml::Value::Integer(1)).await;

    let events = stream(&gateway.a2a_url(&workspace.id), "long stream", "m-progress").await;
    let (ended, last) = events.last().expect("events");
    assert!(*ended >= Duration::from_millis(2_500), "the stream lasted {ended:?}");
    assert_eq!(last["id"], 7, "{last}");
    assert_eq!(last["result"]["kind"], "message", "the answer, not an error: {last}");
    assert!(reply_text(&last["result"]).contains("long stream"), "{last}");
    let updates = &events[..events.len() - 1];
    assert!(updates.len() >= 5, "{events:?}");
    assert!(updates.iter().all(|(_, event)| event["result"]["status"]["state"] == "working"), "{events:?}");
    // No heartbeat was sent: only the streamed events kept the dispatch alive.
    let gaps = events.windows(2).map(|pair| pair[1].0 - pair[0].0);
    assert!(gaps.clone().all(|gap| gap < Duration::from_secs(1)), "{:?}", gaps.collect::<Vec<_>>());
    assert_eq!(agent.received().await, ["long stream"]);
    nothing_queued(&gateway).await;
}

#[tokio::test]
async fn a_stream_that_falls_silent_is_cut_off_after_the_idle_timeout_with_an_error_event() {
    let registry = RegistryNode::start().await;
    // A `working` update at once, then 4 s of silence before the answer.
    let silent = EchoConfig { delay: Duration::from_secs(4), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, silent).await;
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_secs = toml::Value::Integer(1)).await;

    let started = Instant::now();
    let events = stream(&gateway.a2a_url(&workspace.id), "then silence", "m-silent").await;
    let ended = started.elapsed();
    assert_eq!(events.len(), 2, "{events:?}");
    let (_, working) = &events[0];
    assert_eq!(working["result"]["status"]["state"], "working", "{working}");
    let (cut_at, error) = &events[1];
    assert!(
        *cut_at >= Duration::from_secs(1) && *cut_at < Duration::from_millis(2_500),
        "cut off at {cut_at:?}, not after 1 s of silence"
    );
    assert!(ended < Duration::from_millis(2_500), "the stream was not closed after the error: {ended:?}");
    assert_eq!(error["error"]["code"], -32054, "{error}");
    assert_eq!(error["error"]["data"]["reason"], "AGENT_UNREACHABLE", "{error}");
    // The agent had accepted the stream, so the message is its: queueing it
    // again would deliver it twice.
    assert_eq!(agent.received().await, ["then silence"]);
    nothing_queued(&gateway).await;
}

#[tokio::test]
async fn the_error_event_of_a_cut_off_stream_answers_to_the_request_id() {
    let registry = RegistryNode::start().await;
    let silent = EchoConfig { delay: Duration::from_secs(3), ..EchoConfig::default() };
    let (_agent, workspace) = EchoAgent::online(&registry, silent).await;
    let gateway = GatewayNode::start(&registry, |s| s.idle_timeout_secs = toml::Value::Integer(1)).await;

    let events = stream(&gateway.a2a_url(&workspace.id), "then silence", "m-silent").await;
    let (_, error) = events.last().expect("events");
    assert!(error["error"].is_object(), "{events:?}");
    assert_eq!(error["id"], 7, "{error}");
}

//! The official A2A Python SDK (`a2a-sdk` 1.3.0) on both ends: its client
//! pointed at the gateway, on each of A2A's three bindings (JSON-RPC,
//! HTTP+JSON and gRPC), reaches our echo agent and an agent written with the
//! SDK, streaming included.

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::registry::v1::Capabilities;
use agentmesh_testkit::python::{SdkAgent, sdk_client};
use serde_json::Value;

fn card_url(gateway: &GatewayNode, workspace_id: &str) -> String {
    format!("{}/.well-known/agent-card.json", gateway.a2a_url(workspace_id))
}

/// Every text part anywhere in the client's output.
fn texts(events: &[Value]) -> Vec<String> {
    fn walk(value: &Value, out: &mut Vec<String>) {
        match value {
            Value::Object(map) => {
                if let Some(Value::String(text)) = map.get("text") {
                    out.push(text.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    events.iter().for_each(|e| walk(e, &mut out));
    out
}

#[tokio::test]
async fn the_sdk_client_reaches_the_echo_agent_through_the_gateway_on_every_binding() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let card = card_url(&gateway, &workspace.id);

    for transport in ["jsonrpc", "http_json", "grpc"] {
        let text = format!("over {transport}");
        let events =
            sdk_client(&["--card-url", &card, "--transport", transport, "--token", &workspace.token, "--text", &text])
                .await
                .expect_events();
        assert!(texts(&events).iter().any(|t| t.contains(&text) && t != &text), "{transport}: {events:?}");

        let streamed = format!("streamed over {transport}");
        let events = sdk_client(&[
            "--card-url",
            &card,
            "--transport",
            transport,
            "--token",
            &workspace.token,
            "--text",
            &streamed,
            "--stream",
        ])
        .await
        .expect_events();
        assert!(events.len() >= 2, "{transport}: a stream of several events, got {events:?}");
        assert!(texts(&events).iter().any(|t| t.contains(&streamed) && t != &streamed), "{transport}: {events:?}");
    }
    assert_eq!(
        agent.received().await,
        [
            "over jsonrpc",
            "streamed over jsonrpc",
            "over http_json",
            "streamed over http_json",
            "over grpc",
            "streamed over grpc"
        ]
    );
}

#[tokio::test]
async fn the_sdk_client_reaches_an_sdk_agent_through_the_gateway() {
    let registry = RegistryNode::start().await;
    let agent = SdkAgent::spawn(&["--grpc-port", "-1"]).await;
    let workspace = registry.create("sdk-agent", None, 1).await;
    workspace.register(&agent.http, Capabilities::default(), None).await;
    workspace.heartbeat(0).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let card = card_url(&gateway, &workspace.id);

    for transport in ["jsonrpc", "http_json", "grpc"] {
        let events =
            sdk_client(&["--card-url", &card, "--transport", transport, "--token", &workspace.token, "--text", "ping"])
                .await
                .expect_events();
        assert!(texts(&events).contains(&"sdk-echo: ping".to_owned()), "{transport}: {events:?}");

        let events = sdk_client(&[
            "--card-url",
            &card,
            "--transport",
            transport,
            "--token",
            &workspace.token,
            "--text",
            "pong",
            "--stream",
        ])
        .await
        .expect_events();
        assert!(events.len() >= 2, "{transport}: {events:?}");
        assert!(texts(&events).contains(&"sdk-echo: pong".to_owned()), "{transport}: {events:?}");
    }

    // The SDK's task query, through the gateway, finds the agent's task.
    let events =
        sdk_client(&["--card-url", &card, "--token", &workspace.token, "--text", "remember me"]).await.expect_events();
    let task_id = find_task_id(&events).expect("the SDK agent answers with a task");
    let events =
        sdk_client(&["--card-url", &card, "--token", &workspace.token, "--task-id", &task_id]).await.expect_events();
    assert!(texts(&events).contains(&"sdk-echo: remember me".to_owned()), "{events:?}");
    agent.stop().await;
}

#[tokio::test]
async fn the_sdk_client_sees_a_queued_message_as_a_submitted_task_it_can_follow() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let card = card_url(&gateway, &workspace.id);
    agent.set_busy(true).await;

    let mut task_ids = Vec::new();
    for transport in ["jsonrpc", "http_json", "grpc"] {
        let text = format!("queued over {transport}");
        let events =
            sdk_client(&["--card-url", &card, "--transport", transport, "--token", &workspace.token, "--text", &text])
                .await
                .expect_events();
        let task = events.iter().find_map(|e| e.get("task")).unwrap_or_else(|| panic!("{transport}: {events:?}"));
        assert_eq!(task["status"]["state"], "TASK_STATE_SUBMITTED", "{transport}: {task}");
        assert!(task["metadata"]["agentmesh"]["queued"]["queueId"].is_string(), "{transport}: {task}");
        task_ids.push(task["id"].as_str().unwrap().to_owned());
    }
    // Each client follows its task (SubscribeToTask) while the agent is
    // freed; its stream ends with the agent's reply.
    let follow = |transport: &'static str, task_id: &str| {
        let (card, token, task_id) = (card.clone(), workspace.token.clone(), task_id.to_owned());
        async move {
            let args = ["--card-url", &card, "--transport", transport, "--token", &token, "--follow-task-id", &task_id];
            sdk_client(&args).await.expect_events()
        }
    };
    let free = async {
        agent.set_busy(false).await;
        workspace.heartbeat(0).await;
    };
    let (over_jsonrpc, over_http_json, over_grpc, ()) = tokio::join!(
        follow("jsonrpc", &task_ids[0]),
        follow("http_json", &task_ids[1]),
        follow("grpc", &task_ids[2]),
        free
    );
    for (transport, events) in [("jsonrpc", over_jsonrpc), ("http_json", over_http_json), ("grpc", over_grpc)] {
        let last = events.last().and_then(|e| e.get("task")).unwrap_or_else(|| panic!("{transport}: {events:?}"));
        assert_eq!(last["status"]["state"], "TASK_STATE_COMPLETED", "{transport}: {last}");
        assert!(texts(&events).iter().any(|t| t.contains(&format!("queued over {transport}"))), "{events:?}");
    }
    assert_eq!(agent.received().await, ["queued over jsonrpc", "queued over http_json", "queued over grpc"]);
}

fn find_task_id(events: &[Value]) -> Option<String> {
    events.iter().find_map(|e| e.get("task").and_then(|t| t["id"].as_str()).map(str::to_owned))
}

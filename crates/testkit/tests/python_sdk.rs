//! The official A2A Python SDK on both ends: tests/python/sdk_agent.py served
//! by the SDK's server, tests/python/sdk_client.py talking to it through its
//! card on each of A2A's three bindings. The gateway's end-to-end tests put the gateway
//! between the two; this is the baseline they compare against.

use agentmesh_testkit::python::{SdkAgent, sdk_client};
use serde_json::{Value, json};

/// The reply text in the final event of a send or stream: the completed
/// task's status message.
fn completed_reply(event: &Value) -> &str {
    let status = if event["task"].is_object() { &event["task"]["status"] } else { &event["statusUpdate"]["status"] };
    assert_eq!(status["state"], "TASK_STATE_COMPLETED", "{event}");
    status["message"]["parts"][0]["text"].as_str().unwrap_or_else(|| panic!("no reply text in {event}"))
}

#[tokio::test]
async fn the_card_lists_the_interfaces_the_agent_serves() {
    let agent = SdkAgent::spawn(&[]).await;
    let card: Value = reqwest::get(agent.card_url()).await.unwrap().json().await.unwrap();
    let grpc = agent.grpc.clone().expect("the SDK serves gRPC");
    assert_eq!(
        card["supportedInterfaces"],
        json!([
            {"url": format!("{}/", agent.http), "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
            {"url": format!("{}/rest", agent.http), "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            {"url": grpc, "protocolBinding": "GRPC", "protocolVersion": "1.0"},
        ])
    );
    assert_eq!(card["capabilities"]["streaming"], true);
    assert!(agent.stop().await.success());

    let agent = SdkAgent::spawn(&["--grpc-port", "-1"]).await;
    assert_eq!(agent.grpc, None);
    let card: Value = reqwest::get(agent.card_url()).await.unwrap().json().await.unwrap();
    assert_eq!(card["supportedInterfaces"].as_array().map(Vec::len), Some(2));
}

#[tokio::test]
async fn sdk_client_sends_streams_and_gets_tasks_over_every_transport() {
    let agent = SdkAgent::spawn(&[]).await;
    let card = agent.card_url();
    for transport in ["jsonrpc", "http_json", "grpc"] {
        let base = ["--card-url", card.as_str(), "--transport", transport];

        let events = sdk_client(&[&base[..], &["--text", "hello"]].concat()).await.expect_events();
        assert_eq!(events.len(), 1, "{transport}: {events:?}");
        assert_eq!(completed_reply(&events[0]), "sdk-echo: hello", "{transport}");
        let task_id = events[0]["task"]["id"].as_str().unwrap().to_owned();

        let events = sdk_client(&[&base[..], &["--text", "streamed", "--stream"]].concat()).await.expect_events();
        assert!(events.len() >= 2, "{transport}: {events:?}");
        let working = events.iter().any(|event| event["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING");
        assert!(working, "{transport}: no working update in {events:?}");
        assert_eq!(completed_reply(events.last().unwrap()), "sdk-echo: streamed", "{transport}");

        let events = sdk_client(&[&base[..], &["--task-id", &task_id]].concat()).await.expect_events();
        assert_eq!(events.len(), 1, "{transport}: {events:?}");
        assert_eq!(events[0]["id"], task_id.as_str());
        assert_eq!(events[0]["status"]["message"]["parts"][0]["text"], "sdk-echo: hello");

        let run = sdk_client(&[&base[..], &["--task-id", "no-such-task"]].concat()).await;
        assert!(!run.status.success(), "{transport}: {run:?}");
        assert_eq!(run.error.as_deref(), Some("TaskNotFoundError: Task not found"), "{transport}");
    }
    assert!(agent.stop().await.success());
}

#[tokio::test]
async fn sdk_client_sends_its_token_on_every_request_of_every_transport() {
    let agent = SdkAgent::spawn(&["--require-token", "s3cret"]).await;
    let card = agent.card_url();

    let run = sdk_client(&["--card-url", &card, "--text", "x"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    let error = run.error.unwrap_or_default();
    assert!(error.starts_with("AgentCardResolutionError:") && error.contains("401"), "{error}");
    let run = sdk_client(&["--card-url", &card, "--text", "x", "--token", "wrong"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");

    // The agent checks the token on the card, on JSON-RPC, HTTP+JSON and gRPC
    // calls, unary and streaming, so these pass only if each carries it.
    for transport in ["jsonrpc", "http_json", "grpc"] {
        let base = ["--card-url", card.as_str(), "--transport", transport, "--token", "s3cret"];
        let events = sdk_client(&[&base[..], &["--text", "x"]].concat()).await.expect_events();
        assert_eq!(completed_reply(&events[0]), "sdk-echo: x", "{transport}");
        let events = sdk_client(&[&base[..], &["--text", "y", "--stream"]].concat()).await.expect_events();
        assert_eq!(completed_reply(events.last().unwrap()), "sdk-echo: y", "{transport}");
    }
}

#[tokio::test]
async fn sdk_client_reports_a_transport_the_card_does_not_offer() {
    let agent = SdkAgent::spawn(&["--grpc-port", "-1"]).await;
    let run = sdk_client(&["--card-url", &agent.card_url(), "--transport", "grpc", "--text", "x"]).await;
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert_eq!(run.error.as_deref(), Some("ValueError: no compatible transports found."));
    assert!(run.events.is_empty());
}

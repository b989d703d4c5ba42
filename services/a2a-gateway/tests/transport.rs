//! The HTTP leg to the agent (GW-2, GW-4, GW-5): trace context reaches the
//! agent, also on a queued message's delivery; an oversized reply is
//! refused; a connection dropped mid-call queues the message; a caller that
//! hangs up does not abort the dispatch it started; agents with https URLs
//! are reached over TLS, and refused when their certificate is not trusted.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use agentmesh_echo_agent::{Config as EchoConfig, TlsIdentity};
use agentmesh_meshkit::*;
use agentmesh_proto::{gateway::v1 as gpb, registry::v1::Capabilities};
use agentmesh_testkit::tls::TestCa;
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

/// An agent that records the `traceparent` of every request, and answers
/// busy while told to.
#[derive(Clone, Default)]
struct Recorder {
    traceparents: Arc<Mutex<Vec<String>>>,
    busy: Arc<AtomicBool>,
}

async fn record(State(recorder): State<Recorder>, headers: HeaderMap, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    recorder.traceparents.lock().unwrap().push(traceparent);
    if recorder.busy.load(Ordering::SeqCst) {
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "1")], "busy").into_response();
    }
    let request: Value = serde_json::from_str(&body).unwrap();
    let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"kind": "message", "messageId": "r",
        "role": "agent", "parts": [{"kind": "text", "text": "recorded"}]}});
    json_response(&reply)
}

fn json_response(value: &Value) -> axum::response::Response {
    use axum::response::IntoResponse;
    ([(axum::http::header::CONTENT_TYPE, "application/json")], value.to_string()).into_response()
}

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

async fn online(registry: &RegistryNode, url: &str) -> Workspace {
    let workspace = registry.create("scripted", None, 1).await;
    workspace.register(url, Capabilities::default(), None).await;
    workspace.heartbeat(0).await;
    workspace
}

async fn queue_items(gateway: &GatewayNode) -> Vec<gpb::QueueItem> {
    let request = gpb::ListQueueItemsRequest { states: (1..=5).collect(), ..Default::default() };
    gateway.control().list_queue_items(request).await.unwrap().into_inner().items
}

#[tokio::test]
async fn trace_context_reaches_the_agent_directly_and_through_the_queue() {
    let registry = RegistryNode::start().await;
    let recorder = Recorder::default();
    let url = serve(Router::new().route("/", post(record)).with_state(recorder.clone())).await;
    let workspace = online(&registry, &url).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let traced = [("traceparent", TRACEPARENT)];

    let reply = Caller::operator().post(&gateway.a2a_url(&workspace.id), &send_request("a", "m-a"), &traced).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    recorder.busy.store(true, Ordering::SeqCst);
    let reply = Caller::operator().post(&gateway.a2a_url(&workspace.id), &send_request("b", "m-b"), &traced).await;
    assert_eq!(reply.body["result"]["status"]["state"], "submitted", "{}", reply.body);
    recorder.busy.store(false, Ordering::SeqCst);
    workspace.heartbeat(0).await;
    eventually(Duration::from_secs(10), || async {
        (queue_items(&gateway).await.iter().all(|i| i.state() == gpb::QueueItemState::Delivered)).then_some(())
    })
    .await;

    let seen = recorder.traceparents.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "direct, busy bounce, delivery: {seen:?}");
    let trace_id = |tp: &str| tp.split('-').nth(1).unwrap_or_default().to_owned();
    assert!(seen.iter().all(|tp| trace_id(tp) == trace_id(TRACEPARENT)), "one trace throughout: {seen:?}");
}

#[tokio::test]
async fn a_reply_over_ten_mebibytes_is_refused() {
    let registry = RegistryNode::start().await;
    let huge = "x".repeat(11 << 20);
    let router = Router::new().route(
        "/",
        post(move || {
            let huge = huge.clone();
            async move { json_response(&json!({"jsonrpc": "2.0", "id": 1, "result": {"text": huge}})) }
        }),
    );
    let workspace = online(&registry, &serve(router).await).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "big reply", "m-big").await;
    assert_eq!(reply.status, 502, "{}", reply.body);
    assert_eq!(reply.body["error"]["data"]["reason"], "REPLY_TOO_LARGE");
}

#[tokio::test]
async fn a_connection_dropped_mid_call_queues_the_message() {
    let registry = RegistryNode::start().await;
    // Reads the request, then hangs up without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        while let Ok((mut socket, _)) = listener.accept().await {
            let mut buffer = [0u8; 4096];
            let _ = socket.read(&mut buffer).await;
        }
    });
    let workspace = online(&registry, &url).await;
    let gateway = GatewayNode::start(&registry, |s| s.scan_interval_ms = 600_000).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "cut off", "m-cut").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["result"]["metadata"]["agentmesh"]["queued"]["reason"], "QUEUE_REASON_CONNECTION_DROPPED");
}

#[tokio::test]
async fn a_caller_hanging_up_does_not_abort_the_dispatch() {
    let registry = RegistryNode::start().await;
    let slow = EchoConfig { delay: Duration::from_secs(3), ..EchoConfig::default() };
    let (_agent, workspace) = EchoAgent::online(&registry, slow).await;
    let gateway = GatewayNode::start(&registry, |s| {
        s.idle_timeout_secs = toml::Value::Integer(1);
        s.scan_interval_ms = 600_000;
    })
    .await;

    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let hung_up = impatient
        .post(gateway.a2a_url(&workspace.id))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&send_request("left behind", "m-left"))
        .send()
        .await;
    assert!(hung_up.unwrap_err().is_timeout());

    // The dispatch went on without its caller: silent past the idle timeout,
    // it queued the message itself.
    let queued = eventually(Duration::from_secs(5), || async {
        queue_items(&gateway).await.into_iter().find(|i| i.message_id == "m-left")
    })
    .await;
    assert_eq!(queued.queue_reason(), gpb::QueueReason::IdleTimeout);
}

/// An echo agent serving https with a certificate for `localhost` from `ca`,
/// registered as an online workspace under its https URL.
async fn tls_echo_agent(registry: &RegistryNode, ca: &TestCa) -> Workspace {
    let issued = ca.issue(&["localhost"]);
    let identity = TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("https://localhost:{}/", listener.local_addr().unwrap().port());
    let config = EchoConfig { tls: Some(identity), ..EchoConfig::default() };
    tokio::spawn(agentmesh_echo_agent::serve(listener, config, CancellationToken::new()));
    let workspace = registry.create("tls-agent", None, 1).await;
    workspace.register(&url, Capabilities::default(), None).await;
    workspace.heartbeat(0).await;
    workspace
}

#[tokio::test]
async fn agents_with_https_urls_are_reached_over_tls_trusting_the_configured_authority() {
    let registry = RegistryNode::start().await;
    let ca = TestCa::new();
    let workspace = tls_echo_agent(&registry, &ca).await;
    let ca_file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(ca_file.path(), ca.ca_pem()).unwrap();
    let gateway = GatewayNode::start(&registry, |s| s.agent_ca_file = Some(ca_file.path().to_owned())).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "over tls", "m-tls").await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply_text(&reply.body["result"]), "echo: over tls");

    let mut request = send_request("streamed over tls", "m-tls-stream");
    request["method"] = json!("message/stream");
    let mut events = Caller::operator().events(&gateway.a2a_url(&workspace.id), &request).await;
    let mut last = None;
    while let Some(event) = events.next().await {
        last = Some(event);
    }
    let last = last.expect("at least one event");
    assert_eq!(reply_text(&last["result"]), "echo: streamed over tls", "{last}");
}

#[tokio::test]
async fn an_agent_whose_certificate_the_gateway_does_not_trust_is_refused_not_queued() {
    let registry = RegistryNode::start().await;
    let workspace = tls_echo_agent(&registry, &TestCa::new()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "untrusted", "m-untrusted").await;
    assert_eq!(reply.status, 409, "{}", reply.body);
    let reason = reply.body["error"]["message"].as_str().unwrap();
    assert!(reason.contains("TLS handshake") && reason.contains("UnknownIssuer"), "{reason}");
    let listed = gateway
        .control()
        .list_queue_items(gpb::ListQueueItemsRequest { workspace_id: workspace.id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(listed.items.is_empty(), "{listed:?}");
}

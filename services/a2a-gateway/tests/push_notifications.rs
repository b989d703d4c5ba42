//! Push notifications for queued messages: a caller registers a webhook
//! for the task the gateway handed out for its queued message, and is
//! called with the task once the message ends, by whichever replica ended
//! it, with the token and credentials it registered. Webhook URLs pass the
//! SSRF guard (SEC-3) like agent URLs.

use std::{net::SocketAddr, time::Duration};

use agentmesh_a2a_gateway::settings::GatewaySettings;
use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::a2a::v1 as a2a_pb;
use axum::{extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};
use tokio::sync::mpsc;

/// Scans are off: only a heartbeat reporting room starts a drain.
const NO_SCANS: u64 = 600_000;

/// A webhook receiver: every call's token, authorization and body.
struct Webhook {
    url: String,
    calls: mpsc::UnboundedReceiver<Call>,
}

#[derive(Debug)]
struct Call {
    token: Option<String>,
    authorization: Option<String>,
    body: Value,
}

impl Webhook {
    async fn start() -> Self {
        async fn receive(State(calls): State<mpsc::UnboundedSender<Call>>, headers: HeaderMap, body: String) {
            let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let body = serde_json::from_str(&body).unwrap_or(Value::String(body));
            let _ = calls.send(Call {
                token: header("x-a2a-notification-token"),
                authorization: header("authorization"),
                body,
            });
        }
        let (sender, calls) = mpsc::unbounded_channel();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address: SocketAddr = listener.local_addr().unwrap();
        let app = axum::Router::new().route("/hook", post(receive)).with_state(sender);
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { url: format!("http://{address}/hook"), calls }
    }

    async fn next(&mut self) -> Call {
        tokio::time::timeout(Duration::from_secs(10), self.calls.recv())
            .await
            .expect("a webhook call")
            .expect("the receiver runs")
    }
}

fn rpc(method: &str, params: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": "push", "method": method, "params": params })
}

fn no_scans(settings: &mut GatewaySettings) {
    settings.scan_interval_ms = NO_SCANS;
}

#[tokio::test]
async fn a_webhook_registered_for_a_queued_task_is_called_with_its_answer() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, no_scans).await;
    let url = gateway.a2a_url(&workspace.id);
    let mut webhook = Webhook::start().await;
    agent.set_busy(true).await;
    let queued = Caller::operator().send(&url, "hello webhook", "m-push").await;
    let task_id = queued.queued()["queueId"].as_str().unwrap().to_owned();

    let config = json!({
        "taskId": task_id, "id": "c-1", "url": webhook.url, "token": "tok-1",
        "authentication": { "scheme": "Bearer", "credentials": "hook-secret" },
    });
    let created = Caller::operator().post(&url, &rpc("CreateTaskPushNotificationConfig", config.clone()), &[]).await;
    assert_eq!(created.body["result"], config, "{}", created.body);
    let got = Caller::operator()
        .post(&url, &rpc("GetTaskPushNotificationConfig", json!({ "taskId": task_id, "id": "c-1" })), &[])
        .await;
    assert_eq!(got.body["result"], config);
    let listed =
        Caller::operator().post(&url, &rpc("ListTaskPushNotificationConfigs", json!({ "taskId": task_id })), &[]).await;
    assert_eq!(listed.body["result"], json!({ "configs": [config] }));
    let unknown = Caller::operator()
        .post(&url, &rpc("GetTaskPushNotificationConfig", json!({ "taskId": task_id, "id": "c-2" })), &[])
        .await;
    // The gateway's own error, with its HTTP status, as for a cancel too late.
    assert_eq!((unknown.status, &unknown.body["error"]["code"]), (404, &json!(-32001)), "{}", unknown.body);

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let call = webhook.next().await;
    assert_eq!(call.token.as_deref(), Some("tok-1"));
    assert_eq!(call.authorization.as_deref(), Some("Bearer hook-secret"));
    let task = &call.body["task"];
    assert_eq!(task["id"], task_id.as_str(), "{}", call.body);
    assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED", "{}", call.body);
    assert!(call.body.to_string().contains("hello webhook"), "the agent's answer: {}", call.body);
    assert_eq!(agent.received().await, ["hello webhook"]);
}

#[tokio::test]
async fn the_replica_that_delivers_calls_webhooks_registered_on_another() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("gateway.db").display());
    // The replica that queued the message knows of its backlog and drains
    // it; the config reaches the other, over gRPC.
    let draining = GatewayNode::start_on(&registry, &database, &dir.path().join("a"), no_scans).await;
    let registering = GatewayNode::start_on(&registry, &database, &dir.path().join("b"), no_scans).await;
    let mut webhook = Webhook::start().await;
    agent.set_busy(true).await;
    let queued = Caller::operator().send(&draining.a2a_url(&workspace.id), "hello elsewhere", "m-else").await;
    let task_id = queued.queued()["queueId"].as_str().unwrap().to_owned();

    let mut request = tonic::Request::new(a2a_pb::TaskPushNotificationConfig {
        tenant: workspace.id.clone(),
        task_id: task_id.clone(),
        url: webhook.url.clone(),
        token: "tok-2".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("a2a-version", "1.0".parse().unwrap());
    let created = registering.a2a().create_task_push_notification_config(request).await.unwrap().into_inner();
    // Named after its task when the caller names it nothing, as the SDKs do.
    assert_eq!((created.id.as_str(), created.task_id.as_str()), (task_id.as_str(), task_id.as_str()));

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let call = webhook.next().await;
    assert_eq!((call.token.as_deref(), call.authorization), (Some("tok-2"), None));
    assert_eq!(call.body["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{}", call.body);
}

#[tokio::test]
async fn canceled_and_dropped_messages_are_notified_and_a_deleted_config_is_not_called() {
    let registry = RegistryNode::start().await;
    // Never registered: its messages wait, and nothing delivers them.
    let workspace = registry.create("not-yet", None, 1).await;
    let gateway = GatewayNode::start(&registry, no_scans).await;
    let url = gateway.a2a_url(&workspace.id);
    let mut webhook = Webhook::start().await;
    let first = Caller::operator().send(&url, "one", "m-1").await.queued()["queueId"].as_str().unwrap().to_owned();
    let second = Caller::operator().send(&url, "two", "m-2").await.queued()["queueId"].as_str().unwrap().to_owned();
    for task_id in [&first, &second] {
        let config = json!({ "taskId": task_id, "url": webhook.url });
        let created = Caller::operator().post(&url, &rpc("CreateTaskPushNotificationConfig", config), &[]).await;
        assert!(created.body["result"].is_object(), "{}", created.body);
    }
    let deleted = Caller::operator()
        .post(&url, &rpc("DeleteTaskPushNotificationConfig", json!({ "taskId": first, "id": first })), &[])
        .await;
    assert_eq!(deleted.body["result"], Value::Null, "{}", deleted.body);

    for task_id in [&first, &second] {
        let cancel = json!({ "jsonrpc": "2.0", "id": 3, "method": "CancelTask", "params": { "id": task_id } });
        let canceled = Caller::operator().post(&url, &cancel, &[("a2a-version", "1.0")]).await;
        assert_eq!(canceled.body["result"]["status"]["state"], "TASK_STATE_CANCELED", "{}", canceled.body);
    }
    let call = webhook.next().await;
    assert_eq!(call.body["task"]["id"], second.as_str(), "only the config left is called: {}", call.body);
    assert_eq!(call.body["task"]["status"]["state"], "TASK_STATE_CANCELED");

    // An operator's drop ends a message too.
    let third = Caller::operator().send(&url, "three", "m-3").await.queued()["queueId"].as_str().unwrap().to_owned();
    let config = json!({ "taskId": third, "url": webhook.url });
    Caller::operator().post(&url, &rpc("CreateTaskPushNotificationConfig", config), &[]).await;
    // The control API drops messages at least a second old, by the
    // gateway's own clock, which a test cannot move.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let drop = agentmesh_proto::gateway::v1::DropStaleItemsRequest {
        workspace_id: workspace.id.clone(),
        older_than_seconds: Some(1),
        reason: "cleared by the operator".into(),
        ..Default::default()
    };
    assert_eq!(gateway.control().drop_stale_items(drop).await.unwrap().into_inner().dropped_count, 1);
    let call = webhook.next().await;
    assert_eq!(call.body["task"]["id"], third.as_str(), "{}", call.body);
    let more = tokio::time::timeout(Duration::from_millis(300), webhook.calls.recv()).await;
    assert!(more.is_err(), "a deleted config was called: {more:?}");
}

#[tokio::test]
async fn webhooks_the_network_mode_forbids_are_refused_on_every_binding() {
    let registry = RegistryNode::start().await;
    let workspace = registry.create("strict", None, 1).await;
    let gateway = GatewayNode::start(&registry, |settings| {
        no_scans(settings);
        settings.network_mode = "strict".into();
    })
    .await;
    let url = gateway.a2a_url(&workspace.id);
    let task_id = Caller::operator().send(&url, "wait", "m-1").await.queued()["queueId"].as_str().unwrap().to_owned();

    for forbidden in ["http://127.0.0.1:9/hook", "http://169.254.169.254/latest", "http://10.0.0.1/hook", "ftp://x/"] {
        let config = json!({ "taskId": task_id, "url": forbidden });
        let refused = Caller::operator().post(&url, &rpc("CreateTaskPushNotificationConfig", config), &[]).await;
        assert_eq!(refused.body["error"]["code"], -32602, "{forbidden}: {}", refused.body);
        assert!(refused.body["error"]["message"].as_str().unwrap().starts_with("url: "), "{}", refused.body);
    }
    let rest = reqwest::Client::new()
        .post(format!("{url}/tasks/{task_id}/pushNotificationConfigs"))
        .bearer_auth(OPERATOR_TOKEN)
        .json(&json!({ "url": "http://127.0.0.1:9/hook" }))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 400);
    let mut request = tonic::Request::new(a2a_pb::TaskPushNotificationConfig {
        tenant: workspace.id.clone(),
        task_id: task_id.clone(),
        url: "http://[::1]/hook".into(),
        ..Default::default()
    });
    request.metadata_mut().insert("a2a-version", "1.0".parse().unwrap());
    let status = gateway.a2a().create_task_push_notification_config(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    // Nothing was kept.
    let listed =
        Caller::operator().post(&url, &rpc("ListTaskPushNotificationConfigs", json!({ "taskId": task_id })), &[]).await;
    assert_eq!(listed.body["result"], json!({ "configs": [] }));
}

//! The echo agent in process, over real HTTP: card, both A2A dialects,
//! errors, busy answers, redeliveries, admin endpoints and shutdown.

use std::time::Duration;

use agentmesh_echo_agent::{BusyStatus, Capabilities, Config};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

struct Agent {
    base: String,
    client: reqwest::Client,
    shutdown: CancellationToken,
    task: tokio::task::JoinHandle<std::io::Result<u8>>,
}

impl Agent {
    async fn start(config: Config) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(agentmesh_echo_agent::serve(listener, config, shutdown.clone()));
        Self { base, client: reqwest::Client::new(), shutdown, task }
    }

    async fn rpc(&self, request: Value) -> (StatusCode, Value) {
        let response = self.client.post(format!("{}/", self.base)).json(&request).send().await.unwrap();
        (response.status(), response.json().await.unwrap())
    }

    async fn raw(&self, body: &'static str) -> Value {
        let response = self.client.post(format!("{}/", self.base)).body(body).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.json().await.unwrap()
    }

    async fn get(&self, path: &str) -> Value {
        let response = self.client.get(format!("{}{path}", self.base)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        response.json().await.unwrap()
    }

    async fn post(&self, path: &str, body: Value) -> StatusCode {
        self.client.post(format!("{}{path}", self.base)).json(&body).send().await.unwrap().status()
    }

    /// The `data:` payloads of an SSE answer, in order.
    async fn stream(&self, request: Value) -> Vec<Value> {
        let response = self.client.post(format!("{}/", self.base)).json(&request).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        assert!(content_type.starts_with("text/event-stream"), "{content_type}");
        let body = response.text().await.unwrap();
        body.lines()
            .filter_map(|line| line.strip_prefix("data:"))
            .map(|data| serde_json::from_str(data.trim()).unwrap())
            .collect()
    }

    async fn stop(self) -> u8 {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap()
    }
}

/// A `SendMessage` with a message id of its own.
fn send_v1(text: &str, context_id: Option<&str>) -> Value {
    with_message_id(send_v1_without_id(text, context_id), &uuid::Uuid::new_v4().to_string())
}

fn with_message_id(mut request: Value, message_id: &str) -> Value {
    request["params"]["message"]["messageId"] = json!(message_id);
    request
}

/// A `SendMessage` whose message has no id (A2A requires one; the agent copes).
fn send_v1_without_id(text: &str, context_id: Option<&str>) -> Value {
    let mut message = json!({"role": "ROLE_USER", "parts": [{"text": text}]});
    if let Some(context_id) = context_id {
        message["contextId"] = json!(context_id);
    }
    json!({"jsonrpc": "2.0", "id": "req-1", "method": "SendMessage", "params": {"message": message}})
}

fn send_v03(method: &str, text: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 5, "method": method, "params": {"message": {
        "kind": "message", "messageId": uuid::Uuid::new_v4().to_string(), "role": "user",
        "parts": [{"kind": "text", "text": text}]
    }}})
}

fn stream_v1(text: &str, message_id: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {
        "message": {"messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]}
    }})
}

#[tokio::test]
async fn card_is_valid_for_a2a_1_0_and_0_3_and_names_the_host_it_was_asked_on() {
    let agent = Agent::start(Config { name: "echo-1".into(), ..Config::default() }).await;
    let url = format!("{}/", agent.base);
    for path in ["/.well-known/agent-card.json", "/.well-known/agent.json"] {
        let card = agent.get(path).await;
        assert_eq!(card["name"], "echo-1");
        assert_eq!(
            card["supportedInterfaces"],
            json!([{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}])
        );
        assert_eq!(card["capabilities"]["streaming"], true);
        assert_eq!(card["defaultInputModes"], json!(["text/plain"]));
        assert_eq!(card["skills"][0]["id"], "echo");
        assert!(card["description"].as_str().is_some_and(|d| !d.is_empty()));
        assert!(card["version"].as_str().is_some());
        assert_eq!(
            (&card["url"], &card["protocolVersion"], &card["preferredTransport"]),
            (&json!(url), &json!("0.3.0"), &json!("JSONRPC"))
        );
    }
    agent.stop().await;

    let public = "http://agent.example:9000/";
    let agent = Agent::start(Config { public_url: Some(public.into()), ..Config::default() }).await;
    let card = agent.get("/.well-known/agent-card.json").await;
    assert_eq!((&card["url"], &card["supportedInterfaces"][0]["url"]), (&json!(public), &json!(public)));
    agent.stop().await;
}

#[tokio::test]
async fn send_message_echoes_in_the_1_0_shape() {
    let agent = Agent::start(Config::default()).await;
    let (status, reply) = agent.rpc(with_message_id(send_v1("hello", Some("ctx-9")), "m-1")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!((&reply["jsonrpc"], &reply["id"]), (&json!("2.0"), &json!("req-1")));
    let message = &reply["result"]["message"];
    assert_eq!(message["role"], "ROLE_AGENT");
    assert_eq!(message["parts"], json!([{"text": "echo: hello"}]));
    assert_eq!(message["contextId"], "ctx-9");
    assert!(message["messageId"].as_str().is_some_and(|id| !id.is_empty() && id != "m-1"));
    agent.stop().await;
}

#[tokio::test]
async fn message_send_echoes_in_the_0_3_shape_with_a_new_context_when_none_was_given() {
    let agent = Agent::start(Config::default()).await;
    let (_, reply) = agent.rpc(send_v03("message/send", "hi")).await;
    assert_eq!(reply["id"], 5);
    let message = &reply["result"];
    assert_eq!((&message["kind"], &message["role"]), (&json!("message"), &json!("agent")));
    assert_eq!(message["parts"], json!([{"kind": "text", "text": "echo: hi"}]));
    assert!(message["contextId"].as_str().is_some_and(|id| !id.is_empty()));
    agent.stop().await;
}

#[tokio::test]
async fn streams_a_working_update_then_the_message_in_both_dialects() {
    let agent = Agent::start(Config { delay: Duration::from_millis(20), ..Config::default() }).await;

    let events = agent
        .stream(json!({"jsonrpc": "2.0", "id": 1, "method": "SendStreamingMessage", "params": {
            "message": {"messageId": "m", "role": "ROLE_USER", "contextId": "c", "parts": [{"text": "s"}]}
        }}))
        .await;
    assert_eq!(events.len(), 2, "{events:?}");
    let update = &events[0]["result"]["statusUpdate"];
    assert_eq!((&update["status"]["state"], &update["contextId"]), (&json!("TASK_STATE_WORKING"), &json!("c")));
    assert!(update["taskId"].as_str().is_some());
    assert_eq!(events[1]["result"]["message"]["parts"], json!([{"text": "echo: s"}]));
    assert_eq!(events[1]["id"], 1);

    let events = agent.stream(send_v03("message/stream", "t")).await;
    assert_eq!(events.len(), 2, "{events:?}");
    let update = &events[0]["result"];
    assert_eq!(
        (&update["kind"], &update["status"]["state"], &update["final"]),
        (&json!("status-update"), &json!("working"), &json!(false))
    );
    assert_eq!(events[1]["result"]["kind"], "message");
    assert_eq!(events[1]["result"]["contextId"], update["contextId"]);
    agent.stop().await;
}

#[tokio::test]
async fn task_methods_answer_task_not_found() {
    let agent = Agent::start(Config::default()).await;
    for method in ["tasks/get", "tasks/cancel", "GetTask", "CancelTask"] {
        let (_, reply) =
            agent.rpc(json!({"jsonrpc": "2.0", "id": 3, "method": method, "params": {"id": "nope"}})).await;
        assert_eq!(reply["error"]["code"], -32001, "{method}: {reply}");
        assert_eq!(reply["id"], 3);
    }
    let (_, reply) = agent.rpc(json!({"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"id": "nope"}})).await;
    assert_eq!(reply["error"]["data"][0]["reason"], "TASK_NOT_FOUND");
    let (_, reply) = agent.rpc(json!({"jsonrpc": "2.0", "id": 3, "method": "tasks/get", "params": {}})).await;
    assert_eq!(reply["error"]["code"], -32602);
    agent.stop().await;
}

#[tokio::test]
async fn malformed_requests_get_json_rpc_errors() {
    let agent = Agent::start(Config::default()).await;
    let reply = agent.raw("{not json").await;
    assert_eq!((&reply["error"]["code"], &reply["id"]), (&json!(-32700), &Value::Null));
    assert_eq!(agent.raw(r#"[{"jsonrpc":"2.0","id":1,"method":"SendMessage"}]"#).await["error"]["code"], -32600);
    assert_eq!(agent.raw(r#"{"jsonrpc":"2.0","id":1}"#).await["error"]["code"], -32600);
    let reply = agent.raw(r#"{"jsonrpc":"2.0","id":1,"method":"message/explode"}"#).await;
    assert_eq!((&reply["error"]["code"], &reply["id"]), (&json!(-32601), &json!(1)));
    let reply = agent.raw(r#"{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{}}}"#).await;
    assert_eq!(reply["error"]["code"], -32602);
    assert!(agent.get("/admin/received").await.as_array().unwrap().is_empty());
    agent.stop().await;
}

#[tokio::test]
async fn busy_switch_answers_503_with_retry_after_and_records_nothing() {
    let agent = Agent::start(Config::default()).await;
    assert_eq!(agent.post("/admin/busy", json!({"busy": true})).await, StatusCode::OK);
    let response = agent.client.post(format!("{}/", agent.base)).json(&send_v1("x", None)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(response.headers()["retry-after"], "1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body,
        json!({"jsonrpc": "2.0", "id": "req-1", "error": {"code": -32000, "message": "agent busy", "data": {"retryAfterSeconds": 1}}})
    );
    // Task methods are never busy.
    let (status, _) = agent.rpc(json!({"jsonrpc": "2.0", "id": 1, "method": "GetTask", "params": {"id": "t"}})).await;
    assert_eq!(status, StatusCode::OK);

    assert_eq!(agent.post("/admin/busy", json!({"busy": false})).await, StatusCode::OK);
    assert_eq!(agent.rpc(send_v1("y", None)).await.0, StatusCode::OK);
    assert_eq!(agent.get("/admin/received").await, json!(["y"]));
    assert!(agent.post("/admin/busy", json!({"busy": "yes"})).await.is_client_error());
    agent.stop().await;
}

#[tokio::test]
async fn the_busy_answer_can_be_a_429_with_a_longer_retry_after() {
    let config = Config { busy_status: BusyStatus::TooManyRequests, retry_after_seconds: 7, ..Config::default() };
    let agent = Agent::start(config).await;
    agent.post("/admin/busy", json!({"busy": true})).await;
    let response = agent.client.post(format!("{}/", agent.base)).json(&send_v1("x", None)).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(response.headers()["retry-after"], "7");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["data"], json!({"retryAfterSeconds": 7}));
    assert_eq!(agent.get("/admin/load").await, json!({"busy_answers": 1, "peak_in_flight": 0}));
    agent.stop().await;
}

#[tokio::test]
async fn a_progress_interval_repeats_the_working_update_while_the_stream_is_delayed() {
    let config = Config {
        delay: Duration::from_millis(500),
        progress_interval: Some(Duration::from_millis(100)),
        ..Config::default()
    };
    let agent = Agent::start(config).await;
    let started = std::time::Instant::now();
    let events = agent.stream(stream_v1("slow", "m-1")).await;
    assert!(started.elapsed() >= Duration::from_millis(500), "{:?}", started.elapsed());
    // The first update, one at 100, 200, 300 and 400 ms, then the answer.
    assert_eq!(events.len(), 6, "{events:?}");
    for update in &events[..5] {
        assert_eq!(update["result"]["statusUpdate"]["status"]["state"], "TASK_STATE_WORKING", "{update}");
    }
    assert_eq!(events[5]["result"]["message"]["parts"], json!([{"text": "echo: slow"}]));
    agent.stop().await;
}

#[tokio::test]
async fn messages_beyond_max_concurrent_are_busy_and_in_flight_ones_count_as_active() {
    let config = Config { delay: Duration::from_millis(400), max_concurrent: 2, ..Config::default() };
    let agent = Agent::start(config).await;
    let sends = (0..3).map(|i| {
        let request = send_v1(&format!("m{i}"), None);
        let (client, url) = (agent.client.clone(), format!("{}/", agent.base));
        tokio::spawn(async move { client.post(url).json(&request).send().await.unwrap().status() })
    });
    let sends: Vec<_> = sends.collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(agent.get("/agentmesh/status").await["active_tasks"], 2);
    let mut statuses = Vec::new();
    for send in sends {
        statuses.push(send.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::OK, StatusCode::SERVICE_UNAVAILABLE]);
    assert_eq!(agent.get("/agentmesh/status").await["active_tasks"], 0);
    assert_eq!(agent.get("/admin/load").await, json!({"busy_answers": 1, "peak_in_flight": 2}));
    assert_eq!(agent.get("/admin/received").await.as_array().unwrap().len(), 2);
    agent.stop().await;
}

#[tokio::test]
async fn received_lists_texts_in_arrival_order() {
    let agent = Agent::start(Config::default()).await;
    for text in ["one", "two", "three"] {
        agent.rpc(send_v1(text, None)).await;
    }
    agent.stream(send_v03("message/stream", "four")).await;
    assert_eq!(agent.get("/admin/received").await, json!(["one", "two", "three", "four"]));
    agent.stop().await;
}

#[tokio::test]
async fn deliveries_list_message_ids_and_arrival_times_of_first_deliveries() {
    let agent = Agent::start(Config::default()).await;
    for (text, id) in [("one", "id-1"), ("two", "id-2"), ("one again", "id-1")] {
        agent.rpc(with_message_id(send_v1_without_id(text, None), id)).await;
    }
    agent.rpc(send_v1_without_id("anonymous", None)).await;
    let deliveries = agent.get("/admin/deliveries").await;
    let seen: Vec<(Value, Value)> =
        deliveries.as_array().unwrap().iter().map(|d| (d["message_id"].clone(), d["text"].clone())).collect();
    assert_eq!(seen, [(json!("id-1"), json!("one")), (json!("id-2"), json!("two")), (Value::Null, json!("anonymous"))]);
    let times: Vec<u64> =
        deliveries.as_array().unwrap().iter().map(|d| d["received_at_ms"].as_u64().unwrap()).collect();
    assert!(times.windows(2).all(|pair| pair[0] <= pair[1]), "{times:?}");
    agent.stop().await;
}

#[tokio::test]
async fn status_reports_declared_capabilities_for_the_shim() {
    let capabilities = Capabilities { native_session: true, native_scheduler: false, native_status_mgmt: true };
    let agent = Agent::start(Config { capabilities, idle_timeout_seconds: Some(42), ..Config::default() }).await;
    assert_eq!(
        agent.get("/agentmesh/status").await,
        json!({
            "active_tasks": 0, "error_rate": 0.0, "runtime_state": "",
            "capabilities": {"native_session": true, "native_scheduler": false, "native_status_mgmt": true},
            "idle_timeout_seconds": 42,
        })
    );
    assert_eq!(agent.client.get(format!("{}/healthz", agent.base)).send().await.unwrap().status(), StatusCode::OK);
    agent.stop().await;

    let agent = Agent::start(Config::default()).await;
    assert_eq!(agent.get("/agentmesh/status").await["idle_timeout_seconds"], Value::Null);
    agent.stop().await;
}

#[tokio::test]
async fn admin_exit_answers_then_stops_with_the_code() {
    let agent = Agent::start(Config::default()).await;
    assert_eq!(agent.post("/admin/exit", json!({"code": 7})).await, StatusCode::OK);
    let code = tokio::time::timeout(Duration::from_secs(5), agent.task).await.unwrap().unwrap().unwrap();
    assert_eq!(code, 7);
}

#[tokio::test]
async fn exit_after_stops_with_the_configured_code() {
    let config = Config { exit_after: Some((Duration::from_millis(100), 3)), ..Config::default() };
    let agent = Agent::start(config).await;
    let code = tokio::time::timeout(Duration::from_secs(5), agent.task).await.unwrap().unwrap().unwrap();
    assert_eq!(code, 3);
}

#[tokio::test]
async fn shutdown_finishes_in_flight_messages() {
    let agent = Agent::start(Config { delay: Duration::from_millis(300), ..Config::default() }).await;
    let (client, url) = (agent.client.clone(), format!("{}/", agent.base));
    let send = tokio::spawn(async move { client.post(url).json(&send_v1("late", None)).send().await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(agent.stop().await, 0);
    let response = send.await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let reply: Value = response.json().await.unwrap();
    assert_eq!(reply["result"]["message"]["parts"][0]["text"], "echo: late");
}

#[tokio::test]
async fn a_redelivered_message_gets_the_same_reply_and_is_recorded_once() {
    let agent = Agent::start(Config::default()).await;
    let send = with_message_id(send_v1("hello", None), "m-1");
    let (_, first) = agent.rpc(send.clone()).await;
    let (status, again) = agent.rpc(send).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(again, first);
    assert!(first["result"]["message"]["contextId"].as_str().is_some_and(|id| !id.is_empty()));

    // The same id in the 0.3 dialect is the same message too.
    let v03 = with_message_id(send_v03("message/send", "hello"), "m-1");
    let (_, reply) = agent.rpc(v03).await;
    assert_eq!(reply["result"]["messageId"], first["result"]["message"]["messageId"]);
    assert_eq!(reply["result"]["contextId"], first["result"]["message"]["contextId"]);

    // A redelivered stream repeats its task and reply ids.
    let first = agent.stream(stream_v1("streamed", "m-2")).await;
    let again = agent.stream(stream_v1("streamed", "m-2")).await;
    assert_eq!(again, first);
    assert_eq!(first.len(), 2, "{first:?}");

    assert_eq!(agent.get("/admin/received").await, json!(["hello", "streamed"]));
    assert_eq!(agent.get("/admin/stats").await, json!({"received": 2, "duplicates": 3}));
    agent.stop().await;
}

#[tokio::test]
async fn a_redelivery_while_the_first_is_in_flight_is_the_same_message() {
    let agent = Agent::start(Config { delay: Duration::from_millis(200), ..Config::default() }).await;
    let send = with_message_id(send_v1("slow", None), "m-1");
    let (first, again) = tokio::join!(agent.rpc(send.clone()), agent.rpc(send));
    assert_eq!((first.0, again.0), (StatusCode::OK, StatusCode::OK));
    assert_eq!(first.1["result"], again.1["result"]);
    assert_eq!(agent.get("/admin/stats").await, json!({"received": 1, "duplicates": 1}));
    agent.stop().await;
}

#[tokio::test]
async fn a_message_refused_busy_is_not_seen_so_its_next_delivery_is_the_first() {
    let agent = Agent::start(Config::default()).await;
    let send = with_message_id(send_v1("later", None), "m-1");
    agent.post("/admin/busy", json!({"busy": true})).await;
    assert_eq!(agent.rpc(send.clone()).await.0, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(agent.get("/admin/stats").await, json!({"received": 0, "duplicates": 0}));
    agent.post("/admin/busy", json!({"busy": false})).await;
    assert_eq!(agent.rpc(send).await.0, StatusCode::OK);
    assert_eq!(agent.get("/admin/received").await, json!(["later"]));
    assert_eq!(agent.get("/admin/stats").await, json!({"received": 1, "duplicates": 0}));
    agent.stop().await;
}

#[tokio::test]
async fn messages_without_an_id_are_each_new_and_old_ids_are_forgotten() {
    let agent = Agent::start(Config { remembered_message_ids: 1, ..Config::default() }).await;
    let anonymous = send_v1_without_id("anonymous", None);
    let (_, first) = agent.rpc(anonymous.clone()).await;
    let (_, second) = agent.rpc(anonymous).await;
    assert_ne!(first["result"]["message"]["messageId"], second["result"]["message"]["messageId"]);

    let a = with_message_id(send_v1("a", None), "a");
    agent.rpc(a.clone()).await;
    agent.rpc(with_message_id(send_v1("b", None), "b")).await;
    // Only "b" is remembered now, so "a" is taken in as a new message.
    agent.rpc(a).await;
    assert_eq!(agent.get("/admin/received").await, json!(["anonymous", "anonymous", "a", "b", "a"]));
    assert_eq!(agent.get("/admin/stats").await, json!({"received": 5, "duplicates": 0}));
    agent.stop().await;
}

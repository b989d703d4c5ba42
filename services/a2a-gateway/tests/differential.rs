//! The same requests sent to an agent directly and through the gateway,
//! compared field by field: a caller must see what it would see talking to
//! the agent itself (SPEC GW-2). The agent is written with the official A2A
//! SDK (`a2a-sdk` 1.3.0), and the replies are read by an SSE reader that is
//! not the gateway's.
//!
//! Where the two may differ, and why:
//! - the text of `message` in errors the gateway writes itself (a request
//!   it refuses before any agent sees it): code, id, reason and the fields
//!   named are the same, the wording is ours;
//! - a message the gateway refuses names only the fault the gateway checks
//!   (its `messageId`), where the agent would list every fault it finds:
//!   the rest of a message is the agent's to judge;
//! - ids and timestamps the agent generates, which differ from one task to
//!   the next whoever sends the message.
//!
//! The three bindings are compared: JSON-RPC, HTTP+JSON (the agent serves
//! it under `/rest`, the gateway below the workspace's path) and gRPC. The
//! first two reach the gateway four ways, each answering alike: HTTP/1.1
//! and HTTP/2 (prior knowledge), in the clear and over TLS (HTTP/2 chosen
//! by ALPN).

use agentmesh_chassis::config::TlsConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{
    a2a::v1::{self as pb, a2a_service_client::A2aServiceClient, part::Content},
    registry::v1::Capabilities,
};
use agentmesh_testkit::{python::SdkAgent, tls::TestCa};
use bytes::Bytes;
use eventsource_stream::Eventsource;
use futures::StreamExt;
use http_body_util::{BodyExt, Full};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use serde_json::{Value, json};
use tonic::{Code, metadata::MetadataValue};
use tonic_types::StatusExt;

/// What an A2A endpoint answered, as a client reads it.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    status: u16,
    content_type: String,
    /// The JSON body, or the data of each server-sent event.
    body: Body,
}

#[derive(Debug, Clone, PartialEq)]
enum Body {
    Json(Value),
    Events(Vec<String>),
}

impl Answer {
    fn json(&self) -> &Value {
        match &self.body {
            Body::Json(value) => value,
            Body::Events(events) => panic!("events where JSON was expected: {events:?}"),
        }
    }

    fn events(&self) -> Vec<Value> {
        match &self.body {
            Body::Events(events) => events.iter().map(|data| serde_json::from_str(data).unwrap()).collect(),
            Body::Json(value) => panic!("JSON where events were expected: {value}"),
        }
    }
}

async fn post(url: &str, token: Option<&str>, body: &str) -> Answer {
    call(reqwest::Method::POST, url, token, body).await
}

async fn call(method: reqwest::Method, url: &str, token: Option<&str>, body: &str) -> Answer {
    exchange(&reqwest::Client::new(), method, url, token, Some("1.0"), body).await
}

async fn exchange(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    a2a_version: Option<&str>,
    body: &str,
) -> Answer {
    let mut request = client.request(method, url).header("content-type", "application/json").body(body.to_owned());
    if let Some(version) = a2a_version {
        request = request.header("A2A-Version", version);
    }
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
    answer(status, content_type, response.bytes_stream()).await
}

/// A reply's body read as JSON, or as events when it is an event stream.
async fn answer<E: std::error::Error>(
    status: u16,
    content_type: String,
    body: impl futures::Stream<Item = Result<Bytes, E>> + Unpin,
) -> Answer {
    let body = if content_type.starts_with("text/event-stream") {
        let events: Vec<_> = body.eventsource().collect().await;
        Body::Events(events.into_iter().map(|event| event.expect("a readable event").data).collect())
    } else {
        let chunks: Vec<_> = body.collect().await;
        let bytes: Vec<u8> = chunks.into_iter().flat_map(|chunk| chunk.expect("a readable body")).collect();
        Body::Json(
            serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes))),
        )
    };
    Answer { status, content_type, body }
}

/// One way to reach the gateway's A2A front: HTTP/1.1 or HTTP/2 (prior
/// knowledge in the clear, ALPN over TLS), and the workspace's URL there.
/// Every call has a connection of its own.
struct Front {
    name: &'static str,
    http2: bool,
    tls: Option<tokio_rustls::TlsConnector>,
    url: String,
}

impl Front {
    async fn call(&self, method: reqwest::Method, path: &str, token: &str, body: &str) -> Answer {
        let url: http::Uri = format!("{}{path}", self.url).parse().unwrap();
        let authority = url.authority().unwrap().clone();
        let mut request = http::Request::builder().method(method);
        // HTTP/2 names the target in pseudo-header fields; HTTP/1.1 in the
        // request line and Host.
        request =
            if self.http2 { request.uri(url.clone()) } else { request.uri(url.path_and_query().unwrap().as_str()) };
        let request = request
            .header("host", authority.as_str())
            .header("content-type", "application/json")
            .header("a2a-version", "1.0")
            .header("authorization", format!("Bearer {token}"))
            .body(Full::new(Bytes::from(body.to_owned())))
            .unwrap();
        let tcp = tokio::net::TcpStream::connect(authority.as_str()).await.unwrap();
        let response = match &self.tls {
            Some(connector) => {
                let name = rustls_pki_types::ServerName::try_from(authority.host().to_owned()).unwrap();
                let tls = connector.connect(name, tcp).await.unwrap_or_else(|e| panic!("{}: {e}", self.name));
                let alpn = tls.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                assert_eq!(alpn.as_deref(), Some(if self.http2 { &b"h2"[..] } else { b"http/1.1" }), "{}", self.name);
                self.send(tls, request).await
            }
            None => self.send(tcp, request).await,
        };
        let expected = if self.http2 { http::Version::HTTP_2 } else { http::Version::HTTP_11 };
        assert_eq!(response.version(), expected, "{}", self.name);
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"].to_str().unwrap().to_owned();
        answer(status, content_type, response.into_body().into_data_stream()).await
    }

    async fn send<S>(&self, io: S, request: http::Request<Full<Bytes>>) -> http::Response<hyper::body::Incoming>
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let io = hyper_util::rt::TokioIo::new(io);
        if self.http2 {
            let executor = hyper_util::rt::TokioExecutor::new();
            let (mut sender, connection) = hyper::client::conn::http2::handshake(executor, io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap_or_else(|e| panic!("{}: {e}", self.name))
        } else {
            let (mut sender, connection) = hyper::client::conn::http1::handshake(io).await.unwrap();
            tokio::spawn(connection);
            sender.send_request(request).await.unwrap_or_else(|e| panic!("{}: {e}", self.name))
        }
    }
}

/// The SDK agent, registered as a workspace, behind a gateway in the clear
/// and one serving TLS.
struct Pair {
    agent: SdkAgent,
    direct: String,
    /// The first of `fronts`: HTTP/1.1 in the clear.
    through: String,
    fronts: Vec<Front>,
    token: String,
    workspace_id: String,
    gateway: GatewayNode,
    _tls_gateway: GatewayNode,
    _tls_files: tempfile::TempDir,
    _registry: RegistryNode,
}

impl Pair {
    async fn start() -> Self {
        let registry = RegistryNode::start().await;
        let agent = SdkAgent::spawn(&[]).await;
        let workspace = registry.create("differential", None, 8).await;
        workspace.register(&agent.http, Capabilities::default(), None).await;
        workspace.heartbeat(0).await;
        let gateway = GatewayNode::start(&registry, |_| {}).await;
        let ca = TestCa::new();
        let tls_files = tempfile::tempdir().unwrap();
        let files = ca.write(tls_files.path(), &["127.0.0.1"]);
        let tls = TlsConfig { cert_file: files.cert_file, key_file: files.key_file };
        let tls_gateway = GatewayNode::start(&registry, |settings| settings.a2a_tls = Some(tls)).await;

        let clear = gateway.a2a_url(&workspace.id);
        let secure = tls_gateway.a2a_url(&workspace.id).replacen("http://", "https://", 1);
        // A client that trusts the test authority and offers `alpn`.
        let trusting = |alpn: &[u8]| {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap()).unwrap();
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![alpn.to_vec()];
            Some(tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)))
        };
        let fronts = vec![
            Front { name: "HTTP/1.1", http2: false, tls: None, url: clear.clone() },
            Front { name: "HTTP/2", http2: true, tls: None, url: clear.clone() },
            Front { name: "HTTP/1.1 over TLS", http2: false, tls: trusting(b"http/1.1"), url: secure.clone() },
            Front { name: "HTTP/2 over TLS", http2: true, tls: trusting(b"h2"), url: secure },
        ];
        Self {
            direct: format!("{}/", agent.http),
            through: clear,
            fronts,
            token: workspace.token.clone(),
            workspace_id: workspace.id.clone(),
            agent,
            gateway,
            _tls_gateway: tls_gateway,
            _tls_files: tls_files,
            _registry: registry,
        }
    }

    /// `body` sent to the agent and through every front, which must all
    /// answer alike; the direct answer and the first front's.
    async fn both(&self, body: &str) -> (Answer, Answer) {
        let direct = post(&self.direct, None, body).await;
        (direct, self.through_every_front(reqwest::Method::POST, "", body).await)
    }

    /// `method path` with `body` through every front; the first's answer,
    /// once the others were found alike.
    async fn through_every_front(&self, method: reqwest::Method, path: &str, body: &str) -> Answer {
        let mut answers = Vec::new();
        for front in &self.fronts {
            answers.push((front.name, front.call(method.clone(), path, &self.token, body).await));
        }
        let (_, first) = &answers[0];
        for (name, answer) in &answers[1..] {
            assert_eq!(alike(answer), alike(first), "{name} and {}: {method} {path} {body}", self.fronts[0].name);
        }
        answers.swap_remove(0).1
    }
}

/// An answer with the values the agent generates afresh for every task
/// replaced by their names, as two sends of one message compare.
fn alike(answer: &Answer) -> (u16, String, Value) {
    let body = match &answer.body {
        Body::Json(value) => without_generated(value.clone()),
        Body::Events(_) => Value::Array(answer.events().into_iter().map(without_generated).collect()),
    };
    (answer.status, answer.content_type.clone(), body)
}

/// An error answer with what may differ left out: the id, the code, the
/// reason and domain of each ErrorInfo, and the fields named.
fn error_essentials(answer: &Answer) -> Value {
    let body = answer.json();
    let (infos, fields) = named_in(&body["error"]["data"]);
    json!({
        "http": answer.status, "contentType": answer.content_type, "id": body["id"],
        "code": body["error"]["code"], "infos": infos, "fields": fields, "hasResult": body.get("result").is_some(),
    })
}

/// The reason and domain of each ErrorInfo among typed error `details`,
/// and the fields their violations name.
fn named_in(details: &Value) -> (Vec<Value>, Vec<Value>) {
    let details = details.as_array().cloned().unwrap_or_default();
    let infos = details.iter().filter(|d| d["reason"].is_string()).map(|d| json!([d["reason"], d["domain"]])).collect();
    let fields = details
        .iter()
        .flat_map(|d| d["fieldViolations"].as_array().cloned().unwrap_or_default())
        .map(|violation| violation["field"].clone())
        .collect();
    (infos, fields)
}

/// A reply with the values the agent generates afresh for every task
/// replaced by their names.
fn without_generated(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, field) in map.iter_mut() {
                    if matches!(key.as_str(), "id" | "taskId" | "contextId" | "messageId" | "timestamp") {
                        *field = json!(key);
                    } else {
                        walk(field);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn send(method: &str, id: Value, message_id: &str, text: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": {"message": {
        "messageId": message_id, "role": "ROLE_USER", "parts": [{"text": text}]}}})
    .to_string()
}

#[tokio::test]
async fn json_rpc_answers_through_the_gateway_are_the_agents() {
    let pair = Pair::start().await;

    // Refused before any agent sees it, by the gateway as by the agent.
    for malformed in [
        "not json",
        "[]",
        r#"{"jsonrpc":"1.0","id":4,"method":"GetTask","params":{"id":"t"}}"#,
        r#"{"jsonrpc":"2.0","id":"r"}"#,
        r#"{"jsonrpc":"2.0","id":"r","method":""}"#,
        r#"{"jsonrpc":"2.0","id":true,"method":"GetTask"}"#,
        r#"{"jsonrpc":"2.0","id":{},"method":"GetTask"}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"SendMessage","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"SendMessage","params":{"message":{"role":"ROLE_USER","parts":[{"text":"x"}]}}}"#,
        r#"{"jsonrpc":"2.0","id":6,"method":"SendMessage","params":{"message":{"messageId":"","role":"ROLE_USER","parts":[{"text":"x"}]}}}"#,
        r#"{"jsonrpc":"2.0","id":9,"method":"SendStreamingMessage","params":{"message":{"role":"ROLE_USER","parts":[{"text":"x"}]}}}"#,
    ] {
        let (direct, through) = pair.both(malformed).await;
        assert_eq!(error_essentials(&through), error_essentials(&direct), "{malformed}");
    }

    // The agent's own errors come back as it wrote them, streaming requests
    // it answers with an error included.
    for refused_by_the_agent in [
        r#"{"jsonrpc":"2.0","id":5,"method":"NoSuchMethod"}"#,
        r#"{"jsonrpc":"2.0","id":7,"method":"GetTask","params":{"id":"no-such-task"}}"#,
        r#"{"jsonrpc":"2.0","method":"GetTask","params":{"id":"no-such-task"}}"#,
        r#"{"jsonrpc":"2.0","id":8,"method":"CancelTask","params":{"id":"no-such-task"}}"#,
        r#"{"jsonrpc":"2.0","id":8,"method":"SubscribeToTask","params":{"id":"no-such-task"}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"GetExtendedAgentCard","params":{}}"#,
        r#"{"jsonrpc":"2.0","id":3,"method":"CreateTaskPushNotificationConfig","params":{"taskId":"t","url":"https://example.com/hook"}}"#,
    ] {
        let (direct, through) = pair.both(refused_by_the_agent).await;
        assert!(direct.json()["error"].is_object(), "{refused_by_the_agent}: {direct:?}");
        assert_eq!(through, direct, "{refused_by_the_agent}");
    }

    // A message answered, and streamed: the same task, the same events.
    let (direct, through) = pair.both(&send("SendMessage", json!(1), "m-1", "hello")).await;
    assert_eq!((direct.status, &direct.content_type), (through.status, &through.content_type));
    assert_eq!(direct.json()["result"]["task"]["status"]["state"], "TASK_STATE_COMPLETED", "{direct:?}");
    assert_eq!(without_generated(through.json().clone()), without_generated(direct.json().clone()));

    let (direct, through) = pair.both(&send("SendStreamingMessage", json!("s"), "m-2", "stream me")).await;
    assert_eq!((direct.status, &direct.content_type), (through.status, &through.content_type));
    let (direct_events, through_events) = (direct.events(), through.events());
    assert!(direct_events.len() >= 3, "a task and its updates: {direct_events:?}");
    assert_eq!(
        through_events.into_iter().map(without_generated).collect::<Vec<_>>(),
        direct_events.into_iter().map(without_generated).collect::<Vec<_>>()
    );

    // Without A2A-Version a 1.0 request is the agent's to judge, as directly.
    let unversioned = send("SendMessage", json!(12), "m-5", "which version?");
    let client = reqwest::Client::new();
    let direct = exchange(&client, reqwest::Method::POST, &pair.direct, None, None, &unversioned).await;
    let through = exchange(&client, reqwest::Method::POST, &pair.through, Some(&pair.token), None, &unversioned).await;
    assert_eq!(direct.json()["error"]["code"], -32009, "{direct:?}");
    assert_eq!(through, direct);

    // A task of the agent's, queried each way: the same answer.
    let task_of = |answer: &Answer| answer.json()["result"]["task"]["id"].as_str().unwrap().to_owned();
    let direct_task = task_of(&post(&pair.direct, None, &send("SendMessage", json!(2), "m-3", "keep")).await);
    let through_task =
        task_of(&post(&pair.through, Some(&pair.token), &send("SendMessage", json!(2), "m-4", "keep")).await);
    let get = |task: &str| json!({"jsonrpc": "2.0", "id": 11, "method": "GetTask", "params": {"id": task}}).to_string();
    let direct = post(&pair.direct, None, &get(&direct_task)).await;
    let through = post(&pair.through, Some(&pair.token), &get(&through_task)).await;
    assert_eq!(direct.json()["result"]["id"], direct_task.as_str());
    assert_eq!(without_generated(through.json().clone()), without_generated(direct.json().clone()));
    pair.agent.stop().await;
}

#[tokio::test]
async fn grpc_answers_through_the_gateway_carry_the_agents_status_and_reason() {
    let pair = Pair::start().await;
    let agent_address = pair.agent.grpc.clone().expect("the agent serves gRPC");
    let mut direct = A2aServiceClient::connect(format!("http://{agent_address}")).await.unwrap();
    let mut through = pair.gateway.a2a();
    let tenant = pair.workspace_id.clone();

    /// The status's code and the reason and domain of its ErrorInfo.
    fn essentials(status: &tonic::Status) -> (Code, String, String, Vec<String>) {
        let info = status.get_details_error_info().unwrap_or_else(|| panic!("an ErrorInfo in {status:?}"));
        let fields = status.get_details_bad_request().map(|r| r.field_violations).unwrap_or_default();
        (status.code(), info.reason, info.domain, fields.into_iter().map(|v| v.field).collect())
    }
    fn versioned<T>(message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.metadata_mut().insert("a2a-version", MetadataValue::from_static("1.0"));
        request
    }
    let message = |message_id: &str| pb::Message {
        message_id: message_id.to_owned(),
        role: pb::Role::User.into(),
        parts: vec![pb::Part { content: Some(Content::Text("hello".into())), ..Default::default() }],
        ..Default::default()
    };

    let get = |tenant: &str| pb::GetTaskRequest {
        tenant: tenant.to_owned(),
        id: "no-such-task".into(),
        ..Default::default()
    };
    let (d, t) = (direct.get_task(versioned(get(""))).await, through.get_task(versioned(get(&tenant))).await);
    assert_eq!(essentials(&t.unwrap_err()), essentials(&d.unwrap_err()));

    let cancel = |tenant: &str| pb::CancelTaskRequest {
        tenant: tenant.to_owned(),
        id: "no-such-task".into(),
        ..Default::default()
    };
    let (d, t) =
        (direct.cancel_task(versioned(cancel(""))).await, through.cancel_task(versioned(cancel(&tenant))).await);
    assert_eq!(essentials(&t.unwrap_err()), essentials(&d.unwrap_err()));

    // A message without its id, refused by the gateway as by the agent.
    let send = |tenant: &str, message_id: &str| pb::SendMessageRequest {
        tenant: tenant.to_owned(),
        message: Some(message(message_id)),
        ..Default::default()
    };
    let d = direct.send_message(versioned(send("", ""))).await.unwrap_err();
    let t = through.send_message(versioned(send(&tenant, ""))).await.unwrap_err();
    assert_eq!(essentials(&t), essentials(&d));

    // An error in place of a stream is the call's status.
    let subscribe = |tenant: &str| pb::SubscribeToTaskRequest { tenant: tenant.to_owned(), id: "no-such-task".into() };
    let d = match direct.subscribe_to_task(versioned(subscribe(""))).await {
        Ok(stream) => stream.into_inner().next().await.expect("an answer").unwrap_err(),
        Err(status) => status,
    };
    let Err(t) = through.subscribe_to_task(versioned(subscribe(&tenant))).await else {
        panic!("an error, not a stream")
    };
    assert_eq!(essentials(&t), essentials(&d));

    // An operation the agent does not support.
    let push = |tenant: &str| pb::TaskPushNotificationConfig {
        tenant: tenant.to_owned(),
        task_id: "t".into(),
        url: "https://example.com/hook".into(),
        ..Default::default()
    };
    let d = direct.create_task_push_notification_config(versioned(push(""))).await.unwrap_err();
    let t = through.create_task_push_notification_config(versioned(push(&tenant))).await.unwrap_err();
    assert_eq!(essentials(&d).0, Code::FailedPrecondition);
    assert_eq!(essentials(&t), essentials(&d));

    // A message answered: the same task either way.
    let d = direct.send_message(versioned(send("", "g-1"))).await.unwrap().into_inner();
    let t = through.send_message(versioned(send(&tenant, "g-2"))).await.unwrap().into_inner();
    let state = |reply: &pb::SendMessageResponse| match &reply.payload {
        Some(pb::send_message_response::Payload::Task(task)) => task.status.as_ref().map(|s| s.state),
        other => panic!("a task, not {other:?}"),
    };
    assert_eq!(state(&t), state(&d));
    assert_eq!(state(&d), Some(pb::TaskState::Completed.into()));
    pair.agent.stop().await;
}

/// An HTTP+JSON error answer with what may differ left out: the statuses,
/// the reason and domain of each ErrorInfo, and the fields named.
fn status_essentials(answer: &Answer) -> Value {
    let error = &answer.json()["error"];
    let (infos, fields) = named_in(&error["details"]);
    json!({
        "http": answer.status, "contentType": answer.content_type, "code": error["code"], "status": error["status"],
        "infos": infos, "fields": fields,
    })
}

#[tokio::test]
async fn http_json_answers_through_the_gateway_are_the_agents() {
    use reqwest::Method;
    let pair = Pair::start().await;
    let direct = format!("{}/rest", pair.agent.http);
    let both = |method: Method, path: &str, body: &str| {
        let (direct, path, body, pair) = (format!("{direct}{path}"), path.to_owned(), body.to_owned(), &pair);
        async move {
            let answer = call(method.clone(), &direct, None, &body).await;
            (answer, pair.through_every_front(method, &path, &body).await)
        }
    };

    // Refused before any agent sees it.
    let no_message_id = r#"{"message":{"role":"ROLE_USER","parts":[{"text":"x"}]}}"#;
    for (path, body) in
        [("/message:send", no_message_id), ("/message:stream", no_message_id), ("/message:send", "nope")]
    {
        let (direct, through) = both(Method::POST, path, body).await;
        assert_eq!(status_essentials(&through), status_essentials(&direct), "{path} {body}");
    }
    // The agent's own errors, as it wrote them.
    for (method, path, body) in [
        (Method::GET, "/tasks/no-such-task", ""),
        (Method::POST, "/tasks/no-such-task:cancel", ""),
        (Method::GET, "/tasks/no-such-task:subscribe", ""),
        (Method::GET, "/extendedAgentCard", ""),
        (Method::POST, "/tasks/t/pushNotificationConfigs", r#"{"url":"https://example.com/hook"}"#),
        (Method::GET, "/tasks/t/pushNotificationConfigs/c", ""),
        (Method::DELETE, "/tasks/t/pushNotificationConfigs/c", ""),
    ] {
        let (direct, through) = both(method, path, body).await;
        assert!(direct.status >= 400, "{path}: {direct:?}");
        assert_eq!(through, direct, "{path}");
    }

    // A message answered, streamed, and its task queried: the same answers.
    let message =
        |id: &str| json!({"message": {"messageId": id, "role": "ROLE_USER", "parts": [{"text": "rest"}]}}).to_string();
    let direct_sent = call(Method::POST, &format!("{direct}/message:send"), None, &message("r-1")).await;
    let through_sent =
        call(Method::POST, &format!("{}/message:send", pair.through), Some(&pair.token), &message("r-2")).await;
    assert_eq!((direct_sent.status, direct_sent.content_type.as_str()), (200, "application/a2a+json"));
    assert_eq!((through_sent.status, &through_sent.content_type), (direct_sent.status, &direct_sent.content_type));
    assert_eq!(without_generated(through_sent.json().clone()), without_generated(direct_sent.json().clone()));

    let (direct_stream, through_stream) = both(Method::POST, "/message:stream", &message("r-3")).await;
    let events = direct_stream.events();
    assert!(events.len() >= 3 && events[0]["task"].is_object(), "{events:?}");
    assert_eq!(
        through_stream.events().into_iter().map(without_generated).collect::<Vec<_>>(),
        events.into_iter().map(without_generated).collect::<Vec<_>>()
    );

    let task = |sent: &Answer| sent.json()["task"]["id"].as_str().unwrap().to_owned();
    let direct_task = call(Method::GET, &format!("{direct}/tasks/{}", task(&direct_sent)), None, "").await;
    let through_task =
        call(Method::GET, &format!("{}/tasks/{}", pair.through, task(&through_sent)), Some(&pair.token), "").await;
    assert_eq!(direct_task.json()["id"], task(&direct_sent).as_str());
    assert_eq!(without_generated(through_task.json().clone()), without_generated(direct_task.json().clone()));
    // The agent's task list, the same whichever way it is asked.
    let (direct_list, through_list) = both(Method::GET, "/tasks?pageSize=50&includeArtifacts=true", "").await;
    // Sent directly twice, through the first front once, and streamed
    // through each of the four.
    assert_eq!(direct_list.json()["tasks"].as_array().map(Vec::len), Some(7), "{direct_list:?}");
    assert_eq!(through_list, direct_list);
    pair.agent.stop().await;
}

/// An agent whose events are pretty-printed JSON, each line of an event's
/// data under a `data:` field of its own, as the event-stream format allows.
async fn pretty_printing_agent() -> String {
    async fn stream(axum::Json(request): axum::Json<Value>) -> impl axum::response::IntoResponse {
        let mut body = String::new();
        for state in ["TASK_STATE_WORKING", "TASK_STATE_COMPLETED"] {
            let event = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"statusUpdate": {
                "taskId": "t", "contextId": "c", "status": {"state": state}}}});
            for line in serde_json::to_string_pretty(&event).unwrap().lines() {
                body.push_str(&format!("data: {line}\r\n"));
            }
            body.push_str("\r\n");
        }
        ([("content-type", "text/event-stream; charset=utf-8")], body)
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/", axum::routing::post(stream));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

#[tokio::test]
async fn events_whose_data_spans_several_lines_arrive_whole() {
    let registry = RegistryNode::start().await;
    let agent = pretty_printing_agent().await;
    let workspace = registry.create("pretty", None, 8).await;
    workspace.register(&agent, Capabilities::default(), None).await;
    workspace.heartbeat(0).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;

    let request = send("SendStreamingMessage", json!(1), "m-1", "hi");
    let direct = post(&agent, None, &request).await;
    let through = post(&gateway.a2a_url(&workspace.id), Some(&workspace.token), &request).await;
    let events = direct.events();
    assert_eq!(events.len(), 2, "{direct:?}");
    assert_eq!(events[1]["result"]["statusUpdate"]["status"]["state"], "TASK_STATE_COMPLETED");
    assert_eq!(through.body, direct.body, "the same data, line for line");
}

//! One trace per message across the mesh (SPEC OBS-1): the four production
//! binaries export their spans over OTLP to a collector in this test, and
//! each flow is one trace whose spans link service to service:
//!
//! - an A2A message through the gateway's JSON-RPC front to the agent;
//! - a scheduled run, scheduler → gateway (gRPC) → agent;
//! - a workspace created through the provisioner, provisioner → registry.
//!
//! The agent is this test's own HTTP server, which records the
//! `traceparent` each request brings. Each binary also serves its metrics,
//! read once the flows are done: the production binaries' `/metrics`.

use std::{
    collections::HashMap,
    process::{Child, Command},
    sync::{Arc, Mutex},
    time::Duration,
};

use agentmesh_proto::{
    provisioner::v1::{CreateWorkspaceRequest, WorkspaceSpec, provisioner_service_client::ProvisionerServiceClient},
    registry::v1::{HeartbeatRequest, RegisterRequest, RuntimeKind, registry_service_client::RegistryServiceClient},
    scheduler::v1::{CreateScheduleRequest, scheduler_service_client::SchedulerServiceClient},
};
use agentmesh_testkit::{
    binary::spawn_until_ready,
    eventually,
    images::static_binaries,
    metrics::{sample, scrape},
    otlp::{Collector, Span},
};
use axum::{Router, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};

const OPERATOR_TOKEN: &str = "operator-token-traces-0123456789";
const SERVICE_TOKEN: &str = "service-token-traces-0123456789";

/// The chain of spans from `span_id` up to its trace's root, each hop's
/// service and name.
fn ancestry(spans: &[Span], span_id: &str) -> Vec<Span> {
    let by_id: HashMap<&str, &Span> = spans.iter().map(|s| (s.span_id.as_str(), s)).collect();
    let mut chain = Vec::new();
    let mut next = Some(span_id.to_owned());
    while let Some(id) = next.filter(|id| !id.is_empty() && id != "0000000000000000") {
        let span = by_id.get(id.as_str()).unwrap_or_else(|| panic!("span {id} was not exported; chain {chain:?}"));
        chain.push((*span).clone());
        next = Some(span.parent_span_id.clone());
    }
    chain
}

/// The agent: records each request's `traceparent` and text, and answers.
#[derive(Clone, Default)]
struct Agent {
    seen: Arc<Mutex<Vec<(String, String)>>>,
}

async fn answer(State(agent): State<Agent>, headers: HeaderMap, body: String) -> axum::response::Response {
    use axum::response::IntoResponse;
    let traceparent = headers.get("traceparent").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let request: Value = serde_json::from_str(&body).unwrap();
    let text = request["params"]["message"]["parts"][0]["text"].as_str().unwrap_or_default().to_owned();
    agent.seen.lock().unwrap().push((text, traceparent));
    let reply = json!({"jsonrpc": "2.0", "id": request["id"], "result": {"message": {"messageId": "r",
        "role": "ROLE_AGENT", "parts": [{"text": "ok"}]}}});
    ([(axum::http::header::CONTENT_TYPE, "application/json")], reply.to_string()).into_response()
}

impl Agent {
    /// The trace id and parent span id the message `text` arrived with.
    async fn traceparent_of(&self, text: &str) -> (String, String) {
        let traceparent = eventually(Duration::from_secs(30), || async {
            let seen = self.seen.lock().unwrap();
            seen.iter().find(|(t, _)| t == text).map(|(_, traceparent)| traceparent.clone())
        })
        .await;
        let fields: Vec<&str> = traceparent.split('-').collect();
        assert_eq!(fields.len(), 4, "a W3C traceparent: {traceparent:?}");
        (fields[1].to_owned(), fields[2].to_owned())
    }
}

struct Binary {
    child: Child,
    address: String,
    metrics: std::net::SocketAddr,
    _data: tempfile::TempDir,
}

fn start(program: &std::path::Path, otlp: &str, env: &[(&str, String)], config: Option<&str>) -> Binary {
    let data = tempfile::tempdir().unwrap();
    let metrics = std::net::SocketAddr::from(([127, 0, 0, 1], agentmesh_testkit::free_port()));
    let mut command = Command::new(program);
    command.args(["--listen", "127.0.0.1:0", "--data-dir"]).arg(data.path());
    if let Some(config) = config {
        let path = data.path().join("config.toml");
        std::fs::write(&path, config).unwrap();
        command.arg("--config").arg(path);
    }
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("AGENTMESH_METRICS_LISTEN", metrics.to_string())
        .env("AGENTMESH_AUTH__OPERATOR_TOKENS", format!("[\"{OPERATOR_TOKEN}\"]"))
        .env("AGENTMESH_AUTH__SERVICE_TOKENS", format!("[\"{SERVICE_TOKEN}\"]"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())));
    let (child, address) = spawn_until_ready(command);
    Binary { child, address: format!("http://{address}"), metrics, _data: data }
}

/// SIGTERM, and a clean exit: what flushes the span exporter.
fn stop(mut binary: Binary) {
    let stopped = Command::new("kill").args(["-TERM", &binary.child.id().to_string()]).status().unwrap();
    assert!(stopped.success());
    assert!(binary.child.wait().unwrap().success());
}

fn authorized<T>(message: T, token: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.metadata_mut().insert("authorization", format!("Bearer {token}").parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_a_scheduled_run_and_a_create_are_each_one_trace_across_services() {
    let collector = Collector::default();
    let otlp = collector.serve().await;
    let agent = Agent::default();
    let agent_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let agent_url = format!("http://{}/", agent_listener.local_addr().unwrap());
    let router = Router::new().route("/", post(answer)).with_state(agent.clone());
    tokio::spawn(async move { axum::serve(agent_listener, router).await });

    let binaries = tokio::task::spawn_blocking(static_binaries).await.unwrap();
    let (registry, provisioner, gateway, scheduler, a2a) = tokio::task::spawn_blocking({
        let otlp = otlp.clone();
        move || {
            let registry =
                start(&binaries.registry, &otlp, &[("AGENTMESH_REGISTRY__NETWORK_MODE", "dev".into())], None);
            let provisioner = start(
                &binaries.provisioner,
                &otlp,
                &[("AGENTMESH_PROVISIONER__REGISTRY_ADDRESS", registry.address.clone())],
                Some("[[provisioner.runtimes]]\nkind = \"external\"\nname = \"external\"\ndefault = true\n"),
            );
            let a2a = format!("127.0.0.1:{}", agentmesh_testkit::free_port());
            let gateway = start(
                &binaries.gateway,
                &otlp,
                &[
                    ("AGENTMESH_GATEWAY__REGISTRY_ADDRESS", registry.address.clone()),
                    ("AGENTMESH_GATEWAY__PROVISIONER_ADDRESS", provisioner.address.clone()),
                    ("AGENTMESH_GATEWAY__NETWORK_MODE", "dev".into()),
                    ("AGENTMESH_GATEWAY__A2A_LISTEN", a2a.clone()),
                ],
                None,
            );
            let scheduler = start(
                &binaries.scheduler,
                &otlp,
                &[
                    ("AGENTMESH_SCHEDULER__REGISTRY_ADDRESS", registry.address.clone()),
                    ("AGENTMESH_SCHEDULER__GATEWAY_ADDRESS", gateway.address.clone()),
                ],
                None,
            );
            (registry, provisioner, gateway, scheduler, a2a)
        }
    })
    .await
    .unwrap();

    // Created through the provisioner, with no trace of the caller's.
    let mut provisioning = ProvisionerServiceClient::connect(provisioner.address.clone()).await.unwrap();
    let spec = WorkspaceSpec {
        name: "traced".into(),
        runtime_kind: RuntimeKind::External as i32,
        runtime_instance: "external".into(),
        ..Default::default()
    };
    let created = provisioning
        .create_workspace(authorized(CreateWorkspaceRequest { spec: Some(spec) }, OPERATOR_TOKEN))
        .await
        .unwrap()
        .into_inner();
    let connection = created.connection.unwrap();
    let workspace_id = connection.workspace_id.clone();
    let mut registry_client = RegistryServiceClient::connect(registry.address.clone()).await.unwrap();
    let card = json!({"name": "traced", "description": "records traces", "version": "1.0.0", "capabilities": {},
        "defaultInputModes": ["text/plain"], "defaultOutputModes": ["text/plain"], "skills": [],
        "supportedInterfaces": [{"url": agent_url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}]});
    let register = RegisterRequest {
        workspace_id: workspace_id.clone(),
        url: agent_url.clone(),
        agent_card_json: card.to_string(),
        runtime_metadata: None,
    };
    registry_client.register(authorized(register, &connection.token)).await.unwrap();
    let heartbeat = HeartbeatRequest { workspace_id: workspace_id.clone(), ..Default::default() };
    registry_client.heartbeat(authorized(heartbeat, &connection.token)).await.unwrap();

    // A message on the A2A front, with no trace of the caller's: the gateway
    // begins the trace. Sent once the gateway has seen the workspace online.
    let url = format!("http://{a2a}/a2a/{workspace_id}");
    let http = reqwest::Client::new();
    eventually(Duration::from_secs(30), || async {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": {"message": {
            "messageId": "front-1", "role": "ROLE_USER", "parts": [{"text": "through the front"}]}}});
        let reply = http.post(&url).bearer_auth(OPERATOR_TOKEN).header("A2A-Version", "1.0").json(&body).send().await;
        let reply: Value = reply.ok()?.json().await.ok()?;
        reply.get("result").and_then(|r| r.get("message")).map(|_| ())
    })
    .await;
    let (front_trace, front_parent) = agent.traceparent_of("through the front").await;

    // A run of a schedule firing every second.
    let mut scheduling = SchedulerServiceClient::connect(scheduler.address.clone()).await.unwrap();
    let schedule = CreateScheduleRequest {
        workspace_id: workspace_id.clone(),
        name: "every-second".into(),
        cron_expression: "* * * * * *".into(),
        message_text: "on schedule".into(),
        ..Default::default()
    };
    scheduling.create_schedule(authorized(schedule, OPERATOR_TOKEN)).await.unwrap();
    let (scheduled_trace, scheduled_parent) = agent.traceparent_of("on schedule").await;

    // What each binary counted of the same flows.
    let counted = [
        (&registry, "registry", "agentmesh_registry_heartbeats_total", vec![]),
        (
            &provisioner,
            "provisioner",
            "agentmesh_grpc_server_handled_total",
            vec![("grpc_method", "CreateWorkspace"), ("grpc_code", "OK")],
        ),
        (&gateway, "a2a-gateway", "agentmesh_gateway_dispatches_total", vec![("outcome", "delivered")]),
        (&scheduler, "scheduler", "agentmesh_scheduler_fire_lag_seconds_count", vec![]),
    ];
    for (binary, service, metric, labels) in counted {
        let text = scrape(binary.metrics).await;
        assert_eq!(sample(&text, "agentmesh_build_info", &[("service", service)]), Some(1.0), "{service}");
        assert_eq!(sample(&text, "agentmesh_serving", &[]), Some(1.0), "{service}");
        assert!(sample(&text, metric, &labels).is_some_and(|n| n >= 1.0), "{service}: {metric} in\n{text}");
    }

    for binary in [scheduler, gateway, provisioner, registry] {
        tokio::task::spawn_blocking(move || stop(binary)).await.unwrap();
    }
    let spans = collector.spans();

    // The front: the agent's parent span is the gateway's, in a trace the
    // gateway began.
    let chain = ancestry(&spans, &front_parent);
    assert!(chain.iter().all(|s| s.trace_id == front_trace), "{chain:?}");
    let root = chain.last().unwrap();
    assert_eq!((root.service.as_str(), root.name.as_str()), ("agentmesh-a2a-gateway", "a2a.rpc"), "{chain:?}");

    // The scheduled run: the agent's parent is the gateway's gRPC span, whose
    // parent is the scheduler's firing of the run.
    let chain = ancestry(&spans, &scheduled_parent);
    assert!(chain.iter().all(|s| s.trace_id == scheduled_trace), "{chain:?}");
    let hops: Vec<(&str, &str)> = chain.iter().map(|s| (s.service.as_str(), s.name.as_str())).collect();
    assert!(
        hops.contains(&("agentmesh-a2a-gateway", "/lf.a2a.v1.A2AService/SendMessage")),
        "a gateway span for the gRPC call: {hops:?}"
    );
    assert_eq!(*hops.last().unwrap(), ("agentmesh-scheduler", "schedule.fire"), "{hops:?}");
    assert_ne!(scheduled_trace, front_trace);

    // The create: the registry's span for CreateWorkspace descends from the
    // provisioner's.
    let registry_create = spans
        .iter()
        .find(|s| {
            s.service == "agentmesh-registry" && s.name == "/agentmesh.registry.v1.RegistryService/CreateWorkspace"
        })
        .unwrap_or_else(|| panic!("no registry CreateWorkspace span among {spans:?}"));
    let chain = ancestry(&spans, &registry_create.span_id);
    let root = chain.last().unwrap();
    assert_eq!(
        (root.service.as_str(), root.name.as_str()),
        ("agentmesh-provisioner", "/agentmesh.provisioner.v1.ProvisionerService/CreateWorkspace"),
        "{chain:?}"
    );
    assert!(chain.iter().all(|s| s.trace_id == registry_create.trace_id));
}

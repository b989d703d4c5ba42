//! The A2A front over HTTP (GW-1): JSON-RPC 2.0 per workspace at
//! `POST /a2a/{workspace_id}`, the HTTP+JSON binding below it ([`rest`]),
//! streaming over SSE, and the workspace's agent card at
//! `/a2a/{workspace_id}/.well-known/agent-card.json`, rewritten so that an
//! official A2A client that reads it keeps talking to the gateway.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use agentmesh_chassis::{auth::Authenticator, telemetry};
use bytes::Bytes;
use futures::{StreamExt, stream::BoxStream};
use http::StatusCode;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    error::GatewayError,
    front::{Reply, Respond},
    gateway::{
        AgentAnswer, Dispatched, Gateway, Inbound, Sender, Streamed, Subscribed, parse_expires_in, parse_priority,
    },
    jsonrpc::{self, Envelope, Method, Refused, RpcError},
    rest::{self, NoRoute},
    sse,
    wire::{RequestHead, RequestMethod},
};

/// The largest request the gateway accepts (GW-2).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The A2A front's requests, routed and answered.
pub struct Front {
    gateway: Arc<Gateway>,
    authenticator: Authenticator,
}

impl Front {
    pub fn new(gateway: Arc<Gateway>, authenticator: Authenticator) -> Self {
        Self { gateway, authenticator }
    }

    /// Answers one request: JSON-RPC at `POST /a2a/{workspace_id}`, the
    /// agent card under `/a2a/{workspace_id}/.well-known/`, and `/healthz`.
    async fn route(&self, request: &RequestHead, body: Bytes) -> Reply {
        let started = Instant::now();
        let readable = matches!(request.method, RequestMethod::Get | RequestMethod::Head);
        let path = request.path();
        let mut binding = "jsonrpc";
        let (method, reply) = if path == "/healthz" {
            ("healthz", if readable { Reply::text(StatusCode::OK, "ok") } else { method_not_allowed("GET, HEAD") })
        } else if let Some(rest) = path.strip_prefix("/a2a/") {
            match rest.split_once('/') {
                None if request.method == RequestMethod::Post => self.rpc(rest, request, body).await,
                None => ("unknown", method_not_allowed("POST")),
                Some((workspace_id, ".well-known/agent-card.json" | ".well-known/agent.json")) if readable => {
                    ("agent_card", Box::pin(self.card(workspace_id, request)).await)
                }
                Some((_, ".well-known/agent-card.json" | ".well-known/agent.json")) => {
                    ("agent_card", method_not_allowed("GET, HEAD"))
                }
                Some((workspace_id, operation)) => {
                    binding = "http_json";
                    Box::pin(self.rest(workspace_id, operation, request, body)).await
                }
            }
        } else {
            ("unknown", not_found())
        };
        self.gateway.metrics().answered(binding, method, reply.status.as_u16(), started);
        reply
    }

    /// A JSON-RPC request's reply, and its method as metrics name it.
    async fn rpc(&self, workspace_id: &str, request: &RequestHead, body: Bytes) -> (&'static str, Reply) {
        if !telemetry::is_exporting() {
            // The request's span exists for trace export; without an
            // exporter it would only cost formatting on every message, and
            // the gateway's log lines name their workspace themselves.
            return self.answer(workspace_id, request, body).await;
        }
        let method = jsonrpc::method_name(&body).unwrap_or_default();
        let span = tracing::info_span!(
            "a2a.rpc",
            otel.kind = "server",
            workspace_id,
            method,
            trace_id = tracing::field::Empty
        );
        telemetry::continue_trace_with(&span, |name| request.header(name));
        telemetry::record_trace_id(&span);
        Box::pin(self.answer(workspace_id, request, body)).instrument(span).await
    }

    async fn answer(&self, workspace_id: &str, request: &RequestHead, body: Bytes) -> (&'static str, Reply) {
        let envelope = match Envelope::parse(body) {
            Ok(envelope) => envelope,
            // JSON-RPC over HTTP answers a request it could read with HTTP
            // 200, as the A2A SDKs' servers do: the error is in the body.
            Err(Refused { id, error }) => return ("invalid", rpc_error(StatusCode::OK, &id, error, None)),
        };
        let (id, method) = (envelope.id().clone(), envelope.method.label());
        // The caller's version, or none: the agent judges the request as it
        // would judge it sent directly.
        let a2a_version = request.header("a2a-version").map(str::to_owned);
        match self.dispatch(workspace_id, request, envelope, a2a_version).await {
            Ok(outcome) => (method, json_rpc_reply(outcome)),
            Err(error) => (method, gateway_error(&id, &error)),
        }
    }

    /// A request of the HTTP+JSON binding: routed to the JSON-RPC request it
    /// stands for, dispatched as such, and answered in its own form.
    async fn rest(
        &self,
        workspace_id: &str,
        operation: &str,
        request: &RequestHead,
        body: Bytes,
    ) -> (&'static str, Reply) {
        let call = match rest::route(request.method, operation, request.query(), &body) {
            Ok(call) => call,
            Err(NoRoute::NotFound) => return ("unknown", not_found()),
            Err(NoRoute::MethodNotAllowed(allow)) => return ("unknown", method_not_allowed(allow)),
            Err(NoRoute::BadBody(problem)) => {
                let body = rest::refusal(StatusCode::BAD_REQUEST, tonic::Code::InvalidArgument, &problem);
                return ("invalid", Reply::json(StatusCode::BAD_REQUEST, body));
            }
        };
        let envelope = match Envelope::from_request(call.json_rpc_request()) {
            Ok(envelope) => envelope,
            Err(Refused { error, .. }) => {
                let (status, body) = rest::error_reply(&error.into_object());
                return ("invalid", Reply::json(status, body));
            }
        };
        let method = envelope.method.label();
        // The request the agent gets is 1.0 JSON-RPC, made here.
        let a2a_version = Some(request.header("a2a-version").unwrap_or("1.0").to_owned());
        match self.dispatch(workspace_id, request, envelope, a2a_version).await {
            Ok(outcome) => (method, rest_reply(outcome)),
            Err(error) => {
                let (status, body) = rest::gateway_error(&error);
                let retry_after = error.retry_after().map(|after| after.as_secs().max(1));
                (method, Reply { retry_after, ..Reply::json(status, body) })
            }
        }
    }

    /// Dispatches a checked request of either HTTP binding.
    async fn dispatch(
        &self,
        workspace_id: &str,
        request: &RequestHead,
        envelope: Envelope,
        a2a_version: Option<String>,
    ) -> Result<Outcome, GatewayError> {
        let workspace_id = parse_workspace(workspace_id)?;
        let sender = self.sender(request).await?;
        let method = envelope.method;
        let inbound = Inbound {
            sender,
            workspace_id,
            traceparent: telemetry::current_traceparent().or_else(|| request.header("traceparent").map(str::to_owned)),
            priority: parse_priority(request.header("x-agentmesh-priority"))?,
            expires_in: parse_expires_in(request.header("x-agentmesh-expires-in"))?,
            a2a_version,
            envelope,
        };
        if method == Method::Send {
            return self.send_message(inbound).await;
        }
        // Boxed: the other methods' state would otherwise enlarge, and be
        // copied with, the future of every message sent.
        Box::pin(self.handle_other(inbound)).await
    }

    async fn send_message(&self, inbound: Inbound) -> Result<Outcome, GatewayError> {
        let (id, flavor) = (inbound.envelope.id().clone(), inbound.envelope.flavor);
        // Kept for the reply the gateway writes itself, which names the context.
        let body = inbound.envelope.body();
        match self.gateway.send(inbound).await? {
            Dispatched::Replied(reply) => Ok(Outcome::Response(reply)),
            Dispatched::Queued(queued) => {
                let task = jsonrpc::queued_task(flavor, &queued, jsonrpc::context_id(&body).as_deref());
                Ok(response(&jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task))))
            }
        }
    }

    /// Every method but sending a message (which it hands to
    /// [`Front::send_message`]).
    async fn handle_other(&self, inbound: Inbound) -> Result<Outcome, GatewayError> {
        let (id, flavor, workspace_id) = (inbound.envelope.id().clone(), inbound.envelope.flavor, inbound.workspace_id);
        match inbound.envelope.method {
            Method::Stream => {
                let context_id = inbound.envelope.context_id();
                match self.gateway.stream(inbound).await? {
                    Streamed::Agent(answer) => Ok(relayed(answer)),
                    Streamed::Queued(queued) => {
                        let task = jsonrpc::queued_task(flavor, &queued, context_id.as_deref());
                        let event =
                            Bytes::from(jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task)).to_string());
                        Ok(Outcome::Events(futures::stream::once(async move { Some(event) }).boxed()))
                    }
                }
            }
            Method::Subscribe => {
                let task_id = inbound.envelope.task_id().unwrap_or_default();
                match self.gateway.subscribe(inbound).await? {
                    Subscribed::Agent(answer) => Ok(relayed(answer)),
                    Subscribed::QueueItem(updates) => {
                        let events = ReceiverStream::new(updates).map(move |item| {
                            let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                            Bytes::from(jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task)).to_string())
                        });
                        Ok(Outcome::Events(kept_alive(events, KEEP_ALIVE).boxed()))
                    }
                }
            }
            Method::GetTask => {
                let task_id = inbound.envelope.task_id().unwrap_or_default();
                self.gateway.authorize(&inbound.sender, workspace_id).await?;
                match self.gateway.queued_task(workspace_id, &task_id).await? {
                    Some(item) => {
                        let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                        Ok(response(&jsonrpc::result_response(&id, task)))
                    }
                    None => Ok(Outcome::Response(self.gateway.forward(inbound).await?)),
                }
            }
            Method::CancelTask => {
                let task_id = inbound.envelope.task_id().unwrap_or_default();
                match self.gateway.cancel_queued(&inbound.sender, workspace_id, &task_id).await? {
                    Some(item) => {
                        let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                        Ok(response(&jsonrpc::result_response(&id, task)))
                    }
                    None => Ok(Outcome::Response(self.gateway.forward(inbound).await?)),
                }
            }
            Method::Send => self.send_message(inbound).await,
            Method::Other => Ok(Outcome::Response(self.gateway.forward(inbound).await?)),
        }
    }

    async fn sender(&self, request: &RequestHead) -> Result<Sender, GatewayError> {
        let caller = self.authenticator.classify_authorization(request.header("authorization"));
        self.gateway.identify(caller, request.header("x-agentmesh-caller")).await
    }

    async fn card(&self, workspace_id: &str, request: &RequestHead) -> Reply {
        let result = async {
            let workspace_id = parse_workspace(workspace_id)?;
            let sender = self.sender(request).await?;
            let target = self.gateway.authorize(&sender, workspace_id).await?;
            let settings = self.gateway.settings();
            Ok::<_, GatewayError>(rewrite_card(
                &target.agent_card_json,
                workspace_id,
                &settings.public_url,
                &settings.public_grpc_address,
            ))
        }
        .await;
        match result {
            Ok(card) => json_value(&card),
            Err(error) => gateway_error(&Value::Null, &error),
        }
    }
}

impl Respond for Front {
    fn respond(&self, request: &RequestHead, body: Bytes) -> impl Future<Output = Reply> + Send {
        self.route(request, body)
    }
}

/// The reply to a request whose framing the listener cannot accept.
pub fn refusal(status: StatusCode, problem: &dyn std::fmt::Display) -> Reply {
    rpc_error(status, &Value::Null, RpcError::new(jsonrpc::INVALID_REQUEST, problem.to_string()), None)
}

/// The reply to a request over [`MAX_REQUEST_BYTES`], refused before it is read.
pub fn request_too_large() -> Reply {
    let problem = format!("the request is larger than {MAX_REQUEST_BYTES} bytes");
    rpc_error(StatusCode::PAYLOAD_TOO_LARGE, &Value::Null, RpcError::new(jsonrpc::INVALID_REQUEST, problem), None)
}

fn not_found() -> Reply {
    Reply::text(StatusCode::NOT_FOUND, "not found: A2A is served at /a2a/<workspace id>\n")
}

fn method_not_allowed(allow: &'static str) -> Reply {
    Reply { allow: Some(allow), ..Reply::text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n") }
}

/// The agent's card with every way to reach it replaced by the gateway's:
/// callers must not learn, or bypass the gateway for, the agent's own URL.
pub fn rewrite_card(card_json: &str, workspace_id: Uuid, public_url: &str, public_grpc: &str) -> Value {
    let mut card = match serde_json::from_str::<Value>(card_json) {
        Ok(Value::Object(card)) => card,
        _ => serde_json::Map::from_iter([
            ("name".to_owned(), json!(format!("workspace {workspace_id}"))),
            ("description".to_owned(), json!("an agentmesh workspace")),
            ("version".to_owned(), json!("1.0.0")),
            ("capabilities".to_owned(), json!({ "streaming": true })),
            ("defaultInputModes".to_owned(), json!(["text/plain"])),
            ("defaultOutputModes".to_owned(), json!(["text/plain"])),
            ("skills".to_owned(), json!([])),
        ]),
    };
    let url = format!("{public_url}/a2a/{workspace_id}");
    let mut interfaces = vec![
        json!({ "url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0" }),
        json!({ "url": url, "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0" }),
    ];
    if !public_grpc.is_empty() {
        interfaces.push(json!({
            "url": public_grpc,
            "protocolBinding": "GRPC",
            "protocolVersion": "1.0",
            "tenant": workspace_id.to_string(),
        }));
    }
    card.insert("supportedInterfaces".to_owned(), Value::Array(interfaces));
    // A2A 0.3 clients read these instead.
    card.insert("url".to_owned(), json!(url));
    card.insert("preferredTransport".to_owned(), json!("JSONRPC"));
    card.remove("additionalInterfaces");
    Value::Object(card)
}

fn parse_workspace(raw: &str) -> Result<Uuid, GatewayError> {
    raw.parse().map_err(|_| GatewayError::invalid("workspace_id", "must be a UUID"))
}

fn json_value(value: &Value) -> Reply {
    Reply::json(StatusCode::OK, Bytes::from(value.to_string()))
}

/// How long a followed queued message may wait with nothing to report
/// before the stream says it is still there: proxies between the caller and
/// the gateway close streams that stay silent (nginx after 60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// `events`, with `None` whenever `period` passes without one; ends when
/// `events` does.
fn kept_alive(
    events: impl futures::Stream<Item = Bytes>,
    period: Duration,
) -> impl futures::Stream<Item = Option<Bytes>> {
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio_stream::StreamExt::timeout_repeating(events, ticks).map(Result::ok)
}

/// What a request came to, before its binding writes it.
enum Outcome {
    /// One JSON-RPC response: the agent's, or one the gateway wrote.
    Response(Bytes),
    /// One per event, and `None` where the stream only says it is still
    /// there.
    Events(BoxStream<'static, Option<Bytes>>),
}

fn response(value: &Value) -> Outcome {
    Outcome::Response(Bytes::from(value.to_string()))
}

/// The agent's answer to a streaming request, passed on as it came: its
/// events as events, its JSON reply as JSON.
fn relayed(answer: AgentAnswer) -> Outcome {
    match answer {
        AgentAnswer::Events(events) => Outcome::Events(ReceiverStream::new(events).map(Some).boxed()),
        AgentAnswer::Reply(reply) => Outcome::Response(reply),
    }
}

/// An outcome as JSON-RPC over HTTP writes it: the responses as they are.
fn json_rpc_reply(outcome: Outcome) -> Reply {
    event_stream_or(outcome, |response| Reply::json(StatusCode::OK, response), |event| event)
}

/// An outcome as the HTTP+JSON binding writes it: results as bodies and
/// events, errors as statuses.
fn rest_reply(outcome: Outcome) -> Reply {
    let reply = |response: Bytes| {
        let (status, body) = rest::from_response(&response);
        let content_type = if status.is_success() { rest::MEDIA_TYPE } else { "application/json" };
        Reply { content_type, ..Reply::json(status, body) }
    };
    event_stream_or(outcome, reply, |event| rest::event(&event))
}

fn event_stream_or(
    outcome: Outcome,
    whole: impl FnOnce(Bytes) -> Reply,
    event_data: impl Fn(Bytes) -> Bytes + Send + 'static,
) -> Reply {
    match outcome {
        Outcome::Response(response) => whole(response),
        Outcome::Events(events) => Reply::events(
            events
                .map(move |event| match event {
                    Some(data) => sse::frame(&event_data(data)),
                    None => Bytes::from_static(b": still waiting\n\n"),
                })
                .boxed(),
        ),
    }
}

fn gateway_error(id: &Value, error: &GatewayError) -> Reply {
    rpc_error(error.http_status(), id, RpcError::from_gateway(error), error.retry_after())
}

fn rpc_error(status: StatusCode, id: &Value, error: RpcError, retry_after: Option<Duration>) -> Reply {
    let body = Bytes::from(error.into_response(id).to_string());
    Reply { retry_after: retry_after.map(|after| after.as_secs().max(1)), ..Reply::json(status, body) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_silent_stream_says_it_is_still_there_until_its_event_comes() {
        let (sender, receiver) = tokio::sync::mpsc::channel(1);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(40)).await;
            sender.send(Bytes::from_static(b"{}")).await.unwrap();
        });
        let started = tokio::time::Instant::now();
        let events: Vec<(u64, Option<Bytes>)> = kept_alive(ReceiverStream::new(receiver), Duration::from_secs(15))
            .map(|event| (started.elapsed().as_secs(), event))
            .collect()
            .await;
        assert_eq!(events, [(15, None), (30, None), (40, Some(Bytes::from_static(b"{}")))]);
    }
}

//! The A2A front over HTTP (GW-1): JSON-RPC 2.0 per workspace at
//! `POST /a2a/{workspace_id}`, streaming over SSE, and the workspace's agent
//! card at `/a2a/{workspace_id}/.well-known/agent-card.json`, rewritten so
//! that an official A2A client that reads it keeps talking to the gateway.

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::{auth::Authenticator, telemetry};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{DefaultBodyLimit, Path, State, rejection::BytesRejection},
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use futures::StreamExt;
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use tracing::Instrument;
use uuid::Uuid;

use crate::{
    error::GatewayError,
    gateway::{Dispatched, Gateway, Inbound, Sender, Streamed, Subscribed, parse_expires_in, parse_priority},
    jsonrpc::{self, Envelope, Method, RpcError},
};

/// The largest request the gateway accepts (GW-2).
pub const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Clone)]
struct Front {
    gateway: Arc<Gateway>,
    authenticator: Authenticator,
}

pub fn router(gateway: Arc<Gateway>, authenticator: Authenticator) -> Router {
    Router::new()
        .route("/a2a/{workspace_id}", post(rpc))
        .route("/a2a/{workspace_id}/.well-known/agent-card.json", get(card))
        .route("/a2a/{workspace_id}/.well-known/agent.json", get(card))
        .route("/healthz", get(|| async { "ok" }))
        .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
        .with_state(Front { gateway, authenticator })
}

async fn rpc(
    State(front): State<Front>,
    Path(workspace_id): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let span = tracing::info_span!("a2a.rpc", otel.kind = "server", workspace_id = %workspace_id, method = tracing::field::Empty);
    telemetry::continue_trace(&span, &headers);
    async move {
        let body = match body {
            Ok(body) => body,
            Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                let error = RpcError::new(
                    jsonrpc::INVALID_REQUEST,
                    format!("the request is larger than {MAX_REQUEST_BYTES} bytes"),
                );
                return rpc_error(StatusCode::PAYLOAD_TOO_LARGE, &Value::Null, error, None);
            }
            Err(rejection) => {
                return rpc_error(
                    rejection.status(),
                    &Value::Null,
                    RpcError::new(jsonrpc::INVALID_REQUEST, rejection.body_text()),
                    None,
                );
            }
        };
        let envelope = match Envelope::parse(body) {
            Ok(envelope) => envelope,
            Err(error) => return rpc_error(StatusCode::BAD_REQUEST, &Value::Null, error, None),
        };
        tracing::Span::current().record("method", envelope.request["method"].as_str().unwrap_or_default());
        let id = envelope.id().clone();
        match front.handle(&workspace_id, &headers, envelope).await {
            Ok(response) => response,
            Err(error) => gateway_error(&id, &error),
        }
    }
    .instrument(span)
    .await
}

impl Front {
    async fn handle(
        &self,
        workspace_id: &str,
        headers: &HeaderMap,
        envelope: Envelope,
    ) -> Result<Response, GatewayError> {
        let workspace_id = parse_workspace(workspace_id)?;
        let sender = self.sender(headers).await?;
        let id = envelope.id().clone();
        let flavor = envelope.flavor;
        let method = envelope.method;
        let context_id = envelope.context_id().map(str::to_owned);
        let inbound = Inbound {
            sender,
            workspace_id,
            traceparent: telemetry::current_traceparent()
                .or_else(|| header_str(headers, "traceparent").map(str::to_owned)),
            priority: parse_priority(header_str(headers, "x-agentmesh-priority"))?,
            expires_in: parse_expires_in(header_str(headers, "x-agentmesh-expires-in"))?,
            envelope,
        };
        match method {
            Method::Send => match self.gateway.send(inbound).await? {
                Dispatched::Replied(reply) => Ok(json_bytes(reply)),
                Dispatched::Queued(queued) => {
                    let task = jsonrpc::queued_task(flavor, &queued, context_id.as_deref());
                    Ok(json_value(&jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task))))
                }
            },
            Method::Stream => match self.gateway.stream(inbound).await? {
                Streamed::Events(events) => Ok(sse(Body::from_stream(ReceiverStream::new(events).map(event_frame)))),
                Streamed::Queued(queued) => {
                    let task = jsonrpc::queued_task(flavor, &queued, context_id.as_deref());
                    let event = jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task));
                    Ok(sse(Body::from(format!("data: {event}\n\n"))))
                }
            },
            Method::Subscribe => {
                let task_id = inbound.envelope.task_id().unwrap_or_default().to_owned();
                match self.gateway.subscribe(inbound).await? {
                    Subscribed::Events(events) => {
                        Ok(sse(Body::from_stream(ReceiverStream::new(events).map(event_frame))))
                    }
                    Subscribed::QueueItem(updates) => {
                        let events = ReceiverStream::new(updates).map(move |item| {
                            let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                            Bytes::from(jsonrpc::result_response(&id, jsonrpc::wrap_task(flavor, task)).to_string())
                        });
                        Ok(sse(Body::from_stream(kept_alive(events, KEEP_ALIVE))))
                    }
                }
            }
            Method::GetTask => {
                let task_id = inbound.envelope.task_id().unwrap_or_default().to_owned();
                self.gateway.authorize(&inbound.sender, workspace_id).await?;
                match self.gateway.queued_task(workspace_id, &task_id).await? {
                    Some(item) => {
                        let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                        Ok(json_value(&jsonrpc::result_response(&id, task)))
                    }
                    None => Ok(json_bytes(self.gateway.forward(inbound).await?)),
                }
            }
            Method::CancelTask => {
                let task_id = inbound.envelope.task_id().unwrap_or_default().to_owned();
                match self.gateway.cancel_queued(&inbound.sender, workspace_id, &task_id).await? {
                    Some(item) => {
                        let task = jsonrpc::task_of_queue_item(flavor, &task_id, item);
                        Ok(json_value(&jsonrpc::result_response(&id, task)))
                    }
                    None => Ok(json_bytes(self.gateway.forward(inbound).await?)),
                }
            }
            Method::Other => Ok(json_bytes(self.gateway.forward(inbound).await?)),
        }
    }

    async fn sender(&self, headers: &HeaderMap) -> Result<Sender, GatewayError> {
        let caller = self.authenticator.classify_authorization(header_str(headers, "authorization"));
        self.gateway.identify(caller, header_str(headers, "x-agentmesh-caller")).await
    }
}

async fn card(State(front): State<Front>, Path(workspace_id): Path<String>, headers: HeaderMap) -> Response {
    let id = Value::Null;
    let result = async {
        let workspace_id = parse_workspace(&workspace_id)?;
        let sender = front.sender(&headers).await?;
        let target = front.gateway.authorize(&sender, workspace_id).await?;
        let settings = front.gateway.settings();
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
        Err(error) => gateway_error(&id, &error),
    }
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
    let mut interfaces = vec![json!({ "url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0" })];
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

fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn json_bytes(body: bytes::Bytes) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
}

fn json_value(value: &Value) -> Response {
    json_bytes(bytes::Bytes::from(value.to_string()))
}

/// How long a followed queued message may wait with nothing to report
/// before the stream says it is still there: proxies between the caller and
/// the gateway close streams that stay silent (nginx after 60 s).
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Server-sent events of `events`, with a comment line whenever `period`
/// passes without one; ends when `events` does.
fn kept_alive(
    events: impl futures::Stream<Item = Bytes>,
    period: Duration,
) -> impl futures::Stream<Item = Result<Bytes, std::convert::Infallible>> {
    let ticks = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    tokio_stream::StreamExt::timeout_repeating(events, ticks).map(|event| match event {
        Ok(data) => event_frame(data),
        Err(_silence) => Ok(Bytes::from_static(b": still waiting\n\n")),
    })
}

/// One server-sent event carrying `data`.
fn event_frame(data: Bytes) -> Result<Bytes, std::convert::Infallible> {
    let mut frame = Vec::with_capacity(data.len() + 8);
    frame.extend_from_slice(b"data: ");
    frame.extend_from_slice(&data);
    frame.extend_from_slice(b"\n\n");
    Ok(Bytes::from(frame))
}

fn sse(body: Body) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static("text/event-stream")),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

fn gateway_error(id: &Value, error: &GatewayError) -> Response {
    use tonic::Code;
    let status = match error.code() {
        Code::InvalidArgument => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::FailedPrecondition => StatusCode::CONFLICT,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::BAD_GATEWAY,
    };
    rpc_error(status, id, RpcError::from_gateway(error), error.retry_after())
}

fn rpc_error(status: StatusCode, id: &Value, error: RpcError, retry_after: Option<Duration>) -> Response {
    let mut response = (status, json_value(&error.into_response(id))).into_response();
    if let Some(after) = retry_after
        && let Ok(value) = HeaderValue::from_str(&after.as_secs().max(1).to_string())
    {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
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
        let frames: Vec<(u64, Bytes)> = kept_alive(ReceiverStream::new(receiver), Duration::from_secs(15))
            .map(|frame| (started.elapsed().as_secs(), frame.unwrap()))
            .collect()
            .await;
        let comment = Bytes::from_static(b": still waiting\n\n");
        assert_eq!(frames, [(15, comment.clone()), (30, comment), (40, Bytes::from_static(b"data: {}\n\n"))]);
    }
}

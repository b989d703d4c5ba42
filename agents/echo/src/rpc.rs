//! JSON-RPC 2.0 at `POST /`: the A2A message and task methods, in their 1.0
//! shape (protobuf JSON: `ROLE_AGENT`, parts without `kind`, results wrapped
//! as `{"message": ...}` / `{"statusUpdate": ...}`) and their 0.3 shape
//! (`kind`-tagged objects, lowercase roles and states).

use std::{borrow::Cow, convert::Infallible, future::ready, sync::Arc};

use axum::{
    body::Bytes,
    extract::State,
    http::{StatusCode, header},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
};
use futures::{StreamExt, stream};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{AgentState, BusyStatus, deliveries::AnswerIds};

const PARSE_ERROR: i32 = -32700;
const INVALID_REQUEST: i32 = -32600;
const METHOD_NOT_FOUND: i32 = -32601;
const INVALID_PARAMS: i32 = -32602;
const BUSY: i32 = -32000;
const TASK_NOT_FOUND: i32 = -32001;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    V1,
    V03,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Send,
    Stream,
    Task,
}

fn resolve(method: &str) -> Option<(Call, Dialect)> {
    Some(match method {
        "SendMessage" => (Call::Send, Dialect::V1),
        "SendStreamingMessage" => (Call::Stream, Dialect::V1),
        "GetTask" | "CancelTask" | "SubscribeToTask" => (Call::Task, Dialect::V1),
        "message/send" => (Call::Send, Dialect::V03),
        "message/stream" => (Call::Stream, Dialect::V03),
        "tasks/get" | "tasks/cancel" | "tasks/resubscribe" => (Call::Task, Dialect::V03),
        _ => return None,
    })
}

pub(crate) async fn handle(State(state): State<Arc<AgentState>>, body: Bytes) -> Response {
    let request = match Request::parse(&body) {
        Ok(request) => request,
        Err((id, error)) => return failure(&id, error),
    };
    let Some((call, dialect)) = resolve(&request.method) else {
        let error = RpcError::new(METHOD_NOT_FOUND, format!("method not found: {}", request.method));
        return failure(&request.id, error);
    };
    if call == Call::Task {
        return task_not_found(dialect, &request);
    }
    let incoming = match Incoming::parse(&request.params) {
        Ok(incoming) => incoming,
        Err(reason) => return failure(&request.id, RpcError::new(INVALID_PARAMS, reason)),
    };
    // Busy first: a refused message must leave no trace, not even as seen.
    let Some(in_flight) = state.admit() else {
        return busy(&request.id, &state.config);
    };
    let reply = if state.config.silent { String::new() } else { format!("echo: {}", incoming.text) };
    let Incoming { text, context_id, message_id } = incoming;
    let answer = state.deliveries().deliver(message_id.as_deref(), text, || AnswerIds {
        context_id: context_id.unwrap_or_else(new_id),
        reply_message_id: new_id(),
        task_id: new_id(),
    });
    let delay = state.config.delay;
    let id = request.id;

    if call == Call::Send {
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let body = success(&id, &Reply::new(dialect, &answer, &reply));
        drop(in_flight);
        return json_response(StatusCode::OK, body);
    }

    let working = success(&id, &Working::new(dialect, &answer.task_id, &answer.context_id));
    let answered_at = tokio::time::Instant::now() + delay;
    let progress = progress_updates(working.clone(), state.config.progress_interval, answered_at);
    let last = async move {
        if !delay.is_zero() {
            tokio::time::sleep_until(answered_at).await;
        }
        let data = success(&id, &Reply::new(dialect, &answer, &reply));
        drop(in_flight);
        Ok::<_, Infallible>(Event::default().data(data))
    };
    Sse::new(stream::once(ready(Ok(Event::default().data(working)))).chain(progress).chain(stream::once(last)))
        .into_response()
}

/// A repeat of the `working` update every `interval` until `until`; nothing
/// without an interval.
fn progress_updates(
    working: String,
    interval: Option<std::time::Duration>,
    until: tokio::time::Instant,
) -> impl futures::Stream<Item = Result<Event, Infallible>> {
    let interval = interval.filter(|interval| !interval.is_zero());
    stream::unfold(tokio::time::Instant::now(), move |last| {
        let working = working.clone();
        async move {
            let next = last + interval?;
            if next >= until {
                return None;
            }
            tokio::time::sleep_until(next).await;
            Some((Ok(Event::default().data(working)), next))
        }
    })
}

struct Request {
    id: Value,
    method: String,
    params: Value,
}

impl Request {
    /// The envelope, or the id to answer with and why it is not a request.
    fn parse(body: &[u8]) -> Result<Self, (Value, RpcError)> {
        let value: Value = serde_json::from_slice(body)
            .map_err(|error| (Value::Null, RpcError::new(PARSE_ERROR, format!("parse error: {error}"))))?;
        let Value::Object(mut envelope) = value else {
            let reason = "a request must be a JSON object (batches are not supported)";
            return Err((Value::Null, RpcError::new(INVALID_REQUEST, reason)));
        };
        let id = envelope.remove("id").unwrap_or(Value::Null);
        if !matches!(id, Value::Null | Value::String(_) | Value::Number(_)) {
            return Err((Value::Null, RpcError::new(INVALID_REQUEST, "id must be a string, a number or null")));
        }
        if envelope.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err((id, RpcError::new(INVALID_REQUEST, "jsonrpc must be \"2.0\"")));
        }
        let Some(Value::String(method)) = envelope.remove("method") else {
            return Err((id, RpcError::new(INVALID_REQUEST, "method must be a string")));
        };
        let params = envelope.remove("params").unwrap_or(Value::Null);
        Ok(Self { id, method, params })
    }
}

/// The parts of an incoming message the echo needs. Both shapes carry text
/// in a part's `text` field (0.3 adds `"kind": "text"`); other parts are
/// ignored.
struct Incoming {
    /// The text parts, joined by newlines.
    text: String,
    context_id: Option<String>,
    message_id: Option<String>,
}

impl Incoming {
    fn parse(params: &Value) -> Result<Self, &'static str> {
        let message = params.get("message").and_then(Value::as_object).ok_or("params.message must be an object")?;
        let parts = message.get("parts").and_then(Value::as_array).ok_or("params.message.parts must be an array")?;
        let mut text = String::new();
        for (index, part) in parts.iter().filter_map(|part| part.get("text")?.as_str()).enumerate() {
            if index > 0 {
                text.push('\n');
            }
            text.push_str(part);
        }
        let id = |field| message.get(field).and_then(Value::as_str).filter(|id| !id.is_empty()).map(str::to_owned);
        Ok(Self { text, context_id: id("contextId"), message_id: id("messageId") })
    }
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AgentMessage<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    message_id: &'a str,
    context_id: &'a str,
    role: &'static str,
    parts: [TextPart<'a>; 1],
}

#[derive(Serialize)]
struct TextPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    text: &'a str,
}

/// The answer to a message: a 1.0 `SendMessageResponse` / `StreamResponse`
/// holding a message, or a bare 0.3 message.
#[derive(Serialize)]
#[serde(untagged)]
enum Reply<'a> {
    V1 { message: AgentMessage<'a> },
    V03(AgentMessage<'a>),
}

impl<'a> Reply<'a> {
    fn new(dialect: Dialect, answer: &'a AnswerIds, text: &'a str) -> Self {
        let message = |kind, role, part_kind| AgentMessage {
            kind,
            message_id: &answer.reply_message_id,
            context_id: &answer.context_id,
            role,
            parts: [TextPart { kind: part_kind, text }],
        };
        match dialect {
            Dialect::V1 => Self::V1 { message: message(None, "ROLE_AGENT", None) },
            Dialect::V03 => Self::V03(message(Some("message"), "agent", Some("text"))),
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct StatusUpdate<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    task_id: &'a str,
    context_id: &'a str,
    status: TaskStatus,
    #[serde(rename = "final", skip_serializing_if = "Option::is_none")]
    is_final: Option<bool>,
}

#[derive(Serialize)]
struct TaskStatus {
    state: &'static str,
}

/// The first event of a stream: the task is working.
#[derive(Serialize)]
#[serde(untagged)]
enum Working<'a> {
    V1 {
        #[serde(rename = "statusUpdate")]
        status_update: StatusUpdate<'a>,
    },
    V03(StatusUpdate<'a>),
}

impl<'a> Working<'a> {
    fn new(dialect: Dialect, task_id: &'a str, context_id: &'a str) -> Self {
        match dialect {
            Dialect::V1 => Self::V1 {
                status_update: StatusUpdate {
                    kind: None,
                    task_id,
                    context_id,
                    status: TaskStatus { state: "TASK_STATE_WORKING" },
                    is_final: None,
                },
            },
            Dialect::V03 => Self::V03(StatusUpdate {
                kind: Some("status-update"),
                task_id,
                context_id,
                status: TaskStatus { state: "working" },
                is_final: Some(false),
            }),
        }
    }
}

#[derive(Debug, Serialize)]
struct RpcError {
    code: i32,
    message: Cow<'static, str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Value>,
}

impl RpcError {
    fn new(code: i32, message: impl Into<Cow<'static, str>>) -> Self {
        Self { code, message: message.into(), data: None }
    }
}

#[derive(Serialize)]
struct Success<'a, T> {
    jsonrpc: &'static str,
    id: &'a Value,
    result: T,
}

#[derive(Serialize)]
struct Failure<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    error: RpcError,
}

fn success(id: &Value, result: &impl Serialize) -> String {
    serde_json::to_string(&Success { jsonrpc: "2.0", id, result }).expect("replies serialize: string keys only")
}

fn failure(id: &Value, error: RpcError) -> Response {
    json_response(StatusCode::OK, error_body(id, error))
}

fn error_body(id: &Value, error: RpcError) -> String {
    serde_json::to_string(&Failure { jsonrpc: "2.0", id, error }).expect("errors serialize: string keys only")
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn busy(id: &Value, config: &crate::Config) -> Response {
    let seconds = config.retry_after_seconds;
    let error =
        RpcError { code: BUSY, message: "agent busy".into(), data: Some(json!({"retryAfterSeconds": seconds})) };
    let status = match config.busy_status {
        BusyStatus::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        BusyStatus::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
    };
    let headers = [(header::CONTENT_TYPE, "application/json".to_owned()), (header::RETRY_AFTER, seconds.to_string())];
    (status, headers, error_body(id, error)).into_response()
}

fn task_not_found(dialect: Dialect, request: &Request) -> Response {
    if request.params.get("id").and_then(Value::as_str).is_none() {
        return failure(&request.id, RpcError::new(INVALID_PARAMS, "params.id must be a string"));
    }
    // 1.0 errors carry a google.rpc.ErrorInfo detail naming the A2A reason.
    let data = (dialect == Dialect::V1).then(|| {
        json!([{
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": "TASK_NOT_FOUND",
            "domain": "a2a-protocol.org",
            "metadata": {},
        }])
    });
    failure(&request.id, RpcError { code: TASK_NOT_FOUND, message: "Task not found".into(), data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_resolve_in_both_dialects() {
        assert_eq!(resolve("SendMessage"), Some((Call::Send, Dialect::V1)));
        assert_eq!(resolve("message/stream"), Some((Call::Stream, Dialect::V03)));
        assert_eq!(resolve("tasks/cancel"), Some((Call::Task, Dialect::V03)));
        assert_eq!(resolve("GetTask"), Some((Call::Task, Dialect::V1)));
        assert_eq!(resolve("message/Send"), None);
    }

    #[test]
    fn envelope_errors_name_the_request_id_when_known() {
        let (id, error) = Request::parse(br#"{"jsonrpc":"1.0","id":7,"method":"SendMessage"}"#).err().unwrap();
        assert_eq!((id, error.code), (json!(7), INVALID_REQUEST));
        let (id, error) = Request::parse(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#).err().unwrap();
        assert_eq!((id, error.code), (Value::Null, INVALID_REQUEST));
        let (_, error) = Request::parse(b"[]").err().unwrap();
        assert_eq!(error.code, INVALID_REQUEST);
        let (_, error) = Request::parse(b"{").err().unwrap();
        assert_eq!(error.code, PARSE_ERROR);
    }

    #[test]
    fn text_parts_of_both_shapes_are_joined() {
        let params = json!({"message": {"contextId": "c1", "parts": [
            {"kind": "text", "text": "a"}, {"kind": "data", "data": {}}, {"text": "b"}
        ]}});
        let incoming = Incoming::parse(&params).unwrap();
        assert_eq!((incoming.text.as_str(), incoming.context_id.as_deref()), ("a\nb", Some("c1")));
        assert_eq!(incoming.message_id, None);
        let incoming = Incoming::parse(&json!({"message": {"messageId": "m", "parts": []}})).unwrap();
        assert_eq!((incoming.message_id.as_deref(), incoming.context_id), (Some("m"), None));
        assert!(Incoming::parse(&json!({"message": {"parts": {}}})).is_err());
        assert!(Incoming::parse(&Value::Null).is_err());
    }

    #[test]
    fn replies_follow_each_dialect() {
        let answer = AnswerIds { context_id: "c".into(), reply_message_id: "r".into(), task_id: "t".into() };
        let v1: Value =
            serde_json::from_str(&success(&json!(1), &Reply::new(Dialect::V1, &answer, "echo: x"))).unwrap();
        assert_eq!(v1["result"]["message"]["role"], "ROLE_AGENT");
        assert_eq!(v1["result"]["message"]["parts"], json!([{"text": "echo: x"}]));
        assert_eq!(v1["result"]["message"]["contextId"], "c");
        assert_eq!(v1["result"]["message"]["messageId"], "r");
        let v03: Value =
            serde_json::from_str(&success(&json!("a"), &Reply::new(Dialect::V03, &answer, "echo: x"))).unwrap();
        assert_eq!(v03["result"]["kind"], "message");
        assert_eq!(v03["result"]["role"], "agent");
        assert_eq!(v03["result"]["parts"], json!([{"kind": "text", "text": "echo: x"}]));
        let working: Value = serde_json::to_value(Working::new(Dialect::V1, "t", "c")).unwrap();
        assert_eq!(
            working,
            json!({"statusUpdate": {"taskId": "t", "contextId": "c", "status": {"state": "TASK_STATE_WORKING"}}})
        );
    }
}

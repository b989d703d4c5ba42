//! The JSON-RPC 2.0 envelope of A2A requests, as both protocol generations
//! name their methods (0.3: `message/send`…, 1.0: `SendMessage`…), and the
//! replies the gateway writes itself: a queued message as a submitted task,
//! and errors.

use agentmesh_proto::gateway::v1::{QueueItemState, QueuedReply};
use bytes::Bytes;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::{error::GatewayError, store::QueueItem};

/// Which generation of A2A method names the caller uses; replies the
/// gateway writes itself follow it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `message/send`, lower-case task states, `kind` discriminators.
    V03,
    /// `SendMessage`, `TASK_STATE_*` states, wrapped results.
    V10,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Send,
    Stream,
    GetTask,
    CancelTask,
    /// Following a task's events.
    Subscribe,
    /// Anything else is passed to the agent as it is.
    Other,
}

/// A checked, normalised request: what the gateway decides by, and the
/// bytes that go to the agent.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub method: Method,
    pub flavor: Flavor,
    id: Value,
    /// The request as it goes to the agent: the caller's own bytes when
    /// nothing had to be filled in, so the common case is not serialised
    /// again.
    body: Bytes,
}

/// A JSON-RPC error the gateway answers with itself.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    pub code: i64,
    pub message: String,
    pub data: Option<Value>,
}

pub const PARSE_ERROR: i64 = -32700;
pub const INVALID_REQUEST: i64 = -32600;
pub const INVALID_PARAMS: i64 = -32602;
/// A2A's TaskNotFoundError.
pub const TASK_NOT_FOUND: i64 = -32001;
/// A2A's TaskNotCancelableError.
pub const TASK_NOT_CANCELABLE: i64 = -32002;

impl Method {
    /// The method and the protocol generation a JSON-RPC method name belongs to.
    /// The method's name in metrics, the same for both versions of A2A.
    pub fn label(self) -> &'static str {
        match self {
            Method::Send => "send_message",
            Method::Stream => "send_streaming_message",
            Method::GetTask => "get_task",
            Method::CancelTask => "cancel_task",
            Method::Subscribe => "subscribe_to_task",
            Method::Other => "other",
        }
    }

    pub fn named(name: &str) -> (Method, Flavor) {
        match name {
            "message/send" => (Method::Send, Flavor::V03),
            "message/stream" => (Method::Stream, Flavor::V03),
            "tasks/get" => (Method::GetTask, Flavor::V03),
            "tasks/cancel" => (Method::CancelTask, Flavor::V03),
            "tasks/resubscribe" => (Method::Subscribe, Flavor::V03),
            "SendMessage" => (Method::Send, Flavor::V10),
            "SendStreamingMessage" => (Method::Stream, Flavor::V10),
            "GetTask" => (Method::GetTask, Flavor::V10),
            "CancelTask" => (Method::CancelTask, Flavor::V10),
            "SubscribeToTask" => (Method::Subscribe, Flavor::V10),
            other if other.contains('/') => (Method::Other, Flavor::V03),
            _ => (Method::Other, Flavor::V10),
        }
    }
}

impl Flavor {
    /// The generation of a stored request, from its method name alone
    /// (without building the whole document).
    pub fn of_request(request: &str) -> Flavor {
        #[derive(serde::Deserialize)]
        struct MethodOnly<'a> {
            #[serde(borrow)]
            method: std::borrow::Cow<'a, str>,
        }
        serde_json::from_str::<MethodOnly>(request).map_or(Flavor::V10, |m| Method::named(&m.method).1)
    }

    /// The `A2A-Version` header an agent expects for this flavour.
    pub fn a2a_version(self) -> Option<&'static str> {
        match self {
            Flavor::V10 => Some("1.0"),
            Flavor::V03 => None,
        }
    }
}

impl Envelope {
    /// Parses a request and fills in what callers may leave out (GW-2): the
    /// JSON-RPC id and, for messages, the A2A message id.
    pub fn parse(body: Bytes) -> Result<Self, RpcError> {
        if let Some((method, flavor, id)) = complete_request(&body) {
            return Ok(Self { method, flavor, id, body });
        }
        let value: Value = serde_json::from_slice(&body)
            .map_err(|e| RpcError::new(PARSE_ERROR, format!("the body is not JSON: {e}")))?;
        let Value::Object(request) = value else {
            return Err(RpcError::new(
                INVALID_REQUEST,
                "a JSON-RPC request must be an object (batches are not supported)",
            ));
        };
        Self::normalise(request, Some(body))
    }

    /// The envelope of a request built by the gateway itself (the gRPC
    /// binding's), checked and filled in like a caller's.
    pub fn from_request(request: Map<String, Value>) -> Result<Self, RpcError> {
        Self::normalise(request, None)
    }

    fn normalise(mut request: Map<String, Value>, body: Option<Bytes>) -> Result<Self, RpcError> {
        if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
            return Err(RpcError::new(INVALID_REQUEST, "jsonrpc: must be \"2.0\""));
        }
        let (method, flavor) = match request.get("method").and_then(Value::as_str) {
            Some(name) => Method::named(name),
            None => return Err(RpcError::new(INVALID_REQUEST, "method: must be a string")),
        };
        let mut filled = false;
        match request.get("id") {
            None | Some(Value::Null) => {
                request.insert("id".to_owned(), Value::String(Uuid::new_v4().to_string()));
                filled = true;
            }
            Some(Value::String(_) | Value::Number(_)) => {}
            Some(_) => return Err(RpcError::new(INVALID_REQUEST, "id: must be a string or a number")),
        }
        if matches!(method, Method::Send | Method::Stream) {
            let message = request
                .get_mut("params")
                .and_then(|p| p.get_mut("message"))
                .and_then(Value::as_object_mut)
                .ok_or_else(|| RpcError::new(INVALID_PARAMS, "params.message: must be an object"))?;
            match message.get("messageId") {
                Some(Value::String(id)) if !id.is_empty() => {
                    if id.len() > MAX_MESSAGE_ID {
                        return Err(RpcError::new(INVALID_PARAMS, "params.message.messageId: at most 256 characters"));
                    }
                }
                None | Some(Value::Null) | Some(Value::String(_)) => {
                    message.insert("messageId".to_owned(), Value::String(Uuid::new_v4().to_string()));
                    filled = true;
                }
                Some(_) => return Err(RpcError::new(INVALID_PARAMS, "params.message.messageId: must be a string")),
            }
        }
        let body = match body {
            Some(body) if !filled => body,
            _ => Bytes::from(serde_json::to_vec(&request).map_err(|e| RpcError::new(INVALID_REQUEST, e.to_string()))?),
        };
        let id = request.remove("id").unwrap_or_default();
        Ok(Self { method, flavor, id, body })
    }

    pub fn id(&self) -> &Value {
        &self.id
    }

    /// The A2A message id of a send (always present after parsing).
    pub fn message_id(&self) -> Option<String> {
        string_at(&self.body, &["params", "message", "messageId"])
    }

    pub fn context_id(&self) -> Option<String> {
        context_id(&self.body)
    }

    /// The task id of a get, cancel or subscription.
    pub fn task_id(&self) -> Option<String> {
        string_at(&self.body, &["params", "id"])
    }

    /// The request as it goes to the agent.
    pub fn body(&self) -> Bytes {
        self.body.clone()
    }

    pub fn a2a_version(&self) -> Option<&'static str> {
        self.flavor.a2a_version()
    }
}

/// The longest A2A message id accepted.
const MAX_MESSAGE_ID: usize = 256;

/// The method, flavour and id of a request that needs nothing filled in,
/// read without building the document; `None` sends the request the long
/// way, which fills in what is missing or says precisely what is wrong.
fn complete_request(body: &[u8]) -> Option<(Method, Flavor, Value)> {
    use std::borrow::Cow;

    use serde_json::value::RawValue;

    #[derive(serde::Deserialize)]
    struct Request<'a> {
        #[serde(borrow)]
        jsonrpc: Cow<'a, str>,
        #[serde(borrow)]
        method: Cow<'a, str>,
        #[serde(borrow)]
        id: &'a RawValue,
        #[serde(borrow)]
        params: Option<Params<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Params<'a> {
        #[serde(borrow)]
        message: Option<Message<'a>>,
    }
    #[derive(serde::Deserialize)]
    struct Message<'a> {
        #[serde(borrow, rename = "messageId")]
        message_id: Option<Cow<'a, str>>,
    }

    let request: Request = serde_json::from_slice(body).ok()?;
    if request.jsonrpc != "2.0" {
        return None;
    }
    let id = match request.id.get().as_bytes().first()? {
        b'"' | b'-' | b'0'..=b'9' => serde_json::from_str(request.id.get()).ok()?,
        _ => return None,
    };
    let (method, flavor) = Method::named(&request.method);
    if matches!(method, Method::Send | Method::Stream) {
        let message_id = request.params?.message?.message_id?;
        if message_id.is_empty() || message_id.len() > MAX_MESSAGE_ID {
            return None;
        }
    }
    Some((method, flavor, id))
}

/// The string at `path` in a JSON document, if there is one.
fn string_at(body: &[u8], path: &[&str]) -> Option<String> {
    let mut value = serde_json::from_slice::<Value>(body).ok()?;
    for key in path {
        value = value.as_object_mut()?.remove(*key)?;
    }
    match value {
        Value::String(text) => Some(text),
        _ => None,
    }
}

/// The context id of a request's message, if it names one.
pub fn context_id(body: &[u8]) -> Option<String> {
    string_at(body, &["params", "message", "contextId"])
}

/// A request's method name, for its span.
pub fn method_name(body: &[u8]) -> Option<String> {
    string_at(body, &["method"])
}

impl RpcError {
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        Self { code, message: message.into(), data: None }
    }

    /// The JSON-RPC form of a gateway error. Its `data` is machine-readable:
    /// the reason, and for UNAVAILABLE the fields of `UnavailableDetail` in
    /// proto3 JSON.
    pub fn from_gateway(error: &GatewayError) -> Self {
        let code = match error {
            GatewayError::InvalidArgument { .. } => INVALID_PARAMS,
            GatewayError::Unauthenticated(_) => -32050,
            GatewayError::PermissionDenied(_) => -32051,
            GatewayError::NotFound(_) => -32052,
            GatewayError::TargetUnavailable { .. } | GatewayError::UrlRefused { .. } => -32053,
            GatewayError::Unavailable { .. } | GatewayError::AgentUnreachable(_) => -32054,
            GatewayError::ReplyTooLarge { .. } | GatewayError::BadAgentReply(_) => -32055,
            GatewayError::TaskNotCancelable(_) => TASK_NOT_CANCELABLE,
        };
        let mut data = Map::new();
        data.insert("domain".into(), json!(agentmesh_chassis::status::ERROR_DOMAIN));
        match error {
            GatewayError::Unavailable { reason, detail, .. } => {
                data.insert("reason".into(), json!(reason.as_str_name()));
                data.insert("detail".into(), json!(detail));
            }
            other => {
                data.insert("reason".into(), json!(other.reason()));
            }
        }
        if let Some(retry) = error.retry_after() {
            data.insert("retryAfterSeconds".into(), json!(retry.as_secs().max(1)));
        }
        if let Some(id) = error.workspace_id() {
            data.insert("workspaceId".into(), json!(id));
        }
        Self { code, message: error.to_string(), data: Some(Value::Object(data)) }
    }

    pub fn into_response(self, id: &Value) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = self.data {
            error["data"] = data;
        }
        json!({ "jsonrpc": "2.0", "id": id, "error": error })
    }
}

pub fn result_response(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

/// The proto3 JSON of a queued reply, carried in the task's metadata.
pub fn queued_json(queued: &QueuedReply) -> Value {
    let mut value = json!({
        "queueId": queued.queue_id,
        "workspaceId": queued.workspace_id,
        "messageId": queued.message_id,
        // uint64 is a string in proto3 JSON.
        "depth": queued.depth.to_string(),
        "reason": queued.reason().as_str_name(),
        "duplicate": queued.duplicate,
    });
    if let Some(at) = &queued.enqueued_at {
        value["enqueuedAt"] = json!(rfc3339(at));
    }
    if let Some(at) = &queued.expires_at {
        value["expiresAt"] = json!(rfc3339(at));
    }
    value
}

/// A task standing for a queued message: its id is the queue id, so the
/// caller can follow it with `tasks/get` (GW-7).
pub fn queued_task(flavor: Flavor, queued: &QueuedReply, context_id: Option<&str>) -> Value {
    let state = match flavor {
        Flavor::V03 => "submitted",
        Flavor::V10 => "TASK_STATE_SUBMITTED",
    };
    task(flavor, &queued.queue_id, context_id, state, None, json!({ "agentmesh": { "queued": queued_json(queued) } }))
}

/// A task as `tasks/get` reports a queue item that has no task of the
/// agent's yet (or never will).
pub fn queue_item_task(
    flavor: Flavor,
    id: &str,
    state: QueueItemState,
    detail: &str,
    context_id: Option<&str>,
) -> Value {
    let (v03, v10) = match state {
        QueueItemState::DeadLetter => ("failed", "TASK_STATE_FAILED"),
        QueueItemState::Dropped => ("canceled", "TASK_STATE_CANCELED"),
        QueueItemState::InFlight => ("working", "TASK_STATE_WORKING"),
        _ => ("submitted", "TASK_STATE_SUBMITTED"),
    };
    let task_state = if flavor == Flavor::V03 { v03 } else { v10 };
    let message = (!detail.is_empty()).then(|| agent_text(flavor, id, detail));
    let metadata = json!({ "agentmesh": { "queueState": state.as_str_name() } });
    task(flavor, id, context_id, task_state, message, metadata)
}

/// The task a queue id stands for: the agent's reply once delivered, else
/// the item's state as a task (GW-7: the caller collects its result).
pub fn task_of_queue_item(flavor: Flavor, task_id: &str, item: QueueItem) -> Value {
    match (item.state, item.result_json) {
        (QueueItemState::Delivered, Some(result)) => {
            task_of_result(flavor, task_id, serde_json::from_str(&result).unwrap_or(Value::Null))
        }
        (state, _) => {
            let detail = if item.last_error.is_empty() { item.state_reason } else { item.last_error };
            queue_item_task(flavor, task_id, state, &detail, None)
        }
    }
}

/// A completed task wrapping an agent's reply that was a message, for
/// callers that asked for a task.
pub fn completed_task(flavor: Flavor, id: &str, message: Value) -> Value {
    let state = if flavor == Flavor::V03 { "completed" } else { "TASK_STATE_COMPLETED" };
    let context = message.get("contextId").and_then(Value::as_str).map(str::to_owned);
    task(flavor, id, context.as_deref(), state, Some(message), Value::Null)
}

fn task(
    flavor: Flavor,
    id: &str,
    context_id: Option<&str>,
    state: &str,
    message: Option<Value>,
    metadata: Value,
) -> Value {
    let mut status =
        json!({ "state": state, "timestamp": rfc3339(&prost_types::Timestamp::from(std::time::SystemTime::now())) });
    if let Some(message) = message {
        status["message"] = message;
    }
    let mut task = json!({ "id": id, "contextId": context_id.unwrap_or(id), "status": status });
    if !metadata.is_null() {
        task["metadata"] = metadata;
    }
    if flavor == Flavor::V03 {
        task["kind"] = json!("task");
    }
    task
}

fn agent_text(flavor: Flavor, task_id: &str, text: &str) -> Value {
    let id = Uuid::new_v4().to_string();
    match flavor {
        Flavor::V03 => {
            json!({ "kind": "message", "messageId": id, "taskId": task_id, "role": "agent", "parts": [{ "kind": "text", "text": text }] })
        }
        Flavor::V10 => json!({ "messageId": id, "taskId": task_id, "role": "ROLE_AGENT", "parts": [{ "text": text }] }),
    }
}

/// How a send's result is wrapped: 1.0 wraps the task (`{"task": …}`),
/// 0.3 returns it bare with its `kind`.
pub fn wrap_task(flavor: Flavor, task: Value) -> Value {
    match flavor {
        Flavor::V03 => task,
        Flavor::V10 => json!({ "task": task }),
    }
}

/// The task inside an agent's send result, whichever way it is wrapped; a
/// message reply becomes a completed task.
pub fn task_of_result(flavor: Flavor, id: &str, result: Value) -> Value {
    let (kind, inner) = match result {
        Value::Object(mut object) => {
            if let Some(task) = object.remove("task") {
                ("task", task)
            } else if let Some(message) = object.remove("message") {
                ("message", message)
            } else {
                let kind = match object.get("kind").and_then(Value::as_str) {
                    Some("message") => "message",
                    _ => "task",
                };
                (kind, Value::Object(object))
            }
        }
        other => ("task", other),
    };
    if kind == "message" { completed_task(flavor, id, inner) } else { inner }
}

pub fn rfc3339(at: &prost_types::Timestamp) -> String {
    // prost's Display is RFC 3339 in UTC, as proto3 JSON wants.
    at.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_in_missing_ids_and_keeps_given_ones() {
        let envelope = Envelope::parse(Bytes::from_static(
            br#"{"jsonrpc":"2.0","method":"message/send","params":{"message":{"role":"user","parts":[]}}}"#,
        ))
        .unwrap();
        assert_eq!(envelope.method, Method::Send);
        assert_eq!(envelope.flavor, Flavor::V03);
        assert!(envelope.id().is_string());
        assert_eq!(envelope.message_id().unwrap().len(), 36);
        let envelope = Envelope::parse(Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":7,"method":"SendMessage","params":{"message":{"messageId":"m-1"}}}"#,
        ))
        .unwrap();
        assert_eq!(
            (envelope.id(), envelope.message_id().as_deref(), envelope.flavor),
            (&json!(7), Some("m-1"), Flavor::V10)
        );
    }

    #[test]
    fn passes_a_complete_request_on_byte_for_byte_and_a_filled_in_one_rewritten() {
        let complete: &[u8] =
            br#"{ "jsonrpc": "2.0", "id": "a", "method": "message/send", "params": {"message": {"messageId": "m"}} }"#;
        assert_eq!(Envelope::parse(Bytes::from_static(complete)).unwrap().body(), complete);
        let filled =
            Envelope::parse(Bytes::from_static(br#"{"jsonrpc":"2.0","method":"tasks/get","params":{"id":"t"}}"#));
        let body: Value = serde_json::from_slice(&filled.unwrap().body()).unwrap();
        assert!(body["id"].is_string(), "{body}");
        assert_eq!(Flavor::of_request(r#"{"jsonrpc":"2.0","method":"message/send"}"#), Flavor::V03);
        assert_eq!(Flavor::of_request(r#"{"method":"SendMessage","params":{}}"#), Flavor::V10);
    }

    #[test]
    fn the_quick_read_and_the_full_parse_agree_on_complete_requests() {
        for raw in [
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"message/send","params":{"message":{"messageId":"m","x":[1,{}]}}}"#,
            r#"{"method":"SendMessage","id":-3,"jsonrpc":"2.0","params":{"message":{"messageId":"m"},"configuration":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tasks/get","params":{"id":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"GetExtendedAgentCard"}"#,
        ] {
            let (method, flavor, id) = complete_request(raw.as_bytes()).unwrap_or_else(|| panic!("{raw}"));
            let parsed = Envelope::from_request(serde_json::from_str(raw).unwrap()).unwrap();
            assert_eq!((method, flavor, &id), (parsed.method, parsed.flavor, parsed.id()), "{raw}");
        }
        for incomplete in [
            r#"{"jsonrpc":"2.0","method":"tasks/get","params":{"id":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tasks/get"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"messageId":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tasks/get"}"#,
        ] {
            assert!(complete_request(incomplete.as_bytes()).is_none(), "{incomplete}");
        }
    }

    #[test]
    fn refuses_malformed_envelopes_with_the_json_rpc_codes() {
        let code = |body: &'static [u8]| Envelope::parse(Bytes::from_static(body)).unwrap_err().code;
        assert_eq!(code(b"not json"), PARSE_ERROR);
        assert_eq!(code(b"[]"), INVALID_REQUEST);
        assert_eq!(code(br#"{"jsonrpc":"1.0","method":"x"}"#), INVALID_REQUEST);
        assert_eq!(code(br#"{"jsonrpc":"2.0"}"#), INVALID_REQUEST);
        assert_eq!(code(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), INVALID_REQUEST);
        assert_eq!(code(br#"{"jsonrpc":"2.0","method":"message/send","params":{}}"#), INVALID_PARAMS);
        assert_eq!(
            code(br#"{"jsonrpc":"2.0","method":"SendMessage","params":{"message":{"messageId":5}}}"#),
            INVALID_PARAMS
        );
    }

    #[test]
    fn unwraps_tasks_and_turns_message_replies_into_completed_tasks() {
        let task = task_of_result(Flavor::V10, "q", json!({"task": {"id": "t"}}));
        assert_eq!(task, json!({"id": "t"}));
        let task = task_of_result(Flavor::V10, "q", json!({"message": {"messageId": "m", "contextId": "c"}}));
        assert_eq!(task["status"]["state"], "TASK_STATE_COMPLETED");
        assert_eq!(task["status"]["message"]["messageId"], "m");
        let task = task_of_result(Flavor::V03, "q", json!({"kind": "message", "messageId": "m"}));
        assert_eq!((task["kind"].as_str(), task["status"]["state"].as_str()), (Some("task"), Some("completed")));
    }
}

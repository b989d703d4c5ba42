//! The JSON-RPC 2.0 envelope of A2A requests, as both protocol generations
//! name their methods (0.3: `message/send`…, 1.0: `SendMessage`…), and the
//! replies the gateway writes itself: a queued message as a submitted task,
//! and errors.

use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::error::GatewayError;

mod tasks;
pub use tasks::{
    completed_task, queue_item_task, queued_json, queued_task, rfc3339, task_of_queue_item, task_of_result, wrap_task,
};

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

/// A checked request: what the gateway decides by, and the caller's bytes,
/// which go to the agent unchanged.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub method: Method,
    pub flavor: Flavor,
    /// The caller's JSON-RPC id (`null` when it sent none), which every
    /// reply the gateway writes itself carries.
    id: Value,
    body: Bytes,
}

/// A request refused before it reached the agent: the error, and the
/// request's own id when it could be read, as JSON-RPC wants in the reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    pub id: Value,
    pub error: RpcError,
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
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const INTERNAL_ERROR: i64 = -32603;
/// A2A's TaskNotFoundError.
pub const TASK_NOT_FOUND: i64 = -32001;
/// A2A's TaskNotCancelableError.
pub const TASK_NOT_CANCELABLE: i64 = -32002;
/// The domain of the `ErrorInfo` that names an A2A error; the SDKs'
/// clients recognise errors by it and the reason.
pub const A2A_ERROR_DOMAIN: &str = "a2a-protocol.org";
/// The gateway's own: the agent or what it needs cannot be reached now.
pub const GATEWAY_UNAVAILABLE: i64 = -32054;

/// How an A2A error is told on each binding: the A2A specification's table
/// of error mappings (as the official SDKs apply it), and for the JSON-RPC
/// codes it does not list, the SDKs' own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorMapping {
    pub grpc: tonic::Code,
    pub http: http::StatusCode,
    /// What an `ErrorInfo` names it by.
    pub reason: &'static str,
}

/// The mapping of an agent's JSON-RPC error code (`None`: it gave none).
pub fn error_mapping(json_rpc_code: Option<i64>) -> ErrorMapping {
    use tonic::Code;
    let (grpc, http, reason) = match json_rpc_code {
        Some(TASK_NOT_FOUND) => (Code::NotFound, 404, "TASK_NOT_FOUND"),
        Some(TASK_NOT_CANCELABLE) => (Code::FailedPrecondition, 400, "TASK_NOT_CANCELABLE"),
        Some(-32003) => (Code::FailedPrecondition, 400, "PUSH_NOTIFICATION_NOT_SUPPORTED"),
        Some(-32004) => (Code::FailedPrecondition, 400, "UNSUPPORTED_OPERATION"),
        Some(-32005) => (Code::InvalidArgument, 400, "CONTENT_TYPE_NOT_SUPPORTED"),
        Some(-32006) => (Code::Internal, 500, "INVALID_AGENT_RESPONSE"),
        Some(-32007) => (Code::FailedPrecondition, 400, "EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
        Some(-32008) => (Code::FailedPrecondition, 400, "EXTENSION_SUPPORT_REQUIRED"),
        Some(-32009) => (Code::FailedPrecondition, 400, "VERSION_NOT_SUPPORTED"),
        Some(PARSE_ERROR | INVALID_REQUEST) => (Code::InvalidArgument, 400, "INVALID_REQUEST"),
        Some(METHOD_NOT_FOUND) => (Code::NotFound, 404, "METHOD_NOT_FOUND"),
        Some(INVALID_PARAMS) => (Code::InvalidArgument, 400, "INVALID_PARAMS"),
        Some(INTERNAL_ERROR) => (Code::Internal, 500, "INTERNAL_ERROR"),
        // The gateway's own, when an agent's stream breaks off.
        Some(GATEWAY_UNAVAILABLE) => (Code::Unavailable, 503, "UNAVAILABLE"),
        _ => (Code::Unknown, 500, "UNKNOWN_ERROR"),
    };
    let http = http::StatusCode::from_u16(http).expect("a valid status");
    ErrorMapping { grpc, http, reason }
}

impl Method {
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

    /// The method and the protocol generation a JSON-RPC method name belongs to.
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
    /// Checks a request as the A2A specification does (GW-2): a JSON-RPC
    /// 2.0 envelope, and for messages a `messageId`, which only the caller
    /// can choose since it is what makes a resend recognisable.
    pub fn parse(body: Bytes) -> Result<Self, Refused> {
        if let Some((method, flavor, id)) = valid_request(&body) {
            return Ok(Self { method, flavor, id, body });
        }
        let value: Value = serde_json::from_slice(&body).map_err(|e| Refused {
            id: Value::Null,
            error: RpcError::new(PARSE_ERROR, format!("the body is not JSON: {e}")),
        })?;
        let Value::Object(request) = value else {
            return Err(Refused {
                id: Value::Null,
                error: RpcError::of_request(
                    INVALID_REQUEST,
                    "a JSON-RPC request must be an object (batches are not supported)",
                    None,
                ),
            });
        };
        let (method, flavor, id) = check(&request)?;
        Ok(Self { method, flavor, id, body })
    }

    /// The envelope of a request built by the gateway itself (the gRPC
    /// binding's), checked like a caller's.
    pub fn from_request(request: Map<String, Value>) -> Result<Self, Refused> {
        let (method, flavor, id) = check(&request)?;
        let body = Bytes::from(Value::Object(request).to_string());
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
}

/// The longest A2A message id accepted.
const MAX_MESSAGE_ID: usize = 256;

/// The method, flavour and id of a request, or why it is refused, read
/// from the whole document: the slow road, which says precisely what is
/// wrong.
fn check(request: &Map<String, Value>) -> Result<(Method, Flavor, Value), Refused> {
    // The SDKs' servers answer with the request's id whenever it is one a
    // reply may carry, even when something else is wrong.
    let id = match request.get("id") {
        None => Value::Null,
        Some(id @ (Value::Null | Value::String(_) | Value::Number(_))) => id.clone(),
        Some(_) => {
            return Err(Refused {
                id: Value::Null,
                error: RpcError::of_request(INVALID_REQUEST, "id: must be a string, a number or null", None),
            });
        }
    };
    let refuse = |code, message: &str, field: Option<&str>| Refused {
        id: id.clone(),
        error: RpcError::of_request(code, message, field),
    };
    if request.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(refuse(INVALID_REQUEST, "jsonrpc: must be \"2.0\"", None));
    }
    let (method, flavor) = match request.get("method").and_then(Value::as_str) {
        Some(name) if !name.is_empty() => Method::named(name),
        _ => return Err(refuse(INVALID_REQUEST, "method: must be a non-empty string", None)),
    };
    if matches!(method, Method::Send | Method::Stream) {
        let message = request
            .get("params")
            .and_then(|p| p.get("message"))
            .and_then(Value::as_object)
            .ok_or_else(|| refuse(INVALID_PARAMS, "params.message: must be an object", Some("message")))?;
        match message.get("messageId") {
            Some(Value::String(id)) if id.len() > MAX_MESSAGE_ID => {
                let problem = "params.message.messageId: at most 256 characters";
                return Err(refuse(INVALID_PARAMS, problem, Some("message.message_id")));
            }
            Some(Value::String(id)) if !id.is_empty() => {}
            _ => {
                let problem = "params.message.messageId: required, a non-empty string";
                return Err(refuse(INVALID_PARAMS, problem, Some("message.message_id")));
            }
        }
    }
    Ok((method, flavor, id))
}

/// The method, flavour and id of a valid request, read without building
/// the document; `None` sends the request the slow road ([`check`]).
fn valid_request(body: &[u8]) -> Option<(Method, Flavor, Value)> {
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
    if request.jsonrpc != "2.0" || request.method.is_empty() {
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

    /// An error in the request itself, described as the A2A SDKs' servers
    /// describe theirs, so that their clients recognise it: in `data`, an
    /// `ErrorInfo` naming the A2A reason and, for a field that is missing
    /// or wrong, a `BadRequest` naming the field by its proto path. A body
    /// that is not JSON has no `data`, as theirs has none.
    pub fn of_request(code: i64, message: impl Into<String>, field: Option<&str>) -> Self {
        let message = message.into();
        if code == PARSE_ERROR {
            return Self::new(code, message);
        }
        let reason = error_mapping(Some(code)).reason;
        let mut details = vec![json!({
            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
            "reason": reason,
            "domain": A2A_ERROR_DOMAIN,
            "metadata": {},
        })];
        if let Some(field) = field {
            details.push(json!({
                "@type": "type.googleapis.com/google.rpc.BadRequest",
                "fieldViolations": [{ "field": field, "description": message }],
            }));
        }
        Self { code, message, data: Some(Value::Array(details)) }
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
            GatewayError::Unavailable { .. } | GatewayError::AgentUnreachable(_) => GATEWAY_UNAVAILABLE,
            GatewayError::ReplyTooLarge { .. } | GatewayError::BadAgentReply(_) => -32055,
            GatewayError::TaskNotCancelable(_) => TASK_NOT_CANCELABLE,
            // As the SDKs' agents answer for a config a task does not have.
            GatewayError::PushConfigNotFound(_) => TASK_NOT_FOUND,
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
        json!({ "jsonrpc": "2.0", "id": id, "error": self.into_object() })
    }

    /// The error object itself, as a response's `error` carries it.
    pub fn into_object(self) -> Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(data) = self.data {
            error["data"] = data;
        }
        error
    }
}

/// The `ErrorInfo` a JSON-RPC error object stands for, as the gRPC and
/// HTTP+JSON bindings retell it.
#[derive(Debug, PartialEq, Eq)]
pub struct ErrorInfoOf<'a> {
    pub domain: &'a str,
    pub reason: &'a str,
    /// As `google.rpc.ErrorInfo` holds it: text values only.
    pub metadata: std::collections::HashMap<String, String>,
}

/// Reads an error object's `ErrorInfo`: the one among typed details in
/// `data` (as the SDKs send them), else the domain and reason the gateway's
/// own errors put in `data` with their other fields, else the A2A reason of
/// the code with any other `data` kept whole under `data`.
pub fn error_info_of(error: &Value) -> ErrorInfoOf<'_> {
    let reason = error_mapping(error.get("code").and_then(Value::as_i64)).reason;
    let data = error.get("data").unwrap_or(&Value::Null);
    let text = |value: &Value| value.as_str().map_or_else(|| value.to_string(), str::to_owned);
    let described = typed_details(data, "google.rpc.ErrorInfo")
        .next()
        .or_else(|| data.get("domain").and(data.get("reason")).and(Some(data)));
    let Some(info) = described else {
        let metadata = (!data.is_null()).then(|| ("data".to_owned(), data.to_string())).into_iter().collect();
        return ErrorInfoOf { domain: A2A_ERROR_DOMAIN, reason, metadata };
    };
    // An ErrorInfo's metadata, or the other fields of the gateway's own.
    let fields = info.get("metadata").and_then(Value::as_object).or_else(|| info.as_object());
    let metadata = fields
        .into_iter()
        .flatten()
        .filter(|(key, _)| !matches!(key.as_str(), "@type" | "domain" | "reason"))
        .map(|(key, value)| (key.clone(), text(value)))
        .collect();
    let named = |key: &str| info.get(key).and_then(Value::as_str);
    ErrorInfoOf {
        domain: named("domain").unwrap_or(A2A_ERROR_DOMAIN),
        reason: named("reason").unwrap_or(reason),
        metadata,
    }
}

/// The typed details in an error's `data` whose `@type` names `message`
/// (the proto3 JSON of `google.rpc` messages, as the SDKs send them).
pub fn typed_details<'a>(data: &'a Value, message: &'static str) -> impl Iterator<Item = &'a Value> {
    let typed: &[Value] = data.as_array().map(Vec::as_slice).unwrap_or_default();
    typed.iter().filter(move |item| item.get("@type").and_then(Value::as_str).is_some_and(|t| t.ends_with(message)))
}

pub fn result_response(id: &Value, result: Value) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "result": result })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_a_valid_request_on_byte_for_byte_and_keeps_the_callers_id() {
        let valid: &[u8] =
            br#"{ "jsonrpc": "2.0", "id": "a", "method": "message/send", "params": {"message": {"messageId": "m"}} }"#;
        let envelope = Envelope::parse(Bytes::from_static(valid)).unwrap();
        assert_eq!(envelope.body(), valid);
        assert_eq!((envelope.id(), envelope.method, envelope.flavor), (&json!("a"), Method::Send, Flavor::V03));
        assert_eq!(envelope.message_id().as_deref(), Some("m"));
        // No id is a null id, and nothing is added to what the agent gets.
        let without_id: &[u8] = br#"{"jsonrpc":"2.0","method":"tasks/get","params":{"id":"t"}}"#;
        let envelope = Envelope::parse(Bytes::from_static(without_id)).unwrap();
        assert_eq!((envelope.id(), envelope.body()), (&Value::Null, Bytes::from_static(without_id)));
        assert_eq!(Flavor::of_request(r#"{"jsonrpc":"2.0","method":"message/send"}"#), Flavor::V03);
        assert_eq!(Flavor::of_request(r#"{"method":"SendMessage","params":{}}"#), Flavor::V10);
    }

    #[test]
    fn the_quick_read_and_the_full_check_agree_on_valid_requests() {
        for raw in [
            r#"{"jsonrpc":"2.0","id":"a\"b","method":"message/send","params":{"message":{"messageId":"m","x":[1,{}]}}}"#,
            r#"{"method":"SendMessage","id":-3,"jsonrpc":"2.0","params":{"message":{"messageId":"m"},"configuration":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1.5,"method":"tasks/get","params":{"id":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":"x","method":"GetExtendedAgentCard"}"#,
        ] {
            let (method, flavor, id) = valid_request(raw.as_bytes()).unwrap_or_else(|| panic!("{raw}"));
            let checked = Envelope::from_request(serde_json::from_str(raw).unwrap()).unwrap();
            assert_eq!((method, flavor, &id), (checked.method, checked.flavor, checked.id()), "{raw}");
        }
        for slow in [
            r#"{"jsonrpc":"2.0","method":"tasks/get","params":{"id":"t"}}"#,
            r#"{"jsonrpc":"2.0","id":null,"method":"tasks/get"}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{"messageId":""}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{"message":{}}}"#,
            r#"{"jsonrpc":"2.0","id":1,"id":2,"method":"tasks/get"}"#,
        ] {
            assert!(valid_request(slow.as_bytes()).is_none(), "{slow}");
        }
    }

    #[test]
    fn refuses_malformed_envelopes_with_the_json_rpc_codes_and_the_requests_id() {
        let refused = |body: &'static [u8]| {
            let Refused { id, error } = Envelope::parse(Bytes::from_static(body)).unwrap_err();
            (error.code, id)
        };
        assert_eq!(refused(b"not json"), (PARSE_ERROR, Value::Null));
        assert_eq!(refused(b"[]"), (INVALID_REQUEST, Value::Null));
        assert_eq!(refused(br#"{"jsonrpc":"1.0","id":4,"method":"x"}"#), (INVALID_REQUEST, json!(4)));
        assert_eq!(refused(br#"{"jsonrpc":"2.0","id":"r"}"#), (INVALID_REQUEST, json!("r")));
        assert_eq!(refused(br#"{"jsonrpc":"2.0","id":"r","method":""}"#), (INVALID_REQUEST, json!("r")));
        assert_eq!(refused(br#"{"jsonrpc":"2.0","id":{},"method":"x"}"#), (INVALID_REQUEST, Value::Null));
        assert_eq!(refused(br#"{"jsonrpc":"2.0","id":true,"method":"x"}"#), (INVALID_REQUEST, Value::Null));
        assert_eq!(
            refused(br#"{"jsonrpc":"2.0","id":1,"method":"message/send","params":{}}"#),
            (INVALID_PARAMS, json!(1))
        );
        for message in [r#"{}"#, r#"{"messageId":null}"#, r#"{"messageId":""}"#, r#"{"messageId":5}"#] {
            let body = format!(r#"{{"jsonrpc":"2.0","id":2,"method":"SendMessage","params":{{"message":{message}}}}}"#);
            let Refused { id, error } = Envelope::parse(Bytes::from(body)).unwrap_err();
            assert_eq!((error.code, id), (INVALID_PARAMS, json!(2)), "{message}");
        }
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

//! The HTTP+JSON binding of A2A 1.0 (GW-1), per workspace under
//! `/a2a/{workspace_id}/`: `message:send`, `message:stream`, `tasks`,
//! `tasks/{id}`, `tasks/{id}:cancel`, `tasks/{id}:subscribe`, the task's
//! `pushNotificationConfigs`, and `extendedAgentCard`.
//!
//! Each request is carried to the agent as the A2A 1.0 JSON-RPC request it
//! stands for, as the gRPC binding's are: this binding's bodies and query
//! parameters are the proto3 JSON of the same messages that JSON-RPC
//! carries in `params`. So it has every guarantee of the other two
//! (authentication, the SSRF guard, queueing, the native-session refusal),
//! and the agent's results come back as bodies, its errors as
//! `google.rpc.Status` with the A2A error mapping's HTTP status.

use bytes::Bytes;
use http::StatusCode;
use percent_encoding::percent_decode_str;
use serde_json::{Map, Value, json};

use crate::{
    error::GatewayError,
    jsonrpc::{self, ErrorMapping},
    wire::RequestMethod,
};

/// The media type of this binding's bodies.
pub const MEDIA_TYPE: &str = "application/a2a+json";

/// A request of this binding as the JSON-RPC method and params it stands for.
#[derive(Debug, Clone, PartialEq)]
pub struct RestCall {
    pub method: &'static str,
    pub params: Value,
}

impl RestCall {
    /// The A2A 1.0 JSON-RPC request this call is carried to the agent as.
    pub fn json_rpc_request(self) -> Map<String, Value> {
        Map::from_iter([
            ("jsonrpc".to_owned(), json!("2.0")),
            ("id".to_owned(), json!(uuid::Uuid::new_v4().to_string())),
            ("method".to_owned(), json!(self.method)),
            ("params".to_owned(), self.params),
        ])
    }
}

/// Why a request has no JSON-RPC method it stands for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoRoute {
    /// No operation lives at the path.
    NotFound,
    /// One does, for other methods: these.
    MethodNotAllowed(&'static str),
    /// The body is not a JSON object.
    BadBody(String),
}

/// The call a request on `path` (below the workspace's prefix, without the
/// leading slash) with `query` and `body` stands for.
pub fn route(method: RequestMethod, path: &str, query: &str, body: &[u8]) -> Result<RestCall, NoRoute> {
    use RequestMethod::{Delete, Get, Post};

    let decoded: Vec<String> =
        path.split('/').map(|segment| percent_decode_str(segment).decode_utf8_lossy().into_owned()).collect();
    let segments: Vec<&str> = decoded.iter().map(String::as_str).collect();
    let call = |name, params| Ok(RestCall { method: name, params });
    match (segments.as_slice(), method) {
        (["message:send"], Post) => call("SendMessage", object(body)?),
        (["message:stream"], Post) => call("SendStreamingMessage", object(body)?),
        (["message:send" | "message:stream"], _) => Err(NoRoute::MethodNotAllowed("POST")),
        (["tasks"], Get) => call("ListTasks", query_params(query)),
        (["tasks"], _) => Err(NoRoute::MethodNotAllowed("GET")),
        (["extendedAgentCard"], Get) => call("GetExtendedAgentCard", query_params(query)),
        (["extendedAgentCard"], _) => Err(NoRoute::MethodNotAllowed("GET")),
        (["tasks", task], method) => match (task.split_once(':'), method) {
            (None, Get) => call("GetTask", with(query_params(query), "id", task)),
            (None, _) => Err(NoRoute::MethodNotAllowed("GET")),
            (Some((id, "cancel")), Post) => call("CancelTask", with(object(body)?, "id", id)),
            (Some((_, "cancel")), _) => Err(NoRoute::MethodNotAllowed("POST")),
            (Some((id, "subscribe")), Get | Post) => call("SubscribeToTask", with(Value::Object(Map::new()), "id", id)),
            (Some((_, "subscribe")), _) => Err(NoRoute::MethodNotAllowed("GET, POST")),
            _ => Err(NoRoute::NotFound),
        },
        (["tasks", task, "pushNotificationConfigs"], Post) => {
            call("CreateTaskPushNotificationConfig", with(object(body)?, "taskId", task))
        }
        (["tasks", task, "pushNotificationConfigs"], Get) => {
            call("ListTaskPushNotificationConfigs", with(query_params(query), "taskId", task))
        }
        (["tasks", _, "pushNotificationConfigs"], _) => Err(NoRoute::MethodNotAllowed("GET, POST")),
        (["tasks", task, "pushNotificationConfigs", config], Get) => {
            call("GetTaskPushNotificationConfig", with(with(query_params(query), "taskId", task), "id", config))
        }
        (["tasks", task, "pushNotificationConfigs", config], Delete) => {
            call("DeleteTaskPushNotificationConfig", with(with(query_params(query), "taskId", task), "id", config))
        }
        (["tasks", _, "pushNotificationConfigs", _], _) => Err(NoRoute::MethodNotAllowed("GET, DELETE")),
        _ => Err(NoRoute::NotFound),
    }
}

/// A request body as the params object it carries; an empty body is an
/// empty object.
fn object(body: &[u8]) -> Result<Value, NoRoute> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Value::Object(Map::new()));
    }
    match serde_json::from_slice(body) {
        Ok(Value::Object(object)) => Ok(Value::Object(object)),
        Ok(_) => Err(NoRoute::BadBody("the body must be a JSON object".to_owned())),
        Err(e) => Err(NoRoute::BadBody(format!("the body is not JSON: {e}"))),
    }
}

/// Query parameters as proto3 JSON fields: names as sent (camelCase),
/// `true` and `false` as booleans, everything else as strings (which proto3
/// JSON readers accept for numbers, enums and timestamps alike).
fn query_params(query: &str) -> Value {
    let fields = url::form_urlencoded::parse(query.as_bytes()).map(|(name, value)| {
        let value = match value.as_ref() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(value.into_owned()),
        };
        (name.into_owned(), value)
    });
    Value::Object(fields.collect())
}

/// `params` with `key` set to `value`, from the path, which wins over the
/// body and the query.
fn with(mut params: Value, key: &str, value: &str) -> Value {
    if let Value::Object(object) = &mut params {
        object.insert(key.to_owned(), Value::String(value.to_owned()));
    }
    params
}

/// The reply of this binding to an agent's JSON-RPC response: its result
/// as the body, or its error as a `google.rpc.Status`.
pub fn from_response(response: &[u8]) -> (StatusCode, Bytes) {
    let parsed: Result<Value, _> = serde_json::from_slice(response);
    match parsed {
        Ok(Value::Object(mut response)) => match (response.remove("result"), response.remove("error")) {
            (Some(result), _) => (StatusCode::OK, Bytes::from(result.to_string())),
            (None, Some(error)) => error_reply(&error),
            (None, None) => gateway_error(&GatewayError::BadAgentReply("neither a result nor an error".to_owned())),
        },
        Ok(_) => gateway_error(&GatewayError::BadAgentReply("not a JSON-RPC response".to_owned())),
        Err(e) => gateway_error(&GatewayError::BadAgentReply(e.to_string())),
    }
}

/// The data of one event of a stream, as this binding sends it: the
/// result of the agent's JSON-RPC response, or its error's status.
pub fn event(response: &[u8]) -> Bytes {
    from_response(response).1
}

/// A JSON-RPC error object (an agent's, or the gateway's own) as this
/// binding's error reply: the agent's typed details passed on as it wrote
/// them (the SDKs' HTTP+JSON servers send the same), else the `ErrorInfo`
/// [`jsonrpc::error_info_of`] reads.
pub fn error_reply(error: &Value) -> (StatusCode, Bytes) {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("the agent answered with an error");
    let ErrorMapping { grpc, http, .. } = jsonrpc::error_mapping(error.get("code").and_then(Value::as_i64));
    let details = match error.get("data") {
        Some(Value::Array(details)) if details.iter().all(|d| d.get("@type").is_some()) => details.clone(),
        _ => vec![error_info(jsonrpc::error_info_of(error))],
    };
    (http, status_body(http, grpc, message, details))
}

/// A refusal of the gateway's own as this binding's error reply, with the
/// HTTP status the JSON-RPC front gives it too.
pub fn gateway_error(error: &GatewayError) -> (StatusCode, Bytes) {
    let (http, grpc) = (error.http_status(), error.code());
    let rpc = jsonrpc::RpcError::from_gateway(error).into_object();
    let message = rpc.get("message").and_then(Value::as_str).unwrap_or_default();
    (http, status_body(http, grpc, message, vec![error_info(jsonrpc::error_info_of(&rpc))]))
}

/// A request this binding cannot route, as its error reply.
pub fn refusal(status: StatusCode, grpc: tonic::Code, message: &str) -> Bytes {
    let reason = if status == StatusCode::NOT_FOUND { "NOT_FOUND" } else { "INVALID_REQUEST" };
    let info = jsonrpc::ErrorInfoOf { domain: jsonrpc::A2A_ERROR_DOMAIN, reason, metadata: Default::default() };
    status_body(status, grpc, message, vec![error_info(info)])
}

/// The proto3 JSON of an `ErrorInfo`.
fn error_info(info: jsonrpc::ErrorInfoOf<'_>) -> Value {
    json!({
        "@type": "type.googleapis.com/google.rpc.ErrorInfo",
        "reason": info.reason,
        "domain": info.domain,
        "metadata": info.metadata,
    })
}

/// The proto3 JSON of a `google.rpc.Status` as Google's HTTP APIs and the
/// A2A SDKs write it: the HTTP status, the gRPC status's name, the message
/// and the typed details.
fn status_body(http: StatusCode, grpc: tonic::Code, message: &str, details: Vec<Value>) -> Bytes {
    let status = json!({
        "error": {
            "code": http.as_u16(),
            "status": agentmesh_chassis::status::code_name(grpc),
            "message": message,
            "details": details,
        }
    });
    Bytes::from(status.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn routed(method: RequestMethod, path: &str, query: &str, body: &str) -> Result<RestCall, NoRoute> {
        route(method, path, query, body.as_bytes())
    }

    #[test]
    fn every_operation_of_the_binding_stands_for_its_json_rpc_method() {
        use RequestMethod::{Delete, Get, Post};
        let cases = [
            (
                Post,
                "message:send",
                "",
                r#"{"message":{"messageId":"m"}}"#,
                "SendMessage",
                json!({"message":{"messageId":"m"}}),
            ),
            (Post, "message:stream", "", r#"{"message":{}}"#, "SendStreamingMessage", json!({"message":{}})),
            (
                Get,
                "tasks",
                "contextId=c&pageSize=5&includeArtifacts=true",
                "",
                "ListTasks",
                json!({"contextId":"c","pageSize":"5","includeArtifacts":true}),
            ),
            (Get, "tasks/t%201", "historyLength=2", "", "GetTask", json!({"id":"t 1","historyLength":"2"})),
            (Post, "tasks/t:cancel", "", "", "CancelTask", json!({"id":"t"})),
            (Get, "tasks/t:subscribe", "", "", "SubscribeToTask", json!({"id":"t"})),
            (Post, "tasks/t:subscribe", "", "", "SubscribeToTask", json!({"id":"t"})),
            (
                Post,
                "tasks/t/pushNotificationConfigs",
                "",
                r#"{"url":"https://h/x","taskId":"other"}"#,
                "CreateTaskPushNotificationConfig",
                json!({"url":"https://h/x","taskId":"t"}),
            ),
            (
                Get,
                "tasks/t/pushNotificationConfigs",
                "pageSize=1",
                "",
                "ListTaskPushNotificationConfigs",
                json!({"taskId":"t","pageSize":"1"}),
            ),
            (
                Get,
                "tasks/t/pushNotificationConfigs/c",
                "",
                "",
                "GetTaskPushNotificationConfig",
                json!({"taskId":"t","id":"c"}),
            ),
            (
                Delete,
                "tasks/t/pushNotificationConfigs/c",
                "",
                "",
                "DeleteTaskPushNotificationConfig",
                json!({"taskId":"t","id":"c"}),
            ),
            (Get, "extendedAgentCard", "", "", "GetExtendedAgentCard", json!({})),
        ];
        for (method, path, query, body, expected, params) in cases {
            assert_eq!(routed(method, path, query, body), Ok(RestCall { method: expected, params }), "{path}");
        }
    }

    #[test]
    fn other_paths_methods_and_bodies_are_refused() {
        use RequestMethod::{Get, Other, Post};
        assert_eq!(routed(Get, "message:send", "", ""), Err(NoRoute::MethodNotAllowed("POST")));
        assert_eq!(routed(Post, "tasks/t", "", ""), Err(NoRoute::MethodNotAllowed("GET")));
        assert_eq!(
            routed(Other, "tasks/t/pushNotificationConfigs/c", "", ""),
            Err(NoRoute::MethodNotAllowed("GET, DELETE"))
        );
        for path in ["", "message", "tasks/t:pause", "tasks/t/artifacts", "v1/message:send"] {
            assert_eq!(routed(Post, path, "", "{}"), Err(NoRoute::NotFound), "{path}");
        }
        assert!(matches!(routed(Post, "message:send", "", "[1]"), Err(NoRoute::BadBody(_))));
        assert!(matches!(routed(Post, "message:send", "", "{"), Err(NoRoute::BadBody(_))));
    }

    #[test]
    fn results_become_bodies_and_errors_statuses_with_their_details() {
        let (status, body) = from_response(br#"{"jsonrpc":"2.0","id":1,"result":{"task":{"id":"t"}}}"#);
        assert_eq!((status, &body[..]), (StatusCode::OK, &br#"{"task":{"id":"t"}}"#[..]));

        let sdk_error = br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"Task not found","data":[
            {"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"TASK_NOT_FOUND","domain":"a2a-protocol.org","metadata":{}}]}}"#;
        let (status, body) = from_response(sdk_error);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(status, StatusCode::NOT_FOUND);
        assert_eq!((&body["error"]["code"], &body["error"]["status"]), (&json!(404), &json!("NOT_FOUND")));
        assert_eq!(body["error"]["details"][0]["reason"], "TASK_NOT_FOUND");

        let (status, body) =
            from_response(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32002,"message":"no","data":{"x":1}}}"#);
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!((status, &body["error"]["status"]), (StatusCode::BAD_REQUEST, &json!("FAILED_PRECONDITION")));
        assert_eq!(body["error"]["details"][0]["metadata"]["data"], r#"{"x":1}"#);

        let (status, _) = from_response(b"<html>");
        assert_eq!(status, StatusCode::BAD_GATEWAY);

        // The gateway's own error in a stream keeps its domain and reason.
        let own = jsonrpc::RpcError::from_gateway(&GatewayError::AgentUnreachable("reset".into()));
        let event: Value =
            serde_json::from_slice(&event(own.into_response(&Value::Null).to_string().as_bytes())).unwrap();
        let info = &event["error"]["details"][0];
        assert_eq!((&event["error"]["code"], &event["error"]["status"]), (&json!(503), &json!("UNAVAILABLE")));
        assert_eq!(info["domain"], agentmesh_chassis::status::ERROR_DOMAIN);
        assert_eq!(info["reason"], GatewayError::AgentUnreachable(String::new()).reason());
    }
}

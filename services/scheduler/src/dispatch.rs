//! Sending a run: an A2A `SendMessage` through the gateway's gRPC binding
//! (SCH-5), as the service "scheduler", with the run's derived message id so
//! that a resend of the same run is recognised downstream.

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::client::{ServiceChannel, service_channel};
use agentmesh_proto::a2a::v1::{
    self as a2a, Part, Role, SendMessageRequest, a2a_service_client::A2aServiceClient, part::Content,
    send_message_response::Payload,
};
use futures::future::BoxFuture;
use prost_types::{Struct, Value, value::Kind};
use tonic::{Code, metadata::MetadataValue};
use tonic_types::StatusExt;
use uuid::Uuid;

/// The longest reply summary kept in a run's history.
pub const SUMMARY_CHARS: usize = 1024;

/// One run's message.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub workspace_id: Uuid,
    pub message_id: String,
    pub text: String,
    /// A JSON object, or empty.
    pub metadata_json: String,
}

/// What the gateway did with a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// The agent replied; `summary` is the start of its text, empty when the
    /// reply had none.
    Replied { summary: String },
    /// The workspace could not take it now; the gateway queued it.
    Queued { queue_id: String },
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum DispatchError {
    /// The workspace queues in its own session and is busy: the gateway
    /// refuses to queue for it.
    #[error("the workspace is busy and queues in its own session, so the gateway does not queue for it")]
    NativeSessionBusy,
    #[error("{0}")]
    Failed(String),
}

/// Sends runs; a seam so that tests can make firing fail in ways a real
/// gateway cannot be made to (e.g. a panic).
pub trait Dispatcher: Send + Sync {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<Delivery, DispatchError>>;
}

/// The gateway's `lf.a2a.v1.A2AService`.
pub struct GatewayDispatcher {
    client: A2aServiceClient<ServiceChannel>,
    timeout: Duration,
}

impl GatewayDispatcher {
    pub fn new(gateway_address: &str, service_token: &str, timeout: Duration) -> anyhow::Result<Arc<Self>> {
        let client = A2aServiceClient::new(service_channel(gateway_address, service_token, None)?)
            .max_decoding_message_size(16 * 1024 * 1024);
        Ok(Arc::new(Self { client, timeout }))
    }
}

impl Dispatcher for GatewayDispatcher {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<Delivery, DispatchError>> {
        let mut client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let metadata = match message.metadata_json.as_str() {
                "" => None,
                json => Some(json_object(json).map_err(DispatchError::Failed)?),
            };
            let request = SendMessageRequest {
                tenant: message.workspace_id.to_string(),
                message: Some(a2a::Message {
                    message_id: message.message_id,
                    role: Role::User.into(),
                    parts: vec![Part { content: Some(Content::Text(message.text)), ..Default::default() }],
                    metadata,
                    ..Default::default()
                }),
                ..Default::default()
            };
            let mut request = tonic::Request::new(request);
            request.set_timeout(timeout);
            request.metadata_mut().insert("x-agentmesh-caller", MetadataValue::from_static("scheduler"));
            match client.send_message(request).await {
                Ok(reply) => Ok(delivery(reply.into_inner().payload)),
                Err(status) => Err(refusal(&status)),
            }
        })
    }
}

fn delivery(payload: Option<Payload>) -> Delivery {
    match payload {
        Some(Payload::Task(task)) => {
            if let Some(queue_id) = queued_id(&task) {
                return Delivery::Queued { queue_id };
            }
            let status_parts = task.status.iter().flat_map(|s| s.message.iter()).flat_map(|m| m.parts.iter());
            let artifact_parts = task.artifacts.iter().flat_map(|a| a.parts.iter());
            Delivery::Replied { summary: summary(status_parts.chain(artifact_parts)) }
        }
        Some(Payload::Message(message)) => Delivery::Replied { summary: summary(message.parts.iter()) },
        None => Delivery::Replied { summary: String::new() },
    }
}

/// The queue id the gateway puts in the metadata of the task standing for a
/// queued message (`metadata.agentmesh.queued.queueId`).
fn queued_id(task: &a2a::Task) -> Option<String> {
    let field = |s: &Struct, name: &str| s.fields.get(name).and_then(|v| v.kind.clone());
    let Some(Kind::StructValue(agentmesh)) = field(task.metadata.as_ref()?, "agentmesh") else { return None };
    let Some(Kind::StructValue(queued)) = field(&agentmesh, "queued") else { return None };
    match field(&queued, "queueId") {
        Some(Kind::StringValue(id)) => Some(id),
        _ => None,
    }
}

/// The text parts, joined, cut to [`SUMMARY_CHARS`].
fn summary<'a>(parts: impl Iterator<Item = &'a Part>) -> String {
    let text: Vec<&str> = parts
        .filter_map(|part| match &part.content {
            Some(Content::Text(text)) => Some(text.trim()),
            _ => None,
        })
        .filter(|text| !text.is_empty())
        .collect();
    text.join("\n").chars().take(SUMMARY_CHARS).collect()
}

fn refusal(status: &tonic::Status) -> DispatchError {
    let reason = status.get_details_error_info().map(|info| info.reason).unwrap_or_default();
    if status.code() == Code::Unavailable && reason == "NATIVE_SESSION_BUSY" {
        return DispatchError::NativeSessionBusy;
    }
    let reason = if reason.is_empty() { String::new() } else { format!(" [{reason}]") };
    DispatchError::Failed(format!("the gateway answered {:?}{reason}: {}", status.code(), status.message()))
}

/// A JSON object as a protobuf `Struct`.
fn json_object(json: &str) -> Result<Struct, String> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(map)) => Ok(to_struct(map)),
        _ => Err("the schedule's message metadata is not a JSON object".to_owned()),
    }
}

fn to_struct(map: serde_json::Map<String, serde_json::Value>) -> Struct {
    Struct { fields: map.into_iter().map(|(k, v)| (k, to_value(v))).collect() }
}

fn to_value(value: serde_json::Value) -> Value {
    use serde_json::Value as J;
    let kind = match value {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or_default()),
        J::String(s) => Kind::StringValue(s),
        J::Array(items) => {
            Kind::ListValue(prost_types::ListValue { values: items.into_iter().map(to_value).collect() })
        }
        J::Object(map) => Kind::StructValue(to_struct(map)),
    };
    Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(t: &str) -> Part {
        Part { content: Some(Content::Text(t.to_owned())), ..Default::default() }
    }

    #[test]
    fn a_reply_is_summarised_from_its_text_parts() {
        let message = a2a::Message { parts: vec![text("hello"), text("  "), text("world")], ..Default::default() };
        assert_eq!(delivery(Some(Payload::Message(message))), Delivery::Replied { summary: "hello\nworld".into() });
        let long = a2a::Message { parts: vec![text(&"x".repeat(5000))], ..Default::default() };
        let Delivery::Replied { summary } = delivery(Some(Payload::Message(long))) else { panic!("a reply") };
        assert_eq!(summary.chars().count(), SUMMARY_CHARS);
        assert_eq!(delivery(None), Delivery::Replied { summary: String::new() });
    }

    #[test]
    fn a_queued_task_is_recognised_by_its_metadata() {
        let queued = json_object(r#"{"agentmesh":{"queued":{"queueId":"q-1","depth":"3"}}}"#).unwrap();
        let task = a2a::Task { id: "q-1".into(), metadata: Some(queued), ..Default::default() };
        assert_eq!(delivery(Some(Payload::Task(task))), Delivery::Queued { queue_id: "q-1".into() });
    }

    #[test]
    fn metadata_must_be_an_object() {
        assert!(json_object("[1]").is_err());
        let s = json_object(r#"{"a":{"b":[1,true,null,"x"]}}"#).unwrap();
        assert!(matches!(s.fields["a"].kind, Some(Kind::StructValue(_))));
    }
}

//! The gRPC binding of A2A (`lf.a2a.v1.A2AService`, GW-1), the target
//! workspace chosen by each request's `tenant`. Requests are carried to the
//! agent as A2A 1.0 JSON-RPC, whose payloads are the proto3 JSON of the
//! same messages, so the transcoding is exact: protobuf to JSON and back
//! through the messages' descriptors.

use std::{
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
};

use agentmesh_chassis::{Caller, telemetry};
use agentmesh_proto::a2a::v1::{self as pb, a2a_service_server::A2aService};
use futures::{Stream, StreamExt};
use prost::Message as _;
use prost_reflect::{DescriptorPool, DeserializeOptions, DynamicMessage, ReflectMessage};
use serde_json::{Value, json};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, metadata::MetadataMap};
use tonic_types::{ErrorDetails, StatusExt};
use uuid::Uuid;

use crate::{
    error::GatewayError,
    gateway::{AgentAnswer, Dispatched, Gateway, Inbound, Streamed, Subscribed, parse_expires_in, parse_priority},
    jsonrpc::{self, Envelope, Flavor},
};

static DESCRIPTORS: LazyLock<DescriptorPool> = LazyLock::new(|| {
    DescriptorPool::decode(agentmesh_proto::FILE_DESCRIPTOR_SET).expect("the compiled-in descriptor set decodes")
});

pub struct A2aGrpc {
    gateway: Arc<Gateway>,
}

impl A2aGrpc {
    pub fn new(gateway: Arc<Gateway>) -> Self {
        Self { gateway }
    }

    /// The inbound request for the JSON-RPC `method` with `params`, sent by
    /// whoever the metadata says.
    async fn inbound(
        &self,
        metadata: &MetadataMap,
        caller: Caller,
        tenant: &str,
        method: &str,
        params: Value,
    ) -> Result<Inbound, Status> {
        let workspace_id: Uuid =
            tenant.parse().map_err(|_| GatewayError::invalid("tenant", "the target workspace's id (a UUID)"))?;
        let value = |name: &str| metadata.get(name).and_then(|v| v.to_str().ok());
        let sender = self.gateway.identify(caller, value("x-agentmesh-caller")).await?;
        let request = serde_json::Map::from_iter([
            ("jsonrpc".to_owned(), json!("2.0")),
            ("id".to_owned(), json!(Uuid::new_v4().to_string())),
            ("method".to_owned(), json!(method)),
            ("params".to_owned(), params),
        ]);
        // Refused as an SDK agent refuses it on this binding.
        let envelope =
            Envelope::from_request(request).map_err(|refused| agent_error_status(&refused.error.into_object()))?;
        Ok(Inbound {
            sender,
            workspace_id,
            envelope,
            traceparent: telemetry::current_traceparent().or_else(|| value("traceparent").map(str::to_owned)),
            priority: parse_priority(value("x-agentmesh-priority"))?,
            expires_in: parse_expires_in(value("x-agentmesh-expires-in"))?,
            // The request the agent gets is 1.0 JSON-RPC, made here.
            a2a_version: Some(value("a2a-version").unwrap_or("1.0").to_owned()),
        })
    }

    /// Sends `request` as JSON-RPC `method` and decodes the agent's result.
    async fn unary<Req, Resp>(
        &self,
        request: Request<Req>,
        method: &str,
        tenant: impl Fn(&Req) -> &str,
    ) -> Result<Response<Resp>, Status>
    where
        Req: prost::Message + Default,
        Resp: prost::Message + Default,
    {
        let caller = Caller::of(&request);
        let (metadata, _, message) = request.into_parts();
        let params = to_json(&message, method_input(method))?;
        let inbound = self.inbound(&metadata, caller, tenant(&message), method, params).await?;
        let gateway = self.gateway.clone();
        let reply = detached(async move { gateway.forward(inbound).await }).await?;
        Ok(Response::new(from_reply(&reply, method_output(method))?))
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::StreamResponse, Status>> + Send>>;

#[tonic::async_trait]
impl A2aService for A2aGrpc {
    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let caller = Caller::of(&request);
        let (metadata, _, message) = request.into_parts();
        let params = to_json(&message, "lf.a2a.v1.SendMessageRequest")?;
        let inbound = self.inbound(&metadata, caller, &message.tenant, "SendMessage", params).await?;
        let context_id = inbound.envelope.context_id();
        let gateway = self.gateway.clone();
        match detached(async move { gateway.send(inbound).await }).await? {
            Dispatched::Replied(reply) => Ok(Response::new(from_reply(&reply, "lf.a2a.v1.SendMessageResponse")?)),
            Dispatched::Queued(queued) => {
                let task = jsonrpc::queued_task(Flavor::V10, &queued, context_id.as_deref());
                Ok(Response::new(from_json(json!({ "task": task }), "lf.a2a.v1.SendMessageResponse")?))
            }
        }
    }

    type SendStreamingMessageStream = EventStream;

    async fn send_streaming_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = Caller::of(&request);
        let (metadata, _, message) = request.into_parts();
        let params = to_json(&message, "lf.a2a.v1.SendMessageRequest")?;
        let inbound = self.inbound(&metadata, caller, &message.tenant, "SendStreamingMessage", params).await?;
        let context_id = inbound.envelope.context_id();
        let stream: EventStream = match self.gateway.stream(inbound).await? {
            Streamed::Agent(answer) => agent_answer(answer)?,
            Streamed::Queued(queued) => {
                let task = jsonrpc::queued_task(Flavor::V10, &queued, context_id.as_deref());
                let event = from_json(json!({ "task": task }), "lf.a2a.v1.StreamResponse");
                Box::pin(futures::stream::iter([event]))
            }
        };
        Ok(Response::new(stream))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::Task>, Status> {
        let workspace_id = request.get_ref().tenant.parse::<Uuid>().ok();
        let task_id = request.get_ref().id.clone();
        if let Some(workspace_id) = workspace_id {
            let sender = self.gateway.identify(Caller::of(&request), None).await?;
            self.gateway.authorize(&sender, workspace_id).await?;
            if let Some(item) = self.gateway.queued_task(workspace_id, &task_id).await? {
                let task = jsonrpc::task_of_queue_item(Flavor::V10, &task_id, item);
                return Ok(Response::new(from_json(task, "lf.a2a.v1.Task")?));
            }
        }
        self.unary(request, "GetTask", |r| &r.tenant).await
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        self.unary(request, "ListTasks", |r| &r.tenant).await
    }

    async fn cancel_task(&self, request: Request<pb::CancelTaskRequest>) -> Result<Response<pb::Task>, Status> {
        if let Ok(workspace_id) = request.get_ref().tenant.parse::<Uuid>() {
            let sender = self.gateway.identify(Caller::of(&request), None).await?;
            let task_id = &request.get_ref().id;
            if let Some(item) = self.gateway.cancel_queued(&sender, workspace_id, task_id).await? {
                let task = jsonrpc::task_of_queue_item(Flavor::V10, task_id, item);
                return Ok(Response::new(from_json(task, "lf.a2a.v1.Task")?));
            }
        }
        self.unary(request, "CancelTask", |r| &r.tenant).await
    }

    type SubscribeToTaskStream = EventStream;

    async fn subscribe_to_task(
        &self,
        request: Request<pb::SubscribeToTaskRequest>,
    ) -> Result<Response<EventStream>, Status> {
        let caller = Caller::of(&request);
        let (metadata, _, message) = request.into_parts();
        let params = to_json(&message, "lf.a2a.v1.SubscribeToTaskRequest")?;
        let inbound = self.inbound(&metadata, caller, &message.tenant, "SubscribeToTask", params).await?;
        let stream: EventStream = match self.gateway.subscribe(inbound).await? {
            Subscribed::Agent(answer) => agent_answer(answer)?,
            Subscribed::QueueItem(updates) => Box::pin(ReceiverStream::new(updates).map(move |item| {
                let task = jsonrpc::task_of_queue_item(Flavor::V10, &message.id, item);
                from_json(json!({ "task": task }), "lf.a2a.v1.StreamResponse")
            })),
        };
        Ok(Response::new(stream))
    }

    async fn create_task_push_notification_config(
        &self,
        request: Request<pb::TaskPushNotificationConfig>,
    ) -> Result<Response<pb::TaskPushNotificationConfig>, Status> {
        self.unary(request, "CreateTaskPushNotificationConfig", |r| &r.tenant).await
    }

    async fn get_task_push_notification_config(
        &self,
        request: Request<pb::GetTaskPushNotificationConfigRequest>,
    ) -> Result<Response<pb::TaskPushNotificationConfig>, Status> {
        self.unary(request, "GetTaskPushNotificationConfig", |r| &r.tenant).await
    }

    async fn list_task_push_notification_configs(
        &self,
        request: Request<pb::ListTaskPushNotificationConfigsRequest>,
    ) -> Result<Response<pb::ListTaskPushNotificationConfigsResponse>, Status> {
        self.unary(request, "ListTaskPushNotificationConfigs", |r| &r.tenant).await
    }

    async fn get_extended_agent_card(
        &self,
        request: Request<pb::GetExtendedAgentCardRequest>,
    ) -> Result<Response<pb::AgentCard>, Status> {
        self.unary(request, "GetExtendedAgentCard", |r| &r.tenant).await
    }

    async fn delete_task_push_notification_config(
        &self,
        request: Request<pb::DeleteTaskPushNotificationConfigRequest>,
    ) -> Result<Response<()>, Status> {
        self.unary(request, "DeleteTaskPushNotificationConfig", |r| &r.tenant).await
    }
}

/// The agent's answer to a streaming request as the binding's stream: its
/// events, or the status its JSON reply stands for.
fn agent_answer(answer: AgentAnswer) -> Result<EventStream, Status> {
    let decode = |event: &[u8]| from_reply::<pb::StreamResponse>(event, "lf.a2a.v1.StreamResponse");
    Ok(match answer {
        AgentAnswer::Events(events) => Box::pin(ReceiverStream::new(events).map(move |event| decode(&event))),
        AgentAnswer::Reply(reply) => Box::pin(futures::stream::iter([Ok(decode(&reply)?)])),
    })
}

fn method_input(method: &str) -> &'static str {
    match method {
        "GetTask" => "lf.a2a.v1.GetTaskRequest",
        "ListTasks" => "lf.a2a.v1.ListTasksRequest",
        "CancelTask" => "lf.a2a.v1.CancelTaskRequest",
        "CreateTaskPushNotificationConfig" => "lf.a2a.v1.TaskPushNotificationConfig",
        "GetTaskPushNotificationConfig" => "lf.a2a.v1.GetTaskPushNotificationConfigRequest",
        "ListTaskPushNotificationConfigs" => "lf.a2a.v1.ListTaskPushNotificationConfigsRequest",
        "GetExtendedAgentCard" => "lf.a2a.v1.GetExtendedAgentCardRequest",
        _ => "lf.a2a.v1.DeleteTaskPushNotificationConfigRequest",
    }
}

fn method_output(method: &str) -> &'static str {
    match method {
        "GetTask" | "CancelTask" => "lf.a2a.v1.Task",
        "ListTasks" => "lf.a2a.v1.ListTasksResponse",
        "CreateTaskPushNotificationConfig" | "GetTaskPushNotificationConfig" => "lf.a2a.v1.TaskPushNotificationConfig",
        "ListTaskPushNotificationConfigs" => "lf.a2a.v1.ListTaskPushNotificationConfigsResponse",
        "GetExtendedAgentCard" => "lf.a2a.v1.AgentCard",
        _ => "google.protobuf.Empty",
    }
}

/// The proto3 JSON of `message`, without the tenant: the agent serves one
/// workspace and knows no tenants.
fn to_json<M: prost::Message>(message: &M, name: &str) -> Result<Value, Status> {
    let descriptor =
        DESCRIPTORS.get_message_by_name(name).ok_or_else(|| Status::internal(format!("no descriptor for {name}")))?;
    let dynamic = DynamicMessage::decode(descriptor, message.encode_to_vec().as_slice())
        .map_err(|e| Status::invalid_argument(format!("cannot read the request: {e}")))?;
    let mut value = serde_json::to_value(&dynamic)
        .map_err(|e| Status::invalid_argument(format!("cannot read the request: {e}")))?;
    if let Some(object) = value.as_object_mut() {
        object.remove("tenant");
    }
    Ok(value)
}

fn from_json<M: prost::Message + Default>(value: Value, name: &str) -> Result<M, Status> {
    let descriptor =
        DESCRIPTORS.get_message_by_name(name).ok_or_else(|| Status::internal(format!("no descriptor for {name}")))?;
    let options = DeserializeOptions::new().deny_unknown_fields(false);
    let dynamic = DynamicMessage::deserialize_with_options(descriptor, value, &options)
        .map_err(|e| Status::unknown(format!("the agent's reply does not fit {name}: {e}")))?;
    debug_assert_eq!(dynamic.descriptor().full_name(), name);
    M::decode(dynamic.encode_to_vec().as_slice()).map_err(|e| Status::internal(format!("re-encoding {name}: {e}")))
}

/// The result of an agent's JSON-RPC response as `name`, or its error as
/// the status the A2A specification maps it to.
fn from_reply<M: prost::Message + Default>(reply: &[u8], name: &str) -> Result<M, Status> {
    let mut response: Value =
        serde_json::from_slice(reply).map_err(|e| Status::from(GatewayError::BadAgentReply(e.to_string())))?;
    if let Some(result) = response.get_mut("result") {
        return from_json(result.take(), name);
    }
    Err(agent_error_status(response.get("error").unwrap_or(&Value::Null)))
}

/// A JSON-RPC error object of an agent's as a gRPC status: the code from
/// the A2A error mapping ([`jsonrpc::error_mapping`]), the agent's message,
/// and its details (the `ErrorInfo` [`jsonrpc::error_info_of`] reads, and
/// field violations when it listed some), as the SDKs' gRPC servers send
/// them.
fn agent_error_status(error: &Value) -> Status {
    let message = error.get("message").and_then(Value::as_str).unwrap_or("the agent answered with an error");
    let code = jsonrpc::error_mapping(error.get("code").and_then(Value::as_i64)).grpc;
    let jsonrpc::ErrorInfoOf { domain, reason, metadata } = jsonrpc::error_info_of(error);
    let mut details = ErrorDetails::with_error_info(reason, domain, metadata);
    let data = error.get("data").unwrap_or(&Value::Null);
    for request in jsonrpc::typed_details(data, "google.rpc.BadRequest") {
        let violations = request.get("fieldViolations").and_then(Value::as_array).into_iter().flatten();
        for violation in violations {
            let text = |key: &str| violation.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
            details.add_bad_request_violation(text("field"), text("description"));
        }
    }
    Status::with_error_details(code, message, details)
}

/// Runs `work` to its end even if the caller hangs up: tonic drops a
/// request's handler when its caller cancels, and a dispatch in flight must
/// not be aborted (GW-4), as it queues or records on its own. It runs on the
/// handler's task while the caller waits, and moves to a task of its own
/// only if the caller stops waiting, so the common case costs no hand-off
/// between tasks.
async fn detached<T: Send + 'static>(
    work: impl Future<Output = Result<T, GatewayError>> + Send + 'static,
) -> Result<T, GatewayError> {
    FinishOnDrop(Some(Box::pin(work))).await
}

struct FinishOnDrop<F: Future + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future + Send + 'static> Future for FinishOnDrop<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let work = self.0.as_mut().expect("polled after completion");
        let output = std::task::ready!(work.as_mut().poll(cx));
        self.0 = None;
        Poll::Ready(output)
    }
}

impl<F: Future + Send + 'static> Drop for FinishOnDrop<F> {
    fn drop(&mut self) {
        if let Some(work) = self.0.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(async move {
                work.await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tonic::Code;

    use super::*;

    fn error_info(status: &Status) -> tonic_types::ErrorInfo {
        status.get_details_error_info().expect("an ErrorInfo")
    }

    #[test]
    fn agent_errors_take_the_codes_of_the_a2a_error_mapping_and_name_their_reason() {
        for (json_rpc, code, reason) in [
            (-32001, Code::NotFound, "TASK_NOT_FOUND"),
            (-32002, Code::FailedPrecondition, "TASK_NOT_CANCELABLE"),
            (-32003, Code::FailedPrecondition, "PUSH_NOTIFICATION_NOT_SUPPORTED"),
            (-32004, Code::FailedPrecondition, "UNSUPPORTED_OPERATION"),
            (-32005, Code::InvalidArgument, "CONTENT_TYPE_NOT_SUPPORTED"),
            (-32006, Code::Internal, "INVALID_AGENT_RESPONSE"),
            (-32007, Code::FailedPrecondition, "EXTENDED_AGENT_CARD_NOT_CONFIGURED"),
            (-32008, Code::FailedPrecondition, "EXTENSION_SUPPORT_REQUIRED"),
            (-32009, Code::FailedPrecondition, "VERSION_NOT_SUPPORTED"),
            (-32601, Code::NotFound, "METHOD_NOT_FOUND"),
            (-32602, Code::InvalidArgument, "INVALID_PARAMS"),
            (-32603, Code::Internal, "INTERNAL_ERROR"),
            (-32099, Code::Unknown, "UNKNOWN_ERROR"),
        ] {
            let status = agent_error_status(&json!({"code": json_rpc, "message": "from the agent"}));
            assert_eq!((status.code(), status.message()), (code, "from the agent"), "{json_rpc}");
            let info = error_info(&status);
            assert_eq!((info.reason.as_str(), info.domain.as_str()), (reason, jsonrpc::A2A_ERROR_DOMAIN), "{json_rpc}");
        }
    }

    #[test]
    fn the_typed_details_an_sdk_agent_sends_become_the_status_details() {
        let error = json!({"code": -32602, "message": "bad", "data": [
            {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "INVALID_PARAMS",
             "domain": "a2a-protocol.org", "metadata": {"hint": "parts", "count": 2}},
            {"@type": "type.googleapis.com/google.rpc.BadRequest",
             "fieldViolations": [{"field": "message.parts", "description": "required"}]},
        ]});
        let status = agent_error_status(&error);
        let info = error_info(&status);
        assert_eq!((info.metadata["hint"].as_str(), info.metadata["count"].as_str()), ("parts", "2"));
        let violations = status.get_details_bad_request().expect("field violations").field_violations;
        assert_eq!((violations[0].field.as_str(), violations[0].description.as_str()), ("message.parts", "required"));
    }

    #[test]
    fn other_data_is_kept_whole_and_the_gateways_own_errors_keep_their_domain() {
        let status = agent_error_status(&json!({"code": -32001, "message": "gone", "data": {"taskId": "t"}}));
        assert_eq!(error_info(&status).metadata["data"], r#"{"taskId":"t"}"#);

        let own = jsonrpc::RpcError::from_gateway(&GatewayError::AgentUnreachable("reset".into()));
        let status = agent_error_status(&own.into_object());
        let info = error_info(&status);
        assert_eq!(status.code(), Code::Unavailable);
        assert_eq!(info.domain, agentmesh_chassis::status::ERROR_DOMAIN);
        assert_eq!(info.reason, GatewayError::AgentUnreachable(String::new()).reason());
    }
}

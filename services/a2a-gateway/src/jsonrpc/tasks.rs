//! The tasks the gateway writes itself, in either protocol generation: a
//! queued message as a submitted task, a queue item as its task now, and
//! an agent's reply as the task of the message it answered.

use agentmesh_proto::gateway::v1::{QueueItemState, QueuedReply};
use serde_json::{Value, json};
use uuid::Uuid;

use super::Flavor;
use crate::store::QueueItem;

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

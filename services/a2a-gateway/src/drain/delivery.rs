//! One attempt to deliver a queued item to its agent, and what its outcome
//! means for the item: kept apart from the drain loop that schedules them.

use std::{
    sync::Arc,
    time::{Duration, SystemTime},
};

use agentmesh_proto::gateway::v1::QueueItemState;
use serde_json::value::RawValue;
use uuid::Uuid;

use super::Drainer;
use crate::{
    agent_client::{AgentCall, Failure, IdleClock},
    directory::Target,
    jsonrpc::Flavor,
    store::{Completion, QueueItem},
};

/// How a delivery attempt ended.
pub(super) enum Attempt {
    /// The agent answered: its result is to be recorded with the item.
    Replied(Completion),
    /// The agent had no room: the item is to go back unconsumed, and the
    /// queue to rest as long as the agent asked, if it did.
    Busy { id: Uuid, retry_after: Option<Duration> },
    /// The attempt failed and counts; the target may be down.
    Failed { id: Uuid, attempts: u32, error: String, target_down: bool },
}

/// The parts of an agent's JSON-RPC response the drain needs, borrowed
/// from the reply rather than rebuilt.
#[derive(serde::Deserialize)]
struct AgentReply<'a> {
    #[serde(borrow)]
    result: Option<&'a RawValue>,
    #[serde(borrow)]
    error: Option<&'a RawValue>,
}

impl Drainer {
    pub(super) async fn deliver(&self, target: Arc<Target>, mut item: QueueItem) -> Attempt {
        let request = item.request_json.take().unwrap_or_default();
        let a2a_version = Flavor::of_request(&request).a2a_version();
        let call = AgentCall {
            url: &target.url,
            endpoint: target.endpoint.as_ref(),
            a2a_version,
            body: bytes::Bytes::from(request),
            traceparent: (!item.traceparent.is_empty()).then_some(item.traceparent.as_str()),
            fields: &[],
        };
        let idle = IdleClock::start(target.idle_timeout.unwrap_or(self.idle_timeout), target.activity.clone());
        let error = match self.agents.call(call, &idle).await {
            Ok(reply) => match serde_json::from_slice::<AgentReply>(&reply) {
                Ok(AgentReply { result: Some(result), .. }) => {
                    return Attempt::Replied(Completion { id: item.id, result_json: result.get().to_owned() });
                }
                Ok(AgentReply { error, .. }) => {
                    format!("the agent answered with an error: {}", error.map_or("no result", |e| e.get()))
                }
                Err(e) => format!("the agent's reply is not JSON-RPC: {e}"),
            },
            Err(Failure::Busy { retry_after, .. }) => return Attempt::Busy { id: item.id, retry_after },
            Err(failure) => {
                let target_down =
                    matches!(failure, Failure::Unreachable(_) | Failure::Dropped(_) | Failure::IdleTimeout(_));
                return Attempt::Failed {
                    id: item.id,
                    attempts: item.attempts,
                    error: failure.to_string(),
                    target_down,
                };
            }
        };
        Attempt::Failed { id: item.id, attempts: item.attempts, error, target_down: false }
    }

    /// Records a failed attempt; false if the item was no longer ours or the
    /// store failed.
    pub(super) async fn fail(&self, workspace_id: Uuid, id: Uuid, attempts: u32, error: &str) -> bool {
        let now = SystemTime::now();
        let next = now + self.settings.retry_backoff(attempts + 1);
        match self.store.fail_attempt(id, &self.owner, error, next, now).await {
            Ok(Some(state)) => {
                self.metrics.attempt_failed(state);
                if state == QueueItemState::DeadLetter {
                    self.announce_ended(vec![id]);
                } else {
                    self.changes.announce([id]);
                }
                tracing::warn!(queue_id = %id, %workspace_id, error, ?state, "delivery attempt failed");
                true
            }
            Ok(None) => {
                tracing::warn!(queue_id = %id, %workspace_id, error, "delivery attempt failed; another replica had taken the item over");
                false
            }
            // The lease runs out and the item is delivered again, with the
            // same message id.
            Err(e) => {
                tracing::warn!(queue_id = %id, error = %e, "cannot record a failed delivery attempt");
                false
            }
        }
    }
}

//! What happens to one A2A request (GW-2 … GW-5): find the target, check
//! that the caller may reach it, and either deliver the message now, queue
//! it durably for later, or refuse with a reason the caller can act on.

use std::{
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use agentmesh_chassis::Caller;
use agentmesh_proto::{
    gateway::v1::{QueueItemState, QueueReason, QueuedReply, UnavailableReason},
    registry::v1::WorkspaceStatus,
};
use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

use crate::{
    agent_client::{AgentCall, AgentClient, Failure, IdleClock, Opened, pump_events},
    directory::{Directory, Target},
    drain::Drainer,
    error::{GatewayError, Result},
    jsonrpc::Envelope,
    metrics::GatewayMetrics,
    push::PushRequest,
    settings::GatewaySettings,
    store::{NewQueueItem, QueueItem, QueueStore, StoreError},
};

/// Who sent a request, as its credential proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Operator,
    /// Another agentmesh service, e.g. the scheduler, under the name it gave.
    Service(String),
    Workspace(Uuid),
}

/// Caller names that only agentmesh's own services may use: an agent or
/// a person claiming them could pass off its messages as the mesh's.
const RESERVED_CALLER_NAMES: &[&str] = &["scheduler", "gateway", "registry", "provisioner", "system", "agentmesh"];

impl Sender {
    /// The caller as queue items record it.
    pub fn label(&self) -> String {
        match self {
            Sender::Operator => "operator:operator".to_owned(),
            Sender::Service(name) => format!("service:{name}"),
            Sender::Workspace(id) => format!("workspace:{id}"),
        }
    }

    /// A service credential may name the service it speaks for; nobody else
    /// may claim a name (the reserved-caller-name guard, GW-2).
    pub fn with_claimed_name(self, claimed: Option<&str>) -> Result<Self> {
        let Some(name) = claimed.map(str::trim).filter(|n| !n.is_empty()) else { return Ok(self) };
        let valid = name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        match self {
            Sender::Service(_) if valid => Ok(Sender::Service(name.to_owned())),
            Sender::Service(_) => Err(GatewayError::invalid("x-agentmesh-caller", "1-64 characters of [a-z0-9_-]")),
            _ if RESERVED_CALLER_NAMES.contains(&name.to_ascii_lowercase().as_str()) => Err(
                GatewayError::PermissionDenied(format!("the caller name {name:?} is reserved for agentmesh services")),
            ),
            _ => Err(GatewayError::PermissionDenied(
                "only service credentials may name a caller; others are known by their credential".to_owned(),
            )),
        }
    }
}

/// One A2A request on its way to a workspace.
pub struct Inbound {
    pub sender: Sender,
    pub workspace_id: Uuid,
    pub envelope: Envelope,
    pub traceparent: Option<String>,
    /// The `A2A-Version` the agent gets (`None`: none, and the agent judges
    /// the request as it would the caller's own).
    pub a2a_version: Option<String>,
    /// -100..100, higher first, if it has to be queued.
    pub priority: i32,
    /// How long it may wait in the queue; `None` is forever.
    pub expires_in: Option<Duration>,
}

/// What became of a request.
pub enum Dispatched {
    /// The agent's JSON-RPC response, as it sent it.
    Replied(Bytes),
    Queued(QueuedReply),
}

impl Dispatched {
    /// Why the message waits, if it was queued rather than answered.
    pub fn queue_reason(&self) -> Option<QueueReason> {
        match self {
            Dispatched::Replied(_) => None,
            Dispatched::Queued(queued) => Some(queued.reason()),
        }
    }
}

/// How the agent answered a streaming request or a subscription.
pub enum AgentAnswer {
    /// The data of each server-sent event, as the agent sent it.
    Events(mpsc::Receiver<Bytes>),
    /// A JSON-RPC response instead of a stream (an error, most often), as
    /// the agent sent it.
    Reply(Bytes),
}

/// What a subscription to a task follows.
pub enum Subscribed {
    /// The agent's own task.
    Agent(AgentAnswer),
    /// A queued message: its item now and at each change, the last final.
    QueueItem(mpsc::Receiver<QueueItem>),
}

/// How often a follower of a queued message looks at it again when this
/// replica announced no change: another replica may be delivering it.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

/// Whether nothing more will happen to a queue item.
pub(crate) fn is_final(state: QueueItemState) -> bool {
    matches!(state, QueueItemState::Delivered | QueueItemState::DeadLetter | QueueItemState::Dropped)
}

/// What became of a streaming request.
pub enum Streamed {
    Agent(AgentAnswer),
    Queued(QueuedReply),
}

impl Streamed {
    /// Why the message waits, if it was queued rather than streamed.
    pub fn queue_reason(&self) -> Option<QueueReason> {
        match self {
            Streamed::Agent(_) => None,
            Streamed::Queued(queued) => Some(queued.reason()),
        }
    }
}

pub struct Gateway {
    directory: Arc<Directory>,
    agents: AgentClient,
    store: QueueStore,
    drainer: Arc<Drainer>,
    settings: GatewaySettings,
    idle_timeout: Duration,
    metrics: GatewayMetrics,
}

impl Gateway {
    pub fn new(
        directory: Arc<Directory>,
        agents: AgentClient,
        store: QueueStore,
        drainer: Arc<Drainer>,
        settings: GatewaySettings,
        idle_timeout: Duration,
        metrics: GatewayMetrics,
    ) -> Self {
        Self { directory, agents, store, drainer, settings, idle_timeout, metrics }
    }

    pub fn metrics(&self) -> &GatewayMetrics {
        &self.metrics
    }

    pub fn directory(&self) -> &Arc<Directory> {
        &self.directory
    }

    pub fn store(&self) -> &QueueStore {
        &self.store
    }

    pub fn settings(&self) -> &GatewaySettings {
        &self.settings
    }

    /// Who the caller is, from its credential and, for services, the name
    /// it claims (`x-agentmesh-caller`).
    pub async fn identify(&self, caller: Caller, claimed: Option<&str>) -> Result<Sender> {
        let sender = match caller {
            Caller::Operator => Sender::Operator,
            Caller::Service => Sender::Service("unnamed".to_owned()),
            Caller::Bearer(token) => Sender::Workspace(self.directory.authenticate(&token).await?),
            Caller::Anonymous => {
                return Err(GatewayError::Unauthenticated(
                    "send `authorization: Bearer <token>` (a workspace, operator or service token)",
                ));
            }
        };
        sender.with_claimed_name(claimed)
    }

    /// The workspace the caller wants, once it is known the caller may
    /// reach it: itself, a peer the registry allows (REG-9), or anyone for
    /// operators and services.
    pub async fn authorize(&self, sender: &Sender, workspace_id: Uuid) -> Result<Arc<Target>> {
        let target = self.directory.target(workspace_id).await?;
        if let Sender::Workspace(caller) = sender
            && *caller != workspace_id
            && !self.directory.can_communicate(*caller, workspace_id).await?
        {
            return Err(GatewayError::PermissionDenied(format!(
                "workspace {caller} may not send to workspace {workspace_id}"
            )));
        }
        Ok(target)
    }

    /// Delivers a message now, or queues it when the target cannot take it
    /// now but is expected to (GW-5).
    pub async fn send(&self, inbound: Inbound) -> Result<Dispatched> {
        let started = Instant::now();
        let dispatched = self.deliver_or_queue(inbound).await;
        self.metrics.dispatched(started, dispatched.as_ref().map(Dispatched::queue_reason));
        dispatched
    }

    async fn deliver_or_queue(&self, inbound: Inbound) -> Result<Dispatched> {
        let target = self.authorize(&inbound.sender, inbound.workspace_id).await?;
        if let Some(reason) = self.must_wait(&target)? {
            return Box::pin(self.queue_or_refuse(&target, &inbound, reason, None)).await.map(Dispatched::Queued);
        }
        let idle = self.idle_clock(&target);
        match self.agents.call(agent_call(&target, &inbound), &idle).await {
            Ok(reply) => Ok(Dispatched::Replied(reply)),
            Err(failure) if failure.is_retryable() => {
                let reason = queue_reason(&failure);
                Box::pin(self.queue_or_refuse(&target, &inbound, reason, Some(&failure))).await.map(Dispatched::Queued)
            }
            Err(failure) => Err(self.refusal(&target, failure)),
        }
    }

    /// Opens a stream to the agent, or queues the message like [`send`]
    /// when the agent cannot take it now. Once the agent has accepted the
    /// stream the message is its: a stream that breaks later is reported,
    /// not queued again (that would deliver it twice).
    pub async fn stream(self: &Arc<Self>, inbound: Inbound) -> Result<Streamed> {
        let started = Instant::now();
        let streamed = self.stream_or_queue(inbound).await;
        self.metrics.dispatched(started, streamed.as_ref().map(Streamed::queue_reason));
        streamed
    }

    async fn stream_or_queue(self: &Arc<Self>, inbound: Inbound) -> Result<Streamed> {
        let target = self.authorize(&inbound.sender, inbound.workspace_id).await?;
        if let Some(reason) = self.must_wait(&target)? {
            return self.queue_or_refuse(&target, &inbound, reason, None).await.map(Streamed::Queued);
        }
        match self.relay_stream(&target, &inbound).await {
            Ok(answer) => Ok(Streamed::Agent(answer)),
            Err(failure) if failure.is_retryable() => {
                let reason = queue_reason(&failure);
                self.queue_or_refuse(&target, &inbound, reason, Some(&failure)).await.map(Streamed::Queued)
            }
            Err(failure) => Err(self.refusal(&target, failure)),
        }
    }

    /// Follows a task (`tasks/resubscribe`, `SubscribeToTask`). A task the
    /// gateway handed out for a queued message is followed here, until the
    /// message is delivered (its result announced, GW-7) or will never be;
    /// any other task is the agent's, and its stream is relayed.
    pub async fn subscribe(self: &Arc<Self>, inbound: Inbound) -> Result<Subscribed> {
        let target = self.authorize(&inbound.sender, inbound.workspace_id).await?;
        let task_id = inbound.envelope.task_id().ok_or_else(|| GatewayError::invalid("params.id", "the task's id"))?;
        if let Some(item) = self.queued_task(target.id, &task_id).await? {
            return Ok(Subscribed::QueueItem(self.follow_queue_item(item)));
        }
        self.relay_stream(&target, &inbound).await.map(Subscribed::Agent).map_err(|f| self.refusal(&target, f))
    }

    /// Sends the item now and again each time its state changes, ending
    /// with its final state. Changes this replica makes are announced to
    /// it at once; those of other replicas are found by looking again.
    fn follow_queue_item(self: &Arc<Self>, item: QueueItem) -> mpsc::Receiver<QueueItem> {
        let (updates, receiver) = mpsc::channel(4);
        let mut changes = self.drainer.follow(item.id);
        let store = self.store.clone();
        tokio::spawn(async move {
            let mut last = item;
            loop {
                let finished = is_final(last.state);
                if updates.send(last.clone()).await.is_err() || finished {
                    return;
                }
                let current = loop {
                    tokio::select! {
                        () = changes.changed() => {}
                        () = tokio::time::sleep(FOLLOW_POLL) => {}
                        () = updates.closed() => return,
                    }
                    let moved = match store.state(last.id).await {
                        Ok(Some(state)) if state != last.state => store.get(last.id).await,
                        Ok(Some(_)) => continue,
                        other => other.map(|_| None),
                    };
                    match moved {
                        Ok(Some(item)) => break item,
                        // Purged after its retention: nothing more will happen to it.
                        Ok(None) => return,
                        Err(e) => {
                            tracing::warn!(queue_id = %last.id, error = %e, "cannot look at a followed queue item")
                        }
                    }
                };
                last = current;
            }
        });
        receiver
    }

    /// Opens the agent's event stream for the request and relays its events
    /// from a task of its own, which reads to the end even if the caller
    /// hangs up (GW-4).
    async fn relay_stream(&self, target: &Target, inbound: &Inbound) -> std::result::Result<AgentAnswer, Failure> {
        let idle = self.idle_clock(target);
        let response = match self.agents.open_stream(agent_call(target, inbound), &idle).await? {
            Opened::Events(stream) => stream,
            Opened::Reply(reply) => return Ok(AgentAnswer::Reply(reply)),
        };
        let (events, receiver) = mpsc::channel(64);
        let workspace_id = target.id;
        let request_id = inbound.envelope.id().clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(failure) = pump_events(response, &idle, events.clone()).await {
                metrics.agent_failed(&failure);
                tracing::warn!(%workspace_id, error = %failure, "the agent's stream ended early");
                let error =
                    crate::jsonrpc::RpcError::from_gateway(&GatewayError::AgentUnreachable(failure.to_string()));
                let _ = events.send(Bytes::from(error.into_response(&request_id).to_string())).await;
            }
        });
        Ok(AgentAnswer::Events(receiver))
    }

    /// Passes a request that is not a message (task queries, push
    /// configuration…) to the agent; those are never queued, so a target
    /// that cannot answer now is UNAVAILABLE.
    pub async fn forward(&self, inbound: Inbound) -> Result<Bytes> {
        let target = self.authorize(&inbound.sender, inbound.workspace_id).await?;
        // A queued message's task is the gateway's, and so are its
        // push-notification configs.
        if let Some(request) = PushRequest::of(&inbound.envelope)
            && let Some(item) = self.queued_task(target.id, &request.task_id).await?
        {
            let result = self.drainer.pushes().answer(request, &item).await?;
            return Ok(Bytes::from(crate::jsonrpc::result_response(inbound.envelope.id(), result).to_string()));
        }
        let idle = self.idle_clock(&target);
        self.agents.call(agent_call(&target, &inbound), &idle).await.map_err(|f| self.refusal(&target, f))
    }

    /// The queue item behind a task id the gateway handed out, if the id is
    /// one and belongs to this workspace.
    pub async fn queued_task(&self, workspace_id: Uuid, task_id: &str) -> Result<Option<QueueItem>> {
        let Ok(id) = task_id.parse::<Uuid>() else { return Ok(None) };
        let item = self.store.get(id).await.map_err(store_error)?;
        Ok(item.filter(|item| item.workspace_id == workspace_id))
    }

    /// Cancels the queued message behind a task id the gateway handed out
    /// (`tasks/cancel`): dropped if it is still waiting, and the item
    /// returned as it then is. `None` if the id is no such task: it is the
    /// agent's, to which the cancel goes.
    pub async fn cancel_queued(&self, sender: &Sender, workspace_id: Uuid, task_id: &str) -> Result<Option<QueueItem>> {
        self.authorize(sender, workspace_id).await?;
        let Some(mut item) = self.queued_task(workspace_id, task_id).await? else { return Ok(None) };
        if matches!(item.state, QueueItemState::Queued | QueueItemState::DeadLetter) {
            let reason = format!("canceled by {}", sender.label());
            match self.store.cancel(item.id, &reason, SystemTime::now()).await.map_err(store_error)? {
                Some(dropped) => {
                    self.drainer.announce_ended(vec![item.id]);
                    tracing::info!(queue_id = %item.id, %workspace_id, "queued message canceled by its caller");
                    item = dropped;
                }
                // A drain claimed it first: as it is now.
                None => item = self.store.get(item.id).await.map_err(store_error)?.unwrap_or(item),
            }
        }
        match item.state {
            QueueItemState::Dropped => Ok(Some(item)),
            QueueItemState::Delivered => Err(GatewayError::TaskNotCancelable(format!(
                "queued message {task_id} was already delivered; cancel the agent's task that tasks/get returns"
            ))),
            QueueItemState::InFlight => Err(GatewayError::TaskNotCancelable(format!(
                "queued message {task_id} is claimed for delivery to the agent; cancel the agent's task once \
                 tasks/get returns it"
            ))),
            state => Err(GatewayError::TaskNotCancelable(format!(
                "queued message {task_id} changed while it was being canceled ({}); try again",
                state.as_str_name()
            ))),
        }
    }

    /// Whether a message for `target` must wait instead of being dispatched
    /// now; refuses targets that will not come back on their own.
    fn must_wait(&self, target: &Target) -> Result<Option<QueueReason>> {
        use WorkspaceStatus as S;
        match target.status {
            S::Online | S::Degraded if target.url.is_empty() => Ok(Some(QueueReason::TargetNotReady)),
            // Behind a backlog, a new message waits its turn: delivery is in
            // order per workspace.
            S::Online | S::Degraded if self.drainer.has_backlog(target.id) => Ok(Some(QueueReason::TargetBusy)),
            S::Online | S::Degraded => Ok(None),
            S::Provisioning | S::AwaitingAgent | S::Offline | S::Hibernated => Ok(Some(QueueReason::TargetNotReady)),
            S::Stopped | S::Failed | S::PolicyStopped | S::Removed | S::Stopping | S::Unspecified => {
                let status = target.status.as_str_name().trim_start_matches("WORKSPACE_STATUS_").to_owned();
                Err(GatewayError::TargetUnavailable {
                    message: format!(
                        "workspace {} is {} and takes no messages until it is started again{}",
                        target.id,
                        status.to_ascii_lowercase(),
                        if target.status_reason.is_empty() {
                            String::new()
                        } else {
                            format!(" ({})", target.status_reason)
                        }
                    ),
                    workspace_id: target.id.to_string(),
                    status,
                })
            }
        }
    }

    /// Queues the message, unless the target has its own session queue: then
    /// the caller is told to retry, and nothing is queued (GW-5). Callers on
    /// the delivery path box it, so that its store calls do not enlarge the
    /// future of every delivered message.
    async fn queue_or_refuse(
        &self,
        target: &Target,
        inbound: &Inbound,
        reason: QueueReason,
        failure: Option<&Failure>,
    ) -> Result<QueuedReply> {
        if target.capabilities.native_session {
            let retry_after = match failure {
                Some(Failure::Busy { retry_after: Some(after), .. }) => (*after).max(Duration::from_secs(1)),
                _ => Duration::from_secs(1),
            };
            return Err(GatewayError::Unavailable {
                reason: UnavailableReason::NativeSessionBusy,
                detail: format!(
                    "workspace {} is busy and queues in its own session; the gateway does not queue for it: retry later",
                    target.id
                ),
                workspace_id: target.id.to_string(),
                retry_after,
            });
        }
        let now = SystemTime::now();
        let item = NewQueueItem {
            workspace_id: target.id,
            message_id: inbound.envelope.message_id().unwrap_or_default(),
            caller: inbound.sender.label(),
            priority: inbound.priority,
            reason,
            max_attempts: self.settings.max_attempts,
            expires_at: inbound.expires_in.map(|after| now + after),
            request_json: String::from_utf8_lossy(&inbound.envelope.body()).into_owned(),
            traceparent: inbound.traceparent.clone().unwrap_or_default(),
        };
        let enqueued = self.store.enqueue(item, now).await.map_err(store_error)?;
        self.drainer.note_arrival(target.id, enqueued.item.priority);
        if let Some(Failure::Busy { retry_after: Some(after), .. }) = failure {
            self.drainer.rest(target.id, *after);
        }
        if target.status == WorkspaceStatus::Hibernated {
            let directory = self.directory.clone();
            let id = target.id;
            tokio::spawn(async move { directory.wake(id).await });
        }
        tracing::info!(
            workspace_id = %target.id,
            queue_id = %enqueued.item.id,
            depth = enqueued.depth,
            duplicate = enqueued.duplicate,
            reason = reason.as_str_name(),
            cause = failure.map(ToString::to_string).unwrap_or_default(),
            "message queued"
        );
        Ok(QueuedReply {
            queue_id: enqueued.item.id.to_string(),
            workspace_id: target.id.to_string(),
            message_id: enqueued.item.message_id.clone(),
            depth: enqueued.depth,
            reason: enqueued.item.reason as i32,
            duplicate: enqueued.duplicate,
            enqueued_at: Some(enqueued.item.enqueued_at.into()),
            expires_at: enqueued.item.expires_at.map(Into::into),
        })
    }

    fn idle_clock(&self, target: &Target) -> IdleClock {
        // The workspace's declared override wins (GW-4).
        IdleClock::start(target.idle_timeout.unwrap_or(self.idle_timeout), target.activity.clone())
    }

    fn refusal(&self, target: &Target, failure: Failure) -> GatewayError {
        match failure {
            Failure::Refused(reason) => {
                tracing::warn!(workspace_id = %target.id, %reason, "agent URL refused at dispatch");
                GatewayError::UrlRefused { workspace_id: target.id.to_string(), reason }
            }
            Failure::TooLarge => GatewayError::ReplyTooLarge { limit: crate::agent_client::MAX_REPLY_BYTES },
            Failure::Http { status } => GatewayError::BadAgentReply(format!("HTTP {status} without a JSON-RPC body")),
            retryable => GatewayError::Unavailable {
                reason: UnavailableReason::Unspecified,
                detail: retryable.to_string(),
                workspace_id: target.id.to_string(),
                retry_after: Duration::from_secs(1),
            },
        }
    }
}

fn agent_call<'a>(target: &'a Target, inbound: &'a Inbound) -> AgentCall<'a> {
    AgentCall {
        url: &target.url,
        endpoint: target.endpoint.as_ref(),
        body: inbound.envelope.body(),
        traceparent: inbound.traceparent.as_deref(),
        a2a_version: inbound.a2a_version.as_deref(),
        fields: &[],
    }
}

pub fn queue_reason(failure: &Failure) -> QueueReason {
    match failure {
        Failure::Busy { .. } => QueueReason::TargetBusy,
        Failure::Dropped(_) => QueueReason::ConnectionDropped,
        Failure::IdleTimeout(_) => QueueReason::IdleTimeout,
        _ => QueueReason::TargetNotReady,
    }
}

pub fn store_error(error: StoreError) -> GatewayError {
    match error {
        StoreError::InvalidPageToken => GatewayError::invalid("page_token", "not a token this gateway handed out"),
        StoreError::InvalidRequest(problem) => GatewayError::invalid("request", problem),
        other => GatewayError::store_unavailable(&other),
    }
}

/// A queueing priority given by a caller: -100..100, 0 when absent.
pub fn parse_priority(raw: Option<&str>) -> Result<i32> {
    match raw {
        None => Ok(0),
        Some(raw) => raw
            .trim()
            .parse::<i32>()
            .ok()
            .filter(|p| (-100..=100).contains(p))
            .ok_or_else(|| GatewayError::invalid("x-agentmesh-priority", "an integer from -100 to 100")),
    }
}

/// The longest a message may be asked to wait in the queue.
const MAX_EXPIRY: Duration = Duration::from_secs(30 * 24 * 3600);

/// How long a caller lets its message wait in the queue, in seconds.
pub fn parse_expires_in(raw: Option<&str>) -> Result<Option<Duration>> {
    match raw {
        None => Ok(None),
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs)
            .filter(|d| !d.is_zero() && *d <= MAX_EXPIRY)
            .map(Some)
            .ok_or_else(|| GatewayError::invalid("x-agentmesh-expires-in", "seconds, from 1 to 2592000")),
    }
}

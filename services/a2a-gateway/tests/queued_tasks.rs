//! The task a caller holds for its queued message. It can be followed
//! (GW-7: the result is announced so that the caller can collect it) with
//! `tasks/resubscribe` or `SubscribeToTask`, and the subscription ends with
//! the agent's reply once the message is delivered, on whichever replica
//! delivers it; and it can be canceled while the message still waits.

use std::time::Duration;

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::a2a::v1::{self as a2a_pb, stream_response::Payload};
use serde_json::{Value, json};

/// Scans are off: only a heartbeat reporting room starts a drain, so a
/// queued message stays put until the test frees the agent.
const NO_SCANS: u64 = 600_000;

/// A gateway (scans off) in front of an echo agent that is busy, so that
/// what is sent now is queued.
struct BusyMesh {
    /// Kept running for as long as the test holds the mesh.
    _registry: RegistryNode,
    agent: EchoAgent,
    workspace: Workspace,
    gateway: GatewayNode,
    url: String,
}

impl BusyMesh {
    async fn start() -> Self {
        let registry = RegistryNode::start().await;
        let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
        let gateway = GatewayNode::start(&registry, |s| s.scan_interval_ms = NO_SCANS).await;
        let url = gateway.a2a_url(&workspace.id);
        agent.set_busy(true).await;
        Self { _registry: registry, agent, workspace, gateway, url }
    }

    /// Queues `text` (also its message id) over JSON-RPC with `headers`,
    /// and returns its queue id.
    async fn queue(&self, text: &str, headers: &[(&str, &str)]) -> String {
        let reply = Caller::operator().post(&self.url, &send_request(text, text), headers).await;
        reply.queued()["queueId"].as_str().unwrap().to_owned()
    }
}

fn follow_request(task_id: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": "follow", "method": "tasks/resubscribe", "params": { "id": task_id } })
}

/// The last event of a stream that must end by itself.
async fn last_event(events: &mut Events) -> Value {
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("the stream ends")
    {
        last = Some(event);
    }
    last.expect("at least one event")
}

#[tokio::test]
async fn a_follower_of_a_queued_message_gets_the_agents_reply_when_it_is_delivered() {
    let mesh = BusyMesh::start().await;
    let (agent, workspace, url) = (&mesh.agent, &mesh.workspace, &mesh.url);
    let queue_id = mesh.queue("hello later", &[]).await;

    let mut events = Caller::operator().events(url, &follow_request(&queue_id)).await;
    let first = events.next().await.unwrap();
    assert_eq!(first["id"], "follow", "{first}");
    assert_eq!(
        (first["result"]["id"].as_str(), first["result"]["kind"].as_str()),
        (Some(queue_id.as_str()), Some("task"))
    );
    assert_eq!(first["result"]["status"]["state"], "submitted", "{first}");

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let last = last_event(&mut events).await;
    assert_eq!(last["result"]["status"]["state"], "completed", "{last}");
    assert!(reply_text(&last["result"]["status"]["message"]).contains("hello later"), "{last}");
    assert_eq!(agent.received().await, ["hello later"]);
}

#[tokio::test]
async fn a_message_delivered_by_another_replica_is_announced_to_its_follower() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let database = format!("sqlite://{}", dir.path().join("gateway.db").display());
    let no_scans = |s: &mut agentmesh_a2a_gateway::settings::GatewaySettings| s.scan_interval_ms = NO_SCANS;
    // Only the replica that queued the message knows of a backlog, so it is
    // the one that drains; the follower's replica learns of the delivery
    // from the store alone.
    let draining = GatewayNode::start_on(&registry, &database, &dir.path().join("a"), no_scans).await;
    let following = GatewayNode::start_on(&registry, &database, &dir.path().join("b"), no_scans).await;
    agent.set_busy(true).await;
    let queued = Caller::operator().send(&draining.a2a_url(&workspace.id), "hello elsewhere", "m-elsewhere").await;
    let queue_id = queued.queued()["queueId"].as_str().unwrap().to_owned();

    let mut events = Caller::operator().events(&following.a2a_url(&workspace.id), &follow_request(&queue_id)).await;
    assert_eq!(events.next().await.unwrap()["result"]["status"]["state"], "submitted");
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let last = last_event(&mut events).await;
    assert_eq!(last["result"]["status"]["state"], "completed", "{last}");
    assert!(reply_text(&last["result"]["status"]["message"]).contains("hello elsewhere"), "{last}");
}

#[tokio::test]
async fn subscribe_to_task_over_grpc_follows_a_queued_message_to_its_reply() {
    let mesh = BusyMesh::start().await;
    let (agent, workspace) = (&mesh.agent, &mesh.workspace);
    let mut a2a = mesh.gateway.a2a();
    let message = a2a_pb::Message {
        message_id: "m-grpc-later".into(),
        role: a2a_pb::Role::User as i32,
        parts: vec![a2a_pb::Part {
            content: Some(a2a_pb::part::Content::Text("hello over grpc".into())),
            ..Default::default()
        }],
        ..Default::default()
    };
    let send =
        a2a_pb::SendMessageRequest { tenant: workspace.id.clone(), message: Some(message), ..Default::default() };
    let reply = a2a.send_message(send).await.unwrap().into_inner();
    let Some(a2a_pb::send_message_response::Payload::Task(queued)) = reply.payload else { panic!("{reply:?}") };
    assert_eq!(queued.status.as_ref().unwrap().state(), a2a_pb::TaskState::Submitted);

    let follow = a2a_pb::SubscribeToTaskRequest { tenant: workspace.id.clone(), id: queued.id.clone() };
    let mut stream = a2a.subscribe_to_task(follow).await.unwrap().into_inner();
    let task = |event: a2a_pb::StreamResponse| match event.payload {
        Some(Payload::Task(task)) => task,
        other => panic!("not a task: {other:?}"),
    };
    let first = task(stream.message().await.unwrap().unwrap());
    assert_eq!((first.id.as_str(), first.status.unwrap().state()), (queued.id.as_str(), a2a_pb::TaskState::Submitted));

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let mut last = None;
    while let Some(event) = tokio::time::timeout(Duration::from_secs(10), stream.message()).await.unwrap().unwrap() {
        last = Some(task(event));
    }
    let status = last.expect("a final event").status.unwrap();
    assert_eq!(status.state(), a2a_pb::TaskState::Completed);
    let text = status.message.unwrap().parts.into_iter().find_map(|part| match part.content {
        Some(a2a_pb::part::Content::Text(text)) => Some(text),
        _ => None,
    });
    assert!(text.unwrap().contains("hello over grpc"));
}

#[tokio::test]
async fn a_follower_learns_that_an_operator_dropped_its_message() {
    let mesh = BusyMesh::start().await;
    let (agent, workspace, gateway, url) = (&mesh.agent, &mesh.workspace, &mesh.gateway, &mesh.url);
    // Expiring at once: the operator's drop of expired items takes it.
    let queue_id = mesh.queue("never delivered", &[("x-agentmesh-expires-in", "1")]).await;
    let mut events = Caller::operator().events(url, &follow_request(&queue_id)).await;
    assert_eq!(events.next().await.unwrap()["result"]["status"]["state"], "submitted");

    let drop_expired = agentmesh_proto::gateway::v1::DropStaleItemsRequest {
        workspace_id: workspace.id.clone(),
        expired: true,
        ..Default::default()
    };
    eventually(Duration::from_secs(5), || async {
        let dropped = gateway.control().drop_stale_items(drop_expired.clone()).await.unwrap().into_inner();
        (dropped.dropped_count == 1).then_some(())
    })
    .await;
    let last = last_event(&mut events).await;
    assert_eq!(last["result"]["status"]["state"], "canceled", "{last}");
    assert!(agent.received().await.is_empty());
}

#[tokio::test]
async fn following_needs_a_task_id_and_access_to_the_workspace() {
    let registry = RegistryNode::start().await;
    let (_agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let (_other_agent, other) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let url = gateway.a2a_url(&workspace.id);

    let no_id = json!({ "jsonrpc": "2.0", "id": 1, "method": "tasks/resubscribe", "params": {} });
    let reply = Caller::operator().post(&url, &no_id, &[]).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert!(reply.body["error"]["message"].as_str().unwrap().contains("params.id"), "{}", reply.body);

    // Another workspace's credential may not follow this one's tasks unless
    // the registry lets the two communicate.
    let reply = Caller::new(&other.token).post(&url, &follow_request(&uuid::Uuid::new_v4().to_string()), &[]).await;
    assert_eq!(reply.status, 403, "{}", reply.body);
}

#[tokio::test]
async fn a_caller_cancels_its_waiting_message_and_the_rest_is_delivered() {
    let mesh = BusyMesh::start().await;
    let (agent, workspace, gateway, url) = (&mesh.agent, &mesh.workspace, &mesh.gateway, &mesh.url);
    let mut a2a = gateway.a2a();
    let mut queue_ids = Vec::new();
    for text in ["cancel over json-rpc", "cancel over grpc", "keep"] {
        queue_ids.push(mesh.queue(text, &[]).await);
    }
    let mut events = Caller::operator().events(url, &follow_request(&queue_ids[0])).await;
    assert_eq!(events.next().await.unwrap()["result"]["status"]["state"], "submitted");

    let cancel = |id: &str| json!({ "jsonrpc": "2.0", "id": "c", "method": "tasks/cancel", "params": { "id": id } });
    let canceled = Caller::operator().post(url, &cancel(&queue_ids[0]), &[]).await;
    assert_eq!(canceled.status, 200, "{}", canceled.body);
    assert_eq!(canceled.body["result"]["status"]["state"], "canceled", "{}", canceled.body);
    assert_eq!(canceled.body["result"]["metadata"]["agentmesh"]["queueState"], "QUEUE_ITEM_STATE_DROPPED");
    // Its follower hears of it, and canceling again changes nothing.
    assert_eq!(last_event(&mut events).await["result"]["status"]["state"], "canceled");
    let again = Caller::operator().post(url, &cancel(&queue_ids[0]), &[]).await;
    assert_eq!(again.body["result"]["status"]["state"], "canceled", "{}", again.body);

    let request =
        a2a_pb::CancelTaskRequest { tenant: workspace.id.clone(), id: queue_ids[1].clone(), ..Default::default() };
    let task = a2a.cancel_task(request).await.unwrap().into_inner();
    assert_eq!((task.id.as_str(), task.status.unwrap().state()), (queue_ids[1].as_str(), a2a_pb::TaskState::Canceled));

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let delivered = agentmesh_proto::gateway::v1::GetQueueItemRequest { queue_id: queue_ids[2].clone() };
    eventually(Duration::from_secs(10), || async {
        let item = gateway.control().get_queue_item(delivered.clone()).await.unwrap().into_inner().item.unwrap();
        (item.state() == agentmesh_proto::gateway::v1::QueueItemState::Delivered).then_some(())
    })
    .await;
    assert_eq!(agent.received().await, ["keep"], "canceled messages never reach the agent");

    // Once delivered, the message is the agent's: the gateway says so.
    let late = Caller::operator().post(url, &cancel(&queue_ids[2]), &[]).await;
    assert_eq!(late.status, 409, "{}", late.body);
    assert_eq!(late.body["error"]["code"], -32002, "A2A's TaskNotCancelableError: {}", late.body);
    let request =
        a2a_pb::CancelTaskRequest { tenant: workspace.id.clone(), id: queue_ids[2].clone(), ..Default::default() };
    let status = a2a.cancel_task(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
}

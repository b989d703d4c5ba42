//! The durable queue seen from outside (GW-5 … GW-7): busy and unready
//! targets get their messages queued, drained in order once the registry
//! reports room, each delivered once as the agent sees it.

use std::time::Duration;

use agentmesh_a2a_gateway::settings::GatewaySettings;
use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{
    a2a::v1 as a2a_pb,
    gateway::v1::{self as gpb, QueueItemState},
    registry::v1::{Capabilities, WorkspaceStatus},
};
use serde_json::json;
use tonic_types::StatusExt;

async fn item(gateway: &GatewayNode, queue_id: &str) -> gpb::QueueItem {
    let request = gpb::GetQueueItemRequest { queue_id: queue_id.to_owned() };
    gateway.control().get_queue_item(request).await.unwrap().into_inner().item.unwrap()
}

async fn depth(gateway: &GatewayNode) -> u64 {
    let stats = gateway.control().get_queue_stats(gpb::GetQueueStatsRequest::default()).await.unwrap().into_inner();
    stats.totals.unwrap().queued
}

/// A mesh whose agent takes 400 ms per message, with three messages queued
/// while it was busy and their drain just started (room reported).
struct Mesh {
    /// Kept running for as long as the test holds the mesh.
    registry: RegistryNode,
    agent: EchoAgent,
    workspace: Workspace,
    gateway: GatewayNode,
    queue_ids: Vec<String>,
}

async fn drain_of_three_slow_messages(tune: impl FnOnce(&mut GatewaySettings)) -> Mesh {
    let registry = RegistryNode::start().await;
    let config = EchoConfig { delay: Duration::from_millis(400), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, config).await;
    let gateway = GatewayNode::start(&registry, tune).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;
    let mut queue_ids = Vec::new();
    for n in 0..3 {
        let reply = Caller::operator().send(&url, &format!("text {n}"), &format!("m-{n}")).await;
        queue_ids.push(reply.queued()["queueId"].as_str().unwrap().to_owned());
    }

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    Mesh { registry, agent, workspace, gateway, queue_ids }
}

#[tokio::test]
async fn busy_messages_are_queued_then_drained_in_order_once_room_is_reported() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    // Only the heartbeat below starts a drain: a scan retrying the busy agent
    // would take items out of the depth counted here for a moment.
    let gateway = GatewayNode::start(&registry, |s| s.scan_interval_ms = 600_000).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;

    let mut queue_ids = Vec::new();
    for n in 0..5 {
        let reply = Caller::operator().send(&url, &format!("text {n}"), &format!("m-{n}")).await;
        let queued = reply.queued();
        assert_eq!(queued["depth"], (n + 1).to_string(), "{queued}");
        assert_eq!(queued["reason"], "QUEUE_REASON_TARGET_BUSY");
        assert_eq!(queued["duplicate"], false);
        queue_ids.push(queued["queueId"].as_str().unwrap().to_owned());
    }
    // The same message id again is the same item, not a second one.
    let again = Caller::operator().send(&url, "text 2", "m-2").await;
    let again = again.queued();
    assert_eq!((again["duplicate"].as_bool(), again["queueId"].as_str()), (Some(true), Some(queue_ids[2].as_str())));
    assert_eq!(again["depth"], "5");
    assert!(agent.received().await.is_empty());

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let expected: Vec<String> = (0..5).map(|n| format!("text {n}")).collect();
    eventually(Duration::from_secs(10), || async { (agent.received().await == expected).then_some(()) }).await;
    assert_eq!(agent.stats().await["duplicates"], 0);

    // The result is kept with the item, and the queue id works as a task id.
    let delivered = item(&gateway, &queue_ids[0]).await;
    assert_eq!(delivered.state(), QueueItemState::Delivered);
    assert!(delivered.result_json.contains("text 0"), "{}", delivered.result_json);
    assert!(delivered.delivered_at.is_some());
    let get = json!({"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"id": queue_ids[0]}});
    let task = Caller::operator().post(&url, &get, &[]).await;
    assert_eq!(task.body["result"]["status"]["state"], "completed", "{}", task.body);
    assert!(reply_text(&task.body["result"]["status"]["message"]).contains("text 0"));
    assert_eq!(depth(&gateway).await, 0);
}

#[tokio::test]
async fn a_message_that_meets_a_busy_agent_during_the_drain_goes_back_unconsumed() {
    let Mesh { registry: _registry, agent, workspace, gateway, queue_ids } = drain_of_three_slow_messages(|_| {}).await;
    // The first message arrives and takes 400 ms: the agent turns busy meanwhile.
    eventually(Duration::from_secs(5), || async { (agent.received().await.len() == 1).then_some(()) }).await;
    agent.set_busy(true).await;
    let (bounced, unsent) = eventually(Duration::from_secs(5), || async {
        let first = item(&gateway, &queue_ids[0]).await;
        let second = item(&gateway, &queue_ids[1]).await;
        let third = item(&gateway, &queue_ids[2]).await;
        (first.state() == QueueItemState::Delivered
            && second.state() == QueueItemState::Queued
            && second.updated_at != second.enqueued_at)
            .then_some((second, third))
    })
    .await;
    // A bounce off a busy agent is not an attempt, and nothing was consumed;
    // the message claimed behind it went back with it.
    assert_eq!((bounced.attempts, bounced.last_error.as_str()), (0, ""));
    assert_eq!((unsent.state(), unsent.attempts, unsent.lease_owner.as_str()), (QueueItemState::Queued, 0, ""));
    assert_eq!(agent.received().await, ["text 0"]);

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    eventually(Duration::from_secs(10), || async {
        (agent.received().await == ["text 0", "text 1", "text 2"]).then_some(())
    })
    .await;
    assert_eq!(agent.stats().await["duplicates"], 0);
}

#[tokio::test]
async fn a_native_session_gets_unavailable_with_retry_information_and_nothing_is_queued() {
    let registry = RegistryNode::start().await;
    let agent = EchoAgent::start(EchoConfig::default()).await;
    let workspace = registry.create("native", None, 1).await;
    workspace.register(&agent.url, Capabilities { native_session: true, ..Default::default() }, None).await;
    workspace.heartbeat(0).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    agent.set_busy(true).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "hi", "m-native").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    assert_eq!(reply.retry_after.as_deref(), Some("1"));
    let data = &reply.body["error"]["data"];
    assert_eq!(data["reason"], "UNAVAILABLE_REASON_NATIVE_SESSION_BUSY", "{data}");
    assert_eq!(data["retryAfterSeconds"], 1);
    assert_eq!(data["workspaceId"], workspace.id.as_str());

    // The gRPC binding says the same with standard status details.
    let mut a2a = gateway.a2a();
    let message = a2a_pb::Message {
        message_id: "m-native-grpc".into(),
        role: a2a_pb::Role::User as i32,
        parts: vec![a2a_pb::Part { content: Some(a2a_pb::part::Content::Text("hi".into())), ..Default::default() }],
        ..Default::default()
    };
    let request =
        a2a_pb::SendMessageRequest { tenant: workspace.id.clone(), message: Some(message), ..Default::default() };
    let status = a2a.send_message(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().expect("ErrorInfo");
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("NATIVE_SESSION_BUSY", "agentmesh.dev"));
    assert_eq!(info.metadata["workspace_id"], workspace.id);
    assert_eq!(details.retry_info().and_then(|r| r.retry_delay), Some(Duration::from_secs(1)));

    assert_eq!(depth(&gateway).await, 0);
    let all = gpb::ListQueueItemsRequest { states: (1..=5).collect(), ..Default::default() };
    assert!(gateway.control().list_queue_items(all).await.unwrap().into_inner().items.is_empty());
}

#[tokio::test]
async fn failed_attempts_end_in_a_dead_letter_with_the_last_error_and_can_be_requeued() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |s| s.max_attempts = 2).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;
    let reply = Caller::operator().send(&url, "doomed", "m-doomed").await;
    let queue_id = reply.queued()["queueId"].as_str().unwrap().to_owned();

    // The agent goes away while the registry still has it online.
    drop(agent);
    workspace.heartbeat(0).await;
    let dead = eventually(Duration::from_secs(10), || async {
        let item = item(&gateway, &queue_id).await;
        (item.state() == QueueItemState::DeadLetter).then_some(item)
    })
    .await;
    assert_eq!(dead.attempts, 2);
    assert!(dead.last_error.contains("could not be reached"), "{}", dead.last_error);

    // An agent is back at a new address: the operator requeues the letter.
    let agent = EchoAgent::start(EchoConfig::default()).await;
    workspace.register(&agent.url, Capabilities::default(), None).await;
    let requeue = gpb::RequeueDeadLettersRequest { workspace_id: workspace.id.clone(), ..Default::default() };
    let requeued = gateway.control().requeue_dead_letters(requeue).await.unwrap().into_inner();
    assert_eq!(requeued.requeued_ids, [queue_id]);
    workspace.heartbeat(0).await;
    eventually(Duration::from_secs(10), || async { (agent.received().await == ["doomed"]).then_some(()) }).await;
}

#[tokio::test]
async fn an_expired_message_is_dropped_undelivered() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;
    let reply =
        Caller::operator().post(&url, &send_request("stale", "m-stale"), &[("x-agentmesh-expires-in", "1")]).await;
    let stale = reply.queued().clone();
    assert!(stale["expiresAt"].is_string(), "{stale}");
    let queue_id = stale["queueId"].as_str().unwrap();

    let dropped = eventually(Duration::from_secs(5), || async {
        let item = item(&gateway, queue_id).await;
        (item.state() == QueueItemState::Dropped).then_some(item)
    })
    .await;
    assert_eq!(dropped.state_reason, "expired");

    let reply = Caller::operator().send(&url, "fresh", "m-fresh").await;
    reply.queued();
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    eventually(Duration::from_secs(10), || async { (agent.received().await == ["fresh"]).then_some(()) }).await;
}

#[tokio::test]
async fn messages_claimed_ahead_go_back_at_once_when_the_target_goes_down_mid_drain() {
    let Mesh { registry: _registry, agent, workspace, gateway, queue_ids } =
        drain_of_three_slow_messages(|s| s.scan_interval_ms = 600_000).await;
    eventually(Duration::from_secs(5), || async { (agent.received().await.len() == 1).then_some(()) }).await;
    workspace.transition(WorkspaceStatus::Offline).await;
    // Well within the drain lease (30 s) and its renewal (10 s).
    let unsent = eventually(Duration::from_secs(3), || async {
        let mut unsent = Vec::new();
        for id in &queue_ids[1..] {
            let item = item(&gateway, id).await;
            if item.state() != QueueItemState::Queued {
                return None;
            }
            unsent.push(item);
        }
        Some(unsent)
    })
    .await;
    for item in &unsent {
        assert_eq!((item.attempts, item.lease_owner.as_str()), (0, ""));
        assert_eq!(item.state_reason, "not sent: the target is down");
    }
    assert_eq!(agent.received().await, ["text 0"]);

    assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);
    eventually(Duration::from_secs(10), || async {
        (agent.received().await == ["text 0", "text 1", "text 2"]).then_some(())
    })
    .await;
    assert_eq!(agent.stats().await["duplicates"], 0);
}

#[tokio::test]
async fn a_message_that_expires_while_the_drain_holds_it_is_dropped_unsent() {
    let registry = RegistryNode::start().await;
    let config = EchoConfig { delay: Duration::from_millis(1200), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, config).await;
    // No scan: only the drain can find the expiry.
    let gateway = GatewayNode::start(&registry, |s| s.scan_interval_ms = 600_000).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;
    Caller::operator().send(&url, "first", "m-first").await.queued();
    let reply =
        Caller::operator().post(&url, &send_request("stale", "m-stale"), &[("x-agentmesh-expires-in", "1")]).await;
    let stale = reply.queued()["queueId"].as_str().unwrap().to_owned();
    Caller::operator().send(&url, "last", "m-last").await.queued();

    // The drain claims all three at once; "stale" expires while "first"
    // takes the agent 1.2 s.
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    eventually(Duration::from_secs(10), || async { (agent.received().await == ["first", "last"]).then_some(()) }).await;
    let dropped = item(&gateway, &stale).await;
    assert_eq!((dropped.state(), dropped.state_reason.as_str()), (QueueItemState::Dropped, "expired"));
    assert_eq!((dropped.attempts, dropped.lease_owner.as_str(), dropped.delivered_at), (0, "", None));
}

#[tokio::test]
async fn messages_for_a_workspace_that_is_not_up_wait_for_it() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    workspace.transition(WorkspaceStatus::Offline).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "later", "m-later").await;
    assert_eq!(reply.queued()["reason"], "QUEUE_REASON_TARGET_NOT_READY");
    assert!(agent.received().await.is_empty());

    assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);
    eventually(Duration::from_secs(10), || async { (agent.received().await == ["later"]).then_some(()) }).await;
}

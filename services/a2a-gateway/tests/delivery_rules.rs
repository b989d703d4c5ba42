//! Delivery rules of the gateway end to end (GW-5 … GW-7), against a real
//! registry and echo agents: a rate-limiting agent's 429, draining several
//! messages at once, priorities, operators dropping stale items, and waking
//! a hibernated workspace. Expiry is covered in queue.rs, the idle timeout
//! of streams in idle.rs.

use std::time::Duration;

use agentmesh_echo_agent::{BusyStatus, Config as EchoConfig};
use agentmesh_meshkit::*;
use agentmesh_proto::{
    a2a::v1 as a2a_pb,
    gateway::v1::{self as gpb, QueueItemState},
    provisioner::v1::{
        self as ppb,
        provisioner_service_server::{ProvisionerService, ProvisionerServiceServer},
    },
    registry::v1::{Capabilities, WorkspaceStatus},
};
use serde_json::json;
use tokio::sync::mpsc;
use tonic_types::StatusExt;

fn queue_id(reply: &RpcReply) -> String {
    reply.queued()["queueId"].as_str().expect("a queue id").to_owned()
}

async fn item(gateway: &GatewayNode, queue_id: &str) -> gpb::QueueItem {
    let request = gpb::GetQueueItemRequest { queue_id: queue_id.to_owned() };
    gateway.control().get_queue_item(request).await.unwrap().into_inner().item.unwrap()
}

async fn delivered(gateway: &GatewayNode, queue_id: &str) -> gpb::QueueItem {
    eventually(Duration::from_secs(5), || async {
        let item = item(gateway, queue_id).await;
        (item.state() == QueueItemState::Delivered).then_some(item)
    })
    .await
}

async fn items(gateway: &GatewayNode, workspace_id: &str, states: &[QueueItemState]) -> Vec<gpb::QueueItem> {
    let request = gpb::ListQueueItemsRequest {
        workspace_id: workspace_id.to_owned(),
        states: states.iter().map(|state| *state as i32).collect(),
        include_payloads: true,
        ..Default::default()
    };
    gateway.control().list_queue_items(request).await.unwrap().into_inner().items
}

const ALL_STATES: [QueueItemState; 5] = [
    QueueItemState::Queued,
    QueueItemState::InFlight,
    QueueItemState::Delivered,
    QueueItemState::DeadLetter,
    QueueItemState::Dropped,
];

/// A gateway that drains only when the registry reports room: no periodic
/// scan retries the busy agent behind the test's back.
async fn gateway_draining_on_room_only(registry: &RegistryNode) -> GatewayNode {
    GatewayNode::start(registry, |s| s.scan_interval_ms = 600_000).await
}

fn rate_limiting(retry_after_seconds: u32) -> EchoConfig {
    EchoConfig { busy_status: BusyStatus::TooManyRequests, retry_after_seconds, ..EchoConfig::default() }
}

#[tokio::test]
async fn a_429_from_the_agent_queues_the_message_as_target_busy() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, rate_limiting(5)).await;
    let gateway = gateway_draining_on_room_only(&registry).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;

    let reply = Caller::operator().send(&url, "rate limited", "m-429").await;
    let queued = reply.queued().clone();
    assert_eq!(queued["reason"], "QUEUE_REASON_TARGET_BUSY", "{queued}");
    assert_eq!((queued["depth"].as_str(), queued["duplicate"].as_bool()), (Some("1"), Some(false)), "{queued}");
    assert_eq!(agent.load().await["busy_answers"], 1, "the message went to the agent first");
    let waiting = item(&gateway, queued["queueId"].as_str().unwrap()).await;
    assert_eq!((waiting.state(), waiting.attempts), (QueueItemState::Queued, 0));

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let done = delivered(&gateway, queued["queueId"].as_str().unwrap()).await;
    assert!(done.result_json.contains("rate limited"), "{}", done.result_json);
    assert_eq!(agent.received().await, ["rate limited"]);
}

#[tokio::test]
async fn retries_wait_as_long_as_a_busy_agent_asked_unless_the_registry_reports_room() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, rate_limiting(2)).await;
    // Scans every 200 ms, each of which would otherwise try the agent again.
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;

    let asked = std::time::Instant::now();
    let queue_id = queue_id(&Caller::operator().send(&url, "patient", "m-patient").await);
    eventually(Duration::from_secs(10), || async { (agent.load().await["busy_answers"] == 2).then_some(()) }).await;
    let waited = asked.elapsed();
    assert!(waited >= Duration::from_millis(1_900), "tried again after {waited:?}, asked to wait 2 s");

    // A report of room is newer news than the agent's last word: the queue
    // drains at once, rest or not (the bounce above began another rest).
    agent.set_busy(false).await;
    let reported = std::time::Instant::now();
    workspace.heartbeat(0).await;
    let done = delivered(&gateway, &queue_id).await;
    assert!(reported.elapsed() < Duration::from_millis(1_500), "the report of room waited out the rest");
    assert_eq!(done.attempts, 0, "busy answers are not failed attempts");
    assert_eq!(agent.received().await, ["patient"]);
}

#[tokio::test]
async fn a_429_from_a_native_session_is_unavailable_for_at_least_the_agents_retry_after() {
    let registry = RegistryNode::start().await;
    let agent = EchoAgent::start(rate_limiting(7)).await;
    let workspace = registry.create("native-429", None, 1).await;
    workspace.register(&agent.url, Capabilities { native_session: true, ..Default::default() }, None).await;
    workspace.heartbeat(0).await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    agent.set_busy(true).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "hi", "m-native-429").await;
    assert_eq!(reply.status, 503, "{}", reply.body);
    let header: u64 = reply.retry_after.as_deref().expect("a Retry-After header").parse().unwrap();
    assert!(header >= 7, "Retry-After: {header}, the agent asked for 7");
    let data = &reply.body["error"]["data"];
    assert_eq!(data["reason"], "UNAVAILABLE_REASON_NATIVE_SESSION_BUSY", "{data}");
    assert!(data["retryAfterSeconds"].as_u64().is_some_and(|s| s >= 7), "{data}");

    let message = a2a_pb::Message {
        message_id: "m-native-429-grpc".into(),
        role: a2a_pb::Role::User as i32,
        parts: vec![a2a_pb::Part { content: Some(a2a_pb::part::Content::Text("hi".into())), ..Default::default() }],
        ..Default::default()
    };
    let request =
        a2a_pb::SendMessageRequest { tenant: workspace.id.clone(), message: Some(message), ..Default::default() };
    let status = gateway.a2a().send_message(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let delay = status.get_error_details().retry_info().and_then(|retry| retry.retry_delay);
    assert!(delay.is_some_and(|delay| delay >= Duration::from_secs(7)), "{delay:?}");

    assert!(items(&gateway, &workspace.id, &ALL_STATES).await.is_empty(), "nothing may be queued");
    assert_eq!(agent.load().await["busy_answers"], 2);
    assert!(agent.received().await.is_empty());
}

#[tokio::test]
async fn a_backlog_drains_completely_with_up_to_max_concurrent_tasks_deliveries_at_once() {
    let registry = RegistryNode::start().await;
    // Four slots, and a fifth message at once would be answered busy.
    let agent =
        EchoAgent::start(EchoConfig { delay: Duration::from_millis(250), max_concurrent: 4, ..EchoConfig::default() })
            .await;
    let workspace = registry.create("four-at-once", None, 4).await;
    workspace.register(&agent.url, Capabilities::default(), None).await;
    assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);
    let gateway = gateway_draining_on_room_only(&registry).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;

    let mut expected: Vec<String> = (0..16).map(|n| format!("backlog {n}")).collect();
    for (n, text) in expected.iter().enumerate() {
        Caller::operator().send(&url, text, &format!("m-{n}")).await.queued();
    }
    let refused_while_busy = agent.load().await["busy_answers"].clone();

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    // A busy answer stops the drain until the next report of room, so stop
    // waiting at the first one too.
    eventually(Duration::from_secs(10), || async {
        let (received, load) = (agent.received().await, agent.load().await);
        (received.len() >= expected.len() || load["busy_answers"] != refused_while_busy).then_some(())
    })
    .await;
    let mut received = agent.received().await;
    received.sort();
    expected.sort();
    assert_eq!(received, expected, "each message exactly once");
    assert_eq!(agent.stats().await["duplicates"], 0);
    let load = agent.load().await;
    assert_eq!(load["busy_answers"], refused_while_busy, "a delivery beyond the 4 slots met a busy agent");
    assert_eq!(load["peak_in_flight"], 4, "the drain used the 4 slots: {load}");

    let done = eventually(Duration::from_secs(5), || async {
        let done = items(&gateway, &workspace.id, &[QueueItemState::Delivered]).await;
        (done.len() == expected.len()).then_some(done)
    })
    .await;
    assert!(done.iter().all(|item| item.attempts == 0 && !item.result_json.is_empty()), "{done:?}");
    assert!(items(&gateway, &workspace.id, &[QueueItemState::Queued, QueueItemState::InFlight]).await.is_empty());
}

#[tokio::test]
async fn a_message_of_higher_priority_overtakes_those_a_drain_already_holds() {
    let registry = RegistryNode::start().await;
    let config = EchoConfig { delay: Duration::from_millis(300), ..EchoConfig::default() };
    let (agent, workspace) = EchoAgent::online(&registry, config).await;
    let gateway = gateway_draining_on_room_only(&registry).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;
    let normal: Vec<String> = (0..6).map(|n| format!("normal {n}")).collect();
    for text in &normal {
        queue_id(&Caller::operator().send(&url, text, text).await);
    }
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    // The drain has claimed all six and is sending the first, which takes
    // the agent 300 ms.
    eventually(Duration::from_secs(5), || async { (agent.received().await.len() == 1).then_some(()) }).await;
    let urgent = send_request("urgent", "m-urgent");
    queue_id(&Caller::operator().post(&url, &urgent, &[("x-agentmesh-priority", "100")]).await);

    eventually(Duration::from_secs(10), || async { (agent.received().await.len() == 7).then_some(()) }).await;
    let received = agent.received().await;
    let position = received.iter().position(|text| text == "urgent").unwrap();
    assert!(position <= 2, "the urgent message waited behind what the drain held: {received:?}");
    let rest: Vec<&String> = received.iter().filter(|text| *text != "urgent").collect();
    assert_eq!(rest, normal.iter().collect::<Vec<_>>(), "the others keep their order");
    assert_eq!(agent.stats().await["duplicates"], 0);
}

#[tokio::test]
async fn queued_messages_drain_by_priority_then_in_arrival_order() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = gateway_draining_on_room_only(&registry).await;
    let url = gateway.a2a_url(&workspace.id);
    agent.set_busy(true).await;

    let sends = [
        ("low 1", Some("-5")),
        ("normal 1", None),
        ("high 1", Some("10")),
        ("normal 2", Some("0")),
        ("urgent", Some("100")),
        ("high 2", Some(" 10 ")),
        ("low 2", Some("-5")),
        ("normal 3", None),
    ];
    for (n, (text, priority)) in sends.into_iter().enumerate() {
        let headers: Vec<_> = priority.map(|p| ("x-agentmesh-priority", p)).into_iter().collect();
        let reply = Caller::operator().post(&url, &send_request(text, &format!("m-{n}")), &headers).await;
        let queue_id = queue_id(&reply);
        let expected: i32 = priority.map_or(0, |p| p.trim().parse().unwrap());
        assert_eq!(item(&gateway, &queue_id).await.priority, expected, "{text}");
    }
    for out_of_range in ["101", "-101", "high"] {
        let request = send_request("never queued", "m-bad");
        let reply = Caller::operator().post(&url, &request, &[("x-agentmesh-priority", out_of_range)]).await;
        assert_eq!(reply.status, 400, "{out_of_range}: {}", reply.body);
        assert!(reply.body["error"]["message"].as_str().unwrap().contains("x-agentmesh-priority"), "{}", reply.body);
    }

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    assert_eq!(
        agent.received_at_least(sends.len(), Duration::from_secs(10)).await,
        ["urgent", "high 1", "high 2", "normal 1", "normal 2", "normal 3", "low 1", "low 2"]
    );
}

#[tokio::test]
async fn dropping_stale_items_drops_only_the_old_ones_and_delivers_the_rest() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    let gateway = gateway_draining_on_room_only(&registry).await;
    let url = gateway.a2a_url(&workspace.id);
    let mut control = gateway.control();
    agent.set_busy(true).await;

    let mut old = Vec::new();
    for n in 0..2 {
        old.push(queue_id(&Caller::operator().send(&url, &format!("old {n}"), &format!("m-old-{n}")).await));
    }
    // Ages are counted in whole seconds: the first two grow older than one.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let fresh = queue_id(&Caller::operator().send(&url, "fresh", "m-fresh").await);

    let drop = |dry_run| gpb::DropStaleItemsRequest {
        workspace_id: workspace.id.clone(),
        older_than_seconds: Some(1),
        reason: "superseded".to_owned(),
        dry_run,
        ..Default::default()
    };
    let preview = control.drop_stale_items(drop(true)).await.unwrap().into_inner();
    assert_eq!((preview.dropped_count, &preview.dropped_ids), (2, &old));
    for id in &old {
        assert_eq!(item(&gateway, id).await.state(), QueueItemState::Queued, "a dry run changes nothing");
    }

    let dropped = control.drop_stale_items(drop(false)).await.unwrap().into_inner();
    assert_eq!((dropped.dropped_count, &dropped.dropped_ids), (2, &old));
    for id in &old {
        let item = item(&gateway, id).await;
        assert_eq!(item.state(), QueueItemState::Dropped);
        assert_eq!(item.state_reason, "dropped by operator: superseded");
    }
    assert_eq!(item(&gateway, &fresh).await.state(), QueueItemState::Queued);
    // A caller following its message by task id learns it was given up.
    let get = json!({"jsonrpc": "2.0", "id": 9, "method": "tasks/get", "params": {"id": old[0]}});
    let task = Caller::operator().post(&url, &get, &[]).await;
    assert_eq!(task.body["result"]["status"]["state"], "canceled", "{}", task.body);

    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    delivered(&gateway, &fresh).await;
    assert_eq!(agent.received().await, ["fresh"]);
    for id in &old {
        let item = item(&gateway, id).await;
        assert_eq!((item.state(), item.delivered_at), (QueueItemState::Dropped, None));
    }

    // A drop says what it drops.
    let unscoped = gpb::DropStaleItemsRequest { older_than_seconds: Some(1), ..Default::default() };
    let status = control.drop_stale_items(unscoped).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
    let no_criterion = gpb::DropStaleItemsRequest { workspace_id: workspace.id.clone(), ..Default::default() };
    let status = control.drop_stale_items(no_criterion).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
}

/// A provisioner that only wakes: it reports each wake request with the
/// caller's metadata, and puts the workspace back to provisioning as the
/// real one does when it starts the workload again.
struct WakingProvisioner {
    workspace: Workspace,
    wakes: mpsc::UnboundedSender<(tonic::metadata::MetadataMap, ppb::WakeWorkspaceRequest)>,
}

impl WakingProvisioner {
    /// Serves on loopback; returns its address and the wake requests.
    async fn start(
        workspace: &Workspace,
    ) -> (String, mpsc::UnboundedReceiver<(tonic::metadata::MetadataMap, ppb::WakeWorkspaceRequest)>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = format!("http://{}", listener.local_addr().unwrap());
        let (wakes, received) = mpsc::unbounded_channel();
        let service = ProvisionerServiceServer::new(Self { workspace: workspace.clone(), wakes });
        let incoming = tonic::transport::server::TcpIncoming::from(listener);
        tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
        (address, received)
    }

    async fn wake(
        &self,
        request: tonic::Request<ppb::WakeWorkspaceRequest>,
    ) -> Result<tonic::Response<ppb::WakeWorkspaceResponse>, tonic::Status> {
        let (metadata, _, request) = request.into_parts();
        if request.workspace_id != self.workspace.id {
            return Err(tonic::Status::not_found(format!("no workspace {}", request.workspace_id)));
        }
        self.workspace.transition(WorkspaceStatus::Provisioning).await;
        let _ = self.wakes.send((metadata, request));
        Ok(tonic::Response::new(ppb::WakeWorkspaceResponse { workspace: None, changed: true }))
    }
}

/// The provisioner's other methods, which the gateway never calls.
macro_rules! only_waking {
    ($($method:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl ProvisionerService for WakingProvisioner {
            type GetLogsStream = futures::stream::Empty<Result<ppb::GetLogsResponse, tonic::Status>>;

            async fn wake_workspace(
                &self,
                request: tonic::Request<ppb::WakeWorkspaceRequest>,
            ) -> Result<tonic::Response<ppb::WakeWorkspaceResponse>, tonic::Status> {
                self.wake(request).await
            }

            async fn get_logs(
                &self,
                _: tonic::Request<ppb::GetLogsRequest>,
            ) -> Result<tonic::Response<Self::GetLogsStream>, tonic::Status> {
                Err(tonic::Status::unimplemented("this provisioner only wakes"))
            }

            $(
                async fn $method(
                    &self,
                    _: tonic::Request<ppb::$request>,
                ) -> Result<tonic::Response<ppb::$response>, tonic::Status> {
                    Err(tonic::Status::unimplemented("this provisioner only wakes"))
                }
            )*
        }
    };
}

only_waking! {
    create_workspace(CreateWorkspaceRequest) -> CreateWorkspaceResponse;
    stop_workspace(StopWorkspaceRequest) -> StopWorkspaceResponse;
    start_workspace(StartWorkspaceRequest) -> StartWorkspaceResponse;
    restart_workspace(RestartWorkspaceRequest) -> RestartWorkspaceResponse;
    delete_workspace(DeleteWorkspaceRequest) -> DeleteWorkspaceResponse;
    hibernate_workspace(HibernateWorkspaceRequest) -> HibernateWorkspaceResponse;
    get_workspace_runtime(GetWorkspaceRuntimeRequest) -> GetWorkspaceRuntimeResponse;
    exec(ExecRequest) -> ExecResponse;
    get_policy(GetPolicyRequest) -> GetPolicyResponse;
    reload_policy(ReloadPolicyRequest) -> ReloadPolicyResponse;
    list_runtimes(ListRuntimesRequest) -> ListRuntimesResponse;
}

#[tokio::test]
async fn a_message_for_a_hibernated_workspace_is_queued_and_wakes_it() {
    let registry = RegistryNode::start().await;
    let (agent, workspace) = EchoAgent::online(&registry, EchoConfig::default()).await;
    workspace.transition(WorkspaceStatus::Hibernated).await;
    let (provisioner, mut wakes) = WakingProvisioner::start(&workspace).await;
    let gateway = GatewayNode::start(&registry, |s| s.provisioner_address = provisioner).await;

    let reply = Caller::operator().send(&gateway.a2a_url(&workspace.id), "wake up", "m-wake").await;
    let queue_id = queue_id(&reply);
    assert_eq!(reply.queued()["reason"], "QUEUE_REASON_TARGET_NOT_READY");

    let (metadata, wake) = tokio::time::timeout(Duration::from_secs(5), wakes.recv())
        .await
        .expect("the gateway asked the provisioner to wake the workspace")
        .unwrap();
    assert_eq!(wake.workspace_id, workspace.id);
    assert!(!wake.reason.is_empty());
    assert_eq!(metadata.get("authorization").unwrap(), format!("Bearer {SERVICE_TOKEN}").as_str());
    assert!(agent.received().await.is_empty(), "nothing is sent to a workspace that is not up");

    // The woken workload's agent heartbeats: the workspace is online again.
    assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);
    delivered(&gateway, &queue_id).await;
    assert_eq!(agent.received().await, ["wake up"]);
    assert!(wakes.try_recv().is_err(), "one queued message, one wake");
}

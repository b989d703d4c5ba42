//! The mesh as users deploy it: the Compose stack on PostgreSQL with the
//! registry, the gateway and the scheduler scaled, a Docker workspace
//! started by the provisioner, messages and a per-second schedule flowing,
//! and one replica of each scaled service killed under load. What counts is
//! what the agent received: every message and every scheduled run once.

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use agentmesh_e2e::{
    agent::{Agent, Delivery},
    compose::{self, A2A_PORT, GATEWAY, HostPorts, REGISTRY, SCHEDULER, Stack},
    docker, mesh, report_figure,
};
use agentmesh_proto::{
    gateway::v1 as gpb,
    provisioner::v1 as ppb,
    registry::v1::{self as rpb, WorkspaceStatus},
    scheduler::v1 as spb,
};
use agentmesh_testkit::{a2a::send_request, eventually};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

/// Short leases so that a killed replica's work is taken over within the
/// test; the defaults (30 s) are what production runs.
const OVERRIDES: &str = r#"
services:
  a2a-gateway:
    environment:
      AGENTMESH_GATEWAY__LEASE_SECS: "4"
      AGENTMESH_GATEWAY__SCAN_INTERVAL_MS: "500"
  scheduler:
    environment:
      AGENTMESH_SCHEDULER__LEASE_SECS: "4"
"#;

/// Callers sending at once, each one message at a time.
const FLOWS: usize = 4;

const SCALE: [(&str, usize); 3] = [(REGISTRY, 2), (GATEWAY, 2), (SCHEDULER, 3)];

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_scaled_mesh_delivers_every_message_and_run_once_while_replicas_die() {
    let Some(stack) = Stack::up(OVERRIDES, &SCALE, HostPorts::Free).await else { return };

    // Every replica of every service serves.
    let mut replicas = BTreeMap::new();
    for service in [REGISTRY, compose::PROVISIONER, GATEWAY, SCHEDULER] {
        let found = stack.replicas(service).await;
        let expected = SCALE.iter().find(|(name, _)| *name == service).map_or(1, |(_, n)| *n);
        assert_eq!(found.len(), expected, "{service}: {found:?}");
        for replica in &found {
            mesh::until_serving(&format!("{}:{}", replica.ip, compose::grpc_port(service)), Duration::from_secs(90))
                .await;
        }
        replicas.insert(service, found);
    }
    report_figure("compose up (PostgreSQL initialised and healthy, containers started)", stack.up_took);
    report_figure("compose cold start to every replica SERVING", stack.started_at.elapsed());

    let operator = mesh::Operator { token: stack.read_data_file("operator.token").await };
    let registry = stack.published(compose::REGISTRY_PORT).await;
    let provisioner = stack.published(compose::PROVISIONER_PORT).await;
    let gateway = stack.published(compose::GATEWAY_PORT).await;
    let scheduler = stack.published(compose::SCHEDULER_PORT).await;
    let a2a = stack.published(A2A_PORT).await;

    // A Docker workspace, created through the provisioner, comes online: its
    // agent joined the stack's network and reached the registry by name.
    let spec = ppb::WorkspaceSpec {
        name: "e2e-echo".into(),
        runtime_kind: rpb::RuntimeKind::Docker as i32,
        image: agentmesh_testkit::images::ECHO_AGENT_IMAGE.into(),
        max_concurrent_tasks: 8,
        // A little work per message, so that messages are in flight when a
        // replica dies and are sent again, for the agent to recognise.
        env: [("AGENTMESH_HEARTBEAT_INTERVAL_MS", "1000"), ("AGENTMESH_ECHO_DELAY_MS", "50")]
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .into(),
        ..Default::default()
    };
    let created = operator
        .provisioner(&provisioner)
        .create_workspace(ppb::CreateWorkspaceRequest { spec: Some(spec) })
        .await
        .unwrap()
        .into_inner();
    let workspace_id = created.workspace.unwrap().id;
    operator.until_status(&registry, &workspace_id, WorkspaceStatus::Online, Duration::from_secs(60)).await;
    let agent = Agent::of_workspace(&workspace_id).await;
    let mesh_id = operator
        .provisioner(&provisioner)
        .list_runtimes(ppb::ListRuntimesRequest::default())
        .await
        .unwrap()
        .into_inner()
        .mesh_id;
    assert_eq!(stack.read_data_file("mesh-id").await, mesh_id, "the generated mesh id is kept with the data");

    let http = reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(15))
        .build()
        .unwrap();
    let sender = Sender { http, token: operator.token.clone() };

    // Messages through each gateway replica, and through the balancer, reach
    // the agent and come back answered.
    let mut targets = vec![format!("http://{a2a}/a2a/{workspace_id}")];
    for replica in &replicas[GATEWAY] {
        targets.push(format!("http://{}:{A2A_PORT}/a2a/{workspace_id}", replica.ip));
    }
    for (n, url) in targets.iter().enumerate() {
        let reply = sender.send(url, &format!("hello {n}"), &format!("hello-{n}")).await.unwrap();
        assert_eq!(agentmesh_testkit::a2a::reply_text(&reply["result"]), format!("echo: hello {n}"), "{url}");
    }

    // A busy agent's messages are queued, and drained once it frees up.
    agent.set_busy(true).await;
    let mut queued_ids = Vec::new();
    for n in 0..5 {
        let id = format!("queued-{n}");
        let reply = sender.send(&targets[0], &format!("queued {n}"), &id).await.unwrap();
        assert_eq!(reply["result"]["status"]["state"], "submitted", "{reply}");
        queued_ids.push(id);
    }
    agent.set_busy(false).await;
    eventually(Duration::from_secs(60), || async {
        let seen = agent.deliveries().await;
        queued_ids.iter().all(|id| seen.contains_key(id)).then_some(())
    })
    .await;

    // A per-second schedule fires through the gateway into the agent.
    let schedule = operator
        .scheduler(&scheduler)
        .create_schedule(spb::CreateScheduleRequest {
            workspace_id: workspace_id.clone(),
            name: "every-second".into(),
            cron_expression: "* * * * * *".into(),
            timezone: "UTC".into(),
            message_text: "tick".into(),
            overlap_policy: spb::OverlapPolicy::Queue as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .schedule
        .unwrap();
    let run_prefix = format!("schedule-{}-", schedule.id);
    let runs_seen =
        |deliveries: &BTreeMap<String, Delivery>| deliveries.keys().filter(|id| id.starts_with(&run_prefix)).count();
    eventually(Duration::from_secs(30), || async { (runs_seen(&agent.deliveries().await) >= 3).then_some(()) }).await;

    // Traffic flows while one replica of each scaled service is killed.
    let stop = CancellationToken::new();
    let accepted = Arc::new(Mutex::new(Vec::<(String, u64)>::new()));
    let flows: Vec<_> = (0..FLOWS)
        .map(|flow| tokio::spawn(sender.clone().flow(flow, targets.clone(), accepted.clone(), stop.clone())))
        .collect();
    more_accepted(&accepted, 200).await;

    let victim = &replicas[GATEWAY][1];
    let killed_at = now_ms();
    stack.kill(victim).await;
    let first_accepted_after = eventually(Duration::from_secs(30), || async {
        let accepted = accepted.lock().unwrap();
        accepted.iter().find(|(_, at)| *at > killed_at).map(|(_, at)| *at)
    })
    .await;
    report_figure(
        "gateway replica SIGKILL to the next message answered",
        Duration::from_millis(first_accepted_after - killed_at),
    );
    more_accepted(&accepted, 200).await;

    let victim = &replicas[REGISTRY][0];
    let killed = Instant::now();
    stack.kill(victim).await;
    eventually(Duration::from_secs(30), || async { operator.workspace(&registry, &workspace_id).await.ok() }).await;
    report_figure("registry replica SIGKILL to the next call answered", killed.elapsed());
    more_accepted(&accepted, 200).await;

    let victim = &replicas[SCHEDULER][0];
    let killed_at = now_ms();
    stack.kill(victim).await;
    let next_run_after = eventually(Duration::from_secs(30), || async {
        let deliveries = agent.deliveries().await;
        deliveries
            .values()
            .filter(|d| d.message_id.starts_with(&run_prefix))
            .map(|d| d.received_at_ms)
            .find(|at| *at > killed_at)
    })
    .await;
    report_figure(
        "scheduler replica SIGKILL to the next run delivered",
        Duration::from_millis(next_run_after - killed_at),
    );
    // Past the lease, so that whatever the killed scheduler held is taken over.
    let lease_over = now_ms() + 5_000;
    eventually(Duration::from_secs(30), || async {
        accepted.lock().unwrap().last().is_some_and(|(_, at)| *at > lease_over).then_some(())
    })
    .await;

    stop.cancel();
    let mut sent = BTreeMap::new();
    for flow in flows {
        sent.extend(flow.await.unwrap());
    }
    assert!(sent.len() > 200, "too little traffic to mean anything: {}", sent.len());
    operator
        .scheduler(&scheduler)
        .pause_schedule(spb::PauseScheduleRequest { schedule_id: schedule.id.clone(), ..Default::default() })
        .await
        .unwrap();

    // Every message the callers sent, accepted by whichever replica, reached
    // the agent once; runs claimed by the killed scheduler were taken over.
    let deliveries = eventually(Duration::from_secs(60), || async {
        let deliveries = agent.deliveries().await;
        sent.keys().all(|id| deliveries.contains_key(id)).then_some(deliveries)
    })
    .await;
    for (id, text) in &sent {
        assert_eq!(&deliveries[id].text, text, "message {id}");
    }
    let runs = eventually(Duration::from_secs(60), || async {
        let runs = operator
            .scheduler(&scheduler)
            .list_runs(spb::ListRunsRequest { schedule_id: schedule.id.clone(), page_size: 1000, ..Default::default() })
            .await
            .unwrap()
            .into_inner()
            .runs;
        let deliveries = agent.deliveries().await;
        // A run whose scheduler replica was killed while it was in flight
        // stays in progress, though its message arrived, until another
        // replica takes its lease over and records the outcome.
        let settled = runs
            .iter()
            .all(|run| deliveries.contains_key(&run.message_id) && run.outcome() != spb::RunOutcome::InProgress);
        settled.then_some(runs)
    })
    .await;
    let mut seconds = BTreeSet::new();
    for run in &runs {
        assert!(
            matches!(run.outcome(), spb::RunOutcome::Delivered | spb::RunOutcome::Queued),
            "run {} at {:?}: {:?} {}",
            run.message_id,
            run.scheduled_at,
            run.outcome(),
            run.error
        );
        assert!(seconds.insert(run.scheduled_at.unwrap().seconds), "two runs for one scheduled time: {run:?}");
    }
    let (first, last) = (*seconds.first().unwrap(), *seconds.last().unwrap());
    assert_eq!(seconds.len() as i64, last - first + 1, "a scheduled second has no run: {seconds:?}");
    let delivered_runs = runs_seen(&agent.deliveries().await);
    assert_eq!(delivered_runs, runs.len(), "the agent saw a run the scheduler did not record");
    println!(
        "e2e counts: {} messages sent and delivered once, {} scheduled runs over {} s delivered once, {} redeliveries recognised by the agent",
        sent.len(),
        runs.len(),
        last - first + 1,
        agent.duplicates().await
    );

    // Nothing is stuck or dead in the queue, and the workspace is still
    // online on every registry replica left.
    let totals = operator
        .gateway(&gateway)
        .get_queue_stats(gpb::GetQueueStatsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .totals
        .unwrap();
    assert_eq!((totals.queued, totals.in_flight, totals.dead_letters), (0, 0, 0), "{totals:?}");
    for replica in stack.replicas(REGISTRY).await {
        let workspace = operator.workspace(&format!("{}:{}", replica.ip, compose::REGISTRY_PORT), &workspace_id).await;
        assert_eq!(workspace.unwrap().status(), WorkspaceStatus::Online, "on {}", replica.name);
    }

    // Deleting the workspace removes its container and volume; the stack
    // then comes down leaving nothing behind.
    operator
        .scheduler(&scheduler)
        .delete_schedule(spb::DeleteScheduleRequest { schedule_id: schedule.id.clone() })
        .await
        .unwrap();
    let deleted = operator
        .provisioner(&provisioner)
        .delete_workspace(ppb::DeleteWorkspaceRequest { workspace_id: workspace_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(deleted.workload_removed, "{deleted:?}");
    let mesh_label = format!("dev.agentmesh/mesh-id={mesh_id}");
    assert_eq!(docker::containers_labelled(&mesh_label).await, Vec::<String>::new());
    assert_eq!(docker::volumes_labelled(&mesh_label).await, Vec::<String>::new());
    assert_eq!(stack.down().await, Vec::<String>::new(), "left behind by docker-compose down");
}

/// Waits until `count` more messages have been accepted: load, not time,
/// is what the failures must meet.
async fn more_accepted(accepted: &Mutex<Vec<(String, u64)>>, count: usize) {
    let target = accepted.lock().unwrap().len() + count;
    eventually(Duration::from_secs(60), || async { (accepted.lock().unwrap().len() >= target).then_some(()) }).await;
}

/// An A2A caller that retries a message (same id) until a replica accepts
/// it, as a client of a replicated service does.
#[derive(Clone)]
struct Sender {
    http: reqwest::Client,
    token: String,
}

impl Sender {
    /// Sends once; the JSON-RPC reply when a gateway answered with a result
    /// (delivered or queued).
    async fn send(&self, url: &str, text: &str, message_id: &str) -> Result<Value, String> {
        let response = self
            .http
            .post(url)
            .bearer_auth(&self.token)
            .json(&send_request(text, message_id))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body: Value = response.json().await.map_err(|e| format!("{status}: {e}"))?;
        match body.get("result") {
            Some(_) if status.is_success() => Ok(body),
            _ => Err(format!("{status}: {body}")),
        }
    }

    /// Sends numbered messages round-robin over `targets` until `stop`,
    /// each tried again (through the balancer, `targets[0]`) until accepted;
    /// records when each was accepted. Returns the sent texts by message id.
    async fn flow(
        self,
        flow: usize,
        targets: Vec<String>,
        accepted: Arc<Mutex<Vec<(String, u64)>>>,
        stop: CancellationToken,
    ) -> BTreeMap<String, String> {
        let mut sent = BTreeMap::new();
        for n in 0.. {
            if stop.is_cancelled() {
                break;
            }
            let (id, text) = (format!("traffic-{flow}-{n}"), format!("traffic {flow} {n}"));
            let mut url = &targets[(flow + n) % targets.len()];
            let deadline = Instant::now() + Duration::from_secs(60);
            loop {
                match self.send(url, &text, &id).await {
                    Ok(_) => break,
                    Err(error) => {
                        assert!(Instant::now() < deadline, "message {id} never accepted: {error}");
                        url = &targets[0];
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
            accepted.lock().unwrap().push((id.clone(), now_ms()));
            sent.insert(id, text);
        }
        sent
    }
}

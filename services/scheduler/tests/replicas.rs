//! Three scheduler replicas, each its own process, sharing one PostgreSQL
//! database and firing hundreds of per-second schedules into one echo agent
//! through the gateway, for minutes, while one replica is SIGKILLed: every
//! scheduled run reaches the agent exactly once (SCH-5, SCH-8).

use std::{
    collections::HashMap,
    process::{Child, Command},
    time::{Duration, Instant},
};

use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{
    registry::v1::{self as rpb, WorkspaceStatus},
    scheduler::v1::{
        CreateScheduleRequest, ListRunsRequest, OverlapPolicy, PauseScheduleRequest, RunOutcome, ScheduleRun,
        scheduler_service_client::SchedulerServiceClient,
    },
};
use agentmesh_testkit::{binary::spawn_until_ready, postgres::fresh_database};

const SCHEDULES: usize = 200;

/// How long the schedules fire: two minutes unless
/// `AGENTMESH_SCHEDULER_SOAK_SECS` says otherwise (for a quick local run).
fn soak() -> Duration {
    let secs = std::env::var("AGENTMESH_SCHEDULER_SOAK_SECS").ok().and_then(|s| s.parse().ok()).unwrap_or(120);
    Duration::from_secs(secs)
}

struct Replica {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Replica {
    async fn start(registry: &RegistryNode, gateway: &GatewayNode, database_url: &str) -> Self {
        let (registry, gateway, database_url) =
            (registry.url(), format!("http://{}", gateway.grpc), database_url.to_owned());
        tokio::task::spawn_blocking(move || Self::start_blocking(&registry, &gateway, &database_url)).await.unwrap()
    }

    fn start_blocking(registry: &str, gateway: &str, database_url: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            r#"
listen = "127.0.0.1:0"
data_dir = "{dir}"
database_url = "{database_url}"
readiness_interval_ms = 100
[auth]
operator_tokens = ["{OPERATOR_TOKEN}"]
service_tokens = ["{SERVICE_TOKEN}"]
[scheduler]
registry_address = "{registry}"
gateway_address = "{gateway}"
service_token = "{SERVICE_TOKEN}"
lease_secs = 3
"#,
            dir = dir.path().display(),
        );
        let path = dir.path().join("scheduler.toml");
        std::fs::write(&path, config).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_agentmesh-scheduler"));
        command.arg("--config").arg(&path).env("RUST_LOG", "warn");
        let (child, address) = spawn_until_ready(command);
        Self { child, address, _dir: dir }
    }

    fn client(&self) -> SchedulerServiceClient<agentmesh_chassis::client::ServiceChannel> {
        let channel =
            agentmesh_chassis::client::service_channel(&format!("http://{}", self.address), OPERATOR_TOKEN, None);
        SchedulerServiceClient::new(channel.unwrap())
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn all_runs(
    client: &mut SchedulerServiceClient<agentmesh_chassis::client::ServiceChannel>,
    request: ListRunsRequest,
) -> Vec<ScheduleRun> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let page = ListRunsRequest { page_size: 1000, page_token: page_token.clone(), ..request.clone() };
        let page = client.list_runs(page).await.unwrap().into_inner();
        all.extend(page.runs);
        if page.next_page_token.is_empty() {
            return all;
        }
        page_token = page.next_page_token;
    }
}

fn seconds(run: &ScheduleRun) -> i64 {
    run.scheduled_at.as_ref().unwrap().seconds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_fire_every_run_exactly_once_also_when_one_is_killed() {
    let Some(database_url) = fresh_database("scheduler_test").await else { return };
    let registry = RegistryNode::start().await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let agent = EchoAgent::start(EchoConfig { remembered_message_ids: 1_000_000, ..EchoConfig::default() }).await;
    let workspace = registry.create("fleet", None, 10_000).await;
    workspace.register(&agent.url, rpb::Capabilities::default(), None).await;
    assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);

    let mut replicas = Vec::new();
    for _ in 0..3 {
        replicas.push(Replica::start(&registry, &gateway, &database_url).await);
    }
    let mut client = replicas[0].client();
    let mut schedule_ids = Vec::new();
    for i in 0..SCHEDULES {
        let request = CreateScheduleRequest {
            workspace_id: workspace.id.clone(),
            name: format!("tick-{i:03}"),
            cron_expression: "* * * * * *".to_owned(),
            message_text: format!("tick {i:03}"),
            overlap_policy: OverlapPolicy::Queue.into(),
            ..Default::default()
        };
        let schedule = client.create_schedule(request).await.unwrap().into_inner().schedule.unwrap();
        schedule_ids.push(schedule.id);
    }

    let soak = soak();
    let started = Instant::now();
    tokio::time::sleep(soak / 3).await;
    replicas[1].kill();
    tokio::time::sleep(soak.saturating_sub(started.elapsed())).await;
    for id in &schedule_ids {
        let request = PauseScheduleRequest { schedule_id: id.clone(), reason: "soak over".to_owned() };
        client.pause_schedule(request).await.unwrap();
    }
    // The dead replica's unfinished runs are taken over once their lease
    // runs out; wait until no run is in progress any more.
    eventually(Duration::from_secs(30), || {
        let mut client = client.clone();
        async move {
            let request = ListRunsRequest { outcomes: vec![RunOutcome::InProgress.into()], ..Default::default() };
            all_runs(&mut client, request).await.is_empty().then_some(())
        }
    })
    .await;

    let runs = all_runs(&mut client, ListRunsRequest::default()).await;
    let mut by_schedule: HashMap<&str, Vec<&ScheduleRun>> = HashMap::new();
    for run in &runs {
        assert_eq!(run.outcome(), RunOutcome::Delivered, "{run:?}");
        by_schedule.entry(run.schedule_id.as_str()).or_default().push(run);
    }
    assert_eq!(by_schedule.len(), SCHEDULES);
    let received = agent.received().await;
    let mut received_per_text: HashMap<&str, usize> = HashMap::new();
    for text in &received {
        *received_per_text.entry(text.as_str()).or_default() += 1;
    }
    let min_runs = soak.as_secs() as usize * 3 / 4;
    for (i, id) in schedule_ids.iter().enumerate() {
        let mut times: Vec<i64> = by_schedule[id.as_str()].iter().map(|r| seconds(r)).collect();
        times.sort_unstable();
        assert!(times.len() >= min_runs, "schedule {i} ran {} times in {soak:?}", times.len());
        assert!(
            times.windows(2).all(|w| w[1] - w[0] == 1),
            "schedule {i} has a gap or a repeat: no run may be lost or recorded twice"
        );
        let text = format!("tick {i:03}");
        assert_eq!(
            received_per_text.get(text.as_str()).copied().unwrap_or_default(),
            times.len(),
            "the agent received schedule {i}'s runs exactly once each"
        );
    }
    let duplicates = agent.stats().await["duplicates"].as_u64().unwrap();
    eprintln!(
        "{} runs of {SCHEDULES} schedules over {soak:?} on 3 replicas (one killed): {} received, {duplicates} redeliveries recognised by message id",
        runs.len(),
        received.len()
    );
    assert!(
        duplicates <= SCHEDULES as u64,
        "only runs in flight at the kill may be sent again (same message id); saw {duplicates}"
    );
    drop(replicas);
    agentmesh_testkit::postgres::drop_database(&database_url).await;
}

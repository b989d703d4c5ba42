//! The scheduler firing into a real mesh: a registry, a gateway and echo
//! agents in this process, runs sent over the gateway's gRPC A2A binding
//! (SCH-2 … SCH-7).

use std::{
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use agentmesh_chassis::client::ServiceChannel;
use agentmesh_echo_agent::Config as EchoConfig;
use agentmesh_meshkit::*;
use agentmesh_proto::{
    registry::v1::{self as rpb, WorkspaceStatus},
    scheduler::v1::{
        CatchUpPolicy, CreateScheduleRequest, GetScheduleRequest, ListRunsRequest, OverlapPolicy, RunOutcome,
        RunTrigger, Schedule, ScheduleRun, TriggerScheduleRequest, scheduler_service_client::SchedulerServiceClient,
    },
};
use agentmesh_scheduler::dispatch::{Delivery, DispatchError, Dispatcher, Outgoing};
use futures::future::BoxFuture;
use tonic::Code;

type Client = SchedulerServiceClient<ServiceChannel>;

const EVERY_SECOND: &str = "* * * * * *";

struct Mesh {
    registry: RegistryNode,
    gateway: GatewayNode,
    dir: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        let registry = RegistryNode::start().await;
        let gateway = GatewayNode::start(&registry, |_| {}).await;
        Self { registry, gateway, dir: tempfile::tempdir().unwrap() }
    }

    fn database_url(&self) -> String {
        format!("sqlite://{}", self.dir.path().join("scheduler.db").display())
    }

    async fn scheduler(
        &self,
        tune: impl FnOnce(&mut agentmesh_scheduler::settings::SchedulerSettings),
    ) -> SchedulerNode {
        SchedulerNode::start(&self.registry, &self.gateway, &self.database_url(), self.dir.path(), tune).await
    }

    /// An echo agent online as a workspace declaring `capabilities`, with
    /// room for `max_concurrent_tasks`.
    async fn agent(&self, capabilities: rpb::Capabilities, max_concurrent_tasks: u32) -> (EchoAgent, Workspace) {
        self.agent_with(EchoConfig::default(), capabilities, max_concurrent_tasks).await
    }

    async fn agent_with(
        &self,
        config: EchoConfig,
        capabilities: rpb::Capabilities,
        max_concurrent_tasks: u32,
    ) -> (EchoAgent, Workspace) {
        let agent = EchoAgent::start(config).await;
        let workspace = self.registry.create("echo", None, max_concurrent_tasks).await;
        workspace.register(&agent.url, capabilities, None).await;
        assert_eq!(workspace.heartbeat(0).await, WorkspaceStatus::Online);
        (agent, workspace)
    }
}

fn schedule_request(workspace: &Workspace, name: &str, cron: &str) -> CreateScheduleRequest {
    CreateScheduleRequest {
        workspace_id: workspace.id.clone(),
        name: name.to_owned(),
        cron_expression: cron.to_owned(),
        message_text: format!("prompt from {name}"),
        ..Default::default()
    }
}

async fn create(client: &Client, request: CreateScheduleRequest) -> Schedule {
    client.clone().create_schedule(request).await.unwrap().into_inner().schedule.unwrap()
}

async fn get(client: &Client, id: &str) -> Schedule {
    let request = GetScheduleRequest { schedule_id: id.to_owned() };
    client.clone().get_schedule(request).await.unwrap().into_inner().schedule.unwrap()
}

/// Every run of a schedule, oldest first.
async fn runs(client: &Client, schedule_id: &str) -> Vec<ScheduleRun> {
    let mut all = Vec::new();
    let mut page_token = String::new();
    loop {
        let request = ListRunsRequest {
            schedule_id: schedule_id.to_owned(),
            page_size: 1000,
            page_token: page_token.clone(),
            ..Default::default()
        };
        let page = client.clone().list_runs(request).await.unwrap().into_inner();
        all.extend(page.runs);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    all.reverse();
    all
}

/// Waits until the schedule has `n` runs with a final outcome.
async fn finished_runs(client: &Client, schedule_id: &str, n: usize, within: Duration) -> Vec<ScheduleRun> {
    eventually(within, || async {
        let finished: Vec<_> =
            runs(client, schedule_id).await.into_iter().filter(|r| r.outcome() != RunOutcome::InProgress).collect();
        (finished.len() >= n).then_some(finished)
    })
    .await
}

fn millis(t: &Option<prost_types::Timestamp>) -> i64 {
    let t = t.as_ref().expect("a timestamp");
    t.seconds * 1000 + i64::from(t.nanos) / 1_000_000
}

#[tokio::test]
async fn a_per_second_schedule_fires_on_time_into_the_agent() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let (agent, workspace) = mesh.agent(rpb::Capabilities::default(), 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "tick", EVERY_SECOND)).await;
    assert!(schedule.enabled);
    let first_due = millis(&schedule.next_run_at);

    let runs = finished_runs(&scheduler.client, &schedule.id, 3, Duration::from_secs(10)).await;
    let mut previous = None;
    for run in &runs[..3] {
        assert_eq!(run.outcome(), RunOutcome::Delivered, "{run:?}");
        assert_eq!(run.trigger(), RunTrigger::Scheduled);
        assert!(run.summary.contains("prompt from tick"), "the agent's reply is summarised: {run:?}");
        let scheduled = millis(&run.scheduled_at);
        assert_eq!(scheduled % 1000, 0, "runs fall on whole seconds");
        assert!(scheduled >= first_due);
        let lag = millis(&run.fired_at) - scheduled;
        assert!((0..500).contains(&lag), "fired {lag} ms after its time");
        assert_eq!(run.message_id, format!("schedule-{}-{scheduled}", schedule.id));
        if let Some(previous) = previous {
            assert_eq!(scheduled - previous, 1000, "one run per second, none skipped");
        }
        previous = Some(scheduled);
    }
    let received = agent.received().await;
    assert!(received.iter().filter(|text| *text == "prompt from tick").count() >= 3, "{received:?}");
    assert_eq!(agent.stats().await["duplicates"], 0);

    let after = get(&scheduler.client, &schedule.id).await;
    assert!(millis(&after.next_run_at) > millis(&runs[2].scheduled_at));
    assert_eq!(after.last_outcome(), RunOutcome::Delivered);
}

#[tokio::test]
async fn a_native_scheduler_workspace_gets_skipped_runs_and_nothing_sent() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let native = rpb::Capabilities { native_scheduler: true, ..Default::default() };
    let (agent, workspace) = mesh.agent(native, 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "own-cron", EVERY_SECOND)).await;

    let runs = finished_runs(&scheduler.client, &schedule.id, 2, Duration::from_secs(10)).await;
    for run in &runs {
        assert_eq!(run.outcome(), RunOutcome::SkippedNative, "{run:?}");
    }
    let after = get(&scheduler.client, &schedule.id).await;
    assert!(millis(&after.next_run_at) > millis(&runs.last().unwrap().scheduled_at), "next_run_at advanced");
    assert_eq!(after.last_outcome(), RunOutcome::SkippedNative);
    assert!(agent.received().await.is_empty(), "the agent's own scheduler fires it; nothing may be sent");
}

#[tokio::test]
async fn a_busy_workspace_is_skipped_or_queued_as_the_overlap_policy_says() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let (agent, workspace) = mesh.agent(rpb::Capabilities::default(), 1).await;
    // Busy as the registry sees it (one task of one) and as the agent answers.
    agent.set_busy(true).await;
    workspace.heartbeat(1).await;

    let skip = create(&scheduler.client, schedule_request(&workspace, "skip", EVERY_SECOND)).await;
    let queue = create(
        &scheduler.client,
        CreateScheduleRequest {
            overlap_policy: OverlapPolicy::Queue.into(),
            ..schedule_request(&workspace, "queue", EVERY_SECOND)
        },
    )
    .await;

    let skipped = finished_runs(&scheduler.client, &skip.id, 2, Duration::from_secs(10)).await;
    for run in &skipped {
        assert_eq!(run.outcome(), RunOutcome::SkippedBusy, "{run:?}");
        assert!(run.error.contains("busy"), "the reason is recorded: {run:?}");
    }
    assert!(millis(&get(&scheduler.client, &skip.id).await.next_run_at) > millis(&skipped[1].scheduled_at));

    let queued = finished_runs(&scheduler.client, &queue.id, 2, Duration::from_secs(10)).await;
    for run in &queued {
        assert_eq!(run.outcome(), RunOutcome::Queued, "{run:?}");
        assert!(!run.queue_id.is_empty(), "the gateway's queue item is named: {run:?}");
    }
    // Pause both, then free the agent: the queued runs are delivered by the
    // gateway's drain, the skipped ones never.
    for id in [&skip.id, &queue.id] {
        let request =
            agentmesh_proto::scheduler::v1::PauseScheduleRequest { schedule_id: id.clone(), reason: String::new() };
        scheduler.client.clone().pause_schedule(request).await.unwrap();
    }
    agent.set_busy(false).await;
    workspace.heartbeat(0).await;
    let received = eventually(Duration::from_secs(10), || async {
        let received = agent.received().await;
        (received.len() >= queued.len()).then_some(received)
    })
    .await;
    assert!(received.iter().all(|text| text == "prompt from queue"), "{received:?}");
}

#[tokio::test]
async fn a_native_session_workspace_refuses_the_queue_and_the_run_is_skipped() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let session = rpb::Capabilities { native_session: true, ..Default::default() };
    let (agent, workspace) = mesh.agent(session, 1).await;
    agent.set_busy(true).await;
    workspace.heartbeat(1).await;
    let schedule = create(
        &scheduler.client,
        CreateScheduleRequest {
            overlap_policy: OverlapPolicy::Queue.into(),
            ..schedule_request(&workspace, "session", EVERY_SECOND)
        },
    )
    .await;
    let runs = finished_runs(&scheduler.client, &schedule.id, 1, Duration::from_secs(10)).await;
    assert_eq!(runs[0].outcome(), RunOutcome::SkippedBusy, "{:?}", runs[0]);
    assert!(runs[0].error.contains("own session"), "{:?}", runs[0]);
}

#[tokio::test]
async fn invalid_cron_or_timezone_is_invalid_argument_naming_the_field() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let workspace = mesh.registry.create("ws", None, 1).await;
    for (cron, timezone, field) in [
        ("61 * * * *", "", "cron_expression"),
        ("* * *", "", "cron_expression"),
        ("0 9 * * *", "Mars/Olympus_Mons", "timezone"),
    ] {
        let request =
            CreateScheduleRequest { timezone: timezone.to_owned(), ..schedule_request(&workspace, "bad", cron) };
        let status = scheduler.client.clone().create_schedule(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{cron} {timezone}: {status:?}");
        assert!(status.message().starts_with(&format!("{field}:")), "{cron} {timezone}: {}", status.message());
    }
}

#[tokio::test]
async fn after_downtime_each_catch_up_policy_does_what_it_says() {
    let mesh = Mesh::start().await;
    let grace = |s: &mut agentmesh_scheduler::settings::SchedulerSettings| s.missed_grace_secs = 1;
    let scheduler = mesh.scheduler(grace).await;
    let (_agent, workspace) = mesh.agent(rpb::Capabilities::default(), 8).await;
    let skip = create(&scheduler.client, schedule_request(&workspace, "skip-missed", EVERY_SECOND)).await;
    let once = create(
        &scheduler.client,
        CreateScheduleRequest {
            catch_up_policy: CatchUpPolicy::FireOnce.into(),
            ..schedule_request(&workspace, "fire-once", EVERY_SECOND)
        },
    )
    .await;
    finished_runs(&scheduler.client, &skip.id, 1, Duration::from_secs(10)).await;
    finished_runs(&scheduler.client, &once.id, 1, Duration::from_secs(10)).await;

    scheduler.stop();
    let down_at = chrono_now_ms();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let scheduler = mesh.scheduler(grace).await;
    let up_at = chrono_now_ms();
    finished_runs(&scheduler.client, &skip.id, 3, Duration::from_secs(10)).await;
    let runs_once = finished_runs(&scheduler.client, &once.id, 3, Duration::from_secs(10)).await;
    let runs_skip = runs(&scheduler.client, &skip.id).await;

    // Skip missed: nothing is recorded for the times missed while down.
    let missed = |run: &&ScheduleRun| {
        let at = millis(&run.scheduled_at);
        at > down_at + 1000 && at < up_at - 1000
    };
    assert_eq!(runs_skip.iter().filter(missed).count(), 0, "{runs_skip:#?}");
    assert!(runs_skip.iter().all(|r| r.trigger() == RunTrigger::Scheduled));
    // Fire once: one catch-up run, for the latest missed time, then on time again.
    let catch_ups: Vec<_> = runs_once.iter().filter(|r| r.trigger() == RunTrigger::CatchUp).collect();
    assert_eq!(catch_ups.len(), 1, "{runs_once:#?}");
    assert!(millis(&catch_ups[0].scheduled_at) >= up_at - 2000, "the latest missed time: {:?}", catch_ups[0]);
    assert_eq!(catch_ups[0].outcome(), RunOutcome::Delivered);
    assert_eq!(runs_once.iter().filter(missed).count(), 0, "only the latest missed time runs: {runs_once:#?}");
}

fn chrono_now_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Fails every other run with an error and panics on the rest.
struct Unruly(AtomicU32);

impl Dispatcher for Unruly {
    fn send(&self, _message: Outgoing) -> BoxFuture<'static, Result<Delivery, DispatchError>> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if n.is_multiple_of(2) {
                panic!("the dispatcher blew up on run {n}");
            }
            Err(DispatchError::Failed(format!("the gateway is gone (run {n})")))
        })
    }
}

#[tokio::test]
async fn an_error_or_a_panic_while_firing_still_advances_the_schedule() {
    let mesh = Mesh::start().await;
    let dispatcher = Arc::new(Unruly(AtomicU32::new(0)));
    let scheduler =
        SchedulerNode::start_with_dispatcher(&mesh.registry, &mesh.database_url(), mesh.dir.path(), dispatcher).await;
    let (_agent, workspace) = mesh.agent(rpb::Capabilities::default(), 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "unruly", EVERY_SECOND)).await;

    let runs = finished_runs(&scheduler.client, &schedule.id, 4, Duration::from_secs(10)).await;
    assert!(runs.iter().all(|r| r.outcome() == RunOutcome::Failed), "{runs:#?}");
    assert!(runs.iter().any(|r| r.error.contains("panicked")), "{runs:#?}");
    assert!(runs.iter().any(|r| r.error.contains("the gateway is gone")), "{runs:#?}");
    let times: Vec<i64> = runs.iter().map(|r| millis(&r.scheduled_at)).collect();
    assert!(times.windows(2).all(|w| w[1] - w[0] == 1000), "every second ran despite failures: {times:?}");
    let after = get(&scheduler.client, &schedule.id).await;
    assert!(millis(&after.next_run_at) > *times.last().unwrap());
    assert_eq!(after.last_outcome(), RunOutcome::Failed);
    assert!(!after.last_error.is_empty());
}

#[tokio::test]
async fn a_removed_workspace_has_its_schedules_disabled() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let (_agent, workspace) = mesh.agent(rpb::Capabilities::default(), 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "doomed", "0 0 1 1 *")).await;
    assert!(schedule.next_run_at.is_some());

    workspace.transition(WorkspaceStatus::Removed).await;
    let disabled = eventually(Duration::from_secs(10), || async {
        let schedule = get(&scheduler.client, &schedule.id).await;
        (!schedule.enabled).then_some(schedule)
    })
    .await;
    assert_eq!(disabled.disabled_reason, "workspace removed");
    assert!(disabled.next_run_at.is_none());
    let request = TriggerScheduleRequest { schedule_id: schedule.id.clone(), request_id: None };
    let refused = scheduler.client.clone().trigger_schedule(request).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition);
}

#[tokio::test]
async fn a_manual_trigger_fires_once_per_request_id() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let (agent, workspace) = mesh.agent(rpb::Capabilities::default(), 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "by-hand", "0 0 1 1 *")).await;
    let trigger = || {
        let request = TriggerScheduleRequest { schedule_id: schedule.id.clone(), request_id: Some("retry-me".into()) };
        let mut client = scheduler.client.clone();
        async move { client.trigger_schedule(request).await.unwrap().into_inner().run.unwrap() }
    };
    let first = trigger().await;
    let again = trigger().await;
    assert_eq!(first.id, again.id);
    assert_eq!(first.trigger(), RunTrigger::Manual);
    let runs = finished_runs(&scheduler.client, &schedule.id, 1, Duration::from_secs(10)).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].outcome(), RunOutcome::Delivered);
    assert_eq!(agent.received().await, ["prompt from by-hand"]);
    let after = get(&scheduler.client, &schedule.id).await;
    assert_eq!(after.next_run_at, schedule.next_run_at, "a trigger leaves the timetable alone");
}

/// Rows damaged behind the scheduler's back (SCH-7): an expression that no
/// longer parses keeps its `next_run_at` and an error and wedges nothing; a
/// missing `next_run_at` is repaired at start.
#[tokio::test]
async fn a_damaged_row_neither_loses_its_place_nor_stops_the_others() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|_| {}).await;
    let (agent, workspace) = mesh.agent(rpb::Capabilities::default(), 8).await;
    let poisoned = create(&scheduler.client, schedule_request(&workspace, "poisoned", EVERY_SECOND)).await;
    let unplaced = create(&scheduler.client, schedule_request(&workspace, "unplaced", "0 0 1 1 *")).await;
    let healthy = create(&scheduler.client, schedule_request(&workspace, "healthy", EVERY_SECOND)).await;
    scheduler.stop();

    let pool = sqlx::SqlitePool::connect(&mesh.database_url()).await.unwrap();
    sqlx::query("UPDATE schedules SET cron_expression = 'not a cron' WHERE id = $1")
        .bind(&poisoned.id)
        .execute(&pool)
        .await
        .unwrap();
    sqlx::query("UPDATE schedules SET next_run_at = NULL WHERE id = $1")
        .bind(&unplaced.id)
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;

    let scheduler = mesh.scheduler(|_| {}).await;
    let poisoned_before = runs(&scheduler.client, &poisoned.id).await.len();
    let fired = finished_runs(&scheduler.client, &healthy.id, 3, Duration::from_secs(10)).await;
    assert!(fired.iter().all(|r| r.outcome() == RunOutcome::Delivered), "{fired:#?}");

    let damaged = get(&scheduler.client, &poisoned.id).await;
    assert!(damaged.last_error.contains("cron_expression"), "{damaged:?}");
    assert!(damaged.next_run_at.is_some(), "a bad expression never erases next_run_at");
    assert!(millis(&damaged.next_run_at) > chrono_now_ms() + 30_000, "looked at again later, not every tick");
    assert_eq!(runs(&scheduler.client, &poisoned.id).await.len(), poisoned_before, "nothing fires from a bad row");

    let repaired = get(&scheduler.client, &unplaced.id).await;
    assert!(repaired.next_run_at.is_some(), "a missing next_run_at is repaired at start");
    assert!(agent.received().await.iter().any(|t| t == "prompt from healthy"));
}

#[tokio::test]
async fn repeated_empty_replies_mark_the_schedule_stale() {
    let mesh = Mesh::start().await;
    let scheduler = mesh.scheduler(|s| s.stale_after_empty_replies = 3).await;
    let silent = EchoConfig { silent: true, ..EchoConfig::default() };
    let (_agent, workspace) = mesh.agent_with(silent, rpb::Capabilities::default(), 4).await;
    let schedule = create(&scheduler.client, schedule_request(&workspace, "ignored", EVERY_SECOND)).await;

    let runs = finished_runs(&scheduler.client, &schedule.id, 3, Duration::from_secs(10)).await;
    assert!(runs.iter().all(|r| r.outcome() == RunOutcome::EmptyReply), "{runs:#?}");
    let stale = eventually(Duration::from_secs(5), || async {
        let schedule = get(&scheduler.client, &schedule.id).await;
        schedule.stale.then_some(schedule)
    })
    .await;
    assert!(stale.consecutive_empty_replies >= 3, "{stale:?}");
    assert!(stale.enabled, "a stale schedule keeps firing");
}

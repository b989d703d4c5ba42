//! The scheduler's gRPC API against a real registry: every field checked at
//! the edge, the error each RPC promises, and who may touch what. Runs go to
//! a dispatcher that answers at once; firing itself is tested in firing.rs.

use std::{sync::Arc, time::Duration};

use agentmesh_chassis::client::{ServiceChannel, service_channel};
use agentmesh_meshkit::*;
use agentmesh_proto::{
    registry::v1::WorkspaceStatus,
    scheduler::v1::{
        CatchUpPolicy, CreateScheduleRequest, DeleteScheduleRequest, GetRunRequest, GetScheduleRequest,
        ListRunsRequest, ListSchedulesRequest, OverlapPolicy, PauseScheduleRequest, ResumeScheduleRequest, RunOutcome,
        RunTrigger, Schedule, ScheduleRun, TriggerScheduleRequest, UpdateScheduleRequest,
        scheduler_service_client::SchedulerServiceClient,
    },
};
use agentmesh_scheduler::dispatch::{Delivery, DispatchError, Dispatcher, Outgoing};
use futures::future::BoxFuture;
use tonic::{Code, Status};
use tonic_types::StatusExt;

type Client = SchedulerServiceClient<ServiceChannel>;

/// Answers every run at once, so that triggered runs finish.
struct Answers;

impl Dispatcher for Answers {
    fn send(&self, message: Outgoing) -> BoxFuture<'static, Result<Delivery, DispatchError>> {
        Box::pin(async move { Ok(Delivery::Replied { summary: format!("done: {}", message.text) }) })
    }
}

struct Mesh {
    registry: RegistryNode,
    scheduler: SchedulerNode,
    _dir: tempfile::TempDir,
}

impl Mesh {
    async fn start() -> Self {
        let registry = RegistryNode::start().await;
        let dir = tempfile::tempdir().unwrap();
        let database_url = format!("sqlite://{}", dir.path().join("scheduler.db").display());
        let scheduler =
            SchedulerNode::start_with_dispatcher(&registry, &database_url, dir.path(), Arc::new(Answers)).await;
        Self { registry, scheduler, _dir: dir }
    }

    fn operator(&self) -> Client {
        self.scheduler.client.clone()
    }

    /// A client presenting `token` (none when empty).
    fn client(&self, token: &str) -> Client {
        let address = format!("http://{}", self.scheduler.address);
        SchedulerServiceClient::new(service_channel(&address, token, None).unwrap())
    }

    async fn workspace(&self, name: &str) -> Workspace {
        self.registry.create(name, None, 4).await
    }
}

fn request(workspace: &Workspace, name: &str) -> CreateScheduleRequest {
    request_to(&workspace.id, name)
}

fn request_to(workspace_id: &str, name: &str) -> CreateScheduleRequest {
    CreateScheduleRequest {
        workspace_id: workspace_id.to_owned(),
        name: name.to_owned(),
        cron_expression: "0 9 * * *".to_owned(),
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

async fn update(client: &Client, request: UpdateScheduleRequest) -> (Schedule, bool) {
    let reply = client.clone().update_schedule(request).await.unwrap().into_inner();
    (reply.schedule.unwrap(), reply.changed)
}

async fn trigger(client: &Client, id: &str, request_id: Option<&str>) -> Result<ScheduleRun, Status> {
    let request = TriggerScheduleRequest { schedule_id: id.to_owned(), request_id: request_id.map(str::to_owned) };
    Ok(client.clone().trigger_schedule(request).await?.into_inner().run.unwrap())
}

fn names(schedules: &[Schedule]) -> Vec<&str> {
    schedules.iter().map(|s| s.name.as_str()).collect()
}

fn seconds(timestamp: &Option<prost_types::Timestamp>) -> i64 {
    timestamp.as_ref().expect("a timestamp").seconds
}

/// The `ErrorInfo` reason of an error, asserting its code and domain.
#[track_caller]
fn reason<T: std::fmt::Debug>(result: Result<T, Status>, code: Code) -> String {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), code, "{status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!(info.domain, "agentmesh.dev");
    info.reason.clone()
}

/// Asserts INVALID_ARGUMENT naming `field` in the message, the ErrorInfo and the BadRequest.
#[track_caller]
fn assert_invalid<T: std::fmt::Debug>(result: Result<T, Status>, field: &str) {
    let status = result.expect_err("the call should fail");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(status.message().starts_with(&format!("{field}: ")), "{field}: {status:?}");
    let details = status.get_error_details();
    let info = details.error_info().unwrap_or_else(|| panic!("no ErrorInfo in {status:?}"));
    assert_eq!((info.reason.as_str(), info.domain.as_str()), ("INVALID_FIELD", "agentmesh.dev"));
    assert_eq!(info.metadata.get("field").map(String::as_str), Some(field));
    let violations = &details.bad_request().unwrap_or_else(|| panic!("no BadRequest in {status:?}")).field_violations;
    assert_eq!(violations.iter().map(|v| v.field.as_str()).collect::<Vec<_>>(), [field]);
}

#[tokio::test]
async fn a_new_schedule_takes_the_defaults_and_its_first_time_after_now() {
    let mesh = Mesh::start().await;
    let workspace = mesh.workspace("ws").await;
    let before = chrono::Utc::now().timestamp();
    let schedule = create(&mesh.operator(), request(&workspace, "morning")).await;

    assert!(uuid::Uuid::parse_str(&schedule.id).is_ok());
    assert_eq!(schedule.workspace_id, workspace.id);
    assert!(schedule.enabled);
    assert_eq!(schedule.timezone, "UTC");
    assert_eq!(schedule.overlap_policy(), OverlapPolicy::Skip);
    assert_eq!(schedule.catch_up_policy(), CatchUpPolicy::SkipMissed);
    assert_eq!(schedule.revision, 1);
    let next = seconds(&schedule.next_run_at);
    assert!(next > before && next <= before + 86_400, "the next 09:00 after now: {next}");
    assert_eq!(next % 86_400, 9 * 3600, "09:00 UTC");
    assert_eq!(get(&mesh.operator(), &schedule.id).await, schedule);

    let paused = create(
        &mesh.operator(),
        CreateScheduleRequest {
            enabled: Some(false),
            timezone: "Asia/Tokyo".to_owned(),
            overlap_policy: OverlapPolicy::Queue.into(),
            catch_up_policy: CatchUpPolicy::FireOnce.into(),
            message_metadata_json: r#"{"source":"test"}"#.to_owned(),
            ..request(&workspace, "paused")
        },
    )
    .await;
    assert!(!paused.enabled);
    assert_eq!(paused.next_run_at, None, "a disabled schedule has no next time");
    assert_eq!(paused.timezone, "Asia/Tokyo");
    assert_eq!(paused.overlap_policy(), OverlapPolicy::Queue);
    assert_eq!(paused.catch_up_policy(), CatchUpPolicy::FireOnce);
    assert_eq!(paused.message_metadata_json, r#"{"source":"test"}"#);
}

#[tokio::test]
async fn every_malformed_field_is_refused_by_name_and_nothing_is_created() {
    let mesh = Mesh::start().await;
    let workspace = mesh.workspace("ws").await;
    let valid = request(&workspace, "valid");
    let cases = [
        (CreateScheduleRequest { workspace_id: "nope".into(), ..valid.clone() }, "workspace_id"),
        (CreateScheduleRequest { name: String::new(), ..valid.clone() }, "name"),
        (CreateScheduleRequest { name: "n".repeat(129), ..valid.clone() }, "name"),
        (CreateScheduleRequest { name: "tab\there".into(), ..valid.clone() }, "name"),
        (CreateScheduleRequest { cron_expression: "every morning".into(), ..valid.clone() }, "cron_expression"),
        (CreateScheduleRequest { cron_expression: "0 25 * * *".into(), ..valid.clone() }, "cron_expression"),
        (CreateScheduleRequest { cron_expression: "0 0 31 2 *".into(), ..valid.clone() }, "cron_expression"),
        (CreateScheduleRequest { timezone: "Europe/Atlantis".into(), ..valid.clone() }, "timezone"),
        (CreateScheduleRequest { message_text: String::new(), ..valid.clone() }, "message_text"),
        (CreateScheduleRequest { message_text: "m".repeat(65_537), ..valid.clone() }, "message_text"),
        (CreateScheduleRequest { message_metadata_json: "[]".into(), ..valid.clone() }, "message_metadata_json"),
        (CreateScheduleRequest { message_metadata_json: "{".into(), ..valid.clone() }, "message_metadata_json"),
        (CreateScheduleRequest { overlap_policy: 7, ..valid.clone() }, "overlap_policy"),
        (CreateScheduleRequest { catch_up_policy: 7, ..valid.clone() }, "catch_up_policy"),
    ];
    for (request, field) in cases {
        assert_invalid(mesh.operator().create_schedule(request).await, field);
    }
    let listed = mesh.operator().list_schedules(ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert!(listed.schedules.is_empty(), "{:?}", names(&listed.schedules));
}

#[tokio::test]
async fn a_missing_workspace_is_not_found_and_a_removed_one_takes_no_schedules() {
    let mesh = Mesh::start().await;
    let missing = mesh.operator().create_schedule(request_to(&uuid::Uuid::new_v4().to_string(), "daily")).await;
    assert_eq!(reason(missing, Code::NotFound), "WORKSPACE_NOT_FOUND");

    let workspace = mesh.workspace("doomed").await;
    let schedule = create(&mesh.operator(), request(&workspace, "daily")).await;
    workspace.transition(WorkspaceStatus::Removed).await;
    // The scheduler disables the schedules of a removed workspace once it hears of it.
    let operator = mesh.operator();
    eventually(Duration::from_secs(10), || async {
        let schedule = get(&operator, &schedule.id).await;
        (!schedule.enabled).then_some(())
    })
    .await;

    let again = mesh.operator().create_schedule(request(&workspace, "another")).await;
    assert_eq!(reason(again, Code::FailedPrecondition), "WORKSPACE_REMOVED");
    let resume = mesh.operator().resume_schedule(ResumeScheduleRequest { schedule_id: schedule.id.clone() }).await;
    assert_eq!(reason(resume, Code::FailedPrecondition), "WORKSPACE_REMOVED");
    let enable = UpdateScheduleRequest { schedule_id: schedule.id.clone(), enabled: Some(true), ..Default::default() };
    assert_eq!(reason(mesh.operator().update_schedule(enable).await, Code::FailedPrecondition), "WORKSPACE_REMOVED");
    assert_eq!(reason(trigger(&operator, &schedule.id, None).await, Code::FailedPrecondition), "WORKSPACE_REMOVED");
    assert!(!get(&operator, &schedule.id).await.enabled, "still disabled");
}

#[tokio::test]
async fn names_are_unique_within_a_workspace_and_the_number_of_schedules_is_limited() {
    let registry = RegistryNode::start().await;
    let gateway = GatewayNode::start(&registry, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    let database_url = format!("sqlite://{}", dir.path().join("scheduler.db").display());
    let scheduler = SchedulerNode::start(&registry, &gateway, &database_url, dir.path(), |settings| {
        settings.max_schedules_per_workspace = 2;
    })
    .await;
    let client = scheduler.client.clone();
    let first = registry.create("first", None, 1).await;
    let second = registry.create("second", None, 1).await;

    create(&client, request(&first, "daily")).await;
    let taken = client.clone().create_schedule(request(&first, "daily")).await;
    assert_eq!(reason(taken, Code::AlreadyExists), "NAME_TAKEN");
    create(&client, request(&second, "daily")).await;
    let weekly = create(&client, request(&first, "weekly")).await;

    let full = client.clone().create_schedule(request(&first, "monthly")).await;
    let status = full.as_ref().expect_err("over the limit");
    let limit = status.get_error_details().error_info().and_then(|info| info.metadata.get("limit").cloned());
    assert_eq!(limit.as_deref(), Some("2"));
    assert_eq!(reason(full, Code::ResourceExhausted), "TOO_MANY_SCHEDULES");

    let rename = UpdateScheduleRequest { schedule_id: weekly.id, name: Some("daily".into()), ..Default::default() };
    assert_eq!(reason(client.clone().update_schedule(rename).await, Code::AlreadyExists), "NAME_TAKEN");
}

#[tokio::test]
async fn an_update_changes_only_what_it_sets_and_recomputes_the_time_when_the_timetable_changes() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let workspace = mesh.workspace("ws").await;
    let schedule = create(&client, request(&workspace, "morning")).await;
    let id = schedule.id.clone();

    let (renamed, changed) = update(
        &client,
        UpdateScheduleRequest { schedule_id: id.clone(), name: Some("dawn".into()), ..Default::default() },
    )
    .await;
    assert!(changed);
    assert_eq!(renamed.name, "dawn");
    assert_eq!(renamed.revision, 2);
    assert_eq!(renamed.next_run_at, schedule.next_run_at, "the timetable did not change");
    assert_eq!(renamed.message_text, schedule.message_text);

    let same = UpdateScheduleRequest { schedule_id: id.clone(), name: Some("dawn".into()), ..Default::default() };
    let (unchanged, changed) = update(&client, same).await;
    assert!(!changed);
    assert_eq!(unchanged.revision, 2, "nothing was written");

    let ten = UpdateScheduleRequest {
        schedule_id: id.clone(),
        cron_expression: Some("0 10 * * *".into()),
        ..Default::default()
    };
    let (at_ten, _) = update(&client, ten).await;
    assert_eq!(seconds(&at_ten.next_run_at) % 86_400, 10 * 3600);
    let tokyo =
        UpdateScheduleRequest { schedule_id: id.clone(), timezone: Some("Asia/Tokyo".into()), ..Default::default() };
    let (in_tokyo, _) = update(&client, tokyo).await;
    assert_eq!(seconds(&in_tokyo.next_run_at) % 86_400, 3600, "10:00 in Tokyo is 01:00 UTC");

    let policies = UpdateScheduleRequest {
        schedule_id: id.clone(),
        overlap_policy: Some(OverlapPolicy::Queue.into()),
        catch_up_policy: Some(CatchUpPolicy::Unspecified.into()),
        message_metadata_json: Some(r#"{"k":1}"#.into()),
        ..Default::default()
    };
    let (after, _) = update(&client, policies).await;
    assert_eq!(after.overlap_policy(), OverlapPolicy::Queue);
    assert_eq!(after.catch_up_policy(), CatchUpPolicy::SkipMissed);
    assert_eq!(after.message_metadata_json, r#"{"k":1}"#);
    assert_eq!(after.next_run_at, in_tokyo.next_run_at);

    let disable = UpdateScheduleRequest { schedule_id: id.clone(), enabled: Some(false), ..Default::default() };
    let (disabled, _) = update(&client, disable).await;
    assert!(!disabled.enabled);
    assert_eq!(disabled.disabled_reason, "paused");
    assert_eq!(disabled.next_run_at, None);
    let enable = UpdateScheduleRequest { schedule_id: id, enabled: Some(true), ..Default::default() };
    let (enabled, _) = update(&client, enable).await;
    assert!(enabled.enabled);
    assert_eq!(enabled.disabled_reason, "");
    assert_eq!(enabled.next_run_at, in_tokyo.next_run_at, "recomputed from now: the same next 10:00 in Tokyo");
}

#[tokio::test]
async fn a_refused_update_leaves_the_schedule_as_it_was() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let workspace = mesh.workspace("ws").await;
    let schedule = create(&client, request(&workspace, "morning")).await;
    let id = schedule.id.clone();
    let renaming = |change: UpdateScheduleRequest| UpdateScheduleRequest {
        schedule_id: id.clone(),
        name: Some("renamed".into()),
        ..change
    };

    let cases = [
        (
            renaming(UpdateScheduleRequest { cron_expression: Some("61 * * * *".into()), ..Default::default() }),
            "cron_expression",
        ),
        (
            renaming(UpdateScheduleRequest { timezone: Some("Nowhere/Special".into()), ..Default::default() }),
            "timezone",
        ),
        (renaming(UpdateScheduleRequest { message_text: Some(String::new()), ..Default::default() }), "message_text"),
        (
            renaming(UpdateScheduleRequest { message_metadata_json: Some("1".into()), ..Default::default() }),
            "message_metadata_json",
        ),
        (renaming(UpdateScheduleRequest { overlap_policy: Some(5), ..Default::default() }), "overlap_policy"),
        (renaming(UpdateScheduleRequest { catch_up_policy: Some(5), ..Default::default() }), "catch_up_policy"),
        (
            UpdateScheduleRequest { schedule_id: id.clone(), name: Some("bell\u{7}".into()), ..Default::default() },
            "name",
        ),
        (UpdateScheduleRequest { schedule_id: "12".into(), ..Default::default() }, "schedule_id"),
    ];
    for (request, field) in cases {
        assert_invalid(client.clone().update_schedule(request).await, field);
    }
    let stale = renaming(UpdateScheduleRequest { expected_revision: Some(7), ..Default::default() });
    let mismatch = client.clone().update_schedule(stale).await;
    let status = mismatch.as_ref().expect_err("a stale revision");
    let stored = status.get_error_details().error_info().and_then(|info| info.metadata.get("revision").cloned());
    assert_eq!(stored.as_deref(), Some("1"));
    assert_eq!(reason(mismatch, Code::Aborted), "REVISION_MISMATCH");
    assert_eq!(get(&client, &id).await, schedule, "untouched, next_run_at included");

    let current = renaming(UpdateScheduleRequest { expected_revision: Some(1), ..Default::default() });
    assert_eq!(update(&client, current).await.0.name, "renamed");
    let missing = UpdateScheduleRequest { schedule_id: uuid::Uuid::new_v4().to_string(), ..Default::default() };
    assert_eq!(client.clone().update_schedule(missing).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn pausing_and_resuming_are_idempotent_and_resuming_starts_from_now() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let workspace = mesh.workspace("ws").await;
    let schedule = create(&client, request(&workspace, "morning")).await;
    let id = schedule.id.clone();
    let pause = |reason: &str| PauseScheduleRequest { schedule_id: id.clone(), reason: reason.to_owned() };
    let resume = || ResumeScheduleRequest { schedule_id: id.clone() };

    let paused = client.clone().pause_schedule(pause("")).await.unwrap().into_inner();
    assert!(paused.changed);
    let schedule_after = paused.schedule.unwrap();
    assert!(!schedule_after.enabled);
    assert_eq!(schedule_after.disabled_reason, "paused");
    assert_eq!(schedule_after.next_run_at, None);

    let again = client.clone().pause_schedule(pause("maintenance")).await.unwrap().into_inner();
    assert!(!again.changed, "pausing a paused schedule is a no-op");
    assert_eq!(again.schedule.unwrap().disabled_reason, "paused");

    let resumed = client.clone().resume_schedule(resume()).await.unwrap().into_inner();
    assert!(resumed.changed);
    let resumed = resumed.schedule.unwrap();
    assert!(resumed.enabled);
    assert_eq!(resumed.disabled_reason, "");
    assert_eq!(resumed.next_run_at, schedule.next_run_at, "the next 09:00 after now");
    let twice = client.clone().resume_schedule(resume()).await.unwrap().into_inner();
    assert!(!twice.changed);
    assert_eq!(twice.schedule.unwrap().revision, resumed.revision);

    let with_reason = client.clone().pause_schedule(pause("  maintenance window ")).await.unwrap().into_inner();
    assert_eq!(with_reason.schedule.unwrap().disabled_reason, "maintenance window");
    assert_invalid(client.clone().pause_schedule(pause(&"r".repeat(1025))).await, "reason");
    let unknown = PauseScheduleRequest { schedule_id: uuid::Uuid::new_v4().to_string(), reason: String::new() };
    assert_eq!(client.clone().pause_schedule(unknown).await.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn a_deleted_schedule_is_gone() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let workspace = mesh.workspace("ws").await;
    let schedule = create(&client, request(&workspace, "morning")).await;
    let delete = || DeleteScheduleRequest { schedule_id: schedule.id.clone() };

    client.clone().delete_schedule(delete()).await.unwrap();
    let get = GetScheduleRequest { schedule_id: schedule.id.clone() };
    assert_eq!(client.clone().get_schedule(get).await.unwrap_err().code(), Code::NotFound);
    assert_eq!(client.clone().delete_schedule(delete()).await.unwrap_err().code(), Code::NotFound);
    let malformed = DeleteScheduleRequest { schedule_id: String::new() };
    assert_invalid(client.clone().delete_schedule(malformed).await, "schedule_id");
}

#[tokio::test]
async fn listings_filter_and_page() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let (first, second) = (mesh.workspace("first").await, mesh.workspace("second").await);
    for name in ["c", "a", "b"] {
        create(&client, request(&first, name)).await;
    }
    create(&client, CreateScheduleRequest { enabled: Some(false), ..request(&second, "z") }).await;

    let page = |workspace_id: &str, page_token: String| ListSchedulesRequest {
        workspace_id: workspace_id.to_owned(),
        page_size: 2,
        page_token,
        ..Default::default()
    };
    let one = client.clone().list_schedules(page(&first.id, String::new())).await.unwrap().into_inner();
    assert_eq!(names(&one.schedules), ["a", "b"]);
    assert!(!one.next_page_token.is_empty());
    let two = client.clone().list_schedules(page(&first.id, one.next_page_token)).await.unwrap().into_inner();
    assert_eq!(names(&two.schedules), ["c"]);
    assert!(two.next_page_token.is_empty());

    let disabled = ListSchedulesRequest { enabled: Some(false), ..Default::default() };
    assert_eq!(names(&client.clone().list_schedules(disabled).await.unwrap().into_inner().schedules), ["z"]);
    let all = client.clone().list_schedules(ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert_eq!(all.schedules.len(), 4);

    let too_big = ListSchedulesRequest { page_size: 1001, ..Default::default() };
    assert_invalid(client.clone().list_schedules(too_big).await, "page_size");
    assert_invalid(client.clone().list_schedules(page(&first.id, "garbage".into())).await, "page_token");
    assert_invalid(client.clone().list_schedules(page("first", String::new())).await, "workspace_id");
}

#[tokio::test]
async fn callers_without_a_valid_credential_are_unauthenticated() {
    let mesh = Mesh::start().await;
    let workspace = mesh.workspace("ws").await;
    let schedule = create(&mesh.operator(), request(&workspace, "morning")).await;
    for client in [mesh.client(""), mesh.client("not-a-token-anyone-issued")] {
        let get = GetScheduleRequest { schedule_id: schedule.id.clone() };
        assert_eq!(client.clone().get_schedule(get).await.unwrap_err().code(), Code::Unauthenticated);
        let list = client.clone().list_schedules(ListSchedulesRequest::default()).await;
        assert_eq!(list.unwrap_err().code(), Code::Unauthenticated);
        let create = client.clone().create_schedule(request(&workspace, "mine")).await;
        assert_eq!(create.unwrap_err().code(), Code::Unauthenticated);
    }
    let service = mesh.client(SERVICE_TOKEN);
    assert_eq!(get(&service, &schedule.id).await.id, schedule.id, "services may touch everything");
}

#[tokio::test]
async fn a_workspace_token_touches_only_its_own_schedules_and_runs() {
    let mesh = Mesh::start().await;
    let (own, other) = (mesh.workspace("own").await, mesh.workspace("other").await);
    let theirs = create(&mesh.operator(), request(&other, "theirs")).await;
    let their_run = trigger(&mesh.operator(), &theirs.id, None).await.unwrap();
    let client = mesh.client(&own.token);

    let mine = create(&client, request(&own, "mine")).await;
    assert_eq!(get(&client, &mine.id).await, mine);
    let my_run = trigger(&client, &mine.id, Some("mine-1")).await.unwrap();
    let get_mine = GetRunRequest { run_id: my_run.id.clone() };
    assert_eq!(client.clone().get_run(get_mine).await.unwrap().into_inner().run.unwrap().id, my_run.id);

    let denied = |result: Result<(), Status>| assert_eq!(result.unwrap_err().code(), Code::PermissionDenied);
    denied(client.clone().create_schedule(request(&other, "intruder")).await.map(|_| ()));
    denied(client.clone().get_schedule(GetScheduleRequest { schedule_id: theirs.id.clone() }).await.map(|_| ()));
    let pause = PauseScheduleRequest { schedule_id: theirs.id.clone(), reason: String::new() };
    denied(client.clone().pause_schedule(pause).await.map(|_| ()));
    let rename = UpdateScheduleRequest { schedule_id: theirs.id.clone(), name: Some("x".into()), ..Default::default() };
    denied(client.clone().update_schedule(rename).await.map(|_| ()));
    denied(client.clone().delete_schedule(DeleteScheduleRequest { schedule_id: theirs.id.clone() }).await.map(|_| ()));
    denied(trigger(&client, &theirs.id, None).await.map(|_| ()));
    denied(client.clone().get_run(GetRunRequest { run_id: their_run.id.clone() }).await.map(|_| ()));
    let named = ListSchedulesRequest { workspace_id: other.id.clone(), ..Default::default() };
    denied(client.clone().list_schedules(named).await.map(|_| ()));
    let named_runs = ListRunsRequest { workspace_id: other.id.clone(), ..Default::default() };
    denied(client.clone().list_runs(named_runs).await.map(|_| ()));

    let listed = client.clone().list_schedules(ListSchedulesRequest::default()).await.unwrap().into_inner();
    assert_eq!(names(&listed.schedules), ["mine"], "a workspace lists only its own schedules");
    let runs = client.clone().list_runs(ListRunsRequest::default()).await.unwrap().into_inner().runs;
    assert_eq!(runs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [my_run.id.as_str()]);
    let by_their_schedule = ListRunsRequest { schedule_id: theirs.id.clone(), ..Default::default() };
    assert!(client.clone().list_runs(by_their_schedule).await.unwrap().into_inner().runs.is_empty());
    // The run they fired moves last_run_at; the refused calls change nothing else.
    let after = get(&mesh.operator(), &theirs.id).await;
    assert_eq!((after.name.as_str(), after.enabled, after.revision), ("theirs", true, 1), "{after:?}");
}

#[tokio::test]
async fn a_trigger_fires_once_per_request_id_and_its_runs_can_be_read_back() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let workspace = mesh.workspace("ws").await;
    let schedule =
        create(&client, CreateScheduleRequest { enabled: Some(false), ..request(&workspace, "manual") }).await;

    let first = trigger(&client, &schedule.id, Some("retry-1")).await.unwrap();
    assert_eq!(first.trigger(), RunTrigger::Manual);
    assert_eq!(first.schedule_id, schedule.id);
    assert_eq!(first.workspace_id, workspace.id);
    let retried = trigger(&client, &schedule.id, Some("retry-1")).await.unwrap();
    assert_eq!(retried.id, first.id, "the same key returns the same run");
    let other = trigger(&client, &schedule.id, None).await.unwrap();
    assert_ne!(other.id, first.id);
    assert_eq!(get(&client, &schedule.id).await.next_run_at, None, "a trigger does not touch next_run_at");

    let run = client.clone().get_run(GetRunRequest { run_id: first.id.clone() }).await.unwrap().into_inner().run;
    assert_eq!(run.map(|r| r.id), Some(first.id.clone()));
    let all = ListRunsRequest { schedule_id: schedule.id.clone(), ..Default::default() };
    let listed = client.clone().list_runs(all).await.unwrap().into_inner().runs;
    let mut ids: Vec<&str> = listed.iter().map(|r| r.id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = vec![first.id.as_str(), other.id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);

    for bad in ["", "has space", "slash/", &"k".repeat(129)] {
        assert_invalid(trigger(&client, &schedule.id, Some(bad)).await, "request_id");
    }
    let unknown = GetRunRequest { run_id: uuid::Uuid::new_v4().to_string() };
    assert_eq!(client.clone().get_run(unknown).await.unwrap_err().code(), Code::NotFound);
    assert_invalid(client.clone().get_run(GetRunRequest { run_id: "run-1".into() }).await, "run_id");
    let missing = trigger(&client, &uuid::Uuid::new_v4().to_string(), None).await;
    assert_eq!(missing.unwrap_err().code(), Code::NotFound);
}

#[tokio::test]
async fn run_listings_check_their_filters() {
    let mesh = Mesh::start().await;
    let client = mesh.operator();
    let at = |seconds: i64| Some(prost_types::Timestamp { seconds, nanos: 0 });
    let cases = [
        (ListRunsRequest { schedule_id: "x".into(), ..Default::default() }, "schedule_id"),
        (ListRunsRequest { workspace_id: "x".into(), ..Default::default() }, "workspace_id"),
        (ListRunsRequest { outcomes: vec![RunOutcome::Unspecified.into()], ..Default::default() }, "outcomes"),
        (ListRunsRequest { outcomes: vec![99], ..Default::default() }, "outcomes"),
        (
            ListRunsRequest { scheduled_after: at(100), scheduled_before: at(100), ..Default::default() },
            "scheduled_before",
        ),
        (
            ListRunsRequest {
                scheduled_after: Some(prost_types::Timestamp { seconds: 0, nanos: -5 }),
                ..Default::default()
            },
            "scheduled_after",
        ),
        (ListRunsRequest { page_size: 5000, ..Default::default() }, "page_size"),
        (ListRunsRequest { page_token: "garbage".into(), ..Default::default() }, "page_token"),
    ];
    for (request, field) in cases {
        assert_invalid(client.clone().list_runs(request).await, field);
    }

    let workspace = mesh.workspace("ws").await;
    let schedule = create(&client, request(&workspace, "manual")).await;
    let run = trigger(&client, &schedule.id, Some("one")).await.unwrap();
    let delivered = ListRunsRequest { outcomes: vec![RunOutcome::Delivered.into()], ..Default::default() };
    let finished = eventually(Duration::from_secs(10), || async {
        let runs = client.clone().list_runs(delivered.clone()).await.unwrap().into_inner().runs;
        (!runs.is_empty()).then_some(runs)
    })
    .await;
    assert_eq!(finished.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), [run.id.as_str()]);
    let scheduled = seconds(&run.scheduled_at);
    let window = |after: i64, before: i64| ListRunsRequest {
        scheduled_after: at(after),
        scheduled_before: at(before),
        ..Default::default()
    };
    let inside = client.clone().list_runs(window(scheduled - 60, scheduled + 60)).await.unwrap().into_inner();
    assert_eq!(inside.runs.len(), 1);
    let outside = client.clone().list_runs(window(scheduled + 60, scheduled + 120)).await.unwrap().into_inner();
    assert!(outside.runs.is_empty());
}

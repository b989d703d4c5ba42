//! The schedule store (SCH-1, SCH-6…SCH-8), on SQLite and, when configured,
//! PostgreSQL: schedules and their revisions, listings, the claim of due
//! runs by racing replicas, leases and their takeover, outcomes and
//! staleness, manual runs, repairs and history. Every call takes its clock
//! from the test, so time is exact; plans are written here, not read from
//! cron expressions, so the store is tested on its own.

use std::{
    collections::{HashMap, HashSet},
    time::{Duration, Instant},
};

use agentmesh_db::Database;
use agentmesh_proto::scheduler::v1::{CatchUpPolicy, OverlapPolicy, RunOutcome, RunTrigger};
use agentmesh_scheduler::store::{
    ClaimedRun, DueSchedule, Finish, Load, NewSchedule, Plan, Run, RunFilter, RunKey, Schedule, ScheduleChanges,
    ScheduleFilter, ScheduleStore, StoreError, message_id, run_id,
};
use agentmesh_testkit::engines::{Engine, TestDatabase};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

const LEASE: Duration = Duration::from_secs(30);
const LIMIT: u32 = 1000;
const STALE_AFTER: u32 = 3;

/// A fresh store on one engine.
struct Backend {
    store: ScheduleStore,
    database: TestDatabase,
}

impl Backend {
    async fn open(database: TestDatabase) -> Self {
        let store = ScheduleStore::open(Database::connect(database.url()).await.unwrap()).await.unwrap();
        Self { store, database }
    }

    /// Another scheduler replica on the same database: its own connection
    /// pool on PostgreSQL; on SQLite (one replica only) the same store.
    async fn replica(&self) -> ScheduleStore {
        match self.database.engine() {
            Engine::Postgres => {
                ScheduleStore::open(Database::connect(self.database.url()).await.unwrap()).await.unwrap()
            }
            Engine::Sqlite => self.store.clone(),
        }
    }
}

agentmesh_testkit::on_every_engine!(
    database = "scheduler_test", backend = Backend;
    schedules_are_created_read_and_deleted,
    names_are_unique_per_workspace,
    a_workspace_has_at_most_the_allowed_schedules,
    updates_change_only_what_differs_and_count_revisions,
    a_stale_revision_is_refused,
    listing_schedules_pages_through_filters,
    deleting_a_schedule_deletes_its_runs,
    a_claim_advances_the_schedule_and_records_its_run,
    a_claim_takes_the_earliest_due_up_to_its_limit,
    a_plan_without_a_run_only_advances_and_errors_are_kept,
    a_time_claimed_twice_is_recorded_once,
    concurrent_claimers_take_each_schedule_once,
    expired_leases_are_taken_over_once,
    renewed_leases_are_not_taken_over,
    only_the_holder_finishes_a_run,
    empty_replies_in_a_row_make_a_schedule_stale,
    manual_runs_are_idempotent_per_request,
    a_removed_workspaces_schedules_are_disabled,
    missing_due_times_are_repaired,
    the_next_due_time_ignores_disabled_schedules,
    the_load_counts_due_schedules_and_runs_in_flight,
    listing_runs_pages_newest_first_through_filters,
    finished_runs_are_purged,
    a_store_that_cannot_be_reached_says_so,
    a_thousand_due_schedules_are_claimed_quickly,
);

/// Seconds after a fixed start.
fn t(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
}

fn new_schedule(workspace_id: Uuid, name: &str, next_run_at: Option<DateTime<Utc>>) -> NewSchedule {
    NewSchedule {
        workspace_id,
        name: name.to_owned(),
        cron_expression: "*/5 * * * *".to_owned(),
        timezone: "Europe/Berlin".to_owned(),
        message_text: format!("run {name}"),
        message_metadata_json: r#"{"source":"test"}"#.to_owned(),
        enabled: next_run_at.is_some(),
        overlap_policy: OverlapPolicy::Queue,
        catch_up_policy: CatchUpPolicy::FireOnce,
        next_run_at,
    }
}

async fn create(store: &ScheduleStore, workspace_id: Uuid, name: &str, next_run_at: Option<DateTime<Utc>>) -> Schedule {
    store.create(new_schedule(workspace_id, name, next_run_at), LIMIT, t(0)).await.unwrap()
}

async fn get(store: &ScheduleStore, id: Uuid) -> Schedule {
    store.get(id).await.unwrap().expect("schedule exists")
}

async fn get_run(store: &ScheduleStore, id: Uuid) -> Run {
    store.get_run(id).await.unwrap().expect("run exists")
}

/// The plan of a schedule firing every `period` seconds: a scheduled run at
/// its due time, the next one a period later.
fn every(period: i64) -> impl Fn(&DueSchedule) -> Plan + Send {
    move |due| Plan {
        run: Some((RunTrigger::Scheduled, due.next_run_at)),
        next_run_at: due.next_run_at + TimeDelta::seconds(period),
        error: None,
    }
}

async fn claim(store: &ScheduleStore, now: DateTime<Utc>, owner: &str) -> Vec<ClaimedRun> {
    store.claim_due(now, LIMIT, owner, LEASE, every(60)).await.unwrap()
}

fn finish(outcome: RunOutcome) -> Finish {
    Finish { outcome, ..Finish::default() }
}

fn schedule_ids(claimed: &[ClaimedRun]) -> Vec<Uuid> {
    claimed.iter().map(|claimed| claimed.run.schedule_id).collect()
}

async fn the_load_counts_due_schedules_and_runs_in_flight(backend: &Backend) {
    let store = &backend.store;
    let workspace = Uuid::new_v4();
    assert_eq!(store.load(t(0)).await.unwrap(), Load::default());
    create(store, workspace, "due", Some(t(10))).await;
    create(store, workspace, "later", Some(t(100))).await;
    assert_eq!(store.load(t(20)).await.unwrap(), Load { due: 1, in_flight: 0 });
    let claimed = claim(store, t(20), "replica-a").await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(store.load(t(20)).await.unwrap(), Load { due: 0, in_flight: 1 }, "claimed: in flight, not due");
    assert_eq!(store.load(t(200)).await.unwrap(), Load { due: 2, in_flight: 1 });
}

async fn schedules_are_created_read_and_deleted(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let created = store.create(new_schedule(ws, "daily", Some(t(60))), LIMIT, t(5)).await.unwrap();
    assert_eq!(created.workspace_id, ws);
    assert_eq!((created.name.as_str(), created.cron_expression.as_str()), ("daily", "*/5 * * * *"));
    assert_eq!((created.timezone.as_str(), created.message_text.as_str()), ("Europe/Berlin", "run daily"));
    assert_eq!(created.message_metadata_json, r#"{"source":"test"}"#);
    assert!(created.enabled);
    assert_eq!(created.disabled_reason, "");
    assert_eq!((created.overlap_policy, created.catch_up_policy), (OverlapPolicy::Queue, CatchUpPolicy::FireOnce));
    assert_eq!((created.next_run_at, created.last_run_at), (Some(t(60)), None));
    assert_eq!((created.last_outcome, created.last_error.as_str()), (RunOutcome::Unspecified, ""));
    assert_eq!((created.consecutive_empty_replies, created.stale, created.revision), (0, false, 1));
    assert_eq!((created.created_at, created.updated_at), (t(5), t(5)));
    assert_eq!(get(store, created.id).await, created);

    let paused = create(store, ws, "paused", None).await;
    assert!(!paused.enabled);
    assert_ne!(paused.id, created.id);

    assert!(store.delete(created.id).await.unwrap());
    assert!(!store.delete(created.id).await.unwrap(), "already gone");
    assert_eq!(store.get(created.id).await.unwrap(), None);
    assert_eq!(get(store, paused.id).await, paused);
}

async fn names_are_unique_per_workspace(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let first = create(store, ws, "report", Some(t(60))).await;
    let error = store.create(new_schedule(ws, "report", None), LIMIT, t(1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::NameTaken(name) if name == "report"), "{error:?}");
    create(store, other, "report", Some(t(60))).await;
    create(store, ws, "Report", Some(t(60))).await;

    // Renaming onto a taken name fails too and leaves the schedule alone.
    let second = create(store, ws, "digest", Some(t(60))).await;
    let rename = ScheduleChanges { name: Some("report".to_owned()), ..ScheduleChanges::default() };
    let error = store.update(second.id, None, &rename, t(2)).await.unwrap_err();
    assert!(matches!(&error, StoreError::NameTaken(name) if name == "report"), "{error:?}");
    assert_eq!(get(store, second.id).await, second);
    assert_eq!(get(store, first.id).await, first);
}

async fn a_workspace_has_at_most_the_allowed_schedules(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    for i in 0..3 {
        store.create(new_schedule(ws, &format!("s{i}"), Some(t(60))), 3, t(0)).await.unwrap();
    }
    let error = store.create(new_schedule(ws, "s3", Some(t(60))), 3, t(0)).await.unwrap_err();
    assert!(matches!(error, StoreError::TooManySchedules { limit: 3 }), "{error:?}");
    store.create(new_schedule(other, "s3", Some(t(60))), 3, t(0)).await.unwrap();
    store.create(new_schedule(ws, "s3", Some(t(60))), 4, t(0)).await.unwrap();
    let (listed, _) =
        store.list_schedules(&ScheduleFilter { workspace_id: Some(ws), ..Default::default() }, 0, "").await.unwrap();
    assert_eq!(listed.len(), 4);
}

async fn updates_change_only_what_differs_and_count_revisions(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let stored = create(store, ws, "daily", Some(t(60))).await;

    // Every field set to what it already holds: nothing is written.
    let same = ScheduleChanges {
        name: Some(stored.name.clone()),
        cron_expression: Some(stored.cron_expression.clone()),
        timezone: Some(stored.timezone.clone()),
        message_text: Some(stored.message_text.clone()),
        message_metadata_json: Some(stored.message_metadata_json.clone()),
        enabled: Some((true, String::new())),
        overlap_policy: Some(stored.overlap_policy),
        catch_up_policy: Some(stored.catch_up_policy),
        next_run_at: Some(stored.next_run_at),
        clear_stale: true,
    };
    let (after, changed) = store.update(stored.id, Some(1), &same, t(10)).await.unwrap().unwrap();
    assert!(!changed);
    assert_eq!(after, stored);
    let (_, changed) = store.update(stored.id, None, &ScheduleChanges::default(), t(10)).await.unwrap().unwrap();
    assert!(!changed, "an empty update");
    assert_eq!(get(store, stored.id).await, stored);

    let changes = ScheduleChanges {
        cron_expression: Some("0 9 * * MON-FRI".to_owned()),
        timezone: Some("UTC".to_owned()),
        message_text: Some("good morning".to_owned()),
        message_metadata_json: Some(String::new()),
        overlap_policy: Some(OverlapPolicy::Skip),
        catch_up_policy: Some(CatchUpPolicy::SkipMissed),
        next_run_at: Some(Some(t(3600))),
        ..ScheduleChanges::default()
    };
    let (after, changed) = store.update(stored.id, Some(1), &changes, t(20)).await.unwrap().unwrap();
    assert!(changed);
    let expected = Schedule {
        cron_expression: "0 9 * * MON-FRI".to_owned(),
        timezone: "UTC".to_owned(),
        message_text: "good morning".to_owned(),
        message_metadata_json: String::new(),
        overlap_policy: OverlapPolicy::Skip,
        catch_up_policy: CatchUpPolicy::SkipMissed,
        next_run_at: Some(t(3600)),
        revision: 2,
        updated_at: t(20),
        ..stored.clone()
    };
    assert_eq!(after, expected);
    assert_eq!(get(store, stored.id).await, expected);

    // Pausing writes the reason with the flag; pausing again changes nothing.
    let pause = ScheduleChanges {
        enabled: Some((false, "paused by operator".to_owned())),
        next_run_at: Some(None),
        ..ScheduleChanges::default()
    };
    let (paused, changed) = store.update(stored.id, None, &pause, t(30)).await.unwrap().unwrap();
    assert!(changed);
    assert_eq!((paused.enabled, paused.disabled_reason.as_str()), (false, "paused by operator"));
    assert_eq!((paused.next_run_at, paused.revision, paused.updated_at), (None, 3, t(30)));
    let again = ScheduleChanges { enabled: Some((false, "paused twice".to_owned())), ..ScheduleChanges::default() };
    let (unchanged, changed) = store.update(stored.id, Some(3), &again, t(40)).await.unwrap().unwrap();
    assert!(!changed);
    assert_eq!(unchanged, paused);
    let resume = ScheduleChanges {
        enabled: Some((true, String::new())),
        next_run_at: Some(Some(t(7200))),
        ..ScheduleChanges::default()
    };
    let (resumed, _) = store.update(stored.id, Some(3), &resume, t(50)).await.unwrap().unwrap();
    assert_eq!((resumed.enabled, resumed.disabled_reason.as_str()), (true, ""));
    assert_eq!((resumed.next_run_at, resumed.revision), (Some(t(7200)), 4));

    let rename = ScheduleChanges { name: Some("renamed".to_owned()), ..ScheduleChanges::default() };
    let (renamed, _) = store.update(stored.id, None, &rename, t(60)).await.unwrap().unwrap();
    assert_eq!((renamed.name.as_str(), renamed.revision), ("renamed", 5));
    assert_eq!(store.update(Uuid::new_v4(), None, &rename, t(60)).await.unwrap(), None, "no such schedule");
}

async fn a_stale_revision_is_refused(backend: &Backend) {
    let store = &backend.store;
    let stored = create(store, Uuid::new_v4(), "daily", Some(t(60))).await;
    let rename = |name: &str| ScheduleChanges { name: Some(name.to_owned()), ..ScheduleChanges::default() };
    store.update(stored.id, Some(1), &rename("first"), t(1)).await.unwrap().unwrap();
    let error = store.update(stored.id, Some(1), &rename("second"), t(2)).await.unwrap_err();
    assert!(matches!(error, StoreError::RevisionMismatch { expected: 1, stored: 2 }), "{error:?}");
    let error = store.update(stored.id, Some(7), &ScheduleChanges::default(), t(2)).await.unwrap_err();
    assert!(matches!(error, StoreError::RevisionMismatch { expected: 7, stored: 2 }), "even for a no-op: {error:?}");
    assert_eq!(get(store, stored.id).await.name, "first");

    // Racing updates of one revision: exactly one wins.
    let replica = backend.replica().await;
    let (by_a, by_b) = (rename("by a"), rename("by b"));
    let (a, b) =
        tokio::join!(store.update(stored.id, Some(2), &by_a, t(3)), replica.update(stored.id, Some(2), &by_b, t(3)));
    let outcomes = [a, b];
    assert_eq!(outcomes.iter().filter(|outcome| matches!(outcome, Ok(Some((_, true))))).count(), 1);
    assert!(outcomes.iter().any(|outcome| matches!(outcome, Err(StoreError::RevisionMismatch { stored: 3, .. }))));
    assert_eq!(get(store, stored.id).await.revision, 3);
}

async fn listing_schedules_pages_through_filters(backend: &Backend) {
    let store = &backend.store;
    let (ws1, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let mut all = Vec::new();
    for name in ["m", "b:colon", "z", "a", "B", "é"] {
        all.push(create(store, ws1, name, Some(t(60))).await);
    }
    for name in ["x", "y", "w"] {
        all.push(create(store, ws2, name, None).await);
    }
    all.sort_by(|a, b| (a.workspace_id, &a.name).cmp(&(b.workspace_id, &b.name)));
    let ws1_names: Vec<&str> =
        all.iter().filter(|s| s.workspace_id == ws1).map(|schedule| schedule.name.as_str()).collect();
    assert_eq!(ws1_names, ["B", "a", "b:colon", "m", "z", "é"], "byte order on every engine");

    let mut paged = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let (mut page, next) = store.list_schedules(&ScheduleFilter::default(), 2, &token).await.unwrap();
        assert!(page.len() <= 2);
        paged.append(&mut page);
        pages += 1;
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(pages, 5);
    assert_eq!(paged, all);

    let ids = |schedules: &[Schedule]| schedules.iter().map(|schedule| schedule.id).collect::<Vec<_>>();
    let filter = |workspace_id, enabled, stale_only| ScheduleFilter { workspace_id, enabled, stale_only };
    let (disabled, next) = store.list_schedules(&filter(None, Some(false), false), 10, "").await.unwrap();
    assert_eq!((disabled.len(), next.as_str()), (3, ""));
    assert!(disabled.iter().all(|schedule| schedule.workspace_id == ws2));
    let (enabled, next) = store.list_schedules(&filter(Some(ws1), Some(true), false), 4, "").await.unwrap();
    assert_eq!(enabled.len(), 4);
    let (rest, last) = store.list_schedules(&filter(Some(ws1), Some(true), false), 4, &next).await.unwrap();
    let of_ws1: Vec<Schedule> = all.iter().filter(|schedule| schedule.workspace_id == ws1).cloned().collect();
    assert_eq!(ids(&[enabled, rest].concat()), ids(&of_ws1));
    assert_eq!(last, "");
    assert!(store.list_schedules(&filter(Some(ws2), Some(true), false), 10, "").await.unwrap().0.is_empty());

    // Stale schedules: three empty replies in a row.
    let stale = &all[2];
    for i in 0..3 {
        let run = store.record_manual_run(stale, None, t(i), "r1", LEASE).await.unwrap().0.run;
        assert!(store.finish_run(run.id, "r1", &finish(RunOutcome::EmptyReply), t(i), STALE_AFTER).await.unwrap());
    }
    let (listed, _) = store.list_schedules(&filter(None, None, true), 10, "").await.unwrap();
    assert_eq!(ids(&listed), [stale.id]);
    assert!(listed[0].stale);

    for bad in ["not-hex", "7a7a", "00"] {
        let error = store.list_schedules(&ScheduleFilter::default(), 2, bad).await.unwrap_err();
        assert!(matches!(error, StoreError::InvalidPageToken), "{bad}: {error:?}");
    }
    let runs_token = {
        let run_filter = RunFilter { schedule_id: Some(stale.id), ..RunFilter::default() };
        store.list_runs(&run_filter, 1, "").await.unwrap().1
    };
    assert!(!runs_token.is_empty());
    assert!(matches!(
        store.list_schedules(&ScheduleFilter::default(), 2, &runs_token).await,
        Err(StoreError::InvalidPageToken)
    ));
    assert_eq!(store.list_schedules(&ScheduleFilter::default(), 0, "").await.unwrap().0.len(), 9, "0 means 100");
}

async fn deleting_a_schedule_deletes_its_runs(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let doomed = create(store, ws, "doomed", Some(t(0))).await;
    let kept = create(store, ws, "kept", Some(t(0))).await;
    let claimed = claim(store, t(0), "r1").await;
    assert_eq!(claimed.len(), 2);
    let manual = store.record_manual_run(&doomed, Some("req"), t(1), "r1", LEASE).await.unwrap().0.run;

    assert!(store.delete(doomed.id).await.unwrap());
    let (runs, _) = store.list_runs(&RunFilter::default(), 0, "").await.unwrap();
    assert_eq!(runs.iter().map(|run| run.schedule_id).collect::<Vec<_>>(), [kept.id]);
    assert_eq!(store.get_run(manual.id).await.unwrap(), None);
    // A replica that was sending the deleted schedule's run finds it gone.
    let doomed_run = claimed.iter().find(|claimed| claimed.run.schedule_id == doomed.id).unwrap();
    assert!(
        !store.finish_run(doomed_run.run.id, "r1", &finish(RunOutcome::Delivered), t(2), STALE_AFTER).await.unwrap()
    );
}

async fn a_claim_advances_the_schedule_and_records_its_run(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let due = create(store, ws, "due", Some(t(100))).await;
    let later = create(store, ws, "later", Some(t(101))).await;
    let paused = create(store, ws, "paused", None).await;

    assert!(claim(store, t(99), "r1").await.is_empty(), "nothing due yet");
    let seen = std::sync::Mutex::new(Vec::new());
    let claimed = store
        .claim_due(t(100), LIMIT, "r1", LEASE, |schedule| {
            seen.lock().unwrap().push(schedule.clone());
            every(60)(schedule)
        })
        .await
        .unwrap();
    let seen = seen.into_inner().unwrap();
    assert_eq!(
        seen,
        [DueSchedule {
            id: due.id,
            workspace_id: ws,
            cron_expression: due.cron_expression.clone(),
            timezone: due.timezone.clone(),
            catch_up_policy: CatchUpPolicy::FireOnce,
            next_run_at: t(100),
        }],
        "the plan sees the due schedule, nothing else"
    );

    let message_id = message_id(due.id, &RunKey::At(t(100)));
    let expected = ClaimedRun {
        run: Run {
            id: run_id(&message_id),
            schedule_id: due.id,
            workspace_id: ws,
            trigger: RunTrigger::Scheduled,
            scheduled_at: t(100),
            fired_at: Some(t(100)),
            finished_at: None,
            outcome: RunOutcome::InProgress,
            error: String::new(),
            summary: String::new(),
            message_id,
            queue_id: String::new(),
        },
        message_text: "run due".to_owned(),
        message_metadata_json: r#"{"source":"test"}"#.to_owned(),
        overlap_policy: OverlapPolicy::Queue,
    };
    assert_eq!(claimed, std::slice::from_ref(&expected));
    assert_eq!(get_run(store, expected.run.id).await, expected.run);

    let advanced = get(store, due.id).await;
    assert_eq!(advanced, Schedule { next_run_at: Some(t(160)), ..due.clone() }, "no revision, no updated_at");
    assert_eq!(get(store, later.id).await, later);
    assert_eq!(get(store, paused.id).await, paused);
    assert!(claim(store, t(100), "r2").await.is_empty(), "claimed already");

    // Held under r1's lease: another replica cannot take it before it ends.
    assert!(store.take_over_expired(t(100) + LEASE, LIMIT, "r2", LEASE).await.unwrap().is_empty());
    assert_eq!(store.take_over_expired(t(131), LIMIT, "r2", LEASE).await.unwrap().len(), 1);
}

async fn a_claim_takes_the_earliest_due_up_to_its_limit(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let mut created = Vec::new();
    for (name, due) in [("c", 30), ("a", 10), ("d", 40), ("b", 20), ("e", 500)] {
        created.push(create(store, ws, name, Some(t(due))).await);
    }
    let id = |name: &str| created.iter().find(|schedule| schedule.name == name).unwrap().id;
    assert!(store.claim_due(t(100), 0, "r1", LEASE, every(1000)).await.unwrap().is_empty());
    let first = store.claim_due(t(100), 2, "r1", LEASE, every(1000)).await.unwrap();
    assert_eq!(schedule_ids(&first), [id("a"), id("b")]);
    let rest = store.claim_due(t(100), 10, "r1", LEASE, every(1000)).await.unwrap();
    assert_eq!(schedule_ids(&rest), [id("c"), id("d")], "in due order; e is not due");
}

async fn a_plan_without_a_run_only_advances_and_errors_are_kept(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let skipped = create(store, ws, "skipped", Some(t(10))).await;
    let broken = create(store, ws, "broken", Some(t(10))).await;
    let broken_id = broken.id;
    let plan = move |due: &DueSchedule| {
        if due.id == broken_id {
            Plan { run: None, next_run_at: t(70), error: Some("cron_expression: unreadable".to_owned()) }
        } else {
            Plan { run: None, next_run_at: t(3600), error: None }
        }
    };
    assert!(store.claim_due(t(10), LIMIT, "r1", LEASE, plan).await.unwrap().is_empty());
    assert_eq!(get(store, skipped.id).await, Schedule { next_run_at: Some(t(3600)), ..skipped.clone() });
    let after = get(store, broken.id).await;
    assert_eq!((after.next_run_at, after.last_error.as_str()), (Some(t(70)), "cron_expression: unreadable"));
    assert_eq!((after.revision, after.updated_at), (broken.revision, broken.updated_at));
    assert!(store.list_runs(&RunFilter::default(), 0, "").await.unwrap().0.is_empty());

    // A plan without an error leaves the last one for humans to read.
    let claimed = claim(store, t(70), "r1").await;
    assert_eq!(schedule_ids(&claimed), [broken.id]);
    let after = get(store, broken.id).await;
    assert_eq!((after.next_run_at, after.last_error.as_str()), (Some(t(130)), "cron_expression: unreadable"));
}

async fn a_time_claimed_twice_is_recorded_once(backend: &Backend) {
    let store = &backend.store;
    let schedule = create(store, Uuid::new_v4(), "stuck", Some(t(10))).await;
    // A plan that fires the due time but keeps the schedule there, as a
    // replica that read the schedule before another advanced it would.
    let stay = |due: &DueSchedule| Plan {
        run: Some((RunTrigger::Scheduled, due.next_run_at)),
        next_run_at: due.next_run_at,
        error: None,
    };
    let first = store.claim_due(t(10), LIMIT, "r1", LEASE, stay).await.unwrap();
    assert_eq!(schedule_ids(&first), [schedule.id]);
    let second = store.claim_due(t(11), LIMIT, "r2", LEASE, stay).await.unwrap();
    assert!(second.is_empty(), "the run of t(10) exists");
    let (runs, _) = store.list_runs(&RunFilter::default(), 0, "").await.unwrap();
    assert_eq!(runs, [first[0].run.clone()]);
    assert_eq!(runs[0].fired_at, Some(t(10)), "untouched by the second claim");
}

async fn concurrent_claimers_take_each_schedule_once(backend: &Backend) {
    const SCHEDULES: usize = 500;
    let mut all = HashSet::new();
    for i in 0..SCHEDULES {
        let ws = Uuid::from_u128(i as u128 % 7 + 1);
        all.insert(create(&backend.store, ws, &format!("s{i}"), Some(t(i as i64 % 50))).await.id);
    }
    let mut tasks = Vec::new();
    for replica in 0..2 {
        let store = backend.replica().await;
        for worker in 0..3 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let owner = format!("replica-{replica}");
                let mut mine = Vec::new();
                loop {
                    let claimed = store.claim_due(t(100), 23 + worker, &owner, LEASE, every(3600)).await.unwrap();
                    if claimed.is_empty() {
                        return mine;
                    }
                    mine.extend(claimed.into_iter().map(|claimed| claimed.run.schedule_id));
                }
            }));
        }
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "{id} was claimed twice");
        }
    }
    assert_eq!(seen, all);
    assert_eq!(backend.store.next_due_at().await.unwrap(), Some(t(3600)), "every schedule advanced");
    let (runs, _) = backend.store.list_runs(&RunFilter::default(), 1000, "").await.unwrap();
    assert_eq!(runs.len(), SCHEDULES);
}

/// Claims one run of a new schedule due at `t(0)` under `owner`'s lease.
async fn in_progress(store: &ScheduleStore, name: &str, owner: &str, lease: Duration) -> (Schedule, ClaimedRun) {
    let schedule = create(store, Uuid::new_v4(), name, Some(t(0))).await;
    let claimed = store.claim_due(t(0), LIMIT, owner, lease, every(3600)).await.unwrap();
    assert_eq!(schedule_ids(&claimed), [schedule.id]);
    (schedule, claimed.into_iter().next().unwrap())
}

async fn expired_leases_are_taken_over_once(backend: &Backend) {
    let store = &backend.store;
    let short = Duration::from_secs(10);
    let (schedule, dead) = in_progress(store, "dead", "r1", short).await;
    let (_, alive) = in_progress(store, "alive", "r1", LEASE).await;

    assert!(store.take_over_expired(t(10), LIMIT, "r2", LEASE).await.unwrap().is_empty(), "the lease ends at t(10)");
    let taken = store.take_over_expired(t(11), LIMIT, "r2", LEASE).await.unwrap();
    assert_eq!(taken, std::slice::from_ref(&dead), "the same run, fired_at unchanged, with its schedule's message");
    assert!(store.take_over_expired(t(12), LIMIT, "r3", LEASE).await.unwrap().is_empty(), "r2 holds it now");
    assert!(!store.finish_run(dead.run.id, "r1", &finish(RunOutcome::Delivered), t(12), STALE_AFTER).await.unwrap());
    assert!(store.finish_run(dead.run.id, "r2", &finish(RunOutcome::Delivered), t(12), STALE_AFTER).await.unwrap());
    assert!(store.finish_run(alive.run.id, "r1", &finish(RunOutcome::Delivered), t(12), STALE_AFTER).await.unwrap());
    assert!(store.take_over_expired(t(1000), LIMIT, "r3", LEASE).await.unwrap().is_empty(), "finished runs stay");
    assert_eq!(get(store, schedule.id).await.last_outcome, RunOutcome::Delivered);

    // Many expired runs, several replicas taking over at once: each once.
    let mut expired = HashSet::new();
    for i in 0..60 {
        let schedule = create(store, Uuid::new_v4(), &format!("s{i}"), Some(t(100))).await;
        expired.insert(schedule.id);
    }
    let claimed = store.claim_due(t(100), LIMIT, "dead", short, every(3600)).await.unwrap();
    assert_eq!(claimed.len(), 60);
    let mut tasks = Vec::new();
    for replica in 0..4 {
        let store = backend.replica().await;
        tasks.push(tokio::spawn(async move {
            let owner = format!("replica-{replica}");
            let mut mine = Vec::new();
            loop {
                let taken = store.take_over_expired(t(200), 7, &owner, LEASE).await.unwrap();
                if taken.is_empty() {
                    return mine;
                }
                mine.extend(taken.into_iter().map(|taken| taken.run.schedule_id));
            }
        }));
    }
    let mut seen = HashSet::new();
    for task in tasks {
        for id in task.await.unwrap() {
            assert!(seen.insert(id), "{id} was taken over twice");
        }
    }
    assert_eq!(seen, expired);
}

async fn renewed_leases_are_not_taken_over(backend: &Backend) {
    let store = &backend.store;
    let short = Duration::from_secs(10);
    let (_, first) = in_progress(store, "first", "r1", short).await;
    let (_, second) = in_progress(store, "second", "r1", short).await;
    let (_, others) = in_progress(store, "others", "r2", short).await;
    assert!(store.finish_run(second.run.id, "r1", &finish(RunOutcome::Queued), t(1), STALE_AFTER).await.unwrap());

    assert_eq!(store.renew_leases("r1", t(60)).await.unwrap(), 1, "only runs in progress");
    let long = Duration::from_secs(1000);
    let taken = store.take_over_expired(t(30), LIMIT, "r3", long).await.unwrap();
    assert_eq!(taken.iter().map(|taken| taken.run.id).collect::<Vec<_>>(), [others.run.id], "r2 did not renew");
    assert!(store.take_over_expired(t(60), LIMIT, "r3", LEASE).await.unwrap().is_empty(), "until t(60)");
    assert_eq!(store.renew_leases("r2", t(500)).await.unwrap(), 0, "r2 lost its run");
    let taken = store.take_over_expired(t(61), LIMIT, "r3", LEASE).await.unwrap();
    assert_eq!(taken.iter().map(|taken| taken.run.id).collect::<Vec<_>>(), [first.run.id]);
}

async fn only_the_holder_finishes_a_run(backend: &Backend) {
    let store = &backend.store;
    let (schedule, claimed) = in_progress(store, "daily", "r1", LEASE).await;
    let run_id = claimed.run.id;
    let failed = Finish {
        outcome: RunOutcome::Failed,
        error: "gateway unavailable".to_owned(),
        fired_at: Some(t(2)),
        ..Finish::default()
    };
    assert!(!store.finish_run(run_id, "r2", &failed, t(5), STALE_AFTER).await.unwrap(), "r2 does not hold it");
    assert!(!store.finish_run(Uuid::new_v4(), "r1", &failed, t(5), STALE_AFTER).await.unwrap(), "no such run");
    assert_eq!(get_run(store, run_id).await, claimed.run);
    assert_eq!(get(store, schedule.id).await.last_outcome, RunOutcome::Unspecified);

    assert!(store.finish_run(run_id, "r1", &failed, t(5), STALE_AFTER).await.unwrap());
    let run = get_run(store, run_id).await;
    assert_eq!(
        (run.outcome, run.error.as_str(), run.finished_at),
        (RunOutcome::Failed, "gateway unavailable", Some(t(5)))
    );
    assert_eq!(run.fired_at, Some(t(2)), "fired when the replica acted, not when it claimed");
    let after = get(store, schedule.id).await;
    assert_eq!((after.last_run_at, after.last_outcome), (Some(t(0)), RunOutcome::Failed));
    assert_eq!(after.last_error, "gateway unavailable");
    assert_eq!(
        (after.revision, after.updated_at, after.next_run_at),
        (schedule.revision, schedule.updated_at, Some(t(3600)))
    );

    let again = finish(RunOutcome::Delivered);
    assert!(!store.finish_run(run_id, "r1", &again, t(6), STALE_AFTER).await.unwrap(), "finished already");
    assert_eq!(get_run(store, run_id).await, run);
    assert!(store.take_over_expired(t(10_000), LIMIT, "r2", LEASE).await.unwrap().is_empty());

    // A queued outcome keeps the gateway's queue id; an empty error clears
    // the schedule's last one.
    let manual = store.record_manual_run(&after, None, t(10), "r1", LEASE).await.unwrap().0.run;
    let queued = Finish {
        outcome: RunOutcome::Queued,
        summary: "queued behind 2 tasks".to_owned(),
        queue_id: "q-123".to_owned(),
        ..Finish::default()
    };
    assert!(store.finish_run(manual.id, "r1", &queued, t(11), STALE_AFTER).await.unwrap());
    let run = get_run(store, manual.id).await;
    assert_eq!((run.queue_id.as_str(), run.summary.as_str()), ("q-123", "queued behind 2 tasks"));
    let after = get(store, schedule.id).await;
    assert_eq!(
        (after.last_run_at, after.last_outcome, after.last_error.as_str()),
        (Some(t(10)), RunOutcome::Queued, "")
    );
}

async fn empty_replies_in_a_row_make_a_schedule_stale(backend: &Backend) {
    let store = &backend.store;
    let schedule = create(store, Uuid::new_v4(), "ignored", Some(t(0))).await;
    let mut now = 0;
    let mut fire = async |outcome: RunOutcome| {
        let claimed = claim(store, t(now), "r1").await;
        assert_eq!(schedule_ids(&claimed), [schedule.id]);
        assert!(store.finish_run(claimed[0].run.id, "r1", &finish(outcome), t(now + 1), STALE_AFTER).await.unwrap());
        now += 60;
        get(store, schedule.id).await
    };
    let counts = |schedule: &Schedule| (schedule.consecutive_empty_replies, schedule.stale);

    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (1, false));
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (2, false));
    assert_eq!(counts(&fire(RunOutcome::Delivered).await), (0, false), "content resets the count");
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (1, false));
    assert_eq!(counts(&fire(RunOutcome::SkippedBusy).await), (1, false), "a skip neither counts nor resets");
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (2, false));
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (3, true), "stale at the threshold");
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (4, true));
    let delivered = fire(RunOutcome::Delivered).await;
    assert_eq!(counts(&delivered), (0, true), "stale until cleared");
    assert_eq!(delivered.revision, schedule.revision, "firing is no change");

    let clear = ScheduleChanges { clear_stale: true, ..ScheduleChanges::default() };
    let (cleared, changed) = store.update(schedule.id, Some(1), &clear, t(1000)).await.unwrap().unwrap();
    assert!(changed);
    assert_eq!((counts(&cleared), cleared.revision), ((0, false), 2));
    let (_, changed) = store.update(schedule.id, Some(2), &clear, t(1001)).await.unwrap().unwrap();
    assert!(!changed, "nothing left to clear");

    // A count without the flag is cleared too.
    assert_eq!(counts(&fire(RunOutcome::EmptyReply).await), (1, false));
    let (cleared, changed) = store.update(schedule.id, Some(2), &clear, t(1002)).await.unwrap().unwrap();
    assert!(changed);
    assert_eq!((counts(&cleared), cleared.revision), ((0, false), 3));
}

async fn manual_runs_are_idempotent_per_request(backend: &Backend) {
    let store = &backend.store;
    let schedule = create(store, Uuid::new_v4(), "paused", None).await;
    let (first, created) = store.record_manual_run(&schedule, Some("req-1"), t(5), "r1", LEASE).await.unwrap();
    assert!(created);
    let message_id = message_id(schedule.id, &RunKey::Request("req-1"));
    assert_eq!(first.run.id, run_id(&message_id));
    assert_eq!(first.run.message_id, message_id);
    assert_eq!((first.run.trigger, first.run.outcome), (RunTrigger::Manual, RunOutcome::InProgress));
    assert_eq!((first.run.scheduled_at, first.run.fired_at, first.run.finished_at), (t(5), Some(t(5)), None));
    assert_eq!((first.message_text.as_str(), first.overlap_policy), ("run paused", OverlapPolicy::Queue));
    assert_eq!(first.message_metadata_json, r#"{"source":"test"}"#);
    assert_eq!(get_run(store, first.run.id).await, first.run);

    let (retry, created) = store.record_manual_run(&schedule, Some("req-1"), t(9), "r2", LEASE).await.unwrap();
    assert!(!created);
    assert_eq!(retry, first, "the first call's run");
    assert!(store.finish_run(first.run.id, "r1", &finish(RunOutcome::SkippedBusy), t(10), STALE_AFTER).await.unwrap());
    let (retry, created) = store.record_manual_run(&schedule, Some("req-1"), t(11), "r2", LEASE).await.unwrap();
    assert!(!created);
    assert_eq!((retry.run.id, retry.run.outcome), (first.run.id, RunOutcome::SkippedBusy), "in whatever state");

    let (other, created) = store.record_manual_run(&schedule, Some("req-2"), t(12), "r1", LEASE).await.unwrap();
    assert!(created);
    assert_ne!(other.run.id, first.run.id);
    let (a, _) = store.record_manual_run(&schedule, None, t(13), "r1", LEASE).await.unwrap();
    let (b, created) = store.record_manual_run(&schedule, None, t(13), "r1", LEASE).await.unwrap();
    assert!(created, "without a request id every call fires");
    assert_ne!(a.run.id, b.run.id);
    let filter = RunFilter { schedule_id: Some(schedule.id), ..RunFilter::default() };
    assert_eq!(store.list_runs(&filter, 0, "").await.unwrap().0.len(), 4);

    // Manual runs are held under a lease like any other.
    let taken = store.take_over_expired(t(13) + LEASE + Duration::from_secs(1), LIMIT, "r3", LEASE).await.unwrap();
    assert_eq!(taken.len(), 3);
    assert!(taken.iter().all(|taken| taken.message_text == "run paused"));
}

async fn a_removed_workspaces_schedules_are_disabled(backend: &Backend) {
    let store = &backend.store;
    let (ws, other) = (Uuid::new_v4(), Uuid::new_v4());
    let a = create(store, ws, "a", Some(t(60))).await;
    let b = create(store, ws, "b", Some(t(120))).await;
    let paused = create(store, ws, "paused", None).await;
    let elsewhere = create(store, other, "a", Some(t(60))).await;
    let mut both = vec![ws, other];
    both.sort();
    assert_eq!(store.workspaces_with_enabled_schedules().await.unwrap(), both);

    assert_eq!(store.disable_workspace(ws, "workspace removed", t(10)).await.unwrap(), 2);
    for before in [&a, &b] {
        let after = get(store, before.id).await;
        assert_eq!((after.enabled, after.disabled_reason.as_str()), (false, "workspace removed"));
        assert_eq!((after.next_run_at, after.revision, after.updated_at), (None, 2, t(10)));
    }
    assert_eq!(get(store, paused.id).await, paused, "already disabled");
    assert_eq!(get(store, elsewhere.id).await, elsewhere);
    assert_eq!(store.workspaces_with_enabled_schedules().await.unwrap(), [other]);
    assert_eq!(store.disable_workspace(ws, "workspace removed", t(11)).await.unwrap(), 0);
    assert!(claim(store, t(1000), "r1").await.iter().all(|claimed| claimed.run.workspace_id == other));
}

async fn missing_due_times_are_repaired(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let mut broken = Vec::new();
    for name in ["x", "y", "z"] {
        let schedule = create(store, ws, name, Some(t(60))).await;
        let lose = ScheduleChanges { next_run_at: Some(None), ..ScheduleChanges::default() };
        broken.push(store.update(schedule.id, None, &lose, t(1)).await.unwrap().unwrap().0);
    }
    let healthy = create(store, ws, "healthy", Some(t(60))).await;
    let paused = create(store, ws, "paused", None).await;
    let mut expected: Vec<Uuid> = broken.iter().map(|schedule| schedule.id).collect();
    expected.sort();

    let missing = store.missing_next_run(10).await.unwrap();
    assert_eq!(missing.iter().map(|schedule| schedule.id).collect::<Vec<_>>(), expected);
    assert_eq!(missing, {
        let mut broken = broken.clone();
        broken.sort_by_key(|schedule| schedule.id);
        broken
    });
    assert_eq!(store.missing_next_run(2).await.unwrap().len(), 2);

    assert!(store.repair_next_run(expected[0], t(300), None).await.unwrap());
    assert!(!store.repair_next_run(expected[0], t(400), None).await.unwrap(), "repaired already");
    assert!(store.repair_next_run(expected[1], t(500), Some("timezone: unknown")).await.unwrap());
    assert!(!store.repair_next_run(healthy.id, t(1), None).await.unwrap());
    assert!(!store.repair_next_run(paused.id, t(1), None).await.unwrap(), "disabled schedules have none");
    let first = get(store, expected[0]).await;
    assert_eq!((first.next_run_at, first.last_error.as_str(), first.revision), (Some(t(300)), "", 2));
    let second = get(store, expected[1]).await;
    assert_eq!((second.next_run_at, second.last_error.as_str()), (Some(t(500)), "timezone: unknown"));
    assert_eq!(store.missing_next_run(10).await.unwrap().iter().map(|s| s.id).collect::<Vec<_>>(), [expected[2]]);
    assert_eq!(get(store, healthy.id).await, healthy);
}

async fn the_next_due_time_ignores_disabled_schedules(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    assert_eq!(store.next_due_at().await.unwrap(), None);
    let early = create(store, ws, "early", Some(t(30))).await;
    create(store, ws, "late", Some(t(90))).await;
    let lost = create(store, ws, "lost", Some(t(10))).await;
    store
        .update(lost.id, None, &ScheduleChanges { next_run_at: Some(None), ..Default::default() }, t(0))
        .await
        .unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(t(30)));
    let pause = ScheduleChanges {
        enabled: Some((false, "paused".to_owned())),
        next_run_at: Some(Some(t(5))),
        ..ScheduleChanges::default()
    };
    // Even one that kept a due time while disabled.
    store.update(early.id, None, &pause, t(1)).await.unwrap().unwrap();
    assert_eq!(store.next_due_at().await.unwrap(), Some(t(90)));
    assert!(claim(store, t(60), "r1").await.is_empty(), "disabled schedules are not claimed");
}

async fn listing_runs_pages_newest_first_through_filters(backend: &Backend) {
    let store = &backend.store;
    let (ws1, ws2) = (Uuid::new_v4(), Uuid::new_v4());
    let a = create(store, ws1, "a", Some(t(0))).await;
    let b = create(store, ws1, "b", Some(t(0))).await;
    let c = create(store, ws2, "c", Some(t(30))).await;
    // a and b fire at 0, 60, 120, 180; c at 30, 90, 150; one run each is
    // left in progress.
    let mut runs = Vec::new();
    for now in [0, 30, 60, 90, 120, 150, 180] {
        for claimed in claim(store, t(now), "r1").await {
            let outcome = match claimed.run.schedule_id {
                id if id == a.id => RunOutcome::Delivered,
                id if id == b.id => RunOutcome::EmptyReply,
                _ => RunOutcome::Failed,
            };
            if now < 150 {
                assert!(store.finish_run(claimed.run.id, "r1", &finish(outcome), t(now), 100).await.unwrap());
            }
            runs.push(get_run(store, claimed.run.id).await);
        }
    }
    assert_eq!(runs.len(), 11);
    let mut newest_first = runs.clone();
    newest_first.sort_by_key(|run| std::cmp::Reverse((run.scheduled_at, run.id.to_string())));

    let mut paged = Vec::new();
    let mut token = String::new();
    loop {
        let (mut page, next) = store.list_runs(&RunFilter::default(), 4, &token).await.unwrap();
        paged.append(&mut page);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    assert_eq!(paged, newest_first, "ties broken by id");

    let ids = |runs: &[Run]| runs.iter().map(|run| run.id).collect::<Vec<_>>();
    let expect =
        |keep: &dyn Fn(&Run) -> bool| newest_first.iter().filter(|run| keep(run)).map(|run| run.id).collect::<Vec<_>>();
    let list = async |filter: RunFilter| store.list_runs(&filter, 100, "").await.unwrap().0;

    let of_a = list(RunFilter { schedule_id: Some(a.id), ..RunFilter::default() }).await;
    assert_eq!(ids(&of_a), expect(&|run| run.schedule_id == a.id));
    assert_eq!(of_a.len(), 4);
    let of_ws2 = list(RunFilter { workspace_id: Some(ws2), ..RunFilter::default() }).await;
    assert_eq!(ids(&of_ws2), expect(&|run| run.schedule_id == c.id));
    let outcomes = vec![RunOutcome::EmptyReply, RunOutcome::InProgress];
    let odd = list(RunFilter { outcomes: outcomes.clone(), ..RunFilter::default() }).await;
    assert_eq!(ids(&odd), expect(&|run| outcomes.contains(&run.outcome)));
    assert_eq!(odd.len(), 3 + 3, "b's finished runs, and the three in progress");
    let window = list(RunFilter {
        scheduled_after: Some(t(60)),
        scheduled_before: Some(t(150)),
        workspace_id: Some(ws1),
        ..RunFilter::default()
    })
    .await;
    assert_eq!(
        ids(&window),
        expect(&|run| run.scheduled_at >= t(60) && run.scheduled_at < t(150) && run.workspace_id == ws1)
    );
    assert_eq!(window.len(), 4, "a and b at 60 and 120; the end is excluded");
    let nothing = RunFilter { schedule_id: Some(a.id), workspace_id: Some(ws2), ..RunFilter::default() };
    assert!(list(nothing).await.is_empty(), "filters are ANDed");

    let (first, next) =
        store.list_runs(&RunFilter { schedule_id: Some(b.id), ..RunFilter::default() }, 3, "").await.unwrap();
    let (rest, last) =
        store.list_runs(&RunFilter { schedule_id: Some(b.id), ..RunFilter::default() }, 3, &next).await.unwrap();
    assert_eq!((first.len(), rest.len(), last.as_str()), (3, 1, ""));
    for bad in ["zz", "72", "7a3a"] {
        assert!(
            matches!(store.list_runs(&RunFilter::default(), 3, bad).await, Err(StoreError::InvalidPageToken)),
            "{bad}"
        );
    }
    let (_, schedules_token) = store.list_schedules(&ScheduleFilter::default(), 1, "").await.unwrap();
    assert!(matches!(
        store.list_runs(&RunFilter::default(), 3, &schedules_token).await,
        Err(StoreError::InvalidPageToken)
    ));
}

async fn finished_runs_are_purged(backend: &Backend) {
    let store = &backend.store;
    let ws = Uuid::new_v4();
    let schedule = create(store, ws, "s", Some(t(0))).await;
    let mut finished = HashMap::new();
    for (now, ends) in [(0, Some(10)), (60, Some(70)), (120, None)] {
        let claimed = claim(store, t(now), "r1").await;
        let run = claimed[0].run.id;
        if let Some(end) = ends {
            assert!(store.finish_run(run, "r1", &finish(RunOutcome::Delivered), t(end), STALE_AFTER).await.unwrap());
        }
        finished.insert(now, run);
    }
    assert_eq!(store.purge_runs(t(10)).await.unwrap(), 0, "strictly before");
    assert_eq!(store.purge_runs(t(11)).await.unwrap(), 1);
    assert_eq!(store.get_run(finished[&0]).await.unwrap(), None);
    assert_eq!(store.purge_runs(t(100_000)).await.unwrap(), 1);
    assert_eq!(store.get_run(finished[&60]).await.unwrap(), None);
    assert_eq!(get_run(store, finished[&120]).await.outcome, RunOutcome::InProgress, "still in progress");
    assert_eq!(get(store, schedule.id).await.last_run_at, Some(t(60)), "the schedule remembers");
}

async fn a_store_that_cannot_be_reached_says_so(backend: &Backend) {
    let store = ScheduleStore::open(Database::connect(backend.database.url()).await.unwrap()).await.unwrap();
    create(&store, Uuid::new_v4(), "s", Some(t(0))).await;
    store.database().pool().close().await;
    let error = store.create(new_schedule(Uuid::new_v4(), "t", None), LIMIT, t(1)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Backend(failure) if failure.is_unavailable()), "{error:?}");
    let error = store.claim_due(t(1), LIMIT, "r1", LEASE, every(60)).await.unwrap_err();
    assert!(matches!(&error, StoreError::Backend(failure) if failure.is_unavailable()), "{error:?}");
}

/// One claim of 1,000 due schedules, as a replica does after downtime;
/// prints how long it took so a regression is visible.
async fn a_thousand_due_schedules_are_claimed_quickly(backend: &Backend) {
    const SCHEDULES: usize = 1000;
    let store = &backend.store;
    for i in 0..SCHEDULES {
        let ws = Uuid::from_u128(i as u128 % 20 + 1);
        create(store, ws, &format!("s{i}"), Some(t(i as i64 % 60))).await;
    }
    let started = Instant::now();
    let claimed = store.claim_due(t(60), SCHEDULES as u32, "r1", LEASE, every(3600)).await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(claimed.len(), SCHEDULES);
    assert!(claimed.windows(2).all(|pair| pair[0].run.scheduled_at <= pair[1].run.scheduled_at), "earliest first");
    eprintln!("{}: claimed {SCHEDULES} due schedules in one claim in {elapsed:?}", backend.database.engine());
}

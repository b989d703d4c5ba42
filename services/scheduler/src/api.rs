//! The scheduler's gRPC API (`agentmesh.scheduler.v1.SchedulerService`).
//! Handlers check who is calling, validate every field at the edge, call the
//! store or the engine, and map errors.

use std::sync::Arc;

use agentmesh_chassis::Caller;
use agentmesh_proto::{
    registry::v1::WorkspaceStatus,
    scheduler::v1::{self as pb, CatchUpPolicy, OverlapPolicy, RunOutcome, scheduler_service_server::SchedulerService},
};
use chrono::{DateTime, Utc};
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    directory::Workspaces,
    engine::Engine,
    error::{Result, SchedulerError},
    settings::SchedulerSettings,
    store::{NewSchedule, Run, RunFilter, Schedule, ScheduleChanges, ScheduleFilter, ScheduleStore},
    timetable::{Timetable, normalize_timezone},
};

pub struct SchedulerApi {
    store: ScheduleStore,
    workspaces: Arc<Workspaces>,
    engine: Arc<Engine>,
    settings: SchedulerSettings,
}

impl SchedulerApi {
    pub fn new(
        store: ScheduleStore,
        workspaces: Arc<Workspaces>,
        engine: Arc<Engine>,
        settings: SchedulerSettings,
    ) -> Self {
        Self { store, workspaces, engine, settings }
    }

    /// What the caller may touch.
    async fn access<T>(&self, request: &Request<T>) -> Result<Access> {
        match Caller::of(request) {
            Caller::Operator | Caller::Service => Ok(Access::All),
            Caller::Bearer(token) => Ok(Access::Workspace(self.workspaces.authenticate(&token).await?)),
            Caller::Anonymous => {
                Err(SchedulerError::Unauthenticated("send `authorization: Bearer <operator or workspace token>`"))
            }
        }
    }

    /// The schedule `id`, if the caller may touch it.
    async fn schedule(&self, access: Access, id: Uuid) -> Result<Schedule> {
        let schedule = self.store.get(id).await?.ok_or(SchedulerError::ScheduleNotFound(id))?;
        access.check(schedule.workspace_id)?;
        Ok(schedule)
    }

    /// Fails unless the workspace may receive schedules again.
    async fn ensure_not_removed(&self, workspace_id: Uuid) -> Result<()> {
        match self.workspaces.get(workspace_id).await? {
            Some(workspace) if workspace.status != WorkspaceStatus::Removed => Ok(()),
            // A schedule's workspace existed when the schedule was made, so
            // one the registry no longer knows was removed and purged.
            _ => Err(SchedulerError::WorkspaceRemoved(workspace_id)),
        }
    }

    /// Writes `changes`, waking the engine when the timetable may have moved.
    async fn apply(
        &self,
        id: Uuid,
        expected_revision: Option<u64>,
        changes: &ScheduleChanges,
    ) -> Result<(Schedule, bool)> {
        let (schedule, changed) = self
            .store
            .update(id, expected_revision, changes, Utc::now())
            .await?
            .ok_or(SchedulerError::ScheduleNotFound(id))?;
        if changed {
            self.engine.schedules_changed();
        }
        Ok((schedule, changed))
    }
}

/// What a caller may touch: everything, or one workspace's schedules and runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    All,
    Workspace(Uuid),
}

impl Access {
    fn check(self, workspace_id: Uuid) -> Result<()> {
        match self {
            Access::Workspace(own) if own != workspace_id => Err(SchedulerError::PermissionDenied(
                "a workspace token may only touch that workspace's schedules and runs".to_owned(),
            )),
            _ => Ok(()),
        }
    }

    /// The workspace a listing is restricted to: a workspace caller only ever
    /// sees its own.
    fn workspace_filter(self, requested: Option<Uuid>) -> Result<Option<Uuid>> {
        match (self, requested) {
            (Access::All, requested) => Ok(requested),
            (Access::Workspace(own), None) => Ok(Some(own)),
            (Access::Workspace(own), Some(requested)) => self.check(requested).map(|()| Some(own)),
        }
    }
}

#[tonic::async_trait]
impl SchedulerService for SchedulerApi {
    async fn create_schedule(
        &self,
        request: Request<pb::CreateScheduleRequest>,
    ) -> Result<Response<pb::CreateScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let workspace_id = uuid("workspace_id", &request.workspace_id)?;
        let name = name(request.name)?;
        let timezone = normalize_timezone(&request.timezone).to_owned();
        let now = Utc::now();
        let next_run_at = next_run(&request.cron_expression, &timezone, now)?;
        let message_text = message_text(request.message_text)?;
        let message_metadata_json = message_metadata_json(request.message_metadata_json)?;
        let overlap_policy = overlap_policy(request.overlap_policy)?;
        let catch_up_policy = catch_up_policy(request.catch_up_policy)?;
        access.check(workspace_id)?;
        match self.workspaces.get(workspace_id).await? {
            None => return Err(SchedulerError::WorkspaceNotFound(workspace_id).into()),
            Some(workspace) if workspace.status == WorkspaceStatus::Removed => {
                return Err(SchedulerError::WorkspaceRemoved(workspace_id).into());
            }
            Some(_) => {}
        }
        let enabled = request.enabled.unwrap_or(true);
        let new = NewSchedule {
            workspace_id,
            name,
            cron_expression: request.cron_expression,
            timezone,
            message_text,
            message_metadata_json,
            enabled,
            overlap_policy,
            catch_up_policy,
            next_run_at: enabled.then_some(next_run_at),
        };
        let schedule = self
            .store
            .create(new, self.settings.max_schedules_per_workspace, now)
            .await
            .map_err(SchedulerError::from)?;
        if schedule.enabled {
            self.engine.schedules_changed();
        }
        tracing::info!(schedule_id = %schedule.id, workspace_id = %workspace_id, "schedule created");
        Ok(Response::new(pb::CreateScheduleResponse { schedule: Some((&schedule).into()) }))
    }

    async fn get_schedule(
        &self,
        request: Request<pb::GetScheduleRequest>,
    ) -> Result<Response<pb::GetScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let id = uuid("schedule_id", &request.get_ref().schedule_id)?;
        let schedule = self.schedule(access, id).await?;
        Ok(Response::new(pb::GetScheduleResponse { schedule: Some((&schedule).into()) }))
    }

    async fn list_schedules(
        &self,
        request: Request<pb::ListSchedulesRequest>,
    ) -> Result<Response<pb::ListSchedulesResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let requested = optional_uuid("workspace_id", &request.workspace_id)?;
        let page_size = page_size(request.page_size)?;
        let filter = ScheduleFilter {
            workspace_id: access.workspace_filter(requested)?,
            enabled: request.enabled,
            stale_only: request.stale_only,
        };
        let (schedules, next_page_token) =
            self.store.list_schedules(&filter, page_size, &request.page_token).await.map_err(SchedulerError::from)?;
        Ok(Response::new(pb::ListSchedulesResponse {
            schedules: schedules.iter().map(Into::into).collect(),
            next_page_token,
        }))
    }

    async fn update_schedule(
        &self,
        request: Request<pb::UpdateScheduleRequest>,
    ) -> Result<Response<pb::UpdateScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let id = uuid("schedule_id", &request.schedule_id)?;
        let new_name = request.name.map(name).transpose()?;
        let new_timezone = request.timezone.as_deref().map(|raw| normalize_timezone(raw).to_owned());
        let new_text = request.message_text.map(message_text).transpose()?;
        let new_metadata = request.message_metadata_json.map(message_metadata_json).transpose()?;
        let new_overlap = request.overlap_policy.map(overlap_policy).transpose()?;
        let new_catch_up = request.catch_up_policy.map(catch_up_policy).transpose()?;
        let schedule = self.schedule(access, id).await?;

        let cron_expression = request.cron_expression.as_deref().unwrap_or(&schedule.cron_expression);
        let timezone = new_timezone.as_deref().unwrap_or(&schedule.timezone);
        let timing_changed = cron_expression != schedule.cron_expression || timezone != schedule.timezone;
        let enabling = request.enabled == Some(true) && !schedule.enabled;
        // A new expression or timezone is checked against the other half as
        // it will be stored, before anything is written.
        let next_time = if request.cron_expression.is_some() || new_timezone.is_some() || enabling {
            Some(next_run(cron_expression, timezone, Utc::now())?)
        } else {
            None
        };
        if enabling {
            self.ensure_not_removed(schedule.workspace_id).await?;
        }
        let next_run_at = if !request.enabled.unwrap_or(schedule.enabled) {
            request.enabled.map(|_| None)
        } else if timing_changed || enabling {
            next_time.map(Some)
        } else {
            None
        };
        let changes = ScheduleChanges {
            name: new_name,
            cron_expression: request.cron_expression,
            timezone: new_timezone,
            message_text: new_text,
            message_metadata_json: new_metadata,
            enabled: request.enabled.map(|enabled| enabled_state(&schedule, enabled, "paused")),
            overlap_policy: new_overlap,
            catch_up_policy: new_catch_up,
            next_run_at,
            clear_stale: request.clear_stale,
        };
        let (schedule, changed) = self.apply(id, request.expected_revision, &changes).await?;
        Ok(Response::new(pb::UpdateScheduleResponse { schedule: Some((&schedule).into()), changed }))
    }

    async fn delete_schedule(
        &self,
        request: Request<pb::DeleteScheduleRequest>,
    ) -> Result<Response<pb::DeleteScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let id = uuid("schedule_id", &request.get_ref().schedule_id)?;
        let schedule = self.schedule(access, id).await?;
        if !self.store.delete(id).await.map_err(SchedulerError::from)? {
            return Err(SchedulerError::ScheduleNotFound(id).into());
        }
        tracing::info!(schedule_id = %id, workspace_id = %schedule.workspace_id, "schedule deleted");
        Ok(Response::new(pb::DeleteScheduleResponse {}))
    }

    async fn pause_schedule(
        &self,
        request: Request<pb::PauseScheduleRequest>,
    ) -> Result<Response<pb::PauseScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let id = uuid("schedule_id", &request.schedule_id)?;
        let reason = pause_reason(&request.reason)?;
        let schedule = self.schedule(access, id).await?;
        let changes = ScheduleChanges {
            enabled: Some(enabled_state(&schedule, false, &reason)),
            next_run_at: Some(None),
            ..ScheduleChanges::default()
        };
        let (schedule, changed) = self.apply(id, None, &changes).await?;
        Ok(Response::new(pb::PauseScheduleResponse { schedule: Some((&schedule).into()), changed }))
    }

    async fn resume_schedule(
        &self,
        request: Request<pb::ResumeScheduleRequest>,
    ) -> Result<Response<pb::ResumeScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let id = uuid("schedule_id", &request.get_ref().schedule_id)?;
        let schedule = self.schedule(access, id).await?;
        if schedule.enabled {
            // Recomputing `next_run_at` here would drop a run about to fall due.
            return Ok(Response::new(pb::ResumeScheduleResponse {
                schedule: Some((&schedule).into()),
                changed: false,
            }));
        }
        self.ensure_not_removed(schedule.workspace_id).await?;
        let next_run_at = next_run(&schedule.cron_expression, &schedule.timezone, Utc::now())?;
        let changes = ScheduleChanges {
            enabled: Some((true, String::new())),
            next_run_at: Some(Some(next_run_at)),
            ..ScheduleChanges::default()
        };
        let (schedule, changed) = self.apply(id, None, &changes).await?;
        Ok(Response::new(pb::ResumeScheduleResponse { schedule: Some((&schedule).into()), changed }))
    }

    async fn trigger_schedule(
        &self,
        request: Request<pb::TriggerScheduleRequest>,
    ) -> Result<Response<pb::TriggerScheduleResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let id = uuid("schedule_id", &request.schedule_id)?;
        if let Some(request_id) = &request.request_id {
            check_request_id(request_id)?;
        }
        let schedule = self.schedule(access, id).await?;
        self.ensure_not_removed(schedule.workspace_id).await?;
        let run = self.engine.trigger(&schedule, request.request_id.as_deref()).await?;
        Ok(Response::new(pb::TriggerScheduleResponse { run: Some((&run).into()) }))
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Result<Response<pb::GetRunResponse>, Status> {
        let access = self.access(&request).await?;
        let id = uuid("run_id", &request.get_ref().run_id)?;
        let run = self.store.get_run(id).await.map_err(SchedulerError::from)?.ok_or(SchedulerError::RunNotFound(id))?;
        access.check(run.workspace_id)?;
        Ok(Response::new(pb::GetRunResponse { run: Some((&run).into()) }))
    }

    async fn list_runs(&self, request: Request<pb::ListRunsRequest>) -> Result<Response<pb::ListRunsResponse>, Status> {
        let access = self.access(&request).await?;
        let request = request.into_inner();
        let schedule_id = optional_uuid("schedule_id", &request.schedule_id)?;
        let requested = optional_uuid("workspace_id", &request.workspace_id)?;
        let outcomes = request.outcomes.iter().map(|raw| outcome(*raw)).collect::<Result<Vec<_>>>()?;
        let scheduled_after = optional_time("scheduled_after", request.scheduled_after.as_ref())?;
        let scheduled_before = optional_time("scheduled_before", request.scheduled_before.as_ref())?;
        if let (Some(after), Some(before)) = (scheduled_after, scheduled_before)
            && before <= after
        {
            return Err(SchedulerError::invalid("scheduled_before", "must be later than scheduled_after").into());
        }
        let page_size = page_size(request.page_size)?;
        let filter = RunFilter {
            schedule_id,
            workspace_id: access.workspace_filter(requested)?,
            outcomes,
            scheduled_after,
            scheduled_before,
        };
        let (runs, next_page_token) =
            self.store.list_runs(&filter, page_size, &request.page_token).await.map_err(SchedulerError::from)?;
        Ok(Response::new(pb::ListRunsResponse { runs: runs.iter().map(Into::into).collect(), next_page_token }))
    }
}

/// The `(enabled, disabled_reason)` to store. Disabling a schedule that is
/// already disabled keeps its reason, so that pausing a schedule disabled for
/// its removed workspace neither hides why nor counts as a change.
fn enabled_state(schedule: &Schedule, enabled: bool, reason: &str) -> (bool, String) {
    match (enabled, schedule.enabled) {
        (true, _) => (true, String::new()),
        (false, true) => (false, reason.to_owned()),
        (false, false) => (false, schedule.disabled_reason.clone()),
    }
}

// Validation: each function names the request field exactly as the proto does.

const MAX_NAME_CHARS: usize = 128;
const MAX_MESSAGE_CHARS: usize = 65_536;
const MAX_METADATA_BYTES: usize = 16 * 1024;
const MAX_REASON_CHARS: usize = 1024;
const MAX_REQUEST_ID_CHARS: usize = 128;
const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_PAGE_SIZE: u32 = 100;

fn uuid(field: &'static str, raw: &str) -> Result<Uuid> {
    if raw.is_empty() {
        return Err(SchedulerError::invalid(field, "required"));
    }
    raw.parse().map_err(|_| SchedulerError::invalid(field, "must be a UUID"))
}

fn optional_uuid(field: &'static str, raw: &str) -> Result<Option<Uuid>> {
    if raw.is_empty() { Ok(None) } else { uuid(field, raw).map(Some) }
}

fn name(raw: String) -> Result<String> {
    let chars = raw.chars().count();
    if !(1..=MAX_NAME_CHARS).contains(&chars) {
        return Err(SchedulerError::invalid("name", format!("must be 1 to {MAX_NAME_CHARS} characters")));
    }
    if raw.chars().any(char::is_control) {
        return Err(SchedulerError::invalid("name", "must not contain control characters"));
    }
    Ok(raw)
}

/// The first time `cron_expression` matches after `now` in `timezone`
/// (already normalised): an expression that never matches again is as
/// useless as a malformed one.
fn next_run(cron_expression: &str, timezone: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let timetable = Timetable::parse(cron_expression, timezone).map_err(timetable_error)?;
    timetable.next_after(now).ok_or_else(|| SchedulerError::invalid("cron_expression", "never matches after now"))
}

fn timetable_error(error: crate::timetable::TimetableError) -> SchedulerError {
    SchedulerError::invalid(error.field(), error.problem())
}

fn message_text(raw: String) -> Result<String> {
    if raw.is_empty() || raw.chars().count() > MAX_MESSAGE_CHARS {
        return Err(SchedulerError::invalid("message_text", format!("must be 1 to {MAX_MESSAGE_CHARS} characters")));
    }
    Ok(raw)
}

/// A JSON object of at most 16 KiB, or empty for none.
fn message_metadata_json(raw: String) -> Result<String> {
    const FIELD: &str = "message_metadata_json";
    if raw.is_empty() {
        return Ok(raw);
    }
    if raw.len() > MAX_METADATA_BYTES {
        return Err(SchedulerError::invalid(FIELD, format!("at most {MAX_METADATA_BYTES} bytes")));
    }
    match serde_json::from_str::<serde_json::Value>(&raw) {
        Ok(serde_json::Value::Object(_)) => Ok(raw),
        Ok(_) => Err(SchedulerError::invalid(FIELD, "must be a JSON object")),
        Err(e) => Err(SchedulerError::invalid(FIELD, format!("not JSON: {e}"))),
    }
}

fn overlap_policy(raw: i32) -> Result<OverlapPolicy> {
    match OverlapPolicy::try_from(raw) {
        Ok(OverlapPolicy::Unspecified) => Ok(OverlapPolicy::Skip),
        Ok(policy) => Ok(policy),
        Err(_) => Err(SchedulerError::invalid("overlap_policy", format!("{raw} is not an overlap policy"))),
    }
}

fn catch_up_policy(raw: i32) -> Result<CatchUpPolicy> {
    match CatchUpPolicy::try_from(raw) {
        Ok(CatchUpPolicy::Unspecified) => Ok(CatchUpPolicy::SkipMissed),
        Ok(policy) => Ok(policy),
        Err(_) => Err(SchedulerError::invalid("catch_up_policy", format!("{raw} is not a catch-up policy"))),
    }
}

fn outcome(raw: i32) -> Result<RunOutcome> {
    match RunOutcome::try_from(raw) {
        // No run ever has this outcome, so a filter naming it is a mistake.
        Ok(RunOutcome::Unspecified) | Err(_) => {
            Err(SchedulerError::invalid("outcomes", format!("{raw} is not a run outcome")))
        }
        Ok(outcome) => Ok(outcome),
    }
}

fn page_size(raw: u32) -> Result<u32> {
    match raw {
        0 => Ok(DEFAULT_PAGE_SIZE),
        1..=MAX_PAGE_SIZE => Ok(raw),
        _ => Err(SchedulerError::invalid("page_size", format!("at most {MAX_PAGE_SIZE}"))),
    }
}

/// The disabled reason a pause records: the caller's, trimmed, or "paused".
fn pause_reason(raw: &str) -> Result<String> {
    if raw.chars().count() > MAX_REASON_CHARS {
        return Err(SchedulerError::invalid("reason", format!("at most {MAX_REASON_CHARS} characters")));
    }
    let reason = raw.trim();
    Ok(if reason.is_empty() { "paused".to_owned() } else { reason.to_owned() })
}

fn check_request_id(raw: &str) -> Result<()> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-');
    if raw.is_empty() || raw.len() > MAX_REQUEST_ID_CHARS || !raw.chars().all(allowed) {
        return Err(SchedulerError::invalid(
            "request_id",
            format!("must be 1 to {MAX_REQUEST_ID_CHARS} characters of A-Z, a-z, 0-9, '.', '_' and '-'"),
        ));
    }
    Ok(())
}

fn optional_time(field: &'static str, raw: Option<&prost_types::Timestamp>) -> Result<Option<DateTime<Utc>>> {
    raw.map(|timestamp| {
        u32::try_from(timestamp.nanos)
            .ok()
            .and_then(|nanos| DateTime::from_timestamp(timestamp.seconds, nanos))
            .ok_or_else(|| SchedulerError::invalid(field, "not a valid timestamp"))
    })
    .transpose()
}

// Conversions from the store's types to the contract's messages.

fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    // `timestamp_subsec_nanos` stays below 2e9 (leap seconds included), so it fits an i32.
    prost_types::Timestamp { seconds: at.timestamp(), nanos: at.timestamp_subsec_nanos() as i32 }
}

impl From<&Schedule> for pb::Schedule {
    fn from(schedule: &Schedule) -> Self {
        pb::Schedule {
            id: schedule.id.to_string(),
            workspace_id: schedule.workspace_id.to_string(),
            name: schedule.name.clone(),
            cron_expression: schedule.cron_expression.clone(),
            timezone: schedule.timezone.clone(),
            message_text: schedule.message_text.clone(),
            message_metadata_json: schedule.message_metadata_json.clone(),
            enabled: schedule.enabled,
            disabled_reason: schedule.disabled_reason.clone(),
            overlap_policy: schedule.overlap_policy.into(),
            catch_up_policy: schedule.catch_up_policy.into(),
            next_run_at: schedule.next_run_at.map(timestamp),
            last_run_at: schedule.last_run_at.map(timestamp),
            last_outcome: schedule.last_outcome.into(),
            last_error: schedule.last_error.clone(),
            consecutive_empty_replies: schedule.consecutive_empty_replies,
            stale: schedule.stale,
            revision: schedule.revision,
            created_at: Some(timestamp(schedule.created_at)),
            updated_at: Some(timestamp(schedule.updated_at)),
        }
    }
}

impl From<&Run> for pb::ScheduleRun {
    fn from(run: &Run) -> Self {
        pb::ScheduleRun {
            id: run.id.to_string(),
            schedule_id: run.schedule_id.to_string(),
            workspace_id: run.workspace_id.to_string(),
            trigger: run.trigger.into(),
            scheduled_at: Some(timestamp(run.scheduled_at)),
            fired_at: run.fired_at.map(timestamp),
            finished_at: run.finished_at.map(timestamp),
            outcome: run.outcome.into(),
            error: run.error.clone(),
            summary: run.summary.clone(),
            message_id: run.message_id.clone(),
            queue_id: run.queue_id.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The field an INVALID_ARGUMENT error names, or a panic for anything else.
    fn field_of<T: std::fmt::Debug>(result: Result<T>) -> &'static str {
        match result {
            Err(SchedulerError::InvalidArgument { field, .. }) => field,
            other => panic!("expected INVALID_ARGUMENT, got {other:?}"),
        }
    }

    fn at(rfc3339: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(rfc3339).expect("test time").with_timezone(&Utc)
    }

    #[test]
    fn ids_must_be_uuids() {
        let id = Uuid::from_u128(42);
        assert_eq!(uuid("schedule_id", &id.to_string()).ok(), Some(id));
        assert_eq!(field_of(uuid("schedule_id", "")), "schedule_id");
        assert_eq!(field_of(uuid("run_id", "not-a-uuid")), "run_id");
        assert_eq!(optional_uuid("workspace_id", "").ok(), Some(None));
        assert_eq!(field_of(optional_uuid("workspace_id", "42")), "workspace_id");
    }

    #[test]
    fn names_are_1_to_128_characters_without_control_characters() {
        assert_eq!(name("daily digest".to_owned()).ok().as_deref(), Some("daily digest"));
        assert!(name("é".repeat(128)).is_ok(), "characters are counted, not bytes");
        assert_eq!(field_of(name(String::new())), "name");
        assert_eq!(field_of(name("a".repeat(129))), "name");
        assert_eq!(field_of(name("two\nlines".to_owned())), "name");
        assert_eq!(field_of(name("bell\u{7}".to_owned())), "name");
    }

    #[test]
    fn the_first_run_is_the_next_match_after_now_in_the_timezone() {
        let now = at("2025-01-15T10:30:00Z");
        assert_eq!(next_run("0 12 * * *", "UTC", now).ok(), Some(at("2025-01-15T12:00:00Z")));
        assert_eq!(next_run("0 11 * * *", "Europe/Berlin", now).ok(), Some(at("2025-01-16T10:00:00Z")));
        assert_eq!(next_run("30 0 12 * * *", "UTC", now).ok(), Some(at("2025-01-15T12:00:30Z")));
    }

    #[test]
    fn a_bad_cron_expression_names_cron_expression() {
        let now = at("2025-01-15T10:30:00Z");
        assert_eq!(field_of(next_run("", "UTC", now)), "cron_expression");
        assert_eq!(field_of(next_run("every day at noon", "UTC", now)), "cron_expression");
        assert_eq!(field_of(next_run("61 * * * *", "UTC", now)), "cron_expression");
        assert_eq!(field_of(next_run(&"1,".repeat(128), "UTC", now)), "cron_expression");
    }

    #[test]
    fn an_expression_that_never_matches_names_cron_expression() {
        assert_eq!(field_of(next_run("0 0 30 2 *", "UTC", at("2025-01-15T10:30:00Z"))), "cron_expression");
    }

    #[test]
    fn an_unknown_timezone_names_timezone() {
        assert_eq!(field_of(next_run("0 12 * * *", "Mars/Olympus_Mons", at("2025-01-15T10:30:00Z"))), "timezone");
    }

    #[test]
    fn an_empty_timezone_means_utc() {
        assert_eq!(normalize_timezone(""), "UTC");
    }

    #[test]
    fn message_text_is_1_to_65536_characters() {
        assert!(message_text("ü".repeat(65_536)).is_ok());
        assert_eq!(field_of(message_text(String::new())), "message_text");
        assert_eq!(field_of(message_text("a".repeat(65_537))), "message_text");
    }

    #[test]
    fn metadata_is_empty_or_a_json_object_of_at_most_16_kib() {
        assert_eq!(message_metadata_json(String::new()).ok().as_deref(), Some(""));
        assert!(message_metadata_json(r#"{"source":"cron"}"#.to_owned()).is_ok());
        let padding = "x".repeat(MAX_METADATA_BYTES - r#"{"k":""}"#.len());
        assert!(message_metadata_json(format!(r#"{{"k":"{padding}"}}"#)).is_ok());
        assert_eq!(field_of(message_metadata_json(format!(r#"{{"k":"{padding}x"}}"#))), "message_metadata_json");
        assert_eq!(field_of(message_metadata_json("[1, 2]".to_owned())), "message_metadata_json");
        assert_eq!(field_of(message_metadata_json("\"text\"".to_owned())), "message_metadata_json");
        assert_eq!(field_of(message_metadata_json("{".to_owned())), "message_metadata_json");
    }

    #[test]
    fn unspecified_policies_take_their_defaults_and_unknown_ones_are_refused() {
        assert_eq!(overlap_policy(OverlapPolicy::Unspecified.into()).ok(), Some(OverlapPolicy::Skip));
        assert_eq!(overlap_policy(OverlapPolicy::Queue.into()).ok(), Some(OverlapPolicy::Queue));
        assert_eq!(field_of(overlap_policy(99)), "overlap_policy");
        assert_eq!(catch_up_policy(CatchUpPolicy::Unspecified.into()).ok(), Some(CatchUpPolicy::SkipMissed));
        assert_eq!(catch_up_policy(CatchUpPolicy::FireOnce.into()).ok(), Some(CatchUpPolicy::FireOnce));
        assert_eq!(field_of(catch_up_policy(-1)), "catch_up_policy");
    }

    #[test]
    fn outcome_filters_name_real_outcomes() {
        assert_eq!(outcome(RunOutcome::Delivered.into()).ok(), Some(RunOutcome::Delivered));
        assert_eq!(field_of(outcome(RunOutcome::Unspecified.into())), "outcomes");
        assert_eq!(field_of(outcome(42)), "outcomes");
    }

    #[test]
    fn page_size_defaults_to_100_and_stops_at_1000() {
        assert_eq!(page_size(0).ok(), Some(100));
        assert_eq!(page_size(1000).ok(), Some(1000));
        assert_eq!(field_of(page_size(1001)), "page_size");
    }

    #[test]
    fn pause_reason_defaults_to_paused_and_is_at_most_1024_characters() {
        assert_eq!(pause_reason("").ok().as_deref(), Some("paused"));
        assert_eq!(pause_reason("  ").ok().as_deref(), Some("paused"));
        assert_eq!(pause_reason(" holiday ").ok().as_deref(), Some("holiday"));
        assert!(pause_reason(&"r".repeat(1024)).is_ok());
        assert_eq!(field_of(pause_reason(&"r".repeat(1025))), "reason");
    }

    #[test]
    fn request_ids_are_1_to_128_safe_characters() {
        assert!(check_request_id("retry-1.of_3").is_ok());
        assert!(check_request_id(&"k".repeat(128)).is_ok());
        assert_eq!(field_of(check_request_id("")), "request_id");
        assert_eq!(field_of(check_request_id(&"k".repeat(129))), "request_id");
        assert_eq!(field_of(check_request_id("has space")), "request_id");
        assert_eq!(field_of(check_request_id("slash/")), "request_id");
        assert_eq!(field_of(check_request_id("ünïcode")), "request_id");
    }

    #[test]
    fn timestamps_must_be_valid() {
        let valid = prost_types::Timestamp { seconds: 1_736_937_000, nanos: 5 };
        let parsed = optional_time("scheduled_after", Some(&valid)).ok().flatten();
        assert_eq!(parsed.map(timestamp), Some(valid));
        assert_eq!(optional_time("scheduled_after", None).ok(), Some(None));
        let negative_nanos = prost_types::Timestamp { seconds: 0, nanos: -1 };
        assert_eq!(field_of(optional_time("scheduled_before", Some(&negative_nanos))), "scheduled_before");
        let far_future = prost_types::Timestamp { seconds: i64::MAX, nanos: 0 };
        assert_eq!(field_of(optional_time("scheduled_after", Some(&far_future))), "scheduled_after");
    }

    fn schedule(enabled: bool, disabled_reason: &str) -> Schedule {
        let created = at("2025-01-15T10:30:00Z");
        Schedule {
            id: Uuid::from_u128(1),
            workspace_id: Uuid::from_u128(2),
            name: "daily".to_owned(),
            cron_expression: "0 9 * * *".to_owned(),
            timezone: "UTC".to_owned(),
            message_text: "status?".to_owned(),
            message_metadata_json: String::new(),
            enabled,
            disabled_reason: disabled_reason.to_owned(),
            overlap_policy: OverlapPolicy::Skip,
            catch_up_policy: CatchUpPolicy::SkipMissed,
            next_run_at: enabled.then(|| at("2025-01-16T09:00:00Z")),
            last_run_at: None,
            last_outcome: RunOutcome::Unspecified,
            last_error: String::new(),
            consecutive_empty_replies: 0,
            stale: false,
            revision: 1,
            created_at: created,
            updated_at: created,
        }
    }

    #[test]
    fn disabling_records_the_reason_once_and_enabling_clears_it() {
        let enabled = schedule(true, "");
        assert_eq!(enabled_state(&enabled, false, "holiday"), (false, "holiday".to_owned()));
        assert_eq!(enabled_state(&enabled, true, "ignored"), (true, String::new()));
        let removed = schedule(false, "workspace removed");
        assert_eq!(enabled_state(&removed, false, "paused"), (false, "workspace removed".to_owned()));
        assert_eq!(enabled_state(&removed, true, "ignored"), (true, String::new()));
    }

    #[test]
    fn a_schedule_converts_with_its_times_and_enums() {
        let converted = pb::Schedule::from(&schedule(true, ""));
        assert_eq!(converted.id, Uuid::from_u128(1).to_string());
        assert_eq!(converted.workspace_id, Uuid::from_u128(2).to_string());
        assert_eq!(converted.overlap_policy, i32::from(OverlapPolicy::Skip));
        assert_eq!(converted.catch_up_policy, i32::from(CatchUpPolicy::SkipMissed));
        assert_eq!(converted.next_run_at, Some(timestamp(at("2025-01-16T09:00:00Z"))));
        assert_eq!(converted.last_run_at, None);
        assert_eq!(converted.created_at.map(|t| t.seconds), Some(at("2025-01-15T10:30:00Z").timestamp()));
    }

    #[test]
    fn a_workspace_caller_only_reaches_its_own_workspace() {
        let own = Uuid::from_u128(1);
        let other = Uuid::from_u128(2);
        let workspace = Access::Workspace(own);
        assert!(workspace.check(own).is_ok());
        assert!(matches!(workspace.check(other), Err(SchedulerError::PermissionDenied(_))));
        assert!(Access::All.check(other).is_ok());
        assert_eq!(workspace.workspace_filter(None).ok(), Some(Some(own)));
        assert_eq!(workspace.workspace_filter(Some(own)).ok(), Some(Some(own)));
        assert!(matches!(workspace.workspace_filter(Some(other)), Err(SchedulerError::PermissionDenied(_))));
        assert_eq!(Access::All.workspace_filter(None).ok(), Some(None));
        assert_eq!(Access::All.workspace_filter(Some(other)).ok(), Some(Some(other)));
    }
}

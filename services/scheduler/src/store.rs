//! The scheduler's store (SCH-1, SCH-6…SCH-8): schedules and the history of
//! their runs. SQLite by default, PostgreSQL when several replicas share it
//! (ARCH-2); every statement is written once for both.
//!
//! Replicas never fire a run twice and never lose one. A claim advances a
//! due schedule's `next_run_at` and records its run in one transaction, on
//! PostgreSQL skipping schedules another replica is claiming. A run's id
//! follows from its message id, which follows from the schedule and the
//! scheduled time, so a second record of the same run is refused. Every later
//! step on a run is a compare-and-set on its lease owner, and a run whose
//! lease ran out (its replica died) is taken over by another.
//!
//! Enumerations are stored by their proto value names, flags as 0 or 1, and
//! times as unix milliseconds.

mod model;

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use agentmesh_db::{Database, DbError, Dialect, Sql, StoreFailure};
use agentmesh_proto::scheduler::v1::{CatchUpPolicy, OverlapPolicy, RunOutcome, RunTrigger};
use chrono::{DateTime, Utc};
use sqlx::{Row, any::AnyRow, error::ErrorKind, migrate::Migrator};
use uuid::Uuid;

pub use model::*;

// Two schemas only because PostgreSQL needs byte-wise collation spelled out
// and SQLite does not know its name.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// Rows per multi-row statement of a claim. SQLite looks each `$n` up among
/// the statement's parameters as it parses, which grows with the square of
/// their number (a 1000-row insert, nine arguments a row, takes 0.3 s to
/// parse), so there statements stay small; PostgreSQL takes the whole batch
/// in one round trip.
const POSTGRES_CLAIM_CHUNK: usize = 1000;
const SQLITE_CLAIM_CHUNK: usize = 100;

macro_rules! schedule_columns {
    () => {
        "id, workspace_id, name, cron_expression, timezone, message_text, message_metadata_json, enabled, \
         disabled_reason, overlap_policy, catch_up_policy, next_run_at, last_run_at, last_outcome, last_error, \
         consecutive_empty_replies, stale, revision, created_at, updated_at"
    };
}

macro_rules! run_columns {
    () => {
        "id, schedule_id, workspace_id, run_trigger, scheduled_at, fired_at, finished_at, outcome, error, summary, \
         message_id, queue_id"
    };
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed: unreachable for now, or broken.
    #[error(transparent)]
    Backend(#[from] StoreFailure),
    /// The workspace already has a schedule of this name.
    #[error("the workspace already has a schedule named {0:?}")]
    NameTaken(String),
    #[error("the workspace already has {limit} schedules, the most allowed")]
    TooManySchedules { limit: u32 },
    #[error("the stored revision is {stored}, not {expected}")]
    RevisionMismatch { expected: u64, stored: u64 },
    /// A page token this store did not hand out (or for the other listing).
    #[error("invalid page token")]
    InvalidPageToken,
    #[error("{id} cannot be read: {problem}")]
    Corrupt { id: String, problem: String },
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

// `?` takes one conversion step; these let it go through `StoreFailure`.
impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        StoreError::Backend(e.into())
    }
}

impl From<DbError> for StoreError {
    fn from(e: DbError) -> Self {
        StoreError::Backend(e.into())
    }
}

/// The schedule store; cheap to clone (it shares the connection pool).
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    db: Database,
    due_sql: &'static str,
    take_over_sql: &'static str,
    claim_chunk: usize,
}

impl ScheduleStore {
    /// Opens the store on `db`, bringing its schema up to date.
    pub async fn open(db: Database) -> Result<Self> {
        db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        let (due_sql, take_over_sql, claim_chunk) = match db.dialect() {
            Dialect::Postgres => (DUE_POSTGRES, TAKE_OVER_POSTGRES, POSTGRES_CLAIM_CHUNK),
            Dialect::Sqlite => (DUE_SQLITE, TAKE_OVER_SQLITE, SQLITE_CLAIM_CHUNK),
        };
        Ok(Self { db, due_sql, take_over_sql, claim_chunk })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Inserts a schedule: a new id, revision 1, created and updated `now`.
    ///
    /// The workspace's schedules are counted in the inserting statement.
    /// SQLite has one writer, so there the limit is exact; on PostgreSQL two
    /// creates racing for the last place may both see it free, and the
    /// workspace ends up a schedule or two over the limit, which is harmless.
    pub async fn create(&self, new: NewSchedule, max_per_workspace: u32, now: DateTime<Utc>) -> Result<Schedule> {
        let now = to_ms(now);
        let inserted = sqlx::query(concat!(
            "INSERT INTO schedules (id, workspace_id, name, cron_expression, timezone, message_text, \
             message_metadata_json, enabled, disabled_reason, overlap_policy, catch_up_policy, next_run_at, \
             last_outcome, last_error, consecutive_empty_replies, stale, revision, created_at, updated_at) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, '', $9, $10, $11, 'RUN_OUTCOME_UNSPECIFIED', '', 0, 0, 1, $12, $12 \
             WHERE (SELECT COUNT(*) FROM schedules WHERE workspace_id = $2) < $13 \
             RETURNING ",
            schedule_columns!()
        ))
        .bind(Uuid::new_v4().to_string())
        .bind(new.workspace_id.to_string())
        .bind(&new.name)
        .bind(&new.cron_expression)
        .bind(&new.timezone)
        .bind(&new.message_text)
        .bind(&new.message_metadata_json)
        .bind(i64::from(new.enabled))
        .bind(new.overlap_policy.as_str_name())
        .bind(new.catch_up_policy.as_str_name())
        .bind(new.next_run_at.map(to_ms))
        .bind(now)
        .bind(i64::from(max_per_workspace))
        .fetch_optional(self.db.pool())
        .await
        .map_err(|e| name_taken_or(e, &new.name))?;
        match inserted {
            Some(row) => decode_schedule(&row),
            None => Err(StoreError::TooManySchedules { limit: max_per_workspace }),
        }
    }

    pub async fn get(&self, id: Uuid) -> Result<Option<Schedule>> {
        let row = sqlx::query(concat!("SELECT ", schedule_columns!(), " FROM schedules WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| decode_schedule(&row)).transpose()
    }

    /// One page of the schedules matching every filter, by workspace, then
    /// name. `page_size` 0 means 100; at most 1000. Returns the token of the
    /// next page, empty on the last.
    pub async fn list_schedules(
        &self,
        filter: &ScheduleFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<(Vec<Schedule>, String)> {
        let after = parse_token(page_token, ScheduleCursor::parse)?;
        let page = effective_page_size(page_size);
        let mut sql = Sql::new(concat!("SELECT ", schedule_columns!(), " FROM schedules WHERE 1 = 1"));
        if let Some(workspace_id) = filter.workspace_id {
            sql.push(" AND workspace_id = ").text(workspace_id.to_string());
        }
        if let Some(enabled) = filter.enabled {
            sql.push(" AND enabled = ").int(i64::from(enabled));
        }
        if filter.stale_only {
            sql.push(" AND stale = 1");
        }
        if let Some(after) = after {
            let workspace_id = after.workspace_id.to_string();
            sql.push(" AND (workspace_id > ").text(workspace_id.clone());
            sql.push(" OR (workspace_id = ").text(workspace_id).push(" AND name > ").text(after.name).push("))");
        }
        sql.push(" ORDER BY workspace_id, name LIMIT ").int(i64::from(page) + 1);
        let rows = sql.query().fetch_all(self.db.pool()).await?;
        let mut schedules = rows.iter().map(decode_schedule).collect::<Result<Vec<_>>>()?;
        let next = next_page(&mut schedules, page, |last| {
            ScheduleCursor { workspace_id: last.workspace_id, name: last.name.clone() }.token()
        });
        Ok((schedules, next))
    }

    /// Applies the fields `changes` sets. Returns the schedule afterwards and
    /// whether anything changed: when every set field already holds its
    /// value (and `clear_stale` finds nothing to clear), nothing is written.
    /// Otherwise the revision goes up by one and `updated_at` becomes `now`.
    /// `enabled` counts as a change only when the flag flips; its reason is
    /// written with it. `Ok(None)` when there is no such schedule.
    pub async fn update(
        &self,
        id: Uuid,
        expected_revision: Option<u64>,
        changes: &ScheduleChanges,
        now: DateTime<Utc>,
    ) -> Result<Option<(Schedule, bool)>> {
        // The write is a compare-and-set on the revision read: losing it
        // means another update came in between, so look again.
        loop {
            let Some(stored) = self.get(id).await? else { return Ok(None) };
            if let Some(expected) = expected_revision
                && expected != stored.revision
            {
                return Err(StoreError::RevisionMismatch { expected, stored: stored.revision });
            }
            let Some(mut sql) = assignments(&stored, changes) else { return Ok(Some((stored, false))) };
            sql.push("revision = revision + 1, updated_at = ").int(to_ms(now));
            sql.push(" WHERE id = ").text(id.to_string());
            sql.push(" AND revision = ").int(revision_value(stored.revision));
            sql.push(concat!(" RETURNING ", schedule_columns!()));
            let name = changes.name.as_deref().unwrap_or(&stored.name);
            let row = sql.query().fetch_optional(self.db.pool()).await.map_err(|e| name_taken_or(e, name))?;
            if let Some(row) = row {
                return Ok(Some((decode_schedule(&row)?, true)));
            }
        }
    }

    /// Deletes a schedule and its runs; false when it did not exist.
    pub async fn delete(&self, id: Uuid) -> Result<bool> {
        let done =
            sqlx::query("DELETE FROM schedules WHERE id = $1").bind(id.to_string()).execute(self.db.pool()).await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a manual run of `schedule` (TriggerSchedule): scheduled and
    /// fired `now`, IN_PROGRESS under `owner`'s lease. With a `request_id`,
    /// a retry finds the run the first call recorded and returns it, in
    /// whatever state, with `created` false.
    pub async fn record_manual_run(
        &self,
        schedule: &Schedule,
        request_id: Option<&str>,
        now: DateTime<Utc>,
        owner: &str,
        lease: Duration,
    ) -> Result<(ClaimedRun, bool)> {
        let fresh_request = Uuid::new_v4().to_string();
        let message_id = message_id(schedule.id, &RunKey::Request(request_id.unwrap_or(&fresh_request)));
        let id = run_id(&message_id);
        let now = to_ms(now);
        let claimed = |run| ClaimedRun {
            run,
            message_text: schedule.message_text.clone(),
            message_metadata_json: schedule.message_metadata_json.clone(),
            overlap_policy: schedule.overlap_policy,
        };
        // Purging may remove a finished run between the insert that met it
        // and the read; then it is recorded afresh.
        loop {
            let inserted = sqlx::query(concat!(
                "INSERT INTO schedule_runs (id, schedule_id, workspace_id, run_trigger, scheduled_at, fired_at, \
                 outcome, error, summary, message_id, queue_id, lease_owner, lease_until) \
                 VALUES ($1, $2, $3, 'RUN_TRIGGER_MANUAL', $4, $4, 'RUN_OUTCOME_IN_PROGRESS', '', '', $5, '', $6, $7) \
                 ON CONFLICT DO NOTHING RETURNING ",
                run_columns!()
            ))
            .bind(id.to_string())
            .bind(schedule.id.to_string())
            .bind(schedule.workspace_id.to_string())
            .bind(now)
            .bind(&message_id)
            .bind(owner)
            .bind(now.saturating_add(duration_ms(lease)))
            .fetch_optional(self.db.pool())
            .await?;
            if let Some(row) = inserted {
                return Ok((claimed(decode_run(&row)?), true));
            }
            let existing = sqlx::query(concat!("SELECT ", run_columns!(), " FROM schedule_runs WHERE message_id = $1"))
                .bind(&message_id)
                .fetch_optional(self.db.pool())
                .await?;
            if let Some(row) = existing {
                return Ok((claimed(decode_run(&row)?), false));
            }
        }
    }

    /// How many enabled schedules are due at `now` and how many runs are
    /// being sent, on every replica: what the metrics report.
    pub async fn load(&self, now: DateTime<Utc>) -> Result<Load> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM schedules WHERE enabled = 1 AND next_run_at <= $1) AS due, \
             (SELECT COUNT(*) FROM schedule_runs WHERE outcome = 'RUN_OUTCOME_IN_PROGRESS') AS in_flight",
        )
        .bind(now.timestamp_millis())
        .fetch_one(self.db.pool())
        .await?;
        let count = |column: &str| -> Result<u64> {
            let value: i64 = row.try_get(column)?;
            u64::try_from(value)
                .map_err(|_| StoreError::Corrupt { id: column.to_owned(), problem: format!("negative count {value}") })
        };
        Ok(Load { due: count("due")?, in_flight: count("in_flight")? })
    }

    /// The earliest `next_run_at` of the enabled schedules.
    pub async fn next_due_at(&self) -> Result<Option<DateTime<Utc>>> {
        let row = sqlx::query(
            "SELECT id, next_run_at FROM schedules WHERE enabled = 1 AND next_run_at IS NOT NULL \
             ORDER BY next_run_at LIMIT 1",
        )
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| Fields::new(&row)?.time("next_run_at")).transpose()
    }

    /// Up to `limit` enabled schedules without a `next_run_at`, to be
    /// repaired.
    pub async fn missing_next_run(&self, limit: u32) -> Result<Vec<Schedule>> {
        let rows = sqlx::query(concat!(
            "SELECT ",
            schedule_columns!(),
            " FROM schedules WHERE enabled = 1 AND next_run_at IS NULL ORDER BY id LIMIT $1"
        ))
        .bind(i64::from(limit))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(decode_schedule).collect()
    }

    /// Gives an enabled schedule without one its `next_run_at`, and the
    /// `last_error` if given; true if written. Nothing happens to a schedule
    /// that got one meanwhile or was disabled.
    pub async fn repair_next_run(
        &self,
        id: Uuid,
        next_run_at: DateTime<Utc>,
        last_error: Option<&str>,
    ) -> Result<bool> {
        let done = sqlx::query(
            "UPDATE schedules SET next_run_at = $2, last_error = COALESCE($3, last_error) \
             WHERE id = $1 AND enabled = 1 AND next_run_at IS NULL",
        )
        .bind(id.to_string())
        .bind(to_ms(next_run_at))
        .bind(last_error)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Disables every enabled schedule of a workspace, with `reason`, as an
    /// update would (next revision, `updated_at` = `now`). Returns how many.
    pub async fn disable_workspace(&self, workspace_id: Uuid, reason: &str, now: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE schedules SET enabled = 0, disabled_reason = $2, next_run_at = NULL, revision = revision + 1, \
             updated_at = $3 WHERE workspace_id = $1 AND enabled = 1",
        )
        .bind(workspace_id.to_string())
        .bind(reason)
        .bind(to_ms(now))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// The workspaces with at least one enabled schedule, in id order.
    pub async fn workspaces_with_enabled_schedules(&self) -> Result<Vec<Uuid>> {
        let rows = sqlx::query("SELECT DISTINCT workspace_id FROM schedules WHERE enabled = 1 ORDER BY workspace_id")
            .fetch_all(self.db.pool())
            .await?;
        rows.iter().map(|row| uuid_column(row, "workspace_id")).collect()
    }

    pub async fn get_run(&self, id: Uuid) -> Result<Option<Run>> {
        let row = sqlx::query(concat!("SELECT ", run_columns!(), " FROM schedule_runs WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| decode_run(&row)).transpose()
    }

    /// One page of the runs matching every filter, newest scheduled time
    /// first (ties by id, descending). `page_size` 0 means 100; at most
    /// 1000. Returns the token of the next page, empty on the last.
    pub async fn list_runs(&self, filter: &RunFilter, page_size: u32, page_token: &str) -> Result<(Vec<Run>, String)> {
        let after = parse_token(page_token, RunCursor::parse)?;
        let page = effective_page_size(page_size);
        let mut sql = Sql::new(concat!("SELECT ", run_columns!(), " FROM schedule_runs WHERE 1 = 1"));
        if let Some(schedule_id) = filter.schedule_id {
            sql.push(" AND schedule_id = ").text(schedule_id.to_string());
        }
        if let Some(workspace_id) = filter.workspace_id {
            sql.push(" AND workspace_id = ").text(workspace_id.to_string());
        }
        if !filter.outcomes.is_empty() {
            sql.push(" AND outcome IN ").text_list(filter.outcomes.iter().map(|outcome| outcome.as_str_name()));
        }
        if let Some(after) = filter.scheduled_after {
            sql.push(" AND scheduled_at >= ").int(to_ms(after));
        }
        if let Some(before) = filter.scheduled_before {
            sql.push(" AND scheduled_at < ").int(to_ms(before));
        }
        if let Some(after) = after {
            sql.push(" AND (scheduled_at < ").int(after.scheduled_at_ms);
            sql.push(" OR (scheduled_at = ").int(after.scheduled_at_ms);
            sql.push(" AND id < ").text(after.id.to_string()).push("))");
        }
        sql.push(" ORDER BY scheduled_at DESC, id DESC LIMIT ").int(i64::from(page) + 1);
        let rows = sql.query().fetch_all(self.db.pool()).await?;
        let mut runs = rows.iter().map(decode_run).collect::<Result<Vec<_>>>()?;
        let next = next_page(&mut runs, page, |last| {
            RunCursor { scheduled_at_ms: to_ms(last.scheduled_at), id: last.id }.token()
        });
        Ok((runs, next))
    }

    /// Forgets the runs that finished before `before`; returns how many.
    pub async fn purge_runs(&self, before: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query("DELETE FROM schedule_runs WHERE finished_at IS NOT NULL AND finished_at < $1")
            .bind(to_ms(before))
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected())
    }
}

/// The `SET` list of an update, ending in ", " for the revision that always
/// follows; `None` when `changes` leaves the schedule as it is.
fn assignments(stored: &Schedule, changes: &ScheduleChanges) -> Option<Sql> {
    let mut sql = Sql::new("UPDATE schedules SET ");
    let mut changed = false;
    let mut text = |column: &str, new: Option<&str>, old: &str| {
        if let Some(new) = new.filter(|new| *new != old) {
            sql.push(column).push(" = ").text(new).push(", ");
            changed = true;
        }
    };
    text("name", changes.name.as_deref(), &stored.name);
    text("cron_expression", changes.cron_expression.as_deref(), &stored.cron_expression);
    text("timezone", changes.timezone.as_deref(), &stored.timezone);
    text("message_text", changes.message_text.as_deref(), &stored.message_text);
    text("message_metadata_json", changes.message_metadata_json.as_deref(), &stored.message_metadata_json);
    let overlap_policy = changes.overlap_policy.map(|policy| policy.as_str_name());
    text("overlap_policy", overlap_policy, stored.overlap_policy.as_str_name());
    let catch_up_policy = changes.catch_up_policy.map(|policy| policy.as_str_name());
    text("catch_up_policy", catch_up_policy, stored.catch_up_policy.as_str_name());
    if let Some((enabled, reason)) = changes.enabled.as_ref().filter(|(enabled, _)| *enabled != stored.enabled) {
        sql.push("enabled = ").int(i64::from(*enabled)).push(", disabled_reason = ").text(reason.as_str()).push(", ");
        changed = true;
    }
    if let Some(next_run_at) = changes.next_run_at.filter(|next| *next != stored.next_run_at) {
        match next_run_at {
            Some(at) => sql.push("next_run_at = ").int(to_ms(at)).push(", "),
            None => sql.push("next_run_at = NULL, "),
        };
        changed = true;
    }
    if changes.clear_stale && (stored.stale || stored.consecutive_empty_replies > 0) {
        sql.push("stale = 0, consecutive_empty_replies = 0, ");
        changed = true;
    }
    changed.then_some(sql)
}

fn effective_page_size(page_size: u32) -> u32 {
    match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// An empty token means the first page.
fn parse_token<T>(token: &str, parse: fn(&str) -> Option<T>) -> Result<Option<T>> {
    if token.is_empty() {
        return Ok(None);
    }
    parse(token).map(Some).ok_or(StoreError::InvalidPageToken)
}

/// Cuts a page read one row long down to size; the token of the next page,
/// or empty when there is none.
fn next_page<T>(items: &mut Vec<T>, page: u32, token: impl Fn(&T) -> String) -> String {
    if items.len() <= page as usize {
        return String::new();
    }
    items.truncate(page as usize);
    items.last().map(token).unwrap_or_default()
}

/// Revisions start at 1 and go up by one per change: they fit.
fn revision_value(revision: u64) -> i64 {
    i64::try_from(revision).unwrap_or(i64::MAX)
}

fn name_taken_or(e: sqlx::Error, name: &str) -> StoreError {
    match &e {
        // The only unique key a schedule can break is (workspace, name); its
        // id is a fresh random UUID.
        sqlx::Error::Database(db) if db.kind() == ErrorKind::UniqueViolation => StoreError::NameTaken(name.to_owned()),
        _ => e.into(),
    }
}

// Last, so that the column macros above are in scope there.
mod claims;
mod rows;

use claims::{DUE_POSTGRES, DUE_SQLITE, TAKE_OVER_POSTGRES, TAKE_OVER_SQLITE};
use rows::*;

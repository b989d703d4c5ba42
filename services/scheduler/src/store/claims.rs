//! Claiming due schedules and finishing their runs: the statements that
//! let replicas share the work exactly once (leases, take-over of a dead
//! replica's runs), apart from the schedules' own reads and writes.

use super::*;

impl ScheduleStore {
    /// Claims up to `limit` enabled schedules due at `now`, earliest first,
    /// in one transaction: each gets the `next_run_at` (and `last_error`, if
    /// any) of its `plan`, and the run the plan asks for is recorded
    /// IN_PROGRESS under `owner`'s lease until `now + lease`. Returns the
    /// recorded runs in claim order; a run recorded before (same scheduled
    /// time) is not recorded again, nor returned. Revision and `updated_at`
    /// stay as they are.
    pub async fn claim_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        owner: &str,
        lease: Duration,
        plan: impl Fn(&DueSchedule) -> Plan + Send,
    ) -> Result<Vec<ClaimedRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = to_ms(now);
        let lease_until = now.saturating_add(duration_ms(lease));
        let mut tx = self.db.begin_write().await?;
        let rows = sqlx::query(self.due_sql).bind(now).bind(i64::from(limit)).fetch_all(&mut *tx).await?;
        let due = rows.iter().map(decode_due).collect::<Result<Vec<_>>>()?;
        let planned: Vec<(Due, Plan)> = due
            .into_iter()
            .map(|due| {
                let plan = plan(&due.schedule);
                (due, plan)
            })
            .collect();

        let mut advanced = HashSet::new();
        for chunk in planned.chunks(self.claim_chunk) {
            let rows = advance_sql(chunk).query().persistent(false).fetch_all(&mut *tx).await?;
            for row in &rows {
                advanced.insert(uuid_column(row, "id")?);
            }
        }

        let runs: Vec<(&Due, RunTrigger, DateTime<Utc>)> = planned
            .iter()
            .filter(|(due, _)| advanced.contains(&due.schedule.id))
            .filter_map(|(due, plan)| plan.run.map(|(trigger, at)| (due, trigger, at)))
            .collect();
        let mut claimed = Vec::with_capacity(runs.len());
        for chunk in runs.chunks(self.claim_chunk) {
            let mut sql = Sql::new(
                "INSERT INTO schedule_runs (id, schedule_id, workspace_id, run_trigger, scheduled_at, fired_at, \
                 outcome, error, summary, message_id, queue_id, lease_owner, lease_until) VALUES ",
            );
            for (i, (due, trigger, at)) in chunk.iter().enumerate() {
                let message_id = message_id(due.schedule.id, &RunKey::At(*at));
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.text(run_id(&message_id).to_string()).push(", ");
                sql.text(due.schedule.id.to_string()).push(", ");
                sql.text(due.schedule.workspace_id.to_string()).push(", ");
                sql.text(trigger.as_str_name()).push(", ").int(to_ms(*at)).push(", ").int(now);
                sql.push(", 'RUN_OUTCOME_IN_PROGRESS', '', '', ").text(message_id).push(", '', ");
                sql.text(owner).push(", ").int(lease_until).push(")");
            }
            sql.push(concat!(" ON CONFLICT DO NOTHING RETURNING ", run_columns!()));
            for row in sql.query().persistent(false).fetch_all(&mut *tx).await? {
                claimed.push(decode_run(&row)?);
            }
        }
        tx.commit().await?;

        let by_schedule: HashMap<Uuid, (usize, &Due)> =
            planned.iter().enumerate().map(|(order, (due, _))| (due.schedule.id, (order, due))).collect();
        // RETURNING promises no order.
        claimed.sort_by_key(|run| by_schedule.get(&run.schedule_id).map(|(order, _)| *order));
        Ok(claimed
            .into_iter()
            .filter_map(|run| {
                let (_, due) = by_schedule.get(&run.schedule_id)?;
                Some(ClaimedRun {
                    run,
                    message_text: due.message_text.clone(),
                    message_metadata_json: due.message_metadata_json.clone(),
                    overlap_policy: due.overlap_policy,
                })
            })
            .collect())
    }

    /// Takes over up to `limit` runs IN_PROGRESS whose lease ended before
    /// `now` (their replica died): they are `owner`'s until `now + lease`,
    /// their `fired_at` unchanged. Returns them with what firing needs.
    pub async fn take_over_expired(
        &self,
        now: DateTime<Utc>,
        limit: u32,
        owner: &str,
        lease: Duration,
    ) -> Result<Vec<ClaimedRun>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = to_ms(now);
        let rows = sqlx::query(self.take_over_sql)
            .bind(owner)
            .bind(now.saturating_add(duration_ms(lease)))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        let mut runs = rows.iter().map(decode_run).collect::<Result<Vec<_>>>()?;
        if runs.is_empty() {
            return Ok(Vec::new());
        }
        runs.sort_by_key(|run| (run.scheduled_at, run.id));
        let schedule_ids: HashSet<String> = runs.iter().map(|run| run.schedule_id.to_string()).collect();
        let mut sql =
            Sql::new("SELECT id, message_text, message_metadata_json, overlap_policy FROM schedules WHERE id IN ");
        sql.text_list(schedule_ids);
        let rows = sql.query().persistent(false).fetch_all(self.db.pool()).await?;
        let mut messages = HashMap::new();
        for row in &rows {
            let fields = Fields::new(row)?;
            let message = (
                fields.text("message_text")?,
                fields.text("message_metadata_json")?,
                fields.named("overlap_policy", OverlapPolicy::from_str_name)?,
            );
            messages.insert(fields.uuid("id")?, message);
        }
        // A run whose schedule was deleted meanwhile went with it.
        Ok(runs
            .into_iter()
            .filter_map(|run| {
                let (message_text, message_metadata_json, overlap_policy) = messages.get(&run.schedule_id)?.clone();
                Some(ClaimedRun { run, message_text, message_metadata_json, overlap_policy })
            })
            .collect())
    }

    /// Extends to `until` the lease of every run IN_PROGRESS that `owner`
    /// holds; returns how many.
    pub async fn renew_leases(&self, owner: &str, until: DateTime<Utc>) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE schedule_runs SET lease_until = $2 WHERE lease_owner = $1 AND outcome = 'RUN_OUTCOME_IN_PROGRESS'",
        )
        .bind(owner)
        .bind(to_ms(until))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Records the outcome of a run `owner` still holds, and with it the
    /// schedule's latest run: its time, outcome and error (empty clears it).
    /// An EMPTY_REPLY counts one more empty reply in a row, and marks the
    /// schedule stale once the count reaches `stale_after` (0 counts as 1);
    /// a DELIVERED resets the count; the stale flag stays until cleared by an
    /// update. Revision, `updated_at` and `next_run_at` stay as they are.
    /// False, writing nothing, when the run is gone or held by another.
    pub async fn finish_run(
        &self,
        run_id: Uuid,
        owner: &str,
        finish: &Finish,
        now: DateTime<Utc>,
        stale_after: u32,
    ) -> Result<bool> {
        let mut tx = self.db.begin_write().await?;
        let finished = sqlx::query(
            "UPDATE schedule_runs SET outcome = $3, error = $4, summary = $5, queue_id = $6, finished_at = $7, \
             fired_at = COALESCE($8, fired_at), lease_owner = NULL, lease_until = NULL \
             WHERE id = $1 AND lease_owner = $2 AND outcome = 'RUN_OUTCOME_IN_PROGRESS' \
             RETURNING schedule_id, scheduled_at",
        )
        .bind(run_id.to_string())
        .bind(owner)
        .bind(finish.outcome.as_str_name())
        .bind(&finish.error)
        .bind(&finish.summary)
        .bind(&finish.queue_id)
        .bind(to_ms(now))
        .bind(finish.fired_at.map(to_ms))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(finished) = finished else { return Ok(false) };
        let schedule_id: String = finished.try_get("schedule_id")?;
        let scheduled_at: i64 = finished.try_get("scheduled_at")?;
        let empty_reply = i64::from(finish.outcome == RunOutcome::EmptyReply);
        let delivered = i64::from(finish.outcome == RunOutcome::Delivered);
        // Every SET term sees the row as it was, so the new count is spelled
        // out again where staleness is decided.
        sqlx::query(
            "UPDATE schedules SET last_run_at = $2, last_outcome = $3, last_error = $4, \
             consecutive_empty_replies = CASE WHEN $6 = 1 THEN 0 ELSE consecutive_empty_replies + $5 END, \
             stale = CASE WHEN $5 = 1 AND consecutive_empty_replies + 1 >= $7 THEN 1 ELSE stale END \
             WHERE id = $1",
        )
        .bind(schedule_id)
        .bind(scheduled_at)
        .bind(finish.outcome.as_str_name())
        .bind(&finish.error)
        .bind(empty_reply)
        .bind(delivered)
        .bind(i64::from(stale_after))
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(true)
    }
}

/// The due schedules a claim takes, earliest first, with what firing needs.
/// The `enabled = 1` term is the due index's predicate, written out so the
/// index serves every plan. On PostgreSQL, `SKIP LOCKED` lets replicas
/// claiming at once take different schedules instead of waiting for each
/// other; `NO KEY UPDATE` because the key stays, so inserting runs (whose
/// foreign key locks the schedule's key) is not held up. SQLite has a single
/// writer, taken when the claim's transaction begins.
macro_rules! due_sql {
    ($lock:literal) => {
        concat!(
            "SELECT id, workspace_id, cron_expression, timezone, catch_up_policy, next_run_at, message_text, \
             message_metadata_json, overlap_policy FROM schedules \
             WHERE enabled = 1 AND next_run_at <= $1 ORDER BY next_run_at LIMIT $2",
            $lock
        )
    };
}
pub(super) const DUE_POSTGRES: &str = due_sql!(" FOR NO KEY UPDATE SKIP LOCKED");
pub(super) const DUE_SQLITE: &str = due_sql!("");

/// The take-over of expired leases, as one statement so that it is atomic on
/// its own. The outer conditions repeat the inner ones: a row another
/// replica took over between the inner read and the lock is re-checked
/// against them on PostgreSQL, and left alone.
macro_rules! take_over_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE schedule_runs SET lease_owner = $1, lease_until = $2 \
             WHERE outcome = 'RUN_OUTCOME_IN_PROGRESS' AND lease_until < $3 AND id IN \
             (SELECT id FROM schedule_runs WHERE outcome = 'RUN_OUTCOME_IN_PROGRESS' AND lease_until < $3 \
             ORDER BY lease_until LIMIT $4",
            $lock,
            ") RETURNING ",
            run_columns!()
        )
    };
}
pub(super) const TAKE_OVER_POSTGRES: &str = take_over_sql!(" FOR NO KEY UPDATE SKIP LOCKED");
pub(super) const TAKE_OVER_SQLITE: &str = take_over_sql!("");

/// A due schedule as the claim read it.
struct Due {
    schedule: DueSchedule,
    message_text: String,
    message_metadata_json: String,
    overlap_policy: OverlapPolicy,
}

/// Moves each planned schedule to its next time, if it is still due when
/// the claim read it; returns the ids of those moved.
fn advance_sql(planned: &[(Due, Plan)]) -> Sql {
    let mut sql = Sql::new("WITH planned (schedule_id, due_at, new_next_run_at, new_error) AS (VALUES ");
    for (i, (due, plan)) in planned.iter().enumerate() {
        sql.push(if i == 0 { "(" } else { ", (" });
        sql.text(due.schedule.id.to_string()).push(", ").int(to_ms(due.schedule.next_run_at)).push(", ");
        sql.int(to_ms(plan.next_run_at)).push(", ").text_or_null(plan.error.as_deref()).push(")");
    }
    sql.push(
        ") UPDATE schedules SET next_run_at = planned.new_next_run_at, \
         last_error = COALESCE(planned.new_error, schedules.last_error) \
         FROM planned WHERE schedules.id = planned.schedule_id AND schedules.next_run_at = planned.due_at \
         RETURNING id",
    );
    sql
}

fn decode_due(row: &AnyRow) -> Result<Due> {
    let fields = Fields::new(row)?;
    Ok(Due {
        schedule: DueSchedule {
            id: fields.uuid("id")?,
            workspace_id: fields.uuid("workspace_id")?,
            cron_expression: fields.text("cron_expression")?,
            timezone: fields.text("timezone")?,
            catch_up_policy: fields.named("catch_up_policy", CatchUpPolicy::from_str_name)?,
            next_run_at: fields.time("next_run_at")?,
        },
        message_text: fields.text("message_text")?,
        message_metadata_json: fields.text("message_metadata_json")?,
        overlap_policy: fields.named("overlap_policy", OverlapPolicy::from_str_name)?,
    })
}

//! Reading rows back into the model, refusing values the store could not
//! have written (a corrupt row is an error, not a guess).

use super::*;

pub(super) fn corrupt(id: &str, column: &str, value: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt { id: id.to_owned(), problem: format!("{column}: {value}") }
}

pub(super) fn uuid_column(row: &AnyRow, column: &str) -> Result<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| corrupt(&text, column, e))
}

/// The columns of one row, read with the row's id at hand for errors.
pub(super) struct Fields<'r> {
    row: &'r AnyRow,
    id: String,
}

impl<'r> Fields<'r> {
    pub(super) fn new(row: &'r AnyRow) -> Result<Self> {
        Ok(Self { row, id: row.try_get("id")? })
    }

    pub(super) fn text(&self, column: &str) -> Result<String> {
        Ok(self.row.try_get(column)?)
    }

    pub(super) fn uuid(&self, column: &str) -> Result<Uuid> {
        let text: String = self.row.try_get(column)?;
        Uuid::parse_str(&text).map_err(|e| corrupt(&self.id, column, e))
    }

    pub(super) fn time(&self, column: &str) -> Result<DateTime<Utc>> {
        let ms: i64 = self.row.try_get(column)?;
        from_ms(ms).ok_or_else(|| corrupt(&self.id, column, ms))
    }

    pub(super) fn optional_time(&self, column: &str) -> Result<Option<DateTime<Utc>>> {
        let ms: Option<i64> = self.row.try_get(column)?;
        ms.map(|ms| from_ms(ms).ok_or_else(|| corrupt(&self.id, column, ms))).transpose()
    }

    pub(super) fn flag(&self, column: &str) -> Result<bool> {
        match self.row.try_get::<i64, _>(column)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(corrupt(&self.id, column, other)),
        }
    }

    pub(super) fn count<T: TryFrom<i64>>(&self, column: &str) -> Result<T> {
        let value: i64 = self.row.try_get(column)?;
        T::try_from(value).map_err(|_| corrupt(&self.id, column, value))
    }

    /// An enumeration stored by its proto value name.
    pub(super) fn named<T>(&self, column: &str, parse: fn(&str) -> Option<T>) -> Result<T> {
        let name: String = self.row.try_get(column)?;
        parse(&name).ok_or_else(|| corrupt(&self.id, column, name))
    }
}

pub(super) fn decode_schedule(row: &AnyRow) -> Result<Schedule> {
    let fields = Fields::new(row)?;
    Ok(Schedule {
        id: fields.uuid("id")?,
        workspace_id: fields.uuid("workspace_id")?,
        name: fields.text("name")?,
        cron_expression: fields.text("cron_expression")?,
        timezone: fields.text("timezone")?,
        message_text: fields.text("message_text")?,
        message_metadata_json: fields.text("message_metadata_json")?,
        enabled: fields.flag("enabled")?,
        disabled_reason: fields.text("disabled_reason")?,
        overlap_policy: fields.named("overlap_policy", OverlapPolicy::from_str_name)?,
        catch_up_policy: fields.named("catch_up_policy", CatchUpPolicy::from_str_name)?,
        next_run_at: fields.optional_time("next_run_at")?,
        last_run_at: fields.optional_time("last_run_at")?,
        last_outcome: fields.named("last_outcome", RunOutcome::from_str_name)?,
        last_error: fields.text("last_error")?,
        consecutive_empty_replies: fields.count("consecutive_empty_replies")?,
        stale: fields.flag("stale")?,
        revision: fields.count("revision")?,
        created_at: fields.time("created_at")?,
        updated_at: fields.time("updated_at")?,
    })
}

pub(super) fn decode_run(row: &AnyRow) -> Result<Run> {
    let fields = Fields::new(row)?;
    Ok(Run {
        id: fields.uuid("id")?,
        schedule_id: fields.uuid("schedule_id")?,
        workspace_id: fields.uuid("workspace_id")?,
        trigger: fields.named("run_trigger", RunTrigger::from_str_name)?,
        scheduled_at: fields.time("scheduled_at")?,
        fired_at: fields.optional_time("fired_at")?,
        finished_at: fields.optional_time("finished_at")?,
        outcome: fields.named("outcome", RunOutcome::from_str_name)?,
        error: fields.text("error")?,
        summary: fields.text("summary")?,
        message_id: fields.text("message_id")?,
        queue_id: fields.text("queue_id")?,
    })
}

//! What the schedule store takes and returns.

use agentmesh_proto::scheduler::v1::{CatchUpPolicy, OverlapPolicy, RunOutcome, RunTrigger};
use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A schedule as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub name: String,
    pub cron_expression: String,
    /// IANA name; "UTC" when the caller gave none.
    pub timezone: String,
    pub message_text: String,
    /// A JSON object, or empty for none.
    pub message_metadata_json: String,
    pub enabled: bool,
    pub disabled_reason: String,
    pub overlap_policy: OverlapPolicy,
    pub catch_up_policy: CatchUpPolicy,
    pub next_run_at: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub last_outcome: RunOutcome,
    pub last_error: String,
    pub consecutive_empty_replies: u32,
    pub stale: bool,
    pub revision: u64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A schedule to create; the store assigns id, revision 1 and timestamps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewSchedule {
    pub workspace_id: Uuid,
    pub name: String,
    pub cron_expression: String,
    pub timezone: String,
    pub message_text: String,
    pub message_metadata_json: String,
    pub enabled: bool,
    pub overlap_policy: OverlapPolicy,
    pub catch_up_policy: CatchUpPolicy,
    /// Computed by the caller from the timetable; `None` when disabled.
    pub next_run_at: Option<DateTime<Utc>>,
}

/// The fields an update sets; `None` leaves a field alone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleChanges {
    pub name: Option<String>,
    pub cron_expression: Option<String>,
    pub timezone: Option<String>,
    pub message_text: Option<String>,
    pub message_metadata_json: Option<String>,
    /// `Some((enabled, disabled_reason))`.
    pub enabled: Option<(bool, String)>,
    pub overlap_policy: Option<OverlapPolicy>,
    pub catch_up_policy: Option<CatchUpPolicy>,
    /// `Some(value)` replaces `next_run_at` (the caller recomputed it).
    pub next_run_at: Option<Option<DateTime<Utc>>>,
    pub clear_stale: bool,
}

/// One run of a schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Run {
    pub id: Uuid,
    pub schedule_id: Uuid,
    pub workspace_id: Uuid,
    pub trigger: RunTrigger,
    pub scheduled_at: DateTime<Utc>,
    pub fired_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub outcome: RunOutcome,
    pub error: String,
    pub summary: String,
    pub message_id: String,
    pub queue_id: String,
}

/// A run this replica now holds under a lease, with what firing it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedRun {
    pub run: Run,
    pub message_text: String,
    pub message_metadata_json: String,
    pub overlap_policy: OverlapPolicy,
}

/// A due schedule as the claim sees it, before its run is planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueSchedule {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub cron_expression: String,
    pub timezone: String,
    pub catch_up_policy: CatchUpPolicy,
    /// Never `None`: only schedules with a due time are claimed.
    pub next_run_at: DateTime<Utc>,
}

/// What the claim does with one due schedule (decided by the engine).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The run to record and fire, if any: (trigger, scheduled time).
    pub run: Option<(RunTrigger, DateTime<Utc>)>,
    /// The schedule's new `next_run_at`; always set, so a schedule never
    /// loses its place.
    pub next_run_at: DateTime<Utc>,
    /// Why the timetable could not be read (kept as `last_error`); `None`
    /// clears nothing.
    pub error: Option<String>,
}

/// How a run ended.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Finish {
    pub outcome: RunOutcome,
    pub error: String,
    pub summary: String,
    pub queue_id: String,
    /// When the replica acted on the run (began sending it, or decided not
    /// to), which becomes its `fired_at`; `None` keeps the time of the claim.
    pub fired_at: Option<DateTime<Utc>>,
}

/// Filters of [`super::ScheduleStore::list_schedules`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleFilter {
    pub workspace_id: Option<Uuid>,
    pub enabled: Option<bool>,
    pub stale_only: bool,
}

/// Filters of [`super::ScheduleStore::list_runs`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RunFilter {
    pub schedule_id: Option<Uuid>,
    pub workspace_id: Option<Uuid>,
    pub outcomes: Vec<RunOutcome>,
    pub scheduled_after: Option<DateTime<Utc>>,
    pub scheduled_before: Option<DateTime<Utc>>,
}

/// The message id of a run: derived from the schedule and the scheduled time
/// (or the trigger's idempotency key), so a retry or a racing replica sends
/// the same id and the run cannot be delivered twice (SCH-5).
pub fn message_id(schedule_id: Uuid, key: &RunKey<'_>) -> String {
    match key {
        RunKey::At(at) => format!("schedule-{schedule_id}-{}", at.timestamp_millis()),
        RunKey::Request(request_id) => format!("schedule-{schedule_id}-request-{request_id}"),
    }
}

/// What makes a run unique within its schedule.
pub enum RunKey<'a> {
    /// A scheduled or catch-up run: its scheduled time.
    At(DateTime<Utc>),
    /// A manual run: the caller's idempotency key.
    Request(&'a str),
}

/// The run's id: a UUID derived from its message id, so two replicas racing
/// to record one run compute the same id.
pub fn run_id(message_id: &str) -> Uuid {
    Uuid::new_v5(&RUN_NAMESPACE, message_id.as_bytes())
}

const RUN_NAMESPACE: Uuid = Uuid::from_u128(0x6d1f_3c2e_8a4b_4f7e_9c0d_2b5a_7e19_c4a3);

/// Unix milliseconds, as the database keeps times.
pub(crate) fn to_ms(time: DateTime<Utc>) -> i64 {
    time.timestamp_millis()
}

/// `None` outside the range chrono can represent.
pub(crate) fn from_ms(ms: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(ms)
}

pub(crate) fn duration_ms(duration: std::time::Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

/// Where a page of schedules ended: the last one's place in listing order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ScheduleCursor {
    pub workspace_id: Uuid,
    pub name: String,
}

/// Where a page of runs ended: the last one's place, newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RunCursor {
    pub scheduled_at_ms: i64,
    pub id: Uuid,
}

// Tokens are hex so that they survive any transport untouched; the tag keeps
// a token of one listing from being accepted by the other. A schedule's name
// comes last, so a colon in it needs no escaping.
impl ScheduleCursor {
    pub(crate) fn token(&self) -> String {
        hex_encode(&format!("s:{}:{}", self.workspace_id, self.name))
    }

    pub(crate) fn parse(token: &str) -> Option<Self> {
        let [workspace_id, name] = token_fields(token, "s")?;
        Some(Self { workspace_id: workspace_id.parse().ok()?, name })
    }
}

impl RunCursor {
    pub(crate) fn token(&self) -> String {
        hex_encode(&format!("r:{}:{}", self.scheduled_at_ms, self.id))
    }

    pub(crate) fn parse(token: &str) -> Option<Self> {
        let [scheduled_at_ms, id] = token_fields(token, "r")?;
        Some(Self { scheduled_at_ms: scheduled_at_ms.parse().ok()?, id: id.parse().ok()? })
    }
}

fn token_fields<const N: usize>(token: &str, tag: &str) -> Option<[String; N]> {
    let text = hex_decode(token)?;
    let mut fields = text.splitn(N + 1, ':');
    if fields.next() != Some(tag) {
        return None;
    }
    let fields: Vec<String> = fields.map(str::to_owned).collect();
    fields.try_into().ok()
}

fn hex_encode(text: &str) -> String {
    text.bytes().fold(String::with_capacity(text.len() * 2), |mut hex, byte| {
        hex.push(char::from(HEX_DIGITS[usize::from(byte >> 4)]));
        hex.push(char::from(HEX_DIGITS[usize::from(byte & 0x0f)]));
        hex
    })
}

fn hex_decode(hex: &str) -> Option<String> {
    let digits = hex.as_bytes();
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    let value = |digit: u8| char::from(digit).to_digit(16);
    let bytes = digits
        .chunks_exact(2)
        .map(|pair| u8::try_from(value(pair[0])? * 16 + value(pair[1])?).ok())
        .collect::<Option<Vec<u8>>>()?;
    String::from_utf8(bytes).ok()
}

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_each_other() {
        let schedules = ScheduleCursor { workspace_id: Uuid::new_v4(), name: "daily: standup ☕".to_owned() };
        assert_eq!(ScheduleCursor::parse(&schedules.token()), Some(schedules.clone()));
        let runs = RunCursor { scheduled_at_ms: -86_400_000, id: Uuid::new_v4() };
        assert_eq!(RunCursor::parse(&runs.token()), Some(runs));
        assert_eq!(ScheduleCursor::parse(&runs.token()), None);
        assert_eq!(RunCursor::parse(&schedules.token()), None);
        for bad in ["zz", "", "7", "Ab", &hex_encode("r:1:not-a-uuid"), &hex_encode("r:1"), &hex_encode("s:x")] {
            assert_eq!(RunCursor::parse(bad), None, "{bad}");
            assert_eq!(ScheduleCursor::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn message_and_run_ids_are_stable_per_key() {
        let schedule_id = Uuid::new_v4();
        let at = DateTime::from_timestamp_millis(1_700_000_000_123).expect("in range");
        let scheduled = message_id(schedule_id, &RunKey::At(at));
        assert_eq!(scheduled, format!("schedule-{schedule_id}-1700000000123"));
        assert_eq!(run_id(&scheduled), run_id(&message_id(schedule_id, &RunKey::At(at))));
        let manual = message_id(schedule_id, &RunKey::Request("retry-1"));
        assert_ne!(run_id(&manual), run_id(&scheduled));
        assert_ne!(run_id(&scheduled), run_id(&message_id(Uuid::new_v4(), &RunKey::At(at))));
    }

    #[test]
    fn milliseconds_round_trip() {
        for ms in [0, 1, 1_700_000_000_123, -1, -86_400_000] {
            assert_eq!(from_ms(ms).map(to_ms), Some(ms));
        }
        assert_eq!(from_ms(i64::MAX), None);
    }
}

/// The work in hand across every replica.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Load {
    /// Enabled schedules whose next run time has come.
    pub due: u64,
    /// Runs being sent (IN_PROGRESS).
    pub in_flight: u64,
}

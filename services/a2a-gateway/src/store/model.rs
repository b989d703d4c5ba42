//! What the queue store takes and returns, how states and reasons are
//! spelled in the database, and the conversions to the control API's
//! messages.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use agentmesh_proto::gateway::v1 as pb;
use pb::{QueueItemState, QueueReason};
use uuid::Uuid;

/// A message to queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewQueueItem {
    pub workspace_id: Uuid,
    /// The A2A message id; unique per workspace.
    pub message_id: String,
    pub caller: String,
    pub priority: i32,
    pub reason: QueueReason,
    /// Attempts before the item becomes a dead letter; 0 is taken as 1.
    pub max_attempts: u32,
    pub expires_at: Option<SystemTime>,
    pub request_json: String,
    pub traceparent: String,
}

/// The outcome of [`super::QueueStore::enqueue`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub item: QueueItem,
    /// The message id was already queued: `item` is the existing item.
    pub duplicate: bool,
    /// QUEUED items of the workspace, this one included.
    pub depth: u64,
}

/// An agent's reply to a queued message, to be recorded with its item by
/// [`super::QueueStore::complete`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    pub id: Uuid,
    pub result_json: String,
}

/// A queue item, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueItem {
    pub id: Uuid,
    /// Arrival order: among items of equal priority, lower goes first. A
    /// requeued dead letter keeps its number.
    pub seq: i64,
    pub workspace_id: Uuid,
    pub message_id: String,
    pub caller: String,
    pub priority: i32,
    pub state: QueueItemState,
    pub state_reason: String,
    pub reason: QueueReason,
    pub attempts: u32,
    pub max_attempts: u32,
    pub last_error: String,
    pub enqueued_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    pub next_attempt_at: Option<SystemTime>,
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<SystemTime>,
    pub delivered_at: Option<SystemTime>,
    /// The agent's reply; `None` in lists without payloads.
    pub result_json: Option<String>,
    /// The A2A request; `None` in lists without payloads.
    pub request_json: Option<String>,
    pub traceparent: String,
    pub updated_at: SystemTime,
}

/// Which items [`super::QueueStore::list`] returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListFilter {
    pub workspace_id: Option<Uuid>,
    /// Empty means QUEUED, IN_FLIGHT and DEAD_LETTER.
    pub states: Vec<QueueItemState>,
    pub include_payloads: bool,
}

/// What [`super::QueueStore::drop_stale`] drops: QUEUED items (and DEAD_LETTER
/// ones when asked) matching any criterion given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DropStale {
    /// `None` means every workspace.
    pub workspace_id: Option<Uuid>,
    /// Criterion: queued longer ago than this.
    pub older_than: Option<Duration>,
    /// Criterion: past its expiry.
    pub expired: bool,
    pub include_dead_letters: bool,
    /// Recorded as each dropped item's `state_reason`.
    pub reason: String,
    pub dry_run: bool,
}

/// What [`super::QueueStore::requeue_dead_letters`] puts back.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Requeue {
    /// Every dead letter of this workspace, or, with `queue_ids`, the
    /// workspace those items must belong to.
    pub workspace_id: Option<Uuid>,
    pub queue_ids: Vec<Uuid>,
    /// Replaces each item's own attempt bound.
    pub max_attempts: Option<u32>,
}

/// One page of [`super::QueueStore::stats`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatsPage {
    pub totals: QueueStats,
    /// Deepest queue first, ties by workspace id.
    pub workspaces: Vec<QueueStats>,
    pub next_page_token: Option<String>,
}

/// Queue figures of one workspace (`workspace_id` set) or of a selection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueStats {
    pub workspace_id: Option<Uuid>,
    pub queued: u64,
    pub in_flight: u64,
    pub dead_letters: u64,
    pub oldest_queued_at: Option<SystemTime>,
    /// Age of the oldest QUEUED item at the time of the query; 0 if none.
    pub oldest_queued_age_seconds: u64,
}

/// The items in one unfinished state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StateDepth {
    pub state: QueueItemState,
    pub items: u64,
    pub oldest_enqueued_at: SystemTime,
}

pub(crate) fn state_text(state: QueueItemState) -> &'static str {
    match state {
        QueueItemState::Queued => "queued",
        QueueItemState::InFlight => "in_flight",
        QueueItemState::Delivered => "delivered",
        QueueItemState::DeadLetter => "dead_letter",
        QueueItemState::Dropped => "dropped",
        // Never stored (the schema refuses it), so a filter on it matches nothing.
        QueueItemState::Unspecified => "unspecified",
    }
}

pub(crate) fn parse_state(text: &str) -> Option<QueueItemState> {
    Some(match text {
        "queued" => QueueItemState::Queued,
        "in_flight" => QueueItemState::InFlight,
        "delivered" => QueueItemState::Delivered,
        "dead_letter" => QueueItemState::DeadLetter,
        "dropped" => QueueItemState::Dropped,
        _ => return None,
    })
}

pub(crate) fn reason_text(reason: QueueReason) -> &'static str {
    match reason {
        QueueReason::Unspecified => "unspecified",
        QueueReason::TargetBusy => "target_busy",
        QueueReason::ConnectionDropped => "connection_dropped",
        QueueReason::IdleTimeout => "idle_timeout",
        QueueReason::TargetNotReady => "target_not_ready",
    }
}

/// Unknown reasons read as unspecified: a newer gateway sharing the
/// database may know reasons this one does not.
pub(crate) fn parse_reason(text: &str) -> QueueReason {
    match text {
        "target_busy" => QueueReason::TargetBusy,
        "connection_dropped" => QueueReason::ConnectionDropped,
        "idle_timeout" => QueueReason::IdleTimeout,
        "target_not_ready" => QueueReason::TargetNotReady,
        _ => QueueReason::Unspecified,
    }
}

/// Unix milliseconds, saturating far outside any real clock.
pub(crate) fn to_ms(time: SystemTime) -> i64 {
    match time.duration_since(UNIX_EPOCH) {
        Ok(after) => i64::try_from(after.as_millis()).unwrap_or(i64::MAX),
        Err(before) => i64::try_from(before.duration().as_millis()).map_or(i64::MIN, |ms| -ms),
    }
}

pub(crate) fn from_ms(ms: i64) -> SystemTime {
    let span = Duration::from_millis(ms.unsigned_abs());
    let time = if ms >= 0 { UNIX_EPOCH.checked_add(span) } else { UNIX_EPOCH.checked_sub(span) };
    time.unwrap_or(UNIX_EPOCH)
}

pub(crate) fn duration_ms(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

fn timestamp(time: SystemTime) -> prost_types::Timestamp {
    prost_types::Timestamp::from(time)
}

impl From<&QueueItem> for pb::QueueItem {
    fn from(item: &QueueItem) -> Self {
        pb::QueueItem {
            id: item.id.to_string(),
            workspace_id: item.workspace_id.to_string(),
            message_id: item.message_id.clone(),
            caller: item.caller.clone(),
            priority: item.priority,
            state: item.state.into(),
            state_reason: item.state_reason.clone(),
            queue_reason: item.reason.into(),
            attempts: item.attempts,
            max_attempts: item.max_attempts,
            last_error: item.last_error.clone(),
            enqueued_at: Some(timestamp(item.enqueued_at)),
            expires_at: item.expires_at.map(timestamp),
            next_attempt_at: item.next_attempt_at.map(timestamp),
            lease_owner: item.lease_owner.clone().unwrap_or_default(),
            lease_expires_at: item.lease_expires_at.map(timestamp),
            delivered_at: item.delivered_at.map(timestamp),
            result_json: item.result_json.clone().unwrap_or_default(),
            request_json: item.request_json.clone().unwrap_or_default(),
            traceparent: item.traceparent.clone(),
            updated_at: Some(timestamp(item.updated_at)),
        }
    }
}

impl From<&QueueStats> for pb::QueueStats {
    fn from(stats: &QueueStats) -> Self {
        pb::QueueStats {
            workspace_id: stats.workspace_id.map(|id| id.to_string()).unwrap_or_default(),
            queued: stats.queued,
            in_flight: stats.in_flight,
            dead_letters: stats.dead_letters,
            oldest_queued_at: stats.oldest_queued_at.map(timestamp),
            oldest_queued_age_seconds: stats.oldest_queued_age_seconds,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn milliseconds_round_trip_on_both_sides_of_the_epoch() {
        for ms in [0, 1, 1_700_000_000_123, -1, -86_400_000] {
            assert_eq!(to_ms(from_ms(ms)), ms);
        }
    }

    #[test]
    fn every_state_and_reason_reads_back_as_written() {
        for state in [
            QueueItemState::Queued,
            QueueItemState::InFlight,
            QueueItemState::Delivered,
            QueueItemState::DeadLetter,
            QueueItemState::Dropped,
        ] {
            assert_eq!(parse_state(state_text(state)), Some(state));
        }
        assert_eq!(parse_state(state_text(QueueItemState::Unspecified)), None);
        for reason in [
            QueueReason::Unspecified,
            QueueReason::TargetBusy,
            QueueReason::ConnectionDropped,
            QueueReason::IdleTimeout,
            QueueReason::TargetNotReady,
        ] {
            assert_eq!(parse_reason(reason_text(reason)), reason);
        }
        assert_eq!(parse_reason("from_the_future"), QueueReason::Unspecified);
    }
}

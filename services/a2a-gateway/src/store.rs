//! The gateway's durable delivery queue (GW-5…GW-8): messages a workspace
//! could not take at once, delivered later in order per workspace (priority,
//! then arrival), deduplicated by A2A message id, with bounded attempts, then
//! a dead letter. SQLite by default, PostgreSQL when several replicas share
//! the queue (ARCH-2); the statements are written once for both.
//!
//! Replicas never deliver an item twice at once and never lose one: a claim
//! takes items under a lease in one statement (on PostgreSQL skipping rows
//! another replica is claiming), every later step is a compare-and-set on the
//! lease owner, and an item whose lease ran out (its replica died) is
//! claimable again with its attempts and message id unchanged. A per-workspace
//! drain lease keeps one replica draining each workspace, so items leave in
//! order.

mod model;
mod push;
mod sql;

use std::{
    collections::HashSet,
    time::{Duration, SystemTime},
};

use agentmesh_db::{Database, DbError, Dialect, Sql, StoreFailure};
use agentmesh_proto::gateway::v1::QueueItemState;
use sqlx::{Row, any::AnyRow, migrate::Migrator};
use uuid::Uuid;

pub use model::{
    Completion, DropStale, Enqueued, ListFilter, NewQueueItem, QueueItem, QueueStats, Requeue, StateDepth, StatsPage,
};
use model::{duration_ms, from_ms, parse_reason, parse_state, to_ms};
pub(crate) use model::{reason_text, state_text};
pub use push::{MAX_PUSH_CONFIGS_PER_TASK, PushAuthentication, PushConfig};
use sql::{ListCursor, StatsCursor};

// Two schemas, because the arrival number is an auto-numbered column and the
// engines spell that differently (AUTOINCREMENT rowid vs. identity). A
// counter row shared by every enqueue would have let one schema serve both,
// but on PostgreSQL it would serialise all enqueues of all replicas on one
// row lock. Every statement below is still written once.
static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("./migrations/postgres");

/// The most ids a drop reports, as the control API promises.
const REPORTED_IDS: usize = 1000;
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
/// The most items one batch statement names; larger batches take several.
/// Far below either engine's limit on parameters, and it bounds the
/// statement text when replies are large.
const MAX_ROWS_PER_STATEMENT: usize = 256;

/// Every column of an item, payloads last.
macro_rules! item_columns {
    () => {
        "seq, id, workspace_id, message_id, caller, priority, state, state_reason, queue_reason, attempts, \
         max_attempts, last_error, enqueued_at, expires_at, next_attempt_at, lease_owner, lease_expires_at, \
         delivered_at, traceparent, updated_at, request_json, result_json"
    };
}

/// The columns of an item without its payloads, which may be megabytes.
macro_rules! summary_columns {
    () => {
        "seq, id, workspace_id, message_id, caller, priority, state, state_reason, queue_reason, attempts, \
         max_attempts, last_error, enqueued_at, expires_at, next_attempt_at, lease_owner, lease_expires_at, \
         delivered_at, traceparent, updated_at"
    };
}

/// The figures of [`QueueStats`] over the rows selected.
const FIGURES: &str = "COUNT(CASE WHEN state = 'queued' THEN 1 END) AS queued, \
     COUNT(CASE WHEN state = 'in_flight' THEN 1 END) AS in_flight, \
     COUNT(CASE WHEN state = 'dead_letter' THEN 1 END) AS dead_letters, \
     MIN(CASE WHEN state = 'queued' THEN enqueued_at END) AS oldest";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed: unreachable for now, or broken.
    #[error(transparent)]
    Backend(#[from] StoreFailure),
    /// A page token this store did not hand out (or for another listing).
    #[error("invalid page token")]
    InvalidPageToken,
    /// A request that selects nothing sensible, e.g. a drop without criteria.
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("queue item {id} cannot be read: {problem}")]
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

/// The durable queue; cheap to clone (it shares the connection pool).
#[derive(Debug, Clone)]
pub struct QueueStore {
    db: Database,
    claim_sql: &'static str,
}

impl QueueStore {
    /// Opens the queue on `db`, bringing its schema up to date.
    pub async fn open(db: Database) -> Result<Self> {
        db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        let claim_sql = match db.dialect() {
            Dialect::Postgres => CLAIM_POSTGRES,
            Dialect::Sqlite => CLAIM_SQLITE,
        };
        Ok(Self { db, claim_sql })
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Queues a message unless its workspace already has an item with that
    /// message id: then returns the existing item, in whatever state, with
    /// `duplicate` set. `depth` counts the QUEUED items of the workspace
    /// afterwards, this one included.
    pub async fn enqueue(&self, item: NewQueueItem, now: SystemTime) -> Result<Enqueued> {
        let id = Uuid::new_v4();
        let now = to_ms(now);
        // A conflict "updates" the existing row to itself so that RETURNING
        // hands it back in the same statement: a separate look-up could miss
        // a row purged in between. The id tells which row came back.
        let row = sqlx::query(concat!(
            "INSERT INTO queue_items (id, workspace_id, message_id, caller, priority, state, state_reason, \
             queue_reason, attempts, max_attempts, last_error, enqueued_at, expires_at, next_attempt_at, \
             request_json, traceparent, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 'queued', '', $6, 0, $7, '', $8, $9, $8, $10, $11, $8) \
             ON CONFLICT (workspace_id, message_id) DO UPDATE SET message_id = excluded.message_id \
             RETURNING ",
            item_columns!()
        ))
        .bind(id.to_string())
        .bind(item.workspace_id.to_string())
        .bind(&item.message_id)
        .bind(&item.caller)
        .bind(i64::from(item.priority))
        .bind(reason_text(item.reason))
        .bind(i64::from(item.max_attempts.max(1)))
        .bind(now)
        .bind(item.expires_at.map(to_ms))
        .bind(&item.request_json)
        .bind(&item.traceparent)
        .fetch_one(self.db.pool())
        .await?;
        let item = decode(&row, true)?;
        let depth = self.depth(item.workspace_id).await?;
        Ok(Enqueued { duplicate: item.id != id, item, depth })
    }

    /// Takes the drain lease of a workspace, or renews it if `owner` already
    /// holds it; false while another owner holds an unexpired lease.
    pub async fn acquire_drain_lease(
        &self,
        workspace_id: Uuid,
        owner: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<bool> {
        let now = to_ms(now);
        let result = sqlx::query(
            "INSERT INTO drain_leases (workspace_id, owner, expires_at) VALUES ($1, $2, $3) \
             ON CONFLICT (workspace_id) DO UPDATE SET owner = excluded.owner, expires_at = excluded.expires_at \
             WHERE drain_leases.owner = excluded.owner OR drain_leases.expires_at <= $4",
        )
        .bind(workspace_id.to_string())
        .bind(owner)
        .bind(now.saturating_add(duration_ms(ttl)))
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Gives the drain lease up, if `owner` holds it.
    /// Ends the item leases other owners hold on a workspace's in-flight
    /// items, so that the next claim redelivers them first. Only the holder
    /// of the workspace's drain lease calls it: whoever claimed those items
    /// lost its drain lease, so it died or stalled, and waiting out their
    /// own leases would deliver later messages before them.
    pub async fn take_over_in_flight(&self, workspace_id: Uuid, owner: &str, now: SystemTime) -> Result<u64> {
        let done = sqlx::query(
            "UPDATE queue_items SET lease_expires_at = $3 \
             WHERE workspace_id = $1 AND state = 'in_flight' AND lease_owner <> $2 AND lease_expires_at > $3",
        )
        .bind(workspace_id.to_string())
        .bind(owner)
        .bind(to_ms(now))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn release_drain_lease(&self, workspace_id: Uuid, owner: &str) -> Result<()> {
        sqlx::query("DELETE FROM drain_leases WHERE workspace_id = $1 AND owner = $2")
            .bind(workspace_id.to_string())
            .bind(owner)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Claims up to `limit` items of a workspace for delivery, in delivery
    /// order: QUEUED items that are due and unexpired, and IN_FLIGHT items
    /// whose lease ran out (their replica died; they keep their attempts).
    /// They become IN_FLIGHT under `owner`'s lease until `now + lease`.
    pub async fn claim(
        &self,
        workspace_id: Uuid,
        owner: &str,
        lease: Duration,
        limit: u32,
        now: SystemTime,
    ) -> Result<Vec<QueueItem>> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let now = to_ms(now);
        let rows = sqlx::query(self.claim_sql)
            .bind(workspace_id.to_string())
            .bind(owner)
            .bind(now.saturating_add(duration_ms(lease)))
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(self.db.pool())
            .await?;
        let mut items = rows.iter().map(|row| decode(row, true)).collect::<Result<Vec<_>>>()?;
        // RETURNING promises no order.
        items.sort_by_key(|item| (std::cmp::Reverse(item.priority), item.seq));
        Ok(items)
    }

    /// Puts items `owner` holds back in the queue unconsumed (the agent was
    /// busy, or the drain stopped before sending them), with `reason`:
    /// QUEUED, due at once, attempts unchanged, each keeping its place. Items
    /// `owner` no longer holds are left alone. Returns how many went back.
    pub async fn release_unconsumed(&self, ids: &[Uuid], owner: &str, reason: &str, now: SystemTime) -> Result<u64> {
        let now = to_ms(now);
        let mut released = 0;
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = Sql::new("UPDATE queue_items SET state = 'queued', state_reason = ");
            sql.text(reason).push(", next_attempt_at = ").int(now);
            sql.push(", lease_owner = NULL, lease_expires_at = NULL, updated_at = ").int(now);
            sql.push(" WHERE state = 'in_flight' AND lease_owner = ").text(owner);
            sql.push(" AND id IN ").text_list(chunk.iter().map(Uuid::to_string));
            released += sql.query().execute(self.db.pool()).await?.rows_affected();
        }
        Ok(released)
    }

    /// Records the agent's replies: each item becomes DELIVERED with its
    /// result, in one statement (per [`MAX_ROWS_PER_STATEMENT`] replies). An
    /// item is accepted while `owner` is still its holder, also after its
    /// lease ran out as long as no other replica claimed it meanwhile (the
    /// delivery did happen); the others change nothing, e.g. one already
    /// DELIVERED. Returns the ids recorded, in no particular order.
    pub async fn complete(&self, owner: &str, replies: &[Completion], now: SystemTime) -> Result<Vec<Uuid>> {
        let now = to_ms(now);
        let mut recorded = Vec::with_capacity(replies.len());
        for chunk in replies.chunks(MAX_ROWS_PER_STATEMENT) {
            // A join on the id, which both engines answer from the id's
            // unique index, one look-up per reply.
            let mut sql = Sql::new("WITH replies (id, result_json) AS (VALUES ");
            for (i, reply) in chunk.iter().enumerate() {
                sql.push(if i == 0 { "(" } else { ", (" });
                sql.text(reply.id.to_string()).push(", ").text(reply.result_json.as_str()).push(")");
            }
            sql.push(
                ") UPDATE queue_items SET state = 'delivered', state_reason = '', \
                 result_json = replies.result_json, next_attempt_at = NULL, lease_owner = NULL, \
                 lease_expires_at = NULL, delivered_at = ",
            );
            sql.int(now).push(", updated_at = ").int(now);
            sql.push(" FROM replies WHERE queue_items.id = replies.id AND queue_items.state = 'in_flight'");
            sql.push(" AND queue_items.lease_owner = ").text(owner).push(" RETURNING queue_items.id");
            for row in sql.query().fetch_all(self.db.pool()).await? {
                recorded.push(uuid_column(&row, "id")?);
            }
        }
        Ok(recorded)
    }

    /// Drops items `owner` holds whose expiry came while they waited to be
    /// sent, as [`Self::expire_due`] drops QUEUED ones. Returns their ids, in
    /// no particular order.
    pub async fn expire_held(&self, ids: &[Uuid], owner: &str, now: SystemTime) -> Result<Vec<Uuid>> {
        let now = to_ms(now);
        let mut expired = Vec::new();
        for chunk in ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = Sql::new("UPDATE queue_items SET state = 'dropped', state_reason = 'expired', ");
            sql.push("next_attempt_at = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = ").int(now);
            sql.push(" WHERE state = 'in_flight' AND lease_owner = ").text(owner);
            sql.push(" AND expires_at IS NOT NULL AND expires_at <= ").int(now);
            sql.push(" AND id IN ").text_list(chunk.iter().map(Uuid::to_string)).push(" RETURNING id");
            for row in sql.query().fetch_all(self.db.pool()).await? {
                expired.push(uuid_column(&row, "id")?);
            }
        }
        Ok(expired)
    }

    /// Extends the leases of the IN_FLIGHT items `owner` holds in a
    /// workspace to `now + ttl`, as it renews its drain lease: the items a
    /// drainer claimed ahead stay its own for as long as it drains, however
    /// long the agent takes over the ones before them. Returns how many.
    pub async fn renew_item_leases(
        &self,
        workspace_id: Uuid,
        owner: &str,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<u64> {
        // The IN term repeats the claim index's predicate, so that SQLite
        // reads the workspace's open items from that index (state included)
        // rather than every item it ever had from the message id index.
        let done = sqlx::query(
            "UPDATE queue_items SET lease_expires_at = $3 \
             WHERE workspace_id = $1 AND state IN ('queued', 'in_flight') AND state = 'in_flight' \
             AND lease_owner = $2",
        )
        .bind(workspace_id.to_string())
        .bind(owner)
        .bind(to_ms(now).saturating_add(duration_ms(ttl)))
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected())
    }

    /// Records a failed attempt of an item `owner` holds: one more attempt and
    /// its error; a DEAD_LETTER once the attempts are used up, else QUEUED
    /// again from `next_attempt_at`. Returns the new state, `None` if `owner`
    /// no longer holds the item.
    pub async fn fail_attempt(
        &self,
        id: Uuid,
        owner: &str,
        error: &str,
        next_attempt_at: SystemTime,
        now: SystemTime,
    ) -> Result<Option<QueueItemState>> {
        let row = sqlx::query(
            "UPDATE queue_items SET attempts = attempts + 1, last_error = $3, \
             state = CASE WHEN attempts + 1 >= max_attempts THEN 'dead_letter' ELSE 'queued' END, \
             state_reason = CASE WHEN attempts + 1 >= max_attempts THEN 'attempts exhausted' \
                 ELSE 'retrying after a failed attempt' END, \
             next_attempt_at = CASE WHEN attempts + 1 >= max_attempts THEN NULL ELSE $4 END, \
             lease_owner = NULL, lease_expires_at = NULL, updated_at = $5 \
             WHERE id = $1 AND state = 'in_flight' AND lease_owner = $2 \
             RETURNING state",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(error)
        .bind(to_ms(next_attempt_at))
        .bind(to_ms(now))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| state_column(&row, id)).transpose()
    }

    /// Drops QUEUED items whose expiry has come, with the reason "expired".
    /// Returns their ids and workspaces.
    pub async fn expire_due(&self, now: SystemTime) -> Result<Vec<(Uuid, Uuid)>> {
        let rows = sqlx::query(
            "UPDATE queue_items SET state = 'dropped', state_reason = 'expired', next_attempt_at = NULL, \
             updated_at = $1 \
             WHERE state = 'queued' AND expires_at IS NOT NULL AND expires_at <= $1 \
             RETURNING id, workspace_id",
        )
        .bind(to_ms(now))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|row| Ok((uuid_column(row, "id")?, uuid_column(row, "workspace_id")?))).collect()
    }

    /// Workspaces with an item [`Self::claim`] would take now: QUEUED, due and
    /// unexpired, or IN_FLIGHT under an expired lease. In workspace id order.
    pub async fn workspaces_with_work(&self, now: SystemTime) -> Result<Vec<Uuid>> {
        let rows = sqlx::query(
            "SELECT workspace_id FROM queue_items \
             WHERE state = 'queued' AND next_attempt_at <= $1 AND (expires_at IS NULL OR expires_at > $1) \
             UNION \
             SELECT workspace_id FROM queue_items WHERE state = 'in_flight' AND lease_expires_at <= $1 \
             ORDER BY workspace_id",
        )
        .bind(to_ms(now))
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|row| uuid_column(row, "workspace_id")).collect()
    }

    /// When, after `now`, an item next becomes claimable without anything
    /// else happening: the earliest future `next_attempt_at` of a QUEUED item
    /// or lease expiry of an IN_FLIGHT one, so a drainer can sleep until then.
    pub async fn next_due_at(&self, now: SystemTime) -> Result<Option<SystemTime>> {
        // Two ordered look-ups rather than MIN over a union: each reads one
        // index entry.
        let row = sqlx::query(
            "SELECT (SELECT next_attempt_at FROM queue_items WHERE state = 'queued' AND next_attempt_at > $1 \
                     ORDER BY next_attempt_at LIMIT 1) AS due, \
                    (SELECT lease_expires_at FROM queue_items WHERE state = 'in_flight' AND lease_expires_at > $1 \
                     ORDER BY lease_expires_at LIMIT 1) AS lease",
        )
        .bind(to_ms(now))
        .fetch_one(self.db.pool())
        .await?;
        let due: Option<i64> = row.try_get("due")?;
        let lease: Option<i64> = row.try_get("lease")?;
        Ok(due.into_iter().chain(lease).min().map(from_ms))
    }

    /// QUEUED items of a workspace, as the store's triggers keep count of them.
    pub async fn depth(&self, workspace_id: Uuid) -> Result<u64> {
        let count: Option<i64> = sqlx::query_scalar("SELECT queued FROM queue_depths WHERE workspace_id = $1")
            .bind(workspace_id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        Ok(count.and_then(|count| u64::try_from(count).ok()).unwrap_or_default())
    }

    /// Drops every QUEUED and DEAD_LETTER item of a workspace (e.g. it was
    /// removed), with `reason`. IN_FLIGHT items finish their attempt first.
    /// Returns how many were dropped.
    pub async fn drop_workspace(&self, workspace_id: Uuid, reason: &str, now: SystemTime) -> Result<u64> {
        let result = sqlx::query(
            "UPDATE queue_items SET state = 'dropped', state_reason = $2, next_attempt_at = NULL, updated_at = $3 \
             WHERE workspace_id = $1 AND state IN ('queued', 'dead_letter')",
        )
        .bind(workspace_id.to_string())
        .bind(reason)
        .bind(to_ms(now))
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected())
    }
}

/// The claim, as one statement so that it is atomic on its own. On
/// PostgreSQL, `SKIP LOCKED` lets replicas claiming at the same time take
/// different items instead of waiting for each other; SQLite has a single
/// writer. The `state IN` term is the claim index's predicate: the index
/// yields candidates in delivery order, so the scan stops after `limit` of
/// them. Taking over an expired lease says so in the item's reason.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE queue_items SET state = 'in_flight', \
             state_reason = CASE WHEN state = 'in_flight' THEN 'redelivery: the previous lease expired' ELSE '' END, \
             lease_owner = $2, lease_expires_at = $3, next_attempt_at = NULL, updated_at = $4 \
             WHERE seq IN (SELECT seq FROM queue_items WHERE workspace_id = $1 AND state IN ('queued', 'in_flight') \
             AND ((state = 'queued' AND next_attempt_at <= $4 AND (expires_at IS NULL OR expires_at > $4)) \
                  OR (state = 'in_flight' AND lease_expires_at <= $4)) \
             ORDER BY priority DESC, seq LIMIT $5",
            $lock,
            ") RETURNING ",
            item_columns!()
        )
    };
}
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");
const CLAIM_SQLITE: &str = claim_sql!("");

fn effective_page_size(page_size: u32) -> u32 {
    match page_size {
        0 => DEFAULT_PAGE_SIZE,
        n => n.min(MAX_PAGE_SIZE),
    }
}

/// The rows [`FIGURES`] are computed over.
fn figures_source(sql: &mut Sql, workspace_ids: &[Uuid]) {
    sql.push(" FROM queue_items WHERE state IN ('queued', 'in_flight', 'dead_letter')");
    if !workspace_ids.is_empty() {
        sql.push(" AND workspace_id IN ").text_list(workspace_ids.iter().map(Uuid::to_string));
    }
}

fn figures(row: &AnyRow, workspace_id: Option<Uuid>, now: SystemTime) -> Result<QueueStats> {
    let count = |column: &str| -> Result<u64> { Ok(u64::try_from(row.try_get::<i64, _>(column)?).unwrap_or_default()) };
    let oldest_queued_at = row.try_get::<Option<i64>, _>("oldest")?.map(from_ms);
    let oldest_queued_age_seconds =
        oldest_queued_at.and_then(|oldest| now.duration_since(oldest).ok()).map_or(0, |age| age.as_secs());
    Ok(QueueStats {
        workspace_id,
        queued: count("queued")?,
        in_flight: count("in_flight")?,
        dead_letters: count("dead_letters")?,
        oldest_queued_at,
        oldest_queued_age_seconds,
    })
}

/// The ids of `(id, workspace_id, priority, seq)` rows, in listing order.
fn listed_ids(rows: &[AnyRow]) -> Result<Vec<Uuid>> {
    let mut keyed = rows
        .iter()
        .map(|row| {
            let key = (uuid_column(row, "workspace_id")?, std::cmp::Reverse(row.try_get::<i64, _>("priority")?));
            Ok((key, row.try_get::<i64, _>("seq")?, uuid_column(row, "id")?))
        })
        .collect::<Result<Vec<_>>>()?;
    keyed.sort();
    Ok(keyed.into_iter().map(|(_, _, id)| id).collect())
}

fn uuid_column(row: &AnyRow, column: &str) -> Result<Uuid> {
    let text: String = row.try_get(column)?;
    Uuid::parse_str(&text).map_err(|e| StoreError::Corrupt { id: text.clone(), problem: format!("{column}: {e}") })
}

/// The `state` column of a row of item `id`.
fn state_column(row: &AnyRow, id: Uuid) -> Result<QueueItemState> {
    let state: String = row.try_get("state")?;
    parse_state(&state).ok_or_else(|| StoreError::Corrupt { id: id.to_string(), problem: format!("state {state:?}") })
}

fn decode(row: &AnyRow, payloads: bool) -> Result<QueueItem> {
    let id = uuid_column(row, "id")?;
    let corrupt = |problem: String| StoreError::Corrupt { id: id.to_string(), problem };
    let small = |column: &str| -> Result<u32> { Ok(u32::try_from(row.try_get::<i64, _>(column)?).unwrap_or(u32::MAX)) };
    let time = |column: &str| -> Result<Option<SystemTime>> { Ok(row.try_get::<Option<i64>, _>(column)?.map(from_ms)) };
    let priority: i64 = row.try_get("priority")?;
    Ok(QueueItem {
        id,
        seq: row.try_get("seq")?,
        workspace_id: uuid_column(row, "workspace_id")?,
        message_id: row.try_get("message_id")?,
        caller: row.try_get("caller")?,
        priority: i32::try_from(priority).map_err(|_| corrupt(format!("priority {priority}")))?,
        state: state_column(row, id)?,
        state_reason: row.try_get("state_reason")?,
        reason: parse_reason(&row.try_get::<String, _>("queue_reason")?),
        attempts: small("attempts")?,
        max_attempts: small("max_attempts")?,
        last_error: row.try_get("last_error")?,
        enqueued_at: from_ms(row.try_get("enqueued_at")?),
        expires_at: time("expires_at")?,
        next_attempt_at: time("next_attempt_at")?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: time("lease_expires_at")?,
        delivered_at: time("delivered_at")?,
        result_json: if payloads { row.try_get("result_json")? } else { None },
        request_json: if payloads { Some(row.try_get("request_json")?) } else { None },
        traceparent: row.try_get("traceparent")?,
        updated_at: from_ms(row.try_get("updated_at")?),
    })
}

// Last, so that the column macros above are in scope there.
mod control;

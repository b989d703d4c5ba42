//! The registry store in SQL that both SQLite and PostgreSQL run.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    sync::Arc,
    time::Duration,
};

use agentmesh_db::{Database, Dialect};
use async_trait::async_trait;
use sqlx::{Any, Row, any::AnyRow, query::Query};
use tokio::{sync::Notify, task::JoinHandle};
use uuid::Uuid;

use super::{LabelTerm, ListFilter, Mutator, PageCursor, PrunedThrough, RegistryStore, StatusCount, SweepQuery};
use crate::{
    error::{RegistryError, Result},
    model::{Event, EventData, EventDraft, Workspace},
};

static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");

/// Serialises the registry's writing transactions on PostgreSQL, so event
/// ids become visible in order (see `Database::begin_ordered`).
const EVENT_ORDER_LOCK: i64 = 0x6167_6d73_7265_6701;
/// The PostgreSQL channel that tells other replicas new events exist.
const EVENTS_CHANNEL: &str = "agentmesh_registry_events";

const WORKSPACE_COLUMNS: &str = "id, name, role, description, labels, parent_id, runtime_kind, runtime_instance, \
     agent_runtime, url, agent_card_json, status, status_reason, status_changed_at, capabilities, \
     idle_timeout_seconds, max_concurrent_tasks, active_tasks, current_task, error_rate, sample_error, \
     runtime_state, uptime_seconds, last_heartbeat_at, created_at, updated_at, token_digest";

/// The SQL store, on whichever engine the URL names.
pub struct SqlStore {
    db: Database,
    /// Woken whenever events were committed, here or (PostgreSQL) elsewhere.
    events_signal: Arc<Notify>,
    listener: Option<JoinHandle<()>>,
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        if let Some(listener) = self.listener.take() {
            listener.abort();
        }
    }
}

impl SqlStore {
    /// Connects, migrates, and on PostgreSQL starts listening for other
    /// replicas' events.
    pub async fn connect(url: &str) -> Result<Self> {
        let db = Database::connect(url).await?;
        db.migrate(&SQLITE_MIGRATIONS, &POSTGRES_MIGRATIONS).await?;
        let events_signal = Arc::new(Notify::new());
        let listener = match db.dialect() {
            Dialect::Postgres => Some(tokio::spawn(listen_for_remote_events(url.to_owned(), events_signal.clone()))),
            Dialect::Sqlite => None,
        };
        Ok(Self { db, events_signal, listener })
    }

    /// Fires after commits that wrote events, on this replica or another.
    pub fn events_signal(&self) -> Arc<Notify> {
        self.events_signal.clone()
    }
}

async fn listen_for_remote_events(url: String, signal: Arc<Notify>) {
    loop {
        match sqlx::postgres::PgListener::connect(&url).await {
            Ok(mut listener) => {
                if let Err(e) = listener.listen(EVENTS_CHANNEL).await {
                    tracing::warn!(error = %e, "cannot listen for registry events");
                } else {
                    // Events committed while we were not listening.
                    signal.notify_one();
                    while listener.recv().await.is_ok() {
                        signal.notify_one();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot connect the registry event listener"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("registry types serialise to JSON")
}

fn corrupt(column: &str, detail: impl std::fmt::Display) -> RegistryError {
    sqlx::Error::Decode(format!("column {column}: {detail}").into()).into()
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn from_i64<T: TryFrom<i64>>(column: &str, value: i64) -> Result<T> {
    T::try_from(value).map_err(|_| corrupt(column, format!("{value} is out of range")))
}

fn parse<T: std::str::FromStr>(column: &str, value: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    value.parse().map_err(|e| corrupt(column, e))
}

fn from_json<T: serde::de::DeserializeOwned>(column: &str, value: &str) -> Result<T> {
    serde_json::from_str(value).map_err(|e| corrupt(column, e))
}

fn workspace_from_row(row: &AnyRow) -> Result<Workspace> {
    let digest: Option<String> = row.try_get("token_digest")?;
    let token_digest = match digest {
        Some(hex_digest) => {
            let mut bytes = [0u8; 32];
            hex::decode_to_slice(&hex_digest, &mut bytes).map_err(|e| corrupt("token_digest", e))?;
            Some(bytes)
        }
        None => None,
    };
    let parent: Option<String> = row.try_get("parent_id")?;
    let idle: Option<i64> = row.try_get("idle_timeout_seconds")?;
    Ok(Workspace {
        id: parse("id", &row.try_get::<String, _>("id")?)?,
        name: row.try_get("name")?,
        role: row.try_get("role")?,
        description: row.try_get("description")?,
        labels: from_json("labels", &row.try_get::<String, _>("labels")?)?,
        parent_id: parent.as_deref().map(|p| parse("parent_id", p)).transpose()?,
        runtime_kind: parse("runtime_kind", &row.try_get::<String, _>("runtime_kind")?)?,
        runtime_instance: row.try_get("runtime_instance")?,
        agent_runtime: row.try_get("agent_runtime")?,
        url: row.try_get("url")?,
        agent_card_json: row.try_get("agent_card_json")?,
        status: parse("status", &row.try_get::<String, _>("status")?)?,
        status_reason: row.try_get("status_reason")?,
        status_changed_at: row.try_get("status_changed_at")?,
        capabilities: from_json("capabilities", &row.try_get::<String, _>("capabilities")?)?,
        idle_timeout_seconds: idle.map(|v| from_i64("idle_timeout_seconds", v)).transpose()?,
        max_concurrent_tasks: from_i64("max_concurrent_tasks", row.try_get("max_concurrent_tasks")?)?,
        active_tasks: from_i64("active_tasks", row.try_get("active_tasks")?)?,
        current_task: row.try_get("current_task")?,
        error_rate: row.try_get("error_rate")?,
        sample_error: row.try_get("sample_error")?,
        runtime_state: row.try_get("runtime_state")?,
        uptime_seconds: from_i64("uptime_seconds", row.try_get("uptime_seconds")?)?,
        last_heartbeat_at: row.try_get("last_heartbeat_at")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        token_digest,
    })
}

fn event_from_row(row: &AnyRow) -> Result<Event> {
    let id: i64 = row.try_get("id")?;
    Ok(Event {
        cursor: from_i64("id", id)?,
        draft: EventDraft {
            kind: parse("kind", &row.try_get::<String, _>("kind")?)?,
            workspace_id: parse("workspace_id", &row.try_get::<String, _>("workspace_id")?)?,
            at: row.try_get("at")?,
            data: from_json::<EventData>("data", &row.try_get::<String, _>("data")?)?,
        },
    })
}

/// Binds every column of `workspaces`, in `WORKSPACE_COLUMNS` order.
fn bind_workspace<'q>(
    query: Query<'q, Any, sqlx::any::AnyArguments<'q>>,
    w: &Workspace,
) -> Query<'q, Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(w.id.to_string())
        .bind(w.name.clone())
        .bind(w.role.clone())
        .bind(w.description.clone())
        .bind(json(&w.labels))
        .bind(w.parent_id.map(|p| p.to_string()))
        .bind(w.runtime_kind.as_str())
        .bind(w.runtime_instance.clone())
        .bind(w.agent_runtime.clone())
        .bind(w.url.clone())
        .bind(w.agent_card_json.clone())
        .bind(w.status.as_str())
        .bind(w.status_reason.clone())
        .bind(w.status_changed_at)
        .bind(json(&w.capabilities))
        .bind(w.idle_timeout_seconds.map(i64::from))
        .bind(i64::from(w.max_concurrent_tasks))
        .bind(i64::from(w.active_tasks))
        .bind(w.current_task.clone())
        .bind(w.error_rate)
        .bind(w.sample_error.clone())
        .bind(w.runtime_state.clone())
        .bind(to_i64(w.uptime_seconds))
        .bind(w.last_heartbeat_at)
        .bind(w.created_at)
        .bind(w.updated_at)
        .bind(w.token_digest.map(hex::encode))
}

/// `count` parameters bound in order, starting at number `from`.
///
/// SQLite gets anonymous `?`: sqlx asks SQLite for every parameter's name,
/// and SQLite finds a numbered name by a linear search, which turns a
/// statement with thousands of `$n` parameters quadratic.
fn placeholders(dialect: Dialect, from: usize, count: usize) -> String {
    let one = |i: usize| match dialect {
        Dialect::Sqlite => "?".to_owned(),
        Dialect::Postgres => format!("${i}"),
    };
    (from..from + count).map(one).collect::<Vec<_>>().join(", ")
}

/// Events per INSERT statement (4 parameters each, far below either
/// engine's limit on parameters).
const EVENTS_PER_STATEMENT: usize = 1000;

/// Inserts events in as few statements as possible and numbers them.
async fn insert_events(
    tx: &mut sqlx::Transaction<'static, Any>,
    dialect: Dialect,
    drafts: Vec<EventDraft>,
) -> Result<Vec<Event>> {
    let mut events = Vec::with_capacity(drafts.len());
    let mut drafts = drafts.into_iter().peekable();
    while drafts.peek().is_some() {
        let chunk: Vec<EventDraft> = drafts.by_ref().take(EVENTS_PER_STATEMENT).collect();
        let rows = (0..chunk.len()).map(|i| format!("({})", placeholders(dialect, i * 4 + 1, 4))).collect::<Vec<_>>();
        let sql = format!("INSERT INTO events (workspace_id, kind, at, data) VALUES {} RETURNING id", rows.join(", "));
        let mut query = sqlx::query(&sql);
        for draft in &chunk {
            query = query
                .bind(draft.workspace_id.to_string())
                .bind(draft.kind.as_str())
                .bind(draft.at)
                .bind(json(&draft.data));
        }
        // Both engines number the rows of one INSERT in VALUES order; RETURNING
        // alone does not promise that order, so sort the numbers first.
        let mut ids = query
            .fetch_all(&mut **tx)
            .await?
            .iter()
            .map(|row| row.try_get::<i64, _>("id").map_err(RegistryError::from).and_then(|id| from_i64("id", id)))
            .collect::<Result<Vec<u64>>>()?;
        ids.sort_unstable();
        events.extend(ids.into_iter().zip(chunk).map(|(cursor, draft)| Event { cursor, draft }));
    }
    Ok(events)
}

/// Workspace rows per upsert statement (27 parameters each).
const ROWS_PER_STATEMENT: usize = 256;
/// Ids per `IN (...)` list.
const IDS_PER_STATEMENT: usize = 500;

async fn load_workspaces(
    tx: &mut sqlx::Transaction<'static, Any>,
    dialect: Dialect,
    ids: &[Uuid],
) -> Result<HashMap<Uuid, Workspace>> {
    let mut found = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(IDS_PER_STATEMENT) {
        let sql = format!(
            "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id IN ({})",
            placeholders(dialect, 1, chunk.len())
        );
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.to_string());
        }
        for row in query.fetch_all(&mut **tx).await? {
            let workspace = workspace_from_row(&row)?;
            found.insert(workspace.id, workspace);
        }
    }
    Ok(found)
}

/// Writes whole rows of existing workspaces, many per statement. An upsert
/// is the multi-row update both engines spell the same way.
async fn write_workspaces(
    tx: &mut sqlx::Transaction<'static, Any>,
    dialect: Dialect,
    rows: &[&Workspace],
) -> Result<()> {
    let columns: Vec<&str> = WORKSPACE_COLUMNS.split(',').map(str::trim).collect();
    let assignments =
        columns.iter().filter(|c| **c != "id").map(|c| format!("{c} = excluded.{c}")).collect::<Vec<_>>().join(", ");
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        let values = (0..chunk.len())
            .map(|i| format!("({})", placeholders(dialect, i * columns.len() + 1, columns.len())))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES {values} ON CONFLICT (id) DO UPDATE SET {assignments}"
        );
        let mut query = sqlx::query(&sql);
        for workspace in chunk {
            query = bind_workspace(query, workspace);
        }
        query.execute(&mut **tx).await?;
    }
    Ok(())
}

impl SqlStore {
    async fn commit_with_events(&self, mut tx: sqlx::Transaction<'static, Any>, wrote_events: bool) -> Result<()> {
        if wrote_events && self.db.dialect() == Dialect::Postgres {
            sqlx::query("SELECT pg_notify($1, '')").bind(EVENTS_CHANNEL).execute(&mut *tx).await?;
        }
        tx.commit().await?;
        if wrote_events {
            self.events_signal.notify_one();
        }
        Ok(())
    }
}

enum Bind {
    Text(String),
    Int(i64),
}

#[async_trait]
impl RegistryStore for SqlStore {
    async fn create(&self, workspace: &Workspace, event: EventDraft) -> Result<Event> {
        let mut tx = self.db.begin_ordered(EVENT_ORDER_LOCK).await?;
        let insert = format!(
            "INSERT INTO workspaces ({WORKSPACE_COLUMNS}) VALUES ({})",
            placeholders(self.db.dialect(), 1, WORKSPACE_COLUMNS.split(',').count())
        );
        bind_workspace(sqlx::query(&insert), workspace).execute(&mut *tx).await?;
        for (key, value) in &workspace.labels {
            sqlx::query("INSERT INTO workspace_labels (workspace_id, key, value) VALUES ($1, $2, $3)")
                .bind(workspace.id.to_string())
                .bind(key.clone())
                .bind(value.clone())
                .execute(&mut *tx)
                .await?;
        }
        let mut events = insert_events(&mut tx, self.db.dialect(), vec![event]).await?;
        self.commit_with_events(tx, true).await?;
        Ok(events.remove(0))
    }

    async fn get(&self, id: Uuid) -> Result<Option<Workspace>> {
        let row = sqlx::query(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn get_by_token_digest(&self, digest: &[u8; 32]) -> Result<Option<Workspace>> {
        let row = sqlx::query(&format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE token_digest = $1"))
            .bind(hex::encode(digest))
            .fetch_optional(self.db.pool())
            .await?;
        row.as_ref().map(workspace_from_row).transpose()
    }

    async fn mutate_batch(&self, items: Vec<(Uuid, Mutator)>) -> Result<Vec<Result<(Workspace, Vec<Event>)>>> {
        // A handful of statements per batch, not a few per item: on SQLite
        // every statement is a hand-off to the connection's thread, on
        // PostgreSQL a network round trip.
        let mut tx = self.db.begin_ordered(EVENT_ORDER_LOCK).await?;
        let mut ids: Vec<Uuid> = items.iter().map(|(id, _)| *id).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut current = load_workspaces(&mut tx, self.db.dialect(), &ids).await?;

        let mut changed: Vec<Uuid> = Vec::new();
        let mut written: HashSet<Uuid> = HashSet::new();
        let mut drafts = Vec::new();
        let mut outcomes = Vec::with_capacity(items.len());
        for (id, mutator) in items {
            // Several items for one workspace apply in order, each seeing the last.
            let Some(workspace) = current.get(&id).cloned() else {
                outcomes.push(Err(RegistryError::NotFound(id)));
                continue;
            };
            match mutator(workspace) {
                Ok(mutation) => {
                    if mutation.write {
                        current.insert(id, mutation.workspace.clone());
                        if written.insert(id) {
                            changed.push(id);
                        }
                    }
                    outcomes.push(Ok((mutation.workspace, drafts.len()..drafts.len() + mutation.events.len())));
                    drafts.extend(mutation.events);
                }
                Err(error) => outcomes.push(Err(error)),
            }
        }

        let rows: Vec<&Workspace> = changed.iter().filter_map(|id| current.get(id)).collect();
        write_workspaces(&mut tx, self.db.dialect(), &rows).await?;
        let wrote_events = !drafts.is_empty();
        let events = insert_events(&mut tx, self.db.dialect(), drafts).await?;
        self.commit_with_events(tx, wrote_events).await?;
        Ok(outcomes
            .into_iter()
            .map(|outcome| outcome.map(|(workspace, range)| (workspace, events[range].to_vec())))
            .collect())
    }

    async fn list(&self, filter: &ListFilter, after: Option<PageCursor>, limit: u32) -> Result<Vec<Workspace>> {
        let mut sql = format!("SELECT {WORKSPACE_COLUMNS} FROM workspaces w WHERE 1 = 1");
        let mut binds: Vec<Bind> = Vec::new();
        let next = |binds: &mut Vec<Bind>, value: Bind| {
            binds.push(value);
            format!("${}", binds.len())
        };
        if filter.statuses.is_empty() {
            sql.push_str(&format!(" AND status <> {}", next(&mut binds, Bind::Text("removed".into()))));
        } else {
            let list: Vec<String> =
                filter.statuses.iter().map(|s| next(&mut binds, Bind::Text(s.as_str().into()))).collect();
            sql.push_str(&format!(" AND status IN ({})", list.join(", ")));
        }
        if let Some(kind) = filter.runtime_kind {
            sql.push_str(&format!(" AND runtime_kind = {}", next(&mut binds, Bind::Text(kind.as_str().into()))));
        }
        if let Some(instance) = &filter.runtime_instance {
            sql.push_str(&format!(" AND runtime_instance = {}", next(&mut binds, Bind::Text(instance.clone()))));
        }
        if let Some(parent) = filter.parent_id {
            sql.push_str(&format!(" AND parent_id = {}", next(&mut binds, Bind::Text(parent.to_string()))));
        }
        if let Some(query) = &filter.query {
            let escaped = query.replace('\\', "\\\\").replace('%', "\\%").replace('_', "\\_");
            let pattern = next(&mut binds, Bind::Text(format!("%{escaped}%")));
            sql.push_str(&format!(
                " AND (LOWER(name) LIKE {pattern} ESCAPE '\\' OR LOWER(role) LIKE {pattern} ESCAPE '\\')"
            ));
        }
        for term in &filter.labels {
            let (negate, key, value) = match term {
                LabelTerm::Equals(k, v) => ("", k, Some(v)),
                LabelTerm::NotEquals(k, v) => ("NOT ", k, Some(v)),
                LabelTerm::Exists(k) => ("", k, None),
                LabelTerm::Absent(k) => ("NOT ", k, None),
            };
            let key = next(&mut binds, Bind::Text(key.clone()));
            let value = match value {
                Some(v) => format!(" AND l.value = {}", next(&mut binds, Bind::Text(v.clone()))),
                None => String::new(),
            };
            sql.push_str(&format!(
                " AND {negate}EXISTS (SELECT 1 FROM workspace_labels l WHERE l.workspace_id = w.id AND l.key = {key}{value})"
            ));
        }
        if let Some((created_at, id)) = after {
            let created = next(&mut binds, Bind::Int(created_at));
            let created_again = next(&mut binds, Bind::Int(created_at));
            let id = next(&mut binds, Bind::Text(id.to_string()));
            sql.push_str(&format!(" AND (created_at > {created} OR (created_at = {created_again} AND id > {id}))"));
        }
        sql.push_str(&format!(" ORDER BY created_at, id LIMIT {}", next(&mut binds, Bind::Int(i64::from(limit)))));

        let mut query = sqlx::query(&sql);
        for bind in binds {
            query = match bind {
                Bind::Text(text) => query.bind(text),
                Bind::Int(int) => query.bind(int),
            };
        }
        let rows = query.fetch_all(self.db.pool()).await?;
        rows.iter().map(workspace_from_row).collect()
    }

    async fn sweep_candidates(&self, query: SweepQuery, limit: u32) -> Result<Vec<Workspace>> {
        let rows = match query {
            SweepQuery::SilentSince(kind, before) => {
                let sql = format!(
                    "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE status IN ('online', 'degraded') \
                     AND runtime_kind = $1 AND last_heartbeat_at < $2 ORDER BY last_heartbeat_at LIMIT $3"
                );
                sqlx::query(&sql)
                    .bind(kind.as_str())
                    .bind(before)
                    .bind(i64::from(limit))
                    .fetch_all(self.db.pool())
                    .await?
            }
            SweepQuery::ProvisioningSince(before) => {
                let sql = format!(
                    "SELECT {WORKSPACE_COLUMNS} FROM workspaces WHERE status = 'provisioning' \
                     AND status_changed_at < $1 ORDER BY status_changed_at LIMIT $2"
                );
                sqlx::query(&sql).bind(before).bind(i64::from(limit)).fetch_all(self.db.pool()).await?
            }
        };
        rows.iter().map(workspace_from_row).collect()
    }

    async fn events_after(&self, cursor: u64, limit: u32) -> Result<Vec<Event>> {
        let rows =
            sqlx::query("SELECT id, workspace_id, kind, at, data FROM events WHERE id > $1 ORDER BY id LIMIT $2")
                .bind(to_i64(cursor))
                .bind(i64::from(limit))
                .fetch_all(self.db.pool())
                .await?;
        rows.iter().map(event_from_row).collect()
    }

    async fn head(&self) -> Result<u64> {
        let row = sqlx::query("SELECT COALESCE(MAX(id), 0) AS head FROM events").fetch_one(self.db.pool()).await?;
        from_i64("head", row.try_get::<i64, _>("head")?)
    }

    async fn prune_events(&self, heartbeats_before: i64, others_before: i64) -> Result<u64> {
        let mut tx = self.db.pool().begin().await?;
        let mut deleted = 0;
        for (key, kind_condition, before) in [
            ("pruned_through_heartbeats", "kind = 'heartbeat'", heartbeats_before),
            ("pruned_through_others", "kind <> 'heartbeat'", others_before),
        ] {
            // The newest expired event bounds a prefix of ids: events are
            // numbered in commit order and stamped inside the same ordered
            // transaction. Walking an index on time from the cutoff finds it
            // without scanning what stays.
            let boundary = sqlx::query(&format!(
                "SELECT id FROM events WHERE {kind_condition} AND at < $1 ORDER BY at DESC, id DESC LIMIT 1"
            ))
            .bind(before)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(boundary) = boundary else { continue };
            let through: i64 = boundary.try_get("id")?;
            let result = sqlx::query(&format!("DELETE FROM events WHERE {kind_condition} AND id <= $1"))
                .bind(through)
                .execute(&mut *tx)
                .await?;
            deleted += result.rows_affected();
            sqlx::query(
                "INSERT INTO registry_meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value WHERE registry_meta.value < excluded.value",
            )
            .bind(key)
            .bind(through)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn pruned_through(&self) -> Result<PrunedThrough> {
        let rows = sqlx::query("SELECT key, value FROM registry_meta WHERE key LIKE 'pruned_through_%'")
            .fetch_all(self.db.pool())
            .await?;
        let mut values = BTreeMap::new();
        for row in &rows {
            values.insert(row.try_get::<String, _>("key")?, row.try_get::<i64, _>("value")?);
        }
        let get = |key: &str| values.get(key).copied().map_or(Ok(0), |v| from_i64(key, v));
        Ok(PrunedThrough { heartbeats: get("pruned_through_heartbeats")?, others: get("pruned_through_others")? })
    }

    async fn count_by_status(&self) -> Result<Vec<StatusCount>> {
        let rows = sqlx::query(
            "SELECT status, runtime_kind, COUNT(*) AS workspaces FROM workspaces GROUP BY status, runtime_kind",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                Ok(StatusCount {
                    status: parse("status", &row.try_get::<String, _>("status")?)?,
                    runtime_kind: parse("runtime_kind", &row.try_get::<String, _>("runtime_kind")?)?,
                    workspaces: from_i64("workspaces", row.try_get::<i64, _>("workspaces")?)?,
                })
            })
            .collect()
    }

    async fn ping(&self) -> Result<()> {
        Ok(self.db.ping().await?)
    }
}

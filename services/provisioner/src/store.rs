//! The provisioner's own store: what each workload should be doing and the
//! spec to run it from, plus the policy in force. SQLite by default,
//! PostgreSQL when several replicas share the work (ARCH-2); the SQL is
//! written once for both.
//!
//! Decisions that several replicas could take at once (scheduling and
//! claiming a restart, changing the policy) are compare-and-set updates, so
//! exactly one replica acts.

use agentmesh_db::Database;
use sqlx::{Row, any::AnyRow};

use crate::{
    error::{ProvisionerError, Result},
    policy::{ActivePolicy, Policy},
    spec::WorkspaceSpec,
};

/// One schema for both engines: it uses only what both understand.
static MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// What a workload should be doing. A stop, hibernation or delete on
/// request changes it first, so that no restart policy and no resync
/// undoes the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Desired {
    Running,
    Stopped,
    Hibernated,
    Removed,
}

impl Desired {
    pub fn as_str(self) -> &'static str {
        match self {
            Desired::Running => "running",
            Desired::Stopped => "stopped",
            Desired::Hibernated => "hibernated",
            Desired::Removed => "removed",
        }
    }

    fn parse(s: &str) -> Self {
        match s {
            "running" => Desired::Running,
            "hibernated" => Desired::Hibernated,
            "removed" => Desired::Removed,
            _ => Desired::Stopped,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkloadRecord {
    pub workspace_id: String,
    /// The spec, with the runtime instance and tier resolved.
    pub spec: WorkspaceSpec,
    pub token: String,
    pub desired: Desired,
    /// Restarts made by the restart policy since the last start on request.
    pub restart_count: u32,
    /// When a scheduled restart is due (unix ms).
    pub next_restart_at: Option<i64>,
    pub last_started_at: i64,
    /// When the agent was last seen busy, or started (unix ms).
    pub last_active_at: i64,
    pub created_at: i64,
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

const COLUMNS: &str = "workspace_id, spec_json, token, desired, restart_count, next_restart_at, last_started_at, \
     last_active_at, created_at";

pub struct Store {
    db: Database,
}

impl Store {
    pub async fn connect(url: &str) -> Result<Self> {
        let db = Database::connect(url).await?;
        db.migrate(&MIGRATIONS, &MIGRATIONS).await?;
        Ok(Self { db })
    }

    pub async fn ping(&self) -> Result<()> {
        Ok(self.db.ping().await?)
    }

    pub async fn insert(&self, record: &WorkloadRecord) -> Result<()> {
        sqlx::query(
            "INSERT INTO workloads (workspace_id, runtime_instance, spec_json, token, desired, restart_count, \
             next_restart_at, last_started_at, last_active_at, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10)",
        )
        .bind(&record.workspace_id)
        .bind(&record.spec.runtime_instance)
        .bind(spec_json(&record.spec))
        .bind(&record.token)
        .bind(record.desired.as_str())
        .bind(i64::from(record.restart_count))
        .bind(record.next_restart_at)
        .bind(record.last_started_at)
        .bind(record.last_active_at)
        .bind(record.created_at)
        .execute(self.db.pool())
        .await?;
        Ok(())
    }

    pub async fn get(&self, workspace_id: &str) -> Result<Option<WorkloadRecord>> {
        let row = sqlx::query(&format!("SELECT {COLUMNS} FROM workloads WHERE workspace_id = $1"))
            .bind(workspace_id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|r| record(&r)).transpose()
    }

    /// The workloads an instance owns, optionally only those desired so.
    pub async fn list(&self, instance: &str, desired: Option<Desired>) -> Result<Vec<WorkloadRecord>> {
        let rows =
            match desired {
                Some(desired) => sqlx::query(&format!(
                    "SELECT {COLUMNS} FROM workloads WHERE runtime_instance = $1 AND desired = $2 ORDER BY workspace_id"
                ))
                .bind(instance)
                .bind(desired.as_str())
                .fetch_all(self.db.pool())
                .await?,
                None => {
                    sqlx::query(&format!(
                        "SELECT {COLUMNS} FROM workloads WHERE runtime_instance = $1 ORDER BY workspace_id"
                    ))
                    .bind(instance)
                    .fetch_all(self.db.pool())
                    .await?
                }
            };
        rows.iter().map(record).collect()
    }

    /// Records what the workload should be doing. Moving to `Running` also
    /// clears the restart bookkeeping: a start on request begins afresh.
    /// Returns false when the workload is unknown or already removed
    /// (a tombstone stays a tombstone).
    pub async fn set_desired(&self, workspace_id: &str, desired: Desired) -> Result<bool> {
        let now = now_ms();
        let query = if desired == Desired::Running {
            "UPDATE workloads SET desired = $2, restart_count = 0, next_restart_at = NULL, last_started_at = $3, \
             last_active_at = $3, updated_at = $3 WHERE workspace_id = $1 AND desired <> 'removed'"
        } else {
            "UPDATE workloads SET desired = $2, next_restart_at = NULL, updated_at = $3 \
             WHERE workspace_id = $1 AND (desired <> 'removed' OR $2 = 'removed')"
        };
        let result =
            sqlx::query(query).bind(workspace_id).bind(desired.as_str()).bind(now).execute(self.db.pool()).await?;
        Ok(result.rows_affected() == 1)
    }

    /// Schedules the next restart, unless another replica already did or
    /// the workload should no longer run.
    pub async fn schedule_restart(&self, workspace_id: &str, seen_count: u32, due_at: i64) -> Result<bool> {
        let result = sqlx::query(
            "UPDATE workloads SET restart_count = restart_count + 1, next_restart_at = $3, updated_at = $4 \
             WHERE workspace_id = $1 AND restart_count = $2 AND next_restart_at IS NULL AND desired = 'running'",
        )
        .bind(workspace_id)
        .bind(i64::from(seen_count))
        .bind(due_at)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// Claims a due restart: true for exactly one caller.
    pub async fn claim_restart(&self, workspace_id: &str, due_at: i64) -> Result<bool> {
        let now = now_ms();
        let result = sqlx::query(
            "UPDATE workloads SET next_restart_at = NULL, last_started_at = $3, last_active_at = $3, updated_at = $3 \
             WHERE workspace_id = $1 AND next_restart_at = $2 AND desired = 'running'",
        )
        .bind(workspace_id)
        .bind(due_at)
        .bind(now)
        .execute(self.db.pool())
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// A run that lasted long enough forgets earlier failures.
    pub async fn reset_restarts(&self, workspace_id: &str) -> Result<()> {
        sqlx::query("UPDATE workloads SET restart_count = 0 WHERE workspace_id = $1 AND next_restart_at IS NULL")
            .bind(workspace_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn touch_active(&self, workspace_id: &str, at: i64) -> Result<()> {
        sqlx::query("UPDATE workloads SET last_active_at = $2 WHERE workspace_id = $1 AND last_active_at < $2")
            .bind(workspace_id)
            .bind(at)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Forgets a removed workload once its cleanup is confirmed.
    pub async fn forget(&self, workspace_id: &str) -> Result<()> {
        sqlx::query("DELETE FROM workloads WHERE workspace_id = $1 AND desired = 'removed'")
            .bind(workspace_id)
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    pub async fn policy(&self) -> Result<ActivePolicy> {
        let row = sqlx::query("SELECT revision, policy_json, source, updated_at FROM policy WHERE singleton = 1")
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(ActivePolicy::builtin()) };
        let json: String = row.try_get("policy_json")?;
        let policy: Policy = serde_json::from_str(&json).map_err(corrupt)?;
        Ok(ActivePolicy {
            policy,
            revision: u64::try_from(row.try_get::<i64, _>("revision")?).unwrap_or_default(),
            source: row.try_get("source")?,
            updated_at: row.try_get("updated_at")?,
        })
    }

    /// Stores `policy` as the next revision if the active one is still
    /// `expected` (compare-and-set across replicas). Returns the new active
    /// policy, or `RevisionMismatch`.
    pub async fn replace_policy(&self, policy: &Policy, source: &str, expected: u64) -> Result<ActivePolicy> {
        let now = now_ms();
        let json = serde_json::to_string(policy).map_err(corrupt)?;
        let revision = i64::try_from(expected + 1).unwrap_or(i64::MAX);
        let result = if expected == 0 {
            sqlx::query(
                "INSERT INTO policy (singleton, revision, policy_json, source, updated_at) VALUES (1, $1, $2, $3, $4) \
                 ON CONFLICT (singleton) DO NOTHING",
            )
            .bind(revision)
            .bind(&json)
            .bind(source)
            .bind(now)
            .execute(self.db.pool())
            .await?
        } else {
            sqlx::query(
                "UPDATE policy SET revision = $1, policy_json = $2, source = $3, updated_at = $4 \
                 WHERE singleton = 1 AND revision = $5",
            )
            .bind(revision)
            .bind(&json)
            .bind(source)
            .bind(now)
            .bind(i64::try_from(expected).unwrap_or(i64::MAX))
            .execute(self.db.pool())
            .await?
        };
        if result.rows_affected() != 1 {
            let active = self.policy().await?.revision;
            return Err(ProvisionerError::RevisionMismatch { active, expected });
        }
        Ok(ActivePolicy { policy: policy.clone(), revision: expected + 1, source: source.to_owned(), updated_at: now })
    }
}

fn spec_json(spec: &WorkspaceSpec) -> String {
    // A spec is plain data; serialising it cannot fail.
    serde_json::to_string(spec).unwrap_or_default()
}

fn corrupt(e: serde_json::Error) -> ProvisionerError {
    ProvisionerError::StoreUnavailable(agentmesh_db::DbError::Sqlx(sqlx::Error::Decode(Box::new(e))))
}

fn record(row: &AnyRow) -> Result<WorkloadRecord> {
    let spec: String = row.try_get("spec_json")?;
    let desired: String = row.try_get("desired")?;
    Ok(WorkloadRecord {
        workspace_id: row.try_get("workspace_id")?,
        spec: serde_json::from_str(&spec).map_err(corrupt)?,
        token: row.try_get("token")?,
        desired: Desired::parse(&desired),
        restart_count: u32::try_from(row.try_get::<i64, _>("restart_count")?).unwrap_or(u32::MAX),
        next_restart_at: row.try_get("next_restart_at")?,
        last_started_at: row.try_get("last_started_at")?,
        last_active_at: row.try_get("last_active_at")?,
        created_at: row.try_get("created_at")?,
    })
}

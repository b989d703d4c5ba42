//! Push-notification configs of the tasks the gateway handed out for
//! queued messages: registered by callers, read when an item reaches its
//! end (by whichever replica took it there), purged with their items.

use std::time::SystemTime;

use super::*;

macro_rules! push_columns {
    () => {
        "SELECT queue_id, config_id, url, token, auth_scheme, auth_credentials FROM push_configs"
    };
}

/// The most configs one queued task may have: each is a webhook call when
/// the message is answered.
pub const MAX_PUSH_CONFIGS_PER_TASK: usize = 16;

/// Where, and how, a caller wants to hear that its queued message ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushConfig {
    /// The queue item (the task id the caller holds).
    pub queue_id: Uuid,
    /// The config's id among its task's; the task id when the caller named none.
    pub id: String,
    pub url: String,
    /// Sent back as `X-A2A-Notification-Token`, so the receiver can tell
    /// the notification is the one it asked for; empty for none.
    pub token: String,
    /// `Authorization: <scheme> <credentials>` on the webhook call.
    pub authentication: Option<PushAuthentication>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PushAuthentication {
    pub scheme: String,
    pub credentials: String,
}

impl QueueStore {
    /// Registers `config`, replacing the task's config of the same id.
    /// Refused once the task has [`MAX_PUSH_CONFIGS_PER_TASK`] others.
    pub async fn put_push_config(&self, config: &PushConfig, now: SystemTime) -> Result<PushConfig> {
        let others = self.push_configs(&[config.queue_id]).await?;
        if others.len() >= MAX_PUSH_CONFIGS_PER_TASK && others.iter().all(|other| other.id != config.id) {
            return Err(StoreError::InvalidRequest("a queued task takes at most 16 push-notification configs"));
        }
        let (scheme, credentials) =
            config.authentication.as_ref().map_or(("", ""), |auth| (auth.scheme.as_str(), auth.credentials.as_str()));
        sqlx::query(
            "INSERT INTO push_configs (queue_id, config_id, url, token, auth_scheme, auth_credentials, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) \
             ON CONFLICT (queue_id, config_id) DO UPDATE SET url = excluded.url, token = excluded.token, \
             auth_scheme = excluded.auth_scheme, auth_credentials = excluded.auth_credentials",
        )
        .bind(config.queue_id.to_string())
        .bind(&config.id)
        .bind(&config.url)
        .bind(&config.token)
        .bind(scheme)
        .bind(credentials)
        .bind(to_ms(now))
        .execute(self.db.pool())
        .await?;
        Ok(config.clone())
    }

    /// One config of a queued task.
    pub async fn push_config(&self, queue_id: Uuid, id: &str) -> Result<Option<PushConfig>> {
        let row = sqlx::query(concat!(push_columns!(), " WHERE queue_id = $1 AND config_id = $2"))
            .bind(queue_id.to_string())
            .bind(id)
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| decode_push_config(&row)).transpose()
    }

    /// Every config of the given queued tasks, by task, then in the order
    /// they were registered.
    pub async fn push_configs(&self, queue_ids: &[Uuid]) -> Result<Vec<PushConfig>> {
        let mut configs = Vec::new();
        for ids in queue_ids.chunks(MAX_ROWS_PER_STATEMENT) {
            let mut sql = Sql::new(concat!(push_columns!(), " WHERE queue_id IN "));
            sql.text_list(ids.iter().map(Uuid::to_string)).push(" ORDER BY queue_id, created_at, config_id");
            for row in sql.query().fetch_all(self.db.pool()).await? {
                configs.push(decode_push_config(&row)?);
            }
        }
        Ok(configs)
    }

    /// Forgets a config; whether there was one.
    pub async fn delete_push_config(&self, queue_id: Uuid, id: &str) -> Result<bool> {
        let done = sqlx::query("DELETE FROM push_configs WHERE queue_id = $1 AND config_id = $2")
            .bind(queue_id.to_string())
            .bind(id)
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() > 0)
    }
}

fn decode_push_config(row: &AnyRow) -> Result<PushConfig> {
    let scheme: String = row.try_get("auth_scheme")?;
    let credentials: String = row.try_get("auth_credentials")?;
    Ok(PushConfig {
        queue_id: uuid_column(row, "queue_id")?,
        id: row.try_get("config_id")?,
        url: row.try_get("url")?,
        token: row.try_get("token")?,
        authentication: (!scheme.is_empty()).then_some(PushAuthentication { scheme, credentials }),
    })
}

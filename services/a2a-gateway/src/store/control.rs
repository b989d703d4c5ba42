//! What callers and operators do to items outside delivery: cancel one,
//! look at them, list, drop, requeue and count them. Apart from the
//! delivery path so that each reads on its own.

use std::time::SystemTime;

use super::*;

impl QueueStore {
    /// Drops an item its caller cancels, if it is still waiting (QUEUED or
    /// DEAD_LETTER); one being delivered or finished is left as it is.
    /// Returns the dropped item, or `None` if it was not waiting.
    pub async fn cancel(&self, id: Uuid, reason: &str, now: SystemTime) -> Result<Option<QueueItem>> {
        let row = sqlx::query(concat!(
            "UPDATE queue_items SET state = 'dropped', state_reason = $2, next_attempt_at = NULL, updated_at = $3 \
             WHERE id = $1 AND state IN ('queued', 'dead_letter') RETURNING ",
            item_columns!()
        ))
        .bind(id.to_string())
        .bind(reason)
        .bind(to_ms(now))
        .fetch_optional(self.db.pool())
        .await?;
        row.map(|row| decode(&row, true)).transpose()
    }

    /// An item's state alone: what a follower looks at to learn whether
    /// anything happened, without reading payloads that may be megabytes.
    pub async fn state(&self, id: Uuid) -> Result<Option<QueueItemState>> {
        let row = sqlx::query("SELECT state FROM queue_items WHERE id = $1")
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| state_column(&row, id)).transpose()
    }

    /// One item with its payloads.
    pub async fn get(&self, id: Uuid) -> Result<Option<QueueItem>> {
        let row = sqlx::query(concat!("SELECT ", item_columns!(), " FROM queue_items WHERE id = $1"))
            .bind(id.to_string())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| decode(&row, true)).transpose()
    }

    /// One page of items matching `filter`, by workspace and, within each, in
    /// delivery order. `page_size` 0 means 100; at most 1000. Returns the
    /// token of the next page, if there is one.
    pub async fn list(
        &self,
        filter: &ListFilter,
        page_size: u32,
        page_token: Option<&str>,
    ) -> Result<(Vec<QueueItem>, Option<String>)> {
        let after = page_token.filter(|t| !t.is_empty()).map(ListCursor::parse).transpose()?;
        let page = effective_page_size(page_size);
        let states: Vec<QueueItemState> = if filter.states.is_empty() {
            vec![QueueItemState::Queued, QueueItemState::InFlight, QueueItemState::DeadLetter]
        } else {
            filter.states.clone()
        };
        let mut sql = Sql::new(if filter.include_payloads {
            concat!("SELECT ", item_columns!(), " FROM queue_items WHERE state IN ")
        } else {
            concat!("SELECT ", summary_columns!(), " FROM queue_items WHERE state IN ")
        });
        sql.text_list(states.into_iter().map(state_text));
        if let Some(workspace_id) = filter.workspace_id {
            sql.push(" AND workspace_id = ").text(workspace_id.to_string());
        }
        if let Some(after) = after {
            let workspace_id = after.workspace_id.to_string();
            let priority = i64::from(after.priority);
            sql.push(" AND (workspace_id > ").text(workspace_id.clone());
            sql.push(" OR (workspace_id = ").text(workspace_id).push(" AND (priority < ").int(priority);
            sql.push(" OR (priority = ").int(priority).push(" AND seq > ").int(after.seq).push("))))");
        }
        sql.push(" ORDER BY workspace_id, priority DESC, seq LIMIT ").int(i64::from(page) + 1);
        let rows = sql.query().fetch_all(self.db.pool()).await?;
        let mut items =
            rows.iter().map(|row| decode(row, filter.include_payloads)).collect::<Result<Vec<QueueItem>>>()?;
        let next = if items.len() > page as usize {
            items.truncate(page as usize);
            items.last().map(|last| {
                ListCursor { workspace_id: last.workspace_id, priority: last.priority, seq: last.seq }.token()
            })
        } else {
            None
        };
        Ok((items, next))
    }

    /// Drops QUEUED items (and DEAD_LETTER ones if asked) that match any
    /// criterion of `req`, with its reason; never IN_FLIGHT ones. With
    /// `dry_run` nothing changes. Returns how many were (or would be)
    /// dropped and the first 1000 ids, in listing order.
    pub async fn drop_stale(&self, req: &DropStale, now: SystemTime) -> Result<(u64, Vec<Uuid>)> {
        if req.older_than.is_none() && !req.expired {
            return Err(StoreError::InvalidRequest("dropping stale items needs a criterion: an age or expiry"));
        }
        let now = to_ms(now);
        let mut sql = if req.dry_run {
            Sql::new("SELECT id, workspace_id, priority, seq FROM queue_items WHERE ")
        } else {
            let mut sql = Sql::new("UPDATE queue_items SET state = 'dropped', next_attempt_at = NULL, state_reason = ");
            sql.text(req.reason.as_str()).push(", updated_at = ").int(now).push(" WHERE ");
            sql
        };
        sql.push(if req.include_dead_letters { "state IN ('queued', 'dead_letter')" } else { "state = 'queued'" });
        if let Some(workspace_id) = req.workspace_id {
            sql.push(" AND workspace_id = ").text(workspace_id.to_string());
        }
        let mut criteria = Vec::new();
        if let Some(age) = req.older_than {
            criteria.push(("enqueued_at < ", now.saturating_sub(duration_ms(age))));
        }
        if req.expired {
            criteria.push(("expires_at <= ", now));
        }
        sql.push(" AND (");
        for (i, (criterion, bound)) in criteria.into_iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            sql.push(criterion).int(bound);
        }
        sql.push(")");
        if !req.dry_run {
            sql.push(" RETURNING id, workspace_id, priority, seq");
        }
        let rows = sql.query().fetch_all(self.db.pool()).await?;
        let mut dropped = listed_ids(&rows)?;
        let count = dropped.len() as u64;
        dropped.truncate(REPORTED_IDS);
        Ok((count, dropped))
    }

    /// Puts dead letters back in the queue: QUEUED, due at once, attempts
    /// reset, keeping message id, priority and place in arrival order. With
    /// `queue_ids`, those items (of `workspace_id`, if given); otherwise every
    /// dead letter of `workspace_id`. Returns the requeued ids in listing
    /// order and the given ids that were skipped: unknown, not dead letters,
    /// or of another workspace.
    pub async fn requeue_dead_letters(&self, req: &Requeue, now: SystemTime) -> Result<(Vec<Uuid>, Vec<String>)> {
        if req.queue_ids.is_empty() && req.workspace_id.is_none() {
            return Err(StoreError::InvalidRequest("requeueing needs a workspace or queue ids"));
        }
        let now = to_ms(now);
        let mut sql = Sql::new(
            "UPDATE queue_items SET state = 'queued', state_reason = 'requeued', attempts = 0, next_attempt_at = ",
        );
        sql.int(now).push(", updated_at = ").int(now);
        if let Some(max_attempts) = req.max_attempts {
            sql.push(", max_attempts = ").int(i64::from(max_attempts.max(1)));
        }
        sql.push(" WHERE state = 'dead_letter'");
        if let Some(workspace_id) = req.workspace_id {
            sql.push(" AND workspace_id = ").text(workspace_id.to_string());
        }
        if !req.queue_ids.is_empty() {
            sql.push(" AND id IN ").text_list(req.queue_ids.iter().map(Uuid::to_string));
        }
        sql.push(" RETURNING id, workspace_id, priority, seq");
        let rows = sql.query().fetch_all(self.db.pool()).await?;
        let requeued = listed_ids(&rows)?;
        let mut seen: HashSet<Uuid> = requeued.iter().copied().collect();
        let skipped = req.queue_ids.iter().filter(|id| seen.insert(**id)).map(Uuid::to_string).collect();
        Ok((requeued, skipped))
    }

    /// Queue figures in total and per workspace, deepest queue first (ties by
    /// workspace id), one page at a time. `workspace_ids` selects
    /// workspaces, each listed even when it has nothing queued; empty means
    /// every workspace with QUEUED, IN_FLIGHT or DEAD_LETTER items. Ages are
    /// measured at `now`.
    pub async fn stats(
        &self,
        workspace_ids: &[Uuid],
        page_size: u32,
        page_token: Option<&str>,
        now: SystemTime,
    ) -> Result<StatsPage> {
        let after = page_token.filter(|t| !t.is_empty()).map(StatsCursor::parse).transpose()?;
        let page = effective_page_size(page_size) as usize;
        let mut selected = workspace_ids.to_vec();
        selected.sort();
        selected.dedup();

        let mut totals = Sql::new("SELECT ");
        totals.push(FIGURES);
        figures_source(&mut totals, &selected);
        let row = totals.query().fetch_one(self.db.pool()).await?;
        let totals = figures(&row, None, now)?;

        let mut workspaces = if selected.is_empty() {
            // Every workspace with items: let the database sort and page.
            let mut sql =
                Sql::new("SELECT workspace_id, queued, in_flight, dead_letters, oldest FROM (SELECT workspace_id, ");
            sql.push(FIGURES);
            figures_source(&mut sql, &selected);
            sql.push(" GROUP BY workspace_id) per_workspace");
            if let Some(after) = after {
                let queued = i64::try_from(after.queued).unwrap_or(i64::MAX);
                sql.push(" WHERE queued < ").int(queued).push(" OR (queued = ").int(queued);
                sql.push(" AND workspace_id > ").text(after.workspace_id.to_string()).push(")");
            }
            sql.push(" ORDER BY queued DESC, workspace_id LIMIT ").int(page as i64 + 1);
            let rows = sql.query().fetch_all(self.db.pool()).await?;
            rows.iter()
                .map(|row| figures(row, Some(uuid_column(row, "workspace_id")?), now))
                .collect::<Result<Vec<_>>>()?
        } else {
            // At most as many as the caller named: sort here, so workspaces
            // without items are listed too.
            let mut sql = Sql::new("SELECT workspace_id, ");
            sql.push(FIGURES);
            figures_source(&mut sql, &selected);
            sql.push(" GROUP BY workspace_id");
            let rows = sql.query().fetch_all(self.db.pool()).await?;
            let mut found = rows
                .iter()
                .map(|row| figures(row, Some(uuid_column(row, "workspace_id")?), now))
                .collect::<Result<Vec<_>>>()?;
            for id in &selected {
                if !found.iter().any(|stats| stats.workspace_id == Some(*id)) {
                    found.push(QueueStats { workspace_id: Some(*id), ..QueueStats::default() });
                }
            }
            found.sort_by_key(|stats| (std::cmp::Reverse(stats.queued), stats.workspace_id));
            found.retain(|stats| {
                after.is_none_or(|after| after.precedes(stats.queued, stats.workspace_id.unwrap_or_default()))
            });
            found.truncate(page + 1);
            found
        };
        let next_page_token = if workspaces.len() > page {
            workspaces.truncate(page);
            workspaces.last().map(|last| {
                StatsCursor { queued: last.queued, workspace_id: last.workspace_id.unwrap_or_default() }.token()
            })
        } else {
            None
        };
        Ok(StatsPage { totals, workspaces, next_page_token })
    }

    /// How many items wait in each unfinished state (QUEUED, IN_FLIGHT,
    /// DEAD_LETTER), and when the oldest of each was enqueued: what the
    /// metrics report, alike on every replica. States without items are
    /// left out.
    pub async fn depth_by_state(&self) -> Result<Vec<StateDepth>> {
        let rows = sqlx::query(
            "SELECT state, COUNT(*) AS items, MIN(enqueued_at) AS oldest FROM queue_items \
             WHERE state IN ('queued', 'in_flight', 'dead_letter') GROUP BY state",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|row| {
                let state: String = row.try_get("state")?;
                let items: i64 = row.try_get("items")?;
                let oldest: i64 = row.try_get("oldest")?;
                Ok(StateDepth {
                    state: parse_state(&state).ok_or_else(|| StoreError::Corrupt {
                        id: "queue depth".to_owned(),
                        problem: format!("unknown state {state:?}"),
                    })?,
                    items: u64::try_from(items).unwrap_or_default(),
                    oldest_enqueued_at: from_ms(oldest),
                })
            })
            .collect()
    }

    /// Forgets DELIVERED and DROPPED items that reached that state before
    /// `before`, and their push-notification configs. Returns how many items.
    pub async fn purge_finished(&self, before: SystemTime) -> Result<u64> {
        let result = sqlx::query("DELETE FROM queue_items WHERE state IN ('delivered', 'dropped') AND updated_at < $1")
            .bind(to_ms(before))
            .execute(self.db.pool())
            .await?;
        sqlx::query("DELETE FROM push_configs WHERE queue_id NOT IN (SELECT id FROM queue_items)")
            .execute(self.db.pool())
            .await?;
        Ok(result.rows_affected())
    }
}

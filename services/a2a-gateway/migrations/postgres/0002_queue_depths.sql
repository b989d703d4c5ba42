-- The number of QUEUED items per workspace, kept by triggers, so that the
-- depth every queued reply carries is one row read. Counted from the claim
-- index it grew with the backlog, and queueing N messages cost O(N²). See
-- ../sqlite/0002_queue_depths.sql for the same table.
CREATE TABLE queue_depths (
    workspace_id TEXT COLLATE "C" PRIMARY KEY,
    queued BIGINT NOT NULL
);

INSERT INTO queue_depths (workspace_id, queued)
    SELECT workspace_id, COUNT(*) FROM queue_items WHERE state = 'queued' GROUP BY workspace_id;

-- Applied once per statement, in workspace order: a statement that moves
-- items of several workspaces (expiry, drop_stale) then locks their counters
-- in the same order as any other, so two replicas cannot deadlock on them.
CREATE FUNCTION queue_depths_apply() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO queue_depths AS d (workspace_id, queued)
            SELECT workspace_id, COUNT(*) FROM new_items WHERE state = 'queued'
            GROUP BY workspace_id ORDER BY workspace_id
            ON CONFLICT (workspace_id) DO UPDATE SET queued = d.queued + excluded.queued;
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO queue_depths AS d (workspace_id, queued)
            SELECT workspace_id, SUM(change) FROM (
                SELECT workspace_id, -1 AS change FROM old_items WHERE state = 'queued'
                UNION ALL
                SELECT workspace_id, 1 AS change FROM new_items WHERE state = 'queued'
            ) AS changes
            GROUP BY workspace_id HAVING SUM(change) <> 0 ORDER BY workspace_id
            ON CONFLICT (workspace_id) DO UPDATE SET queued = d.queued + excluded.queued;
    ELSE
        UPDATE queue_depths AS d SET queued = d.queued - gone.queued
            FROM (SELECT workspace_id, COUNT(*) AS queued FROM old_items WHERE state = 'queued'
                  GROUP BY workspace_id) AS gone
            WHERE d.workspace_id = gone.workspace_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER queue_depths_insert AFTER INSERT ON queue_items
    REFERENCING NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION queue_depths_apply();
CREATE TRIGGER queue_depths_update AFTER UPDATE ON queue_items
    REFERENCING OLD TABLE AS old_items NEW TABLE AS new_items FOR EACH STATEMENT EXECUTE FUNCTION queue_depths_apply();
CREATE TRIGGER queue_depths_delete AFTER DELETE ON queue_items
    REFERENCING OLD TABLE AS old_items FOR EACH STATEMENT EXECUTE FUNCTION queue_depths_apply();

-- The number of QUEUED items per workspace, kept by triggers, so that the
-- depth every queued reply carries is one row read. Counted from the claim
-- index it grew with the backlog, and queueing N messages cost O(N²).
CREATE TABLE queue_depths (
    workspace_id TEXT PRIMARY KEY,
    queued BIGINT NOT NULL
);

INSERT INTO queue_depths (workspace_id, queued)
    SELECT workspace_id, COUNT(*) FROM queue_items WHERE state = 'queued' GROUP BY workspace_id;

-- An upsert that meets an existing message id updates message_id only, so
-- it fires none of these.
CREATE TRIGGER queue_depths_insert AFTER INSERT ON queue_items WHEN NEW.state = 'queued'
BEGIN
    INSERT OR IGNORE INTO queue_depths (workspace_id, queued) VALUES (NEW.workspace_id, 0);
    UPDATE queue_depths SET queued = queued + 1 WHERE workspace_id = NEW.workspace_id;
END;

CREATE TRIGGER queue_depths_enter AFTER UPDATE OF state ON queue_items
    WHEN OLD.state <> 'queued' AND NEW.state = 'queued'
BEGIN
    INSERT OR IGNORE INTO queue_depths (workspace_id, queued) VALUES (NEW.workspace_id, 0);
    UPDATE queue_depths SET queued = queued + 1 WHERE workspace_id = NEW.workspace_id;
END;

CREATE TRIGGER queue_depths_leave AFTER UPDATE OF state ON queue_items
    WHEN OLD.state = 'queued' AND NEW.state <> 'queued'
BEGIN
    UPDATE queue_depths SET queued = queued - 1 WHERE workspace_id = OLD.workspace_id;
END;

CREATE TRIGGER queue_depths_delete AFTER DELETE ON queue_items WHEN OLD.state = 'queued'
BEGIN
    UPDATE queue_depths SET queued = queued - 1 WHERE workspace_id = OLD.workspace_id;
END;

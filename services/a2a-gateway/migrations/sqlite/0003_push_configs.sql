-- Push-notification configs callers register for the tasks the gateway
-- handed out for queued messages (a task id is its queue item's id); the
-- agent's own tasks keep theirs with the agent. Purged with their items.
CREATE TABLE push_configs (
    queue_id TEXT NOT NULL,
    config_id TEXT NOT NULL,
    url TEXT NOT NULL,
    token TEXT NOT NULL,
    auth_scheme TEXT NOT NULL,
    auth_credentials TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (queue_id, config_id)
);

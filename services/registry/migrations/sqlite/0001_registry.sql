CREATE TABLE workspaces (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL,
    description TEXT NOT NULL,
    labels TEXT NOT NULL,
    parent_id TEXT REFERENCES workspaces (id),
    runtime_kind TEXT NOT NULL CHECK (runtime_kind IN ('docker', 'kubernetes', 'process', 'external')),
    runtime_instance TEXT NOT NULL,
    agent_runtime TEXT NOT NULL,
    url TEXT NOT NULL,
    agent_card_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('provisioning', 'awaiting_agent', 'online', 'degraded', 'offline', 'failed', 'stopping', 'stopped', 'policy_stopped', 'hibernated', 'removed')),
    status_reason TEXT NOT NULL,
    status_changed_at BIGINT NOT NULL,
    capabilities TEXT NOT NULL,
    idle_timeout_seconds BIGINT,
    max_concurrent_tasks BIGINT NOT NULL,
    active_tasks BIGINT NOT NULL,
    current_task TEXT NOT NULL,
    error_rate DOUBLE PRECISION NOT NULL,
    sample_error TEXT NOT NULL,
    runtime_state TEXT NOT NULL,
    uptime_seconds BIGINT NOT NULL,
    last_heartbeat_at BIGINT,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    token_digest TEXT
);
CREATE INDEX workspaces_status_heartbeat ON workspaces (status, last_heartbeat_at);
CREATE INDEX workspaces_status_changed ON workspaces (status, status_changed_at);
CREATE INDEX workspaces_created ON workspaces (created_at, id);
CREATE INDEX workspaces_parent ON workspaces (parent_id);

CREATE TABLE workspace_labels (
    workspace_id TEXT NOT NULL REFERENCES workspaces (id),
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (workspace_id, key)
);
CREATE INDEX workspace_labels_key_value ON workspace_labels (key, value);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    workspace_id TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('workspace_created', 'workspace_registered', 'heartbeat', 'status_changed', 'capabilities_changed', 'liveness_expired', 'provision_failed')),
    at BIGINT NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX events_kind_at ON events (kind, at);

CREATE TABLE registry_meta (
    key TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);

-- Workloads this provisioner runs, with the spec every later start uses.
CREATE TABLE workloads (
    workspace_id TEXT PRIMARY KEY,
    runtime_instance TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    -- The workspace's bearer token, injected into every start of its workload.
    token TEXT NOT NULL,
    desired TEXT NOT NULL CHECK (desired IN ('running', 'stopped', 'hibernated', 'removed')),
    restart_count BIGINT NOT NULL DEFAULT 0,
    next_restart_at BIGINT,
    last_started_at BIGINT NOT NULL,
    last_active_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX workloads_by_instance ON workloads (runtime_instance, desired);

-- The policy in force; one row, shared by every replica.
CREATE TABLE policy (
    singleton INTEGER PRIMARY KEY CHECK (singleton = 1),
    revision BIGINT NOT NULL,
    policy_json TEXT NOT NULL,
    source TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

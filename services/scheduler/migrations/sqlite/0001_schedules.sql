-- Schedules and their runs (SCH-1, SCH-6). The PostgreSQL schema in
-- ../postgres/0001_schedules.sql is the same; only the collation differs:
-- PostgreSQL compares ids and names byte-wise (COLLATE "C") as SQLite does,
-- so that paging agrees across engines and with the Rust side.
--
-- Times are unix milliseconds. Enumerations are stored by their proto value
-- names (e.g. 'RUN_OUTCOME_DELIVERED'), which the contract never renames, so
-- a row reads the same to every version. Flags are 0 or 1, because the sqlx
-- Any driver the store reads through cannot read a SQLite BOOLEAN.
CREATE TABLE schedules (
    id TEXT PRIMARY KEY,
    workspace_id TEXT NOT NULL,
    name TEXT NOT NULL,
    cron_expression TEXT NOT NULL,
    timezone TEXT NOT NULL,
    message_text TEXT NOT NULL,
    message_metadata_json TEXT NOT NULL,
    enabled BIGINT NOT NULL CHECK (enabled IN (0, 1)),
    disabled_reason TEXT NOT NULL,
    overlap_policy TEXT NOT NULL,
    catch_up_policy TEXT NOT NULL,
    next_run_at BIGINT,
    last_run_at BIGINT,
    last_outcome TEXT NOT NULL,
    last_error TEXT NOT NULL,
    consecutive_empty_replies BIGINT NOT NULL,
    stale BIGINT NOT NULL CHECK (stale IN (0, 1)),
    revision BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Also the listing order.
    UNIQUE (workspace_id, name)
);
-- The due scan: only enabled schedules, earliest first. Disabled ones (no
-- due time) stay out of it, and the NULLs of enabled ones left to repair are
-- found here too.
CREATE INDEX schedules_due ON schedules (next_run_at) WHERE enabled = 1;

CREATE TABLE schedule_runs (
    -- Derived from message_id (see model::run_id).
    id TEXT PRIMARY KEY,
    schedule_id TEXT NOT NULL REFERENCES schedules (id) ON DELETE CASCADE,
    workspace_id TEXT NOT NULL,
    run_trigger TEXT NOT NULL,
    scheduled_at BIGINT NOT NULL,
    fired_at BIGINT,
    finished_at BIGINT,
    outcome TEXT NOT NULL,
    error TEXT NOT NULL,
    summary TEXT NOT NULL,
    -- One run per schedule and scheduled time (or trigger request): what
    -- keeps racing replicas from recording a run twice.
    message_id TEXT NOT NULL UNIQUE,
    queue_id TEXT NOT NULL,
    -- The replica holding an IN_PROGRESS run, and until when.
    lease_owner TEXT,
    lease_until BIGINT
);
-- History, newest first: of a schedule (also what the cascade deletes by),
-- of a workspace, of everything.
CREATE INDEX schedule_runs_by_schedule ON schedule_runs (schedule_id, scheduled_at, id);
CREATE INDEX schedule_runs_by_workspace ON schedule_runs (workspace_id, scheduled_at, id);
CREATE INDEX schedule_runs_by_time ON schedule_runs (scheduled_at, id);
-- Runs in progress: leases that ran out, and the leases of one replica.
CREATE INDEX schedule_runs_leases ON schedule_runs (lease_until) WHERE outcome = 'RUN_OUTCOME_IN_PROGRESS';
CREATE INDEX schedule_runs_owners ON schedule_runs (lease_owner) WHERE outcome = 'RUN_OUTCOME_IN_PROGRESS';
-- The purge.
CREATE INDEX schedule_runs_finished ON schedule_runs (finished_at) WHERE finished_at IS NOT NULL;

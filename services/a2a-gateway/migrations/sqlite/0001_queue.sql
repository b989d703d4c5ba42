-- The durable delivery queue (GW-6). The PostgreSQL schema in
-- ../postgres/0001_queue.sql is the same table; only `seq` differs, because
-- the engines spell an auto-numbered column differently, and PostgreSQL
-- compares ids byte-wise (COLLATE "C") as SQLite does, so that paging in
-- workspace order agrees across engines and with the Rust side.
CREATE TABLE queue_items (
    -- Arrival order: the tie-break after priority. It is the rowid, so the
    -- claim index points straight at rows; AUTOINCREMENT keeps numbers
    -- rising after purges, so a page token never meets a reused number.
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    workspace_id TEXT NOT NULL,
    message_id TEXT NOT NULL,
    caller TEXT NOT NULL,
    priority BIGINT NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('queued', 'in_flight', 'delivered', 'dead_letter', 'dropped')),
    state_reason TEXT NOT NULL,
    queue_reason TEXT NOT NULL,
    attempts BIGINT NOT NULL,
    max_attempts BIGINT NOT NULL,
    last_error TEXT NOT NULL,
    enqueued_at BIGINT NOT NULL,
    expires_at BIGINT,
    next_attempt_at BIGINT,
    lease_owner TEXT,
    lease_expires_at BIGINT,
    delivered_at BIGINT,
    request_json TEXT NOT NULL,
    result_json TEXT,
    traceparent TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    UNIQUE (workspace_id, message_id)
);
-- Claim order among the items a claim may take. Partial, so delivered items
-- waiting for their purge are not walked by every claim; `state` trails so
-- that counting the queue depth never reads a row.
CREATE INDEX queue_items_claim ON queue_items (workspace_id, priority DESC, seq, state)
    WHERE state IN ('queued', 'in_flight');
-- When QUEUED items fall due, and for which workspace.
CREATE INDEX queue_items_due ON queue_items (next_attempt_at, workspace_id, expires_at) WHERE state = 'queued';
CREATE INDEX queue_items_expiry ON queue_items (expires_at) WHERE state = 'queued' AND expires_at IS NOT NULL;
-- Leases of replicas that may have died.
CREATE INDEX queue_items_leases ON queue_items (lease_expires_at) WHERE state = 'in_flight';
CREATE INDEX queue_items_finished ON queue_items (updated_at) WHERE state IN ('delivered', 'dropped');

-- Which replica drains a workspace; at most one at a time.
CREATE TABLE drain_leases (
    workspace_id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL
);

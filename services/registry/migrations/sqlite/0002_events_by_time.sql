-- Pruning walks events by time from the retention cutoff.
CREATE INDEX events_at ON events (at);

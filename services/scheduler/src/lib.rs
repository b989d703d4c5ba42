//! The agentmesh scheduler service. Its contract lives in `proto/`; the service itself is built by its own issue.

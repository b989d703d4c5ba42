//! The agentmesh a2a-gateway service. Its contract lives in `proto/`; the service itself is built by its own issue.

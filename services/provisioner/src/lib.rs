//! The agentmesh provisioner: turns workspace specs into running agents and
//! keeps the registry truthful about what runs (SPEC §3).

pub mod runtime;

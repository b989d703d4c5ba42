//! The agentmesh provisioner: turns workspace specs into running agents and
//! keeps the registry truthful about what runs (SPEC §3).

pub mod error;
pub mod grpc;
pub mod metrics;
pub mod policy;
pub mod provisioner;
mod reconcile;
pub mod registry_client;
pub mod runtime;
pub mod runtimes;
pub mod server;
pub mod settings;
pub mod spec;
pub mod store;

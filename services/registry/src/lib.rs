//! The agentmesh registry (SPEC §2): workspace records and their status,
//! declared capabilities, runtime ownership, the liveness and provisioning
//! sweeps, and the event stream every other service follows.

pub mod convert;
pub mod error;
pub mod events;
pub mod grpc;
pub mod metrics;
pub mod model;
pub mod registry;
pub mod server;
pub mod settings;
pub mod store;
pub mod sweeper;
pub mod transition;
pub mod validate;

//! The chassis every agentmesh binary runs on.
//!
//! A service brings its gRPC routes and a readiness check; the chassis brings
//! the layered configuration, telemetry, authentication, health, reflection
//! and a bounded graceful shutdown, so that all four services behave alike
//! for the operators who run them.

pub mod auth;
pub mod binary;
pub mod client;
pub mod config;
pub mod installation;
pub mod metrics;
pub mod registry_events;
pub mod server;
pub mod status;
pub mod telemetry;
pub mod workspace_credentials;

pub use auth::{AuthConfig, Caller};
pub use config::{CommonArgs, ServerConfig, ServiceSettings};
pub use server::{ServeOptions, serve};

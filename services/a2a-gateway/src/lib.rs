//! The agentmesh A2A gateway (SPEC §5).
//!
//! Requests arrive at the A2A front ([`front`], the listener, and [`http`],
//! JSON-RPC and SSE ([`sse`]) per workspace; [`a2a_grpc`], the `lf.a2a.v1.A2AService`
//! binding) and go to [`gateway`], which resolves the target through the
//! registry ([`directory`]), delivers it over HTTP ([`agent_client`]) or
//! queues it durably ([`store`]). Both HTTP legs are framed by [`wire`]
//! (from `agentmesh-httpwire`, with [`sse`]).
//! [`drain`] delivers queued messages when the registry reports room,
//! [`announce`] tells callers following a queued message that it changed,
//! [`push`] calls their webhooks once it ended,
//! and [`control`] serves the queue's inspection and repair API.

pub mod a2a_grpc;
pub mod agent_client;
pub mod announce;
pub mod control;
pub mod directory;
pub mod drain;
pub mod error;
pub mod front;
pub mod gateway;
pub mod http;
pub mod jsonrpc;
pub mod metrics;
pub mod push;
pub mod rest;
pub mod server;
pub mod settings;
pub mod store;

pub use agentmesh_httpwire::{sse, wire};

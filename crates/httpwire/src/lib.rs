//! The A2A gateway's wire format, kept apart from the gateway so that its
//! parsers can be fuzzed on their own (`fuzz/`): HTTP/1.1 framing
//! ([`wire`]) for requests from callers and replies from agents, and
//! server-sent events ([`sse`]) read from agents and written to callers.

pub mod sse;
pub mod wire;

//! The A2A gateway benchmark: `message/send` throughput and latency through
//! the gateway beside the agent itself and a reverse proxy
//! ([`throughput`]), and the time the gateway takes to drain a backlog into
//! an agent beside the agent's own sequential limit ([`drain`]).

pub mod cpu;
pub mod drain;
mod http;
mod mesh;
pub mod throughput;

use std::{fs, path::Path};

use anyhow::Context;
use bytes::Bytes;

/// A `message/send` request (A2A 0.3 JSON-RPC) with one text part. The ids
/// and text are written into the JSON as they are, so they must need no
/// escaping: the callers build them from letters, digits, spaces and dashes.
fn message_send(rpc_id: u64, message_id: &str, text: &str) -> Bytes {
    debug_assert!(
        message_id.chars().chain(text.chars()).all(|c| c.is_ascii_alphanumeric() || c == ' ' || c == '-'),
        "{message_id:?} / {text:?} would need escaping"
    );
    Bytes::from(format!(
        r#"{{"jsonrpc":"2.0","id":{rpc_id},"method":"message/send","params":{{"message":{{"kind":"message","messageId":"{message_id}","role":"user","parts":[{{"kind":"text","text":"{text}"}}]}}}}}}"#
    ))
}

/// Whether a JSON-RPC reply carries a result (and not an error). A byte
/// search, not a parse: the load loop must cost the client as little as
/// it can, and every target answers the same compact JSON.
fn has_result(body: &[u8]) -> bool {
    body.windows(9).any(|w| w == b"\"result\":")
}

/// A short random tag that keeps message ids unique across runs against
/// the same agent.
fn run_tag() -> String {
    uuid::Uuid::new_v4().simple().to_string()[..8].to_owned()
}

/// The file measurements are appended to, one JSON line each.
fn open_results(path: &Path) -> anyhow::Result<fs::File> {
    fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_send_is_the_json_rpc_request_an_a2a_client_sends() {
        let body = message_send(7, "ab-1", "hello 1");
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["id"], 7);
        assert_eq!(value["method"], "message/send");
        assert_eq!(value["params"]["message"]["messageId"], "ab-1");
        assert_eq!(value["params"]["message"]["parts"][0]["text"], "hello 1");
    }

    #[test]
    fn results_are_told_from_errors() {
        assert!(has_result(br#"{"jsonrpc":"2.0","id":1,"result":{"kind":"message"}}"#));
        assert!(!has_result(br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32000,"message":"agent busy"}}"#));
    }
}

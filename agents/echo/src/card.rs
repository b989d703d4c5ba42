//! The agent card: valid for A2A 1.0 (`supportedInterfaces`) and still
//! readable by 0.3 clients (`url`, `protocolVersion`, `preferredTransport`).

use axum::body::Bytes;
use serde_json::{Value, json};

use crate::Config;

pub(crate) struct Card {
    name: String,
    /// `https` when the agent serves TLS.
    scheme: &'static str,
    /// Rendered once when the public URL is configured.
    fixed: Option<Bytes>,
}

impl Card {
    pub(crate) fn new(config: &Config) -> Self {
        let fixed = config.public_url.as_deref().map(|url| Bytes::from(render(&config.name, url).to_string()));
        let scheme = if config.tls.is_some() { "https" } else { "http" };
        Self { name: config.name.clone(), scheme, fixed }
    }

    /// The card as JSON, advertising `http(s)://<host>/` unless a public URL
    /// is configured.
    pub(crate) fn render(&self, host: Option<&str>) -> Bytes {
        match &self.fixed {
            Some(card) => card.clone(),
            None => {
                let url = format!("{}://{}/", self.scheme, host.unwrap_or("localhost"));
                Bytes::from(render(&self.name, &url).to_string())
            }
        }
    }
}

fn render(name: &str, url: &str) -> Value {
    json!({
        "name": name,
        "description": "Echoes every text message back, prefixed with \"echo: \" (agentmesh test agent).",
        "version": env!("CARGO_PKG_VERSION"),
        "supportedInterfaces": [{"url": url, "protocolBinding": "JSONRPC", "protocolVersion": "1.0"}],
        "capabilities": {"streaming": true, "pushNotifications": false},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [{
            "id": "echo",
            "name": "Echo",
            "description": "Replies with the text it received, prefixed with \"echo: \".",
            "tags": ["echo", "test"],
            "examples": ["hello"],
        }],
        "url": url,
        "protocolVersion": "0.3.0",
        "preferredTransport": "JSONRPC",
    })
}

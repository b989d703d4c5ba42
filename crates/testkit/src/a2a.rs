//! A caller of the gateway's A2A front as an A2A client sees it: JSON-RPC
//! over HTTP, and the server-sent events of streamed replies.

use eventsource_stream::{Event, EventStreamError, Eventsource};
use futures::{StreamExt, stream::BoxStream};
use serde_json::{Value, json};

/// A JSON-RPC caller of the gateway's A2A front.
#[derive(Clone)]
pub struct Caller {
    http: reqwest::Client,
    token: String,
}

pub struct RpcReply {
    pub status: u16,
    pub retry_after: Option<String>,
    /// `WWW-Authenticate`, the challenge of a 401.
    pub www_authenticate: Option<String>,
    pub body: Value,
}

impl RpcReply {
    /// The gateway's queueing report (`metadata.agentmesh.queued`) of a reply
    /// that must be a queued message: HTTP 200 and a task in state
    /// `submitted`.
    pub fn queued(&self) -> &Value {
        assert_eq!(self.status, 200, "{}", self.body);
        let result = &self.body["result"];
        assert_eq!(result["status"]["state"], "submitted", "{result}");
        &result["metadata"]["agentmesh"]["queued"]
    }
}

impl Caller {
    pub fn new(token: &str) -> Self {
        Self { http: reqwest::Client::new(), token: token.to_owned() }
    }

    pub async fn post(&self, url: &str, body: &Value, headers: &[(&str, &str)]) -> RpcReply {
        self.try_post(url, body, headers).await.unwrap_or_else(|e| panic!("POST {url}: {e}"))
    }

    /// [`Caller::post`] for callers that expect the connection to fail (a
    /// gateway replica killed under them) and try again.
    pub async fn try_post(&self, url: &str, body: &Value, headers: &[(&str, &str)]) -> reqwest::Result<RpcReply> {
        let mut request = self.http.post(url).bearer_auth(&self.token).json(body);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let reply = request.send().await?;
        let status = reply.status().as_u16();
        let header = |name: &str| reply.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let (retry_after, www_authenticate) = (header("retry-after"), header("www-authenticate"));
        let body = reply.json().await?;
        Ok(RpcReply { status, retry_after, www_authenticate, body })
    }

    /// `message/send` of `text` with message id `message_id`.
    pub async fn send(&self, url: &str, text: &str, message_id: &str) -> RpcReply {
        self.post(url, &send_request(text, message_id), &[]).await
    }

    /// Posts a request answered with server-sent events (`message/stream`,
    /// `tasks/resubscribe`…), to read them as they come.
    pub async fn events(&self, url: &str, body: &Value) -> Events {
        let response = self.http.post(url).bearer_auth(&self.token).json(body).send().await.unwrap();
        assert_eq!(response.status(), 200);
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap().to_owned());
        assert_eq!(content_type.as_deref(), Some("text/event-stream; charset=utf-8"));
        Events { events: response.bytes_stream().eventsource().boxed() }
    }
}

/// The server-sent events of a streamed reply.
pub struct Events {
    events: BoxStream<'static, Result<Event, EventStreamError<reqwest::Error>>>,
}

impl Events {
    /// The data of the next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<Value> {
        let event = self.events.next().await?.expect("reading the event stream");
        Some(serde_json::from_str(&event.data).unwrap_or_else(|e| panic!("event data {:?}: {e}", event.data)))
    }
}

pub fn send_request(text: &str, message_id: &str) -> Value {
    json!({
        "jsonrpc": "2.0", "id": 1, "method": "message/send",
        "params": { "message": { "kind": "message", "messageId": message_id, "role": "user",
            "parts": [{ "kind": "text", "text": text }] } }
    })
}

/// The text of the first text part of an agent's reply (task or message).
pub fn reply_text(result: &Value) -> String {
    let message = if result["kind"] == "task" { &result["status"]["message"] } else { result };
    let parts = message["parts"].as_array().cloned().unwrap_or_default();
    parts.iter().find_map(|p| p["text"].as_str()).map(str::to_owned).unwrap_or_else(|| panic!("no text in {result}"))
}

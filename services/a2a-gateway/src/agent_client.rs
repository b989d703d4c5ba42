//! The HTTP leg to an agent: JSON-RPC posts and SSE streams, with the SSRF
//! guard at every dispatch (GW-3), the idle timeout (GW-4), size caps (GW-2)
//! and the classification of a failure into "try later" (busy, dropped,
//! silent, unreachable) or "the agent's answer".

use std::{net::SocketAddr, sync::Arc, time::Duration};

use agentmesh_netguard::{UrlGuard, UrlRejected};
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use reqwest::{
    StatusCode,
    dns::{Addrs, Name, Resolve, Resolving},
    header::{self, HeaderValue},
};
use tokio::sync::{mpsc, watch};

/// The largest reply the gateway passes on (GW-2).
pub const MAX_REPLY_BYTES: usize = 10 << 20;

/// When a dispatch gives up: after `timeout` without any event from the
/// target. Each move of `activity` (a registry event, a streamed event)
/// restarts the clock.
pub struct IdleClock {
    pub timeout: Duration,
    pub activity: watch::Receiver<u64>,
}

impl IdleClock {
    /// Resolves once the target has been silent for the whole timeout.
    pub async fn silence(&mut self) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.timeout) => return,
                changed = self.activity.changed() => {
                    if changed.is_err() {
                        // No more activity can arrive: only the clock is left.
                        tokio::time::sleep(self.timeout).await;
                        return;
                    }
                }
            }
        }
    }

    /// Restarts the clock from now.
    pub fn reset(&mut self) {
        self.activity.mark_unchanged();
    }
}

/// Why a call did not bring back the agent's answer.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    /// HTTP 503 or 429: the agent has no room now.
    #[error("the agent is busy (HTTP {status})")]
    Busy { status: u16, retry_after: Option<Duration> },
    /// The connection broke after the request went out.
    #[error("the connection to the agent dropped: {0}")]
    Dropped(String),
    /// No connection could be made.
    #[error("the agent could not be reached: {0}")]
    Unreachable(String),
    #[error("the agent produced no event for {0:?}")]
    IdleTimeout(Duration),
    /// The URL failed the SSRF check (SEC-3).
    #[error("{0}")]
    Refused(String),
    #[error("the agent's reply is larger than {MAX_REPLY_BYTES} bytes")]
    TooLarge,
    /// An HTTP error that is not JSON-RPC and not "busy".
    #[error("the agent answered HTTP {status}")]
    Http { status: u16 },
}

impl Failure {
    /// Whether the message should wait in the queue for another try.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Failure::Busy { .. } | Failure::Dropped(_) | Failure::Unreachable(_) | Failure::IdleTimeout(_))
    }
}

/// One request to an agent.
pub struct AgentCall<'a> {
    pub url: &'a str,
    pub body: Bytes,
    pub traceparent: Option<&'a str>,
    /// The A2A protocol version the caller asked for, passed on unchanged.
    pub a2a_version: Option<&'a str>,
}

#[derive(Clone)]
pub struct AgentClient {
    http: reqwest::Client,
    guard: Arc<UrlGuard>,
}

impl AgentClient {
    pub fn new(guard: UrlGuard) -> anyhow::Result<Self> {
        let guard = Arc::new(guard);
        let http = reqwest::Client::builder()
            // Names are resolved by the guard, so the address connected to
            // is the address checked (no DNS rebinding in between).
            .dns_resolver(Arc::new(GuardedResolver(guard.clone())))
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .build()?;
        Ok(Self { http, guard })
    }

    /// Posts a JSON-RPC request and returns the agent's JSON reply, unless
    /// the target stays silent past the idle clock.
    pub async fn call(&self, call: AgentCall<'_>, idle: &mut IdleClock) -> Result<Bytes, Failure> {
        let response = tokio::select! {
            response = self.send(&call, false) => response?,
            () = idle.silence() => return Err(Failure::IdleTimeout(idle.timeout)),
        };
        tokio::select! {
            body = read_capped(response) => body,
            () = idle.silence() => Err(Failure::IdleTimeout(idle.timeout)),
        }
    }

    /// Posts a streaming JSON-RPC request and returns the accepted stream,
    /// to be read with [`pump_events`].
    pub async fn open_stream(&self, call: AgentCall<'_>, idle: &mut IdleClock) -> Result<reqwest::Response, Failure> {
        tokio::select! {
            response = self.send(&call, true) => response,
            () = idle.silence() => Err(Failure::IdleTimeout(idle.timeout)),
        }
    }

    async fn send(&self, call: &AgentCall<'_>, stream: bool) -> Result<reqwest::Response, Failure> {
        // GW-3: the record may have been poisoned after registration.
        let checked = self.guard.check(call.url).await.map_err(|rejected| Failure::Refused(rejected.to_string()))?;
        let accept = if stream { "text/event-stream" } else { "application/json" };
        let mut request = self
            .http
            // The URL as the guard parsed it: checked once, parsed once.
            .post(checked.into_url())
            .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
            .header(header::ACCEPT, HeaderValue::from_static(accept))
            .body(call.body.clone());
        if let Some(traceparent) = call.traceparent {
            request = request.header("traceparent", traceparent);
        }
        if let Some(version) = call.a2a_version {
            request = request.header("A2A-Version", version);
        }
        let response = request.send().await.map_err(classify)?;
        let status = response.status();
        if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
            let retry_after = response
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Busy { status: status.as_u16(), retry_after });
        }
        let is_json = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("json") || v.contains("event-stream"));
        if !status.is_success() && !is_json {
            return Err(Failure::Http { status: status.as_u16() });
        }
        Ok(response)
    }
}

/// Reads the server-sent events of an accepted stream and sends the data
/// of each to `events`, until the agent ends the stream or falls silent.
/// The stream is read to its end even when `events` is closed: a caller that
/// hangs up does not abort the agent's work (GW-4). Every event restarts the
/// idle clock.
pub async fn pump_events(
    response: reqwest::Response,
    idle: &mut IdleClock,
    mut on_event: impl FnMut(),
    events: mpsc::Sender<Bytes>,
) -> Result<(), Failure> {
    let mut body = response.bytes_stream();
    let mut parser = SseParser::default();
    let mut listening = true;
    loop {
        let chunk = tokio::select! {
            chunk = body.next() => chunk,
            () = idle.silence() => return Err(Failure::IdleTimeout(idle.timeout)),
        };
        let Some(chunk) = chunk else { return Ok(()) };
        let chunk = chunk.map_err(|e| Failure::Dropped(e.to_string()))?;
        for data in parser.push(&chunk)? {
            idle.reset();
            on_event();
            if listening && events.send(data).await.is_err() {
                listening = false;
            }
        }
    }
}

async fn read_capped(response: reqwest::Response) -> Result<Bytes, Failure> {
    if response.content_length().is_some_and(|n| n > MAX_REPLY_BYTES as u64) {
        return Err(Failure::TooLarge);
    }
    let mut body = response.bytes_stream();
    let mut buffer = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Failure::Dropped(e.to_string()))?;
        if buffer.len() + chunk.len() > MAX_REPLY_BYTES {
            return Err(Failure::TooLarge);
        }
        buffer.extend_from_slice(&chunk);
    }
    Ok(buffer.freeze())
}

fn classify(error: reqwest::Error) -> Failure {
    // The guard's refusal travels through reqwest as the resolver's error.
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(cause) = source {
        if let Some(rejected) = cause.downcast_ref::<UrlRejected>() {
            return Failure::Refused(rejected.to_string());
        }
        source = cause.source();
    }
    if error.is_connect() { Failure::Unreachable(describe(&error)) } else { Failure::Dropped(describe(&error)) }
}

/// The innermost cause, which says what actually went wrong.
fn describe(error: &reqwest::Error) -> String {
    let mut cause: &dyn std::error::Error = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// Resolves agent host names through the SSRF guard.
struct GuardedResolver(Arc<UrlGuard>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.0.clone();
        Box::pin(async move {
            let checked = guard.check(&format!("http://{}/", name.as_str())).await?;
            let addrs: Addrs = Box::new(checked.addrs().to_vec().into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Splits a `text/event-stream` body into the data of its events.
#[derive(Default)]
struct SseParser {
    pending: BytesMut,
    data: Vec<u8>,
}

impl SseParser {
    fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, Failure> {
        self.pending.extend_from_slice(chunk);
        if self.pending.len() + self.data.len() > MAX_REPLY_BYTES {
            return Err(Failure::TooLarge);
        }
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line = self.pending.split_to(end + 1);
            let line = line.strip_suffix(b"\n").unwrap_or(&line);
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if !self.data.is_empty() {
                    events.push(Bytes::from(std::mem::take(&mut self.data)));
                }
            } else if let Some(value) = line.strip_prefix(b"data:") {
                if !self.data.is_empty() {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value.strip_prefix(b" ").unwrap_or(value));
            }
            // Comments, `event:`, `id:` and `retry:` lines carry nothing the
            // gateway passes on: A2A puts everything in `data`.
        }
        Ok(events)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parser_joins_split_chunks_and_multiline_data() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: {\"a\"").unwrap().is_empty());
        let events = parser.push(b":1}\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata: two\n\n").unwrap();
        assert_eq!(events, vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"one\ntwo")]);
    }
}

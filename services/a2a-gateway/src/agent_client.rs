//! The HTTP leg to an agent: JSON-RPC posts and SSE streams, with the SSRF
//! guard at every dispatch (GW-3), the idle timeout (GW-4), size caps (GW-2)
//! and the classification of a failure into "try later" (busy, dropped,
//! silent, unreachable) or "the agent's answer".
//!
//! Agents are reached over plain HTTP or over TLS (https URLs), trusting the
//! system's certificate authorities and any the operator adds.
//!
//! Connections are HTTP/1.1 keep-alive connections (framed by `wire.rs`),
//! pooled per agent and used by the task that makes the call: a request is
//! written, and its reply read, on that task's own buffers, without handing
//! anything to another task.

use std::{
    collections::HashMap,
    net::IpAddr,
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use agentmesh_netguard::UrlGuard;
use bytes::Bytes;
use http::StatusCode;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, pem::PemObject};
use tokio::{
    sync::mpsc,
    time::{Instant, Sleep},
};
use tokio_rustls::TlsConnector;
use url::Url;

use crate::{
    directory::Activity,
    metrics::GatewayMetrics,
    sse,
    wire::{BodyDecoder, ResponseHead},
};

mod connection;
mod socket;

use connection::{AgentConnection, Exchanged, malformed};

/// The largest reply the gateway passes on (GW-2).
pub const MAX_REPLY_BYTES: usize = 10 << 20;

/// When a dispatch gives up (GW-4): once the target has been silent for
/// `timeout`, counted from the later of the dispatch's start and the
/// workspace's last sign of life.
pub struct IdleClock {
    timeout: Duration,
    activity: Arc<Activity>,
    since: Instant,
}

impl IdleClock {
    /// A clock that starts now.
    pub fn start(timeout: Duration, activity: Arc<Activity>) -> Self {
        Self { timeout, activity, since: Instant::now() }
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// When the target counts as silent, as far as is known now.
    fn deadline(&self) -> Instant {
        self.activity.last().map_or(self.since, |last| last.max(self.since)) + self.timeout
    }

    /// Resolves once the target has been silent for the whole timeout.
    /// `timer` is moved, not replaced: moving a timer later costs nothing,
    /// where a new one per dispatch would go through the runtime's timer
    /// wheel twice. Signs of life are looked at only when it fires.
    pub async fn silence(&self, mut timer: Pin<&mut Sleep>) {
        loop {
            timer.as_mut().reset(self.deadline());
            timer.as_mut().await;
            if self.deadline() <= Instant::now() {
                return;
            }
        }
    }

    /// The target showed a sign of life (an event it streamed): every idle
    /// clock of its workspace starts again.
    pub fn observed(&self) {
        self.activity.touch();
    }
}

/// Runs `work` until the target falls silent. The clock is started only if
/// `work` has to wait.
async fn until_silent<T>(idle: &IdleClock, work: impl Future<Output = Result<T, Failure>>) -> Result<T, Failure> {
    let timer = std::pin::pin!(tokio::time::sleep_until(idle.since + idle.timeout));
    tokio::select! {
        biased;
        done = work => done,
        () = idle.silence(timer) => Err(Failure::IdleTimeout(idle.timeout)),
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
    /// The gateway will not talk to this URL: it failed the SSRF check
    /// (SEC-3), or the agent's TLS certificate or handshake was not accepted.
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
    /// The agent's URL as registered, which names it in refusals.
    pub url: &'a str,
    /// The same URL parsed, when it parses.
    pub endpoint: Option<&'a AgentEndpoint>,
    pub body: Bytes,
    pub traceparent: Option<&'a str>,
    /// The A2A protocol version the caller asked for, passed on unchanged.
    pub a2a_version: Option<&'a str>,
    /// Further header fields, as (lower-case name, value): a push
    /// notification's token and credentials.
    pub fields: &'a [(&'a str, &'a str)],
}

/// An agent's URL taken apart once, when its workspace record is read:
/// every dispatch checks its addresses again (GW-3) but need not parse it.
#[derive(Debug, Clone)]
pub struct AgentEndpoint {
    url: Url,
    /// `scheme://host[:port]`: the pool's key, so that a plain connection
    /// never serves an https URL on the same host and port.
    origin: Arc<str>,
}

impl AgentEndpoint {
    /// `None` if `raw` is no URL; the dispatch then refuses it by the
    /// guard's own reading, which names the problem.
    pub fn parse(raw: &str) -> Option<Self> {
        let url = Url::parse(raw).ok()?;
        let origin = url[..url::Position::AfterPort].into();
        Some(Self { url, origin })
    }

    /// `host[:port]` as the URL spells it, for the Host field.
    fn authority(&self) -> &str {
        &self.url[url::Position::BeforeHost..url::Position::AfterPort]
    }

    /// The path and query requests are posted to.
    fn request_target(&self) -> &str {
        match &self.url[url::Position::BeforePath..url::Position::AfterQuery] {
            "" => "/",
            target => target,
        }
    }
}

/// How long connecting to one of an agent's addresses may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long an unused connection is kept for the next call to the same agent.
const IDLE_KEEP: Duration = Duration::from_secs(60);
/// Unused connections kept per agent; more are closed when their call ends.
const MAX_IDLE_PER_AGENT: usize = 1024;
/// The longest body of a busy answer read to keep its connection.
const BUSY_BODY_LIMIT: usize = 64 << 10;
/// How long the body of a busy answer is waited for to keep its connection.
const BUSY_BODY_WAIT: Duration = Duration::from_millis(50);

/// Why a TLS file (the certificate authorities for https agents, or the
/// A2A listener's certificate and key) could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsSetupError {
    path: String,
    reason: String,
}

impl TlsSetupError {
    pub(crate) fn new(path: &Path, reason: impl std::fmt::Display) -> Self {
        Self { path: path.display().to_string(), reason: reason.to_string() }
    }
}

/// Whom the gateway trusts when it reaches agents over https.
#[derive(Clone)]
pub struct AgentTls {
    connector: TlsConnector,
}

impl AgentTls {
    /// Trusts the system's certificate authorities (`SSL_CERT_FILE` and
    /// `SSL_CERT_DIR` are honoured) and, when given, every certificate in the
    /// PEM file `extra_ca_file`: agents inside a cluster usually carry
    /// certificates of a private authority.
    pub fn new(extra_ca_file: Option<&Path>) -> Result<Self, TlsSetupError> {
        let mut roots = RootCertStore::empty();
        let system = rustls_native_certs::load_native_certs();
        let (system_trusted, _unusable) = roots.add_parsable_certificates(system.certs);
        let mut added = 0;
        if let Some(path) = extra_ca_file {
            let failed = |reason: String| TlsSetupError::new(path, reason);
            for certificate in CertificateDer::pem_file_iter(path).map_err(|e| failed(e.to_string()))? {
                let certificate = certificate.map_err(|e| failed(e.to_string()))?;
                roots.add(certificate).map_err(|e| failed(format!("not a usable CA certificate: {e}")))?;
                added += 1;
            }
            if added == 0 {
                return Err(failed("holds no CERTIFICATE block".to_owned()));
            }
        }
        if roots.is_empty() {
            tracing::warn!(
                "no certificate authority is trusted, so no https agent can be reached; set gateway.agent_ca_file"
            );
        } else {
            tracing::debug!(system_trusted, added, "certificate authorities trusted for https agents");
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring provides the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        // The gateway speaks HTTP/1 to agents; saying so stops an agent that
        // prefers HTTP/2 from choosing it.
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self { connector: TlsConnector::from(Arc::new(config)) })
    }
}

#[derive(Clone)]
pub struct AgentClient {
    guard: Arc<UrlGuard>,
    tls: AgentTls,
    pool: Arc<Pool>,
    metrics: GatewayMetrics,
}

impl AgentClient {
    /// A client whose pool forgets unused connections in the background;
    /// call within a Tokio runtime.
    pub fn new(guard: UrlGuard, tls: AgentTls) -> Self {
        let pool = Arc::new(Pool::default());
        tokio::spawn(Pool::prune_while_used(Arc::downgrade(&pool)));
        Self { guard: Arc::new(guard), tls, pool, metrics: GatewayMetrics::default() }
    }

    /// Counts the failed calls, and the URLs the guard refuses, in `metrics`.
    pub fn measured(self, metrics: GatewayMetrics) -> Self {
        Self { metrics, ..self }
    }

    /// Posts a JSON-RPC request and returns the agent's JSON reply, unless
    /// the target stays silent past the idle clock.
    pub async fn call(&self, call: AgentCall<'_>, idle: &IdleClock) -> Result<Bytes, Failure> {
        self.counted(self.exchange_whole(&call, idle).await.map(|(_, body)| body))
    }

    /// Posts JSON that is not an A2A request (a push notification) and
    /// reads the answer's status; its body is read and dropped.
    pub async fn post(&self, call: AgentCall<'_>, idle: &IdleClock) -> Result<StatusCode, Failure> {
        self.exchange_whole(&call, idle).await.map(|(status, _)| status)
    }

    /// Sends `call` and reads its whole reply; the connection goes back to
    /// the pool.
    async fn exchange_whole(&self, call: &AgentCall<'_>, idle: &IdleClock) -> Result<(StatusCode, Bytes), Failure> {
        let (mut connection, head) = self.send(call, false, idle).await?;
        let body = connection.read_body(idle, &head, MAX_REPLY_BYTES).await?;
        self.pool.give_back(connection);
        Ok((head.status, body))
    }

    fn counted<T>(&self, result: Result<T, Failure>) -> Result<T, Failure> {
        if let Err(failure) = &result {
            self.metrics.agent_failed(failure);
        }
        result
    }

    /// Posts a streaming JSON-RPC request and returns the accepted stream,
    /// to be read with [`pump_events`], or the agent's JSON reply when it
    /// answered with one instead (an error, as agents refuse a stream).
    pub async fn open_stream(&self, call: AgentCall<'_>, idle: &IdleClock) -> Result<Opened, Failure> {
        let opened = async {
            let (mut connection, head) = self.send(&call, true, idle).await?;
            if !head.header("content-type").is_some_and(is_event_stream) {
                let reply = connection.read_body(idle, &head, MAX_REPLY_BYTES).await?;
                self.pool.give_back(connection);
                return Ok(Opened::Reply(reply));
            }
            let body = BodyDecoder::new(head.framing().map_err(|error| malformed(&error))?);
            Ok(Opened::Events(AgentStream { connection, body }))
        };
        self.counted(opened.await)
    }

    /// Sends the request and reads the head of the reply.
    async fn send(
        &self,
        call: &AgentCall<'_>,
        stream: bool,
        idle: &IdleClock,
    ) -> Result<(AgentConnection, ResponseHead), Failure> {
        let Some(endpoint) = call.endpoint else {
            // Only a URL that does not parse has no endpoint: the guard's
            // own reading names the problem.
            let reason = match self.guard.check(call.url).await {
                Err(rejected) => rejected.to_string(),
                Ok(_) => format!("{}: not a URL", call.url),
            };
            self.metrics.ssrf_refused();
            return Err(Failure::Refused(reason));
        };
        // GW-3: the record may have been poisoned after registration. The
        // connection goes to the addresses checked here, so no later lookup
        // can swap them (DNS rebinding).
        let checked = async {
            self.guard.check_parsed(&endpoint.url).await.map_err(|e| {
                self.metrics.ssrf_refused();
                Failure::Refused(e.to_string())
            })
        };
        let (port, addresses) = until_silent(idle, checked).await?;
        let (connection, head) = match self.pool.take(&endpoint.origin) {
            Some(mut reused) => match reused.exchange(idle, endpoint, call, stream).await {
                Ok(head) => (reused, head),
                // The agent closed the unused connection as it was picked up
                // (its keep-alive ran out): no reply had begun, so the request
                // goes once more on a new connection. Should the agent have
                // taken it in after all, it recognises the repeat by its
                // message id, as it does a redelivery from the queue.
                Err(Exchanged { replied: false, .. }) => {
                    Box::pin(self.send_on_new_connection(endpoint, port, &addresses, call, stream, idle)).await?
                }
                Err(Exchanged { failure, .. }) => return Err(failure),
            },
            None => Box::pin(self.send_on_new_connection(endpoint, port, &addresses, call, stream, idle)).await?,
        };
        if let Err(failure) = classify_status(&head) {
            if matches!(failure, Failure::Busy { .. }) {
                self.keep_after_busy(connection, &head).await;
            }
            return Err(failure);
        }
        Ok((connection, head))
    }

    /// Keeps the connection of a busy answer for the next call, once its
    /// short body is read: under load busy answers are routine, and each
    /// would otherwise cost a new connection. A body that is long or slow
    /// to come closes the connection instead.
    async fn keep_after_busy(&self, mut connection: AgentConnection, head: &ResponseHead) {
        let read = tokio::time::timeout(BUSY_BODY_WAIT, connection.io.read_body(head, BUSY_BODY_LIMIT)).await;
        if matches!(read, Ok(Ok(_))) {
            self.pool.give_back(connection);
        }
    }

    /// Boxed by its callers: a connection is opened rarely, and its state
    /// (a TLS handshake's among it) would otherwise make every call's
    /// future large, and copied as it moves.
    async fn send_on_new_connection(
        &self,
        endpoint: &AgentEndpoint,
        port: u16,
        addresses: &[IpAddr],
        call: &AgentCall<'_>,
        stream: bool,
        idle: &IdleClock,
    ) -> Result<(AgentConnection, ResponseHead), Failure> {
        let mut connection = until_silent(idle, AgentConnection::open(endpoint, port, addresses, &self.tls)).await?;
        let head = connection.exchange(idle, endpoint, call, stream).await.map_err(|exchanged| exchanged.failure)?;
        Ok((connection, head))
    }
}

fn classify_status(head: &ResponseHead) -> Result<(), Failure> {
    let status = head.status;
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after = head.header("retry-after").and_then(parse_retry_after);
        return Err(Failure::Busy { status: status.as_u16(), retry_after });
    }
    let is_json = head.header("content-type").is_some_and(|v| v.contains("json") || v.contains("event-stream"));
    if !status.is_success() && !is_json {
        return Err(Failure::Http { status: status.as_u16() });
    }
    Ok(())
}

/// A `Retry-After` value: seconds, or an HTTP date (RFC 9110 §10.2.3).
fn parse_retry_after(value: &str) -> Option<Duration> {
    let value = value.trim();
    value.parse::<u64>().ok().map(Duration::from_secs).or_else(|| {
        let at = httpdate::parse_http_date(value).ok()?;
        Some(at.duration_since(std::time::SystemTime::now()).unwrap_or_default())
    })
}

/// How an agent answered a streaming request.
pub enum Opened {
    Events(AgentStream),
    /// A JSON reply instead of events, passed on as it came.
    Reply(Bytes),
}

/// Whether a `Content-Type` names server-sent events (RFC 9110 §8.3.1:
/// the media type is case-insensitive and may carry parameters).
fn is_event_stream(content_type: &str) -> bool {
    let media_type = content_type.split(';').next().unwrap_or_default().trim();
    media_type.eq_ignore_ascii_case("text/event-stream")
}

/// An agent's accepted event stream, with the connection it arrives on.
pub struct AgentStream {
    connection: AgentConnection,
    body: BodyDecoder,
}

/// Reads the server-sent events of an accepted stream and sends the data
/// of each to `events`, until the agent ends the stream or falls silent.
/// The stream is read to its end even when `events` is closed: a caller that
/// hangs up does not abort the agent's work (GW-4). Every event restarts the
/// idle clock.
pub async fn pump_events(stream: AgentStream, idle: &IdleClock, events: mpsc::Sender<Bytes>) -> Result<(), Failure> {
    let AgentStream { mut connection, mut body } = stream;
    let mut parser = sse::Parser::new(MAX_REPLY_BYTES);
    let mut listening = true;
    loop {
        let Some(chunk) = connection.next_piece(idle, &mut body).await? else { return Ok(()) };
        for data in parser.push(&chunk).map_err(|sse::TooLarge| Failure::TooLarge)? {
            idle.observed();
            if listening && events.send(data).await.is_err() {
                listening = false;
            }
        }
    }
}

/// Unused connections per agent origin, most recently used last.
#[derive(Default)]
struct Pool {
    idle: Mutex<HashMap<Arc<str>, Vec<Unused>>>,
}

struct Unused {
    connection: AgentConnection,
    since: Instant,
}

impl Pool {
    /// A connection to `origin` that can take a request now, if one is
    /// unused.
    fn take(&self, origin: &str) -> Option<AgentConnection> {
        let mut idle = self.idle.lock().expect("pool lock");
        let unused = idle.get_mut(origin)?;
        while let Some(Unused { mut connection, since }) = unused.pop() {
            if since.elapsed() < IDLE_KEEP && connection.io.ready_now() {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, connection: AgentConnection) {
        if !connection.io.reusable {
            return;
        }
        let mut idle = self.idle.lock().expect("pool lock");
        let unused = idle.entry(connection.origin.clone()).or_default();
        if unused.len() < MAX_IDLE_PER_AGENT {
            unused.push(Unused { connection, since: Instant::now() });
        }
    }

    /// Closes connections unused for [`IDLE_KEEP`], until the pool is gone.
    async fn prune_while_used(pool: Weak<Pool>) {
        let mut tick = tokio::time::interval(IDLE_KEEP / 2);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(pool) = pool.upgrade() else { return };
            let mut idle = pool.idle.lock().expect("pool lock");
            idle.retain(|_, unused| {
                unused.retain(|u| u.since.elapsed() < IDLE_KEEP);
                !unused.is_empty()
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use agentmesh_echo_agent::TlsIdentity;
    use agentmesh_netguard::NetworkMode;
    use agentmesh_testkit::tls::TestCa;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    use tokio_rustls::TlsAcceptor;

    use super::*;

    const REPLY: &[u8] = b"{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}";
    const BUSY: &str = "busy, try again";
    const TLS_HANDSHAKE_RECORD: u8 = 0x16;

    /// An HTTP/1 server on loopback that answers every request with
    /// [`REPLY`] and, after `requests_per_connection` requests, closes the
    /// connection without saying so beforehand (as an agent's keep-alive
    /// timeout does). Returns its URL and its count of accepted connections.
    async fn agent(requests_per_connection: usize) -> (String, Arc<AtomicUsize>) {
        agent_busy_at_first(requests_per_connection, 0, None).await
    }

    /// As [`agent`], over TLS with a certificate for `names` issued by `ca`:
    /// its URL is `https://localhost:<port>/rpc`.
    async fn tls_agent(ca: &TestCa, names: &[&str]) -> (String, Arc<AtomicUsize>) {
        let issued = ca.issue(names);
        let acceptor = TlsIdentity::from_pem(&issued.cert_pem, &issued.key_pem).unwrap().acceptor();
        let (url, accepted) = agent_busy_at_first(usize::MAX, 0, Some(acceptor)).await;
        (url.replace("http://127.0.0.1", "https://localhost"), accepted)
    }

    /// As [`agent`], but the first `busy_replies` answers are HTTP 503 with
    /// a short body; over TLS when `tls` is given.
    async fn agent_busy_at_first(
        requests_per_connection: usize,
        busy_replies: usize,
        tls: Option<TlsAcceptor>,
    ) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/rpc", listener.local_addr().unwrap());
        let accepted = Arc::new(AtomicUsize::new(0));
        let counter = accepted.clone();
        let answered = Arc::new(AtomicUsize::new(0));
        tokio::spawn(async move {
            loop {
                let (socket, _) = listener.accept().await.unwrap();
                counter.fetch_add(1, Ordering::SeqCst);
                let answered = answered.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let mut socket: Box<dyn AsyncReadWrite> = match tls {
                        // A handshake the client gave up on ends here.
                        Some(tls) => match tls.accept(socket).await {
                            Ok(socket) => Box::new(socket),
                            Err(_) => return,
                        },
                        None => Box::new(socket),
                    };
                    let mut buffer = Vec::new();
                    for _ in 0..requests_per_connection {
                        // The gateway's requests carry a Content-Length; the
                        // test bodies are short enough to arrive with the head.
                        loop {
                            let mut chunk = [0u8; 4096];
                            let n = socket.read(&mut chunk).await.unwrap();
                            if n == 0 {
                                return;
                            }
                            buffer.extend_from_slice(&chunk[..n]);
                            if buffer.first() == Some(&TLS_HANDSHAKE_RECORD) {
                                // A TLS client at a plain HTTP server: answer
                                // as HTTP servers do to a request they cannot read.
                                let _ =
                                    socket.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n").await;
                                return;
                            }
                            if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
                                let length: usize = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .map_or(0, |v| v.trim().parse().unwrap());
                                if buffer.len() >= end + 4 + length {
                                    buffer.drain(..end + 4 + length);
                                    break;
                                }
                            }
                        }
                        let (status, body) = if answered.fetch_add(1, Ordering::SeqCst) < busy_replies {
                            ("503 Service Unavailable", BUSY.as_bytes())
                        } else {
                            ("200 OK", REPLY)
                        };
                        let head = format!(
                            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        socket.write_all(head.as_bytes()).await.unwrap();
                        socket.write_all(body).await.unwrap();
                        socket.flush().await.unwrap();
                    }
                });
            }
        });
        (url, accepted)
    }

    trait AsyncReadWrite: AsyncRead + AsyncWrite + Unpin + Send {}
    impl<T: AsyncRead + AsyncWrite + Unpin + Send> AsyncReadWrite for T {}

    fn client() -> AgentClient {
        AgentClient::new(UrlGuard::new(NetworkMode::Dev), AgentTls::new(None).unwrap())
    }

    /// A client that trusts `ca` besides the system's authorities.
    fn client_trusting(ca: &TestCa) -> AgentClient {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), ca.ca_pem()).unwrap();
        AgentClient::new(UrlGuard::new(NetworkMode::Dev), AgentTls::new(Some(file.path())).unwrap())
    }

    async fn call(client: &AgentClient, url: &str) -> Result<Bytes, Failure> {
        let idle = IdleClock::start(Duration::from_secs(5), Arc::new(Activity::default()));
        let body = Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message/send\"}");
        let endpoint = AgentEndpoint::parse(url);
        let call =
            AgentCall { url, endpoint: endpoint.as_ref(), body, traceparent: None, a2a_version: None, fields: &[] };
        client.call(call, &idle).await
    }

    #[tokio::test(start_paused = true)]
    async fn the_idle_clock_runs_out_a_timeout_after_the_last_sign_of_life() {
        let activity = Arc::new(Activity::default());
        let idle = IdleClock::start(Duration::from_secs(10), activity.clone());
        let started = Instant::now();
        // A timer set far out, as a pooled connection's may be.
        let mut timer = Box::pin(tokio::time::sleep(Duration::from_secs(3600)));
        let silence = idle.silence(timer.as_mut());
        tokio::pin!(silence);
        for at in [6, 12] {
            tokio::select! {
                () = &mut silence => panic!("silent at {:?}, before the sign at {at} s", started.elapsed()),
                () = tokio::time::sleep_until(started + Duration::from_secs(at)) => activity.touch(),
            }
        }
        silence.await;
        assert_eq!(started.elapsed(), Duration::from_secs(22));
    }

    #[tokio::test]
    async fn consecutive_calls_to_an_agent_share_one_connection() {
        let (url, accepted) = agent(usize::MAX).await;
        let client = client();
        for _ in 0..5 {
            assert_eq!(call(&client, &url).await.unwrap(), REPLY);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_agent_closed_while_unused_is_replaced_not_reported() {
        let (url, accepted) = agent(1).await;
        let client = client();
        for _ in 0..5 {
            assert_eq!(call(&client, &url).await.unwrap(), REPLY);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 5);
    }

    #[tokio::test]
    async fn a_busy_answer_keeps_its_connection_for_the_next_call() {
        let (url, accepted) = agent_busy_at_first(usize::MAX, 2, None).await;
        let client = client();
        for _ in 0..2 {
            let failure = call(&client, &url).await.unwrap_err();
            assert!(matches!(failure, Failure::Busy { status: 503, .. }), "{failure:?}");
        }
        assert_eq!(call(&client, &url).await.unwrap(), REPLY);
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn https_agents_certified_by_a_trusted_authority_are_called_over_one_tls_connection() {
        let ca = TestCa::new();
        let (url, accepted) = tls_agent(&ca, &["localhost"]).await;
        let client = client_trusting(&ca);
        for _ in 0..3 {
            assert_eq!(call(&client, &url).await.unwrap(), REPLY);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn an_agent_certified_for_its_ip_address_is_reached_by_that_address() {
        let ca = TestCa::new();
        let (url, _) = tls_agent(&ca, &["127.0.0.1"]).await;
        let by_address = url.replace("https://localhost", "https://127.0.0.1");
        assert_eq!(call(&client_trusting(&ca), &by_address).await.unwrap(), REPLY);
    }

    #[tokio::test]
    async fn an_untrusted_or_misnamed_certificate_is_refused_not_retried() {
        let ca = TestCa::new();
        let (url, _) = tls_agent(&ca, &["localhost"]).await;
        let untrusted = call(&client(), &url).await.unwrap_err();
        assert!(!untrusted.is_retryable());
        assert!(
            matches!(&untrusted, Failure::Refused(reason) if reason.contains("TLS handshake") && reason.contains("UnknownIssuer")),
            "{untrusted:?}"
        );

        let (other_name, _) = tls_agent(&ca, &["agent.internal"]).await;
        let misnamed = call(&client_trusting(&ca), &other_name).await.unwrap_err();
        assert!(matches!(&misnamed, Failure::Refused(reason) if reason.contains("not valid for name")), "{misnamed:?}");
    }

    #[tokio::test]
    async fn an_https_url_never_reuses_a_plain_connection_to_the_same_host_and_port() {
        let (url, accepted) = agent(usize::MAX).await;
        let client = client();
        assert_eq!(call(&client, &url).await.unwrap(), REPLY);
        // Same host and port, now asked for TLS: the plain agent cannot
        // answer a handshake, and the kept plain connection must not be used.
        let failure = call(&client, &url.replace("http://", "https://")).await.unwrap_err();
        assert!(matches!(&failure, Failure::Refused(reason) if reason.contains("TLS handshake")), "{failure:?}");
        assert_eq!(accepted.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn retry_after_is_read_as_seconds_or_as_an_http_date() {
        assert_eq!(parse_retry_after(" 7 "), Some(Duration::from_secs(7)));
        let in_a_minute = httpdate::fmt_http_date(std::time::SystemTime::now() + Duration::from_secs(60));
        let after = parse_retry_after(&in_a_minute).unwrap();
        assert!(after > Duration::from_secs(55) && after <= Duration::from_secs(60), "{after:?}");
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), Some(Duration::ZERO), "a date passed");
        assert_eq!(parse_retry_after("soon"), None);
    }
}

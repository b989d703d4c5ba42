//! The HTTP leg to an agent: JSON-RPC posts and SSE streams, with the SSRF
//! guard at every dispatch (GW-3), the idle timeout (GW-4), size caps (GW-2)
//! and the classification of a failure into "try later" (busy, dropped,
//! silent, unreachable) or "the agent's answer".
//!
//! Agents are reached over plain HTTP or over TLS (https URLs), trusting the
//! system's certificate authorities and any the operator adds.
//!
//! Connections are HTTP/1 keep-alive connections, pooled per agent and
//! driven by the task that makes the call: a request is written, and its
//! reply read, without handing anything to another task. A proxy spends
//! most of its time on such hand-offs (waking a connection task, waiting to
//! be woken back); here a forwarded request costs none.

use std::{
    collections::HashMap,
    future::poll_fn,
    io,
    net::{IpAddr, SocketAddr},
    path::Path,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
    task::{Context, Poll},
    time::Duration,
};

use agentmesh_netguard::{CheckedUrl, UrlGuard};
use bytes::{Bytes, BytesMut};
use futures::FutureExt;
use http::{
    Request, Response, StatusCode,
    header::{self, HeaderValue},
};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, client::conn::http1};
use hyper_util::rt::TokioIo;
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::TcpStream,
    sync::{mpsc, watch},
    time::Instant,
};
use tokio_rustls::{TlsConnector, client::TlsStream};

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
    pub url: &'a str,
    pub body: Bytes,
    pub traceparent: Option<&'a str>,
    /// The A2A protocol version the caller asked for, passed on unchanged.
    pub a2a_version: Option<&'a str>,
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

/// Why the certificate authorities for https agents could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct TlsSetupError {
    path: String,
    reason: String,
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
            let failed = |reason: String| TlsSetupError { path: path.display().to_string(), reason };
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
}

impl AgentClient {
    /// A client whose pool forgets unused connections in the background;
    /// call within a Tokio runtime.
    pub fn new(guard: UrlGuard, tls: AgentTls) -> Self {
        let pool = Arc::new(Pool::default());
        tokio::spawn(Pool::prune_while_used(Arc::downgrade(&pool)));
        Self { guard: Arc::new(guard), tls, pool }
    }

    /// Posts a JSON-RPC request and returns the agent's JSON reply, unless
    /// the target stays silent past the idle clock.
    pub async fn call(&self, call: AgentCall<'_>, idle: &mut IdleClock) -> Result<Bytes, Failure> {
        let (mut connection, response) = tokio::select! {
            sent = self.send(&call, false) => sent?,
            () = idle.silence() => return Err(Failure::IdleTimeout(idle.timeout)),
        };
        let body = read_capped(&mut connection, response, idle).await?;
        self.pool.give_back(connection);
        Ok(body)
    }

    /// Posts a streaming JSON-RPC request and returns the accepted stream,
    /// to be read with [`pump_events`].
    pub async fn open_stream(&self, call: AgentCall<'_>, idle: &mut IdleClock) -> Result<AgentStream, Failure> {
        tokio::select! {
            sent = self.send(&call, true) => sent.map(|(connection, response)| AgentStream {
                connection,
                body: response.into_body(),
            }),
            () = idle.silence() => Err(Failure::IdleTimeout(idle.timeout)),
        }
    }

    async fn send(&self, call: &AgentCall<'_>, stream: bool) -> Result<(AgentConnection, Response<Incoming>), Failure> {
        // GW-3: the record may have been poisoned after registration. The
        // connection goes to the addresses checked here, so no later lookup
        // can swap them (DNS rebinding).
        let checked = self.guard.check(call.url).await.map_err(|rejected| Failure::Refused(rejected.to_string()))?;
        let (connection, response) = match self.pool.take(origin(&checked)) {
            Some(mut reused) => match reused.send(build_request(&checked, call, stream)?).await {
                Ok(response) => (reused, response),
                // The agent closed the unused connection as it was picked up
                // (its keep-alive ran out): no reply had begun, so the request
                // goes once more on a new connection. Should the agent have
                // taken it in after all, it recognises the repeat by its
                // message id, as it does a redelivery from the queue.
                Err(_) => self.send_on_new_connection(&checked, call, stream).await?,
            },
            None => self.send_on_new_connection(&checked, call, stream).await?,
        };
        if let Err(failure) = classify_status(&response) {
            if matches!(failure, Failure::Busy { .. }) {
                self.keep_after_busy(connection, response).await;
            }
            return Err(failure);
        }
        Ok((connection, response))
    }

    /// Keeps the connection of a busy answer for the next call, once its
    /// short body is read: under load busy answers are routine, and each
    /// would otherwise cost a new connection. A body that is long or slow
    /// to come closes the connection instead.
    async fn keep_after_busy(&self, mut connection: AgentConnection, response: Response<Incoming>) {
        let body = Limited::new(response.into_body(), BUSY_BODY_LIMIT).collect();
        let read = tokio::time::timeout(BUSY_BODY_WAIT, connection.drive(body)).await;
        if matches!(read, Ok(Ok(Ok(_)))) {
            self.pool.give_back(connection);
        }
    }

    async fn send_on_new_connection(
        &self,
        checked: &CheckedUrl,
        call: &AgentCall<'_>,
        stream: bool,
    ) -> Result<(AgentConnection, Response<Incoming>), Failure> {
        let mut connection = AgentConnection::open(checked, &self.tls).await?;
        let response = connection.send(build_request(checked, call, stream)?).await?;
        Ok((connection, response))
    }
}

fn build_request(checked: &CheckedUrl, call: &AgentCall<'_>, stream: bool) -> Result<Request<Full<Bytes>>, Failure> {
    let url = checked.url();
    let accept = if stream { "text/event-stream" } else { "application/json" };
    let mut request = Request::post(&url[url::Position::BeforePath..url::Position::AfterQuery])
        .header(header::HOST, authority(checked))
        .header(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))
        .header(header::ACCEPT, HeaderValue::from_static(accept));
    if let Some(traceparent) = call.traceparent {
        request = request.header("traceparent", traceparent);
    }
    if let Some(version) = call.a2a_version {
        request = request.header("A2A-Version", version);
    }
    request.body(Full::new(call.body.clone())).map_err(|e| Failure::Refused(format!("{}: {e}", checked.as_str())))
}

/// `host[:port]` as the URL spells it, for the Host header.
fn authority(checked: &CheckedUrl) -> &str {
    let url = checked.url();
    &url[url::Position::BeforeHost..url::Position::AfterPort]
}

/// `scheme://host[:port]`: the pool's key, so that a plain connection never
/// serves an https URL on the same host and port.
fn origin(checked: &CheckedUrl) -> &str {
    &checked.url()[..url::Position::AfterPort]
}

fn classify_status(response: &Response<Incoming>) -> Result<(), Failure> {
    let status = response.status();
    if status == StatusCode::SERVICE_UNAVAILABLE || status == StatusCode::TOO_MANY_REQUESTS {
        let retry_after =
            response.headers().get(header::RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(parse_retry_after);
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

/// An agent's accepted event stream, with the connection it arrives on.
pub struct AgentStream {
    connection: AgentConnection,
    body: Incoming,
}

/// Reads the server-sent events of an accepted stream and sends the data
/// of each to `events`, until the agent ends the stream or falls silent.
/// The stream is read to its end even when `events` is closed: a caller that
/// hangs up does not abort the agent's work (GW-4). Every event restarts the
/// idle clock.
pub async fn pump_events(
    stream: AgentStream,
    idle: &mut IdleClock,
    mut on_event: impl FnMut(),
    events: mpsc::Sender<Bytes>,
) -> Result<(), Failure> {
    let AgentStream { mut connection, mut body } = stream;
    let mut parser = SseParser::default();
    let mut listening = true;
    loop {
        let frame = tokio::select! {
            frame = connection.drive(body.frame()) => frame?,
            () = idle.silence() => return Err(Failure::IdleTimeout(idle.timeout)),
        };
        let Some(frame) = frame else { return Ok(()) };
        let frame = frame.map_err(|e| Failure::Dropped(describe(&e)))?;
        let Ok(chunk) = frame.into_data() else { continue };
        for data in parser.push(&chunk)? {
            idle.reset();
            on_event();
            if listening && events.send(data).await.is_err() {
                listening = false;
            }
        }
    }
}

/// Reads a whole reply body, driving its connection meanwhile.
async fn read_capped(
    connection: &mut AgentConnection,
    response: Response<Incoming>,
    idle: &mut IdleClock,
) -> Result<Bytes, Failure> {
    let mut body = response.into_body();
    if hyper::body::Body::size_hint(&body).lower() > MAX_REPLY_BYTES as u64 {
        return Err(Failure::TooLarge);
    }
    let mut buffer = BytesMut::new();
    loop {
        let frame = tokio::select! {
            frame = connection.drive(body.frame()) => frame?,
            () = idle.silence() => return Err(Failure::IdleTimeout(idle.timeout)),
        };
        let Some(frame) = frame else { return Ok(buffer.freeze()) };
        let frame = frame.map_err(|e| Failure::Dropped(describe(&e)))?;
        if let Ok(chunk) = frame.into_data() {
            if buffer.len() + chunk.len() > MAX_REPLY_BYTES {
                return Err(Failure::TooLarge);
            }
            buffer.extend_from_slice(&chunk);
        }
    }
}

/// The innermost cause, which says what actually went wrong.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// One keep-alive HTTP/1 connection to an agent. Nothing reads or writes its
/// socket unless its holder awaits something through
/// [`AgentConnection::drive`]: calls drive their own connection.
struct AgentConnection {
    origin: Arc<str>,
    sender: http1::SendRequest<Full<Bytes>>,
    driver: http1::Connection<TokioIo<AgentSocket>, Full<Bytes>>,
    /// The driver has finished: the connection is closed.
    closed: bool,
}

impl AgentConnection {
    async fn open(checked: &CheckedUrl, tls: &AgentTls) -> Result<Self, Failure> {
        let mut problems = Vec::new();
        for address in checked.socket_addrs() {
            let socket = match tokio::time::timeout(CONNECT_TIMEOUT, AgentSocket::connect(address, checked, tls)).await
            {
                Ok(Ok(socket)) => socket,
                Ok(Err(Failure::Unreachable(problem))) => {
                    problems.push(format!("{address}: {problem}"));
                    continue;
                }
                Ok(Err(refused)) => return Err(refused),
                Err(_) => {
                    problems.push(format!("{address}: no connection within {CONNECT_TIMEOUT:?}"));
                    continue;
                }
            };
            let (sender, driver) =
                http1::handshake(TokioIo::new(socket)).await.map_err(|e| Failure::Unreachable(describe(&e)))?;
            return Ok(Self { origin: origin(checked).into(), sender, driver, closed: false });
        }
        Err(Failure::Unreachable(problems.join("; ")))
    }

    /// Sends a request and waits for the head of the reply.
    async fn send(&mut self, request: Request<Full<Bytes>>) -> Result<Response<Incoming>, Failure> {
        let response = self.sender.send_request(request);
        self.drive(response).await?.map_err(|e| classify(&e))
    }

    /// Awaits `work` (a reply, a part of a body) while driving the
    /// connection, which is what makes progress on it.
    async fn drive<T>(&mut self, work: impl Future<Output = T>) -> Result<T, Failure> {
        let mut work = std::pin::pin!(work);
        let ended = if self.closed {
            Failure::Dropped("the agent closed the connection".to_owned())
        } else {
            tokio::select! {
                biased;
                done = &mut work => return Ok(done),
                ended = drive_until_closed(&mut self.driver, &mut self.closed) => ended,
            }
        };
        // The step that closed the connection may have delivered the end of
        // the reply; once closed, nothing more arrives.
        work.now_or_never().ok_or(ended)
    }

    /// Whether a pooled connection can take a request now. Takes in what the
    /// agent sent while it sat unused, such as its closing the connection.
    fn ready_now(&mut self) -> bool {
        if self.closed {
            return false;
        }
        let Self { sender, driver, closed, .. } = self;
        let ready = async {
            // The connection first: a close waiting in the socket must be
            // seen before the sender is asked.
            tokio::select! {
                biased;
                _ = drive_until_closed(driver, closed) => false,
                ready = poll_fn(|cx| sender.poll_ready(cx)) => ready.is_ok(),
            }
        };
        ready.now_or_never().unwrap_or(false)
    }
}

/// Drives a connection that has not closed yet until it closes.
async fn drive_until_closed(
    driver: &mut http1::Connection<TokioIo<AgentSocket>, Full<Bytes>>,
    closed: &mut bool,
) -> Failure {
    let result = driver.await;
    *closed = true;
    match result {
        Ok(()) => Failure::Dropped("the agent closed the connection".to_owned()),
        Err(e) => classify(&e),
    }
}

/// A failure once the request may have gone out: the agent may have it.
fn classify(error: &hyper::Error) -> Failure {
    Failure::Dropped(describe(error))
}

/// The byte stream to an agent: TCP, with TLS on top for https URLs.
enum AgentSocket {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AgentSocket {
    /// Connects to one checked address of the URL's host. A failure to reach
    /// it is [`Failure::Unreachable`] (the next address may do); a TLS
    /// handshake the gateway rejects is [`Failure::Refused`], since trying
    /// again cannot mend a certificate.
    async fn connect(address: SocketAddr, checked: &CheckedUrl, tls: &AgentTls) -> Result<Self, Failure> {
        let stream = TcpStream::connect(address).await.map_err(|e| Failure::Unreachable(e.to_string()))?;
        // Requests are small and answered at once: waiting to coalesce them
        // only adds latency.
        let _ = stream.set_nodelay(true);
        if checked.url().scheme() != "https" {
            return Ok(Self::Plain(stream));
        }
        let name = server_name(checked)?;
        match tls.connector.connect(name, stream).await {
            Ok(stream) => Ok(Self::Tls(Box::new(stream))),
            Err(e) => match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
                Some(rejected) => Err(Failure::Refused(format!(
                    "{}: the TLS handshake with the agent failed: {rejected}",
                    checked.as_str()
                ))),
                None => Err(Failure::Unreachable(format!("TLS handshake: {e}"))),
            },
        }
    }
}

/// The name the agent's certificate must carry: the URL's host name, or its
/// IP address when the URL names none.
fn server_name(checked: &CheckedUrl) -> Result<ServerName<'static>, Failure> {
    let invalid = || Failure::Refused(format!("{}: the host is not a valid TLS server name", checked.as_str()));
    match checked.url().host() {
        Some(url::Host::Domain(name)) => ServerName::try_from(name.to_owned()).map_err(|_| invalid()),
        Some(url::Host::Ipv4(ip)) => Ok(ServerName::IpAddress(IpAddr::V4(ip).into())),
        Some(url::Host::Ipv6(ip)) => Ok(ServerName::IpAddress(IpAddr::V6(ip).into())),
        None => Err(invalid()),
    }
}

impl AsyncRead for AgentSocket {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for AgentSocket {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            Self::Tls(stream) => Pin::new(stream).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            Self::Tls(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(stream) => stream.is_write_vectored(),
            Self::Tls(stream) => stream.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_flush(cx),
            Self::Tls(stream) => Pin::new(stream).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(stream) => Pin::new(stream).poll_shutdown(cx),
            Self::Tls(stream) => Pin::new(stream).poll_shutdown(cx),
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
            if since.elapsed() < IDLE_KEEP && connection.ready_now() {
                return Some(connection);
            }
        }
        None
    }

    fn give_back(&self, connection: AgentConnection) {
        if connection.closed {
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
    use std::sync::atomic::{AtomicUsize, Ordering};

    use agentmesh_echo_agent::TlsIdentity;
    use agentmesh_netguard::NetworkMode;
    use agentmesh_testkit::tls::TestCa;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
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
        let (_activity, silent) = watch::channel(0);
        let mut idle = IdleClock { timeout: Duration::from_secs(5), activity: silent };
        let body = Bytes::from_static(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"message/send\"}");
        client.call(AgentCall { url, body, traceparent: None, a2a_version: None }, &mut idle).await
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

    #[test]
    fn sse_parser_joins_split_chunks_and_multiline_data() {
        let mut parser = SseParser::default();
        assert!(parser.push(b"data: {\"a\"").unwrap().is_empty());
        let events = parser.push(b":1}\r\n\r\n: keep-alive\n\nevent: x\ndata: one\ndata: two\n\n").unwrap();
        assert_eq!(events, vec![Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"one\ntwo")]);
    }
}

//! The A2A listener: accepts connections, in the clear or in TLS, and runs
//! HTTP/1.1 exchanges on them, one request at a time per connection
//! (pipelined requests wait their turn in the buffer), each answered by a
//! [`Respond`]er (the gateway's is `http::Front`). A TLS caller that
//! chooses HTTP/2 by ALPN, or a clear-text one that opens with the HTTP/2
//! preface, is served by [`http2`] instead.
//!
//! A connection's task reads the request, awaits the reply and writes it;
//! it does not watch the socket while the reply is being made, so a caller
//! that hangs up never cancels a dispatch in flight (GW-4): the dispatch
//! finishes, and only writing its reply fails.

mod http2;

use std::{future::Future, io, path::Path, pin::Pin, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream::BoxStream};
use http::StatusCode;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_rustls::TlsAcceptor;
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

use crate::{
    agent_client::TlsSetupError,
    wire::{self, Framing, RequestHead, RequestMethod, WireError},
};

/// What answers the listener's requests.
pub trait Respond: Send + Sync + 'static {
    fn respond(&self, request: &RequestHead, body: Bytes) -> impl Future<Output = Reply> + Send;
}

/// How long a kept-alive connection may sit without a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a request may take to arrive once its first byte has.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bodies up to this size are copied behind their head, so that a reply is
/// one write; larger ones are written on their own.
const COPY_BODY_BELOW: usize = 64 << 10;
/// How long a write may wait for the caller to take any of it.
const WRITE_STALL: Duration = Duration::from_secs(30);
/// How long a refused caller's remaining input is read before closing.
const LINGER: Duration = Duration::from_secs(2);
/// Connections the A2A listener serves at once.
pub const MAX_CONNECTIONS: usize = 10_000;
/// The challenge of a 401: callers authenticate with a bearer token (a
/// workspace's, or a service account's).
const WWW_AUTHENTICATE: &str = "Bearer realm=\"agentmesh\"";
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// How the A2A listener serves its connections.
pub struct Listening {
    /// TLS on every connection, offering HTTP/2 and HTTP/1.1 by ALPN; none
    /// serves in the clear.
    pub tls: Option<TlsAcceptor>,
    /// Connections served at once.
    pub max_connections: usize,
    /// How long requests in flight may take to be answered after shutdown.
    pub grace: Duration,
}

/// TLS for the A2A listener from a PEM certificate chain and private key,
/// offering HTTP/2 first, then HTTP/1.1.
pub fn tls_acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsSetupError> {
    use rustls_pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certificates = CertificateDer::pem_file_iter(cert_file)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .map_err(|error| TlsSetupError::new(cert_file, error))?;
    if certificates.is_empty() {
        return Err(TlsSetupError::new(cert_file, "holds no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|error| TlsSetupError::new(key_file, error))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring provides the default TLS versions")
        .with_no_client_auth()
        .with_single_cert(certificates, key)
        .map_err(|error| TlsSetupError::new(key_file, format!("does not go with the certificate: {error}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

/// What the listener sends back for one request.
pub struct Reply {
    pub status: StatusCode,
    pub content_type: &'static str,
    /// Seconds, for `Retry-After`.
    pub retry_after: Option<u64>,
    /// The methods a path allows, for `405 Method Not Allowed`.
    pub allow: Option<&'static str>,
    pub body: ReplyBody,
}

pub enum ReplyBody {
    Full(Bytes),
    /// Server-sent events, each item one or more whole events, written as
    /// they come.
    Events(BoxStream<'static, Bytes>),
}

impl Reply {
    pub fn json(status: StatusCode, body: Bytes) -> Self {
        Self { status, content_type: "application/json", retry_after: None, allow: None, body: ReplyBody::Full(body) }
    }

    pub fn text(status: StatusCode, body: &'static str) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            retry_after: None,
            allow: None,
            body: ReplyBody::Full(Bytes::from_static(body.as_bytes())),
        }
    }

    pub fn events(events: BoxStream<'static, Bytes>) -> Self {
        Self {
            status: StatusCode::OK,
            // As the A2A SDKs' servers label theirs (the format is always UTF-8).
            content_type: "text/event-stream; charset=utf-8",
            retry_after: None,
            allow: None,
            body: ReplyBody::Events(events),
        }
    }
}

/// Serves `front` on `listener` as `listening` says until `shutdown`; then
/// stops accepting, closes idle connections, and waits up to its grace
/// period for requests in flight to be answered.
pub async fn serve<R: Respond>(
    listener: TcpListener,
    front: Arc<R>,
    listening: Listening,
    shutdown: CancellationToken,
) {
    let Listening { tls, max_connections, grace } = listening;
    let connections = TaskTracker::new();
    // Past the limit the listener stops accepting, and callers wait in the
    // kernel's backlog rather than costing the gateway a task and buffers
    // each.
    let room = Arc::new(tokio::sync::Semaphore::new(max_connections));
    loop {
        let accepted = tokio::select! {
            accepted = async {
                let permit = room.clone().acquire_owned().await.expect("the semaphore is never closed");
                (permit, listener.accept().await)
            } => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            (permit, Ok((stream, _))) => {
                // Replies are small and written whole: coalescing only delays them.
                let _ = stream.set_nodelay(true);
                let served = serve_connection(stream, tls.clone(), front.clone(), shutdown.clone());
                connections.spawn(async move {
                    served.await;
                    drop(permit);
                });
            }
            // Out of file descriptors, or a connection reset before it was
            // accepted: the listener itself is fine, so pause and go on.
            (_, Err(error)) => {
                tracing::warn!(%error, "cannot accept an A2A connection");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    connections.close();
    if tokio::time::timeout(grace, connections.wait()).await.is_err() {
        tracing::warn!(open = connections.len(), "grace period over; closing A2A connections still answering");
    }
}

/// Serves one accepted connection, after its TLS handshake if any.
async fn serve_connection<R: Respond>(
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    front: Arc<R>,
    shutdown: CancellationToken,
) {
    let Some(acceptor) = tls else {
        return Connection::new(stream).serve(front, shutdown).await;
    };
    // A caller that fails its handshake, or never finishes it, gets nothing
    // more: it has not sent anything an HTTP answer could be about.
    let Ok(Ok(stream)) = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await else { return };
    if stream.get_ref().1.alpn_protocol() == Some(b"h2") {
        http2::serve(stream, front, shutdown).await;
    } else {
        Connection::new(stream).serve(front, shutdown).await;
    }
}

/// Why a connection stops taking requests.
enum Stop {
    /// Closed by the caller, timed out while idle, or shut down.
    Quietly,
    /// The caller opened with the HTTP/2 preface, not a request.
    Http2,
    /// The request cannot be served; the reply says why, then the
    /// connection closes.
    Refuse(Reply),
}

struct Connection<S> {
    io: S,
    input: BytesMut,
    output: Vec<u8>,
}

impl<S: AsyncRead + AsyncWrite + Unpin + Send + 'static> Connection<S> {
    fn new(io: S) -> Self {
        Self { io, input: BytesMut::with_capacity(8 << 10), output: Vec::with_capacity(4 << 10) }
    }

    async fn serve<R: Respond>(mut self, front: Arc<R>, shutdown: CancellationToken) {
        let stopped = shutdown.clone().cancelled_owned();
        let timer = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(stopped, timer);
        let mut first = true;
        loop {
            let (head, body) = match self.next_request(first, &mut stopped, &mut timer).await {
                Ok(request) => request,
                Err(Stop::Quietly) => return self.close().await,
                Err(Stop::Http2) => {
                    let io = http2::Prefixed::new(self.input.freeze(), self.io);
                    return http2::serve(io, front, shutdown).await;
                }
                Err(Stop::Refuse(reply)) => {
                    if self.write(reply, Terms { keep_alive: false, head_only: false, http_1_1: true }).await.is_ok() {
                        self.linger().await;
                    }
                    return;
                }
            };
            first = false;
            let reply = front.respond(&head, body).await;
            let terms = Terms {
                // Once shutdown began, each connection's next reply is its last.
                keep_alive: head.keep_alive() && !shutdown.is_cancelled(),
                head_only: head.method == RequestMethod::Head,
                http_1_1: head.minor_version >= 1,
            };
            match self.write(reply, terms).await {
                Ok(true) => {}
                Ok(false) => return self.close().await,
                Err(_) => return,
            }
        }
    }

    /// Ends the connection's sending half: over TLS, this is the
    /// `close_notify` that tells the caller the reply was not cut short.
    async fn close(&mut self) {
        let _ = tokio::time::timeout(LINGER, self.io.shutdown()).await;
    }

    /// Closes after a refusal the way RFC 9112 §9.6 asks: the sending half
    /// first, then what the caller still sends is read and dropped for a
    /// moment. Closing with unread input makes the kernel answer with a
    /// reset, which can destroy the refusal before the caller reads it.
    async fn linger(&mut self) {
        if self.io.shutdown().await.is_err() {
            return;
        }
        let drain = async {
            let mut sink = [0u8; 4096];
            while matches!(self.io.read(&mut sink).await, Ok(read) if read > 0) {}
        };
        let _ = tokio::time::timeout(LINGER, drain).await;
    }

    /// Reads the next request whole: its head, then its body. The first
    /// request of a connection may instead be the HTTP/2 preface.
    async fn next_request(
        &mut self,
        first: bool,
        stopped: &mut Pin<&mut WaitForCancellationFutureOwned>,
        timer: &mut Pin<&mut Sleep>,
    ) -> Result<(RequestHead, Bytes), Stop> {
        let idle_since = Instant::now();
        let mut deadline = None;
        let head = loop {
            match RequestHead::parse(&mut self.input) {
                Ok(Some(head)) => break head,
                Ok(None) => {}
                // The preface's first line (RFC 9113 §3.4) is no HTTP/1.1
                // request; hyper checks the rest of it.
                Err(_) if first && self.input.starts_with(b"PRI ") => return Err(Stop::Http2),
                Err(error) => return Err(refuse_head(error)),
            }
            if deadline.is_none() && self.input.is_empty() {
                self.wait_for_request(idle_since, stopped, timer).await?;
            } else {
                let until = *deadline.get_or_insert_with(|| Instant::now() + REQUEST_TIMEOUT);
                self.read_until(until, timer).await?;
            }
        };
        let framing = head.framing().map_err(|error| match error {
            WireError::UnsupportedCoding(_) => Stop::Refuse(crate::http::refusal(StatusCode::NOT_IMPLEMENTED, &error)),
            other => Stop::Refuse(crate::http::refusal(StatusCode::BAD_REQUEST, &other)),
        })?;
        if let Framing::Length(length) = framing
            && length > crate::http::MAX_REQUEST_BYTES as u64
        {
            return Err(Stop::Refuse(crate::http::request_too_large()));
        }
        let body_pending = match framing {
            Framing::Empty => false,
            Framing::Length(length) => (self.input.len() as u64) < length,
            _ => true,
        };
        if body_pending && head.expects_continue() {
            self.io.write_all(b"HTTP/1.1 100 Continue\r\n\r\n").await.map_err(|_| Stop::Quietly)?;
        }
        let read = wire::read_body(&mut self.io, &mut self.input, framing, crate::http::MAX_REQUEST_BYTES);
        let body = if body_pending {
            timer.as_mut().reset(deadline.unwrap_or_else(|| Instant::now() + REQUEST_TIMEOUT));
            tokio::select! {
                body = read => body,
                () = timer.as_mut() => return Err(Stop::Refuse(timed_out())),
            }
        } else {
            // The whole body is in the buffer: nothing to wait for.
            read.await
        };
        match body {
            Ok(body) => Ok((head, body)),
            Err(WireError::TooLarge { .. }) => Err(Stop::Refuse(crate::http::request_too_large())),
            Err(WireError::Truncated | WireError::Io(_)) => Err(Stop::Quietly),
            Err(other) => Err(Stop::Refuse(crate::http::refusal(StatusCode::BAD_REQUEST, &other))),
        }
    }

    /// Waits for the first bytes of the next request; the connection ends on
    /// shutdown, or once it has been idle for [`IDLE_TIMEOUT`] since
    /// `idle_since`. The timer is moved only when it fires early: moving it
    /// for every request would touch the runtime's timer wheel per message.
    async fn wait_for_request(
        &mut self,
        idle_since: Instant,
        stopped: &mut Pin<&mut WaitForCancellationFutureOwned>,
        timer: &mut Pin<&mut Sleep>,
    ) -> Result<(), Stop> {
        let quiet_until = idle_since + IDLE_TIMEOUT;
        loop {
            tokio::select! {
                biased;
                read = wire::read_more(&mut self.io, &mut self.input) => {
                    return match read {
                        Ok(0) | Err(_) => Err(Stop::Quietly),
                        Ok(_) => Ok(()),
                    };
                }
                () = stopped.as_mut() => return Err(Stop::Quietly),
                () = timer.as_mut() => {
                    if Instant::now() >= quiet_until {
                        return Err(Stop::Quietly);
                    }
                    timer.as_mut().reset(quiet_until);
                }
            }
        }
    }

    /// Reads more of a request that has begun, by `until`.
    async fn read_until(&mut self, until: Instant, timer: &mut Pin<&mut Sleep>) -> Result<(), Stop> {
        timer.as_mut().reset(until);
        tokio::select! {
            read = wire::read_more(&mut self.io, &mut self.input) => match read {
                Ok(0) | Err(_) => Err(Stop::Quietly),
                Ok(_) => Ok(()),
            },
            () = timer.as_mut() => Err(Stop::Refuse(timed_out())),
        }
    }

    /// Writes a reply; whether the connection can take another request.
    async fn write(&mut self, reply: Reply, terms: Terms) -> io::Result<bool> {
        let Terms { keep_alive, head_only, http_1_1 } = terms;
        let out = &mut self.output;
        out.clear();
        wire::status_line(out, reply.status);
        wire::field(out, "date", &wire::date_now());
        wire::field(out, "content-type", reply.content_type.as_bytes());
        if let Some(seconds) = reply.retry_after {
            wire::field(out, "retry-after", itoa::Buffer::new().format(seconds).as_bytes());
        }
        if let Some(allow) = reply.allow {
            wire::field(out, "allow", allow.as_bytes());
        }
        if reply.status == StatusCode::UNAUTHORIZED {
            // RFC 9110 §11.6.1: a 401 names the scheme that would succeed.
            wire::field(out, "www-authenticate", WWW_AUTHENTICATE.as_bytes());
        }
        match reply.body {
            ReplyBody::Full(body) => {
                wire::content_length(out, body.len());
                connection_field(out, keep_alive, http_1_1);
                out.extend_from_slice(b"\r\n");
                if head_only {
                    send(&mut self.io, out).await?;
                } else if body.len() < COPY_BODY_BELOW {
                    out.extend_from_slice(&body);
                    send(&mut self.io, out).await?;
                } else {
                    send(&mut self.io, out).await?;
                    send(&mut self.io, &body).await?;
                }
                Ok(keep_alive)
            }
            ReplyBody::Events(mut events) => {
                wire::field(out, "cache-control", b"no-cache");
                // HTTP/1.0 has no chunks: the stream ends when the
                // connection does.
                let chunked = http_1_1;
                if chunked {
                    wire::field(out, "transfer-encoding", b"chunked");
                }
                connection_field(out, keep_alive && chunked, http_1_1);
                out.extend_from_slice(b"\r\n");
                send(&mut self.io, out).await?;
                if head_only {
                    return Ok(false);
                }
                while let Some(event) = events.next().await {
                    let out = &mut self.output;
                    out.clear();
                    if chunked {
                        wire::chunk(out, &event);
                    } else {
                        out.extend_from_slice(&event);
                    }
                    send(&mut self.io, out).await?;
                }
                if chunked {
                    send(&mut self.io, wire::LAST_CHUNK).await?;
                }
                Ok(keep_alive && chunked)
            }
        }
    }
}

/// Writes `bytes` whole, unless the caller takes none of them for
/// [`WRITE_STALL`]: a caller that stops reading must not hold a task, and
/// the reply it waits on, forever.
async fn send<S: AsyncWrite + Unpin>(io: &mut S, bytes: &[u8]) -> io::Result<()> {
    match tokio::time::timeout(WRITE_STALL, io.write_all(bytes)).await {
        Ok(written) => written,
        Err(_stalled) => Err(io::ErrorKind::TimedOut.into()),
    }
}

/// How a reply is to be written, from its request.
#[derive(Clone, Copy)]
struct Terms {
    /// The connection stays open for another request afterwards.
    keep_alive: bool,
    /// HEAD: the head alone.
    head_only: bool,
    /// The caller speaks HTTP/1.1 (chunks, persistent by default).
    http_1_1: bool,
}

/// The `Connection` field where the default does not already say it:
/// `close` ending an HTTP/1.1 connection, `keep-alive` keeping an HTTP/1.0
/// one (RFC 9112 §9.3).
fn connection_field(out: &mut Vec<u8>, keep_alive: bool, http_1_1: bool) {
    match (keep_alive, http_1_1) {
        (false, true) => wire::field(out, "connection", b"close"),
        (true, false) => wire::field(out, "connection", b"keep-alive"),
        _ => {}
    }
}

fn refuse_head(error: WireError) -> Stop {
    Stop::Refuse(refuse_head_reply(error))
}

fn refuse_head_reply(error: WireError) -> Reply {
    let status = match error {
        WireError::HeadTooLarge | WireError::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    crate::http::refusal(status, &error)
}

fn timed_out() -> Reply {
    Reply::text(StatusCode::REQUEST_TIMEOUT, "the request did not arrive in time\n")
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::{io::AsyncReadExt, net::TcpStream, sync::Notify, task::JoinHandle};

    use super::*;

    /// Answers `/events` with two server-sent events, `/wait` once released
    /// (saying when it started and when it finished), `/head` with the
    /// request's method, target and `x-said` field, anything else with its
    /// path and body. Serves the HTTP/2 tests too.
    #[derive(Default)]
    pub(super) struct Echo {
        pub(super) waiting: Notify,
        pub(super) release: Notify,
        pub(super) finished: Notify,
    }

    impl Respond for Echo {
        async fn respond(&self, request: &RequestHead, body: Bytes) -> Reply {
            match request.path() {
                "/events" => {
                    let events = [Bytes::from_static(b"data: 1\n\n"), Bytes::from_static(b"data: 2\n\n")];
                    Reply::events(futures::stream::iter(events).boxed())
                }
                "/wait" => {
                    self.waiting.notify_one();
                    self.release.notified().await;
                    self.finished.notify_one();
                    Reply::text(StatusCode::OK, "released")
                }
                "/head" => {
                    let said = request.header("x-said").unwrap_or("-");
                    let head = format!("{:?} /head?{} {said}", request.method, request.query());
                    Reply::json(StatusCode::OK, Bytes::from(head))
                }
                path => Reply::json(StatusCode::OK, Bytes::from(format!("{path} {}", String::from_utf8_lossy(&body)))),
            }
        }
    }

    struct Server {
        address: SocketAddr,
        echo: Arc<Echo>,
        shutdown: CancellationToken,
        served: JoinHandle<()>,
    }

    async fn server() -> Server {
        server_with_limit(MAX_CONNECTIONS).await
    }

    async fn server_with_limit(max_connections: usize) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let echo = Arc::new(Echo::default());
        let shutdown = CancellationToken::new();
        let grace = Duration::from_secs(5);
        let listening = Listening { tls: None, max_connections, grace };
        let served = tokio::spawn(serve(listener, echo.clone(), listening, shutdown.clone()));
        Server { address, echo, shutdown, served }
    }

    impl Server {
        async fn connect(&self) -> TcpStream {
            TcpStream::connect(self.address).await.unwrap()
        }
    }

    /// Reads one whole reply (head and body, whatever its framing) as text.
    async fn reply(stream: &mut TcpStream, buffer: &mut BytesMut) -> String {
        let head = loop {
            if let Some(head) = wire::ResponseHead::parse(buffer).unwrap() {
                break head;
            }
            assert_ne!(wire::read_more(stream, buffer).await.unwrap(), 0, "closed before a reply");
        };
        let body = wire::read_body(stream, buffer, head.framing().unwrap(), usize::MAX).await.unwrap();
        let fields: String = head
            .fields
            .iter()
            .map(|(n, v)| format!("{}: {}\n", String::from_utf8_lossy(n), String::from_utf8_lossy(v)))
            .collect();
        format!("{}\n{fields}\n{}", head.status.as_u16(), String::from_utf8_lossy(&body))
    }

    async fn closed(stream: &mut TcpStream) -> bool {
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).await.is_ok() && rest.is_empty()
    }

    #[tokio::test]
    async fn requests_on_one_connection_are_answered_in_order_even_when_pipelined() {
        let server = server().await;
        let mut stream = server.connect().await;
        let mut buffer = BytesMut::new();
        stream.write_all(b"POST /a HTTP/1.1\r\nContent-Length: 3\r\n\r\noneGET /b HTTP/1.1\r\n\r\n").await.unwrap();
        assert!(reply(&mut stream, &mut buffer).await.ends_with("\n/a one"));
        assert!(reply(&mut stream, &mut buffer).await.ends_with("\n/b "));
        stream.write_all(b"POST /c HTTP/1.1\r\nContent-Length: 5\r\n\r\nthree").await.unwrap();
        let third = reply(&mut stream, &mut buffer).await;
        assert!(third.starts_with("200\n") && third.ends_with("\n/c three"), "{third}");
        assert!(third.contains("content-type: application/json\n") && third.contains("date: "), "{third}");
    }

    #[tokio::test]
    async fn a_client_expecting_100_continue_gets_it_before_sending_its_body() {
        let server = server().await;
        let mut stream = server.connect().await;
        stream.write_all(b"POST /a HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").await.unwrap();
        let mut interim = [0u8; 25];
        stream.read_exact(&mut interim).await.unwrap();
        assert_eq!(&interim, b"HTTP/1.1 100 Continue\r\n\r\n");
        stream.write_all(b"hello").await.unwrap();
        assert!(reply(&mut stream, &mut BytesMut::new()).await.ends_with("\n/a hello"));

        // A body sent along with its head needs no invitation.
        let mut stream = server.connect().await;
        stream.write_all(b"POST /b HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi").await.unwrap();
        let answer = reply(&mut stream, &mut BytesMut::new()).await;
        assert!(answer.starts_with("200\n") && answer.ends_with("\n/b hi"), "{answer}");
    }

    #[tokio::test]
    async fn chunked_request_bodies_are_put_together() {
        let server = server().await;
        let mut stream = server.connect().await;
        stream
            .write_all(b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n")
            .await
            .unwrap();
        assert!(reply(&mut stream, &mut BytesMut::new()).await.ends_with("\n/a abcde"));
    }

    #[tokio::test]
    async fn connections_close_when_asked_and_http_1_0_ones_unless_kept_alive() {
        let server = server().await;
        let mut stream = server.connect().await;
        stream.write_all(b"GET /a HTTP/1.1\r\nConnection: close\r\n\r\n").await.unwrap();
        assert!(reply(&mut stream, &mut BytesMut::new()).await.contains("connection: close\n"));
        assert!(closed(&mut stream).await);

        let mut stream = server.connect().await;
        stream.write_all(b"GET /a HTTP/1.0\r\n\r\n").await.unwrap();
        assert!(!reply(&mut stream, &mut BytesMut::new()).await.contains("connection:"));
        assert!(closed(&mut stream).await);

        let mut stream = server.connect().await;
        let mut buffer = BytesMut::new();
        stream.write_all(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        assert!(reply(&mut stream, &mut buffer).await.contains("connection: keep-alive\n"));
        stream.write_all(b"GET /b HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        assert!(reply(&mut stream, &mut buffer).await.ends_with("\n/b "));
    }

    #[tokio::test]
    async fn requests_that_cannot_be_read_safely_are_refused_and_their_connection_closed() {
        let server = server().await;
        let too_many_fields = format!("GET /a HTTP/1.1\r\n{}\r\n", "X-A: 1\r\n".repeat(101));
        for (request, status) in [
            ("POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n", "400"),
            ("POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n", "501"),
            ("POST /a HTTP/1.1\r\nContent-Length: 2097152\r\n\r\n", "413"),
            ("POST /a HTTP/1.1\r\nContent-Length: 1x\r\n\r\n", "400"),
            (too_many_fields.as_str(), "431"),
            ("GARBAGE\r\n\r\n", "400"),
        ] {
            let mut stream = server.connect().await;
            stream.write_all(request.as_bytes()).await.unwrap();
            let answer = reply(&mut stream, &mut BytesMut::new()).await;
            assert!(answer.starts_with(&format!("{status}\n")), "{request:?}: {answer}");
            assert!(answer.contains("connection: close\n"), "{answer}");
            assert!(closed(&mut stream).await, "{request:?}");
        }
    }

    #[tokio::test]
    async fn a_head_request_gets_the_head_alone() {
        let server = server().await;
        let mut stream = server.connect().await;
        let mut buffer = BytesMut::new();
        stream.write_all(b"HEAD /abc HTTP/1.1\r\n\r\nGET /d HTTP/1.1\r\n\r\n").await.unwrap();
        let head = loop {
            if let Some(head) = wire::ResponseHead::parse(&mut buffer).unwrap() {
                break head;
            }
            wire::read_more(&mut stream, &mut buffer).await.unwrap();
        };
        assert_eq!(head.header("content-length"), Some("5"), "the length a GET would have");
        // The next reply follows at once: the HEAD reply carried no body.
        assert!(reply(&mut stream, &mut buffer).await.ends_with("\n/d "));
    }

    #[tokio::test]
    async fn streamed_replies_are_chunked_in_http_1_1_and_end_the_connection_in_http_1_0() {
        let server = server().await;
        let mut stream = server.connect().await;
        stream.write_all(b"POST /events HTTP/1.1\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        assert!(raw.contains("content-type: text/event-stream; charset=utf-8\r\n"), "{raw:?}");
        assert!(raw.contains("transfer-encoding: chunked\r\n"), "{raw:?}");
        assert!(raw.ends_with("\r\n\r\n9\r\ndata: 1\n\n\r\n9\r\ndata: 2\n\n\r\n0\r\n\r\n"), "{raw:?}");

        let mut stream = server.connect().await;
        stream.write_all(b"POST /events HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").await.unwrap();
        let mut raw = String::new();
        stream.read_to_string(&mut raw).await.unwrap();
        assert!(!raw.contains("transfer-encoding"), "{raw:?}");
        assert!(raw.ends_with("\r\n\r\ndata: 1\n\ndata: 2\n\n"), "{raw:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_connections_are_closed_and_slow_requests_timed_out() {
        let server = server().await;
        let started = Instant::now();
        let mut idle = server.connect().await;
        assert!(closed(&mut idle).await);
        assert!(started.elapsed() >= IDLE_TIMEOUT);

        let started = Instant::now();
        let mut slow = server.connect().await;
        slow.write_all(b"POST /a HTTP/1.1\r\n").await.unwrap();
        let answer = reply(&mut slow, &mut BytesMut::new()).await;
        assert!(answer.starts_with("408\n"), "{answer}");
        assert!((REQUEST_TIMEOUT..IDLE_TIMEOUT).contains(&started.elapsed()), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn shutdown_closes_idle_connections_and_lets_requests_in_flight_finish() {
        let server = server().await;
        let mut idle = server.connect().await;
        idle.write_all(b"GET /a HTTP/1.1\r\n\r\n").await.unwrap();
        reply(&mut idle, &mut BytesMut::new()).await;
        let mut busy = server.connect().await;
        busy.write_all(b"GET /wait HTTP/1.1\r\n\r\n").await.unwrap();
        server.echo.waiting.notified().await;

        server.shutdown.cancel();
        assert!(closed(&mut idle).await);
        server.echo.release.notify_one();
        let answer = reply(&mut busy, &mut BytesMut::new()).await;
        assert!(answer.ends_with("\nreleased") && answer.contains("connection: close\n"), "{answer}");
        assert!(closed(&mut busy).await);
        server.served.await.unwrap();
        assert!(TcpStream::connect(server.address).await.is_err(), "still accepting after shutdown");
    }

    #[tokio::test(start_paused = true)]
    async fn a_caller_that_stops_reading_is_let_go_once_a_write_stalls() {
        let (mut caller, gateway_end) = tokio::io::duplex(1024);
        let served =
            tokio::spawn(Connection::new(gateway_end).serve(Arc::new(Echo::default()), CancellationToken::new()));
        // The echo of this body is far more than the pipe holds, and the
        // caller never reads it.
        let body = "x".repeat(256 << 10);
        let request = format!("POST /big HTTP/1.1\r\nContent-Length: {}\r\n\r\n{body}", body.len());
        caller.write_all(request.as_bytes()).await.unwrap();
        let started = tokio::time::Instant::now();
        served.await.unwrap();
        assert_eq!(started.elapsed().as_secs(), WRITE_STALL.as_secs());
    }

    #[tokio::test]
    async fn a_refused_caller_reads_the_refusal_whole_though_it_sent_more() {
        let server = server().await;
        let mut stream = server.connect().await;
        // A body the gateway will never read, behind a head it refuses.
        let mut request = b"POST /a HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec();
        request.extend(std::iter::repeat_n(b'x', 512 << 10));
        stream.write_all(&request).await.unwrap();
        stream.shutdown().await.unwrap();
        let mut raw = Vec::new();
        stream.read_to_end(&mut raw).await.expect("a clean close, not a reset");
        let raw = String::from_utf8_lossy(&raw);
        assert!(raw.starts_with("HTTP/1.1 501 "), "{raw}");
        assert!(raw.contains("gzip"), "{raw}");
    }

    #[tokio::test]
    async fn connections_past_the_limit_wait_until_one_closes() {
        let server = server_with_limit(2).await;
        let (mut first, mut second) = (server.connect().await, server.connect().await);
        let mut third = server.connect().await;
        third.write_all(b"GET /third HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buffer = BytesMut::new();
        for (stream, path) in [(&mut first, "/first"), (&mut second, "/second")] {
            stream.write_all(format!("GET {path} HTTP/1.1\r\n\r\n").as_bytes()).await.unwrap();
            assert!(reply(stream, &mut buffer).await.ends_with(&format!("{path} ")));
        }
        // The third waits in the backlog, unanswered, until the first is gone.
        let waiting = tokio::time::timeout(Duration::from_millis(200), wire::read_more(&mut third, &mut buffer)).await;
        assert!(waiting.is_err(), "the third connection was served past the limit");
        drop(first);
        assert!(reply(&mut third, &mut buffer).await.ends_with("/third "));
    }
}

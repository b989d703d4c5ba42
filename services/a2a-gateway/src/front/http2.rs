//! HTTP/2 on the A2A listener, through hyper: chosen by ALPN on a TLS
//! connection, or by a caller that opens a clear-text connection with the
//! HTTP/2 preface (prior knowledge, RFC 9113 §3.3).
//!
//! HTTP/2's framing, flow control and stream multiplexing are hyper's; each
//! stream's request is put into the same [`RequestHead`] an HTTP/1.1
//! request becomes, so both versions pass the same checks (field count,
//! head size) and reach the same [`Respond`]er.

use std::{
    convert::Infallible,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use http::{HeaderValue, Method, Request, Response, header};
use http_body_util::{BodyExt, Empty, Full, Limited, StreamBody, combinators::UnsyncBoxBody};
use hyper::{body::Frame, body::Incoming, server::conn::http2, service::service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::{
    io::{AsyncRead, AsyncWrite},
    sync::mpsc,
};
use tokio_util::sync::CancellationToken;

use super::{REQUEST_TIMEOUT, Reply, ReplyBody, Respond, WRITE_STALL, WWW_AUTHENTICATE, timed_out};
use crate::wire::{self, RequestHead, WireError};

/// Streams one connection may have open at once.
const MAX_STREAMS: u32 = 256;
/// How often a connection's peer is pinged, so that one that vanished
/// without closing is noticed.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
/// How long a ping may go unanswered before the connection is closed.
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(20);

type Body = UnsyncBoxBody<Bytes, io::Error>;

/// Serves HTTP/2 on `io` until the caller closes it or `shutdown`; then
/// refuses new streams (GOAWAY) and lets those in flight finish.
pub(super) async fn serve<S, R>(io: S, front: Arc<R>, shutdown: CancellationToken)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    R: Respond,
{
    let service = service_fn(move |request| {
        let front = front.clone();
        async move { Ok::<_, Infallible>(answer(front, request).await) }
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_STREAMS)
        .max_header_list_size(wire::MAX_HEAD_BYTES as u32)
        .keep_alive_interval(KEEP_ALIVE)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => return,
        () = shutdown.cancelled() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

async fn answer<R: Respond>(front: Arc<R>, request: Request<Incoming>) -> Response<Body> {
    let (parts, incoming) = request.into_parts();
    let head = match head_of(&parts) {
        Ok(head) => head,
        Err(error) => return response(super::refuse_head_reply(error), false),
    };
    let body =
        match tokio::time::timeout(REQUEST_TIMEOUT, Limited::new(incoming, crate::http::MAX_REQUEST_BYTES).collect())
            .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
                return response(crate::http::request_too_large(), false);
            }
            // The caller reset the stream: whatever is answered goes nowhere.
            Ok(Err(_)) => {
                return response(Reply::text(http::StatusCode::BAD_REQUEST, "the request was cut off\n"), false);
            }
            Err(_) => return response(timed_out(), false),
        };
    let head_only = parts.method == Method::HEAD;
    // hyper drops a stream's future when the caller resets it; the dispatch
    // runs on a task of its own so that, as over HTTP/1.1, a caller that
    // hangs up never cancels a dispatch in flight (GW-4).
    let dispatch = tokio::spawn(async move { front.respond(&head, body).await });
    match dispatch.await {
        Ok(reply) => response(reply, head_only),
        Err(_panicked) => response(
            Reply::text(http::StatusCode::INTERNAL_SERVER_ERROR, "the request could not be answered\n"),
            head_only,
        ),
    }
}

/// The HTTP/1.1 head an HTTP/2 request stands for. hyper has checked its
/// pseudo-headers, and `http` admits no CR, LF or NUL in a field, so the
/// head written here parses as exactly the fields received.
fn head_of(parts: &http::request::Parts) -> Result<RequestHead, WireError> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(parts.method.as_str().as_bytes());
    head.extend_from_slice(b" ");
    head.extend_from_slice(parts.uri.path_and_query().map_or("/", |target| target.as_str()).as_bytes());
    head.extend_from_slice(b" HTTP/1.1\r\n");
    if let Some(authority) = parts.uri.authority() {
        wire::field(&mut head, "host", authority.as_str().as_bytes());
    }
    for (name, value) in &parts.headers {
        wire::field(&mut head, name.as_str(), value.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    RequestHead::parse(&mut BytesMut::from(&head[..]))?.ok_or(WireError::Malformed("an incomplete head"))
}

fn response(reply: Reply, head_only: bool) -> Response<Body> {
    let mut builder = Response::builder()
        .status(reply.status)
        .header(header::DATE, HeaderValue::from_bytes(&wire::date_now()).expect("an HTTP date is a field value"))
        .header(header::CONTENT_TYPE, reply.content_type);
    if let Some(seconds) = reply.retry_after {
        builder = builder.header(header::RETRY_AFTER, seconds);
    }
    if let Some(allow) = reply.allow {
        builder = builder.header(header::ALLOW, allow);
    }
    if reply.status == http::StatusCode::UNAUTHORIZED {
        builder = builder.header(header::WWW_AUTHENTICATE, HeaderValue::from_static(WWW_AUTHENTICATE));
    }
    let body = match reply.body {
        ReplyBody::Full(body) => {
            builder = builder.header(header::CONTENT_LENGTH, body.len());
            if head_only { empty() } else { Full::new(body).map_err(|never| match never {}).boxed_unsync() }
        }
        ReplyBody::Events(events) => {
            builder = builder.header(header::CACHE_CONTROL, "no-cache");
            if head_only { empty() } else { stalling_after(events, WRITE_STALL) }
        }
    };
    builder.body(body).expect("the reply's fields are valid")
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// A body of `events` that fails (and hyper resets the stream) once the
/// caller has taken nothing for `stall`. hyper asks for the next frame only
/// when the caller's flow-control window has room, so a deadline can only
/// be kept outside the body: a task feeds it through a one-event channel,
/// and a slot held in reserve carries the failure when a send times out.
fn stalling_after(mut events: futures::stream::BoxStream<'static, Bytes>, stall: Duration) -> Body {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, io::Error>>(2);
    tokio::spawn(async move {
        let Ok(spare) = sender.reserve().await else { return };
        while let Some(event) = events.next().await {
            match tokio::time::timeout(stall, sender.reserve()).await {
                Ok(Ok(slot)) => slot.send(Ok(event)),
                // The caller reset the stream: the events go nowhere.
                Ok(Err(_closed)) => return,
                Err(_stalled) => {
                    spare.send(Err(io::ErrorKind::TimedOut.into()));
                    return;
                }
            }
        }
    });
    let frames = tokio_stream::wrappers::ReceiverStream::new(receiver).map(|event| event.map(Frame::data));
    StreamBody::new(frames).boxed_unsync()
}

/// A connection whose first bytes were already read (by the HTTP/1.1 reader,
/// finding the HTTP/2 preface instead of a request): they are read again
/// first. hyper-util keeps its own such wrapper private.
pub(super) struct Prefixed<S> {
    prefix: Bytes,
    io: S,
}

impl<S> Prefixed<S> {
    pub(super) fn new(prefix: Bytes, io: S) -> Self {
        Self { prefix, io }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.is_empty() {
            return Pin::new(&mut self.io).poll_read(cx, buf);
        }
        let taken = self.prefix.len().min(buf.remaining());
        buf.put_slice(&self.prefix.split_to(taken));
        Poll::Ready(Ok(()))
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use agentmesh_testkit::tls::TestCa;
    use http_body_util::BodyExt;
    use hyper::client::conn::http2 as client;
    use rustls_pki_types::{CertificateDer, ServerName, pem::PemObject};
    use tokio::{
        io::{AsyncReadExt, AsyncWriteExt},
        net::{TcpListener, TcpStream},
    };

    use super::{
        super::{tests::Echo, *},
        *,
    };

    async fn listening(tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<Echo>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let echo = Arc::new(Echo::default());
        let listening = Listening { tls, max_connections: 16, grace: Duration::from_secs(5) };
        tokio::spawn(super::super::serve(listener, echo.clone(), listening, CancellationToken::new()));
        (address, echo)
    }

    async fn h2_client<S>(io: S) -> client::SendRequest<Full<Bytes>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (sender, connection) = client::handshake(TokioExecutor::new(), TokioIo::new(io)).await.unwrap();
        tokio::spawn(connection);
        sender
    }

    fn post(path: &str, body: &'static str) -> Request<Full<Bytes>> {
        Request::post(format!("http://gateway{path}"))
            .header("x-said", "hi")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    }

    async fn text(response: Response<Incoming>) -> String {
        String::from_utf8(response.into_body().collect().await.unwrap().to_bytes().to_vec()).unwrap()
    }

    /// A test CA's acceptor, and a connector that trusts it and offers `alpn`.
    fn tls_pair(alpn: &[&[u8]]) -> (TlsAcceptor, tokio_rustls::TlsConnector) {
        let ca = TestCa::new();
        let dir = tempfile::tempdir().unwrap();
        let files = ca.write(dir.path(), &["gateway.test"]);
        let acceptor = super::super::tls_acceptor(&files.cert_file, &files.key_file).unwrap();
        let mut roots = rustls::RootCertStore::empty();
        roots.add(CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        (acceptor, tokio_rustls::TlsConnector::from(Arc::new(config)))
    }

    #[tokio::test]
    async fn a_clear_text_caller_that_starts_with_the_preface_is_served_http_2() {
        let (address, _) = listening(None).await;
        let mut sender = h2_client(TcpStream::connect(address).await.unwrap()).await;
        let response = sender.send_request(post("/head?b=c", "")).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(response.headers()["content-type"], "application/json");
        assert!(response.headers().contains_key("date"));
        assert_eq!(text(response).await, "Post /head?b=c hi");
        let response = sender.send_request(post("/a", "one")).await.unwrap();
        assert_eq!(text(response).await, "/a one");

        // Streams share the connection, and events arrive as sent.
        let events = Request::get("http://gateway/events").body(Full::default()).unwrap();
        let response = sender.send_request(events).await.unwrap();
        assert_eq!(response.headers()["content-type"], "text/event-stream; charset=utf-8");
        assert_eq!(text(response).await, "data: 1\n\ndata: 2\n\n");
    }

    #[tokio::test]
    async fn tls_callers_choose_http_2_or_http_1_1_by_alpn() {
        let (acceptor, connector) = tls_pair(&[b"h2", b"http/1.1"]);
        let (address, _) = listening(Some(acceptor)).await;
        let name = ServerName::try_from("gateway.test").unwrap();
        let stream = connector.connect(name.clone(), TcpStream::connect(address).await.unwrap()).await.unwrap();
        assert_eq!(stream.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
        let response = h2_client(stream).await.send_request(post("/tls", "two")).await.unwrap();
        assert_eq!(response.version(), http::Version::HTTP_2);
        assert_eq!(text(response).await, "/tls two");

        let (acceptor, connector) = tls_pair(&[b"http/1.1"]);
        let (address, _) = listening(Some(acceptor)).await;
        let mut stream = connector.connect(name.clone(), TcpStream::connect(address).await.unwrap()).await.unwrap();
        stream.write_all(b"GET /one HTTP/1.1\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut reply = String::new();
        stream.read_to_string(&mut reply).await.unwrap();
        assert!(reply.starts_with("HTTP/1.1 200 OK\r\n") && reply.ends_with("\r\n\r\n/one "), "{reply}");

        // A caller that trusts another authority fails its handshake.
        let (_, stranger) = tls_pair(&[b"h2"]);
        assert!(stranger.connect(name, TcpStream::connect(address).await.unwrap()).await.is_err());
    }

    #[tokio::test]
    async fn a_stream_reset_by_its_caller_does_not_cancel_the_dispatch() {
        let (address, echo) = listening(None).await;
        let mut sender = h2_client(TcpStream::connect(address).await.unwrap()).await;
        let mut after = sender.clone();
        let waiting = echo.waiting.notified();
        let call = tokio::spawn(async move { sender.send_request(post("/wait", "")).await });
        waiting.await;
        call.abort();
        let _ = call.await;
        // A request after the reset on the same connection is answered only
        // once the server has read the reset (frames are read in order).
        assert_eq!(text(after.send_request(post("/a", "after")).await.unwrap()).await, "/a after");
        let finished = echo.finished.notified();
        echo.release.notify_one();
        // A dispatch cancelled with its stream would never finish.
        tokio::time::timeout(Duration::from_secs(10), finished).await.expect("the dispatch finished");
    }

    #[tokio::test]
    async fn oversized_bodies_and_heads_are_refused_as_over_http_1_1() {
        let (address, _) = listening(None).await;
        let mut sender = h2_client(TcpStream::connect(address).await.unwrap()).await;
        let large = Bytes::from(vec![b'x'; crate::http::MAX_REQUEST_BYTES + 1]);
        let request = Request::post("http://gateway/a").body(Full::new(large)).unwrap();
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::PAYLOAD_TOO_LARGE);

        let mut request = post("/a", "");
        for n in 0..120 {
            request.headers_mut().insert(format!("x-{n}").parse::<http::HeaderName>().unwrap(), HeaderValue::from(n));
        }
        let response = sender.send_request(request).await.unwrap();
        assert_eq!(response.status(), http::StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);
    }

    #[test]
    fn tls_files_that_cannot_be_used_are_refused_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let files = TestCa::new().write(dir.path(), &["gateway.test"]);
        let missing = dir.path().join("missing.pem");
        let error = super::super::tls_acceptor(&missing, &files.key_file).err().unwrap().to_string();
        assert!(error.starts_with(&format!("{}: ", missing.display())), "{error}");
        // A key in the place of the certificate holds no CERTIFICATE block.
        let error = super::super::tls_acceptor(&files.key_file, &files.key_file).err().unwrap().to_string();
        assert!(error.ends_with("holds no CERTIFICATE block"), "{error}");
        // Another certificate's key.
        let other = tempfile::tempdir().unwrap();
        let stranger = TestCa::new().write(other.path(), &["gateway.test"]);
        let error = super::super::tls_acceptor(&files.cert_file, &stranger.key_file).err().unwrap().to_string();
        assert!(error.contains("does not go with the certificate"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn events_the_caller_stops_taking_end_the_stream_in_an_error_once_a_write_stalls() {
        let events = futures::stream::iter([b"1", b"2", b"3"].map(|event| Bytes::from_static(event))).boxed();
        let mut body = stalling_after(events, Duration::from_secs(30));
        let started = tokio::time::Instant::now();
        // Nothing is taken until the writer has waited out the stall.
        tokio::time::sleep(Duration::from_secs(31)).await;
        let first = body.frame().await.unwrap().unwrap();
        assert_eq!(first.into_data().unwrap(), "1");
        let stalled = body.frame().await.unwrap().unwrap_err();
        assert_eq!(stalled.kind(), io::ErrorKind::TimedOut);
        assert!(body.frame().await.is_none());
        assert!(started.elapsed() >= Duration::from_secs(30));
    }
}

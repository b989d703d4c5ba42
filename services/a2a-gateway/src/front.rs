//! The A2A listener: accepts connections and runs HTTP/1.1 exchanges on
//! them, one request at a time per connection (pipelined requests wait
//! their turn in the buffer), each answered by [`Front::respond`].
//!
//! A connection's task reads the request, awaits the reply and writes it;
//! it does not watch the socket while the reply is being made, so a caller
//! that hangs up never cancels a dispatch in flight (GW-4): the dispatch
//! finishes, and only writing its reply fails.

use std::{io, pin::Pin, sync::Arc, time::Duration};

use bytes::{Bytes, BytesMut};
use futures::{StreamExt, stream::BoxStream};
use http::StatusCode;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream},
    time::{Instant, Sleep},
};
use tokio_util::{
    sync::{CancellationToken, WaitForCancellationFutureOwned},
    task::TaskTracker,
};

use crate::{
    http::Front,
    wire::{self, Framing, RequestHead, RequestMethod, WireError},
};

/// How long a kept-alive connection may sit without a request.
const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long a request may take to arrive once its first byte has.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);
/// Bodies up to this size are copied behind their head, so that a reply is
/// one write; larger ones are written on their own.
const COPY_BODY_BELOW: usize = 64 << 10;

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
            content_type: "text/event-stream",
            retry_after: None,
            allow: None,
            body: ReplyBody::Events(events),
        }
    }
}

/// Serves `front` on `listener` until `shutdown`; then stops accepting,
/// closes idle connections, and waits up to `grace` for requests in flight
/// to be answered.
pub async fn serve(listener: TcpListener, front: Arc<Front>, shutdown: CancellationToken, grace: Duration) {
    let connections = TaskTracker::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                connections.spawn(Connection::new(stream).serve(front.clone(), shutdown.clone()));
            }
            // Out of file descriptors, or a connection reset before it was
            // accepted: the listener itself is fine, so pause and go on.
            Err(error) => {
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

/// Why a connection stops taking requests.
enum Stop {
    /// Closed by the caller, timed out while idle, or shut down.
    Quietly,
    /// The request cannot be served; the reply says why, then the
    /// connection closes.
    Refuse(Reply),
}

struct Connection {
    io: TcpStream,
    input: BytesMut,
    output: Vec<u8>,
}

impl Connection {
    fn new(io: TcpStream) -> Self {
        // Replies are small and written whole: coalescing only delays them.
        let _ = io.set_nodelay(true);
        Self { io, input: BytesMut::with_capacity(8 << 10), output: Vec::with_capacity(4 << 10) }
    }

    async fn serve(mut self, front: Arc<Front>, shutdown: CancellationToken) {
        let stopped = shutdown.clone().cancelled_owned();
        let timer = tokio::time::sleep(IDLE_TIMEOUT);
        tokio::pin!(stopped, timer);
        loop {
            let (head, body) = match self.next_request(&mut stopped, &mut timer).await {
                Ok(request) => request,
                Err(Stop::Quietly) => return,
                Err(Stop::Refuse(reply)) => {
                    let _ = self.write(reply, Terms { keep_alive: false, head_only: false, http_1_1: true }).await;
                    return;
                }
            };
            let terms = Terms {
                // Once shutdown began, each connection's next reply is its last.
                keep_alive: head.keep_alive() && !shutdown.is_cancelled(),
                head_only: head.method == RequestMethod::Head,
                http_1_1: head.minor_version >= 1,
            };
            let reply = front.respond(&head, body).await;
            match self.write(reply, terms).await {
                Ok(true) => {}
                Ok(false) | Err(_) => return,
            }
        }
    }

    /// Reads the next request whole: its head, then its body.
    async fn next_request(
        &mut self,
        stopped: &mut Pin<&mut WaitForCancellationFutureOwned>,
        timer: &mut Pin<&mut Sleep>,
    ) -> Result<(RequestHead, Bytes), Stop> {
        let idle_since = Instant::now();
        let mut deadline = None;
        let head = loop {
            if let Some(head) = RequestHead::parse(&mut self.input).map_err(refuse_head)? {
                break head;
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
        match reply.body {
            ReplyBody::Full(body) => {
                wire::content_length(out, body.len());
                connection_field(out, keep_alive, http_1_1);
                out.extend_from_slice(b"\r\n");
                if head_only {
                    self.io.write_all(out).await?;
                } else if body.len() < COPY_BODY_BELOW {
                    out.extend_from_slice(&body);
                    self.io.write_all(out).await?;
                } else {
                    self.io.write_all(out).await?;
                    self.io.write_all(&body).await?;
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
                self.io.write_all(out).await?;
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
                    self.io.write_all(out).await?;
                }
                if chunked {
                    self.io.write_all(wire::LAST_CHUNK).await?;
                }
                Ok(keep_alive && chunked)
            }
        }
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
    let status = match error {
        WireError::HeadTooLarge | WireError::TooManyFields => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
        _ => StatusCode::BAD_REQUEST,
    };
    Stop::Refuse(crate::http::refusal(status, &error))
}

fn timed_out() -> Reply {
    Reply::text(StatusCode::REQUEST_TIMEOUT, "the request did not arrive in time\n")
}

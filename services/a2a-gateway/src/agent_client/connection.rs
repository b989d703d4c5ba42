//! One keep-alive HTTP/1.1 connection to an agent, which writes requests and
//! reads replies; what a call makes of a reply, and pooling, stay above it.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use tokio::{
    io::{AsyncRead, AsyncWriteExt, ReadBuf},
    time::Sleep,
};

use super::{AgentCall, AgentEndpoint, AgentTls, CONNECT_TIMEOUT, Failure, IDLE_KEEP, IdleClock, socket::AgentSocket};
use crate::wire::{self, BodyDecoder, Framing, ResponseHead, WireError};

/// How an exchange on a connection failed, and whether any of the reply
/// had come back (if not, and the connection was a reused one, the agent
/// most likely closed it unused and never saw the request).
pub(super) struct Exchanged {
    pub(super) replied: bool,
    pub(super) failure: Failure,
}

/// One keep-alive HTTP/1.1 connection to an agent, with its buffers and
/// the timer of the idle clocks of the calls made on it.
pub(super) struct AgentConnection {
    pub(super) origin: Arc<str>,
    pub(super) io: AgentIo,
    timer: Pin<Box<Sleep>>,
}

/// A connection's socket and buffers.
pub(super) struct AgentIo {
    socket: AgentSocket,
    input: BytesMut,
    output: Vec<u8>,
    /// Whether another request may follow on it: the last reply was read
    /// whole and the agent did not say it closes.
    pub(super) reusable: bool,
}

impl AgentConnection {
    pub(super) async fn open(
        endpoint: &AgentEndpoint,
        port: u16,
        addresses: &[IpAddr],
        tls: &AgentTls,
    ) -> Result<Self, Failure> {
        let mut problems = Vec::new();
        for address in addresses.iter().map(|ip| SocketAddr::new(*ip, port)) {
            let connecting = AgentSocket::connect(address, endpoint, tls);
            let socket = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
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
            return Ok(Self {
                origin: endpoint.origin.clone(),
                io: AgentIo {
                    socket,
                    input: BytesMut::with_capacity(16 << 10),
                    output: Vec::with_capacity(2 << 10),
                    reusable: true,
                },
                timer: Box::pin(tokio::time::sleep(IDLE_KEEP)),
            });
        }
        Err(Failure::Unreachable(problems.join("; ")))
    }

    /// Writes the request and reads the head of its reply, unless the
    /// target falls silent first.
    pub(super) async fn exchange(
        &mut self,
        idle: &IdleClock,
        endpoint: &AgentEndpoint,
        call: &AgentCall<'_>,
        stream: bool,
    ) -> Result<ResponseHead, Exchanged> {
        let Self { io, timer, .. } = self;
        tokio::select! {
            biased;
            head = io.exchange(endpoint, call, stream) => head,
            () = idle.silence(timer.as_mut()) => {
                Err(Exchanged { replied: true, failure: Failure::IdleTimeout(idle.timeout) })
            }
        }
    }

    /// Reads a whole reply body of at most `limit` bytes, unless the target
    /// falls silent first.
    pub(super) async fn read_body(
        &mut self,
        idle: &IdleClock,
        head: &ResponseHead,
        limit: usize,
    ) -> Result<Bytes, Failure> {
        let Self { io, timer, .. } = self;
        tokio::select! {
            biased;
            body = io.read_body(head, limit) => body,
            () = idle.silence(timer.as_mut()) => Err(Failure::IdleTimeout(idle.timeout)),
        }
    }

    /// The next piece of a streamed body (`None` at its end), unless the
    /// target falls silent first.
    pub(super) async fn next_piece(
        &mut self,
        idle: &IdleClock,
        body: &mut BodyDecoder,
    ) -> Result<Option<Bytes>, Failure> {
        let Self { io, timer, .. } = self;
        tokio::select! {
            biased;
            piece = io.next_piece(body) => piece,
            () = idle.silence(timer.as_mut()) => Err(Failure::IdleTimeout(idle.timeout)),
        }
    }
}

impl AgentIo {
    /// Writes the request and reads the head of its reply.
    async fn exchange(
        &mut self,
        endpoint: &AgentEndpoint,
        call: &AgentCall<'_>,
        stream: bool,
    ) -> Result<ResponseHead, Exchanged> {
        self.reusable = false;
        let out = &mut self.output;
        out.clear();
        out.extend_from_slice(b"POST ");
        out.extend_from_slice(endpoint.request_target().as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        wire::field(out, "host", endpoint.authority().as_bytes());
        wire::field(out, "content-type", b"application/json");
        let accept: &[u8] = if stream { b"text/event-stream" } else { b"application/json" };
        wire::field(out, "accept", accept);
        wire::content_length(out, call.body.len());
        if let Some(traceparent) = call.traceparent {
            wire::field(out, "traceparent", traceparent.as_bytes());
        }
        if let Some(version) = call.a2a_version {
            wire::field(out, "a2a-version", version.as_bytes());
        }
        for (name, value) in call.fields {
            wire::field(out, name, value.as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&call.body);
        let unanswered = |failure| Exchanged { replied: false, failure };
        self.socket.write_all(out).await.map_err(|e| unanswered(Failure::Dropped(e.to_string())))?;
        loop {
            match ResponseHead::parse(&mut self.input) {
                // Interim replies (100 Continue, 103 Early Hints) precede the
                // real one.
                Ok(Some(head)) if head.status.is_informational() => continue,
                Ok(Some(head)) => return Ok(head),
                Ok(None) => {}
                Err(error) => return Err(Exchanged { replied: true, failure: malformed(&error) }),
            }
            let replied = !self.input.is_empty();
            match wire::read_more(&mut self.socket, &mut self.input).await {
                Ok(0) => {
                    let failure = Failure::Dropped("the agent closed the connection".to_owned());
                    return Err(Exchanged { replied, failure });
                }
                Ok(_) => {}
                Err(error) => return Err(Exchanged { replied, failure: Failure::Dropped(error.to_string()) }),
            }
        }
    }

    /// Reads a whole reply body of at most `limit` bytes.
    pub(super) async fn read_body(&mut self, head: &ResponseHead, limit: usize) -> Result<Bytes, Failure> {
        let framing = head.framing().map_err(|error| malformed(&error))?;
        let body =
            wire::read_body(&mut self.socket, &mut self.input, framing, limit).await.map_err(|error| match error {
                WireError::TooLarge { .. } => Failure::TooLarge,
                WireError::Truncated | WireError::Io(_) => Failure::Dropped(error.to_string()),
                other => malformed(&other),
            })?;
        // Bytes past the reply would be a reply to no request.
        self.reusable = head.keep_alive() && framing != Framing::UntilClose && self.input.is_empty();
        Ok(body)
    }

    /// The next piece of a streamed body; `None` at its end.
    async fn next_piece(&mut self, body: &mut BodyDecoder) -> Result<Option<Bytes>, Failure> {
        loop {
            if let Some(piece) = body.decode(&mut self.input).map_err(|error| malformed(&error))? {
                return Ok(Some(piece));
            }
            if body.is_done() {
                return Ok(None);
            }
            match wire::read_more(&mut self.socket, &mut self.input).await {
                Ok(0) => {
                    body.end_of_input().map_err(|error| Failure::Dropped(error.to_string()))?;
                    return Ok(None);
                }
                Ok(_) => {}
                Err(error) => return Err(Failure::Dropped(error.to_string())),
            }
        }
    }

    /// Whether a pooled connection can take a request now: not if the agent
    /// closed it (or sent something unasked) while it sat unused.
    pub(super) fn ready_now(&mut self) -> bool {
        if !self.reusable {
            return false;
        }
        let mut context = Context::from_waker(Waker::noop());
        let mut probe = [0u8; 1];
        let mut probe = ReadBuf::new(&mut probe);
        matches!(Pin::new(&mut self.socket).poll_read(&mut context, &mut probe), Poll::Pending)
    }
}

/// A reply the gateway cannot read: the request may have been taken in.
pub(super) fn malformed(error: &WireError) -> Failure {
    Failure::Dropped(format!("the agent's reply is not valid HTTP/1.1: {error}"))
}

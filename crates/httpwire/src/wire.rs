//! HTTP/1.1 framing (RFC 9112) for both of the A2A gateway's legs: requests
//! from callers on the A2A listener, and replies from agents.
//!
//! The gateway forwards small JSON documents, and a general-purpose HTTP
//! stack spent more CPU per forwarded message than everything else the
//! gateway does (docs/benchmarks.md). This module does only what A2A over
//! JSON-RPC needs, on buffers a connection reuses: parse a head in place
//! (httparse), frame its body (Content-Length, chunked, or until close),
//! and write heads and chunks. What it does not understand it refuses with
//! an error; it never guesses a body's length.

use std::{io, ops::Range};

use bytes::{Bytes, BytesMut};
use http::StatusCode;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The largest head (start line and fields) read, and the largest trailer.
pub const MAX_HEAD_BYTES: usize = 64 << 10;
/// The most header fields a head may carry.
const MAX_FIELDS: usize = 100;
/// The longest chunk-size line, extensions included.
const MAX_CHUNK_LINE: usize = 1024;
/// How much a connection reads at a time.
const READ_CHUNK: usize = 16 << 10;

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the message head is larger than {MAX_HEAD_BYTES} bytes")]
    HeadTooLarge,
    #[error("the message head has more than {MAX_FIELDS} header fields")]
    TooManyFields,
    #[error("malformed message head: {0}")]
    Malformed(&'static str),
    #[error("transfer coding {0:?} is not supported (only chunked)")]
    UnsupportedCoding(String),
    #[error("malformed chunked body")]
    BadChunk,
    #[error("the connection closed in the middle of a message")]
    Truncated,
    #[error("the body is larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

impl From<httparse::Error> for WireError {
    fn from(error: httparse::Error) -> Self {
        match error {
            httparse::Error::TooManyHeaders => WireError::TooManyFields,
            httparse::Error::HeaderName => WireError::Malformed("invalid header name"),
            httparse::Error::HeaderValue => WireError::Malformed("invalid header value"),
            httparse::Error::Version => WireError::Malformed("not HTTP/1.0 or HTTP/1.1"),
            httparse::Error::Status => WireError::Malformed("invalid status code"),
            httparse::Error::Token => WireError::Malformed("invalid method"),
            httparse::Error::NewLine => WireError::Malformed("invalid line ending"),
        }
    }
}

/// The header fields of a head, kept as ranges of the head's own bytes: a
/// head costs one allocation for its field list, none per field.
#[derive(Debug, Clone)]
pub struct Fields {
    bytes: Bytes,
    fields: Vec<(Range<usize>, Range<usize>)>,
}

impl Fields {
    /// Where each parsed field's name and value lie in the buffer that
    /// starts at `base`, which becomes the head's bytes.
    fn locate(base: *const u8, parsed: &[httparse::Header<'_>]) -> Vec<(Range<usize>, Range<usize>)> {
        let offset = |slice: &[u8]| {
            let start = slice.as_ptr() as usize - base as usize;
            start..start + slice.len()
        };
        parsed.iter().map(|h| (offset(h.name.as_bytes()), offset(h.value))).collect()
    }

    /// Every field as (name, value), in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|(name, value)| (&self.bytes[name.clone()], &self.bytes[value.clone()]))
    }

    /// The values of the fields named `name` (any case), in order.
    pub fn all<'s>(&'s self, name: &str) -> impl Iterator<Item = &'s [u8]> {
        self.iter().filter(move |(n, _)| n.eq_ignore_ascii_case(name.as_bytes())).map(|(_, v)| v)
    }

    /// The first field named `name`, if its value is text.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.all(name).next().and_then(|v| std::str::from_utf8(v).ok())
    }

    /// Whether a comma-separated field (e.g. `Connection`) lists `token`.
    fn lists(&self, name: &str, token: &str) -> bool {
        self.all(name)
            .any(|value| value.split(|b| *b == b',').any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes())))
    }

    /// Whether the sender keeps the connection open after this message: the
    /// default of HTTP/1.1 unless it says `close`, the exception in HTTP/1.0.
    fn keep_alive(&self, minor_version: u8) -> bool {
        if self.lists("connection", "close") {
            return false;
        }
        minor_version >= 1 || self.lists("connection", "keep-alive")
    }

    /// The transfer codings of every Transfer-Encoding field, in order.
    fn transfer_codings(&self) -> Vec<&[u8]> {
        self.all("transfer-encoding")
            .flat_map(|value| value.split(|b| *b == b','))
            .map(<[u8]>::trim_ascii)
            .filter(|coding| !coding.is_empty())
            .collect()
    }

    /// The body's framing from Transfer-Encoding and Content-Length
    /// (RFC 9112 §6.3); `None` when neither is present.
    fn declared_framing(&self) -> Result<Option<Framing>, WireError> {
        let codings = self.transfer_codings();
        if !codings.is_empty() {
            if self.all("content-length").next().is_some() {
                // Both at once is how requests are smuggled past proxies.
                return Err(WireError::Malformed("both Transfer-Encoding and Content-Length"));
            }
            // Every coding is checked, not only the last: a body in a coding
            // the gateway cannot undo is one it cannot read (RFC 9112 §6.1),
            // and chunked twice is how a front and a back are made to
            // disagree on where a message ends.
            if let Some(other) = codings.iter().find(|coding| !coding.eq_ignore_ascii_case(b"chunked")) {
                return Err(WireError::UnsupportedCoding(String::from_utf8_lossy(other).into_owned()));
            }
            if codings.len() > 1 {
                return Err(WireError::Malformed("chunked applied more than once"));
            }
            return Ok(Some(Framing::Chunked));
        }
        let mut length = None;
        for value in self.all("content-length").flat_map(|v| v.split(|b| *b == b',')) {
            let value = value.trim_ascii();
            let parsed = (!value.is_empty() && value.len() <= 19 && value.iter().all(u8::is_ascii_digit))
                .then(|| value.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                .ok_or(WireError::Malformed("invalid Content-Length"))?;
            if length.is_some_and(|known| known != parsed) {
                return Err(WireError::Malformed("conflicting Content-Length values"));
            }
            length = Some(parsed);
        }
        Ok(length.map(Framing::Length))
    }
}

/// The length of a head httparse found complete, `None` while it is not;
/// either way, a head over [`MAX_HEAD_BYTES`] is refused.
fn head_length(parsed: httparse::Status<usize>, buffered: usize) -> Result<Option<usize>, WireError> {
    match parsed {
        httparse::Status::Complete(length) if length <= MAX_HEAD_BYTES => Ok(Some(length)),
        httparse::Status::Partial if buffered <= MAX_HEAD_BYTES => Ok(None),
        _ => Err(WireError::HeadTooLarge),
    }
}

/// How a message's body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the sender closes the connection (replies only).
    UntilClose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestMethod {
    Get,
    Head,
    Post,
    Delete,
    Other,
}

/// A request's start line and fields.
#[derive(Debug, Clone)]
pub struct RequestHead {
    pub method: RequestMethod,
    target: Range<usize>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor_version: u8,
    pub fields: Fields,
}

impl RequestHead {
    /// Parses a complete head at the start of `buffer` and takes it out;
    /// `None` while the head is incomplete.
    pub fn parse(buffer: &mut BytesMut) -> Result<Option<Self>, WireError> {
        let mut parsed = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut request = httparse::Request::new(&mut parsed);
        let Some(length) = head_length(request.parse(buffer)?, buffer.len())? else { return Ok(None) };
        let base = buffer.as_ptr();
        let method = match request.method.unwrap_or_default() {
            "GET" => RequestMethod::Get,
            "HEAD" => RequestMethod::Head,
            "POST" => RequestMethod::Post,
            "DELETE" => RequestMethod::Delete,
            _ => RequestMethod::Other,
        };
        let path = request.path.unwrap_or_default().as_bytes();
        let target_start = path.as_ptr() as usize - base as usize;
        let target = target_start..target_start + path.len();
        let minor_version = request.version.unwrap_or(1);
        let fields = Fields::locate(base, request.headers);
        let bytes = buffer.split_to(length).freeze();
        Ok(Some(Self { method, target, minor_version, fields: Fields { bytes, fields } }))
    }

    /// The request target's path, without its query, as sent.
    pub fn path(&self) -> &str {
        let target = std::str::from_utf8(&self.fields.bytes[self.target.clone()]).unwrap_or_default();
        // Proxies may send the absolute form (RFC 9112 §3.2.2).
        let target = if target.starts_with('/') {
            target
        } else {
            match target.split_once("://") {
                Some((_, rest)) => rest.find('/').map_or("/", |slash| &rest[slash..]),
                None => target,
            }
        };
        target.split(['?', '#']).next().unwrap_or_default()
    }

    /// The request target's query, without its `?`; empty without one.
    pub fn query(&self) -> &str {
        let target = std::str::from_utf8(&self.fields.bytes[self.target.clone()]).unwrap_or_default();
        let target = target.split('#').next().unwrap_or_default();
        target.split_once('?').map_or("", |(_, query)| query)
    }

    /// The first field named `name`, if its value is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    pub fn keep_alive(&self) -> bool {
        self.fields.keep_alive(self.minor_version)
    }

    /// Whether the client waits for `100 Continue` before sending its body.
    pub fn expects_continue(&self) -> bool {
        self.minor_version >= 1 && self.fields.lists("expect", "100-continue")
    }

    /// A request without Content-Length or Transfer-Encoding has no body.
    pub fn framing(&self) -> Result<Framing, WireError> {
        if self.minor_version == 0 && !self.fields.transfer_codings().is_empty() {
            // HTTP/1.0 has no transfer codings: its framing is faulty even
            // with a Content-Length beside (RFC 9112 §6.1).
            return Err(WireError::Malformed("Transfer-Encoding in an HTTP/1.0 request"));
        }
        Ok(self.fields.declared_framing()?.unwrap_or(Framing::Empty))
    }
}

/// A reply's status line and fields.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: StatusCode,
    pub minor_version: u8,
    pub fields: Fields,
}

impl ResponseHead {
    /// Parses a complete head at the start of `buffer` and takes it out;
    /// `None` while the head is incomplete.
    pub fn parse(buffer: &mut BytesMut) -> Result<Option<Self>, WireError> {
        let mut parsed = [httparse::EMPTY_HEADER; MAX_FIELDS];
        let mut response = httparse::Response::new(&mut parsed);
        let Some(length) = head_length(response.parse(buffer)?, buffer.len())? else { return Ok(None) };
        let status = StatusCode::from_u16(response.code.unwrap_or_default())
            .map_err(|_| WireError::Malformed("invalid status code"))?;
        let minor_version = response.version.unwrap_or(1);
        let fields = Fields::locate(buffer.as_ptr(), response.headers);
        let bytes = buffer.split_to(length).freeze();
        Ok(Some(Self { status, minor_version, fields: Fields { bytes, fields } }))
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.fields.get(name)
    }

    /// Whether the connection may carry another request after this reply.
    pub fn keep_alive(&self) -> bool {
        self.fields.keep_alive(self.minor_version)
    }

    /// How this reply's body ends (RFC 9112 §6.3), for a request that was
    /// not HEAD.
    pub fn framing(&self) -> Result<Framing, WireError> {
        if self.status.is_informational()
            || self.status == StatusCode::NO_CONTENT
            || self.status == StatusCode::NOT_MODIFIED
        {
            return Ok(Framing::Empty);
        }
        let codings = self.fields.transfer_codings();
        if self.minor_version == 0 && !codings.is_empty() {
            // Faulty framing in HTTP/1.0 (RFC 9112 §6.1): read until close.
            return Ok(Framing::UntilClose);
        }
        match self.fields.declared_framing() {
            Ok(framing) => Ok(framing.unwrap_or(Framing::UntilClose)),
            // A reply whose last coding is chunked is chunked, whatever came
            // before it; one in another coding is read until close (RFC 9112
            // §6.3).
            Err(WireError::UnsupportedCoding(_))
                if codings.last().is_some_and(|c| c.eq_ignore_ascii_case(b"chunked")) =>
            {
                Ok(Framing::Chunked)
            }
            Err(WireError::UnsupportedCoding(_)) => Ok(Framing::UntilClose),
            Err(other) => Err(other),
        }
    }
}

/// Takes a body apart as it arrives, whatever its framing.
#[derive(Debug)]
pub struct BodyDecoder {
    state: DecodeState,
}

#[derive(Debug, Clone, Copy)]
enum DecodeState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd,
    Trailer,
    UntilClose,
    Done,
}

impl BodyDecoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => DecodeState::Done,
            Framing::Length(length) => DecodeState::Length(length),
            Framing::Chunked => DecodeState::ChunkSize,
            Framing::UntilClose => DecodeState::UntilClose,
        };
        Self { state }
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, DecodeState::Done)
    }

    /// The next piece of the body in `buffer`, taken out of it; `None` when
    /// `buffer` holds no more of it (read more, unless [`is_done`]).
    ///
    /// [`is_done`]: BodyDecoder::is_done
    pub fn decode(&mut self, buffer: &mut BytesMut) -> Result<Option<Bytes>, WireError> {
        loop {
            match self.state {
                DecodeState::Done => return Ok(None),
                DecodeState::Length(remaining) | DecodeState::ChunkData(remaining) => {
                    if buffer.is_empty() {
                        return Ok(None);
                    }
                    let take = usize::try_from(remaining).unwrap_or(usize::MAX).min(buffer.len());
                    let left = remaining - take as u64;
                    self.state = match self.state {
                        DecodeState::Length(_) if left == 0 => DecodeState::Done,
                        DecodeState::Length(_) => DecodeState::Length(left),
                        _ if left == 0 => DecodeState::ChunkEnd,
                        _ => DecodeState::ChunkData(left),
                    };
                    return Ok(Some(buffer.split_to(take).freeze()));
                }
                DecodeState::UntilClose => {
                    return Ok((!buffer.is_empty()).then(|| buffer.split().freeze()));
                }
                DecodeState::ChunkSize => match httparse::parse_chunk_size(buffer) {
                    Ok(httparse::Status::Complete((line, size))) => {
                        let _ = buffer.split_to(line);
                        self.state = if size == 0 { DecodeState::Trailer } else { DecodeState::ChunkData(size) };
                    }
                    Ok(httparse::Status::Partial) if buffer.len() > MAX_CHUNK_LINE => return Err(WireError::BadChunk),
                    Ok(httparse::Status::Partial) => return Ok(None),
                    Err(_) => return Err(WireError::BadChunk),
                },
                DecodeState::ChunkEnd => match buffer.as_ref() {
                    [b'\r', b'\n', ..] => {
                        let _ = buffer.split_to(2);
                        self.state = DecodeState::ChunkSize;
                    }
                    [] | [b'\r'] => return Ok(None),
                    _ => return Err(WireError::BadChunk),
                },
                // Trailer fields carry nothing the gateway uses: skipped up
                // to the empty line that ends the body.
                DecodeState::Trailer => match buffer.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        let line = buffer.split_to(end + 1);
                        if line.as_ref() == b"\r\n" || line.as_ref() == b"\n" {
                            self.state = DecodeState::Done;
                        }
                    }
                    None if buffer.len() > MAX_HEAD_BYTES => return Err(WireError::BadChunk),
                    None => return Ok(None),
                },
            }
        }
    }

    /// The sender closed the connection: fine only for a body that ends so.
    pub fn end_of_input(&mut self) -> Result<(), WireError> {
        match self.state {
            DecodeState::UntilClose | DecodeState::Done => {
                self.state = DecodeState::Done;
                Ok(())
            }
            _ => Err(WireError::Truncated),
        }
    }
}

/// Reads more of a message into `buffer`; 0 means the peer closed.
pub async fn read_more<S: AsyncRead + Unpin>(io: &mut S, buffer: &mut BytesMut) -> io::Result<usize> {
    if buffer.capacity() - buffer.len() < READ_CHUNK / 4 {
        buffer.reserve(READ_CHUNK);
    }
    io.read_buf(buffer).await
}

/// Reads a whole body of at most `limit` bytes. A body that is already in
/// `buffer` in one piece (the common case) is taken without copying.
pub async fn read_body<S: AsyncRead + Unpin>(
    io: &mut S,
    buffer: &mut BytesMut,
    framing: Framing,
    limit: usize,
) -> Result<Bytes, WireError> {
    if let Framing::Length(length) = framing {
        let length = usize::try_from(length).ok().filter(|l| *l <= limit).ok_or(WireError::TooLarge { limit })?;
        if buffer.len() < length {
            buffer.reserve(length - buffer.len());
        }
        while buffer.len() < length {
            if read_more(io, buffer).await? == 0 {
                return Err(WireError::Truncated);
            }
        }
        return Ok(buffer.split_to(length).freeze());
    }
    let mut decoder = BodyDecoder::new(framing);
    let mut body = BytesMut::new();
    loop {
        while let Some(piece) = decoder.decode(buffer)? {
            if body.len() + piece.len() > limit {
                return Err(WireError::TooLarge { limit });
            }
            body.extend_from_slice(&piece);
        }
        if decoder.is_done() {
            return Ok(body.freeze());
        }
        if read_more(io, buffer).await? == 0 {
            decoder.end_of_input()?;
            return Ok(body.freeze());
        }
    }
}

/// Appends a status line (HTTP/1.1) to `out`.
pub fn status_line(out: &mut Vec<u8>, status: StatusCode) {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("Unknown").as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends a header field to `out`.
pub fn field(out: &mut Vec<u8>, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Appends a `Content-Length` field to `out`.
pub fn content_length(out: &mut Vec<u8>, length: usize) {
    field(out, "content-length", itoa::Buffer::new().format(length).as_bytes());
}

/// Appends one chunk of a chunked body to `out`; an empty `data` would end
/// the body, so it is written as nothing.
pub fn chunk(out: &mut Vec<u8>, data: &[u8]) {
    if data.is_empty() {
        return;
    }
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk of a chunked body, without trailers.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// The `Date` field's value now (RFC 9110 §6.6.1), formatted once a second
/// per thread.
pub fn date_now() -> [u8; 29] {
    use std::{cell::Cell, time::SystemTime};
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((0, [0; 29])) };
    }
    let now = SystemTime::now();
    let second = now.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
    CACHED.with(|cached| {
        let (at, date) = cached.get();
        if at == second {
            return date;
        }
        let mut formatted = [0; 29];
        let text = httpdate::fmt_http_date(now);
        if text.len() == formatted.len() {
            formatted.copy_from_slice(text.as_bytes());
        }
        cached.set((second, formatted));
        formatted
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(raw: &str) -> Result<Option<RequestHead>, WireError> {
        RequestHead::parse(&mut BytesMut::from(raw))
    }

    fn response(raw: &str) -> ResponseHead {
        ResponseHead::parse(&mut BytesMut::from(raw)).unwrap().unwrap()
    }

    /// Feeds `input` to a decoder one byte at a time, as a slow peer would.
    fn decode_bytewise(framing: Framing, input: &[u8]) -> Result<(Vec<u8>, usize), WireError> {
        let mut decoder = BodyDecoder::new(framing);
        let mut buffer = BytesMut::new();
        let mut body = Vec::new();
        for byte in input {
            buffer.extend_from_slice(&[*byte]);
            while let Some(piece) = decoder.decode(&mut buffer)? {
                body.extend_from_slice(&piece);
            }
            if decoder.is_done() {
                break;
            }
        }
        assert!(decoder.is_done(), "the body did not end");
        Ok((body, buffer.len()))
    }

    #[test]
    fn a_request_head_is_taken_off_the_buffer_and_the_body_left() {
        let mut buffer = BytesMut::from(
            "POST /a2a/w?x=1 HTTP/1.1\r\nHost: g\r\nAuthorization: Bearer t\r\nContent-Length: 2\r\n\r\n{}GET",
        );
        let head = RequestHead::parse(&mut buffer).unwrap().unwrap();
        assert_eq!((head.method, head.path(), head.minor_version), (RequestMethod::Post, "/a2a/w", 1));
        assert_eq!(head.header("authorization"), Some("Bearer t"));
        assert_eq!(head.header("AUTHORIZATION"), Some("Bearer t"));
        assert_eq!(head.framing().unwrap(), Framing::Length(2));
        assert_eq!(&buffer[..], b"{}GET");
    }

    #[test]
    fn an_incomplete_head_waits_and_an_endless_one_is_refused() {
        assert!(request("POST /a2a/w HTTP/1.1\r\nHost: g\r\n").unwrap().is_none());
        let endless = format!("GET / HTTP/1.1\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(request(&endless), Err(WireError::HeadTooLarge)));
        let many = format!("GET / HTTP/1.1\r\n{}\r\n", "X: 1\r\n".repeat(MAX_FIELDS + 1));
        assert!(matches!(request(&many), Err(WireError::TooManyFields)));
        assert!(matches!(request("GET / HTTP/2.0\r\n\r\n"), Err(WireError::Malformed(_))));
    }

    #[test]
    fn absolute_targets_are_routed_by_their_path() {
        let head = request("POST http://gateway:8053/a2a/w?q HTTP/1.1\r\n\r\n").unwrap().unwrap();
        assert_eq!(head.path(), "/a2a/w");
        assert_eq!(request("GET http://gateway HTTP/1.1\r\n\r\n").unwrap().unwrap().path(), "/");
    }

    #[test]
    fn request_framing_refuses_ambiguity() {
        let framing = |fields: &str| request(&format!("POST / HTTP/1.1\r\n{fields}\r\n")).unwrap().unwrap().framing();
        assert_eq!(framing("").unwrap(), Framing::Empty);
        assert_eq!(framing("Content-Length: 5\r\n").unwrap(), Framing::Length(5));
        assert_eq!(framing("Content-Length: 5\r\nContent-Length: 5\r\n").unwrap(), Framing::Length(5));
        assert_eq!(framing("Transfer-Encoding: Chunked\r\n").unwrap(), Framing::Chunked);
        // Every coding counts, not only the last.
        assert!(
            matches!(framing("Transfer-Encoding: gzip, chunked\r\n"), Err(WireError::UnsupportedCoding(c)) if c == "gzip")
        );
        assert!(matches!(
            framing("Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
            Err(WireError::Malformed(_))
        ));
        assert!(matches!(framing("Transfer-Encoding: chunked, chunked\r\n"), Err(WireError::Malformed(_))));
        // HTTP/1.0 has no transfer codings.
        let old = request("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap().unwrap().framing();
        assert!(matches!(old, Err(WireError::Malformed(_))));
        assert!(matches!(framing("Content-Length: 5\r\nContent-Length: 6\r\n"), Err(WireError::Malformed(_))));
        assert!(matches!(framing("Content-Length: -1\r\n"), Err(WireError::Malformed(_))));
        assert!(matches!(framing("Content-Length: 99999999999999999999\r\n"), Err(WireError::Malformed(_))));
        assert!(matches!(framing("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n"), Err(WireError::Malformed(_))));
        assert!(matches!(framing("Transfer-Encoding: gzip\r\n"), Err(WireError::UnsupportedCoding(c)) if c == "gzip"));
    }

    #[test]
    fn keep_alive_follows_the_version_and_the_connection_field() {
        let keeps = |raw: &str| request(raw).unwrap().unwrap().keep_alive();
        assert!(keeps("GET / HTTP/1.1\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.1\r\nConnection: Close\r\n\r\n"));
        assert!(!keeps("GET / HTTP/1.0\r\n\r\n"));
        assert!(keeps("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n"));
        assert!(request("POST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap().expects_continue());
        assert!(!request("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n").unwrap().unwrap().expects_continue());
    }

    #[test]
    fn reply_framing_falls_back_to_reading_until_close() {
        assert_eq!(response("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n").framing().unwrap(), Framing::Length(3));
        assert_eq!(response("HTTP/1.1 200 OK\r\n\r\n").framing().unwrap(), Framing::UntilClose);
        assert_eq!(response("HTTP/1.1 204 No Content\r\n\r\n").framing().unwrap(), Framing::Empty);
        let chunked_last = "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n";
        assert_eq!(response(chunked_last).framing().unwrap(), Framing::Chunked);
        let gzip_last = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n";
        assert_eq!(response(gzip_last).framing().unwrap(), Framing::UntilClose);
        let old = "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(response(old).framing().unwrap(), Framing::UntilClose);
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n").framing().unwrap(),
            Framing::Chunked
        );
        assert_eq!(
            response("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n").framing().unwrap(),
            Framing::UntilClose
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD_BYTES));
        assert!(matches!(ResponseHead::parse(&mut BytesMut::from(huge.as_str())), Err(WireError::HeadTooLarge)));
        let head = response("HTTP/1.0 503 Service Unavailable\r\nRetry-After: 3\r\n\r\n");
        assert_eq!((head.status.as_u16(), head.header("retry-after"), head.keep_alive()), (503, Some("3"), false));
    }

    #[test]
    fn chunked_bodies_decode_byte_by_byte_with_extensions_and_trailers() {
        let input = b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nTrailer: x\r\n\r\nNEXT";
        let (body, _) = decode_bytewise(Framing::Chunked, input).unwrap();
        assert_eq!(body, b"hello, world");
        let mut buffer = BytesMut::from(&input[..]);
        let mut decoder = BodyDecoder::new(Framing::Chunked);
        while decoder.decode(&mut buffer).unwrap().is_some() {}
        assert!(decoder.is_done());
        assert_eq!(&buffer[..], b"NEXT", "the next message stays in the buffer");
        assert!(matches!(decode_bytewise(Framing::Chunked, b"zz\r\n"), Err(WireError::BadChunk)));
        assert!(matches!(decode_bytewise(Framing::Chunked, b"2\r\nabXY"), Err(WireError::BadChunk)));
    }

    #[test]
    fn length_bodies_stop_at_their_length_and_truncation_is_an_error() {
        let (body, left) = decode_bytewise(Framing::Length(3), b"abcdef").unwrap();
        assert_eq!((body.as_slice(), left), (&b"abc"[..], 0));
        let mut decoder = BodyDecoder::new(Framing::Length(3));
        let mut buffer = BytesMut::from("ab");
        assert_eq!(decoder.decode(&mut buffer).unwrap().unwrap(), "ab");
        assert!(matches!(decoder.end_of_input(), Err(WireError::Truncated)));
        let mut until_close = BodyDecoder::new(Framing::UntilClose);
        assert!(until_close.end_of_input().is_ok());
    }

    #[tokio::test]
    async fn read_body_takes_a_buffered_body_as_is_and_enforces_the_limit() {
        let mut buffer = BytesMut::from("{\"a\":1}rest");
        let body = read_body(&mut tokio::io::empty(), &mut buffer, Framing::Length(7), 100).await.unwrap();
        assert_eq!((&body[..], &buffer[..]), (&b"{\"a\":1}"[..], &b"rest"[..]));
        let mut more: &[u8] = b"3\r\ndef\r\n0\r\n\r\n";
        let mut buffer = BytesMut::from("3\r\nabc\r\n");
        let body = read_body(&mut more, &mut buffer, Framing::Chunked, 100).await.unwrap();
        assert_eq!(&body[..], b"abcdef");
        let mut buffer = BytesMut::new();
        let too_large = read_body(&mut tokio::io::empty(), &mut buffer, Framing::Length(101), 100).await;
        assert!(matches!(too_large, Err(WireError::TooLarge { limit: 100 })));
        let mut long = BytesMut::from(format!("40\r\n{}\r\n0\r\n\r\n", "x".repeat(64)).as_str());
        let too_long = read_body(&mut tokio::io::empty(), &mut long, Framing::Chunked, 10).await;
        assert!(matches!(too_long, Err(WireError::TooLarge { limit: 10 })));
        let mut truncated: &[u8] = b"ab";
        let cut = read_body(&mut truncated, &mut BytesMut::new(), Framing::Length(5), 10).await;
        assert!(matches!(cut, Err(WireError::Truncated)));
    }

    #[test]
    fn heads_and_chunks_are_written_as_http_1_1() {
        let mut out = Vec::new();
        status_line(&mut out, StatusCode::SERVICE_UNAVAILABLE);
        content_length(&mut out, 12);
        field(&mut out, "retry-after", b"3");
        out.extend_from_slice(b"\r\n");
        chunk(&mut out, b"");
        chunk(&mut out, &[b'x'; 26]);
        out.extend_from_slice(LAST_CHUNK);
        let expected = format!(
            "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 12\r\nretry-after: 3\r\n\r\n1a\r\n{}\r\n0\r\n\r\n",
            "x".repeat(26)
        );
        assert_eq!(String::from_utf8(out).unwrap(), expected);
        let date = date_now();
        assert!(httpdate::parse_http_date(std::str::from_utf8(&date).unwrap()).is_ok());
    }

    /// A framing field a request may carry, as sent.
    fn framing_field() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let coding = prop_oneof![Just("chunked"), Just("Chunked"), Just("gzip"), Just("identity"), Just("")];
        let length = prop_oneof![Just("0"), Just("5"), Just("6"), Just("-1"), Just("5, 5"), Just("x"), Just("")];
        prop_oneof![
            proptest::collection::vec(coding, 1..3)
                .prop_map(|codings| format!("Transfer-Encoding: {}", codings.join(", "))),
            length.prop_map(|length| format!("Content-Length: {length}")),
        ]
    }

    /// What RFC 9112 §6 makes of a request's framing fields, the way the
    /// gateway applies it: one reading, or none.
    fn expected_framing(minor_version: u8, fields: &[String]) -> Option<Framing> {
        let values = |name: &str| -> Vec<String> {
            fields
                .iter()
                .filter_map(|f| f.strip_prefix(name))
                .flat_map(|v| v.split(',').map(|x| x.trim().to_owned()))
                .collect()
        };
        let codings: Vec<String> = values("Transfer-Encoding: ").into_iter().filter(|c| !c.is_empty()).collect();
        let has_length = fields.iter().any(|f| f.starts_with("Content-Length"));
        if !codings.is_empty() {
            let single_chunked = codings.len() == 1 && codings[0].eq_ignore_ascii_case("chunked");
            return (minor_version == 1 && !has_length && single_chunked).then_some(Framing::Chunked);
        }
        let lengths = values("Content-Length: ");
        let parsed: Option<Vec<u64>> =
            lengths.iter().map(|l| l.parse::<u64>().ok().filter(|_| !l.starts_with('+'))).collect();
        match parsed {
            None => None,
            Some(lengths) if lengths.is_empty() => Some(Framing::Empty),
            Some(lengths) => lengths.iter().all(|l| *l == lengths[0]).then(|| Framing::Length(lengths[0])),
        }
    }

    proptest::proptest! {
        #[test]
        fn a_request_is_framed_one_way_or_refused(
            minor_version in 0..2u8,
            fields in proptest::collection::vec(framing_field(), 0..4),
        ) {
            let head: String = fields.iter().map(|field| format!("{field}\r\n")).collect();
            let raw = format!("POST / HTTP/1.{minor_version}\r\n{head}\r\n");
            let framing = request(&raw).unwrap().unwrap().framing().ok();
            proptest::prop_assert_eq!(framing, expected_framing(minor_version, &fields), "{}", raw);
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_head_reader(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..1024)) {
            let mut buffer = BytesMut::from(&bytes[..]);
            if let Ok(Some(head)) = RequestHead::parse(&mut buffer) {
                let _ = (head.framing(), head.path(), head.query(), head.keep_alive());
            }
            let mut buffer = BytesMut::from(&bytes[..]);
            if let Ok(Some(head)) = ResponseHead::parse(&mut buffer) {
                let _ = (head.framing(), head.keep_alive());
            }
        }
    }
}

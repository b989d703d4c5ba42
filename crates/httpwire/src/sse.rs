//! Server-sent events (the WHATWG HTML standard's `text/event-stream`), in
//! both directions: the agent's stream read into the data of its events,
//! and each event written again for the caller.
//!
//! Our own rather than a crate's: the gateway reads an agent's stream a
//! piece at a time under the idle clock and the reply size limit, so it
//! needs a push parser over byte chunks, and A2A carries everything in the
//! `data` field, so the whole format it needs is the few rules below. The
//! property tests at the end hold it to the standard's parsing rules.

use bytes::{Buf, Bytes, BytesMut};

/// An event stream's data grew past the reply size limit.
#[derive(Debug, PartialEq, Eq)]
pub struct TooLarge;

/// Splits an event stream into the data of its events.
pub struct Parser {
    limit: usize,
    pending: BytesMut,
    data: Vec<u8>,
    /// Whether the event being read has a `data` field, which may be empty.
    has_data: bool,
    /// The last line ended with a CR: a LF right after it is part of that
    /// line's end, even when it arrives in the next chunk.
    after_cr: bool,
}

impl Parser {
    /// A parser that refuses to hold more than `limit` bytes of one event
    /// and the unread rest of the stream.
    pub fn new(limit: usize) -> Self {
        Self { limit, pending: BytesMut::new(), data: Vec::new(), has_data: false, after_cr: false }
    }

    /// The data of every event that `chunk` completes.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<Bytes>, TooLarge> {
        self.pending.extend_from_slice(chunk);
        if self.pending.len() + self.data.len() > self.limit {
            return Err(TooLarge);
        }
        let mut events = Vec::new();
        loop {
            if self.after_cr {
                match self.pending.first() {
                    None => break,
                    Some(b'\n') => self.pending.advance(1),
                    Some(_) => {}
                }
                self.after_cr = false;
            }
            // Lines end with CRLF, LF or CR.
            let Some(end) = self.pending.iter().position(|b| matches!(b, b'\n' | b'\r')) else { break };
            self.after_cr = self.pending[end] == b'\r';
            let line = self.pending.split_to(end + 1);
            self.take_line(&line[..end], &mut events);
        }
        Ok(events)
    }

    fn take_line(&mut self, line: &[u8], events: &mut Vec<Bytes>) {
        if line.is_empty() {
            if std::mem::take(&mut self.has_data) {
                events.push(Bytes::from(std::mem::take(&mut self.data)));
            }
            return;
        }
        let (field, value) = match line.iter().position(|b| *b == b':') {
            // A comment.
            Some(0) => return,
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &[][..]),
        };
        // `event`, `id` and `retry` carry nothing the gateway passes on:
        // A2A puts everything in `data`.
        if field == b"data" {
            if self.has_data {
                self.data.push(b'\n');
            }
            self.data.extend_from_slice(value);
            self.has_data = true;
        }
    }
}

/// One event carrying `data`: each of its lines under a `data` field of its
/// own, so that the reader joins them back with the line feeds between them.
pub fn frame(data: &[u8]) -> Bytes {
    let mut frame = Vec::with_capacity(data.len() + 8);
    for line in data.split(|byte| *byte == b'\n') {
        frame.extend_from_slice(b"data: ");
        frame.extend_from_slice(line);
        frame.push(b'\n');
    }
    frame.push(b'\n');
    Bytes::from(frame)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const LIMIT: usize = 1 << 16;

    /// Everything `parser` makes of `stream` cut into pieces at `cuts`.
    fn parse_in_pieces(stream: &[u8], cuts: &[usize]) -> Result<Vec<Bytes>, TooLarge> {
        let mut parser = Parser::new(LIMIT);
        let mut events = Vec::new();
        let mut at = 0;
        let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
        cuts.sort_unstable();
        for cut in cuts.into_iter().chain([stream.len()]) {
            events.extend(parser.push(&stream[at..cut])?);
            at = cut;
        }
        Ok(events)
    }

    /// Event data as a reader can receive it: any bytes but CR, with LF
    /// between its lines.
    fn event_data() -> impl Strategy<Value = Vec<u8>> {
        proptest::collection::vec(any::<u8>().prop_filter("CR ends a line", |b| *b != b'\r'), 0..200)
    }

    #[test]
    fn joins_split_chunks_and_multiline_data_and_skips_other_fields() {
        let mut parser = Parser::new(LIMIT);
        assert!(parser.push(b"data: {\"a\"").unwrap().is_empty());
        let events = parser.push(b":1}\r\n\r\n: keep-alive\n\nevent: x\nid: 7\ndata: one\ndata:two\n\n").unwrap();
        assert_eq!(events, [Bytes::from_static(b"{\"a\":1}"), Bytes::from_static(b"one\ntwo")]);
    }

    #[test]
    fn a_cr_alone_ends_a_line_and_a_crlf_split_across_chunks_ends_one() {
        let mut parser = Parser::new(LIMIT);
        assert!(parser.push(b"data: a\rdata: b\r").unwrap().is_empty());
        assert_eq!(parser.push(b"\n\r\n").unwrap(), [Bytes::from_static(b"a\nb")]);
    }

    #[test]
    fn an_empty_data_field_is_an_event_and_a_field_without_colon_has_no_value() {
        let mut parser = Parser::new(LIMIT);
        let events = parser.push(b"data:\n\ndata\ndata\n\n").unwrap();
        assert_eq!(events, [Bytes::new(), Bytes::from_static(b"\n")]);
    }

    #[test]
    fn refuses_to_hold_more_than_its_limit() {
        let mut parser = Parser::new(8);
        assert_eq!(parser.push(b"data: 12345"), Err(TooLarge));
    }

    proptest! {
        #[test]
        fn every_event_written_is_read_back_whole_however_the_stream_is_cut(
            events in proptest::collection::vec(event_data(), 0..6),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let stream: Vec<u8> = events.iter().flat_map(|data| frame(data)).collect();
            let read = parse_in_pieces(&stream, &cuts).unwrap();
            prop_assert_eq!(read, events.into_iter().map(Bytes::from).collect::<Vec<_>>());
        }

        #[test]
        fn the_three_line_endings_read_alike(
            events in proptest::collection::vec((event_data(), 0..3usize), 1..4),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            // One ending per event: a CR followed by a LF ending would be
            // one CRLF, to the standard's reader as to ours.
            let mut stream = Vec::new();
            for (data, choice) in &events {
                let ending = [&b"\n"[..], b"\r", b"\r\n"][*choice];
                for line in frame(data).split(|b| *b == b'\n').filter(|line| !line.is_empty()) {
                    stream.extend_from_slice(line);
                    stream.extend_from_slice(ending);
                }
                stream.extend_from_slice(ending);
            }
            let read = parse_in_pieces(&stream, &cuts).unwrap();
            prop_assert_eq!(read, events.into_iter().map(|(data, _)| Bytes::from(data)).collect::<Vec<_>>());
        }

        #[test]
        fn arbitrary_bytes_never_panic_and_stay_within_the_limit(
            stream in proptest::collection::vec(any::<u8>(), 0..512),
            cuts in proptest::collection::vec(any::<usize>(), 0..8),
        ) {
            let mut parser = Parser::new(256);
            let mut at = 0;
            let mut cuts: Vec<usize> = cuts.iter().map(|cut| cut % (stream.len() + 1)).collect();
            cuts.sort_unstable();
            for cut in cuts.into_iter().chain([stream.len()]) {
                match parser.push(&stream[at..cut]) {
                    Ok(events) => prop_assert!(events.iter().all(|data| data.len() <= 256)),
                    Err(TooLarge) => break,
                }
                at = cut;
            }
        }
    }
}

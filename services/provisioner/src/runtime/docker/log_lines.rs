//! Reassembling the engine's timestamped log frames into lines.

use std::time::SystemTime;

use bollard::{container::LogOutput, errors::Error as BollardError};

use super::{LogLine, LogStream, RuntimeError, container::parse_time, engine::engine_error};

/// A line being assembled from the frames of one output stream.
#[derive(Default)]
struct Pending {
    text: Vec<u8>,
    time: Option<SystemTime>,
}

/// Turns log frames into lines. With timestamps on, the engine sends one
/// frame per logged message, "<RFC 3339 time> <text>"; a message longer than
/// the logging driver's buffer arrives in several frames without line
/// endings, each with its own time, and makes one line.
pub(super) struct LineSplitter {
    since: Option<SystemTime>,
    stdout: Pending,
    stderr: Pending,
    other: Pending,
    ended: bool,
}

impl LineSplitter {
    pub(super) fn new(since: Option<SystemTime>) -> Self {
        Self { since, stdout: Pending::default(), stderr: Pending::default(), other: Pending::default(), ended: false }
    }

    /// The lines a frame completes; `None` is the end of the stream.
    pub(super) fn push(
        &mut self,
        frame: Option<Result<LogOutput, BollardError>>,
    ) -> Vec<Result<LogLine, RuntimeError>> {
        if self.ended {
            return Vec::new();
        }
        let (stream, message) = match frame {
            Some(Ok(LogOutput::StdOut { message })) => (LogStream::Stdout, message),
            Some(Ok(LogOutput::StdErr { message })) => (LogStream::Stderr, message),
            Some(Ok(LogOutput::Console { message })) => (LogStream::Unknown, message),
            Some(Ok(LogOutput::StdIn { .. })) => return Vec::new(),
            Some(Err(err)) => {
                let mut lines = self.flush();
                lines.push(Err(engine_error("read logs", err).into()));
                return lines;
            }
            None => return self.flush(),
        };
        let (time, text) = split_timestamp(&message);
        let since = self.since;
        let pending = self.pending(stream);
        if pending.text.is_empty() {
            pending.time = time;
        }
        pending.text.extend_from_slice(text);
        let mut lines = Vec::new();
        while let Some(end) = pending.text.iter().position(|byte| *byte == b'\n') {
            let rest = pending.text.split_off(end + 1);
            let line = std::mem::replace(&mut pending.text, rest);
            lines.extend(make_line(since, stream, pending.time, &line).map(Ok));
            // What follows in the same frame was written at the same time.
            pending.time = time;
        }
        lines
    }

    fn pending(&mut self, stream: LogStream) -> &mut Pending {
        match stream {
            LogStream::Stdout => &mut self.stdout,
            LogStream::Stderr => &mut self.stderr,
            LogStream::Unknown => &mut self.other,
        }
    }

    fn flush(&mut self) -> Vec<Result<LogLine, RuntimeError>> {
        self.ended = true;
        let since = self.since;
        [LogStream::Stdout, LogStream::Stderr, LogStream::Unknown]
            .into_iter()
            .filter_map(|stream| {
                let pending = std::mem::take(self.pending(stream));
                if pending.text.is_empty() {
                    return None;
                }
                make_line(since, stream, pending.time, &pending.text).map(Ok)
            })
            .collect()
    }
}

/// Splits "<time> <text>" when the frame starts with a time.
fn split_timestamp(frame: &[u8]) -> (Option<SystemTime>, &[u8]) {
    let Some(space) = frame.iter().take(40).position(|byte| *byte == b' ') else {
        return (None, frame);
    };
    match std::str::from_utf8(&frame[..space]).ok().and_then(parse_time) {
        Some(time) => (Some(time), &frame[space + 1..]),
        None => (None, frame),
    }
}

/// The line without its ending; `None` when it is older than `since` (the
/// engine filters whole seconds only).
fn make_line(since: Option<SystemTime>, stream: LogStream, time: Option<SystemTime>, raw: &[u8]) -> Option<LogLine> {
    if let (Some(since), Some(time)) = (since, time)
        && time < since
    {
        return None;
    }
    let raw = raw.strip_suffix(b"\n").unwrap_or(raw);
    let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
    Some(LogLine { time, stream, text: String::from_utf8_lossy(raw).into_owned() })
}

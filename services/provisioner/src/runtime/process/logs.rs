//! A process workload's output, read back from its log files.
//!
//! The agent writes straight into the files, never through the provisioner,
//! so it keeps running (and writing) while the provisioner restarts. The
//! price: nothing records when a line was written or how stdout and stderr
//! interleave, so lines carry no time, `since` is not applied, and each
//! batch gives stdout's lines before stderr's.

use std::{
    io::{self, SeekFrom},
    path::{Path, PathBuf},
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use tokio::{
    fs::File,
    io::{AsyncReadExt, AsyncSeekExt},
    sync::mpsc,
    time::sleep,
};
use tokio_stream::wrappers::ReceiverStream;

use crate::runtime::{LogLine, LogStream, RuntimeError};

/// How often a follow looks for new output (the files give no notice).
const FOLLOW_POLL: Duration = Duration::from_millis(200);
/// How far back a tail reads per step.
const TAIL_CHUNK: u64 = 64 * 1024;
/// Longest line passed on whole; a process that never writes a newline
/// must not grow the follower's buffer without bound.
const MAX_LINE: usize = 64 * 1024;
/// Most a follower reads per step, for the same reason.
const MAX_READ: u64 = 1024 * 1024;

type Sender = mpsc::Sender<Result<LogLine, RuntimeError>>;

/// Streams the last `tail_lines` lines of each file (0: none), then, if `still_running`
/// is given, new lines until it answers false.
pub(super) fn stream<F>(
    files: [(PathBuf, LogStream); 2],
    tail_lines: u32,
    still_running: Option<F>,
) -> BoxStream<'static, Result<LogLine, RuntimeError>>
where
    F: Fn() -> io::Result<bool> + Send + 'static,
{
    let (tx, rx) = mpsc::channel(256);
    tokio::spawn(async move {
        if let Err(err) = send_logs(files, tail_lines, still_running, &tx).await {
            // The reader may be gone already; then nobody needs the error.
            let _ = tx.send(Err(err)).await;
        }
    });
    ReceiverStream::new(rx).boxed()
}

async fn send_logs<F>(
    files: [(PathBuf, LogStream); 2],
    tail_lines: u32,
    still_running: Option<F>,
    tx: &Sender,
) -> Result<(), RuntimeError>
where
    F: Fn() -> io::Result<bool>,
{
    let mut followers = Vec::new();
    for (path, stream) in files {
        let tail = tail(&path, tail_lines).await.map_err(|err| read_error(&path, &err))?;
        let mut lines = tail.lines;
        let mut pending = Vec::new();
        if still_running.is_some() && tail.partial {
            // The rest of the line is still to come.
            pending = lines.pop().unwrap_or_default();
        }
        if !send(tx, stream, lines).await {
            return Ok(());
        }
        followers.push(Follower { path, stream, offset: tail.end, pending });
    }
    let Some(still_running) = still_running else { return Ok(()) };
    loop {
        tokio::select! {
            () = tx.closed() => return Ok(()),
            () = sleep(FOLLOW_POLL) => {}
        }
        // Asked before reading, so that the last read takes in everything
        // the process wrote before it exited.
        let running = still_running().map_err(|err| RuntimeError::Unavailable(format!("cannot follow logs: {err}")))?;
        for follower in &mut followers {
            loop {
                let (lines, read) = follower.read_new(!running).await?;
                if !send(tx, follower.stream, lines).await {
                    return Ok(());
                }
                if running || read == 0 {
                    break;
                }
            }
        }
        if !running {
            return Ok(());
        }
    }
}

/// Sends the lines; false once the reader has gone.
async fn send(tx: &Sender, stream: LogStream, lines: Vec<Vec<u8>>) -> bool {
    for line in lines {
        let mut text = String::from_utf8_lossy(&line).into_owned();
        if text.ends_with('\r') {
            text.pop();
        }
        if tx.send(Ok(LogLine { time: None, stream, text })).await.is_err() {
            return false;
        }
    }
    true
}

fn read_error(path: &Path, err: &io::Error) -> RuntimeError {
    RuntimeError::Unavailable(format!("cannot read {}: {err}", path.display()))
}

/// The end of a file.
#[derive(Debug, Default)]
struct Tail {
    /// At most the requested number of lines, without their newlines.
    lines: Vec<Vec<u8>>,
    /// Whether the last line has no newline yet.
    partial: bool,
    /// The file's length when read.
    end: u64,
}

async fn tail(path: &Path, n: u32) -> io::Result<Tail> {
    let mut file = match File::open(path).await {
        Ok(file) => file,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Tail::default()),
        Err(err) => return Err(err),
    };
    let end = file.metadata().await?.len();
    let wanted = usize::try_from(n).unwrap_or(usize::MAX);
    let mut start = end;
    let mut buf = Vec::new();
    // Reads backwards until `buf` holds `wanted` line ends before its last
    // line, which makes `wanted` whole lines after its first (maybe cut) one.
    while start > 0 && newlines(&buf[..buf.len().saturating_sub(1)]) < wanted {
        let step = start.min(TAIL_CHUNK);
        start -= step;
        file.seek(SeekFrom::Start(start)).await?;
        let mut chunk = vec![0; usize::try_from(step).map_err(io::Error::other)?];
        file.read_exact(&mut chunk).await?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let partial = !buf.is_empty() && !buf.ends_with(b"\n");
    let body = buf.strip_suffix(b"\n").unwrap_or(&buf);
    let mut lines: Vec<Vec<u8>> = if body.is_empty() && !partial {
        Vec::new()
    } else {
        body.split(|byte| *byte == b'\n').map(<[u8]>::to_vec).collect()
    };
    if start > 0 && !lines.is_empty() {
        // Its beginning lies before what was read.
        lines.remove(0);
    }
    let lines = lines.split_off(lines.len().saturating_sub(wanted));
    Ok(Tail { partial: partial && !lines.is_empty(), lines, end })
}

fn newlines(bytes: &[u8]) -> usize {
    bytes.iter().filter(|byte| **byte == b'\n').count()
}

/// Reads what one file gained since the last look.
struct Follower {
    path: PathBuf,
    stream: LogStream,
    offset: u64,
    /// The start of a line whose newline has not been written yet.
    pending: Vec<u8>,
}

impl Follower {
    /// The complete lines written since the last call (with `flush`, the
    /// unfinished last one too) and how many bytes were read.
    async fn read_new(&mut self, flush: bool) -> Result<(Vec<Vec<u8>>, usize), RuntimeError> {
        let read = self.read_more().await.map_err(|err| read_error(&self.path, &err))?;
        let mut lines = Vec::new();
        while let Some(at) = self.pending.iter().position(|byte| *byte == b'\n') {
            let rest = self.pending.split_off(at + 1);
            let mut line = std::mem::replace(&mut self.pending, rest);
            line.pop();
            lines.push(line);
        }
        if self.pending.len() >= MAX_LINE || (flush && read == 0 && !self.pending.is_empty()) {
            lines.push(std::mem::take(&mut self.pending));
        }
        Ok((lines, read))
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        let mut file = match File::open(&self.path).await {
            Ok(file) => file,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        if file.metadata().await?.len() < self.offset {
            // Truncated under us: what is there now is all new.
            self.offset = 0;
        }
        file.seek(SeekFrom::Start(self.offset)).await?;
        let read = file.take(MAX_READ).read_to_end(&mut self.pending).await?;
        self.offset += u64::try_from(read).map_err(io::Error::other)?;
        Ok(read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn tail_of(contents: &str, n: u32) -> (Vec<String>, bool) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("log");
        std::fs::write(&path, contents).expect("write");
        let tail = tail(&path, n).await.expect("tail");
        assert_eq!(tail.end, contents.len() as u64);
        (tail.lines.iter().map(|line| String::from_utf8_lossy(line).into_owned()).collect(), tail.partial)
    }

    #[tokio::test]
    async fn tail_takes_the_last_lines() {
        assert_eq!(tail_of("", 5).await, (vec![], false));
        assert_eq!(tail_of("a\nb\nc\n", 2).await, (vec!["b".into(), "c".into()], false));
        assert_eq!(tail_of("a\nb\nc", 2).await, (vec!["b".into(), "c".into()], true));
        assert_eq!(tail_of("a\n\nc\n", 5).await, (vec!["a".into(), "".into(), "c".into()], false));
        assert_eq!(tail_of("a\nb\n", 0).await, (vec![], false));
    }

    #[tokio::test]
    async fn tail_reads_back_across_chunks() {
        let long = "x".repeat(usize::try_from(TAIL_CHUNK).expect("fits"));
        let contents = format!("first\n{long}\nlast\n");
        assert_eq!(tail_of(&contents, 2).await, (vec![long.clone(), "last".into()], false));
        assert_eq!(tail_of(&contents, 9).await.0.len(), 3);
    }
}

//! The service's output: passed through to sandboxd's own stdout/stderr
//! line by line (as is, or prefixed), with the daemon's credentials masked,
//! and the last lines kept in a bounded ring for `GET /v1/status`.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::config::ServiceOutput;
use crate::secrets::mask::Masker;

/// Lines kept for the status.
pub(crate) const RING_LINES: usize = 100;

/// Longest line kept in the ring (bytes, longer ones are cut).
pub(crate) const RING_LINE_BYTES: usize = 1024;

/// A line longer than this is passed on in pieces of this size.
const MAX_LINE: usize = 16 * 1024;

/// Which stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// stdout.
    Stdout,
    /// stderr.
    Stderr,
}

impl Stream {
    /// `stdout` or `stderr`.
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// One line of output.
#[derive(Debug, Clone)]
pub struct Line {
    /// Its stream.
    pub stream: Stream,
    /// The text, masked, without its newline, cut at [`RING_LINE_BYTES`].
    pub text: String,
}

/// The last [`RING_LINES`] lines of both streams, in arrival order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ring {
    lines: Arc<Mutex<VecDeque<Line>>>,
}

impl Ring {
    /// Adds a line, dropping the oldest beyond the bound.
    pub(crate) fn push(&self, stream: Stream, bytes: &[u8]) {
        let bytes = bytes.strip_suffix(b"\n").unwrap_or(bytes);
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let mut text =
            String::from_utf8_lossy(&bytes[..bytes.len().min(RING_LINE_BYTES)]).into_owned();
        if bytes.len() > RING_LINE_BYTES {
            text.push('…');
        }
        let mut lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if lines.len() == RING_LINES {
            lines.pop_front();
        }
        lines.push_back(Line { stream, text });
    }

    /// A copy of the lines, oldest first.
    pub(crate) fn snapshot(&self) -> Vec<Line> {
        let lines = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        lines.iter().cloned().collect()
    }
}

/// Copies `pipe` to `out` line by line until EOF: masks each line, prefixes
/// it when asked, and keeps it in `ring`. A write error on `out` (nobody
/// reads sandboxd's output any more) stops the pass-through, not the ring.
pub(crate) async fn pump(
    mut pipe: impl AsyncRead + Unpin,
    mut out: impl AsyncWrite + Unpin,
    stream: Stream,
    style: ServiceOutput,
    masker: Masker,
    ring: Ring,
) {
    let mut buf = vec![0u8; 8192];
    let mut pending: Vec<u8> = Vec::new();
    let mut out_ok = true;
    loop {
        let n = match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        pending.extend_from_slice(&buf[..n]);
        let mut start = 0;
        while let Some(pos) = pending[start..].iter().position(|b| *b == b'\n') {
            let end = start + pos + 1;
            emit(
                &pending[start..end],
                &mut out,
                &mut out_ok,
                stream,
                style,
                &masker,
                &ring,
            )
            .await;
            start = end;
        }
        pending.drain(..start);
        while pending.len() >= MAX_LINE {
            let piece: Vec<u8> = pending.drain(..MAX_LINE).collect();
            emit(&piece, &mut out, &mut out_ok, stream, style, &masker, &ring).await;
        }
    }
    if !pending.is_empty() {
        emit(
            &pending,
            &mut out,
            &mut out_ok,
            stream,
            style,
            &masker,
            &ring,
        )
        .await;
    }
    let _ = out.flush().await;
}

async fn emit(
    line: &[u8],
    out: &mut (impl AsyncWrite + Unpin),
    out_ok: &mut bool,
    stream: Stream,
    style: ServiceOutput,
    masker: &Masker,
    ring: &Ring,
) {
    let masked = masker.mask(line);
    ring.push(stream, &masked);
    if !*out_ok {
        return;
    }
    let mut bytes = Vec::with_capacity(masked.len() + 12);
    if style == ServiceOutput::Prefixed {
        bytes.extend_from_slice(b"[service] ");
    }
    bytes.extend_from_slice(&masked);
    if style == ServiceOutput::Prefixed && !bytes.ends_with(b"\n") {
        bytes.push(b'\n');
    }
    if out.write_all(&bytes).await.is_err() || out.flush().await.is_err() {
        *out_ok = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lines_are_masked_prefixed_and_kept() {
        let input: &[u8] = b"one secret-value\ntwo\npartial";
        let mut out = Vec::new();
        let ring = Ring::default();
        let masker = Masker::new(["secret-value"]);
        pump(
            input,
            &mut out,
            Stream::Stderr,
            ServiceOutput::Prefixed,
            masker,
            ring.clone(),
        )
        .await;
        let text = String::from_utf8(out).unwrap();
        assert!(!text.contains("secret-value"), "{text}");
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.lines().all(|l| l.starts_with("[service] ")), "{text}");
        let lines = ring.snapshot();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1].text, "two");
        assert_eq!(lines[2].text, "partial");
        assert_eq!(lines[0].stream, Stream::Stderr);
    }

    #[test]
    fn the_ring_is_bounded() {
        let ring = Ring::default();
        for i in 0..RING_LINES + 10 {
            ring.push(Stream::Stdout, format!("{i}\n").as_bytes());
        }
        ring.push(Stream::Stdout, &vec![b'x'; RING_LINE_BYTES * 3]);
        let lines = ring.snapshot();
        assert_eq!(lines.len(), RING_LINES);
        assert_eq!(lines[0].text, "11");
        assert!(lines.last().unwrap().text.len() <= RING_LINE_BYTES + 3);
    }
}

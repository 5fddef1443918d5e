//! The bounded bridge between an async body (a request body or a download)
//! and the synchronous code reading it in `spawn_blocking`.
//!
//! Hand-written rather than `tokio_util::io::SyncIoBridge`: the async side
//! here counts the bytes (metrics and `--max-bundle-bytes`, before anything
//! is decompressed), the channel lets receiving overlap with extraction,
//! and the end of the body is an explicit message, so a body that stops
//! early (a dropped sender) reads as an error, never as a clean EOF.

use std::io::{self, Read};
use std::time::Duration;

use bytes::{Buf, Bytes};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use super::UploadError;
use crate::metrics::Metrics;

/// Chunks in flight between the two sides. With the chunk sizes hyper and
/// reqwest produce (tens of KiB, at most a few hundred) this keeps the
/// memory of an upload to a few MiB whatever its size.
const CHANNEL_CHUNKS: usize = 8;

/// Bytes of a refused request body read and discarded beyond what the
/// server would have accepted, so a client still sending reads the answer
/// instead of a reset connection. Past this, the connection is closed.
pub(crate) const DRAIN_EXTRA: u64 = 8 << 20;

/// How long a request body may send nothing before the upload is given
/// up (and the run's upload slot freed).
pub(crate) const BODY_IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// One message from the async side.
#[derive(Debug)]
pub(crate) enum Chunk {
    /// More bytes.
    Data(Bytes),
    /// The body ended normally.
    End,
    /// The body failed; the async side has the reason.
    Failed,
}

/// A new bridge: the sender for [`pump`], the reader for the blocking side.
pub(crate) fn channel() -> (mpsc::Sender<Chunk>, BodyReader) {
    let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
    (
        tx,
        BodyReader {
            rx,
            current: Bytes::new(),
            ended: false,
        },
    )
}

/// The blocking side: a `Read` over the chunks. Only for use outside the
/// async runtime (in `spawn_blocking`).
#[derive(Debug)]
pub(crate) struct BodyReader {
    rx: mpsc::Receiver<Chunk>,
    current: Bytes,
    ended: bool,
}

impl Read for BodyReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            match self.rx.blocking_recv() {
                Some(Chunk::Data(bytes)) => self.current = bytes,
                Some(Chunk::End) => self.ended = true,
                Some(Chunk::Failed) | None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the upload stopped before its end",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        self.current.advance(n);
        Ok(n)
    }
}

/// How a pump ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pumped {
    /// The whole body went through.
    Complete,
    /// The reader stopped early (it failed or was done); the rest of the
    /// body is unread.
    Stopped,
}

/// Moves `stream` into the bridge, counting its bytes (in `total` and the
/// upload metrics) and refusing more than `limit` or a pause longer than
/// `idle`. On error the reader is told the body failed, and the cause is
/// returned here.
pub(crate) async fn pump<S, E>(
    stream: &mut S,
    tx: mpsc::Sender<Chunk>,
    limit: Option<u64>,
    idle: Option<Duration>,
    metrics: &Metrics,
    total: &mut u64,
    on_error: impl FnOnce(E) -> UploadError,
) -> Result<Pumped, UploadError>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    loop {
        let next = match idle {
            None => stream.next().await,
            Some(idle) => match tokio::time::timeout(idle, stream.next()).await {
                Ok(next) => next,
                Err(_) => {
                    let _ = tx.send(Chunk::Failed).await;
                    return Err(UploadError::Incomplete(format!(
                        "no data received for {} s",
                        idle.as_secs()
                    )));
                }
            },
        };
        let bytes = match next {
            None => {
                let _ = tx.send(Chunk::End).await;
                return Ok(Pumped::Complete);
            }
            Some(Err(err)) => {
                let _ = tx.send(Chunk::Failed).await;
                return Err(on_error(err));
            }
            Some(Ok(bytes)) => bytes,
        };
        *total += bytes.len() as u64;
        metrics.upload_bytes(bytes.len() as u64);
        if let Some(limit) = limit.filter(|limit| *total > *limit) {
            let _ = tx.send(Chunk::Failed).await;
            return Err(UploadError::BundleTooLarge { limit });
        }
        if tx.send(Chunk::Data(bytes)).await.is_err() {
            return Ok(Pumped::Stopped);
        }
    }
}

/// Reads and discards the rest of a request body the server no longer
/// needs, up to `limit` bytes in all (see [`DRAIN_EXTRA`]).
pub(crate) async fn drain<S, E>(stream: &mut S, mut total: u64, limit: u64, metrics: &Metrics)
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
{
    while total <= limit {
        match tokio::time::timeout(BODY_IDLE_TIMEOUT, stream.next()).await {
            Ok(Some(Ok(bytes))) => {
                total += bytes.len() as u64;
                metrics.upload_bytes(bytes.len() as u64);
            }
            _ => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A body that stops sending is given up after the idle timeout, and
    /// the reader sees an error, not an end.
    #[tokio::test]
    async fn stalled_bodies_time_out() {
        let (tx, reader) = channel();
        let reading = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            io::copy(&mut reader, &mut io::sink())
        });
        let mut stream = futures::stream::iter([Ok::<_, io::Error>(Bytes::from_static(b"abc"))])
            .chain(futures::stream::pending());
        let mut total = 0;
        let metrics = Metrics::new();
        let idle = Some(Duration::from_millis(100));
        let pumped = pump(&mut stream, tx, None, idle, &metrics, &mut total, |e| {
            UploadError::Incomplete(e.to_string())
        })
        .await;
        assert!(
            matches!(pumped, Err(UploadError::Incomplete(_))),
            "{pumped:?}"
        );
        assert_eq!(total, 3);
        assert!(reading.await.unwrap().is_err());
    }
}

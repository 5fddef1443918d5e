//! A blocking [`Write`] that hands each write, as one chunk, to an async
//! byte stream (an HTTP body): archives are written by the `tar` and
//! compression crates' blocking writers on a worker thread while the
//! stream is sent. Shared by the daemon's directory downloads and the
//! CLI's directory uploads.

use std::io::{self, Write};

use bytes::Bytes;
use tokio::sync::mpsc;

/// Sends what is written as chunks; blocks while the channel is full.
pub(crate) struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    /// The error's words when the receiving side is gone.
    gone: &'static str,
}

impl ChannelWriter {
    /// A writer into `tx`; `gone` says why a write fails once the receiver
    /// has gone away.
    pub(crate) fn new(tx: mpsc::Sender<io::Result<Bytes>>, gone: &'static str) -> ChannelWriter {
        ChannelWriter { tx, gone }
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, self.gone))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

//! A run's input from the daemon's side: [`InputWriter`] is a connection
//! to the input socket the run's shim listens on (`stdin.sock`, frames of
//! [`InputFrame`]); the socket is the shim's, so a daemon restarted after
//! a crash connects again like the first one. [`Writers`] keeps the rule
//! of one interactive writer per run (`attach`).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::AsyncWriteExt;

use super::shim::input::{self, data_frames, InputFrame};
use super::{Registry, RunError};

/// How long a connection waits for a starting run's socket.
const SOCKET_WAIT: Duration = Duration::from_secs(5);

/// A connection to a run's input.
pub struct InputWriter {
    stream: tokio::net::UnixStream,
}

impl InputWriter {
    /// Writes bytes to the command's stdin (or types them into its
    /// terminal). Waits while the command does not read.
    pub async fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(&data_frames(bytes)).await
    }

    /// Gives the run's terminal a new size (a pipe ignores it).
    pub async fn resize(&mut self, cols: u16, rows: u16) -> std::io::Result<()> {
        let frame = InputFrame::Resize { cols, rows }.encode();
        self.stream.write_all(&frame).await
    }

    /// Ends the input: a pipe is closed, a terminal gets Ctrl-D.
    pub async fn eof(&mut self) -> std::io::Result<()> {
        self.stream.write_all(&InputFrame::Eof.encode()).await
    }

    /// Returns once the shim has applied everything written on this
    /// connection: it closes its end after the last frame (the socket's
    /// buffer alone says nothing, and the shim serves each connection on
    /// its own thread, so input written next on another connection could
    /// otherwise overtake it).
    pub async fn finish(mut self) -> std::io::Result<()> {
        use tokio::io::AsyncReadExt;
        self.stream.shutdown().await?;
        let mut rest = [0u8; 64];
        while self.stream.read(&mut rest).await? > 0 {}
        Ok(())
    }
}

impl Registry {
    /// Connects to the input of a run started with `stdin` `pipe` or
    /// `pty`; while it starts, waits for its shim's socket.
    pub async fn open_input(&self, run_id: &str) -> Result<InputWriter, RunError> {
        let snapshot = self.snapshot(run_id)?;
        if !snapshot.run.stdin.takes_input() {
            return Err(RunError::NoInput(run_id.to_owned()));
        }
        let path = self.run_dir(run_id).stdin_socket();
        let deadline = tokio::time::Instant::now() + SOCKET_WAIT;
        loop {
            if self.snapshot(run_id)?.run.end().is_some() {
                return Err(RunError::Ended(run_id.to_owned()));
            }
            match input::connect(&path).await {
                Ok(stream) => return Ok(InputWriter { stream }),
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    return Err(RunError::io(
                        run_id,
                        "connecting to the input of",
                        &path,
                        err,
                    ))
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }
}

/// The runs that have an interactive writer now. Cheap to clone.
#[derive(Clone, Default)]
pub struct Writers {
    runs: Arc<Mutex<HashSet<String>>>,
}

/// The writer's turn on one run; given back when dropped.
pub struct WriterTurn {
    writers: Writers,
    run_id: String,
}

impl Writers {
    /// The run's writer turn, when nobody else has it.
    pub fn claim(&self, run_id: &str) -> Option<WriterTurn> {
        let mut runs = self.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.insert(run_id.to_owned()).then(|| WriterTurn {
            writers: self.clone(),
            run_id: run_id.to_owned(),
        })
    }
}

impl Drop for WriterTurn {
    fn drop(&mut self) {
        let mut runs = self.writers.runs.lock().unwrap_or_else(|e| e.into_inner());
        runs.remove(&self.run_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_writer_per_run_until_it_leaves() {
        let writers = Writers::default();
        let first = writers.claim("r1").expect("free");
        assert!(writers.claim("r1").is_none());
        assert!(writers.claim("r2").is_some());
        drop(first);
        assert!(writers.claim("r1").is_some());
    }
}

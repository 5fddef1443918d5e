//! The daemon's signals as one stream. [`Signals::install`] (called by
//! [`super::main`] only) turns SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1
//! and SIGUSR2 into [`Signals`]; tests build one with [`Signals::channel`]
//! and send into it. [`crate::run`] reads it: a shutdown signal
//! (SIGTERM/SIGINT) starts the ordered shutdown and is the one the
//! supervised service is stopped with; the others are forwarded to the
//! service.

use anyhow::Context;
use nix::sys::signal::Signal;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;

use crate::signals::{asks_to_stop, FORWARDED_SIGNALS};

/// Room for signals not yet read; the kernel coalesces more of one kind.
const BUFFER: usize = 16;

/// The signals the daemon received, in order. When every sender is gone
/// (a test dropped its [`SignalSender`]), the stream ends, which stops the
/// daemon like SIGTERM.
#[derive(Debug)]
pub struct Signals {
    rx: mpsc::Receiver<Signal>,
    /// The end of the stream was reported.
    ended: bool,
}

/// The sending side of [`Signals::channel`].
#[derive(Debug, Clone)]
pub struct SignalSender {
    tx: mpsc::Sender<Signal>,
}

/// What a received signal asks of the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    /// Stop: the ordered shutdown; the service is stopped with this signal.
    Shutdown(Signal),
    /// Pass this signal on to the supervised service.
    Forward(Signal),
}

impl Signals {
    /// Installs the process's handlers for the [`FORWARDED_SIGNALS`]
    /// and streams what they catch. Must run inside a tokio runtime. Only
    /// `daemon::main` calls it: the library never installs a handler.
    pub fn install() -> anyhow::Result<Signals> {
        let (sender, signals) = Signals::channel();
        for sig in FORWARDED_SIGNALS {
            let mut stream = signal(SignalKind::from_raw(sig as i32))
                .with_context(|| format!("cannot handle {sig}"))?;
            let tx = sender.tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(sig).await.is_err() {
                        break;
                    }
                }
            });
        }
        Ok(signals)
    }

    /// A stream fed by hand (tests, embedders).
    pub fn channel() -> (SignalSender, Signals) {
        let (tx, rx) = mpsc::channel(BUFFER);
        (SignalSender { tx }, Signals { rx, ended: false })
    }

    /// The next signal; a closed stream reads as a SIGTERM shutdown, once,
    /// then `None` for ever.
    pub async fn recv(&mut self) -> Option<Received> {
        if self.ended {
            return None;
        }
        match self.rx.recv().await {
            Some(sig) if asks_to_stop(sig) => Some(Received::Shutdown(sig)),
            Some(sig) => Some(Received::Forward(sig)),
            None => {
                self.ended = true;
                Some(Received::Shutdown(Signal::SIGTERM))
            }
        }
    }
}

impl SignalSender {
    /// Delivers `signal` as if the process had received it. Returns false
    /// when the daemon is gone.
    pub async fn send(&self, signal: Signal) -> bool {
        self.tx.send(signal).await.is_ok()
    }

    /// [`SignalSender::send`] from outside the runtime; false when the
    /// daemon is gone or too many signals wait to be read.
    pub fn try_send(&self, signal: Signal) -> bool {
        self.tx.try_send(signal).is_ok()
    }
}

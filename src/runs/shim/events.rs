//! The shim's end of the event pipe: its stdout, non-blocking, so a
//! stalled or dead daemon never blocks the run. The line format is
//! [`ShimEvent::to_line`].

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::{Duration, Instant};

use super::protocol::ShimEvent;

/// How long an event that must arrive (a spawn, the end) is retried while
/// the pipe is full.
const BLOCKING_SEND_LIMIT: Duration = Duration::from_secs(2);

/// The shim's stdout, set non-blocking: events a stalled daemon cannot
/// take are sent with the next one (progress) or retried briefly (spawns,
/// the end), never allowed to block the run's output capture.
pub(super) struct EventPipe {
    /// `None` once the daemon is gone (or stdout could not be set up).
    fd: Option<RawFd>,
}

impl EventPipe {
    /// Our stdout, switched to non-blocking writes.
    pub(super) fn stdout() -> EventPipe {
        let fd = io::stdout().as_raw_fd();
        // SAFETY: fcntl on our own stdout descriptor.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
        };
        EventPipe {
            fd: ok.then_some(fd),
        }
    }

    /// A pipe that sends nothing.
    #[cfg(test)]
    pub(super) fn closed() -> EventPipe {
        EventPipe { fd: None }
    }

    /// Writes one line; lines are under PIPE_BUF, so a write is whole or
    /// nothing. Returns false when the pipe was full.
    pub(super) fn try_send(&mut self, event: &ShimEvent) -> bool {
        let Some(fd) = self.fd else { return true };
        let line = event.to_line();
        // SAFETY: writes from a live buffer to our own descriptor.
        let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if n >= 0 {
            return true;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EAGAIN) {
            return false;
        }
        // The daemon is gone: stop sending.
        self.fd = None;
        true
    }

    /// Sends an event that must arrive, retrying for a while on a full
    /// pipe.
    pub(super) fn send_blocking(&mut self, event: &ShimEvent) {
        let until = Instant::now() + BLOCKING_SEND_LIMIT;
        while !self.try_send(event) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

//! The caller's terminal during an interactive session: raw mode (every
//! key goes to the run, Ctrl-C included, and the run's terminal echoes),
//! restored when the guard is dropped, on every way out (an error, a
//! panic's unwind, the run's end); and its size, for the run's terminal.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::termios::{self, SetArg, Termios};

/// Raw mode on our stdin until dropped.
pub(super) struct RawMode {
    saved: Termios,
}

impl RawMode {
    /// Puts our stdin's terminal in raw mode; `None` when stdin is not a
    /// terminal (or refuses).
    pub(super) fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return None;
        }
        let saved = termios::tcgetattr(stdin.as_fd()).ok()?;
        let mut raw = saved.clone();
        termios::cfmakeraw(&mut raw);
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ = termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &self.saved);
    }
}

/// Our terminal's size (columns, rows): stdout's, else stdin's.
pub(super) fn size() -> Option<(u16, u16)> {
    let fds = [std::io::stdout().as_raw_fd(), std::io::stdin().as_raw_fd()];
    fds.into_iter().find_map(|fd| {
        // SAFETY: TIOCGWINSZ writes one winsize into a live local.
        let mut size: libc::winsize = unsafe { std::mem::zeroed() };
        let ok = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut size) } == 0;
        (ok && size.ws_col > 0 && size.ws_row > 0).then_some((size.ws_col, size.ws_row))
    })
}

//! The command's stdin when the run takes input: a pipe, or a
//! pseudo-terminal whose slave becomes the command's stdin, stdout, stderr
//! and controlling terminal. The shim keeps the pipe's write end or the
//! terminal's master; `stdin` feeds them from the input socket.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use nix::pty::{openpty, Winsize};

use super::protocol::StdinMode;

/// What the command phase's child gets as its stdio.
pub(super) enum ChildInput {
    /// stdin `/dev/null`, stdout and stderr piped to the shim.
    Null,
    /// stdin the read end of a pipe; stdout and stderr piped.
    Pipe(OwnedFd),
    /// The terminal's slave as stdin, stdout and stderr.
    Pty(OwnedFd),
}

/// The shim's end of the run's input.
pub(super) enum InputEnd {
    /// The pipe's write end.
    Pipe(File),
    /// The terminal's master (read for output, written for input).
    Pty(File),
}

/// Opens the pipe or the terminal `mode` asks for: the child's end and
/// the shim's. `None` for a run without input.
pub(super) fn open(mode: StdinMode) -> io::Result<Option<(ChildInput, InputEnd)>> {
    match mode {
        StdinMode::Null => Ok(None),
        StdinMode::Pipe => {
            let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)?;
            Ok(Some((
                ChildInput::Pipe(read),
                InputEnd::Pipe(File::from(write)),
            )))
        }
        StdinMode::Pty { cols, rows } => {
            let pty = openpty(Some(&winsize(cols, rows)), None)?;
            for fd in [&pty.master, &pty.slave] {
                set_cloexec(fd.as_raw_fd());
            }
            let master = File::from(pty.master);
            Ok(Some((ChildInput::Pty(pty.slave), InputEnd::Pty(master))))
        }
    }
}

/// In the forked child: a new session (so a new process group, led by the
/// child) whose controlling terminal is stdin, the terminal's slave. Its
/// group is then the terminal's foreground group: Ctrl-C typed into the
/// terminal reaches it. Async-signal-safe calls only.
pub(super) fn take_terminal() -> io::Result<()> {
    // SAFETY: setsid and ioctl(TIOCSCTTY) take integers only.
    unsafe {
        if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Gives the terminal a new size; the kernel sends SIGWINCH to its
/// foreground group.
pub(super) fn resize(master: &File, cols: u16, rows: u16) -> io::Result<()> {
    let size = winsize(cols, rows);
    // SAFETY: TIOCSWINSZ reads one winsize from a live local.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &size) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The terminal's end-of-file character (VEOF, Ctrl-D unless changed).
pub(super) fn eof_char(master: &File) -> u8 {
    nix::sys::termios::tcgetattr(master)
        .map(|t| t.control_chars[nix::sys::termios::SpecialCharacterIndices::VEOF as usize])
        .unwrap_or(4)
}

fn winsize(cols: u16, rows: u16) -> Winsize {
    Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    }
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
    }
}

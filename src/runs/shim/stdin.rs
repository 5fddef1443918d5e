//! The run's input socket, `stdin.sock` in its run dir (mode 0600): the
//! shim listens there for the life of the command and writes what comes
//! ([`InputFrame`]s, one connection or several) into the command's stdin
//! pipe or terminal. The socket is the shim's, not the daemon's, so a
//! daemon restarted after a crash reaches the run's input by connecting
//! again. The file is removed when the command has ended.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::input::InputFrame;
use super::protocol::ShimSpec;
use super::pty::{self, ChildInput, InputEnd};
use super::{diagnose, lock};
use crate::state_dir::RunDir;

/// Where the command's input goes.
enum Sink {
    /// The pipe's write end, until the end of input closes it.
    Pipe(Mutex<Option<File>>),
    /// The terminal's master.
    Pty(File),
}

/// The listening input socket; its file goes with [`InputSocket::close`].
pub(super) struct InputSocket {
    path: PathBuf,
}

/// A run's input as the command phase needs it.
pub(super) struct RunInput {
    /// The child's stdio.
    pub(super) child: ChildInput,
    /// The terminal's master, read for the command's output.
    pub(super) terminal: Option<File>,
    /// The socket feeding the input; `None` for a run without input.
    socket: Option<InputSocket>,
}

impl RunInput {
    /// The pipe or terminal `spec` asks for, and its socket listening.
    pub(super) fn open(spec: &ShimSpec) -> io::Result<RunInput> {
        let Some((child, end)) = pty::open(spec.stdin)? else {
            return Ok(RunInput {
                child: ChildInput::Null,
                terminal: None,
                socket: None,
            });
        };
        let terminal = match &end {
            InputEnd::Pty(master) => Some(master.try_clone()?),
            InputEnd::Pipe(_) => None,
        };
        let socket = InputSocket::listen(&RunDir::new(&spec.run_dir), end)?;
        Ok(RunInput {
            child,
            terminal,
            socket: Some(socket),
        })
    }

    /// The command has ended: no more input is taken, and the shim's
    /// copies of the child's ends are closed.
    pub(super) fn close(&mut self) {
        if let Some(socket) = self.socket.take() {
            socket.close();
        }
        self.child = ChildInput::Null;
    }
}

impl InputSocket {
    /// Listens on the run dir's `stdin.sock` and feeds `end` from every
    /// connection, each in a thread of its own.
    pub(super) fn listen(run_dir: &RunDir, end: InputEnd) -> io::Result<InputSocket> {
        let path = run_dir.stdin_socket();
        let _ = std::fs::remove_file(&path);
        let listener = super::input::bind(&path)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        let sink = Arc::new(match end {
            InputEnd::Pipe(file) => Sink::Pipe(Mutex::new(Some(file))),
            InputEnd::Pty(master) => Sink::Pty(master),
        });
        std::thread::spawn(move || accept_loop(&listener, &sink));
        Ok(InputSocket { path })
    }

    /// Stops taking connections: the command has ended.
    pub(super) fn close(&self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn accept_loop(listener: &UnixListener, sink: &Arc<Sink>) {
    for connection in listener.incoming() {
        match connection {
            Ok(stream) => {
                let sink = Arc::clone(sink);
                std::thread::spawn(move || serve(stream, &sink));
            }
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => {
                diagnose(&format!("input socket: {err}"));
                return;
            }
        }
    }
}

/// Applies one connection's frames until it closes. A write that blocks
/// (the command reads slowly) holds back this connection only.
fn serve(mut stream: UnixStream, sink: &Sink) {
    loop {
        let frame = match InputFrame::read_from(&mut stream) {
            Ok(Some(frame)) => frame,
            Ok(None) => return,
            Err(err) => {
                diagnose(&format!("input socket: {err}"));
                return;
            }
        };
        if let Err(err) = apply(sink, frame) {
            // The command no longer reads (it ended, or closed stdin).
            if err.kind() != io::ErrorKind::BrokenPipe {
                diagnose(&format!("writing the run's input: {err}"));
            }
            return;
        }
    }
}

fn apply(sink: &Sink, frame: InputFrame) -> io::Result<()> {
    match (sink, frame) {
        (Sink::Pipe(pipe), InputFrame::Data(bytes)) => match lock(pipe).as_mut() {
            Some(pipe) => pipe.write_all(&bytes),
            // Input after its end goes nowhere.
            None => Ok(()),
        },
        (Sink::Pipe(pipe), InputFrame::Eof) => {
            lock(pipe).take();
            Ok(())
        }
        (Sink::Pipe(_), InputFrame::Resize { .. }) => Ok(()),
        (Sink::Pty(master), InputFrame::Data(bytes)) => (&*master).write_all(&bytes),
        (Sink::Pty(master), InputFrame::Eof) => (&*master).write_all(&[pty::eof_char(master)]),
        (Sink::Pty(master), InputFrame::Resize { cols, rows }) => pty::resize(master, cols, rows),
    }
}

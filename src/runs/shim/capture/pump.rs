//! The shim's main thread, between a phase's start and its end: one
//! `poll` over the phase's output (pipes or the terminal), a `signalfd` of
//! SIGCHLD and the forwarded signals, and the daemon's control channel,
//! with the run's deadline as its timeout. The command's exit, the end of
//! its output, a signal to pass on, a control line and the deadline all
//! wake this one thread: helper threads would each have to be woken (on
//! the cores the command's exec needs) when the run starts and ends.
//!
//! The signals are blocked from the shim's start (`run_shim`), so none is
//! lost: each stays pending for the `signalfd` until read. A run's child
//! starts with an empty mask (`child::reset_child`). Orphans are reaped
//! as they exit.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;
use std::time::Instant;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{bytes_waiting, grow_pipe, store, Stream, READ_CHUNK};
use crate::runs::shim::control::{readable_within, ControlChannel};
use crate::runs::shim::deadline::{self, Deadline};
use crate::runs::shim::protocol::ShimSpec;
use crate::runs::shim::Shared;
use crate::secrets::mask::{LiveMasker, StreamMasker};

/// One output source of the phase: a pipe, or a terminal's master.
struct Source {
    pipe: File,
    stream: Stream,
    masked: StreamMasker,
}

/// Reads the phase's output and waits for its leader, on one thread,
/// taking signals, control lines and the deadline as they come.
pub(in crate::runs::shim) struct Pump {
    /// SIGCHLD and the forwarded signals.
    signals: SignalFd,
    control: ControlChannel,
    /// The run's masker, once the spec came: control lines add to it.
    masker: Option<LiveMasker>,
    deadline: Deadline,
    sources: Vec<Source>,
    /// Bytes read from a source at once, then those bytes masked: made
    /// while a warm shim waits, and kept for every phase.
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Pump {
    /// A pump with no source yet, reading `control`. The `signals` (which
    /// include SIGCHLD) must already be blocked in the calling thread.
    pub(in crate::runs::shim) fn new(signals: SigSet, control: ControlChannel) -> io::Result<Pump> {
        debug_assert!(signals.contains(Signal::SIGCHLD));
        let signals =
            SignalFd::with_flags(&signals, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
                .map_err(io::Error::from)?;
        Ok(Pump {
            signals,
            control,
            masker: None,
            deadline: Deadline::none(),
            sources: Vec::new(),
            buf: vec![0u8; READ_CHUNK],
            out: Vec::with_capacity(READ_CHUNK + 64),
        })
    }

    /// Waits for the run's spec on the control channel (see
    /// [`ControlChannel::read_spec`]).
    pub(in crate::runs::shim) fn read_spec(&mut self) -> io::Result<Option<ShimSpec>> {
        self.control.read_spec()
    }

    /// After the run's `Ended` event: whether the daemon says it has
    /// recorded the end (see [`ControlChannel::wait_recorded`]).
    pub(in crate::runs::shim) fn wait_recorded(&mut self, patience: std::time::Duration) -> bool {
        self.control.wait_recorded(patience)
    }

    /// Starts watching for the run: its masker (control lines add to it)
    /// and its deadline. Control lines that came with the spec are
    /// applied now.
    pub(in crate::runs::shim) fn start_run(
        &mut self,
        shared: &Shared,
        masker: LiveMasker,
        deadline: Deadline,
    ) {
        self.control.apply_pending(shared, &masker);
        self.masker = Some(masker);
        self.deadline = deadline;
    }

    /// Takes what came while no phase ran (signals, control lines, the
    /// deadline), without waiting: asked before a phase starts.
    pub(in crate::runs::shim) fn take_waiting(&mut self, shared: &Shared) {
        self.take_signals(shared);
        if let Some(masker) = &self.masker {
            if self
                .control
                .fd()
                .is_some_and(|fd| readable_within(fd, std::time::Duration::ZERO))
            {
                self.control.on_readable(shared, masker);
            }
        }
        self.deadline.enforce(shared, Instant::now());
    }

    /// Adds a source to read into `stream` until its end.
    pub(in crate::runs::shim) fn add(&mut self, pipe: File, stream: Stream, masker: &LiveMasker) {
        grow_pipe(&pipe);
        self.sources.push(Source {
            pipe,
            stream,
            masked: masker.stream(),
        });
    }

    /// Reads output until `leader` exits, reaping any orphan that exits
    /// meanwhile; the leader's status.
    pub(in crate::runs::shim) fn until_exit(&mut self, shared: &Shared, leader: i32) -> WaitStatus {
        loop {
            if let Some(status) = reap_until(leader) {
                return status;
            }
            self.poll_once(shared);
        }
    }

    /// Reads every source to its end: the run's processes are gone, so
    /// their write ends are closed.
    pub(in crate::runs::shim) fn drain(&mut self, shared: &Shared) {
        while !self.sources.is_empty() {
            self.poll_once(shared);
        }
    }

    /// Waits until a source, a signal or a control line is ready or the
    /// deadline is due; takes each, and one burst of each ready source.
    /// SIGCHLD only wakes it: reaping is the caller's.
    fn poll_once(&mut self, shared: &Shared) {
        let sources = self.sources.len();
        let (ready, signals, control) = {
            let mut fds: Vec<PollFd<'_>> = self
                .sources
                .iter()
                .map(|s| PollFd::new(s.pipe.as_fd(), PollFlags::POLLIN))
                .collect();
            fds.push(PollFd::new(self.signals.as_fd(), PollFlags::POLLIN));
            if let Some(fd) = self.control.fd() {
                fds.push(PollFd::new(fd, PollFlags::POLLIN));
            }
            let timeout = poll_timeout(&self.deadline);
            if poll(&mut fds, timeout).is_err() {
                return;
            }
            let ready: Vec<bool> = fds
                .iter()
                .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                .collect();
            let signals = ready[sources];
            let control = ready.get(sources + 1) == Some(&true);
            (ready, signals, control)
        };
        if signals {
            self.take_signals(shared);
        }
        if control {
            if let Some(masker) = &self.masker {
                self.control.on_readable(shared, masker);
            }
        }
        self.deadline.enforce(shared, Instant::now());
        let mut index = 0;
        for is_ready in ready.into_iter().take(sources) {
            if is_ready && !self.read_ready(index, shared) {
                let mut source = self.sources.remove(index);
                self.out.clear();
                source.masked.finish(&mut self.out);
                store(shared, source.stream, &self.out, false);
                continue;
            }
            index += 1;
        }
    }

    /// Reads every pending signal: SIGCHLD only wakes the poll (the
    /// caller reaps); the others are passed on to the current group.
    fn take_signals(&mut self, shared: &Shared) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let Ok(signal) = Signal::try_from(info.ssi_signo as i32) else {
                continue;
            };
            if signal != Signal::SIGCHLD {
                deadline::forward(shared, signal);
            }
        }
    }

    /// Reads source `index` while it has bytes waiting (a fast writer
    /// costs no `poll` per chunk), a bounded number of chunks so the other
    /// source and SIGCHLD are seen; false at its end.
    fn read_ready(&mut self, index: usize, shared: &Shared) -> bool {
        for _ in 0..CHUNKS_PER_POLL {
            match self.read_chunk(index, shared) {
                Chunk::Drained => return true,
                Chunk::End => return false,
                Chunk::More => {}
            }
        }
        true
    }

    /// Reads one chunk of source `index` through its masker into its
    /// stream (as read, with nothing to mask: no copy).
    fn read_chunk(&mut self, index: usize, shared: &Shared) -> Chunk {
        let source = &mut self.sources[index];
        let n = loop {
            match source.pipe.read(&mut self.buf) {
                Ok(0) => return Chunk::End,
                Ok(n) => break n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                // A terminal's master reads EIO once its slave is closed.
                Err(_) => return Chunk::End,
            }
        };
        let more = bytes_waiting(&source.pipe);
        if source.masked.passes_through() {
            store(shared, source.stream, &self.buf[..n], more);
        } else {
            self.out.clear();
            source.masked.push(&self.buf[..n], &mut self.out);
            store(shared, source.stream, &self.out, more);
        }
        if more {
            Chunk::More
        } else {
            Chunk::Drained
        }
    }
}

/// The deadline's wait as a `poll` timeout, rounded up to a millisecond
/// (a wake-up before the deadline would only poll again).
fn poll_timeout(deadline: &Deadline) -> PollTimeout {
    match deadline.wait(Instant::now()) {
        None => PollTimeout::NONE,
        Some(wait) => {
            let ms = wait.as_micros().div_ceil(1000);
            PollTimeout::try_from(ms.min(i32::MAX as u128) as i32).unwrap_or(PollTimeout::MAX)
        }
    }
}

/// Chunks read from one source, while it has more waiting, before the
/// next `poll`.
const CHUNKS_PER_POLL: usize = 16;

/// What reading a chunk left.
enum Chunk {
    /// More bytes wait in the pipe.
    More,
    /// The pipe is empty for now.
    Drained,
    /// The source has ended.
    End,
}

/// Reaps the children that have exited without waiting; the leader's
/// status once it is among them.
fn reap_until(leader: i32) -> Option<WaitStatus> {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => return None,
            Ok(status) if status.pid() == Some(Pid::from_raw(leader)) => return Some(status),
            Ok(_) | Err(Errno::EINTR) => continue,
            // No child at all: the leader is gone without a status.
            Err(_) => return Some(WaitStatus::Exited(Pid::from_raw(leader), -1)),
        }
    }
}

//! The phase's output, read by the shim's main thread while it waits for
//! the phase's leader: one `poll` over the output pipes (or the terminal)
//! and a `signalfd` of SIGCHLD. The command's exit, the end of its output
//! and the reaping of its orphans wake this one thread; reader threads
//! would each have to be scheduled (on the cores the command's exec needs)
//! before the end could be told.
//!
//! SIGCHLD is blocked in every thread of the shim from its start (`run_shim`
//! blocks it before starting any thread), so it is never lost: it stays
//! pending for the `signalfd` until read. A run's child starts with an
//! empty mask (`child::reset_child`). Orphans are reaped as they exit.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::AsFd;

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use super::{bytes_waiting, grow_pipe, store, Stream, READ_CHUNK};
use crate::runs::shim::Shared;
use crate::secrets::mask::{LiveMasker, StreamMasker};

/// One output source of the phase: a pipe, or a terminal's master.
struct Source {
    pipe: File,
    stream: Stream,
    masked: StreamMasker,
}

/// Reads the phase's output and waits for its leader, on one thread.
pub(in crate::runs::shim) struct Pump {
    sigchld: SignalFd,
    sources: Vec<Source>,
    /// Bytes read from a source at once, then those bytes masked: made
    /// while a warm shim waits, and kept for every phase.
    buf: Vec<u8>,
    out: Vec<u8>,
}

impl Pump {
    /// A pump with no source yet. SIGCHLD must already be blocked.
    pub(in crate::runs::shim) fn new() -> io::Result<Pump> {
        let mut set = SigSet::empty();
        set.add(Signal::SIGCHLD);
        let sigchld = SignalFd::with_flags(&set, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
            .map_err(io::Error::from)?;
        Ok(Pump {
            sigchld,
            sources: Vec::new(),
            buf: vec![0u8; READ_CHUNK],
            out: Vec::with_capacity(READ_CHUNK + 64),
        })
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
            self.poll_once(shared, true);
        }
    }

    /// Reads every source to its end: the run's processes are gone, so
    /// their write ends are closed.
    pub(in crate::runs::shim) fn drain(&mut self, shared: &Shared) {
        while !self.sources.is_empty() {
            self.poll_once(shared, false);
        }
    }

    /// Waits until a source or (with `children`) SIGCHLD is ready, and
    /// takes one chunk from each ready source.
    fn poll_once(&mut self, shared: &Shared, children: bool) {
        let ready = {
            let mut fds: Vec<PollFd<'_>> = self
                .sources
                .iter()
                .map(|s| PollFd::new(s.pipe.as_fd(), PollFlags::POLLIN))
                .collect();
            if children {
                fds.push(PollFd::new(self.sigchld.as_fd(), PollFlags::POLLIN));
            }
            match poll(&mut fds, PollTimeout::NONE) {
                Ok(_) => fds
                    .iter()
                    .map(|fd| fd.revents().is_some_and(|r| !r.is_empty()))
                    .collect::<Vec<bool>>(),
                Err(_) => return,
            }
        };
        if children && ready.last() == Some(&true) {
            while let Ok(Some(_)) = self.sigchld.read_signal() {}
        }
        let mut index = 0;
        for is_ready in ready.into_iter().take(self.sources.len()) {
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
    /// stream.
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
        self.out.clear();
        source.masked.push(&self.buf[..n], &mut self.out);
        let more = bytes_waiting(&source.pipe);
        store(shared, source.stream, &self.out, more);
        if more {
            Chunk::More
        } else {
            Chunk::Drained
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

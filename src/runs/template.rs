//! The daemon's side of the shim template (`runs::shim::template`): the
//! warm pool forks its shims from one idle, already started shim instead
//! of starting each anew, which spares the machine an exec and a C
//! library start (about a millisecond of CPU) per run.
//!
//! A forked shim is the template's child, not the daemon's: the daemon
//! follows it through the pidfd the template sends with it
//! ([`ShimChild::Forked`]), as it follows a shim that outlived a previous
//! daemon. Everything else about it is a warm shim's: its own process
//! group, nothing of any run until its spec, its end when its spec channel
//! closes.
//!
//! A template that cannot be started, or that died (killed by someone),
//! is started again at the next refill; meanwhile shims are started as
//! before (`spawn::start_idle_shim`), so the pool never depends on it.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::Duration;

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio::process::Child;

use super::shim::protocol::TEMPLATE_ENV;
use super::spawn::{idle_shim, IdleShim, ShimChild, ShimExecutable};

/// How long a fork may take before the template is given up: far beyond
/// a fork's fraction of a millisecond, so reached only by a template
/// that stopped (SIGSTOP) or hangs.
const FORK_PATIENCE: Duration = Duration::from_secs(2);

/// A running template and the daemon's end of its channel. Dropping it
/// closes the channel, and the template ends.
pub(super) struct ShimTemplate {
    process: Child,
    channel: UnixStream,
}

impl ShimTemplate {
    /// Starts the template. Its stdout is not used; its stderr, as every
    /// shim's before its spec, goes nowhere.
    pub(super) fn start(exe: &ShimExecutable) -> Result<ShimTemplate, String> {
        let (daemon_end, template_end) =
            UnixStream::pair().map_err(|e| format!("cannot make the template's channel: {e}"))?;
        daemon_end
            .set_read_timeout(Some(FORK_PATIENCE))
            .and_then(|()| daemon_end.set_write_timeout(Some(FORK_PATIENCE)))
            .map_err(|e| format!("cannot set up the template's channel: {e}"))?;
        let process = exe
            .command(OwnedFd::from(template_end), Stdio::null())
            .env(TEMPLATE_ENV, "1")
            .spawn()
            .map_err(|e| format!("cannot start the shim template: {e}"))?;
        Ok(ShimTemplate {
            process,
            channel: daemon_end,
        })
    }

    /// Whether the template is still running.
    pub(super) fn is_alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// A new idle shim, forked by the template. Blocks for the fork (a
    /// fraction of a millisecond): call it off the runtime's thread.
    pub(super) fn fork_shim(&mut self) -> Result<IdleShim, String> {
        self.channel
            .write_all(&[1])
            .map_err(|e| format!("cannot ask the shim template for a shim: {e}"))?;
        let (pid, [control, events, pidfd]) = self
            .receive()
            .map_err(|e| format!("no shim from the shim template: {e}"))?;
        // SAFETY: the AsyncFd owns the pidfd until it is dropped, which
        // closes it after deregistering; nothing else refers to it.
        let pidfd = unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
            .map_err(|e| format!("cannot follow the shim: {e}"))?;
        idle_shim(ShimChild::Forked(pidfd), pid, control.into(), events)
    }

    /// The template's answer: a pid and three descriptors, received
    /// close-on-exec so no later child of the daemon inherits them.
    fn receive(&self) -> io::Result<(i32, [OwnedFd; 3])> {
        use std::os::fd::AsRawFd;
        let mut pid_bytes = [0u8; 4];
        let mut space = nix::cmsg_space!([RawFd; 3]);
        let mut iov = [io::IoSliceMut::new(&mut pid_bytes)];
        let message = recvmsg::<()>(
            self.channel.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut received: Vec<OwnedFd> = Vec::new();
        for cmsg in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(fds) = cmsg {
                // SAFETY: descriptors the kernel just installed for us,
                // owned by nothing else.
                received.extend(fds.into_iter().map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }));
            }
        }
        match message.bytes {
            0 => return Err(io::Error::other("the template has ended")),
            4 => {}
            read => return Err(io::Error::other(format!("an answer of {read} bytes"))),
        }
        let fds: [OwnedFd; 3] = received
            .try_into()
            .map_err(|_| io::Error::other("the answer does not carry three descriptors"))?;
        Ok((i32::from_le_bytes(pid_bytes), fds))
    }
}

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
//! A template that died (killed by someone) is started again when the
//! next shim is needed; one that could not be started or did not fork is
//! tried again after [`RETRY_AFTER`]. Meanwhile shims are started as
//! before (`spawn::start_idle_shim`), so the pool never depends on it.

use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::process::Child;

use super::shim::protocol::TEMPLATE_ENV;
use super::spawn::{idle_shim, IdleShim, ShimChild, ShimExecutable};

/// How long a fork may take before the template is given up: far beyond
/// a fork's fraction of a millisecond, so reached only by a template
/// that stopped (SIGSTOP) or hangs.
const FORK_PATIENCE: Duration = Duration::from_secs(1);

/// How long the pool starts its shims one by one after a template could
/// not be started or did not fork (an executable that does not answer as
/// a template, a machine out of processes), before it tries one again.
const RETRY_AFTER: Duration = Duration::from_secs(30);

/// The pool's template: none before the first refill, after a failure,
/// or after it died.
#[derive(Default)]
pub(super) struct TemplateSlot {
    template: Option<ShimTemplate>,
    /// No template is started before this, after a failure.
    retry_at: Option<Instant>,
}

impl TemplateSlot {
    /// A shim forked by the template, which is started first when there is
    /// none; `None` when there is no template to fork with (it failed
    /// lately): the caller starts the shim itself. Blocks for the fork.
    pub(super) fn fork_shim(&mut self, exe: &ShimExecutable) -> Option<IdleShim> {
        if self.template.is_none() {
            if self.retry_at.is_some_and(|at| Instant::now() < at) {
                return None;
            }
            match ShimTemplate::start(exe) {
                Ok(started) => self.template = Some(started),
                Err(err) => return self.failed(&err),
            }
        }
        match self.template.as_mut()?.fork_shim() {
            Ok(shim) => Some(shim),
            Err(err) => self.failed(&err),
        }
    }

    /// Reaps a template that died (killed by someone): the next shim
    /// needed starts a new one.
    pub(super) fn reap_if_dead(&mut self) {
        if self.template.as_mut().is_some_and(|t| !t.is_alive()) {
            self.template = None;
        }
    }

    /// Ends the template (when the pool closes).
    pub(super) fn end(&mut self) {
        self.template = None;
    }

    fn failed(&mut self, err: &str) -> Option<IdleShim> {
        tracing::warn!(
            "{err}; shims are started one by one for the next {} s",
            RETRY_AFTER.as_secs()
        );
        self.template = None;
        self.retry_at = Some(Instant::now() + RETRY_AFTER);
        None
    }
}

/// A running template and the daemon's end of its channel. Dropping it
/// closes the channel and kills the template (it holds nothing, and one
/// that stopped answering must not linger).
struct ShimTemplate {
    process: Child,
    channel: UnixStream,
}

impl ShimTemplate {
    /// Starts the template. Its stdout is not used; its stderr, as every
    /// shim's before its spec, goes nowhere.
    fn start(exe: &ShimExecutable) -> Result<ShimTemplate, String> {
        let (daemon_end, template_end) =
            UnixStream::pair().map_err(|e| format!("cannot make the template's channel: {e}"))?;
        daemon_end
            .set_read_timeout(Some(FORK_PATIENCE))
            .and_then(|()| daemon_end.set_write_timeout(Some(FORK_PATIENCE)))
            .map_err(|e| format!("cannot set up the template's channel: {e}"))?;
        let process = exe
            .command(OwnedFd::from(template_end), Stdio::null())
            .env(TEMPLATE_ENV, "1")
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start the shim template: {e}"))?;
        Ok(ShimTemplate {
            process,
            channel: daemon_end,
        })
    }

    /// Whether the template is still running.
    fn is_alive(&mut self) -> bool {
        matches!(self.process.try_wait(), Ok(None))
    }

    /// A new idle shim, forked by the template. Blocks for the fork (a
    /// fraction of a millisecond): call it off the runtime's thread.
    fn fork_shim(&mut self) -> Result<IdleShim, String> {
        self.channel
            .write_all(&[1])
            .map_err(|e| format!("cannot ask the shim template for a shim: {e}"))?;
        let (pid, [control, events, pidfd]) = self
            .receive()
            .map_err(|e| format!("no shim from the shim template: {e}"))?;
        let child = ShimChild::forked(pidfd).map_err(|e| format!("cannot follow the shim: {e}"))?;
        idle_shim(child, pid, control.into(), events)
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
                received.extend(
                    fds.into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runs::shim::protocol::ShimExe;
    use std::os::unix::fs::PermissionsExt;

    /// An executable that takes requests and never answers stands for a
    /// template that hangs: the pool gives it up after [`FORK_PATIENCE`],
    /// and does not start another before [`RETRY_AFTER`].
    #[tokio::test]
    async fn a_template_that_never_answers_is_given_up_for_a_while() {
        let dir = tempfile::tempdir().unwrap();
        let exe = dir.path().join("mute-template");
        std::fs::write(&exe, "#!/bin/sh\nexec cat >/dev/null\n").unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = ShimExecutable::new(ShimExe::Exactly(exe));
        let mut slot = TemplateSlot::default();

        let asked = Instant::now();
        assert!(slot.fork_shim(&exe).is_none(), "no shim from it");
        assert!(asked.elapsed() >= FORK_PATIENCE, "{:?}", asked.elapsed());
        assert!(slot.template.is_none(), "given up, and killed on drop");

        let again = Instant::now();
        assert!(slot.fork_shim(&exe).is_none());
        assert!(
            again.elapsed() < FORK_PATIENCE / 2,
            "not tried again before RETRY_AFTER: {:?}",
            again.elapsed()
        );
    }
}

//! The shim's end of its control channel, its stdin: the spec (the first
//! line), then control lines ([`ShimControl`]) for the run's life, read
//! by the main thread when `poll` says the channel is readable
//! (`capture::Pump`), so no thread waits on it.
//!
//! Read here rather than through `std::io::stdin()`: its buffer would hold
//! bytes `poll` cannot see, and it grows by reallocation, leaving copies of
//! the secret values the spec and mask lines carry. This buffer grows by a
//! zeroized copy and wipes every line once parsed.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd, FromRawFd};

use zeroize::{Zeroize, Zeroizing};

use super::protocol::{ShimControl, ShimEvent, ShimSpec};
use super::{lock, Shared};
use crate::secrets::mask::LiveMasker;

/// Bytes read from the channel at once.
const READ_CHUNK: usize = 16 * 1024;

/// The daemon's lines to the shim.
pub(super) struct ControlChannel {
    /// Never closed: a descriptor opened later would take number 0, where
    /// a reader of `/proc/<shim>/fd/0` expects the channel.
    input: std::mem::ManuallyDrop<File>,
    /// Bytes read but not yet parsed: the start of the next line.
    pending: Zeroizing<Vec<u8>>,
    /// False once the daemon closed its end.
    open: bool,
}

impl ControlChannel {
    /// The shim's stdin. Taken once, by the shim's `main`.
    pub(super) fn stdin() -> ControlChannel {
        // SAFETY: fd 0 is the shim's stdin, open for its life and read
        // nowhere else once taken here.
        let input = unsafe { File::from_raw_fd(0) };
        ControlChannel::new(input)
    }

    fn new(input: File) -> ControlChannel {
        ControlChannel {
            input: std::mem::ManuallyDrop::new(input),
            pending: Zeroizing::new(Vec::with_capacity(READ_CHUNK)),
            open: true,
        }
    }

    /// Waits for the spec. `None`: the channel closed before a byte came
    /// (a warm shim that was never used).
    pub(super) fn read_spec(&mut self) -> io::Result<Option<ShimSpec>> {
        loop {
            if let Some(line) = self.take_line() {
                return ShimSpec::from_line(&line).map(Some);
            }
            if !self.open {
                if self.pending.is_empty() {
                    return Ok(None);
                }
                return Err(io::Error::other("bad spec: the channel closed mid-line"));
            }
            self.read_more()?;
        }
    }

    /// The channel while the daemon may still write to it.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.open.then(|| self.input.as_fd())
    }

    /// Reads what `poll` said is waiting and applies each whole line.
    pub(super) fn on_readable(&mut self, shared: &Shared, masker: &LiveMasker) {
        if self.read_more().is_err() {
            self.open = false;
        }
        self.apply_pending(shared, masker);
    }

    /// Applies the whole lines already read (some may have come with the
    /// spec).
    pub(super) fn apply_pending(&mut self, shared: &Shared, masker: &LiveMasker) {
        while let Some(line) = self.take_line() {
            let Ok(control) = serde_json::from_slice::<ShimControl>(&line) else {
                super::diagnose("unreadable control line");
                continue;
            };
            // `Recorded` comes only after the run's end, when no phase
            // reads the channel (`wait_recorded`).
            let ShimControl::Mask { seq, values } = &control else {
                continue;
            };
            masker.add(values.iter());
            let event = ShimEvent::Masked { seq: *seq };
            lock(&shared.output).events.send_blocking(&event);
        }
    }

    /// After the run's `Ended` event: waits (at most `patience`) for the
    /// daemon to say it has recorded the end. False when the channel
    /// closed first (the daemon died, or could not write its record) or
    /// the wait ran out: then the shim writes `exit.json` for whichever
    /// daemon reads it next.
    pub(super) fn wait_recorded(&mut self, patience: std::time::Duration) -> bool {
        let until = std::time::Instant::now() + patience;
        loop {
            while let Some(line) = self.take_line() {
                if let Ok(ShimControl::Recorded) = serde_json::from_slice::<ShimControl>(&line) {
                    return true;
                }
            }
            let left = until.saturating_duration_since(std::time::Instant::now());
            if !self.open || !readable_within(self.input.as_fd(), left) {
                return false;
            }
            if self.read_more().is_err() {
                return false;
            }
        }
    }

    /// One read into `pending`; EOF closes the channel.
    fn read_more(&mut self) -> io::Result<()> {
        reserve_zeroized(&mut self.pending, READ_CHUNK);
        let start = self.pending.len();
        self.pending.resize(start + READ_CHUNK, 0);
        let read = loop {
            match (&*self.input).read(&mut self.pending[start..]) {
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        let n = *read.as_ref().unwrap_or(&0);
        self.pending.truncate(start + n);
        if n == 0 {
            self.open = false;
        }
        read.map(|_| ())
    }

    /// The first whole line of `pending` (with its newline), removed from
    /// it; the bytes it leaves behind are wiped.
    fn take_line(&mut self) -> Option<Zeroizing<Vec<u8>>> {
        let end = self.pending.iter().position(|&b| b == b'\n')? + 1;
        let line = Zeroizing::new(self.pending[..end].to_vec());
        let left = self.pending.len() - end;
        self.pending.copy_within(end.., 0);
        self.pending[left..].zeroize();
        self.pending.truncate(left);
        Some(line)
    }
}

/// Whether `fd` becomes readable (or closed) within `wait` (zero: now).
pub(super) fn readable_within(fd: BorrowedFd<'_>, wait: std::time::Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = wait.as_millis().min(i32::MAX as u128) as i32;
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    loop {
        match poll(
            &mut fds,
            PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            Ok(ready) => return ready > 0,
            Err(_) => return false,
        }
    }
}

/// Makes room for `more` bytes without a reallocation that would leave a
/// copy behind: a bigger buffer takes the bytes, the old one is wiped.
fn reserve_zeroized(buf: &mut Zeroizing<Vec<u8>>, more: usize) {
    if buf.capacity() - buf.len() >= more {
        return;
    }
    let mut bigger = Zeroizing::new(Vec::with_capacity(
        (buf.len() + more).max(buf.capacity() * 2),
    ));
    bigger.extend_from_slice(buf);
    *buf = bigger;
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn channel(bytes: &[u8]) -> ControlChannel {
        let (reader, writer) = nix::unistd::pipe().unwrap();
        File::from(writer).write_all(bytes).unwrap();
        ControlChannel::new(File::from(reader))
    }

    #[test]
    fn an_empty_channel_has_no_spec() {
        assert!(channel(b"").read_spec().unwrap().is_none());
    }

    #[test]
    fn a_cut_spec_is_an_error() {
        assert!(channel(b"{\"run_dir\":").read_spec().is_err());
    }

    #[test]
    fn lines_after_the_spec_stay_for_the_controls() {
        let mut input = channel(b"line one\nline two\npartial");
        assert_eq!(&input.take_line().is_none(), &true, "nothing read yet");
        input.read_more().unwrap();
        assert_eq!(&input.take_line().unwrap()[..], b"line one\n");
        assert_eq!(&input.take_line().unwrap()[..], b"line two\n");
        assert!(input.take_line().is_none());
        assert_eq!(&input.pending[..], b"partial");
        input.read_more().unwrap();
        assert!(!input.open, "the writer is gone");
        assert!(input.fd().is_none());
    }

    #[test]
    fn growing_keeps_the_bytes() {
        let mut buf = Zeroizing::new(Vec::with_capacity(4));
        buf.extend_from_slice(b"abcd");
        reserve_zeroized(&mut buf, 100);
        assert_eq!(&buf[..], b"abcd");
        assert!(buf.capacity() >= 104);
    }
}

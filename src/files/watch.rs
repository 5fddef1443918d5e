//! A watch of one directory (inotify, through nix): create, modify,
//! delete and move events of its entries, handed over a bounded channel.
//! A slow reader does not make it grow: when the channel is full, events
//! are dropped and one `overflow` event says so once there is room.

use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify, InotifyEvent};
use tokio::sync::mpsc;

use super::{located_error, Files, FilesError};
use crate::fsroot;

/// Events in flight to one client.
const CHANNEL_EVENTS: usize = 256;

/// How often the watcher looks whether its client went away.
const CHECK_EVERY: Duration = Duration::from_millis(200);

/// One change in the watched directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `create`, `modify`, `delete`, `move` or `overflow`.
    pub kind: &'static str,
    /// The entry's name (for a move, the new one).
    pub name: String,
    /// For a move within the directory: the old name.
    pub from: Option<String>,
}

impl Files {
    /// Watches the directory `path`; the receiver yields its changes until
    /// it is dropped.
    pub fn watch(&self, path: &str) -> Result<mpsc::Receiver<Change>, FilesError> {
        let at = self.locate(path)?;
        let dir = fsroot::open_dir_beneath(at.base, &at.rel).map_err(|e| located_error(&at, e))?;
        let inotify = Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK)
            .map_err(|e| located_error(&at, e))?;
        let mask = AddWatchFlags::IN_CREATE
            | AddWatchFlags::IN_MODIFY
            | AddWatchFlags::IN_CLOSE_WRITE
            | AddWatchFlags::IN_DELETE
            | AddWatchFlags::IN_MOVED_FROM
            | AddWatchFlags::IN_MOVED_TO
            | AddWatchFlags::IN_ONLYDIR;
        // The path starts at the descriptor: what is watched is the dir
        // opened beneath the root, whatever its path now leads to.
        let through_fd = Path::new("/proc/self/fd").join(dir.as_raw_fd().to_string());
        inotify
            .add_watch(&through_fd, mask)
            .map_err(|e| located_error(&at, e))?;
        drop(dir);
        let (tx, rx) = mpsc::channel(CHANNEL_EVENTS);
        std::thread::spawn(move || run(inotify, tx));
        Ok(rx)
    }
}

fn run(inotify: Inotify, tx: mpsc::Sender<Change>) {
    let mut overflowed = false;
    while !tx.is_closed() {
        let mut fds = [PollFd::new(inotify.as_fd(), PollFlags::POLLIN)];
        let timeout = PollTimeout::try_from(CHECK_EVERY).unwrap_or(PollTimeout::NONE);
        if poll(&mut fds, timeout).unwrap_or(0) == 0 {
            continue;
        }
        let Ok(events) = inotify.read_events() else {
            continue;
        };
        for change in changes(&events) {
            if overflowed {
                let note = Change {
                    kind: "overflow",
                    name: String::new(),
                    from: None,
                };
                if tx.try_send(note).is_err() {
                    continue;
                }
                overflowed = false;
            }
            if tx.try_send(change).is_err() {
                overflowed = true;
            }
        }
    }
}

/// Turns one read's events into changes; a moved-from and moved-to pair
/// with the same cookie is one move.
fn changes(events: &[InotifyEvent]) -> Vec<Change> {
    let name = |event: &InotifyEvent| {
        event
            .name
            .as_ref()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let mask = event.mask;
        let change = |kind| Change {
            kind,
            name: name(event),
            from: None,
        };
        if mask.contains(AddWatchFlags::IN_Q_OVERFLOW) {
            out.push(Change {
                kind: "overflow",
                name: String::new(),
                from: None,
            });
        } else if mask.contains(AddWatchFlags::IN_CREATE) {
            out.push(change("create"));
        } else if mask.intersects(AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_CLOSE_WRITE) {
            // A write and its close are one modification.
            let last = out.last();
            if !last.is_some_and(|c: &Change| c.kind == "modify" && c.name == name(event)) {
                out.push(change("modify"));
            }
        } else if mask.contains(AddWatchFlags::IN_DELETE) {
            out.push(change("delete"));
        } else if mask.contains(AddWatchFlags::IN_MOVED_FROM) {
            let paired = events[i + 1..]
                .iter()
                .any(|e| e.cookie == event.cookie && e.mask.contains(AddWatchFlags::IN_MOVED_TO));
            if !paired {
                out.push(change("delete"));
            }
        } else if mask.contains(AddWatchFlags::IN_MOVED_TO) {
            let from = events[..i].iter().find(|e| {
                e.cookie == event.cookie && e.mask.contains(AddWatchFlags::IN_MOVED_FROM)
            });
            out.push(match from {
                Some(from) => Change {
                    kind: "move",
                    name: name(event),
                    from: Some(name(from)),
                },
                None => change("create"),
            });
        }
    }
    out
}

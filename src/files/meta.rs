//! What a stat or a listing says of one entry, read with `fstatat`
//! (never following a symlink) and `readlinkat`.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{readlinkat, AtFlags};
use nix::sys::stat::{fstat, fstatat, FileStat, SFlag};

/// The kind of an entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A regular file.
    File,
    /// A directory.
    Dir,
    /// A symlink (never followed).
    Symlink,
    /// A device, fifo or socket.
    Other,
}

/// One entry.
#[derive(Debug, Clone)]
pub struct Meta {
    /// Its name (the last component).
    pub name: String,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits (and setuid/setgid/sticky).
    pub mode: u32,
    /// Last modification.
    pub mtime: SystemTime,
    /// A symlink's target, as stored.
    pub target: Option<String>,
    /// Device and inode, for an ETag.
    pub identity: (u64, u64),
}

impl Meta {
    /// From `std` metadata.
    pub(crate) fn from_std(name: String, stat: &std::fs::Metadata, target: Option<String>) -> Meta {
        Meta {
            name,
            kind: kind_of(stat.mode()),
            size: stat.size(),
            mode: stat.mode() & 0o7777,
            mtime: time(stat.mtime(), stat.mtime_nsec()),
            target,
            identity: (stat.dev(), stat.ino()),
        }
    }

    fn from_stat(name: String, stat: &FileStat, target: Option<String>) -> Meta {
        Meta {
            name,
            kind: kind_of(stat.st_mode),
            size: stat.st_size as u64,
            mode: stat.st_mode & 0o7777,
            mtime: time(stat.st_mtime, stat.st_mtime_nsec),
            target,
            identity: (stat.st_dev, stat.st_ino),
        }
    }

    /// A strong validator: device, inode, size and mtime (to the
    /// nanosecond), quoted.
    pub fn etag(&self) -> String {
        let nanos = self
            .mtime
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let (dev, ino) = self.identity;
        format!("\"{dev:x}-{ino:x}-{:x}-{nanos:x}\"", self.size)
    }
}

/// The entry `name` in `dir`.
pub(crate) fn at(dir: BorrowedFd<'_>, name: &OsString) -> Result<Meta, Errno> {
    let stat = fstatat(
        Some(dir.as_raw_fd()),
        name.as_os_str(),
        AtFlags::AT_SYMLINK_NOFOLLOW,
    )?;
    let target = match kind_of(stat.st_mode) {
        EntryKind::Symlink => Some(
            readlinkat(Some(dir.as_raw_fd()), name.as_os_str())?
                .to_string_lossy()
                .into_owned(),
        ),
        _ => None,
    };
    Ok(Meta::from_stat(
        name.to_string_lossy().into_owned(),
        &stat,
        target,
    ))
}

/// An opened directory itself (a root).
pub(crate) fn of_dir_itself(dir: BorrowedFd<'_>, rel: &Path) -> io::Result<Meta> {
    let stat = fstat(dir.as_raw_fd())?;
    let name = rel
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(Meta::from_stat(name, &stat, None))
}

/// The names in `dir`, at most `cap` of them.
pub(crate) fn names(dir: &OwnedFd, cap: usize) -> io::Result<Vec<OsString>> {
    let fd = nix::unistd::dup(dir.as_raw_fd())?;
    let mut listing = nix::dir::Dir::from_fd(fd)?;
    let mut names = Vec::new();
    for entry in listing.iter() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        if names.len() >= cap {
            return Err(io::Error::other(format!(
                "the directory holds more than {cap} entries"
            )));
        }
        names.push(OsString::from(std::ffi::OsStr::from_bytes(name)));
    }
    Ok(names)
}

fn kind_of(mode: u32) -> EntryKind {
    match SFlag::from_bits_truncate(mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => EntryKind::File,
        SFlag::S_IFDIR => EntryKind::Dir,
        SFlag::S_IFLNK => EntryKind::Symlink,
        _ => EntryKind::Other,
    }
}

fn time(secs: i64, nanos: i64) -> SystemTime {
    let base = SystemTime::UNIX_EPOCH;
    match u64::try_from(secs) {
        Ok(secs) => base + Duration::new(secs, nanos.clamp(0, 999_999_999) as u32),
        Err(_) => base,
    }
}

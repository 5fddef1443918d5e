//! Writing validated entries under the extraction root: files, dirs,
//! symlinks and hardlinks, with their modes and mtimes.
//!
//! Every path handed here comes from [`entry::plan`], so it is relative,
//! free of `..` and of the archive's own symlinks. Every entry is created
//! relative to a directory descriptor opened beneath the root with
//! [`fsroot::open_beneath`] (no symlink followed, never above the root):
//! a run that swaps a directory of the tree for a symlink while the
//! extraction runs makes the upload fail; nothing is written where the
//! symlink points.

use std::ffi::{OsStr, OsString};
use std::fs::{File, FileTimes, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use nix::errno::Errno;
use nix::fcntl::{openat, AtFlags, OFlag};
use nix::sys::stat::{fchmod, fstatat, mkdirat, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{linkat, symlinkat, unlinkat, UnlinkatFlags};

use super::entry::{self, Kind, Links, Plan};
use super::extract::{read_error, Stats, Summary};
use super::UploadError;
use crate::config::UploadLimits;
use crate::fsroot;

/// Size of the copy buffer for file data.
const COPY_BUFFER: usize = 256 * 1024;

/// Writes validated entries under `root`.
pub(super) struct Writer<'a> {
    root: BorrowedFd<'a>,
    /// The root's path, for messages.
    shown: &'a Path,
    limits: &'a UploadLimits,
    stats: Rc<Stats>,
    links: Links,
    /// Directories and their mtimes, set last (writing into a directory
    /// changes its mtime).
    dirs: Vec<(PathBuf, Option<SystemTime>)>,
    summary: Summary,
    buf: Vec<u8>,
}

impl<'a> Writer<'a> {
    pub(super) fn new(
        root: BorrowedFd<'a>,
        shown: &'a Path,
        limits: &'a UploadLimits,
        stats: Rc<Stats>,
    ) -> Writer<'a> {
        Writer {
            root,
            shown,
            limits,
            stats,
            links: Links::default(),
            dirs: Vec::new(),
            summary: Summary::default(),
            buf: vec![0; COPY_BUFFER],
        }
    }

    pub(super) fn entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        name: &str,
    ) -> Result<(), UploadError> {
        self.summary.entries += 1;
        if self.summary.entries > self.limits.max_entries {
            return Err(UploadError::TooManyEntries {
                limit: self.limits.max_entries,
            });
        }
        let header = entry.header();
        let kind = entry::kind_of(header.entry_type());
        let bad = |reason: String| UploadError::BadArchive {
            reason: format!("entry {name:?}: {reason}"),
        };
        let mode = match kind {
            Kind::File | Kind::Dir => header
                .mode()
                .map_err(|err| bad(format!("invalid mode: {err}")))?,
            _ => 0,
        };
        let mtime = header
            .mtime()
            .ok()
            .map(|secs| SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
        let link = entry
            .link_name_bytes()
            .map(|l| l.into_owned())
            .unwrap_or_default();
        let path_bytes = entry.path_bytes().into_owned();
        let plan =
            entry::plan(&path_bytes, kind, Some(&link), mode, &self.links).map_err(|reason| {
                UploadError::Unsafe {
                    entry: name.to_owned(),
                    reason,
                }
            })?;
        match plan {
            Plan::Skip => Ok(()),
            Plan::Dir { path, mode } => {
                self.dir(&path, mode, name)?;
                self.dirs.push((path, mtime));
                Ok(())
            }
            Plan::File { path, mode } => self.file(entry, &path, mode, mtime, name),
            Plan::Symlink { path, target } => {
                let (parent, file_name) =
                    self.place(&path, name, |dir, at| symlinkat(&target, Some(dir), at))?;
                if let Some(time) = mtime {
                    let time = TimeSpec::from(
                        time.duration_since(SystemTime::UNIX_EPOCH)
                            .unwrap_or_default(),
                    );
                    let _ = utimensat(
                        Some(parent.as_raw_fd()),
                        file_name.as_os_str(),
                        &time,
                        &time,
                        UtimensatFlags::NoFollowSymlink,
                    );
                }
                self.links.insert(path, target);
                Ok(())
            }
            Plan::Hardlink { path, target } => self.hardlink(&path, &target, name),
        }
    }

    fn hardlink(&mut self, path: &Path, target: &Path, name: &str) -> Result<(), UploadError> {
        let not_earlier = || UploadError::Unsafe {
            entry: name.to_owned(),
            reason: format!(
                "hardlink target {} is not a regular file extracted earlier from this archive",
                target.display()
            ),
        };
        let (source_dir, source_name) =
            fsroot::open_parent_beneath(self.root, target).map_err(|_| not_earlier())?;
        let source = fstatat(
            Some(source_dir.as_raw_fd()),
            source_name.as_os_str(),
            AtFlags::AT_SYMLINK_NOFOLLOW,
        );
        match source {
            Ok(stat) if file_type(stat.st_mode) == SFlag::S_IFREG => {}
            _ => return Err(not_earlier()),
        }
        self.place(path, name, |dir, at| {
            linkat(
                Some(source_dir.as_raw_fd()),
                source_name.as_os_str(),
                Some(dir),
                at,
                AtFlags::empty(),
            )
        })?;
        Ok(())
    }

    fn file<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        path: &Path,
        mode: u32,
        mtime: Option<SystemTime>,
        name: &str,
    ) -> Result<(), UploadError> {
        let size = entry.size();
        let max = self.limits.max_extracted_bytes;
        if size > max.saturating_sub(self.summary.bytes) {
            return Err(UploadError::ExtractedTooLarge {
                limit: max,
                entry: name.to_owned(),
            });
        }
        let full = self.shown.join(path);
        let mut file = None;
        self.place(path, name, |dir, at| {
            let flags = OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW;
            let fd = openat(
                Some(dir),
                at,
                flags | OFlag::O_CLOEXEC,
                Mode::from_bits_truncate(0o600),
            )?;
            // SAFETY: `openat` just returned this descriptor; nothing else owns it.
            file = Some(File::from(unsafe { OwnedFd::from_raw_fd(fd) }));
            Ok(())
        })?;
        let mut file = file.expect("placed");
        let mut written = 0u64;
        self.stats.in_data.set(true);
        let copied = loop {
            let n = match entry.read(&mut self.buf) {
                Ok(0) => break Ok(()),
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(err) => break Err(read_error(&self.stats, &err, Some(name))),
            };
            written += n as u64;
            if self.summary.bytes + written > max {
                break Err(UploadError::ExtractedTooLarge {
                    limit: max,
                    entry: name.to_owned(),
                });
            }
            if let Err(err) = file.write_all(&self.buf[..n]) {
                break Err(UploadError::io("writing", &full, err));
            }
        };
        self.stats.in_data.set(false);
        copied?;
        if written != size {
            return Err(UploadError::BadArchive {
                reason: format!("entry {name:?} is truncated: {written} of {size} bytes"),
            });
        }
        self.summary.bytes += written;
        file.set_permissions(Permissions::from_mode(mode))
            .map_err(|err| UploadError::io("setting the mode of", &full, err))?;
        if let Some(time) = mtime {
            let times = FileTimes::new().set_accessed(time).set_modified(time);
            file.set_times(times)
                .map_err(|err| UploadError::io("setting the mtime of", &full, err))?;
        }
        Ok(())
    }

    fn dir(&mut self, path: &Path, mode: u32, name: &str) -> Result<(), UploadError> {
        let (parent, at) = self.parent_of(path, name)?;
        match mkdirat(
            Some(parent.as_raw_fd()),
            at.as_os_str(),
            Mode::from_bits_truncate(0o700),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => return Err(self.write_error("creating", path, name, errno)),
        }
        let dir = match fsroot::open_dir_beneath(parent_fd(&parent), Path::new(&at)) {
            Ok(dir) => dir,
            Err(Errno::ENOTDIR) => {
                return Err(UploadError::BadArchive {
                    reason: format!(
                        "entry {name:?}: a directory over an earlier non-directory entry"
                    ),
                })
            }
            Err(errno) => return Err(self.write_error("opening", path, name, errno)),
        };
        fchmod(dir.as_raw_fd(), Mode::from_bits_truncate(mode)).map_err(|errno| {
            UploadError::io("setting the mode of", &self.shown.join(path), errno.into())
        })
    }

    /// Runs `create` for `path`'s name in its (opened) parent; creates
    /// missing parents, and replaces an earlier non-directory entry at the
    /// same path (tar's last-wins). Returns the parent and the name.
    fn place(
        &mut self,
        path: &Path,
        name: &str,
        mut create: impl FnMut(RawFd, &OsStr) -> Result<(), Errno>,
    ) -> Result<(OwnedFd, OsString), UploadError> {
        let (parent, at) = self.parent_of(path, name)?;
        let dir = parent.as_raw_fd();
        match create(dir, &at) {
            Ok(()) => return Ok((parent, at)),
            Err(Errno::EEXIST) => {
                let old = fstatat(Some(dir), at.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW);
                if old.is_ok_and(|stat| file_type(stat.st_mode) == SFlag::S_IFDIR) {
                    return Err(UploadError::BadArchive {
                        reason: format!("entry {name:?}: replaces an earlier directory entry"),
                    });
                }
                // Unlinking (never opening) the old entry: a hardlink to it
                // keeps its content, a symlink is not followed.
                unlinkat(Some(dir), at.as_os_str(), UnlinkatFlags::NoRemoveDir).map_err(
                    |errno| UploadError::io("replacing", &self.shown.join(path), errno.into()),
                )?;
            }
            Err(errno) => return Err(self.write_error("creating", path, name, errno)),
        }
        match create(dir, &at) {
            Ok(()) => Ok((parent, at)),
            Err(errno) => Err(self.write_error("creating", path, name, errno)),
        }
    }

    /// Opens the parent dir of `path` beneath the root, creating what is
    /// missing; returns it with `path`'s last component.
    fn parent_of(&mut self, path: &Path, name: &str) -> Result<(OwnedFd, OsString), UploadError> {
        let at = path.file_name().unwrap_or_default().to_owned();
        let parent = path.parent().unwrap_or(Path::new(""));
        match fsroot::open_dir_beneath(self.root, parent) {
            Ok(dir) => Ok((dir, at)),
            Err(Errno::ENOENT) => Ok((self.parents(parent, name)?, at)),
            Err(Errno::ENOTDIR) => Err(self.not_a_dir(parent, name)),
            Err(errno) => Err(self.write_error("opening", parent, name, errno)),
        }
    }

    /// Creates the missing dirs of `parent` (mode 0755), refusing any that
    /// exists as something other than a directory; returns the deepest.
    fn parents(&mut self, parent: &Path, name: &str) -> Result<OwnedFd, UploadError> {
        let mut here = fsroot::open_dir_beneath(self.root, Path::new(""))
            .map_err(|errno| self.write_error("opening", Path::new(""), name, errno))?;
        let mut walked = PathBuf::new();
        for component in parent.iter() {
            walked.push(component);
            let made = mkdirat(
                Some(here.as_raw_fd()),
                component,
                Mode::from_bits_truncate(0o755),
            );
            let created = match made {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(errno) => return Err(self.write_error("creating", &walked, name, errno)),
            };
            here = match fsroot::open_dir_beneath(parent_fd(&here), Path::new(component)) {
                Ok(next) => next,
                Err(Errno::ENOTDIR) => return Err(self.not_a_dir(&walked, name)),
                Err(errno) => return Err(self.write_error("opening", &walked, name, errno)),
            };
            if created {
                fchmod(here.as_raw_fd(), Mode::from_bits_truncate(0o755)).map_err(|errno| {
                    UploadError::io(
                        "setting the mode of",
                        &self.shown.join(&walked),
                        errno.into(),
                    )
                })?;
            }
        }
        Ok(here)
    }

    fn not_a_dir(&self, parent: &Path, name: &str) -> UploadError {
        UploadError::BadArchive {
            reason: format!(
                "entry {name:?}: its parent {} is not a directory",
                parent.display()
            ),
        }
    }

    /// A write that failed: a name the file system refuses is the
    /// archive's fault; a symlink met on the way or a dir gone (the tree
    /// was changed while extracting) makes the upload unsafe; anything
    /// else is the disk's.
    fn write_error(
        &self,
        action: &'static str,
        path: &Path,
        name: &str,
        errno: Errno,
    ) -> UploadError {
        match errno {
            Errno::ENAMETOOLONG | Errno::EILSEQ | Errno::ENOTDIR => UploadError::BadArchive {
                reason: format!("entry {name:?}: the file system refuses it: {errno}"),
            },
            // The staging tree is this upload's alone: a dir gone, or a
            // symlink on the way, means someone else changed it meanwhile.
            Errno::ELOOP | Errno::EXDEV | Errno::ENOENT => UploadError::Unsafe {
                entry: name.to_owned(),
                reason: "a directory on its path was moved or replaced by a symlink during the extraction"
                    .to_owned(),
            },
            _ => UploadError::io(action, &self.shown.join(path), errno.into()),
        }
    }

    pub(super) fn finish(mut self) -> Result<Summary, UploadError> {
        if let Err((path, reason)) = self.links.recheck() {
            return Err(UploadError::Unsafe {
                entry: path.display().to_string(),
                reason,
            });
        }
        // Deepest first, so setting a child's mtime does not disturb its
        // parent's; for a directory listed twice the later entry wins.
        self.dirs
            .sort_by_key(|(path, _)| std::cmp::Reverse(path.components().count()));
        for (path, mtime) in &self.dirs {
            let Some(time) = mtime else { continue };
            let full = self.shown.join(path);
            let times = FileTimes::new().set_accessed(*time).set_modified(*time);
            let shown = path.display().to_string();
            let dir = fsroot::open_dir_beneath(self.root, path)
                .map_err(|errno| self.write_error("setting the mtime of", path, &shown, errno))?;
            File::from(dir)
                .set_times(times)
                .map_err(|err| UploadError::io("setting the mtime of", &full, err))?;
        }
        Ok(self.summary)
    }
}

fn file_type(mode: u32) -> SFlag {
    SFlag::from_bits_truncate(mode) & SFlag::S_IFMT
}

fn parent_fd(fd: &OwnedFd) -> BorrowedFd<'_> {
    std::os::fd::AsFd::as_fd(fd)
}

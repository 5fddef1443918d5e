//! Writing validated entries under the extraction root: files, dirs,
//! symlinks and hardlinks, with their modes and mtimes, never following a
//! symlink and never writing through one.
//!
//! Every path handed here comes from [`entry::plan`], so it is relative,
//! free of `..` and of the archive's own symlinks; the root is a fresh
//! directory only this upload writes to.

use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::entry::{self, Kind, Links, Plan};
use super::extract::{read_error, Stats, Summary};
use super::UploadError;
use crate::config::UploadLimits;

/// Size of the copy buffer for file data.
const COPY_BUFFER: usize = 256 * 1024;

/// Writes validated entries under `root`.
pub(super) struct Writer<'a> {
    root: &'a Path,
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
    pub(super) fn new(root: &'a Path, limits: &'a UploadLimits, stats: Rc<Stats>) -> Writer<'a> {
        Writer {
            root,
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
                let full = self.root.join(&path);
                self.place(&path, name, |p| std::os::unix::fs::symlink(&target, p))?;
                if let Some(time) = mtime {
                    let time = filetime::FileTime::from_system_time(time);
                    let _ = filetime::set_symlink_file_times(&full, time, time);
                }
                self.links.insert(path, target);
                Ok(())
            }
            Plan::Hardlink { path, target } => {
                let source = self.root.join(&target);
                match fs::symlink_metadata(&source) {
                    Ok(meta) if meta.file_type().is_file() => {}
                    _ => {
                        return Err(UploadError::Unsafe {
                            entry: name.to_owned(),
                            reason: format!(
                                "hardlink target {} is not a regular file extracted earlier from this archive",
                                target.display()
                            ),
                        })
                    }
                }
                self.place(&path, name, |p| fs::hard_link(&source, p))
            }
        }
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
        let full = self.root.join(path);
        let mut file = None;
        self.place(path, name, |p| {
            file = Some(
                OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                    .open(p)?,
            );
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
        let full = self.root.join(path);
        let created = fs::DirBuilder::new().mode(0o700).create(&full);
        match created {
            Ok(()) => {}
            Err(err) if err.kind() == io::ErrorKind::NotFound => {
                self.parents(path, name)?;
                fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&full)
                    .map_err(|err| self.write_error("creating", &full, name, err))?;
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if !is_dir(&full) {
                    return Err(UploadError::BadArchive {
                        reason: format!(
                            "entry {name:?}: a directory over an earlier non-directory entry"
                        ),
                    });
                }
            }
            Err(err) => return Err(self.write_error("creating", &full, name, err)),
        }
        fs::set_permissions(&full, Permissions::from_mode(mode))
            .map_err(|err| UploadError::io("setting the mode of", &full, err))
    }

    /// Runs `create` at `path`; creates missing parents, and replaces an
    /// earlier non-directory entry at the same path (tar's last-wins).
    fn place(
        &mut self,
        path: &Path,
        name: &str,
        mut create: impl FnMut(&Path) -> io::Result<()>,
    ) -> Result<(), UploadError> {
        let full = self.root.join(path);
        match create(&full) {
            Ok(()) => return Ok(()),
            Err(err) if err.kind() == io::ErrorKind::NotFound => self.parents(path, name)?,
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                if is_dir(&full) {
                    return Err(UploadError::BadArchive {
                        reason: format!("entry {name:?}: replaces an earlier directory entry"),
                    });
                }
                // Unlinking (never opening) the old entry: a hardlink to it
                // keeps its content, a symlink is not followed.
                fs::remove_file(&full).map_err(|err| UploadError::io("replacing", &full, err))?;
            }
            Err(err) => return Err(self.write_error("creating", &full, name, err)),
        }
        create(&full).map_err(|err| self.write_error("creating", &full, name, err))
    }

    /// Creates the missing parents of `path` (mode 0755), refusing any
    /// that exists as something other than a directory.
    fn parents(&mut self, path: &Path, name: &str) -> Result<(), UploadError> {
        let Some(parent) = path.parent() else {
            return Ok(());
        };
        let mut here = self.root.to_path_buf();
        for component in parent.iter() {
            here.push(component);
            match fs::DirBuilder::new().mode(0o755).create(&here) {
                Ok(()) => fs::set_permissions(&here, Permissions::from_mode(0o755))
                    .map_err(|err| UploadError::io("setting the mode of", &here, err))?,
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists && is_dir(&here) => {}
                Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {
                    return Err(UploadError::BadArchive {
                        reason: format!(
                            "entry {name:?}: its parent {} is not a directory",
                            here.strip_prefix(self.root).unwrap_or(&here).display()
                        ),
                    })
                }
                Err(err) => return Err(self.write_error("creating", &here, name, err)),
            }
        }
        Ok(())
    }

    /// A write that failed: a name the file system refuses is the
    /// archive's fault; anything else is the disk's.
    fn write_error(
        &self,
        action: &'static str,
        path: &Path,
        name: &str,
        err: io::Error,
    ) -> UploadError {
        match err.raw_os_error() {
            Some(libc::ENAMETOOLONG) | Some(libc::EILSEQ) | Some(libc::ENOTDIR) => {
                UploadError::BadArchive {
                    reason: format!("entry {name:?}: the file system refuses it: {err}"),
                }
            }
            _ => UploadError::io(action, path, err),
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
            let full = self.root.join(path);
            let times = FileTimes::new().set_accessed(*time).set_modified(*time);
            File::open(&full)
                .and_then(|dir| dir.set_times(times))
                .map_err(|err| UploadError::io("setting the mtime of", &full, err))?;
        }
        Ok(self.summary)
    }
}

fn is_dir(path: &Path) -> bool {
    fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_dir())
}

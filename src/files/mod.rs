//! Reading files under the roots: open a file to stream it, stat one
//! path, list a directory in pages, and a run's own files beneath its
//! work dir. Every path is resolved through a root's descriptor
//! ([`crate::fsroot`]): no symlink below a root is followed, nothing
//! outside the roots (nor `/proc`, `/sys`, `/dev`) is served.
//!
//! - `archive`: a directory as a tar.gz built on the fly.
//! - `meta`: what a stat or a listing says of one entry.
//! - `ops`: delete, mkdir and move under the upload roots.
//! - `range`: the `Range` header (pure, table-tested).
//! - `watch`: a directory watch (inotify), bounded.

mod archive;
mod meta;
mod ops;
pub mod range;
mod watch;

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

pub use archive::Compression;
pub use meta::{EntryKind, Meta};
pub use watch::Change;

use crate::fsroot::{self, FileRoots};

/// Largest page of a listing.
pub const MAX_LIST_LIMIT: usize = 1000;

/// Most entries a listed directory may hold (its names are sorted in
/// memory to page them).
const MAX_DIR_ENTRIES: usize = 1_000_000;

/// Why a file operation failed.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The path or a parameter is malformed.
    #[error("{0}")]
    Invalid(String),
    /// The path is outside every root.
    #[error(
        "{path} is outside the readable roots ({roots}); read under one of them or add --read-root"
    )]
    NotAllowed {
        /// The path asked for.
        path: String,
        /// The roots.
        roots: String,
    },
    /// A change outside the upload roots.
    #[error("{path} is outside the upload roots ({roots}); change files under one of them or add --upload-root")]
    NotWritable {
        /// The path asked for.
        path: String,
        /// The upload roots.
        roots: String,
    },
    /// Something is already at the path.
    #[error("{0} already exists (as something else, for a directory); choose another path or remove it first")]
    Exists(String),
    /// A non-empty directory deleted without `recursive`.
    #[error("{0} is a directory that is not empty; pass recursive=true to remove it whole")]
    NotEmpty(String),
    /// The path passes through a symlink below its root, or names a
    /// kernel file system.
    #[error("{0} passes through a symlink (or a kernel file system); no symlink below a root is followed: name the real path")]
    ThroughSymlink(String),
    /// Nothing at the path.
    #[error("{0} does not exist")]
    NotFound(String),
    /// A directory where a file is needed, or the reverse.
    #[error("{path} {what}")]
    WrongKind {
        /// The path.
        path: String,
        /// What is wrong, e.g. "is a directory; list it or name a file".
        what: &'static str,
    },
    /// Disk trouble.
    #[error("i/o error while {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// A file opened for reading, with what a download needs to know.
#[derive(Debug)]
pub struct OpenedFile {
    /// The open file.
    pub file: File,
    /// Its metadata.
    pub meta: Meta,
}

/// One page of a directory listing.
#[derive(Debug)]
pub struct Listing {
    /// Entries, sorted by name.
    pub entries: Vec<Meta>,
    /// Name to pass as `after` for the next page, when there is one.
    pub next: Option<String>,
}

/// Reads under the roots. Cheap to clone.
#[derive(Clone)]
pub struct Files {
    roots: Arc<FileRoots>,
}

/// Where a path was found: a directory descriptor and a path below it.
struct Located<'a> {
    base: BorrowedFd<'a>,
    rel: PathBuf,
    shown: String,
}

impl Files {
    /// Reads through these roots.
    pub fn new(roots: Arc<FileRoots>) -> Files {
        Files { roots }
    }

    fn locate(&self, path: &str) -> Result<Located<'_>, FilesError> {
        let parsed = fsroot::parse_absolute(path).map_err(FilesError::Invalid)?;
        let Some((root, rel)) = self.roots.read.locate(&parsed) else {
            return Err(FilesError::NotAllowed {
                path: path.to_owned(),
                roots: self.roots.read.describe(),
            });
        };
        Ok(Located {
            base: root.fd(),
            rel,
            shown: path.to_owned(),
        })
    }

    fn locate_in_run(&self, run_id: &str, path: &str) -> Result<Located<'_>, FilesError> {
        let rel = fsroot::parse_relative(path).map_err(FilesError::Invalid)?;
        Ok(Located {
            base: self.roots.work_root.fd(),
            rel: Path::new(run_id).join(rel),
            shown: format!("{path:?} in run {run_id}'s work dir"),
        })
    }

    /// Opens the file at `path` (absolute, under a readable root).
    pub fn open(&self, path: &str) -> Result<OpenedFile, FilesError> {
        open_file(&self.locate(path)?)
    }

    /// Opens `path` relative to the work dir of `run_id`.
    pub fn open_in_run(&self, run_id: &str, path: &str) -> Result<OpenedFile, FilesError> {
        open_file(&self.locate_in_run(run_id, path)?)
    }

    /// What is at `path` (a symlink is described, not followed).
    pub fn stat(&self, path: &str) -> Result<Meta, FilesError> {
        let at = self.locate(path)?;
        if at.rel.as_os_str().is_empty() {
            let dir = opened(&at, fsroot::open_dir_beneath(at.base, &at.rel))?;
            return meta::of_dir_itself(dir.as_fd(), &at.rel)
                .map_err(|err| io_error("reading", &at, err));
        }
        let (parent, name) = opened(&at, fsroot::open_parent_beneath(at.base, &at.rel))?;
        meta::at(parent.as_fd(), &name).map_err(|errno| located_error(&at, errno))
    }

    /// A page of the directory at `path`: up to `limit` entries whose
    /// names sort after `after`.
    pub fn list(
        &self,
        path: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Listing, FilesError> {
        if limit == 0 || limit > MAX_LIST_LIMIT {
            return Err(FilesError::Invalid(format!(
                "limit {limit} must be between 1 and {MAX_LIST_LIMIT}"
            )));
        }
        let at = self.locate(path)?;
        let dir = match fsroot::open_dir_beneath(at.base, &at.rel) {
            Err(Errno::ENOTDIR) => {
                return Err(FilesError::WrongKind {
                    path: at.shown,
                    what: "is not a directory; stat it or download it",
                })
            }
            other => opened(&at, other)?,
        };
        let mut names =
            meta::names(&dir, MAX_DIR_ENTRIES).map_err(|err| io_error("listing", &at, err))?;
        names.sort();
        let start = match after {
            Some(after) => names.partition_point(|name| name.as_os_str() <= OsStr::new(after)),
            None => 0,
        };
        let page = &names[start..names.len().min(start + limit)];
        let mut entries = Vec::with_capacity(page.len());
        for name in page {
            match meta::at(dir.as_fd(), name) {
                Ok(entry) => entries.push(entry),
                // Removed since the names were read.
                Err(Errno::ENOENT) => continue,
                Err(errno) => return Err(io_error("listing", &at, errno.into())),
            }
        }
        let next = (start + limit < names.len())
            .then(|| page.last().map(|n| n.to_string_lossy().into_owned()))
            .flatten();
        Ok(Listing { entries, next })
    }
}

fn open_file(at: &Located<'_>) -> Result<OpenedFile, FilesError> {
    let fd = opened(
        at,
        fsroot::open_beneath(at.base, &at.rel, OFlag::O_RDONLY, Mode::empty()),
    )?;
    let file = File::from(fd);
    let stat = file
        .metadata()
        .map_err(|err| io_error("reading", at, err))?;
    if stat.is_dir() {
        return Err(FilesError::WrongKind {
            path: at.shown.clone(),
            what: "is a directory; list it, or name a file",
        });
    }
    if !stat.is_file() {
        return Err(FilesError::WrongKind {
            path: at.shown.clone(),
            what: "is not a regular file",
        });
    }
    let name = at
        .rel
        .file_name()
        .unwrap_or_default()
        .to_string_lossy()
        .into_owned();
    Ok(OpenedFile {
        meta: Meta::from_std(name, &stat, None),
        file,
    })
}

fn opened<T>(at: &Located<'_>, res: Result<T, Errno>) -> Result<T, FilesError> {
    res.map_err(|errno| located_error(at, errno))
}

fn located_error(at: &Located<'_>, errno: Errno) -> FilesError {
    match errno {
        Errno::ENOENT => FilesError::NotFound(at.shown.clone()),
        Errno::ELOOP | Errno::EXDEV | Errno::EACCES => FilesError::ThroughSymlink(at.shown.clone()),
        Errno::ENOTDIR => FilesError::WrongKind {
            path: at.shown.clone(),
            what: "has a component that is not a directory",
        },
        Errno::ENAMETOOLONG => FilesError::Invalid(format!("{} is too long", at.shown)),
        errno => io_error("opening", at, errno.into()),
    }
}

fn io_error(action: &'static str, at: &Located<'_>, source: io::Error) -> FilesError {
    FilesError::Io {
        action,
        path: at.shown.clone(),
        source,
    }
}

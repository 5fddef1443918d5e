//! A bundle's staging dir and its move into place, all through the work
//! root's descriptor (opened at start): a run that swaps the work root or
//! a dir of the tree for a symlink redirects neither the extraction nor
//! the rename nor the removal of a failed upload.
//!
//! The staging dir is in the work root, mode 0700: with `--run-user`
//! the work root is the daemon's (0711) and no run can write there; a run
//! of the daemon's own uid can, and the descriptors are what hold then.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, IntoRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{renameat, renameat2, AtFlags, RenameFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode};

use super::UploadError;
use crate::fsroot::{self, Root};

/// Names of staging dirs in the work root. A leading `.` keeps them apart
/// from run ids, which cannot start with one.
pub(super) const STAGING_PREFIX: &str = ".sandboxd-staging-";

/// Tries at removing a staging dir whose tree someone else changes.
const REMOVAL_PASSES: usize = 100;

/// A staging dir, created and used through descriptors: `root` is the
/// work root opened at start, `dir` the staging dir itself. Removed on
/// drop unless kept.
pub(super) struct Staging {
    pub(super) root: OwnedFd,
    name: OsString,
    pub(super) dir: OwnedFd,
    /// Its path, for messages.
    pub(super) shown: PathBuf,
    pub(super) keep: bool,
}

impl Staging {
    pub(super) fn create(work_root: &Root) -> Result<Staging, UploadError> {
        let name = OsString::from(format!("{STAGING_PREFIX}{}", uuid::Uuid::new_v4().simple()));
        let shown = work_root.path().join(&name);
        let root = work_root
            .fd()
            .try_clone_to_owned()
            .map_err(|err| UploadError::io("opening the work root for", &shown, err))?;
        mkdirat(
            Some(root.as_raw_fd()),
            name.as_os_str(),
            Mode::from_bits_truncate(0o700),
        )
        .map_err(|errno| UploadError::io("creating the staging dir", &shown, errno.into()))?;
        let dir = match fsroot::open_dir_beneath(root.as_fd(), Path::new(&name)) {
            Ok(dir) => dir,
            Err(errno) => {
                let _ = fsroot::remove_tree_at(root.as_fd(), &name);
                return Err(UploadError::io(
                    "opening the staging dir",
                    &shown,
                    errno.into(),
                ));
            }
        };
        Ok(Staging {
            root,
            name,
            dir,
            shown,
            keep: false,
        })
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        // A run changing the tree meanwhile can make one pass fail
        // (ENOTEMPTY); it can only move what exists, so passes converge.
        let mut failed = None;
        for _ in 0..REMOVAL_PASSES {
            match fsroot::remove_tree_at(self.root.as_fd(), &self.name) {
                Ok(()) => return,
                Err(err) => failed = Some(err),
            }
        }
        if let Some(err) = failed {
            tracing::warn!(path = %self.shown.display(), %err, "cannot remove a staging dir");
        }
    }
}

/// Moves the staging dir to the run's work dir (`run_id` in the work
/// root). Returns whether an existing work dir was exchanged (it now sits
/// at the staging name).
pub(super) fn put_in_place(
    staging: &Staging,
    run_id: &str,
    work_dir: &Path,
    replace: bool,
) -> Result<bool, UploadError> {
    let root = Some(staging.root.as_raw_fd());
    let moved = renameat2(
        root,
        staging.name.as_os_str(),
        root,
        run_id,
        RenameFlags::RENAME_NOREPLACE,
    );
    match moved {
        Ok(()) => return Ok(false),
        Err(Errno::EEXIST) | Err(Errno::ENOTEMPTY) => {}
        // File systems without rename flags: check, then plain rename.
        Err(Errno::EINVAL) if is_missing(staging.root.as_fd(), run_id) => {
            renameat(root, staging.name.as_os_str(), root, run_id).map_err(|errno| {
                UploadError::io("renaming the staging dir to", work_dir, errno.into())
            })?;
            return Ok(false);
        }
        Err(Errno::EINVAL) => {}
        Err(errno) => {
            return Err(UploadError::io(
                "renaming the staging dir to",
                work_dir,
                io::Error::from(errno),
            ))
        }
    }
    if !replace && !is_empty_or_missing(staging.root.as_fd(), run_id) {
        return Err(UploadError::WorkDirExists(work_dir.to_owned()));
    }
    exchange(staging, run_id)
        .map_err(|err| UploadError::io("exchanging the staging dir with", work_dir, err))?;
    Ok(true)
}

/// Atomically swaps the staging dir and `run_id` in the work root; on file
/// systems without `RENAME_EXCHANGE`, two renames through a temporary name.
fn exchange(staging: &Staging, run_id: &str) -> io::Result<()> {
    let root = Some(staging.root.as_raw_fd());
    let a = staging.name.as_os_str();
    match renameat2(root, a, root, run_id, RenameFlags::RENAME_EXCHANGE) {
        Ok(()) => Ok(()),
        Err(Errno::EINVAL) => {
            let mut aside = staging.name.clone();
            aside.push(".old");
            renameat(root, run_id, root, aside.as_os_str())?;
            if let Err(errno) = renameat(root, a, root, run_id) {
                let _ = renameat(root, aside.as_os_str(), root, run_id);
                return Err(errno.into());
            }
            Ok(renameat(root, aside.as_os_str(), root, a)?)
        }
        Err(errno) => Err(io::Error::from(errno)),
    }
}

pub(super) fn undo(staging: &Staging, run_id: &str, swapped: bool) -> io::Result<()> {
    if swapped {
        return exchange(staging, run_id);
    }
    let root = Some(staging.root.as_raw_fd());
    Ok(renameat(root, run_id, root, staging.name.as_os_str())?)
}

fn is_missing(dir: BorrowedFd<'_>, name: &str) -> bool {
    fstatat(Some(dir.as_raw_fd()), name, AtFlags::AT_SYMLINK_NOFOLLOW) == Err(Errno::ENOENT)
}

/// Whether `name` in `dir` is missing or an empty directory (never
/// following a symlink).
pub(super) fn is_empty_or_missing(dir: BorrowedFd<'_>, name: &str) -> bool {
    if is_missing(dir, name) {
        return true;
    }
    let Ok(opened) = fsroot::open_dir_beneath(dir, Path::new(name)) else {
        return false;
    };
    let Ok(mut listing) = nix::dir::Dir::from_fd(opened.into_raw_fd()) else {
        return false;
    };
    let empty = listing
        .iter()
        .filter_map(Result::ok)
        .all(|entry| matches!(entry.file_name().to_bytes(), b"." | b".."));
    empty
}

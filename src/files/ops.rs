//! Changes under the upload roots: delete (recursive only when asked),
//! make a directory (with its parents), move within the roots. Each acts
//! through the root's descriptor, never following a symlink; the entry
//! named last is acted on itself (a symlink is removed or moved, not its
//! target).

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{renameat2, AtFlags, RenameFlags};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use super::{located_error, Files, FilesError, Located};
use crate::fsroot;

impl Files {
    fn locate_writable(&self, path: &str) -> Result<Located<'_>, FilesError> {
        let parsed = fsroot::parse_absolute(path).map_err(FilesError::Invalid)?;
        let Some((root, rel)) = self.roots.upload.locate(&parsed) else {
            return Err(FilesError::NotWritable {
                path: path.to_owned(),
                roots: self.roots.upload.describe(),
            });
        };
        if rel.as_os_str().is_empty() {
            return Err(FilesError::Invalid(format!(
                "{path} is an upload root itself; name something below it"
            )));
        }
        Ok(Located {
            base: root.fd(),
            rel,
            shown: path.to_owned(),
        })
    }

    fn parent_of(&self, at: &Located<'_>) -> Result<(OwnedFd, OsString), FilesError> {
        fsroot::open_parent_beneath(at.base, &at.rel).map_err(|errno| located_error(at, errno))
    }

    /// Removes `path`; a directory only when empty, or with `recursive`.
    pub fn delete(&self, path: &str, recursive: bool) -> Result<(), FilesError> {
        let at = self.locate_writable(path)?;
        let (parent, name) = self.parent_of(&at)?;
        let dir = parent.as_raw_fd();
        let stat = fstatat(Some(dir), name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(|errno| located_error(&at, errno))?;
        let is_dir = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR;
        let removed = match (is_dir, recursive) {
            (false, _) => unlinkat(Some(dir), name.as_os_str(), UnlinkatFlags::NoRemoveDir),
            (true, false) => unlinkat(Some(dir), name.as_os_str(), UnlinkatFlags::RemoveDir),
            (true, true) => {
                return fsroot::remove_tree_at(parent.as_fd(), &name).map_err(|source| {
                    FilesError::Io {
                        action: "removing",
                        path: at.shown.clone(),
                        source,
                    }
                })
            }
        };
        match removed {
            Err(Errno::ENOTEMPTY | Errno::EEXIST) => Err(FilesError::NotEmpty(at.shown)),
            other => other.map_err(|errno| located_error(&at, errno)),
        }
    }

    /// Makes the directory `path` and its missing parents (mode 0755).
    /// Returns whether it was created (false: it existed).
    pub fn mkdir(&self, path: &str) -> Result<bool, FilesError> {
        let at = self.locate_writable(path)?;
        let mut here = fsroot::open_dir_beneath(at.base, Path::new(""))
            .map_err(|errno| located_error(&at, errno))?;
        let mut created = false;
        for part in at.rel.iter() {
            created = match mkdirat(
                Some(here.as_raw_fd()),
                part,
                Mode::from_bits_truncate(0o755),
            ) {
                Ok(()) => true,
                Err(Errno::EEXIST) => false,
                Err(errno) => return Err(located_error(&at, errno)),
            };
            here =
                fsroot::open_dir_beneath(here.as_fd(), Path::new(part)).map_err(
                    |errno| match errno {
                        Errno::ENOTDIR => FilesError::Exists(at.shown.clone()),
                        errno => located_error(&at, errno),
                    },
                )?;
        }
        Ok(created)
    }

    /// Moves `from` to `to`, both under the upload roots; never over an
    /// existing entry.
    pub fn rename(&self, from: &str, to: &str) -> Result<(), FilesError> {
        let source = self.locate_writable(from)?;
        let target = self.locate_writable(to)?;
        let (source_dir, source_name) = self.parent_of(&source)?;
        let (target_dir, target_name) = self.parent_of(&target)?;
        let moved = renameat2(
            Some(source_dir.as_raw_fd()),
            source_name.as_os_str(),
            Some(target_dir.as_raw_fd()),
            target_name.as_os_str(),
            RenameFlags::RENAME_NOREPLACE,
        );
        match moved {
            Ok(()) => Ok(()),
            Err(Errno::EEXIST | Errno::ENOTEMPTY) => Err(FilesError::Exists(target.shown)),
            Err(Errno::EXDEV) => Err(FilesError::Invalid(format!(
                "{from} and {to} are on different file systems; copy instead"
            ))),
            Err(Errno::EINVAL) => Err(FilesError::Invalid(format!(
                "{to} lies inside {from}, or the file system cannot move without replacing"
            ))),
            Err(errno) => Err(located_error(&source, errno)),
        }
    }
}

//! `PUT /v1/files`: one file written atomically (temp file in the target
//! dir, fsync, rename, fsync of the dir) under one of the upload roots.
//!
//! The path is matched to an upload root by name, and everything below
//! the root is reached through the root's descriptor, opened at start,
//! with [`fsroot::open_beneath`]: no symlink is followed (a symlinked
//! parent is refused with 403, even one staying inside the roots), and
//! everything after that (creating missing dirs, the temp file, the
//! rename) is relative to the parent's descriptor, so swapping a path
//! component, or the root itself, for a symlink redirects nothing. A
//! symlink at the target name itself is replaced, never followed.
//!
//! Layout: `target` parses the `path` and `mode` query; the write itself,
//! descriptor-relative, is here.

mod target;

use std::ffi::{OsStr, OsString};
use std::fmt::Display;
use std::fs::{File, Permissions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::Stream;
use nix::errno::Errno;
use nix::fcntl::{openat, renameat, OFlag};
use nix::sys::stat::{fstatat, mkdirat, Mode, SFlag};
use nix::unistd::{unlinkat, UnlinkatFlags};

use self::target::{parse_mode, parse_path, shorten};
use super::bridge::{self, BodyReader, Pumped, DRAIN_EXTRA};
use super::{UploadError, Uploader};
use crate::fsroot::{self, Roots};

/// A file that was written.
#[derive(Debug, Clone)]
pub struct FileSummary {
    /// Its path, as asked.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
}

impl Uploader {
    /// Writes `body` to `path` with `mode` (octal text, default 0644).
    pub async fn put_file<S, E>(
        &self,
        path: &str,
        mode: Option<&str>,
        mut body: S,
    ) -> Result<FileSummary, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Display + Send + 'static,
    {
        let (opened, name, mode) = match self.prepare_file(path, mode).await {
            Ok(prepared) => prepared,
            Err(err) => {
                let idle = self.config().body_timeout;
                bridge::drain(&mut body, 0, DRAIN_EXTRA, idle, self.metrics()).await;
                return Err(err);
            }
        };
        let this = self.clone();
        let path = PathBuf::from(path);
        let task = tokio::spawn(async move {
            let (tx, reader) = bridge::channel();
            let job = tokio::task::spawn_blocking(move || {
                let written = write_file(&opened.dir, &name, mode, reader);
                if written.is_err() {
                    opened.remove_created();
                }
                written
            });
            let on_error = |err: E| UploadError::Incomplete(err.to_string());
            let mut total = 0;
            let pumped = bridge::pump(
                &mut body,
                tx,
                None,
                Some(this.config().body_timeout),
                this.metrics(),
                &mut total,
                on_error,
            )
            .await;
            if !matches!(pumped, Ok(Pumped::Complete)) {
                let idle = this.config().body_timeout;
                bridge::drain(&mut body, total, total + DRAIN_EXTRA, idle, this.metrics()).await;
            }
            let written = job.await.map_err(|err| UploadError::Io {
                action: "writing",
                path: path.clone(),
                source: io::Error::other(format!("the upload task failed: {err}")),
            })?;
            pumped?;
            let bytes = written.map_err(|err| err.at(&path))?;
            Ok(FileSummary { path, bytes })
        });
        task.await.map_err(|err| UploadError::Io {
            action: "writing",
            path: PathBuf::new(),
            source: io::Error::other(format!("the upload task failed: {err}")),
        })?
    }
}

impl Uploader {
    /// Checks the query and opens (creating) the parent dir under a root;
    /// returns it with the file's name and mode.
    async fn prepare_file(
        &self,
        path: &str,
        mode: Option<&str>,
    ) -> Result<(Opened, OsString, u32), UploadError> {
        let mode = parse_mode(mode)?;
        let (parents, name) = parse_path(path)?;
        let uploader = self.clone();
        let asked = path.to_owned();
        let opened = tokio::task::spawn_blocking(move || {
            open_parent(&asked, &parents, &uploader.roots().upload)
        })
        .await
        .map_err(|err| UploadError::Invalid(format!("cannot open the parent dir: {err}")))??;
        Ok((opened, name, mode))
    }
}

/// An error of the file system about the path the caller chose: a name it
/// refuses, a symlink loop, a dir sandboxd may not write. That is the
/// request's fault (400), not sandboxd's; anything else (a full disk, an
/// I/O error) is [`UploadError::io`]'s.
fn path_error(action: &'static str, path: &Path, err: io::Error) -> UploadError {
    let refused = matches!(
        err.raw_os_error(),
        Some(
            libc::ENAMETOOLONG
                | libc::ELOOP
                | libc::EACCES
                | libc::EPERM
                | libc::EROFS
                | libc::ENOTDIR
                | libc::EISDIR
                | libc::EILSEQ
        )
    );
    if refused {
        return UploadError::Invalid(format!(
            "{action} {}: {err}; choose another path",
            shorten(&path.to_string_lossy())
        ));
    }
    UploadError::io(action, path, err)
}

/// The opened parent dir, and the dirs created to reach it (removed again
/// if the write fails).
struct Opened {
    dir: OwnedFd,
    created: Vec<(OwnedFd, OsString)>,
}

impl Opened {
    fn remove_created(&self) {
        for (parent, name) in self.created.iter().rev() {
            let _ = unlinkat(
                Some(parent.as_raw_fd()),
                name.as_os_str(),
                UnlinkatFlags::RemoveDir,
            );
        }
    }
}

/// Finds the upload root the parent lies under, opens the deepest
/// existing dir beneath the root's descriptor (no symlink followed), then
/// creates what is missing below it.
/// The first symlink on `below` (relative to `root`), for the message.
fn through_symlink(asked: &str, root: &Path, below: &[OsString]) -> UploadError {
    let mut link = root.to_owned();
    for part in below {
        link.push(part);
        if let Ok(target) = std::fs::read_link(&link) {
            return UploadError::ThroughSymlink {
                path: asked.to_owned(),
                link,
                target,
            };
        }
    }
    UploadError::ThroughSymlink {
        path: asked.to_owned(),
        target: link.clone(),
        link,
    }
}

fn open_parent(asked: &str, parents: &[OsString], roots: &Roots) -> Result<Opened, UploadError> {
    let parent: PathBuf = std::iter::once(OsStr::new("/"))
        .chain(parents.iter().map(OsString::as_os_str))
        .collect();
    let forbidden = |shown: &Path| UploadError::Forbidden {
        path: asked.to_owned(),
        // For the message only: where the path leads when followed.
        resolved: std::fs::canonicalize(shown).unwrap_or_else(|_| shown.to_owned()),
        roots: roots.describe(),
    };
    let Some((root, rel)) = roots.locate(&parent) else {
        return Err(forbidden(&parent));
    };
    let below: Vec<OsString> = rel.iter().map(OsStr::to_owned).collect();
    let mut depth = below.len();
    let mut dir = loop {
        let prefix: PathBuf = below[..depth].iter().collect();
        match fsroot::open_dir_beneath(root.fd(), &prefix) {
            Ok(fd) => break fd,
            Err(Errno::ENOENT) if depth > 0 => depth -= 1,
            Err(Errno::ENOTDIR) => {
                return Err(UploadError::Invalid(format!(
                    "path {asked:?}: {} is not a directory",
                    root.path().join(prefix).display()
                )))
            }
            Err(Errno::ELOOP | Errno::EXDEV) => {
                return Err(through_symlink(asked, root.path(), &below[..depth]))
            }
            Err(errno) => {
                return Err(path_error(
                    "opening",
                    &root.path().join(prefix),
                    io::Error::from(errno),
                ))
            }
        }
    };
    let mut created = Vec::new();
    for name in &below[depth..] {
        match mkdirat(
            Some(dir.as_raw_fd()),
            name.as_os_str(),
            Mode::from_bits_truncate(0o755),
        ) {
            Ok(()) | Err(Errno::EEXIST) => {}
            Err(errno) => {
                let opened = Opened { dir, created };
                opened.remove_created();
                return Err(path_error(
                    "creating a dir for",
                    Path::new(asked),
                    io::Error::from(errno),
                ));
            }
        }
        // No symlink followed: a dir swapped for one in between is refused.
        let next = match fsroot::open_dir_beneath(dir.as_fd(), Path::new(name)) {
            Ok(next) => next,
            Err(errno) => {
                let opened = Opened { dir, created };
                opened.remove_created();
                return Err(path_error(
                    "opening a dir for",
                    Path::new(asked),
                    io::Error::from(errno),
                ));
            }
        };
        created.push((dir, name.clone()));
        dir = next;
    }
    Ok(Opened { dir, created })
}

/// Why a write failed, before the path is known to the message.
enum WriteError {
    Read(io::Error),
    Io(&'static str, io::Error),
    IsDir,
}

impl WriteError {
    fn at(self, path: &Path) -> UploadError {
        match self {
            WriteError::Read(err) => UploadError::Incomplete(err.to_string()),
            WriteError::Io(action, err) => path_error(action, path, err),
            WriteError::IsDir => UploadError::Invalid(format!(
                "path {} is a directory; name a file",
                path.display()
            )),
        }
    }
}

fn write_file(
    dir: &OwnedFd,
    name: &OsStr,
    mode: u32,
    mut body: BodyReader,
) -> Result<u64, WriteError> {
    let at = Some(dir.as_raw_fd());
    match fstatat(at, name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(stat) if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR => {
            return Err(WriteError::IsDir)
        }
        _ => {}
    }
    let tmp = format!(".sandboxd-upload-{}", uuid::Uuid::new_v4().simple());
    let flags =
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(at, tmp.as_str(), flags, Mode::from_bits_truncate(0o600))
        .map_err(|errno| WriteError::Io("creating a temp file for", io::Error::from(errno)))?;
    // SAFETY: `openat` just returned this descriptor; nothing else owns it.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let written = copy_and_sync(&mut body, &mut file, mode).and_then(|bytes| {
        renameat(at, tmp.as_str(), at, name)
            .map_err(|errno| WriteError::Io("renaming the temp file to", io::Error::from(errno)))?;
        File::from(
            dir.try_clone()
                .map_err(|err| WriteError::Io("syncing", err))?,
        )
        .sync_all()
        .map_err(|err| WriteError::Io("syncing the dir of", err))?;
        Ok(bytes)
    });
    if written.is_err() {
        let _ = unlinkat(at, tmp.as_str(), UnlinkatFlags::NoRemoveDir);
    }
    written
}

fn copy_and_sync(body: &mut BodyReader, file: &mut File, mode: u32) -> Result<u64, WriteError> {
    let mut buf = vec![0u8; 128 * 1024];
    let mut total = 0u64;
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(WriteError::Read(err)),
        };
        file.write_all(&buf[..n])
            .map_err(|err| WriteError::Io("writing", err))?;
        total += n as u64;
    }
    file.set_permissions(Permissions::from_mode(mode))
        .map_err(|err| WriteError::Io("setting the mode of", err))?;
    file.sync_all()
        .map_err(|err| WriteError::Io("syncing", err))?;
    Ok(total)
}

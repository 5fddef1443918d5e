//! File-system roots: directories opened once at start, and every path
//! below them resolved through their descriptors without following a
//! symlink.
//!
//! Resolution is `openat2` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS`; on a kernel without `openat2` (before 5.6), a
//! walk of `openat(O_NOFOLLOW)` one component at a time, which refuses
//! the same paths. A run that swaps a component (or the root's own path)
//! for a symlink therefore cannot redirect a read or a write: the
//! descriptor still names the directory opened at start, and a symlink
//! met on the way is an error (`ELOOP`), never followed.
//!
//! `/proc`, `/sys` and `/dev` are never served, whatever the roots: by
//! name, and by the file system type of what was opened (a bind mount of
//! procfs elsewhere is refused too).

use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{openat, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

/// Paths never served, whatever the roots.
const KERNEL_DIRS: [&str; 3] = ["/proc", "/sys", "/dev"];

/// A directory opened once; what lies below it is reached through `fd`.
#[derive(Debug)]
pub(crate) struct Root {
    /// The path as configured.
    path: PathBuf,
    /// Where it really was when opened (symlinks of the configured path
    /// resolved), so requests may name either.
    canonical: PathBuf,
    fd: OwnedFd,
}

impl Root {
    /// Opens `path` (following symlinks: the operator chose it).
    pub(crate) fn open(path: &Path) -> io::Result<Root> {
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC;
        let fd = openat(None, path, flags, Mode::empty()).map_err(io::Error::from)?;
        // SAFETY: `openat` just returned this descriptor; nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let canonical = std::fs::canonicalize(path)?;
        Ok(Root {
            path: path.to_owned(),
            canonical,
            fd,
        })
    }

    /// The configured path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The descriptor opened at start.
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// `rel` below this root, when `path` lies (lexically) under it.
    fn relative(&self, path: &Path) -> Option<PathBuf> {
        [&self.path, &self.canonical]
            .into_iter()
            .find_map(|base| path.strip_prefix(base).ok().map(Path::to_owned))
    }
}

/// The roots of one kind (upload roots, readable roots).
#[derive(Debug, Default)]
pub(crate) struct Roots {
    roots: Vec<Root>,
    /// The configured paths, opened or not, for messages.
    named: Vec<PathBuf>,
}

impl Roots {
    /// Opens every path that exists; one that cannot be opened is logged
    /// and serves nothing.
    pub(crate) fn open(paths: &[PathBuf]) -> Roots {
        let mut roots = Vec::new();
        for path in paths {
            match Root::open(path) {
                Ok(root) => roots.push(root),
                Err(err) => {
                    tracing::warn!(path = %path.display(), %err, "a file root cannot be opened; nothing under it is served")
                }
            }
        }
        Roots {
            roots,
            named: paths.to_vec(),
        }
    }

    /// The deepest root `path` (absolute, normalized) lies under, and the
    /// path relative to it. `None` outside every root and for anything
    /// under `/proc`, `/sys` or `/dev`.
    pub(crate) fn locate(&self, path: &Path) -> Option<(&Root, PathBuf)> {
        if KERNEL_DIRS.iter().any(|dir| path.starts_with(dir)) {
            return None;
        }
        self.roots
            .iter()
            .filter_map(|root| root.relative(path).map(|rel| (root, rel)))
            .max_by_key(|(_, rel)| std::cmp::Reverse(rel.components().count()))
    }

    /// The configured roots, comma-separated, for messages.
    pub(crate) fn describe(&self) -> String {
        self.named
            .iter()
            .map(|r| r.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The roots the daemon works in, opened once at start.
#[derive(Debug)]
pub struct FileRoots {
    /// `--work-root`: bundles are staged and put in place through it.
    pub(crate) work_root: Root,
    /// `--upload-root`s: where `PUT /v1/files`, mkdir, move and delete act.
    pub(crate) upload: Roots,
    /// The upload roots and the `--read-root`s: what may be read.
    pub(crate) read: Roots,
}

impl FileRoots {
    /// Opens the roots of `config`; the work root must exist.
    pub(crate) fn open(config: &crate::config::Config) -> io::Result<FileRoots> {
        let work_root = Root::open(&config.work_root)?;
        let readable: Vec<PathBuf> = config
            .upload_roots
            .iter()
            .chain(&config.read_roots)
            .cloned()
            .collect();
        Ok(FileRoots {
            work_root,
            upload: Roots::open(&config.upload_roots),
            read: Roots::open(&readable),
        })
    }
}

/// Splits an absolute path into its normal components; `.` and empty
/// components are dropped, `..` and relative paths refused.
pub(crate) fn parse_absolute(text: &str) -> Result<PathBuf, String> {
    if !text.starts_with('/') {
        return Err(format!("path {text:?} must be absolute, e.g. /tmp/out.txt"));
    }
    parse_components(text, PathBuf::from("/"))
}

/// Normalizes a path relative to some dir: no absolute paths, no `..`.
pub(crate) fn parse_relative(text: &str) -> Result<PathBuf, String> {
    if text.starts_with('/') {
        return Err(format!(
            "path {text:?} must be relative to the run's work dir"
        ));
    }
    parse_components(text, PathBuf::new())
}

/// The checks both kinds of path share, then the components.
fn parse_components(text: &str, mut out: PathBuf) -> Result<PathBuf, String> {
    if text.contains('\0') {
        return Err(format!("path {text:?} contains a NUL byte"));
    }
    if text.len() >= 4096 {
        return Err(format!(
            "path is {} bytes long; paths must be shorter than 4096 bytes",
            text.len()
        ));
    }
    for component in Path::new(text).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                return Err(format!("path {text:?} must not contain '..' components"))
            }
            Component::Normal(part) if part.len() > 255 => {
                return Err("a path component is longer than 255 bytes".to_owned())
            }
            Component::Normal(part) => out.push(part),
            Component::Prefix(_) => return Err(format!("path {text:?} is not a Unix path")),
        }
    }
    Ok(out)
}

/// Opens `rel` (relative) beneath `dir`, following no symlink and never
/// leaving `dir`; an empty `rel` opens `dir` itself again. A symlink met
/// on the way is `ELOOP`.
pub(crate) fn open_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let flags = flags | OFlag::O_CLOEXEC;
    let how = OpenHow::new().flags(flags).mode(mode).resolve(
        ResolveFlag::RESOLVE_BENEATH
            | ResolveFlag::RESOLVE_NO_SYMLINKS
            | ResolveFlag::RESOLVE_NO_MAGICLINKS,
    );
    let fd = match openat2(dir.as_raw_fd(), rel, how) {
        // Kernels before 5.6, or a seccomp filter that refuses it.
        Err(Errno::ENOSYS) => return walk_beneath(dir, rel, flags, mode),
        other => other?,
    };
    // SAFETY: `openat2` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    refuse_kernel_fs(&fd)?;
    Ok(fd)
}

/// The `openat2` fallback: one `openat(O_NOFOLLOW)` per component.
fn walk_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
    flags: OFlag,
    mode: Mode,
) -> Result<OwnedFd, Errno> {
    let parts: Vec<&OsStr> = rel.iter().filter(|part| *part != OsStr::new(".")).collect();
    if parts
        .iter()
        .any(|part| *part == OsStr::new("..") || *part == OsStr::new("/"))
    {
        return Err(Errno::EXDEV);
    }
    let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut here: Option<OwnedFd> = None;
    let Some((last, parents)) = parts.split_last() else {
        let fd = openat(Some(dir.as_raw_fd()), ".", flags, mode)?;
        // SAFETY: `openat` just returned this descriptor; nothing else owns it.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
    };
    for part in parents {
        let at = here.as_ref().map_or(dir.as_raw_fd(), AsRawFd::as_raw_fd);
        let fd = openat(Some(at), *part, dir_flags, Mode::empty())?;
        // SAFETY: `openat` just returned this descriptor; nothing else owns it.
        here = Some(unsafe { OwnedFd::from_raw_fd(fd) });
    }
    let at = here.as_ref().map_or(dir.as_raw_fd(), AsRawFd::as_raw_fd);
    let fd = match openat(Some(at), *last, flags | OFlag::O_NOFOLLOW, mode) {
        // `O_DIRECTORY | O_NOFOLLOW` on a symlink: answer as `openat2` does.
        Err(Errno::ENOTDIR) if is_symlink_at(at, last) => return Err(Errno::ELOOP),
        other => other?,
    };
    // SAFETY: `openat` just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    refuse_kernel_fs(&fd)?;
    Ok(fd)
}

fn is_symlink_at(dir: std::os::fd::RawFd, name: &OsStr) -> bool {
    use nix::sys::stat::{fstatat, SFlag};
    let stat = fstatat(Some(dir), name, nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW);
    stat.is_ok_and(|stat| SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK)
}

/// Opens the directory `rel` beneath `dir` (no symlinks).
pub(crate) fn open_dir_beneath(dir: BorrowedFd<'_>, rel: &Path) -> Result<OwnedFd, Errno> {
    open_beneath(
        dir,
        rel,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
}

/// Opens the parent of `rel` beneath `dir`; returns it with the last
/// component. `rel` must not be empty.
pub(crate) fn open_parent_beneath(
    dir: BorrowedFd<'_>,
    rel: &Path,
) -> Result<(OwnedFd, OsString), Errno> {
    let name = rel.file_name().ok_or(Errno::EINVAL)?.to_owned();
    let parent = rel.parent().unwrap_or(Path::new(""));
    Ok((open_dir_beneath(dir, parent)?, name))
}

/// procfs, sysfs and the like are refused wherever they are mounted.
fn refuse_kernel_fs(fd: &OwnedFd) -> Result<(), Errno> {
    use nix::sys::statfs::{fstatfs, PROC_SUPER_MAGIC, SYSFS_MAGIC};
    let Ok(stat) = fstatfs(fd) else {
        return Ok(());
    };
    let kind = stat.filesystem_type();
    // devpts has no constant in nix.
    const DEVPTS_SUPER_MAGIC: i64 = 0x1cd1;
    if kind == PROC_SUPER_MAGIC || kind == SYSFS_MAGIC || kind.0 == DEVPTS_SUPER_MAGIC {
        return Err(Errno::EACCES);
    }
    Ok(())
}

/// Removes `name` in `dir` and everything below it, without following a
/// symlink. The path handed to `remove_dir_all` starts at the descriptor
/// (`/proc/self/fd/N`), so a swapped component above cannot redirect it;
/// std's `remove_dir_all` itself opens each level with `O_NOFOLLOW`.
pub(crate) fn remove_tree_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    let path = fd_path(dir).join(name);
    let removed = match std::fs::symlink_metadata(&path) {
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(&path),
        Ok(_) => std::fs::remove_file(&path),
        Err(err) => Err(err),
    };
    match removed {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// `/proc/self/fd/N`: a path that starts at the descriptor.
fn fd_path(fd: BorrowedFd<'_>) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests;

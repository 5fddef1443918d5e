//! Validation of one archive entry, before anything touches the disk.
//!
//! Pure: takes the entry's raw name, type, link target and mode plus the
//! symlinks the archive created so far ([`Links`]), and answers what to do
//! ([`Plan`]) or why the entry is refused. The extractor never follows a
//! symlink while writing, so the only way an archive can reach outside the
//! work dir is through its own symlinks and hardlinks: those are resolved
//! here, through every earlier symlink of the same archive.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use tar::EntryType;

/// Most symlinks followed while resolving one target (Linux's own limit).
const MAX_LINK_DEPTH: usize = 40;

/// What kind of thing an entry creates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A regular file (also contiguous and GNU sparse files).
    File,
    /// A directory.
    Dir,
    /// A symbolic link.
    Symlink,
    /// A hard link to an earlier file of the archive.
    Hardlink,
    /// Metadata only (a PAX global header, a GNU volume label).
    Skip,
    /// Something sandboxd never creates; the reason names it.
    Refused(&'static str),
}

/// Maps a tar entry type to what sandboxd does with it.
///
/// Sockets have no tar type (tar implementations skip them when archiving);
/// every type not listed, including devices and FIFOs, is refused.
pub fn kind_of(entry_type: EntryType) -> Kind {
    match entry_type {
        EntryType::Regular | EntryType::Continuous | EntryType::GNUSparse => Kind::File,
        EntryType::Directory => Kind::Dir,
        EntryType::Symlink => Kind::Symlink,
        EntryType::Link => Kind::Hardlink,
        EntryType::XGlobalHeader => Kind::Skip,
        // A GNU volume label names the archive, not a file.
        other if other.as_byte() == b'V' => Kind::Skip,
        EntryType::Char => Kind::Refused("character device entries are not allowed"),
        EntryType::Block => Kind::Refused("block device entries are not allowed"),
        EntryType::Fifo => Kind::Refused("FIFO entries are not allowed"),
        _ => Kind::Refused("unsupported entry type (only files, directories and links)"),
    }
}

/// The symlinks an archive created so far: relative path to raw target.
#[derive(Debug, Default)]
pub struct Links {
    map: HashMap<PathBuf, PathBuf>,
}

impl Links {
    /// Records a symlink the extractor created.
    pub fn insert(&mut self, path: PathBuf, target: PathBuf) {
        self.map.insert(path, target);
    }

    /// Whether `path` is one of the archive's symlinks.
    pub fn contains(&self, path: &Path) -> bool {
        self.map.contains_key(path)
    }

    /// Checks again that every symlink resolves inside the root. A later
    /// entry can change what an earlier symlink's target walks through
    /// (`s -> d/../x`, then `d -> .`), so this runs once all entries exist.
    pub fn recheck(&self) -> Result<(), (PathBuf, String)> {
        for (path, target) in &self.map {
            let base = path.parent().unwrap_or(Path::new(""));
            if let Err(reason) = resolve(base, target, self) {
                let reason = format!(
                    "symlink target {}: {reason} through symlinks of later entries",
                    target.display()
                );
                return Err((path.clone(), reason));
            }
        }
        Ok(())
    }
}

/// What to do with one entry. Paths are relative to the extraction root,
/// normalized (no `.`, no empty components) and free of `..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Nothing to write.
    Skip,
    /// Create (or keep) a directory with this mode.
    Dir {
        /// Where.
        path: PathBuf,
        /// Permission bits, owner rwx always set.
        mode: u32,
    },
    /// Write a regular file with this mode.
    File {
        /// Where.
        path: PathBuf,
        /// Permission bits, without setuid/setgid/sticky.
        mode: u32,
    },
    /// Create a symlink with this (relative) target.
    Symlink {
        /// Where.
        path: PathBuf,
        /// The target as written in the archive.
        target: PathBuf,
    },
    /// Hard-link `path` to the earlier entry `target`.
    Hardlink {
        /// Where.
        path: PathBuf,
        /// The existing entry, relative to the root.
        target: PathBuf,
    },
}

/// Decides what to do with one entry, or why it is refused.
pub fn plan(
    name: &[u8],
    kind: Kind,
    link: Option<&[u8]>,
    mode: u32,
    links: &Links,
) -> Result<Plan, String> {
    if let Kind::Refused(reason) = kind {
        return Err(reason.to_owned());
    }
    if kind == Kind::Skip {
        return Ok(Plan::Skip);
    }
    let path = normalize(name)?;
    if path.as_os_str().is_empty() {
        return match kind {
            // `./` names the root itself, which already exists.
            Kind::Dir => Ok(Plan::Skip),
            _ => Err("the entry names the extraction root itself".to_owned()),
        };
    }
    check_not_through_links(&path, links)?;
    match kind {
        Kind::Dir => Ok(Plan::Dir {
            path,
            mode: (mode & 0o777) | 0o700,
        }),
        Kind::File => Ok(Plan::File {
            path,
            mode: mode & 0o777,
        }),
        Kind::Symlink => {
            let target = link_target(link)?;
            if target.is_absolute() {
                return Err(format!(
                    "symlink to the absolute path {} leaves the work dir; use a relative target",
                    target.display()
                ));
            }
            let base = path.parent().unwrap_or(Path::new(""));
            resolve(base, &target, links)
                .map_err(|reason| format!("symlink target {}: {reason}", target.display()))?;
            Ok(Plan::Symlink { path, target })
        }
        Kind::Hardlink => {
            let raw = link.unwrap_or_default();
            let target = normalize(raw).map_err(|reason| format!("hardlink target: {reason}"))?;
            if target.as_os_str().is_empty() || target == path {
                return Err("hardlink to itself or to the extraction root".to_owned());
            }
            if links.contains(&target) {
                return Err(format!(
                    "hardlink to the symlink {}; only links to regular files are allowed",
                    target.display()
                ));
            }
            check_not_through_links(&target, links)
                .map_err(|reason| format!("hardlink target: {reason}"))?;
            Ok(Plan::Hardlink { path, target })
        }
        Kind::Skip | Kind::Refused(_) => unreachable!("handled above"),
    }
}

/// Turns an entry name into a relative path: refuses absolute names and
/// `..` components (also with Windows separators), drops `.` and empty
/// components. An empty result names the root.
pub fn normalize(name: &[u8]) -> Result<PathBuf, String> {
    if name.contains(&0) {
        return Err("the name contains a NUL byte".to_owned());
    }
    if name.first() == Some(&b'/') {
        return Err("absolute path; archive entries must be relative".to_owned());
    }
    let mut path = PathBuf::new();
    for component in name.split(|b| *b == b'/') {
        if component.is_empty() || component == b"." {
            continue;
        }
        if component == b".." {
            return Err("`..` component; entries must stay inside the work dir".to_owned());
        }
        // A name written on Windows (`..\..\x`) is one odd file name on
        // Linux, but nobody means that: refuse it like `../`.
        if component.split(|b| *b == b'\\').any(|part| part == b"..") {
            return Err(
                "`..` component with Windows separators; entries must stay inside the work dir"
                    .to_owned(),
            );
        }
        path.push(OsStr::from_bytes(component));
    }
    Ok(path)
}

/// Resolves `target` as the kernel would from the directory `base` (both
/// relative to the root), following the archive's symlinks. Fails when the
/// walk leaves the root or loops.
pub fn resolve(base: &Path, target: &Path, links: &Links) -> Result<PathBuf, String> {
    let mut stack: Vec<OsString> = base.iter().map(OsStr::to_owned).collect();
    let mut queue: VecDeque<OsString> = components(target).collect();
    let mut followed = 0;
    while let Some(component) = queue.pop_front() {
        if component == ".." {
            if stack.pop().is_none() {
                return Err("resolves outside the work dir".to_owned());
            }
            continue;
        }
        stack.push(component);
        let here: PathBuf = stack.iter().collect();
        let Some(next) = links.map.get(&here) else {
            continue;
        };
        followed += 1;
        if followed > MAX_LINK_DEPTH {
            return Err("too many levels of symlinks".to_owned());
        }
        if next.is_absolute() {
            return Err("resolves through a symlink to an absolute path".to_owned());
        }
        // The link's target replaces it, relative to the link's directory.
        stack.pop();
        for part in components(next).collect::<Vec<_>>().into_iter().rev() {
            queue.push_front(part);
        }
    }
    Ok(stack.iter().collect())
}

fn components(path: &Path) -> impl Iterator<Item = OsString> + '_ {
    path.as_os_str()
        .as_bytes()
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty() && *c != b".")
        .map(|c| OsStr::from_bytes(c).to_owned())
}

fn link_target(link: Option<&[u8]>) -> Result<PathBuf, String> {
    let raw = link.unwrap_or_default();
    if raw.is_empty() {
        return Err("symlink without a target".to_owned());
    }
    if raw.contains(&0) {
        return Err("symlink target contains a NUL byte".to_owned());
    }
    Ok(PathBuf::from(OsStr::from_bytes(raw)))
}

/// Refuses a path that is, or lies under, one of the archive's symlinks:
/// writing there would write through the link.
fn check_not_through_links(path: &Path, links: &Links) -> Result<(), String> {
    for ancestor in path.ancestors() {
        if ancestor.as_os_str().is_empty() {
            break;
        }
        if links.contains(ancestor) {
            let what = if ancestor == path {
                "would replace"
            } else {
                "lies under"
            };
            return Err(format!(
                "{what} the symlink {} from an earlier entry; writing through symlinks is not allowed",
                ancestor.display()
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;

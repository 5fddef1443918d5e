//! Durable file writes: temp file in the same directory, fsync, rename,
//! fsync of the directory. A reader sees the old content or the new one,
//! never a torn file, also after a crash or power loss.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::hash::Hash;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Whether to wait for the data to reach the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its directory: the write survives power loss.
    Flush,
    /// Atomic rename only: readers never see a torn file, and a crash of
    /// the daemon loses nothing; only a power loss may.
    NoFlush,
}

/// Atomically replaces `path` with `bytes`, creating it with `mode`.
pub(crate) fn write_atomic(
    path: &Path,
    bytes: &[u8],
    mode: u32,
    sync: Durability,
) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::other("path has no parent directory"))?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other("path has no file name"))?;
    // Unique per write, not only per process: two writes of the same file
    // at once must not share (and tear) one temp file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        WRITES.fetch_add(1, Ordering::Relaxed)
    ));
    let res = write_new(&tmp, bytes, mode, sync).and_then(|()| fs::rename(&tmp, path));
    if res.is_err() {
        let _ = fs::remove_file(&tmp);
        return res;
    }
    if sync == Durability::Flush {
        sync_dir(dir)?;
    }
    Ok(())
}

fn write_new(tmp: &Path, bytes: &[u8], mode: u32, sync: Durability) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(tmp)?;
    file.write_all(bytes)?;
    if sync == Durability::Flush {
        file.sync_all()?;
    }
    Ok(())
}

/// Runs `write` here when it does not flush, else on the blocking pool:
/// an fsync may take the disk's milliseconds, and the daemon's runtime is
/// one thread that goes on serving meanwhile. `Err` only when `write`
/// panicked.
pub(crate) async fn off_runtime_when_flushed<T: Send + 'static>(
    sync: Durability,
    write: impl FnOnce() -> T + Send + 'static,
) -> Result<T, tokio::task::JoinError> {
    match sync {
        Durability::NoFlush => Ok(write()),
        Durability::Flush => tokio::task::spawn_blocking(write).await,
    }
}

/// fsyncs a directory, making renames and creations in it durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Whether an I/O error means the disk (or a quota, or a file-size limit)
/// is full. By kind, so errors that wrap the OS error with more context
/// (e.g. `tempfile`'s path) count too.
pub(crate) fn is_storage_full(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded | io::ErrorKind::FileTooLarge
    ) || matches!(
        err.raw_os_error(),
        Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, b"old", 0o600, Durability::Flush).unwrap();
        write_atomic(&path, b"new", 0o600, Durability::NoFlush).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["r.json"], "no temp file is left behind");
    }

    /// Writes of one file from many threads at once never tear it: each
    /// has its own temp file, and the file is always one whole version.
    #[test]
    fn concurrent_writes_never_tear() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.json");
        write_atomic(&path, &[b'0'; 100_000], 0o600, Durability::NoFlush).unwrap();
        std::thread::scope(|scope| {
            for writer in b'a'..b'h' {
                let path = &path;
                scope.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(path, &[writer; 100_000], 0o600, Durability::NoFlush).unwrap();
                    }
                });
            }
            scope.spawn(|| {
                for _ in 0..500 {
                    let bytes = fs::read(&path).unwrap();
                    assert_eq!(bytes.len(), 100_000);
                    assert!(bytes.iter().all(|b| *b == bytes[0]), "a torn file");
                }
            });
        });
    }

    #[test]
    fn storage_full_is_recognised_also_when_wrapped() {
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EFBIG] {
            let err = io::Error::from_raw_os_error(errno);
            assert!(is_storage_full(&err), "{err}");
            let wrapped = io::Error::new(err.kind(), format!("{err} at path \"/x\""));
            assert!(is_storage_full(&wrapped), "{wrapped}");
        }
        assert!(!is_storage_full(&io::Error::from_raw_os_error(
            libc::EACCES
        )));
    }
}

/// The keys whose last durable write failed (a full state dir): their
/// files are written again from memory until the disk takes them, so what
/// a restart reads catches up once there is space. Shared by run records
/// and outbox files.
#[derive(Debug)]
pub(crate) struct Unsaved<K> {
    keys: Mutex<HashSet<K>>,
}

impl<K> Default for Unsaved<K> {
    fn default() -> Unsaved<K> {
        Unsaved {
            keys: Mutex::default(),
        }
    }
}

impl<K: Clone + Eq + Hash> Unsaved<K> {
    /// Notes how the last write of `key` went, and passes its result on.
    pub(crate) fn note(&self, key: &K, written: io::Result<()>) -> io::Result<()> {
        let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        match &written {
            Ok(()) => keys.remove(key),
            Err(_) => keys.insert(key.clone()),
        };
        written
    }

    /// Writes every unsaved key again with `write`, which answers `None`
    /// for a key that is gone (it is forgotten). Returns the keys written
    /// now, and whether some are still unsaved.
    pub(crate) fn retry(
        &self,
        mut write: impl FnMut(&K) -> Option<io::Result<()>>,
    ) -> (Vec<K>, bool) {
        let keys: Vec<K> = {
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            keys.iter().cloned().collect()
        };
        let mut written = Vec::new();
        for key in keys {
            match write(&key) {
                None => self.forget(&key),
                Some(result) => {
                    if self.note(&key, result).is_ok() {
                        written.push(key);
                    }
                }
            }
        }
        let left = !self
            .keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty();
        (written, left)
    }

    /// Stops retrying `key` (its file went away with its owner).
    pub(crate) fn forget(&self, key: &K) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

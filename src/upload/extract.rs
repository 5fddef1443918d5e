//! The synchronous extractor: detects the compression, walks the tar
//! entries, validates each ([`super::entry`]) and writes it under a fresh
//! directory, enforcing the limits as it goes.
//!
//! Callers give it an empty directory and remove that directory when it
//! fails; [`super::bundle`] does this with a staging dir and a rename.
//! The `tar` crate's own `unpack_in` is not used: it strips a leading `/`
//! and skips `..` entries silently instead of refusing the archive.

use std::cell::Cell;
use std::fs::{self, File, FileTimes, OpenOptions, Permissions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use super::entry::{self, Kind, Links, Plan};
use super::UploadError;
use crate::config::UploadLimits;

/// Most bytes of headers, long names, PAX records, padding and skipped
/// data allowed between two entries (and after the last one). `tar` reads
/// long names and PAX records into memory, so this also bounds memory.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// Largest zstd window accepted: 2^27 = 128 MiB, the zstd CLI's default.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

/// Size of the copy buffer for file data.
const COPY_BUFFER: usize = 256 * 1024;

/// What an extraction produced.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// Entries in the archive (files, dirs, links and skipped headers).
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Extracts the tar archive (plain, gzip or zstd) read from `reader` into
/// `dest`, an existing empty directory. On error `dest` may hold part of
/// the archive: the caller removes it.
pub fn extract_sync<R: Read>(
    reader: R,
    dest: &Path,
    limits: &UploadLimits,
) -> Result<Summary, UploadError> {
    let stats = Rc::new(Stats {
        bundle_limit: limits.max_bundle_bytes,
        ..Stats::default()
    });
    let raw = RawInput {
        inner: reader,
        stats: stats.clone(),
    };
    let decoded = decoder(raw).map_err(|err| read_error(&stats, &err, None))?;
    let input = TarInput {
        inner: decoded,
        stats: stats.clone(),
    };
    let mut archive = tar::Archive::new(input);
    let mut writer = Writer::new(dest, limits, stats.clone());
    let mut last: Option<String> = None;
    let entries = archive
        .entries()
        .map_err(|err| read_error(&stats, &err, None))?;
    for entry in entries {
        let mut entry = entry.map_err(|err| read_error(&stats, &err, last.as_deref()))?;
        stats.meta_since_entry.set(0);
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        writer.entry(&mut entry, &name)?;
        last = Some(name);
    }
    if stats.eof.get() {
        let reason = match &last {
            None => "the body is empty or not a tar archive".to_owned(),
            Some(name) => format!(
                "the archive ends after entry {name:?} without its end-of-archive blocks; it is truncated"
            ),
        };
        return Err(UploadError::BadArchive { reason });
    }
    // Read what follows the end-of-archive blocks (padding, and for gzip
    // and zstd the checksums), within the metadata allowance.
    let mut rest = archive.into_inner();
    io::copy(&mut rest, &mut io::sink())
        .map_err(|err| read_error(&stats, &err, last.as_deref()))?;
    writer.finish()
}

/// Counters shared by the input wrappers and the writer (one thread).
#[derive(Default)]
struct Stats {
    bundle_limit: u64,
    compressed: Cell<u64>,
    bundle_too_large: Cell<bool>,
    in_data: Cell<bool>,
    meta_since_entry: Cell<u64>,
    too_much_metadata: Cell<bool>,
    eof: Cell<bool>,
}

/// The raw body: counts it against `--max-bundle-bytes`.
struct RawInput<R> {
    inner: R,
    stats: Rc<Stats>,
}

impl<R: Read> Read for RawInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let total = self.stats.compressed.get() + n as u64;
        self.stats.compressed.set(total);
        if total > self.stats.bundle_limit {
            self.stats.bundle_too_large.set(true);
            return Err(io::Error::other("bundle size limit reached"));
        }
        Ok(n)
    }
}

/// The decompressed tar stream: notes EOF (an archive must end with its
/// end-of-archive blocks, not with EOF) and bounds non-file bytes.
struct TarInput<R> {
    inner: R,
    stats: Rc<Stats>,
}

impl<R: Read> Read for TarInput<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.stats.eof.set(true);
        }
        if !self.stats.in_data.get() {
            let meta = self.stats.meta_since_entry.get() + n as u64;
            self.stats.meta_since_entry.set(meta);
            if meta > MAX_METADATA_BYTES {
                self.stats.too_much_metadata.set(true);
                return Err(io::Error::other("metadata limit reached"));
            }
        }
        Ok(n)
    }
}

/// Picks the decoder from the first bytes.
fn decoder<'a, R: Read + 'a>(mut raw: R) -> io::Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 6];
    let mut len = 0;
    while len < head.len() {
        match raw.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => {}
            Err(err) => return Err(err),
        }
    }
    let head = &head[..len];
    let input = io::Cursor::new(head.to_vec()).chain(raw);
    if head.starts_with(&[0x1f, 0x8b]) {
        return Ok(Box::new(flate2::read::MultiGzDecoder::new(input)));
    }
    if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        let mut zstd = zstd::stream::read::Decoder::new(input)?;
        zstd.window_log_max(ZSTD_WINDOW_LOG_MAX)?;
        return Ok(Box::new(zstd));
    }
    let unsupported = if head.starts_with(b"BZh") {
        Some("bzip2")
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        Some("xz")
    } else if head.starts_with(b"PK\x03\x04") {
        Some("zip")
    } else {
        None
    };
    if let Some(format) = unsupported {
        return Err(io::Error::other(format!(
            "{format} is not supported; send a plain, gzip or zstd tar archive"
        )));
    }
    Ok(Box::new(input))
}

/// Maps an error of the input side (decompression, tar parsing, the body).
fn read_error(stats: &Stats, err: &io::Error, last: Option<&str>) -> UploadError {
    if stats.bundle_too_large.get() {
        return UploadError::BundleTooLarge {
            limit: stats.bundle_limit,
        };
    }
    if stats.too_much_metadata.get() {
        return UploadError::BadArchive {
            reason: format!(
                "more than {MAX_METADATA_BYTES} bytes of headers, long names or non-file data{}; \
                 this is not an archive of files",
                after(last)
            ),
        };
    }
    UploadError::BadArchive {
        reason: format!("cannot read the archive{}: {err}", after(last)),
    }
}

fn after(last: Option<&str>) -> String {
    match last {
        Some(name) => format!(" after entry {name:?}"),
        None => String::new(),
    }
}

/// Writes validated entries under `root`.
struct Writer<'a> {
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
    fn new(root: &'a Path, limits: &'a UploadLimits, stats: Rc<Stats>) -> Writer<'a> {
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

    fn entry<R: Read>(
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

    fn finish(mut self) -> Result<Summary, UploadError> {
        if let Err((path, reason)) = self.links.recheck() {
            return Err(UploadError::Unsafe {
                entry: path.display().to_string(),
                reason: format!("symlink, once all entries exist, {reason}"),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> UploadLimits {
        UploadLimits {
            max_bundle_bytes: 1 << 30,
            max_extracted_bytes: 1 << 30,
            max_entries: 1000,
        }
    }

    fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, data) in files {
            let mut header = tar::Header::new_gnu();
            header.set_size(data.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(1_600_000_000);
            builder.append_data(&mut header, name, *data).unwrap();
        }
        builder.into_inner().unwrap()
    }

    /// The three encodings extract to the same files.
    #[test]
    fn plain_gzip_zstd() {
        let plain = tar_of(&[("a/b.txt", b"hello"), ("c", b"")]);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let zst = zstd::encode_all(&plain[..], 3).unwrap();
        for body in [plain.clone(), gz, zst] {
            let dir = tempfile::tempdir().unwrap();
            let summary = extract_sync(&body[..], dir.path(), &limits()).unwrap();
            assert_eq!(
                summary,
                Summary {
                    entries: 2,
                    bytes: 5
                }
            );
            assert_eq!(fs::read(dir.path().join("a/b.txt")).unwrap(), b"hello");
        }
    }

    /// An empty body and a tar without its end blocks are refused.
    #[test]
    fn empty_and_unterminated() {
        let dir = tempfile::tempdir().unwrap();
        let err = extract_sync(&b""[..], dir.path(), &limits()).unwrap_err();
        assert!(matches!(err, UploadError::BadArchive { .. }), "{err}");
        let plain = tar_of(&[("a", b"x")]);
        let cut = &plain[..1024];
        let dir = tempfile::tempdir().unwrap();
        let err = extract_sync(cut, dir.path(), &limits()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err}");
    }

    /// The compressed-size limit is checked while reading.
    #[test]
    fn bundle_limit() {
        let plain = tar_of(&[("a", &[7u8; 4096])]);
        let dir = tempfile::tempdir().unwrap();
        let small = UploadLimits {
            max_bundle_bytes: 2048,
            ..limits()
        };
        let err = extract_sync(&plain[..], dir.path(), &small).unwrap_err();
        assert!(matches!(err, UploadError::BundleTooLarge { .. }), "{err}");
    }
}

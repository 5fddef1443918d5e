//! The synchronous extractor: detects the compression, walks the tar
//! entries, validates each ([`super::entry`]) and writes it under a fresh
//! directory, enforcing the limits as it goes.
//!
//! The writing itself is in `write`. Callers give it an empty directory
//! and remove that directory when it fails; `bundle` does this with a
//! staging dir and a rename.
//! The `tar` crate's own `unpack_in` is not used: it strips a leading `/`
//! and skips `..` entries silently instead of refusing the archive.

use std::cell::Cell;
use std::io::{self, Read};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;
use std::rc::Rc;

use super::write::Writer;
use super::UploadError;
use crate::config::UploadLimits;

/// Most bytes of headers, long names, PAX records, padding and skipped
/// data allowed between two entries (and after the last one). `tar` reads
/// long names and PAX records into memory, so this also bounds memory.
pub const MAX_METADATA_BYTES: u64 = 1 << 20;

/// Largest zstd window accepted: 2^27 = 128 MiB, the zstd CLI's default.
const ZSTD_WINDOW_LOG_MAX: u32 = 27;

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
    let dir = std::fs::File::open(dest)
        .map_err(|err| UploadError::io("opening the extraction dir", dest, err))?;
    extract_into(reader, dir.as_fd(), dest, limits)
}

/// [`extract_sync`] into the open directory `dest` (`shown` is its path,
/// for messages): every entry is created relative to a descriptor
/// beneath `dest`, never following a symlink.
pub(super) fn extract_into<R: Read>(
    reader: R,
    dest: BorrowedFd<'_>,
    shown: &Path,
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
    let mut writer = Writer::new(dest, shown, limits, stats.clone());
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
pub(super) struct Stats {
    bundle_limit: u64,
    compressed: Cell<u64>,
    bundle_too_large: Cell<bool>,
    /// Set by the writer while it copies file data.
    pub(super) in_data: Cell<bool>,
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
pub(super) fn read_error(stats: &Stats, err: &io::Error, last: Option<&str>) -> UploadError {
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
    // Some parse errors quote the bytes they choked on; keep it short.
    let mut detail = err.to_string();
    if detail.len() > 120 {
        let cut = (0..=120)
            .rev()
            .find(|i| detail.is_char_boundary(*i))
            .unwrap_or(0);
        detail.truncate(cut);
        detail.push_str("...");
    }
    let reason = match last {
        None => format!("the body is not a tar, tar.gz or tar.zst archive ({detail})"),
        Some(_) => format!("cannot read the archive{}: {detail}", after(last)),
    };
    UploadError::BadArchive { reason }
}

fn after(last: Option<&str>) -> String {
    match last {
        Some(name) => format!(" after entry {name:?}"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use std::fs;
    use std::io::Write;

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

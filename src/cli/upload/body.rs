//! The upload's request body: a directory packed on the fly into a tar.gz
//! stream by a blocking thread (with the scan that sizes its progress
//! bar), or an archive file sent as is after its type is recognised.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures::StreamExt;
use tokio::sync::mpsc;

use super::progress::Progress;
use crate::channel_writer::ChannelWriter;
use crate::cli::client::ClientError;

/// Size of the chunks handed to the request body.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the packer and the request (bounds memory).
const CHANNEL_CHUNKS: usize = 16;

/// The request body of a directory: a tar.gz stream produced by a blocking
/// thread. The thread's result tells why a stream broke off.
pub(super) fn packed_body(
    dir: PathBuf,
    progress: Progress,
) -> (reqwest::Body, tokio::task::JoinHandle<io::Result<()>>) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(CHANNEL_CHUNKS);
    let packed = progress.clone();
    let packer = tokio::task::spawn_blocking(move || {
        let result = pack(&dir, tx.clone(), &packed);
        if let Err(err) = &result {
            // End the request with an error rather than a truncated archive.
            let _ = tx.blocking_send(Err(io::Error::new(err.kind(), err.to_string())));
        }
        result
    });
    let stream = tokio_stream(rx).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            progress.sent_bytes(bytes.len() as u64);
        }
        chunk
    });
    (reqwest::Body::wrap_stream(stream), packer)
}

fn tokio_stream(
    mut rx: mpsc::Receiver<io::Result<Bytes>>,
) -> impl futures::Stream<Item = io::Result<Bytes>> {
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}

/// Writes `dir` as a tar.gz into `tx`. Paths are relative to `dir`;
/// symlinks are stored as links, not followed.
fn pack(dir: &Path, tx: mpsc::Sender<io::Result<Bytes>>, progress: &Progress) -> io::Result<()> {
    let sink = BufWriter::with_capacity(CHUNK, ChannelWriter::new(tx, "the upload was closed"));
    let gzip = flate2::write::GzEncoder::new(sink, flate2::Compression::new(3));
    let counted = CountingWriter {
        inner: gzip,
        progress: progress.clone(),
    };
    let mut tar = tar::Builder::new(counted);
    tar.follow_symlinks(false);
    tar.append_dir_all("", dir)?;
    let counted = tar.into_inner()?;
    let mut sink = counted.inner.finish()?;
    sink.flush()
}

/// Counts the uncompressed tar bytes into the progress.
struct CountingWriter<W> {
    inner: W,
    progress: Progress,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.progress.advance(n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The request body of a file, read in chunks as it is sent.
pub(super) async fn file_body(
    path: &Path,
    progress: Progress,
) -> Result<reqwest::Body, ClientError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|source| ClientError::Io {
            action: "opening",
            path: path.display().to_string(),
            source,
        })?;
    let stream = tokio_util::io::ReaderStream::with_capacity(file, CHUNK).map(move |chunk| {
        if let Ok(bytes) = &chunk {
            progress.advance(bytes.len() as u64);
            progress.sent_bytes(bytes.len() as u64);
        }
        chunk
    });
    Ok(reqwest::Body::wrap_stream(stream))
}

/// The content type of a tarball, from its first bytes; anything else is
/// refused here rather than after sending it.
pub(super) fn archive_type(path: &Path) -> Result<&'static str, ClientError> {
    use std::io::Read;
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(path)
        .and_then(|file| file.take(512).read_to_end(&mut head))
        .map_err(|source| ClientError::Io {
            action: "reading",
            path: path.display().to_string(),
            source,
        })?;
    match head.as_slice() {
        [0x1f, 0x8b, ..] => Ok("application/gzip"),
        [0x28, 0xb5, 0x2f, 0xfd, ..] => Ok("application/zstd"),
        _ if head.get(257..262) == Some(b"ustar") => Ok("application/x-tar"),
        _ => Err(ClientError::Usage(format!(
            "{} is not a tar, tar.gz or tar.zst archive; pass a directory to have it packed",
            path.display()
        ))),
    }
}

/// What a directory holds, for the progress bar's length.
#[derive(Debug, Default)]
pub(super) struct Scan {
    pub(super) files: u64,
    /// Size of the uncompressed tar stream (headers, data, padding).
    pub(super) tar_bytes: u64,
}

/// Walks `dir` without following links. Hand-written: a dozen lines of
/// `read_dir`, where the packer (tar) does its own walk anyway.
pub(super) fn scan(dir: &Path) -> io::Result<Scan> {
    let mut scan = Scan {
        tar_bytes: 1024, // the end-of-archive blocks
        ..Scan::default()
    };
    let mut stack = vec![dir.to_path_buf()];
    while let Some(current) = stack.pop() {
        for entry in std::fs::read_dir(&current)? {
            let entry = entry?;
            let meta = entry.metadata()?;
            let name_len = entry
                .path()
                .strip_prefix(dir)
                .map_or(0, |p| p.as_os_str().len());
            scan.tar_bytes += 512
                + if name_len > 99 {
                    512 + pad512(name_len as u64 + 1)
                } else {
                    0
                };
            if meta.is_dir() {
                stack.push(entry.path());
            } else if meta.is_file() {
                scan.files += 1;
                scan.tar_bytes += pad512(meta.len());
            }
        }
    }
    Ok(scan)
}

fn pad512(n: u64) -> u64 {
    n.div_ceil(512) * 512
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The scan's estimate of the tar size is what tar writes, so the bar
    /// ends at 100%.
    #[test]
    fn scan_predicts_the_tar_size() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sub/deeper")).unwrap();
        std::fs::write(dir.path().join("a.txt"), b"hello").unwrap();
        std::fs::write(dir.path().join("sub/b.bin"), vec![7u8; 1500]).unwrap();
        let long = "n".repeat(120);
        std::fs::write(dir.path().join("sub/deeper").join(&long), b"x").unwrap();
        std::os::unix::fs::symlink("a.txt", dir.path().join("link")).unwrap();
        let mut tar = tar::Builder::new(Vec::new());
        tar.follow_symlinks(false);
        tar.append_dir_all("", dir.path()).unwrap();
        let bytes = tar.into_inner().unwrap();
        let scan = scan(dir.path()).unwrap();
        assert_eq!(scan.files, 3);
        assert_eq!(scan.tar_bytes, bytes.len() as u64);
    }

    #[test]
    fn archives_are_recognised_by_their_first_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let mut tar = vec![0u8; 1024];
        tar[257..262].copy_from_slice(b"ustar");
        assert_eq!(
            archive_type(&write("a.tar", &tar)).unwrap(),
            "application/x-tar"
        );
        assert_eq!(
            archive_type(&write("a.tgz", &[0x1f, 0x8b, 8])).unwrap(),
            "application/gzip"
        );
        assert_eq!(
            archive_type(&write("a.zst", &[0x28, 0xb5, 0x2f, 0xfd, 0])).unwrap(),
            "application/zstd"
        );
        let err = archive_type(&write("notes.txt", b"just text")).unwrap_err();
        assert!(err.to_string().contains("not a tar"), "{err}");
    }
}

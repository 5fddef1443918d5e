//! A directory streamed as a tar.gz (or tar.zst) built on the fly: a blocking thread
//! walks the tree through descriptors (no symlink followed: a symlink is
//! stored as a symlink, as extraction would take it back) and writes the
//! archive into a bounded channel the response body reads; a slow client
//! slows the walk, nothing piles up.

use std::io::{self, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use tokio::sync::mpsc;

use super::meta::{self, EntryKind};
use super::{located_error, Files, FilesError};
use crate::channel_writer::ChannelWriter;
use crate::fsroot;

/// Chunks in flight between the walk and the response.
const CHANNEL_CHUNKS: usize = 8;

/// Most entries in one archive.
const MAX_ENTRIES: usize = 1_000_000;

/// How a directory's tar is compressed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Compression {
    /// gzip (`application/gzip`), the default.
    #[default]
    Gzip,
    /// zstd (`application/zstd`).
    Zstd,
}

impl Compression {
    /// The media type of the archive.
    pub fn content_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/gzip",
            Compression::Zstd => "application/zstd",
        }
    }
}

/// The compressing writer in front of the channel.
enum Encoder {
    Gzip(flate2::write::GzEncoder<ChannelWriter>),
    Zstd(zstd::stream::write::Encoder<'static, ChannelWriter>),
}

impl Encoder {
    fn new(compression: Compression, sender: ChannelWriter) -> io::Result<Encoder> {
        Ok(match compression {
            Compression::Gzip => Encoder::Gzip(flate2::write::GzEncoder::new(
                sender,
                flate2::Compression::fast(),
            )),
            Compression::Zstd => Encoder::Zstd(zstd::stream::write::Encoder::new(sender, 3)?),
        })
    }

    /// Writes the compressed stream's end.
    fn finish(self) -> io::Result<()> {
        match self {
            Encoder::Gzip(gz) => gz.finish().map(drop),
            Encoder::Zstd(zst) => zst.finish().map(drop),
        }
    }
}

impl Write for Encoder {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Encoder::Gzip(gz) => gz.write(buf),
            Encoder::Zstd(zst) => zst.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Encoder::Gzip(gz) => gz.flush(),
            Encoder::Zstd(zst) => zst.flush(),
        }
    }
}

impl Files {
    /// Starts streaming the directory `path` as a compressed tar; the
    /// receiver yields its bytes (an error ends the stream early).
    pub fn archive(
        &self,
        path: &str,
        compression: Compression,
    ) -> Result<mpsc::Receiver<io::Result<Bytes>>, FilesError> {
        let at = self.locate(path)?;
        let dir = fsroot::open_dir_beneath(at.base, &at.rel).map_err(|e| located_error(&at, e))?;
        let (tx, rx) = mpsc::channel(CHANNEL_CHUNKS);
        std::thread::spawn(move || {
            let sender = ChannelWriter::new(tx.clone(), "the client went away");
            let walked = Encoder::new(compression, sender).and_then(|encoder| {
                let mut builder = tar::Builder::new(encoder);
                builder.follow_symlinks(false);
                let mut count = 0;
                walk(&mut builder, dir.as_fd(), Path::new(""), &mut count)?;
                builder.into_inner()?.finish()
            });
            if let Err(err) = walked {
                let _ = tx.blocking_send(Err(err));
            }
        });
        Ok(rx)
    }
}

fn walk<W: Write>(
    builder: &mut tar::Builder<W>,
    dir: std::os::fd::BorrowedFd<'_>,
    prefix: &Path,
    count: &mut usize,
) -> io::Result<()> {
    let opened = fsroot::open_dir_beneath(dir, Path::new(""))?;
    let mut names = meta::names(&opened, MAX_ENTRIES)?;
    names.sort();
    for name in names {
        *count += 1;
        if *count > MAX_ENTRIES {
            return Err(io::Error::other("more entries than an archive may hold"));
        }
        let entry = match meta::at(dir, &name) {
            Ok(entry) => entry,
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(errno) => return Err(errno.into()),
        };
        let path: PathBuf = prefix.join(&name);
        let mut header = tar::Header::new_gnu();
        header.set_mode(entry.mode);
        header.set_mtime(
            entry
                .mtime
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs(),
        );
        match entry.kind {
            EntryKind::File => {
                let fd =
                    fsroot::open_beneath(dir, Path::new(&name), OFlag::O_RDONLY, Mode::empty())?;
                let file = std::fs::File::from(fd);
                let size = file.metadata()?.len();
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(size);
                builder.append_data(&mut header, &path, io::Read::take(file, size))?;
            }
            EntryKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_size(0);
                builder.append_data(&mut header, &path, io::empty())?;
                let sub = fsroot::open_dir_beneath(dir, Path::new(&name))?;
                walk(builder, sub.as_fd(), &path, count)?;
            }
            EntryKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                header.set_size(0);
                let target = entry.target.unwrap_or_default();
                builder.append_link(&mut header, &path, target)?;
            }
            // Devices, fifos and sockets are not archived.
            EntryKind::Other => {}
        }
    }
    Ok(())
}

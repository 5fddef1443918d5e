//! `sandboxd upload`: send a bundle into a run's work dir
//! (`PUT /v1/runs/{id}/bundle`). A directory is packed on the fly into a
//! gzip tar stream by a blocking thread feeding the request body through a
//! bounded channel (never a temp file, never whole in memory); a file is
//! sent as is. Progress: a bar on a terminal, plain lines otherwise.

use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use indicatif::{BinaryBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;
use tokio::sync::mpsc;

use super::client::{run_path, BundleInfo, Client, ClientArgs, ClientError};
use super::format;

/// Size of the chunks handed to the request body.
const CHUNK: usize = 64 * 1024;
/// Chunks in flight between the packer and the request (bounds memory).
const CHANNEL_CHUNKS: usize = 16;

/// `sandboxd upload`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = UPLOAD_HELP)]
pub struct UploadArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// A directory (packed into a tar.gz stream on the fly) or a tar,
    /// tar.gz or tar.zst file (sent as is).
    #[arg(value_name = "PATH")]
    pub path: PathBuf,

    /// The run whose work dir receives the bundle (it need not exist yet).
    #[arg(long, value_name = "ID")]
    pub run: String,

    /// Replace the run's bundle (only before the run has started).
    #[arg(long)]
    pub replace: bool,

    /// Progress display: a bar on a terminal, plain lines otherwise.
    #[arg(long, value_enum, default_value_t = ProgressMode::Auto)]
    pub progress: ProgressMode,

    /// Print the daemon's answer as JSON.
    #[arg(long)]
    pub json: bool,
}

const UPLOAD_HELP: &str = "\
The bundle is extracted into the run's work dir (all or nothing); then
`sandboxd exec --run-id ID -- CMD` runs CMD there.

Examples:
  sandboxd upload ./project --run r1
  sandboxd upload build/app.tar.zst --run r1 --replace";

/// How progress is shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// A bar when stderr is a terminal, plain lines otherwise.
    Auto,
    /// An `indicatif` bar.
    Bar,
    /// A line every second.
    Plain,
    /// Nothing but the result.
    None,
}

/// Runs `sandboxd upload`.
pub async fn main(args: UploadArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let path = args.path.clone();
    let label = path.display().to_string();
    let meta = std::fs::metadata(&path).map_err(|source| ClientError::Io {
        action: "reading",
        path: label.clone(),
        source,
    })?;
    let (body, content_type, length, progress, packer) = if meta.is_dir() {
        let scan = scan(&path).map_err(|source| ClientError::Io {
            action: "reading",
            path: label.clone(),
            source,
        })?;
        let progress = Progress::start(
            args.progress,
            scan.tar_bytes,
            format!("packing {label} ({} files)", scan.files),
        );
        let (body, packer) = packed_body(path.clone(), progress.clone());
        (body, "application/gzip", None, progress, Some(packer))
    } else if meta.is_file() {
        let content_type = archive_type(&path)?;
        let progress = Progress::start(args.progress, meta.len(), format!("sending {label}"));
        let body = file_body(&path, progress.clone()).await?;
        (body, content_type, Some(meta.len()), progress, None)
    } else {
        return Err(ClientError::Usage(format!(
            "{label} is neither a directory nor a file"
        )));
    };
    let mut url = run_path(&args.run, "/bundle");
    if args.replace {
        url.push_str("?replace=true");
    }
    let mut req = client
        .request(Method::PUT, &url)
        .header(CONTENT_TYPE, content_type)
        .body(body);
    if let Some(length) = length {
        req = req.header(CONTENT_LENGTH, length);
    }
    let started = Instant::now();
    let answer: Result<serde_json::Value, ClientError> = client.json(req).await;
    let elapsed = started.elapsed();
    progress.finish();
    if let Some(packer) = packer {
        // A packing failure explains a failed request better than the request does.
        if let Ok(Err(err)) = packer.await {
            if err.kind() != io::ErrorKind::BrokenPipe {
                return Err(ClientError::Io {
                    action: "packing",
                    path: label,
                    source: err,
                });
            }
        }
    }
    let answer = answer?;
    if args.json {
        format::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let info: BundleInfo = serde_json::from_value(answer).map_err(|e| ClientError::Protocol {
        url: client.url().to_owned(),
        detail: format!("the bundle answer is not the JSON expected: {e}"),
    })?;
    let sent = progress.sent();
    let rate = sent as f64 / elapsed.as_secs_f64().max(0.001);
    format::print(&format!(
        "uploaded {label} to run {}: {} entries, {} extracted into {} ({} sent in {}, {}/s)\n",
        args.run,
        info.entries,
        BinaryBytes(info.bytes),
        info.dir,
        BinaryBytes(sent),
        format::duration(elapsed.as_secs_f64()),
        BinaryBytes(rate as u64),
    ))?;
    Ok(ExitCode::SUCCESS)
}

/// The request body of a directory: a tar.gz stream produced by a blocking
/// thread. The thread's result tells why a stream broke off.
fn packed_body(
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
    let sink = BufWriter::with_capacity(CHUNK, ChannelWriter { tx });
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

/// Hands each write to the request body as one chunk.
struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the upload was closed"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
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
async fn file_body(path: &Path, progress: Progress) -> Result<reqwest::Body, ClientError> {
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
fn archive_type(path: &Path) -> Result<&'static str, ClientError> {
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
struct Scan {
    files: u64,
    /// Size of the uncompressed tar stream (headers, data, padding).
    tar_bytes: u64,
}

/// Walks `dir` without following links. Hand-written: a dozen lines of
/// `read_dir`, where the packer (tar) does its own walk anyway.
fn scan(dir: &Path) -> io::Result<Scan> {
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

/// Progress of one upload: bytes read (the bar's position) and bytes sent.
/// Cheap to clone; shared with the packer thread.
#[derive(Clone)]
struct Progress {
    bar: ProgressBar,
    sent: Arc<AtomicU64>,
    ticker: Option<Arc<tokio::task::JoinHandle<()>>>,
}

impl Progress {
    fn start(mode: ProgressMode, total: u64, prefix: String) -> Progress {
        use std::io::IsTerminal;
        let mode = match mode {
            ProgressMode::Auto if io::stderr().is_terminal() => ProgressMode::Bar,
            ProgressMode::Auto => ProgressMode::Plain,
            other => other,
        };
        let sent = Arc::new(AtomicU64::new(0));
        let style = ProgressStyle::with_template(
            "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> ");
        // Styled before it can draw: the first frame has our style too, not
        // the library's default.
        let bar = ProgressBar::hidden();
        bar.set_style(style);
        bar.set_prefix(prefix);
        bar.set_length(total);
        if mode == ProgressMode::Bar {
            bar.set_draw_target(ProgressDrawTarget::stderr());
        }
        if mode == ProgressMode::Bar {
            // Keeps rate and eta moving while a big file is compressed.
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        let ticker = (mode == ProgressMode::Plain).then(|| {
            eprintln!("sandboxd: {}: {}", bar.prefix(), BinaryBytes(total));
            Arc::new(tokio::spawn(plain_lines(bar.clone(), sent.clone())))
        });
        Progress { bar, sent, ticker }
    }

    fn advance(&self, n: u64) {
        self.bar.inc(n);
    }

    fn sent_bytes(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }

    fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    fn finish(&self) {
        if let Some(ticker) = &self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

/// One line a second, for logs and pipes.
async fn plain_lines(bar: ProgressBar, sent: Arc<AtomicU64>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.tick().await;
    loop {
        tick.tick().await;
        let (done, total) = (bar.position(), bar.length().unwrap_or(0).max(1));
        eprintln!(
            "sandboxd: {}: {} of {} ({}%), {} sent, {}/s",
            bar.prefix(),
            BinaryBytes(done),
            BinaryBytes(total),
            (done * 100 / total).min(100),
            BinaryBytes(sent.load(Ordering::Relaxed)),
            BinaryBytes(bar.per_sec() as u64),
        );
    }
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

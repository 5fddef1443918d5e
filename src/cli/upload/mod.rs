//! `sandboxd upload`: send a bundle into a run's work dir
//! (`PUT /v1/runs/{id}/bundle`). A directory is packed on the fly into a
//! gzip tar stream by a blocking thread feeding the request body through a
//! bounded channel (never a temp file, never whole in memory); a file is
//! sent as is. Progress: a bar on a terminal, plain lines otherwise.
//!
//! Layout: `body` produces the request body (packing, file type), `progress`
//! shows how far it got; the command is here.

use std::io;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use indicatif::BinaryBytes;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};
use reqwest::Method;

use super::client::{run_path, BundleInfo, Client, ClientArgs, ClientError};
use super::format;

mod body;
mod progress;

use body::{archive_type, file_body, packed_body, scan};
use progress::Progress;

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

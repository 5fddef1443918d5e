//! `sandboxd download PATH [DEST]`: streams a file from the daemon's
//! roots to DEST (default: its name, here) through `DEST.part`, renamed
//! when whole. An interrupted download resumes: the part's length is
//! asked for with `Range`, and a 200 (the daemon ignored it) starts over.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use reqwest::{Method, StatusCode};

use super::client::{Client, ClientArgs, ClientError};

/// `sandboxd download`.
#[derive(Debug, clap::Args)]
pub struct DownloadArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Absolute path of the file, under the daemon's readable roots.
    #[arg(value_name = "PATH")]
    pub path: String,

    /// Where to write it [default: its name, in the current dir].
    #[arg(value_name = "DEST")]
    pub dest: Option<PathBuf>,
}

/// Runs `sandboxd download`.
pub async fn main(args: DownloadArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let dest = match args.dest {
        Some(dest) => dest,
        None => PathBuf::from(Path::new(&args.path).file_name().ok_or_else(|| {
            ClientError::Usage(format!("{} names no file; give DEST", args.path))
        })?),
    };
    let mut part = dest.clone().into_os_string();
    part.push(".part");
    let part = PathBuf::from(part);
    let have = std::fs::metadata(&part).map(|m| m.len()).unwrap_or(0);
    let mut req = client
        .request(Method::GET, "/v1/files")
        .query(&[("path", &args.path)]);
    if have > 0 {
        req = req.header("range", format!("bytes={have}-"));
    }
    let res = match req.send().await {
        Ok(res) if res.status() == StatusCode::RANGE_NOT_SATISFIABLE => {
            // The part already holds the whole file.
            return finish(&part, &dest);
        }
        Ok(res) => res,
        Err(err) => return Err(client.transport_error(err)),
    };
    let res = client.send_checked(res).await?;
    let resumed = res.status() == StatusCode::PARTIAL_CONTENT;
    let offset = if resumed { have } else { 0 };
    let total = offset + res.content_length().unwrap_or(0);
    let io_error = |action, source| ClientError::Io {
        action,
        path: part.display().to_string(),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .append(resumed)
        .truncate(!resumed)
        .open(&part)
        .map_err(|err| io_error("opening", err))?;
    let bar = progress_bar(total, offset, &args.path);
    let mut res = res;
    while let Some(chunk) = res.chunk().await.map_err(|e| client.transport_error(e))? {
        file.write_all(&chunk)
            .map_err(|err| io_error("writing", err))?;
        bar.inc(chunk.len() as u64);
    }
    file.sync_all().map_err(|err| io_error("syncing", err))?;
    bar.finish_and_clear();
    finish(&part, &dest)
}

fn finish(part: &Path, dest: &Path) -> Result<ExitCode, ClientError> {
    std::fs::rename(part, dest).map_err(|source| ClientError::Io {
        action: "renaming the download to",
        path: dest.display().to_string(),
        source,
    })?;
    Ok(ExitCode::SUCCESS)
}

/// A bar on a terminal, nothing otherwise.
fn progress_bar(total: u64, position: u64, name: &str) -> ProgressBar {
    let bar = ProgressBar::hidden();
    if let Ok(style) = ProgressStyle::with_template(
        "{prefix} [{wide_bar}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} eta {eta}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_prefix(name.to_owned());
    bar.set_length(total);
    bar.set_position(position);
    if std::io::stderr().is_terminal() {
        bar.set_draw_target(ProgressDrawTarget::stderr());
    }
    bar
}

//! A run's bundle, all or nothing: the body streams through the bridge into
//! the extractor running in `spawn_blocking`, into
//! a staging dir under the work root; on success the staging dir is
//! renamed to the run's work dir (atomically exchanged with the old one on
//! `?replace=true`), otherwise removed.
//!
//! That a run has a bundle is recorded in `<state-dir>/bundles/<run_id>.json`
//! rather than by a marker in the work dir, which the run's own code sees
//! and may delete.

use std::fmt::Display;
use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::bridge::{self, BodyReader, Pumped, DRAIN_EXTRA};
use super::staging::{is_empty_or_missing, put_in_place, undo, Staging, STAGING_PREFIX};
use super::{extract, Busy, Started, UploadError, Uploader};
use crate::config::Config;
use crate::durable;
use crate::state_dir::StateDir;

/// Names of bundle records being written, in `<state-dir>/bundles/`.
const RECORD_TEMP_PREFIX: &str = ".bundle-";

/// Version of [`BundleRecord`].
const RECORD_VERSION: u32 = 1;

/// A bundle that was put in place.
#[derive(Debug, Clone)]
pub struct BundleSummary {
    /// The run.
    pub run_id: String,
    /// Its work dir.
    pub dir: PathBuf,
    /// Entries in the archive.
    pub entries: u64,
    /// Bytes of file data extracted.
    pub bytes: u64,
}

/// The on-disk record of a run's bundle.
#[derive(Debug, Serialize, Deserialize)]
struct BundleRecord {
    version: u32,
    run_id: String,
    entries: u64,
    bytes: u64,
    created_at: DateTime<Utc>,
}

fn record_path(state_dir: &Path, run_id: &str) -> PathBuf {
    StateDir::new(state_dir).bundle_record(run_id)
}

/// Whether a bundle was extracted into the run's work dir.
pub fn has_bundle(config: &Config, run_id: &str) -> bool {
    record_path(&config.state_dir, run_id).is_file() && config.work_root.join(run_id).is_dir()
}

/// Removes the record of a run's bundle (the work dir is the caller's).
pub fn forget_bundle(state_dir: &Path, run_id: &str) -> io::Result<()> {
    match fs::remove_file(record_path(state_dir, run_id)) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Removes the temp files of bundle records a crash left half-written
/// (`<state-dir>/bundles/.bundle-*`).
pub fn clean_record_temp_files(state_dir: &Path) -> io::Result<()> {
    let dir = StateDir::new(state_dir).bundles();
    for entry in fs::read_dir(&dir)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(RECORD_TEMP_PREFIX)
        {
            fs::remove_file(entry.path())?;
        }
    }
    Ok(())
}

/// Removes staging dirs a crash left in the work root.
pub fn clean_staging(work_root: &Path) -> io::Result<()> {
    for entry in fs::read_dir(work_root)? {
        let entry = entry?;
        if entry
            .file_name()
            .to_string_lossy()
            .starts_with(STAGING_PREFIX)
        {
            tracing::info!(path = %entry.path().display(), "removing a stale staging dir");
            remove_tree(&entry.path())?;
        }
    }
    Ok(())
}

impl Uploader {
    /// `PUT /v1/runs/{run_id}/bundle`: extracts `body` (of `declared`
    /// length, when the request says) as the run's bundle.
    pub async fn put_bundle<S, E>(
        &self,
        run_id: &str,
        mut body: S,
        declared: Option<u64>,
        replace: bool,
        started: Started,
    ) -> Result<BundleSummary, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Display + Send + 'static,
    {
        let limit = self.limits().max_bundle_bytes;
        let checked = match declared {
            Some(len) if len > limit => Err(UploadError::BundleTooLarge { limit }),
            _ => self.begin(run_id, replace, &started),
        };
        let busy = match checked {
            Ok(busy) => busy,
            Err(err) => {
                if declared.is_none_or(|len| len <= limit + DRAIN_EXTRA) {
                    let idle = self.config().body_timeout;
                    bridge::drain(&mut body, 0, limit + DRAIN_EXTRA, idle, self.metrics()).await;
                }
                return Err(err);
            }
        };
        let on_error = |err: E| UploadError::Incomplete(err.to_string());
        let commit = Commit {
            replace,
            sha256: None,
        };
        self.receive(busy, body, commit, started, on_error, true)
            .await
    }

    /// The checks made before any byte is read; marks the run busy.
    pub(super) fn begin(
        &self,
        run_id: &str,
        replace: bool,
        started: &Started,
    ) -> Result<Busy, UploadError> {
        if started() {
            return Err(UploadError::RunStarted(run_id.to_owned()));
        }
        let busy = self.mark_busy(run_id)?;
        let has = has_bundle(self.config(), run_id);
        if has && !replace {
            return Err(UploadError::BundleExists(run_id.to_owned()));
        }
        if !has && !replace && !is_empty_or_missing(self.work_root().fd(), run_id) {
            let work_dir = self.config().work_root.join(run_id);
            return Err(UploadError::WorkDirExists(work_dir));
        }
        Ok(busy)
    }

    /// Streams `body` into the extraction. Runs as its own task, so an
    /// upload whose handler is dropped (the client went away) still ends
    /// and cleans up. `from_client`: the body is a request body (idle
    /// timeout; the rest of a refused one is drained).
    pub(super) async fn receive<S, E, F>(
        &self,
        busy: Busy,
        mut body: S,
        commit: Commit,
        started: Started,
        on_error: F,
        from_client: bool,
    ) -> Result<BundleSummary, UploadError>
    where
        S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
        E: Send + 'static,
        F: FnOnce(E) -> UploadError + Send + 'static,
    {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let (tx, reader) = bridge::channel();
            let installer = this.clone();
            let job = tokio::task::spawn_blocking(move || {
                installer.install(reader, &busy, commit, &*started)
            });
            let limit = this.limits().max_bundle_bytes;
            let mut total = 0;
            let idle = from_client.then_some(this.config().body_timeout);
            let pumped = bridge::pump(
                &mut body,
                tx,
                Some(limit),
                idle,
                this.metrics(),
                &mut total,
                on_error,
            )
            .await;
            if from_client && !matches!(pumped, Ok(Pumped::Complete)) {
                let upto = limit.max(total) + DRAIN_EXTRA;
                let idle = this.config().body_timeout;
                bridge::drain(&mut body, total, upto, idle, this.metrics()).await;
            }
            let installed = job.await.map_err(|err| panicked(&this, err))?;
            // A body that failed is the cause of whatever the extractor saw.
            pumped?;
            installed
        });
        task.await.map_err(|err| panicked(self, err))?
    }

    /// The blocking part: extract into a staging dir, then put it in place.
    fn install(
        &self,
        reader: BodyReader,
        busy: &Busy,
        commit: Commit,
        started: &(dyn Fn() -> bool + Send + Sync),
    ) -> Result<BundleSummary, UploadError> {
        let run_id = &busy.run_id;
        let work_root = &self.config().work_root;
        let replace = commit.replace;
        let staging = Staging::create(self.work_root())?;
        let mut input = Digesting {
            inner: reader,
            digest: Sha256::new(),
        };
        let summary = extract::extract_into(
            &mut input,
            staging.dir.as_fd(),
            &staging.shown,
            &self.limits(),
        )?;
        if let Some(expected) = commit.sha256 {
            // What the extractor left unread (bounded by the body limit).
            io::copy(&mut input, &mut io::sink())
                .map_err(|err| UploadError::Incomplete(err.to_string()))?;
            let actual: [u8; 32] = input.digest.finalize().into();
            if actual != expected {
                return Err(UploadError::ChecksumMismatch {
                    expected: hex(&expected),
                    actual: hex(&actual),
                });
            }
        }
        let record = BundleRecord {
            version: RECORD_VERSION,
            run_id: run_id.clone(),
            entries: summary.entries,
            bytes: summary.bytes,
            created_at: Utc::now(),
        };
        let record = self.prepare_record(&record)?;
        if started() {
            return Err(UploadError::RunStarted(run_id.clone()));
        }
        let work_dir = work_root.join(run_id);
        let swapped = put_in_place(&staging, run_id, &work_dir, replace)?;
        let target = record_path(&self.config().state_dir, run_id);
        if let Err(err) = record.persist(&target) {
            // Undo: the old tree (if any) goes back, the new one is removed.
            let _ = undo(&staging, run_id, swapped);
            return Err(UploadError::io("writing", &target, err.error));
        }
        let _ = nix::unistd::fsync(staging.root.as_raw_fd());
        let _ = target.parent().map(durable::sync_dir);
        // Dropping `staging` removes the replaced tree, if there was one.
        let mut staging = staging;
        staging.keep = !swapped;
        drop(staging);
        Ok(BundleSummary {
            run_id: run_id.clone(),
            dir: work_dir,
            entries: summary.entries,
            bytes: summary.bytes,
        })
    }

    /// Writes the record to a temp file beside its place, for a rename
    /// once the bundle is in place.
    fn prepare_record(
        &self,
        record: &BundleRecord,
    ) -> Result<tempfile::NamedTempFile, UploadError> {
        let dir = StateDir::new(&self.config().state_dir).bundles();
        let write = || -> io::Result<tempfile::NamedTempFile> {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)?;
            let mut file = tempfile::Builder::new()
                .prefix(RECORD_TEMP_PREFIX)
                .tempfile_in(&dir)?;
            serde_json::to_writer(&mut file, record)?;
            file.write_all(b"\n")?;
            file.as_file().sync_all()?;
            Ok(file)
        };
        write().map_err(|err| UploadError::io("writing a bundle record in", &dir, err))
    }
}

/// How a received bundle is committed: over an existing one or not, and
/// only when the body's SHA-256 is this one.
pub(super) struct Commit {
    pub(super) replace: bool,
    pub(super) sha256: Option<[u8; 32]>,
}

/// The body as the extractor reads it, digested on the way.
struct Digesting {
    inner: BodyReader,
    digest: Sha256,
}

impl io::Read for Digesting {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digest.update(&buf[..n]);
        Ok(n)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn panicked(uploader: &Uploader, err: tokio::task::JoinError) -> UploadError {
    UploadError::Io {
        action: "extracting a bundle into",
        path: uploader.config().work_root.clone(),
        source: io::Error::other(format!("the upload task failed: {err}")),
    }
}

/// `remove_dir_all` that tolerates a tree that is already gone.
fn remove_tree(path: &Path) -> io::Result<()> {
    match fs::remove_dir_all(path) {
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

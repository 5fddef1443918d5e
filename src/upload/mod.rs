//! Uploads: streaming, all-or-nothing bundle extraction and atomic file
//! writes.
//!
//! - [`entry`]: validation of one archive entry (pure).
//! - [`extract`]: the synchronous extractor with its limits
//!   ([`extract_sync`], also the fuzz target's entry point).
//! - `bridge`: the bounded channel from an async body to the extractor.
//! - `bundle`: a run's bundle: staging dir, extraction in `spawn_blocking`,
//!   rename into place, the bundle record in `<state-dir>/bundles/`.
//! - `fetch`: the URL form, streaming a download into the same extraction.
//! - `files`: single files written atomically under the upload roots.
//! - `staging`: the staging dir and its move into place, through the
//!   work root's descriptor.
//! - `write`: writing validated entries (files, dirs, links) to disk.

mod bridge;
mod bundle;
pub mod entry;
pub mod extract;
mod fetch;
mod single_file;
mod staging;
mod write;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use bundle::{
    clean_record_temp_files, clean_staging, forget_bundle, has_bundle, BundleSummary,
};
pub use extract::{extract_sync, Summary};
pub use fetch::FetchRequest;
pub use single_file::FileSummary;

use crate::config::{Config, UploadLimits};
use crate::durable;
use crate::fsroot::{FileRoots, Root};
use crate::metrics::Metrics;

/// Why an upload failed.
#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    /// An entry would write outside the work dir, or is of a refused kind.
    #[error("entry {entry:?}: {reason}; nothing was extracted")]
    Unsafe {
        /// The entry's name as in the archive.
        entry: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The archive is corrupt, truncated, or not a tar archive.
    #[error("{reason}; nothing was extracted")]
    BadArchive {
        /// What is wrong, naming the entry when there is one.
        reason: String,
    },
    /// The compressed body is over `--max-bundle-bytes`.
    #[error("the bundle is larger than {limit} bytes (--max-bundle-bytes); nothing was extracted")]
    BundleTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The extracted data is over `--max-extracted-bytes`.
    #[error("the bundle extracts to more than {limit} bytes (--max-extracted-bytes), passed at entry {entry:?}; nothing was extracted")]
    ExtractedTooLarge {
        /// The limit.
        limit: u64,
        /// The entry that passed it.
        entry: String,
    },
    /// More entries than `--max-entries`.
    #[error("the bundle has more than {limit} entries (--max-entries); nothing was extracted")]
    TooManyEntries {
        /// The limit.
        limit: u64,
    },
    /// The request body ended early or broke.
    #[error("the upload stopped before its end ({0}); nothing was written")]
    Incomplete(String),
    /// The run already has a bundle.
    #[error(
        "run {0:?} already has a bundle; send ?replace=true to replace it before the run starts"
    )]
    BundleExists(String),
    /// The run has started; its work dir is in use.
    #[error("run {0:?} has already started; upload its bundle before starting it")]
    RunStarted(String),
    /// Another upload for the same run is running.
    #[error("another bundle upload for run {0:?} is in progress; retry when it has ended")]
    InProgress(String),
    /// The work dir exists, holds files, and is not from a bundle.
    #[error("the work dir {0} already exists and is not empty; send ?replace=true to replace it")]
    WorkDirExists(PathBuf),
    /// The origin refused the download for good (4xx).
    #[error("fetching {url}: the origin answered {status}; check the URL and its headers")]
    Unavailable {
        /// The URL, without query string or credentials.
        url: String,
        /// The origin's status.
        status: u16,
    },
    /// The downloaded bytes do not have the `sha256` asked for.
    #[error("the downloaded bundle has sha256 {actual}, not the {expected} asked for; nothing was extracted")]
    ChecksumMismatch {
        /// The digest asked for.
        expected: String,
        /// The digest of what was downloaded.
        actual: String,
    },
    /// The download failed in a way worth retrying.
    #[error("fetching {url} failed: {reason}; retrying may help")]
    FetchFailed {
        /// The URL, without query string or credentials.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The request is wrong (URL, headers, path, mode).
    #[error("{0}")]
    Invalid(String),
    /// `PUT /v1/files` outside the upload roots.
    #[error("{path} resolves to {resolved}, outside the upload roots ({roots}); write under one of them or add --upload-root")]
    Forbidden {
        /// The path asked for.
        path: String,
        /// Where its parent really is.
        resolved: PathBuf,
        /// The allowed roots.
        roots: String,
    },
    /// The path passes through a symlink below an upload root.
    #[error("{path} passes through the symlink {link} (-> {target}); no symlink below a root is followed: name the real path")]
    ThroughSymlink {
        /// The path asked for.
        path: String,
        /// The symlink met.
        link: PathBuf,
        /// Where it points.
        target: PathBuf,
    },
    /// The disk or a quota is full.
    #[error("no space left on the device while {action} {path}; nothing was kept")]
    StorageFull {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
    },
    /// Disk trouble.
    #[error("i/o error while {action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// Where.
        path: PathBuf,
        /// The error.
        #[source]
        source: std::io::Error,
    },
}

impl UploadError {
    /// An I/O error on `path`; a full disk becomes [`UploadError::StorageFull`].
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> UploadError {
        if durable::is_storage_full(&source) {
            return UploadError::StorageFull {
                action,
                path: path.to_owned(),
            };
        }
        UploadError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

/// Whether a run has started; asked before and again right before a
/// bundle is moved into place.
pub type Started = Arc<dyn Fn() -> bool + Send + Sync>;

/// Takes uploads. Cheap to clone.
#[derive(Clone)]
pub struct Uploader {
    inner: Arc<Inner>,
}

struct Inner {
    config: Arc<Config>,
    roots: Arc<FileRoots>,
    metrics: Metrics,
    /// Runs with a bundle upload in progress.
    busy: Mutex<HashSet<String>>,
}

impl Uploader {
    /// An uploader for this configuration.
    pub fn new(config: Arc<Config>, roots: Arc<FileRoots>, metrics: Metrics) -> Uploader {
        Uploader {
            inner: Arc::new(Inner {
                config,
                roots,
                metrics,
                busy: Mutex::default(),
            }),
        }
    }

    fn config(&self) -> &Config {
        &self.inner.config
    }

    fn work_root(&self) -> &Root {
        &self.inner.roots.work_root
    }

    fn roots(&self) -> &FileRoots {
        &self.inner.roots
    }

    fn limits(&self) -> UploadLimits {
        self.inner.config.upload_limits
    }

    fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }
}

/// Holds a run's "upload in progress" mark; dropping it clears the mark.
struct Busy {
    uploader: Uploader,
    run_id: String,
}

impl Uploader {
    fn mark_busy(&self, run_id: &str) -> Result<Busy, UploadError> {
        if !self.lock_busy().insert(run_id.to_owned()) {
            return Err(UploadError::InProgress(run_id.to_owned()));
        }
        Ok(Busy {
            uploader: self.clone(),
            run_id: run_id.to_owned(),
        })
    }

    /// Whether a bundle upload for `run_id` is under way: a run with that
    /// id is not started meanwhile (its work dir is about to be swapped).
    pub fn is_uploading(&self, run_id: &str) -> bool {
        self.lock_busy().contains(run_id)
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.inner.busy.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut busy = self.uploader.lock_busy();
        busy.remove(&self.run_id);
    }
}

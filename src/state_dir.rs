//! The layout of the state dir: every path under `--state-dir` is named
//! here, and the subfolders are created here.
//!
//! ```text
//! <state-dir>/runs/<run_id>/record.json   the run (atomic replace, 0600)
//! <state-dir>/runs/<run_id>/stdout.log    masked stdout
//! <state-dir>/runs/<run_id>/stderr.log    masked stderr
//! <state-dir>/runs/<run_id>/output.idx    arrival order of the two streams
//! <state-dir>/runs/<run_id>/exit.json     how the run ended, written by its shim
//! <state-dir>/runs/<run_id>/shim.log      the shim's own diagnostics
//! <state-dir>/runs/<run_id>/stdin.sock    the run's input socket (its shim's)
//! <state-dir>/outbox/                     one file per completion callback
//! <state-dir>/bundles/<run_id>.json       an extracted bundle's summary
//! <state-dir>/service.json                pid of the supervised service
//! ```

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// The state dir. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateDir {
    root: PathBuf,
}

/// One run's folder in the state dir (`runs/<run_id>/`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl StateDir {
    /// The subfolders [`StateDir::create_subdirs`] creates.
    pub const SUBDIRS: [&'static str; 3] = ["runs", "outbox", "bundles"];

    /// The state dir at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> StateDir {
        StateDir { root: root.into() }
    }

    /// Its root.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Creates the subfolders (mode 0700) that do not exist yet; returns
    /// them, for the caller to check.
    pub fn create_subdirs(&self) -> io::Result<Vec<PathBuf>> {
        let mut dirs = Vec::with_capacity(Self::SUBDIRS.len());
        for sub in Self::SUBDIRS {
            let dir = self.root.join(sub);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|err| io::Error::new(err.kind(), format!("{}: {err}", dir.display())))?;
            dirs.push(dir);
        }
        Ok(dirs)
    }

    /// `runs/`: one folder per run.
    pub fn runs(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// One run's folder.
    pub fn run(&self, run_id: &str) -> RunDir {
        RunDir {
            path: self.runs().join(run_id),
        }
    }

    /// `outbox/`: the completion callbacks.
    pub fn outbox(&self) -> PathBuf {
        self.root.join("outbox")
    }

    /// `bundles/`: the summaries of extracted bundles.
    pub fn bundles(&self) -> PathBuf {
        self.root.join("bundles")
    }

    /// `bundles/<run_id>.json`.
    pub fn bundle_record(&self, run_id: &str) -> PathBuf {
        self.bundles().join(format!("{run_id}.json"))
    }

    /// `service.json`: the pid of the supervised service.
    pub fn service_pid_file(&self) -> PathBuf {
        self.root.join("service.json")
    }
}

/// File name of a run's record.
pub(crate) const RECORD_FILE: &str = "record.json";

impl RunDir {
    /// The run dir at `path` (the shim gets its path in its spec).
    pub fn new(path: impl Into<PathBuf>) -> RunDir {
        RunDir { path: path.into() }
    }

    /// The folder itself.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `record.json`: the durable record.
    pub fn record(&self) -> PathBuf {
        self.path.join(RECORD_FILE)
    }

    /// `stdout.log`: captured stdout, masked.
    pub fn stdout_log(&self) -> PathBuf {
        self.path.join("stdout.log")
    }

    /// `stderr.log`: captured stderr, masked.
    pub fn stderr_log(&self) -> PathBuf {
        self.path.join("stderr.log")
    }

    /// `output.idx`: the arrival order of the two streams.
    pub fn output_index(&self) -> PathBuf {
        self.path.join("output.idx")
    }

    /// `exit.json`: how the run ended, written by its shim.
    pub fn exit_report(&self) -> PathBuf {
        self.path.join("exit.json")
    }

    /// `shim.log`: the shim's own diagnostics.
    pub fn shim_log(&self) -> PathBuf {
        self.path.join("shim.log")
    }

    /// `stdin.sock`: the input socket of a run that takes input, the
    /// shim's while the command runs.
    pub fn stdin_socket(&self) -> PathBuf {
        self.path.join("stdin.sock")
    }
}

#[cfg(test)]
mod tests;

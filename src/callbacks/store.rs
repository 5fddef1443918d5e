//! The outbox on disk: one file per run's callback,
//! `<state-dir>/outbox/<run_id>.json`, mode 0600 (it holds the bearer
//! token), a versioned [`OutboxRecord`] replaced atomically (temp file,
//! rename), flushed to disk (file and directory fsync) where a promise is
//! made: when the callback is first stored.
//!
//! The file is written before the first attempt and rewritten after each
//! one, and it stays after delivery (state `delivered` or `failed`) so a
//! restarted daemon still reports the result. It is removed with its run.

use std::io;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::payload::Payload;
pub(crate) use super::target::StoredToken;
use crate::durable;

/// Current format of an outbox file.
pub(crate) const OUTBOX_VERSION: u32 = 1;

/// Where a callback stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum DeliveryState {
    /// Not delivered yet; attempts go on.
    Pending,
    /// The service took it (2xx or 409).
    Delivered,
    /// Given up: a permanent 4xx, or retried past `--callback-max-age`.
    Failed,
}

impl DeliveryState {
    /// The wire name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }
}

/// One run's callback, as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct OutboxRecord {
    /// Format version.
    pub version: u32,
    /// sandboxd's run id: the file name and the `Idempotency-Key`.
    pub run_id: String,
    /// Where to post.
    pub url: String,
    /// Bearer token, if any.
    pub token: Option<StoredToken>,
    /// The body, built when the run ended.
    pub payload: Payload,
    /// When the run's end was recorded (the start of the retry window).
    pub created_at: DateTime<Utc>,
    /// Delivery state.
    pub state: DeliveryState,
    /// Attempts so far.
    pub attempts: u32,
    /// HTTP status of the last attempt, when it got one.
    pub last_status: Option<u16>,
    /// What went wrong in the last attempt.
    pub last_error: Option<String>,
    /// When it was delivered.
    pub delivered_at: Option<DateTime<Utc>>,
}

/// The outbox directory.
#[derive(Debug, Clone)]
pub(crate) struct Store {
    dir: PathBuf,
}

impl Store {
    /// The outbox in `dir` (created by the daemon's start-up).
    pub(crate) fn new(dir: PathBuf) -> Store {
        Store { dir }
    }

    /// The file of one run's callback.
    pub(crate) fn path(&self, run_id: &str) -> PathBuf {
        self.dir.join(format!("{run_id}.json"))
    }

    /// Writes a record; `sync` says whether to wait for the disk.
    pub(crate) fn save(&self, record: &OutboxRecord, sync: durable::Durability) -> io::Result<()> {
        let bytes = serde_json::to_vec_pretty(record).map_err(io::Error::other)?;
        durable::write_atomic(&self.path(&record.run_id), &bytes, 0o600, sync)
    }

    /// Flushes a run's file and the directory entry naming it to disk.
    pub(crate) fn flush(&self, run_id: &str) -> io::Result<()> {
        std::fs::File::open(self.path(run_id))?.sync_all()?;
        durable::sync_dir(&self.dir)
    }

    /// Removes a run's file; a missing file is fine.
    pub(crate) fn remove(&self, run_id: &str) -> io::Result<()> {
        match std::fs::remove_file(self.path(run_id)) {
            Err(err) if err.kind() != io::ErrorKind::NotFound => Err(err),
            _ => Ok(()),
        }
    }

    /// Reads every record. Leftover temp files of an interrupted write are
    /// removed; unreadable files are logged and left alone for a person.
    pub(crate) fn load_all(&self) -> io::Result<Vec<OutboxRecord>> {
        let mut records = Vec::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let path = entry?.path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if name.starts_with('.') && name.contains(".tmp-") {
                let _ = std::fs::remove_file(&path);
                continue;
            }
            if !name.ends_with(".json") {
                continue;
            }
            match load(&path) {
                Ok(record) => records.push(record),
                Err(err) => {
                    tracing::warn!(path = %path.display(), "skipping an unreadable outbox file: {err}");
                }
            }
        }
        Ok(records)
    }
}

fn load(path: &Path) -> io::Result<OutboxRecord> {
    let bytes = std::fs::read(path)?;
    let record: OutboxRecord = serde_json::from_slice(&bytes).map_err(io::Error::other)?;
    if record.version != OUTBOX_VERSION {
        return Err(io::Error::other(format!(
            "unknown outbox file version {}",
            record.version
        )));
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::callbacks::payload::PayloadStatus;
    use secrecy::{ExposeSecret, SecretString};

    fn record(run_id: &str) -> OutboxRecord {
        OutboxRecord {
            version: OUTBOX_VERSION,
            run_id: run_id.into(),
            url: "http://127.0.0.1:1/runs/x/complete".into(),
            token: Some(StoredToken(SecretString::from("sk-secret"))),
            payload: Payload {
                status: PayloadStatus::Completed,
                run_id: run_id.into(),
                error: None,
                conversation_id: None,
                cost: None,
                blocking_factor: None,
                task_outcome: None,
            },
            created_at: Utc::now(),
            state: DeliveryState::Pending,
            attempts: 0,
            last_status: None,
            last_error: None,
            delivered_at: None,
        }
    }

    /// Records survive a reload, files are 0600, the token never shows in
    /// Debug, and stray temp or foreign files do not break loading.
    #[test]
    fn save_load_remove() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path().to_owned());
        let mut first = record("r1");
        store.save(&first, durable::Durability::Flush).unwrap();
        first.state = DeliveryState::Delivered;
        first.attempts = 2;
        store.save(&first, durable::Durability::NoFlush).unwrap();
        store
            .save(&record("r2"), durable::Durability::Flush)
            .unwrap();
        std::fs::write(dir.path().join(".r3.json.tmp-99"), b"{").unwrap();
        std::fs::write(dir.path().join("bad.json"), b"{").unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();

        let mode = std::fs::metadata(store.path("r1"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut loaded = store.load_all().unwrap();
        loaded.sort_by(|a, b| a.run_id.cmp(&b.run_id));
        assert_eq!(loaded.len(), 2);
        assert_eq!(loaded[0].state, DeliveryState::Delivered);
        assert_eq!(loaded[0].attempts, 2);
        assert_eq!(
            loaded[0].token.as_ref().unwrap().0.expose_secret(),
            "sk-secret"
        );
        assert!(!format!("{:?}", loaded[0]).contains("sk-secret"));
        assert!(!dir.path().join(".r3.json.tmp-99").exists());

        store.remove("r1").unwrap();
        store.remove("r1").unwrap();
        assert_eq!(store.load_all().unwrap().len(), 1);
    }
}

//! Uploads: bundles (plain, gzip, zstd; PUT and URL), their safety checks,
//! limits, all-or-nothing extraction and replace rules; single files under
//! the upload roots. This file holds the shared helpers and the tests that
//! span bundles and files.

mod bundle;
mod files;
mod race;
mod safety;
mod url;

use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tar::EntryType;
use tokio::io::AsyncWriteExt;

use crate::support::{self, Options, TestDaemon, KEY};

/// Builds tar archives in memory, with raw names and link targets (the
/// `tar` crate's own setters refuse the dangerous ones we need).
struct Archive {
    builder: tar::Builder<Vec<u8>>,
}

impl Archive {
    fn new() -> Archive {
        Archive {
            builder: tar::Builder::new(Vec::new()),
        }
    }

    fn entry(mut self, name: &str, kind: EntryType, link: &str, data: &[u8], mode: u32) -> Archive {
        let mut header = tar::Header::new_gnu();
        {
            let gnu = header.as_gnu_mut().unwrap();
            gnu.name[..name.len()].copy_from_slice(name.as_bytes());
            gnu.linkname[..link.len()].copy_from_slice(link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(mode);
        header.set_mtime(1_600_000_000);
        header.set_cksum();
        self.builder.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Archive {
        self.entry(name, EntryType::Regular, "", data, 0o644)
    }

    fn file_mode(self, name: &str, data: &[u8], mode: u32) -> Archive {
        self.entry(name, EntryType::Regular, "", data, mode)
    }

    fn dir(self, name: &str) -> Archive {
        self.entry(name, EntryType::Directory, "", b"", 0o755)
    }

    fn symlink(self, name: &str, target: &str) -> Archive {
        self.entry(name, EntryType::Symlink, target, b"", 0o777)
    }

    fn hardlink(self, name: &str, target: &str) -> Archive {
        self.entry(name, EntryType::Link, target, b"", 0o644)
    }

    fn tar(self) -> Vec<u8> {
        self.builder.into_inner().unwrap()
    }

    fn gz(self) -> Vec<u8> {
        gzip(&self.tar())
    }

    fn zst(self) -> Vec<u8> {
        zstd::encode_all(&self.tar()[..], 3).unwrap()
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(data).unwrap();
    gz.finish().unwrap()
}

/// Bytes that do not compress.
fn noise(len: usize) -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

async fn put_bundle(
    daemon: &TestDaemon,
    run_id: &str,
    body: Vec<u8>,
    query: &str,
) -> (StatusCode, Value) {
    let req = daemon
        .request(Method::PUT, &format!("/v1/runs/{run_id}/bundle{query}"))
        .body(body);
    support::send(req).await
}

async fn post_bundle(daemon: &TestDaemon, run_id: &str, body: Value) -> (StatusCode, Value) {
    daemon
        .post(&format!("/v1/runs/{run_id}/bundle"), body)
        .await
}

async fn put_file(
    daemon: &TestDaemon,
    path: &Path,
    mode: Option<&str>,
    body: &[u8],
) -> (StatusCode, Value) {
    let mut query = vec![("path", path.display().to_string())];
    if let Some(mode) = mode {
        query.push(("mode", mode.to_owned()));
    }
    let req = daemon
        .request(Method::PUT, "/v1/files")
        .query(&query)
        .body(body.to_vec());
    support::send(req).await
}

/// Names in the work root, sorted.
fn work_root_names(daemon: &TestDaemon) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(daemon.work_root())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Every path under `dir` (recursively, not following symlinks).
pub(crate) fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(tree(&path));
        }
    }
    out.sort();
    out
}

/// Asserts nothing named `*evil*` exists under the daemon's dir or /tmp's
/// top level, and that the work root holds exactly `expected`.
fn assert_nothing_escaped(daemon: &TestDaemon, expected: &[&str]) {
    assert_no_evil_outside(daemon);
    assert_eq!(
        work_root_names(daemon),
        expected,
        "work root after the uploads"
    );
}

/// Asserts nothing named `*evil*` (the hostile archives' escape targets)
/// exists under the daemon's dir or /tmp's top level.
pub(crate) fn assert_no_evil_outside(daemon: &TestDaemon) {
    let escaped: Vec<PathBuf> = tree(daemon.dir.path())
        .into_iter()
        .chain(
            std::fs::read_dir("/tmp")
                .unwrap()
                .flatten()
                .map(|e| e.path()),
        )
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().contains("evil"))
        })
        .collect();
    assert!(escaped.is_empty(), "written outside: {escaped:?}");
}

/// A full disk is 507 insufficient_storage, for bundles and files, with
/// nothing left behind. Needs a small tmpfs, so root.
#[tokio::test]
async fn full_disk_is_507() {
    if !support::is_root() {
        eprintln!("full_disk_is_507: not root, cannot mount a tmpfs; the mapping is unit-tested");
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mounted = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
        .arg(&work)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs on {}", work.display());
    struct Unmount(PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .status();
        }
    }
    let _unmount = Unmount(work.clone());
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let body = Archive::new()
        .file("small.txt", b"fits")
        .file("big.bin", &noise(2 << 20))
        .gz();
    let (status, answer) = put_bundle(&daemon, "full", body, "").await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_storage");
    assert_nothing_escaped(&daemon, &[]);

    let (status, answer) = put_file(&daemon, &work.join("big.bin"), None, &noise(2 << 20)).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(work_root_names(&daemon), Vec::<String>::new());

    let small = Archive::new().file("small.txt", b"fits").gz();
    let (status, answer) = put_bundle(&daemon, "fits", small, "").await;
    assert_eq!(status, StatusCode::CREATED, "space is back: {answer}");
    drop(daemon);
}

/// Uploaded bytes are counted in /metrics.
#[tokio::test]
async fn upload_bytes_are_counted() {
    let daemon = TestDaemon::start().await;
    let body = Archive::new().file("m.txt", b"metrics").gz();
    let len = body.len();
    put_bundle(&daemon, "m", body, "").await;
    put_file(&daemon, &daemon.work_root().join("f.txt"), None, b"12345").await;
    let (_, text) = daemon.text("/metrics").await;
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("upload_bytes_total") || l.starts_with("sandboxd_upload_bytes_total")
        })
        .unwrap_or_else(|| panic!("no upload_bytes in:\n{text}"));
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert_eq!(value as usize, len + 5, "{line}");
}

//! Uploads: bundles (plain, gzip, zstd; PUT and URL), their safety checks,
//! limits, all-or-nothing extraction and replace rules; single files under
//! the upload roots.

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
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        out.push(path.clone());
        if entry.file_type().unwrap().is_dir() {
            out.extend(tree(&path));
        }
    }
    out.sort();
    out
}

/// Asserts nothing named `*evil*` exists under the daemon's dir or /tmp's
/// top level, and that the work root holds exactly `expected`.
fn assert_nothing_escaped(daemon: &TestDaemon, expected: &[&str]) {
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
    assert_eq!(
        work_root_names(daemon),
        expected,
        "work root after the uploads"
    );
}

/// The three encodings extract the same tree: files with their content,
/// modes without setuid/setgid/sticky, mtimes, dirs, a symlink and a
/// hardlink; the answer has the contract's fields.
#[tokio::test]
async fn plain_gzip_and_zstd_bundles_extract() {
    let daemon = TestDaemon::start().await;
    let build = || {
        Archive::new()
            .dir("src/")
            .file("src/main.py", b"print('hi')\n")
            .file_mode("run.sh", b"#!/bin/sh\necho run\n", 0o6755)
            .file_mode("secret.txt", b"s", 0o600)
            .file("deep/er/file.txt", b"implicit parents")
            .symlink("link", "src/main.py")
            .hardlink("again.py", "src/main.py")
    };
    for (run_id, body) in [
        ("plain", build().tar()),
        ("gzip", build().gz()),
        ("zstd", build().zst()),
    ] {
        let (status, answer) = put_bundle(&daemon, run_id, body, "").await;
        assert_eq!(status, StatusCode::CREATED, "{run_id}: {answer}");
        let dir = daemon.work_root().join(run_id);
        assert_eq!(
            answer,
            json!({"run_id": run_id, "dir": dir.display().to_string(), "entries": 7, "bytes": 12 + 19 + 1 + 16})
        );
        assert_eq!(
            std::fs::read(dir.join("src/main.py")).unwrap(),
            b"print('hi')\n"
        );
        assert_eq!(std::fs::read(dir.join("link")).unwrap(), b"print('hi')\n");
        assert_eq!(
            std::fs::read(dir.join("again.py")).unwrap(),
            b"print('hi')\n"
        );
        assert_eq!(
            std::fs::read(dir.join("deep/er/file.txt")).unwrap(),
            b"implicit parents"
        );
        let run = std::fs::metadata(dir.join("run.sh")).unwrap();
        assert_eq!(
            run.permissions().mode() & 0o7777,
            0o755,
            "setuid/setgid dropped"
        );
        assert_eq!(run.mtime(), 1_600_000_000, "mtime kept");
        let secret = std::fs::metadata(dir.join("secret.txt")).unwrap();
        assert_eq!(secret.permissions().mode() & 0o777, 0o600);
        assert_eq!(
            std::fs::metadata(dir.join("src")).unwrap().mtime(),
            1_600_000_000
        );
        assert_eq!(
            std::fs::read_link(dir.join("link")).unwrap(),
            PathBuf::from("src/main.py")
        );
    }
    assert_nothing_escaped(&daemon, &["gzip", "plain", "zstd"]);
}

/// A run started with the bundle's run_id finds the files in its cwd, its
/// status says it has a bundle, and deleting the run removes both.
#[tokio::test]
async fn a_run_sees_its_bundle() {
    let daemon = TestDaemon::start().await;
    let body = Archive::new()
        .file("hello.txt", b"hello from the bundle\n")
        .gz();
    let (status, answer) = put_bundle(&daemon, "r1", body, "").await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    let run = daemon
        .exec(json!({"run_id": "r1", "command": "cat hello.txt"}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "hello from the bundle\n");
    assert_eq!(run["bundle"], true);
    let plain = daemon
        .exec(json!({"run_id": "r2", "command": "ls -A"}))
        .await;
    assert_eq!(plain["bundle"], false);
    assert_eq!(
        plain["stdout"], "",
        "a run without a bundle gets an empty work dir"
    );

    let (status, _) = daemon.delete("/v1/runs/r1").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!daemon.work_root().join("r1").exists());
    assert!(!daemon.state_dir().join("bundles/r1.json").exists());
    let body = Archive::new().file("new.txt", b"again").tar();
    let (status, answer) = put_bundle(&daemon, "r1", body, "").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "a deleted run's id takes a new bundle: {answer}"
    );
}

/// Every unsafe entry is refused with 400 unsafe_archive naming the entry
/// and the reason, and nothing is written: not outside, not inside.
#[tokio::test]
async fn unsafe_archives_are_refused_whole() {
    let daemon = TestDaemon::start().await;
    let evil_abs = format!("/tmp/sandboxd-evil-{}", std::process::id());
    let good = |a: Archive| a.file("good.txt", b"fine").dir("d/");
    let cases: Vec<(&str, Archive, &str)> = vec![
        (
            "absolute",
            good(Archive::new()).file(&evil_abs, b"x"),
            "absolute",
        ),
        (
            "dotdot",
            good(Archive::new()).file("../../evil.txt", b"x"),
            "`..`",
        ),
        (
            "dotdot-inner",
            good(Archive::new()).file("d/../../evil.txt", b"x"),
            "`..`",
        ),
        (
            "win",
            good(Archive::new()).file("..\\..\\evil.txt", b"x"),
            "Windows",
        ),
        (
            "symlink-abs",
            good(Archive::new()).symlink("evil", "/etc"),
            "absolute",
        ),
        (
            "symlink-up",
            good(Archive::new()).symlink("d/evil", "../../.."),
            "outside",
        ),
        (
            "symlink-chain",
            good(Archive::new())
                .symlink("up", "d/..")
                .symlink("evil", "up/../x"),
            "outside",
        ),
        (
            "symlink-later",
            // Safe when written; made to escape by a later symlink.
            good(Archive::new())
                .symlink("evil", "t/../x")
                .symlink("t", "."),
            "outside",
        ),
        (
            "write-through-symlink",
            good(Archive::new())
                .symlink("evil", "d")
                .file("evil/x", b"x"),
            "symlink",
        ),
        (
            "overwrite-symlink",
            good(Archive::new())
                .symlink("evil", "good.txt")
                .file("evil", b"x"),
            "symlink",
        ),
        (
            "hardlink-abs",
            good(Archive::new()).hardlink("evil", "/etc/passwd"),
            "absolute",
        ),
        (
            "hardlink-up",
            good(Archive::new()).hardlink("evil", "../../x"),
            "`..`",
        ),
        (
            "hardlink-to-symlink",
            good(Archive::new())
                .symlink("d/s", "../good.txt")
                .hardlink("evil", "d/s"),
            "symlink",
        ),
        (
            "hardlink-missing",
            good(Archive::new()).hardlink("evil", "nope"),
            "regular file",
        ),
        (
            "char-device",
            good(Archive::new()).entry("evil", EntryType::Char, "", b"", 0o644),
            "device",
        ),
        (
            "block-device",
            good(Archive::new()).entry("evil", EntryType::Block, "", b"", 0o644),
            "device",
        ),
        (
            "fifo",
            good(Archive::new()).entry("evil", EntryType::Fifo, "", b"", 0o644),
            "FIFO",
        ),
    ];
    for (label, archive, reason) in cases {
        let (status, body) = put_bundle(&daemon, label, archive.gz(), "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {body}");
        assert_eq!(body["error"]["code"], "unsafe_archive", "{label}: {body}");
        let message = body["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("entry \""),
            "{label}: names the entry: {message}"
        );
        assert!(
            message.contains(reason),
            "{label}: says why ({reason}): {message}"
        );
    }
    assert!(!Path::new(&evil_abs).exists());
    assert_nothing_escaped(&daemon, &[]);
}

/// Corrupt, truncated and non-tar bodies are 400 bad_archive with nothing
/// left behind.
#[tokio::test]
async fn corrupt_and_truncated_archives_are_refused() {
    let daemon = TestDaemon::start().await;
    let full = Archive::new()
        .file("a.txt", &noise(20_000))
        .file("b.txt", &noise(20_000))
        .tar();
    let gz = gzip(&full);
    let mut flipped = gz.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0xff;
    let mut bad_crc = gz.clone();
    let at = bad_crc.len() - 6;
    bad_crc[at] ^= 0x55;
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", Vec::new()),
        ("noise", noise(4096)),
        ("tar-cut-in-data", full[..512 + 10_000].to_vec()),
        ("tar-cut-at-entry", full[..512 + 20_480].to_vec()),
        ("gzip-cut", gz[..gz.len() / 2].to_vec()),
        ("gzip-flipped", flipped),
        ("gzip-bad-crc", bad_crc),
        ("zstd-cut", {
            let z = zstd::encode_all(&full[..], 3).unwrap();
            z[..z.len() - 10].to_vec()
        }),
        ("bzip2", b"BZh91AY&SY\x00\x00".to_vec()),
    ];
    for (label, body) in cases {
        let (status, answer) = put_bundle(&daemon, label, body, "").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{label}: {answer}");
        assert_eq!(answer["error"]["code"], "bad_archive", "{label}: {answer}");
        assert!(answer["error"]["message"].as_str().unwrap().len() > 20);
    }
    assert_nothing_escaped(&daemon, &[]);
}

/// Limits: compressed size (declared or streamed), extracted size (a gzip
/// bomb stops at its header, long before its data) and entry count are
/// 413 with nothing left behind; just under the limits is fine.
#[tokio::test]
async fn limits_are_413() {
    let daemon = TestDaemon::start_with(Options {
        args: [
            "--max-bundle-bytes=65536",
            "--max-extracted-bytes=1048576",
            "--max-entries=10",
        ]
        .map(String::from)
        .to_vec(),
        ..Options::default()
    })
    .await;
    let big = Archive::new().file("big", &noise(100_000)).tar();
    let (status, body) = put_bundle(&daemon, "declared", big.clone(), "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "bundle_too_large");
    assert!(body["error"]["message"].as_str().unwrap().contains("65536"));

    // Streamed without a length: the limit is enforced while reading.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(8192).map(|c| Ok(c.to_vec())).collect();
    let req = daemon
        .request(Method::PUT, "/v1/runs/streamed/bundle")
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)));
    let (status, body) = support::send(req).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "bundle_too_large");

    // A gzip bomb: one entry declaring 1 GiB, its zeros in gzip members
    // of 1 MiB each, concatenated. It stops at the entry's header.
    let mut header = tar::Header::new_gnu();
    header.set_path("bomb").unwrap();
    header.set_size(1 << 30);
    header.set_mode(0o644);
    header.set_cksum();
    let mut bomb = gzip(header.as_bytes());
    let mut zeros = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    zeros.write_all(&vec![0u8; 1 << 20]).unwrap();
    let zeros = zeros.finish().unwrap();
    for _ in 0..32 {
        bomb.extend_from_slice(&zeros);
    }
    assert!(bomb.len() < 65536, "the bomb is {} bytes", bomb.len());
    let started = Instant::now();
    let (status, body) = put_bundle(&daemon, "bomb", bomb, "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "extracted_too_large");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("\"bomb\""),
        "{body}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // Many small entries each under the limit, together over it.
    let mut many = Archive::new();
    for i in 0..5 {
        many = many.file(&format!("part{i}"), &vec![b'z'; 300_000]);
    }
    let (status, body) = put_bundle(&daemon, "sum", many.gz(), "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "extracted_too_large");
    assert!(
        body["error"]["message"].as_str().unwrap().contains("part3"),
        "{body}"
    );

    let mut entries = Archive::new();
    for i in 0..11 {
        entries = entries.file(&format!("f{i}"), b"");
    }
    let (status, body) = put_bundle(&daemon, "entries", entries.gz(), "").await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE, "{body}");
    assert_eq!(body["error"]["code"], "too_many_entries");

    let mut fits = Archive::new();
    for i in 0..10 {
        fits = fits.file(&format!("f{i}"), &vec![b'a'; 100_000]);
    }
    let (status, body) = put_bundle(&daemon, "fits", fits.gz(), "").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "just under every limit: {body}"
    );
    assert_nothing_escaped(&daemon, &["fits"]);
}

/// A client that disconnects mid-upload leaves nothing: the staging dir
/// goes away, no work dir appears, and the run takes a new upload.
#[tokio::test]
async fn client_disconnect_leaves_nothing() {
    let daemon = TestDaemon::start().await;
    let body = Archive::new()
        .file("one", &noise(300_000))
        .file("two", &noise(300_000))
        .gz();
    let addr = daemon.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/runs/dc/bundle HTTP/1.1\r\nHost: {addr}\r\nX-Session-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    let mut seen = Vec::new();
    support::wait_for(
        "a staging dir to appear",
        || async {
            let names = work_root_names(&daemon);
            (
                names.iter().any(|n| n.starts_with(".sandboxd-staging-")),
                names,
            )
        },
        &mut seen,
    )
    .await;
    drop(stream);
    support::wait_for(
        "the staging dir to go away",
        || async {
            let names = work_root_names(&daemon);
            (names.is_empty(), names)
        },
        &mut seen,
    )
    .await;
    assert!(!daemon.state_dir().join("bundles/dc.json").exists());
    let (status, answer) = put_bundle(&daemon, "dc", body, "").await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the run takes a new upload: {answer}"
    );
}

/// A second upload is 409 unless ?replace=true; a replace swaps the whole
/// tree; once the run has started, uploads are 409 even with replace.
#[tokio::test]
async fn replace_only_before_the_run_starts() {
    let daemon = TestDaemon::start().await;
    let first = Archive::new().file("old.txt", b"old").tar();
    let second = Archive::new().file("new.txt", b"new").tar();
    let (status, _) = put_bundle(&daemon, "rp", first.clone(), "").await;
    assert_eq!(status, StatusCode::CREATED);
    let (status, body) = put_bundle(&daemon, "rp", second.clone(), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "bundle_exists");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("replace=true"));
    let dir = daemon.work_root().join("rp");
    assert!(
        dir.join("old.txt").exists(),
        "the refused upload changed nothing"
    );

    let (status, body) = put_bundle(&daemon, "rp", second.clone(), "?replace=true").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert!(!dir.join("old.txt").exists(), "replaced whole, not merged");
    assert_eq!(std::fs::read(dir.join("new.txt")).unwrap(), b"new");

    // A failed replace keeps the bundle in place.
    let (status, _) = put_bundle(&daemon, "rp", b"junk".to_vec(), "?replace=true").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert_eq!(std::fs::read(dir.join("new.txt")).unwrap(), b"new");

    let run = daemon
        .exec(json!({"run_id": "rp", "command": "cat new.txt"}))
        .await;
    assert_eq!(run["stdout"], "new");
    for query in ["", "?replace=true"] {
        let (status, body) = put_bundle(&daemon, "rp", first.clone(), query).await;
        assert_eq!(status, StatusCode::CONFLICT, "{query}: {body}");
        assert_eq!(body["error"]["code"], "run_started");
    }
    daemon
        .exec(json!({"run_id": "norun", "command": "true"}))
        .await;
    let (status, body) = put_bundle(&daemon, "norun", first.clone(), "").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "run_started");

    let (status, body) = put_bundle(&daemon, "..", first.clone(), "").await;
    assert!(status.is_client_error(), "{body}");
    let (status, body) = put_bundle(&daemon, ".hidden", first, "").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert_nothing_escaped(&daemon, &["norun", "rp"]);
}

/// The URL form against a local origin: 200 extracts; 404 and 403 are
/// 424 permanent; 500, 429, a dead port and a download slower than
/// timeout_s are 502 not permanent; an archive over the limit is 413
/// whether it declares its length or not. Query strings never show.
#[tokio::test]
async fn bundles_from_urls() {
    use axum::body::Body;
    use axum::http::{HeaderMap, StatusCode as S};
    use axum::routing::get;
    use futures::StreamExt;

    let good = Arc::new(Archive::new().file("fetched.txt", b"from the origin").gz());
    let big = Arc::new(Archive::new().file("big", &noise(200_000)).gz());
    let app = axum::Router::new()
        .route(
            "/ok.tar.gz",
            get({
                let good = good.clone();
                move |headers: HeaderMap| async move {
                    if headers.get("authorization").and_then(|v| v.to_str().ok())
                        != Some("Bearer t0k")
                    {
                        return (S::UNAUTHORIZED, Vec::new());
                    }
                    (S::OK, good.to_vec())
                }
            }),
        )
        .route("/missing", get(|| async { S::NOT_FOUND }))
        .route("/forbidden", get(|| async { S::FORBIDDEN }))
        .route("/broken", get(|| async { S::INTERNAL_SERVER_ERROR }))
        .route("/busy", get(|| async { S::TOO_MANY_REQUESTS }))
        .route(
            "/slow",
            get({
                let good = good.clone();
                move || async move {
                    let first = good[..10].to_vec();
                    let stream = futures::stream::once(
                        async move { Ok::<_, std::io::Error>(first) },
                    )
                    .chain(futures::stream::once(async {
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        Ok(Vec::new())
                    }));
                    Body::from_stream(stream)
                }
            }),
        )
        .route(
            "/big-declared",
            get({
                let big = big.clone();
                move || async move { big.to_vec() }
            }),
        )
        .route(
            "/big-streamed",
            get({
                let big = big.clone();
                move || async move {
                    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
                        big.chunks(4096).map(|c| Ok(c.to_vec())).collect();
                    Body::from_stream(futures::stream::iter(chunks))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let origin = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };

    let daemon = TestDaemon::start_with(Options {
        args: vec!["--max-bundle-bytes=100000".to_owned()],
        ..Options::default()
    })
    .await;
    let (status, body) = post_bundle(
        &daemon,
        "u1",
        json!({"url": format!("{origin}/ok.tar.gz?sig=SECRETSIG"), "headers": {"Authorization": "Bearer t0k"}}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["entries"], 1);
    assert_eq!(
        std::fs::read(daemon.work_root().join("u1/fetched.txt")).unwrap(),
        b"from the origin"
    );

    let cases = [
        (
            "/ok.tar.gz?sig=SECRETSIG",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/missing",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/forbidden",
            StatusCode::FAILED_DEPENDENCY,
            "bundle_unavailable",
            Some(true),
        ),
        (
            "/broken",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/busy",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/slow",
            StatusCode::BAD_GATEWAY,
            "bundle_fetch_failed",
            Some(false),
        ),
        (
            "/big-declared",
            StatusCode::PAYLOAD_TOO_LARGE,
            "bundle_too_large",
            None,
        ),
        (
            "/big-streamed",
            StatusCode::PAYLOAD_TOO_LARGE,
            "bundle_too_large",
            None,
        ),
    ];
    for (i, (path, want, code, permanent)) in cases.into_iter().enumerate() {
        let started = Instant::now();
        let (status, body) = post_bundle(
            &daemon,
            &format!("f{i}"),
            json!({"url": format!("{origin}{path}"), "timeout_s": 1}),
        )
        .await;
        assert_eq!(status, want, "{path}: {body}");
        assert_eq!(body["error"]["code"], code, "{path}: {body}");
        assert_eq!(
            body["error"]["permanent"].as_bool(),
            permanent,
            "{path}: {body}"
        );
        let message = body["error"]["message"].as_str().unwrap();
        assert!(!message.contains("SECRETSIG"), "{path}: {message}");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "{path} took {:?}",
            started.elapsed()
        );
    }
    let (status, body) =
        post_bundle(&daemon, "dead", json!({"url": format!("{dead}/x.tgz")})).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["error"]["permanent"], false);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("connect"),
        "{body}"
    );

    for bad in [
        json!({"url": "file:///etc/passwd"}),
        json!({"url": "ftp://example.com/x"}),
        json!({"url": format!("{origin}/ok.tar.gz"), "timeout_s": 0}),
        json!({"url": format!("{origin}/ok.tar.gz"), "headers": {"bad name": "x"}}),
        json!({"url": format!("{origin}/ok.tar.gz"), "extra": 1}),
    ] {
        let (status, body) = post_bundle(&daemon, "bad", bad.clone()).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{bad}: {body}");
    }
    assert_nothing_escaped(&daemon, &["u1"]);
}

/// Files: written under the roots (missing dirs created) with their mode,
/// replacing the old content whole; outside the roots, also through a
/// symlinked parent, 403 and nothing created; a symlink at the target is
/// replaced, not followed.
#[tokio::test]
async fn files_under_upload_roots() {
    // The test's temp dir is under /tmp, a default root: name the roots.
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let in_tmp = tempfile::Builder::new()
        .prefix("sandboxd-it-")
        .tempdir_in("/tmp")
        .unwrap();
    let roots = format!(
        "--upload-root={},{}",
        dir.path().join("work").display(),
        in_tmp.path().display()
    );
    let daemon = TestDaemon::start_with(Options {
        args: vec![roots],
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let root = daemon.work_root();
    let target = root.join("cfg/nested/settings.json");
    let (status, body) = put_file(&daemon, &target, Some("0600"), b"{\"a\":1}").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(
        body,
        json!({"path": target.display().to_string(), "bytes": 7})
    );
    assert_eq!(std::fs::read(&target).unwrap(), b"{\"a\":1}");
    let mode = std::fs::metadata(&target).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let (status, _) = put_file(&daemon, &target, Some("755"), b"2").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(std::fs::read(&target).unwrap(), b"2");
    assert_eq!(
        std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
        0o755
    );
    let default_mode = root.join("plain.txt");
    put_file(&daemon, &default_mode, None, b"x").await;
    assert_eq!(
        std::fs::metadata(&default_mode)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o644
    );

    let (status, body) = put_file(&daemon, &in_tmp.path().join("a/b.txt"), None, b"tmp").await;
    assert_eq!(status, StatusCode::CREATED, "a second root: {body}");

    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    for path in [
        outside.join("x.txt"),
        outside.join("new/dir/x.txt"),
        daemon.state_dir().join("runs/x.json"),
    ] {
        let (status, body) = put_file(&daemon, &path, None, b"no").await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{}: {body}", path.display());
        assert_eq!(body["error"]["code"], "path_not_allowed");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--upload-root"));
    }
    std::os::unix::fs::symlink(&outside, root.join("escape")).unwrap();
    let (status, body) = put_file(&daemon, &root.join("escape/x.txt"), None, b"no").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "a symlinked parent: {body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains(&outside.display().to_string()));
    let (status, _) = put_file(&daemon, &root.join("escape/sub/x.txt"), None, b"no").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(
        tree(&outside).is_empty(),
        "nothing created outside: {:?}",
        tree(&outside)
    );

    let victim = outside.join("victim.txt");
    std::fs::write(&victim, b"untouched").unwrap();
    std::os::unix::fs::symlink(&victim, root.join("link.txt")).unwrap();
    let (status, _) = put_file(&daemon, &root.join("link.txt"), None, b"replaced").await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(std::fs::read(&victim).unwrap(), b"untouched");
    assert!(std::fs::symlink_metadata(root.join("link.txt"))
        .unwrap()
        .is_file());

    for (path, mode) in [
        ("relative/x", None),
        ("/tmp/../etc/x", None),
        ("/tmp/", None),
        ("/tmp/x", Some("4755")),
        ("/tmp/x", Some("rwx")),
    ] {
        let (status, body) = put_file(&daemon, Path::new(path), mode, b"x").await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path} {mode:?}: {body}");
        assert_eq!(body["error"]["code"], "invalid_upload");
    }
    let (status, body) = put_file(&daemon, &root.join("cfg"), None, b"x").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "a directory: {body}");
    let leftovers: Vec<PathBuf> = tree(&root)
        .into_iter()
        .filter(|p| p.to_string_lossy().contains(".sandboxd-upload-"))
        .collect();
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
}

/// By default the roots are the work root and /tmp.
#[tokio::test]
async fn default_upload_roots() {
    let daemon = TestDaemon::start().await;
    let in_tmp = tempfile::Builder::new()
        .prefix("sandboxd-it-")
        .tempdir_in("/tmp")
        .unwrap();
    for path in [
        in_tmp.path().join("x.txt"),
        daemon.work_root().join("y.txt"),
    ] {
        let (status, body) = put_file(&daemon, &path, None, b"ok").await;
        assert_eq!(status, StatusCode::CREATED, "{}: {body}", path.display());
    }
    let outside = PathBuf::from(format!("/var/tmp/sandboxd-it-{}/x", std::process::id()));
    let (status, _) = put_file(&daemon, &outside, None, b"no").await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(!outside.parent().unwrap().exists());
}

/// A file upload cut off mid-body leaves the old file whole and no temp
/// file, and the dirs it created are removed again.
#[tokio::test]
async fn file_upload_is_atomic() {
    let daemon = TestDaemon::start().await;
    let root = daemon.work_root();
    let target = root.join("data.bin");
    std::fs::write(&target, b"old content").unwrap();
    for path in [target.clone(), root.join("fresh/dir/data.bin")] {
        let addr = daemon.url.trim_start_matches("http://").to_owned();
        let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head = format!(
            "PUT /v1/files?path={} HTTP/1.1\r\nHost: {addr}\r\nX-Session-API-Key: {KEY}\r\nContent-Length: 1000000\r\n\r\n",
            path.display()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&[b'n'; 500_000]).await.unwrap();
        let mut seen = Vec::new();
        let dir = path.parent().unwrap().to_owned();
        support::wait_for(
            "a temp file to appear",
            || async {
                let temps: Vec<PathBuf> = tree(&root)
                    .into_iter()
                    .filter(|p| p.to_string_lossy().contains(".sandboxd-upload-"))
                    .collect();
                (!temps.is_empty(), temps)
            },
            &mut seen,
        )
        .await;
        drop(stream);
        support::wait_for(
            "the temp file to go away",
            || async {
                let temps: Vec<PathBuf> = tree(&root)
                    .into_iter()
                    .filter(|p| p.to_string_lossy().contains(".sandboxd-upload-"))
                    .collect();
                (temps.is_empty(), temps)
            },
            &mut seen,
        )
        .await;
        if path == target {
            assert_eq!(std::fs::read(&target).unwrap(), b"old content");
        } else {
            let mut left = Vec::new();
            support::wait_for(
                "the created dirs to go away",
                || async { (!dir.exists() && !root.join("fresh").exists(), tree(&root)) },
                &mut left,
            )
            .await;
        }
    }
}

/// The real-world corpus: each archive is extracted inside its run dir or
/// refused with a JSON error naming why; nothing lands outside.
#[tokio::test]
async fn corpus_archives_are_extracted_or_refused() {
    let daemon = TestDaemon::start().await;
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/corpus");
    let expected: &[(&str, Result<&[&str], &str>)] = &[
        ("snyk-zip-slip.tar", Err("unsafe_archive")),
        ("snyk-zip-slip-win.tar", Err("unsafe_archive")),
        ("tar-rs-sparse-large.tar", Err("extracted_too_large")),
        // Has its end-of-archive blocks, only not the whole last record.
        ("tar-rs-simple_missing_last_header.tar", Ok(&["a", "b", "c"])),
        ("tar-rs-link.tar", Ok(&["file", "lnk"])),
        ("tar-rs-sparse.tar", Ok(&["sparse.txt", "sparse_begin.txt", "sparse_end.txt", "sparse_ext.txt"])),
        ("tar-rs-pax_size.tar", Ok(&["test"])),
        ("tar-rs-7z_long_path.tar", Ok(&[
            "this_is_a_folder_with_a_name_that_just_keeps_going_on_and_on_and_on_it_is_a_very_very_long_folder_name",
        ])),
        ("tar-rs-duplicate_dirs.tar", Ok(&["some_dir"])),
        // One header and no end-of-archive blocks: cut short.
        ("tar-rs-empty_filename.tar", Err("bad_archive")),
        ("tar-rs-biguid_pax.tar", Ok(&["test.txt"])),
        ("tar-rs-xattrs.tar", Ok(&["a"])),
        ("tar-rs-spaces.tar", Ok(&["a"])),
    ];
    let mut extracted = Vec::new();
    for (i, (name, want)) in expected.iter().enumerate() {
        let body = std::fs::read(corpus.join(name)).unwrap();
        let run_id = format!("c{i}");
        let (status, answer) = put_bundle(&daemon, &run_id, body, "").await;
        match want {
            Ok(names) => {
                assert_eq!(status, StatusCode::CREATED, "{name}: {answer}");
                let mut got: Vec<String> = std::fs::read_dir(daemon.work_root().join(&run_id))
                    .unwrap()
                    .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                    .collect();
                got.sort();
                assert_eq!(&got, names, "{name}");
                extracted.push(run_id);
            }
            Err(code) => {
                assert!(status.is_client_error(), "{name}: {status} {answer}");
                assert_eq!(answer["error"]["code"], *code, "{name}: {answer}");
            }
        }
    }
    let sparse = daemon.work_root().join("c5");
    assert_eq!(
        std::fs::metadata(sparse.join("sparse.txt")).unwrap().len(),
        16384
    );
    let text = std::fs::read(sparse.join("sparse_ext.txt")).unwrap();
    assert_eq!(text.len(), 45061);
    let link = daemon.work_root().join("c4");
    assert_eq!(
        std::fs::read_link(link.join("lnk")).unwrap(),
        PathBuf::from("file")
    );
    let names: Vec<&str> = extracted.iter().map(String::as_str).collect();
    let mut names = names;
    names.sort();
    assert_nothing_escaped(&daemon, &names);
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

//! Bundles: encodings, the run that uses one, limits, disconnects, replace.

use super::*;

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

/// Sends a bundle upload's head and the first half of `body` over a raw
/// connection (`Connection: close`), and waits until the upload is under
/// way (its staging dir exists). The rest is the caller's to send, or not.
async fn start_half_upload(
    daemon: &TestDaemon,
    run_id: &str,
    body: &[u8],
) -> tokio::net::TcpStream {
    let addr = daemon.url.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/runs/{run_id}/bundle HTTP/1.1\r\nHost: {addr}\r\nX-Session-API-Key: {KEY}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..body.len() / 2]).await.unwrap();
    stream.flush().await.unwrap();
    let mut seen = Vec::new();
    support::wait_for(
        "the upload's staging dir to appear",
        || async {
            let names = work_root_names(daemon);
            (
                names.iter().any(|n| n.starts_with(".sandboxd-staging-")),
                names,
            )
        },
        &mut seen,
    )
    .await;
    stream
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
    let stream = start_half_upload(&daemon, "dc", &body).await;
    drop(stream);
    let mut seen = Vec::new();
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
    // The upload's mark is cleared just after its staging dir is removed:
    // a retry may meet 409 upload_in_progress for that instant.
    let mut last = (StatusCode::OK, Value::Null);
    support::wait_for(
        "the run to take a new upload",
        || async {
            let answer = put_bundle(&daemon, "dc", body.clone(), "").await;
            (answer.0 != StatusCode::CONFLICT, answer)
        },
        &mut last,
    )
    .await;
    assert_eq!(
        last.0,
        StatusCode::CREATED,
        "the run takes a new upload: {}",
        last.1
    );
}

/// A run is not started while its bundle is being uploaded: the start is
/// `409 upload_in_progress` and starts nothing; once the upload has
/// answered, the same start runs in the extracted tree.
#[tokio::test]
async fn a_run_waits_for_its_bundle_upload() {
    let daemon = TestDaemon::start().await;
    let body = Archive::new()
        .file("main.sh", b"cat data.txt")
        .file("data.txt", b"from the bundle")
        .file("pad", &noise(300_000))
        .gz();
    let mut upload = start_half_upload(&daemon, "ub", &body).await;
    let start = json!({"run_id": "ub", "command": ["bash", "main.sh"], "wait": true});
    let (status, refused) = daemon.post("/v1/runs", start.clone()).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert_eq!(refused["error"]["code"], "upload_in_progress");
    let (status, _) = daemon.get("/v1/runs/ub").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the refused start left no run"
    );

    upload.write_all(&body[body.len() / 2..]).await.unwrap();
    let mut answer = Vec::new();
    tokio::io::AsyncReadExt::read_to_end(&mut upload, &mut answer)
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 201"), "{answer}");
    let (status, run) = daemon.post("/v1/runs", start).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "from the bundle", "{run}");
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
    // `norun` left its work dir empty: it went with the run's end.
    assert_nothing_escaped(&daemon, &["rp"]);
}

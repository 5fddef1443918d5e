//! `PUT /v1/files`: roots, modes, symlinks, atomicity.

use super::*;

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

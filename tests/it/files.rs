//! Reading files: `GET /v1/files` (ranges, ETag), stat, listing pages,
//! symlink and root refusals, a run's own files, and a large download in
//! flat memory.

use std::path::Path;
use std::sync::Arc;

use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};

/// A daemon whose only upload root is `<dir>/files` (created), and
/// `extra` readable roots.
async fn daemon_with_root(extra: &[&str]) -> (TestDaemon, std::path::PathBuf) {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    std::fs::create_dir(&root).unwrap();
    let mut args = vec![format!("--upload-root={}", root.display())];
    args.extend(extra.iter().map(|r| format!("--read-root={r}")));
    let daemon = TestDaemon::start_with(Options {
        args,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    (daemon, root)
}

async fn download(daemon: &TestDaemon, path: &Path, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = daemon
        .request(Method::GET, "/v1/files")
        .query(&[("path", path.display().to_string())]);
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap()
}

async fn get_json(
    daemon: &TestDaemon,
    route: &str,
    query: &[(&str, String)],
) -> (StatusCode, Value) {
    support::send(daemon.request(Method::GET, route).query(query)).await
}

/// A file downloads whole (200) or by one range: first, middle, suffix
/// and open-ended (206 with Content-Range); a range past the end is 416;
/// the ETag revalidates (304) until the file changes.
#[tokio::test]
async fn downloads_with_ranges_and_etags() {
    let (daemon, root) = daemon_with_root(&[]).await;
    let data: Vec<u8> = (0..10_000u32).map(|i| (i % 251) as u8).collect();
    let file = root.join("data.bin");
    std::fs::write(&file, &data).unwrap();
    let res = download(&daemon, &file, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let etag = res.headers()["etag"].to_str().unwrap().to_owned();
    assert!(res.headers().contains_key("last-modified"));
    assert_eq!(res.headers()["accept-ranges"], "bytes");
    assert_eq!(res.bytes().await.unwrap(), data);
    for (range, start, end) in [
        ("bytes=0-99", 0, 99),
        ("bytes=5000-5099", 5000, 5099),
        ("bytes=-100", 9900, 9999),
        ("bytes=9990-", 9990, 9999),
        ("bytes=9990-20000", 9990, 9999),
    ] {
        let res = download(&daemon, &file, &[("range", range)]).await;
        assert_eq!(res.status(), StatusCode::PARTIAL_CONTENT, "{range}");
        assert_eq!(
            res.headers()["content-range"],
            format!("bytes {start}-{end}/10000").as_str(),
            "{range}"
        );
        assert_eq!(res.bytes().await.unwrap(), &data[start..=end], "{range}");
    }
    let res = download(&daemon, &file, &[("range", "bytes=10000-")]).await;
    assert_eq!(res.status(), StatusCode::RANGE_NOT_SATISFIABLE);
    assert_eq!(res.headers()["content-range"], "bytes */10000");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "range_not_satisfiable");

    let res = download(&daemon, &file, &[("if-none-match", &etag)]).await;
    assert_eq!(res.status(), StatusCode::NOT_MODIFIED);
    assert!(res.bytes().await.unwrap().is_empty());
    std::fs::write(&file, b"changed").unwrap();
    let res = download(&daemon, &file, &[("if-none-match", &etag)]).await;
    assert_eq!(res.status(), StatusCode::OK, "a changed file is sent again");
    assert_ne!(res.headers()["etag"].to_str().unwrap(), etag);
    assert_eq!(res.bytes().await.unwrap(), &b"changed"[..]);
}

/// Errors name what was wrong: outside the roots and under /proc 403,
/// missing 404, relative or `..` 400, a directory 400; a symlink at any
/// level below a root is refused (403), even one pointing inside.
#[tokio::test]
async fn refusals_and_symlinks_at_every_level() {
    let (daemon, root) = daemon_with_root(&["/"]).await;
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir_all(outside.join("deep")).unwrap();
    std::fs::write(outside.join("secret.txt"), b"secret").unwrap();
    std::fs::write(outside.join("deep/secret.txt"), b"secret").unwrap();
    std::fs::create_dir_all(root.join("a/b")).unwrap();
    std::fs::write(root.join("a/b/ok.txt"), b"ok").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("top-link")).unwrap();
    std::os::unix::fs::symlink(&outside, root.join("a/mid-link")).unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), root.join("a/b/file-link")).unwrap();
    std::os::unix::fs::symlink("b", root.join("a/inside-link")).unwrap();
    // `/` is a read root here, so the symlinked paths are "inside" by
    // name: only the refusal to follow symlinks keeps them out.
    let r = root.display();
    let cases = [
        (format!("{r}/top-link/secret.txt"), StatusCode::FORBIDDEN),
        (
            format!("{r}/a/mid-link/deep/secret.txt"),
            StatusCode::FORBIDDEN,
        ),
        (format!("{r}/a/b/file-link"), StatusCode::FORBIDDEN),
        (format!("{r}/a/inside-link/ok.txt"), StatusCode::FORBIDDEN),
        ("/proc/self/environ".to_owned(), StatusCode::FORBIDDEN),
        ("/sys/kernel/hostname".to_owned(), StatusCode::FORBIDDEN),
        ("/dev/zero".to_owned(), StatusCode::FORBIDDEN),
        (format!("{r}/missing.txt"), StatusCode::NOT_FOUND),
        ("relative.txt".to_owned(), StatusCode::BAD_REQUEST),
        (format!("{r}/a/../a/b/ok.txt"), StatusCode::BAD_REQUEST),
    ];
    for (path, want) in cases {
        let res = download(&daemon, Path::new(&path), &[]).await;
        let status = res.status();
        let body: Value = res.json().await.unwrap();
        assert_eq!(status, want, "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().len() > 10,
            "{body}"
        );
    }
    let res = download(&daemon, &root.join("a/b/ok.txt"), &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    // Without `/` as a read root, a path outside is 403 naming the roots.
    let (daemon, _root) = daemon_with_root(&[]).await;
    let res = download(&daemon, Path::new("/etc/hostname"), &[]).await;
    assert_eq!(res.status(), StatusCode::FORBIDDEN);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], "path_not_allowed");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--read-root"));
}

/// Stat describes a file, a dir and a symlink (not followed); a listing
/// pages through a big directory in name order without loss or repeat.
#[tokio::test]
async fn stat_and_paged_listing() {
    let (daemon, root) = daemon_with_root(&[]).await;
    let dir = root.join("many");
    std::fs::create_dir(&dir).unwrap();
    for i in 0..250 {
        std::fs::write(dir.join(format!("f{i:04}.txt")), format!("{i}")).unwrap();
    }
    std::fs::create_dir(dir.join("sub")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", dir.join("zlink")).unwrap();
    let stat = |path: std::path::PathBuf| {
        let daemon = &daemon;
        async move {
            get_json(
                daemon,
                "/v1/files/stat",
                &[("path", path.display().to_string())],
            )
            .await
        }
    };
    let (status, file) = stat(dir.join("f0007.txt")).await;
    assert_eq!(status, StatusCode::OK, "{file}");
    assert_eq!(file["type"], "file");
    assert_eq!(file["size"], 1);
    assert_eq!(file["mode"], "0644");
    assert!(file["mtime"].as_str().unwrap().contains('T'));
    let (_, sub) = stat(dir.join("sub")).await;
    assert_eq!(sub["type"], "dir");
    let (_, link) = stat(dir.join("zlink")).await;
    assert_eq!(link["type"], "symlink");
    assert_eq!(link["target"], "/etc/passwd");
    let (status, _) = stat(dir.join("nope")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut query = vec![
            ("path", dir.display().to_string()),
            ("limit", "100".to_owned()),
        ];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let (status, page) = get_json(&daemon, "/v1/files/list", &query).await;
        assert_eq!(status, StatusCode::OK, "{page}");
        let entries = page["entries"].as_array().unwrap();
        assert!(entries.len() <= 100);
        seen.extend(
            entries
                .iter()
                .map(|e| e["name"].as_str().unwrap().to_owned()),
        );
        match page["next"].as_str() {
            Some(next) => after = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 252);
    let mut sorted = seen.clone();
    sorted.sort();
    assert_eq!(seen, sorted);
    assert_eq!(seen.last().unwrap(), "zlink");
    for (query, want) in [
        (
            vec![("path", dir.join("f0001.txt").display().to_string())],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![("path", dir.display().to_string()), ("limit", "0".into())],
            StatusCode::BAD_REQUEST,
        ),
        (
            vec![
                ("path", dir.display().to_string()),
                ("limit", "5000".into()),
            ],
            StatusCode::BAD_REQUEST,
        ),
        (vec![("path", "/etc".into())], StatusCode::FORBIDDEN),
    ] {
        let (status, body) = get_json(&daemon, "/v1/files/list", &query).await;
        assert_eq!(status, want, "{query:?}: {body}");
    }
}

/// A run reads its own files with its own token; another run's files are
/// 403; `..` and absolute paths are 400; the operator reads any run's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_reads_its_own_files_only() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "other", "command": "echo theirs > report.txt; sleep 30"}))
        .await;
    let script = r#"
echo mine > report.txt
get() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" "$SANDBOXD_URL$1"; }
echo "own=$(get "/v1/runs/$SANDBOXD_RUN_ID/files?path=report.txt")"
echo "body=$(curl -s -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" "$SANDBOXD_URL/v1/runs/$SANDBOXD_RUN_ID/files?path=report.txt")"
echo "other=$(get "/v1/runs/other/files?path=report.txt")"
echo "up=$(get "/v1/runs/$SANDBOXD_RUN_ID/files?path=../other/report.txt")"
echo "abs=$(get "/v1/runs/$SANDBOXD_RUN_ID/files?path=/etc/passwd")"
echo "global=$(get "/v1/files?path=/etc/passwd")"
"#;
    let run = daemon
        .exec(json!({"run_id": "reader", "command": script}))
        .await;
    let stdout = run["stdout"].as_str().unwrap();
    for line in [
        "own=200",
        "body=mine",
        "other=403",
        "up=400",
        "abs=400",
        "global=403",
    ] {
        assert!(stdout.lines().any(|l| l == line), "{line} in {stdout}");
    }
    let res = daemon
        .request(Method::GET, "/v1/runs/other/files")
        .query(&[("path", "report.txt")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.text().await.unwrap(), "theirs\n");
    daemon.post("/v1/runs/other/cancel", json!({})).await;
}

/// A 2 GiB (sparse) file streams whole while the daemon's resident set
/// stays flat: the file is never buffered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_file_downloads_in_flat_memory() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    std::fs::create_dir(&root).unwrap();
    let daemon = TestDaemon::start_with(Options {
        args: vec![format!("--upload-root={}", root.display())],
        dir: Some(dir),
        binary: true,
        ..Options::default()
    })
    .await;
    let size: u64 = 2 << 30;
    let file = root.join("big.bin");
    let handle = std::fs::File::create(&file).unwrap();
    handle.set_len(size).unwrap();
    let rss = |pid: i32| -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .unwrap()
            .to_owned();
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let before = rss(daemon.pid());
    let mut res = download(&daemon, &file, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    let mut total = 0u64;
    let mut peak = before;
    while let Some(chunk) = res.chunk().await.unwrap() {
        total += chunk.len() as u64;
        if total % (64 << 20) < chunk.len() as u64 {
            peak = peak.max(rss(daemon.pid()));
        }
    }
    assert_eq!(total, size);
    assert!(
        peak < before + 64 * 1024,
        "RSS grew from {before} KiB to {peak} KiB while sending {size} bytes"
    );
}

/// Delete, mkdir and move act inside the upload roots only: a file, an
/// empty dir, a non-empty dir only with recursive=true (409 without), a
/// symlink itself (never its target); mkdir makes parents and says
/// whether it made the dir; move never replaces; outside the roots and
/// through symlinks 403, the root itself 400.
#[tokio::test]
async fn delete_mkdir_and_move_inside_roots_only() {
    let (daemon, root) = daemon_with_root(&["/"]).await;
    let outside = daemon.dir.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("keep.txt"), b"keep").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
    let path = |p: &str| root.join(p).display().to_string();
    let delete = |p: String, recursive: bool| {
        let req = daemon
            .request(Method::DELETE, "/v1/files")
            .query(&[("path", p), ("recursive", recursive.to_string())]);
        support::send(req)
    };

    let (status, body) = daemon
        .post("/v1/files/mkdir", json!({"path": path("a/b/c")}))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["created"], true);
    assert!(root.join("a/b/c").is_dir());
    let (status, body) = daemon
        .post("/v1/files/mkdir", json!({"path": path("a/b/c")}))
        .await;
    assert_eq!(
        (status, body["created"].clone()),
        (StatusCode::OK, json!(false))
    );
    std::fs::write(root.join("a/b/c/f.txt"), b"x").unwrap();
    let (status, _) = daemon
        .post("/v1/files/mkdir", json!({"path": path("a/b/c/f.txt")}))
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    let (status, body) = daemon
        .post(
            "/v1/files/move",
            json!({"from": path("a/b/c/f.txt"), "to": path("a/g.txt")}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(std::fs::read(root.join("a/g.txt")).unwrap(), b"x");
    std::fs::write(root.join("a/h.txt"), b"h").unwrap();
    let (status, body) = daemon
        .post(
            "/v1/files/move",
            json!({"from": path("a/g.txt"), "to": path("a/h.txt")}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "never replaces: {body}");
    assert_eq!(body["error"]["code"], "file_exists");
    for (from, to) in [
        (path("a/h.txt"), outside.join("h.txt").display().to_string()),
        (path("a/h.txt"), path("link/h.txt")),
        (path("link/keep.txt"), path("stolen.txt")),
    ] {
        let (status, body) = daemon
            .post("/v1/files/move", json!({"from": from, "to": to}))
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{from} -> {to}: {body}");
    }

    let (status, body) = delete(path("a"), false).await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "dir_not_empty");
    let (status, _) = delete(path("a/h.txt"), false).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!root.join("a/h.txt").exists());
    let (status, _) = delete(path("a/b/c"), false).await;
    assert_eq!(status, StatusCode::OK, "an empty dir");
    let (status, _) = delete(path("a"), true).await;
    assert_eq!(status, StatusCode::OK);
    assert!(!root.join("a").exists());
    let (status, _) = delete(path("link"), true).await;
    assert_eq!(status, StatusCode::OK, "the symlink itself");
    assert!(std::fs::symlink_metadata(root.join("link")).is_err());
    assert_eq!(std::fs::read(outside.join("keep.txt")).unwrap(), b"keep");
    for (target, want) in [
        (
            outside.join("keep.txt").display().to_string(),
            StatusCode::FORBIDDEN,
        ),
        (root.display().to_string(), StatusCode::BAD_REQUEST),
        (path("missing"), StatusCode::NOT_FOUND),
    ] {
        let (status, body) = delete(target.clone(), true).await;
        assert_eq!(status, want, "{target}: {body}");
    }
    assert_eq!(std::fs::read(outside.join("keep.txt")).unwrap(), b"keep");
}

/// A directory downloads as a tar.gz built on the fly, equal to its
/// source: files with their bytes and modes, dirs, symlinks as symlinks
/// (never followed).
#[tokio::test]
async fn a_directory_downloads_as_tar_gz_equal_to_its_source() {
    let (daemon, root) = daemon_with_root(&[]).await;
    let src = root.join("proj");
    std::fs::create_dir_all(src.join("src/deep")).unwrap();
    std::fs::write(src.join("README"), b"hello").unwrap();
    std::fs::write(src.join("src/deep/big.bin"), vec![7u8; 3_000_000]).unwrap();
    std::fs::create_dir(src.join("empty")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
    let res = download(&daemon, &src, &[]).await;
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "application/gzip");
    let bytes = res.bytes().await.unwrap();
    let out = tempfile::tempdir().unwrap();
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(&bytes[..]));
    archive.unpack(out.path()).unwrap();
    assert_eq!(std::fs::read(out.path().join("README")).unwrap(), b"hello");
    assert_eq!(
        std::fs::read(out.path().join("src/deep/big.bin")).unwrap(),
        vec![7u8; 3_000_000]
    );
    assert!(out.path().join("empty").is_dir());
    assert_eq!(
        std::fs::read_link(out.path().join("link")).unwrap(),
        Path::new("/etc/passwd")
    );
    let mut names: Vec<String> = walkdir(out.path());
    names.sort();
    assert_eq!(
        names,
        [
            "README",
            "empty",
            "link",
            "src",
            "src/deep",
            "src/deep/big.bin"
        ]
    );
}

/// A directory as tar.zst: asked by `format=tar.zst` or by
/// `Accept-Encoding: zstd`; the archive unpacks to its source. An unknown
/// format is a 400 naming the parameter.
#[tokio::test]
async fn a_directory_downloads_as_tar_zst_when_asked() {
    let (daemon, root) = daemon_with_root(&[]).await;
    let src = root.join("proj");
    std::fs::create_dir_all(src.join("sub")).unwrap();
    std::fs::write(src.join("sub/data.txt"), b"zstd please").unwrap();
    let by_param = daemon
        .request(Method::GET, "/v1/files")
        .query(&[
            ("path", src.display().to_string()),
            ("format", "tar.zst".into()),
        ])
        .send()
        .await
        .unwrap();
    let by_header = download(&daemon, &src, &[("accept-encoding", "zstd")]).await;
    for res in [by_param, by_header] {
        assert_eq!(res.status(), StatusCode::OK);
        assert_eq!(res.headers()["content-type"], "application/zstd");
        let bytes = res.bytes().await.unwrap();
        let out = tempfile::tempdir().unwrap();
        let decoder = zstd::stream::read::Decoder::new(&bytes[..]).unwrap();
        tar::Archive::new(decoder).unpack(out.path()).unwrap();
        assert_eq!(
            std::fs::read(out.path().join("sub/data.txt")).unwrap(),
            b"zstd please"
        );
    }
    let both = download(&daemon, &src, &[("accept-encoding", "gzip, zstd")]).await;
    assert_eq!(both.headers()["content-type"], "application/gzip");
    let (status, body) = get_json(
        &daemon,
        "/v1/files",
        &[
            ("path", src.display().to_string()),
            ("format", "rar".into()),
        ],
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(body.to_string().contains("format"), "{body}");
}

fn walkdir(base: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![base.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            found.push(path.strip_prefix(base).unwrap().display().to_string());
            if path.is_dir() && !path.is_symlink() {
                stack.push(path);
            }
        }
    }
    found
}

/// A NUL byte in a path is a 400 naming it, for a run's files as for any
/// other path (found by API fuzzing: it was a 500).
#[tokio::test]
async fn a_nul_byte_in_a_path_is_a_clear_400() {
    let daemon = TestDaemon::start().await;
    daemon
        .exec(json!({"run_id": "nul", "command": ["true"]}))
        .await;
    for path in ["/v1/runs/nul/files?path=a%00b", "/v1/files?path=/tmp/a%00b"] {
        let (status, body) = daemon.get(path).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{path}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains("NUL"),
            "{path}: {body}"
        );
    }
}

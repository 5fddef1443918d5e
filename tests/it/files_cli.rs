//! `sandboxd download`, `ls` and `rm`, run as the real binary against a
//! real daemon; and a run racing symlink swaps against the reading routes.

use std::sync::Arc;

use tokio::process::Command;

use crate::support::{self, Options, TestDaemon, KEY};

fn cli(daemon: &TestDaemon) -> Command {
    let mut command = Command::new(support::bin());
    command
        .env("SANDBOXD_URL", &daemon.url)
        .env("SESSION_API_KEY", KEY)
        .kill_on_drop(true);
    command
}

/// `download` writes the file whole, and resumes from a `.part` left
/// behind (asking only for the rest); `ls` lists every page; `rm -r`
/// removes a tree; errors exit non-zero naming the daemon's code.
#[tokio::test]
async fn download_ls_and_rm() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    std::fs::create_dir_all(root.join("tree/sub")).unwrap();
    let daemon = TestDaemon::start_with(Options {
        args: vec![format!("--upload-root={}", root.display())],
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let data: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(root.join("tree/data.bin"), &data).unwrap();
    for i in 0..1500 {
        std::fs::write(root.join(format!("tree/sub/f{i:04}")), b"").unwrap();
    }
    let local = tempfile::tempdir().unwrap();
    let dest = local.path().join("copy.bin");
    let source = root.join("tree/data.bin").display().to_string();
    let out = cli(&daemon)
        .args(["download", &source])
        .arg(&dest)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(std::fs::read(&dest).unwrap(), data);

    // A part holding the first bytes is completed, not restarted: its
    // head is kept as it is even if it differs from the source.
    let resumed = local.path().join("resumed.bin");
    let head = vec![b'#'; 1000];
    std::fs::write(local.path().join("resumed.bin.part"), &head).unwrap();
    let out = cli(&daemon)
        .args(["download", &source])
        .arg(&resumed)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got = std::fs::read(&resumed).unwrap();
    assert_eq!(got.len(), data.len());
    assert_eq!(&got[..1000], &head[..]);
    assert_eq!(&got[1000..], &data[1000..]);
    assert!(!local.path().join("resumed.bin.part").exists());

    let sub = root.join("tree/sub").display().to_string();
    let out = cli(&daemon).args(["ls", &sub]).output().await.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listing = String::from_utf8(out.stdout).unwrap();
    assert_eq!(listing.lines().count(), 1500, "every page");
    assert!(
        listing.lines().next().unwrap().contains("file"),
        "{listing}"
    );

    let tree = root.join("tree").display().to_string();
    let out = cli(&daemon).args(["rm", &tree]).output().await.unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("dir_not_empty"));
    let out = cli(&daemon)
        .args(["rm", "-r", &tree])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!root.join("tree").exists());
    let out = cli(&daemon)
        .args(["download", "/etc/passwd"])
        .arg(local.path().join("x"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("path_not_allowed"));
}

/// A run swaps a directory for a symlink to a dir outside and back, as
/// fast as it can, while downloads, listings and tar downloads run: each
/// answer is the inside content or a refusal, never the outside's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_racing_symlink_swaps_never_gets_outside_content() {
    use reqwest::{Method, StatusCode};
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    let outside = dir.path().join("outside");
    std::fs::create_dir_all(root.join("tree/sub")).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(root.join("tree/sub/data.txt"), b"inside").unwrap();
    std::fs::write(outside.join("data.txt"), b"OUTSIDE").unwrap();
    std::fs::write(outside.join("outside-only.txt"), b"OUTSIDE").unwrap();
    let daemon = TestDaemon::start_with(Options {
        args: vec![format!("--upload-root={}", root.display())],
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let tree = root.join("tree");
    let script = format!(
        "cd {tree} && while :; do mv -T sub real && ln -sT {out} sub && rm sub && mv -T real sub; done",
        tree = tree.display(),
        out = outside.display()
    );
    daemon
        .start_run(serde_json::json!({"run_id": "swapper", "command": script}))
        .await;
    let file = tree.join("sub/data.txt").display().to_string();
    let sub = tree.join("sub").display().to_string();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..150 {
        let res = daemon
            .request(Method::GET, "/v1/files")
            .query(&[("path", &file)])
            .send()
            .await
            .unwrap();
        match res.status() {
            StatusCode::OK => {
                assert_eq!(res.bytes().await.unwrap(), &b"inside"[..]);
                served += 1;
            }
            StatusCode::FORBIDDEN | StatusCode::NOT_FOUND => refused += 1,
            other => panic!("download: {other}: {}", res.text().await.unwrap()),
        }
        let res = daemon
            .request(Method::GET, "/v1/files/list")
            .query(&[("path", &sub)])
            .send()
            .await
            .unwrap();
        let status = res.status();
        let text = res.text().await.unwrap();
        assert!(!text.contains("outside-only"), "listing: {text}");
        assert!(
            matches!(
                status,
                StatusCode::OK
                    | StatusCode::FORBIDDEN
                    | StatusCode::NOT_FOUND
                    | StatusCode::BAD_REQUEST
            ),
            "listing: {status} {text}"
        );
        // A walk that meets a swapped dir ends the stream early (the
        // connection is cut): a truncated archive, never a wrong one.
        let res = daemon
            .request(Method::GET, "/v1/files")
            .query(&[("path", &tree.display().to_string())])
            .send()
            .await;
        let bytes = match res {
            Ok(res) => res.bytes().await.unwrap_or_default(),
            Err(_) => Default::default(),
        };
        let mut tar = Vec::new();
        let _ = std::io::Read::read_to_end(&mut flate2::read::GzDecoder::new(&bytes[..]), &mut tar);
        assert!(
            !tar.windows(7).any(|w| w == b"OUTSIDE"),
            "a tar of the tree holds outside content"
        );
    }
    daemon
        .post("/v1/runs/swapper/cancel", serde_json::json!({}))
        .await;
    assert!(
        served + refused == 150,
        "{served} served, {refused} refused"
    );
}

/// A watch streams server-sent events for a create-modify-rename-delete
/// sequence in order; a path outside the roots is refused.
#[tokio::test]
async fn watch_streams_create_modify_move_delete() {
    use reqwest::{Method, StatusCode};
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let root = dir.path().join("files");
    std::fs::create_dir_all(root.join("w")).unwrap();
    let daemon = TestDaemon::start_with(Options {
        args: vec![format!("--upload-root={}", root.display())],
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let watched = root.join("w");
    let mut res = daemon
        .request(Method::GET, "/v1/files/watch")
        .query(&[("path", watched.display().to_string())])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    std::fs::write(watched.join("a.txt"), b"1").unwrap();
    std::fs::OpenOptions::new()
        .append(true)
        .open(watched.join("a.txt"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"2"))
        .unwrap();
    std::fs::rename(watched.join("a.txt"), watched.join("b.txt")).unwrap();
    std::fs::remove_file(watched.join("b.txt")).unwrap();
    let mut text = String::new();
    let deadline = std::time::Instant::now() + support::TIMEOUT;
    while !text.contains("event: delete") {
        assert!(
            std::time::Instant::now() < deadline,
            "events so far: {text}"
        );
        let chunk = tokio::time::timeout(support::TIMEOUT, res.chunk())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("the stream stays open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    let kinds: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    let first = |kind: &str| kinds.iter().position(|k| *k == kind).unwrap_or(usize::MAX);
    assert!(
        first("create") < first("modify")
            && first("modify") < first("move")
            && first("move") < first("delete"),
        "{text}"
    );
    assert!(
        text.contains(r#"{"name":"b.txt","from":"a.txt"}"#),
        "{text}"
    );
    let (status, _) = support::send(
        daemon
            .request(Method::GET, "/v1/files/watch")
            .query(&[("path", "/etc")]),
    )
    .await;
    assert_eq!(status, StatusCode::FORBIDDEN);
}

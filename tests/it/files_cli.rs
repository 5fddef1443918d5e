//! `sandboxd download`, `ls` and `rm`, run as the real binary against a
//! real daemon.

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

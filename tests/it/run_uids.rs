//! `--run-uid-range`: each run a uid (and gid) of its own, the way
//! systemd's `DynamicUser` does it. One run cannot read another's
//! environ or output pipes, ptrace it or signal it, nor reach the daemon;
//! whatever runs as a run's uid dies with the run; a uid is held until
//! its run is removed, across a restart too. Needs root.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{self, Options, TestDaemon};

/// The ranges of the tests here, apart: a daemon kills whatever runs as
/// its runs' uids, so tests in parallel never share one.
const FIRST: u32 = 61300;
const SECOND: u32 = 61320;
const THIRD: u32 = 61340;
const WIDTH: u32 = 10;

/// A binary daemon with `--run-uid-range first-(first+WIDTH-1)` in `dir`.
async fn daemon_in(dir: &Arc<tempfile::TempDir>, first: u32) -> TestDaemon {
    TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec![
            "--run-uid-range".into(),
            format!("{first}-{}", first + WIDTH - 1),
        ],
        binary: true,
        ..Options::default()
    })
    .await
}

/// A temp dir runs can traverse (their work dirs are inside).
fn shared_dir() -> Arc<tempfile::TempDir> {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    dir
}

/// The number a run wrote to `name` in its work dir.
async fn written(daemon: &TestDaemon, run_id: &str, name: &str) -> u32 {
    let path = daemon.work_root().join(run_id).join(name);
    let mut last = 0;
    support::wait_for(
        "the run to write its number",
        || async {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let number = text.trim().parse().unwrap_or(0);
            (number > 0, number)
        },
        &mut last,
    )
    .await;
    last
}

const PROBE: &str = r#"
import ctypes, os, signal, sys
pid, daemon = int(sys.argv[1]), int(sys.argv[2])
found = []
def attempt(name, action):
    try:
        action()
        found.append(name)
    except OSError:
        pass
attempt("environ", lambda: open(f"/proc/{pid}/environ", "rb").read())
attempt("stdout-pipe", lambda: os.close(os.open(f"/proc/{pid}/fd/1", os.O_RDONLY | os.O_NONBLOCK)))
attempt("signal", lambda: os.kill(pid, 0))
attempt("daemon-signal", lambda: os.kill(daemon, 0))
attempt("daemon-environ", lambda: open(f"/proc/{daemon}/environ", "rb").read())
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, pid, 0, 0) == 0:
    found.append("ptrace")
print("uid", os.getuid(), "gid", os.getgid(), "reached", ",".join(found) or "nothing")
"#;

/// Two runs get two uids of the range; the prober cannot read the
/// victim's environ (where its secret is) or open its output pipe, nor
/// signal or ptrace it, nor signal the daemon or read its environ; the
/// victim's work dir is its own (0700).
#[tokio::test]
async fn a_run_cannot_reach_another_run() {
    if !support::is_root() {
        eprintln!("needs root (--run-uid-range); skipped");
        return;
    }
    let dir = shared_dir();
    let daemon = daemon_in(&dir, FIRST).await;
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["containment"]["mode"], "uid_per_run", "{status}");
    assert!(
        !status["containment"]["missing"]
            .to_string()
            .contains("share one run user"),
        "{status}"
    );
    daemon
        .start_run(json!({"run_id": "victim", "command": "echo $$ > pid; exec sleep 30",
                          "secrets": {"VICTIM_SECRET": {"kind": "StaticSecret", "value": "victim-secret-7"}}}))
        .await;
    let victim = written(&daemon, "victim", "pid").await;
    let work = daemon.work_root().join("victim");
    let meta = std::fs::metadata(&work).unwrap();
    assert!(
        (FIRST..FIRST + WIDTH).contains(&meta.uid()),
        "owner {}",
        meta.uid()
    );
    assert_eq!(meta.mode() & 0o7777, 0o700);
    let run = daemon
        .exec(
            json!({"run_id": "prober", "command": ["python3", "-c", PROBE,
                     victim.to_string(), daemon.pid().to_string()]}),
        )
        .await;
    let stdout = run["stdout"].as_str().unwrap_or_default().to_owned();
    assert!(stdout.contains("reached nothing"), "{run}");
    let prober_uid: u32 = stdout.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!((FIRST..FIRST + WIDTH).contains(&prober_uid), "{stdout}");
    assert_ne!(prober_uid, meta.uid(), "two runs share a uid");
    assert!(stdout.contains(&format!("gid {prober_uid} ")), "{stdout}");
    daemon.post("/v1/runs/victim/cancel", json!({})).await;
}

/// A process of a run's uid outside the run's process tree (here one the
/// test starts as that uid) dies when the run ends.
#[tokio::test]
async fn whatever_runs_as_a_runs_uid_dies_with_it() {
    if !support::is_root() {
        eprintln!("needs root (--run-uid-range); skipped");
        return;
    }
    let dir = shared_dir();
    let daemon = daemon_in(&dir, SECOND).await;
    daemon
        .start_run(json!({"run_id": "leaver", "command":
            "id -u > uid; while [ ! -e go ]; do sleep 0.05; done"}))
        .await;
    let uid = written(&daemon, "leaver", "uid").await;
    let mut outsider = std::process::Command::new("sleep")
        .arg("60")
        .uid(uid)
        .gid(uid)
        .spawn()
        .unwrap();
    std::fs::write(daemon.work_root().join("leaver/go"), b"").unwrap();
    let run = daemon.wait_ended("leaver").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let until = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = outsider.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let _ = outsider.kill();
    let status = status.expect("a process of the run's uid outlived the run");
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "{status:?}");
}

/// A run's uid is held until the run is removed: after a restart the
/// restored run keeps it and a new run gets another; once the run is
/// deleted its uid is handed out again.
#[tokio::test]
async fn a_runs_uid_is_held_until_it_is_removed() {
    if !support::is_root() {
        eprintln!("needs root (--run-uid-range); skipped");
        return;
    }
    let dir = shared_dir();
    let mut daemon = daemon_in(&dir, THIRD).await;
    let first = daemon
        .exec(json!({"run_id": "first", "command": "id -u"}))
        .await;
    let first_uid = first["stdout"].as_str().unwrap().trim().to_owned();
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let daemon = daemon_in(&dir, THIRD).await;
    let second = daemon
        .exec(json!({"run_id": "second", "command": "id -u"}))
        .await;
    let second_uid = second["stdout"].as_str().unwrap().trim().to_owned();
    assert_ne!(first_uid, second_uid, "a restored run's uid was handed out");
    let (code, body) = daemon.delete("/v1/runs/first").await;
    assert!(code.is_success(), "{code} {body}");
    let third = daemon
        .exec(json!({"run_id": "third", "command": "id -u"}))
        .await;
    assert_eq!(third["stdout"].as_str().unwrap().trim(), first_uid);
}

//! `--run-uid-range`: each run a uid (and gid) of its own, the way
//! systemd's `DynamicUser` does it. One run cannot read another's
//! environ or output pipes, ptrace it or signal it, nor reach the daemon;
//! whatever runs as a run's uid dies with the run; a uid is held until
//! its run is removed, across a restart too. Needs root: a daemon that
//! is not root refuses the flag at start-up, which is what the tests here
//! check when they do not run as root. The range itself is checked at
//! start-up by either: each bad range is refused with a sentence naming
//! the flag.

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
const FOURTH: u32 = 61360;
const WIDTH: u32 = 10;

/// The flags of a daemon with `--run-uid-range first-(first+WIDTH-1)`
/// (as many runs at once as uids).
fn range_args(first: u32) -> Vec<String> {
    vec![
        "--run-uid-range".into(),
        format!("{first}-{}", first + WIDTH - 1),
        "--max-running".into(),
        WIDTH.to_string(),
    ]
}

/// A binary daemon with `--run-uid-range first-(first+WIDTH-1)` in `dir`.
async fn daemon_in(dir: &Arc<tempfile::TempDir>, first: u32) -> TestDaemon {
    TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: range_args(first),
        binary: true,
        ..Options::default()
    })
    .await
}

/// Not root: a daemon with the range of `first` refuses to start, naming
/// the flag and why. Returns whether it was checked (the test is done).
fn refused_unless_root(first: u32) -> bool {
    if support::is_root() {
        return false;
    }
    let args = range_args(first);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let stderr = support::refused_start(&args, None);
    assert!(
        stderr.contains("--run-uid-range needs sandboxd to run as root"),
        "{stderr}"
    );
    true
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
/// victim's work dir is its own (0700). A range narrower than the runs
/// that may hold a uid is warned about at start-up. Not root: refused.
#[tokio::test]
async fn a_run_cannot_reach_another_run() {
    if refused_unless_root(FIRST) {
        return;
    }
    let dir = shared_dir();
    let daemon = daemon_in(&dir, FIRST).await;
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["containment"]["mode"], "uid_per_run", "{status}");
    // 10 uids for 10 running runs and 1,000 kept ended ones: warned about.
    let logs = daemon.logs();
    assert!(
        logs.contains("fewer than --max-running plus --retain-runs (1010)"),
        "{logs}"
    );
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

/// Scans /proc for 2 s, reading the environ and memory of every process
/// it finds but its own: shims, and their children between the clone and
/// the exec, when the child shares its shim's memory and has already
/// become its run's uid. Prints what it read and whether a secret was in
/// it, and that it reads its own (the probe works).
const STARTING_PROBE: &str = r#"
import os, time
me, read, leaked, seen, until = os.getpid(), [], False, set(), time.time() + 2
while time.time() < until:
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == me:
            continue
        seen.add(pid)
        for name in ("environ", "mem"):
            try:
                with open(f"/proc/{pid}/{name}", "rb") as f:
                    data = f.read(1 << 16) if name == "environ" else f.read(0)
                read.append((pid, name))
                leaked = leaked or b"starter-secret" in data
            except OSError:
                pass
own = len(open(f"/proc/{me}/environ", "rb").read()) > 0 and open(f"/proc/{me}/mem", "rb").read(0) == b""
print(f"seen={len(seen)} own={own} read={len(read)} leaked={leaked} {read[:5]}")
"#;

/// A run cannot read runs that start beside it: not their shims, and not
/// their commands between the clone and the exec, while they share their
/// shim's memory and already run as their own uid (each removed once
/// ended, freeing its uid for the next). Not root: refused.
#[tokio::test]
async fn a_run_reads_nothing_of_runs_starting_beside_it() {
    if refused_unless_root(FOURTH) {
        return;
    }
    let dir = shared_dir();
    let daemon = daemon_in(&dir, FOURTH).await;
    daemon
        .start_run(json!({"run_id": "prober", "command": ["python3", "-c", STARTING_PROBE]}))
        .await;
    let mut started = 0;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        let run_id = format!("starter{started}");
        let body = json!({"run_id": run_id, "command": ["true"], "wait": true,
                          "secrets": {"STARTER": {"kind": "StaticSecret", "value": format!("starter-secret-{started}")}}});
        let (status, run) = daemon.post("/v1/runs", body).await;
        assert!(status.is_success(), "{status}: {run}");
        assert_eq!(run["state"], "succeeded", "{run}");
        // Removed, so its uid is free for the next one.
        let (status, _) = daemon.delete(&format!("/v1/runs/{run_id}")).await;
        assert!(status.is_success(), "{status}");
        started += 1;
    }
    let prober = daemon.wait_ended("prober").await;
    assert_eq!(prober["state"], "succeeded", "{prober}");
    let (_, out) = daemon.text("/v1/runs/prober/logs").await;
    eprintln!("{started} runs started beside the prober: {out}");
    assert!(
        started >= 20,
        "only {started} runs started beside the prober"
    );
    assert!(
        !out.contains("seen=0 ") && out.contains(" own=True "),
        "{out}"
    );
    assert!(out.contains(" read=0 leaked=False"), "{out}");
}

/// A process of a run's uid outside the run's process tree (here one the
/// test starts as that uid) dies when the run ends. Not root: refused.
#[tokio::test]
async fn whatever_runs_as_a_runs_uid_dies_with_it() {
    if refused_unless_root(SECOND) {
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
/// deleted its uid is handed out again. Not root: refused.
#[tokio::test]
async fn a_runs_uid_is_held_until_it_is_removed() {
    if refused_unless_root(THIRD) {
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

/// `--run-uid-range` with `range` (and `extra` flags), run as `uid` when
/// given: refused at start-up with one line naming the flag; returns it.
fn range_refused(range: &str, extra: &[&str], uid: Option<u32>) -> String {
    let mut args = vec!["--run-uid-range", range];
    args.extend_from_slice(extra);
    let stderr = support::refused_start(&args, uid);
    let line = stderr
        .lines()
        .find(|line| line.contains("--run-uid-range"))
        .unwrap_or_else(|| panic!("no line names --run-uid-range: {stderr}"));
    line.to_owned()
}

/// A range upside down, one holding root or 4294967295, or one that is
/// not `FIRST-LAST` is refused by the flag's parser, saying which.
#[test]
fn malformed_ranges_are_refused() {
    let line = range_refused("61400-61300", &[], None);
    assert!(
        line.contains("FIRST (61400) is above LAST (61300)"),
        "{line}"
    );
    let line = range_refused("0-100", &[], None);
    assert!(line.contains("holds uid 0 (root)"), "{line}");
    let line = range_refused("61400-4294967295", &[], None);
    assert!(line.contains("holds uid 4294967295"), "{line}");
    let line = range_refused("61400", &[], None);
    assert!(line.contains("is not FIRST-LAST"), "{line}");
}

/// A range holding sandboxd's own uid, the `--service-user`'s, or taken
/// with `--run-user` is refused. (As root, sandboxd's own uid is 0, which
/// no range holds: the daemon runs as an unprivileged uid for the first.)
#[test]
fn ranges_overlapping_the_daemon_or_its_users_are_refused() {
    const DAEMON_UID: u32 = 61264;
    let (uid, own) = if support::is_root() {
        (Some(DAEMON_UID), DAEMON_UID)
    } else {
        (None, nix::unistd::getuid().as_raw())
    };
    let range = format!("{own}-{}", own + 100);
    let line = range_refused(&range, &["--max-running", "1"], uid);
    assert!(
        line.contains(&format!("holds sandboxd's own uid {own}")),
        "{line}"
    );

    let line = range_refused("61500-61600", &["--service-user", "61550"], None);
    assert!(line.contains("holds --service-user's uid 61550"), "{line}");
    let line = range_refused("61500-61600", &["--run-user", "61550"], None);
    assert!(line.contains("--run-user exclude each other"), "{line}");
}

/// A range holding the uid of a user named in /etc/passwd (its files and
/// processes would be a run's) is refused, naming the user.
#[test]
fn ranges_holding_a_named_user_are_refused() {
    let own = nix::unistd::getuid().as_raw();
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let (name, uid) = passwd
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split(':').collect();
            let uid: u32 = fields.get(2)?.parse().ok()?;
            (uid != 0 && uid != own && uid < u32::MAX - 1).then(|| (fields[0].to_owned(), uid))
        })
        .expect("a user other than root and us in /etc/passwd");
    let line = range_refused(&format!("{uid}-{uid}"), &["--max-running", "1"], None);
    assert!(
        line.contains(&format!(
            "holds uid {uid}, which /etc/passwd gives to the user {name}:"
        )),
        "{line}"
    );
}

/// A range narrower than `--max-running` is refused (runs would be
/// turned away below the limit); one as wide starts as root (and is
/// warned about when ended runs may fill it: see
/// `a_run_cannot_reach_another_run`).
#[test]
fn a_range_narrower_than_max_running_is_refused() {
    let line = range_refused("61400-61409", &["--max-running", "11"], None);
    assert!(
        line.contains("holds 10 uids, fewer than --max-running (11)"),
        "{line}"
    );
}

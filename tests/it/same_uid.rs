//! What a run that shares sandboxd's uid reaches: the "same uid" column
//! of README's "Who can read what", for a daemon that is not root (as
//! root, the daemon here runs as an unprivileged uid, so the test checks
//! the same thing either way). What holds: sandboxd's and every shim's
//! memory and environ (non-dumpable), the credential settings in the
//! run's env. What does not: signalling sandboxd, reading its state dir
//! and session key file, the supervised service's environ and signals,
//! and another run's environ, output pipes, ptrace and signals.

use std::sync::Arc;

use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};

/// The daemon's uid when the test runs as root.
const DAEMON_UID: u32 = 61266;

/// Tries each reach from inside a run; prints the names of those that
/// worked, sorted, after `reached`.
const PROBE: &str = r#"
import ctypes, os, signal, sys, time
daemon, shim, service, victim, state = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
found = []
def attempt(name, action):
    try:
        if action() is not False:
            found.append(name)
    except OSError:
        pass
def key_file():
    args = open(f"/proc/{daemon}/cmdline", "rb").read().split(b"\0")
    path = args[args.index(b"--session-key-file") + 1]
    return len(open(path, "rb").read()) > 0
attempt("daemon-environ", lambda: open(f"/proc/{daemon}/environ", "rb").read())
attempt("daemon-memory", lambda: os.close(os.open(f"/proc/{daemon}/mem", os.O_RDONLY)))
attempt("daemon-signal", lambda: os.kill(daemon, 0))
attempt("state-dir", lambda: open(f"{state}/runs/victim/record.json", "rb").read())
attempt("key-file", key_file)
attempt("shim-environ", lambda: open(f"/proc/{shim}/environ", "rb").read())
attempt("shim-memory", lambda: os.close(os.open(f"/proc/{shim}/mem", os.O_RDONLY)))
attempt("service-environ", lambda: b"SERVICE_SECRET_MARKER=" in open(f"/proc/{service}/environ", "rb").read())
attempt("service-signal", lambda: os.kill(service, 0))
attempt("run-environ", lambda: b"VICTIM_SECRET=" in open(f"/proc/{victim}/environ", "rb").read())
attempt("run-stdout-pipe", lambda: os.close(os.open(f"/proc/{victim}/fd/1", os.O_RDONLY | os.O_NONBLOCK)))
attempt("run-signal", lambda: os.kill(victim, 0))
libc = ctypes.CDLL(None, use_errno=True)
if libc.ptrace(16, victim, 0, 0) == 0:
    found.append("run-ptrace")
    os.waitpid(victim, 0)
    libc.ptrace(17, victim, 0, 0)
attempt("env-key", lambda: any(k in os.environ for k in
    ("SESSION_API_KEY", "SANDBOXD_SESSION_KEY_FILE", "SANDBOXD_CALLBACK_TOKEN_FILE")) or False)
print("uid", os.getuid(), "reached", ",".join(sorted(found)))
"#;

/// Whether Yama lets a process ptrace a non-descendant of its uid.
fn ptrace_of_non_children_allowed() -> bool {
    std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope")
        .map(|scope| scope.trim() == "0")
        .unwrap_or(true)
}

/// The pid a run wrote to `pid` in its work dir.
async fn written_pid(daemon: &TestDaemon, run_id: &str) -> u32 {
    let path = daemon.work_root().join(run_id).join("pid");
    let mut last = 0;
    support::wait_for(
        "the run to write its pid",
        || async {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let pid = text.trim().parse().unwrap_or(0);
            (pid > 0, pid)
        },
        &mut last,
    )
    .await;
    last
}

/// From inside a run of a same-uid daemon (with a service and another
/// run beside it), exactly the reaches README's same-uid column says
/// "yes" to work, and those it says "no" to fail; `/v1/status` names the
/// shared uid, and the kill mechanism with what it leaves open.
#[tokio::test]
async fn a_same_uid_run_reaches_what_the_readme_says() {
    let uid = support::is_root().then_some(DAEMON_UID);
    let expected_uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        uid,
        service: vec!["sh".into(), "-c".into(), "exec sleep 60".into()],
        env: vec![("SERVICE_SECRET_MARKER".into(), "service-secret-2".into())],
        binary: true,
        ..Options::default()
    })
    .await;
    // Readable by sandboxd's uid alone, as README asks.
    std::fs::set_permissions(
        dir.path().join("key"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mut status = Value::Null;
    support::wait_for(
        "the service to run",
        || async {
            let (_, status) = daemon.get("/v1/status").await;
            (status["service"]["pid"].as_u64().is_some(), status)
        },
        &mut status,
    )
    .await;
    let containment = &status["containment"];
    assert_eq!(containment["mode"], "same_uid", "{status}");
    assert_eq!(containment["daemon_uid"], expected_uid, "{status}");
    let missing = containment["missing"].to_string();
    assert!(missing.contains("share sandboxd's uid"), "{missing}");
    assert_eq!(
        containment["kill_mechanism"] == "proc_walk",
        missing.contains("no writable cgroup v2"),
        "{status}"
    );
    let service = status["service"]["pid"].as_u64().unwrap();

    daemon
        .start_run(json!({"run_id": "victim", "command": "echo $$ > pid; exec sleep 30",
                          "secrets": {"VICTIM_SECRET": {"kind": "StaticSecret", "value": "victim-secret-8"}}}))
        .await;
    let victim = written_pid(&daemon, "victim").await;
    let record =
        std::fs::read_to_string(daemon.state_dir().join("runs/victim/record.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap();
    let run = daemon
        .exec(
            json!({"run_id": "prober", "command": ["python3", "-c", PROBE,
            daemon.pid().to_string(), shim.to_string(), service.to_string(),
            victim.to_string(), daemon.state_dir().display().to_string()]}),
        )
        .await;
    daemon.post("/v1/runs/victim/cancel", json!({})).await;
    let stdout = run["stdout"].as_str().unwrap_or_default();
    assert!(
        stdout.starts_with(&format!("uid {expected_uid} reached ")),
        "{run}"
    );
    let reached = stdout.trim().rsplit(' ').next().unwrap();
    let mut expected = vec![
        "daemon-signal",
        "key-file",
        "run-environ",
        "run-signal",
        "run-stdout-pipe",
        "service-environ",
        "service-signal",
        "state-dir",
    ];
    if ptrace_of_non_children_allowed() {
        expected.push("run-ptrace");
    }
    expected.sort_unstable();
    assert_eq!(reached, expected.join(","), "{run}");
}

//! Containment: what a run can and cannot obtain of the daemon's
//! credentials and of other runs.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};

/// The state dir holds no usable run token: a record keeps the token's
/// SHA-256 only, during the run, after its end and across a restart, and
/// the token a run got still works after the daemon restarted.
#[tokio::test]
async fn records_hold_token_digests_not_tokens() {
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let mut daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        binary: true,
        ..Options::default()
    })
    .await;
    let script =
        r#"echo "$SANDBOXD_RUN_TOKEN" > token.txt; while [ ! -e go ]; do sleep 0.05; done"#;
    daemon
        .start_run(json!({"run_id": "holder", "command": script}))
        .await;
    let work = daemon.work_root().join("holder");
    let token_file = work.join("token.txt");
    let mut last = String::new();
    support::wait_for(
        "the run to write its token",
        || async {
            let text = std::fs::read_to_string(&token_file).unwrap_or_default();
            (text.trim().len() == 64, text)
        },
        &mut last,
    )
    .await;
    let token = last.trim().to_owned();
    let record_path = daemon.state_dir().join("runs/holder/record.json");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(
        !record.contains(&token),
        "the record holds the token: {record}"
    );
    assert!(record.contains("token_sha256"), "{record}");

    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        binary: true,
        ..Options::default()
    })
    .await;
    let report = reqwest::Client::new()
        .post(format!("{}/v1/runs/holder/report", daemon.url))
        .bearer_auth(&token)
        .json(&json!({"cost": 0.5}));
    let (status, body) = support::send(report).await;
    assert_eq!(status, StatusCode::OK, "the token after a restart: {body}");
    assert_eq!(body["report"]["cost"], 0.5);

    std::fs::write(work.join("go"), b"").unwrap();
    let run = daemon.wait_ended("holder").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let record = std::fs::read_to_string(&record_path).unwrap();
    assert!(!record.contains(&token), "the final record holds the token");
    assert!(record.contains("\"cost\": 0.5"), "{record}");
}

/// The pids a run wrote to `names` in its work dir, once all are there.
async fn pids_written(daemon: &TestDaemon, run_id: &str, names: &[&str]) -> Vec<i32> {
    let work = daemon.work_root().join(run_id);
    let mut last = Vec::new();
    support::wait_for(
        "the run to write its pids",
        || async {
            let pids: Vec<i32> = names
                .iter()
                .filter_map(|name| {
                    let text = std::fs::read_to_string(work.join(name)).ok()?;
                    text.trim().parse().ok()
                })
                .collect();
            (pids.len() == names.len(), pids)
        },
        &mut last,
    )
    .await;
    last
}

/// Whether `pid` runs (a zombie or a reused pid of another command count
/// as gone: the run's processes are all `sleep` or `bash`).
fn runs(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .unwrap_or("Z");
    !stat.is_empty() && state != "Z" && (stat.contains("(sleep)") || stat.contains("(bash)"))
}

/// Processes that escape the run's process group and session (`setsid`,
/// a double fork) die with the run: when its command exits at once, at
/// its timeout, and on cancel within the grace. `/v1/status` names the
/// mechanism that does it.
#[tokio::test]
async fn escaped_processes_die_with_their_run() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--kill-grace".into(), "1s".into()],
        ..Options::default()
    })
    .await;
    let (_, status) = daemon.get("/v1/status").await;
    let mechanism = status["containment"]["kill_mechanism"].clone();
    assert!(
        mechanism == "cgroup" || mechanism == "proc_walk",
        "{status}"
    );
    eprintln!("kill mechanism: {mechanism}");
    let escape = r#"setsid bash -c 'echo $$ > esc.pid; sleep 45 & echo $! > sleep.pid; wait' &
        (setsid sleep 45 & echo $! > double.pid) &"#;
    let names = ["esc.pid", "sleep.pid", "double.pid"];

    // The issue's reproduction: the leader exits at once.
    let started = std::time::Instant::now();
    let command = format!(
        "{escape} while [ ! -s esc.pid ] || [ ! -s sleep.pid ] || [ ! -s double.pid ]; \
         do sleep 0.02; done; exit 0"
    );
    daemon
        .start_run(json!({"run_id": "exits", "command": command, "timeout_s": 5}))
        .await;
    let run = daemon.wait_ended("exits").await;
    assert!(
        started.elapsed().as_secs() < 6,
        "ended after {:?}",
        started.elapsed()
    );
    assert_eq!(run["state"], "succeeded", "{run}");
    for pid in pids_written(&daemon, "exits", &names).await {
        assert!(!runs(pid), "process {pid} outlived its run");
    }

    // The leader stays: the timeout ends the run and everything in it.
    let started = std::time::Instant::now();
    let command = format!("{escape} sleep 45");
    daemon
        .start_run(json!({"run_id": "times-out", "command": command, "timeout_s": 2}))
        .await;
    let pids = pids_written(&daemon, "times-out", &names).await;
    let run = daemon.wait_ended("times-out").await;
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 2.0 + 1.0 + 2.0, "ended after {took:?}");
    assert_eq!(run["state"], "timed_out", "{run}");
    for pid in pids {
        assert!(!runs(pid), "process {pid} outlived its timeout");
    }

    // Cancel, with escaped processes that ignore SIGTERM.
    let command = format!("trap '' TERM; {escape} sleep 45");
    daemon
        .start_run(json!({"run_id": "cancelled", "command": command, "timeout_s": 60}))
        .await;
    let pids = pids_written(&daemon, "cancelled", &names).await;
    let started = std::time::Instant::now();
    let (code, body) = daemon
        .post("/v1/runs/cancelled/cancel", json!({"grace_s": 0.5}))
        .await;
    assert!(code.is_success(), "{code} {body}");
    let run = daemon.wait_ended("cancelled").await;
    let took = started.elapsed();
    assert!(took.as_secs_f64() < 0.5 + 2.0, "ended after {took:?}");
    assert_eq!(run["state"], "cancelled", "{run}");
    for pid in pids {
        assert!(!runs(pid), "process {pid} outlived the cancel");
    }
}

/// A fixed unprivileged uid (no passwd entry needed) for runs.
const RUN_UID: u32 = 61234;

/// With `--run-user`, a run executes as that user and cannot read the
/// daemon's environ, stop the daemon, read the state dir or its records,
/// nor find the session key file in its env; `/v1/status` says runs are
/// separated. Needs root: a daemon that is not root refuses `--run-user`
/// at start-up, naming the flag (what same-uid runs then reach is in
/// `same_uid::`).
#[tokio::test]
async fn a_run_as_the_run_user_cannot_reach_the_daemon() {
    if !support::is_root() {
        let stderr = support::refused_start(&["--run-user", &RUN_UID.to_string()], None);
        assert!(
            stderr.contains("--run-user needs sandboxd to run as root"),
            "{stderr}"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec!["--run-user".into(), format!("{RUN_UID}:{RUN_UID}")],
        env: vec![
            ("SANDBOXD_TEST_MARKER".into(), "daemon-env".into()),
            (
                "SANDBOXD_SESSION_KEY_FILE".into(),
                "/nonexistent/key".into(),
            ),
        ],
        binary: true,
        ..Options::default()
    })
    .await;
    let key_file = dir.path().join("key");
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(
        status["containment"]["run_user_separated"], true,
        "{status}"
    );

    let pid = daemon.pid();
    let state = daemon.state_dir();
    let command = format!(
        r#"[ "$(id -u)" = {RUN_UID} ] || exit 10
        if cat /proc/{pid}/environ >/dev/null 2>&1; then exit 11; fi
        if kill -STOP {pid} 2>/dev/null; then kill -CONT {pid}; exit 12; fi
        if kill -0 {pid} 2>/dev/null; then exit 13; fi
        if ls {state} >/dev/null 2>&1; then exit 14; fi
        if cat {state}/runs/probe/record.json >/dev/null 2>&1; then exit 15; fi
        if cat {key} >/dev/null 2>&1; then exit 16; fi
        if env | grep -q SANDBOXD_SESSION_KEY_FILE; then exit 17; fi
        echo mine > mine.txt || exit 18
        exit 0"#,
        state = state.display(),
        key = key_file.display(),
    );
    let run = daemon
        .exec(json!({"run_id": "probe", "command": command}))
        .await;
    assert_eq!(run["exit_code"], 0, "a check failed: {run}");
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(support::alive(pid));
    let meta = std::fs::metadata(daemon.work_root().join("probe/mine.txt")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!(meta.uid(), RUN_UID);
}

/// Without `--run-user` the status says runs share sandboxd's uid, and
/// what that leaves open.
#[tokio::test]
async fn status_names_missing_protections() {
    let daemon = TestDaemon::start().await;
    let (_, status) = daemon.get("/v1/status").await;
    let containment = &status["containment"];
    assert_eq!(containment["run_user_separated"], false, "{status}");
    let missing = containment["missing"].to_string();
    assert!(missing.contains("share sandboxd's uid"), "{missing}");
    assert!(containment["fd_limit"].as_u64().unwrap() > 0);
}

/// 1,100 idle connections (more than a 1,024 soft descriptor limit, more
/// than the connection cap) do not keep `/healthz` or an authenticated
/// request out: sandboxd raised its soft limit to the hard one, and a new
/// connection over the cap takes the place of the oldest idle one.
#[tokio::test]
async fn idle_connections_do_not_starve_the_api() {
    let daemon = TestDaemon::start_with(Options {
        // Started with the usual soft limit of 1,024 descriptors.
        wrapper: vec![
            "bash".into(),
            "-c".into(),
            r#"ulimit -Sn 1024 && exec "$@""#.into(),
            "bash".into(),
        ],
        ..Options::default()
    })
    .await;
    let addr = daemon.url.trim_start_matches("http://").to_owned();
    let mut idle = Vec::new();
    for _ in 0..1_100 {
        idle.push(std::net::TcpStream::connect(&addr).unwrap());
    }
    // Connections idle for a moment (250 ms) make room for new ones.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let (status, text) = daemon.text("/healthz").await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let (status, body) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        started.elapsed().as_secs() < 5,
        "took {:?}",
        started.elapsed()
    );
    assert!(
        body["containment"]["fd_limit"].as_u64().unwrap() > 1024,
        "{body}"
    );
    drop(idle);
    assert!(
        !daemon.logs().contains("Too many open files"),
        "{}",
        daemon.logs()
    );
}

/// 5,000 unauthenticated requests grow the daemon's log by a few lines:
/// refusals are logged at debug, with one sampled info line a second.
#[tokio::test]
async fn refused_requests_are_logged_sampled() {
    use futures::StreamExt;
    let daemon = TestDaemon::start_binary().await;
    let before = daemon.logs().len();
    let client = reqwest::Client::new();
    let url = format!("{}/v1/status", daemon.url);
    let statuses: Vec<u16> = futures::stream::iter(0..5_000)
        .map(|_| {
            let request = client.get(&url).bearer_auth("wrong");
            async move {
                request
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
                    .unwrap_or(0)
            }
        })
        .buffer_unordered(32)
        .collect()
        .await;
    assert!(statuses.iter().all(|s| *s == 401), "not all were 401");
    let grown = daemon.logs().len() - before;
    assert!(grown < 4096, "the log grew by {grown} bytes");
}

/// A callback token given on the command line is warned about (it shows
/// in `/proc/<pid>/cmdline`); one from `--callback-token-file` is not; the
/// settings naming credential files never reach a run's env.
#[tokio::test]
async fn credential_settings_stay_out_of_argv_and_children() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--callback-token".into(), "tok-on-argv".into()],
        ..Options::default()
    })
    .await;
    let (_, status) = daemon.get("/v1/status").await;
    let missing = status["containment"]["missing"].to_string();
    assert!(missing.contains("--callback-token-file"), "{missing}");

    let dir = Arc::new(tempfile::tempdir().unwrap());
    let token_file = dir.path().join("callback-token");
    std::fs::write(&token_file, "tok-in-file\n").unwrap();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec![
            "--callback-token-file".into(),
            token_file.display().to_string(),
        ],
        env: vec![(
            "SANDBOXD_CALLBACK_TOKEN_FILE".into(),
            token_file.display().to_string(),
        )],
        ..Options::default()
    })
    .await;
    let (_, status) = daemon.get("/v1/status").await;
    let missing = status["containment"]["missing"].to_string();
    assert!(!missing.contains("--callback-token-file"), "{missing}");
    let run = daemon
        .exec(json!({"run_id": "env", "command": "env | grep -c '^SANDBOXD_.*_FILE=' ; exit 0"}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let (_, out) = daemon.text("/v1/runs/env/logs?stream=stdout").await;
    assert_eq!(out.trim(), "0", "{out}");
}

/// Another run's spec channel cannot be opened through `/proc`: a run
/// that finds every shim and opens its stdin (where specs and values to
/// mask arrive) gets nothing, also as root and while 100 runs start.
#[tokio::test]
async fn shim_spec_channels_cannot_be_opened_through_proc() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "victim", "command": "sleep 30",
                          "secrets": {"VICTIM_SECRET": {"kind": "StaticSecret", "value": "victim-secret-value-1"}}}))
        .await;
    // Scans /proc again and again for 1.5 s, opening every shim's stdin.
    let script = r#"
import os, sys, time
opened, tried, until = [], set(), time.time() + 1.5
while time.time() < until:
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")
        except OSError:
            continue
        if len(cmd) < 2 or cmd[1] != b"shim":
            continue
        tried.add(pid)
        try:
            fd = os.open(f"/proc/{pid}/fd/0", os.O_RDONLY | os.O_NONBLOCK)
            try:
                target = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                target = "?"
            # A shim's child between fork and exec (its cmdline is still
            # the shim's) has /dev/null as stdin: nothing to read there.
            if target != "/dev/null":
                opened.append((pid, target))
            os.close(fd)
        except OSError:
            pass
print(f"tried={len(tried)} opened={len(opened)} {opened[:5]}")
"#;
    let mut starts = Vec::new();
    // The issue's race: 100 starts at once while the prober looks.
    for i in 0..100 {
        let body = json!({"run_id": format!("bystander{i}"), "command": "true"});
        starts.push(
            daemon
                .request(reqwest::Method::POST, "/v1/runs")
                .json(&body),
        );
    }
    let starting: Vec<_> = starts
        .into_iter()
        .map(|req| tokio::spawn(async move { req.send().await.map(|r| r.status()) }))
        .collect();
    let run = daemon
        .exec(json!({"run_id": "prober", "command": ["python3", "-c", script]}))
        .await;
    let mut accepted = 0;
    for (i, start) in starting.into_iter().enumerate() {
        // Over --max-running a start is refused (429); an accepted run
        // must end well: no spec was read by anyone else.
        if !start.await.unwrap().is_ok_and(|s| s.is_success()) {
            continue;
        }
        accepted += 1;
        let run = daemon.wait_ended(&format!("bystander{i}")).await;
        assert_eq!(run["state"], "succeeded", "a started run did not: {run}");
    }
    assert!(
        accepted >= 50,
        "only {accepted} of 100 starts were accepted"
    );
    let stdout = run["stdout"].as_str().unwrap_or_default();
    eprintln!("prober: {stdout}");
    assert!(!stdout.contains("tried=0"), "no shim found: {stdout}");
    assert!(
        stdout.contains("opened=0"),
        "a spec channel was opened: {stdout}"
    );
    daemon.post("/v1/runs/victim/cancel", json!({})).await;
}

/// With `--service-user` the supervised service runs as its own user: a
/// run (as the run user) cannot read its environment, where the session
/// key is, nor signal it. Needs root: a daemon that is not root refuses
/// `--service-user` at start-up, naming the flag (a same-uid run then
/// reads the service's environ: `same_uid::`).
#[tokio::test]
async fn a_run_cannot_reach_the_service_run_as_its_own_user() {
    const SERVICE_UID: u32 = RUN_UID + 1;
    if !support::is_root() {
        let stderr = support::refused_start(&["--service-user", &SERVICE_UID.to_string()], None);
        assert!(
            stderr.contains("--service-user needs sandboxd to run as root"),
            "{stderr}"
        );
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = Arc::new(tempfile::tempdir().unwrap());
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec![
            "--run-user".into(),
            format!("{RUN_UID}:{RUN_UID}"),
            "--service-user".into(),
            format!("{SERVICE_UID}:{SERVICE_UID}"),
        ],
        service: vec!["sh".into(), "-c".into(), "exec sleep 60".into()],
        env: vec![("SERVICE_SECRET_MARKER".into(), "service-secret-1".into())],
        ..Options::default()
    })
    .await;
    let mut last = Value::Null;
    support::wait_for(
        "the service to run",
        || async {
            let (_, status) = daemon.get("/v1/status").await;
            (status["service"]["pid"].as_u64().is_some(), status)
        },
        &mut last,
    )
    .await;
    let pid = last["service"]["pid"].as_u64().unwrap();
    let proc_status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let uid_line = proc_status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert!(uid_line.contains(&SERVICE_UID.to_string()), "{uid_line}");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        String::from_utf8_lossy(&environ).contains("SERVICE_SECRET_MARKER="),
        "the service has the marker in its env"
    );
    let script = format!(
        "cat /proc/{pid}/environ >/dev/null 2>&1 && echo read-environ; \
         kill -0 {pid} 2>/dev/null && echo can-signal; echo done"
    );
    let run = daemon
        .exec(json!({"run_id": "prober", "command": script}))
        .await;
    let stdout = run["stdout"].as_str().unwrap_or_default();
    assert!(stdout.contains("done"), "{run}");
    assert!(
        !stdout.contains("read-environ"),
        "a run read the service's environ: {stdout}"
    );
    assert!(
        !stdout.contains("can-signal"),
        "a run can signal the service: {stdout}"
    );
}

/// Whether the memory of process `pid` holds `needle`: every readable
/// mapping read through `/proc/<pid>/mem` (root reads a non-dumpable
/// process's memory too).
fn memory_holds(pid: i32, needle: &[u8]) -> bool {
    use std::os::unix::fs::FileExt;
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    let mem = std::fs::File::open(format!("/proc/{pid}/mem")).unwrap();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.ends_with("[vvar]") || line.ends_with("[vsyscall]") {
            continue;
        }
        let (start, end) = range.split_once('-').unwrap();
        let start = u64::from_str_radix(start, 16).unwrap();
        let end = u64::from_str_radix(end, 16).unwrap();
        let mut region = vec![0u8; (end - start) as usize];
        if mem.read_exact_at(&mut region, start).is_err() {
            continue;
        }
        if region.windows(needle.len()).any(|w| w == needle) {
            return true;
        }
    }
    false
}

/// A live shim's memory holds the run's own secret (it masks it) but
/// neither the session key nor the default callback token: neither is in
/// its spec or mask list unless the run's env holds it. The scan needs
/// root (a shim is non-dumpable); not root, the test checks that its own
/// uid, the shim's and its run's, cannot open the shim's memory at all.
#[tokio::test]
async fn a_shim_holds_no_credential_of_the_daemon() {
    const CALLBACK_TOKEN: &str = "callback-token-of-the-daemon-5";
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let token_file = dir.path().join("callback-token");
    std::fs::write(&token_file, CALLBACK_TOKEN).unwrap();
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec![
            "--callback-token-file".into(),
            token_file.display().to_string(),
        ],
        binary: true,
        ..Options::default()
    })
    .await;
    daemon
        .start_run(json!({"run_id": "held", "command": "echo up; sleep 30",
                          "secrets": {"RUN_SECRET": {"kind": "StaticSecret", "value": "run-secret-value-3"}}}))
        .await;
    daemon
        .wait_run("held", "its output", |run| {
            run["stdout_bytes"].as_u64() > Some(0)
        })
        .await;
    let record = std::fs::read_to_string(daemon.state_dir().join("runs/held/record.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap() as i32;
    if !support::is_root() {
        let opened = std::fs::File::open(format!("/proc/{shim}/mem"));
        let err = opened.expect_err("the shim's memory opened at its own uid");
        assert_eq!(err.kind(), std::io::ErrorKind::PermissionDenied, "{err}");
        daemon.post("/v1/runs/held/cancel", json!({})).await;
        return;
    }
    assert!(
        memory_holds(shim, b"run-secret-value-3"),
        "the scan finds the run's own secret"
    );
    assert!(
        !memory_holds(shim, support::KEY.as_bytes()),
        "the shim holds the session key"
    );
    assert!(
        !memory_holds(shim, CALLBACK_TOKEN.as_bytes()),
        "the shim holds the callback token"
    );
    daemon.post("/v1/runs/held/cancel", json!({})).await;
}

/// The `serve` processes the init (`init`) has as children.
fn daemons_of(init: i32) -> Vec<i32> {
    let children =
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .filter_map(|pid| pid.parse::<i32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            cmdline.split(|b| *b == 0).nth(1) == Some(b"serve".as_slice())
        })
        .collect()
}

/// In `--subreaper` mode the daemon the init (re-)executes gets the
/// session key and the callback token through an inherited descriptor:
/// a reader polling `/proc/<daemon>/environ` of every new daemon while the
/// daemon is SIGKILLed again and again never sees either, nor does the
/// init's own environ show them; the restarted daemon accepts the key and
/// the service still gets it in its env.
#[tokio::test]
async fn a_restarted_daemon_has_no_credential_in_its_environ() {
    const TOKEN: &str = "callback-token-in-env-9";
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let seen_by_service = dir.path().join("service-key");
    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: vec!["--subreaper".into()],
        env: vec![
            ("SESSION_API_KEY".into(), support::KEY.into()),
            ("OPENHANDS_API_KEY".into(), TOKEN.into()),
        ],
        service: vec![
            "sh".into(),
            "-c".into(),
            format!(
                "echo \"$SESSION_API_KEY\" > {}; exec sleep 60",
                seen_by_service.display()
            ),
        ],
        ..Options::default()
    })
    .await;
    let init = daemon.pid();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut reads, mut leaks) = (0, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for pid in daemons_of(init).into_iter().chain([init]) {
                    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
                    reads += 1;
                    let text = String::from_utf8_lossy(&environ);
                    if text.contains(support::KEY) || text.contains(TOKEN) {
                        leaks.push(pid);
                    }
                }
            }
            (reads, leaks)
        })
    };
    for round in 0..3 {
        // Killed once its service runs: a daemon killed half-way through
        // starting its service is another test's matter.
        wait_serving(&daemon, round, round).await;
        let pids = daemons_of(init);
        assert_eq!(pids.len(), 1, "round {round}: daemons {pids:?}");
        unsafe { libc::kill(pids[0], libc::SIGKILL) };
        wait_serving(&daemon, round + 1, round).await;
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, leaks) = reader.join().unwrap();
    assert!(reads > 10, "the reader read {reads} times");
    assert!(leaks.is_empty(), "environ showed a credential: {leaks:?}");
    // The service's shell writes the file just after it is started: the
    // status may name its pid first.
    let mut service_key = String::new();
    support::wait_for(
        "the service to write the key it was given",
        || async {
            let text = std::fs::read_to_string(&seen_by_service).unwrap_or_default();
            (!text.trim().is_empty(), text)
        },
        &mut service_key,
    )
    .await;
    assert_eq!(service_key.trim(), support::KEY, "the service has the key");
}

/// Waits until the daemon that logged the `index`th "listening" line
/// accepts the session key and has started its service.
async fn wait_serving(daemon: &TestDaemon, index: usize, round: usize) {
    let client = reqwest::Client::new();
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let mut seen = Value::Null;
        if let Some(addr) = daemon.listening().get(index) {
            let request = client
                .get(format!("{addr}/v1/status"))
                .header("X-Session-API-Key", support::KEY);
            if let Ok(response) = request.send().await {
                seen = response.json().await.unwrap_or_default();
            }
        }
        if seen["service"]["pid"].is_number() {
            return;
        }
        assert!(
            Instant::now() < until,
            "round {round}: daemon {index} never served with the key ({seen}): {}",
            daemon.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The `/v1/status` probe of the agent-server trusts the port's owner the
/// way the key-filled LookupSecret does: a listener of another uid than
/// the agent-server's on its port is reported as an impostor and never
/// as healthy, although it answers `/alive`; the same listener as the
/// expected uid is healthy.
#[tokio::test]
async fn an_impostor_on_the_agent_server_port_is_not_healthy() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("alive"), "ok").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut impostor = std::process::Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .arg("--directory")
        .arg(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let mut answered = false;
    for _ in 0..200 {
        if reqwest::get(format!("{url}/alive"))
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            answered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(answered, "the listener never answered /alive");
    let own_uid = nix::unistd::geteuid().as_raw();
    for (expected_uid, impostor_expected) in [(own_uid.wrapping_add(4242), true), (own_uid, false)]
    {
        let daemon = TestDaemon::start_with(Options {
            args: vec![
                "--agent-server-url".into(),
                url.clone(),
                "--agent-server-uid".into(),
                expected_uid.to_string(),
            ],
            ..Options::default()
        })
        .await;
        let mut last = Value::Null;
        support::wait_for(
            "the agent-server probed",
            || async {
                let (_, status) = daemon.get("/v1/status").await;
                let agent = status["agent_server"].clone();
                (agent["checked_at"].is_string(), agent)
            },
            &mut last,
        )
        .await;
        if impostor_expected {
            assert_eq!(last["healthy"], false, "{last}");
            let said = last["impostor"].as_str().unwrap_or_default();
            assert!(said.contains(&own_uid.to_string()), "{last}");
        } else {
            assert_eq!(last["healthy"], true, "{last}");
            assert!(last.get("impostor").is_none(), "{last}");
        }
    }
    let _ = impostor.kill();
    let _ = impostor.wait();
}

/// The cgroup v2 dir of this process when it is writable.
pub(crate) fn own_writable_cgroup() -> Option<std::path::PathBuf> {
    let text = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let rel = text.lines().find_map(|line| line.strip_prefix("0::"))?;
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mount = mounts.lines().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        right
            .starts_with("cgroup2 ")
            .then(|| left.split(' ').nth(4))?
    })?;
    let dir = std::path::Path::new(mount).join(rel.trim_start_matches('/'));
    let probe = dir.join(format!("sandboxd-test-probe-{}", std::process::id()));
    std::fs::create_dir(&probe).ok()?;
    std::fs::remove_dir(&probe).ok()?;
    Some(dir)
}

/// A run's command is created inside its run's own cgroup, named after
/// its shim (`clone3` with `CLONE_INTO_CGROUP`): the first thing it reads
/// is that cgroup, and so is what it forks, `setsid` or not.
#[tokio::test]
async fn a_run_starts_inside_its_own_cgroup() {
    if own_writable_cgroup().is_none() {
        eprintln!("needs a writable cgroup v2; skipped");
        return;
    }
    let daemon = TestDaemon::start().await;
    let run = daemon
        .exec(json!({
            "run_id": "in-cgroup",
            "command": ["sh", "-c", "cat /proc/self/cgroup; setsid cat /proc/self/cgroup"],
            "wait": true,
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let record =
        std::fs::read_to_string(daemon.state_dir().join("runs/in-cgroup/record.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap();
    let stdout = run["stdout"].as_str().unwrap();
    let lines: Vec<&str> = stdout.lines().filter(|l| l.starts_with("0::")).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for line in lines {
        assert!(
            line.ends_with(&format!("/sandboxd-run-{shim}")),
            "not in the run's cgroup: {line}"
        );
    }
}

/// At start a daemon removes the empty run cgroups of shims that are gone
/// (a SIGKILLed shim leaves its cgroup) but keeps the cgroup of a live
/// shim it restores, whose run then ends normally. Without a cgroup v2
/// this uid can write (a daemon that is not root, mostly) there are no
/// run cgroups: `/v1/status` says the `/proc` walk ends runs instead, and
/// what that leaves open.
#[tokio::test]
async fn leftover_run_cgroups_of_gone_shims_are_removed_at_start() {
    let Some(cgroups) = own_writable_cgroup() else {
        let daemon = TestDaemon::start().await;
        let (_, status) = daemon.get("/v1/status").await;
        assert_eq!(
            status["containment"]["kill_mechanism"], "proc_walk",
            "{status}"
        );
        let missing = status["containment"]["missing"].to_string();
        assert!(missing.contains("no writable cgroup v2"), "{missing}");
        return;
    };
    // A pid above the kernel's largest pid_max: never a live shim.
    let leftover = cgroups.join("sandboxd-run-4194999");
    std::fs::create_dir_all(&leftover).unwrap();
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let options = || Options {
        dir: Some(dir.clone()),
        binary: true,
        ..Options::default()
    };
    let mut daemon = TestDaemon::start_with(options()).await;
    assert!(!leftover.exists(), "the leftover cgroup is still there");
    std::fs::create_dir_all(&leftover).unwrap();
    daemon
        .start_run(json!({"run_id": "held", "command": "sleep 30"}))
        .await;
    daemon
        .wait_run("held", "running", |run| run["state"] == "running")
        .await;
    let record = std::fs::read_to_string(daemon.state_dir().join("runs/held/record.json")).unwrap();
    let record: Value = serde_json::from_str(&record).unwrap();
    let shim = record["shim"]["pid"].as_i64().unwrap();
    let live = cgroups.join(format!("sandboxd-run-{shim}"));
    assert!(live.exists(), "the run's cgroup {}", live.display());
    daemon.signal(libc::SIGKILL);
    daemon.wait_exit();
    let daemon = TestDaemon::start_with(options()).await;
    assert!(!leftover.exists(), "the leftover cgroup survived a restart");
    assert!(live.exists(), "the live shim's cgroup was removed");
    let (code, body) = daemon.post("/v1/runs/held/cancel", json!({})).await;
    assert!(code.is_success(), "{code} {body}");
    let run = daemon.wait_ended("held").await;
    assert_eq!(run["state"], "cancelled", "{run}");
}

/// A daemon that is not root (as root: one started as an unprivileged
/// uid) says what it cannot protect: `/v1/status` reports `same_uid`,
/// that runs share its uid and what that leaves open, and runs execute as
/// its uid, and it warns at start-up; `--run-uid-range`, `--run-user`
/// and `--service-user` are refused at start-up with a sentence naming
/// the flag.
#[tokio::test]
async fn a_non_root_daemon_reports_the_missing_protections() {
    const DAEMON_UID: u32 = 61262;
    let uid = support::is_root().then_some(DAEMON_UID);
    let expected_uid = uid.unwrap_or_else(|| nix::unistd::geteuid().as_raw());
    let daemon = TestDaemon::start_with(Options {
        uid,
        binary: true,
        ..Options::default()
    })
    .await;
    let (_, status) = daemon.get("/v1/status").await;
    let containment = &status["containment"];
    assert_eq!(containment["mode"], "same_uid", "{status}");
    assert_eq!(containment["run_user_separated"], false, "{status}");
    assert_eq!(containment["daemon_uid"], expected_uid, "{status}");
    let missing = containment["missing"].to_string();
    assert!(missing.contains("share sandboxd's uid"), "{missing}");
    assert!(!missing.contains("runs execute as root"), "{missing}");
    let run = daemon
        .exec(json!({"run_id": "who", "command": "id -u"}))
        .await;
    assert_eq!(
        run["stdout"].as_str().unwrap().trim(),
        expected_uid.to_string()
    );

    let logs = daemon.logs();
    let warning = logs
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| {
            event["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("containment: runs as uid"))
        })
        .unwrap_or_else(|| panic!("no containment line at start-up: {logs}"));
    assert_eq!(warning["level"], "WARN", "{warning}");
    assert!(
        warning["message"]
            .to_string()
            .contains("share sandboxd's uid"),
        "{warning}"
    );

    for (flag, value) in [
        ("--run-uid-range", "62000-62099"),
        ("--run-user", "61263"),
        ("--service-user", "61263"),
    ] {
        let stderr = support::refused_start(&[flag, value], uid);
        assert!(
            stderr.contains(&format!(
                "{flag} needs sandboxd to run as root (it runs as uid {expected_uid})"
            )),
            "{stderr}"
        );
    }
}

//! Entrypoint mode: the supervised service (restarts, backoff, exit codes,
//! signal forwarding, output, health), sandboxd as init (subreaper or PID 1
//! in a PID namespace) reaping orphans without stealing exit statuses, the
//! ordered shutdown, and the systemd unit.

use std::path::Path;
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon, KEY};

/// Options for a daemon that is its own init (`--subreaper`) and supervises
/// `sh -c SCRIPT`.
fn supervising(script: &str, args: &[&str]) -> Options {
    let mut all = vec!["--subreaper".to_owned()];
    all.extend(args.iter().map(|a| (*a).to_owned()));
    Options {
        args: all,
        service: vec!["sh".into(), "-c".into(), script.into()],
        ..Options::default()
    }
}

/// Polls GET /v1/status until `done` holds for its `service` object.
async fn wait_service(daemon: &TestDaemon, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    support::wait_for(
        what,
        || async {
            let (_, status) = daemon.get("/v1/status").await;
            (done(&status["service"]), status["service"].clone())
        },
        &mut last,
    )
    .await;
    last
}

/// Reads a file of one number per line.
fn numbers(path: &Path) -> Vec<u128> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// (pid, state, ppid) of every process.
fn processes() -> Vec<(i32, char, i32)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut fields = rest.split(' ');
        let state = fields.next().and_then(|s| s.chars().next()).unwrap_or('?');
        let ppid = fields.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        out.push((pid, state, ppid));
    }
    out
}

/// Zombies whose parent is one of `parents`.
fn zombies_of(parents: &[i32]) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, state, ppid)| *state == 'Z' && parents.contains(ppid))
        .map(|(pid, _, _)| pid)
        .collect()
}

/// Children of `parent`.
fn children_of(parent: i32) -> Vec<i32> {
    processes()
        .into_iter()
        .filter(|(_, _, ppid)| *ppid == parent)
        .map(|(pid, _, _)| pid)
        .collect()
}

/// The daemon's own pid (the init's child), from the status.
async fn daemon_pid(daemon: &TestDaemon) -> i32 {
    let (_, status) = daemon.get("/v1/status").await;
    status["pid"].as_i64().unwrap() as i32
}

/// A service that exits 3 is restarted after 0.5 s, then 1 s, then 2 s;
/// status and metrics show the backoff and the restarts; when the burst is
/// spent sandboxd exits with 3.
#[tokio::test]
async fn a_failing_service_is_restarted_with_growing_delays() {
    let dir = tempfile::tempdir().unwrap();
    let starts = dir.path().join("starts");
    let script = format!("date +%s%N >> {}; exit 3", starts.display());
    let mut daemon =
        TestDaemon::start_with(supervising(&script, &["--service-max-restarts", "3"])).await;
    let service = wait_service(&daemon, "a restart in backoff", |s| {
        s["state"] == "backoff" && s["restarts"].as_u64() >= Some(1)
    })
    .await;
    assert_eq!(service["last_exit"]["exit_code"], 3, "{service}");
    assert_eq!(service["restart_policy"], "on-failure", "{service}");
    assert!(service["next_start_at"].is_string(), "{service}");
    // Polled: on a loaded machine a backoff may be over before a read;
    // the next one (1 s, then 2 s) is seen.
    let mut metrics = String::new();
    support::wait_for(
        "the metrics to show the service in backoff",
        || async {
            let (_, metrics) = daemon.text("/metrics").await;
            (
                metrics.contains("sandboxd_service_state{state=\"backoff\"} 1"),
                metrics,
            )
        },
        &mut metrics,
    )
    .await;
    assert!(
        metrics.contains("sandboxd_service_restarts_total"),
        "{metrics}"
    );

    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(3), "log:\n{}", daemon.logs());
    let times = numbers(&starts);
    assert_eq!(times.len(), 4, "one start and three restarts: {times:?}");
    let gaps: Vec<f64> = times
        .windows(2)
        .map(|w| (w[1] - w[0]) as f64 / 1e9)
        .collect();
    for (gap, want) in gaps.iter().zip([0.5, 1.0, 2.0]) {
        assert!(
            *gap >= want * 0.95 && *gap < want * 2.0 + 1.0,
            "delays {gaps:?} should be about 0.5, 1, 2 s"
        );
    }
    assert!(daemon.logs().contains("giving up"), "{}", daemon.logs());
}

/// A burst of restarts ends with sandboxd exiting with the service's code,
/// for `on-failure` and for `always` (which restarts even after exit 0).
#[tokio::test]
async fn a_spent_burst_gives_up_with_the_services_code() {
    for (policy, code, max, starts_wanted) in [("on-failure", 42, 1, 2), ("always", 0, 2, 3)] {
        let dir = tempfile::tempdir().unwrap();
        let starts = dir.path().join("starts");
        let script = format!("date +%s%N >> {}; exit {code}", starts.display());
        let max = max.to_string();
        let mut daemon = TestDaemon::start_with(supervising(
            &script,
            &["--service-restart", policy, "--service-max-restarts", &max],
        ))
        .await;
        let status = daemon.wait_exit();
        assert_eq!(status.code(), Some(code), "{policy}: {}", daemon.logs());
        assert_eq!(numbers(&starts).len(), starts_wanted, "{policy}");
    }
}

/// `--service-restart never`: when the service exits, sandboxd shuts down
/// in order and exits with its code; with `on-failure`, a clean exit 0 also
/// ends sandboxd, with 0.
#[tokio::test]
async fn never_stops_with_the_services_code() {
    let mut daemon = TestDaemon::start_with(supervising(
        "sleep 0.3; exit 5",
        &["--service-restart", "never"],
    ))
    .await;
    let status = daemon.wait_exit();
    assert_eq!(status.code(), Some(5), "{}", daemon.logs());
    assert!(daemon.logs().contains("not restarted"), "{}", daemon.logs());

    let mut daemon = TestDaemon::start_with(supervising("sleep 0.3; exit 0", &[])).await;
    assert_eq!(daemon.wait_exit().code(), Some(0), "{}", daemon.logs());
}

/// Exit code mapping as tini's: a service killed by signal N makes sandboxd
/// exit 128+N (SIGKILL 137, and SIGTERM 143 when it does not handle the
/// SIGTERM sandboxd forwards); a spawn failure is 127.
#[tokio::test]
async fn exit_code_is_128_plus_the_killing_signal() {
    let mut daemon = TestDaemon::start_with(supervising(
        "sleep 0.2; kill -KILL $$",
        &["--service-restart", "never"],
    ))
    .await;
    assert_eq!(daemon.wait_exit().code(), Some(137), "{}", daemon.logs());

    let mut daemon = TestDaemon::start_with(supervising("exec sleep 1000", &[])).await;
    wait_service(&daemon, "the service running", |s| s["pid"].is_number()).await;
    daemon.signal(libc::SIGTERM);
    assert_eq!(daemon.wait_exit().code(), Some(143), "{}", daemon.logs());

    let mut daemon = TestDaemon::start_with(Options {
        args: vec![
            "--subreaper".into(),
            "--service-restart".into(),
            "never".into(),
        ],
        service: vec!["/nonexistent/agent-server".into()],
        ..Options::default()
    })
    .await;
    assert_eq!(daemon.wait_exit().code(), Some(127), "{}", daemon.logs());
}

/// SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 sent to sandboxd (its init) reach
/// the service; SIGINT reaches it as SIGINT and sandboxd exits with the
/// code the service chose. Even when sandboxd was started with those
/// signals ignored (nohup, a shell's background job), and the service
/// starts with no signal blocked or ignored.
#[tokio::test]
async fn signals_are_forwarded_to_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("got");
    let sigs = dir.path().join("sigs");
    let g = got.display();
    let script = format!(
        "grep -E '^Sig(Blk|Ign)' /proc/self/status > {sigs}; \
         for s in HUP QUIT USR1 USR2; do trap \"echo $s >> {g}\" $s; done; \
         trap 'echo INT >> {g}; exit 7' INT; echo ready >> {g}; \
         while :; do sleep 0.05; done",
        sigs = sigs.display()
    );
    let mut options = supervising(&script, &[]);
    options.wrapper = vec![
        "sh".into(),
        "-c".into(),
        "trap '' HUP INT QUIT USR1 USR2 PIPE; exec \"$@\"".into(),
        "sh".into(),
    ];
    let mut daemon = TestDaemon::start_with(options).await;
    let mut last = String::new();
    support::wait_for(
        "the service ready",
        || async {
            let text = std::fs::read_to_string(&got).unwrap_or_default();
            (text.contains("ready"), text)
        },
        &mut last,
    )
    .await;
    for (signal, name) in [
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
    ] {
        daemon.signal(signal);
        support::wait_for(
            &format!("{name} reaching the service"),
            || async {
                let text = std::fs::read_to_string(&got).unwrap_or_default();
                (text.lines().any(|l| l == name), text)
            },
            &mut last,
        )
        .await;
    }
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["service"]["restarts"], 0, "nothing restarted it");
    let sigs = std::fs::read_to_string(&sigs).unwrap();
    assert!(sigs.contains("SigBlk:\t0000000000000000"), "{sigs}");
    assert!(sigs.contains("SigIgn:\t0000000000000000"), "{sigs}");
    daemon.signal(libc::SIGINT);
    assert_eq!(daemon.wait_exit().code(), Some(7), "{}", daemon.logs());
    let text = std::fs::read_to_string(&got).unwrap();
    assert!(text.lines().any(|l| l == "INT"), "{text}");
}

/// Orphans a double-forking service leaves are reparented to sandboxd's
/// init and reaped there: no zombie is ever left under sandboxd.
#[tokio::test]
async fn orphans_of_a_double_forking_service_are_reaped() {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do (sleep 0.5 &); done; exec sleep 1000";
    let daemon = TestDaemon::start_with(supervising(script, &[])).await;
    let init = daemon.pid();
    let inner = daemon_pid(&daemon).await;
    assert_ne!(init, inner, "the daemon runs as the init's child");
    // While they live, the orphans are the init's children, not the daemon's.
    let mut last = Vec::new();
    support::wait_for(
        "orphans reparented to the init",
        || async {
            let orphans: Vec<i32> = children_of(init)
                .into_iter()
                .filter(|pid| *pid != inner)
                .collect();
            (orphans.len() >= 10, orphans)
        },
        &mut last,
    )
    .await;
    let orphans = last.clone();
    support::wait_for(
        "the orphans gone, none left a zombie",
        || async {
            let alive: Vec<i32> = orphans
                .iter()
                .copied()
                .filter(|pid| Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            (alive.is_empty(), alive)
        },
        &mut last,
    )
    .await;
    assert_eq!(zombies_of(&[init, inner]), Vec::<i32>::new());
}

/// 100 concurrent runs, each leaving an orphan of its own, all get their
/// own exit status while a service keeps leaving orphans for the init to
/// reap: no status is stolen, no zombie is left.
#[tokio::test]
async fn exit_statuses_of_100_concurrent_runs_are_right_while_orphans_are_reaped() {
    let script = "while :; do (true &); (sleep 0.01 &); sleep 0.01; done";
    let daemon = TestDaemon::start_with(supervising(script, &["--max-running", "128"])).await;
    let init = daemon.pid();
    let inner = daemon_pid(&daemon).await;
    let starts = (0..100).map(|i| {
        let daemon = &daemon;
        async move {
            let body = json!({
                "run_id": format!("r{i}"),
                "command": format!("(sleep 0.2 &); sleep 0.{}; exit {i}", i % 5),
            });
            daemon.start_run(body).await
        }
    });
    futures::future::join_all(starts).await;
    for i in 0..100 {
        let run = daemon.wait_ended(&format!("r{i}")).await;
        assert_eq!(run["exit_code"], i, "run r{i}: {run}");
        let want = if i == 0 { "succeeded" } else { "failed" };
        assert_eq!(run["state"], want, "run r{i}: {run}");
    }
    assert!(
        !daemon.logs().contains("lost"),
        "no run lost its status: {}",
        daemon.logs()
    );
    let mut last = Vec::new();
    support::wait_for(
        "no zombie under sandboxd",
        || async {
            // A zombie may exist for an instant before the init reaps it;
            // one that stays is the bug.
            let first = zombies_of(&[init, inner]);
            tokio::time::sleep(Duration::from_millis(200)).await;
            let again = zombies_of(&[init, inner]);
            let stuck: Vec<i32> = first.into_iter().filter(|p| again.contains(p)).collect();
            (stuck.is_empty(), stuck)
        },
        &mut last,
    )
    .await;
}

/// SIGTERM: new runs are refused with 503, the service and every run's
/// process group get SIGTERM, a run that ignores it is SIGKILLed after
/// --shutdown-grace and recorded as cancelled, and sandboxd exits with the
/// service's code.
#[tokio::test]
async fn sigterm_is_an_ordered_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let got = dir.path().join("service-got");
    let script = format!(
        "trap 'echo TERM >> {}; exit 0' TERM; while :; do sleep 0.05; done",
        got.display()
    );
    let shared = std::sync::Arc::new(tempfile::tempdir().unwrap());
    let mut options = supervising(&script, &["--shutdown-grace", "1.5"]);
    options.dir = Some(shared.clone());
    let mut daemon = TestDaemon::start_with(options).await;
    daemon
        .start_run(json!({"run_id": "stubborn", "command": "trap '' TERM; touch ready; sleep 60"}))
        .await;
    daemon
        .start_run(json!({"run_id": "polite", "command": "sleep 60"}))
        .await;
    for id in ["stubborn", "polite"] {
        daemon
            .wait_run(id, "running", |r| {
                r["state"] == "running" && r["pid"].is_number()
            })
            .await;
    }
    let ready = daemon.work_root().join("stubborn/ready");
    let mut seen = false;
    support::wait_for(
        "the stubborn run ignoring SIGTERM",
        || async { (ready.exists(), ready.exists()) },
        &mut seen,
    )
    .await;
    let http = reqwest::Client::new();
    let warm = http
        .get(format!("{}/v1/status", daemon.url))
        .header("X-Session-API-Key", KEY);
    assert_eq!(warm.send().await.unwrap().status(), StatusCode::OK);

    let asked = Instant::now();
    daemon.signal(libc::SIGTERM);
    // The kept-alive connection still answers, but once the daemon has
    // seen the signal (forwarded by its init) no run starts.
    let mut refused = None;
    while asked.elapsed() < Duration::from_secs(1) {
        let res = http
            .post(format!("{}/v1/runs", daemon.url))
            .header("X-Session-API-Key", KEY)
            .json(&json!({"command": "true"}))
            .send()
            .await;
        match res {
            Ok(res) if res.status() == StatusCode::SERVICE_UNAVAILABLE => {
                let body: Value = res.json().await.unwrap();
                refused = Some(body);
                break;
            }
            Ok(res) => assert_eq!(res.status(), StatusCode::CREATED, "before the signal"),
            Err(err) => panic!("the kept-alive connection closed early: {err}"),
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let body = refused.expect("a 503 once shutting down");
    assert_eq!(body["error"]["code"], "shutting_down", "{body}");
    let status = daemon.wait_exit();
    let took = asked.elapsed();
    assert_eq!(
        status.code(),
        Some(0),
        "the service exited 0: {}",
        daemon.logs()
    );
    assert!(
        took >= Duration::from_millis(1400),
        "SIGKILL only after the grace ({took:?})"
    );
    assert!(
        took < Duration::from_secs(6),
        "exit soon after the grace ({took:?})"
    );
    assert!(std::fs::read_to_string(&got).unwrap().contains("TERM"));

    // What was recorded is what a restarted daemon reads back.
    let daemon = TestDaemon::start_with(Options {
        dir: Some(shared),
        ..Options::default()
    })
    .await;
    let (_, stubborn) = daemon.get("/v1/runs/stubborn").await;
    assert_eq!(stubborn["state"], "cancelled", "{stubborn}");
    assert_eq!(stubborn["signal"], "SIGKILL", "{stubborn}");
    let (_, polite) = daemon.get("/v1/runs/polite").await;
    assert_eq!(polite["state"], "cancelled", "{polite}");
    assert_eq!(polite["signal"], "SIGTERM", "{polite}");
}

/// The status shows the service's state (starting until the probe first
/// sees it healthy, running, unhealthy while the probe fails, running
/// again), its pid, and its last output lines with the session key masked;
/// its output reaches sandboxd's stdout prefixed when asked; it gets the
/// daemon's environment but not the init's marker.
#[tokio::test]
async fn status_shows_the_services_health_and_output() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let www = dir.path().join("www");
    std::fs::create_dir(&www).unwrap();
    std::fs::write(www.join("alive"), "ok").unwrap();
    let env_file = dir.path().join("env");
    // The key file the harness writes sits in the daemon's dir; the service
    // prints the key it finds in its env.
    let script = format!(
        "env > {env}; echo \"hello key=$SESSION_API_KEY\"; echo oops >&2; \
         exec python3 -m http.server --bind 127.0.0.1 --directory {www} {port} 2>/dev/null",
        env = env_file.display(),
        www = www.display(),
    );
    let mut options = supervising(
        &script,
        &[
            "--agent-server-url",
            &format!("http://127.0.0.1:{port}"),
            "--service-output",
            "prefixed",
        ],
    );
    options.env = vec![
        ("SESSION_API_KEY".into(), KEY.into()),
        ("AGENT_FLAVOUR".into(), "mint".into()),
    ];
    let daemon = TestDaemon::start_with(options).await;
    let service = wait_service(&daemon, "the service running", |s| s["state"] == "running").await;
    let pid = service["pid"].as_i64().unwrap() as i32;
    let lines: Vec<String> = service["recent_output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            format!(
                "{}:{}",
                l["stream"].as_str().unwrap(),
                l["text"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        lines.contains(&"stdout:hello key=****".to_owned()),
        "{lines:?}"
    );
    assert!(lines.contains(&"stderr:oops".to_owned()), "{lines:?}");
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["agent_server"]["healthy"], true, "{status}");
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert!(
        env.contains("AGENT_FLAVOUR=mint"),
        "the daemon's env: {env}"
    );
    assert!(!env.contains("SANDBOXD_INIT_CHILD"), "{env}");
    assert!(
        daemon.stdout().contains("[service] hello key=****"),
        "{}",
        daemon.stdout()
    );
    assert!(!daemon.stdout().contains(KEY));

    // Frozen, it stops answering the probe: unhealthy, then running again.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let service = wait_service(&daemon, "the service unhealthy", |s| {
        s["state"] == "unhealthy"
    })
    .await;
    assert_eq!(service["pid"], pid, "not restarted for being unhealthy");
    unsafe { libc::kill(pid, libc::SIGCONT) };
    wait_service(&daemon, "the service running again", |s| {
        s["state"] == "running"
    })
    .await;
    let (_, metrics) = daemon.text("/metrics").await;
    assert!(
        metrics.contains("sandboxd_service_state{state=\"running\"} 1"),
        "{metrics}"
    );
}

/// A crashed daemon (SIGKILL, as the OOM killer does) is started again by
/// its init: a run started before the crash is re-attached and ends with
/// its own exit status, and the service the dead daemon left is replaced.
#[tokio::test]
async fn the_init_restarts_a_crashed_daemon_and_runs_survive() {
    let daemon = TestDaemon::start_with(supervising("exec sleep 1000", &[])).await;
    let service = wait_service(&daemon, "the service started", |s| s["pid"].is_number()).await;
    let old_service = service["pid"].as_i64().unwrap() as i32;
    daemon
        .start_run(json!({"run_id": "survivor", "command": "sleep 1.5; exit 9"}))
        .await;
    daemon
        .wait_run("survivor", "running", |r| r["state"] == "running")
        .await;
    let inner = daemon_pid(&daemon).await;
    unsafe { libc::kill(inner, libc::SIGKILL) };

    let mut last = Vec::new();
    support::wait_for(
        "the daemon listening again",
        || async {
            let urls = daemon.listening();
            (urls.len() >= 2, urls)
        },
        &mut last,
    )
    .await;
    let url = last[1].clone();
    let http = reqwest::Client::new();
    let get = |path: &str| {
        support::send(
            http.get(format!("{url}{path}"))
                .header("X-Session-API-Key", KEY),
        )
    };
    let mut run = Value::Null;
    support::wait_for(
        "the re-attached run ending",
        || async {
            let (_, run) = get("/v1/runs/survivor").await;
            (run["state"] == "failed", run)
        },
        &mut run,
    )
    .await;
    assert_eq!(run["exit_code"], 9, "{run}");
    let (_, status) = get("/v1/status").await;
    assert_ne!(status["pid"], inner, "a new daemon");
    assert!(!support::alive(old_service), "the old service was stopped");
    assert!(status["service"]["pid"].is_number(), "{status}");
    assert_ne!(status["service"]["pid"], old_service, "{status}");
}

/// As PID 1 of a PID namespace (`unshare --pid --fork`), sandboxd is the
/// init without being asked: orphans are reaped, SIGTERM is an ordered
/// shutdown, the exit code is the service's. Not root, the PID namespace
/// comes with a user namespace (`--user --map-root-user`): what is checked
/// here, the init's duties, does not depend on the daemon's uid.
#[tokio::test]
async fn as_pid_1_in_a_pid_namespace() {
    let mut unshare: Vec<String> = ["unshare", "--pid", "--fork", "--mount-proc"]
        .map(String::from)
        .to_vec();
    if !support::is_root() {
        unshare.splice(1..1, ["--user".into(), "--map-root-user".into()]);
    }
    let probe = std::process::Command::new(&unshare[0])
        .args(&unshare[1..])
        .arg("true")
        .status();
    if !matches!(probe, Ok(status) if status.success()) {
        eprintln!("skipped: {} does not work here", unshare.join(" "));
        return;
    }
    let script = "trap 'exit 4' TERM; for i in 1 2 3 4 5; do (sleep 0.3 &); done; \
                  while :; do sleep 0.05; done";
    let daemon = TestDaemon::start_with(Options {
        wrapper: unshare,
        service: vec!["sh".into(), "-c".into(), script.into()],
        ..Options::default()
    })
    .await;
    let unshare = daemon.pid();
    let mut last = Vec::new();
    support::wait_for(
        "sandboxd as PID 1 under unshare",
        || async {
            let children = children_of(unshare);
            (children.len() == 1, children)
        },
        &mut last,
    )
    .await;
    let init = last[0];
    let logs = daemon.logs();
    assert!(logs.contains("\"pid1\":true"), "{logs}");
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["pid"], 2, "the daemon is PID 2 inside: {status}");
    let inner = children_of(init)[0];
    let mut stuck = (Vec::new(), 0);
    support::wait_for(
        "the orphans reaped",
        || async {
            tokio::time::sleep(Duration::from_millis(400)).await;
            let zombies = zombies_of(&[init, inner]);
            let orphans = children_of(init).len();
            (zombies.is_empty() && orphans == 1, (zombies, orphans))
        },
        &mut stuck,
    )
    .await;
    unsafe { libc::kill(init, libc::SIGTERM) };
    let mut daemon = daemon;
    assert_eq!(daemon.wait_exit().code(), Some(4), "{}", daemon.logs());
}

/// Under systemd with `WatchdogSec`, WATCHDOG=1 pings follow READY=1, at
/// about half the watchdog period, while the API answers.
#[tokio::test]
async fn watchdog_pings_while_the_api_answers() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(support::TIMEOUT)).unwrap();
    let daemon = TestDaemon::start_with(Options {
        env: vec![
            ("NOTIFY_SOCKET".into(), socket_path.display().to_string()),
            ("WATCHDOG_USEC".into(), "400000".into()),
        ],
        // systemd names the watched pid; `exec` keeps the shell's.
        wrapper: vec![
            "sh".into(),
            "-c".into(),
            "WATCHDOG_PID=$$ exec \"$@\"".into(),
            "sh".into(),
        ],
        ..Options::default()
    })
    .await;
    let mut seen = Vec::new();
    let started = Instant::now();
    let mut buf = [0u8; 256];
    while seen.iter().filter(|m| *m == "WATCHDOG=1").count() < 3 {
        let n = socket.recv(&mut buf).expect("a notify message");
        seen.push(String::from_utf8_lossy(&buf[..n]).trim().to_owned());
    }
    assert_eq!(seen[0], "READY=1", "{seen:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(350),
        "pings are paced by the period: {seen:?}"
    );
    let (_, metrics) = daemon.text("/metrics").await;
    assert!(
        metrics.contains("route=\"/healthz\""),
        "the ping checked the API"
    );
}

/// systemd/sandboxd.service passes `systemd-analyze verify` without a
/// warning (with ExecStart pointed at the built binary), and says what
/// the issue asks of it.
#[test]
fn systemd_unit_verifies() {
    let unit_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/sandboxd.service");
    let unit = std::fs::read_to_string(&unit_path).unwrap();
    for needle in [
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "OOMScoreAdjust=-900",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=",
        "PrivateTmp=no",
        "EnvironmentFile=",
        "KillMode=process",
        "ExecStart=/usr/local/bin/sandboxd serve",
    ] {
        assert!(unit.contains(needle), "the unit lacks {needle}");
    }
    let Ok(tool) = which("systemd-analyze") else {
        eprintln!("skipped: no systemd-analyze");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("sandboxd.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/sandboxd", support::bin()),
    )
    .unwrap();
    let out = std::process::Command::new(tool)
        .arg("verify")
        .arg(&copy)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "systemd-analyze verify: {stderr}");
    let own: Vec<&str> = stderr.lines().filter(|l| l.contains("sandboxd")).collect();
    assert!(own.is_empty(), "warnings about the unit: {own:?}");
}

fn which(name: &str) -> Result<std::path::PathBuf, ()> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .ok_or(())
}

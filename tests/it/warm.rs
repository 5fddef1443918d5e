//! Warm shims (`--warm-shims N`): a run takes a shim started ahead of need,
//! the pool refills, a dead idle shim is never used and is replaced, idle
//! shims never outlive the daemon (kill -9, shutdown, subreaper restart),
//! and `--warm-shims 0` starts every shim on demand.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{self, Options, TestDaemon};

/// A daemon (the real binary, so its pid is its own) with these flags.
async fn binary_daemon(args: &[&str]) -> TestDaemon {
    TestDaemon::start_with(Options {
        args: args.iter().map(|a| (*a).to_owned()).collect(),
        binary: true,
        ..Options::default()
    })
    .await
}

/// The parent pid of `pid`, from `/proc/<pid>/stat`.
fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The process name of `pid` (`/proc/<pid>/comm`).
fn name_of(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_owned()
}

/// Live processes running `sandboxd shim` whose parent is `parent`.
fn shim_processes_of(parent: i32) -> Vec<i32> {
    let mut shims: Vec<i32> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent) && support::alive(*pid))
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|cmdline| cmdline.split(|b| *b == 0).any(|arg| arg == b"shim"))
        })
        .collect();
    shims.sort_unstable();
    shims
}

/// The daemon's shim templates (one, or none with `--warm-shims 0`).
fn templates_of(daemon: i32) -> Vec<i32> {
    shim_processes_of(daemon)
        .into_iter()
        .filter(|pid| name_of(*pid) == "shim-template")
        .collect()
}

/// The live shims of the daemon `daemon`, idle or running a run: those it
/// started and those its template forked (not the template).
fn shims_of(daemon: i32) -> Vec<i32> {
    let mut shims: Vec<i32> = shim_processes_of(daemon)
        .into_iter()
        .chain(templates_of(daemon).into_iter().flat_map(shim_processes_of))
        .filter(|pid| name_of(*pid) != "shim-template")
        .collect();
    shims.sort_unstable();
    shims
}

/// The daemon's pid, from its status.
async fn daemon_pid(daemon: &TestDaemon) -> i32 {
    let (_, status) = daemon.get("/v1/status").await;
    status["pid"].as_i64().unwrap() as i32
}

/// Waits until the status says `ready` warm shims and that many idle shims
/// are the daemon's (see [`shims_of`]); returns their pids.
async fn wait_ready(daemon: &TestDaemon, ready: usize) -> Vec<i32> {
    wait_ready_beside(daemon, ready, &[]).await
}

/// [`wait_ready`], with `busy` shims (running a run) beside the idle ones.
async fn wait_ready_beside(daemon: &TestDaemon, ready: usize, busy: &[i32]) -> Vec<i32> {
    let pid = daemon_pid(daemon).await;
    let mut last = (Value::Null, Vec::new());
    support::wait_for(
        "the warm pool full",
        || async {
            let (_, status) = daemon.get("/v1/status").await;
            let mut shims = shims_of(pid);
            shims.retain(|shim| !busy.contains(shim));
            let done = status["warm_shims"]["ready"] == ready && shims.len() == ready;
            (done, (status["warm_shims"].clone(), shims))
        },
        &mut last,
    )
    .await;
    last.1
}

/// Waits until none of `pids` exists any more (exited and reaped).
async fn wait_gone(pids: &[i32], what: &str) {
    let mut last = Vec::new();
    support::wait_for(
        what,
        || async {
            let left: Vec<i32> = pids
                .iter()
                .copied()
                .filter(|pid| std::path::Path::new(&format!("/proc/{pid}")).exists())
                .collect();
            (left.is_empty(), left)
        },
        &mut last,
    )
    .await;
}

/// A run's processes are the children of a shim that was already waiting
/// before the run was asked for, forked by the daemon's one shim
/// template; the pool then refills with a new shim, forked by the same
/// template.
#[tokio::test]
async fn a_run_takes_a_warm_shim_and_the_pool_refills() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["warm_shims"]["target"], 1, "{status}");
    let waiting = wait_ready(&daemon, 1).await;
    let templates = templates_of(daemon_pid(&daemon).await);
    assert_eq!(templates.len(), 1, "one template: {templates:?}");
    assert_eq!(parent_of(waiting[0]), Some(templates[0]), "forked");
    assert_eq!(name_of(waiting[0]), "sandboxd-shim");

    daemon
        .start_run(json!({"run_id": "w1", "command": "sleep 30"}))
        .await;
    let run = daemon
        .wait_run("w1", "running", |r| r["pid"].is_number())
        .await;
    let child = run["pid"].as_i64().unwrap() as i32;
    assert_eq!(
        parent_of(child),
        Some(waiting[0]),
        "the run is on the warm shim"
    );
    let exe = std::fs::read_link(format!("/proc/{}/exe", waiting[0])).unwrap();
    assert!(
        exe.ends_with("sandboxd-shim"),
        "installed beside sandboxd, the shim's own executable runs it: {exe:?}"
    );

    let refilled = wait_ready_beside(&daemon, 1, &waiting).await;
    assert_ne!(refilled, waiting, "a new shim waits for the next run");
    assert_eq!(parent_of(refilled[0]), Some(templates[0]), "forked");
    let (code, _) = daemon.post("/v1/runs/w1/cancel", json!({})).await;
    assert!(code.is_success(), "{code}");
    let ended = daemon.wait_ended("w1").await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
}

/// Threads of `pid`, from `/proc/<pid>/task`.
fn threads_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| tasks.count())
        .unwrap_or(0)
}

/// A shim is one thread, idle and while its run runs: the run's output,
/// signals, control lines and deadline all reach that thread, so the
/// run's start and end wake nothing else. Its deadline still ends the run.
#[tokio::test]
async fn a_shim_is_one_thread_idle_and_running() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let waiting = wait_ready(&daemon, 1).await;
    assert_eq!(threads_of(waiting[0]), 1, "an idle warm shim");
    daemon
        .start_run(json!({"run_id": "one", "command": "echo started; sleep 30", "timeout_s": 2}))
        .await;
    daemon
        .wait_run("one", "running", |r| r["stdout_bytes"].as_u64() > Some(0))
        .await;
    assert_eq!(threads_of(waiting[0]), 1, "a shim whose run runs");
    let ended = daemon.wait_ended("one").await;
    assert_eq!(ended["state"], "timed_out", "{ended}");
}

/// A run's processes start in the normal scheduling class: the idle class
/// a shim takes just before it tells the daemon of the run's end reaches
/// neither its setup nor its command, nor the next run's (on the
/// replacement shim), nor a durable run's (whose shim flushes after `Ended`).
#[tokio::test]
async fn runs_start_in_the_normal_scheduling_class() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let cwd = daemon.dir.path().join("sched");
    std::fs::create_dir_all(&cwd).unwrap();
    // Field 41 of /proc/<pid>/stat is the scheduling policy: 0 is the
    // normal class, 5 the idle one.
    let policy = "awk '{print $41}' /proc/self/stat";
    std::fs::write(cwd.join("setup.sh"), format!("{policy} > setup-policy\n")).unwrap();
    let command = format!("cat setup-policy; {policy}");
    for run_id in ["first", "second"] {
        let run = daemon
            .exec(json!({"run_id": run_id, "command": command, "cwd": cwd, "wait": true}))
            .await;
        assert_eq!(run["stdout"], "0\n0\n", "{run}");
    }
    daemon
        .start_run(json!({"run_id": "durable", "command": command, "cwd": cwd}))
        .await;
    let ended = daemon.wait_ended("durable").await;
    assert_eq!(ended["state"], "succeeded", "{ended}");
    let (_, logs) = daemon.text("/v1/runs/durable/logs?stream=stdout").await;
    assert_eq!(logs, "0\n0\n");
}

/// A run that keeps every core busy does not keep the shims of other runs
/// alive: a shim in the idle class after `Ended` still gets the CPU to
/// remove its cgroup and exit, and its run is answered first.
#[tokio::test]
async fn a_cpu_hog_does_not_hold_the_shims_of_ended_runs() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let pid = daemon_pid(&daemon).await;
    let hog_shim = wait_ready(&daemon, 1).await;
    let spin = "for i in 1 2 3; do (while :; do :; done) & done; wait";
    daemon
        .start_run(json!({"run_id": "hog", "command": spin, "timeout_s": 60}))
        .await;
    daemon
        .wait_run("hog", "running", |r| r["pid"].is_number())
        .await;
    for _ in 0..5 {
        let run = daemon
            .exec(json!({"command": ["true"], "wait": true}))
            .await;
        assert_eq!(run["state"], "succeeded", "{run}");
    }
    // Left: the hog's shim and the one idle warm shim.
    let mut last = Vec::new();
    support::wait_for(
        "the shims of the ended runs gone while the hog spins",
        || async {
            let mut others = shims_of(pid);
            others.retain(|shim| !hog_shim.contains(shim));
            (others.len() <= 1, others)
        },
        &mut last,
    )
    .await;
    let (_, hog) = daemon.get("/v1/runs/hog").await;
    assert_eq!(hog["state"], "running", "the CPU stayed busy: {hog}");
    daemon.post("/v1/runs/hog/cancel", json!({})).await;
    let ended = daemon.wait_ended("hog").await;
    assert_eq!(ended["state"], "cancelled", "{ended}");
}

/// Idle shims killed behind the daemon's back are never handed a run: the
/// next run starts and succeeds, and the pool is full again soon after.
#[tokio::test]
async fn a_warm_shim_that_died_idle_is_skipped_and_replaced() {
    let daemon = binary_daemon(&["--warm-shims", "2"]).await;
    let killed = wait_ready(&daemon, 2).await;
    for pid in &killed {
        // SAFETY: kill with plain integers.
        unsafe { libc::kill(*pid, libc::SIGKILL) };
    }
    wait_gone(&killed, "the killed shims reaped").await;

    let run = daemon
        .exec(json!({"command": "echo still-works", "wait": true}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert!(
        run["stdout"].as_str().unwrap().contains("still-works"),
        "{run}"
    );

    let replaced = wait_ready(&daemon, 2).await;
    assert!(
        replaced.iter().all(|pid| !killed.contains(pid)),
        "{replaced:?}"
    );
}

/// Idle shims and their template end with their daemon: after kill -9
/// (their channels close with the daemon) and after an ordered shutdown.
#[tokio::test]
async fn idle_warm_shims_never_outlive_the_daemon() {
    let mut killed = binary_daemon(&["--warm-shims", "3"]).await;
    let mut orphans = wait_ready(&killed, 3).await;
    orphans.extend(templates_of(daemon_pid(&killed).await));
    assert_eq!(orphans.len(), 4, "three shims and their template");
    killed.kill9();
    wait_gone(&orphans, "idle shims gone after kill -9 of the daemon").await;

    let mut stopped = binary_daemon(&["--warm-shims", "3"]).await;
    let mut idle = wait_ready(&stopped, 3).await;
    idle.extend(templates_of(daemon_pid(&stopped).await));
    stopped.signal(libc::SIGTERM);
    assert!(stopped.wait_exit().success());
    wait_gone(&idle, "idle shims gone after the shutdown").await;
}

/// An idle warm shim prepares its run cgroup ahead of the spec, named
/// after the shim (nothing of a run), and removes it when it ends unused.
#[tokio::test]
async fn an_idle_shim_prepares_its_cgroup_and_removes_it_unused() {
    let Some(cgroups) = crate::containment::own_writable_cgroup() else {
        eprintln!("needs a writable cgroup v2; skipped");
        return;
    };
    let mut daemon = binary_daemon(&["--warm-shims", "2"]).await;
    let idle = wait_ready(&daemon, 2).await;
    let dirs: Vec<_> = idle
        .iter()
        .map(|pid| cgroups.join(format!("sandboxd-run-{pid}")))
        .collect();
    let mut missing = Vec::new();
    support::wait_for(
        "the idle shims' cgroups",
        || async {
            let missing: Vec<_> = dirs.iter().filter(|d| !d.exists()).cloned().collect();
            (missing.is_empty(), missing)
        },
        &mut missing,
    )
    .await;
    daemon.signal(libc::SIGTERM);
    assert!(daemon.wait_exit().success());
    wait_gone(&idle, "idle shims gone after the shutdown").await;
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
}

/// A warm shim whose prepared cgroup was removed while it waited (an
/// empty cgroup can be) makes it again: the run still starts inside a
/// cgroup of its own.
#[tokio::test]
async fn a_prepared_cgroup_removed_while_idle_is_made_again() {
    let Some(cgroups) = crate::containment::own_writable_cgroup() else {
        eprintln!("needs a writable cgroup v2; skipped");
        return;
    };
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let idle = wait_ready(&daemon, 1).await;
    let dir = cgroups.join(format!("sandboxd-run-{}", idle[0]));
    let mut present = false;
    support::wait_for(
        "the idle shim's cgroup",
        || async { (dir.exists(), dir.exists()) },
        &mut present,
    )
    .await;
    std::fs::remove_dir(&dir).unwrap();
    let run = daemon
        .exec(json!({"command": ["cat", "/proc/self/cgroup"], "wait": true}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/sandboxd-run-{}", idle[0]))),
        "{stdout}"
    );
}

/// In subreaper mode a killed daemon's idle shims and template exit and
/// are reaped by the init (no zombie is left), while the restarted daemon
/// warms a new pool.
#[tokio::test]
async fn the_init_reaps_the_idle_shims_of_a_killed_daemon() {
    let daemon = binary_daemon(&["--subreaper", "--warm-shims", "2"]).await;
    let inner = daemon_pid(&daemon).await;
    let mut idle = wait_ready(&daemon, 2).await;
    idle.extend(templates_of(inner));
    assert_eq!(idle.len(), 3, "two shims and their template");
    // SAFETY: kill with plain integers.
    unsafe { libc::kill(inner, libc::SIGKILL) };
    wait_gone(&idle, "the old idle shims and template exited and reaped").await;
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
    let mut status = Value::Null;
    support::wait_for(
        "the new daemon's pool full",
        || async {
            let (_, status) = support::send(
                reqwest::Client::new()
                    .get(format!("{url}/v1/status"))
                    .header("X-Session-API-Key", support::KEY),
            )
            .await;
            (status["warm_shims"]["ready"] == 2, status)
        },
        &mut status,
    )
    .await;
    assert_ne!(status["pid"], inner, "{status}");
}

/// The count of runs `/metrics` says were handed to a `kind` shim.
async fn runs_on(daemon: &TestDaemon, kind: &str) -> u64 {
    let (_, metrics) = daemon.text("/metrics").await;
    let prefix = format!("sandboxd_run_shims_total{{shim=\"{kind}\"}} ");
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map_or(0, |count| count.trim().parse().unwrap())
}

/// A caller running one run after another gets a warm shim every time:
/// the next run asks while the last one's replacement is still starting,
/// and waits for it rather than start a second shim.
#[tokio::test]
async fn back_to_back_runs_all_land_on_warm_shims() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    wait_ready(&daemon, 1).await;
    for i in 0..30 {
        let run = daemon
            .exec(json!({"command": ["true"], "wait": true, "setup": false}))
            .await;
        assert_eq!(run["exit_code"], 0, "run {i}: {run}");
    }
    assert_eq!(runs_on(&daemon, "cold").await, 0);
    assert_eq!(runs_on(&daemon, "warm").await, 30);
}

/// More concurrent runs than warm shims: the rest start cold, every run is
/// right, and each run's output is its own.
#[tokio::test]
async fn a_burst_beyond_the_pool_starts_shims_cold() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--warm-shims".into(), "1".into()],
        ..Options::default()
    })
    .await;
    let runs = (0..24).map(|i| {
        let daemon = &daemon;
        async move {
            let body = json!({"command": format!("echo run-{i}; exit {}", i % 3), "wait": true});
            (i, daemon.exec(body).await)
        }
    });
    for (i, run) in futures::future::join_all(runs).await {
        assert_eq!(run["exit_code"], i % 3, "{run}");
        assert_eq!(run["stdout"], format!("run-{i}\n"), "{run}");
    }
    let cold = runs_on(&daemon, "cold").await;
    assert!(cold > 0, "a burst of 24 on a pool of 1 starts shims cold");
    assert_eq!(cold + runs_on(&daemon, "warm").await, 24);
}

/// `--warm-shims 0`: no shim waits while the daemon is idle, and runs work.
#[tokio::test]
async fn zero_warm_shims_start_every_shim_on_demand() {
    let daemon = binary_daemon(&["--warm-shims", "0"]).await;
    let run = daemon
        .exec(json!({"command": "echo cold", "wait": true}))
        .await;
    assert_eq!(run["stdout"], "cold\n", "{run}");
    assert_eq!(runs_on(&daemon, "cold").await, 1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (_, status) = daemon.get("/v1/status").await;
    assert_eq!(status["warm_shims"], json!({"target": 0, "ready": 0}));
    let pid = daemon_pid(&daemon).await;
    assert!(shims_of(pid).is_empty());
    assert!(templates_of(pid).is_empty(), "no template without a pool");
}

/// A run of sandboxd's uid that sends `signal` to its shim's parent, the
/// template that forked it; returns the pid it signalled.
async fn a_run_signals_its_template(daemon: &TestDaemon, signal: &str) -> i32 {
    let script = format!(
        "template=$(cut -d' ' -f4 /proc/$PPID/stat); kill -s {signal} \"$template\"; echo \"$template\""
    );
    let run = daemon
        .exec(json!({"command": ["sh", "-c", script], "wait": true}))
        .await;
    assert_eq!(run["state"], "succeeded", "the attacking run itself: {run}");
    run["stdout"].as_str().unwrap().trim().parse().unwrap()
}

/// A run that kills the template costs no run (its own included): the
/// shims it forked still take runs, the next refill starts a new
/// template, and the pool is forked from it again.
#[tokio::test]
async fn a_killed_template_is_started_again() {
    let daemon = binary_daemon(&["--warm-shims", "2"]).await;
    let pid = daemon_pid(&daemon).await;
    let forked = wait_ready(&daemon, 2).await;
    let old = templates_of(pid);
    assert_eq!(old.len(), 1, "{old:?}");
    let signalled = a_run_signals_its_template(&daemon, "KILL").await;
    assert_eq!(signalled, old[0], "the run found its template");
    wait_gone(&old, "the killed template reaped").await;

    for i in 0..4 {
        let run = daemon
            .exec(json!({"command": format!("echo run-{i}"), "wait": true}))
            .await;
        assert_eq!(run["stdout"], format!("run-{i}\n"), "{run}");
    }
    assert_eq!(
        runs_on(&daemon, "warm").await,
        5,
        "every run on a warm shim, the attacking one too"
    );
    let refilled = wait_ready(&daemon, 2).await;
    let new = templates_of(pid);
    assert_eq!(new.len(), 1, "{new:?}");
    assert_ne!(new, old);
    for shim in refilled {
        assert!(!forked.contains(&shim), "{shim} was idle before");
        assert_eq!(parent_of(shim), Some(new[0]), "forked by the new template");
    }
}

/// Where `sandboxd-shim` is not installed beside sandboxd, runs go
/// through `sandboxd shim` and work the same: output, exit code, and the
/// shim process is sandboxd's own executable.
#[tokio::test]
async fn without_sandboxd_shim_runs_use_sandboxd_shim() {
    let daemon = TestDaemon::start_with(Options {
        own_shim: true,
        ..Options::default()
    })
    .await;
    let run = daemon
        .exec(json!({"command": "echo through sandboxd; exit 3"}))
        .await;
    assert_eq!(run["exit_code"], 3, "{run}");
    assert_eq!(run["stdout"], "through sandboxd\n", "{run}");

    daemon
        .start_run(json!({"run_id": "own", "command": "sleep 30"}))
        .await;
    let running = daemon
        .wait_run("own", "running", |r| r["pid"].is_number())
        .await;
    let shim = parent_of(running["pid"].as_i64().unwrap() as i32).unwrap();
    let exe = std::fs::read_link(format!("/proc/{shim}/exe")).unwrap();
    assert_eq!(exe, std::path::Path::new(support::bin()), "{exe:?}");
    let (code, _) = daemon.post("/v1/runs/own/cancel", json!({})).await;
    assert!(code.is_success(), "{code}");
    assert_eq!(daemon.wait_ended("own").await["state"], "cancelled");
}

/// A run of sandboxd's uid that stops the template (SIGSTOP) costs no
/// run: the pool gives it up, kills it, and starts its shims itself;
/// every run still succeeds.
#[tokio::test]
async fn a_stopped_template_costs_no_run() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    let pid = daemon_pid(&daemon).await;
    wait_ready(&daemon, 1).await;
    let template = templates_of(pid);
    assert_eq!(template.len(), 1, "{template:?}");
    let signalled = a_run_signals_its_template(&daemon, "STOP").await;
    assert_eq!(signalled, template[0], "the run found its template");

    for i in 0..4 {
        let run = daemon
            .exec(json!({"command": format!("echo run-{i}"), "wait": true}))
            .await;
        assert_eq!(run["state"], "succeeded", "{run}");
        assert_eq!(run["stdout"], format!("run-{i}\n"), "{run}");
    }
    wait_gone(&template, "the stopped template killed and reaped").await;
    let idle = wait_ready(&daemon, 1).await;
    assert_eq!(
        parent_of(idle[0]),
        Some(pid),
        "started by the daemon meanwhile"
    );
}

/// A burst beyond the pool gets its shims forked by the template too,
/// not started: every run's shim is the template's child (twelve runs at
/// once on a pool of one).
#[tokio::test]
async fn a_burst_beyond_the_pool_is_forked_by_the_template() {
    let daemon = binary_daemon(&["--warm-shims", "1"]).await;
    wait_ready(&daemon, 1).await;
    let template = templates_of(daemon_pid(&daemon).await);
    assert_eq!(template.len(), 1, "{template:?}");
    let starts = (0..12).map(|i| {
        let daemon = &daemon;
        async move {
            daemon
                .start_run(json!({"run_id": format!("b{i}"), "command": "sleep 30"}))
                .await
        }
    });
    futures::future::join_all(starts).await;
    for i in 0..12 {
        let run = daemon
            .wait_run(&format!("b{i}"), "running", |r| r["pid"].is_number())
            .await;
        let shim = parent_of(run["pid"].as_i64().unwrap() as i32).unwrap();
        assert_eq!(parent_of(shim), Some(template[0]), "run b{i}: {run}");
    }
    // Refills may serve a few of them; most find the pool empty.
    assert!(runs_on(&daemon, "cold").await >= 1, "beyond the pool");
    for i in 0..12 {
        let (code, _) = daemon
            .post(&format!("/v1/runs/b{i}/cancel"), json!({}))
            .await;
        assert!(code.is_success(), "{code}");
    }
}

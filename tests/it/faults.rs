//! Faults and hostile clients against the real daemon: a full or
//! unwritable state dir, a file-size limit, `kill -9` during record
//! writes, a hanging callback receiver or secret server, silent and slow
//! clients, stalled bodies, and the custody of the session key.
//!
//! Related tests elsewhere (listed by `bench/reliability/50-faults.sh`):
//! `upload::full_disk_is_507` (work root full), `upload::limits_are_413`,
//! `upload::client_disconnect_leaves_nothing`, `daemon::errors_are_json`
//! (413, 431), `daemon::every_protected_route_needs_the_key`,
//! `callbacks::run_token_scope`, `callbacks::crash_and_restart_lose_no_callback`,
//! `callbacks::a_hanging_service_is_timed_out_and_retried`,
//! `secrets::hanging_server_hits_the_timeout`,
//! `secrets::proc_environ_holds_no_key_and_sandboxd_is_unreadable`,
//! `runs::session_key_stays_out_of_children`.
//!
//! Each test prints one `RELIABILITY|<test>|<injected>|<lost>` line (seen
//! with `--nocapture`) for the reliability report.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::callbacks::sink::{CallbackSink, Reply};
use crate::secrets::SecretServer;
use crate::support::{self, Options, TestDaemon, KEY};

/// One line of the reliability report: what the test injected and what
/// was lost.
fn report(test: &str, injected: &str, lost: &str) {
    eprintln!("RELIABILITY|{test}|{injected}|{lost}");
}

/// `serve` flags: callbacks retried within 50 ms, plus `extra`.
fn flags(extra: &[&str]) -> Vec<String> {
    ["--callback-backoff", "0.05", "--kill-grace", "1"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

/// A tmpfs mounted for the test's life (root only).
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    pub fn mount(path: &Path, options: &str) -> Tmpfs {
        std::fs::create_dir_all(path).unwrap();
        let status = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "tmpfs"])
            .arg(path)
            .status()
            .unwrap();
        assert!(
            status.success(),
            "mount -t tmpfs -o {options} {}",
            path.display()
        );
        Tmpfs(path.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Fills the file system holding `dir` with one file, until not one more
/// page fits; returns the file.
pub fn fill(dir: &Path) -> PathBuf {
    let path = dir.join("filler");
    let mut file = File::create(&path).unwrap();
    for size in [64 * 1024, 512] {
        let chunk = vec![0xa5u8; size];
        loop {
            match file.write_all(&chunk) {
                Ok(()) => continue,
                Err(err) if err.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(err) => panic!("filling {}: {err}", dir.display()),
            }
        }
    }
    path
}

/// A plain tar archive of these files.
fn bundle(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        builder.append_data(&mut header, name, *data).unwrap();
    }
    builder.into_inner().unwrap()
}

/// Every path under `dir`, recursively.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return paths;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            paths.extend(tree(&path));
        }
        paths.push(path);
    }
    paths
}

/// Parses a state file that must be whole JSON of its current format
/// version (2 for run records, 1 for the rest) whose `run_id` is `run_id`.
fn check_json(path: &Path, run_id: Option<&str>) {
    let bytes = std::fs::read(path).unwrap();
    let value: Value = serde_json::from_slice(&bytes).unwrap_or_else(|err| {
        panic!(
            "{} is torn or corrupt ({err}): {:?}",
            path.display(),
            String::from_utf8_lossy(&bytes)
        )
    });
    let version = if path.ends_with("record.json") { 2 } else { 1 };
    assert_eq!(value["version"], version, "{}: {value}", path.display());
    if let Some(run_id) = run_id {
        assert_eq!(value["run_id"], run_id, "{}", path.display());
    }
}

/// Reads every record, exit report and outbox file of a state dir; each
/// must be whole. Returns how many files were read.
fn check_state_files(state: &Path) -> usize {
    let mut checked = 0;
    for run_dir in std::fs::read_dir(state.join("runs")).unwrap().flatten() {
        let run_id = run_dir.file_name().to_string_lossy().into_owned();
        // A run whose removal by retention a kill interrupted: the next
        // start removes it.
        let run_id = run_id.strip_prefix(".pruned-").unwrap_or(&run_id);
        for (name, id) in [("record.json", Some(run_id)), ("exit.json", None)] {
            let path = run_dir.path().join(name);
            if path.exists() {
                check_json(&path, id);
                checked += 1;
            }
        }
    }
    for file in std::fs::read_dir(state.join("outbox")).unwrap().flatten() {
        let name = file.file_name().to_string_lossy().into_owned();
        if let Some(run_id) = name
            .strip_suffix(".json")
            .filter(|_| !name.starts_with('.'))
        {
            check_json(&file.path(), Some(run_id));
            checked += 1;
        }
    }
    checked
}

/// Reads from `stream` until the peer closes it; returns what came and
/// how long it took. Panics after `limit`.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let started = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (got, started.elapsed()),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the connection was still open after {limit:?}; got {:?}",
                String::from_utf8_lossy(&got)
            ),
        }
    }
}

fn addr(daemon: &TestDaemon) -> String {
    daemon.url.trim_start_matches("http://").to_owned()
}

/// Open descriptors of a process.
fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A full state dir: new runs (started, exec-and-wait, with a callback)
/// and a bundle upload are refused with a JSON 507 and leave nothing on
/// disk; earlier records stay whole and readable; the daemon serves on;
/// once there is space again the same ids are taken.
#[tokio::test]
async fn full_state_dir_refuses_new_work_and_keeps_serving() {
    if !support::is_root() {
        eprintln!("needs root to mount a tmpfs; skipped");
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "size=4m");
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir.clone()),
        args: flags(&[]),
        ..Options::default()
    })
    .await;
    let before = daemon
        .exec(json!({"run_id": "before", "command": ["echo", "kept"]}))
        .await;
    assert_eq!(before["state"], "succeeded", "{before}");
    let filler = fill(&state);

    let callback = json!({"url": sink.complete_url("full-3"), "token": "t"});
    let requests = [
        json!({"run_id": "full-1", "command": ["true"]}),
        json!({"run_id": "full-2", "command": ["true"], "wait": true}),
        json!({"run_id": "full-3", "command": ["true"], "callback": callback}),
    ];
    for body in &requests {
        let (status, answer) = daemon.post("/v1/runs", body.clone()).await;
        assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{body}: {answer}");
        assert_eq!(answer["error"]["code"], "insufficient_storage");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("no space left"), "{message}");
    }
    let archive = bundle(&[("a.txt", b"fits in the work root")]);
    let put = daemon
        .request(Method::PUT, "/v1/runs/full-up/bundle")
        .body(archive.clone());
    let (status, answer) = support::send(put).await;
    assert_eq!(
        status,
        StatusCode::INSUFFICIENT_STORAGE,
        "{answer}\n{}",
        daemon.logs()
    );
    assert_eq!(answer["error"]["code"], "insufficient_storage");

    // Nothing of what was refused is on disk.
    for run_id in ["full-1", "full-2", "full-3", "full-up"] {
        assert!(
            !state.join("runs").join(run_id).exists(),
            "{run_id} run dir"
        );
        assert!(
            !daemon.work_root().join(run_id).exists(),
            "{run_id} work dir"
        );
        let (status, _) = daemon.get(&format!("/v1/runs/{run_id}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{run_id}");
    }
    // ("before" left its work dir empty: removed at its end.)
    let work: Vec<PathBuf> = tree(&daemon.work_root());
    assert_eq!(work, Vec::<PathBuf>::new(), "staging left");
    assert!(!state.join("bundles/full-up.json").exists());
    assert_eq!(sink.received().len(), 0, "a refused run calls nobody back");

    // The daemon serves on, and what was there is whole.
    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["runs"]["succeeded"], 1, "{body}");
    assert_eq!(body["runs"]["running"], 0, "{body}");
    let (_, logs) = daemon.text("/v1/runs/before/logs").await;
    assert_eq!(logs, "kept\n");
    let checked = check_state_files(&state);

    // Space is back: the same ids are taken.
    std::fs::remove_file(filler).unwrap();
    let run = daemon
        .exec(json!({"run_id": "full-2", "command": ["true"]}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let (status, answer) = support::send(
        daemon
            .request(Method::PUT, "/v1/runs/full-up/bundle")
            .body(archive),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    report(
        "faults::full_state_dir_refuses_new_work_and_keeps_serving",
        "state dir (tmpfs) filled: 3 run starts and 1 bundle upload refused with 507",
        &format!("nothing: 0 partial run dirs, 0 partial bundles, {checked} earlier state files read whole"),
    );
}

/// A run that ends while the state dir is full keeps its end: the live
/// daemon records it from the shim's report (exit.json cannot be written),
/// delivers the callback from memory, and writes the record and the outbox
/// file once there is space, so a restart reads the right end too. Only
/// the output produced while the disk was full is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_ending_on_a_full_state_dir_keeps_its_end() {
    if !support::is_root() {
        eprintln!("needs root to mount a tmpfs; skipped");
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "size=4m");
    let sink = CallbackSink::start().await;
    let mut daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir.clone()),
        args: flags(&[]),
        ..Options::default()
    })
    .await;
    let gate = dir.path().join("gate");
    let script = format!(
        "echo before; while [ ! -e {} ]; do sleep 0.02; done; head -c 8192 /dev/zero | tr '\\0' a; exit 3",
        gate.display()
    );
    daemon
        .start_run(json!({"run_id": "ends-full", "command": script,
                          "callback": {"url": sink.complete_url("svc-full"), "token": "t"}}))
        .await;
    daemon
        .wait_run("ends-full", "to print", |r| r["stdout_bytes"] == 7)
        .await;
    let filler = fill(&state);
    File::create(&gate).unwrap();

    let run = daemon.wait_ended("ends-full").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 3, "{run}");
    // A full tmpfs still takes bytes into the last page of stdout.log:
    // some of the 8 KiB fit, the rest is lost, and the count says which.
    let stored = std::fs::metadata(state.join("runs/ends-full/stdout.log"))
        .unwrap()
        .len();
    assert_eq!(run["stdout_bytes"], stored, "counts what was stored: {run}");
    assert!(stored < 7 + 8192, "{stored} bytes stored on a full disk");
    let (_, logs) = daemon.text("/v1/runs/ends-full/logs").await;
    assert_eq!(logs.len() as u64, stored);
    let got = sink.wait_completions("svc-full", 1).await;
    assert_eq!(got[0].body["status"], "FAILED");
    let error = got[0].body["error"].as_str().unwrap();
    assert!(error.starts_with("exit_code=3\n"), "{error}");
    let run = daemon
        .wait_run("ends-full", "to have its callback delivered", |r| {
            r["callback"]["state"] == "delivered"
        })
        .await;
    assert_eq!(run["callback"]["attempts"], 1);
    let checked = check_state_files(&state);
    let (status, _) = daemon.get("/healthz").await;
    assert_eq!(status, StatusCode::OK);

    // Space is back: the record and the outbox file catch up.
    std::fs::remove_file(filler).unwrap();
    let record_path = state.join("runs/ends-full/record.json");
    let mut last = Value::Null;
    support::wait_for(
        "the final record to be written",
        || async {
            let record: Value =
                serde_json::from_slice(&std::fs::read(&record_path).unwrap()).unwrap();
            (record["state"] == "failed", record)
        },
        &mut last,
    )
    .await;
    assert_eq!(last["exit_code"], 3);
    let outbox_path = state.join("outbox/ends-full.json");
    support::wait_for(
        "the outbox file to be written",
        || async {
            let outbox: Value = std::fs::read(&outbox_path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok())
                .unwrap_or(Value::Null);
            (outbox["state"] == "delivered", outbox)
        },
        &mut last,
    )
    .await;

    daemon.signal(libc::SIGTERM);
    daemon.wait_exit();
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir.clone()),
        args: flags(&[]),
        ..Options::default()
    })
    .await;
    let (_, run) = daemon.get("/v1/runs/ends-full").await;
    assert_eq!(run["state"], "failed", "after the restart: {run}");
    assert_eq!(run["exit_code"], 3);
    assert_eq!(run["callback"]["state"], "delivered", "{run}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(sink.completions("svc-full").len(), 1, "not sent again");
    report(
        "faults::a_run_ending_on_a_full_state_dir_keeps_its_end",
        "state dir filled while a run with a callback ran; its end written after space came back; restart",
        &format!(
            "only run output the full disk could not hold ({} of 8192 bytes, counted exactly); end, exit code and callback kept; {checked} state files read whole",
            7 + 8192 - stored
        ),
    );
}

/// Under a file-size limit (RLIMIT_FSIZE) the daemon ignores SIGXFSZ: a
/// file upload, a bundle and a run's output over the limit are a 507, a
/// 507 and a cut log, never a killed daemon; nothing partial stays.
#[tokio::test]
async fn file_size_limit_is_507_not_a_crash() {
    let limit = 256 * 1024;
    let daemon = TestDaemon::start_with(Options {
        wrapper: vec!["prlimit".into(), format!("--fsize={limit}"), "--".into()],
        ..Options::default()
    })
    .await;
    let big = vec![b'x'; 4 * limit];
    let target = daemon.work_root().join("big.bin");
    let put = daemon
        .request(Method::PUT, "/v1/files")
        .query(&[("path", target.display().to_string())])
        .body(big.clone());
    let (status, answer) = support::send(put).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert!(!target.exists());

    let archive = bundle(&[("small.txt", b"fits"), ("big.bin", &big)]);
    let put = daemon
        .request(Method::PUT, "/v1/runs/fsize/bundle")
        .body(archive);
    let (status, answer) = support::send(put).await;
    assert_eq!(status, StatusCode::INSUFFICIENT_STORAGE, "{answer}");
    assert_eq!(answer["error"]["code"], "insufficient_storage");
    assert!(!daemon.work_root().join("fsize").exists());

    let run = daemon
        .exec(json!({"command": "head -c 1048576 /dev/zero | tr '\\0' y; echo done >&2"}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout_bytes"], limit, "stdout.log stops at the limit");
    assert_eq!(run["stderr"], "done\n");
    assert!(support::alive(daemon.pid()), "sandboxd was killed");
    let (status, _) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let leftovers: Vec<PathBuf> = tree(&daemon.work_root())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(".sandboxd-staging-") || name == "big.bin" || name == "fsize"
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    report(
        "faults::file_size_limit_is_507_not_a_crash",
        "RLIMIT_FSIZE 256 KiB: 1 MiB file upload, 1 MiB bundle entry, 1 MiB of run output",
        "only the run's output past the limit (stored up to it, counted exactly); daemon alive, no partial file or bundle",
    );
}

/// A state dir sandboxd cannot write stops the start with a message naming
/// the dir and exit code 1: a read-only mount, a dir of another user, and a
/// writable state dir whose `runs/` is not.
#[tokio::test]
async fn unwritable_state_dir_stops_the_start() {
    if !support::is_root() {
        eprintln!("needs root (a read-only mount, another uid); skipped");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let read_only = dir.path().join("ro");
    let _tmpfs = Tmpfs::mount(&read_only, "ro,size=1m");
    let foreign = dir.path().join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let sub_not_writable = dir.path().join("sub");
    std::fs::create_dir_all(sub_not_writable.join("runs")).unwrap();
    let nobody = 65534;
    std::os::unix::fs::chown(&sub_not_writable, Some(nobody), Some(nobody)).unwrap();
    std::os::unix::fs::chown(dir.path(), Some(nobody), Some(nobody)).unwrap();
    let cases: [(&Path, Option<u32>, &str); 3] = [
        (&read_only, None, "ro"),
        (&foreign, Some(nobody), "foreign"),
        (&sub_not_writable, Some(nobody), "sub/runs"),
    ];
    for (state, uid, shown) in cases {
        let mut command = std::process::Command::new(support::bin());
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--insecure-no-auth"])
            .arg("--state-dir")
            .arg(state)
            .arg("--work-root")
            .arg(dir.path().join(format!("work-{}", shown.replace('/', "-"))));
        if let Some(uid) = uid {
            use std::os::unix::process::CommandExt;
            command.uid(uid).gid(uid);
        }
        let out = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{shown}: {stderr}");
        let line = stderr
            .lines()
            .find(|l| l.starts_with("sandboxd: "))
            .unwrap_or_else(|| panic!("{shown}: no sandboxd: line in {stderr}"));
        assert!(
            line.contains(shown) && line.contains("not writable"),
            "{shown}: {line}"
        );
    }
    report(
        "faults::unwritable_state_dir_stops_the_start",
        "state dir: read-only mount, owned by another uid, runs/ not writable",
        "nothing: each start refused with exit 1 and a line naming the dir",
    );
}

/// kill -9 of sandboxd at random moments while runs start (started and
/// exec-and-wait), end, report through their token, call back, and bundles
/// arrive, many times on one state dir: every record, exit report and
/// outbox file is always whole, the daemon restarts every time, and at the
/// end every acknowledged run has its end recorded and its callback
/// delivered, every acknowledged bundle is whole, and no temp file or
/// staging dir is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_record_writes_never_tears_a_file() {
    let iterations: usize = std::env::var("SANDBOXD_KILL9_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let sink = CallbackSink::start().await;
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut acknowledged: Vec<(String, bool)> = Vec::new();
    let mut bundles: Vec<String> = Vec::new();
    let mut checked = 0;
    let mut sent = 0;
    let report_script = r#"curl -sf -o /dev/null -X POST -H "Authorization: Bearer $SANDBOXD_RUN_TOKEN" \
        -H 'Content-Type: application/json' -d '{"cost":1.5}' "$SANDBOXD_URL/v1/runs/$SANDBOXD_RUN_ID/report"; echo reported"#;
    for i in 0..iterations {
        // Every acknowledged run is checked at the end: keep them all.
        let mut daemon = TestDaemon::start_with(Options {
            binary: true,
            dir: Some(dir.clone()),
            args: flags(&["--retain-runs", "0"]),
            ..Options::default()
        })
        .await;
        let mut requests = Vec::new();
        for j in 0..6 {
            let run_id = format!("k{i}-{j}");
            let callback = j % 2 == 0;
            let mut body = match j % 3 {
                0 => json!({"command": ["echo", "out"], "wait": true}),
                1 => json!({"command": "sleep 0.$RANDOM"}),
                _ => json!({"command": report_script}),
            };
            body["run_id"] = json!(run_id);
            if callback {
                body["callback"] = json!({"url": sink.complete_url(&run_id), "token": "t"});
            }
            let req = daemon.request(Method::POST, "/v1/runs").json(&body);
            requests.push(tokio::spawn(async move {
                let status = req.send().await.map(|r| r.status()).ok();
                (run_id, callback, status)
            }));
        }
        let bundle_id = format!("b{i}");
        let archive = bundle(&[("one.txt", b"1"), ("two.txt", &vec![b'2'; 100_000])]);
        let put = daemon
            .request(Method::PUT, &format!("/v1/runs/{bundle_id}/bundle"))
            .body(archive);
        let upload = tokio::spawn(async move { put.send().await.map(|r| r.status()).ok() });
        sent += 7;
        tokio::time::sleep(Duration::from_micros(rng.gen_range(0..150_000))).await;
        daemon.kill9();
        for request in requests {
            let (run_id, callback, status) = request.await.unwrap();
            if matches!(status, Some(StatusCode::OK) | Some(StatusCode::CREATED)) {
                acknowledged.push((run_id, callback));
            }
        }
        if upload.await.unwrap() == Some(StatusCode::CREATED) {
            bundles.push(bundle_id);
        }
        checked += check_state_files(&daemon.state_dir());
    }

    let daemon = TestDaemon::start_with(Options {
        dir: Some(dir.clone()),
        args: flags(&["--retain-runs", "0"]),
        ..Options::default()
    })
    .await;
    let mut lost_runs = Vec::new();
    for (run_id, callback) in &acknowledged {
        let run = daemon.wait_ended(run_id).await;
        if run["state"] == "lost" {
            lost_runs.push(run_id.clone());
        }
        if *callback {
            daemon
                .wait_run(run_id, "to have its callback delivered", |r| {
                    r["callback"]["state"] == "delivered"
                })
                .await;
        }
    }
    assert!(
        lost_runs.is_empty(),
        "acknowledged runs whose end sandboxd lost: {lost_runs:?}"
    );
    for bundle_id in &bundles {
        assert!(daemon.work_root().join(bundle_id).is_dir(), "{bundle_id}");
    }
    // Every bundle in place is whole, acknowledged or not (a kill between
    // the rename and the answer).
    for entry in std::fs::read_dir(daemon.work_root()).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('b') {
            let two = std::fs::read(entry.path().join("two.txt")).unwrap();
            assert_eq!(two.len(), 100_000, "{name}");
            assert_eq!(std::fs::read(entry.path().join("one.txt")).unwrap(), b"1");
        }
    }
    checked += check_state_files(&daemon.state_dir());
    let leftovers: Vec<PathBuf> = tree(dir.path())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.contains(".tmp-")
                || name.starts_with(".sandboxd-staging-")
                || name.starts_with(".bundle-")
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
    let with_callback = acknowledged.iter().filter(|(_, c)| *c).count();
    report(
        "faults::kill_9_during_record_writes_never_tears_a_file",
        &format!(
            "{iterations} × kill -9 at a random moment (0-150 ms) among {sent} requests; {} runs and {} bundles acknowledged",
            acknowledged.len(),
            bundles.len()
        ),
        &format!(
            "nothing: {checked} state files read whole, {iterations} restarts, all {} acknowledged runs ended (0 lost), {with_callback} callbacks delivered, 0 temp files",
            acknowledged.len()
        ),
    );
}

/// A callback receiver that never answers, with more runs waiting on it
/// than one receiver may hold attempts for, delays neither the callbacks
/// of other receivers nor any run's status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_receiver_delays_no_other_run() {
    let daemon = TestDaemon::start_with(Options {
        args: flags(&["--callback-timeout", "60", "--shutdown-grace", "0.5"]),
        ..Options::default()
    })
    .await;
    let hanging = CallbackSink::start().await;
    hanging.script(&[Reply::Hang; 100]);
    let healthy = CallbackSink::start().await;
    let stuck = 24;
    for i in 0..stuck {
        daemon
            .start_run(json!({"run_id": format!("h{i}"), "command": ["true"],
                              "callback": {"url": hanging.complete_url(&format!("h{i}")), "token": "t"}}))
            .await;
    }
    hanging
        .wait("16 attempts hanging at once", |all| all.len() >= 16)
        .await;
    let started = Instant::now();
    for i in 0..5 {
        let run = daemon
            .exec(json!({"run_id": format!("ok{i}"), "command": ["echo", "fine"],
                         "callback": {"url": healthy.complete_url(&format!("ok{i}")), "token": "t"}}))
            .await;
        assert_eq!(run["state"], "succeeded");
        healthy.wait_completions(&format!("ok{i}"), 1).await;
    }
    // Blocked behind the hanging attempts, they would wait out the 60 s
    // attempt timeout; well under that (on a loaded machine) proves they
    // were not.
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(30),
        "5 runs and their callbacks took {elapsed:?} beside a hanging receiver"
    );
    let answered = Instant::now();
    let (status, body) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["outbox"]["pending"], stuck, "{body}");
    let (_, run) = daemon.get("/v1/runs/h0").await;
    assert_eq!(run["state"], "succeeded");
    assert!(answered.elapsed() < Duration::from_secs(10));
    report(
        "faults::a_hanging_receiver_delays_no_other_run",
        &format!("receiver never answers {stuck} callbacks (60 s attempt timeout)"),
        &format!(
            "nothing: 5 other runs and callbacks done in {:.2} s; status answered at once",
            elapsed.as_secs_f64()
        ),
    );
}

/// A secret server that never answers holds only the run whose secret it
/// serves: other runs start and end, and the status answers, meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_secret_server_delays_no_other_run() {
    let server = SecretServer::start().await;
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--secret-timeout".into(), "1".into()],
        ..Options::default()
    })
    .await;
    let request = daemon.request(Method::POST, "/v1/runs").json(&json!({
        "run_id": "waits-for-secret",
        "command": ["true"],
        "secrets": {"SLOW": {"kind": "LookupSecret", "url": format!("{}/hang", server.url)}},
    }));
    let held = tokio::spawn(support::send(request));
    let mut last = 0;
    support::wait_for(
        "the lookup to hang",
        || async {
            let hits = server.hits("/hang");
            (hits >= 1, hits)
        },
        &mut last,
    )
    .await;
    let started = Instant::now();
    for i in 0..5 {
        let run = daemon
            .exec(json!({"run_id": format!("free{i}"), "command": ["echo", "fine"]}))
            .await;
        assert_eq!(run["state"], "succeeded");
    }
    let (status, _) = daemon.get("/v1/status").await;
    assert_eq!(status, StatusCode::OK);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(3), "{elapsed:?}");
    assert!(!held.is_finished(), "the hanging lookup is still retried");
    let (status, body) = held.await.unwrap();
    assert_eq!(status, StatusCode::FAILED_DEPENDENCY, "{body}");
    let (status, _) = daemon.get("/v1/runs/waits-for-secret").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "nothing started");
    report(
        "faults::a_hanging_secret_server_delays_no_other_run",
        "secret server never answers (4 attempts × 1 s)",
        &format!(
            "nothing: 5 other runs done in {:.2} s meanwhile; the waiting run refused 424, nothing started",
            elapsed.as_secs_f64()
        ),
    );
}

/// Silent, slow and idle clients are closed after `--header-timeout`
/// (1 s here): a connection that sends nothing, half a request head, a
/// head one byte at a time, or nothing after its first request; hundreds
/// of them hold no descriptor past the timeout, and a request in progress
/// (a 2 s exec-and-wait) is not cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_slow_and_idle_clients_are_closed() {
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        args: vec!["--header-timeout".into(), "1".into()],
        ..Options::default()
    })
    .await;
    let addr = addr(&daemon);
    let limit = Duration::from_secs(4);

    let mut silent = TcpStream::connect(&addr).await.unwrap();
    let (_, took) = read_until_closed(&mut silent, limit).await;
    assert!(
        took >= Duration::from_millis(900),
        "silent: closed after {took:?}"
    );

    let mut partial = TcpStream::connect(&addr).await.unwrap();
    partial
        .write_all(b"GET /v1/status HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let (_, took) = read_until_closed(&mut partial, limit).await;
    assert!(took >= Duration::from_millis(900), "partial: {took:?}");

    let mut trickle = TcpStream::connect(&addr).await.unwrap();
    let head = format!("GET /v1/status HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: {KEY}\r\n\r\n");
    let started = Instant::now();
    let mut sent = 0;
    for byte in head.as_bytes() {
        if trickle.write_all(&[*byte]).await.is_err() {
            break;
        }
        sent += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
        if started.elapsed() > limit {
            panic!("a head sent byte by byte was still read after {limit:?}");
        }
    }
    let (got, _) = read_until_closed(&mut trickle, limit).await;
    assert!(sent < head.len(), "the whole head got through byte by byte");
    assert!(!String::from_utf8_lossy(&got).contains("200 OK"));

    let mut idle = TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let (got, took) = read_until_closed(&mut idle, limit).await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    assert!(took >= Duration::from_millis(900), "idle: {took:?}");

    // The crowd meets a daemon with a longer header timeout, so that on a
    // loaded machine the peak is seen before the first of them times out.
    // Its descriptors are readable when the test is root (the daemon is
    // non-dumpable).
    let crowded = TestDaemon::start_with(Options {
        binary: true,
        args: vec!["--header-timeout".into(), "5".into()],
        ..Options::default()
    })
    .await;
    let crowded_addr = crowded.url.trim_start_matches("http://").to_owned();
    // The baseline holds the warm shim's channels (started just after
    // the daemon listens).
    let mut warm = Value::Null;
    support::wait_for(
        "the warm shim ready",
        || async {
            let (_, status) = crowded.get("/v1/status").await;
            (
                status["warm_shims"]["ready"] == 1,
                status["warm_shims"].clone(),
            )
        },
        &mut warm,
    )
    .await;
    let baseline = open_fds(crowded.pid());
    let mut crowd = Vec::new();
    for _ in 0..300 {
        crowd.push(TcpStream::connect(&crowded_addr).await.unwrap());
    }
    let (status, _) = crowded.get("/healthz").await;
    assert_eq!(status, StatusCode::OK, "served beside 300 silent clients");
    let mut peak = 0;
    if baseline != 0 {
        support::wait_for(
            "the daemon to hold the 300 silent connections",
            || async {
                let now = open_fds(crowded.pid());
                (now >= baseline + 250, now)
            },
            &mut peak,
        )
        .await;
    }
    for stream in &mut crowd {
        read_until_closed(stream, Duration::from_secs(15)).await;
    }
    let mut fds = 0;
    support::wait_for(
        "the daemon's descriptors to drop back",
        || async {
            let now = open_fds(crowded.pid());
            (now <= baseline + 2, now)
        },
        &mut fds,
    )
    .await;

    // On a new connection: the client's pooled one has been idle for about
    // the header timeout and may be closing just now.
    let long = reqwest::Client::new()
        .post(format!("{}/v1/runs", daemon.url))
        .header("X-Session-API-Key", KEY)
        .json(&json!({"command": ["sleep", "2"], "wait": true}));
    let (status, run) = support::send(long).await;
    assert_eq!(status, StatusCode::OK, "{run}");
    assert_eq!(run["state"], "succeeded", "a long request is not cut");
    report(
        "faults::silent_slow_and_idle_clients_are_closed",
        "--header-timeout 1: silent, half-head, byte-per-100 ms and idle keep-alive clients; 300 silent connections (--header-timeout 5)",
        &format!("nothing: each closed after its timeout; descriptors {baseline} → {peak} → {fds}; a 2 s request not cut"),
    );
}

/// A request body that stops arriving frees its connection after
/// `--body-timeout` (1 s here): a JSON body gets a 408 and starts nothing,
/// an upload is refused with nothing written and the run takes a new one;
/// a body that keeps coming slowly is taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_bodies_free_the_connection() {
    let daemon = TestDaemon::start_with(Options {
        args: vec!["--body-timeout".into(), "1".into()],
        ..Options::default()
    })
    .await;
    let addr = addr(&daemon);
    let limit = Duration::from_secs(5);

    let body = br#"{"run_id": "stalled", "command": ["true"]}"#;
    let mut json_client = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    json_client.write_all(head.as_bytes()).await.unwrap();
    json_client.write_all(&body[..10]).await.unwrap();
    let (got, took) = read_until_closed(&mut json_client, limit).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains(r#""code":"body_timeout""#), "{text}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    let (status, _) = daemon.get("/v1/runs/stalled").await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    let archive = bundle(&[("a.txt", &vec![b'a'; 50_000])]);
    let mut upload = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "PUT /v1/runs/stalled-up/bundle HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: {KEY}\r\nContent-Length: {}\r\n\r\n",
        archive.len()
    );
    upload.write_all(head.as_bytes()).await.unwrap();
    upload.write_all(&archive[..20_000]).await.unwrap();
    let (got, took) = read_until_closed(&mut upload, limit).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 400"), "{text}");
    assert!(text.contains("upload_incomplete"), "{text}");
    assert!(took >= Duration::from_millis(900), "{took:?}");
    assert!(tree(&daemon.work_root()).is_empty(), "nothing written");
    let (status, answer) = support::send(
        daemon
            .request(Method::PUT, "/v1/runs/stalled-up/bundle")
            .body(archive),
    )
    .await;
    assert_eq!(
        status,
        StatusCode::CREATED,
        "the run takes a new upload: {answer}"
    );

    // Slow but steady: 10 pieces 300 ms apart, each within the timeout.
    let body = br#"{"run_id": "steady", "command": ["true"], "wait": true}"#;
    let mut steady = TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /v1/runs HTTP/1.1\r\nHost: x\r\nX-Session-API-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    steady.write_all(head.as_bytes()).await.unwrap();
    for piece in body.chunks(body.len().div_ceil(10)) {
        tokio::time::sleep(Duration::from_millis(300)).await;
        steady.write_all(piece).await.unwrap();
    }
    let (got, _) = read_until_closed(&mut steady, limit).await;
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    report(
        "faults::stalled_bodies_free_the_connection",
        "--body-timeout 1: a JSON body and an upload that stop halfway; a body sent over 3 s in pieces",
        "nothing: 408 body_timeout and 400 upload_incomplete after ≈1 s, nothing started or written; the slow body taken",
    );
}

/// The session key never leaves the daemon: not in any answer (headers and
/// bodies of every endpoint, errors included), not in the daemon's log at
/// -vv, not in a child's environment, not in the state dir, and not in any
/// file under /proc of the daemon or a shim that a run (the daemon's own
/// uid, the weakest case: nobody when the test is root) can read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_key_never_leaves_the_daemon() {
    let agent = SecretServer::start().await;
    agent.set("v", "looked-up-value");
    let uid = support::is_root().then_some(65534);
    let daemon = TestDaemon::start_with(Options {
        uid,
        // The agent-server stand-in listens in this test process, whose
        // uid is not the daemon's here: say so, or the key is withheld.
        args: vec![
            "-vv".into(),
            "--agent-server-url".into(),
            agent.url.clone(),
            "--agent-server-uid".into(),
            nix::unistd::geteuid().as_raw().to_string(),
        ],
        env: vec![
            ("SESSION_API_KEY".into(), KEY.into()),
            ("OH_SESSION_API_KEYS_0".into(), KEY.into()),
        ],
        ..Options::default()
    })
    .await;
    // A run that dumps every /proc file of the daemon and of its own shim
    // it can read, and its own environment, into its work dir.
    let script = format!(
        r#"shim=$(awk '{{print $4}}' /proc/$$/stat)
for p in {daemon} $shim; do
  for f in /proc/$p/* /proc/$p/task/*/*; do
    [ -f "$f" ] && timeout 1 cat "$f" 2>/dev/null
  done
done > proc.dump
env > env.dump
ls -l proc.dump | awk '{{print $5}}'"#,
        daemon = daemon.pid()
    );
    let run = daemon
        .exec(json!({
            "run_id": "prober",
            "command": script,
            "secrets": {"LOOKED_UP": {"kind": "LookupSecret",
                "url": format!("{}/value/v", agent.url),
                "headers": {"X-Session-API-Key": "**********"}}},
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let dumped: u64 = run["stdout"].as_str().unwrap().trim().parse().unwrap();
    assert!(dumped > 10_000, "the run read /proc ({dumped} bytes)");
    let seen = agent.last("/value/v");
    assert!(
        seen.headers
            .iter()
            .any(|(k, v)| k == "x-session-api-key" && v == KEY),
        "the key went to the configured agent-server (so it was in use)"
    );

    // Every endpoint, with and without the key, and errors of each kind.
    let http = reqwest::Client::new();
    let routes = [
        (Method::GET, "/healthz".to_owned(), None),
        (Method::GET, "/openapi.json".to_owned(), None),
        (Method::GET, "/v1/status".to_owned(), None),
        (Method::GET, "/metrics".to_owned(), None),
        (Method::GET, "/v1/runs".to_owned(), None),
        (Method::GET, "/v1/runs/prober".to_owned(), None),
        (
            Method::GET,
            "/v1/runs/prober/logs?stream=both".to_owned(),
            None,
        ),
        (Method::GET, "/v1/runs/nope".to_owned(), None),
        (
            Method::POST,
            "/v1/runs/prober/cancel".to_owned(),
            Some(json!({})),
        ),
        (
            Method::POST,
            "/v1/runs/prober/signal".to_owned(),
            Some(json!({"signal": "SIGNOPE"})),
        ),
        (
            Method::POST,
            "/v1/runs/prober/report".to_owned(),
            Some(json!({"cost": 1})),
        ),
        (
            Method::POST,
            "/v1/runs".to_owned(),
            Some(json!({"command": ["true"], "env": {"SESSION_API_KEY": KEY}})),
        ),
        (
            Method::POST,
            "/v1/runs".to_owned(),
            Some(json!({"command": ["true"], "bogus": KEY})),
        ),
        (
            Method::POST,
            "/v1/secrets/resolve".to_owned(),
            Some(json!({"secrets": {"K": {"kind": "LookupSecret",
            "url": format!("{}/value/v", agent.url), "headers": {"X-Session-API-Key": "**********"}}}})),
        ),
        (
            Method::POST,
            "/v1/secrets/resolve".to_owned(),
            Some(json!({"secrets": {"K": {"kind": "LookupSecret",
            "url": format!("{}/missing", agent.url), "headers": {"X-Session-API-Key": ""}}}})),
        ),
        (Method::PUT, "/v1/runs/prober/bundle".to_owned(), None),
        (Method::PUT, "/v1/files?path=/etc/nope".to_owned(), None),
        (Method::PATCH, "/v1/status".to_owned(), None),
        (Method::GET, "/nope".to_owned(), None),
    ];
    let mut answers = 0;
    for (method, path, body) in &routes {
        for key in [Some(KEY), Some("wrong"), None] {
            let mut req = http.request(method.clone(), format!("{}{path}", daemon.url));
            if let Some(key) = key {
                req = req.header("X-Session-API-Key", key);
            }
            if let Some(body) = body {
                req = req.json(body);
            }
            let res = req.send().await.unwrap();
            let headers = format!("{:?}", res.headers());
            let text = res.text().await.unwrap();
            assert!(!headers.contains(KEY), "{method} {path}: key in headers");
            assert!(
                !text.contains(KEY),
                "{method} {path}: key in the body: {text}"
            );
            answers += 1;
        }
    }
    let work = daemon.work_root().join("prober");
    for name in ["proc.dump", "env.dump"] {
        let bytes = std::fs::read(work.join(name)).unwrap();
        let found = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
        assert!(!found, "the key is readable by a run: {name}");
    }
    let env = std::fs::read_to_string(work.join("env.dump")).unwrap();
    assert!(
        env.contains("LOOKED_UP=looked-up-value"),
        "the run got its secret"
    );
    for path in tree(&daemon.state_dir()) {
        if path.is_file() {
            let bytes = std::fs::read(&path).unwrap();
            let found = bytes.windows(KEY.len()).any(|w| w == KEY.as_bytes());
            assert!(!found, "the key is in {}", path.display());
        }
    }
    let logs = daemon.logs();
    assert!(logs.lines().count() > 50, "-vv logged");
    assert!(!logs.contains(KEY), "the key is in the daemon's log");
    report(
        "faults::the_session_key_never_leaves_the_daemon",
        &format!(
            "{answers} answers of {} routes × (key, wrong key, none); {dumped} bytes of /proc of the daemon and shim read by a run as the daemon's uid; -vv log; state dir",
            routes.len()
        ),
        "nothing: the key in 0 answers, 0 log lines, 0 child env entries, 0 /proc bytes, 0 state files",
    );
}

/// The session key comparison takes the same time whatever prefix of the
/// key a guess shares. Guaranteed by construction (`api::auth::key_matches`:
/// `subtle::ConstantTimeEq` over SHA-256 digests of both sides, so neither
/// a shared prefix nor the length shows); measured here as a guard against
/// gross leaks only: over loopback HTTP the noise (tens of µs) is far above
/// what a byte-by-byte compare would cost (ns), so medians of interleaved
/// requests must agree within that noise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_comparison_time_does_not_depend_on_the_prefix() {
    let daemon = TestDaemon::start().await;
    let http = reqwest::Client::new();
    let url = format!("{}/v1/status", daemon.url);
    let mut far = KEY.to_owned().into_bytes();
    far[0] ^= 0x01;
    let mut near = KEY.to_owned().into_bytes();
    *near.last_mut().unwrap() ^= 0x01;
    let far = String::from_utf8(far).unwrap();
    let near = String::from_utf8(near).unwrap();
    let samples = 1500;
    let mut times = [Vec::new(), Vec::new()];
    for round in 0..samples * 2 + 200 {
        let which = round % 2;
        let key = if which == 0 { &far } else { &near };
        let started = Instant::now();
        let res = http
            .get(&url)
            .header("X-Session-API-Key", key)
            .send()
            .await
            .unwrap();
        let _ = res.bytes().await;
        let took = started.elapsed().as_nanos() as f64 / 1000.0;
        // The first 200 requests warm up connections and caches.
        if round >= 200 {
            times[which].push(took);
        }
    }
    for list in &mut times {
        list.sort_by(|a, b| a.partial_cmp(b).unwrap());
    }
    let median = |list: &[f64]| list[list.len() / 2];
    let (far_us, near_us) = (median(&times[0]), median(&times[1]));
    let difference = (far_us - near_us).abs();
    let tolerance = (0.25 * far_us.min(near_us)).max(20.0);
    assert!(
        difference <= tolerance,
        "median {far_us:.1} µs (0 bytes right) vs {near_us:.1} µs ({} bytes right)",
        KEY.len() - 1
    );
    report(
        "faults::key_comparison_time_does_not_depend_on_the_prefix",
        &format!(
            "{samples} + {samples} interleaved wrong keys matching 0 vs {} leading bytes",
            KEY.len() - 1
        ),
        &format!(
            "nothing: medians {far_us:.1} µs vs {near_us:.1} µs (difference {difference:.1} µs, noise bound {tolerance:.1} µs); constant time by construction"
        ),
    );
}

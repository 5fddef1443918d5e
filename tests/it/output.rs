//! Output caps and the files a run leaves: `--max-output-bytes` keeps the
//! head, a marker and the most recent tail without slowing the child; a
//! full state dir during capture marks the output truncated; a run
//! without output costs its record only.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::callbacks::sink::CallbackSink;
use crate::faults::{fill, Tmpfs};
use crate::support::{self, Options, TestDaemon};

const MIB: u64 = 1 << 20;

/// Names of the entries of a dir (empty when it is gone).
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// A run printing 20 MiB with a 1 MiB cap is not blocked: it ends with
/// its own exit code; status, logs (head, marker, tail; `both` agrees) and
/// the callback's error say how much was dropped.
#[tokio::test]
async fn capped_output_keeps_head_marker_and_tail() {
    let sink = CallbackSink::start().await;
    let daemon = TestDaemon::start_with(Options {
        args: ["--max-output-bytes", "1MiB", "--callback-backoff", "0.05"]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    })
    .await;
    let total = 20 * MIB;
    let command = format!(
        "echo START; yes 0123456789abcdef | head -c {total}; echo; echo END; echo oops >&2; exit 3"
    );
    let started = Instant::now();
    let callback = json!({"url": sink.complete_url("cap-1"), "token": "t"});
    daemon
        .start_run(json!({"run_id": "cap", "command": command, "callback": callback}))
        .await;
    let run = daemon.wait_ended("cap").await;
    let elapsed = started.elapsed();
    eprintln!("20 MiB through a 1 MiB cap: run ended in {elapsed:?}");
    assert!(elapsed < Duration::from_secs(15), "{elapsed:?}");
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 3, "{run}");

    // 6 ("START\n") + total + 1 + 4 ("END\n") printed; 1 MiB kept.
    let printed = 6 + total + 1 + 4;
    let dropped = printed - MIB;
    assert_eq!(run["stdout_truncated_bytes"], dropped, "{run}");
    assert_eq!(run["stderr_truncated_bytes"], 0, "{run}");
    let truncation = run["truncation"].as_str().unwrap();
    assert!(
        truncation.contains("stdout: over the output cap of 1048576 bytes"),
        "{truncation}"
    );
    let marker = format!(
        "\n[sandboxd: {dropped} bytes of stdout dropped (over the output cap of 1048576 bytes)]\n"
    );
    assert_eq!(run["stdout_bytes"], MIB + marker.len() as u64, "{run}");

    let (_, stdout) = daemon.text("/v1/runs/cap/logs?stream=stdout").await;
    assert_eq!(stdout.len() as u64, MIB + marker.len() as u64);
    assert!(stdout.starts_with("START\n0123456789abcdef\n"));
    let at = stdout.find(&marker).expect("the marker");
    assert_eq!(at as u64, MIB - MIB / 4, "the head is 3/4 of the cap");
    assert!(
        stdout.ends_with("abcd\nEND\n"),
        "{}",
        &stdout[stdout.len() - 40..]
    );
    let (_, both) = daemon.text("/v1/runs/cap/logs?stream=both").await;
    assert_eq!(both.len(), stdout.len() + "oops\n".len());
    assert!(both.contains(&marker) && both.contains("oops\n"));

    let received = sink.wait_completions("cap-1", 1).await;
    let body = &received[0].body;
    assert_eq!(received[0].verdict, Ok(()), "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!(
            "output truncated: {dropped} bytes of stdout and 0 bytes of stderr dropped"
        )),
        "{error}"
    );
    assert!(error.ends_with("END\n"), "{error}");
}

/// An exec-and-wait of `true` leaves its record and nothing else: no
/// output files, no shim.log, no exit.json, no work dir. Output creates
/// only the files of the streams that had some.
#[tokio::test]
async fn a_run_without_output_leaves_only_its_record() {
    let daemon = TestDaemon::start().await;
    let runs = daemon.state_dir().join("runs");
    let run = daemon
        .exec(json!({"run_id": "t", "command": ["true"]}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(run["stdout"], "");
    assert_eq!(entries(&runs.join("t")), ["record.json"]);
    assert!(!daemon.work_root().join("t").exists(), "the empty work dir");

    let run = daemon
        .exec(json!({"run_id": "o", "command": ["echo", "hi"]}))
        .await;
    assert_eq!(run["stdout"], "hi\n");
    assert_eq!(
        entries(&runs.join("o")),
        ["output.idx", "record.json", "stdout.log"]
    );
    let (_, stderr) = daemon.text("/v1/runs/o/logs?stream=stderr").await;
    assert_eq!(stderr, "");

    // A run that writes into its work dir keeps it.
    let run = daemon
        .exec(json!({"run_id": "w", "command": "echo x > made"}))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    assert_eq!(entries(&daemon.work_root().join("w")), ["made"]);

    // Async runs: the same.
    daemon
        .start_run(json!({"run_id": "a", "command": ["true"]}))
        .await;
    daemon.wait_ended("a").await;
    support::wait_for(
        "the async run's leftovers to go",
        || async {
            let names = entries(&runs.join("a"));
            (names == ["record.json"], names)
        },
        &mut Vec::new(),
    )
    .await;
    assert!(!daemon.work_root().join("a").exists());
    eprintln!(
        "files per run of `true`: {} (state dir runs/: {:?})",
        entries(&runs.join("t")).len(),
        entries(&runs)
    );
}

/// The state dir fills up while a run prints: the run goes on and ends
/// with its own exit code; its status says how much output was lost and
/// why; the daemon serves on.
#[tokio::test]
async fn full_state_dir_during_capture_marks_truncation() {
    if !support::is_root() {
        eprintln!("needs root to mount a tmpfs; skipped");
        return;
    }
    let dir = Arc::new(tempfile::tempdir().unwrap());
    let state = dir.path().join("state");
    let _tmpfs = Tmpfs::mount(&state, "size=4m");
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir.clone()),
        ..Options::default()
    })
    .await;
    let gates = dir.path().join("gates");
    std::fs::create_dir_all(&gates).unwrap();
    let g = gates.display();
    let command = format!(
        "echo START; until [ -e {g}/go ]; do sleep 0.02; done; \
         head -c 2000000 /dev/zero | tr '\\0' x; touch {g}/wrote; \
         until [ -e {g}/go2 ]; do sleep 0.02; done; echo END; exit 5"
    );
    daemon
        .start_run(json!({"run_id": "full", "command": command}))
        .await;
    daemon
        .wait_run("full", "to print START", |run: &Value| {
            run["stdout_bytes"] == 6
        })
        .await;
    let filler = fill(&state);
    std::fs::write(gates.join("go"), "").unwrap();
    support::wait_for(
        "the run to write into the full disk",
        || async { (gates.join("wrote").exists(), ()) },
        &mut (),
    )
    .await;
    // Bytes still in the pipe may be read after this; most were lost.
    tokio::time::sleep(Duration::from_millis(200)).await;
    std::fs::remove_file(filler).unwrap();
    std::fs::write(gates.join("go2"), "").unwrap();
    let run = daemon.wait_ended("full").await;
    assert_eq!(run["state"], "failed", "{run}");
    assert_eq!(run["exit_code"], 5, "{run}");
    let lost = run["stdout_truncated_bytes"].as_u64().unwrap();
    assert!(lost > 0, "{run}");
    assert_eq!(
        run["stdout_bytes"].as_u64().unwrap() + lost,
        6 + 2_000_000 + 4 + marker_len(&run),
        "{run}"
    );
    let truncation = run["truncation"].as_str().unwrap();
    assert!(
        truncation.contains("stdout: not written: No space left on device"),
        "{truncation}"
    );
    let (_, stdout) = daemon.text("/v1/runs/full/logs?stream=stdout").await;
    assert!(stdout.starts_with("START\n"));
    assert!(stdout.contains("bytes of stdout dropped (not written: No space left"));
    // The daemon serves on; its record on disk says the same.
    let again = daemon.exec(json!({"command": ["echo", "fine"]})).await;
    assert_eq!(again["stdout"], "fine\n");
    let record: Value =
        serde_json::from_slice(&std::fs::read(state.join("runs/full/record.json")).unwrap())
            .unwrap();
    assert_eq!(record["exit_code"], 5);
    assert_eq!(record["stdout_truncated_bytes"], lost);
}

/// The marker's length as written after the run's lost bytes.
fn marker_len(run: &Value) -> u64 {
    let lost = run["stdout_truncated_bytes"].as_u64().unwrap();
    let reason = run["truncation"].as_str().unwrap();
    let why = reason.strip_prefix("stdout: ").unwrap();
    format!("\n[sandboxd: {lost} bytes of stdout dropped ({why})]\n").len() as u64
}

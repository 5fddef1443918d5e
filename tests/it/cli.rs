//! The command-line client: `exec`, `logs`, `runs`, `status`, `cancel`,
//! `upload`, errors, completions and man pages, run as the real binary
//! against a real daemon; the upload's progress bar in a real terminal
//! (tmux).
//!
//! The `upload_*` tests need `PUT /v1/runs/{id}/bundle` (the uploads
//! branch); everything else runs on the daemon as it is.

use std::path::Path;
use std::process::{Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio::process::{Child, Command};

use crate::support::{self, TestDaemon, KEY, TIMEOUT};

/// `sandboxd ARGS` aimed at `daemon`, with the session key in the env.
fn cli(daemon: &TestDaemon) -> Command {
    cli_at(&daemon.url)
}

fn cli_at(url: &str) -> Command {
    let mut command = Command::new(support::bin());
    command
        .env("SANDBOXD_URL", url)
        .env("SESSION_API_KEY", KEY)
        .env_remove("SANDBOXD_SESSION_KEY_FILE")
        .env_remove("OH_SESSION_API_KEYS_0")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    command
}

/// Runs the command to its end (within the test timeout).
async fn output(command: &mut Command) -> Output {
    tokio::time::timeout(TIMEOUT, command.output())
        .await
        .expect("the command did not end in time")
        .expect("start the command")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts the exit code, showing the output otherwise.
fn assert_code(out: &Output, code: i32) {
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status {:?}\nstdout: {}\nstderr: {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Starts the command with piped stdout and stderr.
fn spawn(command: &mut Command) -> Child {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the command")
}

/// Reads `pipe` into `seen` until it contains `needle`.
async fn read_until(pipe: &mut (impl AsyncReadExt + Unpin), seen: &mut String, needle: &str) {
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 4096];
    while !seen.contains(needle) {
        let left = deadline.saturating_duration_since(Instant::now());
        let n = tokio::time::timeout(left, pipe.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("never saw {needle:?}; saw {seen:?}"))
            .unwrap();
        assert!(n > 0, "the stream ended before {needle:?}; saw {seen:?}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
}

/// Waits for the child's end; its exit code and the rest of its output.
async fn finish(mut child: Child, stdout_seen: String) -> (Option<i32>, String, String) {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let wait = async {
        let (a, b, status) = tokio::join!(
            stdout.read_to_end(&mut out),
            stderr.read_to_end(&mut err),
            child.wait()
        );
        a.unwrap();
        b.unwrap();
        status.unwrap()
    };
    let status = tokio::time::timeout(TIMEOUT, wait)
        .await
        .expect("the command did not end in time");
    (status.code(), stdout_seen + &text(&out), text(&err))
}

/// A shell snippet that blocks until `gate` exists.
fn wait_for_file(gate: &Path) -> String {
    format!("while [ ! -e '{}' ]; do sleep 0.02; done", gate.display())
}

/// `exec` shows output while the run is still running (not at its end),
/// stdout to stdout and stderr to stderr, and exits with the run's code.
#[tokio::test]
async fn exec_streams_output_live_and_exits_with_the_runs_code() {
    let daemon = TestDaemon::start().await;
    let gate = daemon.dir.path().join("gate");
    let script = format!(
        "echo first; echo early-err >&2; {}; echo second; echo late-err >&2; exit 3",
        wait_for_file(&gate)
    );
    let mut child = spawn(cli(&daemon).args(["exec", "--", "bash", "-c", &script]));
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "first\n").await;
    let mut stderr = child.stderr.take().unwrap();
    let mut seen_err = String::new();
    read_until(&mut stderr, &mut seen_err, "early-err\n").await;
    assert!(!seen.contains("second"), "the run is still blocked");
    std::fs::write(&gate, "").unwrap();
    child.stdout = Some(stdout);
    child.stderr = Some(stderr);
    let (code, out, err) = finish(child, seen).await;
    assert_eq!(code, Some(3), "stderr: {err}");
    assert_eq!(out, "first\nsecond\n");
    assert_eq!(seen_err + &err, "early-err\nlate-err\n");
}

/// A command that succeeds exits 0 and prints nothing of sandboxd's own.
#[tokio::test]
async fn exec_of_a_succeeding_command_exits_0_quietly() {
    let daemon = TestDaemon::start().await;
    let out = output(cli(&daemon).args(["exec", "--", "echo", "hello world"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "hello world\n");
    assert_eq!(text(&out.stderr), "");
}

/// A command that cannot start exits 127 and says why.
#[tokio::test]
async fn exec_of_a_missing_command_exits_127() {
    let daemon = TestDaemon::start().await;
    let out = output(cli(&daemon).args(["exec", "--", "/no/such/program"])).await;
    assert_code(&out, 127);
    let err = text(&out.stderr);
    assert!(err.starts_with("sandboxd: run "), "{err}");
    assert!(err.contains("/no/such/program"), "{err}");
}

/// A command killed by signal N exits 128+N; the note names the signal.
#[tokio::test]
async fn exec_of_a_killed_command_exits_128_plus_the_signal() {
    let daemon = TestDaemon::start().await;
    for (signal, code) in [("KILL", 137), ("TERM", 143)] {
        let script = format!("kill -{signal} $$");
        let out = output(cli(&daemon).args(["exec", "--", "bash", "-c", &script])).await;
        assert_code(&out, code);
        let err = text(&out.stderr);
        assert!(err.contains(&format!("killed by SIG{signal}")), "{err}");
    }
}

/// A run over its --timeout exits 124, like timeout(1).
#[tokio::test]
async fn exec_timeout_exits_124() {
    let daemon = TestDaemon::start().await;
    let out = output(cli(&daemon).args(["exec", "--timeout", "0.3", "--", "sleep", "30"])).await;
    assert_code(&out, 124);
    assert!(
        text(&out.stderr).contains("timed out"),
        "{}",
        text(&out.stderr)
    );
}

/// --env, --cwd and --run-id reach the run; --no-setup skips setup.sh.
#[tokio::test]
async fn exec_passes_env_cwd_run_id_and_setup() {
    let daemon = TestDaemon::start().await;
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(cwd.path().join("setup.sh"), "echo setup-ran\n").unwrap();
    let out = output(
        cli(&daemon)
            .args(["exec", "--env", "GREETING=hi there", "--cwd"])
            .arg(cwd.path())
            .args([
                "--run-id",
                "cli-env",
                "--no-setup",
                "--",
                "bash",
                "-c",
                "echo \"$GREETING|$PWD|$SANDBOXD_RUN_ID\"",
            ]),
    )
    .await;
    assert_code(&out, 0);
    let cwd = cwd.path().canonicalize().unwrap();
    assert_eq!(
        text(&out.stdout),
        format!("hi there|{}|cli-env\n", cwd.display())
    );
    let (_, run) = daemon.get("/v1/runs/cli-env").await;
    assert_eq!(run["state"], "succeeded");
}

/// Ctrl-C (SIGINT) on `exec` cancels the run, waits for its end and exits
/// 130; the run's own TERM handler runs.
#[tokio::test]
async fn exec_ctrl_c_cancels_the_run() {
    let daemon = TestDaemon::start().await;
    let script = "trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done";
    let mut child = spawn(cli(&daemon).args([
        "exec", "--grace", "5", "--run-id", "cli-int", "--", "bash", "-c", script,
    ]));
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "ready\n").await;
    let pid = child.id().unwrap() as i32;
    // SAFETY: kill with plain integers, on our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    child.stdout = Some(stdout);
    let (code, out, err) = finish(child, seen).await;
    assert_eq!(code, Some(130), "stdout: {out}\nstderr: {err}");
    assert!(out.contains("got-term"), "the run saw SIGTERM: {out}");
    assert!(err.contains("cancelling run cli-int"), "{err}");
    let (_, run) = daemon.get("/v1/runs/cli-int").await;
    assert_eq!(run["state"], "cancelled", "{run}");
}

/// `logs -f` prints what is there, then new output as it comes, and ends
/// when the run ends; plain `logs` and `--stream` print what was captured.
#[tokio::test]
async fn logs_follow_until_the_run_ends() {
    let daemon = TestDaemon::start().await;
    let gate = daemon.dir.path().join("gate");
    let script = format!(
        "echo one; echo warn >&2; {}; echo two",
        wait_for_file(&gate)
    );
    daemon
        .start_run(json!({"run_id": "cli-logs", "command": ["bash", "-c", script]}))
        .await;
    let mut child = spawn(cli(&daemon).args(["logs", "-f", "--stream", "stdout", "cli-logs"]));
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "one\n").await;
    std::fs::write(&gate, "").unwrap();
    child.stdout = Some(stdout);
    let (code, out, err) = finish(child, seen).await;
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(out, "one\ntwo\n");

    let out = output(cli(&daemon).args(["logs", "--stream", "stderr", "cli-logs"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "warn\n");
    // By default the streams stay apart, as `exec` keeps them.
    let out = output(cli(&daemon).args(["logs", "cli-logs"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "one\ntwo\n");
    assert_eq!(text(&out.stderr), "warn\n");
    // --merge: both to stdout; their interleaving is the daemon's business.
    let out = output(cli(&daemon).args(["logs", "--merge", "cli-logs"])).await;
    assert_code(&out, 0);
    let mut both = out.stdout.clone();
    let mut want = b"one\ntwo\nwarn\n".to_vec();
    both.sort_unstable();
    want.sort_unstable();
    assert_eq!(both, want, "{:?}", text(&out.stdout));
}

/// `runs` is a table with one row per run, `--state` filters, `--json`
/// is the daemon's answer.
#[tokio::test]
async fn runs_table_and_json() {
    let daemon = TestDaemon::start().await;
    daemon
        .exec(json!({"run_id": "cli-done", "command": ["true"]}))
        .await;
    daemon
        .start_run(json!({"run_id": "cli-busy", "command": ["sleep", "30"]}))
        .await;
    daemon
        .wait_run("cli-busy", "running", |r| r["state"] == "running")
        .await;

    let out = output(cli(&daemon).arg("runs")).await;
    assert_code(&out, 0);
    let table = text(&out.stdout);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(lines[0].starts_with("RUN ID"), "{table}");
    for header in ["STATE", "EXIT", "AGE", "DURATION", "COMMAND"] {
        assert!(lines[0].contains(header), "{table}");
    }
    let done = lines.iter().find(|l| l.starts_with("cli-done")).unwrap();
    assert!(done.contains("succeeded") && done.contains(" 0 "), "{done}");
    let busy = lines.iter().find(|l| l.starts_with("cli-busy")).unwrap();
    assert!(
        busy.contains("running") && busy.ends_with("sleep 30"),
        "{busy}"
    );

    let out = output(cli(&daemon).args(["runs", "--state", "running"])).await;
    assert_code(&out, 0);
    let table = text(&out.stdout);
    assert!(
        table.contains("cli-busy") && !table.contains("cli-done"),
        "{table}"
    );

    let out = output(cli(&daemon).args(["runs", "--json"])).await;
    assert_code(&out, 0);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: Vec<&str> = body["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&"cli-done") && ids.contains(&"cli-busy"));

    let out = output(cli(&daemon).args(["runs", "--state", "bogus"])).await;
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("(bad_request)"),
        "{}",
        text(&out.stderr)
    );
    daemon
        .post("/v1/runs/cli-busy/cancel", json!({"grace_s": 0}))
        .await;
}

/// `status` is a few labelled lines; `--json` is the daemon's answer.
#[tokio::test]
async fn status_table_and_json() {
    let daemon = TestDaemon::start().await;
    daemon.exec(json!({"command": ["true"]})).await;
    let out = output(cli(&daemon).arg("status")).await;
    assert_code(&out, 0);
    let status = text(&out.stdout);
    assert!(
        status.starts_with(&format!(
            "daemon:       sandboxd {}",
            env!("CARGO_PKG_VERSION")
        )),
        "{status}"
    );
    assert!(
        status.contains(&format!("pid {}", daemon.pid())),
        "{status}"
    );
    assert!(
        status.contains("runs:         0 running, 1 succeeded"),
        "{status}"
    );
    assert!(status.contains("service:      none"), "{status}");
    assert!(
        status.contains(&format!("work root:    {}", daemon.work_root().display())),
        "{status}"
    );

    let out = output(cli(&daemon).args(["status", "--json"])).await;
    assert_code(&out, 0);
    let body: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(body["pid"], daemon.pid());
    assert_eq!(body["runs"]["succeeded"], 1);
}

/// `cancel` stops a running run and waits for its end; cancelling it again
/// is the daemon's `run_ended` error, on one line.
#[tokio::test]
async fn cancel_stops_a_run_and_reports_its_end() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "cli-cancel", "command": ["sleep", "30"]}))
        .await;
    daemon
        .wait_run("cli-cancel", "running", |r| r["state"] == "running")
        .await;
    let out = output(cli(&daemon).args(["cancel", "--grace", "2", "cli-cancel"])).await;
    assert_code(&out, 0);
    let said = text(&out.stdout);
    assert!(said.starts_with("run cli-cancel: cancelled"), "{said}");
    let (_, run) = daemon.get("/v1/runs/cli-cancel").await;
    assert_eq!(run["state"], "cancelled");

    let out = output(cli(&daemon).args(["cancel", "cli-cancel"])).await;
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("sandboxd: ") && err.trim_end().ends_with("(run_ended)"),
        "{err}"
    );
}

/// An unknown run is one line: `sandboxd: <message> (<code>)`.
#[tokio::test]
async fn daemon_errors_are_one_line_with_the_code() {
    let daemon = TestDaemon::start().await;
    let out = output(cli(&daemon).args(["logs", "no-such-run"])).await;
    assert_code(&out, 1);
    assert_eq!(
        text(&out.stderr),
        "sandboxd: run \"no-such-run\" not found (run_not_found)\n"
    );
}

/// With no daemon listening, every client command says how to start one;
/// `exec` exits 125 (sandboxd's own failure), the others 1.
#[tokio::test]
async fn daemon_down_says_how_to_start_it() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let url = format!("http://127.0.0.1:{port}");
    for (args, code) in [
        (vec!["status"], 1),
        (vec!["runs"], 1),
        (vec!["exec", "--", "true"], 125),
    ] {
        let out = output(cli_at(&url).args(&args)).await;
        assert_code(&out, code);
        let err = text(&out.stderr);
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(
            err.contains(&format!(
                "cannot reach sandboxd at {url} (connection refused)"
            )),
            "{err}"
        );
        assert!(
            err.contains("sandboxd serve") && err.contains("SANDBOXD_URL"),
            "{err}"
        );
    }
}

/// A wrong or missing key says to set SESSION_API_KEY.
#[tokio::test]
async fn wrong_key_says_to_set_session_api_key() {
    let daemon = TestDaemon::start().await;
    let out = output(cli(&daemon).env("SESSION_API_KEY", "wrong").arg("status")).await;
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("(unauthorized)") && err.contains("set SESSION_API_KEY"),
        "{err}"
    );

    let out = output(cli(&daemon).env_remove("SESSION_API_KEY").arg("runs")).await;
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("wants a session key and none was given")
            && err.contains("set SESSION_API_KEY"),
        "{err}"
    );
    // CLI words, not the API's advice about headers.
    assert!(
        !err.contains("X-Session-API-Key") && !err.contains("header"),
        "{err}"
    );

    let key_file = daemon.dir.path().join("key");
    let out = output(
        cli(&daemon)
            .env_remove("SESSION_API_KEY")
            .arg("status")
            .arg("--session-key-file")
            .arg(&key_file),
    )
    .await;
    assert_code(&out, 0);
}

/// The client reaches a daemon on a Unix socket with `--url unix:PATH`.
#[tokio::test]
async fn unix_socket_url_works() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sandboxd.sock");
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, KEY).unwrap();
    let mut daemon = Command::new(support::bin())
        .arg("serve")
        .arg("--listen")
        .arg(format!("unix:{}", socket.display()))
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--work-root")
        .arg(dir.path().join("work"))
        .arg("--session-key-file")
        .arg(&key_file)
        .args(["--agent-server-url", "http://127.0.0.1:9"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("unix:{}", socket.display());
    let deadline = Instant::now() + TIMEOUT;
    while !socket.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon never made its socket"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = output(cli_at(&url).args(["exec", "--", "echo", "over a socket"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "over a socket\n");
    let out = output(cli_at(&url).arg("status")).await;
    assert_code(&out, 0);
    assert!(text(&out.stdout).contains(&format!("at {url}")));
    // SAFETY: kill with plain integers, on our own child.
    unsafe { libc::kill(daemon.id().unwrap() as i32, libc::SIGTERM) };
    let _ = tokio::time::timeout(TIMEOUT, daemon.wait()).await;
}

/// Completion scripts generate for bash, zsh and fish and name the
/// commands; bash accepts its script.
#[tokio::test]
async fn completions_generate() {
    for shell in ["bash", "zsh", "fish"] {
        let out = output(Command::new(support::bin()).args(["completions", shell])).await;
        assert_code(&out, 0);
        let script = text(&out.stdout);
        for word in [
            "exec",
            "upload",
            "runs",
            "logs",
            "cancel",
            "status",
            "session-key-file",
        ] {
            assert!(script.contains(word), "{shell} completion lacks {word}");
        }
        // Where each shell lists the commands (help texts may say "shim").
        let listed = match shell {
            "bash" => script.contains("sandboxd,shim)") || script.contains(" shim "),
            "zsh" => script.contains("'shim:"),
            _ => script.contains("-a \"shim\""),
        };
        assert!(!listed, "{shell}: hidden commands stay hidden");
        assert!(
            match shell {
                "bash" => script.contains("sandboxd,logs)"),
                "zsh" => script.contains("'logs:"),
                _ => script.contains("-a \"logs\""),
            },
            "{shell}: the listing checked above is where commands are"
        );
        if shell == "bash" {
            let path = tempfile::NamedTempFile::new().unwrap();
            std::fs::write(path.path(), &script).unwrap();
            let check = output(Command::new("bash").arg("-n").arg(path.path())).await;
            assert_code(&check, 0);
        }
    }
}

/// `man` renders roff pages for sandboxd and for each command; `--help`
/// alone explains the key, the URL and exec's exit codes.
#[tokio::test]
async fn man_pages_and_help_stand_on_their_own() {
    let out = output(Command::new(support::bin()).arg("man")).await;
    assert_code(&out, 0);
    let page = text(&out.stdout);
    assert!(
        page.starts_with(".ie") || page.contains(".TH sandboxd"),
        "{page}"
    );
    assert!(page.contains("exec") && page.contains("upload"));

    let out = output(Command::new(support::bin()).args(["man", "exec"])).await;
    assert_code(&out, 0);
    assert!(
        text(&out.stdout).contains(".TH sandboxd-exec"),
        "{}",
        text(&out.stdout)
    );

    let out = output(Command::new(support::bin()).args(["man", "nope"])).await;
    assert_code(&out, 2);

    let out = output(Command::new(support::bin()).arg("--help")).await;
    assert_code(&out, 0);
    let help = text(&out.stdout);
    for needle in [
        "SESSION_API_KEY",
        "SANDBOXD_URL",
        "sandboxd serve",
        "Examples:",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}:\n{help}");
    }
    let out = output(Command::new(support::bin()).args(["exec", "--help"])).await;
    let help = text(&out.stdout);
    for needle in ["128+N", "124", "127", "130", "125", "--secret", "Ctrl-C"] {
        assert!(help.contains(needle), "exec --help lacks {needle}:\n{help}");
    }
}

/// A file that is no archive is refused before anything is sent.
#[tokio::test]
async fn upload_of_a_non_archive_file_is_refused_locally() {
    let daemon = TestDaemon::start().await;
    let file = daemon.dir.path().join("notes.txt");
    std::fs::write(&file, "not an archive").unwrap();
    let out = output(cli(&daemon).arg("upload").arg(&file).args(["--run", "r1"])).await;
    assert_code(&out, 1);
    assert!(text(&out.stderr).contains("is not a tar, tar.gz or tar.zst archive"));
}

/// A project dir: files, a subdir, an empty dir, a symlink inside.
fn project(dir: &Path) {
    std::fs::create_dir_all(dir.join("src/empty")).unwrap();
    std::fs::write(dir.join("main.py"), "print('hello from the bundle')\n").unwrap();
    std::fs::write(dir.join("src/data.bin"), vec![42u8; 300_000]).unwrap();
    std::os::unix::fs::symlink("main.py", dir.join("link.py")).unwrap();
}

fn assert_project(dir: &Path) {
    assert_eq!(
        std::fs::read_to_string(dir.join("main.py")).unwrap(),
        "print('hello from the bundle')\n"
    );
    assert_eq!(
        std::fs::read(dir.join("src/data.bin")).unwrap(),
        vec![42u8; 300_000]
    );
    assert!(dir.join("src/empty").is_dir());
    assert_eq!(
        std::fs::read_link(dir.join("link.py")).unwrap(),
        Path::new("main.py")
    );
}

/// A directory is packed on the fly and extracted into the run's work dir,
/// where `exec --run-id` then runs; progress goes to stderr as plain lines.
#[tokio::test]
async fn upload_of_a_directory_extracts_it_into_the_run() {
    let daemon = TestDaemon::start().await;
    let src = tempfile::tempdir().unwrap();
    project(src.path());
    let out = output(
        cli(&daemon)
            .arg("upload")
            .arg(src.path())
            .args(["--run", "up-dir"]),
    )
    .await;
    assert_code(&out, 0);
    let said = text(&out.stdout);
    assert!(
        said.starts_with(&format!(
            "uploaded {} to run up-dir: ",
            src.path().display()
        )),
        "{said}"
    );
    assert!(
        text(&out.stderr).contains("packing"),
        "plain progress: {}",
        text(&out.stderr)
    );
    assert_project(&daemon.work_root().join("up-dir"));

    let out =
        output(cli(&daemon).args(["exec", "--run-id", "up-dir", "--", "python3", "main.py"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "hello from the bundle\n");
}

/// A tarball (tar.zst here) is sent as is; `--json` prints the answer.
#[tokio::test]
async fn upload_of_a_tarball_sends_it_as_is() {
    let daemon = TestDaemon::start().await;
    let src = tempfile::tempdir().unwrap();
    project(src.path());
    let archive = daemon.dir.path().join("bundle.tar.zst");
    let encoder = zstd::Encoder::new(std::fs::File::create(&archive).unwrap(), 3).unwrap();
    let mut tar = tar::Builder::new(encoder);
    tar.follow_symlinks(false);
    tar.append_dir_all("", src.path()).unwrap();
    tar.into_inner().unwrap().finish().unwrap();

    let out = output(
        cli(&daemon)
            .arg("upload")
            .arg(&archive)
            .args(["--run", "up-tar", "--json"]),
    )
    .await;
    assert_code(&out, 0);
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(answer["run_id"], "up-tar");
    assert!(answer["entries"].as_u64().unwrap() >= 5, "{answer}");
    assert_project(&daemon.work_root().join("up-tar"));
}

/// A second upload is refused (409) unless `--replace`.
#[tokio::test]
async fn upload_twice_needs_replace() {
    let daemon = TestDaemon::start().await;
    let src = tempfile::tempdir().unwrap();
    project(src.path());
    let upload = |extra: &'static [&'static str]| {
        let mut command = cli(&daemon);
        command
            .arg("upload")
            .arg(src.path())
            .args(["--run", "up-twice"])
            .args(extra);
        command
    };
    assert_code(&output(&mut upload(&[])).await, 0);
    let out = output(&mut upload(&[])).await;
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).starts_with("sandboxd: "),
        "{}",
        text(&out.stderr)
    );
    assert_code(&output(&mut upload(&["--replace"])).await, 0);
}

/// `exec --run-id` of a run that already ran does not replay it silently:
/// it is refused with what to do instead; an id in use with another
/// command is refused in CLI words (not the API's "identical body").
#[tokio::test]
async fn exec_of_an_id_that_already_ran_is_refused_with_what_to_do() {
    let daemon = TestDaemon::start().await;
    let exec_once = [
        "exec",
        "--run-id",
        "once",
        "--",
        "bash",
        "-c",
        "echo hi; exit 3",
    ];
    let out = output(cli(&daemon).args(exec_once)).await;
    assert_code(&out, 3);
    assert_eq!(text(&out.stdout), "hi\n");
    let out = output(cli(&daemon).args(exec_once)).await;
    assert_code(&out, 125);
    assert_eq!(text(&out.stdout), "", "the old output is not replayed");
    let err = text(&out.stderr);
    assert!(
        err.contains("run once already ran (failed, exit 3)")
            && err.contains("sandboxd logs once")
            && err.contains("sandboxd run delete once"),
        "{err}"
    );
    daemon
        .start_run(json!({"run_id": "busy", "command": ["sleep", "30"]}))
        .await;
    daemon
        .wait_run("busy", "running", |r| r["state"] == "running")
        .await;
    let out = output(cli(&daemon).args(["exec", "--run-id", "busy", "--", "true"])).await;
    assert_code(&out, 125);
    let err = text(&out.stderr);
    assert!(err.contains("already exists with another command"), "{err}");
    assert!(!err.contains("identical") && !err.contains("body"), "{err}");
    // Deleting the ended run frees its id.
    let out = output(cli(&daemon).args(["run", "delete", "once"])).await;
    assert_code(&out, 0);
    let out = output(cli(&daemon).args(["exec", "--run-id", "once", "--", "echo", "again"])).await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "again\n");
}

/// `logs -f` exits with the run's exit code, as `exec` does.
#[tokio::test]
async fn logs_follow_exits_with_the_runs_code() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "three", "command": ["bash", "-c", "sleep 0.3; echo out; echo err >&2; exit 3"]}))
        .await;
    let out = output(cli(&daemon).args(["logs", "-f", "three"])).await;
    assert_code(&out, 3);
    assert_eq!(text(&out.stdout), "out\n");
    assert_eq!(text(&out.stderr), "err\n");
    // Without -f: the output only, exit 0.
    let out = output(cli(&daemon).args(["logs", "three"])).await;
    assert_code(&out, 0);
}

/// `run show`, `run signal`, `run delete`: one run at a time.
#[tokio::test]
async fn run_show_signal_and_delete() {
    let daemon = TestDaemon::start().await;
    let script = "trap 'echo got INT; exit 4' INT; echo ready; while :; do sleep 0.05; done";
    let out = output(cli(&daemon).args([
        "exec", "--detach", "--run-id", "sig", "--", "bash", "-c", script,
    ]))
    .await;
    assert_code(&out, 0);
    assert_eq!(text(&out.stdout), "sig\n");
    daemon
        .wait_run("sig", "ready", |r| r["stdout_bytes"].as_u64() > Some(0))
        .await;
    let out = output(cli(&daemon).args(["run", "delete", "sig"])).await;
    assert_code(&out, 1);
    assert!(
        text(&out.stderr).contains("sandboxd cancel sig"),
        "{}",
        text(&out.stderr)
    );
    let out = output(cli(&daemon).args(["run", "signal", "sig", "INT"])).await;
    assert_code(&out, 0);
    let run = daemon.wait_ended("sig").await;
    assert_eq!(run["exit_code"], 4, "{run}");
    let out = output(cli(&daemon).args(["run", "show", "sig"])).await;
    assert_code(&out, 0);
    let shown = text(&out.stdout);
    assert!(
        shown.contains("state:") && shown.contains("failed") && shown.contains("exit code: 4"),
        "{shown}"
    );
    let out = output(cli(&daemon).args(["run", "show", "--json", "sig"])).await;
    let json: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["run_id"], "sig");
    let out = output(cli(&daemon).args(["run", "delete", "sig"])).await;
    assert_code(&out, 0);
    let (status, _) = daemon.get("/v1/runs/sig").await;
    assert_eq!(status, 404);
}

/// `--url` works before or after the subcommand; a bad SANDBOXD_URL is
/// reported as coming from the environment, with an example.
#[tokio::test]
async fn client_options_go_before_or_after_the_subcommand() {
    let daemon = TestDaemon::start().await;
    for args in [
        vec!["--url", daemon.url.as_str(), "runs"],
        vec!["runs", "--url", daemon.url.as_str()],
    ] {
        let out = output(cli_at("http://127.0.0.1:1").args(&args)).await;
        assert_code(&out, 0);
    }
    let out = output(cli_at("localhost:60001").arg("runs")).await;
    assert_code(&out, 1);
    let err = text(&out.stderr);
    assert!(
        err.contains("SANDBOXD_URL (from the environment)")
            && err.contains("http://localhost:60001"),
        "{err}"
    );
    assert!(!err.contains("--url"), "{err}");
}

/// The daemon stopping while `exec` follows a run: the client does not say
/// to start a daemon it was talking to; it says the run may go on and how
/// to follow it.
#[tokio::test]
async fn exec_when_the_daemon_dies_points_to_logs_follow() {
    let mut daemon = TestDaemon::start_binary().await;
    let mut child = spawn(cli(&daemon).args([
        "exec",
        "--run-id",
        "orphan",
        "--",
        "bash",
        "-c",
        "echo started; sleep 30",
    ]));
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stdout, &mut seen, "started\n").await;
    daemon.kill9();
    child.stdout = Some(stdout);
    let (code, _, err) = finish(child, seen).await;
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("sandboxd logs -f orphan"), "{err}");
    assert!(!err.contains("start it with"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// A start-up error of `serve` is printed once, and without colour codes
/// when stderr is not a terminal.
#[tokio::test]
async fn serve_startup_error_is_printed_once_without_colour() {
    let dir = tempfile::tempdir().unwrap();
    let out = output(
        Command::new(support::bin())
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(dir.path())
            .env_remove("SESSION_API_KEY")
            .env_remove("OH_SESSION_API_KEYS_0")
            .env_remove("SANDBOXD_SESSION_KEY_FILE")
            .stdin(Stdio::null()),
    )
    .await;
    assert_code(&out, 2);
    let err = text(&out.stderr);
    assert_eq!(err.matches("no session key").count(), 1, "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

/// The help says that `exec` runs `setup.sh` first, as the README does.
#[tokio::test]
async fn exec_help_and_readme_say_setup_sh_runs_first() {
    let out = output(Command::new(support::bin()).args(["exec", "--help"])).await;
    let help = text(&out.stdout);
    assert!(help.contains("`bash setup.sh` runs first"), "{help}");
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    assert!(readme.contains("`exec` runs `bash setup.sh` first"));
}

/// `serve --help` groups its flags by topic, with units; sizes and
/// durations take units in flags (`512MiB`, `5m`), and a bad size names
/// the flag with an example.
#[tokio::test]
async fn serve_flags_are_grouped_and_take_units() {
    let out = output(Command::new(support::bin()).args(["serve", "--help"])).await;
    let help = text(&out.stdout);
    for heading in [
        "Listening and auth:",
        "Runs:",
        "Uploads:",
        "Secrets:",
        "Callbacks:",
        "Entrypoint (serve -- CMD):",
        "Logging:",
    ] {
        assert!(help.contains(heading), "{heading} missing:\n{help}");
    }
    assert!(
        help.contains("--max-bundle-bytes <SIZE>") && help.contains("[default: 512MiB]"),
        "{help}"
    );
    assert!(
        help.contains("--kill-grace <DURATION>") && help.contains("[default: 10s]"),
        "{help}"
    );
    let daemon = TestDaemon::start_with(support::Options {
        args: [
            "--max-bundle-bytes",
            "512 MiB",
            "--wait-output-bytes",
            "64KiB",
            "--default-timeout",
            "5m",
        ]
        .map(String::from)
        .to_vec(),
        ..Default::default()
    })
    .await;
    let (status, _) = daemon.get("/v1/status").await;
    assert_eq!(status, 200);
    let out =
        output(Command::new(support::bin()).args(["serve", "--max-bundle-bytes", "lots"])).await;
    assert_code(&out, 2);
    let err = text(&out.stderr);
    assert!(
        err.contains("--max-bundle-bytes") && err.contains("512MiB"),
        "{err}"
    );
}

/// The daemon's text logs carry no ANSI colour codes when stderr is a file
/// or a pipe.
#[tokio::test]
async fn text_logs_into_a_pipe_have_no_colour() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(support::bin())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "text",
            "--insecure-no-auth",
        ])
        .args(["--agent-server-url", "http://127.0.0.1:9", "--state-dir"])
        .arg(dir.path())
        .env_remove("RUST_LOG")
        .env_remove("JOURNAL_STREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let mut seen = String::new();
    read_until(&mut stderr, &mut seen, "listening").await;
    child.kill().await.unwrap();
    assert!(!seen.contains('\x1b'), "{seen:?}");
}

/// A private tmux server (its own socket), killed when dropped.
struct Tmux {
    socket: std::path::PathBuf,
}

impl Tmux {
    /// Whether `tmux` is on the PATH.
    fn available() -> bool {
        std::process::Command::new("tmux")
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        // -u: UTF-8 on screen and in captures, whatever the locale.
        command
            .args(["-u", "-f", "/dev/null"])
            .arg("-S")
            .arg(&self.socket)
            .env_remove("TMUX")
            .stdin(Stdio::null())
            .kill_on_drop(true);
        command
    }

    async fn run(&self, args: &[&str]) -> String {
        let out = output(self.command().args(args)).await;
        assert!(out.status.success(), "tmux {args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = std::process::Command::new("tmux")
            .arg("-S")
            .arg(&self.socket)
            .arg("kill-server")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Whether a line of the screen is indicatif's default bar,
/// `{wide_bar} {pos}/{len}` drawn with `█` and `░`.
fn is_default_bar(line: &str) -> bool {
    let bare_count = line.split_whitespace().last().is_some_and(|last| {
        last.split_once('/').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        })
    });
    line.contains('░') || line.contains('█') || bare_count
}

/// Whether a line of the screen is sandboxd's bar:
/// `packing DIR (N files) [===>   ] 1.00 MiB/4.00 MiB 2.00 MiB/s eta 1s`.
fn is_styled_bar(line: &str) -> bool {
    line.starts_with("packing ")
        && line.contains(" files) [")
        && line.contains("B/")
        && line.contains(" eta ")
}

/// On a terminal, `upload`'s progress bar has sandboxd's style from its
/// first frame: the screen, captured again and again from before the
/// upload starts to its end, never shows the library's default bar, and
/// neither does the record of every byte written to the terminal (the
/// default frame used to last about a millisecond: most runs of the old
/// code were caught by the captures, every one by the record). Runs in a
/// real terminal (tmux); skipped with a note when tmux is absent.
#[tokio::test]
async fn upload_progress_bar_is_styled_from_its_first_frame() {
    if !Tmux::available() {
        eprintln!("skipped: upload_progress_bar_is_styled_from_its_first_frame needs tmux");
        return;
    }
    let daemon = TestDaemon::start().await;
    // Incompressible data: packing it takes a moment.
    let src = daemon.dir.path().join("big");
    std::fs::create_dir_all(&src).unwrap();
    for i in 0..4 {
        let mut random = std::fs::File::open("/dev/urandom").unwrap();
        let mut file = std::fs::File::create(src.join(format!("blob{i}.bin"))).unwrap();
        std::io::copy(&mut std::io::Read::take(&mut random, 2 << 20), &mut file).unwrap();
    }
    let gate = daemon.dir.path().join("gate");
    let script = format!(
        "{}; '{}' upload '{}' --run bar; echo upload-exit=$?; sleep 60",
        wait_for_file(&gate),
        support::bin(),
        src.display()
    );
    let tmux = Tmux {
        socket: daemon.dir.path().join("tmux.sock"),
    };
    let mut start = tmux.command();
    start
        .env("SANDBOXD_URL", &daemon.url)
        .env("SESSION_API_KEY", KEY)
        .env_remove("SANDBOXD_SESSION_KEY_FILE")
        .env_remove("OH_SESSION_API_KEYS_0")
        .env("TERM", "xterm-256color")
        .args(["new-session", "-d", "-s", "up", "-x", "100", "-y", "40"])
        .args(["sh", "-c", &script]);
    let out = output(&mut start).await;
    assert!(out.status.success(), "tmux: {}", text(&out.stderr));

    // Everything the upload writes to the terminal, byte for byte: a frame
    // replaced within a millisecond can fall between two captures, not out
    // of this record.
    let raw = daemon.dir.path().join("pane.raw");
    tmux.run(&[
        "pipe-pane",
        "-t",
        "up",
        &format!("cat >> '{}'", raw.display()),
    ])
    .await;

    // Capture from before the upload starts until it has ended.
    let capture = || tmux.run(&["capture-pane", "-p", "-J", "-t", "up"]);
    let mut captures = vec![capture().await];
    std::fs::write(&gate, "").unwrap();
    let deadline = Instant::now() + TIMEOUT;
    while !captures.last().unwrap().contains("upload-exit=") {
        assert!(
            Instant::now() < deadline,
            "the upload did not end in time; the screen:\n{}",
            captures.last().unwrap()
        );
        captures.push(capture().await);
    }
    let last = captures.last().unwrap();
    assert!(last.contains("upload-exit=0"), "the upload failed:\n{last}");
    assert!(last.contains("uploaded "), "{last}");
    for (i, screen) in captures.iter().enumerate() {
        assert!(
            !screen.lines().any(is_default_bar),
            "the library's default bar style on screen (capture {} of {}):\n{screen}",
            i + 1,
            captures.len()
        );
    }
    assert!(
        captures
            .iter()
            .any(|screen| screen.lines().any(is_styled_bar)),
        "none of {} captures shows sandboxd's bar; the last one:\n{last}",
        captures.len()
    );

    let mut written = String::new();
    while !written.contains("upload-exit=") {
        assert!(
            Instant::now() < deadline,
            "the pane's record never got to the end: {written:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
        written = text(&std::fs::read(&raw).unwrap_or_default());
    }
    // Frames are separated by `\r` and an erase-line sequence.
    let frames: Vec<String> = written
        .split(['\r', '\n'])
        .map(|frame| frame.replace("\x1b[2K", ""))
        .collect();
    assert!(
        !frames.iter().any(|frame| is_default_bar(frame)),
        "the library's default bar style was drawn: {:?}",
        frames.iter().find(|frame| is_default_bar(frame))
    );
    assert!(
        frames.iter().any(|frame| is_styled_bar(frame)),
        "{written:?}"
    );
}

/// `runs` shows the newest runs first, at most `--limit`, says when there
/// are more, and `--all` pages through every run.
#[tokio::test]
async fn runs_lists_newest_first_with_a_limit() {
    let daemon = TestDaemon::start().await;
    for i in 0..4 {
        daemon
            .exec(json!({"run_id": format!("lim{i}"), "command": "true"}))
            .await;
    }
    let out = output(cli(&daemon).args(["runs", "--limit", "2"])).await;
    assert_code(&out, 0);
    let shown = text(&out.stdout);
    let order: Vec<&str> = shown
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .filter(|id| id.starts_with("lim"))
        .collect();
    assert_eq!(order, ["lim3", "lim2"], "{shown}");
    assert!(shown.contains("--limit N or --all"), "{shown}");
    let out = output(cli(&daemon).args(["runs", "--all", "--json"])).await;
    assert_code(&out, 0);
    let all: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(all["runs"].as_array().unwrap().len(), 4, "{all}");
    assert_eq!(all["next"], serde_json::Value::Null);
}

//! The Python examples under `examples/`, run against a real daemon with
//! an interpreter that has the `sandboxd` package (`python/`) installed:
//! the package's client from inside a run, the automation script and the
//! dispatcher. The venv is made once per test process (uv when present,
//! else `python3 -m venv`) under the target dir.
//!
//! `examples_automation_script_resolves_its_secrets` needs
//! `POST /v1/secrets/resolve` (the secrets branch);
//! `examples_dispatcher_*` needs the bundle upload and the completion
//! callbacks (the uploads and callbacks branches).

use std::path::PathBuf;
use std::process::Output;

use serde_json::{json, Value};

use crate::support::{Options, TestDaemon, KEY, TIMEOUT};

/// The venv with the `sandboxd` package, made (or refreshed) once.
fn venv() -> &'static PathBuf {
    static VENV: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    VENV.get_or_init(|| {
        let venv = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("examples-venv");
        let package = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python");
        let python = venv.join("bin/python");
        let has_uv = std::process::Command::new("uv")
            .arg("--version")
            .output()
            .is_ok_and(|out| out.status.success());
        let steps: Vec<Vec<String>> = if has_uv {
            vec![
                vec![
                    "uv".into(),
                    "venv".into(),
                    "-q".into(),
                    "--allow-existing".into(),
                    "--python".into(),
                    "python3".into(),
                    venv.display().to_string(),
                ],
                vec![
                    "uv".into(),
                    "pip".into(),
                    "install".into(),
                    "-q".into(),
                    "--python".into(),
                    python.display().to_string(),
                    package.display().to_string(),
                ],
            ]
        } else {
            vec![
                vec![
                    "python3".into(),
                    "-m".into(),
                    "venv".into(),
                    venv.display().to_string(),
                ],
                vec![
                    python.display().to_string(),
                    "-m".into(),
                    "pip".into(),
                    "install".into(),
                    "-q".into(),
                    package.display().to_string(),
                ],
            ]
        };
        for step in steps {
            let out = std::process::Command::new(&step[0])
                .args(&step[1..])
                .output()
                .unwrap();
            assert!(out.status.success(), "{step:?}: {}", text(&out.stderr));
        }
        venv
    })
}

/// The venv's interpreter.
fn python_bin() -> String {
    venv().join("bin/python3").display().to_string()
}

/// `PATH` with the venv's `bin` first: `python3` is the venv's.
fn venv_path() -> String {
    format!(
        "{}:{}",
        venv().join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// A daemon whose runs find the venv's `python3` first on their `PATH`.
async fn daemon() -> TestDaemon {
    TestDaemon::start_with(Options {
        env: vec![("PATH".into(), venv_path())],
        ..Options::default()
    })
    .await
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example(name: &str) -> String {
    examples_dir().join(name).display().to_string()
}

async fn python(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(python_bin());
    command
        .args(args)
        .env("PYTHONPATH", examples_dir())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env_remove("SESSION_API_KEY")
        .env_remove("SANDBOXD_RUN_TOKEN")
        .kill_on_drop(true);
    command.envs(env.iter().copied());
    tokio::time::timeout(TIMEOUT * 2, command.output())
        .await
        .expect("python3 did not end in time")
        .expect("python3 is installed")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Runs `python3 examples/automation_script.py ARGS` as a run of `daemon`
/// and waits for its end; its final status with stdout and stderr.
async fn run_automation_script(daemon: &TestDaemon, run_id: &str, extra: Value) -> Value {
    let mut body = json!({
        "run_id": run_id,
        "command": ["python3", example("automation_script.py")],
        "env": {"PYTHONDONTWRITEBYTECODE": "1"},
    });
    for (key, value) in extra.as_object().unwrap() {
        if key == "args" {
            let command = body["command"].as_array_mut().unwrap();
            command.extend(value.as_array().unwrap().iter().cloned());
        } else {
            body[key] = value.clone();
        }
    }
    daemon.exec(body).await
}

/// The automation script reads its own status and reports its
/// conversation id and cost with its run token; the report is on the run.
#[tokio::test]
async fn examples_automation_script_reports_and_reads_its_status() {
    let daemon = daemon().await;
    let run = run_automation_script(
        &daemon,
        "ex-auto",
        json!({"args": ["--conversation-id", "conv-42", "--cost", "0.42"]}),
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    assert!(stdout.contains("run ex-auto is running"), "{stdout}");
    assert!(
        stdout.contains("reported conversation conv-42 at cost 0.42"),
        "{stdout}"
    );
    assert_eq!(
        run["report"],
        json!({"conversation_id": "conv-42", "cost": 0.42})
    );
}

/// The automation script resolves its run's secret afresh; the value
/// matches its env var and never shows in its output.
#[tokio::test]
async fn examples_automation_script_resolves_its_secrets() {
    let daemon = daemon().await;
    let value = "s3cret-value-for-the-example";
    let run = run_automation_script(
        &daemon,
        "ex-secret",
        json!({
            "args": ["--secret", "DEMO_TOKEN"],
            "secrets": {"DEMO_TOKEN": {"kind": "StaticSecret", "value": value}},
        }),
    )
    .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    assert!(
        stdout.contains(&format!(
            "secret DEMO_TOKEN: resolved, {} characters, matches its env var",
            value.len()
        )),
        "{stdout}"
    );
    assert!(!stdout.contains(value));
}

/// The client module raises SandboxdError with the daemon's code: a run
/// token cannot read the daemon's status (403), a wrong key is 401, and a
/// daemon that is down is SandboxdUnavailable.
#[tokio::test]
async fn examples_client_module_raises_the_daemons_errors() {
    let daemon = daemon().await;
    let script = r#"
import os, sys
from sandboxd import Client, SandboxdError, SandboxdUnavailable
client = Client.from_env()
print("own status:", client.status().state.value)
try:
    client.daemon_status()
except SandboxdError as err:
    print("daemon status:", err.status, err.code)
try:
    Client(os.environ["SANDBOXD_URL"], "wrong").daemon_status()
except SandboxdError as err:
    print("wrong key:", err.status, err.code)
try:
    Client("http://127.0.0.1:9", "x").daemon_status()
except SandboxdUnavailable as err:
    print("down:", err.code)
print(repr(client))
"#;
    let run = daemon
        .exec(json!({
            "run_id": "ex-errors",
            "command": ["python3", "-c", script],
            "env": {"PYTHONPATH": examples_dir().display().to_string()},
        }))
        .await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let stdout = run["stdout"].as_str().unwrap();
    for line in [
        "own status: running",
        "daemon status: 403 forbidden",
        "wrong key: 401 unauthorized",
        "down: unreachable",
        "Client(url=",
    ] {
        assert!(stdout.contains(line), "{line:?} in {stdout}");
    }
}

/// The dispatcher packs a directory, uploads it, starts a run with a
/// callback to its own HTTP server and receives the callback, which
/// carries what the bundled automation script reported.
#[tokio::test]
async fn examples_dispatcher_uploads_runs_and_receives_the_callback() {
    let daemon = daemon().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::copy(
        example("automation_script.py"),
        project.path().join("automation_script.py"),
    )
    .unwrap();
    std::fs::write(project.path().join("setup.sh"), "echo setup done\n").unwrap();
    let out = python(
        &[
            &example("dispatcher.py"),
            project.path().to_str().unwrap(),
            "--url",
            &daemon.url,
            "--run-id",
            "ex-dispatch",
            "--timeout",
            "60",
            "--",
            "python3",
            "automation_script.py",
            "--conversation-id",
            "conv-from-bundle",
            "--cost",
            "1.5",
        ],
        &[("SESSION_API_KEY", KEY)],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    assert!(stdout.contains("uploaded "), "{stdout}");
    assert!(stdout.contains("setup done"), "{stdout}");
    let payload = stdout
        .lines()
        .find_map(|line| line.strip_prefix("callback: "))
        .unwrap_or_else(|| panic!("no callback line in {stdout}"));
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(
        payload,
        json!({
            "status": "COMPLETED",
            "run_id": "ex-dispatch",
            "conversation_id": "conv-from-bundle",
            "cost": 1.5,
        })
    );
}

/// A failing bundled command gives a FAILED callback and exit 1.
#[tokio::test]
async fn examples_dispatcher_reports_a_failed_run() {
    let daemon = daemon().await;
    let project = tempfile::tempdir().unwrap();
    std::fs::write(project.path().join("fail.sh"), "echo broken >&2; exit 4\n").unwrap();
    let out = python(
        &[
            &example("dispatcher.py"),
            project.path().to_str().unwrap(),
            "--url",
            &daemon.url,
            "--timeout",
            "60",
            "--",
            "bash",
            "fail.sh",
        ],
        &[("SESSION_API_KEY", KEY)],
    )
    .await;
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "stdout: {stdout}\nstderr: {}",
        text(&out.stderr)
    );
    let payload = stdout
        .lines()
        .find_map(|line| line.strip_prefix("callback: "))
        .unwrap_or_else(|| panic!("no callback line in {stdout}"));
    let payload: Value = serde_json::from_str(payload).unwrap();
    assert_eq!(payload["status"], "FAILED");
    let error = payload["error"].as_str().unwrap();
    assert!(
        error.contains("exit_code=4") && error.contains("broken"),
        "{error}"
    );
}

/// An unreachable daemon is reported without a made-up "HTTP 0", and the
/// dispatcher's `--help` shows its whole description.
#[tokio::test]
async fn examples_unreachable_and_help_read_well() {
    let script = "import sandboxd as s\n\
                  try:\n    s.Client('http://127.0.0.1:1', 'k').daemon_status()\n\
                  except s.SandboxdUnavailable as e:\n    print(e)\n";
    let out = python(&["-c", script], &[]).await;
    let said = text(&out.stdout);
    assert!(
        said.contains("cannot reach sandboxd") && said.contains("(unreachable)"),
        "{said}{}",
        text(&out.stderr)
    );
    assert!(!said.contains("HTTP 0"), "{said}");
    let out = python(&[&example("dispatcher.py"), "--help"], &[]).await;
    let help = text(&out.stdout);
    assert!(
        help.contains("drives a sandbox through sandboxd:") && help.contains("Exits 0 when the"),
        "{help}"
    );
}

/// The automation script's docstring command works as written, from the
/// repository's root.
#[tokio::test]
async fn examples_automation_script_docstring_command_works() {
    let daemon = daemon().await;
    let source = std::fs::read_to_string(example("automation_script.py")).unwrap();
    let (_, after) = source.split_once("for example").unwrap();
    let command: String = after
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("sandboxd exec"))
        .take_while(|l| !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n")
        .replace("\\\\", "\\");
    assert!(command.starts_with("    sandboxd exec"), "{command}");
    let bin_dir = PathBuf::from(crate::support::bin())
        .parent()
        .unwrap()
        .to_owned();
    let out = tokio::process::Command::new("bash")
        .args(["-c", &command])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("PATH", format!("{}:{}", bin_dir.display(), venv_path()))
        .env("SANDBOXD_URL", &daemon.url)
        .env("SESSION_API_KEY", crate::support::KEY)
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

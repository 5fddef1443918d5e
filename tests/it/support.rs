//! Test harness: [`TestDaemon`] runs `sandboxd::run` in-process (its own
//! runtime thread, a listener on 127.0.0.1:0, a signal channel), or the
//! real binary where the process itself matters; [`wait_for`] polls a
//! condition with a deadline instead of sleeping and hoping.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long any wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(20);

/// The session key every test daemon uses.
pub const KEY: &str = "test-session-key-0123456789";

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sandboxd")
}

/// The shim's own executable, `sandboxd-shim`.
pub fn shim_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sandboxd-shim")
}

/// How to start a daemon.
#[derive(Default)]
pub struct Options {
    /// Extra `serve` flags.
    pub args: Vec<String>,
    /// Extra environment.
    pub env: Vec<(String, String)>,
    /// Start from an empty environment (plus PATH/HOME) instead of ours.
    pub env_clear: bool,
    /// Reuse this dir (state in `state/`, work in `work/`) instead of a new one.
    pub dir: Option<Arc<tempfile::TempDir>>,
    /// Text after `--`: a supervised service.
    pub service: Vec<String>,
    /// Run the daemon as this uid/gid (tests running as root).
    pub uid: Option<u32>,
    /// Start the daemon with exactly this environment.
    pub exact_env: Option<Vec<(String, String)>>,
    /// Signals the daemon starts with ignored (as if its parent ignored them).
    pub ignored_signals: Vec<i32>,
    /// Start sandboxd under this command (e.g. `unshare --pid --fork`).
    pub wrapper: Vec<String>,
    /// Run the binary even when nothing else asks for it: the test needs
    /// the process (its pid, signals, kill -9, its log lines).
    pub binary: bool,
    /// Runs use `sandboxd shim`, as where `sandboxd-shim` is not installed
    /// beside sandboxd (in-process daemons only).
    pub own_shim: bool,
}

impl Options {
    /// The binary: asked for, or implied by an option only a process has
    /// (its own environment, uid, signal dispositions, a wrapper, an init
    /// for `--subreaper`, a service whose output goes to its stdout).
    fn needs_binary(&self) -> bool {
        self.binary
            || !self.env.is_empty()
            || self.env_clear
            || self.uid.is_some()
            || self.exact_env.is_some()
            || !self.ignored_signals.is_empty()
            || !self.wrapper.is_empty()
            || !self.service.is_empty()
            || self.args.iter().any(|a| a == "--subreaper")
    }
}

/// A running daemon: in-process or `sandboxd serve`.
pub struct TestDaemon {
    /// Base URL.
    pub url: String,
    /// Temp dir holding state and work.
    pub dir: Arc<tempfile::TempDir>,
    backend: Backend,
    http: reqwest::Client,
}

enum Backend {
    Binary(Binary),
    InProcess(InProcess),
}

/// `sandboxd serve` as a child process.
struct Binary {
    child: Child,
    logs: Arc<Mutex<String>>,
    stdout: Arc<Mutex<String>>,
}

/// `sandboxd::run` on a runtime of its own, in a thread of this process.
struct InProcess {
    /// Dropped (or sent SIGTERM) to stop the daemon.
    signals: Option<sandboxd::SignalSender>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<ExitCode>>>,
}

impl TestDaemon {
    /// A daemon with default options (in-process).
    pub async fn start() -> TestDaemon {
        TestDaemon::start_with(Options::default()).await
    }

    /// The real binary with default options.
    pub async fn start_binary() -> TestDaemon {
        TestDaemon::start_with(Options {
            binary: true,
            ..Options::default()
        })
        .await
    }

    /// A daemon with these options.
    pub async fn start_with(options: Options) -> TestDaemon {
        let dir = options
            .dir
            .clone()
            .unwrap_or_else(|| Arc::new(tempfile::tempdir().unwrap()));
        let key_file = dir.path().join("key");
        std::fs::write(&key_file, KEY).unwrap();
        if !options.needs_binary() {
            return TestDaemon::start_in_process(&options, dir, &key_file).await;
        }
        // An exact environment goes through `env -i`: std's Command treats a
        // cleared-and-empty environment as "unchanged".
        let mut command = match (&options.exact_env, options.wrapper.split_first()) {
            (Some(env), _) => {
                let mut command = Command::new("/usr/bin/env");
                command
                    .arg("-i")
                    .args(env.iter().map(|(k, v)| format!("{k}={v}")))
                    .arg(bin());
                command
            }
            (None, Some((program, args))) => {
                let mut command = Command::new(program);
                command.args(args).arg(bin());
                command
            }
            (None, None) => Command::new(bin()),
        };
        command
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--work-root")
            .arg(dir.path().join("work"))
            .arg("--session-key-file")
            .arg(&key_file)
            .args(&options.args);
        if !options.args.iter().any(|a| a == "--agent-server-url") {
            command.args(["--agent-server-url", "http://127.0.0.1:9"]);
        }
        if !options.service.is_empty() {
            command.arg("--").args(&options.service);
        }
        if options.env_clear {
            command.env_clear();
            command.env("PATH", std::env::var("PATH").unwrap_or_default());
        }
        command
            .env_remove("SESSION_API_KEY")
            .env_remove("OPENHANDS_API_KEY");
        command.envs(options.env.iter().map(|(k, v)| (k, v)));
        if let Some(uid) = options.uid {
            use std::os::unix::process::CommandExt;
            chown_tree(dir.path(), uid);
            command.uid(uid).gid(uid);
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("start sandboxd");
        let stdout_text = Arc::new(Mutex::new(String::new()));
        let stdout = child.stdout.take().unwrap();
        let sink = stdout_text.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let mut text = sink.lock().unwrap();
                text.push_str(&line);
                text.push('\n');
            }
        });
        let logs = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let sink = logs.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if let Ok(event) = serde_json::from_str::<Value>(&line) {
                    if event["message"] == "listening" {
                        let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                    }
                }
                let mut logs = sink.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        });
        let url = match rx.recv_timeout(TIMEOUT) {
            Ok(url) => url,
            Err(_) => {
                let _ = child.kill();
                panic!("sandboxd did not start; its log:\n{}", logs.lock().unwrap());
            }
        };
        TestDaemon {
            url,
            dir,
            backend: Backend::Binary(Binary {
                child,
                logs,
                stdout: stdout_text,
            }),
            http: reqwest::Client::new(),
        }
    }

    /// `sandboxd::run` with the config `serve` would build from these
    /// flags, its shims the binary under test; returns once it answers.
    async fn start_in_process(
        options: &Options,
        dir: Arc<tempfile::TempDir>,
        key_file: &Path,
    ) -> TestDaemon {
        use clap::Parser;
        let mut argv: Vec<std::ffi::OsString> = ["sandboxd", "serve", "--listen", "127.0.0.1:0"]
            .map(Into::into)
            .to_vec();
        argv.extend([
            "--state-dir".into(),
            dir.path().join("state").into(),
            "--work-root".into(),
            dir.path().join("work").into(),
            "--session-key-file".into(),
            key_file.into(),
        ]);
        argv.extend(options.args.iter().map(Into::into));
        if !options.args.iter().any(|a| a == "--agent-server-url") {
            argv.extend(["--agent-server-url".into(), "http://127.0.0.1:9".into()]);
        }
        let cli = sandboxd::cli::Cli::try_parse_from(argv).expect("serve flags");
        let sandboxd::cli::Command::Serve { args, service } = cli.command else {
            unreachable!("parsed as serve");
        };
        let mut config = sandboxd::config::Config::from_args(&args).expect("a valid config");
        config.shim_exe = sandboxd::config::ShimExe::Exactly(match options.own_shim {
            true => bin().into(),
            false => shim_bin().into(),
        });
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (sender, signals) = sandboxd::Signals::channel();
        let thread = std::thread::Builder::new()
            .name("sandboxd".into())
            .spawn(move || {
                // The runtime `sandboxd serve` runs on (daemon::main).
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                let res = runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    sandboxd::run(config, sandboxd::Listener::Tcp(listener), signals, service).await
                });
                runtime.shutdown_timeout(Duration::from_secs(1));
                res
            })
            .unwrap();
        let mut daemon = TestDaemon {
            url,
            dir,
            backend: Backend::InProcess(InProcess {
                signals: Some(sender),
                thread: Some(thread),
            }),
            http: reqwest::Client::new(),
        };
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let res = daemon
                .http
                .get(format!("{}/healthz", daemon.url))
                .send()
                .await;
            if res.is_ok_and(|res| res.status().is_success()) {
                return daemon;
            }
            if let Backend::InProcess(inner) = &mut daemon.backend {
                if inner.thread.as_ref().is_some_and(|t| t.is_finished()) {
                    let res = inner.thread.take().unwrap().join();
                    panic!("sandboxd did not start: {res:?}");
                }
            }
            assert!(Instant::now() < deadline, "sandboxd did not start");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Stops an in-process daemon as `signal` would stop the binary, and
    /// returns what `run` returned.
    pub fn stop_in_process(&mut self, signal: nix::sys::signal::Signal) -> ExitCode {
        let Backend::InProcess(inner) = &mut self.backend else {
            panic!("stop_in_process: this daemon is the binary");
        };
        if let Some(sender) = inner.signals.take() {
            let _ = sender.try_send(signal);
        }
        let thread = inner.thread.take().expect("not stopped yet");
        thread
            .join()
            .expect("the daemon thread panicked")
            .expect("run failed")
    }

    fn binary(&self, what: &str) -> &Binary {
        match &self.backend {
            Backend::Binary(binary) => binary,
            Backend::InProcess(_) => {
                panic!("{what} needs the binary: start it with Options {{ binary: true, .. }}")
            }
        }
    }

    fn binary_mut(&mut self, what: &str) -> &mut Binary {
        match &mut self.backend {
            Backend::Binary(binary) => binary,
            Backend::InProcess(_) => {
                panic!("{what} needs the binary: start it with Options {{ binary: true, .. }}")
            }
        }
    }

    /// Everything the daemon logged so far (the binary only).
    pub fn logs(&self) -> String {
        self.binary("logs()").logs.lock().unwrap().clone()
    }

    /// Everything the daemon wrote to stdout so far (a service's output).
    pub fn stdout(&self) -> String {
        self.binary("stdout()").stdout.lock().unwrap().clone()
    }

    /// Addresses of every "listening" log line so far (a daemon restarted
    /// by its init listens again).
    pub fn listening(&self) -> Vec<String> {
        self.logs()
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|event| event["message"] == "listening")
            .filter_map(|event| event["addr"].as_str().map(str::to_owned))
            .collect()
    }

    /// The state dir.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    /// The work root.
    pub fn work_root(&self) -> PathBuf {
        self.dir.path().join("work")
    }

    /// The daemon's pid (this process's, for an in-process daemon).
    pub fn pid(&self) -> i32 {
        match &self.backend {
            Backend::Binary(binary) => binary.child.id() as i32,
            Backend::InProcess(_) => std::process::id() as i32,
        }
    }

    /// A request with the session key.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{}", self.url, path))
            .header("X-Session-API-Key", KEY)
    }

    /// GET with the key; status and JSON body (Null when not JSON).
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        send(self.request(reqwest::Method::GET, path)).await
    }

    /// POST JSON with the key.
    pub async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        send(self.request(reqwest::Method::POST, path).json(&body)).await
    }

    /// DELETE with the key.
    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        send(self.request(reqwest::Method::DELETE, path)).await
    }

    /// GET as text.
    pub async fn text(&self, path: &str) -> (StatusCode, String) {
        let res = self
            .request(reqwest::Method::GET, path)
            .send()
            .await
            .unwrap();
        let status = res.status();
        (status, res.text().await.unwrap())
    }

    /// Starts a run and waits for its end (`wait: true`); returns the answer.
    pub async fn exec(&self, mut body: Value) -> Value {
        body["wait"] = json!(true);
        let (status, run) = self.post("/v1/runs", body).await;
        assert_eq!(
            status,
            StatusCode::OK,
            "exec-and-wait answered {status}: {run}"
        );
        run
    }

    /// Starts a run without waiting; returns its status.
    pub async fn start_run(&self, body: Value) -> Value {
        let (status, run) = self.post("/v1/runs", body).await;
        assert_eq!(
            status,
            StatusCode::CREATED,
            "start answered {status}: {run}"
        );
        run
    }

    /// Polls the run until `done` holds for its status.
    pub async fn wait_run(&self, run_id: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let path = format!("/v1/runs/{run_id}");
        let deadline = Instant::now() + TIMEOUT;
        loop {
            let (_, run) = self.get(&path).await;
            if done(&run) {
                return run;
            }
            assert!(
                Instant::now() < deadline,
                "run {run_id} never came {what}; last seen: {run}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the run reaches a terminal state.
    pub async fn wait_ended(&self, run_id: &str) -> Value {
        self.wait_run(run_id, "to end", |run| {
            !matches!(
                run["state"].as_str(),
                Some("starting") | Some("running") | None
            )
        })
        .await
    }

    /// Sends a signal to the daemon (the binary only).
    pub fn signal(&self, signal: i32) {
        let pid = self.binary("signal()").child.id() as i32;
        // SAFETY: kill with plain integers.
        unsafe {
            libc::kill(pid, signal);
        }
    }

    /// Waits for the daemon to exit; returns its exit status.
    pub fn wait_exit(&mut self) -> std::process::ExitStatus {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if let Some(status) = self.binary_mut("wait_exit()").child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "sandboxd did not exit; log:\n{}",
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, then reap.
    pub fn kill9(&mut self) {
        let binary = self.binary_mut("kill9()");
        let _ = binary.child.kill();
        let _ = binary.child.wait();
    }
}

impl Drop for TestDaemon {
    fn drop(&mut self) {
        match &mut self.backend {
            Backend::Binary(binary) => {
                if matches!(binary.child.try_wait(), Ok(None)) {
                    // SAFETY: kill with plain integers.
                    unsafe { libc::kill(binary.child.id() as i32, libc::SIGTERM) };
                    let deadline = Instant::now() + Duration::from_secs(5);
                    while Instant::now() < deadline {
                        if matches!(binary.child.try_wait(), Ok(Some(_))) {
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(10));
                    }
                    let _ = binary.child.kill();
                    let _ = binary.child.wait();
                }
            }
            Backend::InProcess(inner) => {
                // A closed signal stream is a SIGTERM: the ordered shutdown.
                inner.signals = None;
                let Some(thread) = inner.thread.take() else {
                    return;
                };
                // Past the shutdown grace, the thread is left to finish on
                // its own: a test must not hang on it.
                let deadline = Instant::now() + Duration::from_secs(15);
                while !thread.is_finished() && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(10));
                }
                if thread.is_finished() {
                    let _ = thread.join();
                }
            }
        }
    }
}

/// Sends a request; status and JSON body (Null when the body is not JSON).
pub async fn send(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let res = req.send().await.expect("request");
    let status = res.status();
    let text = res.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// Polls `check` every 20 ms until it says done, or panics after [`TIMEOUT`]
/// naming what never happened and the last value seen.
pub async fn wait_for<F, Fut, T>(what: &str, mut check: F, last: &mut T)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = (bool, T)>,
    T: std::fmt::Debug,
{
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (done, value) = check().await;
        *last = value;
        if done {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what} never happened; last seen: {last:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Whether a process exists (and is not a zombie).
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .chars()
                .next();
            state != Some('Z')
        }
        Err(_) => false,
    }
}

/// Whether we run as root.
pub fn is_root() -> bool {
    // SAFETY: getuid has no preconditions.
    unsafe { libc::getuid() == 0 }
}

/// Runs `sandboxd serve` with `args` (as `uid`, when given, from a test
/// running as root) where it is expected to refuse to start: asserts it
/// exits with a failure within [`TIMEOUT`] and returns its stderr.
pub fn refused_start(args: &[&str], uid: Option<u32>) -> String {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(bin());
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
        .arg(dir.path().join("state"))
        .args(args)
        .env("SESSION_API_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(uid) = uid {
        chown_tree(dir.path(), uid);
        command.uid(uid).gid(uid);
    }
    let mut child = command.spawn().expect("start sandboxd");
    let deadline = Instant::now() + TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("sandboxd started with {args:?}; it should have refused");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "{args:?}: {status:?}\n{stderr}");
    stderr
}

fn chown_tree(path: &Path, uid: u32) {
    let _ = std::os::unix::fs::chown(path, Some(uid), Some(uid));
    if let Ok(entries) = std::fs::read_dir(path) {
        for entry in entries.flatten() {
            chown_tree(&entry.path(), uid);
        }
    }
}

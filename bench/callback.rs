//! Completion-callback latency: the time from a run's child exiting to its
//! callback arriving at a local receiver (median, p99), and the floor it
//! sits on, one local HTTP POST between the same kinds of client and server.
//!
//! ```text
//! cargo build --release --bin sandboxd
//! cargo run --release --example callback-bench -- [RUNS] [path/to/sandboxd]
//! ```
//!
//! How: the child is this program (`callback-bench child`): it writes the
//! wall-clock time in nanoseconds to stdout and `_exit(1)`s at once. The run
//! therefore fails, so its payload's `error` carries the stdout tail, and the
//! receiver (an axum app on 127.0.0.1:0) subtracts that time from its own
//! clock when the POST reaches its handler. Runs go one at a time, so no
//! run waits behind another. The daemon is the real binary with its state
//! in a temp dir on the same disk as everything else (fsyncs included).

#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::State;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const KEY: &str = "callback-bench-session-key";
const WARMUP: usize = 10;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("child") {
        let mut out = std::io::stdout();
        let _ = writeln!(out, "{}", now_ns());
        let _ = out.flush();
        // SAFETY: _exit ends the process at once; nothing needs to run after.
        unsafe { libc::_exit(1) };
    }
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(300);
    let daemon = args.get(2).map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/sandboxd")
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(bench(runs, daemon));
}

async fn bench(runs: usize, daemon_exe: PathBuf) {
    let (tx, mut arrivals) = mpsc::unbounded_channel::<(u128, Value)>();
    let app = axum::Router::new().fallback(receive).with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let receiver = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let (mut daemon, url) = start_daemon(&daemon_exe, dir.path());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let child = std::env::current_exe().unwrap();

    let mut end_to_end = Vec::with_capacity(runs);
    for i in 0..runs + WARMUP {
        let run_id = format!("b{i}");
        let body = json!({
            "run_id": run_id,
            "command": [child.display().to_string(), "child"],
            "setup": false,
            "callback": {"url": format!("{receiver}/runs/{run_id}/complete"), "token": "t"},
        });
        let res = http
            .post(format!("{url}/v1/runs"))
            .header("X-Session-API-Key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "start answered {}", res.status());
        let (arrived, payload) = tokio::time::timeout(Duration::from_secs(10), arrivals.recv())
            .await
            .expect("callback did not arrive within 10 s")
            .unwrap();
        let error = payload["error"].as_str().unwrap_or_default();
        let exited: u128 = error
            .rsplit("stdout: ")
            .next()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(|| panic!("no timestamp in {payload}"));
        if i >= WARMUP {
            end_to_end.push((arrived - exited) as f64 / 1e6);
        }
    }
    let _ = daemon.kill();
    let _ = daemon.wait();

    // The floor: the same kind of POST from a reqwest client, one-way.
    let mut warm = Vec::with_capacity(runs);
    let mut cold = Vec::with_capacity(runs);
    for i in 0..runs + WARMUP {
        for (fresh, into) in [(false, &mut warm), (true, &mut cold)] {
            let client = match fresh {
                true => reqwest::Client::builder().no_proxy().build().unwrap(),
                false => http.clone(),
            };
            let sent = now_ns();
            let payload = json!({"status": "FAILED", "run_id": "x",
                                 "error": format!("exit_code=1\nstderr: \nstdout: {sent}\n")});
            client
                .post(format!("{receiver}/runs/floor/complete"))
                .bearer_auth("t")
                .header("Idempotency-Key", "x")
                .json(&payload)
                .send()
                .await
                .unwrap();
            let (arrived, _) = arrivals.recv().await.unwrap();
            if i >= WARMUP {
                into.push((arrived - sent) as f64 / 1e6);
            }
        }
    }
    println!("callback latency, {runs} runs one at a time (milliseconds)");
    report("child exit -> callback arrives", &mut end_to_end);
    report("limit: local POST, kept-alive connection", &mut warm);
    report("limit: local POST, new connection", &mut cold);
}

async fn receive(
    State(tx): State<mpsc::UnboundedSender<(u128, Value)>>,
    body: Bytes,
) -> &'static str {
    let arrived = now_ns();
    let payload: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let _ = tx.send((arrived, payload));
    "ok"
}

fn start_daemon(exe: &PathBuf, dir: &std::path::Path) -> (std::process::Child, String) {
    let key = dir.join("key");
    std::fs::write(&key, KEY).unwrap();
    let mut child = Command::new(exe)
        .arg("serve")
        .args(["--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--state-dir")
        .arg(dir.join("state"))
        .arg("--work-root")
        .arg(dir.join("work"))
        .arg("--session-key-file")
        .arg(&key)
        .args(["--agent-server-url", "http://127.0.0.1:9"])
        .env_remove("SESSION_API_KEY")
        .env_remove("OPENHANDS_API_KEY")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", exe.display()));
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                if event["message"] == "listening" {
                    let _ = tx.send(event["addr"].as_str().unwrap_or_default().to_owned());
                }
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("sandboxd did not start");
    (child, url)
}

fn report(what: &str, values: &mut [f64]) {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    let pick = |q: f64| values[((q * n as f64).ceil() as usize).clamp(1, n) - 1];
    let mean = values.iter().sum::<f64>() / n as f64;
    println!(
        "  {what:<44} median {:>7.3}  p99 {:>7.3}  mean {:>7.3}  min {:>7.3}  max {:>7.3}",
        pick(0.5),
        pick(0.99),
        mean,
        values[0],
        values[n - 1]
    );
}

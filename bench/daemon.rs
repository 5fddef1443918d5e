//! `cargo bench --bench daemon`: the daemon's own figures against the
//! machine's limits, on tmpfs (`/dev/shm`) so disk noise stays out.
//!
//! - start-to-ready time and idle RSS;
//! - exec-and-wait of `true` (`POST /v1/runs` with `wait: true`) against
//!   spawning `true` directly from Rust, with warm shims (`--warm-shims 1`,
//!   the default) and without (`0`); the async start (`201`) latency; 100
//!   concurrent exec-and-wait calls; the idle process tree (daemon and warm
//!   shims), RSS and PSS;
//! - capture of a child's 1 GiB stdout against `head | cat > file`, with the
//!   peak RSS of the daemon and of the run's shim.
//!
//! Prints a Markdown table; `BENCH_OUT=path` also writes it to a file;
//! `BENCH_EXEC_ONLY=1` skips the capture.

// This program reports to stdout.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const KEY: &str = "bench-key-0123456789";

struct Daemon {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill with plain integers.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

/// The binary under test: `SANDBOXD_BIN` when set (to compare builds),
/// else the one cargo built for this bench.
fn daemon_binary() -> String {
    std::env::var("SANDBOXD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandboxd").to_owned())
}

fn start() -> (Daemon, Duration) {
    start_warm(1)
}

/// A daemon keeping `warm` shims (an env setting, so builds that predate
/// the flag ignore it).
fn start_warm(warm: usize) -> (Daemon, Duration) {
    start_with(warm, &[])
}

/// A daemon keeping `warm` shims, with more settings in `env`.
fn start_with(warm: usize, env: &[(&str, &str)]) -> (Daemon, Duration) {
    let dir = tempfile::Builder::new()
        .prefix("sandboxd-bench")
        .tempdir_in(scratch())
        .unwrap();
    let started = Instant::now();
    // The capture figure measures whole output: no cap (an env setting, so
    // builds that predate the flag ignore it).
    let mut child = Command::new(daemon_binary())
        .env("SANDBOXD_MAX_OUTPUT_BYTES", "0")
        .env("SANDBOXD_WARM_SHIMS", warm.to_string())
        .envs(env.iter().copied())
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
            "--max-running",
            "256",
        ])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--work-root")
        .arg(dir.path().join("work"))
        .env("SESSION_API_KEY", KEY)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("daemon log").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            break event["addr"].as_str().unwrap().to_owned();
        }
    };
    let ready = started.elapsed();
    std::thread::spawn(move || for _ in lines {});
    (
        Daemon {
            child,
            url,
            _dir: dir,
        },
        ready,
    )
}

fn scratch() -> &'static str {
    if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    }
}

fn status_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx]
}

fn summary(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    (percentile(&samples, 0.5), percentile(&samples, 0.99))
}

fn main() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut rows: Vec<(String, String)> = Vec::new();

    let mut ready_ms = Vec::new();
    for _ in 0..10 {
        let (daemon, ready) = start();
        ready_ms.push(ready.as_secs_f64() * 1000.0);
        drop(daemon);
    }
    let (ready_median, _) = summary(ready_ms);
    rows.push((
        "start to ready (median of 10)".into(),
        format!("{ready_median:.1} ms"),
    ));

    let (daemon, _) = start();
    std::thread::sleep(Duration::from_secs(1));
    let idle_kb = status_kb(daemon.child.id(), "VmRSS:");
    rows.push((
        "idle RSS, daemon alone".into(),
        format!("{:.1} MiB", idle_kb as f64 / 1024.0),
    ));
    let tree: Vec<u32> = std::iter::once(daemon.child.id())
        .chain(shim_pids(daemon.child.id()))
        .collect();
    let tree_rss: u64 = tree.iter().map(|p| status_kb(*p, "VmRSS:")).sum();
    let tree_pss: u64 = tree.iter().map(|p| rollup_kb(*p, "Pss:")).sum();
    rows.push((
        format!(
            "idle tree (daemon + {} shim processes: the template and the warm shims), RSS / PSS",
            tree.len() - 1
        ),
        format!(
            "{:.1} / {:.1} MiB",
            tree_rss as f64 / 1024.0,
            tree_pss as f64 / 1024.0
        ),
    ));
    rows.push((
        "idle tree target: RSS at most 10 MiB".into(),
        format!(
            "{:.1} MiB: {}",
            tree_rss as f64 / 1024.0,
            verdict(tree_rss <= 10 * 1024)
        ),
    ));

    let client = reqwest::Client::new();
    let exec_url = format!("{}/v1/runs", daemon.url);
    let direct_once = || {
        let started = Instant::now();
        let status = Command::new("true").status().unwrap();
        assert!(status.success());
        started.elapsed().as_secs_f64() * 1000.0
    };
    let (cold, _) = start_warm(0);
    let cold_url = format!("{}/v1/runs", cold.url);
    let (mut warm_ms, mut cold_ms, mut direct_ms) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..320 {
        let warm = runtime.block_on(exec_true(&client, &exec_url));
        let cold = runtime.block_on(exec_true(&client, &cold_url));
        let direct = direct_once();
        if round >= 20 {
            warm_ms.push(warm);
            cold_ms.push(cold);
            direct_ms.push(direct);
        }
    }
    let (s_med, s_p99) = summary(warm_ms);
    let (c_med, c_p99) = summary(cold_ms);
    let (d_med, d_p99) = summary(direct_ms);
    rows.push((
        "exec-and-wait `true`, warm shims (median / p99)".into(),
        format!("{s_med:.2} / {s_p99:.2} ms"),
    ));
    rows.push((
        "exec-and-wait `true`, `--warm-shims 0` (median / p99)".into(),
        format!("{c_med:.2} / {c_p99:.2} ms"),
    ));
    rows.push((
        "spawn `true` directly, the limit (median / p99)".into(),
        format!("{d_med:.2} / {d_p99:.2} ms"),
    ));
    rows.push((
        "exec target: within 1.5x direct + 0.3 ms".into(),
        format!(
            "{:.2} ms vs {:.2} ms: {}",
            s_med,
            1.5 * d_med + 0.3,
            verdict(s_med <= 1.5 * d_med + 0.3)
        ),
    ));
    rows.push((
        "exec tail target: p99 under 3x the median".into(),
        format!(
            "{s_p99:.2} ms vs {:.2} ms: {}",
            3.0 * s_med,
            verdict(s_p99 <= 3.0 * s_med)
        ),
    ));
    drop(cold);

    let mut start_ms = Vec::new();
    for _ in 0..100 {
        start_ms.push(runtime.block_on(start_true(&client, &exec_url)));
        std::thread::sleep(Duration::from_millis(5));
    }
    let (a_med, a_p99) = summary(start_ms);
    rows.push((
        "async start (`201`) of `true` (median / p99)".into(),
        format!("{a_med:.2} / {a_p99:.2} ms"),
    ));
    let started = Instant::now();
    let all = runtime.block_on(futures::future::join_all(
        (0..100).map(|_| exec_true(&client, &exec_url)),
    ));
    rows.push((
        "100 concurrent exec-and-wait `true`: all succeeded, time to the last".into(),
        format!(
            "{} of 100, {:.0} ms",
            all.len(),
            started.elapsed().as_secs_f64() * 1000.0
        ),
    ));

    // A daemon that has run for a while keeps --retain-runs ended runs
    // (1,000 by default) and removes the oldest as each run ends:
    // exec-and-wait in that steady state.
    let (kept, _) = start_with(1, &[("SANDBOXD_RETAIN_RUNS", "1000")]);
    let kept_url = format!("{}/v1/runs", kept.url);
    let mut kept_ms = Vec::new();
    for round in 0..1300 {
        let ms = runtime.block_on(exec_true(&client, &kept_url));
        std::thread::sleep(Duration::from_millis(2));
        if round >= 1100 {
            kept_ms.push(ms);
        }
    }
    let (k_med, k_p99) = summary(kept_ms);
    rows.push((
        "exec-and-wait `true` past `--retain-runs` (1,000 kept; median / p99)".into(),
        format!("{k_med:.2} / {k_p99:.2} ms"),
    ));
    drop(kept);

    if std::env::var_os("BENCH_EXEC_ONLY").is_some() {
        print_table(rows);
        return;
    }

    let gib: u64 = 1 << 30;
    let out = tempfile::NamedTempFile::new_in(scratch()).unwrap();
    let limit_cmd = format!("head -c {gib} /dev/zero | cat > {}", out.path().display());
    let mut limit_s = Vec::new();
    let mut capture_s = Vec::new();
    let mut daemon_peak = 0;
    let mut shim_peak = 0;
    for round in 0..3 {
        let started = Instant::now();
        assert!(Command::new("bash")
            .args(["-c", &limit_cmd])
            .status()
            .unwrap()
            .success());
        limit_s.push(started.elapsed().as_secs_f64());

        // Not `wait: true`: its answer carries a 1 MiB output tail, which
        // is not what this measures.
        let run_id = format!("capture-{round}");
        let body = serde_json::json!({
            "run_id": run_id,
            "command": format!("head -c {gib} /dev/zero"),
            "setup": false,
        });
        let req = client
            .post(&exec_url)
            .header("X-Session-API-Key", KEY)
            .json(&body);
        let pid = daemon.child.id();
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let sampling = done.clone();
        let sampler = std::thread::spawn(move || {
            let (mut daemon_kb, mut shim_kb) = (0, 0);
            while !sampling.load(std::sync::atomic::Ordering::SeqCst) {
                daemon_kb = daemon_kb.max(status_kb(pid, "VmRSS:"));
                for shim in shim_pids(pid) {
                    shim_kb = shim_kb.max(status_kb(shim, "VmRSS:"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            (daemon_kb, shim_kb)
        });
        let started = Instant::now();
        let status_url = format!("{}/v1/runs/{run_id}", daemon.url);
        let res = runtime.block_on(async {
            let created = req.send().await.unwrap();
            assert_eq!(created.status(), 201);
            // Poll the status until the run has ended.
            loop {
                let run = client
                    .get(&status_url)
                    .header("X-Session-API-Key", KEY)
                    .send()
                    .await
                    .unwrap()
                    .json::<serde_json::Value>()
                    .await
                    .unwrap();
                if !matches!(run["state"].as_str(), Some("starting" | "running")) {
                    break run;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        capture_s.push(started.elapsed().as_secs_f64());
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(res["stdout_bytes"], gib, "{res}");
        let (d, s) = sampler.join().unwrap();
        daemon_peak = daemon_peak.max(d);
        shim_peak = shim_peak.max(s);
    }
    let (limit_med, _) = summary(limit_s);
    let (capture_med, _) = summary(capture_s);
    let mib = 1024.0;
    rows.push((
        "capture 1 GiB stdout, sandboxd (median of 3)".into(),
        format!("{:.0} MiB/s", mib / capture_med),
    ));
    rows.push((
        "`head | cat > file`, the limit".into(),
        format!("{:.0} MiB/s", mib / limit_med),
    ));
    rows.push((
        "capture target: 80% of the limit or more".into(),
        format!(
            "{:.0}%: {}",
            100.0 * limit_med / capture_med,
            verdict(limit_med / capture_med >= 0.8)
        ),
    ));
    rows.push((
        "daemon RSS while capturing (peak sampled)".into(),
        format!("{:.1} MiB", daemon_peak as f64 / 1024.0),
    ));
    rows.push((
        "run shim RSS while capturing (peak sampled)".into(),
        format!("{:.1} MiB", shim_peak as f64 / 1024.0),
    ));

    print_table(rows);
}

fn print_table(rows: Vec<(String, String)>) {
    let machine = machine();
    let mut table = format!("Machine: {machine}\n\n| figure | value |\n| --- | --- |\n");
    for (name, value) in rows {
        table.push_str(&format!("| {name} | {value} |\n"));
    }
    println!("{table}");
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(path, table).unwrap();
    }
}

/// One exec-and-wait of `true`, checked; its round trip in ms.
async fn exec_true(client: &reqwest::Client, url: &str) -> f64 {
    let req = client
        .post(url)
        .header("X-Session-API-Key", KEY)
        .json(&serde_json::json!({"command": ["true"], "wait": true, "setup": false}));
    let started = Instant::now();
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 200);
    let run: serde_json::Value = res.json().await.unwrap();
    assert_eq!(run["state"], "succeeded", "{run}");
    started.elapsed().as_secs_f64() * 1000.0
}

/// One async start of `true` (answered `201` once the run is started); ms.
async fn start_true(client: &reqwest::Client, url: &str) -> f64 {
    let req = client
        .post(url)
        .header("X-Session-API-Key", KEY)
        .json(&serde_json::json!({"command": ["true"], "setup": false}));
    let started = Instant::now();
    let res = req.send().await.unwrap();
    assert_eq!(res.status(), 201);
    res.bytes().await.unwrap();
    started.elapsed().as_secs_f64() * 1000.0
}

/// A field of `/proc/<pid>/smaps_rollup` in kB (PSS: each shared page
/// counted once across the processes sharing it).
fn rollup_kb(pid: u32, field: &str) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// The daemon's shim processes: its children that are run shims (other
/// daemons on the machine have theirs too), among them the warm pool's
/// template, and the shims the template forked.
fn shim_pids(daemon: u32) -> Vec<u32> {
    let shims = shim_children(daemon);
    let forked: Vec<u32> = shims.iter().flat_map(|pid| shim_children(*pid)).collect();
    shims.into_iter().chain(forked).collect()
}

/// The children of `parent` that run `shim`.
fn shim_children(parent: u32) -> Vec<u32> {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{parent}/task")) else {
        return Vec::new();
    };
    tasks
        .flatten()
        .flat_map(|t| {
            std::fs::read_to_string(t.path().join("children"))
                .unwrap_or_default()
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect::<Vec<_>>()
        })
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| c.split(|b| *b == 0).nth(1) == Some(b"shim"))
                .unwrap_or(false)
        })
        .collect()
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cpu}, {cores} cores, scratch on {}", scratch())
}

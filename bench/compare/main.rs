//! `cargo bench --bench compare` (run by `bench/run.sh`): sandboxd side by
//! side with the real OpenHands agent-server and the machine's limit, on
//! the same machine in the same run, scenarios interleaved round by round.
//! Writes `BENCHMARKS.md` and PNG plots under `bench/plots/`.
//!
//! Environment (set by `bench/run.sh`):
//! - `PEER_PYTHON`: the agent-server venv's python; else `PEER_SKIP` says
//!   why the agent-server columns are skipped.
//! - `BENCH_OUT` (scratch, default `bench/out`), `BENCH_SCRATCH` (where
//!   the daemons and archives live, default `/dev/shm/sandboxd-bench`),
//!   `BENCH_REPORT` (default `BENCHMARKS.md`), `BENCH_PLOTS` (default
//!   `bench/plots`), `BENCH_PIDS` (pid file of the daemons started),
//!   `BENCH_QUICK=1` (few rounds, for trying the driver out),
//!   `BENCH_ONLY=1,4` (only those scenarios; the others say "skipped"),
//!   `SANDBOXD_BIN` (default: the binary cargo built), `BENCH_REV` (the
//!   commit measured).

// This program reports to stdout.
#![allow(clippy::print_stdout)]

mod bundle;
mod daemons;
mod plots;
mod procfs;
mod report;
mod scenarios;
mod stats;

use std::path::{Path, PathBuf};
use std::time::Duration;

use stats::Outcome;

/// Where things are and how long to measure.
#[derive(Debug, Clone)]
pub(crate) struct Config {
    pub(crate) root: PathBuf,
    pub(crate) out: PathBuf,
    pub(crate) scratch: PathBuf,
    pub(crate) report: PathBuf,
    pub(crate) plots: PathBuf,
    pub(crate) pid_file: PathBuf,
    pub(crate) sandboxd_bin: PathBuf,
    pub(crate) peer_python: Result<PathBuf, String>,
    pub(crate) rev: String,
    pub(crate) rounds: Rounds,
    /// Scenarios to run (1 to 6); `None`: all.
    pub(crate) only: Option<Vec<u8>>,
}

impl Config {
    pub(crate) fn wants(&self, scenario: u8) -> bool {
        self.only.as_ref().is_none_or(|o| o.contains(&scenario))
    }
}

/// Rounds per scenario.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rounds {
    pub(crate) starts: usize,
    pub(crate) exec: usize,
    pub(crate) bundle: usize,
    pub(crate) concurrent: usize,
    pub(crate) capture: usize,
    pub(crate) callback: usize,
}

impl Config {
    fn from_env() -> Config {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let path = |name: &str, default: PathBuf| var(name).map(PathBuf::from).unwrap_or(default);
        let out = path("BENCH_OUT", root.join("bench/out"));
        let shm = Path::new("/dev/shm");
        let scratch_default = if shm.is_dir() {
            shm.join(format!("sandboxd-bench-{}", std::process::id()))
        } else {
            out.join("scratch")
        };
        let peer_python = match (var("PEER_PYTHON"), var("PEER_SKIP")) {
            (Some(p), _) => Ok(PathBuf::from(p)),
            (None, Some(why)) => Err(why),
            (None, None) => Err(
                "PEER_PYTHON is not set; bench/run.sh installs the agent-server and sets it".into(),
            ),
        };
        let quick = var("BENCH_QUICK").is_some_and(|v| v != "0");
        let rounds = if quick {
            Rounds {
                starts: 2,
                exec: 30,
                bundle: 1,
                concurrent: 2,
                capture: 1,
                callback: 10,
            }
        } else {
            Rounds {
                starts: 5,
                exec: 300,
                bundle: 5,
                concurrent: 10,
                capture: 3,
                callback: 50,
            }
        };
        Config {
            out: out.clone(),
            scratch: path("BENCH_SCRATCH", scratch_default),
            report: path("BENCH_REPORT", root.join("BENCHMARKS.md")),
            plots: path("BENCH_PLOTS", root.join("bench/plots")),
            pid_file: path("BENCH_PIDS", out.join("pids")),
            sandboxd_bin: path(
                "SANDBOXD_BIN",
                PathBuf::from(env!("CARGO_BIN_EXE_sandboxd")),
            ),
            peer_python,
            rev: var("BENCH_REV").unwrap_or_else(|| "unknown".into()),
            rounds,
            only: var("BENCH_ONLY")
                .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect()),
            root,
        }
    }
}

/// Everything measured, for the report and the plots.
#[derive(Debug, Clone)]
pub(crate) struct Results {
    pub(crate) machine: procfs::Machine,
    pub(crate) load_start: String,
    pub(crate) load_end: String,
    /// (step, load average as it began).
    pub(crate) loads: Vec<(String, String)>,
    pub(crate) started_at: String,
    pub(crate) duration: Duration,
    pub(crate) rev: String,
    /// Size of the sandboxd binary measured.
    pub(crate) sandboxd_bin_bytes: Option<u64>,
    /// Size of the `sandboxd-shim` beside it, when there is one.
    pub(crate) shim_bin_bytes: Option<u64>,
    /// Which build was measured (`BENCH_BUILD`, set by bench/run.sh).
    pub(crate) build: String,
    pub(crate) agent_version: Option<String>,
    pub(crate) agent_skip: Option<String>,
    pub(crate) rounds: Rounds,
    pub(crate) bundle: bundle::Bundle,
    /// ms.
    pub(crate) ready_sandboxd: Outcome,
    pub(crate) ready_agent: Outcome,
    /// KiB.
    pub(crate) idle_sandboxd: Outcome,
    pub(crate) idle_agent: Outcome,
    /// KiB of the idle RSS that is anonymous (private) memory.
    pub(crate) idle_anon_sandboxd: Outcome,
    pub(crate) idle_anon_agent: Outcome,
    /// ms.
    pub(crate) exec: scenarios::Trio,
    /// s.
    pub(crate) bundle_s: scenarios::Trio,
    pub(crate) agent_upload_only_s: Outcome,
    pub(crate) bundle_peaks: scenarios::Peaks,
    /// s.
    pub(crate) concurrent: scenarios::Trio,
    /// s, with the fast producer (no agent-server).
    pub(crate) capture_zero: scenarios::Trio,
    /// s, printable lines.
    pub(crate) capture: scenarios::Trio,
    pub(crate) capture_peaks: scenarios::Peaks,
    /// ms: sandboxd, the limit.
    pub(crate) callback: (Outcome, Outcome),
}

fn skipped() -> Outcome {
    Outcome::Unavailable("skipped (BENCH_ONLY)".into())
}

/// The load average as each step began, for the report.
static LOADS: std::sync::Mutex<Vec<(String, String)>> = std::sync::Mutex::new(Vec::new());

fn step(name: &str) {
    let load = procfs::loadavg();
    println!("== {name} (load {load})");
    LOADS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((name.to_owned(), load));
}

/// Scenario 5's start part: start each daemon `n` times, interleaved;
/// the time to ready (ms) and the RSS 2 s later (KiB).
async fn starts(cfg: &Config, n: usize) -> (Outcome, Outcome, Outcome, Outcome, Outcome, Outcome) {
    let mut ready = (Vec::new(), Vec::new());
    let mut idle = (Vec::new(), Vec::new());
    let mut anon = (Vec::new(), Vec::new());
    let mut agent_error = cfg.peer_python.clone().err();
    let mut sandboxd_error = None;
    for i in 0..n {
        let sandboxd_first = i % 2 == 0;
        for which in 0..2 {
            let is_sandboxd = (which == 0) == sandboxd_first;
            if is_sandboxd && sandboxd_error.is_none() {
                match daemons::start_sandboxd(cfg, &format!("start-{i}")).await {
                    Ok((d, t)) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        ready.0.push(t.as_secs_f64() * 1e3);
                        idle.0.push(procfs::rss_kb(d.pid) as f64);
                        anon.0.push(procfs::status_kb(d.pid, "RssAnon:") as f64);
                    }
                    Err(e) => sandboxd_error = Some(format!("failed: {e:#}")),
                }
            } else if !is_sandboxd && agent_error.is_none() {
                let python = cfg.peer_python.clone().unwrap_or_default();
                match daemons::start_agent_server(cfg, &python, &format!("start-{i}")).await {
                    Ok((d, t)) => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        ready.1.push(t.as_secs_f64() * 1e3);
                        idle.1.push(procfs::rss_kb(d.pid) as f64);
                        anon.1.push(procfs::status_kb(d.pid, "RssAnon:") as f64);
                    }
                    Err(e) => agent_error = Some(format!("failed: {e:#}")),
                }
            }
        }
    }
    let pick = |v: Vec<f64>, err: &Option<String>| match err {
        Some(e) if v.is_empty() => Outcome::Unavailable(e.clone()),
        _ => Outcome::Samples(v),
    };
    (
        pick(ready.0, &sandboxd_error),
        pick(ready.1, &agent_error),
        pick(idle.0, &sandboxd_error),
        pick(idle.1, &agent_error),
        pick(anon.0, &sandboxd_error),
        pick(anon.1, &agent_error),
    )
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env();
    std::fs::create_dir_all(&cfg.out)?;
    std::fs::create_dir_all(&cfg.scratch)?;
    let started_at = chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string();
    let clock = std::time::Instant::now();
    let load_start = procfs::loadavg();
    let machine = procfs::machine(&cfg.scratch);
    println!(
        "machine: {}, {} cores, {:.1} GiB, kernel {}; load {load_start}",
        machine.cpu, machine.cores, machine.memory_gib, machine.kernel
    );
    if let Err(why) = &cfg.peer_python {
        println!("agent-server columns skipped: {why}");
    }
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(900))
        .build()?;

    step("bundle: generating (cached in bench/out)");
    let bundle = {
        let dir = cfg.out.clone();
        tokio::task::spawn_blocking(move || bundle::ensure(&dir)).await??
    };
    // The copy the scenarios read lives on the scratch fs, like the output.
    let scratch_bundle = bundle::Bundle {
        path: cfg.scratch.join("bundle.tar.gz"),
        ..bundle.clone()
    };
    std::fs::copy(&bundle.path, &scratch_bundle.path)?;
    println!(
        "bundle: {:.1} MiB compressed, {} files, {:.1} MiB extracted",
        bundle.bytes as f64 / 1048576.0,
        bundle.files,
        bundle.extracted_bytes as f64 / 1048576.0
    );

    step("5. start to ready and idle RSS");
    let (
        ready_sandboxd,
        ready_agent,
        idle_sandboxd,
        idle_agent,
        idle_anon_sandboxd,
        idle_anon_agent,
    ) = if cfg.wants(5) {
        starts(&cfg, cfg.rounds.starts).await
    } else {
        (
            skipped(),
            skipped(),
            skipped(),
            skipped(),
            skipped(),
            skipped(),
        )
    };

    step("starting the daemons measured");
    let (sandboxd, _) = daemons::start_sandboxd(&cfg, "main").await?;
    let agent = match &cfg.peer_python {
        Ok(python) => daemons::start_agent_server(&cfg, python, "main")
            .await
            .map(|(d, _)| d)
            .map_err(|e| format!("failed: {e:#}")),
        Err(why) => Err(why.clone()),
    };
    let mut agent_version = None;
    if let Ok(a) = &agent {
        if let Ok(res) = http.get(format!("{}/server_info", a.url)).send().await {
            let info: serde_json::Value = res.json().await.unwrap_or_default();
            agent_version = info["version"].as_str().map(str::to_owned);
        }
    }
    let agent_skip = agent.as_ref().err().cloned();
    let ctx = scenarios::Ctx {
        cfg: cfg.clone(),
        http: http.clone(),
        sandboxd,
        agent,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;

    let skipped_trio = || scenarios::Trio {
        sandboxd: skipped(),
        agent: skipped(),
        limit: skipped(),
    };
    step("1. exec-and-wait `true`");
    let exec = if cfg.wants(1) {
        ctx.exec(cfg.rounds.exec).await
    } else {
        skipped_trio()
    };
    step("3. 100 concurrent `sleep 0.1`");
    let concurrent = if cfg.wants(3) {
        ctx.concurrent(cfg.rounds.concurrent).await
    } else {
        skipped_trio()
    };
    step("6. child exit to completion callback");
    let callback = if cfg.wants(6) {
        ctx.callback(cfg.rounds.callback).await
    } else {
        (skipped(), skipped())
    };
    step("2. bundle upload and extraction");
    let (bundle_s, agent_upload_only_s, bundle_peaks) = if cfg.wants(2) {
        ctx.bundle(&scratch_bundle, cfg.rounds.bundle).await
    } else {
        (skipped_trio(), skipped(), scenarios::Peaks::default())
    };
    step("4. capture 1 GiB of stdout");
    let (capture_zero, capture, capture_peaks) = if cfg.wants(4) {
        ctx.capture(cfg.rounds.capture).await
    } else {
        (skipped_trio(), skipped_trio(), scenarios::Peaks::default())
    };
    step("stopping the daemons");
    drop(ctx);

    let results = Results {
        machine,
        load_start,
        load_end: procfs::loadavg(),
        loads: LOADS.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        started_at,
        duration: clock.elapsed(),
        rev: cfg.rev.clone(),
        sandboxd_bin_bytes: std::fs::metadata(&cfg.sandboxd_bin).ok().map(|m| m.len()),
        shim_bin_bytes: std::fs::metadata(cfg.sandboxd_bin.with_file_name("sandboxd-shim"))
            .ok()
            .map(|m| m.len()),
        build: std::env::var("BENCH_BUILD").unwrap_or_else(|_| "release build".into()),
        agent_version,
        agent_skip,
        rounds: cfg.rounds,
        bundle,
        ready_sandboxd,
        ready_agent,
        idle_sandboxd,
        idle_agent,
        idle_anon_sandboxd,
        idle_anon_agent,
        exec,
        bundle_s,
        agent_upload_only_s,
        bundle_peaks,
        concurrent,
        capture_zero,
        capture,
        capture_peaks,
        callback,
    };
    std::fs::create_dir_all(&cfg.plots)?;
    let plots = match plots::draw(&cfg, &results) {
        Ok(p) => p,
        Err(e) => {
            println!("plots not drawn: {e:#}");
            Vec::new()
        }
    };
    let text = report::markdown(&cfg, &results, &plots);
    std::fs::write(&cfg.report, &text)?;
    println!("{}", report::summary(&results));
    println!(
        "wrote {} and {} plots under {}",
        cfg.report.display(),
        plots.len(),
        cfg.plots.display()
    );
    let _ = std::fs::remove_dir_all(&cfg.scratch);
    Ok(())
}

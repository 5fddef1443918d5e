//! The scenarios of issue 8, each run against sandboxd, the agent-server
//! and the machine's limit, round by round with the order rotated each
//! round, so that drift of a shared machine hits all three alike.

use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context};
use serde_json::{json, Value};

use crate::bundle::Bundle;
use crate::daemons::{Daemon, KEY};
use crate::procfs;
use crate::stats::Outcome;
use crate::Config;

/// Shown for a scenario whose sandboxd endpoint answers 501 here.
pub(crate) const NOT_IN_BUILD: &str = "not available in this build";

/// Terminal run states of sandboxd.
const ENDED: &[&str] = &["succeeded", "failed", "timed_out", "cancelled", "lost"];

/// The fast producer of scenario 4 (sandboxd and `cat` only): 1 GiB of
/// zeros from one process, so the consumer is what limits.
pub(crate) fn producer_zero() -> String {
    format!("head -c {CAPTURE_BYTES} /dev/zero")
}

/// The producer of scenario 4 with the agent-server: 1 GiB of printable
/// lines (it stores output as JSON text, where NUL bytes grow sixfold).
pub(crate) fn producer() -> String {
    format!(
        "yes \"$(head -c 1023 /dev/zero | tr '\\0' a)\" | head -c {}",
        CAPTURE_BYTES
    )
}
pub(crate) const CAPTURE_BYTES: u64 = 1 << 30;

/// Everything the scenarios share.
pub(crate) struct Ctx {
    pub(crate) cfg: Config,
    pub(crate) http: reqwest::Client,
    pub(crate) sandboxd: Daemon,
    pub(crate) agent: Result<Daemon, String>,
}

/// The three columns of a scenario.
#[derive(Debug, Clone)]
pub(crate) struct Trio {
    pub(crate) sandboxd: Outcome,
    pub(crate) agent: Outcome,
    pub(crate) limit: Outcome,
}

/// Peak RSS (KiB) of the daemons during a scenario.
#[derive(Debug, Clone, Default)]
pub(crate) struct Peaks {
    pub(crate) sandboxd_kb: Option<u64>,
    /// sandboxd's per-run shim (scenario 4 only).
    pub(crate) shim_kb: Option<u64>,
    pub(crate) agent_kb: Option<u64>,
}

#[derive(Clone, Copy, Debug)]
enum Who {
    Sandboxd,
    Agent,
    Limit,
}

/// Round `round`'s order: rotated so no column always follows another.
fn order(round: usize) -> [Who; 3] {
    let all = [Who::Sandboxd, Who::Agent, Who::Limit];
    [all[round % 3], all[(round + 1) % 3], all[(round + 2) % 3]]
}

/// Collects one column's samples; the first error ends the column.
struct Column {
    samples: Vec<f64>,
    error: Option<String>,
}

impl Column {
    fn new(unavailable: Option<String>) -> Self {
        Column {
            samples: Vec::new(),
            error: unavailable,
        }
    }
    fn live(&self) -> bool {
        self.error.is_none()
    }
    fn record(&mut self, r: anyhow::Result<f64>) {
        match r {
            Ok(v) => self.samples.push(v),
            Err(e) => {
                let text = format!("{e:#}");
                eprintln!("  error: {text}");
                self.error = Some(if text.starts_with(NOT_IN_BUILD) {
                    text
                } else {
                    format!("failed: {text}")
                });
            }
        }
    }
    fn outcome(self) -> Outcome {
        match self.error {
            Some(e) if self.samples.is_empty() => Outcome::Unavailable(e),
            _ => Outcome::Samples(self.samples),
        }
    }
}

impl Ctx {
    fn agent_url(&self) -> Option<&str> {
        self.agent.as_ref().ok().map(|d| d.url.as_str())
    }
    fn agent_missing(&self) -> Option<String> {
        self.agent.as_ref().err().cloned()
    }
    fn agent_pid(&self) -> Option<u32> {
        self.agent.as_ref().ok().map(|d| d.pid)
    }

    fn sd(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.sandboxd.url))
            .header("X-Session-API-Key", KEY)
    }

    fn ag(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let url = self.agent_url().unwrap_or("http://127.0.0.1:9");
        self.http
            .request(method, format!("{url}{path}"))
            .header("X-Session-API-Key", KEY)
    }

    /// Empties the agent-server's event store (one file per event, listed
    /// on every search), outside any timing.
    async fn agent_clear_events(&self) -> anyhow::Result<()> {
        let res = self
            .ag(reqwest::Method::DELETE, "/api/bash/bash_events")
            .send()
            .await?;
        ensure!(
            res.status().is_success(),
            "clearing events: {}",
            res.status()
        );
        Ok(())
    }

    // ---- scenario 1: exec-and-wait `true` -------------------------------

    async fn sandboxd_exec_true(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let res = self
            .sd(reqwest::Method::POST, "/v1/runs")
            .json(&json!({"command": ["true"], "wait": true}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        ensure!(
            status == 200 && body["state"] == "succeeded",
            "{status} {body}"
        );
        Ok(ms)
    }

    async fn agent_exec_true(&self) -> anyhow::Result<f64> {
        let started = Instant::now();
        let res = self
            .ag(reqwest::Method::POST, "/api/bash/execute_bash_command")
            .json(&json!({"command": "true"}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        ensure!(status == 200 && body["exit_code"] == 0, "{status} {body}");
        Ok(ms)
    }

    fn direct_true() -> anyhow::Result<f64> {
        let started = Instant::now();
        let status = Command::new("true").status()?;
        let ms = started.elapsed().as_secs_f64() * 1e3;
        ensure!(status.success(), "true failed: {status}");
        Ok(ms)
    }

    /// Scenario 1, in milliseconds.
    pub(crate) async fn exec(&self, rounds: usize) -> Trio {
        let mut cols = [
            Column::new(None),
            Column::new(self.agent_missing()),
            Column::new(None),
        ];
        let warmup = 20.min(rounds);
        for round in 0..warmup + rounds {
            for who in order(round) {
                let i = who as usize;
                if !cols[i].live() {
                    continue;
                }
                let r = match who {
                    Who::Sandboxd => self.sandboxd_exec_true().await,
                    Who::Agent => self.agent_exec_true().await,
                    Who::Limit => Self::direct_true(),
                };
                if round >= warmup || r.is_err() {
                    cols[i].record(r);
                }
            }
        }
        let [s, a, l] = cols;
        Trio {
            sandboxd: s.outcome(),
            agent: a.outcome(),
            limit: l.outcome(),
        }
    }

    // ---- scenario 2: bundle upload and extraction -----------------------

    /// `None` when sandboxd takes bundles; else why not.
    async fn bundle_unavailable(&self) -> Option<String> {
        // An empty tar.gz: 1,024 zero bytes, compressed.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        std::io::Write::write_all(&mut gz, &[0u8; 1024]).ok()?;
        let body = gz.finish().ok()?;
        let res = self
            .sd(reqwest::Method::PUT, "/v1/runs/bench-probe-bundle/bundle")
            .body(body)
            .send()
            .await;
        match res {
            Ok(r) if r.status() == 501 => Some(NOT_IN_BUILD.into()),
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!(
                "failed: probe upload answered {} {}",
                r.status(),
                r.text().await.unwrap_or_default()
            )),
            Err(e) => Some(format!("failed: probe upload: {e}")),
        }
    }

    async fn file_body(path: &std::path::Path) -> anyhow::Result<reqwest::Body> {
        let file = tokio::fs::File::open(path).await?;
        let stream = tokio_util::io::ReaderStream::with_capacity(file, 256 << 10);
        Ok(reqwest::Body::wrap_stream(stream))
    }

    async fn sandboxd_bundle(&self, bundle: &Bundle, round: usize) -> anyhow::Result<f64> {
        let run_id = format!("bundle-{round}");
        let body = Self::file_body(&bundle.path).await?;
        let started = Instant::now();
        let res = self
            .sd(reqwest::Method::PUT, &format!("/v1/runs/{run_id}/bundle"))
            .header(reqwest::header::CONTENT_LENGTH, bundle.bytes)
            .header(reqwest::header::CONTENT_TYPE, "application/gzip")
            .body(body)
            .send()
            .await?;
        let status = res.status();
        let answer: Value = res.json().await?;
        let s = started.elapsed().as_secs_f64();
        ensure!(status == 201, "{status} {answer}");
        let entries = answer["entries"].as_u64().unwrap_or(0) as usize;
        ensure!(
            entries >= bundle.files,
            "bundle answer counts {entries} entries, the bundle holds {} files: {answer}",
            bundle.files
        );
        if let Some(dir) = answer["dir"].as_str() {
            let _ = std::fs::remove_dir_all(dir);
        }
        let _ = self
            .sd(reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"))
            .send()
            .await;
        Ok(s)
    }

    /// Upload through `/api/file/upload` then `tar xzf` through the bash
    /// API: what a client of the agent-server does to ship a bundle.
    /// Returns (total, upload part) in seconds.
    async fn agent_bundle(&self, bundle: &Bundle, round: usize) -> anyhow::Result<(f64, f64)> {
        let dir = self.cfg.scratch.join(format!("agent-upload-{round}"));
        let _ = std::fs::remove_dir_all(&dir);
        let archive = dir.join("bundle.tar.gz");
        let into = dir.join("x");
        let part = reqwest::multipart::Part::stream_with_length(
            Self::file_body(&bundle.path).await?,
            bundle.bytes,
        )
        .file_name("bundle.tar.gz");
        let form = reqwest::multipart::Form::new().part("file", part);
        let started = Instant::now();
        let res = self
            .ag(reqwest::Method::POST, "/api/file/upload")
            .query(&[("path", archive.to_string_lossy().as_ref())])
            .multipart(form)
            .send()
            .await?;
        let status = res.status();
        let answer: Value = res.json().await?;
        ensure!(
            status == 200 && answer["success"] == true,
            "upload: {status} {answer}"
        );
        let uploaded = started.elapsed().as_secs_f64();
        let command = format!(
            "mkdir -p '{}' && tar xzf '{}' -C '{}'",
            into.display(),
            archive.display(),
            into.display()
        );
        let res = self
            .ag(reqwest::Method::POST, "/api/bash/execute_bash_command")
            .json(&json!({"command": command, "timeout": 600}))
            .send()
            .await?;
        let status = res.status();
        let answer: Value = res.json().await?;
        let s = started.elapsed().as_secs_f64();
        ensure!(
            status == 200 && answer["exit_code"] == 0,
            "tar xzf: {status} {answer}"
        );
        let _ = std::fs::remove_dir_all(&dir);
        Ok((s, uploaded))
    }

    fn local_tar(&self, bundle: &Bundle, round: usize) -> anyhow::Result<f64> {
        let into = self.cfg.scratch.join(format!("local-tar-{round}"));
        let _ = std::fs::remove_dir_all(&into);
        let started = Instant::now();
        std::fs::create_dir_all(&into)?;
        let status = Command::new("tar")
            .arg("xzf")
            .arg(&bundle.path)
            .arg("-C")
            .arg(&into)
            .status()?;
        let s = started.elapsed().as_secs_f64();
        ensure!(status.success(), "tar xzf: {status}");
        let _ = std::fs::remove_dir_all(&into);
        Ok(s)
    }

    /// Scenario 2, in seconds, with the agent-server's upload part alone
    /// and the daemons' peak RSS.
    pub(crate) async fn bundle(&self, bundle: &Bundle, rounds: usize) -> (Trio, Outcome, Peaks) {
        let mut cols = [
            Column::new(self.bundle_unavailable().await),
            Column::new(self.agent_missing()),
            Column::new(None),
        ];
        let mut upload_only = Vec::new();
        let mut peaks = Peaks::default();
        for round in 0..rounds {
            for who in order(round) {
                let i = who as usize;
                if !cols[i].live() {
                    continue;
                }
                let r = match who {
                    Who::Sandboxd => {
                        procfs::reset_peak(self.sandboxd.pid);
                        let r = self.sandboxd_bundle(bundle, round).await;
                        max_into(&mut peaks.sandboxd_kb, procfs::peak_kb(self.sandboxd.pid));
                        r
                    }
                    Who::Agent => {
                        let pid = self.agent_pid().unwrap_or(0);
                        procfs::reset_peak(pid);
                        let r = self.agent_bundle(bundle, round).await;
                        max_into(&mut peaks.agent_kb, procfs::peak_kb(pid));
                        r.map(|(total, upload)| {
                            upload_only.push(upload);
                            total
                        })
                    }
                    Who::Limit => self.local_tar(bundle, round),
                };
                cols[i].record(r);
            }
        }
        let upload = if upload_only.is_empty() {
            Outcome::Unavailable(self.agent_missing().unwrap_or_else(|| "failed".into()))
        } else {
            Outcome::Samples(upload_only)
        };
        let [s, a, l] = cols;
        (
            Trio {
                sandboxd: s.outcome(),
                agent: a.outcome(),
                limit: l.outcome(),
            },
            upload,
            peaks,
        )
    }

    // ---- scenario 3: 100 concurrent `sleep 0.1` -------------------------

    async fn sandboxd_concurrent(&self, n: usize, poll: Duration) -> anyhow::Result<f64> {
        let started = Instant::now();
        let posts = (0..n).map(|_| async {
            let res = self
                .sd(reqwest::Method::POST, "/v1/runs")
                .json(&json!({"command": ["sleep", "0.1"]}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            ensure!(status == 201, "{status} {body}");
            Ok::<String, anyhow::Error>(body["run_id"].as_str().unwrap_or_default().to_owned())
        });
        let ids: Vec<String> = futures::future::try_join_all(posts).await?;
        loop {
            let mut active = 0;
            for state in ["starting", "running"] {
                let list: Value = self
                    .sd(reqwest::Method::GET, &format!("/v1/runs?state={state}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                active += list["runs"]
                    .as_array()
                    .map(|runs| {
                        runs.iter()
                            .filter(|r| ids.iter().any(|id| r["run_id"] == id.as_str()))
                            .count()
                    })
                    .unwrap_or(0);
            }
            if active == 0 {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("{active} runs still active after 120 s");
            }
            tokio::time::sleep(poll).await;
        }
        let s = started.elapsed().as_secs_f64();
        // Outside the timing: every run ended well, then forget them.
        for id in &ids {
            let run: Value = self
                .sd(reqwest::Method::GET, &format!("/v1/runs/{id}"))
                .send()
                .await?
                .json()
                .await?;
            ensure!(run["state"] == "succeeded", "run {id}: {run}");
            let _ = self
                .sd(reqwest::Method::DELETE, &format!("/v1/runs/{id}"))
                .send()
                .await;
        }
        Ok(s)
    }

    async fn agent_concurrent(&self, n: usize, poll: Duration) -> anyhow::Result<f64> {
        self.agent_clear_events().await?;
        let started = Instant::now();
        let posts = (0..n).map(|_| async {
            let res = self
                .ag(reqwest::Method::POST, "/api/bash/start_bash_command")
                .json(&json!({"command": "sleep 0.1"}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            ensure!(status == 200, "{status} {body}");
            Ok::<String, anyhow::Error>(body["id"].as_str().unwrap_or_default().to_owned())
        });
        let ids: Vec<String> = futures::future::try_join_all(posts).await?;
        loop {
            let mut done = 0;
            let mut page: Option<String> = None;
            loop {
                let mut req = self
                    .ag(reqwest::Method::GET, "/api/bash/bash_events/search")
                    .query(&[("kind__eq", "BashOutput"), ("limit", "100")]);
                if let Some(p) = &page {
                    req = req.query(&[("page_id", p.as_str())]);
                }
                let body: Value = req.send().await?.json().await?;
                for item in body["items"].as_array().into_iter().flatten() {
                    if !item["exit_code"].is_null()
                        && ids.iter().any(|id| item["command_id"] == id.as_str())
                    {
                        ensure!(item["exit_code"] == 0, "sleep failed: {item}");
                        done += 1;
                    }
                }
                page = body["next_page_id"].as_str().map(str::to_owned);
                if page.is_none() {
                    break;
                }
            }
            if done >= n {
                break;
            }
            if started.elapsed() > Duration::from_secs(120) {
                bail!("{} commands still active after 120 s", n - done);
            }
            tokio::time::sleep(poll).await;
        }
        Ok(started.elapsed().as_secs_f64())
    }

    fn direct_concurrent(n: usize) -> anyhow::Result<f64> {
        let started = Instant::now();
        let children = (0..n)
            .map(|_| Command::new("sleep").arg("0.1").spawn())
            .collect::<Result<Vec<_>, _>>()?;
        for mut child in children {
            ensure!(child.wait()?.success(), "sleep failed");
        }
        Ok(started.elapsed().as_secs_f64())
    }

    /// Scenario 3, in seconds.
    pub(crate) async fn concurrent(&self, rounds: usize) -> Trio {
        let n = 100;
        let poll = Duration::from_millis(10);
        let mut cols = [
            Column::new(None),
            Column::new(self.agent_missing()),
            Column::new(None),
        ];
        for round in 0..rounds {
            for who in order(round) {
                let i = who as usize;
                if !cols[i].live() {
                    continue;
                }
                let r = match who {
                    Who::Sandboxd => self.sandboxd_concurrent(n, poll).await,
                    Who::Agent => self.agent_concurrent(n, poll).await,
                    Who::Limit => Self::direct_concurrent(n),
                };
                cols[i].record(r);
            }
        }
        let [s, a, l] = cols;
        Trio {
            sandboxd: s.outcome(),
            agent: a.outcome(),
            limit: l.outcome(),
        }
    }

    // ---- scenario 4: capture 1 GiB of stdout ----------------------------

    async fn sandboxd_capture(
        &self,
        run_id: String,
        producer: &str,
        shim_peak: &Arc<Mutex<u64>>,
    ) -> anyhow::Result<f64> {
        let poll = Duration::from_millis(10);
        let daemon = self.sandboxd.pid;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // The shim's own peak counter, read until it exits.
        let sampler = {
            let stop = stop.clone();
            let shim_peak = shim_peak.clone();
            std::thread::spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    // Only exec'd shims: a child caught between fork and
                    // exec still shows the daemon's own memory.
                    for child in procfs::shims_of(daemon) {
                        let kb = procfs::peak_kb(child);
                        let mut peak = shim_peak.lock().unwrap_or_else(|e| e.into_inner());
                        *peak = (*peak).max(kb);
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            })
        };
        let started = Instant::now();
        let result = async {
            let res = self
                .sd(reqwest::Method::POST, "/v1/runs")
                .json(&json!({"run_id": run_id, "command": producer}))
                .send()
                .await?;
            let status = res.status();
            let body: Value = res.json().await?;
            ensure!(status == 201, "{status} {body}");
            loop {
                let run: Value = self
                    .sd(reqwest::Method::GET, &format!("/v1/runs/{run_id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if ENDED.iter().any(|s| run["state"] == *s) {
                    let s = started.elapsed().as_secs_f64();
                    ensure!(run["state"] == "succeeded", "{run}");
                    ensure!(
                        run["stdout_bytes"] == CAPTURE_BYTES,
                        "captured {}",
                        run["stdout_bytes"]
                    );
                    return Ok(s);
                }
                ensure!(
                    started.elapsed() < Duration::from_secs(600),
                    "not ended after 600 s"
                );
                tokio::time::sleep(poll).await;
            }
        }
        .await;
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = sampler.join();
        let _ = self
            .sd(reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"))
            .send()
            .await;
        result
    }

    async fn agent_capture(&self) -> anyhow::Result<f64> {
        let poll = Duration::from_millis(10);
        self.agent_clear_events().await?;
        let started = Instant::now();
        let res = self
            .ag(reqwest::Method::POST, "/api/bash/start_bash_command")
            .json(&json!({"command": producer(), "timeout": 600}))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        ensure!(status == 200, "{status} {body}");
        let id = body["id"].as_str().unwrap_or_default().to_owned();
        let s = loop {
            let found: Value = self
                .ag(reqwest::Method::GET, "/api/bash/bash_events/search")
                .query(&[
                    ("kind__eq", "BashOutput"),
                    ("command_id__eq", id.as_str()),
                    ("sort_order", "TIMESTAMP_DESC"),
                    ("limit", "1"),
                ])
                .send()
                .await?
                .json()
                .await?;
            if let Some(last) = found["items"].get(0) {
                if !last["exit_code"].is_null() {
                    let s = started.elapsed().as_secs_f64();
                    ensure!(last["exit_code"] == 0, "exit code {}", last["exit_code"]);
                    break s;
                }
            }
            ensure!(
                started.elapsed() < Duration::from_secs(600),
                "not ended after 600 s"
            );
            tokio::time::sleep(poll).await;
        };
        // Outside the timing: it keeps the output as one JSON file per MiB.
        self.agent_clear_events().await?;
        Ok(s)
    }

    fn cat_capture(&self, producer: &str) -> anyhow::Result<f64> {
        let file = self.cfg.scratch.join("capture-limit.out");
        let started = Instant::now();
        let status = Command::new("bash")
            .arg("-c")
            .arg(format!("{producer} | cat > '{}'", file.display()))
            .status()?;
        let s = started.elapsed().as_secs_f64();
        ensure!(status.success(), "{status}");
        let len = std::fs::metadata(&file)?.len();
        let _ = std::fs::remove_file(&file);
        ensure!(len == CAPTURE_BYTES, "cat wrote {len} bytes");
        Ok(s)
    }

    /// Scenario 4, in seconds: with the fast producer (sandboxd and `cat`),
    /// then with printable lines (all three); and the daemons' peak RSS.
    pub(crate) async fn capture(&self, rounds: usize) -> (Trio, Trio, Peaks) {
        let mut peaks = Peaks::default();
        let shim_peak = Arc::new(Mutex::new(0));
        let mut zero = [
            Column::new(None),
            Column::new(Some(
                "not run: the agent-server stores output as JSON text, where NUL bytes grow sixfold".into(),
            )),
            Column::new(None),
        ];
        let mut text = [
            Column::new(None),
            Column::new(self.agent_missing()),
            Column::new(None),
        ];
        for (variant, cols) in [(0, &mut zero), (1, &mut text)] {
            let producer = if variant == 0 {
                producer_zero()
            } else {
                producer()
            };
            for round in 0..rounds {
                for who in order(round) {
                    let i = who as usize;
                    if !cols[i].live() {
                        continue;
                    }
                    let r = match who {
                        Who::Sandboxd => {
                            procfs::reset_peak(self.sandboxd.pid);
                            let run_id = format!("capture-{variant}-{round}");
                            let r = self.sandboxd_capture(run_id, &producer, &shim_peak).await;
                            max_into(&mut peaks.sandboxd_kb, procfs::peak_kb(self.sandboxd.pid));
                            r
                        }
                        Who::Agent => {
                            let pid = self.agent_pid().unwrap_or(0);
                            procfs::reset_peak(pid);
                            let r = self.agent_capture().await;
                            max_into(&mut peaks.agent_kb, procfs::peak_kb(pid));
                            r
                        }
                        Who::Limit => self.cat_capture(&producer),
                    };
                    cols[i].record(r);
                }
            }
        }
        let shim = *shim_peak.lock().unwrap_or_else(|e| e.into_inner());
        peaks.shim_kb = (shim > 0).then_some(shim);
        let trio = |[s, a, l]: [Column; 3]| Trio {
            sandboxd: s.outcome(),
            agent: a.outcome(),
            limit: l.outcome(),
        };
        (trio(zero), trio(text), peaks)
    }

    // ---- scenario 6: child exit to completion callback ------------------

    /// Scenario 6, in milliseconds: (sandboxd, the POST round trip).
    pub(crate) async fn callback(&self, rounds: usize) -> (Outcome, Outcome) {
        match self.callback_inner(rounds).await {
            Ok(pair) => pair,
            Err(e) => {
                eprintln!("  error: {e:#}");
                (
                    Outcome::Unavailable(format!("failed: {e:#}")),
                    Outcome::Unavailable("not measured".into()),
                )
            }
        }
    }

    async fn callback_inner(&self, rounds: usize) -> anyhow::Result<(Outcome, Outcome)> {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u128, Value)>();
        let app = axum::Router::new().route(
            "/complete",
            axum::routing::post(move |body: axum::Json<Value>| {
                let at = now_ns();
                let tx = tx.clone();
                async move {
                    let _ = tx.send((at, body.0));
                    axum::http::StatusCode::OK
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/complete", listener.local_addr()?);
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let mut sandboxd = Column::new(None);
        let mut limit = Column::new(None);
        for round in 0..rounds + 5 {
            for who in order(round) {
                match who {
                    Who::Sandboxd if sandboxd.live() => {
                        let wait = if sandboxd.samples.is_empty() { 10 } else { 30 };
                        let r = self.one_callback(&url, round, &mut rx, wait).await;
                        if round >= 5 || r.is_err() {
                            sandboxd.record(r);
                        }
                    }
                    Who::Limit => {
                        let started = Instant::now();
                        let res = self
                            .http
                            .post(&url)
                            .bearer_auth("bench-callback-token")
                            .json(
                                &json!({"status": "COMPLETED", "run_id": format!("limit-{round}")}),
                            )
                            .send()
                            .await?;
                        ensure!(res.status() == 200, "receiver answered {}", res.status());
                        res.bytes().await?;
                        let ms = started.elapsed().as_secs_f64() * 1e3;
                        let _ = rx.recv().await;
                        if round >= 5 {
                            limit.samples.push(ms);
                        }
                    }
                    _ => {}
                }
            }
        }
        server.abort();
        Ok((sandboxd.outcome(), limit.outcome()))
    }

    /// One run of `date +%s%N` with a callback: the time from the child's
    /// clock reading (its last act before exiting) to the callback's arrival.
    async fn one_callback(
        &self,
        url: &str,
        round: usize,
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(u128, Value)>,
        wait_s: u64,
    ) -> anyhow::Result<f64> {
        let run_id = format!("callback-{round}");
        let res = self
            .sd(reqwest::Method::POST, "/v1/runs")
            .json(&json!({
                "run_id": run_id,
                "command": ["date", "+%s%N"],
                "callback": {"url": url, "token": "bench-callback-token"},
            }))
            .send()
            .await?;
        let status = res.status();
        let body: Value = res.json().await?;
        ensure!(status == 201, "{status} {body}");
        let (at, payload) = match tokio::time::timeout(Duration::from_secs(wait_s), rx.recv()).await
        {
            Ok(Some(got)) => got,
            _ => {
                let run: Value = self
                    .sd(reqwest::Method::GET, &format!("/v1/runs/{run_id}"))
                    .send()
                    .await?
                    .json()
                    .await?;
                if round == 0 || run["callback"]["attempts"] == 0 {
                    bail!(
                        "{NOT_IN_BUILD} (no callback arrived within {wait_s} s; the run's callback stayed {})",
                        run["callback"]["state"]
                    );
                }
                bail!("no callback within {wait_s} s: {run}");
            }
        };
        ensure!(
            payload["run_id"] == run_id.as_str(),
            "callback for another run: {payload}"
        );
        ensure!(
            payload["status"] == "COMPLETED",
            "callback payload: {payload}"
        );
        let out = self
            .sd(
                reqwest::Method::GET,
                &format!("/v1/runs/{run_id}/logs?stream=stdout"),
            )
            .send()
            .await?
            .text()
            .await?;
        let child_ns: u128 = out
            .trim()
            .parse()
            .with_context(|| format!("date printed {out:?}"))?;
        let _ = self
            .sd(reqwest::Method::DELETE, &format!("/v1/runs/{run_id}"))
            .send()
            .await;
        Ok(at.saturating_sub(child_ns) as f64 / 1e6)
    }
}

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn max_into(slot: &mut Option<u64>, kb: u64) {
    if kb > 0 {
        *slot = Some(slot.unwrap_or(0).max(kb));
    }
}

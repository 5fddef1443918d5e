//! Starting and stopping the two daemons under test: sandboxd and the real
//! OpenHands agent-server. Each runs in its own process group, is listed in
//! the pid file that `bench/run.sh` kills on exit, and is stopped (group
//! SIGTERM, then SIGKILL) when its handle drops.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::Config;

/// The session key both daemons are started with.
pub(crate) const KEY: &str = "bench-session-key-0123456789";

/// Process groups alive now, mirrored to the pid file.
static LIVE: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn write_pids(cfg: &Config) {
    let live = LIVE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let text: String = live.iter().map(|p| format!("{p}\n")).collect();
    let _ = std::fs::write(&cfg.pid_file, text);
}

/// A started daemon.
pub(crate) struct Daemon {
    child: Child,
    pub(crate) pid: u32,
    pub(crate) url: String,
    pid_file: PathBuf,
    /// How long the group gets between SIGTERM and SIGKILL.
    grace: Duration,
}

impl Daemon {
    fn spawn(cfg: &Config, mut cmd: Command, url: String, grace: Duration) -> anyhow::Result<Self> {
        cmd.stdin(Stdio::null()).process_group(0);
        // SAFETY: prctl with plain integers between fork and exec; it
        // ties the daemon's life to this driver's main thread, which spawns
        // every daemon, so a killed driver leaves nothing behind.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().context("spawning the daemon")?;
        let pid = child.id();
        LIVE.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
        write_pids(cfg);
        Ok(Daemon {
            child,
            pid,
            url,
            pid_file: cfg.pid_file.clone(),
            grace,
        })
    }

    /// Whether the process has exited (reaping it when so).
    pub(crate) fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let group = -(self.pid as i32);
        // SAFETY: kill with plain integers.
        unsafe { libc::kill(group, libc::SIGTERM) };
        let deadline = Instant::now() + self.grace;
        while Instant::now() < deadline {
            if matches!(self.child.try_wait(), Ok(Some(_))) {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // SAFETY: as above; the group may hold children that outlived it.
        unsafe { libc::kill(group, libc::SIGKILL) };
        let _ = self.child.wait();
        let mut live = LIVE.lock().unwrap_or_else(|e| e.into_inner());
        live.retain(|p| *p != self.pid);
        let text: String = live.iter().map(|p| format!("{p}\n")).collect();
        let _ = std::fs::write(&self.pid_file, text);
    }
}

/// A free loopback port, found by binding port 0.
pub(crate) fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

fn log_file(cfg: &Config, name: &str) -> anyhow::Result<File> {
    let dir = cfg.out.join("logs");
    std::fs::create_dir_all(&dir)?;
    Ok(File::create(dir.join(name))?)
}

/// Polls `GET path` on `port` until it answers 200; the time from
/// `started` then.
async fn wait_ready(
    daemon: &mut Daemon,
    port: u16,
    path: &str,
    started: Instant,
    every: Duration,
    limit: Duration,
    log: &Path,
) -> anyhow::Result<Duration> {
    loop {
        if probe(port, path).await {
            return Ok(started.elapsed());
        }
        if daemon.exited() {
            bail!("exited before it was ready; log: {}", tail(log));
        }
        if started.elapsed() > limit {
            bail!("not ready after {limit:?}; log: {}", tail(log));
        }
        tokio::time::sleep(every).await;
    }
}

/// One `GET path` on a fresh connection; whether it answered 200.
/// Hand-written on a plain socket rather than through reqwest: its pool
/// and connector add milliseconds to the first request to a new port,
/// which would be counted as the daemon's start time.
async fn probe(port: u16, path: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await else {
        return false;
    };
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let read = tokio::time::timeout(Duration::from_secs(5), stream.read_exact(&mut head)).await;
    matches!(read, Ok(Ok(_))) && head.starts_with(b"HTTP/1.") && &head[8..12] == b" 200"
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

/// Starts sandboxd with its state and work root under `dir`; answers once
/// `GET /healthz` is 200, with the time that took.
pub(crate) async fn start_sandboxd(cfg: &Config, tag: &str) -> anyhow::Result<(Daemon, Duration)> {
    let dir = cfg.scratch.join(format!("sandboxd-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let log_name = format!("sandboxd-{tag}.log");
    let log = log_file(cfg, &log_name)?;
    let mut cmd = Command::new(&cfg.sandboxd_bin);
    // Scenario 4 captures 1 GiB whole: above the default output cap.
    cmd.args([
        "serve",
        "--max-running",
        "256",
        "--max-output-bytes",
        "2GiB",
    ])
    .arg("--listen")
    .arg(format!("127.0.0.1:{port}"))
    .arg("--state-dir")
    .arg(dir.join("state"))
    .arg("--work-root")
    .arg(dir.join("work"))
    .env("SESSION_API_KEY", KEY)
    .current_dir(&dir)
    .stdout(log.try_clone()?)
    .stderr(log);
    let started = Instant::now();
    let mut daemon = Daemon::spawn(
        cfg,
        cmd,
        format!("http://127.0.0.1:{port}"),
        Duration::from_secs(15),
    )?;
    let ready = wait_ready(
        &mut daemon,
        port,
        "/healthz",
        started,
        Duration::from_millis(1),
        Duration::from_secs(30),
        &cfg.out.join("logs").join(&log_name),
    )
    .await
    .context("sandboxd")?;
    Ok((daemon, ready))
}

/// Starts the agent-server (`python -m openhands.agent_server`) in a fresh
/// working dir under scratch; answers once `GET /health` is 200 (uvicorn
/// answers only after its startup finished), with the time that took.
pub(crate) async fn start_agent_server(
    cfg: &Config,
    python: &Path,
    tag: &str,
) -> anyhow::Result<(Daemon, Duration)> {
    let dir = cfg.scratch.join(format!("agent-server-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let log_name = format!("agent-server-{tag}.log");
    let log = log_file(cfg, &log_name)?;
    let mut cmd = Command::new(python);
    cmd.args([
        "-m",
        "openhands.agent_server",
        "--host",
        "127.0.0.1",
        "--port",
    ])
    .arg(port.to_string())
    .env_remove("SESSION_API_KEY")
    .env("OH_SESSION_API_KEYS_0", KEY)
    .env("LITELLM_LOCAL_MODEL_COST_MAP", "True")
    .current_dir(&dir)
    .stdout(log.try_clone()?)
    .stderr(log);
    let started = Instant::now();
    let mut daemon = Daemon::spawn(
        cfg,
        cmd,
        format!("http://127.0.0.1:{port}"),
        Duration::from_secs(15),
    )?;
    let ready = wait_ready(
        &mut daemon,
        port,
        "/health",
        started,
        Duration::from_millis(20),
        Duration::from_secs(180),
        &cfg.out.join("logs").join(&log_name),
    )
    .await
    .context("agent-server")?;
    Ok((daemon, ready))
}

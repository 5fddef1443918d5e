//! The run shim: `sandboxd shim`, one small process per run that owns the
//! run's processes, so a run outlives a crash or restart of the daemon.
//!
//! The daemon writes a [`ShimSpec`] (JSON) to the shim's stdin. The shim
//! then:
//! - becomes a child subreaper, so the run's orphans are reparented to it
//!   and reaped by it, never left as zombies;
//! - runs `bash setup.sh` (when asked and present) and the command, each as
//!   the leader of its own process group, with default signal dispositions,
//!   an empty signal mask, stdin `/dev/null` and no inherited descriptors;
//! - captures stdout and stderr through the masker into `stdout.log`,
//!   `stderr.log` and `output.idx` (arrival order of chunks) in the run dir;
//! - enforces the deadline (SIGTERM to the group, SIGKILL after the grace);
//! - forwards SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1 and SIGUSR2 to the
//!   current process group; SIGTERM and SIGINT also mean "cancelled";
//! - when the leader exits, kills what is left of the run (the group and any
//!   orphan reparented to the shim), drains the pipes, and writes
//!   `exit.json` ([`ExitReport`]) atomically, tells the daemon
//!   ([`ShimEvent::Ended`], carrying the report), and only then flushes the
//!   logs and the report to disk. That file is the run's result for
//!   whichever daemon is alive later; the live daemon takes the report from
//!   the event, so a full state dir costs output, not the run's end.
//!
//! Events for a live daemon go to stdout as JSON lines ([`ShimEvent`]),
//! written non-blocking: a stalled or dead daemon never blocks the run.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

use crate::durable;
use crate::secrets::mask::{LiveMasker, Masker, StreamMasker};

/// File names inside a run's state dir.
pub mod files {
    /// Captured stdout, masked.
    pub const STDOUT: &str = "stdout.log";
    /// Captured stderr, masked.
    pub const STDERR: &str = "stderr.log";
    /// Arrival order: 5-byte records (stream byte, u32 LE length).
    pub const INDEX: &str = "output.idx";
    /// The shim's result.
    pub const EXIT: &str = "exit.json";
    /// The shim's own diagnostics.
    pub const SHIM_LOG: &str = "shim.log";
}

/// What the daemon asks the shim to run.
#[derive(Debug, Serialize, Deserialize)]
pub struct ShimSpec {
    /// The run's state dir (logs, exit.json).
    pub run_dir: PathBuf,
    /// The command's argv.
    pub argv: Vec<String>,
    /// Working directory.
    pub cwd: PathBuf,
    /// The child's complete environment.
    pub env: Vec<(String, String)>,
    /// Run `bash setup.sh` first when it exists in `cwd`.
    pub setup: bool,
    /// Wall-clock limit for setup and command together, in milliseconds.
    pub timeout_ms: u64,
    /// SIGTERM to SIGKILL on timeout, in milliseconds.
    pub kill_grace_ms: u64,
    /// oom_score_adj of the run's processes.
    pub oom_score_adj: i32,
    /// Values masked in the captured output.
    pub mask: Vec<String>,
    /// fsync the logs and `exit.json` before exiting. Off for an
    /// exec-and-wait without callback, whose caller gets the answer directly.
    pub durable: bool,
}

// The spec carries secret values (in `env` and `mask`): wipe them when it
// goes, in the daemon (after handing it over) and in the shim.
impl Drop for ShimSpec {
    fn drop(&mut self) {
        for (_, value) in &mut self.env {
            value.zeroize();
        }
        self.mask.zeroize();
    }
}

/// Which part of a run a process is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// `bash setup.sh`.
    Setup,
    /// The run's command.
    Command,
}

/// A message from the shim to a live daemon.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "e", rename_all = "snake_case")]
pub enum ShimEvent {
    /// A phase's process started; `pid` leads its process group.
    Spawned {
        /// Which phase.
        phase: Phase,
        /// The leader's pid (and process group id).
        pid: i32,
    },
    /// Bytes stored so far.
    Output {
        /// stdout.log size.
        o: u64,
        /// stderr.log size.
        r: u64,
    },
    /// The values of a [`ShimControl::Mask`] are in the masker: output
    /// read from now on is masked with them.
    Masked {
        /// The message's number.
        seq: u64,
    },
    /// The run has ended and `exit.json` is written (not yet flushed), or
    /// could not be written (a full state dir): the report comes along,
    /// so a live daemon records the end either way.
    Ended {
        /// How the run ended: the content of `exit.json`.
        report: Box<ExitReport>,
    },
}

/// A message from the daemon after the spec: one JSON line each on the
/// shim's stdin, which the daemon keeps open for the run's life.
#[derive(Serialize, Deserialize)]
#[serde(tag = "c", rename_all = "snake_case")]
pub enum ShimControl {
    /// More values to mask (resolved during the run); answered with
    /// [`ShimEvent::Masked`] once they are in the masker.
    Mask {
        /// The message's number.
        seq: u64,
        /// The values.
        values: Vec<String>,
    },
}

impl Drop for ShimControl {
    fn drop(&mut self) {
        let ShimControl::Mask { values, .. } = self;
        values.zeroize();
    }
}

/// How the run ended, as the shim saw it. Written to `exit.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExitReport {
    /// Format version.
    pub version: u32,
    /// The phase that ended the run.
    pub phase: Phase,
    /// Exit code, when the process exited.
    pub exit_code: Option<i32>,
    /// Signal number, when a signal killed it.
    pub signal: Option<i32>,
    /// Why the process could not be started.
    pub spawn_error: Option<String>,
    /// The deadline passed.
    pub timed_out: bool,
    /// SIGTERM or SIGINT reached the shim.
    pub cancelled: bool,
    /// Bytes in stdout.log.
    pub stdout_bytes: u64,
    /// Bytes in stderr.log.
    pub stderr_bytes: u64,
    /// When the command phase started.
    pub started_at: Option<DateTime<Utc>>,
    /// When the run ended.
    pub finished_at: DateTime<Utc>,
}

/// Entry point of `sandboxd shim`. Its exit code only says whether the shim
/// itself worked; the run's result is in `exit.json`.
pub fn main() -> ExitCode {
    match run_shim() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let _ = writeln!(io::stderr(), "sandboxd shim: {err}");
            ExitCode::from(70)
        }
    }
}

const FORWARDED: [Signal; 6] = [
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGHUP,
    Signal::SIGQUIT,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
];

struct Shared {
    /// Process group of the phase running now; 0 between phases.
    current_pgid: AtomicI32,
    cancelled: AtomicBool,
    timed_out: AtomicBool,
    finished: (Mutex<bool>, Condvar),
    output: Mutex<OutputFiles>,
}

struct OutputFiles {
    stdout: File,
    stderr: File,
    index: File,
    stdout_bytes: u64,
    stderr_bytes: u64,
    events: EventPipe,
    /// Bytes were stored since the last progress event.
    unreported: bool,
    /// When the last progress event was sent.
    last_progress: Instant,
}

fn run_shim() -> io::Result<()> {
    // The shim holds secret values: no core dumps, no ptrace by peers.
    set_prctl(libc::PR_SET_DUMPABLE, 0);
    set_prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    let mut forwarded = SigSet::empty();
    for signal in FORWARDED {
        forwarded.add(signal);
    }
    forwarded.thread_block().map_err(io::Error::from)?;

    // The spec is the first line; stdin stays open for controls.
    let mut text = String::new();
    io::stdin().read_line(&mut text)?;
    let spec = serde_json::from_str::<ShimSpec>(&text);
    text.zeroize();
    let spec = spec.map_err(|e| io::Error::other(format!("bad spec: {e}")))?;

    let open = |name: &str| {
        OpenOptions::new()
            .create(true)
            .append(true)
            .open(spec.run_dir.join(name))
    };
    let shared = Arc::new(Shared {
        current_pgid: AtomicI32::new(0),
        cancelled: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        finished: (Mutex::new(false), Condvar::new()),
        output: Mutex::new(OutputFiles {
            stdout: open(files::STDOUT)?,
            stderr: open(files::STDERR)?,
            index: open(files::INDEX)?,
            stdout_bytes: 0,
            stderr_bytes: 0,
            events: EventPipe::stdout(),
            unreported: false,
            last_progress: Instant::now(),
        }),
    });
    let masker = LiveMasker::new(Masker::new(spec.mask.iter()));
    spawn_control_thread(shared.clone(), masker.clone());

    spawn_signal_thread(shared.clone(), forwarded);
    let started = Instant::now();
    spawn_deadline_thread(shared.clone(), started, &spec);

    let mut report = run_phases(&spec, &shared, &masker);
    finish(&shared);
    let mut output = lock(&shared.output);
    report.stdout_bytes = output.stdout_bytes;
    report.stderr_bytes = output.stderr_bytes;
    report.timed_out = shared.timed_out.load(Ordering::SeqCst);
    report.cancelled = shared.cancelled.load(Ordering::SeqCst) && !report.timed_out;
    let bytes = serde_json::to_vec(&report).map_err(io::Error::other)?;
    // The daemon hears of the end as soon as exit.json is in place (an
    // atomic rename: a crash of the daemon loses nothing). The flushes that
    // make the logs and the report survive a power loss come after, off
    // the path from the child's exit to its completion callback; the
    // daemon flushes its outbox and record itself.
    let exit_path = spec.run_dir.join(files::EXIT);
    let written = durable::write_atomic(&exit_path, &bytes, 0o600, durable::Sync::NoFlush);
    let report = Box::new(report);
    output.events.send_blocking(&ShimEvent::Ended { report });
    written.map_err(|err| io::Error::new(err.kind(), format!("cannot write exit.json: {err}")))?;
    if !spec.durable {
        return Ok(());
    }
    for file in [&output.stdout, &output.stderr, &output.index] {
        let _ = file.sync_data();
    }
    drop(output);
    File::open(&exit_path)?.sync_all()?;
    durable::sync_dir(&spec.run_dir)
}

fn run_phases(spec: &ShimSpec, shared: &Arc<Shared>, masker: &LiveMasker) -> ExitReport {
    let mut report = ExitReport {
        version: 1,
        phase: Phase::Setup,
        exit_code: None,
        signal: None,
        spawn_error: None,
        timed_out: false,
        cancelled: false,
        stdout_bytes: 0,
        stderr_bytes: 0,
        started_at: None,
        finished_at: Utc::now(),
    };
    if spec.setup && spec.cwd.join("setup.sh").is_file() {
        let argv = ["bash".to_owned(), "setup.sh".to_owned()];
        let ok = run_phase(Phase::Setup, &argv, spec, shared, masker, &mut report);
        if !ok {
            report.finished_at = Utc::now();
            return report;
        }
    }
    if !(shared.cancelled.load(Ordering::SeqCst) || shared.timed_out.load(Ordering::SeqCst)) {
        report.started_at = Some(Utc::now());
        run_phase(
            Phase::Command,
            &spec.argv,
            spec,
            shared,
            masker,
            &mut report,
        );
    }
    report.finished_at = Utc::now();
    report
}

/// Runs one phase to its end; true when it exited 0.
fn run_phase(
    phase: Phase,
    argv: &[String],
    spec: &ShimSpec,
    shared: &Arc<Shared>,
    masker: &LiveMasker,
    report: &mut ExitReport,
) -> bool {
    report.phase = phase;
    report.exit_code = None;
    report.signal = None;
    let mut child = match spawn_child(argv, spec) {
        Ok(child) => child,
        Err(message) => {
            report.spawn_error = Some(message);
            return false;
        }
    };
    let pid = child.id() as i32;
    shared.current_pgid.store(pid, Ordering::SeqCst);
    lock(&shared.output)
        .events
        .send_blocking(&ShimEvent::Spawned { phase, pid });
    // A cancel that raced with the spawn still reaches the new group.
    if shared.cancelled.load(Ordering::SeqCst) || shared.timed_out.load(Ordering::SeqCst) {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    }
    let readers = [
        child
            .stdout
            .take()
            .map(|pipe| spawn_reader(pipe, Stream::Stdout, shared, masker)),
        child
            .stderr
            .take()
            .map(|pipe| spawn_reader(pipe, Stream::Stderr, shared, masker)),
    ];
    let status = wait_for_leader(pid);
    shared.current_pgid.store(0, Ordering::SeqCst);
    kill_leftovers(pid);
    reap_all();
    for reader in readers.into_iter().flatten() {
        let _ = reader.join();
    }
    drop(child);
    match status {
        WaitStatus::Exited(_, code) => report.exit_code = Some(code),
        WaitStatus::Signaled(_, signal, _) => report.signal = Some(signal as i32),
        _ => report.exit_code = Some(-1),
    }
    report.exit_code == Some(0)
}

fn spawn_child(argv: &[String], spec: &ShimSpec) -> Result<std::process::Child, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("the command is empty".to_owned());
    };
    if !spec.cwd.is_dir() {
        return Err(format!(
            "cwd {} does not exist or is not a directory",
            spec.cwd.display()
        ));
    }
    let oom = format!("{}\n", spec.oom_score_adj).into_bytes();
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0);
    // SAFETY: the closure only makes async-signal-safe system calls on
    // memory allocated before the fork (see `reset_child`).
    unsafe {
        command.pre_exec(move || {
            reset_child(&oom);
            Ok(())
        });
    }
    command.spawn().map_err(|err| match err.kind() {
        io::ErrorKind::NotFound => format!("command not found: {program}"),
        io::ErrorKind::PermissionDenied => format!("permission denied executing {program}"),
        _ => format!("cannot start {program}: {err}"),
    })
}

/// Runs in the forked child before exec: default dispositions for every
/// signal, an empty mask, the run's oom_score_adj, and every descriptor
/// beyond stdio marked close-on-exec. Async-signal-safe calls only.
fn reset_child(oom: &[u8]) {
    // SAFETY: signal, sigprocmask, open, write, close and close_range are
    // async-signal-safe and take no pointers into shared state.
    unsafe {
        // The raw system call: glibc's wrappers refuse the signals it
        // reserves (32, 33), whose dispositions are inherited all the same.
        let default = KernelSigaction {
            handler: libc::SIG_DFL,
            flags: 0,
            restorer: 0,
            mask: 0,
        };
        for signal in 1..=64 {
            if signal != libc::SIGKILL && signal != libc::SIGSTOP {
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    signal,
                    &default as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            libc::write(fd, oom.as_ptr().cast(), oom.len());
            libc::close(fd);
        }
        libc::syscall(
            libc::SYS_close_range,
            3u32,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        );
    }
}

/// The kernel's `struct sigaction` for rt_sigaction on Linux.
#[repr(C)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

/// Waits for the leader, reaping any orphan that exits meanwhile.
fn wait_for_leader(leader: i32) -> WaitStatus {
    loop {
        match waitpid(None, None) {
            Ok(status) if status.pid() == Some(Pid::from_raw(leader)) => return status,
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return WaitStatus::Exited(Pid::from_raw(leader), -1),
        }
    }
}

/// Ends what is left of a run after its leader: the rest of its process
/// group and any process reparented to the shim (orphans that left the
/// group). No grandchild outlives its run.
fn kill_leftovers(leader: i32) {
    let _ = killpg(Pid::from_raw(leader), Signal::SIGKILL);
    // Children left (orphans adopted by this subreaper)? Usually none, and
    // then /proc need not be scanned.
    use nix::sys::wait::WaitPidFlag;
    if waitpid(None, Some(WaitPidFlag::WNOHANG)) == Err(nix::errno::Errno::ECHILD) {
        return;
    }
    let me = std::process::id() as i32;
    for pid in children_of(me) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), Signal::SIGKILL);
    }
}

/// Reaps every child until none is left.
fn reap_all() {
    loop {
        match waitpid(None, None) {
            Ok(_) | Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Pids whose parent is `parent`: from `/proc/<parent>/task/*/children`
/// (one small file per thread of ours), else by scanning all of /proc.
fn children_of(parent: i32) -> Vec<i32> {
    if let Some(children) = children_from_tasks(parent) {
        return children;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| proc_stat(*pid).is_some_and(|stat| stat.ppid == parent))
        .collect()
}

/// Children listed by the kernel per thread (CONFIG_PROC_CHILDREN); `None`
/// when the kernel has no such files.
fn children_from_tasks(parent: i32) -> Option<Vec<i32>> {
    let tasks = std::fs::read_dir(format!("/proc/{parent}/task")).ok()?;
    let mut children = Vec::new();
    for task in tasks.flatten() {
        let text = std::fs::read_to_string(task.path().join("children")).ok()?;
        children.extend(
            text.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    Some(children)
}

/// The fields of /proc/PID/stat that sandboxd uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// Parent pid.
    pub ppid: i32,
    /// Start time in clock ticks since boot: with the pid, it names one
    /// process for good (pids are reused, start times are not).
    pub start_ticks: u64,
    /// State letter (`Z` for a zombie).
    pub state: char,
}

/// Reads /proc/PID/stat.
pub fn proc_stat(pid: i32) -> Option<ProcStat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may hold spaces: parse after it.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split(' ').collect();
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        start_ticks: fields.get(19)?.parse().ok()?,
    })
}

/// Bytes read from a pipe at once.
const READ_CHUNK: usize = 256 * 1024;

/// While output keeps coming, progress events go to the daemon at most
/// this often (each one wakes it); a reader that has drained its pipe
/// reports at once, so a follower never waits for bytes already stored.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(2);

/// Pipe capacity asked for stdout: fewer context switches between a fast
/// writer and the capture (1 MiB is the unprivileged maximum by default).
const PIPE_CAPACITY: libc::c_int = 1 << 20;

fn grow_pipe(pipe: &impl AsRawFd) {
    // SAFETY: fcntl on a pipe descriptor we own; failure leaves it as it was.
    unsafe {
        libc::fcntl(pipe.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_CAPACITY);
    }
}

#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

fn spawn_reader(
    mut pipe: impl Read + AsRawFd + Send + 'static,
    stream: Stream,
    shared: &Arc<Shared>,
    masker: &LiveMasker,
) -> std::thread::JoinHandle<()> {
    grow_pipe(&pipe);
    let shared = Arc::clone(shared);
    let mut masked: StreamMasker = masker.stream();
    std::thread::spawn(move || {
        let shared = &*shared;
        let mut buf = vec![0u8; READ_CHUNK];
        let mut out = Vec::with_capacity(buf.len() + 64);
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            };
            out.clear();
            masked.push(&buf[..n], &mut out);
            store(shared, stream, &out, bytes_waiting(&pipe));
        }
        out.clear();
        masked.finish(&mut out);
        store(shared, stream, &out, false);
    })
}

/// Whether more bytes wait in the pipe (`FIONREAD`).
fn bytes_waiting(pipe: &impl AsRawFd) -> bool {
    let mut waiting: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through a pointer to a live local.
    let ok = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut waiting) } == 0;
    ok && waiting > 0
}

/// Stores masked output and reports progress: at once when the reader's
/// pipe is drained (`more_waiting` false), else at most every
/// [`PROGRESS_INTERVAL`].
fn store(shared: &Shared, stream: Stream, bytes: &[u8], more_waiting: bool) {
    let mut output = lock(&shared.output);
    let files = &mut *output;
    store_bytes(files, stream, bytes);
    let due = !more_waiting || files.last_progress.elapsed() >= PROGRESS_INTERVAL;
    if files.unreported && due {
        let event = ShimEvent::Output {
            o: files.stdout_bytes,
            r: files.stderr_bytes,
        };
        // An event a stalled daemon cannot take now goes with the next one.
        if files.events.try_send(&event) {
            files.unreported = false;
            files.last_progress = Instant::now();
        }
    }
}

fn store_bytes(files: &mut OutputFiles, stream: Stream, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    let (file, counter, tag) = match stream {
        Stream::Stdout => (&mut files.stdout, &mut files.stdout_bytes, 1u8),
        Stream::Stderr => (&mut files.stderr, &mut files.stderr_bytes, 2u8),
    };
    // On a full disk (or a file-size limit) the bytes that did not fit are
    // lost, but the run goes on, and the counters and the index stay true
    // to what is stored, also when a write stopped partway.
    let stored = write_what_fits(file, bytes);
    if stored == 0 {
        return;
    }
    *counter += stored as u64;
    let mut record = [0u8; 5];
    record[0] = tag;
    record[1..].copy_from_slice(&(stored as u32).to_le_bytes());
    let _ = files.index.write_all(&record);
    files.unreported = true;
}

/// Writes `bytes` until done or a write fails; returns how many were
/// written.
fn write_what_fits(file: &mut File, bytes: &[u8]) -> usize {
    let mut written = 0;
    while written < bytes.len() {
        match file.write(&bytes[written..]) {
            Ok(0) => break,
            Ok(n) => written += n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        }
    }
    written
}

/// Applies the daemon's [`ShimControl`] lines from stdin until it closes:
/// values to mask are added to the live masker (each reader takes them up
/// before its next chunk), then acknowledged, so the daemon hands a value
/// to the run only once output printing it will be masked.
fn spawn_control_thread(shared: Arc<Shared>, masker: LiveMasker) {
    std::thread::spawn(move || {
        let mut line = String::new();
        loop {
            line.zeroize();
            line.clear();
            match io::stdin().read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let Ok(control) = serde_json::from_str::<ShimControl>(&line) else {
                let _ = writeln!(io::stderr(), "sandboxd shim: unreadable control line");
                continue;
            };
            let ShimControl::Mask { seq, values } = &control;
            masker.add(values.iter());
            let event = ShimEvent::Masked { seq: *seq };
            lock(&shared.output).events.send_blocking(&event);
        }
        line.zeroize();
    });
}

fn spawn_signal_thread(shared: Arc<Shared>, set: SigSet) {
    std::thread::spawn(move || loop {
        let Ok(signal) = set.wait() else { continue };
        if matches!(signal, Signal::SIGTERM | Signal::SIGINT) {
            shared.cancelled.store(true, Ordering::SeqCst);
        }
        let pgid = shared.current_pgid.load(Ordering::SeqCst);
        if pgid > 0 {
            let _ = killpg(Pid::from_raw(pgid), signal);
        }
    });
}

fn spawn_deadline_thread(shared: Arc<Shared>, started: Instant, spec: &ShimSpec) {
    let deadline = started + Duration::from_millis(spec.timeout_ms);
    let grace = Duration::from_millis(spec.kill_grace_ms);
    std::thread::spawn(move || {
        if !wait_finished_until(&shared, deadline) {
            return;
        }
        shared.timed_out.store(true, Ordering::SeqCst);
        signal_current(&shared, Signal::SIGTERM);
        if !wait_finished_until(&shared, Instant::now() + grace) {
            return;
        }
        signal_current(&shared, Signal::SIGKILL);
    });
}

/// Sleeps until `until`; false when the run finished first.
fn wait_finished_until(shared: &Shared, until: Instant) -> bool {
    let (lock_, cvar) = &shared.finished;
    let mut finished = lock(lock_);
    loop {
        if *finished {
            return false;
        }
        let now = Instant::now();
        if now >= until {
            return true;
        }
        finished = cvar
            .wait_timeout(finished, until - now)
            .map(|(g, _)| g)
            .unwrap_or_else(|e| e.into_inner().0);
    }
}

fn signal_current(shared: &Shared, signal: Signal) {
    let pgid = shared.current_pgid.load(Ordering::SeqCst);
    if pgid > 0 {
        let _ = killpg(Pid::from_raw(pgid), signal);
    }
}

fn finish(shared: &Shared) {
    let (lock_, cvar) = &shared.finished;
    *lock(lock_) = true;
    cvar.notify_all();
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_prctl(option: libc::c_int, value: libc::c_ulong) {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    unsafe {
        libc::prctl(option, value, 0, 0, 0);
    }
}

/// The shim's stdout, set non-blocking: events a stalled daemon cannot
/// take are sent with the next one (progress) or retried briefly (spawns),
/// never allowed to block the run's output capture.
struct EventPipe {
    fd: Option<std::os::fd::RawFd>,
}

impl EventPipe {
    fn stdout() -> EventPipe {
        let fd = io::stdout().as_raw_fd();
        // SAFETY: fcntl on our own stdout descriptor.
        let ok = unsafe {
            let flags = libc::fcntl(fd, libc::F_GETFL);
            flags >= 0 && libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) >= 0
        };
        EventPipe {
            fd: ok.then_some(fd),
        }
    }

    /// Writes one line; lines are under PIPE_BUF, so a write is whole or
    /// nothing. Returns false when the pipe was full.
    fn try_send(&mut self, event: &ShimEvent) -> bool {
        let Some(fd) = self.fd else { return true };
        let mut line = serde_json::to_vec(event).unwrap_or_default();
        line.push(b'\n');
        // SAFETY: writes from a live buffer to our own descriptor.
        let n = unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
        if n >= 0 {
            return true;
        }
        let err = io::Error::last_os_error();
        if err.raw_os_error() == Some(libc::EAGAIN) {
            return false;
        }
        // The daemon is gone: stop sending.
        self.fd = None;
        true
    }

    fn send_blocking(&mut self, event: &ShimEvent) {
        let until = Instant::now() + Duration::from_secs(2);
        while !self.try_send(event) && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// Paths of a run's output files.
pub fn output_path(run_dir: &Path, name: &str) -> PathBuf {
    run_dir.join(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_own_stat() {
        let stat = proc_stat(std::process::id() as i32).unwrap();
        assert_eq!(stat.ppid, nix::unistd::getppid().as_raw());
        assert!(stat.start_ticks > 0);
    }

    /// The per-thread children files name our children, like the /proc scan.
    #[test]
    fn finds_own_children() {
        let mut child = Command::new("sleep").arg("5").spawn().unwrap();
        let me = std::process::id() as i32;
        let pid = child.id() as i32;
        let listed = children_from_tasks(me);
        let _ = child.kill();
        let _ = child.wait();
        if let Some(listed) = listed {
            assert!(listed.contains(&pid), "{pid} not in {listed:?}");
        }
    }
}

//! The run shim: `sandboxd-shim` (or `sandboxd shim`), one small process
//! per run that owns the run's processes, so a run outlives a crash or
//! restart of the daemon.
//!
//! The daemon writes a [`ShimSpec`] (JSON) to the shim's stdin, perhaps
//! long after starting it (a warm shim, `runs::warm`, waits for it with
//! its cgroup made; it ends quietly if the channel closes first). The
//! shim is one thread (input sockets of runs that take input aside): the
//! run's output, its signals, the daemon's control lines and the deadline
//! all come to its main thread through one `poll` (`capture::Pump`). It:
//! - becomes a child subreaper, so the run's orphans are reparented to it
//!   and reaped by it, never left as zombies;
//! - runs `bash setup.sh` (when asked and present) and the command, each as
//!   the leader of its own process group, with default signal dispositions,
//!   an empty signal mask, stdin `/dev/null` and no inherited descriptors;
//!   a run that takes input gives its command a pipe or a terminal instead
//!   (`pty`; a terminal's output is captured as stdout) and listens for the
//!   input on the run dir's `stdin.sock` (`stdin`, frames of `input`);
//! - captures stdout and stderr through the masker into `stdout.log`,
//!   `stderr.log` and `output.idx` (arrival order of chunks) in the run dir,
//!   on its main thread while it waits for the phase's leader (`capture`);
//! - enforces the deadline (SIGTERM to the group, SIGKILL after the grace);
//! - forwards the [`FORWARDED_SIGNALS`](crate::signals::FORWARDED_SIGNALS)
//!   to the current process group; SIGTERM and SIGINT also mean "cancelled";
//! - creates each phase's process inside the run's own cgroup (cgroup v2,
//!   where one is writable; `clone`), and runs it as `--run-user` when
//!   the spec says so;
//! - when the leader exits, kills what is left of the run (the group, the
//!   run's cgroup, and every descendant of the shim, round after round
//!   until none is left: processes that `setsid` or double-fork away are
//!   reparented to it), drains the pipes, and writes
//!   `exit.json` ([`ExitReport`]) atomically, tells the daemon
//!   ([`ShimEvent::Ended`], carrying the report), and only then flushes the
//!   logs and the report to disk. That file is the run's result for
//!   whichever daemon is alive later; the live daemon takes the report from
//!   the event, so a full state dir costs output, not the run's end.
//!
//! Events for a live daemon go to stdout as JSON lines ([`ShimEvent`]),
//! written non-blocking: a stalled or dead daemon never blocks the run.
//!
//! Layout: [`protocol`] is what the daemon and the shim exchange (the
//! daemon side is `runs::spawn` and the supervisor); the rest is the shim
//! process: this file (`main` and the phases), `child` (starting a phase's
//! process) and `clone` (its fork and exec into the cgroup), `capture`
//! (pipes, masking, output files, progress events; `capture::Pump` reads
//! them and waits for the leader),
//! `events` (the non-blocking event pipe), `children` (subreaper duties),
//! `control` (the control channel: the spec, then control lines),
//! `deadline` (the deadline, and the signals passed on), and `pty` and
//! `stdin` (the command's pipe or terminal and the input socket feeding
//! it).

mod capture;
mod child;
mod children;
mod clone;
mod control;
mod deadline;
mod events;
pub mod input;
pub mod protocol;
mod pty;
mod stdin;
mod template;

use std::fs::File;
use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::Utc;
use nix::sys::signal::{killpg, SigSet, Signal};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;

use self::capture::{OutputFiles, Pump, Stream};
use self::control::ControlChannel;
use self::events::EventPipe;
pub use self::protocol::{
    shim_executable, ExitReport, Phase, RunAs, ShimEvent, ShimExe, ShimSpec, StdinMode,
    VERSION_LINE,
};
use self::pty::ChildInput;
use self::stdin::RunInput;
use crate::containment::RunCgroup;
use crate::durable;
use crate::secrets::mask::{LiveMasker, Masker};
use crate::signals::FORWARDED_SIGNALS;
use crate::state_dir::RunDir;

/// Entry point of `sandboxd shim`. Its exit code only says whether the shim
/// itself worked; the run's result is in `exit.json`.
pub fn main() -> ExitCode {
    let blocked = match prepare_process() {
        Ok(blocked) => blocked,
        Err(err) => {
            diagnose(&err.to_string());
            return ExitCode::from(70);
        }
    };
    if std::env::var_os(template::TEMPLATE_ENV).is_some() {
        return template::main(blocked);
    }
    serve(blocked)
}

/// Runs one shim in a prepared process (started, or forked by the
/// template): waits for the spec on stdin and runs it. The exit code only
/// says whether the shim itself worked.
fn serve(blocked: SigSet) -> ExitCode {
    match run_shim(blocked) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            diagnose(&err.to_string());
            ExitCode::from(70)
        }
    }
}

/// `shim.log` in the run dir, once the spec named it.
static SHIM_LOG: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();

/// Says something about the shim itself: appended to the run dir's
/// `shim.log`, created only then (a run whose shim has nothing to say has
/// none); before the spec names the run dir, to the shim's stderr.
fn diagnose(message: &str) {
    let line = format!("sandboxd shim: {message}\n");
    let written = SHIM_LOG.get().is_some_and(|path| {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(path)
            .and_then(|mut log| log.write_all(line.as_bytes()))
            .is_ok()
    });
    if !written {
        let _ = io::stderr().write_all(line.as_bytes());
    }
}

/// The run's state the shim's parts read and change (on its one thread).
struct Shared {
    /// Process group of the phase running now; 0 between phases.
    current_pgid: AtomicI32,
    /// SIGTERM or SIGINT reached the shim.
    cancelled: AtomicBool,
    /// The deadline passed.
    timed_out: AtomicBool,
    output: Mutex<OutputFiles>,
}

impl Shared {
    /// Whether no further phase may start.
    fn stopping(&self) -> bool {
        self.cancelled.load(Ordering::SeqCst) || self.timed_out.load(Ordering::SeqCst)
    }
}

/// What a shim process sets up once, before any spec, and what a forked
/// shim inherits from the template: not dumpable, the signals it takes
/// from a signalfd blocked (returned), and the signal dispositions its
/// commands get back noted.
fn prepare_process() -> io::Result<SigSet> {
    // The shim holds secret values: no core dumps, no ptrace by peers.
    set_prctl(libc::PR_SET_DUMPABLE, 0);
    let mut forwarded = SigSet::empty();
    for signal in FORWARDED_SIGNALS {
        forwarded.add(signal);
    }
    // SIGCHLD too: the main thread takes them all from a signalfd
    // (`capture::Pump`) with the run's output. Blocked before any thread
    // (an input socket's) starts, so every thread inherits the mask.
    let mut blocked = forwarded;
    blocked.add(Signal::SIGCHLD);
    blocked.thread_block().map_err(io::Error::from)?;
    child::note_signal_dispositions();
    Ok(blocked)
}

fn run_shim(blocked: SigSet) -> io::Result<()> {
    // Not inherited through a fork: set by every shim itself.
    set_prctl(libc::PR_SET_CHILD_SUBREAPER, 1);
    // The run's own cgroup where one is writable, else the /proc walk
    // alone ends what the run leaves behind. Made before the spec comes
    // (off the run's path for a warm shim): it is named after this shim,
    // holds nothing of any run, and is removed if no spec ever comes.
    let mount_hint = std::env::var_os(crate::containment::CGROUP2_MOUNT_ENV);
    let cgroup = RunCgroup::create_under(
        &std::process::id().to_string(),
        mount_hint.as_deref().map(std::path::Path::new),
    );
    let mut pump = Pump::new(blocked, ControlChannel::stdin())?;
    // The spec is the first line; stdin stays open for control lines. A
    // warm shim waits here; the channel closing first means it was never
    // used (the daemon stopped or died), and it ends having done nothing.
    let Some(spec) = pump.read_spec()? else {
        return Ok(());
    };
    let started = Instant::now();
    let _ = SHIM_LOG.set(RunDir::new(&spec.run_dir).shim_log());
    let cgroup = cgroup.and_then(|prepared| prepared.or_again(&std::process::id().to_string()));
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        diagnose(&info.to_string());
        default_hook(info);
    }));
    let events = EventPipe::stdout();
    let shared = Arc::new(Shared {
        current_pgid: AtomicI32::new(0),
        cancelled: AtomicBool::new(false),
        timed_out: AtomicBool::new(false),
        output: Mutex::new(OutputFiles::new(
            &spec.run_dir,
            spec.max_output_bytes,
            events,
        )),
    });
    let masker = LiveMasker::new(Masker::new(spec.mask.iter()));
    let deadline = deadline::Deadline::new(
        started,
        Duration::from_millis(spec.timeout_ms),
        Duration::from_millis(spec.kill_grace_ms),
    );
    pump.start_run(&shared, masker.clone(), deadline);
    let mut report = run_phases(&spec, &shared, &masker, cgroup.as_ref(), &mut pump);
    let mut output = lock(&shared.output);
    let truncation = output.finish();
    report.stdout_bytes = output.stdout_bytes();
    report.stderr_bytes = output.stderr_bytes();
    report.stdout_dropped = truncation.stdout_dropped;
    report.stderr_dropped = truncation.stderr_dropped;
    report.truncation = truncation.reason;
    report.timed_out = shared.timed_out.load(Ordering::SeqCst);
    report.cancelled = shared.cancelled.load(Ordering::SeqCst) && !report.timed_out;
    let bytes = serde_json::to_vec(&report).map_err(io::Error::other)?;
    let exit_path = RunDir::new(&spec.run_dir).exit_report();
    let report = Box::new(report);
    if !spec.durable {
        // The daemon's record is the run's end, and the daemon says when
        // it is written (`Recorded`). `exit.json` only when it does not
        // say so: a daemon that died (the next one reads the file, after
        // this shim's exit) or could not write its record.
        yield_to_the_daemon();
        output.events.send_blocking(&ShimEvent::Ended { report });
        drop(output);
        if pump.wait_recorded(RECORDED_PATIENCE) {
            return Ok(());
        }
        return durable::write_atomic(&exit_path, &bytes, 0o600, durable::Durability::NoFlush)
            .map_err(|err| io::Error::new(err.kind(), format!("cannot write exit.json: {err}")));
    }
    // A durable run: the daemon hears of the end as soon as exit.json is
    // in place (an atomic rename: a crash of the daemon loses nothing).
    // The flushes that make the logs and the report survive a power loss
    // come after, off the path from the child's exit to its completion
    // callback; the daemon flushes its outbox and record itself.
    let written = durable::write_atomic(&exit_path, &bytes, 0o600, durable::Durability::NoFlush);
    // Opened before the daemon hears of the end: it may remove exit.json
    // once its final record is written.
    let exit_file = match &written {
        Ok(()) => Some(File::open(&exit_path)?),
        _ => None,
    };
    yield_to_the_daemon();
    output.events.send_blocking(&ShimEvent::Ended { report });
    written.map_err(|err| io::Error::new(err.kind(), format!("cannot write exit.json: {err}")))?;
    let Some(exit_file) = exit_file else {
        return Ok(());
    };
    output.sync();
    drop(output);
    exit_file.sync_all()?;
    durable::sync_dir(&spec.run_dir)
}

/// How long a shim waits after `Ended` for the daemon's `Recorded`
/// before it writes `exit.json` anyway (a daemon stopped, or swamped).
const RECORDED_PATIENCE: Duration = Duration::from_secs(10);

/// Puts the shim in the idle scheduling class before it tells the daemon
/// of the run's end. The daemon's reader is woken onto this CPU (a pipe's
/// wake-up expects its writer to sleep), and what the shim still does
/// (the cgroup removed, its own exit, the flushes of a durable run) would
/// otherwise hold it there while the caller waits for the answer.
fn yield_to_the_daemon() {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: sched_setscheduler reads `param` and changes only this
    // process's policy; lowering it needs no privilege. A refusal (a
    // seccomp filter) costs only the speed, so it is not reported.
    unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
}

fn run_phases(
    spec: &ShimSpec,
    shared: &Arc<Shared>,
    masker: &LiveMasker,
    cgroup: Option<&RunCgroup>,
    pump: &mut Pump,
) -> ExitReport {
    let mut report = ExitReport::not_started();
    // The input socket listens from the start: a client may attach (and
    // type ahead) while setup runs.
    let mut input = match RunInput::open(spec) {
        Ok(input) => input,
        Err(err) => {
            report.spawn_error = Some(format!("cannot open the run's stdin: {err}"));
            report.finished_at = Utc::now();
            return report;
        }
    };
    let setup_ok = !(spec.setup && spec.cwd.join("setup.sh").is_file()) || {
        let argv = ["bash".to_owned(), "setup.sh".to_owned()];
        let phase = PhaseRun {
            phase: Phase::Setup,
            argv: &argv,
            input: ChildInput::Null,
            terminal: None,
        };
        run_phase(phase, spec, shared, masker, cgroup, pump, &mut report)
    };
    // A signal or the deadline that came while setup ended.
    pump.take_waiting(shared);
    if setup_ok && !shared.stopping() {
        report.started_at = Some(Utc::now());
        let phase = PhaseRun {
            phase: Phase::Command,
            argv: &spec.argv,
            input: std::mem::replace(&mut input.child, ChildInput::Null),
            terminal: input.terminal.take(),
        };
        run_phase(phase, spec, shared, masker, cgroup, pump, &mut report);
    }
    input.close();
    report.finished_at = Utc::now();
    report
}

/// One phase to run: its argv, its stdio, and for a terminal, the
/// master its output is read from.
struct PhaseRun<'a> {
    phase: Phase,
    argv: &'a [String],
    input: ChildInput,
    terminal: Option<std::fs::File>,
}

/// Runs one phase to its end, its output read by `pump` while any is
/// left; true when it exited 0.
fn run_phase(
    run: PhaseRun<'_>,
    spec: &ShimSpec,
    shared: &Arc<Shared>,
    masker: &LiveMasker,
    cgroup: Option<&RunCgroup>,
    pump: &mut Pump,
    report: &mut ExitReport,
) -> bool {
    let PhaseRun {
        phase,
        argv,
        input,
        terminal,
    } = run;
    report.phase = phase;
    report.exit_code = None;
    report.signal = None;
    let spawned = child::spawn_child(argv, spec, cgroup, &input);
    // The child has its ends; a terminal's master reads the end of its
    // output only once no copy of the slave is left here.
    drop(input);
    let mut child = match spawned {
        Ok(child) => child,
        Err(message) => {
            report.spawn_error = Some(message);
            return false;
        }
    };
    let pid = child.pid;
    shared.current_pgid.store(pid, Ordering::SeqCst);
    lock(&shared.output)
        .events
        .send_blocking(&ShimEvent::Spawned { phase, pid });
    // A cancel that raced with the spawn still reaches the new group.
    if shared.stopping() {
        let _ = killpg(Pid::from_raw(pid), Signal::SIGTERM);
    }
    // A terminal's output is the run's stdout.
    let sources = [
        (child.stdout.take(), Stream::Stdout),
        (child.stderr.take(), Stream::Stderr),
        (terminal, Stream::Stdout),
    ];
    for (pipe, stream) in sources {
        if let Some(pipe) = pipe {
            pump.add(pipe, stream, masker);
        }
    }
    let status = pump.until_exit(shared, pid);
    shared.current_pgid.store(0, Ordering::SeqCst);
    children::kill_leftovers(pid, cgroup, spec.kill_uid);
    children::reap_all();
    pump.drain(shared);
    match status {
        WaitStatus::Exited(_, code) => report.exit_code = Some(code),
        WaitStatus::Signaled(_, signal, _) => report.signal = Some(signal as i32),
        _ => report.exit_code = Some(-1),
    }
    report.exit_code == Some(0)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

fn set_prctl(option: libc::c_int, value: libc::c_ulong) {
    // SAFETY: prctl with integer arguments touches no memory of ours.
    unsafe {
        libc::prctl(option, value, 0, 0, 0);
    }
}

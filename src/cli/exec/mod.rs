//! `sandboxd exec`: start a run, stream its stdout and stderr live to ours,
//! exit with its exit code; Ctrl-C cancels the run.//!
//! Layout: the request body and the flag parsers are in `request`; the
//! command, its stop signals and the exit code mapping are here.

use std::process::ExitCode;
use std::str::FromStr;
use std::time::Duration;

use reqwest::Method;
use serde_json::Value;

use super::client::{Client, ClientArgs, ClientError, RunInfo};
use super::format;

mod request;

use request::{parse_env, parse_secret, request_body};

/// Exit code when sandboxd itself failed (daemon unreachable, request
/// refused, run lost), as `docker run` does.
pub const EXIT_SANDBOXD_ERROR: u8 = 125;
/// Exit code of a run that timed out, as `timeout(1)` does.
pub const EXIT_TIMED_OUT: u8 = 124;
/// Exit code of a run whose command could not start (not found, bad cwd).
pub const EXIT_SPAWN_FAILED: u8 = 127;
/// Exit code of a cancelled run (128 + SIGINT, as after Ctrl-C).
pub const EXIT_CANCELLED: u8 = 130;

/// `sandboxd exec`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = EXEC_HELP)]
pub struct ExecArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Set an environment variable for the command; repeat for more.
    #[arg(short, long = "env", value_name = "K=V", value_parser = parse_env)]
    pub env: Vec<(String, String)>,

    /// Put a secret into the command's environment as NAME; SOURCE is
    /// name:SECRET_NAME (a secret of this sandbox), lookup:URL (GET URL),
    /// env:VAR (our own $VAR) or static:VALUE. Repeat for more.
    #[arg(long = "secret", value_name = "NAME=SOURCE", value_parser = parse_secret)]
    pub secrets: Vec<(String, Value)>,

    /// Wall-clock limit of setup + command, e.g. 60, 90s, 5m [default: the daemon's, 1h].
    #[arg(long, value_name = "DURATION", value_parser = crate::config::parse_duration)]
    pub timeout: Option<Duration>,

    /// Working directory [default: the run's work dir, where `upload` puts bundles].
    #[arg(long, value_name = "DIR")]
    pub cwd: Option<std::path::PathBuf>,

    /// The run's id (e.g. the one given to `sandboxd upload --run`) [default: a new UUID].
    #[arg(long, value_name = "ID")]
    pub run_id: Option<String>,

    /// Do not run `bash setup.sh` first even when the work dir has one
    /// (by default a `setup.sh` in the work dir runs before the command).
    #[arg(long)]
    pub no_setup: bool,

    /// Start the run and print its id without following it (see `sandboxd
    /// logs -f ID`, `sandboxd run show ID`).
    #[arg(short, long)]
    pub detach: bool,

    /// Keep the run's stdin open and send ours to it (like `docker exec -i`).
    #[arg(short, long)]
    pub interactive: bool,

    /// Give the run a terminal (like `docker exec -t`): with -i, ours is in
    /// raw mode while it runs, and the run's follows our window's size.
    #[arg(short, long)]
    pub tty: bool,

    /// Start from a minimal environment (PATH, HOME, LANG) instead of the daemon's.
    #[arg(long)]
    pub no_inherit_env: bool,

    /// After Ctrl-C: time between SIGTERM and SIGKILL.
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = crate::config::parse_duration)]
    pub grace: Duration,

    /// The command and its arguments, after `--`, executed directly (for a
    /// shell line: `-- bash -c 'make && make test'`).
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

const EXEC_HELP: &str = "\
The command runs as a run of the daemon, in its own process group, in the
run's work dir (or --cwd). When that dir holds a `setup.sh` (say, from
`sandboxd upload`), `bash setup.sh` runs first (--no-setup skips it). Its
stdout and stderr are streamed live to ours. The daemon's environment is
the base (sanitized: session keys removed). Each run id runs once: an id
that already ran is refused (see `sandboxd logs ID`, `sandboxd run delete ID`).

Exit status:
  the command's own exit code      when it exited
  128+N                            when signal N killed it (137 for SIGKILL)
  124                              when it timed out (--timeout)
  127                              when it could not start (not found, bad --cwd)
  130                              when it was cancelled (Ctrl-C, `sandboxd cancel`)
  125                              when sandboxd failed (daemon down, request refused, run lost)

Ctrl-C cancels the run (SIGTERM to its process group, SIGKILL after --grace)
and waits for its end; a second Ctrl-C stops waiting.

Examples:
  sandboxd exec -- ls -la
  sandboxd exec --timeout 5m --env DEBUG=1 -- python main.py
  sandboxd exec --secret GITHUB_TOKEN=name:github_token -- ./deploy.sh
  sandboxd exec -- bash -c 'for i in 1 2 3; do echo $i; sleep 1; done'";

/// Runs `sandboxd exec`.
pub async fn main(args: ExecArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let body = request_body(&args)?;
    // Listen before starting the run, so a Ctrl-C at any moment cancels it.
    let mut stop = StopSignals::new()?;
    if let Some(run_id) = &args.run_id {
        match client.run(run_id).await {
            Ok(run) if run.is_terminal() => return Err(already_ran(&run)),
            Ok(_) => eprintln!("sandboxd: run {run_id} is already running; following it"),
            Err(err) if err.code() == Some("run_not_found") => {}
            Err(err) => return Err(err),
        }
    }
    let run: RunInfo = match client
        .json(client.request(Method::POST, "/v1/runs").json(&body))
        .await
    {
        Ok(run) => run,
        Err(err) if err.code() == Some("run_exists") => {
            let run_id = args.run_id.as_deref().unwrap_or_default();
            return Err(ClientError::Usage(format!(
                "run {run_id} already exists with another command or options; pick another \
                 --run-id (`sandboxd runs` lists the ids in use)"
            )));
        }
        Err(err) => return Err(err),
    };
    let run_id = run.run_id.clone();
    if args.detach {
        // Once it runs, so that `run signal` and `cancel` can reach it.
        let mut run = run;
        while run.state == "starting" {
            tokio::time::sleep(Duration::from_millis(50)).await;
            run = client.run(&run_id).await?;
        }
        format::print(&format!("{run_id}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.interactive || args.tty {
        let session = super::attach::Session {
            input: args.interactive,
            terminal: args.tty,
        };
        session
            .run(&client, &run_id)
            .await
            .map_err(|e| e.detached(&run_id))?;
        let run = client
            .wait_ended(&run_id)
            .await
            .map_err(|e| e.detached(&run_id))?;
        return Ok(ExitCode::from(exit_code(&run)));
    }
    let streams = stream_output(&client, &run_id);
    tokio::pin!(streams);
    let interrupted = tokio::select! {
        result = &mut streams => {
            result.map_err(|e| e.detached(&run_id))?;
            false
        }
        () = stop.next() => true,
    };
    if interrupted {
        eprintln!(
            "sandboxd: cancelling run {run_id} (SIGTERM, SIGKILL after {}); Ctrl-C again to stop waiting",
            format::secs(args.grace)
        );
        match client.cancel(&run_id, args.grace).await {
            Ok(_) => {}
            // It ended on its own meanwhile: report that end.
            Err(err) if err.code() == Some("run_ended") => {}
            Err(err) => return Err(err),
        }
        tokio::select! {
            result = &mut streams => result.map_err(|e| e.detached(&run_id))?,
            () = stop.next() => {
                eprintln!("sandboxd: stopped waiting; run {run_id} is still being cancelled");
                return Ok(ExitCode::from(EXIT_CANCELLED));
            }
        }
    }
    let run = client
        .wait_ended(&run_id)
        .await
        .map_err(|e| e.detached(&run_id))?;
    if let Some(note) = end_note(&run) {
        eprintln!("sandboxd: {note}");
    }
    Ok(ExitCode::from(exit_code(&run)))
}

/// Why `exec --run-id ID` does not run an id that already ran: a run id
/// names one execution, and replaying the old output silently (what the
/// API's idempotent retry does) surprises a person at a terminal.
fn already_ran(run: &RunInfo) -> ClientError {
    let id = &run.run_id;
    let how = match (&run.exit_code, &run.signal) {
        (Some(code), _) => format!("{}, exit {code}", run.state.replace('_', " ")),
        (None, Some(signal)) => format!("{}, {signal}", run.state.replace('_', " ")),
        (None, None) => run.state.replace('_', " "),
    };
    ClientError::Usage(format!(
        "run {id} already ran ({how}) and a run id runs once; `sandboxd logs {id}` shows its \
         output, `sandboxd run delete {id}` frees the id (and its work dir), or pick another --run-id"
    ))
}

/// SIGINT (Ctrl-C) and SIGTERM, both meaning "stop the run".
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<StopSignals, ClientError> {
        use tokio::signal::unix::{signal, SignalKind};
        let io = |source| ClientError::Io {
            action: "installing a handler for",
            path: "SIGINT/SIGTERM".to_owned(),
            source,
        };
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt()).map_err(io)?,
            terminate: signal(SignalKind::terminate()).map_err(io)?,
        })
    }

    async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Copies both streams to ours, concurrently, until the run ends.
async fn stream_output(client: &Client, run_id: &str) -> Result<(), ClientError> {
    let mut stdout = tokio::io::stdout();
    let mut stderr = tokio::io::stderr();
    tokio::try_join!(
        client.copy_logs(run_id, "stdout", 0, true, &mut stdout),
        client.copy_logs(run_id, "stderr", 0, true, &mut stderr),
    )?;
    Ok(())
}

/// Our exit code for a run that ended (see `EXEC_HELP`).
pub fn exit_code(run: &RunInfo) -> u8 {
    let signal = run
        .signal
        .as_deref()
        .and_then(|name| nix::sys::signal::Signal::from_str(name).ok());
    match (run.state.as_str(), run.exit_code, signal) {
        ("succeeded", _, _) => 0,
        ("timed_out", _, _) => EXIT_TIMED_OUT,
        ("cancelled", _, _) => EXIT_CANCELLED,
        ("failed", Some(code), _) => u8::try_from(code).unwrap_or(1),
        ("failed", None, Some(signal)) => 128u8.saturating_add(signal as u8),
        ("failed", None, None) => EXIT_SPAWN_FAILED,
        _ => EXIT_SANDBOXD_ERROR,
    }
}

/// What to tell the user about how the run ended, when its exit code alone
/// does not say it.
fn end_note(run: &RunInfo) -> Option<String> {
    let id = &run.run_id;
    match (run.state.as_str(), &run.error) {
        ("succeeded", _) | ("failed", None) => None,
        ("lost", _) => Some(format!(
            "run {id} was lost: sandboxd cannot know how it ended"
        )),
        (_, Some(error)) => Some(format!("run {id}: {error}")),
        (state, None) => Some(format!("run {id}: {}", state.replace('_', " "))),
    }
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn run(state: &str, exit_code: Option<i32>, signal: Option<&str>) -> RunInfo {
        serde_json::from_value(json!({
            "run_id": "r1", "state": state, "exit_code": exit_code, "signal": signal,
        }))
        .unwrap()
    }

    #[test]
    fn exit_codes_follow_the_shell_conventions() {
        for (state, code, signal, want) in [
            ("succeeded", Some(0), None, 0),
            ("failed", Some(3), None, 3),
            ("failed", None, Some("SIGKILL"), 137),
            ("failed", None, Some("SIGTERM"), 143),
            ("failed", None, None, 127),
            ("timed_out", None, Some("SIGTERM"), 124),
            ("cancelled", None, Some("SIGTERM"), 130),
            ("lost", None, None, 125),
        ] {
            assert_eq!(
                exit_code(&run(state, code, signal)),
                want,
                "{state} {code:?} {signal:?}"
            );
        }
    }
}

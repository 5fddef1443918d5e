//! The command line: `serve` (the daemon), `shim` (one per run, internal)
//! and the client subcommands that talk to a running daemon (`exec`,
//! `upload`, `runs`, `logs`, `cancel`, `status`), plus `completions` and
//! `man`. One file per client command; [`client`] is their HTTP client.

pub mod attach;
pub mod cancel;
pub mod client;
pub mod docs;
pub mod download;
pub mod exec;
mod format;
pub mod logs;
pub mod ls;
pub mod rm;
pub mod run;
pub mod runs;
pub mod status;
pub mod upload;

use std::process::ExitCode;

use crate::config::{Config, ServeArgs};

use client::{ClientArgs, ClientError};

/// Exit code of a client command the daemon refused, or that could not
/// reach it (`exec` uses [`exec::EXIT_SANDBOXD_ERROR`] instead).
pub const EXIT_ERROR: u8 = 1;

/// sandboxd: the in-sandbox supervisor for uploads, runs, secrets and
/// completion callbacks.
#[derive(Debug, clap::Parser)]
#[command(
    name = "sandboxd",
    version,
    about,
    long_about = "sandboxd: the in-sandbox supervisor for uploads, runs, secrets and completion \
                  callbacks.\n\n`sandboxd serve` runs the daemon (an HTTP API on 127.0.0.1:60001). \
                  The other commands are its command-line client: they talk to a running \
                  daemon at --url (env SANDBOXD_URL) with the session key from \
                  --session-key-file or env SESSION_API_KEY.",
    after_long_help = AFTER_HELP,
    propagate_version = true
)]
pub struct Cli {
    /// How the client commands reach the daemon (also accepted after the
    /// subcommand, which wins).
    #[command(flatten)]
    pub client: ClientArgs,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

const AFTER_HELP: &str = "\
Examples:
  SESSION_API_KEY=secret sandboxd serve            start the daemon
  export SESSION_API_KEY=secret                    let the client commands in
  sandboxd upload ./project --run r1               pack ./project into run r1's work dir
  sandboxd exec --run-id r1 -- python main.py      run it there, output live, its exit code
  sandboxd runs                                    list runs
  sandboxd logs -f r1                              follow a run's output
  sandboxd run show r1                             one run's status
  sandboxd cancel r1                               stop a run (SIGTERM, then SIGKILL)
  sandboxd run delete r1                           remove an ended run (frees its id)
  sandboxd status                                  the daemon's state

Environment:
  SANDBOXD_URL      the daemon's address (default http://127.0.0.1:60001, or unix:/path.sock)
  SESSION_API_KEY   the session key (or --session-key-file FILE)

Errors are one line, `sandboxd: <message> (<code>)`; client commands exit 1 on an error,
2 on a usage error; `exec` exits with the run's own code (see `sandboxd exec --help`).";

/// Subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Run the daemon. With `-- CMD [ARGS...]`, also start and supervise CMD
    /// (the agent-server) as the container's entrypoint.
    Serve {
        /// Daemon settings.
        #[command(flatten)]
        args: Box<ServeArgs>,
        /// The service to supervise, after `--`.
        #[arg(last = true)]
        service: Vec<String>,
    },
    /// Own one run's processes (started by the daemon; not for people).
    #[command(hide = true)]
    Shim,
    /// Start a run, stream its output live, exit with its exit code.
    Exec(exec::ExecArgs),
    /// Upload a directory (packed on the fly) or a tarball into a run's work dir.
    Upload(upload::UploadArgs),
    /// List runs.
    Runs(runs::RunsArgs),
    /// Print (or follow) a run's output.
    Logs(logs::LogsArgs),
    /// One run: `run show ID`, `run delete ID`, `run signal ID SIGNAL`.
    Run(run::RunArgs),
    /// Cancel a run: SIGTERM to its process group, SIGKILL after the grace.
    Cancel(cancel::CancelArgs),
    /// Attach to a run: its output here, our input (and terminal) there.
    Attach(attach::AttachArgs),
    /// Show the daemon's state.
    Status(status::StatusArgs),
    /// Download a file from the daemon's roots (resumes a `.part` left behind).
    Download(download::DownloadArgs),
    /// List a directory under the daemon's roots.
    Ls(ls::LsArgs),
    /// Remove a file or (with -r) a directory under the upload roots.
    Rm(rm::RmArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(docs::CompletionsArgs),
    /// Print the man page (roff) of sandboxd or of one of its commands.
    Man(docs::ManArgs),
}

/// Runs the parsed command line; the returned code is the process's.
pub fn main(cli: Cli) -> ExitCode {
    let outer = &cli.client;
    match cli.command {
        Command::Shim => crate::runs::shim::main(),
        Command::Serve { args, service } => serve(&args, service),
        Command::Exec(mut args) => {
            args.client = args.client.or(outer);
            client_command(exec::EXIT_SANDBOXD_ERROR, exec::main(args))
        }
        Command::Upload(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, upload::main(args))
        }
        Command::Runs(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, runs::main(args))
        }
        Command::Logs(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, logs::main(args))
        }
        Command::Run(mut args) => {
            let client = args.action.client_mut();
            *client = std::mem::take(client).or(outer);
            client_command(EXIT_ERROR, run::main(args))
        }
        Command::Cancel(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, cancel::main(args))
        }
        Command::Attach(mut args) => {
            args.client = args.client.or(outer);
            client_command(exec::EXIT_SANDBOXD_ERROR, attach::main(args))
        }
        Command::Status(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, status::main(args))
        }
        Command::Download(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, download::main(args))
        }
        Command::Ls(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, ls::main(args))
        }
        Command::Rm(mut args) => {
            args.client = args.client.or(outer);
            client_command(EXIT_ERROR, rm::main(args))
        }
        Command::Completions(args) => docs::completions(&args),
        Command::Man(args) => docs::man(&args),
    }
}

/// Runs a client command on a small runtime and prints its error, if any,
/// as the one `sandboxd: ...` line.
fn client_command(
    error_code: u8,
    command: impl std::future::Future<Output = Result<ExitCode, ClientError>>,
) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("sandboxd: cannot start the async runtime: {err}");
            return ExitCode::from(error_code);
        }
    };
    let result = runtime.block_on(command);
    // A packer thread still writing into a closed upload must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("sandboxd: {err}");
            ExitCode::from(error_code)
        }
    }
}

fn serve(args: &ServeArgs, service: Vec<String>) -> ExitCode {
    let init_child = crate::supervise::init::take_marker();
    if init_child {
        crate::supervise::handover::restore_into_env();
    }
    let log_masks = crate::telemetry::init(args.log_format, args.verbose);
    if !init_child && crate::supervise::init::wanted(args.subreaper) {
        return crate::supervise::init::main();
    }
    let config = match Config::from_args(args) {
        Ok(config) => config,
        // Once: a line for people, or a JSON event for log pipelines.
        Err(err) => {
            match args.log_format {
                crate::config::LogFormat::Json => tracing::error!("{err:#}"),
                crate::config::LogFormat::Text => eprintln!("sandboxd: {err:#}"),
            }
            return ExitCode::from(2);
        }
    };
    crate::daemon::main(config, service, log_masks)
}

//! The command line: `serve` (the daemon), `shim` (one per run, internal)
//! and the client subcommands that talk to a running daemon.

use std::process::ExitCode;

use crate::config::{Config, ServeArgs};

/// sandboxd: the in-sandbox supervisor for uploads, runs, secrets and
/// completion callbacks.
#[derive(Debug, clap::Parser)]
#[command(name = "sandboxd", version, about, long_about = None, propagate_version = true)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

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
}

/// Runs the parsed command line; the returned code is the process's.
pub fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Shim => crate::runs::shim::main(),
        Command::Serve { args, service } => serve(&args, service),
    }
}

fn serve(args: &ServeArgs, service: Vec<String>) -> ExitCode {
    let init_child = crate::supervise::init::take_marker();
    crate::telemetry::init(args.log_format, args.verbose);
    if !init_child && crate::supervise::init::wanted(args.subreaper) {
        return crate::supervise::init::main();
    }
    let config = match Config::from_args(args) {
        Ok(config) => config,
        Err(err) => {
            tracing::error!("{err:#}");
            eprintln!("sandboxd: {err:#}");
            return ExitCode::from(2);
        }
    };
    crate::daemon::main(config, service)
}

//! `sandboxd logs`: print a run's captured output, or follow it live.

use std::process::ExitCode;

use super::client::{Client, ClientArgs, ClientError};

/// `sandboxd logs`.
#[derive(Debug, clap::Args)]
#[command(after_long_help = LOGS_HELP)]
pub struct LogsArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Keep printing new output until the run ends, then exit with the
    /// run's exit code (as `sandboxd exec` does).
    #[arg(short, long)]
    pub follow: bool,

    /// Only one stream: stdout, stderr, or both interleaved in arrival
    /// order, all to our stdout [default: the run's stdout to ours, its
    /// stderr to ours].
    #[arg(long, value_enum, conflicts_with = "merge")]
    pub stream: Option<Stream>,

    /// Both streams to our stdout, interleaved in arrival order (the same
    /// as --stream both).
    #[arg(long)]
    pub merge: bool,

    /// Start at this byte of the stream (with --stream or --merge).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub offset: u64,

    /// The run.
    #[arg(value_name = "ID")]
    pub run_id: String,
}

const LOGS_HELP: &str = "\
Exit status: 0, or with --follow the run's own exit code (see `sandboxd exec --help`).

Examples:
  sandboxd logs r1                  stdout to stdout, stderr to stderr
  sandboxd logs --merge r1 | less   both, in arrival order, to stdout
  sandboxd logs -f r1               follow until the run ends";

/// A log stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Stream {
    /// The run's stdout.
    Stdout,
    /// The run's stderr.
    Stderr,
    /// Both, in arrival order.
    Both,
}

impl Stream {
    fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
            Stream::Both => "both",
        }
    }
}

/// Runs `sandboxd logs`.
pub async fn main(args: LogsArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let stream = match (args.stream, args.merge) {
        (_, true) => Some(Stream::Both),
        (stream, false) => stream,
    };
    let copied =
        match stream {
            Some(stream) => {
                let mut stdout = tokio::io::stdout();
                client
                    .copy_logs(
                        &args.run_id,
                        stream.as_str(),
                        args.offset,
                        args.follow,
                        &mut stdout,
                    )
                    .await
                    .map(drop)
            }
            None if args.offset != 0 => return Err(ClientError::Usage(
                "--offset counts the bytes of one stream: add --stream stdout|stderr or --merge"
                    .to_owned(),
            )),
            None => {
                let mut stdout = tokio::io::stdout();
                let mut stderr = tokio::io::stderr();
                let id = &args.run_id;
                tokio::try_join!(
                    client.copy_logs(id, "stdout", 0, args.follow, &mut stdout),
                    client.copy_logs(id, "stderr", 0, args.follow, &mut stderr),
                )
                .map(drop)
            }
        };
    if !args.follow {
        copied?;
        return Ok(ExitCode::SUCCESS);
    }
    copied.map_err(|e| e.detached(&args.run_id))?;
    let run = client
        .wait_ended(&args.run_id)
        .await
        .map_err(|e| e.detached(&args.run_id))?;
    Ok(ExitCode::from(super::exec::exit_code(&run)))
}

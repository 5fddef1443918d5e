//! `sandboxd logs`: print a run's captured output, or follow it live.

use std::process::ExitCode;

use super::client::{Client, ClientArgs, ClientError};

/// `sandboxd logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Keep printing new output until the run ends.
    #[arg(short, long)]
    pub follow: bool,

    /// Which output: stdout, stderr, or both interleaved in arrival order.
    #[arg(long, value_enum, default_value_t = Stream::Both)]
    pub stream: Stream,

    /// Start at this byte of the stream (for both: of the interleaving).
    #[arg(long, default_value_t = 0, value_name = "BYTES")]
    pub offset: u64,

    /// The run.
    #[arg(value_name = "ID")]
    pub run_id: String,
}

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
    let mut stdout = tokio::io::stdout();
    client
        .copy_logs(
            &args.run_id,
            args.stream.as_str(),
            args.offset,
            args.follow,
            &mut stdout,
        )
        .await?;
    Ok(ExitCode::SUCCESS)
}

//! `sandboxd cancel`: stop a run (SIGTERM to its process group, SIGKILL
//! after the grace) and, unless told not to, wait for its end.

use std::process::ExitCode;
use std::time::Duration;

use super::client::{Client, ClientArgs, ClientError};
use super::format;

/// `sandboxd cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Time between SIGTERM and SIGKILL, e.g. 10, 2s, 1m.
    #[arg(long, value_name = "DURATION", default_value = "10", value_parser = crate::config::parse_duration)]
    pub grace: Duration,

    /// Return once the daemon took the request, without waiting for the end.
    #[arg(long)]
    pub no_wait: bool,

    /// Print the run's status as JSON.
    #[arg(long)]
    pub json: bool,

    /// The run.
    #[arg(value_name = "ID")]
    pub run_id: String,
}

/// Runs `sandboxd cancel`.
pub async fn main(args: CancelArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let run = client.cancel(&args.run_id, args.grace).await?;
    let run = match args.no_wait {
        true => run,
        false => client.wait_ended(&args.run_id).await?,
    };
    if args.json {
        let answer: serde_json::Value = client
            .get(&super::client::run_path(&args.run_id, ""))
            .await?;
        format::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let state = run.state.replace('_', " ");
    let text = match (&run.error, run.duration_s) {
        _ if !run.is_terminal() => format!(
            "run {} is being cancelled (SIGTERM sent, SIGKILL after {})\n",
            run.run_id,
            format::secs(args.grace)
        ),
        // "cancelled (killed by SIGTERM)" already names the state.
        (Some(error), Some(secs)) if error.starts_with(&state) => format!(
            "run {}: {error}; it ran {}\n",
            run.run_id,
            format::duration(secs)
        ),
        (Some(error), Some(secs)) => format!(
            "run {} {state}: {error}; it ran {}\n",
            run.run_id,
            format::duration(secs)
        ),
        _ => format!("run {} {state}\n", run.run_id),
    };
    format::print(&text)?;
    Ok(ExitCode::SUCCESS)
}

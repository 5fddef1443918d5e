//! `sandboxd runs`: list runs as a table, or as JSON for scripts.

use std::process::ExitCode;

use super::client::{Client, ClientArgs, ClientError, RunInfo, RunList};
use super::format;

/// `sandboxd runs`.
#[derive(Debug, clap::Args)]
pub struct RunsArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Only runs in this state: starting, running, succeeded, failed,
    /// timed_out, cancelled, lost.
    #[arg(long, value_name = "STATE")]
    pub state: Option<String>,

    /// Print the daemon's answer (`{"runs": [...]}`) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// Runs `sandboxd runs`.
pub async fn main(args: RunsArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let path = match &args.state {
        Some(state) => format!("/v1/runs?state={}", urlencode(state)),
        None => "/v1/runs".to_owned(),
    };
    let answer: serde_json::Value = client.get(&path).await?;
    if args.json {
        format::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let list: RunList = serde_json::from_value(answer).map_err(|e| ClientError::Protocol {
        url: client.url().to_owned(),
        detail: format!("the run list is not the JSON expected: {e}"),
    })?;
    if list.runs.is_empty() {
        let what = args.state.as_deref().unwrap_or("any state");
        format::print(&format!("no runs in {what}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    format::print(&table(&list.runs, chrono::Utc::now()))?;
    Ok(ExitCode::SUCCESS)
}

/// The runs as `RUN ID  STATE  EXIT  AGE  DURATION  COMMAND`.
pub(crate) fn table(runs: &[RunInfo], now: chrono::DateTime<chrono::Utc>) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|run| {
            let exit = match (&run.exit_code, &run.signal) {
                (Some(code), _) => code.to_string(),
                (None, Some(signal)) => signal.clone(),
                (None, None) => "-".to_owned(),
            };
            let duration = match (run.duration_s, run.started_at) {
                (Some(secs), _) => format::duration(secs),
                (None, Some(started)) if !run.is_terminal() => {
                    format::duration((now - started).num_milliseconds() as f64 / 1000.0)
                }
                _ => "-".to_owned(),
            };
            vec![
                run.run_id.clone(),
                run.state.clone(),
                exit,
                format::age(run.created_at, now),
                duration,
                format::command(&run.command, 60),
            ]
        })
        .collect();
    format::table(
        &["RUN ID", "STATE", "EXIT", "AGE", "DURATION", "COMMAND"],
        &rows,
    )
}

fn urlencode(text: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/").expect("static URL");
    url.query_pairs_mut().append_pair("v", text);
    url.query()
        .unwrap_or("v=")
        .trim_start_matches("v=")
        .to_owned()
}

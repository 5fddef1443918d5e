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

    /// Show at most this many runs, newest first.
    #[arg(
        long,
        default_value_t = 50,
        value_name = "COUNT",
        conflicts_with = "all"
    )]
    pub limit: usize,

    /// Show every run (the daemon keeps --retain-runs ended runs).
    #[arg(long)]
    pub all: bool,

    /// Print the runs as JSON (`{"runs": [...], "next": null}`).
    #[arg(long)]
    pub json: bool,
}

/// Runs asked of the daemon per request.
const PAGE: usize = 1000;

/// Runs `sandboxd runs`.
pub async fn main(args: RunsArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let wanted = if args.all { usize::MAX } else { args.limit };
    let (list, more) = fetch(&client, args.state.as_deref(), wanted).await?;
    if args.json {
        let runs: Vec<&serde_json::Value> = list.iter().map(|(raw, _)| raw).collect();
        format::print_json(&serde_json::json!({ "runs": runs, "next": more }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let list = RunList {
        runs: list.into_iter().map(|(_, run)| run).collect(),
        next: more,
    };
    if list.runs.is_empty() {
        let what = args.state.as_deref().unwrap_or("any state");
        format::print(&format!("no runs in {what}\n"))?;
        return Ok(ExitCode::SUCCESS);
    }
    format::print(&table(&list.runs, chrono::Utc::now()))?;
    if list.next.is_some() {
        format::print(&format!(
            "(the {} newest shown; --limit N or --all for more)\n",
            list.runs.len()
        ))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Up to `wanted` runs, newest first, page by page; the cursor of what is
/// left, if anything.
async fn fetch(
    client: &Client,
    state: Option<&str>,
    wanted: usize,
) -> Result<(Vec<(serde_json::Value, RunInfo)>, Option<String>), ClientError> {
    let mut runs = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let limit = (wanted - runs.len()).clamp(1, PAGE);
        let mut path = format!("/v1/runs?limit={limit}");
        if let Some(state) = state {
            path.push_str(&format!("&state={}", urlencode(state)));
        }
        if let Some(after) = &after {
            path.push_str(&format!("&after={}", urlencode(after)));
        }
        let mut answer: serde_json::Value = client.get(&path).await?;
        let next = answer["next"].as_str().map(str::to_owned);
        let page = answer["runs"].take();
        let page: Vec<serde_json::Value> =
            serde_json::from_value(page).map_err(|e| protocol(client, e))?;
        for raw in page {
            let run: RunInfo =
                serde_json::from_value(raw.clone()).map_err(|e| protocol(client, e))?;
            runs.push((raw, run));
        }
        match next {
            Some(next) if runs.len() < wanted => after = Some(next),
            more => return Ok((runs, more)),
        }
    }
}

fn protocol(client: &Client, err: serde_json::Error) -> ClientError {
    ClientError::Protocol {
        url: client.url().to_owned(),
        detail: format!("the run list is not the JSON expected: {err}"),
    }
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

//! `sandboxd run show|delete|signal`: one run at a time (the list is
//! `sandboxd runs`, stopping one is `sandboxd cancel`).

use std::process::ExitCode;

use reqwest::Method;

use super::client::{run_path, Client, ClientArgs, ClientError, RunInfo};
use super::format;

/// `sandboxd run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// What to do with the run.
    #[command(subcommand)]
    pub action: RunAction,
}

/// `sandboxd run ...`.
#[derive(Debug, clap::Subcommand)]
pub enum RunAction {
    /// Show one run's status: state, exit, timing, output sizes.
    Show {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// Print the daemon's answer (`GET /v1/runs/ID`) as JSON.
        #[arg(long)]
        json: bool,
        /// The run.
        #[arg(value_name = "ID")]
        run_id: String,
    },
    /// Delete an ended run: its record, its logs and its work dir (the id
    /// can then be used again).
    Delete {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The run.
        #[arg(value_name = "ID")]
        run_id: String,
    },
    /// Send a signal to a running run's process group.
    Signal {
        /// How to reach the daemon.
        #[command(flatten)]
        client: ClientArgs,
        /// The run.
        #[arg(value_name = "ID")]
        run_id: String,
        /// SIGINT, INT, or a number.
        #[arg(value_name = "SIGNAL")]
        signal: String,
    },
}

impl RunAction {
    /// The daemon options of the action.
    pub fn client_mut(&mut self) -> &mut ClientArgs {
        match self {
            RunAction::Show { client, .. }
            | RunAction::Delete { client, .. }
            | RunAction::Signal { client, .. } => client,
        }
    }
}

/// Runs `sandboxd run ...`.
pub async fn main(args: RunArgs) -> Result<ExitCode, ClientError> {
    match args.action {
        RunAction::Show {
            client,
            json,
            run_id,
        } => {
            let client = Client::new(&client)?;
            if json {
                let answer: serde_json::Value = client.get(&run_path(&run_id, "")).await?;
                format::print_json(&answer)?;
            } else {
                format::print(&show(&client.run(&run_id).await?))?;
            }
        }
        RunAction::Delete { client, run_id } => {
            let client = Client::new(&client)?;
            match client
                .send(client.request(Method::DELETE, &run_path(&run_id, "")))
                .await
            {
                Ok(_) => format::print(&format!("run {run_id} deleted\n"))?,
                Err(err) if err.code() == Some("run_running") => {
                    return Err(ClientError::Usage(format!(
                        "run {run_id} is still running; stop it first with `sandboxd cancel {run_id}`"
                    )))
                }
                Err(err) => return Err(err),
            }
        }
        RunAction::Signal {
            client,
            run_id,
            signal,
        } => {
            let client = Client::new(&client)?;
            let body = serde_json::json!({ "signal": signal });
            // A run still starting cannot be signalled for a moment.
            let mut tries = 0;
            loop {
                let req = client
                    .request(Method::POST, &run_path(&run_id, "/signal"))
                    .json(&body);
                match client.json::<RunInfo>(req).await {
                    Err(err) if err.code() == Some("invalid_run") && tries < 50 => {
                        tries += 1;
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    other => {
                        other?;
                        break;
                    }
                }
            }
            format::print(&format!("sent {signal} to run {run_id}\n"))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// One run as `key: value` lines.
fn show(run: &RunInfo) -> String {
    let mut lines = vec![
        ("run", run.run_id.clone()),
        ("state", run.state.replace('_', " ")),
    ];
    match (&run.exit_code, &run.signal) {
        (Some(code), _) => lines.push(("exit code", code.to_string())),
        (None, Some(signal)) => lines.push(("signal", signal.clone())),
        _ => {}
    }
    if let Some(error) = &run.error {
        lines.push(("error", error.clone()));
    }
    lines.push(("command", format::command(&run.command, 200)));
    if !run.cwd.is_empty() {
        lines.push(("cwd", run.cwd.clone()));
    }
    if let Some(pid) = run.pid {
        lines.push(("pid", pid.to_string()));
    }
    if let Some(created) = run.created_at {
        lines.push(("created", created.to_rfc3339()));
    }
    if let Some(secs) = run.duration_s {
        lines.push(("duration", format::duration(secs)));
    }
    lines.push((
        "output",
        format!(
            "{} B stdout, {} B stderr",
            run.stdout_bytes, run.stderr_bytes
        ),
    ));
    lines
        .iter()
        .map(|(k, v)| format!("{:<10} {v}\n", format!("{k}:")))
        .collect()
}

//! `sandboxd status`: the daemon's state in a few lines, or as JSON.

use std::process::ExitCode;

use indicatif::BinaryBytes;
use serde::Deserialize;

use super::client::{Client, ClientArgs, ClientError};
use super::format;

/// `sandboxd status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the daemon's answer (`GET /v1/status`) as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `GET /v1/status`, as the client reads it.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Status {
    version: String,
    pid: u32,
    uptime_s: f64,
    runs: Counts,
    outbox: Outbox,
    agent_server: AgentServer,
    service: Option<Service>,
    work_root: WorkRoot,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Counts {
    running: u64,
    succeeded: u64,
    failed: u64,
    timed_out: u64,
    cancelled: u64,
    lost: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Outbox {
    pending: u64,
    failed: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct AgentServer {
    url: String,
    healthy: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Service {
    command: Vec<String>,
    pid: Option<u32>,
    state: String,
    restarts: u64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct WorkRoot {
    path: String,
    free_bytes: u64,
}

/// Runs `sandboxd status`.
pub async fn main(args: StatusArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let answer: serde_json::Value = client.get("/v1/status").await?;
    if args.json {
        format::print_json(&answer)?;
        return Ok(ExitCode::SUCCESS);
    }
    let status: Status = serde_json::from_value(answer).map_err(|e| ClientError::Protocol {
        url: client.url().to_owned(),
        detail: format!("the status is not the JSON expected: {e}"),
    })?;
    format::print(&render(&status, client.url()))?;
    Ok(ExitCode::SUCCESS)
}

fn render(status: &Status, url: &str) -> String {
    let runs = &status.runs;
    let service = match &status.service {
        None => "none".to_owned(),
        Some(service) => format!(
            "{}, {} (pid {}, {} restarts)",
            format::command(&service.command, 50),
            service.state,
            service
                .pid
                .map_or_else(|| "-".to_owned(), |pid| pid.to_string()),
            service.restarts
        ),
    };
    let agent = match status.agent_server.healthy {
        true => "healthy",
        false => "not answering",
    };
    let rows = [
        (
            "daemon",
            format!(
                "sandboxd {} at {url}, pid {}, up {}",
                status.version,
                status.pid,
                format::duration(status.uptime_s)
            ),
        ),
        (
            "runs",
            format!(
                "{} running, {} succeeded, {} failed, {} timed out, {} cancelled, {} lost",
                runs.running,
                runs.succeeded,
                runs.failed,
                runs.timed_out,
                runs.cancelled,
                runs.lost
            ),
        ),
        (
            "callbacks",
            format!(
                "{} pending, {} failed",
                status.outbox.pending, status.outbox.failed
            ),
        ),
        (
            "agent-server",
            format!("{} {agent}", status.agent_server.url),
        ),
        ("service", service),
        (
            "work root",
            format!(
                "{} ({} free)",
                status.work_root.path,
                BinaryBytes(status.work_root.free_bytes)
            ),
        ),
    ];
    rows.iter()
        .map(|(name, value)| format!("{:<13} {value}\n", format!("{name}:")))
        .collect()
}

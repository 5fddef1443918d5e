//! `sandboxd ls PATH`: lists a directory under the daemon's readable
//! roots, every page of it: mode, type, size, mtime, name (and a
//! symlink's target).

use std::process::ExitCode;

use serde::Deserialize;

use super::client::{Client, ClientArgs, ClientError};
use super::format;

/// `sandboxd ls`.
#[derive(Debug, clap::Args)]
pub struct LsArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Print the entries as JSON lines.
    #[arg(long)]
    pub json: bool,

    /// Absolute path of a directory.
    #[arg(value_name = "PATH")]
    pub path: String,
}

#[derive(Debug, Deserialize)]
struct Page {
    entries: Vec<serde_json::Value>,
    next: Option<String>,
}

/// Runs `sandboxd ls`.
pub async fn main(args: LsArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let mut after: Option<String> = None;
    let mut out = String::new();
    loop {
        let mut query = vec![("path", args.path.clone()), ("limit", "1000".to_owned())];
        if let Some(after) = &after {
            query.push(("after", after.clone()));
        }
        let req = client
            .request(reqwest::Method::GET, "/v1/files/list")
            .query(&query);
        let page: Page = client.json(req).await?;
        for entry in &page.entries {
            out.push_str(&line(entry, args.json));
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    format::print(&out)?;
    Ok(ExitCode::SUCCESS)
}

fn line(entry: &serde_json::Value, json: bool) -> String {
    if json {
        return format!("{entry}\n");
    }
    let text = |key: &str| entry[key].as_str().unwrap_or("").to_owned();
    let target = match entry["target"].as_str() {
        Some(target) => format!(" -> {target}"),
        None => String::new(),
    };
    format!(
        "{} {:<7} {:>12} {} {}{target}\n",
        text("mode"),
        text("type"),
        entry["size"].as_u64().unwrap_or(0),
        text("mtime"),
        text("name"),
    )
}

//! `sandboxd rm PATH [-r]`: removes a file, a symlink or (with `-r`) a
//! directory under the daemon's upload roots.

use std::process::ExitCode;

use super::client::{Client, ClientArgs, ClientError};

/// `sandboxd rm`.
#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Remove a directory and everything in it.
    #[arg(short, long)]
    pub recursive: bool,

    /// Absolute path under an upload root.
    #[arg(value_name = "PATH")]
    pub path: String,
}

/// Runs `sandboxd rm`.
pub async fn main(args: RmArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let req = client
        .request(reqwest::Method::DELETE, "/v1/files")
        .query(&[
            ("path", args.path.as_str()),
            ("recursive", if args.recursive { "true" } else { "false" }),
        ]);
    client.send(req).await?;
    Ok(ExitCode::SUCCESS)
}

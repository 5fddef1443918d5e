//! The typed HTTP client of the client subcommands: where the daemon is,
//! which key to send, the few wire types the commands read, and
//! [`ClientError`], which turns every failure into one line that says what
//! to do.
//!
//! Layout: the connection and its requests are here; [`ClientError`] is in
//! `error`; the wire types, the client's own lenient view of the answers
//! (unknown fields ignored, states kept as strings, so an older or newer
//! daemon still works), are in `types`. The daemon's strict types live in
//! `crate::api`.

use std::path::PathBuf;
use std::time::Duration;

use futures::StreamExt;
use reqwest::{Method, RequestBuilder, Response, StatusCode};
use secrecy::{ExposeSecret, SecretString};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use tokio::io::{AsyncWrite, AsyncWriteExt};

mod error;
mod types;
mod websocket;

pub use error::ClientError;
use error::{connect_reason, error_chain};
pub use types::{BundleInfo, RunInfo, RunList};

/// Where the daemon listens when neither `--url` nor `SANDBOXD_URL` says.
pub const DEFAULT_URL: &str = "http://127.0.0.1:60001";

/// How to reach the daemon; flattened into every client subcommand and
/// into the top level, so `sandboxd --url U runs` and `sandboxd runs --url U`
/// both work (the one after the subcommand wins).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ClientArgs {
    /// The daemon's address: http://HOST:PORT, or unix:/path.sock for a daemon
    /// listening on a Unix socket [env: SANDBOXD_URL] [default: http://127.0.0.1:60001].
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,

    /// File holding the session key [default: env SESSION_API_KEY, else
    /// OH_SESSION_API_KEYS_0].
    #[arg(long, env = "SANDBOXD_SESSION_KEY_FILE", value_name = "FILE")]
    pub session_key_file: Option<PathBuf>,
}
impl ClientArgs {
    /// These options, with the ones given before the subcommand (`outer`)
    /// filling in what was not given after it.
    pub fn or(self, outer: &ClientArgs) -> ClientArgs {
        ClientArgs {
            url: self.url.or_else(|| outer.url.clone()),
            session_key_file: self
                .session_key_file
                .or_else(|| outer.session_key_file.clone()),
        }
    }
}
/// A connection to one daemon, with its key.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base of request URLs (`http://localhost` for a Unix socket).
    base: String,
    /// The address as the user gave it, for messages.
    url: String,
    key: Option<SecretString>,
}

impl Client {
    /// A client for the daemon named by `args`, with the key it names.
    pub fn new(args: &ClientArgs) -> Result<Client, ClientError> {
        let key = read_key(args)?;
        let (url, from) = match (&args.url, std::env::var("SANDBOXD_URL")) {
            (Some(url), _) => (url.clone(), "--url"),
            (None, Ok(url)) if !url.is_empty() => (url, "SANDBOXD_URL (from the environment)"),
            (None, _) => (DEFAULT_URL.to_owned(), "the default URL"),
        };
        let url = url.trim_end_matches('/').to_owned();
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5));
        let base = match url.strip_prefix("unix:") {
            Some(path) => {
                builder = builder.unix_socket(PathBuf::from(path));
                "http://localhost".to_owned()
            }
            None => {
                let parsed = reqwest::Url::parse(&url).map_err(|e| {
                    ClientError::Usage(format!(
                        "{from} {url:?} is not a URL ({e}); use http://HOST:PORT or unix:/path.sock"
                    ))
                })?;
                if parsed.scheme() != "http" && parsed.scheme() != "https" {
                    let example = match url.contains("://") {
                        true => "e.g. http://127.0.0.1:60001".to_owned(),
                        false => format!("e.g. http://{url}"),
                    };
                    return Err(ClientError::Usage(format!(
                        "{from} {url:?} must start with http://, https:// or unix: ({example})"
                    )));
                }
                url.clone()
            }
        };
        let http = builder.build().map_err(|e| ClientError::Protocol {
            url: url.clone(),
            detail: format!("cannot build the HTTP client: {e}"),
        })?;
        Ok(Client {
            http,
            base,
            url,
            key,
        })
    }

    /// The daemon's address as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A request to `path` (with its query) carrying the key.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let req = self.http.request(method, format!("{}{path}", self.base));
        match &self.key {
            Some(key) => req.header("X-Session-API-Key", key.expose_secret()),
            None => req,
        }
    }

    /// Sends `req`; a non-2xx answer becomes [`ClientError::Api`].
    pub async fn send(&self, req: RequestBuilder) -> Result<Response, ClientError> {
        let res = req.send().await.map_err(|e| self.transport_error(e))?;
        if res.status().is_success() {
            return Ok(res);
        }
        Err(self.api_error(res).await)
    }

    /// An answer already received; a non-2xx one becomes [`ClientError::Api`].
    pub async fn send_checked(&self, res: Response) -> Result<Response, ClientError> {
        if res.status().is_success() {
            return Ok(res);
        }
        Err(self.api_error(res).await)
    }

    /// Sends `req` and reads the JSON answer as `T`.
    pub async fn json<T: DeserializeOwned>(&self, req: RequestBuilder) -> Result<T, ClientError> {
        let res = self.send(req).await?;
        let bytes = res.bytes().await.map_err(|e| self.transport_error(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Protocol {
            url: self.url.clone(),
            detail: format!("the answer is not the JSON expected: {e}"),
        })
    }

    /// `GET path` as `T`.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.json(self.request(Method::GET, path)).await
    }

    /// `GET /v1/runs/{id}`.
    pub async fn run(&self, run_id: &str) -> Result<RunInfo, ClientError> {
        self.get(&run_path(run_id, "")).await
    }

    /// `POST /v1/runs/{id}/cancel`. A run still starting cannot be
    /// cancelled for a moment; that answer is retried for a few seconds.
    pub async fn cancel(&self, run_id: &str, grace: Duration) -> Result<RunInfo, ClientError> {
        let body = serde_json::json!({ "grace_s": grace.as_secs_f64() });
        let mut tries = 0;
        loop {
            let req = self
                .request(Method::POST, &run_path(run_id, "/cancel"))
                .json(&body);
            match self.json(req).await {
                Err(err) if err.code() == Some("invalid_run") && tries < 50 => {
                    tries += 1;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                other => return other,
            }
        }
    }

    /// Copies a run's `stream` from `offset` to `out`; with `follow`, until
    /// the run ends. A connection that breaks is resumed from the last byte
    /// written. Returns the offset reached.
    pub async fn copy_logs(
        &self,
        run_id: &str,
        stream: &str,
        mut offset: u64,
        follow: bool,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let mut failures = 0u32;
        loop {
            let path = format!(
                "{}?stream={stream}&offset={offset}&follow={follow}",
                run_path(run_id, "/logs")
            );
            let res = match self.send(self.request(Method::GET, &path)).await {
                Ok(res) => res,
                Err(err @ ClientError::Unreachable { .. }) if failures < 20 => {
                    // The daemon may be restarting; runs outlive it.
                    failures += 1;
                    tracing::debug!(%err, "log stream: reconnecting");
                    tokio::time::sleep(Duration::from_millis(250)).await;
                    continue;
                }
                Err(err) => return Err(err),
            };
            let mut body = res.bytes_stream();
            let mut broken = false;
            while let Some(chunk) = body.next().await {
                let Ok(chunk) = chunk else {
                    broken = true;
                    break;
                };
                if let Err(err) = write_flush(out, &chunk).await {
                    if err.kind() == std::io::ErrorKind::BrokenPipe {
                        // The reader went away (`| head`): nothing more to copy.
                        return Ok(offset);
                    }
                    return Err(ClientError::Io {
                        action: "writing the output of run",
                        path: run_id.to_owned(),
                        source: err,
                    });
                }
                offset += chunk.len() as u64;
                failures = 0;
            }
            if !broken {
                return Ok(offset);
            }
            failures += 1;
            if failures > 20 {
                return Err(ClientError::Protocol {
                    url: self.url.clone(),
                    detail: format!("the {stream} stream of run {run_id} keeps breaking"),
                });
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Waits until the run has ended and returns its final status. Waits
    /// on a followed log stream (which ends with the run), not by polling.
    pub async fn wait_ended(&self, run_id: &str) -> Result<RunInfo, ClientError> {
        loop {
            let run = self.run(run_id).await?;
            if run.is_terminal() {
                return Ok(run);
            }
            let mut sink = tokio::io::sink();
            self.copy_logs(run_id, "stdout", run.stdout_bytes, true, &mut sink)
                .await?;
        }
    }

    pub(crate) fn transport_error(&self, err: reqwest::Error) -> ClientError {
        if err.is_connect() || (err.is_timeout() && err.status().is_none()) {
            return ClientError::Unreachable {
                url: self.url.clone(),
                reason: connect_reason(&err),
            };
        }
        ClientError::Protocol {
            url: self.url.clone(),
            detail: error_chain(&err),
        }
    }

    async fn api_error(&self, res: Response) -> ClientError {
        #[derive(Deserialize)]
        struct Body {
            error: Detail,
        }
        #[derive(Deserialize)]
        struct Detail {
            code: String,
            message: String,
        }
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        let Ok(Body { error }) = serde_json::from_str::<Body>(&text) else {
            let snippet: String = text.chars().take(200).collect();
            return ClientError::Protocol {
                url: self.url.clone(),
                detail: format!("HTTP {status}: {snippet:?}; is this URL a sandboxd?"),
            };
        };
        // The daemon's 401 sentence speaks HTTP (headers); say it in CLI words.
        let (message, hint) = match status {
            StatusCode::UNAUTHORIZED => (
                match self.key.is_some() {
                    true => "the daemon refused the session key".to_owned(),
                    false => "the daemon wants a session key and none was given".to_owned(),
                },
                Some("set SESSION_API_KEY or --session-key-file to the daemon's session key"),
            ),
            _ => (error.message, None),
        };
        ClientError::Api {
            status,
            code: error.code,
            message,
            hint,
        }
    }
}

async fn write_flush(out: &mut (impl AsyncWrite + Unpin), bytes: &[u8]) -> std::io::Result<()> {
    out.write_all(bytes).await?;
    out.flush().await
}

/// `/v1/runs/{id}{rest}` with the id percent-encoded.
pub fn run_path(run_id: &str, rest: &str) -> String {
    let mut url = reqwest::Url::parse("http://x/v1/runs/").expect("static URL");
    url.path_segments_mut()
        .expect("http URLs have segments")
        .pop_if_empty()
        .push(run_id);
    format!("{}{rest}", url.path())
}

fn read_key(args: &ClientArgs) -> Result<Option<SecretString>, ClientError> {
    if let Some(path) = &args.session_key_file {
        let text = std::fs::read_to_string(path).map_err(|source| ClientError::Io {
            action: "reading --session-key-file",
            path: path.display().to_string(),
            source,
        })?;
        let key = text.trim_end_matches(['\n', '\r']);
        if key.is_empty() {
            return Err(ClientError::Usage(format!(
                "--session-key-file {}: the file is empty",
                path.display()
            )));
        }
        return Ok(Some(SecretString::from(key.to_owned())));
    }
    for name in ["SESSION_API_KEY", "OH_SESSION_API_KEYS_0"] {
        match std::env::var(name) {
            Ok(key) if !key.is_empty() => return Ok(Some(SecretString::from(key))),
            _ => {}
        }
    }
    Ok(None)
}

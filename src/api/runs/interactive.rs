//! Input to a run and live output from it: `POST /v1/runs/{id}/stdin`
//! streams a request body into the run's stdin; `GET /v1/runs/{id}/attach`
//! is a WebSocket carrying input and output both ways.
//!
//! Attach: binary frames from the client are input, binary frames to it
//! are the run's output (masked, read from its stored logs, so a slow
//! client never holds back the run, and a client attaching later or after
//! a restart of the daemon gets the same bytes). Text frames carry JSON
//! control messages: from the client `resize` and `eof`; to the client
//! `attached` (first), `read_only`, `skipped`, `error` and `exit` (last).
//! One client at a time writes; a second one is attached read-only.

use axum::body::Body;
use axum::extract::ws::rejection::WebSocketUpgradeRejection;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use futures::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use utoipa::{IntoParams, ToSchema};

use super::super::extract::{ApiPath, ApiQuery};
use super::AppState;
use crate::error::ApiError;
use crate::runs::input::{InputWriter, WriterTurn};
use crate::runs::logs::{LogReader, LogStream};
use crate::runs::RunError;

/// An attached reader this far behind the run's output skips ahead.
const MAX_LAG: u64 = 1 << 20;
/// What a lagging reader still gets of the output before the end it
/// skips to.
const KEPT_ON_SKIP: u64 = 64 * 1024;
/// Messages queued for one attached client.
const CLIENT_QUEUE: usize = 16;

/// Query of `POST /v1/runs/{run_id}/stdin`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct StdinQuery {
    /// Close the run's stdin at the end of the body (a terminal gets its
    /// end-of-file character, Ctrl-D).
    pub close: Option<bool>,
}

/// Query of `GET /v1/runs/{run_id}/attach`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AttachQuery {
    /// Byte offset in the output to start at (default 0: all of it; a
    /// reader more than 1 MiB behind skips ahead).
    pub offset: Option<u64>,
    /// Ask to write (default true); false attaches read-only.
    pub write: Option<bool>,
}

/// A control message on the attach WebSocket (a JSON text frame).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AttachControl {
    /// Client → sandboxd: the terminal's new size.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// Client → sandboxd: the end of input.
    Eof,
    /// sandboxd → client, first: whether this client writes.
    Attached {
        /// This client's input reaches the run.
        writer: bool,
        /// The run's stdin: `null`, `pipe` or `pty`.
        stdin: String,
    },
    /// sandboxd → client: input from this client is dropped (another
    /// client writes, or the run takes no input).
    ReadOnly {
        /// Why.
        reason: String,
    },
    /// sandboxd → client: this many bytes of output were skipped (the
    /// client read too slowly).
    Skipped {
        /// Bytes skipped.
        bytes: u64,
    },
    /// sandboxd → client: a message could not be applied.
    Error {
        /// What went wrong.
        message: String,
    },
    /// sandboxd → client, last: how the run ended (all output was sent).
    Exit {
        /// The final state.
        state: String,
        /// Exit code.
        exit_code: Option<i32>,
        /// Signal that killed it.
        signal: Option<String>,
        /// What went wrong.
        error: Option<String>,
    },
}

/// Write to a run's stdin.
#[utoipa::path(post, path = "/v1/runs/{run_id}/stdin", params(("run_id" = String, Path), StdinQuery),
    request_body(content = Vec<u8>, content_type = "application/octet-stream", description = "bytes for the run's stdin, streamed"),
    responses((status = 204, description = "the body was written"), (status = 404, body = crate::error::ErrorBody),
              (status = 409, body = crate::error::ErrorBody)))]
pub async fn post_stdin(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<StdinQuery>,
    body: Body,
) -> Result<StatusCode, ApiError> {
    let mut input = state.runs.open_input(&run_id).await?;
    let closed = |_| ApiError::Run(RunError::Ended(run_id.clone()));
    let mut chunks = body.into_data_stream();
    while let Some(chunk) = chunks.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body: {e}")))?;
        input.write(&chunk).await.map_err(closed)?;
    }
    if query.close.unwrap_or(false) {
        input.eof().await.map_err(closed)?;
    }
    // Applied, not only sent: the next write, on a new connection, comes
    // after it.
    input.finish().await.map_err(closed)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Attach to a run (WebSocket).
#[utoipa::path(get, path = "/v1/runs/{run_id}/attach", params(("run_id" = String, Path), AttachQuery),
    responses((status = 101, description = "WebSocket: binary frames are input and output, text frames JSON control messages", body = AttachControl),
              (status = 400, body = crate::error::ErrorBody), (status = 404, body = crate::error::ErrorBody)))]
pub async fn attach(
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<String>,
    ApiQuery(query): ApiQuery<AttachQuery>,
    upgrade: Result<WebSocketUpgrade, WebSocketUpgradeRejection>,
) -> Result<Response, ApiError> {
    let upgrade = upgrade.map_err(|e| {
        ApiError::BadRequest(format!(
            "attach is a WebSocket; connect with a WebSocket client ({e})"
        ))
    })?;
    let run = state.runs.snapshot(&run_id)?.run;
    let stdin = run.stdin;
    // The writer's turn is taken before the upgrade: two clients asking
    // at once get one writer.
    let turn = (query.write.unwrap_or(true) && stdin.takes_input() && run.end().is_none())
        .then(|| state.writers.claim(&run_id))
        .flatten();
    let asked_to_write = query.write.unwrap_or(true);
    let session = Session {
        state: state.clone(),
        run_id,
        stream: match stdin {
            crate::runs::shim::StdinMode::Pty { .. } => LogStream::Stdout,
            _ => LogStream::Both,
        },
        offset: query.offset.unwrap_or(0),
        stdin: stdin.name(),
        read_only_reason: match () {
            _ if !stdin.takes_input() => Some("the run reads no input".to_owned()),
            _ if !asked_to_write => None,
            _ if turn.is_none() && run.end().is_some() => Some("the run has ended".to_owned()),
            _ if turn.is_none() => Some("another client is writing to this run".to_owned()),
            _ => None,
        },
        turn,
    };
    Ok(upgrade.on_upgrade(move |socket| session.run(socket)))
}

/// One attached client.
struct Session {
    state: AppState,
    run_id: String,
    stream: LogStream,
    offset: u64,
    stdin: &'static str,
    /// Set when the client asked to write and may not.
    read_only_reason: Option<String>,
    turn: Option<WriterTurn>,
}

impl Session {
    async fn run(self, socket: WebSocket) {
        let (mut sink, mut incoming) = socket.split();
        let (out, mut queue) = mpsc::channel::<Message>(CLIENT_QUEUE);
        let sender = tokio::spawn(async move {
            while let Some(message) = queue.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
            let _ = sink.close().await;
        });
        let mut input = match &self.turn {
            Some(_) => self.state.runs.open_input(&self.run_id).await.ok(),
            None => None,
        };
        let attached = AttachControl::Attached {
            writer: input.is_some(),
            stdin: self.stdin.to_owned(),
        };
        let _ = out.send(control(&attached)).await;
        if let Some(reason) = &self.read_only_reason {
            let _ = out
                .send(control(&AttachControl::ReadOnly {
                    reason: reason.clone(),
                }))
                .await;
        }
        let pump = tokio::spawn(pump_output(
            self.state.clone(),
            self.run_id.clone(),
            self.stream,
            self.offset,
            out.clone(),
        ));
        tokio::pin!(pump);
        loop {
            tokio::select! {
                _ = &mut pump => break,
                message = incoming.next() => match message {
                    Some(Ok(message)) => {
                        if let Some(reply) = apply_input(&mut input, message).await {
                            let _ = out.try_send(control(&reply));
                        }
                    }
                    // The client left: stop sending it output.
                    _ => {
                        pump.abort();
                        break;
                    }
                },
            }
        }
        drop(out);
        drop(input);
        drop(self.turn);
        let _ = sender.await;
    }
}

/// Applies one message from the client; a control message to answer with.
async fn apply_input(input: &mut Option<InputWriter>, message: Message) -> Option<AttachControl> {
    let written = match (message, input.as_mut()) {
        (Message::Binary(bytes), Some(input)) => input.write(&bytes).await,
        (Message::Text(text), input) => match serde_json::from_str::<AttachControl>(&text) {
            Ok(AttachControl::Resize { cols, rows }) if cols > 0 && rows > 0 => match input {
                Some(input) => input.resize(cols, rows).await,
                None => return None,
            },
            Ok(AttachControl::Eof) => match input {
                Some(input) => input.eof().await,
                None => return None,
            },
            _ => {
                return Some(AttachControl::Error {
                    message: format!(
                        "unknown control message {text:?}; send {{\"type\": \"resize\", \"cols\": N, \"rows\": N}} or {{\"type\": \"eof\"}}"
                    ),
                })
            }
        },
        // Input from a read-only client is dropped (it was told).
        _ => return None,
    };
    if written.is_err() {
        // The command has ended; its exit message follows.
        *input = None;
    }
    None
}

/// Sends the run's output to the client from `offset` until the run has
/// ended, then its `exit` message. A client more than [`MAX_LAG`] behind
/// skips ahead with a `skipped` message.
async fn pump_output(
    state: AppState,
    run_id: String,
    stream: LogStream,
    mut offset: u64,
    out: mpsc::Sender<Message>,
) {
    let Ok(progress) = state.runs.progress(&run_id) else {
        return;
    };
    let dir = state.state_dir.run(&run_id).path().to_path_buf();
    let mut reader = LogReader::new(dir.clone(), stream, offset, true, progress.clone());
    loop {
        let now = *progress.borrow();
        let end = match stream {
            LogStream::Stdout => now.stdout_bytes,
            _ => now.stdout_bytes + now.stderr_bytes,
        };
        if end.saturating_sub(offset) > MAX_LAG {
            let to = end - KEPT_ON_SKIP;
            let skipped = AttachControl::Skipped { bytes: to - offset };
            if out.send(control(&skipped)).await.is_err() {
                return;
            }
            offset = to;
            reader = LogReader::new(dir.clone(), stream, offset, true, progress.clone());
        }
        match reader.next_chunk().await {
            Some(Ok(chunk)) => {
                offset += chunk.len() as u64;
                if out.send(Message::Binary(chunk)).await.is_err() {
                    return;
                }
            }
            Some(Err(_)) | None => break,
        }
    }
    let Ok(snapshot) = state.runs.snapshot(&run_id) else {
        return;
    };
    let view = super::view(&state, snapshot);
    let exit = AttachControl::Exit {
        state: serde_json::to_value(view.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        exit_code: view.exit_code,
        signal: view.signal,
        error: view.error,
    };
    let _ = out.send(control(&exit)).await;
}

fn control(message: &AttachControl) -> Message {
    Message::Text(serde_json::to_string(message).unwrap_or_default().into())
}

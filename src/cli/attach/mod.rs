//! `sandboxd attach RUN`, and the interactive session `exec -i`/`-t` share
//! with it: a WebSocket to `GET /v1/runs/{id}/attach`; our stdin goes to
//! the run (read on a thread of its own: a blocking read of a terminal
//! cannot be cancelled, and must not hold back the end), the run's output
//! comes to our stdout; with a terminal, ours is in raw mode for the
//! session and the run's follows our size (at the start and on SIGWINCH).

use std::process::ExitCode;

use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

use super::client::{run_path, Client, ClientArgs, ClientError};

mod terminal;

/// Our terminal's size (columns, rows), when we have one.
pub(crate) fn terminal_size() -> Option<(u16, u16)> {
    terminal::size()
}

/// `sandboxd attach`.
#[derive(Debug, clap::Args)]
pub struct AttachArgs {
    /// How to reach the daemon.
    #[command(flatten)]
    pub client: ClientArgs,

    /// Only watch: send none of our input.
    #[arg(long)]
    pub read_only: bool,

    /// The run.
    #[arg(value_name = "RUN")]
    pub run_id: String,
}

/// Runs `sandboxd attach`: the run's output from its start, our input to
/// it (a terminal run puts our terminal in raw mode); exits with the run's
/// exit code once it ends.
pub async fn main(args: AttachArgs) -> Result<ExitCode, ClientError> {
    let client = Client::new(&args.client)?;
    let run: serde_json::Value = client.get(&run_path(&args.run_id, "")).await?;
    let stdin = run["stdin"].as_str().unwrap_or("null");
    let options = Session {
        input: !args.read_only && stdin != "null",
        terminal: stdin == "pty",
    };
    options.run(&client, &args.run_id).await?;
    let run = client.wait_ended(&args.run_id).await?;
    Ok(ExitCode::from(super::exec::exit_code(&run)))
}

/// What an interactive session does.
pub struct Session {
    /// Send our stdin to the run.
    pub input: bool,
    /// The run has a terminal: raw mode here, our size there.
    pub terminal: bool,
}

impl Session {
    /// Attaches to the run until it has ended and all its output is
    /// written to our stdout.
    pub async fn run(&self, client: &Client, run_id: &str) -> Result<(), ClientError> {
        let query = if self.input { "" } else { "?write=false" };
        let socket = client
            .websocket(&run_path(run_id, &format!("/attach{query}")))
            .await?;
        let (mut sink, mut incoming) = socket.split();
        let _raw = match self.terminal && self.input {
            true => terminal::RawMode::enter(),
            false => None,
        };
        let (to_run, mut outgoing) = mpsc::channel::<Message>(64);
        if self.terminal {
            if let Some(size) = terminal::size() {
                let _ = to_run.send(resize(size)).await;
            }
            tokio::spawn(follow_window_size(to_run.clone()));
        }
        if self.input {
            spawn_stdin_reader(to_run.clone());
        }
        drop(to_run);
        let sender = tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                if sink.send(message).await.is_err() {
                    return;
                }
            }
        });
        let result = copy_output(&mut incoming).await;
        sender.abort();
        result
    }
}

/// Writes the run's output to our stdout until the socket ends.
async fn copy_output<S>(incoming: &mut S) -> Result<(), ClientError>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    use tokio::io::AsyncWriteExt;
    let mut stdout = tokio::io::stdout();
    let io = |source| ClientError::Io {
        action: "writing the run's output to",
        path: "stdout".to_owned(),
        source,
    };
    while let Some(message) = incoming.next().await {
        match message {
            Ok(Message::Binary(bytes)) => {
                stdout.write_all(&bytes).await.map_err(io)?;
                stdout.flush().await.map_err(io)?;
            }
            Ok(Message::Text(text)) => note_control(&text),
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Tells the user what the daemon said about the session, when it matters.
fn note_control(text: &str) {
    let Ok(control) = serde_json::from_str::<serde_json::Value>(text) else {
        return;
    };
    match control["type"].as_str() {
        Some("read_only") => eprint!(
            "sandboxd: attached read-only: {}\r\n",
            control["reason"].as_str().unwrap_or("")
        ),
        Some("skipped") => eprint!(
            "sandboxd: {} bytes of output skipped (too slow to keep up)\r\n",
            control["bytes"]
        ),
        _ => {}
    }
}

/// Reads our stdin on a thread (its blocking read cannot be cancelled)
/// and sends it to the run; at its end, the end of input.
fn spawn_stdin_reader(to_run: mpsc::Sender<Message>) {
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match stdin.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            let message = Message::Binary(buf[..n].to_vec().into());
            if to_run.blocking_send(message).is_err() {
                return;
            }
        }
        let eof = serde_json::json!({"type": "eof"}).to_string();
        let _ = to_run.blocking_send(Message::Text(eof.into()));
    });
}

/// Sends our terminal's size to the run on every SIGWINCH.
async fn follow_window_size(to_run: mpsc::Sender<Message>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut winch) = signal(SignalKind::window_change()) else {
        return;
    };
    while winch.recv().await.is_some() {
        let Some(size) = terminal::size() else {
            continue;
        };
        if to_run.send(resize(size)).await.is_err() {
            return;
        }
    }
}

fn resize((cols, rows): (u16, u16)) -> Message {
    let text = serde_json::json!({"type": "resize", "cols": cols, "rows": rows}).to_string();
    Message::Text(text.into())
}

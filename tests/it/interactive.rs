//! Interactive runs (`stdin` `pipe` and `pty`): input through
//! `POST /v1/runs/{id}/stdin` and the attach WebSocket, the terminal's
//! name, size and Ctrl-C, masking of what a program echoes, attaching
//! again after a kill -9 and restart of the daemon, two attachers, a slow
//! attacher, and the run-token rule.

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::support::{self, Options, TestDaemon, KEY, TIMEOUT};

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// An attached client: its socket, the output and control messages seen.
struct Attached {
    socket: Socket,
    output: Vec<u8>,
    controls: Vec<Value>,
}

/// Opens `GET /v1/runs/{run_id}/attach{query}` with `credential`; the
/// handshake's HTTP status when it is refused.
async fn try_attach(
    daemon: &TestDaemon,
    run_id: &str,
    query: &str,
    credential: &str,
) -> Result<Attached, u16> {
    let url = format!(
        "{}/v1/runs/{run_id}/attach{query}",
        daemon.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    let value = format!("Bearer {credential}").parse().unwrap();
    request.headers_mut().insert("authorization", value);
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(Attached {
            socket,
            output: Vec::new(),
            controls: Vec::new(),
        }),
        Err(tokio_tungstenite::tungstenite::Error::Http(res)) => Err(res.status().as_u16()),
        Err(err) => panic!("attach failed: {err}"),
    }
}

async fn attach(daemon: &TestDaemon, run_id: &str) -> Attached {
    try_attach(daemon, run_id, "", KEY).await.unwrap()
}

impl Attached {
    /// Reads until the output holds `needle` after `from`; false at the end.
    async fn read_until(&mut self, from: usize, needle: &str) -> bool {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        loop {
            if String::from_utf8_lossy(&self.output[from.min(self.output.len())..]).contains(needle)
            {
                return true;
            }
            let Ok(next) = tokio::time::timeout_at(deadline, self.socket.next()).await else {
                panic!(
                    "no {needle:?} in time; output: {:?}, controls: {:?}",
                    String::from_utf8_lossy(&self.output),
                    self.controls
                );
            };
            if !self.take(next) {
                return false;
            }
        }
    }

    /// Notes one message; false when the socket ended.
    fn take(
        &mut self,
        next: Option<Result<Message, tokio_tungstenite::tungstenite::Error>>,
    ) -> bool {
        match next {
            Some(Ok(Message::Binary(bytes))) => self.output.extend_from_slice(&bytes),
            Some(Ok(Message::Text(text))) => {
                self.controls.push(serde_json::from_str(&text).unwrap())
            }
            Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return false,
            Some(Ok(_)) => {}
        }
        true
    }

    /// Reads to the end of the socket; the `exit` message.
    async fn read_to_exit(&mut self) -> Value {
        while let Ok(next) = tokio::time::timeout(TIMEOUT, self.socket.next()).await {
            if !self.take(next) {
                break;
            }
        }
        let exit = self.controls.iter().find(|c| c["type"] == "exit");
        exit.cloned()
            .unwrap_or_else(|| panic!("no exit message: {:?}", self.controls))
    }

    async fn type_in(&mut self, text: &str) {
        let bytes = text.as_bytes().to_vec();
        self.socket
            .send(Message::Binary(bytes.into()))
            .await
            .unwrap();
    }

    async fn control(&mut self, message: Value) {
        let text = message.to_string();
        self.socket.send(Message::Text(text.into())).await.unwrap();
    }
}

async fn write_stdin(daemon: &TestDaemon, run_id: &str, query: &str, body: &str) -> StatusCode {
    let path = format!("/v1/runs/{run_id}/stdin{query}");
    let request = daemon.request(Method::POST, &path).body(body.to_owned());
    request.send().await.unwrap().status()
}

/// Writes answered one after the other reach the command in that order:
/// a `204` means the shim has written the bytes into the command's stdin,
/// so the next write, on a new connection, cannot overtake them.
#[tokio::test]
async fn sequential_writes_reach_stdin_in_order() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "order", "command": ["cat"], "stdin": "pipe"}))
        .await;
    let mut want = String::new();
    for n in 0..60 {
        let line = format!("line {n}\n");
        assert_eq!(
            write_stdin(&daemon, "order", "", &line).await,
            StatusCode::NO_CONTENT
        );
        want.push_str(&line);
    }
    assert_eq!(
        write_stdin(&daemon, "order", "?close=true", "").await,
        StatusCode::NO_CONTENT
    );
    let run = daemon.wait_ended("order").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    let (_, logs) = daemon.text("/v1/runs/order/logs").await;
    assert_eq!(logs, want);
}

/// A `bc` driven line by line: through the stdin endpoint and through
/// attach, each answer read before the next line; closing stdin ends it.
#[tokio::test]
async fn a_pipe_run_is_driven_line_by_line_and_ends_at_eof() {
    let daemon = TestDaemon::start().await;
    let run = daemon
        .start_run(json!({"run_id": "bc", "command": ["bc", "-q"], "stdin": "pipe"}))
        .await;
    assert_eq!(run["stdin"], "pipe");
    let mut client = attach(&daemon, "bc").await;
    assert_eq!(
        write_stdin(&daemon, "bc", "", "1+2\n").await,
        StatusCode::NO_CONTENT
    );
    assert!(client.read_until(0, "3\n").await);
    let mark = client.output.len();
    client.type_in("6*7\n").await;
    assert!(client.read_until(mark, "42\n").await);
    let status = write_stdin(&daemon, "bc", "?close=true", "2^10\n").await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let exit = client.read_to_exit().await;
    assert_eq!(
        (exit["state"].as_str(), exit["exit_code"].as_i64()),
        (Some("succeeded"), Some(0))
    );
    assert_eq!(String::from_utf8_lossy(&client.output), "3\n42\n1024\n");
    let (_, logs) = daemon.text("/v1/runs/bc/logs").await;
    assert_eq!(logs, "3\n42\n1024\n");
    // Input to an ended run, or to a run without stdin, is refused.
    let (status, body) = send_stdin(&daemon, "bc").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_ended"))
    );
    daemon
        .exec(json!({"run_id": "plain", "command": "true"}))
        .await;
    let (status, body) = send_stdin(&daemon, "plain").await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (StatusCode::CONFLICT, Some("run_without_stdin"))
    );
}

async fn send_stdin(daemon: &TestDaemon, run_id: &str) -> (StatusCode, Value) {
    let path = format!("/v1/runs/{run_id}/stdin");
    support::send(daemon.request(Method::POST, &path).body("x\n")).await
}

/// An interactive shell on a terminal: `tty` names a pts device, `stty
/// size` tells the size asked for and then the new one, and Ctrl-C typed
/// into the terminal interrupts a `sleep` (its group is the foreground).
#[tokio::test]
async fn a_pty_run_has_a_terminal_its_size_and_ctrl_c() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({
            "run_id": "sh", "command": ["bash", "--norc", "--noprofile", "-i"],
            "stdin": "pty", "cols": 100, "rows": 30, "term": "xterm-256color",
        }))
        .await;
    let mut client = attach(&daemon, "sh").await;
    client.type_in("tty; echo TERM=$TERM\n").await;
    assert!(client.read_until(0, "TERM=xterm-256color").await);
    let text = String::from_utf8_lossy(&client.output).into_owned();
    assert!(text.contains("/dev/pts/"), "{text}");
    let mark = client.output.len();
    client.type_in("stty size\n").await;
    assert!(client.read_until(mark, "30 100").await);
    client
        .control(json!({"type": "resize", "cols": 120, "rows": 40}))
        .await;
    let mark = client.output.len();
    client.type_in("stty size\n").await;
    assert!(client.read_until(mark, "40 120").await);
    let mark = client.output.len();
    client.type_in("sleep 30; echo slept-$?\n").await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    client.type_in("\u{3}").await;
    let started = std::time::Instant::now();
    client.type_in("echo status-$?\n").await;
    assert!(client.read_until(mark, "status-130").await);
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(!String::from_utf8_lossy(&client.output).contains("slept-0"));
    client.type_in("exit 3\n").await;
    let exit = client.read_to_exit().await;
    assert_eq!(exit["exit_code"], 3, "{exit}");
    // The terminal's output is the run's stdout.
    let (_, logs) = daemon.text("/v1/runs/sh/logs").await;
    assert!(logs.contains("40 120"), "{logs}");
}

/// A secret typed into a terminal and echoed back is masked, on the wire
/// and in the logs.
#[tokio::test]
async fn a_secret_echoed_by_the_program_is_masked() {
    let daemon = TestDaemon::start().await;
    let secret = "typed-secret-value-42";
    daemon
        .start_run(json!({
            "run_id": "echo", "command": ["cat"], "stdin": "pty",
            "secrets": {"TOKEN": {"kind": "StaticSecret", "value": secret}},
        }))
        .await;
    let mut client = attach(&daemon, "echo").await;
    client.type_in(&format!("{secret}\n")).await;
    assert!(client.read_until(0, "****\r\n****\r\n").await);
    client.control(json!({"type": "eof"})).await;
    client.read_to_exit().await;
    let (_, logs) = daemon.text("/v1/runs/echo/logs").await;
    let seen = String::from_utf8_lossy(&client.output).into_owned() + &logs;
    assert!(!seen.contains(secret), "{seen}");
}

/// A run's input belongs to its shim: after a kill -9 and restart of the
/// daemon a client attaches again and drives the same process.
#[tokio::test]
async fn attach_again_after_kill_9_and_restart() {
    let mut daemon = TestDaemon::start_binary().await;
    daemon
        .start_run(json!({"run_id": "cat", "command": ["cat"], "stdin": "pipe"}))
        .await;
    let mut client = attach(&daemon, "cat").await;
    client.type_in("before\n").await;
    assert!(client.read_until(0, "before\n").await);
    let dir = daemon.dir.clone();
    daemon.kill9();
    let daemon = TestDaemon::start_with(Options {
        binary: true,
        dir: Some(dir),
        ..Options::default()
    })
    .await;
    let mut client = attach(&daemon, "cat").await;
    assert!(client.read_until(0, "before\n").await, "the output so far");
    client.type_in("after\n").await;
    assert!(client.read_until(0, "after\n").await);
    client.control(json!({"type": "eof"})).await;
    let exit = client.read_to_exit().await;
    assert_eq!(exit["state"], "succeeded", "{exit}");
    assert_eq!(String::from_utf8_lossy(&client.output), "before\nafter\n");
}

/// Two clients attached: both read the output; the second, attached while
/// the first writes, is told it is read-only and its input is dropped.
#[tokio::test]
async fn two_attachers_read_and_one_writes() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "two", "command": ["cat"], "stdin": "pipe"}))
        .await;
    let mut first = attach(&daemon, "two").await;
    let mut second = attach(&daemon, "two").await;
    second.type_in("ignored\n").await;
    first.type_in("from-first\n").await;
    assert!(first.read_until(0, "from-first\n").await);
    assert!(second.read_until(0, "from-first\n").await);
    let writer = |c: &Attached| c.controls.iter().find(|m| m["type"] == "attached").cloned();
    assert_eq!(writer(&first).unwrap()["writer"], true);
    assert_eq!(writer(&second).unwrap()["writer"], false);
    assert!(
        second.controls.iter().any(|m| m["type"] == "read_only"),
        "{:?}",
        second.controls
    );
    // When the writer leaves, the next client writes.
    first.socket.close(None).await.unwrap();
    drop(first);
    let mut third = support_wait_writer(&daemon, "two").await;
    third.type_in("from-third\n").await;
    third.control(json!({"type": "eof"})).await;
    third.read_to_exit().await;
    second.read_to_exit().await;
    assert_eq!(
        String::from_utf8_lossy(&second.output),
        "from-first\nfrom-third\n"
    );
}

/// Attaches until the client is the writer (the previous writer's turn
/// ends when the daemon sees its socket close).
async fn support_wait_writer(daemon: &TestDaemon, run_id: &str) -> Attached {
    let deadline = std::time::Instant::now() + TIMEOUT;
    loop {
        let mut client = attach(daemon, run_id).await;
        while client.controls.is_empty() {
            let next = client.socket.next().await;
            assert!(client.take(next));
        }
        if client.controls[0]["writer"] == true {
            return client;
        }
        assert!(std::time::Instant::now() < deadline, "never the writer");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A client that does not read never holds back the run: the run prints
/// 48 MB and ends while the client reads nothing; reading then, the
/// client is told what it skipped and gets the end of the output.
#[tokio::test]
async fn a_slow_attacher_never_blocks_the_program() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({
            "run_id": "loud", "stdin": "pipe",
            "command": "read go; head -c 48000000 /dev/zero | tr '\\0' x; echo; echo the-end",
        }))
        .await;
    let mut slow = attach(&daemon, "loud").await;
    assert_eq!(
        write_stdin(&daemon, "loud", "", "go\n").await,
        StatusCode::NO_CONTENT
    );
    let run = daemon.wait_ended("loud").await;
    assert_eq!(run["state"], "succeeded", "{run}");
    slow.read_to_exit().await;
    let skipped: u64 = slow
        .controls
        .iter()
        .filter(|c| c["type"] == "skipped")
        .map(|c| c["bytes"].as_u64().unwrap())
        .sum();
    assert!(skipped > 0, "{:?}", slow.controls);
    assert_eq!(
        slow.output.len() as u64 + skipped,
        48_000_000 + "\nthe-end\n".len() as u64
    );
    assert!(slow.output.ends_with(b"x\nthe-end\n"));
}

/// A run's token attaches to its own run and to no other.
#[tokio::test]
async fn a_run_token_cannot_attach_to_another_run() {
    let daemon = TestDaemon::start().await;
    daemon
        .start_run(json!({"run_id": "victim", "command": ["cat"], "stdin": "pipe"}))
        .await;
    daemon
        .start_run(json!({
            "run_id": "other", "stdin": "pipe",
            "command": "echo $SANDBOXD_RUN_TOKEN; cat >/dev/null",
        }))
        .await;
    let run = daemon
        .wait_run("other", "to print", |r| {
            r["stdout_bytes"].as_u64() > Some(10)
        })
        .await;
    assert_eq!(run["state"], "running");
    let (_, token) = daemon.text("/v1/runs/other/logs").await;
    let token = token.trim();
    assert_eq!(
        try_attach(&daemon, "victim", "", token).await.err(),
        Some(403)
    );
    let url = format!("{}/v1/runs/victim/stdin", daemon.url);
    let request = reqwest::Client::new()
        .post(url)
        .bearer_auth(token)
        .body("x");
    assert_eq!(
        request.send().await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let mut own = try_attach(&daemon, "other", "", token)
        .await
        .expect("its own run");
    own.control(json!({"type": "eof"})).await;
    own.read_to_exit().await;
    daemon
        .post("/v1/runs/victim/cancel", json!({"grace_s": 0}))
        .await;
}

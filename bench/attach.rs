//! `cargo bench --bench attach`: keystroke to echo over the attach
//! WebSocket. A run of `cat` on a terminal (`"stdin": "pty"`); each sample
//! sends one byte as a binary frame and waits for the terminal's echo of
//! it to come back as output: through the daemon, the shim's input socket,
//! the terminal, the shim's capture and the daemon again. What a person
//! typing into `sandboxd exec -it` or `sandboxd attach` feels.
//!
//! Prints a Markdown table; `BENCH_OUT=path` also writes it to a file.

// This program reports to stdout.
#![allow(clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Instant;

use futures::{SinkExt, StreamExt};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

const KEY: &str = "bench-key-0123456789";
const SAMPLES: usize = 500;
const WARMUP: usize = 20;

/// The daemon, stopped when dropped.
struct Daemon {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill with plain integers.
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let _ = self.child.wait();
    }
}

fn start() -> Daemon {
    let scratch = if std::path::Path::new("/dev/shm").is_dir() {
        "/dev/shm"
    } else {
        "/tmp"
    };
    let dir = tempfile::Builder::new()
        .prefix("sandboxd-bench")
        .tempdir_in(scratch)
        .unwrap();
    let bin =
        std::env::var("SANDBOXD_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_sandboxd").to_owned());
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--log-format", "json"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .arg("--work-root")
        .arg(dir.path().join("work"))
        .env("SESSION_API_KEY", KEY)
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("daemon log").unwrap();
        let event: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if event["message"] == "listening" {
            break event["addr"].as_str().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Daemon {
        child,
        url,
        _dir: dir,
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let daemon = start();
    let created = reqwest::Client::new()
        .post(format!("{}/v1/runs", daemon.url))
        .header("X-Session-API-Key", KEY)
        .json(&serde_json::json!({"run_id": "keys", "command": ["cat"], "stdin": "pty"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let url = format!(
        "{}/v1/runs/keys/attach",
        daemon.url.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    let auth = format!("Bearer {KEY}").parse().unwrap();
    request.headers_mut().insert("authorization", auth);
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.unwrap();

    let mut samples = Vec::with_capacity(SAMPLES);
    for round in 0..WARMUP + SAMPLES {
        // Letters only: the terminal echoes each as itself.
        let key = b'a' + (round % 26) as u8;
        let started = Instant::now();
        socket
            .send(Message::Binary(vec![key].into()))
            .await
            .unwrap();
        loop {
            match socket.next().await {
                Some(Ok(Message::Binary(bytes))) if bytes.contains(&key) => break,
                Some(Ok(_)) => {}
                other => panic!("the attach ended: {other:?}"),
            }
        }
        if round >= WARMUP {
            samples.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        // A new line now and then keeps the terminal's line buffer short.
        if round % 64 == 63 {
            socket
                .send(Message::Binary(b"\n".to_vec().into()))
                .await
                .unwrap();
        }
    }
    let _ = socket.send(Message::Text(r#"{"type":"eof"}"#.into())).await;
    samples.sort_by(|a, b| a.total_cmp(b));
    let table = format!(
        "| figure | value |\n| --- | --- |\n| keystroke to echo over attach, a terminal running `cat` (median / p99 of {SAMPLES}) | {:.2} / {:.2} ms |\n",
        percentile(&samples, 0.5),
        percentile(&samples, 0.99)
    );
    println!("{table}");
    if let Ok(path) = std::env::var("BENCH_OUT") {
        std::fs::write(path, table).unwrap();
    }
}

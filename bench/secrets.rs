//! Benchmark of secrets on the real (release) binary:
//! 1. what resolving 50 LookupSecrets from a local server adds to a run's
//!    start: median wall time of exec-and-wait `true` with and without them
//!    (target: under 20 ms more);
//! 2. what masking 50 secrets costs capture throughput: a child writing
//!    1 GiB of log-like text to stdout, with and without 50 secrets
//!    (target: under 10% slower);
//! 3. the masker alone, in process, on the same text (no pipes, no disk).
//!
//! Run: `cargo bench --bench secrets` (or `bench/secrets.sh`). Set
//! `SECRETS_BENCH_BYTES` to capture less than 1 GiB.

#![allow(unreachable_pub, clippy::print_stdout)]

#[path = "../tests/it/support.rs"]
mod support;

use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{json, Map, Value};
use support::TestDaemon;

/// Secrets per run.
const SECRETS: usize = 50;

/// Runs per variant for the start-time measure (after warm-up).
const START_RUNS: usize = 40;

/// Runs per variant for the throughput measure.
const CAPTURE_RUNS: usize = 5;

/// A log line like real output: words, ids, numbers.
const LINE: &str = "INFO 2026-01-01T12:00:00Z worker-7 processed request id=5f3a9c0e1b2d4f68 status=200 bytes=51234 user=alice path=/api/v1/items";

#[tokio::main]
async fn main() {
    let values: Vec<String> = (0..SECRETS).map(|_| token(40)).collect();
    let server = serve_values(values.clone()).await;
    let daemon = TestDaemon::start().await;

    println!("== run start: exec-and-wait `true`, median of {START_RUNS} (after 5 warm-up runs)");
    let lookups: Map<String, Value> = (0..SECRETS)
        .map(|i| {
            let source =
                json!({"kind": "LookupSecret", "url": format!("{server}/s/{i}"), "headers": {}});
            (format!("SECRET_{i}"), source)
        })
        .collect();
    let plain = json!({"command": ["true"], "setup": false});
    let mut with_secrets = plain.clone();
    with_secrets["secrets"] = Value::Object(lookups.clone());
    for _ in 0..5 {
        exec_time(&daemon, &plain).await;
        exec_time(&daemon, &with_secrets).await;
    }
    let (mut without, mut with) = (Vec::new(), Vec::new());
    for _ in 0..START_RUNS {
        without.push(exec_time(&daemon, &plain).await);
        with.push(exec_time(&daemon, &with_secrets).await);
    }
    let mut resolve_only = Vec::new();
    for _ in 0..START_RUNS {
        let started = Instant::now();
        let (status, _) = daemon
            .post("/v1/secrets/resolve", json!({"secrets": lookups}))
            .await;
        assert!(status.is_success());
        resolve_only.push(started.elapsed());
    }
    let added = median(&with).saturating_sub(median(&without));
    println!(
        "without secrets:      median {:>8.2} ms  p90 {:>8.2} ms",
        ms(median(&without)),
        ms(p90(&without))
    );
    println!(
        "with {SECRETS} lookups:     median {:>8.2} ms  p90 {:>8.2} ms",
        ms(median(&with)),
        ms(p90(&with))
    );
    println!(
        "resolve {SECRETS} only:     median {:>8.2} ms  p90 {:>8.2} ms",
        ms(median(&resolve_only)),
        ms(p90(&resolve_only))
    );
    println!(
        "added to run start:   {:.2} ms (target < 20 ms): {}",
        ms(added),
        verdict(added < Duration::from_millis(20))
    );

    let bytes: u64 = std::env::var("SECRETS_BENCH_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1 << 30);
    println!(
        "\n== capture: a child writes {} MiB of log lines to stdout, median of {CAPTURE_RUNS}, alternating",
        bytes >> 20
    );
    let writer = format!("yes '{LINE}' | head -c {bytes}");
    let statics: Map<String, Value> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            (
                format!("SECRET_{i}"),
                json!({"kind": "StaticSecret", "value": v}),
            )
        })
        .collect();
    let capture = json!({"command": writer, "setup": false});
    let mut capture_masked = capture.clone();
    capture_masked["secrets"] = Value::Object(statics);
    let (mut plain_rates, mut masked_rates) = (Vec::new(), Vec::new());
    for _ in 0..CAPTURE_RUNS {
        plain_rates.push(capture_rate(&daemon, &capture, bytes).await);
        masked_rates.push(capture_rate(&daemon, &capture_masked, bytes).await);
    }
    let (plain_rate, masked_rate) = (median_f(&mut plain_rates), median_f(&mut masked_rates));
    let (plain_best, masked_best) = (best_f(&plain_rates), best_f(&masked_rates));
    let cost = 1.0 - masked_rate / plain_rate;
    let best_cost = 1.0 - masked_best / plain_best;
    println!(
        "session key only:     median {plain_rate:>7.1} MiB/s  best {plain_best:>7.1}  (runs: {})",
        rates(&plain_rates)
    );
    println!(
        "+ {SECRETS} secrets:         median {masked_rate:>7.1} MiB/s  best {masked_best:>7.1}  (runs: {})",
        rates(&masked_rates)
    );
    println!(
        "masking cost:         median {:.1}%, best-of-{CAPTURE_RUNS} {:.1}% (target < 10%): {}",
        cost * 100.0,
        best_cost * 100.0,
        verdict(cost < 0.10)
    );

    println!("\n== the masker alone: 256 MiB of the same lines in 64 KiB chunks");
    masker_alone(&values);
}

/// Wall time of one exec-and-wait.
async fn exec_time(daemon: &TestDaemon, body: &Value) -> Duration {
    let started = Instant::now();
    let run = daemon.exec(body.clone()).await;
    let elapsed = started.elapsed();
    assert_eq!(run["state"], "succeeded", "{run}");
    delete(daemon, &run).await;
    elapsed
}

/// MiB/s of stored output for one capture run (command start to end).
async fn capture_rate(daemon: &TestDaemon, body: &Value, bytes: u64) -> f64 {
    let run = daemon.exec(body.clone()).await;
    assert_eq!(run["state"], "succeeded", "{}", run["error"]);
    assert_eq!(run["stdout_bytes"], bytes, "every byte was stored");
    let seconds = run["duration_s"].as_f64().unwrap();
    delete(daemon, &run).await;
    (bytes as f64 / (1 << 20) as f64) / seconds
}

async fn delete(daemon: &TestDaemon, run: &Value) {
    let path = format!("/v1/runs/{}", run["run_id"].as_str().unwrap());
    let (status, _) = daemon.delete(&path).await;
    assert!(status.is_success(), "DELETE {path}: {status}");
}

fn masker_alone(values: &[String]) {
    use sandboxd::secrets::mask::Masker;
    let mut text = Vec::with_capacity(64 * 1024 + LINE.len());
    while text.len() < 64 * 1024 {
        text.extend_from_slice(LINE.as_bytes());
        text.push(b'\n');
    }
    text.truncate(64 * 1024);
    let chunks = 4096; // 256 MiB
    let mut out = Vec::with_capacity(128 * 1024);
    let mut copy = Duration::MAX;
    for _ in 0..5 {
        let started = Instant::now();
        for _ in 0..chunks {
            out.clear();
            out.extend_from_slice(std::hint::black_box(&text));
        }
        copy = copy.min(started.elapsed());
    }
    let mib = (chunks * text.len()) as f64 / (1 << 20) as f64;
    println!(
        "plain copy:           {:>8.0} MiB/s",
        mib / copy.as_secs_f64()
    );
    for (label, masker) in [
        ("1 value (the key)", Masker::new([support::KEY])),
        (
            "51 values",
            Masker::new(values.iter().map(String::as_str).chain([support::KEY])),
        ),
    ] {
        let mut best = Duration::MAX;
        for _ in 0..5 {
            let mut stream = masker.stream();
            let started = Instant::now();
            for _ in 0..chunks {
                out.clear();
                stream.push(std::hint::black_box(&text), &mut out);
            }
            stream.finish(&mut out);
            best = best.min(started.elapsed());
        }
        println!(
            "masker, {label:<18} {:>8.0} MiB/s (best of 5)",
            mib / best.as_secs_f64()
        );
    }
}

/// A local server answering `/s/{i}` with value `i`.
async fn serve_values(values: Vec<String>) -> String {
    use axum::extract::{Path, State};
    let app = axum::Router::new()
        .route(
            "/s/{i}",
            axum::routing::get(|State(values): State<std::sync::Arc<Vec<String>>>, Path(i): Path<usize>| async move {
                values[i].clone()
            }),
        )
        .with_state(std::sync::Arc::new(values));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

/// A random alphanumeric token, like a real credential.
fn token(len: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

fn median(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[sorted.len() / 2]
}

fn p90(samples: &[Duration]) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]
}

fn median_f(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

fn best_f(samples: &[f64]) -> f64 {
    samples.iter().copied().fold(0.0, f64::max)
}

fn rates(samples: &[f64]) -> String {
    samples
        .iter()
        .map(|r| format!("{r:.0}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "ok"
    } else {
        "MISSED"
    }
}

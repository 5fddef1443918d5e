//! [`CallbackSink`]: a real local HTTP server standing in for the
//! automation service. It records every request, checks completion bodies
//! with the service's rules ([`super::rules`]) and phase bodies with the
//! phase shape, and answers what the test scripts (500, 503, 429 with
//! Retry-After, 409, 400, or no answer at all).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use tokio::sync::Notify;

use super::rules;
use crate::support::TIMEOUT;

/// How the sink answers one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// This status, empty body.
    Status(u16),
    /// This status with `Retry-After: <secs>`.
    RetryAfter(u16, u64),
    /// Never answer (the client times out).
    Hang,
}

/// One request the sink received.
#[derive(Debug, Clone)]
pub struct Received {
    /// Request path.
    pub path: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// The body as JSON (Null when it is not JSON).
    pub body: Value,
    /// The body checked against the rules of its endpoint.
    pub verdict: Result<(), String>,
    /// What the sink answered.
    pub reply: Reply,
    /// When it arrived.
    pub at: Instant,
}

impl Received {
    /// Whether this is a completion (`.../complete`).
    pub fn is_complete(&self) -> bool {
        self.path.ends_with("/complete")
    }

    /// Whether this is a phase report (`.../phase`).
    pub fn is_phase(&self) -> bool {
        self.path.ends_with("/phase")
    }

    /// The HTTP status the sink answered (0 for no answer).
    pub fn reply_status(&self) -> u16 {
        match self.reply {
            Reply::Status(status) | Reply::RetryAfter(status, _) => status,
            Reply::Hang => 0,
        }
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    script: Mutex<VecDeque<Reply>>,
    phase_script: Mutex<VecDeque<Reply>>,
    arrived: Notify,
}

/// The stand-in automation service.
pub struct CallbackSink {
    /// Base URL, `http://127.0.0.1:<port>`.
    pub url: String,
    state: Arc<State>,
    task: tokio::task::JoinHandle<()>,
}

impl CallbackSink {
    /// A sink on a fresh port.
    pub async fn start() -> CallbackSink {
        CallbackSink::start_at("127.0.0.1:0".parse().unwrap()).await
    }

    /// A sink on this address (to bring a "down" service back).
    pub async fn start_at(addr: SocketAddr) -> CallbackSink {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let app = axum::Router::new()
            .fallback(receive)
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        CallbackSink {
            url: format!("http://{addr}"),
            state,
            task,
        }
    }

    /// The completion URL of a service-side run id.
    pub fn complete_url(&self, service_run_id: &str) -> String {
        format!(
            "{}/api/automation/v1/runs/{service_run_id}/complete",
            self.url
        )
    }

    /// Answers the next completions with these replies, in order (then 200).
    pub fn script(&self, replies: &[Reply]) {
        self.state.script.lock().unwrap().extend(replies);
    }

    /// Answers the next phase reports with these replies, in order.
    pub fn script_phases(&self, replies: &[Reply]) {
        self.state.phase_script.lock().unwrap().extend(replies);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Requests to one service-side run's URLs.
    pub fn for_run(&self, service_run_id: &str) -> Vec<Received> {
        let needle = format!("/runs/{service_run_id}/");
        self.received()
            .into_iter()
            .filter(|r| r.path.contains(&needle))
            .collect()
    }

    /// Completions for one service-side run.
    pub fn completions(&self, service_run_id: &str) -> Vec<Received> {
        self.for_run(service_run_id)
            .into_iter()
            .filter(Received::is_complete)
            .collect()
    }

    /// Waits until `done` holds for what was received; panics after
    /// [`TIMEOUT`] naming `what`.
    pub async fn wait(&self, what: &str, done: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        self.wait_within(what, TIMEOUT, done).await
    }

    /// [`CallbackSink::wait`] with its own limit.
    pub async fn wait_within(
        &self,
        what: &str,
        limit: Duration,
        done: impl Fn(&[Received]) -> bool,
    ) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let arrived = self.state.arrived.notified();
            tokio::pin!(arrived);
            arrived.as_mut().enable();
            let received = self.received();
            if done(&received) {
                return received;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                let paths: Vec<_> = received.iter().map(|r| (&r.path, &r.body)).collect();
                panic!("the callback sink never saw {what}; it received: {paths:#?}");
            }
        }
    }

    /// Waits for `n` completions of one service-side run; returns them.
    pub async fn wait_completions(&self, service_run_id: &str, n: usize) -> Vec<Received> {
        let needle = format!("/runs/{service_run_id}/complete");
        self.wait(&format!("{n} completion(s) of {service_run_id}"), |all| {
            all.iter().filter(|r| r.path.ends_with(&needle)).count() >= n
        })
        .await
        .into_iter()
        .filter(|r| r.path.ends_with(&needle))
        .collect()
    }

    /// Forgets the scripted replies not used yet (then 200).
    pub fn clear_script(&self) {
        self.state.script.lock().unwrap().clear();
    }
}

impl Drop for CallbackSink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    axum::extract::State(state): axum::extract::State<Arc<State>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let text = String::from_utf8_lossy(&body).into_owned();
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    let (verdict, script) = if path.ends_with("/complete") {
        (rules::validate_text(&text).map(|_| ()), &state.script)
    } else if path.ends_with("/phase") {
        (check_phase(&body), &state.phase_script)
    } else {
        (Err(format!("unexpected path {path}")), &state.script)
    };
    let reply = script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Status(200));
    state.received.lock().unwrap().push(Received {
        path,
        headers,
        body,
        verdict: verdict.clone(),
        reply,
        at: Instant::now(),
    });
    state.arrived.notify_waiters();
    if verdict.is_err() {
        // What the real service answers to a body it rejects.
        return StatusCode::UNPROCESSABLE_ENTITY.into_response();
    }
    match reply {
        Reply::Status(status) => StatusCode::from_u16(status).unwrap().into_response(),
        Reply::RetryAfter(status, secs) => (
            StatusCode::from_u16(status).unwrap(),
            [("retry-after", secs.to_string())],
        )
            .into_response(),
        Reply::Hang => std::future::pending().await,
    }
}

fn check_phase(body: &Value) -> Result<(), String> {
    // The service's `RunPhaseRequest`: only `phase`, 1 to 200 characters.
    let ok = body.as_object().is_some_and(|m| m.len() == 1)
        && body["phase"]
            .as_str()
            .is_some_and(|p| (1..=200).contains(&p.chars().count()));
    match ok {
        true => Ok(()),
        false => Err(format!("not a phase report: {body}")),
    }
}

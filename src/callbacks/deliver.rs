//! One delivery attempt: a single HTTP POST, and the pure rules that turn
//! its answer into an [`Outcome`]. No retry logic here (the worker owns
//! the schedule), and the token never appears in what is returned.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use secrecy::{ExposeSecret, SecretString};

/// Bytes of a refusing answer's body kept in `last_error`.
const ERROR_BODY_CHARS: usize = 200;

/// What an attempt means for the callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The service has it (2xx), or already held a terminal state (409).
    Delivered,
    /// Worth trying again: no answer, 408, 429, 5xx.
    Retry,
    /// Trying again cannot help: any other answer.
    Failed,
}

impl Outcome {
    /// Label for metrics and logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Retry => "retry",
            Outcome::Failed => "failed",
        }
    }
}

/// The meaning of an HTTP status for a completion callback.
pub(crate) fn classify(status: u16) -> Outcome {
    match status {
        200..=299 | 409 => Outcome::Delivered,
        408 | 429 | 500..=599 => Outcome::Retry,
        // Other 4xx: the request itself is wrong (bad token, bad body,
        // unknown run). 1xx/3xx: redirects are not followed for a POST
        // that carries a token; the URL is wrong.
        _ => Outcome::Failed,
    }
}

/// Parses `Retry-After`: delta-seconds or an HTTP date, relative to `now`.
pub(crate) fn retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// One POST to send.
pub(crate) struct Request<'a> {
    /// Where.
    pub url: &'a str,
    /// `Authorization: Bearer`, when given.
    pub token: Option<&'a SecretString>,
    /// `Idempotency-Key`, when given.
    pub idempotency_key: Option<&'a str>,
    /// The JSON body.
    pub body: Vec<u8>,
    /// A shorter timeout than the client's, when wanted.
    pub timeout: Option<Duration>,
}

/// What one attempt gave.
#[derive(Debug, Clone)]
pub(crate) struct Attempt {
    /// What it means.
    pub outcome: Outcome,
    /// The answer's status, when there was an answer.
    pub status: Option<u16>,
    /// The answer's `Retry-After`, when it had one.
    pub retry_after: Option<Duration>,
    /// What went wrong, in words (never the token).
    pub error: Option<String>,
    /// No connection could be made (refused, unreachable): the receiver is
    /// not up, and trying again costs it nothing.
    pub unreachable: bool,
}

/// Sends one POST and classifies the answer. `client` must not follow
/// redirects and must have a timeout.
pub(crate) async fn post(client: &reqwest::Client, request: Request<'_>) -> Attempt {
    let mut builder = client
        .post(request.url)
        .header(CONTENT_TYPE, "application/json")
        .body(request.body);
    if let Some(token) = request.token {
        builder = builder.header(AUTHORIZATION, format!("Bearer {}", token.expose_secret()));
    }
    if let Some(key) = request.idempotency_key {
        builder = builder.header("Idempotency-Key", key);
    }
    if let Some(timeout) = request.timeout {
        builder = builder.timeout(timeout);
    }
    let response = match builder.send().await {
        Ok(response) => response,
        Err(err) => {
            return Attempt {
                outcome: Outcome::Retry,
                status: None,
                retry_after: None,
                error: Some(transport_error(&err, request.token)),
                unreachable: refused_or_unreachable(&err),
            };
        }
    };
    let status = response.status().as_u16();
    let outcome = classify(status);
    let retry_after = retry_after_header(response.headers());
    let error = match outcome {
        Outcome::Delivered => None,
        Outcome::Retry | Outcome::Failed => {
            let reason = response.status().canonical_reason().unwrap_or("");
            let body = response.text().await.unwrap_or_default();
            let body: String = body.trim().chars().take(ERROR_BODY_CHARS).collect();
            let text = match body.is_empty() {
                true => format!("HTTP {status} {reason}"),
                false => format!("HTTP {status} {reason}: {body}"),
            };
            Some(hide_token(text, request.token))
        }
    };
    Attempt {
        outcome,
        status: Some(status),
        retry_after,
        error,
        unreachable: false,
    }
}

/// Whether no connection could be made because nothing listens or no
/// route leads there (not a DNS or TLS failure, which cost the other side
/// or another party a full exchange each time).
fn refused_or_unreachable(err: &reqwest::Error) -> bool {
    use std::io::ErrorKind;
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
            );
        }
        source = cause.source();
    }
    false
}

fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    retry_after(value, SystemTime::now())
}

/// The error and its causes in one line, without the URL (it is logged
/// beside) and without the token.
fn transport_error(err: &reqwest::Error, token: Option<&SecretString>) -> String {
    let what = if err.is_timeout() {
        "no answer in time"
    } else if err.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    let mut text = what.to_owned();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    hide_token(text, token)
}

fn hide_token(text: String, token: Option<&SecretString>) -> String {
    match token.map(|t| t.expose_secret()).filter(|t| !t.is_empty()) {
        Some(token) if text.contains(token) => text.replace(token, "****"),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2xx and 409 are delivered; 408, 429 and 5xx are retried; everything
    /// else is failed at once.
    #[test]
    fn classify_table() {
        let table = [
            (200, Outcome::Delivered),
            (201, Outcome::Delivered),
            (202, Outcome::Delivered),
            (204, Outcome::Delivered),
            (299, Outcome::Delivered),
            (409, Outcome::Delivered),
            (408, Outcome::Retry),
            (429, Outcome::Retry),
            (500, Outcome::Retry),
            (502, Outcome::Retry),
            (503, Outcome::Retry),
            (504, Outcome::Retry),
            (599, Outcome::Retry),
            (400, Outcome::Failed),
            (401, Outcome::Failed),
            (403, Outcome::Failed),
            (404, Outcome::Failed),
            (405, Outcome::Failed),
            (410, Outcome::Failed),
            (413, Outcome::Failed),
            (422, Outcome::Failed),
            (451, Outcome::Failed),
            (100, Outcome::Failed),
            (301, Outcome::Failed),
            (307, Outcome::Failed),
            (308, Outcome::Failed),
        ];
        for (status, want) in table {
            assert_eq!(classify(status), want, "HTTP {status}");
        }
    }

    /// Retry-After in seconds or as an HTTP date; garbage is ignored.
    #[test]
    fn retry_after_forms() {
        let now = httpdate::parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT").unwrap();
        let table = [
            ("3", Some(Duration::from_secs(3))),
            (" 0 ", Some(Duration::ZERO)),
            (
                "Sun, 06 Nov 1994 08:49:47 GMT",
                Some(Duration::from_secs(10)),
            ),
            ("Sun, 06 Nov 1994 08:49:00 GMT", Some(Duration::ZERO)),
            ("-1", None),
            ("1.5", None),
            ("soon", None),
        ];
        for (value, want) in table {
            assert_eq!(retry_after(value, now), want, "{value:?}");
        }
    }

    /// The token is replaced wherever an error text would carry it.
    #[test]
    fn token_is_hidden() {
        let token = SecretString::from("sk-abc");
        assert_eq!(
            hide_token("HTTP 401: bad token sk-abc".into(), Some(&token)),
            "HTTP 401: bad token ****"
        );
        assert_eq!(hide_token("x".into(), None), "x");
    }

    /// A port nothing listens on is "unreachable" (retried within 10 s);
    /// an answer never is.
    #[tokio::test]
    async fn a_refused_connection_is_unreachable() {
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/runs/r/complete", free.local_addr().unwrap());
        drop(free);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let request = |url| Request {
            url,
            token: None,
            idempotency_key: None,
            body: b"{}".to_vec(),
            timeout: Some(Duration::from_secs(5)),
        };
        let refused = post(&client, request(&url)).await;
        assert_eq!(refused.outcome, Outcome::Retry);
        assert!(refused.unreachable, "{:?}", refused.error);

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/runs/r/complete", listener.local_addr().unwrap());
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = [0u8; 4096];
            let _ = socket.read(&mut request).await;
            let answer = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n";
            socket.write_all(answer).await.unwrap();
        });
        let answered = post(&client, request(&url)).await;
        assert_eq!(
            (answered.outcome, answered.status),
            (Outcome::Retry, Some(503))
        );
        assert!(!answered.unreachable);
    }
}

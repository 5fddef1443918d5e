//! One lookup's GET: the attempts and their retries with backoff, and the
//! classification of each failure (transient or final) with a hint on how
//! to fix it; the body read into a zeroizing, capped buffer.

use std::time::Duration;

use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use zeroize::Zeroizing;

use super::{Resolver, Target, FIRST_BACKOFF, MAX_RETRY_AFTER, MAX_VALUE_BYTES, RETRIES};
use crate::secrets::source::display_url;
use crate::secrets::SecretError;

/// Why one attempt failed.
enum Failure {
    /// Worth another attempt.
    Transient {
        reason: String,
        status: Option<u16>,
        retry_after: Option<Duration>,
    },
    /// Final.
    Permanent { reason: String, status: Option<u16> },
}

impl Resolver {
    /// GETs a value, retrying transient failures.
    pub(super) async fn fetch(
        &self,
        target: &Target<'_>,
        url: &Url,
        headers: &[(HeaderName, SecretString)],
    ) -> Result<SecretString, SecretError> {
        let Some(http) = &self.http else {
            return Err(target.unresolved(
                None,
                "sandboxd's HTTP client for secret lookups could not be built (see its log)"
                    .to_owned(),
            ));
        };
        let mut attempts = 0;
        loop {
            attempts += 1;
            let failure = match self.attempt(http, url, headers).await {
                Ok(value) => return Ok(value),
                Err(failure) => failure,
            };
            let (reason, status, retry_after, transient) = match failure {
                Failure::Transient {
                    reason,
                    status,
                    retry_after,
                } => (reason, status, retry_after, true),
                Failure::Permanent { reason, status } => (reason, status, None, false),
            };
            if transient && attempts <= RETRIES {
                let wait =
                    backoff(attempts).max(retry_after.unwrap_or_default().min(MAX_RETRY_AFTER));
                tracing::debug!(
                    var = target.var,
                    url = %display_url(url),
                    attempts,
                    status,
                    "secret lookup failed; retrying"
                );
                tokio::time::sleep(wait).await;
                continue;
            }
            tracing::warn!(
                var = target.var,
                name = target.name,
                url = %display_url(url),
                attempts,
                status,
                "secret could not be resolved"
            );
            let reason = if attempts > 1 {
                format!("{reason} ({attempts} attempts)")
            } else {
                reason
            };
            return Err(target.unresolved(status, format!("{reason}; {}", hint(status, transient))));
        }
    }

    /// A URL as named in messages, with the daemon's key masked: a
    /// configured origin may be sent the key, even in its path, but the
    /// message may go to a run token's caller, who must not see it.
    fn shown_url(&self, url: &Url) -> String {
        let shown = display_url(url);
        match self.config.session_key.as_ref().map(|k| k.expose_secret()) {
            Some(key) if !key.is_empty() => shown.replace(key, "****"),
            _ => shown,
        }
    }

    async fn attempt(
        &self,
        http: &reqwest::Client,
        url: &Url,
        headers: &[(HeaderName, SecretString)],
    ) -> Result<SecretString, Failure> {
        let shown = self.shown_url(url);
        let mut request = http.get(url.clone()).timeout(self.config.secret_timeout);
        for (name, value) in headers {
            let mut value =
                HeaderValue::from_str(value.expose_secret()).map_err(|_| Failure::Permanent {
                    reason: format!(
                        "header {name} has a value that is not a valid HTTP header value"
                    ),
                    status: None,
                })?;
            value.set_sensitive(true);
            request = request.header(name.clone(), value);
        }
        let timeout = humantime::format_duration(self.config.secret_timeout);
        let mut response = request
            .send()
            .await
            .map_err(|err| request_failure(&err, &shown, &timeout))?;
        let status = response.status();
        if !status.is_success() {
            let reason = format!("GET {shown} answered {status}");
            let code = Some(status.as_u16());
            let transient = status == StatusCode::REQUEST_TIMEOUT
                || status == StatusCode::TOO_MANY_REQUESTS
                || status.is_server_error();
            if !transient {
                return Err(Failure::Permanent {
                    reason,
                    status: code,
                });
            }
            let retry_after = response
                .headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            return Err(Failure::Transient {
                reason,
                status: code,
                retry_after,
            });
        }
        let hint = response.content_length().unwrap_or(0) as usize;
        let mut body = Zeroizing::new(Vec::with_capacity(hint.min(MAX_VALUE_BYTES)));
        loop {
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => break,
                Err(err) => return Err(request_failure(&err, &shown, &timeout)),
            };
            if body.len() + chunk.len() > MAX_VALUE_BYTES {
                return Err(Failure::Permanent {
                    reason: format!(
                        "GET {shown} answered with more than {MAX_VALUE_BYTES} bytes, too large for a secret"
                    ),
                    status: Some(status.as_u16()),
                });
            }
            crate::secrets::append_zeroizing(&mut body, &chunk);
        }
        let permanent = |reason: &str| Failure::Permanent {
            reason: format!("GET {shown} answered {status} with {reason}"),
            status: Some(status.as_u16()),
        };
        let text =
            std::str::from_utf8(&body).map_err(|_| permanent("a body that is not UTF-8 text"))?;
        if text.contains('\0') {
            return Err(permanent(
                "a NUL byte in the value, which an environment variable cannot hold",
            ));
        }
        Ok(SecretString::from(text))
    }
}

fn request_failure(
    err: &reqwest::Error,
    shown: &str,
    timeout: &humantime::FormattedDuration,
) -> Failure {
    let reason = if err.is_timeout() {
        format!("GET {shown} timed out after {timeout}")
    } else if err.is_connect() {
        format!("GET {shown} could not connect")
    } else if err.is_builder() || err.is_redirect() {
        return Failure::Permanent {
            reason: format!("GET {shown} could not be sent"),
            status: None,
        };
    } else {
        format!("GET {shown} failed before an answer")
    };
    Failure::Transient {
        reason,
        status: None,
        retry_after: None,
    }
}

/// How to fix it, by what failed.
fn hint(status: Option<u16>, transient: bool) -> &'static str {
    match status {
        Some(401) | Some(403) => "check the credentials in its headers (sandboxd fills an empty or redacted X-Session-API-Key only for the configured --cloud-api-url and --agent-server-url origins)",
        Some(404) => "check its url or name",
        Some(300..=399) => "redirects are not followed; use the final URL",
        _ if transient => "the server is down or overloaded; retry later",
        _ => "fix the source and retry",
    }
}

/// Wait before retry number `attempt` (1-based): 100 ms doubling, plus up
/// to a quarter of jitter.
pub(super) fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let base = FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    base + base.mul_f64(rand::thread_rng().gen_range(0.0..0.25))
}

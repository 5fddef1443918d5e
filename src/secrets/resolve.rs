//! Resolution of secret sources into values: concurrent lookups, each
//! request bounded by `--secret-timeout`, transient failures (connect
//! errors, timeouts, 408, 429, 5xx) retried [`RETRIES`] times with
//! exponential backoff, every other answer final at once.
//!
//! Lookups use their own HTTP client that follows no redirect (as the SDK's
//! httpx call does not): a configured origin redirecting elsewhere must not
//! carry the daemon's key there. Response bodies are read into buffers that
//! are zeroized when dropped, and capped at [`MAX_VALUE_BYTES`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use reqwest::header::{HeaderName, HeaderValue, RETRY_AFTER};
use reqwest::{StatusCode, Url};
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::source::{display_url, SecretMap, SecretSource, SESSION_KEY_HEADER};
use super::{custody, SecretError};
use crate::config::Config;

/// Retries after the first attempt of a transient failure.
pub const RETRIES: u32 = 3;

/// Wait before the first retry; doubled for each next one.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

/// Longest `Retry-After` honoured; a run start is waiting.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(2);

/// Largest secret value accepted, in bytes.
pub const MAX_VALUE_BYTES: usize = 1 << 20;

/// Lookups in flight at once for one request.
const CONCURRENCY: usize = 64;

/// Resolves secret sources.
#[derive(Clone)]
pub struct Resolver {
    config: Arc<Config>,
    /// `None` only when the client could not be built (no TLS backend);
    /// every lookup then fails with a clear error.
    http: Option<reqwest::Client>,
}

/// What one lookup is for, as named in messages.
struct Target<'a> {
    var: &'a str,
    name: Option<&'a str>,
}

impl Target<'_> {
    fn unresolved(&self, status: Option<u16>, reason: String) -> SecretError {
        SecretError::Unresolved {
            var: self.var.to_owned(),
            name: self.name.map(str::to_owned),
            status,
            reason,
        }
    }
}

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
    /// A resolver with the daemon's key and origins. Builds its own client,
    /// like `http` but following no redirect.
    pub fn new(config: Arc<Config>, _http: reqwest::Client) -> Resolver {
        let http = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(config.secret_timeout)
            .build();
        let http = match http {
            Ok(http) => Some(http),
            Err(err) => {
                tracing::error!("cannot build the HTTP client for secret lookups: {err}");
                None
            }
        };
        Resolver { config, http }
    }

    /// Resolves every entry concurrently; the first failure fails all (the
    /// lookups still in flight are dropped).
    pub async fn resolve_all(
        &self,
        secrets: &SecretMap,
    ) -> Result<Vec<(String, SecretString)>, SecretError> {
        if secrets.is_empty() {
            return Ok(Vec::new());
        }
        let started = Instant::now();
        // The futures are made by a plain iterator (a closure in a stream's
        // `map` trips the Send check of axum handlers).
        let lookups: Vec<_> = secrets
            .iter()
            .map(|(var, source)| self.resolve_entry(var, source))
            .collect();
        let values: Vec<(String, SecretString)> = futures::stream::iter(lookups)
            .buffer_unordered(CONCURRENCY)
            .try_collect()
            .await?;
        tracing::debug!(
            count = values.len(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "resolved secrets"
        );
        Ok(values)
    }

    async fn resolve_entry(
        &self,
        var: &str,
        source: &SecretSource,
    ) -> Result<(String, SecretString), SecretError> {
        let value = self.resolve_one(var, source).await?;
        Ok((var.to_owned(), value))
    }

    async fn resolve_one(
        &self,
        var: &str,
        source: &SecretSource,
    ) -> Result<SecretString, SecretError> {
        let (target, value) = match source {
            SecretSource::Static(value) => (Target { var, name: None }, value.clone()),
            SecretSource::Named(name) => {
                let target = Target {
                    var,
                    name: Some(name),
                };
                let (url, key) = self.named_url(&target, name)?;
                let headers = [(HeaderName::from_static(SESSION_KEY_HEADER), key)];
                let value = self.fetch(&target, &url, &headers).await?;
                (target, value)
            }
            SecretSource::Lookup(lookup) => {
                let target = Target { var, name: None };
                let mut headers = lookup.headers.clone();
                if lookup.fill_session_key {
                    if let Some(key) = &self.config.session_key {
                        self.trust_agent_server(&target, &lookup.url)?;
                        headers.push((HeaderName::from_static(SESSION_KEY_HEADER), key.clone()));
                    }
                }
                let value = self.fetch(&target, &lookup.url, &headers).await?;
                (target, value)
            }
        };
        if self.is_session_key(&value) {
            return Err(target.unresolved(
                None,
                "its value is sandboxd's own session key, which never goes to a run or a script; \
                 pass it in env with allow_sensitive_env if that is really meant"
                    .to_owned(),
            ));
        }
        Ok(value)
    }

    /// Before the key goes to the agent-server's origin: when that is a
    /// local port, the socket listening on it must belong to the expected
    /// uid (`--agent-server-uid`, else sandboxd's own), or a run that
    /// killed the agent-server and took its port would be handed the key.
    /// A remote agent-server origin is not checked here. With runs at the
    /// same uid as the agent-server this cannot tell an impostor apart:
    /// that takes runs under a user of their own.
    fn trust_agent_server(&self, target: &Target<'_>, url: &Url) -> Result<(), SecretError> {
        let Ok(agent_server) = Url::parse(&self.config.agent_server_url) else {
            return Ok(());
        };
        if url.origin() != agent_server.origin() {
            return Ok(());
        }
        let Some(port) = url.port_or_known_default() else {
            return Ok(());
        };
        let hosts: Vec<std::net::IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => vec![ip.into()],
            Some(url::Host::Ipv6(ip)) => vec![ip.into()],
            Some(url::Host::Domain("localhost")) => {
                vec![
                    std::net::Ipv4Addr::LOCALHOST.into(),
                    std::net::Ipv6Addr::LOCALHOST.into(),
                ]
            }
            _ => return Ok(()),
        };
        if !hosts
            .iter()
            .all(|ip| ip.is_loopback() || is_own_address(*ip))
        {
            return Ok(());
        }
        let expected = self
            .config
            .agent_server_uid
            .unwrap_or_else(|| nix::unistd::geteuid().as_raw());
        let mut uids: Vec<u32> = hosts
            .iter()
            .flat_map(|ip| custody::listener_uids(*ip, port))
            .collect();
        uids.sort_unstable();
        uids.dedup();
        let refuse = |what: String| {
            tracing::warn!(
                var = target.var,
                port,
                expected_uid = expected,
                "not sending the session key to the agent-server's port: {what}"
            );
            Err(target.unresolved(
                None,
                format!(
                    "{what}, and sandboxd sends its session key to the agent-server's port only \
                     when uid {expected} listens there (--agent-server-uid); is the agent-server \
                     running?"
                ),
            ))
        };
        match uids.as_slice() {
            [] => refuse(format!("nothing listens on the agent-server's port {port}")),
            [uid] if *uid == expected => Ok(()),
            _ => refuse(format!(
                "the agent-server's port {port} is held by uid {}",
                uids.iter()
                    .filter(|uid| **uid != expected)
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    fn is_session_key(&self, value: &SecretString) -> bool {
        self.config.session_key.as_ref().is_some_and(|key| {
            let key = key.expose_secret().as_bytes();
            !key.is_empty() && bool::from(value.expose_secret().as_bytes().ct_eq(key))
        })
    }

    /// `<cloud-api-url>/api/v1/sandboxes/<sandbox-id>/settings/secrets/<name>`
    /// and the key to send there.
    fn named_url(
        &self,
        target: &Target<'_>,
        name: &str,
    ) -> Result<(Url, SecretString), SecretError> {
        let config = &self.config;
        let (Some(base), Some(sandbox_id)) = (&config.cloud_api_url, &config.sandbox_id) else {
            let missing = match (&config.cloud_api_url, &config.sandbox_id) {
                (None, None) => "--cloud-api-url (env OPENHANDS_CLOUD_API_URL) and --sandbox-id (env SANDBOX_ID) are",
                (None, _) => "--cloud-api-url (env OPENHANDS_CLOUD_API_URL) is",
                _ => "--sandbox-id (env SANDBOX_ID) is",
            };
            return Err(target.unresolved(
                None,
                format!(
                    "named secrets come from the sandbox settings API, and {missing} not configured; \
                     start sandboxd with them, or send a LookupSecret or StaticSecret instead"
                ),
            ));
        };
        let Some(key) = &config.session_key else {
            return Err(target.unresolved(
                None,
                "named secrets need sandboxd's session key, and it runs with --insecure-no-auth"
                    .to_owned(),
            ));
        };
        let mut url = Url::parse(base)
            .map_err(|e| target.unresolved(None, format!("--cloud-api-url is not a URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|()| target.unresolved(None, "--cloud-api-url cannot have a path".to_owned()))?
            .pop_if_empty()
            .extend([
                "api",
                "v1",
                "sandboxes",
                sandbox_id,
                "settings",
                "secrets",
                name,
            ]);
        Ok((url, key.clone()))
    }

    /// GETs a value, retrying transient failures.
    async fn fetch(
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
            super::append_zeroizing(&mut body, &chunk);
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

/// Whether `ip` is an address of this host's own interfaces (a connection
/// to it stays on this machine, so its listener shows in /proc/net/tcp).
fn is_own_address(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
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
fn backoff(attempt: u32) -> Duration {
    use rand::Rng;
    let base = FIRST_BACKOFF * 2u32.saturating_pow(attempt.saturating_sub(1));
    base + base.mul_f64(rand::thread_rng().gen_range(0.0..0.25))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles() {
        for (attempt, low) in [(1, 100), (2, 200), (3, 400)] {
            let wait = backoff(attempt);
            let low = Duration::from_millis(low);
            assert!(
                wait >= low && wait <= low.mul_f64(1.25),
                "{attempt}: {wait:?}"
            );
        }
    }
}

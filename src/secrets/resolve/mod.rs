//! Resolution of secret sources into values: concurrent lookups, each
//! request bounded by `--secret-timeout`, transient failures (connect
//! errors, timeouts, 408, 429, 5xx) retried [`RETRIES`] times with
//! exponential backoff, every other answer final at once.
//!
//! Lookups use their own HTTP client that follows no redirect (as the SDK's
//! httpx call does not): a configured origin redirecting elsewhere must not
//! carry the daemon's key there. Response bodies are read into buffers that
//! are zeroized when dropped, and capped at [`MAX_VALUE_BYTES`].

mod fetch;
#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use reqwest::header::HeaderName;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};
use subtle::ConstantTimeEq;

use super::source::{SecretMap, SecretSource, SESSION_KEY_HEADER};
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
}

/// Whether `ip` is an address of this host's own interfaces (a connection
/// to it stays on this machine, so its listener shows in /proc/net/tcp).
fn is_own_address(ip: std::net::IpAddr) -> bool {
    std::net::UdpSocket::bind((ip, 0)).is_ok()
}

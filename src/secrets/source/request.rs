//! What a lookup request may carry and how a URL is shown: joining a
//! `LookupSecret` URL like Python's `urljoin`, showing a URL without its
//! credentials, the SDK's secret header names, and the origins the
//! daemon's key may go to.

use reqwest::Url;

use crate::config::Config;

/// A URL as shown in messages: scheme, host, port and path; never the user
/// info, query or fragment, where credentials hide.
pub fn display_url(url: &Url) -> String {
    let mut shown = format!("{}://{}", url.scheme(), url.host_str().unwrap_or(""));
    if let Some(port) = url.port() {
        shown.push_str(&format!(":{port}"));
    }
    shown.push_str(url.path());
    shown
}

/// Whether a header name is a secret one, by the SDK's `is_secret_key()`:
/// it contains (case-insensitively) one of these words.
pub fn is_secret_header(name: &str) -> bool {
    const WORDS: [&str; 8] = [
        "AUTHORIZATION",
        "COOKIE",
        "CREDENTIAL",
        "KEY",
        "PASSWORD",
        "SECRET",
        "SESSION",
        "TOKEN",
    ];
    let upper = name.to_ascii_uppercase();
    WORDS.iter().any(|word| upper.contains(word))
}

/// The origins the daemon's key may go to: the cloud API and the
/// agent-server.
pub fn key_origins(config: &Config) -> Vec<url::Origin> {
    [
        config.cloud_api_url.as_deref(),
        Some(&config.agent_server_url),
    ]
    .into_iter()
    .flatten()
    .filter_map(|url| Url::parse(url).ok())
    .map(|url| url.origin())
    .collect()
}

/// Joins a LookupSecret URL to the internal server URL like Python's
/// `urljoin(base + "/", url)`: absolute URLs stay, `/x` replaces the path,
/// `x` is appended to the base's path.
pub fn join_url(base: &str, url: &str) -> Result<Url, String> {
    let base = Url::parse(&format!("{}/", base.trim_end_matches('/')))
        .map_err(|e| format!("OH_INTERNAL_SERVER_URL is not a URL: {e}"))?;
    let joined = base
        .join(url.trim())
        .map_err(|e| format!("LookupSecret url is not a valid absolute or relative URL ({e})"))?;
    if !matches!(joined.scheme(), "http" | "https") || joined.host_str().is_none() {
        return Err(format!(
            "LookupSecret url must be http:// or https:// with a host, not {}:",
            joined.scheme()
        ));
    }
    Ok(joined)
}

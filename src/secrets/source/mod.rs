//! Secret sources: the typed form of a run's `secrets` entries, parsed from
//! the JSON the OpenHands SDK produces.
//!
//! Three forms are accepted:
//! - `LookupSecret`, exactly as the SDK serializes it: `kind`, `url`,
//!   `headers`, optional `description`. Relative URLs are joined to
//!   `OH_INTERNAL_SERVER_URL` the way Python's `urljoin(base + "/", url)`
//!   does, as the SDK does at validation.
//! - `{"name": "..."}`: a named secret of the sandbox settings API.
//! - `StaticSecret` (`kind`, `value`, optional `description`), and a bare
//!   JSON string, which the agent-server reads as a `StaticSecret` too.
//!
//! Parsing is strict: unknown fields, unknown kinds, values of the wrong
//! type and redacted values (`**********`, what a plain `model_dump` puts in
//! place of a secret) are refused with a message naming the env var, never
//! echoing a value. Header values and static values are held as
//! [`SecretString`]; the JSON strings they came from are zeroized.
//!
//! Key custody starts here: an empty or redacted `X-Session-API-Key` header
//! is marked to be filled with the daemon's session key only when the URL's
//! origin is the configured cloud API or agent-server origin; a redacted one
//! for any other origin is refused, and so is any request that would carry
//! the daemon's key (in a header or the URL) to another origin.
//!
//! Layout: the types are here; `parse` turns JSON into them and
//! `request` joins, shows and vets URLs and header names.

mod parse;
mod request;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use reqwest::header::HeaderName;
use reqwest::Url;
use secrecy::SecretString;

pub use parse::{into_secret, parse_map, parse_source, zeroize_json};
pub use request::{display_url, is_secret_header, join_url, key_origins};

/// Env var name -> secret source, as sent in a run's `secrets`.
pub type SecretMap = BTreeMap<String, SecretSource>;

/// What a plain (not exposed) pydantic dump puts in place of a secret.
pub const REDACTED: &str = "**********";

/// The agent-server's session key header.
pub const SESSION_KEY_HEADER: &str = "x-session-api-key";

/// Where a secret's value comes from.
#[derive(Clone)]
pub enum SecretSource {
    /// `GET url` with headers; the body is the value.
    Lookup(LookupSecret),
    /// A named secret of the sandbox settings API.
    Named(String),
    /// The value as given.
    Static(SecretString),
}

/// A parsed `LookupSecret`.
#[derive(Clone)]
pub struct LookupSecret {
    /// Absolute http(s) URL (relative ones already joined).
    pub url: Url,
    /// Headers sent as given (names lowercased), values secret.
    pub headers: Vec<(HeaderName, SecretString)>,
    /// Send `X-Session-API-Key: <the daemon's key>` (the caller sent it
    /// empty or redacted, and the origin is a configured one).
    pub fill_session_key: bool,
}

impl SecretSource {
    /// `LookupSecret`, `named` or `StaticSecret`, for messages.
    pub fn kind(&self) -> &'static str {
        match self {
            SecretSource::Lookup(_) => "LookupSecret",
            SecretSource::Named(_) => "named",
            SecretSource::Static(_) => "StaticSecret",
        }
    }
}

// Hand-written so that no value, header value or query string (which may
// hold a token) ever reaches a log or an error through `{:?}`.
impl std::fmt::Debug for SecretSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SecretSource::Lookup(lookup) => f
                .debug_struct("LookupSecret")
                .field("url", &display_url(&lookup.url))
                .field(
                    "headers",
                    &lookup
                        .headers
                        .iter()
                        .map(|(name, _)| name.as_str())
                        .collect::<Vec<_>>(),
                )
                .field("fill_session_key", &lookup.fill_session_key)
                .finish(),
            SecretSource::Named(name) => f.debug_tuple("Named").field(name).finish(),
            SecretSource::Static(_) => f.write_str("StaticSecret"),
        }
    }
}

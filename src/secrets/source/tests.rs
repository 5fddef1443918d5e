//! Unit tests of secret sources: each form, refusals naming the var, key
//! custody, header and URL handling, and zeroizing.

use secrecy::ExposeSecret;
use serde_json::{json, Value};

use super::*;
use crate::config::Config;

fn config() -> Config {
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        serve: crate::config::ServeArgs,
    }
    let cli = <Cli as clap::Parser>::parse_from([
        "sandboxd",
        "--insecure-no-auth",
        "--cloud-api-url",
        "http://cloud.test:9000",
        "--agent-server-url",
        "http://127.0.0.1:60000",
        "--internal-server-url",
        "http://127.0.0.1:8000",
    ]);
    let mut config = Config::from_args(&cli.serve).unwrap();
    config.session_key = Some(SecretString::from("the-daemon-key"));
    config
}

fn parse(value: Value) -> Result<SecretSource, String> {
    parse_source("GH", value, &config()).map_err(|e| e.to_string())
}

fn lookup_of(value: Value) -> LookupSecret {
    match parse(value).unwrap() {
        SecretSource::Lookup(lookup) => lookup,
        other => panic!("not a lookup: {other:?}"),
    }
}

#[test]
fn parses_each_kind() {
    assert!(
        matches!(parse(json!("v")).unwrap(), SecretSource::Static(v) if v.expose_secret() == "v")
    );
    let stat = parse(json!({"kind": "StaticSecret", "value": "v", "description": null})).unwrap();
    assert!(matches!(stat, SecretSource::Static(v) if v.expose_secret() == "v"));
    assert!(matches!(parse(json!({"name": "gh"})).unwrap(), SecretSource::Named(n) if n == "gh"));
    let lookup = lookup_of(
        json!({"kind": "LookupSecret", "url": "/api/x", "headers": {"Accept": "text/plain"}, "description": "d"}),
    );
    assert_eq!(lookup.url.as_str(), "http://127.0.0.1:8000/api/x");
    assert_eq!(lookup.headers.len(), 1);
    assert!(!lookup.fill_session_key);
}

#[test]
fn refuses_malformed_sources_naming_the_var() {
    let cases = [
        (
            json!({"kind": "VaultSecret", "path": "x"}),
            "unknown kind \"VaultSecret\"",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "extra": 1}),
            "unknown field \"extra\"",
        ),
        (
            json!({"kind": "StaticSecret", "value": "v", "name": "n"}),
            "unknown field \"name\"",
        ),
        (json!({"name": "a/b"}), "must be 1 to 256 characters"),
        (json!({"name": "a..b"}), "must be 1 to 256 characters"),
        (json!({"name": "x", "url": "y"}), "unknown field \"url\""),
        (json!({"kind": 3}), "kind must be a string"),
        (json!(42), "must be an object"),
        (
            json!({"kind": "StaticSecret", "value": "**********"}),
            "redacted",
        ),
        (json!({"kind": "LookupSecret"}), "needs a url"),
        (
            json!({"kind": "LookupSecret", "url": "ftp://a/b"}),
            "http:// or https://",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"X": 1}}),
            "string value",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"Authorization": "**********"}}),
            "redacted",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"X-Session-API-Key": "**********"}}),
            "will not fill it",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"Authorization": "Bearer the-daemon-key"}}),
            "holds sandboxd's session key",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b?k=the-daemon-key"}),
            "holds sandboxd's session key",
        ),
        // Percent-encoded, in the path or the query, once or twice.
        (
            json!({"kind": "LookupSecret", "url": "http://a/%74%68%65-daemon-key"}),
            "holds sandboxd's session key",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b?k=the-%2564aemon-key"}),
            "holds sandboxd's session key",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"X-K": "the%2Ddaemon%2Dkey"}}),
            "holds sandboxd's session key",
        ),
        // Split across two headers, or the URL and a header.
        (
            json!({"kind": "LookupSecret", "url": "http://a/b", "headers": {"X-A": "the-dae", "X-B": "mon-key"}}),
            "split across them",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://a/the-dae", "headers": {"X-B": "mon-key"}}),
            "split across them",
        ),
        // Link-local and metadata addresses.
        (
            json!({"kind": "LookupSecret", "url": "http://169.254.169.254/latest/meta-data/iam"}),
            "cloud metadata",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://[fe80::1]:8080/s"}),
            "link-local",
        ),
        (
            json!({"kind": "LookupSecret", "url": "http://metadata.google.internal/computeMetadata/v1/"}),
            "cloud metadata",
        ),
    ];
    for (value, want) in cases {
        let shown = value.to_string();
        let err = parse(value).unwrap_err();
        assert!(err.starts_with("secrets.GH: "), "{shown}: {err}");
        assert!(err.contains(want), "{shown}: {err}");
    }
}

/// The key in a URL's host is refused whatever its case (the parsed
/// host is lowercased), and no message shows it. (Found by the fuzz
/// target `secret_source`: the message named the origin, key and all.)
#[test]
fn key_in_the_host_is_refused_and_never_shown() {
    for url in [
        "http://a.the-daemon-key.example/s",
        "http://a.THE-daemon-KEY.example/s",
        "https://the-daemon-key/s",
    ] {
        for headers in [json!({}), json!({"X-Session-API-Key": "**********"})] {
            let source = json!({"kind": "LookupSecret", "url": url, "headers": headers});
            let err = parse(source).unwrap_err();
            assert!(err.contains("session key"), "{url}: {err}");
            assert!(
                !err.to_ascii_lowercase().contains("the-daemon-key"),
                "{url}: {err}"
            );
        }
    }
    let err = parse(json!({"kind": "LookupSecret", "url": "http://a.test/s",
        "headers": {"Authorization": "Bearer the-daemon-key"}}))
    .unwrap_err();
    assert!(!err.contains("the-daemon-key"), "{err}");
}

#[test]
fn session_key_header_is_filled_only_for_configured_origins() {
    for url in [
        "http://cloud.test:9000/s",
        "http://127.0.0.1:60000/api/settings/secrets/X",
    ] {
        for value in ["", " ", REDACTED] {
            let lookup = lookup_of(
                json!({"kind": "LookupSecret", "url": url, "headers": {"X-Session-API-Key": value}}),
            );
            assert!(lookup.fill_session_key, "{url} {value:?}");
            assert!(lookup.headers.is_empty());
        }
    }
    // Another origin (other port, other host): an empty key is dropped.
    for url in ["http://cloud.test:9001/s", "http://localhost:60000/s"] {
        let lookup = lookup_of(
            json!({"kind": "LookupSecret", "url": url, "headers": {"X-Session-API-Key": ""}}),
        );
        assert!(
            !lookup.fill_session_key && lookup.headers.is_empty(),
            "{url}"
        );
    }
    // A key given by the caller is sent as given.
    let lookup = lookup_of(
        json!({"kind": "LookupSecret", "url": "http://a.test/s", "headers": {"X-Session-API-Key": "their-key"}}),
    );
    assert!(!lookup.fill_session_key);
    assert_eq!(lookup.headers[0].1.expose_secret(), "their-key");
}

#[test]
fn blank_secret_headers_are_dropped_like_the_sdk() {
    let lookup = lookup_of(json!({"kind": "LookupSecret", "url": "http://a.test/s",
        "headers": {"Authorization": "   ", "X-Api-Token": "", "Accept": ""}}));
    let names: Vec<&str> = lookup.headers.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["accept"]);
}

#[test]
fn debug_shows_no_value() {
    let source = parse(
        json!({"kind": "LookupSecret", "url": "http://a.test/s?token=hidden-q",
        "headers": {"Authorization": "Bearer hidden-h"}}),
    )
    .unwrap();
    let shown = format!("{source:?}");
    assert!(!shown.contains("hidden"), "{shown}");
    let shown = format!("{:?}", parse(json!("hidden-v")).unwrap());
    assert!(!shown.contains("hidden"), "{shown}");
}

#[test]
fn joins_like_urljoin() {
    let cases = [
        (
            "http://127.0.0.1:8000",
            "/api/settings/secrets/FOO",
            "http://127.0.0.1:8000/api/settings/secrets/FOO",
        ),
        (
            "http://127.0.0.1:60000/prefix",
            "api/settings/secrets/BAR",
            "http://127.0.0.1:60000/prefix/api/settings/secrets/BAR",
        ),
        (
            "http://127.0.0.1:60000/prefix/",
            "/x",
            "http://127.0.0.1:60000/x",
        ),
        (
            "http://127.0.0.1:8000",
            "https://a.example/s?t=1",
            "https://a.example/s?t=1",
        ),
    ];
    for (base, url, want) in cases {
        assert_eq!(
            join_url(base, url).unwrap().as_str(),
            want,
            "{base} + {url}"
        );
    }
    assert!(join_url("http://127.0.0.1:8000", "ftp://x/y").is_err());
    assert!(join_url("http://127.0.0.1:8000", "http://[::1").is_err());
}

#[test]
fn secret_header_names_match_the_sdk() {
    let text = include_str!("../../../tests/data/fixtures/lookup_secrets.json");
    let fixture: Value = serde_json::from_str(text).unwrap();
    let cases = fixture["is_secret_key"].as_object().unwrap();
    assert!(!cases.is_empty());
    for (name, want) in cases {
        assert_eq!(is_secret_header(name), want.as_bool().unwrap(), "{name}");
    }
}

#[test]
fn display_url_hides_credentials() {
    let url = Url::parse("https://u:p@h.example:8443/a/b?token=t#f").unwrap();
    assert_eq!(display_url(&url), "https://h.example:8443/a/b");
}

#[test]
fn zeroize_json_wipes_nested_strings() {
    let mut value = serde_json::json!({"a": ["x", {"b": "y"}], "c": 1});
    zeroize_json(&mut value);
    assert!(!value.to_string().contains('x') && !value.to_string().contains('y'));
}

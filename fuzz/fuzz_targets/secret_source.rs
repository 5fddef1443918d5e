//! Secret sources (`secrets` entries of a run, `POST /v1/secrets/resolve`):
//! arbitrary bytes as JSON through the parser. Never panics, and a refusal
//! never echoes a value.
//!
//! The input is the env var name, a NUL byte, then the source's JSON (no
//! NUL: the whole input as the source, with the name `FUZZ`). It is
//! parsed twice:
//! - as given: must not panic; a refusal names `secrets.<VAR>`;
//! - with every value (a bare string, a StaticSecret's `value`, each
//!   LookupSecret header value) prefixed by a marker: a refusal must not
//!   hold the marker, so no value reached the message. (The marker also
//!   turns redacted and blank values into ordinary ones; the first parse
//!   covers those.)

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandboxd::config::Config;
use serde_json::Value;

const MARKER: &str = "VALUEMARK7q";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(common::config)
}

fuzz_target!(|data: &[u8]| {
    let (var, json) = match data.iter().position(|b| *b == 0) {
        Some(at) => (String::from_utf8_lossy(&data[..at]).into_owned(), &data[at + 1..]),
        None => ("FUZZ".to_owned(), data),
    };
    let Ok(value) = serde_json::from_slice::<Value>(json) else {
        return;
    };
    let config = config();
    let text = String::from_utf8_lossy(data);
    if let Err(err) = sandboxd::secrets::source::parse_source(&var, value.clone(), config) {
        let message = err.to_string();
        assert!(message.starts_with(&format!("secrets.{var}: ")), "{message}");
        assert!(
            !message.contains(common::SESSION_KEY) || text.contains(common::SESSION_KEY),
            "{message}"
        );
    }
    if text.contains(MARKER) {
        return;
    }
    let mut marked = value;
    mark_values(&mut marked);
    if let Err(err) = sandboxd::secrets::source::parse_source(&var, marked, config) {
        let message = err.to_string();
        assert!(!message.contains(MARKER), "a value in the message: {message}");
    }
});

/// Prefixes every value the parser treats as secret with [`MARKER`].
fn mark_values(source: &mut Value) {
    let mark = |text: &mut String| *text = format!("{MARKER}{text}");
    match source {
        Value::String(text) => mark(text),
        Value::Object(obj) => {
            if let Some(Value::String(value)) = obj.get_mut("value") {
                mark(value);
            }
            if let Some(Value::Object(headers)) = obj.get_mut("headers") {
                for value in headers.values_mut() {
                    if let Value::String(text) = value {
                        mark(text);
                    }
                }
            }
        }
        _ => {}
    }
}

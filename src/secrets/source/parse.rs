//! Parsing a run's `secrets` JSON into typed sources: the three accepted
//! forms, strict field checks, key custody for `X-Session-API-Key`, and
//! zeroizing the JSON strings the values came from.

use std::collections::BTreeMap;

use reqwest::header::{HeaderName, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use super::{
    display_url, is_secret_header, join_url, key_origins, LookupSecret, SecretMap, SecretSource,
    REDACTED, SESSION_KEY_HEADER,
};
use crate::config::Config;
use crate::secrets::{custody, SecretError};

/// Parses a whole `secrets` map; the first bad entry is the error.
pub fn parse_map(raw: BTreeMap<String, Value>, config: &Config) -> Result<SecretMap, SecretError> {
    let mut parsed = SecretMap::new();
    let mut first_error = None;
    for (var, value) in raw {
        // Every entry is consumed (and its strings zeroized), even after an
        // error.
        match parse_source(&var, value, config) {
            Ok(source) if first_error.is_none() => {
                parsed.insert(var, source);
            }
            Ok(_) => {}
            Err(err) => {
                first_error.get_or_insert(err);
            }
        }
    }
    match first_error {
        Some(err) => Err(err),
        None => Ok(parsed),
    }
}

/// Parses one source; `var` is the env var it is for (named in errors).
pub fn parse_source(
    var: &str,
    mut raw: Value,
    config: &Config,
) -> Result<SecretSource, SecretError> {
    let res = parse_value(var, &mut raw, config);
    zeroize_json(&mut raw);
    res
}

fn parse_value(var: &str, raw: &mut Value, config: &Config) -> Result<SecretSource, SecretError> {
    let invalid = |reason: String| SecretError::Invalid {
        var: var.to_owned(),
        reason,
    };
    let obj =
        match raw {
            Value::String(text) => {
                let value = into_secret(std::mem::take(text));
                return static_value(value).map_err(invalid);
            }
            Value::Object(obj) => obj,
            _ => return Err(invalid(
                "must be an object (a LookupSecret, a StaticSecret or {\"name\": ...}) or a string"
                    .to_owned(),
            )),
        };
    let kind = match obj.get("kind") {
        None => None,
        Some(Value::String(kind)) => Some(kind.clone()),
        Some(_) => return Err(invalid("kind must be a string".to_owned())),
    };
    match kind.as_deref() {
        None => {
            only_fields(obj, &["name"], "a named secret {\"name\": ...}").map_err(invalid)?;
            named(obj).map_err(invalid)
        }
        Some("LookupSecret") => {
            only_fields(obj, &["kind", "url", "headers", "description"], "a LookupSecret")
                .map_err(invalid)?;
            description(obj).map_err(invalid)?;
            lookup(obj, config).map_err(invalid)
        }
        Some("StaticSecret") => {
            only_fields(obj, &["kind", "value", "description"], "a StaticSecret")
                .map_err(invalid)?;
            description(obj).map_err(invalid)?;
            let value = match obj.get_mut("value") {
                Some(Value::String(text)) => into_secret(std::mem::take(text)),
                Some(_) => return Err(invalid("StaticSecret value must be a string".to_owned())),
                None => return Err(invalid("StaticSecret needs a value".to_owned())),
            };
            static_value(value).map_err(invalid)
        }
        Some(other) => Err(invalid(format!(
            "unknown kind {other:?}; use \"LookupSecret\", \"StaticSecret\", or {{\"name\": ...}} for a named secret"
        ))),
    }
}

fn only_fields(obj: &Map<String, Value>, allowed: &[&str], what: &str) -> Result<(), String> {
    match obj.keys().find(|key| !allowed.contains(&key.as_str())) {
        None => Ok(()),
        Some(key) => Err(format!(
            "unknown field {key:?} in {what}; it takes only {}",
            allowed.join(", ")
        )),
    }
}

fn description(obj: &Map<String, Value>) -> Result<(), String> {
    match obj.get("description") {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(_) => Err("description must be a string or null".to_owned()),
    }
}

fn static_value(value: SecretString) -> Result<SecretSource, String> {
    if value.expose_secret() == REDACTED {
        return Err(format!(
            "the value is redacted ({REDACTED:?}, from a plain model_dump); send the real value \
             (model_dump(mode=\"json\", context={{\"expose_secrets\": True}}))"
        ));
    }
    if value.expose_secret().contains('\0') {
        return Err(
            "the value contains a NUL byte, which an environment variable cannot hold".to_owned(),
        );
    }
    Ok(SecretSource::Static(value))
}

fn named(obj: &Map<String, Value>) -> Result<SecretSource, String> {
    let name = match obj.get("name") {
        Some(Value::String(name)) => name,
        Some(_) => return Err("name must be a string".to_owned()),
        None => {
            return Err("needs a kind (\"LookupSecret\" or \"StaticSecret\") or a name".to_owned())
        }
    };
    let bad = name.is_empty()
        || name.len() > 256
        || name.contains('/')
        || name.contains('\\')
        || name.contains("..")
        || name.chars().any(char::is_control);
    if bad {
        return Err(format!(
            "secret name {name:?} must be 1 to 256 characters without '/', '\\', '..' or control characters"
        ));
    }
    Ok(SecretSource::Named(name.clone()))
}

fn lookup(obj: &mut Map<String, Value>, config: &Config) -> Result<SecretSource, String> {
    let url = match obj.get("url") {
        Some(Value::String(url)) => join_url(&config.internal_server_url, url)?,
        Some(_) => return Err("LookupSecret url must be a string".to_owned()),
        None => return Err("LookupSecret needs a url".to_owned()),
    };
    if let Some(why) = custody::refused_host(&url) {
        return Err(format!(
            "LookupSecret url {} is {why}; secrets are never fetched from link-local or cloud \
             metadata addresses",
            display_url(&url)
        ));
    }
    let origin = url.origin();
    let key_allowed = key_origins(config).contains(&origin);
    let key = config
        .session_key
        .as_ref()
        .map(|k| k.expose_secret())
        .filter(|k| !k.is_empty());
    let carries_key =
        |texts: &[&str]| key.is_some_and(|key| custody::carries_key(key, texts.iter().copied()));
    // The URL as sent and percent-decoded (a server decodes its path and
    // query); compared regardless of case, since a parsed URL has its host
    // lowercased: `http://<KEY>.example/` must not slip through as its
    // lowercased self.
    let url_texts = custody::url_texts(&url);
    let url_carries_key = carries_key(&[&url_texts[0], &url_texts[1]]);
    // The origin as named in messages; never the key, when it is in there.
    let shown_origin = if carries_key(&[&origin.ascii_serialization()]) {
        "the url's origin".to_owned()
    } else {
        origin.ascii_serialization()
    };
    if !key_allowed && url_carries_key {
        return Err(format!(
            "the url holds sandboxd's session key (maybe percent-encoded), which is only ever \
             sent to the configured cloud API and agent-server origins, not to {shown_origin}"
        ));
    }
    let raw_headers = match obj.get_mut("headers") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(headers)) => std::mem::take(headers),
        Some(_) => return Err("LookupSecret headers must be an object of strings".to_owned()),
    };
    let mut headers = Vec::new();
    let mut fill_session_key = false;
    for (name, mut value) in raw_headers {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("header name {name:?} is not a valid HTTP header name"))?;
        let Value::String(text) = &mut value else {
            zeroize_json(&mut value);
            return Err(format!("header {name:?} must have a string value"));
        };
        let text = into_secret(std::mem::take(text));
        let blank = text.expose_secret().trim().is_empty();
        let redacted = text.expose_secret() == REDACTED;
        if header == SESSION_KEY_HEADER && (blank || redacted) {
            if key_allowed {
                fill_session_key = true;
            } else if redacted {
                return Err(format!(
                    "header {name:?} is redacted ({REDACTED:?}) and {} is neither the configured \
                     --cloud-api-url nor --agent-server-url origin, so sandboxd will not fill it \
                     with its key; send the key itself",
                    shown_origin
                ));
            }
            // Blank for another origin: dropped, as the SDK does.
            continue;
        }
        if is_secret_header(&name) && blank {
            // The SDK drops secret-named headers with blank values.
            continue;
        }
        if redacted && is_secret_header(&name) {
            return Err(format!(
                "header {name:?} is redacted ({REDACTED:?}, from a plain model_dump); send the real \
                 value (model_dump(mode=\"json\", context={{\"expose_secrets\": True}}))"
            ));
        }
        if HeaderValue::from_str(text.expose_secret()).is_err() {
            return Err(format!(
                "header {name:?} has a value that is not a valid HTTP header value"
            ));
        }
        let decoded = Zeroizing::new(custody::percent_decoded(text.expose_secret()));
        if !key_allowed && carries_key(&[text.expose_secret(), &decoded, &name]) {
            return Err(format!(
                "header {name:?} holds sandboxd's session key, which is only ever sent to the \
                 configured cloud API and agent-server origins, not to {shown_origin}"
            ));
        }
        headers.push((header, text));
    }
    if !key_allowed {
        // Pieces of the key spread over several headers and the URL.
        let decoded: Vec<Zeroizing<String>> = headers
            .iter()
            .map(|(_, value)| Zeroizing::new(custody::percent_decoded(value.expose_secret())))
            .collect();
        let mut texts: Vec<&str> = vec![&url_texts[0], &url_texts[1]];
        for ((name, value), decoded) in headers.iter().zip(&decoded) {
            texts.extend([name.as_str(), value.expose_secret(), decoded.as_str()]);
        }
        if carries_key(&texts) {
            return Err(format!(
                "the url and headers together hold sandboxd's session key (split across them), \
                 which is only ever sent to the configured cloud API and agent-server origins, \
                 not to {shown_origin}"
            ));
        }
    }
    Ok(SecretSource::Lookup(LookupSecret {
        url,
        headers,
        fill_session_key,
    }))
}

/// Moves a string into a [`SecretString`] and zeroizes the original
/// buffer (`SecretString::from(String)` may reallocate and free it
/// unzeroized).
pub fn into_secret(mut text: String) -> SecretString {
    let secret = SecretString::from(text.as_str());
    text.zeroize();
    secret
}

/// Zeroizes every string (keys included) of a JSON value.
pub fn zeroize_json(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(zeroize_json),
        Value::Object(obj) => {
            for (_, item) in obj.iter_mut() {
                zeroize_json(item);
            }
            // Keys are immutable in a map: rebuild it to wipe them.
            for (mut key, _) in std::mem::take(obj) {
                key.zeroize();
            }
        }
        _ => {}
    }
}

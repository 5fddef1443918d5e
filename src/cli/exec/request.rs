//! The `POST /v1/runs` body `sandboxd exec` sends: built from the flags,
//! with the parsers of `--env K=V` and `--secret NAME=SOURCE` (which never
//! echo a secret's value).

use serde_json::{json, Map, Value};

use super::ExecArgs;
use crate::cli::client::ClientError;

/// The `POST /v1/runs` body.
pub(super) fn request_body(args: &ExecArgs) -> Result<Value, ClientError> {
    let mut body = Map::new();
    body.insert("command".into(), json!(args.command));
    if let Some(run_id) = &args.run_id {
        body.insert("run_id".into(), json!(run_id));
    }
    if let Some(cwd) = &args.cwd {
        // A relative --cwd means ours: client and daemon share the machine.
        let cwd = std::path::absolute(cwd).map_err(|source| ClientError::Io {
            action: "resolving --cwd",
            path: cwd.display().to_string(),
            source,
        })?;
        body.insert("cwd".into(), json!(cwd.display().to_string()));
    }
    if !args.env.is_empty() {
        let env: Map<String, Value> = args
            .env
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        body.insert("env".into(), Value::Object(env));
    }
    if !args.secrets.is_empty() {
        let secrets: Map<String, Value> = args.secrets.iter().cloned().collect();
        body.insert("secrets".into(), Value::Object(secrets));
    }
    if args.no_setup {
        body.insert("setup".into(), json!(false));
    }
    if args.no_inherit_env {
        body.insert("inherit_env".into(), json!(false));
    }
    if args.tty {
        body.insert("stdin".into(), json!("pty"));
        if let Some((cols, rows)) = crate::cli::attach::terminal_size() {
            body.insert("cols".into(), json!(cols));
            body.insert("rows".into(), json!(rows));
        }
        if let Some(term) = std::env::var("TERM").ok().filter(|t| !t.is_empty()) {
            body.insert("term".into(), json!(term));
        }
    } else if args.interactive {
        body.insert("stdin".into(), json!("pipe"));
    }
    if let Some(timeout) = args.timeout {
        body.insert("timeout_s".into(), json!(timeout.as_secs_f64()));
    }
    Ok(Value::Object(body))
}

pub(super) fn parse_env(text: &str) -> Result<(String, String), String> {
    let (name, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not K=V"))?;
    if name.is_empty() {
        return Err(format!("{text:?} has an empty name"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

pub(super) fn parse_secret(text: &str) -> Result<(String, Value), String> {
    let usage = "use NAME=name:SECRET_NAME, NAME=lookup:URL, NAME=env:VAR or NAME=static:VALUE";
    let (name, source) = text
        .split_once('=')
        .ok_or_else(|| format!("{:?} is not NAME=SOURCE; {usage}", redact(text)))?;
    if name.is_empty() {
        return Err(format!("secret has an empty NAME; {usage}"));
    }
    let (kind, rest) = source
        .split_once(':')
        .ok_or_else(|| format!("secret {name}: no source kind; {usage}"))?;
    let value = match kind {
        "name" if !rest.is_empty() => json!({ "name": rest }),
        "lookup" if !rest.is_empty() => json!({ "kind": "LookupSecret", "url": rest }),
        "static" => json!({ "kind": "StaticSecret", "value": rest }),
        "env" => {
            let value = std::env::var(rest)
                .map_err(|_| format!("secret {name}: env var {rest:?} is not set"))?;
            json!({ "kind": "StaticSecret", "value": value })
        }
        _ => return Err(format!("secret {name}: unknown source {kind:?}; {usage}")),
    };
    Ok((name.to_owned(), value))
}

/// `NAME=static:VALUE` must not echo VALUE in an error.
fn redact(text: &str) -> String {
    match text.split_once(':') {
        Some((head, _)) => format!("{head}:…"),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_sources_become_the_wire_shapes() {
        assert_eq!(
            parse_secret("SLACK=name:slack_token").unwrap(),
            ("SLACK".into(), json!({"name": "slack_token"}))
        );
        assert_eq!(
            parse_secret("GH=lookup:https://h/s?a=b").unwrap(),
            (
                "GH".into(),
                json!({"kind": "LookupSecret", "url": "https://h/s?a=b"})
            )
        );
        assert_eq!(
            parse_secret("P=static:a=b:c").unwrap(),
            (
                "P".into(),
                json!({"kind": "StaticSecret", "value": "a=b:c"})
            )
        );
        let err = parse_secret("P=bogus:hunter2").unwrap_err();
        assert!(err.contains("unknown source"), "{err}");
        let err = parse_secret("Pstatic:hunter2").unwrap_err();
        assert!(!err.contains("hunter2"), "values are never echoed: {err}");
    }

    #[test]
    fn env_pairs_split_at_the_first_equals() {
        assert_eq!(parse_env("A=b=c").unwrap(), ("A".into(), "b=c".into()));
        assert!(parse_env("novalue").is_err());
        assert!(parse_env("=x").is_err());
    }
}

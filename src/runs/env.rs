//! The child's environment: a pure function of the daemon's env, the
//! daemon's policy and the request, reproducing the OpenHands SDK's
//! `sanitized_env()` exactly.
//!
//! Order: the daemon's env (or only `PATH`, `HOME`, `LANG`), then the SDK's
//! sanitization, then `--strip-env`/`--strip-env-prefix`, then the daemon's
//! own credentials, then the request's `env`, then resolved secrets, then
//! the `SANDBOXD_*` variables.

use std::collections::BTreeMap;

/// Names the SDK's `sanitized_env()` removes.
pub const SDK_SENSITIVE_NAMES: [&str; 6] = [
    "SESSION_API_KEY",
    "OH_SECRET_KEY",
    "LMNR_PROJECT_API_KEY",
    "OTEL_HEADERS",
    "OTEL_EXPORTER_OTLP_HEADERS",
    "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
];

/// Prefix the SDK's `sanitized_env()` removes.
pub const SDK_SENSITIVE_PREFIX: &str = "OH_SESSION_API_KEYS_";

/// sandboxd's own settings that name a credential (where the session key
/// or the callback token is read from): removed from every child's env,
/// whatever the policy.
pub const DAEMON_CREDENTIAL_SETTINGS: [&str; 2] =
    ["SANDBOXD_SESSION_KEY_FILE", "SANDBOXD_CALLBACK_TOKEN_FILE"];

/// Names kept when `inherit_env` is false.
const MINIMAL_NAMES: [&str; 3] = ["PATH", "HOME", "LANG"];

/// What the daemon removes from every child's env beyond the SDK's list.
#[derive(Debug, Clone, Default)]
pub struct EnvPolicy {
    /// `--strip-env` names.
    pub strip_names: Vec<String>,
    /// `--strip-env-prefix` prefixes.
    pub strip_prefixes: Vec<String>,
    /// Names of daemon env vars that hold the daemon's own credentials
    /// (the callback token's `OPENHANDS_API_KEY` when it came from there).
    pub credential_names: Vec<String>,
}

impl EnvPolicy {
    /// Whether a name is sensitive: the SDK would strip it, or the
    /// daemon's strip lists would.
    pub fn is_sensitive(&self, name: &str) -> bool {
        SDK_SENSITIVE_NAMES.contains(&name)
            || name.starts_with(SDK_SENSITIVE_PREFIX)
            || self.strip_names.iter().any(|n| n == name)
            || self
                .strip_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
    }
}

/// The SDK's `sanitized_env()`, verbatim in behaviour.
pub fn sanitize(env: &mut BTreeMap<String, String>) {
    env.retain(|name, _| {
        !SDK_SENSITIVE_NAMES.contains(&name.as_str()) && !name.starts_with(SDK_SENSITIVE_PREFIX)
    });
    let blank = env.get("AI_AGENT").is_none_or(|v| v.trim().is_empty());
    if blank {
        env.insert("AI_AGENT".to_owned(), "openhands".to_owned());
    }
    if let Some(orig) = env.get("LD_LIBRARY_PATH_ORIG").cloned() {
        if orig.is_empty() {
            env.remove("LD_LIBRARY_PATH");
        } else {
            env.insert("LD_LIBRARY_PATH".to_owned(), orig);
        }
    }
}

/// The base env of a child: inherited or minimal, sanitized, stripped of
/// the policy's names, of sandboxd's credential settings
/// ([`DAEMON_CREDENTIAL_SETTINGS`]) and of every variable whose value is
/// the session key.
pub fn base_env(
    daemon_env: impl IntoIterator<Item = (String, String)>,
    inherit: bool,
    policy: &EnvPolicy,
    session_key: Option<&str>,
) -> BTreeMap<String, String> {
    let mut env: BTreeMap<String, String> = daemon_env
        .into_iter()
        .filter(|(name, _)| inherit || MINIMAL_NAMES.contains(&name.as_str()))
        .collect();
    sanitize(&mut env);
    env.retain(|name, value| {
        let stripped = policy.strip_names.iter().any(|n| n == name)
            || policy
                .strip_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
            || policy.credential_names.iter().any(|n| n == name)
            || DAEMON_CREDENTIAL_SETTINGS.contains(&name.as_str());
        let holds_key = session_key.is_some_and(|key| !key.is_empty() && value == key);
        !stripped && !holds_key
    });
    env
}

/// Names in `requested` that are sensitive and not allowed.
pub fn forbidden_names<'a>(
    requested: &'a BTreeMap<String, String>,
    allowed: &[String],
    policy: &EnvPolicy,
) -> Vec<&'a str> {
    requested
        .keys()
        .filter(|name| policy.is_sensitive(name) && !allowed.iter().any(|a| a == *name))
        .map(String::as_str)
        .collect()
}

/// Checks that a variable name can be set: non-empty, no `=` and no NUL.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.contains('=') && !name.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn sanitize_matches_sdk_cases() {
        let text = include_str!("../../tests/data/fixtures/sanitized_env.json");
        let cases: Vec<serde_json::Value> = serde_json::from_str(text).unwrap();
        assert!(!cases.is_empty());
        for case in cases {
            let mut env: BTreeMap<String, String> =
                serde_json::from_value(case["input_env"].clone()).unwrap();
            let want: BTreeMap<String, String> =
                serde_json::from_value(case["output_env"].clone()).unwrap();
            sanitize(&mut env);
            assert_eq!(env, want, "case {}", case["name"]);
        }
    }

    #[test]
    fn minimal_env_keeps_three_names() {
        let daemon = map(&[
            ("PATH", "/bin"),
            ("HOME", "/h"),
            ("LANG", "C"),
            ("FOO", "x"),
        ]);
        let env = base_env(daemon, false, &EnvPolicy::default(), None);
        assert_eq!(
            env,
            map(&[
                ("PATH", "/bin"),
                ("HOME", "/h"),
                ("LANG", "C"),
                ("AI_AGENT", "openhands")
            ])
        );
    }

    #[test]
    fn strips_policy_and_key_holders() {
        let policy = EnvPolicy {
            strip_names: vec!["A".into()],
            strip_prefixes: vec!["P_".into()],
            credential_names: vec!["OPENHANDS_API_KEY".into()],
        };
        let daemon = map(&[
            ("A", "1"),
            ("P_X", "2"),
            ("OPENHANDS_API_KEY", "t"),
            ("COPY", "key"),
            ("KEEP", "k"),
            ("SANDBOXD_SESSION_KEY_FILE", "/run/key"),
            ("SANDBOXD_CALLBACK_TOKEN_FILE", "/run/token"),
        ]);
        let env = base_env(daemon, true, &policy, Some("key"));
        assert_eq!(env, map(&[("KEEP", "k"), ("AI_AGENT", "openhands")]));
    }

    #[test]
    fn sensitive_names() {
        let policy = EnvPolicy {
            strip_names: vec!["MINE".into()],
            ..EnvPolicy::default()
        };
        let requested = map(&[
            ("SESSION_API_KEY", "x"),
            ("OH_SESSION_API_KEYS_3", "y"),
            ("MINE", "z"),
            ("OPENHANDS_API_KEY", "k"),
        ]);
        let mut bad = forbidden_names(&requested, &["MINE".to_owned()], &policy);
        bad.sort();
        assert_eq!(bad, ["OH_SESSION_API_KEYS_3", "SESSION_API_KEY"]);
    }
}

//! What the targets share: a daemon configuration as `sandboxd serve`
//! builds it, with a session key and the cloud API and agent-server
//! origins set, so that the key-custody paths of secret parsing are live.

#![allow(dead_code)]

use sandboxd::config::{Config, ServeArgs};
use secrecy::SecretString;

/// The session key of the fuzzed configuration: it must never appear in an
/// error message.
pub const SESSION_KEY: &str = "fuzz-daemon-session-key-4f1c";

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

/// The configuration every target uses.
pub fn config() -> Config {
    let cli = <Cli as clap::Parser>::parse_from([
        "sandboxd",
        "--insecure-no-auth",
        "--state-dir",
        "/nonexistent/sandboxd-fuzz/state",
        "--work-root",
        "/nonexistent/sandboxd-fuzz/work",
        "--cloud-api-url",
        "http://cloud.test:9000",
        "--agent-server-url",
        "http://127.0.0.1:60000",
        "--internal-server-url",
        "http://127.0.0.1:8000",
        "--strip-env",
        "AWS_SECRET_ACCESS_KEY",
        "--strip-env-prefix",
        "VAULT_",
    ]);
    let mut config = Config::from_args(&cli.serve).expect("a valid configuration");
    config.session_key = Some(SecretString::from(SESSION_KEY));
    config
}

//! `POST /v1/runs` bodies: arbitrary bytes through the same parsing and
//! validation the handler does (JSON, the request type, the run's fields,
//! its secret sources, its env names). Never panics; an accepted run is
//! well-formed (an argv without NUL bytes, an absolute cwd, a bounded
//! timeout); a refusal is a 4xx with a message, and names the daemon's
//! session key only when the body itself holds it.

#![no_main]

#[path = "common.rs"]
mod common;

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use sandboxd::config::Config;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(common::config)
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let refused = match sandboxd::api::runs::parse_create_run(data, config) {
        Ok((new, _wait)) => match sandboxd::runs::check_env(&new, config) {
            Ok(()) => {
                assert!(!new.argv.is_empty() && !new.argv[0].is_empty());
                assert!(new.argv.iter().all(|arg| !arg.contains('\0')));
                if let Some(cwd) = &new.cwd {
                    assert!(cwd.is_absolute(), "{cwd:?}");
                }
                assert!(new.timeout.as_secs() <= 30 * 86400);
                sandboxd::api::runs::check_run_id(&new.run_id).expect("a valid run id");
                None
            }
            Err(err) => Some(sandboxd::error::ApiError::from(err)),
        },
        Err(err) => Some(err),
    };
    if let Some(err) = refused {
        let (status, code) = err.status_and_code();
        assert!(status.is_client_error(), "{status} {code}: {err}");
        let message = err.to_string();
        assert!(!message.is_empty());
        let echoed = message.contains(common::SESSION_KEY);
        assert!(
            !echoed || contains(data, common::SESSION_KEY.as_bytes()),
            "{message}"
        );
    }
});

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

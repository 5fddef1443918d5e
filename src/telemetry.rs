//! Logging setup and the per-request span.
//!
//! Logs go to stderr, human-readable or JSON. `RUST_LOG` overrides the level
//! chosen by `-v`. When `JOURNAL_STREAM` is set, journald stamps the lines,
//! so the timestamp is left out. No secret is ever a log field; as a second
//! line of defence every log line is masked ([`mask_in_logs`]) with the
//! daemon's own credentials and the resolved secrets of every live run,
//! and written with one `write` call.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Arc, LazyLock, Mutex, RwLock};

use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::secrets::mask::Masker;

/// Installs the global subscriber. Call once, from `main`.
pub fn init(format: LogFormat, verbosity: u8) {
    let level = match verbosity {
        0 => "info",
        1 => "debug",
        _ => "trace",
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("sandboxd={level},tower_http=warn,{level}")))
        .add_directive("hyper=warn".parse().expect("static directive"))
        .add_directive("reqwest=warn".parse().expect("static directive"));
    let journald = std::env::var_os("JOURNAL_STREAM").is_some();
    // Colour only for a person at a terminal, never into a file or a pipe.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(MaskedStderr::default);
    let res = match (format, journald) {
        (LogFormat::Json, _) => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init(),
        (LogFormat::Text, true) => builder.without_time().try_init(),
        (LogFormat::Text, false) => builder.try_init(),
    };
    // A second init (tests calling main twice) keeps the first subscriber.
    drop(res);
}

/// Values masked in logs, by owner (`sandboxd` or a run id).
static MASKED_VALUES: LazyLock<Mutex<BTreeMap<String, Vec<SecretString>>>> =
    LazyLock::new(Mutex::default);

/// The masker built from [`MASKED_VALUES`]; `None` while there is nothing
/// to mask.
static LOG_MASKER: RwLock<Option<Arc<Masker>>> = RwLock::new(None);

/// Masks `values` in every log line from now on, until
/// [`unmask_in_logs`] with the same owner.
pub fn mask_in_logs<'a>(owner: &str, values: impl IntoIterator<Item = &'a SecretString>) {
    let values: Vec<SecretString> = values.into_iter().cloned().collect();
    let mut all = MASKED_VALUES.lock().unwrap_or_else(|e| e.into_inner());
    let changed = if values.is_empty() {
        all.remove(owner).is_some()
    } else {
        all.insert(owner.to_owned(), values);
        true
    };
    if changed {
        rebuild(&all);
    }
}

/// Stops masking an owner's values (its run has ended); they are zeroized.
pub fn unmask_in_logs(owner: &str) {
    let mut all = MASKED_VALUES.lock().unwrap_or_else(|e| e.into_inner());
    if all.remove(owner).is_some() {
        rebuild(&all);
    }
}

fn rebuild(all: &BTreeMap<String, Vec<SecretString>>) {
    let masker = Masker::new(
        all.values()
            .flatten()
            .map(|value| value.expose_secret().as_bytes()),
    );
    let masker = (!masker.is_empty()).then(|| Arc::new(masker));
    *LOG_MASKER.write().unwrap_or_else(|e| e.into_inner()) = masker;
}

/// A log line on its way to stderr: collected, masked, then written whole
/// when the formatter drops it (once per event).
#[derive(Default)]
struct MaskedStderr {
    line: Vec<u8>,
}

impl Write for MaskedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for MaskedStderr {
    fn drop(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let masker = LOG_MASKER.read().unwrap_or_else(|e| e.into_inner()).clone();
        let line = match masker {
            Some(masker) => masker.mask(&self.line),
            None => std::mem::take(&mut self.line),
        };
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_registered_values_until_unmasked() {
        let value = SecretString::from("log-secret-value-42");
        mask_in_logs("test-run", [&value]);
        let masker = LOG_MASKER.read().unwrap().clone().unwrap();
        assert_eq!(masker.mask(b"a log-secret-value-42 b"), b"a **** b");
        unmask_in_logs("test-run");
        let left = LOG_MASKER.read().unwrap().clone();
        assert!(left.is_none_or(|m| m.mask(b"log-secret-value-42") == b"log-secret-value-42"));
    }
}

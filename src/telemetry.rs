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
use std::sync::{Arc, Mutex, RwLock};

use secrecy::{ExposeSecret, SecretString};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::secrets::mask::Masker;

/// Installs the global subscriber. Call once, from `main`. Every line is
/// masked with the returned [`LogMasks`], which the daemon fills.
pub(crate) fn init(format: LogFormat, verbosity: u8) -> LogMasks {
    let masks = LogMasks::default();
    let writer_masks = masks.clone();
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
        .with_writer(move || MaskedStderr {
            line: Vec::new(),
            masks: writer_masks.clone(),
        });
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
    masks
}

/// What every log line of one daemon is masked with: the values of each
/// owner (`sandboxd` for the daemon's own credentials, or a run id). Made
/// by [`init`] for the subscriber's writer and passed to the daemon; cheap
/// to clone.
#[derive(Clone, Default)]
pub struct LogMasks {
    inner: Arc<MaskState>,
}

#[derive(Default)]
struct MaskState {
    values: Mutex<BTreeMap<String, Vec<SecretString>>>,
    /// Built from `values`; `None` while there is nothing to mask.
    masker: RwLock<Option<Arc<Masker>>>,
}

impl LogMasks {
    /// Masks `values` in every log line from now on, until [`LogMasks::unmask`]
    /// with the same owner; replaces what the owner had.
    pub fn mask<'a>(&self, owner: &str, values: impl IntoIterator<Item = &'a SecretString>) {
        let values: Vec<SecretString> = values.into_iter().cloned().collect();
        let mut all = self.lock_values();
        if values.is_empty() && all.remove(owner).is_none() {
            return;
        }
        if !values.is_empty() {
            all.insert(owner.to_owned(), values);
        }
        self.rebuild(&all);
    }

    /// Adds `values` to what an owner's lines are masked with.
    pub fn add<'a>(&self, owner: &str, values: impl IntoIterator<Item = &'a SecretString>) {
        let mut all = self.lock_values();
        all.entry(owner.to_owned())
            .or_default()
            .extend(values.into_iter().cloned());
        self.rebuild(&all);
    }

    /// Stops masking an owner's values (its run has ended); they are zeroized.
    pub fn unmask(&self, owner: &str) {
        let mut all = self.lock_values();
        if all.remove(owner).is_some() {
            self.rebuild(&all);
        }
    }

    fn current(&self) -> Option<Arc<Masker>> {
        self.inner
            .masker
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    fn rebuild(&self, all: &BTreeMap<String, Vec<SecretString>>) {
        let masker = Masker::new(
            all.values()
                .flatten()
                .map(|value| value.expose_secret().as_bytes()),
        );
        let masker = (!masker.is_empty()).then(|| Arc::new(masker));
        *self.inner.masker.write().unwrap_or_else(|e| e.into_inner()) = masker;
    }

    fn lock_values(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<SecretString>>> {
        self.inner.values.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A log line on its way to stderr: collected, masked, then written whole
/// when the formatter drops it (once per event).
struct MaskedStderr {
    line: Vec<u8>,
    masks: LogMasks,
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
        let line = match self.masks.current() {
            Some(masker) => masker.mask(&self.line),
            None => std::mem::take(&mut self.line),
        };
        let _ = std::io::stderr().lock().write_all(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Registered values are masked until their owner is unmasked, and
    /// two daemons' masks are their own.
    #[test]
    fn masks_registered_values_until_unmasked() {
        let masks = LogMasks::default();
        let other = LogMasks::default();
        let value = SecretString::from("log-secret-value-42");
        masks.mask("test-run", [&value]);
        let masker = masks.current().unwrap();
        assert_eq!(masker.mask(b"a log-secret-value-42 b"), b"a **** b");
        assert!(other.current().is_none());
        let later = SecretString::from("rotated-value-43");
        masks.add("test-run", [&later]);
        assert_eq!(masks.current().unwrap().mask(b"rotated-value-43"), b"****");
        masks.unmask("test-run");
        assert!(masks.current().is_none());
    }
}

//! Secrets: the sources a run may name ([`source`]), their resolution
//! ([`resolve`]), and masking ([`mask`]).
//!
//! Custody rules, kept by these modules and the runs registry:
//! - a value is only ever a [`SecretString`] in the daemon, zeroized when
//!   dropped; it reaches a child only through the env in the shim spec
//!   (a pipe, never a file), whose buffers are zeroized after use;
//! - no value appears in an error, a log field or `Debug` output, and every
//!   log line is masked anyway ([`crate::telemetry`]);
//! - the daemon's session key goes only to the configured cloud API and
//!   agent-server origins (the latter only while its port's listener has
//!   the expected uid), never to link-local or metadata addresses, and
//!   never into a child or a resolved value ([`custody`]);
//! - a value a run resolves after its start is masked in its output
//!   before the run gets it ([`mask::LiveMasker`]).

pub mod custody;
pub mod mask;
pub mod resolve;
pub mod source;

use zeroize::Zeroizing;

pub use resolve::Resolver;
pub use source::{parse_map, SecretMap, SecretSource};

/// Why a secret source is wrong or could not be resolved. Messages name
/// the env var (and a named secret's name), never a value.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The source is malformed (answered 400 before anything starts).
    #[error("secrets.{var}: {reason}")]
    Invalid {
        /// The env var the source is for.
        var: String,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The source could not be resolved (answered 424; nothing started).
    #[error("secret {var}{} could not be resolved: {reason}", named(name))]
    Unresolved {
        /// The env var the source is for.
        var: String,
        /// The secret's name, for a named secret.
        name: Option<String>,
        /// The last HTTP status, when the server answered.
        status: Option<u16>,
        /// What failed and how to fix it.
        reason: String,
    },
}

fn named(name: &Option<String>) -> String {
    match name {
        Some(name) => format!(" (named secret {name:?})"),
        None => String::new(),
    }
}

/// Appends to a buffer holding secret bytes without leaving copies behind:
/// when it must grow, the new buffer is allocated here and the old one is
/// zeroized (a plain `Vec` reallocation frees the old bytes as they are).
pub fn append_zeroizing(buf: &mut Zeroizing<Vec<u8>>, data: &[u8]) {
    let needed = buf.len() + data.len();
    if needed > buf.capacity() {
        let mut grown = Zeroizing::new(Vec::with_capacity(needed.max(buf.capacity() * 2)));
        grown.extend_from_slice(buf);
        *buf = grown;
    }
    buf.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_zeroizing_keeps_the_bytes() {
        let mut buf = Zeroizing::new(Vec::with_capacity(2));
        for chunk in [&b"ab"[..], b"cde", b"", b"fghij"] {
            append_zeroizing(&mut buf, chunk);
        }
        assert_eq!(buf.as_slice(), b"abcdefghij");
    }

    #[test]
    fn errors_never_carry_values() {
        let err = SecretError::Unresolved {
            var: "GH".into(),
            name: Some("gh".into()),
            status: Some(404),
            reason: "GET http://h/x answered 404 Not Found".into(),
        };
        assert_eq!(
            err.to_string(),
            "secret GH (named secret \"gh\") could not be resolved: GET http://h/x answered 404 Not Found"
        );
    }
}

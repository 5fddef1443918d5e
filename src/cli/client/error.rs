//! [`ClientError`]: every way a client command fails, each displayed as
//! one line that says what to do, and the helpers that turn a transport
//! error into its reason.

use reqwest::StatusCode;

/// Why a client command failed. Displayed as the one line after `sandboxd: `.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing answers at the URL.
    #[error(
        "cannot reach sandboxd at {url} ({reason}); start it with `sandboxd serve`, \
         or point --url / SANDBOXD_URL at the running daemon"
    )]
    Unreachable {
        /// The URL tried.
        url: String,
        /// Connection refused, no such socket, timed out...
        reason: String,
    },
    /// The daemon answered before, then stopped answering while a command
    /// followed a run: the run may well still be going.
    #[error(
        "lost sandboxd at {url} while following run {run_id} ({reason}); the daemon stopped or \
         restarted, and the run may still be going (runs outlive the daemon): once the daemon \
         is back, `sandboxd logs -f {run_id}` follows it to its end"
    )]
    Detached {
        /// The URL.
        url: String,
        /// The run followed.
        run_id: String,
        /// Connection refused...
        reason: String,
    },
    /// The daemon answered with an error.
    #[error("{message} ({code}){}", hint.map(|h| format!("; {h}")).unwrap_or_default())]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The wire code (`run_not_found`).
        code: String,
        /// The daemon's sentence.
        message: String,
        /// What the user can do about it, when we know better than the daemon.
        hint: Option<&'static str>,
    },
    /// Something answered, but not like sandboxd does.
    #[error("unexpected answer from {url}: {detail}")]
    Protocol {
        /// The URL asked.
        url: String,
        /// What was wrong.
        detail: String,
    },
    /// A local file or terminal operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done.
        action: &'static str,
        /// On what.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The command line asks for something that cannot work.
    #[error("{0}")]
    Usage(String),
}
impl ClientError {
    /// An unreachable daemon while following `run_id` becomes
    /// [`ClientError::Detached`]; other errors are kept.
    pub fn detached(self, run_id: &str) -> ClientError {
        match self {
            ClientError::Unreachable { url, reason } => ClientError::Detached {
                url,
                run_id: run_id.to_owned(),
                reason,
            },
            other => other,
        }
    }

    /// The wire code, for API errors.
    pub fn code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
pub(super) fn connect_reason(err: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(cause) = source {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => "connection refused".to_owned(),
                std::io::ErrorKind::NotFound => "no such socket".to_owned(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_owned(),
                _ => io.to_string(),
            };
        }
        source = cause.source();
    }
    if err.is_timeout() {
        return "timed out".to_owned();
    }
    error_chain(err)
}

pub(super) fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let line = cause.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        source = cause.source();
    }
    text
}

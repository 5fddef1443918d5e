//! `POST /v1/runs/{run_id}/bundle` with a URL: sandboxd downloads the
//! archive itself and streams it into the same extraction as a PUT, with
//! the compressed-size limit enforced while downloading.
//!
//! The origin answering 4xx (but 408 and 429) is permanent; connect
//! errors, timeouts, 408, 429 and 5xx are worth retrying. URLs in errors
//! and logs lose their query string and credentials (presigned URLs carry
//! signatures there).

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};

use super::bundle::Commit;
use super::{BundleSummary, Started, UploadError, Uploader};

/// A validated download request.
pub struct FetchRequest {
    /// http or https URL.
    pub url: reqwest::Url,
    /// Request headers; values may be credentials.
    pub headers: Vec<(String, SecretString)>,
    /// Limit of the whole download.
    pub timeout: Duration,
    /// The SHA-256 the downloaded bytes must have.
    pub sha256: Option<[u8; 32]>,
}

impl FetchRequest {
    /// Checks the URL (http/https with a host) and the header names and
    /// values.
    pub fn new(
        url: &str,
        headers: Vec<(String, SecretString)>,
        timeout: Duration,
    ) -> Result<FetchRequest, UploadError> {
        let parsed = reqwest::Url::parse(url).map_err(|err| {
            UploadError::Invalid(format!(
                "url is not a valid URL ({err}); send an http:// or https:// URL"
            ))
        })?;
        if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
            return Err(UploadError::Invalid(format!(
                "url {} must be an http:// or https:// URL with a host",
                shown(&parsed)
            )));
        }
        for (name, value) in &headers {
            if HeaderName::from_bytes(name.as_bytes()).is_err() {
                return Err(UploadError::Invalid(format!(
                    "headers: {name:?} is not a valid header name"
                )));
            }
            if HeaderValue::from_str(value.expose_secret()).is_err() {
                return Err(UploadError::Invalid(format!(
                    "headers: the value of {name:?} is not a valid header value"
                )));
            }
        }
        Ok(FetchRequest {
            url: parsed,
            headers,
            timeout,
            sha256: None,
        })
    }

    /// Commits the bundle only when the downloaded bytes have this
    /// SHA-256 (64 hex digits).
    pub fn with_sha256(mut self, text: &str) -> Result<FetchRequest, UploadError> {
        let invalid = || {
            UploadError::Invalid(format!(
                "sha256 {:?} must be 64 hex digits",
                text.chars().take(80).collect::<String>()
            ))
        };
        if text.len() != 64 {
            return Err(invalid());
        }
        let mut digest = [0u8; 32];
        for (i, byte) in digest.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| invalid())?;
        }
        self.sha256 = Some(digest);
        Ok(self)
    }

    fn header_map(&self) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in &self.headers {
            let (Ok(name), Ok(mut value)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_str(value.expose_secret()),
            ) else {
                continue; // Checked in `new`.
            };
            value.set_sensitive(true);
            map.append(name, value);
        }
        map
    }
}

impl Uploader {
    /// Downloads `request.url` and extracts it as the run's bundle.
    pub async fn fetch_bundle(
        &self,
        http: &reqwest::Client,
        run_id: &str,
        request: FetchRequest,
        replace: bool,
        started: Started,
    ) -> Result<BundleSummary, UploadError> {
        let busy = self.begin(run_id, replace, &started)?;
        let url = shown(&request.url);
        let timeout = request.timeout;
        let response = http
            .get(request.url.clone())
            .headers(request.header_map())
            .timeout(timeout)
            .send()
            .await
            .map_err(|err| failed(&url, err, timeout))?;
        let status = response.status();
        if status.is_client_error()
            && status != StatusCode::REQUEST_TIMEOUT
            && status != StatusCode::TOO_MANY_REQUESTS
        {
            return Err(UploadError::Unavailable {
                url,
                status: status.as_u16(),
            });
        }
        if !status.is_success() {
            return Err(UploadError::FetchFailed {
                url,
                reason: format!("the origin answered {status}"),
            });
        }
        let limit = self.limits().max_bundle_bytes;
        if response.content_length().is_some_and(|len| len > limit) {
            return Err(UploadError::BundleTooLarge { limit });
        }
        tracing::info!(run_id, url, "downloading a bundle");
        let on_error = move |err| failed(&url, err, timeout);
        let body = response.bytes_stream();
        let commit = Commit {
            replace,
            sha256: request.sha256,
        };
        self.receive(busy, body, commit, started, on_error, false)
            .await
    }
}

/// The URL as shown in messages: scheme, host, port and path only.
fn shown(url: &reqwest::Url) -> String {
    let mut url = url.clone();
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.set_query(None);
    url.set_fragment(None);
    url.to_string()
}

fn failed(url: &str, err: reqwest::Error, timeout: Duration) -> UploadError {
    let reason = if err.is_timeout() {
        format!(
            "no complete answer within timeout_s={}",
            timeout.as_secs_f64()
        )
    } else if err.is_connect() {
        format!("cannot connect: {}", root_cause(&err))
    } else {
        root_cause(&err)
    };
    UploadError::FetchFailed {
        url: url.to_owned(),
        reason,
    }
}

/// The error and its sources, without the URL reqwest puts in its text.
fn root_cause(err: &reqwest::Error) -> String {
    let mut text = String::from("the download failed");
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Query strings and credentials never reach a message.
    #[test]
    fn shown_urls_hide_secrets() {
        let url = reqwest::Url::parse("https://user:pw@host:8443/a/b.tar.gz?X-Amz-Signature=abc#f")
            .unwrap();
        assert_eq!(shown(&url), "https://host:8443/a/b.tar.gz");
    }

    /// Only http(s) URLs with a host, and valid headers, are accepted.
    #[test]
    fn requests_are_checked() {
        let t = Duration::from_secs(1);
        assert!(FetchRequest::new("https://h/x.tgz", vec![], t).is_ok());
        for url in ["ftp://h/x", "file:///etc/passwd", "not a url", "http://"] {
            assert!(FetchRequest::new(url, vec![], t).is_err(), "{url}");
        }
        let bad_name = vec![("bad name".to_owned(), SecretString::from("v"))];
        assert!(FetchRequest::new("https://h/x", bad_name, t).is_err());
        let bad_value = vec![("x-token".to_owned(), SecretString::from("a\nb"))];
        let err = FetchRequest::new("https://h/x", bad_value, t)
            .err()
            .unwrap()
            .to_string();
        assert!(!err.contains("a\nb"), "never echoes a value: {err}");
    }
}

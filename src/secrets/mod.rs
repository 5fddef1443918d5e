//! Secrets: the sources a run may name, their resolution, and masking.

pub mod mask;

use std::collections::BTreeMap;
use std::sync::Arc;

use secrecy::SecretString;

use crate::config::Config;

/// Env var name -> secret source, as sent in a run's `secrets`.
pub type SecretMap = BTreeMap<String, serde_json::Value>;

/// Why a secret could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// Not built yet.
    #[error("secrets are not available in this build yet; send the run without `secrets`")]
    NotImplemented,
}

/// Resolves secret sources.
#[derive(Clone)]
pub struct Resolver {
    _config: Arc<Config>,
    _http: reqwest::Client,
}

impl Resolver {
    /// A resolver with the daemon's key, origins and HTTP client.
    pub fn new(config: Arc<Config>, http: reqwest::Client) -> Resolver {
        Resolver {
            _config: config,
            _http: http,
        }
    }

    /// Resolves every entry, concurrently; the first failure fails all.
    pub async fn resolve_all(
        &self,
        secrets: &SecretMap,
    ) -> Result<Vec<(String, SecretString)>, SecretError> {
        if secrets.is_empty() {
            return Ok(Vec::new());
        }
        Err(SecretError::NotImplemented)
    }
}

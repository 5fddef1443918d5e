//! Run tokens: each run's own credential for its calls back to sandboxd,
//! found by digest.

use std::collections::HashMap;
use std::sync::Mutex;

use secrecy::{ExposeSecret, SecretString};

/// Run ids by the SHA-256 of their token: a lookup compares digests, so
/// its timing says nothing about how much of a token was guessed.
#[derive(Default)]
pub(super) struct RunTokens {
    owners: Mutex<HashMap<[u8; 32], String>>,
}

impl RunTokens {
    /// `token` now names `run_id`.
    pub(super) fn insert(&self, token: &SecretString, run_id: &str) {
        self.lock().insert(digest(token), run_id.to_owned());
    }

    /// `token` names nothing any more.
    pub(super) fn remove(&self, token: &SecretString) {
        self.lock().remove(&digest(token));
    }

    /// The run `token` names.
    pub(super) fn owner(&self, token: &str) -> Option<String> {
        let token = SecretString::from(token);
        self.lock().get(&digest(&token)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], String>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn digest(token: &SecretString) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(token.expose_secret().as_bytes()).into()
}

/// A fresh run token: 32 random bytes, hex.
pub(super) fn new_token() -> SecretString {
    use rand::RngCore;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    SecretString::from(hex)
}

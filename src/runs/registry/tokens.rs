//! The run each token digest names.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::runs::token::TokenDigest;

/// Run ids by token digest.
#[derive(Default)]
pub(super) struct RunTokens {
    owners: Mutex<HashMap<TokenDigest, String>>,
}

impl RunTokens {
    /// `digest` now names `run_id`.
    pub(super) fn insert(&self, digest: TokenDigest, run_id: &str) {
        self.lock().insert(digest, run_id.to_owned());
    }

    /// `digest` names nothing any more.
    pub(super) fn remove(&self, digest: TokenDigest) {
        self.lock().remove(&digest);
    }

    /// The run a presented token names.
    pub(super) fn owner(&self, token: &str) -> Option<String> {
        self.lock().get(&TokenDigest::of(token)).cloned()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<TokenDigest, String>> {
        self.owners.lock().unwrap_or_else(|e| e.into_inner())
    }
}

//! Run tokens: each run's own credential for its calls back to sandboxd.
//! The daemon keeps only a token's SHA-256 (in memory and in the run's
//! record); the token itself goes to the run's env once, at its start.

use secrecy::SecretString;

/// The SHA-256 of a run token: what the daemon keeps. Comparing digests
/// says nothing, by its timing, about how much of a token was guessed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenDigest([u8; 32]);

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

impl TokenDigest {
    /// The digest of a presented token.
    pub fn of(token: &str) -> TokenDigest {
        use sha2::Digest;
        TokenDigest(sha2::Sha256::digest(token.as_bytes()).into())
    }

    /// Lowercase hex, as records store it.
    pub fn to_hex(self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// From lowercase (or uppercase) hex; `None` if it is not 64 hex digits.
    pub fn from_hex(text: &str) -> Option<TokenDigest> {
        if text.len() != 64 {
            return None;
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        Some(TokenDigest(bytes))
    }
}

/// A fresh run token (32 random bytes, hex) and its digest.
pub fn new_token() -> (SecretString, TokenDigest) {
    use rand::RngCore;
    let mut bytes = zeroize::Zeroizing::new([0u8; 32]);
    rand::rngs::OsRng.fill_bytes(bytes.as_mut());
    let hex = zeroize::Zeroizing::new(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>());
    let digest = TokenDigest::of(&hex);
    (SecretString::from(hex.as_str()), digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    /// A digest survives hex, and a new token matches its digest.
    #[test]
    fn digests_round_trip_and_match() {
        let (token, digest) = new_token();
        assert_eq!(TokenDigest::of(token.expose_secret()), digest);
        assert_eq!(TokenDigest::from_hex(&digest.to_hex()), Some(digest));
        assert_eq!(TokenDigest::from_hex("zz"), None);
        assert_eq!(TokenDigest::from_hex(&"g".repeat(64)), None);
    }
}

//! Masking of secret values in byte streams.
//!
//! Every secret value is replaced by `****`. Values arrive split across
//! reads, so [`StreamMasker`] holds back the end of a chunk only while it
//! could be the start of a secret (a proper prefix of some value), until
//! the next chunk (or the end) decides. Output that cannot begin a secret
//! passes at once, so live followers see it without delay. Matching is
//! leftmost-longest over all values at once (Aho-Corasick), so overlapping
//! secrets mask the longer one.
//!
//! Memory stays bounded: between chunks at most `longest - 1` bytes are
//! held, and a chunk is masked in place of being accumulated.
//!
//! # The minimum length
//!
//! Values shorter than [`MIN_MASKED_LEN`] (3) bytes are not masked; every
//! value of 3 bytes or more is, whatever the chunking (tested one byte at a
//! time for every length from 3 to 200, in the unit tests below and through
//! a real child in the integration tests). Why not shorter ones:
//! - a 1- or 2-byte value occurs everywhere: masking every `a`, `1` or `ok`
//!   would shred ordinary output (numbers, words, JSON) into `****` and make
//!   the logs useless for the people debugging the run;
//! - it hides nothing: a 2-byte value has at most 65,536 possibilities, and
//!   the surrounding output would still show where it was used;
//! - 3 bytes is the smallest length where a match is rare in ordinary text,
//!   while no real credential is that short. Other systems sit on both sides
//!   (GitLab refuses to mask CI variables under 8 characters; GitHub masks
//!   any registered value); 3 keeps short PINs and codes masked.
//!
//! Pattern bytes are zeroized when the last clone of a [`Masker`] is
//! dropped. The automaton built from them is not (`aho-corasick` has no
//! zeroizing mode); it lives in the non-dumpable daemon and shim only.

use std::sync::Arc;

use aho_corasick::{AhoCorasick, MatchKind};
use zeroize::Zeroizing;

/// What a secret value is replaced by.
pub const MASK: &[u8] = b"****";

/// Shortest value that is masked, in bytes.
pub const MIN_MASKED_LEN: usize = 3;

/// A set of values to mask; cheap to share, builds stream maskers.
#[derive(Clone)]
pub struct Masker {
    matcher: Option<AhoCorasick>,
    patterns: Arc<Vec<Zeroizing<Vec<u8>>>>,
    /// `first_bytes[b]`: some value starts with byte `b`.
    first_bytes: Arc<[bool; 256]>,
    longest: usize,
}

impl std::fmt::Debug for Masker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Masker")
            .field("longest", &self.longest)
            .finish_non_exhaustive()
    }
}

impl Masker {
    /// A masker for these values; values shorter than [`MIN_MASKED_LEN`]
    /// are left out.
    pub fn new<I, V>(values: I) -> Masker
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut patterns: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .filter(|v| v.as_ref().len() >= MIN_MASKED_LEN)
            .map(|v| Zeroizing::new(v.as_ref().to_vec()))
            .collect();
        patterns.sort_by(|a, b| a.as_slice().cmp(b.as_slice()));
        patterns.dedup_by(|a, b| a.as_slice() == b.as_slice());
        let longest = patterns.iter().map(|p| p.len()).max().unwrap_or(0);
        let matcher = if patterns.is_empty() {
            None
        } else {
            // Building fails only past aho-corasick's size limits (billions
            // of states), far beyond any set of values a run can be given.
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .build(patterns.iter().map(|p| p.as_slice()))
                .ok()
        };
        let mut first_bytes = [false; 256];
        for pattern in &patterns {
            first_bytes[usize::from(pattern[0])] = true;
        }
        Masker {
            matcher,
            patterns: Arc::new(patterns),
            first_bytes: Arc::new(first_bytes),
            longest,
        }
    }

    /// The first index at or after `from` where the rest of `buf` is a
    /// proper prefix of some value (so it may continue in the next chunk);
    /// `buf.len()` when there is none.
    fn hold_start(&self, buf: &[u8], from: usize) -> usize {
        let start = from.max(buf.len().saturating_sub(self.longest.saturating_sub(1)));
        (start..buf.len())
            .find(|&i| {
                let rest = &buf[i..];
                self.first_bytes[usize::from(rest[0])]
                    && self
                        .patterns
                        .iter()
                        .any(|p| p.len() > rest.len() && p.starts_with(rest))
            })
            .unwrap_or(buf.len())
    }

    /// Whether there is nothing to mask.
    pub fn is_empty(&self) -> bool {
        self.matcher.is_none()
    }

    /// Masks a whole buffer at once.
    pub fn mask(&self, input: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(input.len());
        let mut stream = self.stream();
        stream.push(input, &mut out);
        stream.finish(&mut out);
        out
    }

    /// Masks a string, for error texts.
    pub fn mask_str(&self, input: &str) -> String {
        String::from_utf8_lossy(&self.mask(input.as_bytes())).into_owned()
    }

    /// A masker for one stream of chunks.
    pub fn stream(&self) -> StreamMasker {
        StreamMasker {
            masker: self.clone(),
            pending: Vec::new(),
        }
    }
}

/// Masks one stream chunk by chunk; holds back a short tail between chunks.
pub struct StreamMasker {
    masker: Masker,
    pending: Vec<u8>,
}

impl StreamMasker {
    /// Adds a chunk; appends to `out` every byte that can no longer be
    /// part of a secret.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        let Some(matcher) = &self.masker.matcher else {
            out.extend_from_slice(chunk);
            return;
        };
        let held = !self.pending.is_empty();
        if held {
            self.pending.extend_from_slice(chunk);
        }
        let buf: &[u8] = if held { &self.pending } else { chunk };
        // No match can start before `hold` and end past `buf`: from `hold`
        // on, `buf` is a prefix of some value that the next chunk may
        // complete. A match starting before `hold` is complete (and is the
        // longest one there, or a longer value would have moved `hold`).
        let mut hold = self.masker.hold_start(buf, 0);
        let mut emitted = 0;
        for found in matcher.find_iter(buf) {
            if found.start() >= hold {
                break;
            }
            out.extend_from_slice(&buf[emitted..found.start()]);
            out.extend_from_slice(MASK);
            emitted = found.end();
            if emitted > hold {
                hold = self.masker.hold_start(buf, emitted);
            }
        }
        let keep_from = emitted.max(hold);
        out.extend_from_slice(&buf[emitted..keep_from]);
        // Keep the undecided tail in the same buffer: no allocation per chunk.
        if held {
            self.pending.drain(..keep_from);
        } else {
            self.pending.extend_from_slice(&chunk[keep_from..]);
        }
    }

    /// Ends the stream, flushing the held-back tail.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        let pending = std::mem::take(&mut self.pending);
        if let Some(matcher) = &self.masker.matcher {
            let mut emitted = 0;
            for found in matcher.find_iter(&pending) {
                out.extend_from_slice(&pending[emitted..found.start()]);
                out.extend_from_slice(MASK);
                emitted = found.end();
            }
            out.extend_from_slice(&pending[emitted..]);
        } else {
            out.extend_from_slice(&pending);
        }
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunked(masker: &Masker, input: &[u8], size: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut stream = masker.stream();
        for chunk in input.chunks(size.max(1)) {
            stream.push(chunk, &mut out);
        }
        stream.finish(&mut out);
        out
    }

    #[test]
    fn masks_whole_and_split_values() {
        let masker = Masker::new(["secret-value", "tok"]);
        let input = b"a secret-value b tok c secret-valu";
        for size in 1..input.len() + 1 {
            assert_eq!(
                chunked(&masker, input, size),
                b"a **** b **** c secret-valu",
                "chunk size {size}"
            );
        }
    }

    #[test]
    fn longest_overlapping_value_wins() {
        let masker = Masker::new(["abc", "abcdef"]);
        for size in 1..8 {
            assert_eq!(chunked(&masker, b"xabcdefy abcz", size), b"x****y ****z");
        }
    }

    #[test]
    fn every_length_from_min_to_200_is_masked_one_byte_at_a_time() {
        for len in MIN_MASKED_LEN..=200 {
            let value: Vec<u8> = (0..len).map(|i| b'A' + (i % 26) as u8).collect();
            let masker = Masker::new([&value]);
            let mut input = b"<".to_vec();
            input.extend_from_slice(&value);
            input.extend_from_slice(b">");
            assert_eq!(chunked(&masker, &input, 1), b"<****>", "len {len}");
        }
    }

    #[test]
    fn holds_back_only_what_may_start_a_secret() {
        let masker = Masker::new(["secret"]);
        let mut stream = masker.stream();
        let mut out = Vec::new();
        stream.push(b"line one\n", &mut out);
        assert_eq!(
            out, b"line one\n",
            "nothing that could start a secret is held"
        );
        out.clear();
        stream.push(b"x sec", &mut out);
        assert_eq!((out.as_slice(), stream.pending_len()), (&b"x "[..], 3));
        stream.push(b"ond", &mut out);
        assert_eq!(out, b"x second");
    }

    #[test]
    fn short_values_and_no_values_pass_through() {
        let masker = Masker::new(["ab"]);
        assert!(masker.is_empty());
        assert_eq!(masker.mask(b"abab"), b"abab");
    }
}

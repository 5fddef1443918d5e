//! Masking of secret values in byte streams.
//!
//! Every secret value is replaced by `****`. Values arrive split across
//! reads, so [`StreamMasker`] holds back the end of a chunk only while it
//! could be the start of a secret (a proper prefix of some value), until
//! the next chunk (or the end) decides. Output that cannot begin a secret
//! passes at once, so live followers see it without delay. Every
//! occurrence of every value that matters is found (Aho-Corasick: a
//! leftmost-longest search, then anchored steps where a value can stick
//! out of a match) and the union of their spans is masked: overlapping or
//! adjacent occurrences become one `****`, so no fragment of a value is
//! left in clear (values `abcdefgh12` and `12ijklmn` in
//! `abcdefgh12ijklmn` give `****`, never `****ijklmn`). A masked span that
//! reaches the held-back tail stays open until the next chunk decides
//! whether an overlapping value extends it.
//!
//! Values can be added while streams run ([`LiveMasker`]): a run's values
//! resolved after its start.
//!
//! Memory stays bounded: between chunks at most `longest - 1` bytes are
//! held, and a chunk is masked in place of being accumulated.
//!
//! # Speed
//!
//! On log-like text, Aho-Corasick's own prefilter finds too many candidate
//! positions once there are dozens of alphanumeric values (about 1 GB/s for
//! 50 tokens, slower than the pipe it masks). When every value is at least
//! [`SAMPLE_MIN_LEN`] bytes long, a [`Sampler`] first looks at one 8-byte
//! window every `shortest - 7` bytes: any occurrence of a value covers one
//! such window entirely, so a window whose bytes are no 8-byte piece of a
//! value rules out every occurrence around it (overlapping ones too). Aho-Corasick then runs only
//! around the windows that may belong to a value, and still decides every
//! match, so the result is exactly that of a full search.
//!
//! # The minimum length
//!
//! Values shorter than [`MIN_MASKED_LEN`] (3) bytes are not masked; every
//! value of 3 bytes or more is, whatever the chunking (tested one byte at a
//! time for every length from 3 to 200, in the unit tests (`mask/tests.rs`) and through
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

mod live;
mod sample;
mod stream;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};
use zeroize::Zeroizing;

pub use live::LiveMasker;
use sample::Sampler;
pub use stream::StreamMasker;

/// What a secret value is replaced by.
pub const MASK: &[u8] = b"****";

/// Shortest value that is masked, in bytes.
pub const MIN_MASKED_LEN: usize = 3;

/// Shortest value length for which the [`Sampler`] is used (all values must
/// be at least this long; shorter ones get a full search).
pub const SAMPLE_MIN_LEN: usize = 16;

/// A set of values to mask; cheap to share, builds stream maskers.
#[derive(Clone)]
pub struct Masker {
    /// Leftmost-longest (packed SIMD prefilters exist only for leftmost
    /// semantics), unanchored and anchored.
    matcher: Option<AhoCorasick>,
    /// `overlaps[p]`: every `k` such that the last `k` bytes of value `p`
    /// are a proper prefix of some value, so an occurrence of that value
    /// may start `k` bytes before the end of one of `p` and stick out of
    /// it. Usually empty or `[1]`.
    overlaps: Arc<Vec<Vec<usize>>>,
    patterns: Arc<Vec<Zeroizing<Vec<u8>>>>,
    /// `first_bytes[b]`: some value starts with byte `b`.
    first_bytes: Arc<[bool; 256]>,
    longest: usize,
    sampler: Option<Arc<Sampler>>,
}

/// For each value, the lengths `k` of its proper suffixes that are proper
/// prefixes of some value (see [`Masker::matches`]).
fn overlaps_of(patterns: &[Zeroizing<Vec<u8>>]) -> Vec<Vec<usize>> {
    let prefixes: std::collections::HashSet<&[u8]> = patterns
        .iter()
        .flat_map(|p| (1..p.len()).map(move |len| &p[..len]))
        .collect();
    patterns
        .iter()
        .map(|p| {
            (1..p.len())
                .filter(|&k| prefixes.contains(&p[p.len() - k..]))
                .collect()
        })
        .collect()
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
            // The contiguous NFA builds ten times faster than the DFA (a
            // masker is built at every run start) and searches as fast
            // behind the prefilter and the sampler.
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostLongest)
                .kind(Some(AhoCorasickKind::ContiguousNFA))
                .start_kind(StartKind::Both)
                .build(patterns.iter().map(|p| p.as_slice()))
                .ok()
        };
        let overlaps = Arc::new(overlaps_of(&patterns));
        let shortest = patterns.iter().map(|p| p.len()).min().unwrap_or(0);
        let sampler =
            (shortest >= SAMPLE_MIN_LEN).then(|| Arc::new(Sampler::new(&patterns, shortest)));
        let mut first_bytes = [false; 256];
        for pattern in &patterns {
            first_bytes[usize::from(pattern[0])] = true;
        }
        Masker {
            matcher,
            overlaps,
            patterns: Arc::new(patterns),
            first_bytes: Arc::new(first_bytes),
            longest,
            sampler,
        }
    }

    /// The spans of every occurrence of every value in `buf` that matter
    /// for their union: the leftmost-longest matches, and every occurrence
    /// that sticks out of one of them (or out of one found so), as
    /// `(start, end)`. Occurrences inside another's span change nothing.
    ///
    /// Every occurrence overlaps a leftmost-longest match (one clear of
    /// them all would have been the leftmost match where the search
    /// resumed); one that sticks out of a match of value `p` starts `k`
    /// bytes before its end for a `k` in `overlaps[p]`, and an anchored
    /// search there finds the longest. So the fast search runs once, and
    /// the rest costs a few anchored steps per match, only for values that
    /// can overlap at all.
    fn matches(&self, matcher: &AhoCorasick, buf: &[u8]) -> Vec<(usize, usize)> {
        let mut leftmost = Vec::new();
        match &self.sampler {
            None => leftmost.extend(matcher.find_iter(buf)),
            Some(sampler) => sampler.ranges(buf, self.longest, |start, end| {
                leftmost.extend(matcher.find_iter(Input::new(buf).range(start..end)));
            }),
        }
        let mut all = Vec::with_capacity(leftmost.len());
        let mut todo = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for found in leftmost {
            all.push((found.start(), found.end()));
            todo.push((found.end(), found.pattern().as_usize()));
            while let Some((end, pattern)) = todo.pop() {
                for &k in &self.overlaps[pattern] {
                    let input = Input::new(buf).range(end - k..).anchored(Anchored::Yes);
                    let Some(next) = matcher.find(input) else {
                        continue;
                    };
                    let key = (next.end(), next.pattern().as_usize());
                    if next.end() > end && seen.insert(key) {
                        all.push((next.start(), next.end()));
                        todo.push(key);
                    }
                }
            }
        }
        all
    }

    /// The first index where the rest of `buf` is a proper prefix of some
    /// value (so it may continue in the next chunk); `buf.len()` when there
    /// is none.
    fn hold_start(&self, buf: &[u8]) -> usize {
        let start = buf.len().saturating_sub(self.longest.saturating_sub(1));
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

    /// A masker for these values and more.
    pub fn with_values<I, V>(&self, more: I) -> Masker
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let more: Vec<Zeroizing<Vec<u8>>> = more
            .into_iter()
            .map(|v| Zeroizing::new(v.as_ref().to_vec()))
            .collect();
        Masker::new(
            self.patterns
                .iter()
                .map(|p| p.as_slice())
                .chain(more.iter().map(|v| v.as_slice())),
        )
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
            covered: 0,
            open: false,
            live: None,
        }
    }
}

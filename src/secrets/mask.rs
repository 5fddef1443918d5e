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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};
use zeroize::Zeroizing;

/// What a secret value is replaced by.
pub const MASK: &[u8] = b"****";

/// Shortest value that is masked, in bytes.
pub const MIN_MASKED_LEN: usize = 3;

/// Shortest value length for which the [`Sampler`] is used (all values must
/// be at least this long; shorter ones get a full search).
pub const SAMPLE_MIN_LEN: usize = 16;

/// Bytes in a sampled window.
const GRAM: usize = 8;

/// Bits in a sampler's set per 8-byte piece of a value: about 1 in 32
/// windows of unrelated text passes the set and is then looked up exactly.
const BITS_PER_GRAM: usize = 32;

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

/// A filter that rules out most of a buffer in a few instructions per
/// `stride` bytes (see the module docs). Written here because no crate
/// offers a sampled multi-pattern filter; it only narrows where
/// Aho-Corasick searches, so it cannot change what is masked (the tests
/// compare it with a full search).
struct Sampler {
    /// A bit per hash of every 8-byte piece of the first `shortest` bytes
    /// of every value.
    bits: Zeroizing<Vec<u64>>,
    /// log2 of the number of bits.
    bits_log2: u32,
    /// The pieces themselves, sorted, to rule out hash collisions before
    /// searching.
    grams: Zeroizing<Vec<u64>>,
    /// Distance between sampled windows: `shortest - GRAM + 1`.
    stride: usize,
    /// How far before a sampled window a value may start: `shortest - GRAM`.
    reach_back: usize,
}

impl Sampler {
    fn new(patterns: &[Zeroizing<Vec<u8>>], shortest: usize) -> Sampler {
        let mut grams = Zeroizing::new(Vec::with_capacity(patterns.len() * (shortest - GRAM + 1)));
        for pattern in patterns {
            grams.extend(pattern[..shortest].windows(GRAM).map(gram_of));
        }
        grams.sort_unstable();
        grams.dedup();
        // 4 KiB to 128 KiB of bits.
        let bits_log2 = (grams.len() * BITS_PER_GRAM)
            .next_power_of_two()
            .trailing_zeros()
            .clamp(15, 20);
        let mut bits = Zeroizing::new(vec![0u64; 1 << (bits_log2 - 6)]);
        for gram in grams.iter() {
            let bit = bit_of(*gram, bits_log2);
            bits[bit >> 6] |= 1 << (bit & 63);
        }
        Sampler {
            bits,
            bits_log2,
            grams,
            stride: shortest - GRAM + 1,
            reach_back: shortest - GRAM,
        }
    }

    /// Whether these 8 bytes are a piece of a value.
    fn has(&self, gram: u64) -> bool {
        let bit = bit_of(gram, self.bits_log2);
        self.bits[bit >> 6] & (1 << (bit & 63)) != 0 && self.grams.binary_search(&gram).is_ok()
    }

    /// Calls `found` with each range of `buf` (merged, in order) that may
    /// hold an occurrence of a value; none lies outside them.
    fn ranges(&self, buf: &[u8], longest: usize, mut found: impl FnMut(usize, usize)) {
        let mut current: Option<(usize, usize)> = None;
        let mut at = 0;
        while at + GRAM <= buf.len() {
            if self.has(gram_of(&buf[at..at + GRAM])) {
                // An occurrence covering this window starts at most
                // `reach_back` before it and ends at most `longest` after.
                let start = at.saturating_sub(self.reach_back);
                let end = (at + longest).min(buf.len());
                current = match current {
                    Some((a, b)) if start <= b => Some((a, b.max(end))),
                    Some((a, b)) => {
                        found(a, b);
                        Some((start, end))
                    }
                    None => Some((start, end)),
                };
            }
            at += self.stride;
        }
        if let Some((a, b)) = current {
            found(a, b);
        }
    }
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

fn gram_of(window: &[u8]) -> u64 {
    let mut bytes = [0u8; GRAM];
    bytes.copy_from_slice(window);
    u64::from_le_bytes(bytes)
}

fn bit_of(gram: u64, bits_log2: u32) -> usize {
    (gram.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits_log2)) as usize
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

/// Masks one stream chunk by chunk; holds back a short tail between chunks.
pub struct StreamMasker {
    masker: Masker,
    /// Bytes not yet written: they may be the start of a value.
    pending: Vec<u8>,
    /// Leading bytes of `pending` that the last `****` written covers.
    covered: usize,
    /// The last thing written is a `****` whose span ends at
    /// `pending[covered]`: a match starting at or before there joins it
    /// instead of writing another.
    open: bool,
    /// Where values added during the stream come from, and the generation
    /// of it that `masker` is.
    live: Option<(LiveMasker, u64)>,
}

/// A span of matched bytes, `start..end`; `written` when its `****` is
/// already out (the open span carried over from the last chunk).
#[derive(Clone, Copy)]
struct Span {
    start: usize,
    end: usize,
    written: bool,
}

/// Merges matches into the union of their spans: overlapping and adjacent
/// ones become one. `open` is a span already written at the start.
fn merge(mut found: Vec<(usize, usize)>, open: Option<usize>) -> Vec<Span> {
    found.sort_unstable();
    let mut merged: Vec<Span> = Vec::with_capacity(found.len() + 1);
    if let Some(end) = open {
        merged.push(Span {
            start: 0,
            end,
            written: true,
        });
    }
    for (start, end) in found {
        match merged.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => merged.push(Span {
                start,
                end,
                written: false,
            }),
        }
    }
    merged
}

impl StreamMasker {
    /// Adds a chunk; appends to `out` every byte that can no longer be
    /// part of a secret.
    ///
    /// What is masked is the union of every occurrence of every value:
    /// overlapping or adjacent occurrences become one `****`, so no piece
    /// of a value is ever left in clear (`abcdefgh12` and `12ijklmn` in
    /// `abcdefgh12ijklmn` give `****`, not `****ijklmn`). A span that
    /// reaches the held-back tail stays open: a value completed by the
    /// next chunk that overlaps it extends the same `****`.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) {
        self.refresh();
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
        // complete. Every match found is complete.
        let hold = self.masker.hold_start(buf);
        let spans = merge(
            self.masker.matches(matcher, buf),
            self.open.then_some(self.covered),
        );
        let mut emitted = 0;
        let (mut covered, mut open) = (0, false);
        for span in spans {
            if span.start >= hold && !span.written {
                // In the held tail: decided with the next chunk.
                break;
            }
            out.extend_from_slice(&buf[emitted..span.start]);
            if !span.written {
                out.extend_from_slice(MASK);
            }
            if span.end >= hold {
                // A match completed later may overlap or touch it.
                (covered, open) = (span.end - hold, true);
                emitted = hold;
                break;
            }
            emitted = span.end;
        }
        out.extend_from_slice(&buf[emitted..hold]);
        (self.covered, self.open) = (covered, open);
        // Keep the undecided tail in the same buffer: no allocation per chunk.
        if held {
            self.pending.drain(..hold);
        } else {
            self.pending.extend_from_slice(&chunk[hold..]);
        }
    }

    /// Ends the stream, flushing the held-back tail.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        self.refresh();
        let pending = std::mem::take(&mut self.pending);
        let open = std::mem::take(&mut self.open).then_some(self.covered);
        self.covered = 0;
        let found = match &self.masker.matcher {
            Some(matcher) => self.masker.matches(matcher, &pending),
            None => Vec::new(),
        };
        let mut emitted = 0;
        for span in merge(found, open) {
            out.extend_from_slice(&pending[emitted..span.start]);
            if !span.written {
                out.extend_from_slice(MASK);
            }
            emitted = span.end;
        }
        out.extend_from_slice(&pending[emitted..]);
    }

    /// Bytes held back, waiting for the next chunk.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// Takes up the values added to the live masker since the last chunk.
    /// Bytes held back are searched again with them; bytes already
    /// written were decided without them.
    fn refresh(&mut self) {
        let Some((live, generation)) = &mut self.live else {
            return;
        };
        let now = live.shared.generation.load(Ordering::Acquire);
        if now != *generation {
            let current = lock(&live.shared.masker).clone();
            self.masker = current;
            *generation = now;
        }
    }
}

/// A masker that takes more values while streams use it: values resolved
/// during a run. A stream picks them up at its next chunk (one atomic load
/// per chunk when nothing changed), so bytes read after [`LiveMasker::add`]
/// returns are masked with them.
#[derive(Clone)]
pub struct LiveMasker {
    shared: Arc<LiveShared>,
}

struct LiveShared {
    generation: AtomicU64,
    masker: Mutex<Masker>,
}

impl LiveMasker {
    /// Starts with these values.
    pub fn new(masker: Masker) -> LiveMasker {
        LiveMasker {
            shared: Arc::new(LiveShared {
                generation: AtomicU64::new(0),
                masker: Mutex::new(masker),
            }),
        }
    }

    /// Adds values (the set is rebuilt: values arrive a few at a time, a
    /// rebuild takes microseconds to a few milliseconds).
    pub fn add<I, V>(&self, values: I)
    where
        I: IntoIterator<Item = V>,
        V: AsRef<[u8]>,
    {
        let mut masker = lock(&self.shared.masker);
        let added: Vec<Zeroizing<Vec<u8>>> = values
            .into_iter()
            .map(|v| Zeroizing::new(v.as_ref().to_vec()))
            .collect();
        let fresh = added.iter().any(|v| {
            v.len() >= MIN_MASKED_LEN
                && !masker.patterns.iter().any(|p| p.as_slice() == v.as_slice())
        });
        if !fresh {
            return;
        }
        *masker = masker.with_values(added.iter());
        self.shared.generation.fetch_add(1, Ordering::Release);
    }

    /// The values now.
    pub fn current(&self) -> Masker {
        lock(&self.shared.masker).clone()
    }

    /// A stream masker that takes up values added later.
    pub fn stream(&self) -> StreamMasker {
        let generation = self.shared.generation.load(Ordering::Acquire);
        let mut stream = self.current().stream();
        stream.live = Some((self.clone(), generation));
        stream
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain reference, written for obviousness: mark every byte of
    /// every occurrence of every value (at least [`MIN_MASKED_LEN`] long),
    /// then write each run of marked bytes as one `****`.
    fn reference<V: AsRef<[u8]>>(values: &[V], input: &[u8]) -> Vec<u8> {
        let mut marked = vec![false; input.len()];
        for value in values.iter().map(AsRef::as_ref) {
            if value.len() < MIN_MASKED_LEN || value.len() > input.len() {
                continue;
            }
            for at in 0..=input.len() - value.len() {
                if &input[at..at + value.len()] == value {
                    marked[at..at + value.len()].fill(true);
                }
            }
        }
        let mut out = Vec::new();
        for (at, &byte) in input.iter().enumerate() {
            if !marked[at] {
                out.push(byte);
            } else if at == 0 || !marked[at - 1] {
                out.extend_from_slice(MASK);
            }
        }
        out
    }

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

    /// Overlapping and adjacent values are masked as the union of their
    /// spans, whatever the chunking: no fragment is left in clear.
    #[test]
    fn overlapping_values_leave_no_fragment() {
        let cases: [(&[&str], &str, &str); 9] = [
            (&["abcdefgh12", "12ijklmn"], "abcdefgh12ijklmn", "****"),
            (&["abcdefgh12", "12ijklmn"], "<abcdefgh12ijklmn>", "<****>"),
            (
                &["12ijklmn", "abcdefgh12"],
                "x abcdefgh12ijklmn y 12ijklmn",
                "x **** y ****",
            ),
            // A value inside another, and one starting inside it.
            (&["secret", "cre"], "a secret b cre c", "a **** b **** c"),
            (&["abcabc"], "abcabcabc", "****"),
            (&["aaa"], "aaaaaaa b aa", "**** b aa"),
            // Adjacent values: one span.
            (&["tok", "ken"], "tokken tok ken", "**** **** ****"),
            // A chain of overlaps longer than any value.
            (&["abcd", "cdef", "efgh", "ghij"], "_abcdefghij_", "_****_"),
            // A longer value that only starts like the first: the first is
            // masked, the near-miss tail is plain text.
            (
                &["abcdefgh12", "12ijklmnop"],
                "abcdefgh12ijklmno",
                "****ijklmno",
            ),
        ];
        for (values, input, want) in cases {
            let masker = Masker::new(values.iter());
            assert_eq!(
                String::from_utf8(reference(values, input.as_bytes())).unwrap(),
                want,
                "reference for {values:?} in {input:?}"
            );
            for size in 1..=input.len() {
                let got = chunked(&masker, input.as_bytes(), size);
                assert_eq!(
                    String::from_utf8(got).unwrap(),
                    want,
                    "{values:?} in {input:?}, chunks of {size}"
                );
            }
        }
    }

    /// Values added to a live masker are masked from the next chunk on,
    /// also when their start is already held back.
    #[test]
    fn live_masker_takes_values_between_chunks() {
        let live = LiveMasker::new(Masker::new(["first-secret"]));
        let mut stream = live.stream();
        let mut out = Vec::new();
        stream.push(b"first-secret x first-sec", &mut out);
        assert_eq!(out, b"**** x ");
        live.add(["first-sec+rotated", "ab"]);
        live.add(["first-sec+rotated"]);
        stream.push(b"+rotated y ", &mut out);
        stream.push(b"first-sec+rotated\n", &mut out);
        stream.finish(&mut out);
        assert_eq!(out, b"**** x **** y ****\n");
        // A stream started later has them from the start.
        assert_eq!(live.current().mask(b"first-sec+rotated"), b"****");
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

    /// The sampler only narrows where Aho-Corasick looks: on texts dense
    /// with values, pieces of values and near-misses (two-letter alphabet),
    /// streamed in chunks of every size, the result is the plain
    /// reference's (every byte of every occurrence masked).
    #[test]
    fn sampled_search_equals_a_full_search() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for round in 0..300 {
            let alphabet: &[u8] = if round % 2 == 0 {
                b"ab"
            } else {
                b"abcdefgh0123"
            };
            let pick = |rng: &mut rand::rngs::StdRng| alphabet[rng.gen_range(0..alphabet.len())];
            let count = rng.gen_range(1..6);
            let values: Vec<Vec<u8>> = (0..count)
                .map(|_| (0..rng.gen_range(16..60)).map(|_| pick(&mut rng)).collect())
                .collect();
            let masker = Masker::new(&values);
            assert!(masker.sampler.is_some());
            let mut text = Vec::new();
            while text.len() < 2000 {
                let value = &values[rng.gen_range(0..count)];
                match rng.gen_range(0..3) {
                    0 => text.extend_from_slice(value),
                    1 => text.extend_from_slice(&value[..rng.gen_range(1..value.len())]),
                    _ => (0..rng.gen_range(1..40)).for_each(|_| text.push(pick(&mut rng))),
                }
            }
            let full = reference(&values, &text);
            for size in [1, 3, 17, 64, 500, text.len()] {
                assert!(
                    chunked(&masker, &text, size) == full,
                    "round {round}, chunks of {size}"
                );
            }
        }
    }

    /// Short values dense with overlaps (no sampler): the result is the
    /// plain reference's, whatever the chunking.
    #[test]
    fn overlapping_short_values_equal_the_reference() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(11);
        for round in 0..400 {
            let alphabet: &[u8] = if round % 2 == 0 { b"ab" } else { b"abc" };
            let pick = |rng: &mut rand::rngs::StdRng| alphabet[rng.gen_range(0..alphabet.len())];
            let values: Vec<Vec<u8>> = (0..rng.gen_range(1..5))
                .map(|_| (0..rng.gen_range(3..9)).map(|_| pick(&mut rng)).collect())
                .collect();
            let masker = Masker::new(&values);
            let text: Vec<u8> = (0..rng.gen_range(0..120)).map(|_| pick(&mut rng)).collect();
            let want = reference(&values, &text);
            for size in [1, 2, 3, 7, 500] {
                assert!(
                    chunked(&masker, &text, size) == want,
                    "round {round}, chunks of {size}"
                );
            }
        }
    }

    #[test]
    fn sampler_is_used_only_when_every_value_is_long() {
        let long = "x".repeat(SAMPLE_MIN_LEN);
        assert!(Masker::new([long.as_str()]).sampler.is_some());
        assert!(Masker::new([long.as_str(), "short-value"])
            .sampler
            .is_none());
        let masker = Masker::new([long.as_str(), "short-value"]);
        assert_eq!(
            masker.mask(format!("a{long}b short-value").as_bytes()),
            b"a****b ****"
        );
    }

    #[test]
    fn short_values_and_no_values_pass_through() {
        let masker = Masker::new(["ab"]);
        assert!(masker.is_empty());
        assert_eq!(masker.mask(b"abab"), b"abab");
    }
}

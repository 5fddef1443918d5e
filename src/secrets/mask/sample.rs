//! The sampled prefilter ([`Sampler`]): one 8-byte window every
//! `shortest - 7` bytes rules out most of a buffer before Aho-Corasick
//! searches it (see the [`super`] docs, "Speed").

use zeroize::Zeroizing;

/// Bytes in a sampled window.
const GRAM: usize = 8;

/// Bits in a sampler's set per 8-byte piece of a value: about 1 in 32
/// windows of unrelated text passes the set and is then looked up exactly.
const BITS_PER_GRAM: usize = 32;

/// A filter that rules out most of a buffer in a few instructions per
/// `stride` bytes (see the module docs). Written here because no crate
/// offers a sampled multi-pattern filter; it only narrows where
/// Aho-Corasick searches, so it cannot change what is masked (the tests
/// compare it with a full search).
pub(super) struct Sampler {
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
    pub(super) fn new(patterns: &[Zeroizing<Vec<u8>>], shortest: usize) -> Sampler {
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
    pub(super) fn ranges(&self, buf: &[u8], longest: usize, mut found: impl FnMut(usize, usize)) {
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

fn gram_of(window: &[u8]) -> u64 {
    let mut bytes = [0u8; GRAM];
    bytes.copy_from_slice(window);
    u64::from_le_bytes(bytes)
}

fn bit_of(gram: u64, bits_log2: u32) -> usize {
    (gram.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - bits_log2)) as usize
}

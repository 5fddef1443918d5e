//! The streaming masker, differentially: arbitrary secrets, an input built
//! from raw bytes, whole secrets and pieces of them, cut into arbitrary
//! chunks. The streamed output must equal a plain reference (every byte of
//! every occurrence of a secret of at least `MIN_MASKED_LEN` bytes is
//! marked, and each run of marked bytes becomes one `****`, else the byte
//! is copied: so every unmasked byte is the input's, in order, and no
//! fragment of an overlapping secret is left), whatever the chunking, and
//! must hold no secret that has no `*` in it. (A secret containing `*` can be
//! formed by a mask next to input bytes, e.g. the secret `x****` from the
//! input `x` followed by another secret: that is no leak.)

#![no_main]

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use sandboxd::secrets::mask::{Masker, MASK, MIN_MASKED_LEN};

#[derive(Debug, Arbitrary)]
struct Case {
    secrets: Vec<Vec<u8>>,
    pieces: Vec<Piece>,
    cuts: Vec<u8>,
}

#[derive(Debug, Arbitrary)]
enum Piece {
    Raw(Vec<u8>),
    Secret(u8),
    Prefix(u8, u8),
    Suffix(u8, u8),
}

fuzz_target!(|case: Case| {
    let secrets: Vec<Vec<u8>> = case.secrets.into_iter().take(16).collect();
    let mut input = Vec::new();
    for piece in &case.pieces {
        let pick = |i: u8| secrets.get(usize::from(i) % secrets.len().max(1));
        match *piece {
            Piece::Raw(ref bytes) => input.extend_from_slice(bytes),
            Piece::Secret(i) => input.extend_from_slice(pick(i).map_or(&[][..], |s| s)),
            Piece::Prefix(i, n) => {
                if let Some(s) = pick(i) {
                    input.extend_from_slice(&s[..usize::from(n).min(s.len())]);
                }
            }
            Piece::Suffix(i, n) => {
                if let Some(s) = pick(i) {
                    input.extend_from_slice(&s[s.len() - usize::from(n).min(s.len())..]);
                }
            }
        }
        if input.len() > 1 << 16 {
            break;
        }
    }
    let masker = Masker::new(&secrets);
    let want = reference(&secrets, &input);

    assert_eq!(masker.mask(&input), want, "whole");
    let mut out = Vec::new();
    let mut stream = masker.stream();
    let mut rest = &input[..];
    let mut cuts = case.cuts.iter().cycle();
    while !rest.is_empty() {
        let size = if case.cuts.is_empty() {
            rest.len()
        } else {
            usize::from(*cuts.next().unwrap()).clamp(1, rest.len())
        };
        stream.push(&rest[..size], &mut out);
        rest = &rest[size..];
        assert!(
            stream.pending_len() < masker_longest(&secrets).max(1),
            "holds back more than the longest secret"
        );
    }
    stream.finish(&mut out);
    assert_eq!(out, want, "streamed");

    for secret in &secrets {
        if secret.len() >= MIN_MASKED_LEN && !secret.contains(&b'*') {
            assert!(
                !out.windows(secret.len()).any(|w| w == secret.as_slice()),
                "a secret in the output"
            );
        }
    }
});

/// The plain union of every occurrence, written for obviousness.
fn reference(secrets: &[Vec<u8>], input: &[u8]) -> Vec<u8> {
    let mut marked = vec![false; input.len()];
    for secret in secrets {
        if secret.len() < MIN_MASKED_LEN || secret.len() > input.len() {
            continue;
        }
        for at in 0..=input.len() - secret.len() {
            if input[at..].starts_with(secret) {
                marked[at..at + secret.len()].fill(true);
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

fn masker_longest(secrets: &[Vec<u8>]) -> usize {
    secrets
        .iter()
        .filter(|s| s.len() >= MIN_MASKED_LEN)
        .map(Vec::len)
        .max()
        .unwrap_or(0)
}

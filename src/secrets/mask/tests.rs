//! Unit tests of masking: whole and split values, overlaps, live values,
//! every length one byte at a time, and the sampled search against a plain
//! reference.

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

/// A stream passes chunks through untouched only while it has no value
/// to mask: a value added to its live masker ends that at once.
#[test]
fn a_stream_passes_through_until_it_has_a_value() {
    let live = LiveMasker::new(Masker::new(Vec::<&[u8]>::new()));
    let mut stream = live.stream();
    assert!(stream.passes_through());
    let mut out = Vec::new();
    stream.push(b"nothing-to-hide ", &mut out);
    assert!(stream.passes_through());
    live.add(["late-secret"]);
    assert!(!stream.passes_through());
    stream.push(b"late-secret late-sec", &mut out);
    assert!(!stream.passes_through(), "a held-back tail is pending");
    stream.finish(&mut out);
    assert_eq!(out, b"nothing-to-hide **** late-sec");
    assert!(!Masker::new(["a-secret"]).stream().passes_through());
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

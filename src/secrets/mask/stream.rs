//! [`StreamMasker`]: masking one stream chunk by chunk, holding back the
//! tail that may be the start of a value until the next chunk (or the end)
//! decides, and keeping a masked span open across the chunk boundary.

use std::sync::atomic::Ordering;

use super::live::{lock, LiveMasker};
use super::{Masker, MASK};

/// Masks one stream chunk by chunk; holds back a short tail between chunks.
pub struct StreamMasker {
    pub(super) masker: Masker,
    /// Bytes not yet written: they may be the start of a value.
    pub(super) pending: Vec<u8>,
    /// Leading bytes of `pending` that the last `****` written covers.
    pub(super) covered: usize,
    /// The last thing written is a `****` whose span ends at
    /// `pending[covered]`: a match starting at or before there joins it
    /// instead of writing another.
    pub(super) open: bool,
    /// Where values added during the stream come from, and the generation
    /// of it that `masker` is.
    pub(super) live: Option<(LiveMasker, u64)>,
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

    /// Whether the next chunk would come out as it goes in: no value to
    /// mask (values added since the last chunk included) and nothing held
    /// back. Such a chunk may skip [`StreamMasker::push`] and its copy.
    pub fn passes_through(&mut self) -> bool {
        self.refresh();
        self.masker.matcher.is_none() && self.pending.is_empty() && !self.open
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

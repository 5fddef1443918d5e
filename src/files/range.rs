//! The `Range` header of a download: one byte range (first, middle or
//! suffix), as RFC 9110 defines it. Several ranges are answered whole
//! (200), which the RFC allows.

/// What to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wanted {
    /// The whole file (no header, one the server ignores, several ranges).
    Whole,
    /// Bytes `start..=end` (206).
    Part {
        /// First byte.
        start: u64,
        /// Last byte, inclusive.
        end: u64,
    },
    /// No byte of the file is in the range (416).
    Unsatisfiable,
}

/// Reads a `Range` header value for a file of `size` bytes.
pub fn parse(header: Option<&str>, size: u64) -> Wanted {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Wanted::Whole;
    };
    if spec.contains(',') {
        return Wanted::Whole;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return Wanted::Whole;
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // A suffix: the last N bytes.
        return match last.parse::<u64>() {
            Ok(0) => Wanted::Unsatisfiable,
            Ok(_) if size == 0 => Wanted::Unsatisfiable,
            Ok(n) => Wanted::Part {
                start: size.saturating_sub(n),
                end: size - 1,
            },
            Err(_) => Wanted::Whole,
        };
    }
    let Ok(start) = first.parse::<u64>() else {
        return Wanted::Whole;
    };
    let end = match last {
        "" => None,
        text => match text.parse::<u64>() {
            Ok(end) if end >= start => Some(end),
            _ => return Wanted::Whole,
        },
    };
    if start >= size {
        return Wanted::Unsatisfiable;
    }
    Wanted::Part {
        start,
        end: end.map_or(size - 1, |end| end.min(size - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// First, middle, suffix and open ranges; unsatisfiable ones; headers
    /// that are ignored.
    #[test]
    fn ranges() {
        let part = |start, end| Wanted::Part { start, end };
        for (header, want) in [
            (None, Wanted::Whole),
            (Some("bytes=0-9"), part(0, 9)),
            (Some("bytes=10-19"), part(10, 19)),
            (Some("bytes=90-200"), part(90, 99)),
            (Some("bytes=95-"), part(95, 99)),
            (Some("bytes=-5"), part(95, 99)),
            (Some("bytes=-500"), part(0, 99)),
            (Some("bytes=100-"), Wanted::Unsatisfiable),
            (Some("bytes=-0"), Wanted::Unsatisfiable),
            (Some("bytes=0-1,5-6"), Wanted::Whole),
            (Some("bytes=9-3"), Wanted::Whole),
            (Some("items=0-1"), Wanted::Whole),
            (Some("bytes=x-1"), Wanted::Whole),
        ] {
            assert_eq!(parse(header, 100), want, "{header:?}");
        }
        assert_eq!(parse(Some("bytes=0-"), 0), Wanted::Unsatisfiable);
    }
}

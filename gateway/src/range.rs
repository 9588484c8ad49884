//! The `Range` request header (RFC 9110 §14), single ranges only.
//!
//! A multi-range request (`bytes=0-1,5-6`) gets `200` and the whole body: serving
//! `multipart/byteranges` buys clients nothing here (Hugging Face clients and `datasets` ask
//! for one range at a time) and RFC 9110 allows ignoring `Range`. A header that does not parse
//! is ignored the same way, as the RFC asks.

use std::ops::Range;

/// What a `Range` header asks of a representation of known length.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No (usable) range: send everything with `200`.
    Full,
    /// Send these bytes with `206`; never empty, always inside the representation.
    Partial(Range<u64>),
    /// The range starts past the end: `416` with `Content-Range: bytes */len`.
    Unsatisfiable,
}

/// Longest `Range` header value looked at; longer ones are ignored (a single range needs about
/// 48 bytes).
pub const RANGE_HEADER_LEN_MAX: usize = 256;

/// Interprets a `Range` header value against a representation of `len` bytes.
pub fn parse_range(value: &[u8], len: u64) -> RangeRequest {
    if value.len() > RANGE_HEADER_LEN_MAX {
        return RangeRequest::Full;
    }
    let Ok(s) = std::str::from_utf8(value) else {
        return RangeRequest::Full;
    };
    let s = s.trim();
    let Some((unit, spec)) = s.split_once('=') else {
        return RangeRequest::Full;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") || spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let digits = |t: &str| -> Option<u64> {
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        // Saturate: a position past u64 is past any end.
        Some(t.parse::<u64>().unwrap_or(u64::MAX))
    };
    let (first, last) = (first.trim(), last.trim());
    if first.is_empty() {
        // Suffix range: the last `n` bytes.
        let Some(n) = digits(last) else {
            return RangeRequest::Full;
        };
        if n == 0 || len == 0 {
            return RangeRequest::Unsatisfiable;
        }
        return RangeRequest::Partial(len - n.min(len)..len);
    }
    let Some(start) = digits(first) else {
        return RangeRequest::Full;
    };
    let end = if last.is_empty() {
        len
    } else {
        match digits(last) {
            Some(l) if l >= start => l.saturating_add(1).min(len),
            _ => return RangeRequest::Full,
        }
    };
    if start >= len {
        return RangeRequest::Unsatisfiable;
    }
    RangeRequest::Partial(start..end)
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::*;
    use super::*;

    #[test]
    fn table() {
        let len = 1000;
        let cases: &[(&str, RangeRequest)] = &[
            ("bytes=0-0", Partial(0..1)),          // first byte
            ("bytes=999-999", Partial(999..1000)), // last byte
            ("bytes=0-", Partial(0..1000)),        // open-ended from 0
            ("bytes=500-", Partial(500..1000)),    // open-ended
            ("bytes=-1", Partial(999..1000)),      // suffix
            ("bytes=-5000", Partial(0..1000)),     // suffix longer than the file
            ("bytes=10-99999", Partial(10..1000)), // end clamped
            ("bytes=1000-", Unsatisfiable),        // starts at the end
            ("bytes=1000-2000", Unsatisfiable),    // past the end
            ("bytes=-0", Unsatisfiable),           // empty suffix
            ("bytes=99999999999999999999999-", Unsatisfiable),
            ("bytes=5-4", Full),     // invalid: ignored
            ("bytes=0-1,5-6", Full), // multi-range: whole body
            ("items=0-1", Full),     // other unit
            ("bytes=a-b", Full),
            ("bytes=--1", Full),
            ("bytes 0-1", Full),
            ("BYTES= 1-2 ", Partial(1..3)),
        ];
        for (h, want) in cases {
            assert_eq!(&parse_range(h.as_bytes(), len), want, "{h}");
        }
        assert_eq!(parse_range(b"bytes=0-", 0), Unsatisfiable);
        assert_eq!(parse_range(b"bytes=-1", 0), Unsatisfiable);
    }

    #[test]
    fn never_outside() {
        // A naive oracle over small lengths and positions.
        for len in 0..8u64 {
            for a in 0..10u64 {
                for b in 0..10u64 {
                    for h in [
                        format!("bytes={a}-{b}"),
                        format!("bytes={a}-"),
                        format!("bytes=-{a}"),
                    ] {
                        if let Partial(r) = parse_range(h.as_bytes(), len) {
                            assert!(r.start < r.end && r.end <= len, "{h} {len} {r:?}");
                        }
                    }
                }
            }
        }
    }
}

//! `If-None-Match` and `If-Range` come from anyone and decide whether a client gets 304, a
//! range or the whole file. Against an oracle of RFC 9110:
//! - `If-None-Match` (weak comparison): a list that names the file's tag, bare or `W/`, or is
//!   `*`, matches; a list in which neither the tag nor `*` occurs never does.
//! - `If-Range` (strong comparison): a range applies only when there is no `If-Range`, or when
//!   it is exactly the quoted tag (surrounding spaces aside). A weak tag, a date, another tag or
//!   bytes that are not visible ASCII give the whole file.
#![no_main]

use cairn_gateway::fuzzing::{if_none_match, if_range_allows};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Input {
    /// The file's ETag is the hex of these bytes, as the gateway's are.
    tag: [u8; 32],
    /// A list built from parts (some naming the tag), or raw bytes.
    parts: Vec<Part>,
    raw: Option<Vec<u8>>,
    if_range: Option<Vec<u8>>,
    if_range_tag: Option<(bool, bool)>,
}

#[derive(Arbitrary, Debug)]
enum Part {
    Tag { weak: bool, spaces: u8 },
    Other(String),
    Star,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fuzz_target!(|input: Input| {
    let etag = hex(&input.tag);
    let quoted = format!("\"{etag}\"");

    // If-None-Match.
    let (list, names_it) = match &input.raw {
        Some(raw) => (raw.clone(), None),
        None => {
            let mut list = String::new();
            let mut names = false;
            for (i, p) in input.parts.iter().enumerate() {
                if i > 0 {
                    list.push(',');
                }
                match p {
                    Part::Tag { weak, spaces } => {
                        list.push_str(&" ".repeat(usize::from(spaces % 4)));
                        if *weak {
                            list.push_str("W/");
                        }
                        list.push_str(&quoted);
                        names = true;
                    }
                    Part::Other(s) => list.push_str(s),
                    Part::Star => {
                        list.push('*');
                        names = true;
                    }
                }
            }
            (list.into_bytes(), Some(names))
        }
    };
    let matched = if_none_match(&list, &etag);
    let visible = list.iter().all(|b| (0x20..0x7f).contains(b) || *b == b'\t');
    if names_it == Some(true) && visible {
        assert!(
            matched,
            "a list naming the tag did not match: {:?}",
            String::from_utf8_lossy(&list)
        );
    }
    if matched {
        let text = String::from_utf8_lossy(&list);
        assert!(
            text.contains(&etag) || text.contains('*'),
            "matched without the tag: {text:?}"
        );
    }

    // If-Range.
    let value = match (input.if_range_tag, &input.if_range) {
        (Some((weak, padded)), _) => {
            let mut v = String::new();
            if padded {
                v.push(' ');
            }
            if weak {
                v.push_str("W/");
            }
            v.push_str(&quoted);
            Some(v.into_bytes())
        }
        (None, raw) => raw.clone(),
    };
    let allowed = if_range_allows(value.as_deref(), &quoted);
    let expect = match &value {
        None => true,
        Some(v) => match std::str::from_utf8(v) {
            Ok(s) if s.bytes().all(|b| (0x20..0x7f).contains(&b) || b == b'\t') => {
                s.trim_matches([' ', '\t']) == quoted
            }
            // Not visible ASCII: hyper refuses control bytes, and obs-text never names a tag.
            _ => v.iter().any(|b| *b < 0x20 && *b != b'\t' || *b == 0x7f),
        },
    };
    assert_eq!(
        allowed,
        expect,
        "If-Range {:?}",
        value.as_deref().map(String::from_utf8_lossy)
    );
});

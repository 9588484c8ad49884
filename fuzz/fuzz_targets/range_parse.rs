//! `Range` headers come from anyone: parsing must never panic, and a partial range must be
//! non-empty and inside the representation, whatever the header and the length.
#![no_main]

use cairn_gateway::{RangeRequest, parse_range};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (u64, &[u8])| {
    let (len, value) = input;
    // Small lengths too, where the edge cases live.
    for len in [len, len % 1024] {
        match parse_range(value, len) {
            RangeRequest::Partial(r) => {
                assert!(r.start < r.end && r.end <= len, "{r:?} outside 0..{len}");
            }
            RangeRequest::Unsatisfiable | RangeRequest::Full => {}
        }
    }
});

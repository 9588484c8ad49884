//! Shard file headers are read from disk (and disks rot): parsing must never panic, and an
//! accepted header must be exactly the bytes it was parsed from (no ignored or lenient field).
#![no_main]

use cairn_store::{HEADER_LEN, ShardHeader};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(header) = ShardHeader::parse(data) else {
        return;
    };
    assert!(
        data.len() >= HEADER_LEN,
        "parsed a header from {} bytes",
        data.len()
    );
    assert_eq!(
        header.encode().as_slice(),
        &data[..HEADER_LEN],
        "accepted header does not re-encode to its bytes"
    );
    assert_eq!(ShardHeader::parse(&header.encode()), Ok(header));
});

//! Manifest bytes come from peers: decoding must never panic, and whatever decodes must survive
//! an encode/decode round trip unchanged (the CID a reader checks is over the encoded form).
#![no_main]

use cairn_artifact::Manifest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(manifest) = Manifest::decode(data, "fuzz input") else {
        return;
    };
    let (cid, bytes) = manifest.encode();
    let again =
        Manifest::decode(&bytes, "re-encoded manifest").expect("a re-encoded manifest decodes");
    assert_eq!(again, manifest, "decode(encode(m)) differs from m");
    // Encoding is canonical: a second round gives the same bytes and so the same CID.
    assert_eq!(again.encode(), (cid, bytes), "encoding is not stable");
});

//! `POST /auth/siwe` bodies come from anyone: reading one must never panic, must keep its
//! bounds, and a message it accepts must print back as exactly the text that was signed.
#![no_main]

use cairn_gateway::access::siwe::{
    MESSAGE_BYTES_MAX, SIGNATURE_BYTES_MAX, SIWE_BODY_BYTES_MAX, parse_request,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|body: &[u8]| {
    let Ok((msg, sig)) = parse_request(body) else {
        return;
    };
    assert!(body.len() <= SIWE_BODY_BYTES_MAX);
    assert!(!sig.is_empty() && sig.len() <= SIGNATURE_BYTES_MAX);
    let text = msg.to_string();
    assert!(text.len() <= MESSAGE_BYTES_MAX);
    let v: serde_json::Value = serde_json::from_slice(body).unwrap();
    assert_eq!(v["message"].as_str(), Some(text.as_str()));
    // The EIP-191 hash of an accepted message is always computable.
    msg.eip191_hash().expect("an accepted message prints");
});

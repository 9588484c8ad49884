//! API keys arrive in `Authorization` headers from anyone: parsing must never panic, must accept
//! only the exact format (66 ASCII characters, `cairn_`, 16 lowercase hex, `_`, 43 canonical
//! base64url), and a parsed key printed again must be the same string (one key, one spelling).
#![no_main]

use cairn_gateway::{KEY_LEN, KEY_PREFIX, parse_api_key};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|s: &str| {
    let Ok(key) = parse_api_key(s) else {
        return;
    };
    assert_eq!(s.len(), KEY_LEN);
    assert!(s.starts_with(KEY_PREFIX) && s.is_ascii());
    assert_eq!(key.expose(), s, "parse(s) printed differs from s");
    assert_eq!(
        key.id().to_string(),
        &s[KEY_PREFIX.len()..KEY_PREFIX.len() + 16]
    );
    // Debug never shows the secret.
    assert!(!format!("{key:?}").contains(&s[23..]));
});

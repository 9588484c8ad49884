//! Grants arrive inside name records from any peer, and gateway ids as text from operators and
//! publishers. The text form must parse only as `cairngw1` and 64 hex digits, and a parsed id
//! must print back as what was parsed (up to the case of the hex digits). A gateway unwraps
//! grants of records it did not check: bytes not made by an honest wrap must never open, and
//! nothing may panic. From fuzzer-chosen fields the target also wraps a key honestly to one
//! fixed gateway under a fuzzer-chosen context, checks that it opens for that gateway only, to
//! exactly the key, then edits `enc`, the sealed key or the context: any change must fail.
//!
//! Input: a first byte that is even feeds the rest raw: as gateway id text, and (when at least
//! 112 bytes) as a wrapped key (gateway id, `enc`, sealed key) followed by its context; an odd
//! one builds an honest wrap from the rest.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_encryption::{
    ArtifactKey, GRANT_ENC_LEN, GRANT_SEALED_LEN, GatewayId, GatewaySecret, WrappedKey, unwrap_key,
    wrap_key,
};
use common_keys::{GATEWAYS, gateways, mutate};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const WRAPPED_LEN: usize = 32 + GRANT_ENC_LEN + GRANT_SEALED_LEN;
const EDITS_MAX: usize = 8;

fn gateway(i: u8) -> &'static (GatewaySecret, GatewayId) {
    &gateways()[usize::from(i) % GATEWAYS]
}

#[derive(Arbitrary, Debug)]
struct Built {
    /// The gateway the key is wrapped to, and the one that tries to open it.
    wrapped_to: u8,
    opener: u8,
    key: [u8; 32],
    context: Vec<u8>,
    /// XOR edits of `enc` and of the sealed key (positions modulo their length).
    enc_edits: Vec<(u8, u8)>,
    sealed_edits: Vec<(u8, u8)>,
    /// Edits, a truncation and an extension of the context.
    context_edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fn raw(rest: &[u8]) {
    if let Ok(text) = std::str::from_utf8(rest) {
        if let Ok(id) = text.parse::<GatewayId>() {
            let shown = id.to_string();
            assert!(
                shown.eq_ignore_ascii_case(text),
                "gateway id {text:?} parsed, but prints as {shown:?}"
            );
            assert_eq!(shown.parse::<GatewayId>().ok(), Some(id));
        }
    }
    if rest.len() < WRAPPED_LEN {
        return;
    }
    let (wrapped, context) = rest.split_at(WRAPPED_LEN);
    let wrapped = WrappedKey {
        gateway: GatewayId(wrapped[..32].try_into().unwrap()),
        enc: wrapped[32..32 + GRANT_ENC_LEN].try_into().unwrap(),
        sealed: wrapped[32 + GRANT_ENC_LEN..].try_into().unwrap(),
    };
    if let Ok(key) = unwrap_key(&gateway(0).0, &wrapped, context) {
        panic!("bytes not wrapped by the target opened: {key:?}");
    }
    // Wrapping to any 32 bytes fails or makes a wrap to them; it never panics.
    let key = ArtifactKey::from_bytes([0x5a; 32]);
    if let Ok(w) = wrap_key(&wrapped.gateway, &key, context) {
        assert_eq!(w.gateway, wrapped.gateway);
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        raw(rest);
        return;
    }
    let Ok(Built {
        wrapped_to,
        opener,
        key,
        context,
        enc_edits,
        sealed_edits,
        context_edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let (secret, id) = gateway(wrapped_to);
    let key = ArtifactKey::from_bytes(key);
    let honest = wrap_key(id, &key, &context).expect("a gateway's own id is a valid key");
    assert_eq!(honest.gateway, *id);
    assert_eq!(
        unwrap_key(secret, &honest, &context).ok(),
        Some(key.clone()),
        "an honest wrap did not open to its key"
    );
    let opened = unwrap_key(&gateway(opener).0, &honest, &context);
    if usize::from(opener) % GATEWAYS == usize::from(wrapped_to) % GATEWAYS {
        assert_eq!(opened.ok(), Some(key.clone()));
    } else {
        assert!(opened.is_err(), "a wrap opened for another gateway");
    }

    let mut edited = honest.clone();
    for &(at, xor) in enc_edits.iter().take(EDITS_MAX) {
        edited.enc[usize::from(at) % GRANT_ENC_LEN] ^= xor;
    }
    for &(at, xor) in sealed_edits.iter().take(EDITS_MAX) {
        edited.sealed[usize::from(at) % GRANT_SEALED_LEN] ^= xor;
    }
    let mut edited_context = context.clone();
    mutate(
        &mut edited_context,
        &context_edits,
        EDITS_MAX,
        truncate,
        &extra,
    );
    if edited != honest || edited_context != context {
        if let Ok(got) = unwrap_key(secret, &edited, &edited_context) {
            panic!("an edited wrap opened (to {got:?})");
        }
    }
});

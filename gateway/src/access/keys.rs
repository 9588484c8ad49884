//! API keys for backends: the key format, and the hash the key store keeps of a key.
//!
//! A key's secret is never kept, logged or echoed: the gateway stores a hash (see the
//! `keystore` module); the secret exists only in the answer that creates the key and in the
//! caller's hands. [`ApiKey`]'s `Debug` shows the id only.
//!
//! # Key format
//!
//! `cairn_<id>_<secret>`, exactly [`KEY_LEN`] = 66 ASCII characters:
//! - `cairn_`: a fixed prefix, so secret scanners and people recognise the key;
//! - `<id>`: 16 lowercase hex digits (8 random bytes), the key's public name; it appears in
//!   listings and the audit log;
//! - `_`;
//! - `<secret>`: 43 characters of unpadded base64url (RFC 4648 §5) encoding 32 random bytes, in
//!   canonical form (the two spare bits of the last character are zero).
//!
//! [`parse_api_key`] accepts nothing else: no whitespace, no uppercase hex, no padding, no
//! other length. It runs on untrusted input before any lookup (fuzz target `apikey_parse`).

use std::fmt;

use rand::RngCore;

/// The fixed prefix of every key.
pub const KEY_PREFIX: &str = "cairn_";
/// Hex digits of a key id.
pub const KEY_ID_LEN: usize = 16;
/// Base64url characters of a key secret (32 bytes).
pub const KEY_SECRET_LEN: usize = 43;
/// Length of a whole key.
pub const KEY_LEN: usize = KEY_PREFIX.len() + KEY_ID_LEN + 1 + KEY_SECRET_LEN;
const _: () = assert!(KEY_LEN == 66);

/// The BLAKE3 derive-key context of [`ApiKey::hash`].
const HASH_CONTEXT: &str = "cairn-gateway 2025 api key secret v1";

/// Why a string is not an API key. Never contains the string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyParseError {
    /// Not exactly [`KEY_LEN`] bytes.
    #[error("an API key is exactly 66 characters")]
    Length,
    /// Does not start with `cairn_`, or lacks the `_` after the id.
    #[error("an API key looks like cairn_<16 hex>_<43 base64url characters>")]
    Shape,
    /// The id is not 16 lowercase hex digits.
    #[error("the API key id is not 16 lowercase hex digits")]
    Id,
    /// The secret is not 43 characters of canonical unpadded base64url.
    #[error("the API key secret is not 43 characters of base64url")]
    Secret,
}

/// A key's public id: 8 bytes, shown as 16 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId([u8; 8]);

impl KeyId {
    /// Parses 16 lowercase hex digits.
    pub fn parse(s: &str) -> Option<Self> {
        if s.len() != KEY_ID_LEN {
            return None;
        }
        let b = data_encoding::HEXLOWER.decode(s.as_bytes()).ok()?;
        Some(Self(b.try_into().ok()?))
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&data_encoding::HEXLOWER.encode(&self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

/// A parsed API key. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: KeyId,
    secret: [u8; 32],
}

impl ApiKey {
    /// The key's public id.
    pub fn id(&self) -> KeyId {
        self.id
    }

    /// A new key: 8 random bytes of id, 32 of secret.
    pub(crate) fn generate() -> Self {
        let mut id = [0u8; 8];
        let mut secret = [0u8; 32];
        rand::rng().fill_bytes(&mut id);
        rand::rng().fill_bytes(&mut secret);
        Self {
            id: KeyId(id),
            secret,
        }
    }

    /// What the key store keeps of the key: BLAKE3 in derive-key mode over the id's 8 bytes
    /// followed by the secret's 32. The secret has 256 bits of entropy, so a fast hash is
    /// enough: there is nothing to brute-force.
    pub(crate) fn hash(&self) -> [u8; 32] {
        let mut h = blake3::Hasher::new_derive_key(HASH_CONTEXT);
        h.update(&self.id.0);
        h.update(&self.secret);
        *h.finalize().as_bytes()
    }

    /// The key as the caller presents it. This is the secret: show it once, never log it.
    pub fn expose(&self) -> String {
        format!(
            "{KEY_PREFIX}{}_{}",
            self.id,
            data_encoding::BASE64URL_NOPAD.encode(&self.secret)
        )
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}, <secret redacted>)", self.id)
    }
}

/// Parses an API key strictly (see the module docs for the format).
pub fn parse_api_key(s: &str) -> Result<ApiKey, KeyParseError> {
    let b = s.as_bytes();
    if b.len() != KEY_LEN {
        return Err(KeyParseError::Length);
    }
    let sep = KEY_PREFIX.len() + KEY_ID_LEN;
    if !b.starts_with(KEY_PREFIX.as_bytes()) || b[sep] != b'_' {
        return Err(KeyParseError::Shape);
    }
    // Length and prefix are ASCII-checked byte-wise above, so these slices fall on char
    // boundaries only if the bytes are ASCII; check before slicing the str.
    if !b.is_ascii() {
        return Err(KeyParseError::Shape);
    }
    let id = KeyId::parse(&s[KEY_PREFIX.len()..sep]).ok_or(KeyParseError::Id)?;
    let enc = &b[sep + 1..];
    let secret = data_encoding::BASE64URL_NOPAD
        .decode(enc)
        .map_err(|_| KeyParseError::Secret)?;
    let secret: [u8; 32] = secret.try_into().map_err(|_| KeyParseError::Secret)?;
    // Only the canonical encoding: one key, one spelling.
    if data_encoding::BASE64URL_NOPAD.encode(&secret).as_bytes() != enc {
        return Err(KeyParseError::Secret);
    }
    Ok(ApiKey { id, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trip_and_strictness() {
        let k = ApiKey::generate();
        let s = k.expose();
        assert_eq!(s.len(), KEY_LEN);
        assert_eq!(parse_api_key(&s).unwrap(), k);
        assert!(!format!("{k:?}").contains(&s[23..]));
        let id = &s[6..22];
        let sec = &s[23..];
        let cases: Vec<(String, KeyParseError)> = vec![
            (String::new(), KeyParseError::Length),
            (format!("{s} "), KeyParseError::Length),
            (format!(" {}", &s[1..]), KeyParseError::Shape),
            (format!("cairn-{id}_{sec}"), KeyParseError::Shape),
            (format!("cairn_{id}-{sec}"), KeyParseError::Shape),
            (
                format!("cairn_{}_{sec}", id.to_uppercase()),
                KeyParseError::Id,
            ),
            (format!("cairn_{}g_{sec}", &id[1..]), KeyParseError::Id),
            (format!("cairn_{id}_{}=", &sec[1..]), KeyParseError::Secret),
            (format!("cairn_{id}_{}+", &sec[1..]), KeyParseError::Secret),
            // Non-canonical: the last character's spare bits set.
            (format!("cairn_{id}_{}B", &sec[..42]), KeyParseError::Secret),
        ];
        for (c, want) in cases {
            assert_eq!(parse_api_key(&c).err(), Some(want), "{c:?}");
        }
        // Multi-byte characters of the right byte length.
        let mut m = s.clone();
        m.replace_range(60..62, "é");
        assert!(parse_api_key(&m).is_err());
    }
}

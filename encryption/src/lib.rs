//! Cairn encryption: AES-256-GCM for chunks and for a manifest's private part.
//!
//! Pure: bytes in, bytes out, no I/O. Storage nodes never see what this crate takes in.
//!
//! # Keys and nonces
//! Every chunk is sealed under its own 256-bit key, and every key seals exactly one plaintext:
//! - **Convergent** keys come from HKDF-SHA256 over the publisher's [`ConvergenceSecret`] and the
//!   chunk's BLAKE3 hash. The same publisher sealing the same chunk twice gets the same sealed
//!   bytes (so new versions dedup against old ones), while anyone without the secret cannot
//!   confirm that a chunk holds a guessed plaintext (Tahoe-LAFS' "added convergence secret").
//! - **Random** keys come from the operating system's generator, for data that must not dedup.
//!
//! Because a key never seals two different plaintexts, the chunk nonce is the fixed
//! [`CHUNK_NONCE`]: nonce reuse under AES-GCM is only harmful across *different* messages under
//! one key, which this scheme rules out by construction. Manifest private parts are sealed under
//! an artifact key with a random nonce stored beside the ciphertext, because one artifact key may
//! seal more than one revision of a private part.
//!
//! # Grants
//! A publisher hands an artifact key to a gateway without any channel between them: the key is
//! wrapped to the gateway's X25519 public key with HPKE (RFC 9180, base mode,
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20-Poly1305) and published in the name
//! record; see [`wrap_key`].
//!
//! # Errors
//! Tampered or truncated ciphertext, or the wrong key, is reported as [`Error::Tampered`]; no
//! function here ever returns plaintext that did not authenticate.

mod error;
mod grant;
mod keys;
mod seal;

pub use error::Error;
pub use grant::{
    GRANT_ENC_LEN, GRANT_SEALED_LEN, GatewayId, GatewaySecret, WrappedKey, unwrap_key, wrap_key,
};
pub use keys::{ArtifactKey, ChunkKey, ConvergenceSecret, KEY_LEN};
pub use seal::{
    CHUNK_NONCE, NONCE_LEN, SealedPrivate, TAG_LEN, open_chunk, open_chunk_in_place, open_private,
    seal_chunk, seal_chunk_in_place, seal_private,
};

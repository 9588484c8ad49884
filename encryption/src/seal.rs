use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::RngCore;

use crate::{ArtifactKey, ChunkKey, Error};

/// Length of the authentication tag appended to every sealed chunk.
pub const TAG_LEN: usize = 16;
/// Length of an AES-GCM nonce.
pub const NONCE_LEN: usize = 12;
/// The nonce of every chunk: safe because a chunk key never seals two different plaintexts
/// (see the crate documentation).
pub const CHUNK_NONCE: [u8; NONCE_LEN] = [0; NONCE_LEN];

/// Associated data binding a sealed chunk to its purpose, so a sealed private part can never be
/// opened as a chunk or the other way round.
const CHUNK_AAD: &[u8] = b"cairn chunk v1";
const PRIVATE_AAD: &[u8] = b"cairn manifest private v1";

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

/// Seals `buf` in place: on return it holds ciphertext followed by the 16-byte tag.
pub fn seal_chunk_in_place(key: &ChunkKey, buf: &mut Vec<u8>) {
    let tag = cipher(key.as_bytes())
        .encrypt_inout_detached(
            &Nonce::from(CHUNK_NONCE),
            CHUNK_AAD,
            buf.as_mut_slice().into(),
        )
        .expect("AES-GCM accepts messages up to 64 GiB; chunks are at most a few MiB");
    buf.extend_from_slice(tag.as_slice());
}

/// Seals a chunk: returns ciphertext followed by the 16-byte tag.
pub fn seal_chunk(key: &ChunkKey, plaintext: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    seal_chunk_in_place(key, &mut buf);
    buf
}

/// Opens a sealed chunk in place; on success `buf` holds the plaintext. On failure `buf` is
/// left as it was given (no partial plaintext is ever exposed through it).
pub fn open_chunk_in_place(key: &ChunkKey, buf: &mut Vec<u8>) -> Result<(), Error> {
    open_in_place(key.as_bytes(), &CHUNK_NONCE, CHUNK_AAD, buf, "chunk")
}

/// Opens a sealed chunk into a new buffer.
pub fn open_chunk(key: &ChunkKey, sealed: &[u8]) -> Result<Vec<u8>, Error> {
    let mut buf = sealed.to_vec();
    open_chunk_in_place(key, &mut buf)?;
    Ok(buf)
}

fn open_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
    what: &'static str,
) -> Result<(), Error> {
    let body_len = buf
        .len()
        .checked_sub(TAG_LEN)
        .ok_or(Error::Tampered { what })?;
    let (body, tag) = buf.split_at_mut(body_len);
    let tag = Tag::try_from(&*tag).expect("split at TAG_LEN");
    // Decrypt into a copy-free in-out buffer; on a bad tag aes-gcm leaves the ciphertext as it
    // was, so the caller never sees unauthenticated plaintext.
    cipher(key)
        .decrypt_inout_detached(&Nonce::from(*nonce), aad, body.into(), &tag)
        .map_err(|_| Error::Tampered { what })?;
    buf.truncate(body_len);
    Ok(())
}

/// A manifest's private part, sealed under an artifact key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SealedPrivate {
    /// Random nonce chosen at sealing.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the tag.
    pub ciphertext: Vec<u8>,
}

/// Seals a manifest's private part with a fresh random nonce.
pub fn seal_private(key: &ArtifactKey, plaintext: &[u8]) -> SealedPrivate {
    let mut nonce = [0u8; NONCE_LEN];
    rand::rng().fill_bytes(&mut nonce);
    let mut buf = plaintext.to_vec();
    let tag = cipher(key.as_bytes())
        .encrypt_inout_detached(&Nonce::from(nonce), PRIVATE_AAD, buf.as_mut_slice().into())
        .expect("manifest private parts are far below the AES-GCM message limit");
    buf.extend_from_slice(tag.as_slice());
    SealedPrivate {
        nonce,
        ciphertext: buf,
    }
}

/// Opens a manifest's private part.
pub fn open_private(key: &ArtifactKey, sealed: &SealedPrivate) -> Result<Vec<u8>, Error> {
    let mut buf = sealed.ciphertext.clone();
    open_in_place(
        key.as_bytes(),
        &sealed.nonce,
        PRIVATE_AAD,
        &mut buf,
        "manifest private part",
    )?;
    Ok(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ConvergenceSecret;
    use proptest::prelude::*;

    fn key() -> ChunkKey {
        ChunkKey::from_bytes([7; 32])
    }

    #[test]
    fn empty_chunk_round_trips() {
        let sealed = seal_chunk(&key(), b"");
        assert_eq!(sealed.len(), TAG_LEN);
        assert_eq!(open_chunk(&key(), &sealed).unwrap(), b"");
    }

    #[test]
    fn too_short_is_tampered() {
        assert_eq!(
            open_chunk(&key(), &[0; 15]).unwrap_err(),
            Error::Tampered { what: "chunk" }
        );
    }

    #[test]
    fn wrong_key_is_tampered() {
        let sealed = seal_chunk(&key(), b"hello");
        let other = ChunkKey::from_bytes([8; 32]);
        assert_eq!(
            open_chunk(&other, &sealed).unwrap_err(),
            Error::Tampered { what: "chunk" }
        );
    }

    #[test]
    fn failed_open_leaves_buffer_as_given() {
        let mut sealed = seal_chunk(&key(), b"secret plaintext");
        sealed[0] ^= 1;
        let before = sealed.clone();
        assert!(open_chunk_in_place(&key(), &mut sealed).is_err());
        assert_eq!(sealed, before);
    }

    #[test]
    fn domains_are_separated() {
        // A private part sealed under the same key bytes never opens as a chunk.
        let ak = ArtifactKey::from_bytes([7; 32]);
        let sp = seal_private(&ak, b"x");
        assert!(open_chunk(&key(), &sp.ciphertext).is_err());
    }

    #[test]
    fn convergent_dedups_within_a_secret_only() {
        let data = b"the same chunk";
        let h = *blake3::hash(data).as_bytes();
        let a = ConvergenceSecret::from_bytes([1; 32]);
        let b = ConvergenceSecret::from_bytes([2; 32]);
        let sa1 = seal_chunk(&ChunkKey::convergent(&a, &h), data);
        let sa2 = seal_chunk(&ChunkKey::convergent(&a, &h), data);
        let sb = seal_chunk(&ChunkKey::convergent(&b, &h), data);
        assert_eq!(sa1, sa2);
        assert_ne!(sa1, sb);
    }

    #[test]
    fn private_part_uses_fresh_nonces() {
        let k = ArtifactKey::random();
        let a = seal_private(&k, b"tree");
        let b = seal_private(&k, b"tree");
        assert_ne!(a.nonce, b.nonce);
        assert_eq!(open_private(&k, &a).unwrap(), b"tree");
        let mut bad = a.clone();
        bad.nonce[0] ^= 1;
        assert_eq!(
            open_private(&k, &bad).unwrap_err(),
            Error::Tampered {
                what: "manifest private part"
            }
        );
    }

    proptest! {
        #[test]
        fn chunk_round_trip(data in proptest::collection::vec(any::<u8>(), 0..4096), k in any::<[u8; 32]>()) {
            let key = ChunkKey::from_bytes(k);
            let sealed = seal_chunk(&key, &data);
            prop_assert_eq!(sealed.len(), data.len() + TAG_LEN);
            prop_assert_eq!(open_chunk(&key, &sealed).unwrap(), data);
        }

        #[test]
        fn any_bit_flip_is_detected(data in proptest::collection::vec(any::<u8>(), 1..512), pos in any::<usize>(), bit in 0u8..8) {
            let key = key();
            let mut sealed = seal_chunk(&key, &data);
            let i = pos % sealed.len();
            sealed[i] ^= 1 << bit;
            prop_assert_eq!(open_chunk(&key, &sealed).unwrap_err(), Error::Tampered { what: "chunk" });
        }

        #[test]
        fn private_round_trip(data in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let k = ArtifactKey::random();
            prop_assert_eq!(open_private(&k, &seal_private(&k, &data)).unwrap(), data);
        }
    }
}

use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use subtle::ConstantTimeEq;
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::Error;

/// Length of every key and secret in bytes.
pub const KEY_LEN: usize = 32;

/// HKDF `info` for chunk keys; versioned so a future scheme can never collide with this one.
const CHUNK_KEY_INFO: &[u8] = b"cairn chunk key v1";

macro_rules! secret_type {
    ($name:ident, $what:literal) => {
        #[doc = concat!("A 256-bit ", $what, ". Zeroed on drop; `Debug` never prints it.")]
        #[derive(Clone, Zeroize, ZeroizeOnDrop)]
        pub struct $name([u8; KEY_LEN]);

        impl $name {
            /// A fresh value from the operating system's generator.
            pub fn random() -> Self {
                let mut bytes = [0u8; KEY_LEN];
                rand::rng().fill_bytes(&mut bytes);
                Self(bytes)
            }

            /// Wraps raw bytes.
            pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
                Self(bytes)
            }

            /// Parses raw bytes, checking the length.
            pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
                let arr: [u8; KEY_LEN] = bytes.try_into().map_err(|_| Error::BadLength {
                    what: $what,
                    expected: KEY_LEN,
                    got: bytes.len(),
                })?;
                Ok(Self(arr))
            }

            /// The raw bytes: handle with care, never log them.
            pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
                &self.0
            }
        }

        impl std::fmt::Debug for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(concat!(stringify!($name), "(<redacted>)"))
            }
        }

        impl PartialEq for $name {
            /// Constant time, so a comparison leaks nothing through timing.
            fn eq(&self, other: &Self) -> bool {
                self.0.ct_eq(&other.0).into()
            }
        }
        impl Eq for $name {}
    };
}

secret_type!(ConvergenceSecret, "convergence secret");
secret_type!(ChunkKey, "chunk key");
secret_type!(ArtifactKey, "artifact key");

impl ChunkKey {
    /// The convergent key of a chunk: HKDF-SHA256(salt = secret, ikm = BLAKE3(plaintext)).
    ///
    /// The same secret and plaintext always give the same key; without the secret the key
    /// cannot be computed even by someone who holds the plaintext.
    pub fn convergent(secret: &ConvergenceSecret, plaintext_hash: &[u8; 32]) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(secret.as_bytes()), plaintext_hash);
        let mut okm = [0u8; KEY_LEN];
        hk.expand(CHUNK_KEY_INFO, &mut okm)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self(okm)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn convergent_is_deterministic_and_secret_dependent() {
        let s1 = ConvergenceSecret::from_bytes([1; 32]);
        let s2 = ConvergenceSecret::from_bytes([2; 32]);
        let h = *blake3::hash(b"chunk").as_bytes();
        assert_eq!(ChunkKey::convergent(&s1, &h), ChunkKey::convergent(&s1, &h));
        assert_ne!(ChunkKey::convergent(&s1, &h), ChunkKey::convergent(&s2, &h));
        let h2 = *blake3::hash(b"other").as_bytes();
        assert_ne!(
            ChunkKey::convergent(&s1, &h),
            ChunkKey::convergent(&s1, &h2)
        );
    }

    #[test]
    fn debug_redacts() {
        let k = ArtifactKey::from_bytes([0xab; 32]);
        let s = format!("{k:?}");
        assert!(!s.contains("ab"), "{s}");
        assert!(!s.contains("171"), "{s}");
    }

    #[test]
    fn from_slice_checks_length() {
        assert_eq!(
            ChunkKey::from_slice(&[0; 31]).unwrap_err(),
            Error::BadLength {
                what: "chunk key",
                expected: 32,
                got: 31
            }
        );
        assert!(ChunkKey::from_slice(&[0; 32]).is_ok());
    }
}

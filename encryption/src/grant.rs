//! Grants: an artifact key wrapped to one gateway.
//!
//! A gateway has a [`GatewaySecret`] (32 random bytes, kept in its data directory) and
//! publishes its [`GatewayId`], the X25519 public key derived from it. A publisher wraps an
//! artifact key to that id with HPKE (RFC 9180) in base mode with the suite
//! DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and ChaCha20-Poly1305, from the maintained `hpke`
//! crate: a fresh ephemeral key per wrap (the 32-byte `enc`), and 48 sealed bytes (the key and
//! the AEAD tag). The HPKE `info` binds the wrap to its use (`cairn grant v1`), and the AAD to
//! what it unlocks (the repository name and the manifest CID's bytes, see [`wrap_key`]), so a
//! wrapped key copied into another name's record, or next to another artifact, does not open.
//!
//! Why a key of its own rather than the gateway's iroh (ed25519) identity: one key, one
//! purpose; a signing key converted to a Diffie-Hellman key is sound but couples the two, and a
//! gateway may rotate its grant key without changing its network identity.

use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use zeroize::Zeroize;

use crate::error::Error;
use crate::keys::{ArtifactKey, KEY_LEN};

type GrantKem = X25519HkdfSha256;

/// HPKE `info`: what the wrap is for.
const GRANT_INFO: &[u8] = b"cairn grant v1";
/// Length of a wrap's encapsulated key (`enc`): an X25519 public key.
pub const GRANT_ENC_LEN: usize = 32;
/// Length of a wrapped artifact key: the key and the 16-byte tag.
pub const GRANT_SEALED_LEN: usize = KEY_LEN + 16;
/// Text form prefix of a [`GatewayId`].
const ID_PREFIX: &str = "cairngw1";

/// A gateway's grant secret: the seed its X25519 key pair is derived from (HPKE's
/// `DeriveKeyPair`). Zeroed on drop; `Debug` never shows it.
pub struct GatewaySecret([u8; 32]);

impl GatewaySecret {
    /// A new secret from the operating system's generator.
    pub fn random() -> Self {
        let mut b = [0u8; 32];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut b);
        Self(b)
    }

    /// The secret from its 32 bytes (as stored).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The secret from a slice, which must be 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, Error> {
        let b: [u8; 32] = bytes.try_into().map_err(|_| Error::BadLength {
            what: "gateway grant secret",
            expected: 32,
            got: bytes.len(),
        })?;
        Ok(Self(b))
    }

    /// The 32 bytes to store (in a file only its owner can read).
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    fn keypair(&self) -> (<GrantKem as Kem>::PrivateKey, <GrantKem as Kem>::PublicKey) {
        GrantKem::derive_keypair(&self.0)
    }

    /// The public id publishers wrap keys to.
    pub fn id(&self) -> GatewayId {
        let (_, pk) = self.keypair();
        let mut b = [0u8; 32];
        b.copy_from_slice(&pk.to_bytes());
        GatewayId(b)
    }
}

impl Drop for GatewaySecret {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl std::fmt::Debug for GatewaySecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("GatewaySecret(..)")
    }
}

/// A gateway's public grant key (X25519), shown as `cairngw1` and 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GatewayId(pub [u8; 32]);

impl std::fmt::Display for GatewayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(ID_PREFIX)?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl std::fmt::Debug for GatewayId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "GatewayId({self})")
    }
}

impl std::str::FromStr for GatewayId {
    type Err = Error;

    /// Parses `cairngw1` and 64 hex digits; the key must be a valid X25519 public key.
    fn from_str(s: &str) -> Result<Self, Error> {
        let bad = || Error::BadGatewayId;
        let hex = s.strip_prefix(ID_PREFIX).ok_or_else(bad)?;
        if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad());
        }
        let mut b = [0u8; 32];
        for (i, out) in b.iter_mut().enumerate() {
            *out = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        <GrantKem as Kem>::PublicKey::from_bytes(&b).map_err(|_| bad())?;
        Ok(Self(b))
    }
}

/// An artifact key wrapped to one gateway: the gateway's id, HPKE's `enc` and the sealed key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrappedKey {
    /// The gateway that can unwrap it.
    pub gateway: GatewayId,
    /// The ephemeral public key of the wrap.
    pub enc: [u8; GRANT_ENC_LEN],
    /// The artifact key sealed with its tag.
    pub sealed: [u8; GRANT_SEALED_LEN],
}

/// Wraps `key` to `gateway`, bound to `context` (the caller's description of what the key
/// unlocks: Cairn uses the repository name and the manifest CID, so a wrap moved elsewhere
/// fails to open). Fails only when `gateway` is not a valid X25519 key.
pub fn wrap_key(
    gateway: &GatewayId,
    key: &ArtifactKey,
    context: &[u8],
) -> Result<WrappedKey, Error> {
    let pk =
        <GrantKem as Kem>::PublicKey::from_bytes(&gateway.0).map_err(|_| Error::BadGatewayId)?;
    let (enc, ct) = hpke::single_shot_seal::<ChaCha20Poly1305, HkdfSha256, GrantKem>(
        &OpModeS::Base,
        &pk,
        GRANT_INFO,
        key.as_bytes(),
        context,
    )
    .map_err(|_| Error::BadGatewayId)?;
    let mut out = WrappedKey {
        gateway: *gateway,
        enc: [0; GRANT_ENC_LEN],
        sealed: [0; GRANT_SEALED_LEN],
    };
    out.enc.copy_from_slice(&enc.to_bytes());
    if ct.len() != GRANT_SEALED_LEN {
        return Err(Error::Tampered { what: "grant" });
    }
    out.sealed.copy_from_slice(&ct);
    Ok(out)
}

/// Unwraps a key wrapped to this gateway under the same `context`; [`Error::Tampered`] when it
/// was wrapped to another gateway, under another context, or altered.
pub fn unwrap_key(
    secret: &GatewaySecret,
    wrapped: &WrappedKey,
    context: &[u8],
) -> Result<ArtifactKey, Error> {
    let tampered = || Error::Tampered { what: "grant" };
    let (sk, _) = secret.keypair();
    let enc = <GrantKem as Kem>::EncappedKey::from_bytes(&wrapped.enc).map_err(|_| tampered())?;
    let mut plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, GrantKem>(
        &OpModeR::Base,
        &sk,
        &enc,
        GRANT_INFO,
        &wrapped.sealed,
        context,
    )
    .map_err(|_| tampered())?;
    let key = ArtifactKey::from_slice(&plain);
    plain.zeroize();
    key.map_err(|_| tampered())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrapped_key_opens_only_for_its_gateway_and_context() {
        let gw = GatewaySecret::from_bytes([7; 32]);
        let other = GatewaySecret::from_bytes([8; 32]);
        let key = ArtifactKey::random();
        let w = wrap_key(&gw.id(), &key, b"org/model\0cid").unwrap();
        assert_eq!(w.gateway, gw.id());
        assert_eq!(unwrap_key(&gw, &w, b"org/model\0cid").unwrap(), key);
        // Another gateway, another context, an altered byte: nothing opens.
        assert_eq!(
            unwrap_key(&other, &w, b"org/model\0cid"),
            Err(Error::Tampered { what: "grant" })
        );
        assert!(unwrap_key(&gw, &w, b"org/other\0cid").is_err());
        for i in 0..GRANT_SEALED_LEN {
            let mut bad = w.clone();
            bad.sealed[i] ^= 1;
            assert!(
                unwrap_key(&gw, &bad, b"org/model\0cid").is_err(),
                "byte {i}"
            );
        }
        let mut bad = w.clone();
        bad.enc[0] ^= 1;
        assert!(unwrap_key(&gw, &bad, b"org/model\0cid").is_err());
        // Each wrap has a fresh ephemeral key.
        let again = wrap_key(&gw.id(), &key, b"org/model\0cid").unwrap();
        assert_ne!(again.enc, w.enc);
    }

    #[test]
    fn gateway_ids_round_trip_and_bad_ones_are_refused() {
        let id = GatewaySecret::from_bytes([9; 32]).id();
        let text = id.to_string();
        assert!(text.starts_with("cairngw1"));
        assert_eq!(text.len(), 8 + 64);
        assert_eq!(text.parse::<GatewayId>().unwrap(), id);
        for bad in [
            "",
            "cairngw1",
            &text[1..],
            &text[..70],
            "cairngw1zz",
            &text.replace("cairngw1", "cairngw2"),
        ] {
            assert_eq!(
                bad.parse::<GatewayId>(),
                Err(Error::BadGatewayId),
                "{bad:?}"
            );
        }
        // A sign where a digit should be (found by fuzzing: `from_str_radix` takes "+f"), so one
        // key never has two text forms.
        let plus = format!("cairngw1+{}", &text[9..]);
        assert_eq!(plus.parse::<GatewayId>(), Err(Error::BadGatewayId));
        // The same secret always gives the same id; the secret is never shown.
        assert_eq!(GatewaySecret::from_bytes([9; 32]).id(), id);
        assert_eq!(
            format!("{:?}", GatewaySecret::from_bytes([9; 32])),
            "GatewaySecret(..)"
        );
    }
}

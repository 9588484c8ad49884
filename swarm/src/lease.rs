//! Leases: an artifact publisher's signed statement that its artifact is to be kept until a
//! time.
//!
//! A node keeps a remote publisher's shards and manifest for as long as the publisher owns them
//! (until it DELETEs them), which for a publisher that goes away is forever. A [`Lease`] bounds
//! that: signed by a key the artifact's manifest allows to sign its records (`record_signers`,
//! the publisher's first), it says "keep this artifact until `until_ms`". Anyone can check it
//! against the manifest alone, so any node can pass it on: a node that places a repaired shard
//! on a new holder hands the new holder the lease with it. A node stores a lease only beside the
//! artifact's manifest and keeps the latest (PUT_LEASE, request type 10; GET_LEASE, type 11);
//! once the lease has ended, and a grace period after it, the node lets the artifact go (see
//! cairn-store's gc). The publisher keeps its artifact alive by sending later leases before the
//! current one ends.
//!
//! Byte layout (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CAIRNLS\0` |
//! | 8 | 1 | format version = 1 |
//! | 9 | 32 | signer endpoint id (ed25519 public key) |
//! | 41 | 1 | artifact CID length `L` (1..=[`CID_LEN_MAX`]) |
//! | 42 | `L` | artifact CID: CIDv1, dag-cbor, BLAKE3-256 (the manifest's CID), minimally encoded |
//! | 42+L | 8 | `until_ms`: Unix milliseconds until which the artifact is to be kept |
//! | 50+L | 8 | `issued_ms`: Unix milliseconds when the lease was signed |
//! | 58+L | 64 | ed25519 signature by the signer over the context `cairn lease v1\0` (15 bytes) followed by every byte before it |
//!
//! A lease is at most [`LEASE_LEN_MAX`] bytes, and nothing may follow the signature. Whether
//! the signer may sign leases of the artifact is the manifest's to say, and what times a node
//! accepts is the node's ([`Lease::check_time`]): neither is part of decoding.

use std::time::Duration;

use cid::Cid;
use iroh::{EndpointId, SecretKey, Signature};

use crate::cids::manifest_digest;
use crate::error::{Error, Result};
use crate::protocol::CID_LEN_MAX;

const MAGIC: &[u8; 8] = b"CAIRNLS\0";
const FORMAT_VERSION: u8 = 1;
/// Prepended to the signed bytes so that a lease signature can never pass for a signature of
/// anything else the same key signs (holder records, announcements, receipts, TLS).
const SIGN_CONTEXT: &[u8] = b"cairn lease v1\0";
const SIGNATURE_LEN: usize = 64;
/// Bytes before the CID: magic, version, signer, CID length.
const HEAD_LEN: usize = 8 + 1 + 32 + 1;

/// Largest signed lease: the fields with a CID of [`CID_LEN_MAX`] bytes, and the signature
/// (186 bytes; a lease of a Cairn manifest is 158).
pub const LEASE_LEN_MAX: u32 = (HEAD_LEN + CID_LEN_MAX + 8 + 8 + SIGNATURE_LEN) as u32;
/// How far past a node's clock a lease may end; beyond it the node refuses the lease
/// (INVALID_LEASE), so that a publisher renews at least this often and a key that leaks cannot
/// pin data on nodes for ever.
pub const LEASE_AHEAD_MAX: Duration = Duration::from_secs(400 * 24 * 3600);
/// How far past a node's clock a lease may say it was signed (clock skew); beyond it the node
/// refuses the lease (INVALID_LEASE).
pub const LEASE_ISSUED_AHEAD_MAX: Duration = Duration::from_secs(300);

const _: () = assert!(HEAD_LEN == 42);
const _: () = assert!(LEASE_LEN_MAX == 186);
const _: () = assert!(SIGN_CONTEXT.len() == 15);

fn invalid(reason: impl Into<String>) -> Error {
    Error::Lease {
        reason: reason.into(),
    }
}

/// A publisher's statement that `artifact` is to be kept until `until_ms`. Build it, then
/// [`try_sign`](Self::try_sign) it with the signer's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// The key that signs: one the artifact's manifest allows to sign its records.
    pub signer: EndpointId,
    /// The artifact: its manifest's CID (dag-cbor).
    pub artifact: Cid,
    /// Unix milliseconds until which the artifact is to be kept.
    pub until_ms: u64,
    /// Unix milliseconds when the lease was signed.
    pub issued_ms: u64,
}

/// A lease whose format, bounds and signature were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLease {
    /// The decoded lease; its `signer` signed it.
    pub lease: Lease,
    /// The signed bytes, as sent and stored.
    pub bytes: Vec<u8>,
}

impl Lease {
    /// Checks every rule [`SignedLease::decode`] applies to a decoded lease: the artifact is a
    /// manifest CID (CIDv1, dag-cbor, BLAKE3-256) within [`CID_LEN_MAX`] bytes. Fails with
    /// [`Error::Lease`] or [`Error::InvalidCid`].
    pub fn validate(&self) -> Result<()> {
        manifest_digest(&self.artifact)?;
        let len = self.artifact.encoded_len();
        if len > CID_LEN_MAX {
            return Err(invalid(format!(
                "artifact CID is {len} bytes, over {CID_LEN_MAX}"
            )));
        }
        Ok(())
    }

    /// Whether a node whose clock reads `now_ms` accepts this lease: it ends at most
    /// [`LEASE_AHEAD_MAX`] and was signed at most [`LEASE_ISSUED_AHEAD_MAX`] past `now_ms`.
    /// Fails with [`Error::Lease`] saying which.
    pub fn check_time(&self, now_ms: u64) -> Result<()> {
        let ahead = now_ms.saturating_add(LEASE_AHEAD_MAX.as_millis() as u64);
        if self.until_ms > ahead {
            return Err(invalid(format!(
                "the lease of {} ends at {} ms, more than {} days past this node's clock \
                 ({now_ms} ms)",
                self.artifact,
                self.until_ms,
                LEASE_AHEAD_MAX.as_secs() / 86_400
            )));
        }
        let issued = now_ms.saturating_add(LEASE_ISSUED_AHEAD_MAX.as_millis() as u64);
        if self.issued_ms > issued {
            return Err(invalid(format!(
                "the lease of {} was signed at {} ms, more than {LEASE_ISSUED_AHEAD_MAX:?} past \
                 this node's clock ({now_ms} ms)",
                self.artifact, self.issued_ms
            )));
        }
        Ok(())
    }

    /// The bytes the signature covers (without the context).
    fn encode_body(&self) -> Vec<u8> {
        let cid = self.artifact.to_bytes();
        let mut out = Vec::with_capacity(HEAD_LEN + cid.len() + 16 + SIGNATURE_LEN);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.signer.as_bytes());
        out.push(cid.len() as u8);
        out.extend_from_slice(&cid);
        out.extend_from_slice(&self.until_ms.to_be_bytes());
        out.extend_from_slice(&self.issued_ms.to_be_bytes());
        out
    }

    /// The signed bytes (the layout in the module docs), or why the lease cannot be signed: it
    /// breaks a rule of [`validate`](Self::validate), or `key` is not the signer's.
    pub fn try_sign(&self, key: &SecretKey) -> Result<Vec<u8>> {
        self.validate()?;
        if key.public() != self.signer {
            return Err(invalid(format!(
                "the lease names signer {}, the key is {}'s",
                self.signer.fmt_short(),
                key.public().fmt_short()
            )));
        }
        let mut out = self.encode_body();
        let signature = key.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

impl SignedLease {
    /// Decodes signed lease bytes, checking size, format, every rule of [`Lease::validate`],
    /// that nothing follows the signature and that the signer it names signed it. Says nothing
    /// about who may sign leases of the artifact (its manifest does) or about the times (see
    /// [`Lease::check_time`]). Fails with [`Error::Lease`] or [`Error::InvalidCid`]; never
    /// panics.
    pub fn decode(bytes: &[u8]) -> Result<SignedLease> {
        if bytes.len() > LEASE_LEN_MAX as usize {
            return Err(invalid(format!(
                "{} bytes is over the limit of {LEASE_LEN_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < HEAD_LEN + 1 + 16 + SIGNATURE_LEN {
            return Err(invalid(format!("{} bytes is too short", bytes.len())));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        if body[..8] != *MAGIC {
            return Err(invalid("magic bytes are not CAIRNLS"));
        }
        if body[8] != FORMAT_VERSION {
            return Err(invalid(format!(
                "format version {} is not supported",
                body[8]
            )));
        }
        let signer_bytes: [u8; 32] = body[9..41].try_into().expect("32 bytes");
        let signer = EndpointId::from_bytes(&signer_bytes)
            .map_err(|_| invalid("signer is not a valid public key"))?;
        let len = usize::from(body[41]);
        if len == 0 || len > CID_LEN_MAX {
            return Err(invalid(format!(
                "artifact CID length {len} is outside 1..={CID_LEN_MAX}"
            )));
        }
        if body.len() != HEAD_LEN + len + 16 {
            return Err(invalid(format!(
                "{} bytes for a lease of a {len}-byte CID, expected {}",
                bytes.len(),
                HEAD_LEN + len + 16 + SIGNATURE_LEN
            )));
        }
        let cid_bytes = &body[HEAD_LEN..HEAD_LEN + len];
        let artifact = Cid::read_bytes(cid_bytes)
            .map_err(|err| invalid(format!("artifact CID does not parse: {err}")))?;
        // Only the minimal encoding is accepted, so that one lease has one byte form.
        if artifact.to_bytes() != cid_bytes {
            return Err(invalid("artifact CID is not minimally encoded"));
        }
        let times = &body[HEAD_LEN + len..];
        let until_ms = u64::from_be_bytes(times[..8].try_into().expect("8 bytes"));
        let issued_ms = u64::from_be_bytes(times[8..].try_into().expect("8 bytes"));
        let lease = Lease {
            signer,
            artifact,
            until_ms,
            issued_ms,
        };
        lease.validate()?;
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        signer
            .verify(&signed_message(body), &Signature::from_bytes(signature))
            .map_err(|_| {
                invalid(format!(
                    "signature of signer {} does not verify",
                    signer.fmt_short()
                ))
            })?;
        Ok(SignedLease {
            lease,
            bytes: bytes.to_vec(),
        })
    }
}

fn signed_message(body: &[u8]) -> Vec<u8> {
    crate::signed::signed_message(SIGN_CONTEXT, body)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::{manifest_cid, shard_cid};
    use proptest::prelude::*;

    fn key(seed: u8) -> SecretKey {
        SecretKey::from_bytes(&[seed; 32])
    }

    fn sample() -> Lease {
        Lease {
            signer: key(1).public(),
            artifact: manifest_cid(b"a manifest"),
            until_ms: 1_760_000_000_000,
            issued_ms: 1_750_000_000_000,
        }
    }

    #[test]
    fn leases_round_trip() {
        let lease = sample();
        let bytes = lease.try_sign(&key(1)).unwrap();
        assert_eq!(bytes.len(), HEAD_LEN + 36 + 16 + SIGNATURE_LEN);
        assert_eq!(bytes.len(), 158);
        assert_eq!(&bytes[..8], b"CAIRNLS\0");
        let signed = SignedLease::decode(&bytes).unwrap();
        assert_eq!(signed.lease, lease);
        assert_eq!(signed.bytes, bytes);
        // Deterministic: the same lease signs to the same bytes.
        assert_eq!(lease.try_sign(&key(1)).unwrap(), bytes);
        // Any times decode: what a node accepts is its own check.
        for (until_ms, issued_ms) in [(0, 0), (u64::MAX, u64::MAX), (1, u64::MAX)] {
            let odd = Lease {
                until_ms,
                issued_ms,
                ..sample()
            };
            let bytes = odd.try_sign(&key(1)).unwrap();
            assert_eq!(SignedLease::decode(&bytes).unwrap().lease, odd);
        }
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = sample().try_sign(&key(1)).unwrap();
        for at in 0..bytes.len() {
            for bit in 0..8 {
                let mut changed = bytes.clone();
                changed[at] ^= 1 << bit;
                assert!(
                    SignedLease::decode(&changed).is_err(),
                    "byte {at} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn a_lease_signed_by_another_key_is_refused() {
        // The signer field says key 1; key 3 signs.
        let lease = sample();
        let body = lease.encode_body();
        let mut forged = body.clone();
        forged.extend_from_slice(&key(3).sign(&signed_message(&body)).to_bytes());
        let err = SignedLease::decode(&forged).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        // Signing refuses a key that is not the signer's.
        let err = lease.try_sign(&key(3)).unwrap_err().to_string();
        assert!(err.contains("names signer"), "{err}");
        // A signature without the context prefix does not verify either.
        let mut bare = body.clone();
        bare.extend_from_slice(&key(1).sign(&body).to_bytes());
        assert!(SignedLease::decode(&bare).is_err());
    }

    #[test]
    fn trailing_and_missing_bytes_are_refused() {
        let bytes = sample().try_sign(&key(1)).unwrap();
        for extra in [&[0u8][..], &[0; 28], &bytes[..]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(extra);
            assert!(SignedLease::decode(&longer).is_err());
        }
        for cut in 0..bytes.len() {
            assert!(SignedLease::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let huge = vec![0u8; LEASE_LEN_MAX as usize + 1];
        let err = SignedLease::decode(&huge).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }

    #[test]
    fn a_shard_is_no_artifact() {
        let lease = Lease {
            artifact: shard_cid(b"a shard"),
            ..sample()
        };
        let err = lease.try_sign(&key(1)).unwrap_err().to_string();
        assert!(err.contains("dag-cbor"), "{err}");
        // Signed anyway (by hand), the decoder refuses it too.
        let body = lease.encode_body();
        let mut bytes = body.clone();
        bytes.extend_from_slice(&key(1).sign(&signed_message(&body)).to_bytes());
        assert!(SignedLease::decode(&bytes).is_err());
    }

    #[test]
    fn times_are_judged_against_the_clock() {
        let now = 1_750_000_000_000u64;
        let ahead = LEASE_AHEAD_MAX.as_millis() as u64;
        let skew = LEASE_ISSUED_AHEAD_MAX.as_millis() as u64;
        let at = |until_ms, issued_ms| Lease {
            until_ms,
            issued_ms,
            ..sample()
        };
        assert!(at(now + ahead, now + skew).check_time(now).is_ok());
        assert!(
            at(0, 0).check_time(now).is_ok(),
            "an ended lease is no error"
        );
        let err = at(now + ahead + 1, now).check_time(now).unwrap_err();
        assert!(err.to_string().contains("400 days"), "{err}");
        let err = at(now, now + skew + 1).check_time(now).unwrap_err();
        assert!(err.to_string().contains("signed at"), "{err}");
        assert!(at(u64::MAX, 0).check_time(u64::MAX).is_ok());
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..300)) {
            let _ = SignedLease::decode(&bytes);
            let mut framed = b"CAIRNLS\0\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = SignedLease::decode(&framed);
        }

        #[test]
        fn edited_leases_never_decode(until in any::<u64>(), issued in any::<u64>(), at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let lease = Lease { until_ms: until, issued_ms: issued, ..sample() };
            let mut bytes = lease.try_sign(&key(1)).unwrap();
            prop_assert_eq!(&SignedLease::decode(&bytes).unwrap().lease, &lease);
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(SignedLease::decode(&bytes).is_err());
        }
    }
}

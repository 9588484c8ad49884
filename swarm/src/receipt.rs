//! Audit receipts: an auditor's signed statement that a holder passed an audit.
//!
//! An auditor that sent an AUDIT batch to a holder and found every answer proved against the
//! shards' CIDs ([`judge_audit`](crate::judge_audit)) may sign a [`Receipt`] naming itself, the
//! holder, the nonce, the time, the shards and their total size, and send it to the holder
//! (RECEIPT, request type 8). The holder keeps it as proof of service it can show to others:
//! anyone can check the signature against the auditor's endpoint id, with nothing else.
//!
//! Byte layout (integers big-endian):
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 8 | magic `CAIRNRC\0` |
//! | 8 | 1 | format version = 1 |
//! | 9 | 32 | auditor endpoint id (ed25519 public key): the signer |
//! | 41 | 32 | holder endpoint id (ed25519 public key) |
//! | 73 | 32 | nonce of the audit |
//! | 105 | 8 | time of the audit, Unix milliseconds |
//! | 113 | 1 | outcome: 1 = passed (every shard's answer proved); other values reserved, refused |
//! | 114 | 8 | bytes: the sum of the sizes of the audited shards (≤ count × [`SHARD_LEN_MAX`]) |
//! | 122 | 2 | shard count `n` (1..=[`AUDIT_BATCH_MAX`]) |
//! | 124 | … | `n` shards: `u8` length `L` (1..=[`CID_LEN_MAX`]) and `L` bytes of a shard CID (CIDv1, raw, BLAKE3-256, minimally encoded); the CIDs are distinct |
//! | end−64 | 64 | ed25519 signature by the auditor over the context `cairn audit receipt v1\0` (23 bytes) followed by every byte before it |
//!
//! A receipt is at most [`RECEIPT_LEN_MAX`] bytes, and nothing may follow the signature.

use std::collections::BTreeSet;
use std::time::Duration;

use cid::Cid;
use iroh::{EndpointId, SecretKey, Signature};

use crate::cids::shard_digest;
use crate::error::{Error, Result};
use crate::protocol::{AUDIT_BATCH_MAX, CID_LEN_MAX, SHARD_LEN_MAX};
use crate::signed::Cursor;

const MAGIC: &[u8; 8] = b"CAIRNRC\0";
const FORMAT_VERSION: u8 = 1;
/// Prepended to the signed bytes so that a receipt signature can never pass for a signature of
/// anything else the same key signs (announcements, holder records, TLS).
const SIGN_CONTEXT: &[u8] = b"cairn audit receipt v1\0";
const SIGNATURE_LEN: usize = 64;
/// The only outcome defined: every answer of the batch proved.
const OUTCOME_PASSED: u8 = 1;
/// Bytes before the shards: magic, version, auditor, holder, nonce, time, outcome, bytes, count.
const HEADER_LEN: usize = 8 + 1 + 32 + 32 + 32 + 8 + 1 + 8 + 2;

/// Largest signed receipt: the header, [`AUDIT_BATCH_MAX`] CIDs of [`CID_LEN_MAX`] bytes with
/// their length bytes, and the signature (4 348 bytes).
pub const RECEIPT_LEN_MAX: u32 =
    (HEADER_LEN + AUDIT_BATCH_MAX * (1 + CID_LEN_MAX) + SIGNATURE_LEN) as u32;
/// How far a receipt's time may be from the clock of the holder it is sent to, either way;
/// beyond it the holder refuses the receipt (INVALID_RECEIPT). Receipts are sent right after
/// the audit, so only clock skew separates the two.
pub const RECEIPT_SKEW_MAX: Duration = Duration::from_secs(300);

const _: () = assert!(HEADER_LEN == 124);
const _: () = assert!(RECEIPT_LEN_MAX == 4_348);
const _: () = assert!(AUDIT_BATCH_MAX <= u16::MAX as usize);

fn invalid(reason: impl Into<String>) -> Error {
    Error::Receipt {
        reason: reason.into(),
    }
}

/// An auditor's statement that `holder` passed the audit of `shards` with `nonce`. Build it,
/// then [`sign`](Self::sign) it with the auditor's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// The endpoint that audited, and signs.
    pub auditor: EndpointId,
    /// The endpoint audited.
    pub holder: EndpointId,
    /// The nonce of the audit.
    pub nonce: [u8; 32],
    /// When the audit was judged, Unix milliseconds.
    pub time_ms: u64,
    /// The sum of the sizes of `shards`, in bytes (at most `shards.len()` ×
    /// [`SHARD_LEN_MAX`]).
    pub bytes: u64,
    /// The shards audited: 1..=[`AUDIT_BATCH_MAX`] distinct raw shard CIDs.
    pub shards: Vec<Cid>,
}

/// A receipt whose format, bounds and auditor's signature were checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReceipt {
    /// The decoded receipt; its `auditor` signed it.
    pub receipt: Receipt,
    /// The signed bytes, as sent and stored.
    pub bytes: Vec<u8>,
}

impl Receipt {
    /// Checks every rule [`SignedReceipt::decode`] applies to a decoded receipt: 1..=
    /// [`AUDIT_BATCH_MAX`] distinct shard CIDs (CIDv1, raw, BLAKE3-256, within
    /// [`CID_LEN_MAX`] bytes) and `bytes` at most their count × [`SHARD_LEN_MAX`]. Fails with
    /// [`Error::Receipt`] or [`Error::InvalidCid`].
    pub fn validate(&self) -> Result<()> {
        let count = self.shards.len();
        if count == 0 || count > AUDIT_BATCH_MAX {
            return Err(invalid(format!(
                "{count} shards is outside 1..={AUDIT_BATCH_MAX}"
            )));
        }
        let mut seen = BTreeSet::new();
        for cid in &self.shards {
            shard_digest(cid)?;
            if cid.encoded_len() > CID_LEN_MAX {
                return Err(invalid(format!(
                    "shard CID is {} bytes, over {CID_LEN_MAX}",
                    cid.encoded_len()
                )));
            }
            if !seen.insert(cid.to_bytes()) {
                return Err(invalid(format!("shard {cid} is listed twice")));
            }
        }
        let most = count as u64 * u64::from(SHARD_LEN_MAX);
        if self.bytes > most {
            return Err(invalid(format!(
                "{} bytes is more than {count} shards can hold ({most})",
                self.bytes
            )));
        }
        Ok(())
    }

    /// The bytes the signature covers (without the context), `auditor` as given.
    fn encode_body(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(RECEIPT_LEN_MAX as usize);
        out.extend_from_slice(MAGIC);
        out.push(FORMAT_VERSION);
        out.extend_from_slice(self.auditor.as_bytes());
        out.extend_from_slice(self.holder.as_bytes());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.time_ms.to_be_bytes());
        out.push(OUTCOME_PASSED);
        out.extend_from_slice(&self.bytes.to_be_bytes());
        out.extend_from_slice(&(self.shards.len() as u16).to_be_bytes());
        for cid in &self.shards {
            let bytes = cid.to_bytes();
            out.push(bytes.len() as u8);
            out.extend_from_slice(&bytes);
        }
        out
    }

    /// The signed bytes, or why the receipt cannot be signed: it breaks a rule of
    /// [`validate`](Self::validate), or `key` is not the auditor's.
    pub fn try_sign(&self, key: &SecretKey) -> Result<Vec<u8>> {
        self.validate()?;
        if key.public() != self.auditor {
            return Err(invalid(format!(
                "the receipt names auditor {}, the key is {}'s",
                self.auditor.fmt_short(),
                key.public().fmt_short()
            )));
        }
        let mut out = self.encode_body();
        let signature = key.sign(&signed_message(&out));
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }

    /// The signed bytes: the layout in the module docs, signed by `key`, the auditor's key.
    ///
    /// # Panics
    ///
    /// If the receipt breaks a rule of [`validate`](Self::validate) or `key` is not the
    /// auditor's; use [`try_sign`](Self::try_sign) when the receipt is built from outside input.
    pub fn sign(&self, key: &SecretKey) -> Vec<u8> {
        match self.try_sign(key) {
            Ok(bytes) => bytes,
            Err(err) => panic!("signing an invalid audit receipt: {err}"),
        }
    }
}

impl SignedReceipt {
    /// Decodes signed receipt bytes, checking size, format, every rule of
    /// [`Receipt::validate`], that nothing follows the signature and that the auditor it names
    /// signed it. Says nothing about the time (the holder checks it against its clock, see
    /// [`RECEIPT_SKEW_MAX`]). Fails with [`Error::Receipt`] or [`Error::InvalidCid`]; never
    /// panics.
    pub fn decode(bytes: &[u8]) -> Result<SignedReceipt> {
        if bytes.len() > RECEIPT_LEN_MAX as usize {
            return Err(invalid(format!(
                "{} bytes is over the limit of {RECEIPT_LEN_MAX}",
                bytes.len()
            )));
        }
        if bytes.len() < HEADER_LEN + 2 + SIGNATURE_LEN {
            return Err(invalid(format!("{} bytes is too short", bytes.len())));
        }
        let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
        let mut reader = Cursor::new(body, invalid);
        if reader.array::<8>()? != *MAGIC {
            return Err(invalid("magic bytes are not CAIRNRC"));
        }
        let format = reader.u8()?;
        if format != FORMAT_VERSION {
            return Err(invalid(format!("format version {format} is not supported")));
        }
        let auditor = EndpointId::from_bytes(&reader.array::<32>()?)
            .map_err(|_| invalid("auditor is not a valid public key"))?;
        let holder = EndpointId::from_bytes(&reader.array::<32>()?)
            .map_err(|_| invalid("holder is not a valid public key"))?;
        let nonce = reader.array::<32>()?;
        let time_ms = reader.u64()?;
        let outcome = reader.u8()?;
        if outcome != OUTCOME_PASSED {
            return Err(invalid(format!("outcome {outcome} is reserved")));
        }
        let total = reader.u64()?;
        let count = usize::from(reader.u16()?);
        if count == 0 || count > AUDIT_BATCH_MAX {
            return Err(invalid(format!(
                "{count} shards is outside 1..={AUDIT_BATCH_MAX}"
            )));
        }
        let mut shards = Vec::with_capacity(count);
        for _ in 0..count {
            let len = usize::from(reader.u8()?);
            if len == 0 || len > CID_LEN_MAX {
                return Err(invalid(format!(
                    "shard CID length {len} is outside 1..={CID_LEN_MAX}"
                )));
            }
            let cid_bytes = reader.take(len)?;
            let cid = Cid::read_bytes(cid_bytes)
                .map_err(|err| invalid(format!("shard CID does not parse: {err}")))?;
            // Only the minimal encoding is accepted, so that one receipt has one byte form.
            if cid.to_bytes() != cid_bytes {
                return Err(invalid("shard CID is not minimally encoded"));
            }
            shards.push(cid);
        }
        if !reader.rest().is_empty() {
            return Err(invalid(format!(
                "{} bytes between the shards and the signature",
                reader.rest().len()
            )));
        }
        let receipt = Receipt {
            auditor,
            holder,
            nonce,
            time_ms,
            bytes: total,
            shards,
        };
        receipt.validate()?;
        let signature: &[u8; SIGNATURE_LEN] = signature
            .try_into()
            .map_err(|_| invalid("signature is not 64 bytes"))?;
        auditor
            .verify(&signed_message(body), &Signature::from_bytes(signature))
            .map_err(|_| {
                invalid(format!(
                    "signature of auditor {} does not verify",
                    auditor.fmt_short()
                ))
            })?;
        Ok(SignedReceipt {
            receipt,
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

    fn sample(shards: usize) -> Receipt {
        Receipt {
            auditor: key(1).public(),
            holder: key(2).public(),
            nonce: [7; 32],
            time_ms: 1_750_000_000_000,
            bytes: 12_345,
            shards: (0..shards).map(|i| shard_cid(&[i as u8; 3])).collect(),
        }
    }

    #[test]
    fn receipts_round_trip() {
        for n in [1, 3, AUDIT_BATCH_MAX] {
            let receipt = sample(n);
            let bytes = receipt.sign(&key(1));
            assert_eq!(bytes.len(), HEADER_LEN + 37 * n + SIGNATURE_LEN);
            assert!(bytes.len() <= RECEIPT_LEN_MAX as usize);
            assert_eq!(&bytes[..8], b"CAIRNRC\0");
            let signed = SignedReceipt::decode(&bytes).unwrap();
            assert_eq!(signed.receipt, receipt);
            assert_eq!(signed.bytes, bytes);
            // Deterministic: the same receipt signs to the same bytes.
            assert_eq!(receipt.sign(&key(1)), bytes);
        }
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let bytes = sample(2).sign(&key(1));
        for at in 0..bytes.len() {
            let mut changed = bytes.clone();
            changed[at] ^= 0x01;
            assert!(SignedReceipt::decode(&changed).is_err(), "byte {at}");
        }
    }

    #[test]
    fn a_receipt_signed_by_another_key_is_refused() {
        // The auditor field says key 1; key 3 signs.
        let receipt = sample(2);
        let body = receipt.encode_body();
        let mut forged = body.clone();
        forged.extend_from_slice(&key(3).sign(&signed_message(&body)).to_bytes());
        let err = SignedReceipt::decode(&forged).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        // Signing refuses a key that is not the auditor's.
        let err = receipt.try_sign(&key(3)).unwrap_err().to_string();
        assert!(err.contains("names auditor"), "{err}");
        // A signature without the context prefix does not verify either.
        let mut bare = body.clone();
        bare.extend_from_slice(&key(1).sign(&body).to_bytes());
        assert!(SignedReceipt::decode(&bare).is_err());
    }

    #[test]
    fn trailing_and_missing_bytes_are_refused() {
        let bytes = sample(2).sign(&key(1));
        for extra in [&[0u8][..], &[0; 64], &bytes[..]] {
            let mut longer = bytes.clone();
            longer.extend_from_slice(extra);
            assert!(SignedReceipt::decode(&longer).is_err());
        }
        for cut in 0..bytes.len() {
            assert!(
                SignedReceipt::decode(&bytes[..cut]).is_err(),
                "cut at {cut}"
            );
        }
        let huge = vec![0u8; RECEIPT_LEN_MAX as usize + 1];
        let err = SignedReceipt::decode(&huge).unwrap_err().to_string();
        assert!(err.contains("over the limit"), "{err}");
    }

    #[test]
    fn invalid_receipts_are_refused_before_signing_and_when_decoded() {
        type Breaker = Box<dyn Fn(&mut Receipt)>;
        let cases: Vec<(&str, Breaker)> = vec![
            ("0 shards", Box::new(|r| r.shards.clear())),
            (
                "outside 1..=64",
                Box::new(|r| r.shards = sample(AUDIT_BATCH_MAX + 1).shards),
            ),
            ("listed twice", Box::new(|r| r.shards[1] = r.shards[0])),
            ("a shard", Box::new(|r| r.shards[0] = manifest_cid(b"m"))),
            ("can hold", Box::new(|r| r.bytes = 2 * 8 * 1024 * 1024 + 1)),
        ];
        for (expected, break_it) in cases {
            let mut receipt = sample(2);
            break_it(&mut receipt);
            let err = receipt.try_sign(&key(1)).unwrap_err().to_string();
            assert!(err.contains(expected), "{expected}: {err}");
            // Signed anyway (by hand), the decoder refuses it too.
            let body = receipt.encode_body();
            let mut bytes = body.clone();
            bytes.extend_from_slice(&key(1).sign(&signed_message(&body)).to_bytes());
            assert!(SignedReceipt::decode(&bytes).is_err(), "{expected}");
        }
        // A reserved outcome, signed, is refused.
        let receipt = sample(1);
        let mut body = receipt.encode_body();
        body[113] = 2;
        let mut bytes = body.clone();
        bytes.extend_from_slice(&key(1).sign(&signed_message(&body)).to_bytes());
        let err = SignedReceipt::decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("outcome 2 is reserved"), "{err}");
    }

    proptest! {
        #[test]
        fn random_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = SignedReceipt::decode(&bytes);
            let mut framed = b"CAIRNRC\0\x01".to_vec();
            framed.extend_from_slice(&bytes);
            let _ = SignedReceipt::decode(&framed);
        }

        #[test]
        fn edited_receipts_never_decode(n in 1usize..5, at in any::<prop::sample::Index>(), bit in 0u8..8) {
            let mut bytes = sample(n).sign(&key(1));
            let at = at.index(bytes.len());
            bytes[at] ^= 1 << bit;
            prop_assert!(SignedReceipt::decode(&bytes).is_err());
        }
    }
}

//! Shard CIDs: CIDv1, codec raw, multihash BLAKE3 with a 32-byte digest.

use cid::{Cid, Version, multihash::Multihash};

use crate::error::{Error, Result};

/// Multicodec code of raw bytes: a shard is opaque sealed ciphertext.
pub const CODEC_RAW: u64 = 0x55;
/// Multihash code of BLAKE3 with a 32-byte digest.
pub const MULTIHASH_BLAKE3: u64 = 0x1e;
const DIGEST_LEN: usize = 32;

/// The CID of a shard with these bytes.
pub fn shard_cid(bytes: &[u8]) -> Cid {
    let digest = blake3::hash(bytes);
    let hash = Multihash::wrap(MULTIHASH_BLAKE3, digest.as_bytes())
        .expect("a 32-byte digest fits a 64-byte multihash");
    Cid::new_v1(CODEC_RAW, hash)
}

/// The BLAKE3 digest inside a shard CID, or [`Error::InvalidCid`] if the CID is not of the one
/// form shards use.
pub fn shard_digest(cid: &Cid) -> Result<[u8; 32]> {
    let invalid = |reason: String| Error::InvalidCid {
        cid: cid.to_string(),
        reason,
    };
    if cid.version() != Version::V1 {
        return Err(invalid("version is not 1".into()));
    }
    if cid.codec() != CODEC_RAW {
        return Err(invalid(format!(
            "codec is {:#x}, expected raw {CODEC_RAW:#x}",
            cid.codec()
        )));
    }
    let hash = cid.hash();
    if hash.code() != MULTIHASH_BLAKE3 {
        return Err(invalid(format!(
            "multihash is {:#x}, expected BLAKE3 {MULTIHASH_BLAKE3:#x}",
            hash.code()
        )));
    }
    hash.digest().try_into().map_err(|_| {
        invalid(format!(
            "digest is {} bytes, expected {DIGEST_LEN}",
            hash.digest().len()
        ))
    })
}

/// Whether `bytes` are the shard named by `cid` (false also when `cid` is not a shard CID).
pub(crate) fn matches(cid: &Cid, bytes: &[u8]) -> bool {
    shard_digest(cid).is_ok_and(|digest| *blake3::hash(bytes).as_bytes() == digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_cid_round_trips_its_digest() {
        let cid = shard_cid(b"hello");
        assert_eq!(
            shard_digest(&cid).unwrap(),
            *blake3::hash(b"hello").as_bytes()
        );
        assert!(matches(&cid, b"hello"));
        assert!(!matches(&cid, b"hellO"));
        // CIDv1 raw BLAKE3: version, codec, hash code, length, 32 digest bytes.
        assert_eq!(cid.to_bytes().len(), 36);
    }

    #[test]
    fn other_codecs_and_hashes_are_rejected() {
        let digest = blake3::hash(b"x");
        let dag_cbor = Cid::new_v1(
            0x71,
            Multihash::wrap(MULTIHASH_BLAKE3, digest.as_bytes()).unwrap(),
        );
        assert!(matches!(
            shard_digest(&dag_cbor),
            Err(Error::InvalidCid { .. })
        ));
        let sha256 = Cid::new_v1(CODEC_RAW, Multihash::wrap(0x12, digest.as_bytes()).unwrap());
        assert!(matches!(
            shard_digest(&sha256),
            Err(Error::InvalidCid { .. })
        ));
        let short = Cid::new_v1(
            CODEC_RAW,
            Multihash::wrap(MULTIHASH_BLAKE3, &[0; 16]).unwrap(),
        );
        assert!(matches!(
            shard_digest(&short),
            Err(Error::InvalidCid { .. })
        ));
    }
}

//! Content addresses: CIDv1 with a BLAKE3 multihash, codec raw for shards and dag-cbor for
//! manifests.

use cid::Cid;
use multihash::Multihash;

use crate::Error;

/// Multicodec of raw bytes (shards).
pub const CODEC_RAW: u64 = 0x55;
/// Multicodec of DAG-CBOR documents (manifests).
pub const CODEC_DAG_CBOR: u64 = 0x71;
/// Multihash code of BLAKE3 with a 32-byte digest.
pub const MULTIHASH_BLAKE3: u64 = 0x1e;

fn cid_of(codec: u64, hash: &blake3::Hash) -> Cid {
    let mh = Multihash::<64>::wrap(MULTIHASH_BLAKE3, hash.as_bytes())
        .expect("a 32-byte digest fits a 64-byte multihash");
    Cid::new_v1(codec, mh)
}

/// The CID of a shard: CIDv1, raw, BLAKE3 of the bytes.
pub fn shard_cid(bytes: &[u8]) -> Cid {
    shard_cid_from_hash(&blake3::hash(bytes))
}

/// The CID of a shard whose BLAKE3 hash (or bao root, the same value) is `hash`.
pub fn shard_cid_from_hash(hash: &blake3::Hash) -> Cid {
    cid_of(CODEC_RAW, hash)
}

/// The CID of an encoded manifest: CIDv1, dag-cbor, BLAKE3 of the bytes.
pub fn manifest_cid(bytes: &[u8]) -> Cid {
    cid_of(CODEC_DAG_CBOR, &blake3::hash(bytes))
}

/// The BLAKE3 digest inside a Cairn CID, or `None` when the CID is not CIDv1 + BLAKE3-256.
/// (Any codec: check `cid.codec()` separately where it matters.)
pub fn blake3_digest(cid: &Cid) -> Option<[u8; 32]> {
    if cid.version() != cid::Version::V1 || cid.hash().code() != MULTIHASH_BLAKE3 {
        return None;
    }
    cid.hash().digest().try_into().ok()
}

/// Checks that `bytes` are the shard named by `cid`.
pub fn verify_shard(cid: &Cid, bytes: &[u8]) -> Result<(), Error> {
    if cid.codec() != CODEC_RAW {
        return Err(Error::Corrupted {
            cid: *cid,
            reason: "not a raw-codec CID".into(),
        });
    }
    let want = blake3_digest(cid).ok_or_else(|| Error::Corrupted {
        cid: *cid,
        reason: "not a CIDv1 BLAKE3-256 address".into(),
    })?;
    if blake3::hash(bytes).as_bytes() != &want {
        return Err(Error::Corrupted {
            cid: *cid,
            reason: "BLAKE3 hash mismatch".into(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shard_cid_verifies_and_rejects() {
        let c = shard_cid(b"abc");
        assert_eq!(c.codec(), CODEC_RAW);
        verify_shard(&c, b"abc").unwrap();
        assert!(matches!(
            verify_shard(&c, b"abd"),
            Err(Error::Corrupted { .. })
        ));
        let m = manifest_cid(b"abc");
        assert!(matches!(
            verify_shard(&m, b"abc"),
            Err(Error::Corrupted { .. })
        ));
        // The string form round trips and is base32 ("b...").
        let s = c.to_string();
        assert!(s.starts_with('b'));
        assert_eq!(Cid::try_from(s.as_str()).unwrap(), c);
    }
}

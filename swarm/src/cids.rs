//! Which CIDs the peer layer carries, on top of cairn-store's content addresses.
//!
//! cairn-store defines Cairn's CIDs (CIDv1, BLAKE3-256 multihash; codec raw for shards, dag-cbor
//! for manifests) and the functions that make and check them; this module only adds the rule of
//! the shard protocol: both codecs travel over the same PUT/GET, and nothing else does.

use cid::Version;

pub use cairn_artifact::{
    CODEC_DAG_CBOR, CODEC_RAW, Cid, MULTIHASH_BLAKE3, blake3_digest, manifest_cid, shard_cid,
};

use crate::error::{Error, Result};

/// The BLAKE3 digest inside a CID the shard protocol carries: CIDv1, codec raw (a shard) or
/// dag-cbor (a manifest), multihash BLAKE3 with a 32-byte digest. Any other CID is
/// [`Error::InvalidCid`] naming the part that is wrong.
pub fn content_digest(cid: &Cid) -> Result<[u8; 32]> {
    let invalid = |reason: String| Error::InvalidCid {
        cid: cid.to_string(),
        reason,
    };
    if cid.version() != Version::V1 {
        return Err(invalid("version is not 1".into()));
    }
    if cid.codec() != CODEC_RAW && cid.codec() != CODEC_DAG_CBOR {
        return Err(invalid(format!(
            "codec is {:#x}, expected raw {CODEC_RAW:#x} or dag-cbor {CODEC_DAG_CBOR:#x}",
            cid.codec()
        )));
    }
    blake3_digest(cid).ok_or_else(|| {
        invalid(format!(
            "multihash is {:#x} with a {}-byte digest, expected BLAKE3 {MULTIHASH_BLAKE3:#x} with 32",
            cid.hash().code(),
            cid.hash().digest().len()
        ))
    })
}

/// The digest of a manifest CID (dag-cbor), or [`Error::InvalidCid`]; holder records are keyed
/// by it.
pub(crate) fn manifest_digest(cid: &Cid) -> Result<[u8; 32]> {
    let digest = content_digest(cid)?;
    if cid.codec() != CODEC_DAG_CBOR {
        return Err(Error::InvalidCid {
            cid: cid.to_string(),
            reason: format!(
                "codec is {:#x}, expected dag-cbor {CODEC_DAG_CBOR:#x} (a manifest)",
                cid.codec()
            ),
        });
    }
    Ok(digest)
}

/// The digest of a shard CID (raw), or [`Error::InvalidCid`]; audits and receipts are about
/// shards only.
pub(crate) fn shard_digest(cid: &Cid) -> Result<[u8; 32]> {
    let digest = content_digest(cid)?;
    if cid.codec() != CODEC_RAW {
        return Err(Error::InvalidCid {
            cid: cid.to_string(),
            reason: format!(
                "codec is {:#x}, expected raw {CODEC_RAW:#x} (a shard)",
                cid.codec()
            ),
        });
    }
    Ok(digest)
}

/// Whether `bytes` are the content named by `cid` (false also when the protocol does not carry
/// `cid`).
pub(crate) fn matches(cid: &Cid, bytes: &[u8]) -> bool {
    content_digest(cid).is_ok_and(|digest| *blake3::hash(bytes).as_bytes() == digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cid::multihash::Multihash;

    #[test]
    fn shard_and_manifest_cids_are_carried() {
        for cid in [shard_cid(b"hello"), manifest_cid(b"hello")] {
            assert_eq!(
                content_digest(&cid).unwrap(),
                *blake3::hash(b"hello").as_bytes()
            );
            assert!(matches(&cid, b"hello"));
            assert!(!matches(&cid, b"hellO"));
            // CIDv1 BLAKE3: version, codec, hash code, length, 32 digest bytes.
            assert_eq!(cid.to_bytes().len(), 36);
        }
        assert!(manifest_digest(&manifest_cid(b"m")).is_ok());
        assert!(shard_digest(&shard_cid(b"m")).is_ok());
        assert!(matches!(
            shard_digest(&manifest_cid(b"m")),
            Err(Error::InvalidCid { reason, .. }) if reason.contains("a shard")
        ));
        assert!(matches!(
            manifest_digest(&shard_cid(b"m")),
            Err(Error::InvalidCid { reason, .. }) if reason.contains("dag-cbor")
        ));
    }

    #[test]
    fn other_codecs_and_hashes_are_rejected() {
        let digest = blake3::hash(b"x");
        let dag_pb = Cid::new_v1(
            0x70,
            Multihash::wrap(MULTIHASH_BLAKE3, digest.as_bytes()).unwrap(),
        );
        assert!(matches!(
            content_digest(&dag_pb),
            Err(Error::InvalidCid { reason, .. }) if reason.contains("codec")
        ));
        let sha256 = Cid::new_v1(CODEC_RAW, Multihash::wrap(0x12, digest.as_bytes()).unwrap());
        assert!(matches!(
            content_digest(&sha256),
            Err(Error::InvalidCid { reason, .. }) if reason.contains("multihash")
        ));
        let short = Cid::new_v1(
            CODEC_DAG_CBOR,
            Multihash::wrap(MULTIHASH_BLAKE3, &[0; 16]).unwrap(),
        );
        assert!(matches!(
            content_digest(&short),
            Err(Error::InvalidCid { .. })
        ));
        assert!(!matches(&short, b""));
    }
}

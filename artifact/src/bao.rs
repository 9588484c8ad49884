//! BLAKE3 verified streaming (bao) over shards: the outboard kept beside each shard lets a
//! holder prove it has any range of the shard, and lets a reader check a range without the rest.
//!
//! The root of a shard's bao tree is its plain BLAKE3 hash, that is the digest in its CID, so
//! the verifier needs nothing but the CID and the shard length.

use std::ops::Range;

use bao_tree::io::BaoContentItem;
use bao_tree::io::outboard::{PostOrderMemOutboard, PostOrderOutboard};
pub use bao_tree::io::sync::ReadAt;
use bao_tree::io::sync::{DecodeResponseIter, encode_ranges_validated};
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};

use crate::{Cid, Error, ids::blake3_digest};

/// Chunk groups of 16 KiB (2^4 BLAKE3 chunks): the outboard is 64 bytes per 16 KiB (0.4 %).
pub const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

/// Computes the post-order outboard of `data`; returns its root (the BLAKE3 hash) and bytes.
pub fn outboard(data: &[u8]) -> (blake3::Hash, Vec<u8>) {
    let ob = PostOrderMemOutboard::create(data, BLOCK_SIZE);
    (ob.root, ob.data)
}

fn chunk_ranges(range: &Range<u64>) -> ChunkRanges {
    ChunkRanges::from(ChunkNum::full_chunks(range.start)..ChunkNum::chunks(range.end))
}

/// Encodes `range` of a shard as a bao response (data of the covering chunk groups plus the hash
/// pairs from the root down), validating the data against the outboard as it goes.
pub fn prove_range(
    cid: &Cid,
    data: &[u8],
    outboard: &[u8],
    range: Range<u64>,
) -> Result<Vec<u8>, Error> {
    let tree = BaoTree::new(data.len() as u64, BLOCK_SIZE);
    if outboard.len() as u64 != tree.outboard_size() {
        return Err(Error::Corrupted {
            cid: *cid,
            reason: "outboard has the wrong length".into(),
        });
    }
    prove_range_at(cid, data.len() as u64, data, outboard, range)
}

/// [`prove_range`] over positional readers of a `size`-byte blob and its outboard (for
/// example a shard file at the offsets of its data and outboard): only the groups of `range`
/// and the outboard's hashes on their paths are read, and each group read is checked against
/// the outboard, the outboard against the CID, so a damaged group is an error, not a proof.
pub fn prove_range_at(
    cid: &Cid,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
    range: Range<u64>,
) -> Result<Vec<u8>, Error> {
    let root = blake3_digest(cid).ok_or_else(|| Error::Corrupted {
        cid: *cid,
        reason: "not a BLAKE3 CID".into(),
    })?;
    let ob = PostOrderOutboard {
        root: blake3::Hash::from(root),
        tree: BaoTree::new(size, BLOCK_SIZE),
        data: outboard,
    };
    let mut out = Vec::new();
    encode_ranges_validated(data, ob, &chunk_ranges(&range), &mut out).map_err(|e| {
        Error::Corrupted {
            cid: *cid,
            reason: format!("bao validation failed: {e}"),
        }
    })?;
    Ok(out)
}

/// Checks a bao response for `range` of the shard `cid` of `size` bytes and returns exactly the
/// bytes of `range`. Any altered byte of data or proof is an error.
pub fn verify_range(
    cid: &Cid,
    size: u64,
    range: Range<u64>,
    encoded: &[u8],
) -> Result<Vec<u8>, Error> {
    let corrupted = |reason: String| Error::Corrupted { cid: *cid, reason };
    let root = blake3_digest(cid).ok_or_else(|| corrupted("not a BLAKE3 CID".into()))?;
    if range.start > range.end || range.end > size {
        return Err(corrupted(format!(
            "range {range:?} is outside a shard of {size} bytes"
        )));
    }
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let ranges = chunk_ranges(&range);
    let mut out = Vec::with_capacity((range.end - range.start) as usize);
    let mut consumed = 0usize;
    let mut reader = encoded;
    for item in DecodeResponseIter::new(blake3::Hash::from(root), tree, &mut reader, &ranges) {
        match item.map_err(|e| corrupted(format!("bao proof rejected: {e}")))? {
            BaoContentItem::Parent(_) => {}
            BaoContentItem::Leaf(leaf) => {
                let start = leaf.offset;
                let end = start + leaf.data.len() as u64;
                let lo = range.start.max(start);
                let hi = range.end.min(end);
                if lo < hi {
                    out.extend_from_slice(&leaf.data[(lo - start) as usize..(hi - start) as usize]);
                }
                consumed += leaf.data.len();
            }
        }
    }
    if !reader.is_empty() {
        return Err(corrupted(format!(
            "{} trailing bytes after the bao proof",
            reader.len()
        )));
    }
    if out.len() as u64 != range.end - range.start {
        return Err(corrupted(format!(
            "bao proof covered {consumed} bytes, not the range asked"
        )));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shard_cid;

    #[test]
    fn ranges_prove_and_verify() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let cid = shard_cid(&data);
        let (root, ob) = outboard(&data);
        assert_eq!(root, blake3::hash(&data));
        for range in [
            0..1,
            0..200_000,
            16_383..16_385,
            199_999..200_000,
            50_000..50_000,
            12_345..99_999,
        ] {
            let proof = prove_range(&cid, &data, &ob, range.clone()).unwrap();
            let got = verify_range(&cid, data.len() as u64, range.clone(), &proof).unwrap();
            assert_eq!(
                got,
                &data[range.start as usize..range.end as usize],
                "{range:?}"
            );
        }
    }

    #[test]
    fn tampered_proof_is_rejected() {
        let data = vec![7u8; 100_000];
        let cid = shard_cid(&data);
        let (_, ob) = outboard(&data);
        let proof = prove_range(&cid, &data, &ob, 20_000..30_000).unwrap();
        for i in [0, proof.len() / 2, proof.len() - 1] {
            let mut bad = proof.clone();
            bad[i] ^= 1;
            assert!(matches!(
                verify_range(&cid, 100_000, 20_000..30_000, &bad),
                Err(Error::Corrupted { .. })
            ));
        }
        let mut short = proof.clone();
        short.pop();
        assert!(verify_range(&cid, 100_000, 20_000..30_000, &short).is_err());
    }

    #[test]
    fn corrupt_data_cannot_be_proven() {
        let mut data = vec![1u8; 70_000];
        let cid = shard_cid(&data);
        let (_, ob) = outboard(&data);
        data[40_000] ^= 1;
        assert!(prove_range(&cid, &data, &ob, 32_768..49_152).is_err());
    }
}

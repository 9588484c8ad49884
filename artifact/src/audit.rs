//! Storage-proof challenges over shards: which bytes an auditor asks for, how a holder answers,
//! and how the answer is checked against the shard's CID alone.
//!
//! An auditor sends a fresh 32-byte nonce and a batch of shard CIDs. For each shard, the nonce
//! and the CID pick [`AUDIT_GROUPS`] distinct 16 KiB chunk groups ([`crate::BLOCK_SIZE`], the
//! granularity of the bao outboard every holder keeps) by a keyed BLAKE3 stream; the holder
//! answers each with a bao range proof ([`crate::prove_range`]); the auditor verifies each
//! against the CID ([`crate::verify_range`]). The holder cannot know which groups will be asked
//! before the nonce arrives, and a proof made for one nonce names other groups than the next
//! nonce's, so an old answer replayed fails.
//!
//! # What passing says
//! A holder that kept a fraction `f` of a shard's `g` groups (and answers from nothing else)
//! passes one challenge of `c` = min([`AUDIT_GROUPS`], `g`) distinct groups with probability
//! `C(f·g, c) / C(g, c)` ≤ `f^c`: with `c` = 4, a holder keeping half a shard passes 1 in 16
//! challenges (6.25 %), one keeping 90 % passes 66 %; over `n` independent audits `f^(4n)`, so
//! half a shard survives three audits with probability 1 in 4096. A shard of at most 4 groups
//! (64 KiB) is asked whole.
//!
//! # What it costs
//! About `c × (16 KiB + 64 B × tree depth)` per shard, whatever the shard's size: ~66 KiB for
//! the ~350 KiB shard of a 1 MiB chunk stored 3-of-5, 19 % of it. Holding a holder to account
//! is a matter of groups sampled per holder and period, not per shard, which is why audits are
//! spread over a period and a batch may sample fewer groups per shard (the scheduler's choice).
//! Proofs cannot be finer than a group: the outboard keeps no hashes inside one.

use std::ops::Range;

use crate::bao::{ReadAt, prove_range_at};
use crate::{BLOCK_SIZE, Cid, Error, verify_range};

/// Chunk groups asked per shard and challenge.
pub const AUDIT_GROUPS: usize = 4;
/// Bytes of a chunk group (16 KiB).
pub const AUDIT_GROUP_LEN: u64 = BLOCK_SIZE.bytes() as u64;

const CONTEXT: &str = "cairn 2026 storage audit ranges v1";

/// The byte ranges of shard `cid` (of `size` bytes) that nonce `nonce` asks for: distinct,
/// whole chunk groups (the last one clipped to the shard), in increasing order.
pub fn challenge_ranges(nonce: &[u8; 32], cid: &Cid, size: u64) -> Vec<Range<u64>> {
    let groups = size.div_ceil(AUDIT_GROUP_LEN);
    let want = (AUDIT_GROUPS as u64).min(groups);
    let mut picked: Vec<u64> = Vec::with_capacity(want as usize);
    if want == groups {
        picked.extend(0..groups);
    } else {
        let mut h = blake3::Hasher::new_derive_key(CONTEXT);
        h.update(nonce);
        h.update(&cid.to_bytes());
        h.update(&size.to_le_bytes());
        let mut xof = h.finalize_xof();
        // Rejection sampling over 64-bit draws: uniform, and ends (each draw picks a new group
        // with probability at least 1 - 3/groups ≥ 1/5 here, since groups > AUDIT_GROUPS).
        let zone = u64::MAX - u64::MAX % groups;
        while (picked.len() as u64) < want {
            let mut b = [0u8; 8];
            xof.fill(&mut b);
            let v = u64::from_le_bytes(b);
            if v >= zone {
                continue;
            }
            let g = v % groups;
            if !picked.contains(&g) {
                picked.push(g);
            }
        }
        picked.sort_unstable();
    }
    picked
        .into_iter()
        .map(|g| g * AUDIT_GROUP_LEN..((g + 1) * AUDIT_GROUP_LEN).min(size))
        .collect()
}

/// A holder's answer for one shard: a bao proof of each challenged range, in order, each
/// prefixed by its length (u32, little endian).
pub fn answer(nonce: &[u8; 32], cid: &Cid, data: &[u8], outboard: &[u8]) -> Result<Vec<u8>, Error> {
    let tree = bao_tree::BaoTree::new(data.len() as u64, crate::BLOCK_SIZE);
    if outboard.len() as u64 != tree.outboard_size() {
        return Err(Error::Corrupted {
            cid: *cid,
            reason: "outboard has the wrong length".into(),
        });
    }
    answer_at(nonce, cid, data.len() as u64, data, outboard)
}

/// [`answer`] over positional readers of the shard's `size` bytes and its outboard: reads only
/// the challenged groups and the hashes that prove them (about 64 KiB whatever the shard's
/// size), each checked on the way, so a holder answers an audit without reading or hashing the
/// whole shard.
pub fn answer_at(
    nonce: &[u8; 32],
    cid: &Cid,
    size: u64,
    data: impl ReadAt,
    outboard: impl ReadAt,
) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    for r in challenge_ranges(nonce, cid, size) {
        let proof = prove_range_at(cid, size, &data, &outboard, r)?;
        let len = u32::try_from(proof.len()).map_err(|_| Error::Corrupted {
            cid: *cid,
            reason: "a proof over 4 GiB".into(),
        })?;
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&proof);
    }
    Ok(out)
}

/// Checks a holder's answer for shard `cid` of `size` bytes against `nonce`: every challenged
/// range proved against the CID, nothing missing, nothing extra. Any other answer (another
/// nonce's, another range's, altered bytes, a truncated proof) is an error.
pub fn check_answer(nonce: &[u8; 32], cid: &Cid, size: u64, answer: &[u8]) -> Result<(), Error> {
    let bad = |reason: String| Error::Corrupted { cid: *cid, reason };
    let mut rest = answer;
    for r in challenge_ranges(nonce, cid, size) {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| bad("the audit answer is cut short".into()))?;
        let len = u32::from_le_bytes(*len) as usize;
        if tail.len() < len {
            return Err(bad("the audit answer is cut short".into()));
        }
        let (proof, tail) = tail.split_at(len);
        verify_range(cid, size, r, proof)?;
        rest = tail;
    }
    if !rest.is_empty() {
        return Err(bad(format!("{} bytes after the audit answer", rest.len())));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{outboard, shard_cid};

    fn shard(len: usize, seed: u8) -> (Cid, Vec<u8>, Vec<u8>) {
        let data: Vec<u8> = (0..len)
            .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1] ^ seed)
            .collect();
        let (_, ob) = outboard(&data);
        (shard_cid(&data), data, ob)
    }

    #[test]
    fn ranges_are_distinct_whole_groups_and_depend_on_nonce_and_cid() {
        let (cid, data, _) = shard(1 << 20, 1);
        let (other, _, _) = shard(1 << 20, 2);
        let n1 = [1u8; 32];
        let n2 = [2u8; 32];
        let r1 = challenge_ranges(&n1, &cid, data.len() as u64);
        assert_eq!(r1.len(), AUDIT_GROUPS);
        for w in r1.windows(2) {
            assert!(w[0].end <= w[1].start, "{r1:?}");
        }
        assert!(
            r1.iter()
                .all(|r| r.start % AUDIT_GROUP_LEN == 0 && r.end - r.start == AUDIT_GROUP_LEN)
        );
        assert_eq!(r1, challenge_ranges(&n1, &cid, data.len() as u64));
        assert_ne!(r1, challenge_ranges(&n2, &cid, data.len() as u64));
        assert_ne!(r1, challenge_ranges(&n1, &other, data.len() as u64));
        // Small shards are asked whole; the last group is clipped.
        let r = challenge_ranges(&n1, &cid, 40_000);
        assert_eq!(r, vec![0..16_384, 16_384..32_768, 32_768..40_000]);
        assert!(challenge_ranges(&n1, &cid, 0).is_empty());
        // Over many nonces every group of a 64-group shard gets asked.
        let mut seen = std::collections::HashSet::new();
        for i in 0..200u8 {
            for r in challenge_ranges(&[i; 32], &cid, data.len() as u64) {
                seen.insert(r.start / AUDIT_GROUP_LEN);
            }
        }
        assert_eq!(seen.len(), 64);
    }

    #[test]
    fn honest_answers_pass_and_lies_fail() {
        let (cid, data, ob) = shard(1 << 20, 3);
        let size = data.len() as u64;
        let nonce = [7u8; 32];
        let a = answer(&nonce, &cid, &data, &ob).unwrap();
        check_answer(&nonce, &cid, size, &a).unwrap();
        // About 4 groups and their proofs, not the shard.
        assert!(a.len() < 5 * AUDIT_GROUP_LEN as usize, "{}", a.len());
        // An old answer replayed for a new nonce.
        assert!(check_answer(&[8u8; 32], &cid, size, &a).is_err());
        // A flipped byte anywhere, a cut, an extra byte.
        for i in [0, 4, 100, a.len() / 2, a.len() - 1] {
            let mut b = a.clone();
            b[i] ^= 1;
            assert!(check_answer(&nonce, &cid, size, &b).is_err(), "flip at {i}");
        }
        assert!(check_answer(&nonce, &cid, size, &a[..a.len() - 1]).is_err());
        let mut longer = a.clone();
        longer.push(0);
        assert!(check_answer(&nonce, &cid, size, &longer).is_err());
        // Another shard's answer, and a shard whose bytes changed.
        let (other, odata, oob) = shard(1 << 20, 4);
        let wrong = answer(&nonce, &other, &odata, &oob).unwrap();
        assert!(check_answer(&nonce, &cid, size, &wrong).is_err());
        // A flipped byte in a group the nonce asks for cannot be proved; one in a group it does
        // not ask for goes unseen this time (audits sample; see the module docs).
        let asked = challenge_ranges(&nonce, &cid, size);
        let mut bad = data.clone();
        bad[asked[0].start as usize + 5] ^= 0x80;
        let caught = answer(&nonce, &cid, &bad, &ob)
            .is_err_and(|e| e.to_string().contains("bao validation failed"));
        assert!(caught);
        let unasked = (0..64u64)
            .find(|g| !asked.iter().any(|r| r.start == g * AUDIT_GROUP_LEN))
            .unwrap();
        let mut bad = data.clone();
        bad[(unasked * AUDIT_GROUP_LEN) as usize + 5] ^= 0x80;
        let a = answer(&nonce, &cid, &bad, &ob).unwrap();
        check_answer(&nonce, &cid, size, &a).unwrap();
    }

    #[test]
    fn a_holder_keeping_half_a_shard_fails_most_challenges() {
        // It kept the even groups and answers with zeros elsewhere (it cannot prove those).
        let (cid, data, ob) = shard(1 << 20, 5);
        let size = data.len() as u64;
        let mut kept = data.clone();
        for g in (1..64).step_by(2) {
            let s = g * AUDIT_GROUP_LEN as usize;
            kept[s..s + AUDIT_GROUP_LEN as usize].fill(0);
        }
        let mut passed = 0;
        for i in 0..400u32 {
            let mut nonce = [0u8; 32];
            nonce[..4].copy_from_slice(&i.to_le_bytes());
            let ok = answer(&nonce, &cid, &kept, &ob)
                .is_ok_and(|a| check_answer(&nonce, &cid, size, &a).is_ok());
            passed += usize::from(ok);
        }
        // C(32,4)/C(64,4) = 5.7 %: about 23 of 400; far from half.
        assert!((5..=50).contains(&passed), "{passed} of 400 passed");
    }
}

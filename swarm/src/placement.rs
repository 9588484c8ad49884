//! Choosing holders: weighted rendezvous hashing.
//!
//! Every (key, peer) pair gets a pseudo-random score `weight / -ln(h)` with `h` uniform in (0, 1)
//! from BLAKE3(key, peer id) (the logarithmic method of Schindelhauer and Schomaker), and the n
//! best-scoring peers hold the key. A peer's chance to rank first is proportional to its weight,
//! and removing a peer changes only the keys it held, which move to the next peer in their own
//! ranking.
//!
//! Scores use `f64::ln`, which may differ in the last bit between platforms; that is acceptable
//! because placement is advice at write time and the actual holders are recorded.

use iroh::EndpointId;

/// Domain separation so that placement hashes never collide with any other BLAKE3 use.
const PLACEMENT_CONTEXT: &str = "cairn 2025 placement v1";

fn score(key_hash: &blake3::Hash, peer: &EndpointId, weight: u64) -> f64 {
    let mut hasher = blake3::Hasher::new_derive_key(PLACEMENT_CONTEXT);
    hasher.update(key_hash.as_bytes());
    hasher.update(peer.as_bytes());
    let hash = hasher.finalize();
    let bits = u64::from_be_bytes(hash.as_bytes()[..8].try_into().expect("8 bytes"));
    // 53 random bits map exactly onto f64; the half step keeps h strictly inside (0, 1).
    let h = ((bits >> 11) as f64 + 0.5) / (1u64 << 53) as f64;
    weight as f64 / -h.ln()
}

/// The up to `n` distinct peers that should hold `key`, best first.
///
/// `weight` is typically the free quota a peer announced; a peer of weight 0 is never chosen.
/// Fewer than `n` peers are returned only when fewer than `n` have a positive weight. The result
/// depends only on the set of (peer, weight) pairs, not on their order; a peer listed twice counts
/// once (with its first weight).
pub fn place(key: &[u8], peers: &[(EndpointId, u64)], n: usize) -> Vec<EndpointId> {
    let key_hash = blake3::hash(key);
    let mut seen = std::collections::HashSet::new();
    let mut scored: Vec<(f64, EndpointId)> = peers
        .iter()
        .filter(|(id, weight)| *weight > 0 && seen.insert(*id))
        .map(|(id, weight)| (score(&key_hash, id, *weight), *id))
        .collect();
    // Ties (practically impossible) break by id so that the order stays total and deterministic.
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    scored.into_iter().take(n).map(|(_, id)| id).collect()
}

/// How many nodes keep each record (the records of an org's names, an artifact's manifest and
/// holder records): the first `RECORD_REPLICAS` of the record key's ranking over the live
/// membership.
pub const RECORD_REPLICAS: usize = 5;

/// Domain separation of record placement from shard placement, so that a record key that
/// happens to equal a chunk key does not land on the same nodes.
const RECORD_CONTEXT: &[u8] = b"cairn record placement v1\0";

/// The nodes that keep the record named `record_key`, best first: every peer of `peers` ranked
/// by rendezvous hashing with equal weights (a record is small, so free space does not matter,
/// and equal weights let every reader compute the same ranking from the membership alone).
/// The first [`RECORD_REPLICAS`] hold the record; readers ask them first and the next ones
/// only when those do not answer. When a holder leaves, only the records it held move, each
/// to the next node of its own ranking.
pub fn record_ranking(record_key: &[u8], peers: &[EndpointId]) -> Vec<EndpointId> {
    let mut key = Vec::with_capacity(RECORD_CONTEXT.len() + record_key.len());
    key.extend_from_slice(RECORD_CONTEXT);
    key.extend_from_slice(record_key);
    let weighted: Vec<(EndpointId, u64)> = peers.iter().map(|p| (*p, 1)).collect();
    place(&key, &weighted, weighted.len())
}

/// The record key of an artifact's manifest and holder records (see [`record_ranking`]): its
/// manifest CID, under a prefix that keeps it apart from org keys (`org\0…`).
pub fn artifact_record_key(artifact: &cid::Cid) -> Vec<u8> {
    let mut key = b"artifact\0".to_vec();
    key.extend_from_slice(&artifact.to_bytes());
    key
}

#[cfg(test)]
mod tests {
    use std::collections::{HashMap, HashSet};

    use iroh::SecretKey;

    use super::*;

    fn peers(count: u8) -> Vec<EndpointId> {
        (0..count)
            .map(|i| SecretKey::from_bytes(&[i + 1; 32]).public())
            .collect()
    }

    #[test]
    fn places_distinct_peers_and_respects_n() {
        let ids = peers(10);
        let weighted: Vec<_> = ids.iter().map(|id| (*id, 100)).collect();
        for n in [0, 1, 5, 10] {
            let chosen = place(b"chunk", &weighted, n);
            assert_eq!(chosen.len(), n);
            assert_eq!(chosen.iter().collect::<HashSet<_>>().len(), n);
        }
        assert_eq!(
            place(b"chunk", &weighted, 20).len(),
            10,
            "never more than the peers there are"
        );
        let mut with_empty = weighted.clone();
        with_empty[0].1 = 0;
        assert!(
            !place(b"chunk", &with_empty, 10).contains(&ids[0]),
            "weight 0 is never chosen"
        );
    }

    #[test]
    fn is_deterministic_and_order_independent() {
        let ids = peers(8);
        let weighted: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, i as u64 + 1))
            .collect();
        let mut reversed = weighted.clone();
        reversed.reverse();
        for key in 0u32..200 {
            let key = key.to_be_bytes();
            assert_eq!(place(&key, &weighted, 3), place(&key, &weighted, 3));
            assert_eq!(place(&key, &weighted, 3), place(&key, &reversed, 3));
        }
    }

    #[test]
    fn first_choice_is_proportional_to_weight() {
        let ids = peers(4);
        let weighted: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, (i as u64 + 1) << 30))
            .collect();
        let keys = 40_000u32;
        let mut counts: HashMap<EndpointId, u32> = HashMap::new();
        for key in 0..keys {
            *counts
                .entry(place(&key.to_be_bytes(), &weighted, 1)[0])
                .or_default() += 1;
        }
        for (i, id) in ids.iter().enumerate() {
            let expected = f64::from(keys) * (i as f64 + 1.0) / 10.0;
            let got = f64::from(counts[id]);
            // The standard deviation is at most 100 keys; 10 % of the expectation is 4 to 16 of them.
            assert!(
                (got - expected).abs() < expected * 0.1,
                "peer {i}: {got} keys, expected about {expected}"
            );
        }
    }

    #[test]
    fn removing_a_peer_moves_only_its_keys() {
        let ids = peers(10);
        let weighted: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(i, id)| (*id, 50 + i as u64 * 10))
            .collect();
        let gone = ids[3];
        let remaining: Vec<_> = weighted
            .iter()
            .copied()
            .filter(|(id, _)| *id != gone)
            .collect();
        let mut moved = 0;
        for key in 0u32..5_000 {
            let key = key.to_be_bytes();
            let before = place(&key, &weighted, 3);
            let after = place(&key, &remaining, 3);
            if before.contains(&gone) {
                moved += 1;
                let kept: Vec<_> = before.iter().filter(|id| **id != gone).collect();
                assert!(
                    kept.iter().all(|id| after.contains(id)),
                    "survivors keep their keys"
                );
                assert_eq!(after.len(), 3);
            } else {
                assert_eq!(before, after, "keys the removed peer did not hold stay put");
            }
        }
        assert!(moved > 0, "the removed peer held some keys");
    }
}

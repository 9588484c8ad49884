//! The caretaker's decisions as pure functions: when a shard counts as lost, who cares for a
//! chunk, whether a chunk needs repair, where re-created shards go and what a repair fetches.
//!
//! The caretaker (`care`) gathers what it knows (audit verdicts, missed rounds, the live peers,
//! reputations) and these functions decide; the network simulator (`cairn-sim`) calls the same
//! functions with what its model knows, so that what it measures is Cairn's rules and not a
//! copy of them. Nothing here does I/O or keeps state.

use cairn_artifact::Cid;
use cairn_swarm::EndpointId;

use crate::care::{MISSES_TO_LOST, repair_ranking};

/// What the deciding node knows of the holder of one shard.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HolderSeen {
    /// The last audit of this shard on this holder failed (a wrong answer, the shard not held,
    /// corruption admitted).
    pub failed: bool,
    /// Rounds in a row the holder missed its audits (offline or timed out), as this node saw
    /// them.
    pub missed: u32,
    /// The holder is among the live peers of the membership.
    pub live: bool,
    /// The holder's reputation is below its thresholds (see `cairn_store::Reputation`).
    pub avoided: bool,
    /// The holder is the deciding node itself.
    pub me: bool,
}

/// Whether the shard on a holder seen as `seen` counts as lost: its last audit failed, or the
/// holder (another node) missed [`MISSES_TO_LOST`] rounds in a row, or missed one and is no
/// longer live, or is avoided. A node's own shard is lost only through a failed check of its
/// disk. A shard never audited yet is not lost.
pub fn shard_lost(seen: HolderSeen) -> bool {
    if seen.failed {
        return true;
    }
    if seen.me {
        return false;
    }
    seen.missed >= MISSES_TO_LOST || (seen.missed >= 1 && !seen.live) || seen.avoided
}

/// Whether a holder seen as `seen` may be its chunk's caretaker: the deciding node itself, or
/// a live, not avoided holder that missed none of this node's audits.
pub fn caretaker_eligible(seen: HolderSeen) -> bool {
    seen.me || (seen.live && !seen.avoided && seen.missed == 0)
}

/// The caretaker of the chunk whose shards are `shards`: the first of `alive_holders` (its
/// holders that are [`caretaker_eligible`]) in the chunk's [`repair_ranking`]; `None` when no
/// holder is. The ranking depends only on the chunk and the set, so every node that agrees on
/// who is alive names the same caretaker, and when it dies the next one takes over.
pub fn caretaker_of(shards: &[Cid], alive_holders: &[EndpointId]) -> Option<EndpointId> {
    repair_ranking(shards, alive_holders).first().copied()
}

/// Whether a chunk of `n` shards of which `kept` are not lost needs repair: any lost shard is
/// re-created at once, so redundancy is restored before it is needed.
pub fn needs_repair(kept: usize, n: usize) -> bool {
    kept < n
}

/// Where the re-created shards of the chunk whose shards are `shards` go, best first: the
/// chunk's [`repair_ranking`] over `candidates` (the live, not avoided peers), skipping
/// `holders` (every node the record names for the chunk, lost shards' holders included), at
/// most `count` of them (`usize::MAX` for the whole ranking: a placement that fails goes to
/// the next one).
///
/// Rendezvous ranking over a subset is the full ranking with the others left out, so a caller
/// that passes only the top of the ranking over a larger set gets the same first entries as
/// with the whole set, as long as at least `count` candidates remain.
pub fn repair_targets(
    shards: &[Cid],
    candidates: &[EndpointId],
    holders: &[EndpointId],
    count: usize,
) -> Vec<EndpointId> {
    let open: Vec<EndpointId> = candidates
        .iter()
        .filter(|c| !holders.contains(c))
        .copied()
        .collect();
    let mut ranking = repair_ranking(shards, &open);
    ranking.truncate(count);
    ranking
}

/// How many shards a repair fetches from other holders when the caretaker holds `local` good
/// shards of the chunk itself: decoding needs `k` and its own are read from its disk.
pub fn repair_fetches(k: usize, local: usize) -> usize {
    k.saturating_sub(local)
}

#[cfg(test)]
mod tests {
    use cairn_artifact::shard_cid;
    use cairn_swarm::SecretKey;

    use super::*;

    fn ids(count: u8) -> Vec<EndpointId> {
        (1..=count)
            .map(|i| SecretKey::from_bytes(&[i; 32]).public())
            .collect()
    }

    fn shards() -> Vec<Cid> {
        (0u8..5).map(|i| shard_cid(&[i; 64])).collect()
    }

    const SEEN: HolderSeen = HolderSeen {
        failed: false,
        missed: 0,
        live: true,
        avoided: false,
        me: false,
    };

    #[test]
    fn shard_lost_follows_the_caretaking_rules() {
        // (what is known, lost?, why)
        let cases = [
            (SEEN, false, "a live holder that answered"),
            (
                HolderSeen {
                    failed: true,
                    ..SEEN
                },
                true,
                "a failed audit",
            ),
            (
                HolderSeen {
                    failed: true,
                    me: true,
                    ..SEEN
                },
                true,
                "a failed check of the node's own disk",
            ),
            (
                HolderSeen {
                    missed: 5,
                    live: false,
                    me: true,
                    ..SEEN
                },
                false,
                "the node's own shard is never lost by misses",
            ),
            (
                HolderSeen { missed: 1, ..SEEN },
                false,
                "one miss of a live holder (a timeout) is forgiven",
            ),
            (
                HolderSeen {
                    missed: MISSES_TO_LOST,
                    ..SEEN
                },
                true,
                "MISSES_TO_LOST misses of a live holder",
            ),
            (
                HolderSeen {
                    missed: 1,
                    live: false,
                    ..SEEN
                },
                true,
                "one miss of a holder no longer live",
            ),
            (
                HolderSeen {
                    live: false,
                    ..SEEN
                },
                false,
                "a holder gone from the membership but never missed an audit",
            ),
            (
                HolderSeen {
                    avoided: true,
                    ..SEEN
                },
                true,
                "an avoided holder",
            ),
        ];
        for (seen, lost, why) in cases {
            assert_eq!(shard_lost(seen), lost, "{why}: {seen:?}");
        }
    }

    #[test]
    fn caretaker_eligibility() {
        assert!(caretaker_eligible(SEEN));
        assert!(!caretaker_eligible(HolderSeen { missed: 1, ..SEEN }));
        assert!(!caretaker_eligible(HolderSeen {
            live: false,
            ..SEEN
        }));
        assert!(!caretaker_eligible(HolderSeen {
            avoided: true,
            ..SEEN
        }));
        // The deciding node always counts itself.
        assert!(caretaker_eligible(HolderSeen {
            me: true,
            live: false,
            missed: 3,
            ..SEEN
        }));
    }

    #[test]
    fn caretaker_is_the_first_alive_holder_in_the_ranking() {
        let shards = shards();
        let holders = ids(5);
        let first = caretaker_of(&shards, &holders).unwrap();
        assert_eq!(first, repair_ranking(&shards, &holders)[0]);
        // When it is gone, the next in the ranking takes over.
        let rest: Vec<EndpointId> = holders.iter().filter(|h| **h != first).copied().collect();
        assert_eq!(
            caretaker_of(&shards, &rest),
            Some(repair_ranking(&shards, &holders)[1])
        );
        assert_eq!(caretaker_of(&shards, &[]), None);
        // A holder listed twice (it holds two shards) counts once.
        let mut twice = holders.clone();
        twice.push(holders[0]);
        assert_eq!(caretaker_of(&shards, &twice), Some(first));
    }

    #[test]
    fn needs_repair_below_n() {
        assert!(!needs_repair(5, 5));
        assert!(needs_repair(4, 5));
        assert!(needs_repair(0, 5));
    }

    #[test]
    fn repair_targets_skip_holders_and_keep_the_ranking_order() {
        let shards = shards();
        let peers = ids(20);
        let holders = &peers[..5];
        let all = repair_targets(&shards, &peers, holders, usize::MAX);
        assert_eq!(all.len(), 15);
        assert!(all.iter().all(|t| !holders.contains(t)));
        let ranking = repair_ranking(&shards, &peers);
        let expected: Vec<EndpointId> = ranking
            .iter()
            .filter(|p| !holders.contains(p))
            .copied()
            .collect();
        assert_eq!(all, expected);
        assert_eq!(
            repair_targets(&shards, &peers, holders, 2),
            all[..2].to_vec()
        );
        assert!(repair_targets(&shards, holders, holders, 3).is_empty());
    }

    #[test]
    fn repair_targets_from_the_top_of_a_larger_ranking_are_the_same() {
        // The simulator passes only the top of the ranking over every node it knows: the first
        // targets are the same as over the whole set whenever enough candidates remain.
        let shards = shards();
        let peers = ids(60);
        let ranking = repair_ranking(&shards, &peers);
        let holders = vec![ranking[0], ranking[3], ranking[7]];
        for top in [5, 8, 12, 30] {
            let subset = &ranking[..top];
            let open = subset.iter().filter(|p| !holders.contains(p)).count();
            for count in 1..=open {
                assert_eq!(
                    repair_targets(&shards, subset, &holders, count),
                    repair_targets(&shards, &peers, &holders, count),
                    "top {top}, count {count}"
                );
            }
        }
    }

    #[test]
    fn repair_fetches_what_is_not_local() {
        assert_eq!(repair_fetches(3, 0), 3);
        assert_eq!(repair_fetches(3, 1), 2);
        assert_eq!(repair_fetches(3, 4), 0);
    }
}

//! Membership announcements come from anyone on the gossip topic and are signed: random bytes
//! never get past the signature, so the target signs what it builds, with fixed test keys.
//!
//! A sequence of announcements (fuzzer-chosen node, timestamp relative to the receiver's clock,
//! sequence number, addresses, free space), each signed and possibly edited, is fed to a
//! `PeerTable` while the receiver's clock moves on. Each answer must match a model of the
//! freshness and replay rules: accepted only when it verifies, is dated at most 5 minutes ahead
//! and at most 10 minutes back, and is newer (timestamp, then sequence) than the last one
//! accepted from that node. An edited announcement must never verify. The table's view must
//! match the model after every step.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use std::collections::BTreeMap;

use cairn_swarm::{ADDRS_MAX, Announcement, EndpointId, PeerTable, TopicId};
use common_keys::{key, mutate, socket_addr};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

const STEPS_MAX: usize = 64;
const EDITS_MAX: usize = 4;
const SKEW_MAX_MS: i64 = 300_000;
const AGE_MAX_MS: i64 = 600_000;
/// The receiver's clock at the start: far from 0 and from `u64::MAX`, so offsets stay in range.
const START_MS: u64 = 1_750_000_000_000;

#[derive(Arbitrary, Debug)]
struct Step {
    node: u8,
    /// Timestamp minus the receiver's clock, in ms; small values are the interesting ones.
    offset_ms: i32,
    seq: u8,
    free_bytes: u64,
    addrs: Vec<(bool, [u8; 16], u16)>,
    /// How far the receiver's clock moves on before this step, in ms.
    advance_ms: u32,
    /// Another network's topic.
    foreign: bool,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fn topic(foreign: bool) -> TopicId {
    TopicId::from_bytes(if foreign { [8; 32] } else { [7; 32] })
}

fuzz_target!(|steps: Vec<Step>| {
    let mut table = PeerTable::new(topic(false));
    // Model: the newest (timestamp, seq) accepted per node.
    let mut model: BTreeMap<EndpointId, (u64, u64)> = BTreeMap::new();
    let mut now = START_MS;
    for step in steps.into_iter().take(STEPS_MAX) {
        now += u64::from(step.advance_ms);
        let (secret, id) = key(step.node);
        let ts = now
            .checked_add_signed(i64::from(step.offset_ms))
            .expect("in range");
        let addrs: Vec<_> = step.addrs.iter().map(socket_addr).collect();
        let a = Announcement::new(*id, &addrs, step.free_bytes, ts, u64::from(step.seq));
        assert!(a.addrs().len() <= ADDRS_MAX);
        let honest = a.sign(secret, &topic(step.foreign));
        let mut bytes = honest.clone();
        mutate(
            &mut bytes,
            &step.edits,
            EDITS_MAX,
            step.truncate,
            &step.extra,
        );
        let edited = bytes != honest;

        let verified = Announcement::verify(&bytes, &topic(false));
        if edited {
            assert!(
                verified.is_err(),
                "edited announcement verified: {verified:?}"
            );
        } else if step.foreign {
            assert!(verified.is_err(), "another network's announcement verified");
        } else {
            assert_eq!(
                verified.as_ref().ok(),
                Some(&a),
                "verify(sign(a)) differs from a"
            );
        }

        let fresh = {
            let d = ts as i64 - now as i64;
            d <= SKEW_MAX_MS && -d <= AGE_MAX_MS
        };
        let newer = model
            .get(id)
            .is_none_or(|old| (ts, u64::from(step.seq)) > *old);
        let expect = verified.is_ok() && fresh && newer;
        let got = table.observe(&bytes, now);
        assert_eq!(
            got.is_ok(),
            expect,
            "observe at {now} of ts {ts} seq {} (fresh {fresh}, newer {newer}): {got:?}",
            step.seq
        );
        if expect {
            model.insert(*id, (ts, u64::from(step.seq)));
        }
        let peers = table.peers(now);
        assert_eq!(
            peers.iter().map(|p| p.id).collect::<Vec<_>>(),
            model.keys().copied().collect::<Vec<_>>(),
            "the table holds exactly the nodes accepted"
        );
    }
});

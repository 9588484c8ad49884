//! The peer table is read back from `peers.bin` at start, and a disk may rot or another local
//! program may write there. `PeerTable::from_bytes` must never panic, must refuse another
//! network's table and more peers than `PEER_TABLE_PEERS_MAX`, and what it accepts must be
//! stable: written again and read again, it gives the same bytes.
//!
//! Raw bytes rarely get past the magic and the signatures inside, so the target also builds a
//! table from announcements it signs with fixed test keys, writes it, edits the bytes, and
//! reads them back: the honest bytes must load to the same peers, and edited bytes that load
//! must be as stable as any.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_swarm::{Announcement, PEER_TABLE_PEERS_MAX, PeerTable, TopicId};
use common_keys::{key, mutate, socket_addr};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const PEERS_MAX: usize = 16;
const EDITS_MAX: usize = 4;
const NOW_MS: u64 = 1_750_000_000_000;

/// Input: a first byte that is even feeds the rest to `from_bytes` as raw bytes (the committed
/// seeds are written tables behind a 0); an odd one builds a table from the rest.
#[derive(Arbitrary, Debug)]
struct Built {
    peers: Vec<(u8, u16, Vec<(bool, [u8; 16], u16)>, u64)>,
    failures: Vec<u8>,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fn topic() -> TopicId {
    TopicId::from_bytes([7; 32])
}

/// Loads `bytes`; whatever loads must write and load again to the same bytes.
fn load(bytes: &[u8]) -> Option<PeerTable> {
    let table = PeerTable::from_bytes(bytes, topic()).ok()?;
    let peers = table.peers(NOW_MS);
    assert!(peers.len() <= PEER_TABLE_PEERS_MAX);
    let again = table.to_bytes();
    let reloaded = PeerTable::from_bytes(&again, topic()).expect("a written table loads");
    assert_eq!(reloaded.to_bytes(), again, "written bytes are not stable");
    assert_eq!(reloaded.peers(NOW_MS), peers);
    // Another network's table is refused.
    assert!(PeerTable::from_bytes(&again, TopicId::from_bytes([8; 32])).is_err());
    Some(table)
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        load(rest);
        return;
    }
    let Ok(Built {
        peers,
        failures,
        edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let mut table = PeerTable::new(topic());
    for (node, age_s, addrs, free) in peers.iter().take(PEERS_MAX) {
        let (secret, id) = key(*node);
        let addrs: Vec<_> = addrs.iter().map(socket_addr).collect();
        let ts = NOW_MS - u64::from(*age_s % 600);
        let a = Announcement::new(*id, &addrs, *free, ts, 1);
        let _ = table.observe(&a.sign(secret, &topic()), NOW_MS);
    }
    for (i, n) in failures.iter().enumerate().take(PEERS_MAX) {
        for _ in 0..(*n % 4) {
            table.record_failure(&key(i as u8).1);
        }
    }
    let honest = table.to_bytes();
    let loaded = load(&honest).expect("a written table loads");
    assert_eq!(loaded.peers(NOW_MS), table.peers(NOW_MS));
    let mut bytes = honest.clone();
    mutate(&mut bytes, &edits, EDITS_MAX, truncate, &extra);
    load(&bytes);
});

//! Holder records arrive from any peer (PUT_RECORD, GET_RECORD replies) and are signed: random
//! bytes never get past the signature, so the target signs what it builds. From fuzzer-chosen
//! fields it builds a record, signs it with a fixed test key (when the record is valid), and
//! checks that the signed bytes verify to exactly that record and publisher; then it edits,
//! truncates or extends the bytes, and any change must be refused: an accepted edit would be a
//! forged record.
//!
//! Input: a first byte that is even feeds the rest to the decoder as raw bytes (the committed
//! seeds are signed records behind a 0); an odd one builds a record from the rest.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_swarm::{HolderRecord, manifest_cid};
use common_keys::{key, mutate, socket_addr};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Nodes, addresses per node and chunks per record, at most.
const NODES_MAX: usize = 24;
const ADDRS_MAX: usize = 20;
const CHUNKS_MAX: usize = 64;
const EDITS_MAX: usize = 8;

#[derive(Arbitrary, Debug)]
struct Built {
    publisher: u8,
    artifact: Vec<u8>,
    version: u64,
    k: u8,
    m: u8,
    reduced_durability: bool,
    nodes: Vec<(u8, Vec<(bool, [u8; 16], u16)>)>,
    /// Per chunk, holder indices; `None` makes an honest chunk of `k + m` indices.
    holders: Vec<Option<Vec<u16>>>,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(signed) = HolderRecord::verify(rest) {
            assert!(signed.record.validate().is_ok(), "verified but invalid");
            assert_eq!(signed.bytes, rest);
        }
        return;
    }
    let Ok(Built {
        publisher,
        artifact,
        version,
        k,
        m,
        reduced_durability,
        nodes,
        holders,
        edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let nodes: Vec<_> = nodes
        .iter()
        .take(NODES_MAX)
        .map(|(i, addrs)| {
            (
                key(*i).1,
                addrs.iter().take(ADDRS_MAX).map(socket_addr).collect(),
            )
        })
        .collect();
    let shards = usize::from(k) + usize::from(m);
    let node_count = nodes.len().max(1) as u16;
    let holders = holders
        .into_iter()
        .take(CHUNKS_MAX)
        .enumerate()
        .map(|(c, h)| {
            h.unwrap_or_else(|| {
                (0..shards.min(64))
                    .map(|j| ((c + j) as u16) % node_count)
                    .collect()
            })
        })
        .collect();
    let record = HolderRecord {
        artifact: manifest_cid(&artifact),
        version,
        k,
        m,
        reduced_durability,
        nodes,
        holders,
    };
    let (secret, id) = key(publisher);
    let Ok(honest) = record.try_sign(secret) else {
        assert!(record.validate().is_err(), "a valid record did not sign");
        return;
    };
    let signed = HolderRecord::verify(&honest).expect("an honestly signed record verifies");
    assert_eq!(signed.record, record, "verify(sign(r)) differs from r");
    assert_eq!(signed.publisher, *id);
    assert_eq!(signed.bytes, honest);

    let mut bytes = honest.clone();
    mutate(&mut bytes, &edits, EDITS_MAX, truncate, &extra);
    if bytes != honest {
        if let Ok(forged) = HolderRecord::verify(&bytes) {
            panic!("edited record bytes verified: {:?}", forged.record);
        }
    }
});

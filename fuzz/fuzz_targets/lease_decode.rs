//! Leases arrive from any peer (PUT_LEASE) and are signed: random bytes never get past the
//! signature, so the target signs what it builds. From fuzzer-chosen fields it builds a lease,
//! signs it with a fixed test key (when the lease is valid and the key is its signer's), and
//! checks that the signed bytes decode to exactly that lease; then it edits, truncates or
//! extends the bytes, and any change must be refused: an accepted edit would be a forged lease.
//!
//! Input: a first byte that is even feeds the rest to the decoder as raw bytes (the committed
//! seeds are signed leases behind a 0); an odd one builds a lease from the rest.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_swarm::{Error, LEASE_LEN_MAX, Lease, SignedLease, manifest_cid, shard_cid};
use common_keys::{key, mutate};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

const EDITS_MAX: usize = 8;

#[derive(Arbitrary, Debug)]
struct Built {
    named: u8,
    signer: u8,
    /// The artifact's content, and whether to name it as a shard (no artifact) instead.
    artifact: (Vec<u8>, bool),
    until_ms: u64,
    issued_ms: u64,
    now_ms: u64,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(signed) = SignedLease::decode(rest) {
            assert!(signed.lease.validate().is_ok(), "decoded but invalid");
            assert_eq!(signed.bytes, rest);
            assert!(rest.len() <= LEASE_LEN_MAX as usize);
            let _ = signed.lease.check_time(u64::MAX);
            let _ = signed.lease.check_time(0);
        }
        return;
    }
    let Ok(Built {
        named,
        signer,
        artifact,
        until_ms,
        issued_ms,
        now_ms,
        edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let lease = Lease {
        signer: key(named).1,
        artifact: if artifact.1 {
            shard_cid(&artifact.0)
        } else {
            manifest_cid(&artifact.0)
        },
        until_ms,
        issued_ms,
    };
    // The clock check never panics, whatever the times.
    let _ = lease.check_time(now_ms);
    let (secret, id) = key(signer);
    let honest = match lease.try_sign(secret) {
        Ok(bytes) => bytes,
        Err(Error::Lease { .. } | Error::InvalidCid { .. }) => {
            assert!(
                lease.validate().is_err() || *id != lease.signer,
                "a valid lease did not sign with its signer's key"
            );
            return;
        }
        Err(other) => panic!("signing failed with an unexpected error: {other}"),
    };
    assert_eq!(*id, lease.signer);
    let signed = SignedLease::decode(&honest).expect("an honestly signed lease decodes");
    assert_eq!(signed.lease, lease, "decode(sign(l)) differs from l");
    assert_eq!(signed.bytes, honest);

    let mut edited = honest.clone();
    mutate(&mut edited, &edits, EDITS_MAX, truncate, &extra);
    if edited != honest {
        if let Ok(forged) = SignedLease::decode(&edited) {
            panic!("edited lease bytes decoded: {:?}", forged.lease);
        }
    }
});

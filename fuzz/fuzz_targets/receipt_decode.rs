//! Audit receipts arrive from any peer (RECEIPT) and are signed: random bytes never get past
//! the signature, so the target signs what it builds. From fuzzer-chosen fields it builds a
//! receipt, signs it with a fixed test key (when the receipt is valid and the key is its
//! auditor's), and checks that the signed bytes decode to exactly that receipt; then it edits,
//! truncates or extends the bytes, and any change must be refused: an accepted edit would be a
//! forged receipt.
//!
//! Input: a first byte that is even feeds the rest to the decoder as raw bytes (the committed
//! seeds are signed receipts behind a 0); an odd one builds a receipt from the rest.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use cairn_swarm::{
    AUDIT_BATCH_MAX, Error, RECEIPT_LEN_MAX, Receipt, SignedReceipt, manifest_cid, shard_cid,
};
use common_keys::{key, mutate};
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Shards per receipt built, at most (a few over the limit, to reach the refusal).
const SHARDS_MAX: usize = AUDIT_BATCH_MAX + 2;
const EDITS_MAX: usize = 8;

#[derive(Arbitrary, Debug)]
struct Built {
    auditor: u8,
    holder: u8,
    signer: u8,
    nonce: [u8; 32],
    time_ms: u64,
    bytes: u64,
    /// Per shard: content bytes, and whether to name it as a manifest (not a shard) instead.
    shards: Vec<(Vec<u8>, bool)>,
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    if selector % 2 == 0 {
        if let Ok(signed) = SignedReceipt::decode(rest) {
            assert!(signed.receipt.validate().is_ok(), "decoded but invalid");
            assert_eq!(signed.bytes, rest);
            assert!(rest.len() <= RECEIPT_LEN_MAX as usize);
        }
        return;
    }
    let Ok(Built {
        auditor,
        holder,
        signer,
        nonce,
        time_ms,
        bytes,
        shards,
        edits,
        truncate,
        extra,
    }) = Built::arbitrary_take_rest(Unstructured::new(rest))
    else {
        return;
    };
    let receipt = Receipt {
        auditor: key(auditor).1,
        holder: key(holder).1,
        nonce,
        time_ms,
        bytes,
        shards: shards
            .iter()
            .take(SHARDS_MAX)
            .map(|(content, manifest)| {
                if *manifest {
                    manifest_cid(content)
                } else {
                    shard_cid(content)
                }
            })
            .collect(),
    };
    let (secret, id) = key(signer);
    let honest = match receipt.try_sign(secret) {
        Ok(bytes) => bytes,
        Err(Error::Receipt { .. } | Error::InvalidCid { .. }) => {
            assert!(
                receipt.validate().is_err() || *id != receipt.auditor,
                "a valid receipt did not sign with its auditor's key"
            );
            return;
        }
        Err(other) => panic!("signing failed with an unexpected error: {other}"),
    };
    assert_eq!(*id, receipt.auditor);
    let signed = SignedReceipt::decode(&honest).expect("an honestly signed receipt decodes");
    assert_eq!(signed.receipt, receipt, "decode(sign(r)) differs from r");
    assert_eq!(signed.bytes, honest);

    let mut edited = honest.clone();
    mutate(&mut edited, &edits, EDITS_MAX, truncate, &extra);
    if edited != honest {
        if let Ok(forged) = SignedReceipt::decode(&edited) {
            panic!("edited receipt bytes decoded: {:?}", forged.receipt);
        }
    }
});

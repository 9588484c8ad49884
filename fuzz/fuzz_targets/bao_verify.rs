//! Bao range proofs come from peers that may lie. Against a fixed shard, `verify_range` must
//! never panic, and whenever it accepts a proof the bytes it returns must be exactly the shard's
//! bytes in the range asked: an accepted forgery would be a break of the integrity guarantee.
//!
//! Two kinds of input: raw proof bytes (any range, even out of bounds), and a valid proof for an
//! in-bounds range with fuzzer-chosen byte edits and truncation, which reaches the deep parts of
//! the decoder that random bytes rarely get to.
#![no_main]

use std::ops::Range;
use std::sync::OnceLock;

use cairn_artifact::{Cid, outboard, prove_range, shard_cid, verify_range};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;

/// Three full 16 KiB chunk groups and a partial fourth: proofs have parents and a short leaf.
const SHARD_LEN: usize = 3 * 16 * 1024 + 1234;
/// Edits applied to a valid proof, at most.
const EDITS_MAX: usize = 8;

struct Shard {
    data: Vec<u8>,
    cid: Cid,
    outboard: Vec<u8>,
}

fn shard() -> &'static Shard {
    static SHARD: OnceLock<Shard> = OnceLock::new();
    SHARD.get_or_init(|| {
        let data: Vec<u8> = (0..SHARD_LEN as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let cid = shard_cid(&data);
        let (_, outboard) = outboard(&data);
        Shard {
            data,
            cid,
            outboard,
        }
    })
}

#[derive(Arbitrary, Debug)]
enum Input {
    Raw {
        start: u64,
        end: u64,
        proof: Vec<u8>,
    },
    Edited {
        start: u16,
        len: u16,
        edits: Vec<(u16, u8)>,
        truncate: Option<u16>,
        extra: Vec<u8>,
    },
}

fn in_bounds(start: u16, len: u16) -> Range<u64> {
    let start = u64::from(start) * SHARD_LEN as u64 / u64::from(u16::MAX);
    let end = (start + u64::from(len)).min(SHARD_LEN as u64);
    start..end
}

fn check(range: Range<u64>, proof: &[u8]) -> bool {
    let s = shard();
    match verify_range(&s.cid, SHARD_LEN as u64, range.clone(), proof) {
        Ok(bytes) => {
            assert_eq!(
                bytes.as_slice(),
                &s.data[range.start as usize..range.end as usize],
                "accepted a proof for {range:?} that yields other bytes"
            );
            true
        }
        Err(_) => false,
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw { start, end, proof } => {
            check(start..end, &proof);
        }
        Input::Edited {
            start,
            len,
            edits,
            truncate,
            extra,
        } => {
            let s = shard();
            let range = in_bounds(start, len);
            let mut proof =
                prove_range(&s.cid, &s.data, &s.outboard, range.clone()).expect("honest proof");
            let honest = proof.clone();
            for &(at, xor) in edits.iter().take(EDITS_MAX) {
                if !proof.is_empty() {
                    let at = usize::from(at) % proof.len();
                    proof[at] ^= xor;
                }
            }
            if let Some(t) = truncate {
                proof.truncate(usize::from(t));
            }
            proof.extend_from_slice(&extra);
            let accepted = check(range.clone(), &proof);
            if proof == honest {
                assert!(accepted, "rejected an honest proof for {range:?}");
            }
        }
    }
});

//! Storage-proof audits on hostile bytes: the AUDIT request decoder (a holder reads requests
//! from anyone), the AUDIT reply decoder and the judging of answers (an auditor reads replies
//! from the holders it distrusts). None may panic; whatever decodes re-encodes to exactly the
//! bytes given; and no answer but the honest one may pass the audit of a fixed shard: an edited
//! answer that passed would be a forged storage proof.
//!
//! Input: a first byte picking what the rest is, modulo 4:
//! - 0: an AUDIT request body (after the version and type bytes, which the target adds);
//! - 1: `u16` count of shards asked, then a whole AUDIT reply frame;
//! - 2: fields for editing the honest answer of a fixed shard to a fuzzer-chosen nonce;
//! - 3: a 32-byte nonce, then answer bytes judged raw against the fixed shard.
#![no_main]

#[path = "common_keys.rs"]
#[allow(dead_code)]
mod common_keys;

use std::sync::OnceLock;

use cairn_artifact::{audit_answer, outboard};
use cairn_swarm::fuzzing::{decode_audit_reply, decode_audit_request};
use cairn_swarm::{
    AUDIT_ANSWER_LEN_MAX, AUDIT_BATCH_MAX, AuditReply, AuditVerdict, Cid, PROTOCOL_VERSION,
    judge_audit, shard_cid,
};
use common_keys::mutate;
use libfuzzer_sys::arbitrary::{self, Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;

/// Seven full 16 KiB groups and a partial eighth: more groups than a challenge asks (4), so
/// nonces pick different ones, and proofs have parents and a short leaf.
const SHARD_LEN: usize = 7 * 16 * 1024 + 1234;
/// AUDIT request type byte.
const AUDIT: u8 = 7;
/// Edits applied to an honest answer, at most.
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
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
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

fn honest(nonce: &[u8; 32]) -> Vec<u8> {
    let s = shard();
    audit_answer(nonce, &s.cid, &s.data, &s.outboard).expect("the fixed shard answers")
}

fn judge(nonce: &[u8; 32], answer: Vec<u8>) -> AuditVerdict {
    let s = shard();
    judge_audit(
        nonce,
        &s.cid,
        s.data.len() as u64,
        &AuditReply::Answer(answer),
    )
}

#[derive(Arbitrary, Debug)]
struct Edited {
    nonce: [u8; 32],
    edits: Vec<(u16, u8)>,
    truncate: Option<u16>,
    extra: Vec<u8>,
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    match selector % 4 {
        0 => {
            let mut frame = vec![PROTOCOL_VERSION, AUDIT];
            frame.extend_from_slice(rest);
            if let Ok((again, count)) = decode_audit_request(&frame) {
                assert_eq!(
                    again, frame,
                    "a decoded AUDIT request must re-encode to its bytes"
                );
                assert!(
                    (1..=AUDIT_BATCH_MAX).contains(&count),
                    "{count} CIDs decoded"
                );
            }
        }
        1 => {
            let [c0, c1, frame @ ..] = rest else { return };
            let count = u16::from_be_bytes([*c0, *c1]);
            if let Ok((again, answers)) = decode_audit_reply(count, frame) {
                let Some(again) = again else { return };
                assert_eq!(
                    again, frame,
                    "a decoded AUDIT reply must re-encode to its bytes"
                );
                assert_eq!(answers.len(), usize::from(count));
                assert!(usize::from(count) <= AUDIT_BATCH_MAX);
                for answer in &answers {
                    if let AuditReply::Answer(bytes) = answer {
                        assert!(bytes.len() <= AUDIT_ANSWER_LEN_MAX as usize);
                    }
                }
            }
        }
        2 => {
            let Ok(Edited {
                nonce,
                edits,
                truncate,
                extra,
            }) = Edited::arbitrary_take_rest(Unstructured::new(rest))
            else {
                return;
            };
            let answer = honest(&nonce);
            assert_eq!(
                judge(&nonce, answer.clone()),
                AuditVerdict::Passed,
                "honest answer failed"
            );
            let mut edited = answer.clone();
            mutate(&mut edited, &edits, EDITS_MAX, truncate, &extra);
            if edited != answer {
                let verdict = judge(&nonce, edited);
                assert!(
                    matches!(verdict, AuditVerdict::Failed(_)),
                    "an edited answer passed: {verdict:?}"
                );
            }
        }
        _ => {
            let Some((nonce, answer)) = rest.split_first_chunk::<32>() else {
                return;
            };
            if judge(nonce, answer.to_vec()) == AuditVerdict::Passed {
                assert_eq!(
                    answer,
                    honest(nonce),
                    "a raw answer passed that is not the honest one"
                );
            }
        }
    }
});

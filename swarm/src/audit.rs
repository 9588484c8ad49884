//! Storage-proof audits on the shard protocol: what a holder answers for each shard of an AUDIT
//! batch ([`AuditReply`]) and how an auditor judges it ([`judge_audit`]).
//!
//! The challenge (which 16 KiB groups a nonce asks of a shard) and the proof format are
//! `cairn_artifact`'s (`challenge_ranges`, `audit_answer`, `check_audit_answer`); the wire
//! format is in the `protocol` module (AUDIT, request type 7).

use cid::Cid;

/// A holder's reply for one shard of an AUDIT batch, as received and length-checked (at most
/// [`AUDIT_ANSWER_LEN_MAX`](crate::AUDIT_ANSWER_LEN_MAX) bytes), not yet judged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditReply {
    /// The holder's answer: per challenged range, a `u32` little-endian length and a bao proof.
    /// Check it with [`judge_audit`].
    Answer(Vec<u8>),
    /// The holder says it does not hold the shard.
    NotHeld,
    /// The holder holds the shard but found its copy corrupted.
    Corrupted,
}

/// What an auditor concludes about one shard from the holder's [`AuditReply`].
///
/// A holder that did not answer in time gets no verdict: that is the error of
/// [`ShardClient::audit`](crate::ShardClient::audit), for which
/// [`Error::is_timeout`](crate::Error::is_timeout) is true.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerdict {
    /// Every challenged range was proved against the shard's CID.
    Passed,
    /// The answer does not prove the challenged ranges (altered bytes, another nonce's or
    /// another shard's proofs, a cut or padded answer); the reason says which check failed.
    Failed(String),
    /// The holder says it does not hold the shard.
    NotHeld,
    /// The holder says its copy is corrupted.
    Corrupted,
}

/// Judges `reply`, the holder's reply for shard `cid` of `size` bytes (as the auditor knows it
/// from the manifest, never from the holder) to the challenge of `nonce`. Pure and
/// deterministic; never panics.
pub fn judge_audit(nonce: &[u8; 32], cid: &Cid, size: u64, reply: &AuditReply) -> AuditVerdict {
    match reply {
        AuditReply::Answer(answer) => {
            match cairn_artifact::check_audit_answer(nonce, cid, size, answer) {
                Ok(()) => AuditVerdict::Passed,
                Err(err) => AuditVerdict::Failed(err.to_string()),
            }
        }
        AuditReply::NotHeld => AuditVerdict::NotHeld,
        AuditReply::Corrupted => AuditVerdict::Corrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AUDIT_ANSWER_LEN_MAX, SHARD_LEN_MAX};
    use crate::{MemoryBackend, ShardBackend, shard_cid};
    use cairn_artifact::{AUDIT_GROUP_LEN, audit_answer, outboard};

    fn shard(len: usize, seed: u8) -> Vec<u8> {
        let mut out = vec![0u8; len];
        blake3::Hasher::new()
            .update(&[seed])
            .finalize_xof()
            .fill(&mut out);
        out
    }

    #[test]
    fn answers_of_the_largest_shard_fit_the_cap_exactly() {
        // A power-of-two shard of SHARD_LEN_MAX: every group sits at the full depth, so the
        // answer is exactly the cap; one byte less clips the last group and is no longer.
        for len in [SHARD_LEN_MAX as usize, SHARD_LEN_MAX as usize - 1] {
            let data = shard(len, 1);
            let cid = shard_cid(&data);
            let (_, ob) = outboard(&data);
            for i in 0..4u8 {
                let nonce = [i; 32];
                let answer = audit_answer(&nonce, &cid, &data, &ob).unwrap();
                assert!(answer.len() <= AUDIT_ANSWER_LEN_MAX as usize, "{len}");
                if len == SHARD_LEN_MAX as usize {
                    assert_eq!(answer.len(), AUDIT_ANSWER_LEN_MAX as usize);
                }
            }
        }
    }

    #[test]
    fn the_default_backend_audit_answers_detects_rot_and_says_not_held() {
        let backend = MemoryBackend::new(1 << 22);
        let data = shard(5 * AUDIT_GROUP_LEN as usize + 7, 2);
        let cid = shard_cid(&data);
        backend.put(&cid, &data, [1; 32]).unwrap();
        let nonce = [9u8; 32];
        let answer = backend.audit(&cid, &nonce).unwrap().unwrap();
        let reply = AuditReply::Answer(answer.clone());
        assert_eq!(
            judge_audit(&nonce, &cid, data.len() as u64, &reply),
            AuditVerdict::Passed
        );
        // The same answer for a nonce that asks other groups, or for another size, fails.
        let size = data.len() as u64;
        let asked = cairn_artifact::challenge_ranges(&nonce, &cid, size);
        let other = (0..=u8::MAX)
            .map(|i| [i; 32])
            .find(|n| cairn_artifact::challenge_ranges(n, &cid, size) != asked)
            .unwrap();
        assert!(matches!(
            judge_audit(&other, &cid, size, &reply),
            AuditVerdict::Failed(_)
        ));
        assert!(matches!(
            judge_audit(&nonce, &cid, data.len() as u64 + 1, &reply),
            AuditVerdict::Failed(_)
        ));
        assert_eq!(backend.audit(&shard_cid(b"absent"), &nonce), Ok(None));
        // A shard held under a CID its bytes do not hash to is reported, not answered.
        let wrong = shard_cid(b"other bytes");
        backend.put(&wrong, &data, [1; 32]).unwrap();
        assert!(matches!(
            backend.audit(&wrong, &nonce),
            Err(crate::BackendError::Corrupted(_))
        ));
        assert_eq!(
            judge_audit(&nonce, &cid, 1, &AuditReply::NotHeld),
            AuditVerdict::NotHeld
        );
        assert_eq!(
            judge_audit(&nonce, &cid, 1, &AuditReply::Corrupted),
            AuditVerdict::Corrupted
        );
    }
}

//! Where a node keeps what it serves (shards, manifests, holder records, leases, audit
//! receipts): the [`ShardBackend`] trait and an in-memory backend.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::ops::Range;
use std::sync::Mutex;

use cid::Cid;

use crate::cids::blake3_digest;
use crate::lease::SignedLease;
use crate::name::{NAME_REVISIONS_MAX, NameKind, SignedName};
use crate::receipt::SignedReceipt;

/// Why a backend refused or failed an operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BackendError {
    /// Storing the shard would exceed the node's quota.
    #[error("quota full: shard needs {needed} bytes, {free} bytes free")]
    QuotaFull {
        /// Bytes the shard needs.
        needed: u64,
        /// Bytes still free.
        free: u64,
    },
    /// The requester did not PUT this shard, so it may not delete it.
    #[error("requester is not an owner of the shard")]
    NotOwner,
    /// Stored bytes no longer match their CID.
    #[error("stored shard is corrupted: {0}")]
    Corrupted(String),
    /// The disk failed.
    #[error("backend I/O failed: {0}")]
    Io(String),
    /// A holder record for an artifact whose manifest is not held: nothing to keep it for.
    #[error("no manifest of the artifact is held")]
    UnknownArtifact,
}

/// Shard storage behind the shard protocol.
///
/// Methods are blocking (they do disk I/O); the protocol layer calls them from
/// `tokio::task::spawn_blocking`.
pub trait ShardBackend: Send + Sync + 'static {
    /// Stores a shard whose CID the protocol layer has already verified. `owner` is the 32-byte
    /// endpoint id that sent it. Storing a shard that is already held adds `owner` to its owners
    /// and succeeds.
    fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError>;
    /// Verified bytes of a shard (or of a byte range of it, clamped to the shard's length),
    /// None if not held.
    fn get(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<Option<Vec<u8>>, BackendError>;
    /// True if [`ShardBackend::get`] has itself checked every whole shard it returns against
    /// its CID (a store that hashes on read). The server then sends it without hashing it a
    /// second time; otherwise (the default) the server checks before sending.
    fn verifies_reads(&self) -> bool {
        false
    }
    /// Whether the shard is held.
    fn has(&self, cid: &Cid) -> bool;
    /// Deletes if `requester` is an owner; Ok(false) if not held.
    fn delete(&self, cid: &Cid, requester: [u8; 32]) -> Result<bool, BackendError>;
    /// Bytes of quota still free.
    fn free_bytes(&self) -> u64;
    /// Stores the signed holder record of `artifact`, replacing any held; records count against
    /// the quota. The protocol layer has already verified its signature, that the artifact's
    /// manifest allows its signer and that it may replace the one held (higher version), under a
    /// lock that keeps the check and this call together. A backend keeps a record only beside
    /// its manifest: without it (never stored, or collected since) this fails with
    /// [`BackendError::UnknownArtifact`], and a backend that collects a manifest collects its
    /// record with it.
    fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError>;
    /// The signed holder record of `artifact` as stored, None if none is held.
    fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError>;

    /// The answer to the storage-proof challenge of `nonce` for shard `cid` (a raw shard CID):
    /// `cairn_artifact::audit_answer` over the shard's bytes and bao outboard. None if the
    /// shard is not held; [`BackendError::Corrupted`] if the stored copy fails verification
    /// (the holder then says so instead of answering: AUDIT state 2).
    ///
    /// The default reads the whole shard with [`get`](Self::get), computes its outboard and
    /// checks its root against the CID, then answers. A store that keeps outboards can read
    /// only the challenged groups (`cairn_artifact::challenge_ranges`) instead.
    fn audit(&self, cid: &Cid, nonce: &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> {
        let Some(data) = self.get(cid, None)? else {
            return Ok(None);
        };
        let (root, outboard) = cairn_artifact::outboard(&data);
        if blake3_digest(cid) != Some(*root.as_bytes()) {
            return Err(BackendError::Corrupted(format!(
                "stored bytes of {cid} do not hash to its CID"
            )));
        }
        cairn_artifact::audit_answer(nonce, cid, &data, &outboard)
            .map(Some)
            .map_err(|err| BackendError::Corrupted(err.to_string()))
    }

    /// Extends the lease of `owner` (a 32-byte endpoint id) on shard `cid` to `until_ms` (Unix
    /// milliseconds). The server calls it for each shard it answered in an AUDIT that asked for
    /// a renewal, with the auditor as `owner` (see the protocol's *Audits*). A backend renews
    /// only the lease of an owner of the shard (one that PUT it; for others it returns
    /// [`BackendError::NotOwner`]), never shortens one, and may cap how far ahead it accepts.
    /// The server only logs a failure: it never changes the audit's answer. The default does
    /// nothing: a backend without leases keeps shards until their owners delete them.
    fn renew_lease(&self, cid: &Cid, owner: [u8; 32], until_ms: u64) -> Result<(), BackendError> {
        let _ = (cid, owner, until_ms);
        Ok(())
    }

    /// Stores the repair record of `artifact` (see the protocol's *Repair records*), replacing
    /// any earlier one; the protocol layer checked it. The default keeps none
    /// ([`BackendError::Io`]: a node that keeps no repair records refuses them).
    fn put_repair_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        let _ = (artifact, signed);
        Err(BackendError::Io("this node keeps no repair records".into()))
    }

    /// The repair record of `artifact` as stored, None if none is held.
    fn get_repair_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        let _ = artifact;
        Ok(None)
    }

    /// Keeps an audit receipt sent to this node (RECEIPT). The protocol layer has already
    /// checked its signature, that its auditor sent it, that it names this node as holder and
    /// that its time is near this node's clock. The default drops it.
    fn put_receipt(&self, receipt: &SignedReceipt) -> Result<(), BackendError> {
        let _ = receipt;
        Ok(())
    }

    /// Stores the lease of `artifact` (PUT_LEASE) if it ends later than the one stored; an
    /// earlier or equal one changes nothing (a lease is never shortened). The protocol layer
    /// has checked its signature, that the artifact's manifest allows its signer and its times,
    /// and compared it with the stored one under a lock that keeps that and this call together.
    /// A backend keeps a lease only beside its manifest (without it this fails with
    /// [`BackendError::UnknownArtifact`]) and collects it with the manifest. The default keeps
    /// none ([`BackendError::Io`]: a node that keeps no leases refuses them).
    fn put_lease(&self, artifact: &Cid, signed: &SignedLease) -> Result<(), BackendError> {
        let _ = (artifact, signed);
        Err(BackendError::Io("this node keeps no leases".into()))
    }

    /// The signed lease of `artifact` as stored, None if none is held.
    fn get_lease(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        let _ = artifact;
        Ok(None)
    }

    /// The org key the records of `org` (lowercase) kept here are under, if any are (the
    /// org's claim on this node; see the `name` module).
    fn org_claim(&self, org: &str) -> Result<Option<[u8; 32]>, BackendError> {
        let _ = org;
        Ok(None)
    }

    /// The stored name records of (`org` lowercase, `kind`, `name`), newest first, at most
    /// [`NAME_REVISIONS_MAX`](crate::NAME_REVISIONS_MAX).
    fn get_names(
        &self,
        org: &str,
        kind: NameKind,
        name: &str,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        let _ = (org, kind, name);
        Ok(Vec::new())
    }

    /// Keeps a name record (PUT_NAME), claiming its org for its org key if nobody has, and
    /// drops the name's revisions beyond the newest [`NAME_REVISIONS_MAX`](crate::NAME_REVISIONS_MAX).
    /// The protocol layer has checked the record, the org's claim and that the version is new,
    /// under one lock per server. The default keeps nothing ([`BackendError::Io`]: a node that
    /// keeps no names refuses them).
    fn put_name(&self, signed: &SignedName) -> Result<(), BackendError> {
        let _ = signed;
        Err(BackendError::Io("this node keeps no name records".into()))
    }
}

#[derive(Debug)]
struct Held {
    data: Vec<u8>,
    owners: BTreeSet<[u8; 32]>,
}

#[derive(Debug, Default)]
struct MemoryState {
    shards: HashMap<Cid, Held>,
    records: HashMap<Cid, Vec<u8>>,
    repair_records: HashMap<Cid, Vec<u8>>,
    leases: HashMap<Cid, SignedLease>,
    /// (org, kind, name) -> records, newest first.
    names: HashMap<(String, NameKind, String), Vec<SignedName>>,
    claims: HashMap<String, [u8; 32]>,
    receipts: VecDeque<SignedReceipt>,
    used: u64,
}

/// A [`ShardBackend`] in memory with a byte quota, for tests and examples.
///
/// A shard with several owners stays until the last of them deletes it, so that one publisher's
/// DELETE never removes data another publisher also stored. Holder records count against the
/// same quota as shards and are kept only for manifests held (stored with PUT like shards).
/// Audit receipts are kept apart from the quota, the latest [`RECEIPTS_MAX`](Self::RECEIPTS_MAX)
/// of them. Audits use the trait's default answer; audit leases (`renew_lease`) are not kept.
/// Artifact leases (PUT_LEASE) are kept beside their manifests, the latest of each, apart from
/// the quota; nothing is ever collected.
#[derive(Debug)]
pub struct MemoryBackend {
    quota: u64,
    state: Mutex<MemoryState>,
}

impl MemoryBackend {
    /// Most audit receipts kept; a new one beyond it pushes out the oldest.
    pub const RECEIPTS_MAX: usize = 10_000;

    /// The audit receipts received, oldest first.
    pub fn receipts(&self) -> Vec<SignedReceipt> {
        self.lock().receipts.iter().cloned().collect()
    }

    /// An empty backend that holds at most `quota` bytes of shards and holder records.
    pub fn new(quota: u64) -> Self {
        Self {
            quota,
            state: Mutex::new(MemoryState::default()),
        }
    }

    /// Stores a record of `artifact` (held as a manifest) in the map `slot` picks, replacing
    /// the one there, within the quota.
    fn put_counted(
        &self,
        artifact: &Cid,
        signed: &[u8],
        slot: fn(&mut MemoryState) -> &mut HashMap<Cid, Vec<u8>>,
    ) -> Result<(), BackendError> {
        let mut state = self.lock();
        if !state.shards.contains_key(artifact) {
            return Err(BackendError::UnknownArtifact);
        }
        let replaced = slot(&mut state)
            .get(artifact)
            .map_or(0, |old| old.len() as u64);
        let needed = signed.len() as u64;
        let free = self.quota.saturating_sub(state.used - replaced);
        if needed > free {
            return Err(BackendError::QuotaFull { needed, free });
        }
        state.used = state.used - replaced + needed;
        slot(&mut state).insert(*artifact, signed.to_vec());
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        // A panic while holding the lock cannot leave the map half-updated (every update is a
        // single insert or remove), so the poisoned state is still consistent.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl ShardBackend for MemoryBackend {
    fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError> {
        let mut state = self.lock();
        if let Some(held) = state.shards.get_mut(cid) {
            held.owners.insert(owner);
            return Ok(());
        }
        let needed = data.len() as u64;
        let free = self.quota.saturating_sub(state.used);
        if needed > free {
            return Err(BackendError::QuotaFull { needed, free });
        }
        state.used += needed;
        state.shards.insert(
            *cid,
            Held {
                data: data.to_vec(),
                owners: BTreeSet::from([owner]),
            },
        );
        Ok(())
    }

    /// A range is clamped to the shard: bytes past its end are simply not returned.
    fn get(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<Option<Vec<u8>>, BackendError> {
        let state = self.lock();
        let Some(held) = state.shards.get(cid) else {
            return Ok(None);
        };
        let len = held.data.len() as u64;
        let range = range.unwrap_or(0..len);
        let end = range.end.min(len);
        let start = range.start.min(end);
        Ok(Some(held.data[start as usize..end as usize].to_vec()))
    }

    fn has(&self, cid: &Cid) -> bool {
        self.lock().shards.contains_key(cid)
    }

    fn delete(&self, cid: &Cid, requester: [u8; 32]) -> Result<bool, BackendError> {
        let mut state = self.lock();
        let Some(held) = state.shards.get_mut(cid) else {
            return Ok(false);
        };
        if !held.owners.remove(&requester) {
            return Err(BackendError::NotOwner);
        }
        if held.owners.is_empty() {
            let len = held.data.len() as u64;
            state.shards.remove(cid);
            state.used -= len;
        }
        Ok(true)
    }

    fn free_bytes(&self) -> u64 {
        self.quota.saturating_sub(self.lock().used)
    }

    fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.put_counted(artifact, signed, |s| &mut s.records)
    }

    fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().records.get(artifact).cloned())
    }

    /// Repair records count against the quota like the publisher's.
    fn put_repair_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.put_counted(artifact, signed, |s| &mut s.repair_records)
    }

    fn get_repair_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().repair_records.get(artifact).cloned())
    }

    /// Keeps the receipt unless the same bytes are already kept.
    fn put_receipt(&self, receipt: &SignedReceipt) -> Result<(), BackendError> {
        let mut state = self.lock();
        if state.receipts.iter().any(|r| r.bytes == receipt.bytes) {
            return Ok(());
        }
        if state.receipts.len() >= Self::RECEIPTS_MAX {
            state.receipts.pop_front();
        }
        state.receipts.push_back(receipt.clone());
        Ok(())
    }

    fn put_lease(&self, artifact: &Cid, signed: &SignedLease) -> Result<(), BackendError> {
        let mut state = self.lock();
        if !state.shards.contains_key(artifact) {
            return Err(BackendError::UnknownArtifact);
        }
        let later = state
            .leases
            .get(artifact)
            .is_none_or(|old| signed.lease.until_ms > old.lease.until_ms);
        if later {
            state.leases.insert(*artifact, signed.clone());
        }
        Ok(())
    }

    fn get_lease(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        Ok(self.lock().leases.get(artifact).map(|l| l.bytes.clone()))
    }

    fn org_claim(&self, org: &str) -> Result<Option<[u8; 32]>, BackendError> {
        Ok(self.lock().claims.get(org).copied())
    }

    fn get_names(
        &self,
        org: &str,
        kind: NameKind,
        name: &str,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        Ok(self
            .lock()
            .names
            .get(&(org.to_string(), kind, name.to_string()))
            .map(|v| v.iter().map(|s| s.bytes.clone()).collect())
            .unwrap_or_default())
    }

    fn put_name(&self, signed: &SignedName) -> Result<(), BackendError> {
        let r = &signed.record;
        let org = r.org_lowercase();
        let mut state = self.lock();
        let claim = *state
            .claims
            .entry(org.clone())
            .or_insert(*r.org_key.as_bytes());
        if claim != *r.org_key.as_bytes() {
            return Err(BackendError::Io("the org is claimed by another key".into()));
        }
        let list = state
            .names
            .entry((org, r.kind, r.name.clone()))
            .or_default();
        list.retain(|s| s.record.version != r.version);
        list.push(signed.clone());
        list.sort_by_key(|s| std::cmp::Reverse(s.record.version));
        list.truncate(NAME_REVISIONS_MAX);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cids::shard_cid;

    #[test]
    fn memory_backend_enforces_quota_and_owners() {
        let backend = MemoryBackend::new(10);
        let a = shard_cid(b"0123456");
        backend.put(&a, b"0123456", [1; 32]).unwrap();
        assert_eq!(backend.free_bytes(), 3);
        let b = shard_cid(b"abcd");
        assert_eq!(
            backend.put(&b, b"abcd", [1; 32]),
            Err(BackendError::QuotaFull { needed: 4, free: 3 })
        );
        // A second owner of the same content costs no quota.
        backend.put(&a, b"0123456", [2; 32]).unwrap();
        assert_eq!(backend.free_bytes(), 3);
        assert_eq!(backend.delete(&a, [3; 32]), Err(BackendError::NotOwner));
        assert_eq!(backend.delete(&a, [1; 32]), Ok(true));
        assert!(backend.has(&a), "the second owner still holds it");
        assert_eq!(backend.delete(&a, [2; 32]), Ok(true));
        assert!(!backend.has(&a));
        assert_eq!(backend.free_bytes(), 10);
        assert_eq!(backend.delete(&a, [2; 32]), Ok(false));
    }

    #[test]
    fn memory_backend_records_replace_and_count_against_quota() {
        let backend = MemoryBackend::new(14);
        let artifact = crate::cids::manifest_cid(b"manifest");
        assert_eq!(backend.get_record(&artifact), Ok(None));
        assert_eq!(
            backend.put_record(&artifact, b"123456"),
            Err(BackendError::UnknownArtifact),
            "no manifest, no record"
        );
        backend.put(&artifact, b"manifest", [1; 32]).unwrap();
        backend.put_record(&artifact, b"123456").unwrap();
        assert_eq!(backend.free_bytes(), 0);
        // Replacing frees the old bytes first: 6 fit in 0 free + 6 replaced.
        backend.put_record(&artifact, b"abcdef").unwrap();
        assert_eq!(backend.get_record(&artifact), Ok(Some(b"abcdef".to_vec())));
        assert_eq!(
            backend.put_record(&artifact, b"abcdefg"),
            Err(BackendError::QuotaFull { needed: 7, free: 6 })
        );
    }

    #[test]
    fn memory_backend_keeps_the_latest_receipts_once_each() {
        let backend = MemoryBackend::new(0);
        let fake = |i: u32| SignedReceipt {
            receipt: crate::Receipt {
                auditor: iroh::SecretKey::from_bytes(&[1; 32]).public(),
                holder: iroh::SecretKey::from_bytes(&[2; 32]).public(),
                nonce: [0; 32],
                time_ms: u64::from(i),
                bytes: 0,
                shards: vec![shard_cid(b"s")],
            },
            bytes: i.to_be_bytes().to_vec(),
        };
        backend.put_receipt(&fake(0)).unwrap();
        backend.put_receipt(&fake(0)).unwrap();
        assert_eq!(
            backend.receipts(),
            vec![fake(0)],
            "the same bytes are kept once"
        );
        for i in 1..=MemoryBackend::RECEIPTS_MAX as u32 {
            backend.put_receipt(&fake(i)).unwrap();
        }
        let kept = backend.receipts();
        assert_eq!(kept.len(), MemoryBackend::RECEIPTS_MAX);
        assert_eq!(kept[0], fake(1), "the oldest made room");
        assert_eq!(kept.last(), Some(&fake(MemoryBackend::RECEIPTS_MAX as u32)));
    }

    #[test]
    fn memory_backend_clamps_ranges() {
        let backend = MemoryBackend::new(100);
        let cid = shard_cid(b"0123456789");
        backend.put(&cid, b"0123456789", [1; 32]).unwrap();
        assert_eq!(backend.get(&cid, Some(2..5)).unwrap().unwrap(), b"234");
        assert_eq!(backend.get(&cid, Some(8..50)).unwrap().unwrap(), b"89");
        assert_eq!(backend.get(&cid, Some(50..60)).unwrap().unwrap(), b"");
        assert_eq!(backend.get(&shard_cid(b"other"), None).unwrap(), None);
    }
}

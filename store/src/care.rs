//! What a node remembers of caring for the network's data: audit outcomes and the reputation
//! they make per peer, the last verdict per (shard, holder), the receipts it earned, repair
//! holder records, and counters for `cairn node status`.
//!
//! # Reputation
//!
//! Per peer, two scores in the manner of Storj's audit and online reputations (a beta
//! distribution with a forgetting factor):
//!
//! - the **audit score** counts what a peer answered: after each `success` or `failure`,
//!   `α ← λα + (1 + v)/2`, `β ← λβ + (1 − v)/2` with `v` = +1 or −1 and `λ` = [`FORGET`];
//!   the score is `α / (α + β)`, starting at 1 with α = 1 / (1 − λ), β = 0 (as if the peer had
//!   passed its whole memory of audits, as Storj starts new nodes);
//! - the **online score** counts whether it answered at all: the same update with `v` = +1 for
//!   any answer (success or failure) and −1 for `offline` or `timeout`.
//!
//! `unknown` (a protocol error that says nothing about the data) moves neither. With λ = 0.9 a
//! fresh peer that fails three audits in a row drops below [`AUDIT_SCORE_MIN`] (0.9, 0.81, then
//! 0.73), one that stops answering falls below [`ONLINE_SCORE_MIN`] after seven, and one failure among many successes costs little: the memory is about
//! 1 / (1 − λ) = 10 audits. A peer below either threshold is *avoided*: placement and repair do
//! not choose it, and the shards it holds are treated as lost for the repair decision (the
//! scores are advice: nothing is deleted because of them).

use std::time::{SystemTime, UNIX_EPOCH};

use cairn_artifact::{Cid, Error};
use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::Store;
use crate::db::DbResult;

/// Peer endpoint id -> [`Reputation`] (see `Reputation::encode`).
const REPUTATION: TableDefinition<[u8; 32], &[u8]> = TableDefinition::new("reputation-1");
/// Shard CID bytes ++ holder id -> last verdict: `u64` Unix ms, `u8` outcome.
const SHARD_AUDITS: TableDefinition<&[u8], [u8; 9]> = TableDefinition::new("shard-audits-1");
/// `u64` Unix ms (big-endian) ++ auditor id ++ nonce -> signed receipt bytes.
const RECEIPTS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("receipts-1");
/// Artifact (manifest) CID bytes -> the newest holder record a repairer signed.
pub(crate) const REPAIR_RECORDS: TableDefinition<&[u8], &[u8]> =
    TableDefinition::new("repair-records-1");
/// Counter name -> value.
const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters-1");

/// Forgetting factor of both scores.
pub const FORGET: f64 = 0.9;
/// α of a peer never audited: a full memory of successes, 1 / (1 − λ), as Storj starts.
const FRESH: f64 = 1.0 / (1.0 - FORGET);
/// Below this audit score a peer is avoided.
pub const AUDIT_SCORE_MIN: f64 = 0.8;
/// Below this online score a peer is avoided.
pub const ONLINE_SCORE_MIN: f64 = 0.5;
/// Most receipts kept; the oldest go first.
pub const RECEIPTS_MAX: u64 = 200_000;
/// Largest receipt kept, in bytes.
pub const RECEIPT_BYTES_MAX: usize = 64 * 1024;

/// How an audit of one shard on one holder ended (Storj's classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The answer proved the challenged ranges.
    Success,
    /// A wrong answer, a shard not held, or a copy the holder found corrupted.
    Failure,
    /// The holder could not be reached.
    Offline,
    /// The holder did not answer the batch within its deadline.
    Timeout,
    /// Something else (a protocol error) that says nothing about the data.
    Unknown,
}

impl Outcome {
    /// Every class, in table order.
    pub const ALL: [Outcome; 5] = [
        Outcome::Success,
        Outcome::Failure,
        Outcome::Offline,
        Outcome::Timeout,
        Outcome::Unknown,
    ];

    fn byte(self) -> u8 {
        match self {
            Outcome::Success => 0,
            Outcome::Failure => 1,
            Outcome::Offline => 2,
            Outcome::Timeout => 3,
            Outcome::Unknown => 4,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        Self::ALL.get(b as usize).copied()
    }

    /// Lower-case name, as in JSON and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Failure => "failure",
            Outcome::Offline => "offline",
            Outcome::Timeout => "timeout",
            Outcome::Unknown => "unknown",
        }
    }
}

/// A peer's record of audits, as this node saw them.
#[derive(Clone, Debug, PartialEq)]
pub struct Reputation {
    /// Audits per outcome class, in [`Outcome::ALL`] order.
    pub counts: [u64; 5],
    /// Audit score state (α, β).
    pub audit: (f64, f64),
    /// Online score state (α, β).
    pub online: (f64, f64),
    /// Unix ms of the last audit.
    pub last_ms: u64,
    /// Its outcome.
    pub last: Outcome,
}

impl Default for Reputation {
    fn default() -> Self {
        Self {
            counts: [0; 5],
            audit: (FRESH, 0.0),
            online: (FRESH, 0.0),
            last_ms: 0,
            last: Outcome::Unknown,
        }
    }
}

const REPUTATION_LEN: usize = 5 * 8 + 4 * 8 + 8 + 1;

impl Reputation {
    /// The audit score in [0, 1].
    pub fn audit_score(&self) -> f64 {
        ratio(self.audit)
    }

    /// The online score in [0, 1].
    pub fn online_score(&self) -> f64 {
        ratio(self.online)
    }

    /// Whether placement and repair should stay away from this peer.
    pub fn avoided(&self) -> bool {
        self.audit_score() < AUDIT_SCORE_MIN || self.online_score() < ONLINE_SCORE_MIN
    }

    /// Adds one outcome at `at_ms`.
    pub fn add(&mut self, outcome: Outcome, at_ms: u64) {
        self.counts[outcome.byte() as usize] += 1;
        let step = |(a, b): (f64, f64), v: f64| {
            (FORGET * a + (1.0 + v) / 2.0, FORGET * b + (1.0 - v) / 2.0)
        };
        match outcome {
            Outcome::Success => {
                self.audit = step(self.audit, 1.0);
                self.online = step(self.online, 1.0);
            }
            Outcome::Failure => {
                self.audit = step(self.audit, -1.0);
                self.online = step(self.online, 1.0);
            }
            Outcome::Offline | Outcome::Timeout => self.online = step(self.online, -1.0),
            Outcome::Unknown => {}
        }
        self.last_ms = at_ms;
        self.last = outcome;
    }

    fn encode(&self) -> [u8; REPUTATION_LEN] {
        let mut b = [0u8; REPUTATION_LEN];
        let mut at = 0;
        let mut put = |bytes: [u8; 8]| {
            b[at..at + 8].copy_from_slice(&bytes);
            at += 8;
        };
        for c in self.counts {
            put(c.to_be_bytes());
        }
        for f in [self.audit.0, self.audit.1, self.online.0, self.online.1] {
            put(f.to_be_bytes());
        }
        put(self.last_ms.to_be_bytes());
        b[REPUTATION_LEN - 1] = self.last.byte();
        b
    }

    fn decode(b: &[u8]) -> Option<Self> {
        if b.len() != REPUTATION_LEN {
            return None;
        }
        let word = |i: usize| -> [u8; 8] { b[i * 8..i * 8 + 8].try_into().expect("8 bytes") };
        let mut counts = [0u64; 5];
        for (i, c) in counts.iter_mut().enumerate() {
            *c = u64::from_be_bytes(word(i));
        }
        let f = |i: usize| f64::from_be_bytes(word(i));
        let finite = |x: f64| (x.is_finite() && x >= 0.0).then_some(x);
        Some(Self {
            counts,
            audit: (finite(f(5))?, finite(f(6))?),
            online: (finite(f(7))?, finite(f(8))?),
            last_ms: u64::from_be_bytes(word(9)),
            last: Outcome::from_byte(b[REPUTATION_LEN - 1])?,
        })
    }
}

fn ratio((a, b): (f64, f64)) -> f64 {
    if a + b <= 0.0 { 1.0 } else { a / (a + b) }
}

/// One audited (shard, holder) pair's verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditVerdict {
    /// The holder's endpoint id.
    pub holder: [u8; 32],
    /// The shard.
    pub shard: Cid,
    /// The outcome.
    pub outcome: Outcome,
}

/// Counters of the work a node did, for `cairn node status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Shards this node proved in audits it answered.
    pub audits_answered: u64,
    /// Audit requests it answered for shards it did not hold or held corrupted.
    pub audits_failed: u64,
    /// Shard audits it performed on others.
    pub audits_done: u64,
    /// Shards it re-created and placed.
    pub repairs_done: u64,
    /// Bytes of re-created shards it placed.
    pub repair_bytes: u64,
    /// Bytes of shards it served to readers.
    pub bytes_served: u64,
    /// Leases of its publisher's artifacts it renewed on the network.
    pub leases_renewed: u64,
}

const COUNTER_NAMES: [&str; 7] = [
    "audits_answered",
    "audits_failed",
    "audits_done",
    "repairs_done",
    "repair_bytes",
    "bytes_served",
    "leases_renewed",
];

pub(crate) fn create_tables(tx: &redb::WriteTransaction) -> Result<(), Error> {
    tx.open_table(REPUTATION).db()?;
    tx.open_table(SHARD_AUDITS).db()?;
    tx.open_table(RECEIPTS).db()?;
    tx.open_table(REPAIR_RECORDS).db()?;
    tx.open_table(COUNTERS).db()?;
    Ok(())
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn shard_key(shard: &Cid, holder: &[u8; 32]) -> Vec<u8> {
    let mut k = shard.to_bytes();
    k.extend_from_slice(holder);
    k
}

impl Store {
    /// Records the verdicts of one audit round at `at_ms` in one transaction: each updates its
    /// holder's reputation and the last verdict of its (shard, holder).
    pub fn record_audits(&self, verdicts: &[AuditVerdict], at_ms: u64) -> Result<(), Error> {
        if verdicts.is_empty() {
            return Ok(());
        }
        let tx = self.db.begin_write().db()?;
        {
            let mut reps = tx.open_table(REPUTATION).db()?;
            let mut shards = tx.open_table(SHARD_AUDITS).db()?;
            for v in verdicts {
                let mut rep = reps
                    .get(v.holder)
                    .db()?
                    .and_then(|r| Reputation::decode(r.value()))
                    .unwrap_or_default();
                rep.add(v.outcome, at_ms);
                reps.insert(v.holder, rep.encode().as_slice()).db()?;
                let mut row = [0u8; 9];
                row[..8].copy_from_slice(&at_ms.to_be_bytes());
                row[8] = v.outcome.byte();
                shards
                    .insert(shard_key(&v.shard, &v.holder).as_slice(), row)
                    .db()?;
            }
            bump(&tx, "audits_done", verdicts.len() as u64)?;
        }
        tx.commit().db()
    }

    /// A peer's reputation, if it was ever audited here.
    pub fn reputation(&self, peer: &[u8; 32]) -> Result<Option<Reputation>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(REPUTATION).db()?;
        Ok(t.get(*peer)
            .db()?
            .and_then(|r| Reputation::decode(r.value())))
    }

    /// Every peer's reputation.
    pub fn reputations(&self) -> Result<Vec<([u8; 32], Reputation)>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(REPUTATION).db()?;
        let mut out = Vec::new();
        for row in t.iter().db()? {
            let (k, v) = row.db()?;
            if let Some(r) = Reputation::decode(v.value()) {
                out.push((k.value(), r));
            }
        }
        Ok(out)
    }

    /// The last verdict on `shard` held by `holder`: Unix ms and outcome.
    pub fn last_audit(
        &self,
        shard: &Cid,
        holder: &[u8; 32],
    ) -> Result<Option<(u64, Outcome)>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(SHARD_AUDITS).db()?;
        Ok(t.get(shard_key(shard, holder).as_slice())
            .db()?
            .and_then(|v| {
                let row = v.value();
                Some((
                    u64::from_be_bytes(row[..8].try_into().expect("8 bytes")),
                    Outcome::from_byte(row[8])?,
                ))
            }))
    }

    /// Keeps a receipt this node earned (signed by `auditor` at `time_ms` for `nonce`); the
    /// caller verified it. A receipt already kept is kept once; past [`RECEIPTS_MAX`] the
    /// oldest go.
    pub fn add_receipt(
        &self,
        time_ms: u64,
        auditor: &[u8; 32],
        nonce: &[u8; 32],
        signed: &[u8],
    ) -> Result<(), Error> {
        if signed.len() > RECEIPT_BYTES_MAX {
            return Err(Error::Db(format!(
                "a receipt of {} bytes is over {RECEIPT_BYTES_MAX}",
                signed.len()
            )));
        }
        let mut key = time_ms.to_be_bytes().to_vec();
        key.extend_from_slice(auditor);
        key.extend_from_slice(nonce);
        let tx = self.db.begin_write().db()?;
        {
            let mut t = tx.open_table(RECEIPTS).db()?;
            t.insert(key.as_slice(), signed).db()?;
            let mut over = t.len().db()?.saturating_sub(RECEIPTS_MAX);
            while over > 0 {
                if t.pop_first().db()?.is_none() {
                    break;
                }
                over -= 1;
            }
        }
        tx.commit().db()
    }

    /// Receipts kept, signed at or after `since_ms`, oldest first, at most `limit`.
    pub fn receipts_since(&self, since_ms: u64, limit: usize) -> Result<Vec<Vec<u8>>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(RECEIPTS).db()?;
        let from = since_ms.to_be_bytes();
        let mut out = Vec::new();
        for row in t.range(from.as_slice()..).db()? {
            if out.len() >= limit {
                break;
            }
            let (_, v) = row.db()?;
            out.push(v.value().to_vec());
        }
        Ok(out)
    }

    /// Stores the repair holder record of `artifact` (the caller checked it is newer and
    /// fits); like the publisher's record, only beside the manifest, and collected with it.
    pub fn put_repair_record(&self, artifact: &Cid, record: &[u8]) -> Result<(), Error> {
        let _guard = self.write_lock.lock().unwrap_or_else(|p| p.into_inner());
        if !self.has_manifest(artifact)? {
            return Err(Error::ManifestNotFound(*artifact));
        }
        let tx = self.db.begin_write().db()?;
        {
            // Charged to the quota like the publisher's record.
            let key = artifact.to_bytes();
            let used = self.used(&tx)?;
            let mut t = tx.open_table(REPAIR_RECORDS).db()?;
            let old = t
                .get(key.as_slice())
                .db()?
                .map(|v| v.value().len() as u64)
                .unwrap_or(0);
            let new_used = used - old.min(used) + record.len() as u64;
            if new_used > self.quota() {
                return Err(Error::QuotaExceeded {
                    needed: record.len() as u64,
                    free: self.quota().saturating_sub(used),
                    quota: self.quota(),
                });
            }
            t.insert(key.as_slice(), record).db()?;
            tx.open_table(crate::store::META)
                .db()?
                .insert(crate::store::META_USED, new_used)
                .db()?;
        }
        tx.commit().db()
    }

    /// The repair holder record stored for `artifact`.
    pub fn get_repair_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(REPAIR_RECORDS).db()?;
        Ok(t.get(artifact.to_bytes().as_slice())
            .db()?
            .map(|v| v.value().to_vec()))
    }

    /// Adds `by` to a counter (one of [`Counters`]' fields, by name).
    pub fn count(&self, name: &'static str, by: u64) -> Result<(), Error> {
        self.count_many(&[(name, by)])
    }

    /// Adds to several counters in one transaction.
    pub fn count_many(&self, counts: &[(&'static str, u64)]) -> Result<(), Error> {
        if counts.iter().all(|(_, by)| *by == 0) {
            return Ok(());
        }
        let tx = self.db.begin_write().db()?;
        for (name, by) in counts {
            if *by > 0 {
                bump(&tx, name, *by)?;
            }
        }
        tx.commit().db()
    }

    /// The counters.
    pub fn counters(&self) -> Result<Counters, Error> {
        let rtx = self.db.begin_read().db()?;
        let t = rtx.open_table(COUNTERS).db()?;
        let get =
            |n: &str| -> Result<u64, Error> { Ok(t.get(n).db()?.map(|v| v.value()).unwrap_or(0)) };
        Ok(Counters {
            audits_answered: get(COUNTER_NAMES[0])?,
            audits_failed: get(COUNTER_NAMES[1])?,
            audits_done: get(COUNTER_NAMES[2])?,
            repairs_done: get(COUNTER_NAMES[3])?,
            repair_bytes: get(COUNTER_NAMES[4])?,
            bytes_served: get(COUNTER_NAMES[5])?,
            leases_renewed: get(COUNTER_NAMES[6])?,
        })
    }
}

fn bump(tx: &redb::WriteTransaction, name: &str, by: u64) -> Result<(), Error> {
    debug_assert!(COUNTER_NAMES.contains(&name), "unknown counter {name}");
    let mut t = tx.open_table(COUNTERS).db()?;
    let v = t.get(name).db()?.map(|v| v.value()).unwrap_or(0);
    t.insert(name, v.saturating_add(by)).db()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::StoreConfig;

    #[test]
    fn scores_follow_the_documented_updates() {
        let mut r = Reputation::default();
        assert_eq!(r.audit_score(), 1.0);
        for _ in 0..3 {
            r.add(Outcome::Failure, 1);
        }
        assert!(
            (r.audit_score() - 0.729).abs() < 1e-9,
            "{}",
            r.audit_score()
        );
        assert!(r.avoided(), "three failures in a row");
        assert_eq!(r.online_score(), 1.0, "failures are answers");
        let mut good = Reputation::default();
        for _ in 0..20 {
            good.add(Outcome::Success, 1);
        }
        good.add(Outcome::Failure, 2);
        assert!(
            !good.avoided(),
            "one failure among many: {}",
            good.audit_score()
        );
        let mut gone = Reputation::default();
        for _ in 0..10 {
            gone.add(Outcome::Timeout, 3);
        }
        assert_eq!(gone.audit_score(), 1.0, "timeouts say nothing of the data");
        assert!(gone.avoided(), "online {}", gone.online_score());
        gone.add(Outcome::Unknown, 4);
        assert_eq!(gone.counts, [0, 0, 0, 10, 1]);
        assert_eq!(Reputation::decode(&gone.encode()), Some(gone));
        assert_eq!(Reputation::decode(&[0u8; 3]), None);
    }

    #[test]
    fn audits_receipts_counters_and_repair_records_persist() {
        let dir = tempfile::tempdir().unwrap();
        let shard = cairn_artifact::shard_cid(b"a shard");
        let (a, b) = ([1u8; 32], [2u8; 32]);
        {
            let s = Store::open(dir.path(), StoreConfig::new(1 << 20)).unwrap();
            s.record_audits(
                &[
                    AuditVerdict {
                        holder: a,
                        shard,
                        outcome: Outcome::Success,
                    },
                    AuditVerdict {
                        holder: b,
                        shard,
                        outcome: Outcome::Failure,
                    },
                ],
                42,
            )
            .unwrap();
            for t in [10u64, 30, 20] {
                s.add_receipt(t, &a, &[t as u8; 32], &[t as u8; 5]).unwrap();
            }
            s.count("repairs_done", 2).unwrap();
            assert!(matches!(
                s.put_repair_record(&shard, b"rec"),
                Err(Error::ManifestNotFound(_))
            ));
        }
        let s = Store::open(dir.path(), StoreConfig::new(1 << 20)).unwrap();
        assert_eq!(
            s.last_audit(&shard, &a).unwrap(),
            Some((42, Outcome::Success))
        );
        assert_eq!(
            s.last_audit(&shard, &b).unwrap(),
            Some((42, Outcome::Failure))
        );
        assert_eq!(s.reputation(&b).unwrap().unwrap().counts, [0, 1, 0, 0, 0]);
        assert_eq!(s.reputations().unwrap().len(), 2);
        assert_eq!(
            s.receipts_since(15, 10).unwrap(),
            vec![vec![20u8; 5], vec![30u8; 5]],
            "oldest first, from the time asked"
        );
        assert_eq!(
            s.receipts_since(0, 1).unwrap().len(),
            1,
            "bounded by the limit"
        );
        let c = s.counters().unwrap();
        assert_eq!((c.audits_done, c.repairs_done), (2, 2));
        assert!(
            s.add_receipt(1, &a, &[0; 32], &vec![0; RECEIPT_BYTES_MAX + 1])
                .is_err()
        );
    }
}

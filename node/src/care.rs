//! Caretaking: a node audits the holders of the artifacts it keeps, scores them, pays them in
//! receipts, and repairs what was lost, without the read key and without anyone asking.
//!
//! # Who audits what
//!
//! Every node that holds a shard of an artifact also holds its manifest and holder record (the
//! publisher sends both to every holder), so it knows every shard of every chunk it shares and
//! who holds each. For each such chunk, the holders still believed alive (listed live, not
//! avoided, and not having missed this node's last audit of them) are ranked by
//! rendezvous hashing of the chunk's key ([`chunk_key`]); the first is the chunk's *caretaker*.
//! The caretaker challenges every other holder of the chunk at least once per audit period and
//! checks its own shard from its disk; the other holders sample the chunk at a quarter of that
//! rate ([`SAMPLE_SLOWER`]), so that a caretaker that lies about its co-holders, or is gone, is
//! not the only one looking. When the caretaker dies, the next in the ranking takes over at its
//! next round: there is no election and no state to hand over.
//!
//! Rounds run every period / [`ROUNDS_PER_PERIOD`], each delayed by up to a quarter of that at
//! random, so that nodes that started together do not audit together.
//!
//! # When a shard counts as lost
//!
//! A shard is *lost* when its holder's last verdict on it was a failure (wrong answer, not
//! held, admitted corruption), when its holder missed [`MISSES_TO_LOST`] rounds in a row
//! (offline or timeout) or is no longer among the live peers after missing one, or when the
//! holder's reputation is below its thresholds (see `cairn_store::Reputation`). A shard never
//! audited yet is not lost. When a chunk has lost shards, its caretaker repairs them at once:
//! fewer than n verified shards is the threshold, so redundancy is restored before it is needed.
//!
//! # Repair
//!
//! Shards are slices of sealed bytes, so the manifest's public part (shard CIDs, sealed length,
//! k and m) is enough: the caretaker fetches any k live shards (its own from its disk), decodes
//! the sealed chunk, re-encodes it and checks that every re-created shard hashes to the CID the
//! manifest names, then places each on the next peer of the chunk's [`repair_ranking`] that is
//! not already a holder of the chunk, not avoided and not a holder of a lost shard, sending the
//! manifest first so the new holder keeps records for it. It then signs a *repair record*: the
//! holder record it used with those shards moved, at a later version, and stores it on every
//! holder (see the shard protocol's holder records: a record from a key the manifest does not
//! name is kept in a separate slot and is only ever a hint; readers verify every byte by CID and
//! fall back to the publisher's record and to the repair ranking).
//!
//! Two caretakers that both think a chunk is theirs (they disagree on who is alive) pick the
//! same targets, since the ranking depends only on the chunk and the live set: a shard placed
//! twice on the same peer is stored once. A repair cut short (the caretaker killed between
//! placing shards and storing the record) is finished by the next round of whichever node is
//! then caretaker: the shards placed are found already held, the record is written.
//!
//! # Leases
//!
//! An artifact whose publisher signed a lease (see `leases`) is cared for while the lease runs:
//! a shard placed on a new holder goes with the lease (after the manifest, before the shard),
//! so that the new holder keeps it exactly as long as the others, and once the lease has ended
//! the artifact is neither audited nor repaired: abandoned data is let go. A node running on its
//! publisher's data directory also renews the publisher's leases at the end of each round.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cairn_artifact::{Cid, Manifest, shard_cid};
use cairn_erasure::{Codec, Params};
use cairn_store::{AuditVerdict as Verdict, Outcome, Store, now_ms};
use cairn_swarm::{
    AUDIT_BATCH_MAX, AuditVerdict, EndpointAddr, EndpointId, HolderRecord, Membership, PeerInfo,
    RECORD_REPLICAS, Receipt, SecretKey, ShardClient, ShardLocation, fetch_any_k, judge_audit,
    place, record_version_now,
};
use futures_util::StreamExt;
use rand::Rng;
use tracing::{debug, info, warn};

use crate::PeerAddr;
use crate::leases::Renewer;
use crate::policy::{self, HolderSeen};

/// Rounds per audit period.
pub const ROUNDS_PER_PERIOD: u32 = 4;
/// Non-caretaker holders audit a chunk this many times less often than its caretaker.
pub const SAMPLE_SLOWER: u32 = 4;
/// Rounds in a row a holder may miss (offline or timeout) before its shards count as lost.
pub const MISSES_TO_LOST: u32 = 2;
/// Audit batches in flight at once from one node.
pub const AUDITS_IN_FLIGHT: usize = 8;
/// Shards one round audits at most, whatever is due (the rest wait for the next round): 4 rounds
/// a period cover 262 144 shards a caretaker answers for, about 90 GB of 341 KiB shards (a
/// larger node needs a longer period; what is deferred is logged).
pub const AUDITS_PER_ROUND_MAX: usize = 65_536;
/// Chunks one round repairs at most.
pub const REPAIRS_PER_ROUND_MAX: usize = 256;
/// Candidates beyond the lost shards' count asked whether an earlier repair already placed
/// them.
const RANKING_LOOKAHEAD: usize = 2;
/// How long a shard fetch for a repair may wait before asking another holder.
const REPAIR_HEDGE: Duration = Duration::from_millis(500);

/// Settings of a node's caretaking.
#[derive(Clone, Debug)]
pub struct CareConfig {
    /// Every shard is audited at least once per period (by its chunk's caretaker).
    pub period: Duration,
    /// Repair lost shards (on by default; off, a node only audits and reports).
    pub repair: bool,
}

impl Default for CareConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(24 * 3600),
            repair: true,
        }
    }
}

/// What one round did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RoundReport {
    /// Artifacts looked at.
    pub artifacts: usize,
    /// Shards audited (remote challenges and own disk checks).
    pub audited: usize,
    /// Of which failed (any class but success).
    pub failed: usize,
    /// Shards re-created and placed.
    pub repaired: usize,
    /// Chunks that had lost shards but could not be repaired this round.
    pub unrepaired: usize,
    /// Leases of the node's publisher renewed (see `leases`).
    pub renewed: usize,
    /// Extra copies dropped: shards this node holds that the records place, verified, elsewhere.
    pub trimmed: usize,
    /// Name records handed to the nodes now ranked for them.
    pub names_handed: usize,
    /// Record nodes handed an artifact's records (the `records` module).
    pub records_handed: usize,
}

/// The key a chunk's holders are ranked by: its first shard's CID, as publishing uses.
pub fn chunk_key(shards: &[Cid]) -> Vec<u8> {
    shards.first().map(|c| c.to_bytes()).unwrap_or_default()
}

/// Where repairs put the shards of the chunk whose shards are `shards`: every peer of `peers`
/// ranked by rendezvous hashing of [`chunk_key`] with equal weights. Equal weights (not free
/// space, which changes) let a reader that has no usable record compute the same ranking from
/// the live membership and find repaired shards among its first entries.
pub fn repair_ranking(shards: &[Cid], peers: &[EndpointId]) -> Vec<EndpointId> {
    let weighted: Vec<(EndpointId, u64)> = peers.iter().map(|p| (*p, 1)).collect();
    place(&chunk_key(shards), &weighted, weighted.len())
}

/// An artifact as a node sees it: its manifest and the record it trusts most.
struct View {
    artifact: Cid,
    manifest: Manifest,
    manifest_bytes: Vec<u8>,
    /// The publisher's record, or a later repair record of the same shape.
    record: HolderRecord,
    /// The signed publisher's record and repair record as stored, passed on to new holders
    /// before a new repair record so that they can check its signer (the protocol's chain).
    chain: Vec<Vec<u8>>,
    /// The artifact's signed lease as stored, passed on to the new holders of repaired shards
    /// so that they keep them exactly as long as the others.
    lease: Option<Vec<u8>>,
}

/// One (chunk, shard) to audit on one holder.
#[derive(Clone, Copy)]
struct Due {
    artifact: usize,
    cid: Cid,
    size: u64,
}

/// The caretaker of one node.
pub(crate) struct Care {
    store: Arc<Store>,
    client: ShardClient,
    key: SecretKey,
    me: EndpointId,
    membership: Arc<Membership>,
    config: CareConfig,
    /// Rounds in a row each holder missed.
    misses: Mutex<HashMap<EndpointId, u32>>,
    /// When each artifact's repair record was last asked of another holder.
    synced: Mutex<HashMap<Cid, u64>>,
    /// Renews the leases of this node's publisher, if it has one.
    renewer: Option<Renewer>,
    /// When the name records were last handed on (Unix ms), and a digest of the live set then.
    names_synced: Mutex<(u64, u64)>,
    /// When each artifact's record nodes were last checked.
    records_checked: crate::records::Checked,
}

impl Care {
    pub(crate) fn new(
        store: Arc<Store>,
        client: ShardClient,
        key: SecretKey,
        membership: Arc<Membership>,
        config: CareConfig,
    ) -> Self {
        Self {
            store,
            client,
            me: key.public(),
            key,
            membership,
            config,
            misses: Mutex::new(HashMap::new()),
            synced: Mutex::new(HashMap::new()),
            renewer: None,
            names_synced: Mutex::new((0, 0)),
            records_checked: Default::default(),
        }
    }

    /// Renews the leases `renewer` lists at the end of every round.
    pub(crate) fn with_renewer(mut self, renewer: Option<Renewer>) -> Self {
        self.renewer = renewer;
        self
    }

    /// Runs rounds forever (the caller aborts the task to stop).
    pub(crate) async fn run(self: Arc<Self>) {
        let every = (self.config.period / ROUNDS_PER_PERIOD).max(Duration::from_millis(100));
        loop {
            let jitter = rand::rng().random_range(0..=every.as_millis() as u64 / 4);
            tokio::time::sleep(every + Duration::from_millis(jitter)).await;
            let report = self.round().await;
            if report.audited + report.repaired + report.unrepaired > 0 {
                debug!(?report, "care round");
            }
        }
    }

    fn live(&self) -> HashMap<EndpointId, PeerInfo> {
        self.membership
            .live_peers()
            .into_iter()
            .map(|p| (p.id, p))
            .collect()
    }

    fn views(&self) -> Vec<View> {
        let records = match self.store.records() {
            Ok(r) => r,
            Err(e) => {
                warn!("care: listing records: {e}");
                return Vec::new();
            }
        };
        let mut out = Vec::new();
        for (artifact, bytes) in records {
            match self.view(artifact, &bytes) {
                Ok(v) => out.push(v),
                Err(e) => debug!("care: skipping {artifact}: {e}"),
            }
        }
        out
    }

    fn view(&self, artifact: Cid, record: &[u8]) -> Result<View, String> {
        // Abandoned data is let go: an artifact whose lease has ended is neither audited nor
        // repaired (gc collects it after the grace).
        let lease_until = self
            .store
            .lease_until(&artifact)
            .map_err(|e| e.to_string())?;
        if let Some(until) = lease_until
            && until < now_ms()
        {
            return Err(format!("its lease ended at {until} ms"));
        }
        let lease = match lease_until {
            Some(_) => self.store.get_lease(&artifact).map_err(|e| e.to_string())?,
            None => None,
        };
        let primary = HolderRecord::verify(record).map_err(|e| e.to_string())?;
        let manifest_bytes = self
            .store
            .get_manifest(&artifact)
            .map_err(|e| e.to_string())?;
        let manifest =
            Manifest::decode(&manifest_bytes, &artifact.to_string()).map_err(|e| e.to_string())?;
        if !manifest
            .record_signers()
            .contains(primary.publisher.as_bytes())
        {
            return Err("its record is not signed by a key its manifest names".into());
        }
        let mut best = primary.record;
        let mut chain = vec![record.to_vec()];
        if let Ok(Some(bytes)) = self.store.get_repair_record(&artifact)
            && let Ok(repair) = HolderRecord::verify(&bytes)
            && fits(&repair.record, &manifest)
            && repair.record.version > best.version
        {
            best = repair.record;
            chain.push(bytes);
        }
        if !fits(&best, &manifest) {
            return Err("its record does not fit its manifest".into());
        }
        Ok(View {
            artifact,
            manifest,
            manifest_bytes,
            record: best,
            chain,
            lease,
        })
    }

    /// One round: audit what is due, record the verdicts, repair what was lost.
    pub(crate) async fn round(self: &Arc<Self>) -> RoundReport {
        let me = self.clone();
        let views = match tokio::task::spawn_blocking(move || me.views()).await {
            Ok(v) => v,
            Err(_) => return RoundReport::default(),
        };
        // A node that was away when a repair record was stored learns it from another holder
        // (once a period per artifact), then reads the artifact as the others do.
        let views = if self.sync_records(&views).await > 0 {
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.views())
                .await
                .unwrap_or(views)
        } else {
            views
        };
        let mut report = RoundReport {
            artifacts: views.len(),
            ..RoundReport::default()
        };
        let live = self.live();
        let now = now_ms();
        let period_ms = self.config.period.as_millis() as u64;
        // What is due, per holder; own shards are checked from disk.
        let mut remote: HashMap<EndpointId, Vec<Due>> = HashMap::new();
        let mut local: Vec<Cid> = Vec::new();
        let mut due_count = 0usize;
        let mut deferred = 0usize;
        let mine = placed_on(&views, self.me);
        for (a, v) in views.iter().enumerate() {
            let params = v.manifest.params();
            for (i, chunk) in v.manifest.chunks().iter().enumerate() {
                let holders = chunk_holders(&v.record, i);
                let caretaker = self.caretaker(&chunk.shards, &holders, &live);
                let every = if caretaker == Some(self.me) {
                    period_ms
                } else {
                    period_ms * u64::from(SAMPLE_SLOWER)
                };
                let size = params.shard_len(chunk.sealed_len as usize) as u64;
                for (j, cid) in chunk.shards.iter().enumerate() {
                    let holder = holders[j];
                    let last = self
                        .store
                        .last_audit(cid, holder.as_bytes())
                        .ok()
                        .flatten()
                        .map(|(t, _)| t);
                    if last.is_some_and(|t| now.saturating_sub(t) < every) {
                        continue;
                    }
                    if holder == self.me {
                        if caretaker.is_some() {
                            local.push(*cid);
                        }
                        continue;
                    }
                    // A copy this node keeps that the records place elsewhere: its holder there
                    // is audited too, so that the copy can be trimmed once that one is proved.
                    let extra = !mine.contains(cid) && self.store.has_shard(cid).unwrap_or(false);
                    if caretaker != Some(self.me) && !holders.contains(&self.me) && !extra {
                        continue;
                    }
                    if due_count >= AUDITS_PER_ROUND_MAX {
                        deferred += 1;
                        continue;
                    }
                    due_count += 1;
                    remote.entry(holder).or_default().push(Due {
                        artifact: a,
                        cid: *cid,
                        size,
                    });
                }
            }
        }
        if deferred > 0 {
            warn!(
                "care: {deferred} shard audits due beyond this round's {AUDITS_PER_ROUND_MAX}; \
                 they wait for the next round (a longer --audit-period spreads them)"
            );
        }
        let mut verdicts = self.check_local(local).await;
        verdicts.extend(self.audit_all(remote, &views, &live).await);
        report.audited = verdicts.len();
        report.failed = verdicts
            .iter()
            .filter(|v| v.outcome != Outcome::Success)
            .count();
        let s = self.store.clone();
        let recorded = verdicts.clone();
        match tokio::task::spawn_blocking(move || s.record_audits(&recorded, now_ms())).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => warn!("care: recording audits: {e}"),
            Err(e) => warn!("care: recording audits: {e}"),
        }
        self.note_misses(&verdicts);
        if self.config.repair {
            let (repaired, unrepaired) = self.repair_all(&views, &live).await;
            report.repaired = repaired;
            report.unrepaired = unrepaired;
        }
        if let Some(renewer) = &self.renewer {
            let peers: Vec<EndpointAddr> = live.values().map(PeerInfo::addr).collect();
            report.renewed = renewer
                .round(&self.store, &self.client, self.me, &peers)
                .await;
        }
        report.trimmed = self.trim_extras(&views, &mine).await;
        report.names_handed = self.replace_names(&live).await;
        let peers: Vec<EndpointAddr> = live.values().map(PeerInfo::addr).collect();
        report.records_handed = crate::records::replace_records(
            &self.store,
            &self.client,
            self.me,
            &peers,
            &self.records_checked,
            self.config.period,
        )
        .await;
        report
    }

    /// Hands the name records this node keeps to the nodes now ranked for them that lack them
    /// (the `names` module): in the first round after the live set changed, and once a period.
    async fn replace_names(&self, live: &HashMap<EndpointId, PeerInfo>) -> usize {
        let now = now_ms();
        let mut ids: Vec<&EndpointId> = live.keys().collect();
        ids.sort();
        let digest = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            ids.hash(&mut h);
            h.finish()
        };
        {
            let mut last = self.names_synced.lock().unwrap_or_else(|p| p.into_inner());
            let due = now.saturating_sub(last.0) >= self.config.period.as_millis() as u64;
            if !due && last.1 == digest {
                return 0;
            }
            *last = (now, digest);
        }
        // This node counts in the ranking: when it is among the first, one fewer other holds.
        let mut peers: Vec<EndpointAddr> = live.values().map(PeerInfo::addr).collect();
        peers.push(EndpointAddr::new(self.me));
        crate::names::replace_names(&self.store, &self.client, self.me, &peers).await
    }

    /// Drops the copies this node keeps of shards the records place on another node that this
    /// node proved recently (within a sampling interval): extra copies from overlapping
    /// repairs, or from before this node was counted lost. A shard any record places here, or a
    /// local pin needs, stays.
    async fn trim_extras(&self, views: &[View], mine: &HashSet<Cid>) -> usize {
        if !self.config.repair {
            return 0;
        }
        let now = now_ms();
        let window = self.config.period.as_millis() as u64 * u64::from(SAMPLE_SLOWER + 1);
        let mut extra = Vec::new();
        for v in views {
            for (i, chunk) in v.manifest.chunks().iter().enumerate() {
                for (cid, holder) in chunk.shards.iter().zip(chunk_holders(&v.record, i)) {
                    if holder == self.me || mine.contains(cid) {
                        continue;
                    }
                    let proved = matches!(
                        self.store.last_audit(cid, holder.as_bytes()),
                        Ok(Some((t, Outcome::Success))) if now.saturating_sub(t) < window
                    );
                    if proved && self.store.has_shard(cid).unwrap_or(false) {
                        extra.push(*cid);
                    }
                }
            }
        }
        if extra.is_empty() {
            return 0;
        }
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            let mut trimmed = 0;
            for cid in extra {
                match store.trim_shard(&cid) {
                    Ok(true) => {
                        info!("care: trimmed an extra copy of {cid} (kept, proved, elsewhere)");
                        trimmed += 1;
                    }
                    Ok(false) => {}
                    Err(e) => warn!("care: trimming {cid}: {e}"),
                }
            }
            trimmed
        })
        .await
        .unwrap_or(0)
    }

    /// Asks one other live holder of each artifact (at most once a period each) for its repair
    /// record, and keeps it if it is newer than this node's and trusted along the chain from
    /// the records this node holds (as the shard protocol's server and readers decide).
    /// Returns how many it kept.
    async fn sync_records(&self, views: &[View]) -> usize {
        let now = now_ms();
        let period_ms = self.config.period.as_millis() as u64;
        let live = self.live();
        let mut asks = Vec::new();
        {
            let mut synced = self.synced.lock().unwrap_or_else(|p| p.into_inner());
            for (a, v) in views.iter().enumerate() {
                if synced
                    .get(&v.artifact)
                    .is_some_and(|t| now.saturating_sub(*t) < period_ms)
                {
                    continue;
                }
                let others: Vec<&PeerInfo> = v
                    .record
                    .nodes
                    .iter()
                    .filter(|(id, _)| *id != self.me)
                    .filter_map(|(id, _)| live.get(id))
                    .collect();
                if others.is_empty() {
                    continue;
                }
                synced.insert(v.artifact, now);
                let peer = others[rand::rng().random_range(0..others.len())].addr();
                asks.push((a, peer));
            }
        }
        let answers =
            futures_util::future::join_all(asks.into_iter().map(|(a, peer)| async move {
                (
                    a,
                    self.client
                        .get_repair_record(&peer, &views[a].artifact)
                        .await,
                )
            }))
            .await;
        let mut kept = 0;
        for (a, answer) in answers {
            let v = &views[a];
            let Ok(Some(r)) = answer else { continue };
            let trusted = v.record.nodes.iter().any(|(id, _)| *id == r.publisher);
            // Dated too far ahead, it could block every later repair record here.
            let ahead = r.record.version
                > record_version_now() + cairn_swarm::RECORD_AHEAD_MAX.as_millis() as u64;
            if !trusted
                || ahead
                || r.record.version <= v.record.version
                || !fits(&r.record, &v.manifest)
            {
                continue;
            }
            let store = self.store.clone();
            let (artifact, bytes) = (v.artifact, r.bytes.clone());
            if let Ok(Ok(())) =
                tokio::task::spawn_blocking(move || store.put_repair_record(&artifact, &bytes))
                    .await
            {
                kept += 1;
            }
        }
        kept
    }

    /// The first live, not avoided holder of a chunk in its ranking.
    fn caretaker(
        &self,
        shards: &[Cid],
        holders: &[EndpointId],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> Option<EndpointId> {
        let alive: Vec<EndpointId> = holders
            .iter()
            .filter(|h| {
                **h == self.me
                    || policy::caretaker_eligible(HolderSeen {
                        live: live.contains_key(*h),
                        avoided: self.avoided(h),
                        missed: self.missed(h),
                        ..HolderSeen::default()
                    })
            })
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        policy::caretaker_of(shards, &alive)
    }

    /// Rounds in a row `peer` missed its audits (as this node saw them).
    fn missed(&self, peer: &EndpointId) -> u32 {
        self.misses
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(peer)
            .copied()
            .unwrap_or(0)
    }

    fn avoided(&self, peer: &EndpointId) -> bool {
        self.store
            .reputation(peer.as_bytes())
            .ok()
            .flatten()
            .is_some_and(|r| r.avoided())
    }

    async fn check_local(&self, cids: Vec<Cid>) -> Vec<Verdict> {
        if cids.is_empty() {
            return Vec::new();
        }
        let store = self.store.clone();
        let me = *self.me.as_bytes();
        tokio::task::spawn_blocking(move || {
            cids.into_iter()
                .map(|cid| Verdict {
                    holder: me,
                    shard: cid,
                    outcome: match store.get_shard(&cid) {
                        Ok(_) => Outcome::Success,
                        Err(e) => {
                            // Kept, it could never be served; dropped, audits of it say "not
                            // held" and its chunk's caretaker re-creates it elsewhere.
                            warn!("care: own copy of {cid} is bad ({e}); dropping it");
                            if let Err(e) = store.drop_corrupted(&cid) {
                                warn!("care: dropping {cid}: {e}");
                            }
                            Outcome::Failure
                        }
                    },
                })
                .collect()
        })
        .await
        .unwrap_or_default()
    }

    async fn audit_all(
        &self,
        remote: HashMap<EndpointId, Vec<Due>>,
        views: &[View],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> Vec<Verdict> {
        let mut batches = Vec::new();
        for (holder, dues) in remote {
            let addr = live
                .get(&holder)
                .map(PeerInfo::addr)
                .unwrap_or_else(|| recorded_addr(views, &dues, holder));
            for batch in dues.chunks(AUDIT_BATCH_MAX) {
                batches.push((addr.clone(), batch.to_vec()));
            }
        }
        futures_util::stream::iter(batches)
            .map(|(addr, batch)| self.audit_batch(addr, batch))
            .buffer_unordered(AUDITS_IN_FLIGHT)
            .collect::<Vec<_>>()
            .await
            .into_iter()
            .flatten()
            .collect()
    }

    async fn audit_batch(&self, addr: EndpointAddr, batch: Vec<Due>) -> Vec<Verdict> {
        let nonce: [u8; 32] = rand::random();
        let cids: Vec<Cid> = batch.iter().map(|d| d.cid).collect();
        let holder = *addr.id.as_bytes();
        let all = |outcome: Outcome| -> Vec<Verdict> {
            batch
                .iter()
                .map(|d| Verdict {
                    holder,
                    shard: d.cid,
                    outcome,
                })
                .collect()
        };
        let replies = match self.client.audit(&addr, &nonce, &cids, 0).await {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return all(Outcome::Timeout),
            Err(e) if e.is_unreachable() => return all(Outcome::Offline),
            Err(e) => {
                debug!("care: audit of {}: {e}", addr.id.fmt_short());
                return all(Outcome::Unknown);
            }
        };
        let mut verdicts = Vec::with_capacity(batch.len());
        let mut passed = Vec::new();
        for (d, reply) in batch.iter().zip(&replies) {
            let outcome = match judge_audit(&nonce, &d.cid, d.size, reply) {
                AuditVerdict::Passed => {
                    passed.push((d.cid, d.size));
                    Outcome::Success
                }
                other => {
                    info!(
                        "care: {} failed the audit of {}: {other:?}",
                        addr.id.fmt_short(),
                        d.cid
                    );
                    Outcome::Failure
                }
            };
            verdicts.push(Verdict {
                holder,
                shard: d.cid,
                outcome,
            });
        }
        // Two artifacts may share a shard (convergent keys): a receipt names each once.
        passed.sort();
        passed.dedup();
        let bytes: u64 = passed.iter().map(|(_, size)| size).sum();
        let passed: Vec<Cid> = passed.into_iter().map(|(cid, _)| cid).collect();
        if !passed.is_empty() {
            let receipt = Receipt {
                auditor: self.me,
                holder: addr.id,
                nonce,
                time_ms: now_ms(),
                bytes,
                shards: passed,
            };
            match receipt.try_sign(&self.key) {
                Ok(signed) => {
                    if let Err(e) = self.client.put_receipt(&addr, &signed).await {
                        debug!("care: receipt to {}: {e}", addr.id.fmt_short());
                    }
                }
                Err(e) => warn!("care: signing a receipt: {e}"),
            }
        }
        let _ = batch.first().map(|d| d.artifact);
        verdicts
    }

    fn note_misses(&self, verdicts: &[Verdict]) {
        let mut per: HashMap<[u8; 32], bool> = HashMap::new();
        for v in verdicts {
            let missed = matches!(v.outcome, Outcome::Offline | Outcome::Timeout);
            let e = per.entry(v.holder).or_insert(missed);
            *e = *e && missed;
        }
        let mut misses = self.misses.lock().unwrap_or_else(|p| p.into_inner());
        for (holder, missed) in per {
            let Ok(id) = EndpointId::from_bytes(&holder) else {
                continue;
            };
            if missed {
                *misses.entry(id).or_default() += 1;
            } else {
                misses.remove(&id);
            }
        }
    }

    /// Whether shard `cid` on `holder` counts as lost.
    fn lost(&self, cid: &Cid, holder: &EndpointId, live: &HashMap<EndpointId, PeerInfo>) -> bool {
        let last = self
            .store
            .last_audit(cid, holder.as_bytes())
            .ok()
            .flatten()
            .map(|(_, o)| o);
        let me = *holder == self.me;
        policy::shard_lost(HolderSeen {
            failed: last == Some(Outcome::Failure),
            me,
            // What is known of another node only; the node's own copy is judged by its disk.
            missed: if me { 0 } else { self.missed(holder) },
            live: live.contains_key(holder),
            avoided: !me && self.avoided(holder),
        })
    }

    async fn repair_all(
        &self,
        views: &[View],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> (usize, usize) {
        let (mut repaired, mut unrepaired) = (0, 0);
        let mut budget = REPAIRS_PER_ROUND_MAX;
        for v in views {
            let mut record = v.record.clone();
            let mut changes: Vec<(usize, usize, EndpointId)> = Vec::new();
            for (i, chunk) in v.manifest.chunks().iter().enumerate() {
                if budget == 0 {
                    break;
                }
                let holders = chunk_holders(&record, i);
                if self.caretaker(&chunk.shards, &holders, live) != Some(self.me) {
                    continue;
                }
                let lost: Vec<usize> = (0..holders.len())
                    .filter(|&j| self.lost(&chunk.shards[j], &holders[j], live))
                    .collect();
                if !policy::needs_repair(holders.len() - lost.len(), holders.len()) {
                    continue;
                }
                budget -= 1;
                match self.repair_chunk(v, &record, i, &lost, live).await {
                    Ok(placed) if !placed.is_empty() => {
                        repaired += placed.len();
                        for (j, id) in placed {
                            set_holder(&mut record, i, j, id, live);
                            changes.push((i, j, id));
                        }
                    }
                    Ok(_) => unrepaired += 1,
                    Err(e) => {
                        warn!("care: repairing chunk {i} of {}: {e}", v.artifact);
                        unrepaired += 1;
                    }
                }
            }
            if !changes.is_empty()
                && let Err(e) = self.publish_record(v, &changes, live).await
            {
                warn!("care: storing the repair record of {}: {e}", v.artifact);
            }
        }
        (repaired, unrepaired)
    }

    /// Re-creates the `lost` shards of chunk `i` and places them; returns where each went.
    async fn repair_chunk(
        &self,
        v: &View,
        record: &HolderRecord,
        i: usize,
        lost: &[usize],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> Result<Vec<(usize, EndpointId)>, String> {
        let params = v.manifest.params();
        let chunk = &v.manifest.chunks()[i];
        let holders = chunk_holders(record, i);
        // Targets: the repair ranking over live peers, skipping holders of the chunk's shards
        // (those kept and those lost) and avoided peers.
        let candidates: Vec<EndpointId> = live
            .keys()
            .filter(|p| **p != self.me && !self.avoided(p))
            .copied()
            .collect();
        let ranking = policy::repair_targets(&chunk.shards, &candidates, &holders, usize::MAX);
        let mut used = HashSet::new();
        let mut placed = Vec::new();
        // A shard an earlier repair already put on its ranked node (this node's, cut short, or
        // another caretaker's whose record a concurrent one overtook) is only recorded again:
        // asking costs one HAS per candidate instead of k shard fetches and a decode.
        let lost_cids: Vec<Cid> = lost.iter().map(|&j| chunk.shards[j]).collect();
        let answers = futures_util::future::join_all(
            ranking
                .iter()
                .take(lost.len() + RANKING_LOOKAHEAD)
                .filter_map(|t| Some((*t, live.get(t)?.addr())))
                .map(|(t, addr)| {
                    let cids = &lost_cids;
                    async move { (t, self.client.has(&addr, cids).await.unwrap_or_default()) }
                }),
        )
        .await;
        let mut still = Vec::new();
        for (x, &j) in lost.iter().enumerate() {
            let found = answers
                .iter()
                .find(|(t, held)| !used.contains(t) && held.get(x).copied().unwrap_or(false));
            match found {
                Some((t, _)) => {
                    used.insert(*t);
                    placed.push((j, *t));
                }
                None => still.push(j),
            }
        }
        if still.is_empty() {
            return Ok(placed);
        }
        let lost = &still[..];
        let mut slots: Vec<Option<Vec<u8>>> = vec![None; params.n()];
        let mut locations = Vec::new();
        for (j, cid) in chunk.shards.iter().enumerate() {
            if lost.contains(&j) {
                continue;
            }
            if holders[j] == self.me {
                let store = self.store.clone();
                let cid = *cid;
                if let Ok(Ok(bytes)) =
                    tokio::task::spawn_blocking(move || store.get_shard(&cid)).await
                {
                    slots[j] = Some(bytes);
                }
                continue;
            }
            let Some(peer) = live.get(&holders[j]) else {
                continue;
            };
            locations.push(ShardLocation {
                index: j,
                cid: *cid,
                holder: peer.addr(),
            });
        }
        let have = slots.iter().flatten().count();
        let fetch = policy::repair_fetches(params.k(), have);
        if fetch > 0 {
            let got = fetch_any_k(&self.client, locations, fetch, REPAIR_HEDGE)
                .await
                .map_err(|e| e.to_string())?;
            for (j, bytes) in got {
                slots[j] = Some(bytes);
            }
        }
        let len = chunk.sealed_len as usize;
        let want: Vec<(usize, Cid)> = lost.iter().map(|&j| (j, chunk.shards[j])).collect();
        let rebuilt = tokio::task::spawn_blocking(move || rebuild(params, slots, len, &want))
            .await
            .map_err(|e| e.to_string())??;
        for (j, bytes) in rebuilt {
            let cid = chunk.shards[j];
            for target in &ranking {
                if used.contains(target) {
                    continue;
                }
                match self.place_one(v, *target, &cid, &bytes, live).await {
                    Ok(()) => {
                        used.insert(*target);
                        placed.push((j, *target));
                        let _ = self.store.count("repairs_done", 1);
                        let _ = self.store.count("repair_bytes", bytes.len() as u64);
                        info!(
                            "care: repaired shard {j} of chunk {i} of {} onto {}",
                            v.artifact,
                            target.fmt_short()
                        );
                        break;
                    }
                    Err(e) => debug!("care: placing {cid} on {}: {e}", target.fmt_short()),
                }
            }
        }
        Ok(placed)
    }

    async fn place_one(
        &self,
        v: &View,
        target: EndpointId,
        cid: &Cid,
        bytes: &[u8],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> Result<(), String> {
        let addr = live.get(&target).ok_or("not live")?.addr();
        self.client
            .put(&addr, &v.artifact, &v.manifest_bytes)
            .await
            .map_err(|e| e.to_string())?;
        // Without the lease the new holder would keep the shard for as long as this node owns
        // it, past the lease the other holders keep it for: no lease, no placement.
        if let Some(lease) = &v.lease {
            self.client
                .put_lease(&addr, lease)
                .await
                .map_err(|e| format!("passing on the lease: {e}"))?;
        }
        self.client
            .put(&addr, cid, bytes)
            .await
            .map_err(|e| e.to_string())
    }

    /// Stores and spreads a repair record: this round's `changes` (chunk, shard, new holder)
    /// applied to the newest record this node holds *now*, not to the one the round started
    /// from, so that a record another caretaker stored here meanwhile (its repairs of other
    /// chunks) is built on rather than overtaken. Two caretakers publishing at the same instant
    /// can still overtake each other; the next round then finds the overtaken shards on their
    /// ranked nodes with one HAS and records them again.
    async fn publish_record(
        &self,
        v: &View,
        changes: &[(usize, usize, EndpointId)],
        live: &HashMap<EndpointId, PeerInfo>,
    ) -> Result<(), String> {
        let store = self.store.clone();
        let artifact = v.artifact;
        let newest = tokio::task::spawn_blocking(move || store.get_repair_record(&artifact))
            .await
            .ok()
            .and_then(Result::ok)
            .flatten()
            .and_then(|bytes| {
                let r = HolderRecord::verify(&bytes).ok()?.record;
                (r.version > v.record.version && fits(&r, &v.manifest)).then_some((r, bytes))
            });
        let mut chain = v.chain.clone();
        let mut record = match newest {
            Some((r, bytes)) => {
                chain.push(bytes);
                r
            }
            None => v.record.clone(),
        };
        for &(i, j, id) in changes {
            set_holder(&mut record, i, j, id, live);
        }
        record.version = record_version_now().max(record.version + 1);
        let signed = record.try_sign(&self.key).map_err(|e| e.to_string())?;
        let store = self.store.clone();
        let (artifact, bytes) = (v.artifact, signed.clone());
        let signer_named = v.manifest.record_signers().contains(self.me.as_bytes());
        tokio::task::spawn_blocking(move || {
            if signer_named {
                store.put_record(&artifact, &bytes)
            } else {
                store.put_repair_record(&artifact, &bytes)
            }
        })
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
        let live = self.live();
        let mut targets: Vec<EndpointAddr> = record
            .nodes
            .iter()
            .filter(|(id, _)| *id != self.me)
            .filter_map(|(id, _)| live.get(id).map(PeerInfo::addr))
            .collect();
        // The artifact's record nodes too: readers ask them first (the `records` module).
        let mut everyone: Vec<EndpointAddr> = live.values().map(PeerInfo::addr).collect();
        everyone.push(EndpointAddr::new(self.me));
        for a in crate::records::record_nodes(&v.artifact, &everyone)
            .into_iter()
            .take(RECORD_REPLICAS)
        {
            if a.id != self.me && !targets.iter().any(|t| t.id == a.id) {
                targets.push(a);
            }
        }
        let results = futures_util::future::join_all(targets.iter().map(|t| async {
            // What the new record builds on first (refusals of records already held are
            // expected and harmless), then the new record.
            for earlier in &chain {
                let _ = self.client.put_record(t, earlier).await;
            }
            self.client.put_record(t, &signed).await
        }))
        .await;
        let stored = results.iter().filter(|r| r.is_ok()).count();
        info!(
            "care: repair record of {} (version {}) stored on {stored} of {} holders and record \
             nodes",
            v.artifact,
            record.version,
            targets.len()
        );
        Ok(())
    }
}

/// The shards that some view's record places on `me`.
fn placed_on(views: &[View], me: EndpointId) -> HashSet<Cid> {
    let mut out = HashSet::new();
    for v in views {
        for (i, chunk) in v.manifest.chunks().iter().enumerate() {
            for (cid, holder) in chunk.shards.iter().zip(chunk_holders(&v.record, i)) {
                if holder == me {
                    out.insert(*cid);
                }
            }
        }
    }
    out
}

/// Whether `record` has the shape of `manifest` (chunks, k, m) and fits its nodes.
pub(crate) fn fits(record: &HolderRecord, manifest: &Manifest) -> bool {
    let params = manifest.params();
    record.k as usize == params.k()
        && record.m as usize == params.m()
        && record.holders.len() == manifest.chunks().len()
        && record
            .holders
            .iter()
            .all(|h| h.len() == params.n() && h.iter().all(|&x| (x as usize) < record.nodes.len()))
}

pub(crate) fn chunk_holders(record: &HolderRecord, i: usize) -> Vec<EndpointId> {
    record.holders[i]
        .iter()
        .map(|&x| record.nodes[x as usize].0)
        .collect()
}

fn set_holder(
    record: &mut HolderRecord,
    i: usize,
    j: usize,
    id: EndpointId,
    live: &HashMap<EndpointId, PeerInfo>,
) {
    let index = match record.nodes.iter().position(|(n, _)| *n == id) {
        Some(x) => x,
        None => {
            let addrs = live.get(&id).map(|p| p.addrs.clone()).unwrap_or_default();
            record.nodes.push((id, addrs));
            record.nodes.len() - 1
        }
    };
    record.holders[i][j] = index as u16;
}

fn recorded_addr(views: &[View], dues: &[Due], holder: EndpointId) -> EndpointAddr {
    let addrs = dues
        .first()
        .and_then(|d| {
            views[d.artifact]
                .record
                .nodes
                .iter()
                .find(|(id, _)| *id == holder)
        })
        .map(|(_, a)| a.clone())
        .unwrap_or_default();
    PeerAddr { id: holder, addrs }.endpoint_addr()
}

/// Decodes a chunk from any k of `slots` and re-encodes the `want`ed shards, each checked
/// against the CID the manifest names.
pub(crate) fn rebuild(
    params: Params,
    slots: Vec<Option<Vec<u8>>>,
    len: usize,
    want: &[(usize, Cid)],
) -> Result<Vec<(usize, Vec<u8>)>, String> {
    let codec = Codec::new(params);
    let sealed = codec.decode(slots, len).map_err(|e| e.to_string())?;
    let mut all = codec.encode(&sealed);
    let mut out = Vec::new();
    for &(j, cid) in want {
        let shard = std::mem::take(&mut all[j]);
        if shard_cid(&shard) != cid {
            return Err(format!(
                "re-created shard {j} does not hash to {cid}: the surviving shards disagree"
            ));
        }
        out.push((j, shard));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rebuild_recreates_exactly_the_lost_shards_and_refuses_wrong_ones() {
        let params = Params::new(3, 2).unwrap();
        let codec = Codec::new(params);
        let sealed: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let shards = codec.encode(&sealed);
        let cids: Vec<Cid> = shards.iter().map(|s| shard_cid(s)).collect();
        let mut slots: Vec<Option<Vec<u8>>> = shards.iter().cloned().map(Some).collect();
        slots[0] = None;
        slots[3] = None;
        let got = rebuild(
            params,
            slots.clone(),
            sealed.len(),
            &[(0, cids[0]), (3, cids[3])],
        )
        .unwrap();
        assert_eq!(got, vec![(0, shards[0].clone()), (3, shards[3].clone())]);
        // A survivor with wrong bytes (that somehow passed as its shard) yields shards that do
        // not match the manifest: nothing is placed.
        slots[1].as_mut().unwrap()[0] ^= 1;
        assert!(rebuild(params, slots, sealed.len(), &[(0, cids[0])]).is_err());
    }

    #[test]
    fn repair_ranking_depends_only_on_the_chunk_and_the_set() {
        let peers: Vec<EndpointId> = (1..=9u8)
            .map(|i| SecretKey::from_bytes(&[i; 32]).public())
            .collect();
        let shards = vec![shard_cid(b"one"), shard_cid(b"two")];
        let a = repair_ranking(&shards, &peers);
        let mut reversed = peers.clone();
        reversed.reverse();
        assert_eq!(a, repair_ranking(&shards, &reversed));
        assert_eq!(a.len(), peers.len());
        // Removing a peer keeps everyone else's order.
        let without: Vec<EndpointId> = peers.iter().filter(|p| **p != a[0]).copied().collect();
        assert_eq!(repair_ranking(&shards, &without), a[1..].to_vec());
    }
}

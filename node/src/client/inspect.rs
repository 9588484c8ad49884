//! What a publisher sees of its artifact on the network (`cairn status`) and how it repairs it
//! now (`cairn repair`): both audit every holder themselves rather than trust anyone's report.

use std::collections::{BTreeMap, HashMap, HashSet};

use cairn_artifact::Cid;
use cairn_swarm::{
    AUDIT_BATCH_MAX, AuditVerdict, EndpointAddr, EndpointId, ShardLocation, fetch_any_k,
    judge_audit, record_version_now,
};
use futures_util::StreamExt;
use futures_util::future::join_all;
use serde::Serialize;

use super::{Located, Network};
use crate::Error;
use crate::care::{AUDITS_IN_FLIGHT, chunk_holders, rebuild, repair_ranking};

/// One holder as `cairn status` shows it.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct HolderHealth {
    /// Endpoint id.
    pub id: String,
    /// Shards the records place on it.
    pub shards: usize,
    /// Of which it proved just now.
    pub passed: usize,
    /// Of which it failed to prove (wrong answer, not held, corrupted).
    pub failed: usize,
    /// Whether it could be reached (`offline`, `timeout`, `unknown` otherwise).
    pub reached: String,
    /// Whether the live peer list names it.
    pub listed: bool,
}

/// An artifact's health, from audits made just now.
#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ArtifactHealth {
    /// The artifact (manifest CID).
    pub artifact: String,
    /// Data shards per chunk.
    pub k: usize,
    /// Shards per chunk.
    pub n: usize,
    /// Version of the record used.
    pub record_version: u64,
    /// Whether a repair record is in use (the network repaired it since it was published).
    pub repaired: bool,
    /// Shards moved by repairs, relative to the publisher's record.
    pub shards_moved: usize,
    /// Verified shards per chunk.
    pub verified: Vec<usize>,
    /// Fewest verified shards of any chunk.
    pub min: usize,
    /// Chunks per count of verified shards.
    pub histogram: BTreeMap<usize, usize>,
    /// Chunks with fewer than k verified shards (unreadable now).
    pub unreadable: Vec<usize>,
    /// Every holder the records name.
    pub holders: Vec<HolderHealth>,
}

/// What `cairn repair` did.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct RepairReport {
    /// Chunks that had fewer than n verified shards.
    pub chunks: usize,
    /// Shards re-created and placed.
    pub placed: usize,
    /// Chunks that could not be brought back to n (too few survivors or targets).
    pub unrepaired: usize,
    /// Whether a new holder record was stored (only a key the manifest names can sign one).
    pub record_stored: bool,
}

/// One audit batch: the holder, the (chunk, index) pairs asked, and per pair whether it was
/// proved (or why the batch got no answer).
type BatchVerdicts = (EndpointId, Vec<(usize, usize)>, Result<Vec<bool>, String>);

/// The verdict on every (chunk, shard index) audited: passed or not, and who holds it.
struct Audited {
    located: Located,
    /// (chunk, index) -> holder that proved it.
    good: HashMap<(usize, usize), EndpointId>,
    holders: Vec<HolderHealth>,
}

impl Network {
    /// Audits every shard of `cid` on the holder its records name (and, where that one fails,
    /// on the publisher's holder) and reports the artifact's health.
    pub async fn inspect(&self, cid: &Cid) -> Result<ArtifactHealth, Error> {
        let audited = self.audit_artifact(cid).await?;
        let located = &audited.located;
        let params = located.manifest.params();
        let verified: Vec<usize> = (0..located.manifest.chunks().len())
            .map(|i| {
                (0..params.n())
                    .filter(|j| audited.good.contains_key(&(i, *j)))
                    .count()
            })
            .collect();
        let mut histogram = BTreeMap::new();
        for v in &verified {
            *histogram.entry(*v).or_default() += 1;
        }
        let shards_moved = located.alternate.as_ref().map_or(0, |primary| {
            (0..located.record.holders.len())
                .map(|i| {
                    let (now, then) =
                        (chunk_holders(&located.record, i), chunk_holders(primary, i));
                    now.iter().zip(&then).filter(|(a, b)| a != b).count()
                })
                .sum()
        });
        Ok(ArtifactHealth {
            artifact: cid.to_string(),
            k: params.k(),
            n: params.n(),
            record_version: located.record.version,
            repaired: located.alternate.is_some(),
            shards_moved,
            min: verified.iter().copied().min().unwrap_or(params.n()),
            unreadable: verified
                .iter()
                .enumerate()
                .filter(|(_, v)| **v < params.k())
                .map(|(i, _)| i)
                .collect(),
            verified,
            histogram,
            holders: audited.holders,
        })
    }

    /// Repairs `cid` now: every chunk with fewer than n verified shards gets its missing shards
    /// re-created from any k and placed on the next peers of its repair ranking. A new holder
    /// record is signed and stored if this client's key is one the manifest names (the
    /// publisher's); otherwise the shards are placed where readers look for them (the repair
    /// ranking) and the nodes' caretakers record them.
    pub async fn repair(&self, cid: &Cid) -> Result<RepairReport, Error> {
        let audited = self.audit_artifact(cid).await?;
        let located = &audited.located;
        let manifest = &located.manifest;
        let params = manifest.params();
        let (_, manifest_bytes) = manifest.encode();
        let peers = self.peers();
        let live: HashMap<EndpointId, EndpointAddr> = peers
            .iter()
            .map(|p| (p.addr.id, p.addr.endpoint_addr()))
            .collect();
        let mut record = located.record.clone();
        let mut report = RepairReport::default();
        for (i, chunk) in manifest.chunks().iter().enumerate() {
            let lost: Vec<usize> = (0..params.n())
                .filter(|j| !audited.good.contains_key(&(i, *j)))
                .collect();
            if lost.is_empty() {
                continue;
            }
            report.chunks += 1;
            let locations: Vec<ShardLocation> = (0..params.n())
                .filter_map(|j| {
                    let holder = audited.good.get(&(i, j))?;
                    Some(ShardLocation {
                        index: j,
                        cid: chunk.shards[j],
                        holder: live.get(holder)?.clone(),
                    })
                })
                .collect();
            let Ok(got) =
                fetch_any_k(&self.client, locations, params.k(), super::HEDGE_AFTER).await
            else {
                report.unrepaired += 1;
                continue;
            };
            let mut slots = vec![None; params.n()];
            for (j, b) in got {
                slots[j] = Some(b);
            }
            let want: Vec<(usize, Cid)> = lost.iter().map(|&j| (j, chunk.shards[j])).collect();
            let len = chunk.sealed_len as usize;
            let rebuilt = tokio::task::spawn_blocking(move || rebuild(params, slots, len, &want))
                .await
                .map_err(|e| Error::Node(e.to_string()))?
                .map_err(Error::Node)?;
            let busy: HashSet<EndpointId> = audited
                .good
                .iter()
                .filter(|((c, _), _)| *c == i)
                .map(|(_, id)| *id)
                .collect();
            let candidates: Vec<EndpointId> = live
                .keys()
                .filter(|p| !busy.contains(*p))
                .copied()
                .collect();
            let ranking = repair_ranking(&chunk.shards, &candidates);
            let mut used = HashSet::new();
            let mut placed_all = true;
            for (j, bytes) in rebuilt {
                let mut placed = false;
                for target in ranking.iter().filter(|t| !used.contains(*t)) {
                    let addr = &live[target];
                    if self.client.put(addr, cid, &manifest_bytes).await.is_ok()
                        && self
                            .client
                            .put(addr, &chunk.shards[j], &bytes)
                            .await
                            .is_ok()
                    {
                        used.insert(*target);
                        let addrs = peers
                            .iter()
                            .find(|p| p.addr.id == *target)
                            .map(|p| p.addr.addrs.clone())
                            .unwrap_or_default();
                        record.move_shard(i, j, *target, addrs);
                        report.placed += 1;
                        placed = true;
                        break;
                    }
                }
                placed_all &= placed;
            }
            if !placed_all {
                report.unrepaired += 1;
            }
        }
        if report.placed > 0
            && manifest
                .record_signers()
                .contains(self.key.public().as_bytes())
        {
            record.version = record_version_now().max(located.record.version + 1);
            let signed = record.try_sign(&self.key)?;
            let targets: Vec<EndpointAddr> = record
                .nodes
                .iter()
                .filter_map(|(id, _)| live.get(id).cloned())
                .collect();
            let stored = join_all(targets.iter().map(|t| self.client.put_record(t, &signed)))
                .await
                .into_iter()
                .filter(Result::is_ok)
                .count();
            report.record_stored = stored > 0;
        }
        Ok(report)
    }

    async fn audit_artifact(&self, cid: &Cid) -> Result<Audited, Error> {
        let located = self.locate(cid).await?;
        let manifest = &located.manifest;
        let params = manifest.params();
        let listed: HashSet<EndpointId> = self.peers().iter().map(|p| p.addr.id).collect();
        // Every (chunk, index) on its holder in the record used, and on the publisher's holder
        // where that differs.
        let mut asks: HashMap<EndpointId, Vec<(usize, usize)>> = HashMap::new();
        let mut records = vec![&located.record];
        records.extend(located.alternate.as_ref());
        for r in &records {
            for i in 0..manifest.chunks().len() {
                for (j, holder) in chunk_holders(r, i).into_iter().enumerate() {
                    let list = asks.entry(holder).or_default();
                    if !list.contains(&(i, j)) {
                        list.push((i, j));
                    }
                }
            }
        }
        let addrs: HashMap<EndpointId, EndpointAddr> = records
            .iter()
            .flat_map(|r| r.nodes.iter().zip(self.holder_addrs(r)))
            .map(|((id, _), a)| (*id, a))
            .collect();
        let mut batches = Vec::new();
        for (holder, shards) in &asks {
            for batch in shards.chunks(AUDIT_BATCH_MAX) {
                batches.push((*holder, batch.to_vec()));
            }
        }
        let results: Vec<BatchVerdicts> = futures_util::stream::iter(batches)
            .map(|(holder, batch)| {
                let addr = addrs[&holder].clone();
                async move {
                    let nonce: [u8; 32] = rand::random();
                    let cids: Vec<Cid> = batch
                        .iter()
                        .map(|&(i, j)| manifest.chunks()[i].shards[j])
                        .collect();
                    let verdicts = match self.client.audit(&addr, &nonce, &cids, 0).await {
                        Ok(replies) => Ok(batch
                            .iter()
                            .zip(&cids)
                            .zip(&replies)
                            .map(|((&(i, _), c), r)| {
                                let size = params
                                    .shard_len(manifest.chunks()[i].sealed_len as usize)
                                    as u64;
                                judge_audit(&nonce, c, size, r) == AuditVerdict::Passed
                            })
                            .collect()),
                        Err(e) if e.is_timeout() => Err("timeout".to_string()),
                        Err(e) if e.is_unreachable() => Err("offline".to_string()),
                        Err(e) => Err(format!("unknown: {e}")),
                    };
                    (holder, batch, verdicts)
                }
            })
            .buffer_unordered(AUDITS_IN_FLIGHT)
            .collect()
            .await;
        let mut good = HashMap::new();
        let mut health: BTreeMap<EndpointId, HolderHealth> = BTreeMap::new();
        for (holder, batch, verdicts) in results {
            let h = health.entry(holder).or_insert_with(|| HolderHealth {
                id: holder.to_string(),
                shards: 0,
                passed: 0,
                failed: 0,
                reached: "yes".into(),
                listed: listed.contains(&holder),
            });
            h.shards += batch.len();
            match verdicts {
                Ok(v) => {
                    for (&(i, j), ok) in batch.iter().zip(v) {
                        if ok {
                            h.passed += 1;
                            good.entry((i, j)).or_insert(holder);
                        } else {
                            h.failed += 1;
                        }
                    }
                }
                Err(why) => h.reached = why,
            }
        }
        Ok(Audited {
            located,
            good,
            holders: health.into_values().collect(),
        })
    }
}

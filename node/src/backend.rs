//! The store as a [`ShardBackend`], with group commit.
//!
//! Every PUT from every peer goes through one bounded queue to one committer thread, which takes
//! whatever is queued (up to [`GROUP_SHARDS_MAX`] shards or [`GROUP_BYTES_MAX`] bytes) and stores
//! it with one `put_shards_owned` call: one filesystem sync and one redb commit for the group
//! instead of one per shard. While a group commits, the next one fills, so the cost of a sync is
//! shared by everything that arrived meanwhile.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use cairn_artifact::{CODEC_DAG_CBOR, Cid, Error as StoreError};
use cairn_store::Store;
use cairn_swarm::{
    BackendError, NAME_REVISIONS_MAX, NameKind, ShardBackend, SignedLease, SignedName,
    SignedReceipt,
};

/// Most shards committed together.
pub const GROUP_SHARDS_MAX: usize = 64;
/// Most bytes committed together.
pub const GROUP_BYTES_MAX: usize = 64 << 20;
/// PUTs waiting for the committer; a full queue makes PUT handlers wait (bounded by the peer
/// layer's request timeout), which pushes back on publishers.
const QUEUE_MAX: usize = 256;

struct PutReq {
    cid: Cid,
    data: Vec<u8>,
    owner: [u8; 32],
    done: SyncSender<Result<(), BackendError>>,
}

/// Work a node did for others since it started, counted as it happens (no write per event);
/// the daemon adds it to the store's counters (`cairn_store::Counters`) now and then.
#[derive(Debug, Default)]
pub struct LiveCounters {
    /// Shards proved in audits answered.
    pub audits_answered: AtomicU64,
    /// Shards asked in audits that this node could not prove (not held or corrupted).
    pub audits_failed: AtomicU64,
    /// Shard bytes served to readers.
    pub bytes_served: AtomicU64,
    /// Receipts received and kept.
    pub receipts: AtomicU64,
}

impl LiveCounters {
    /// The counts not yet taken.
    pub fn peek(&self) -> [(&'static str, u64); 3] {
        [
            (
                "audits_answered",
                self.audits_answered.load(Ordering::Relaxed),
            ),
            ("audits_failed", self.audits_failed.load(Ordering::Relaxed)),
            ("bytes_served", self.bytes_served.load(Ordering::Relaxed)),
        ]
    }

    /// Takes the counts since the last call (for adding to the store's counters).
    pub fn take(&self) -> [(&'static str, u64); 3] {
        [
            (
                "audits_answered",
                self.audits_answered.swap(0, Ordering::Relaxed),
            ),
            (
                "audits_failed",
                self.audits_failed.swap(0, Ordering::Relaxed),
            ),
            ("bytes_served", self.bytes_served.swap(0, Ordering::Relaxed)),
        ]
    }
}

/// A [`Store`] served to peers.
pub struct StoreBackend {
    store: Arc<Store>,
    queue: SyncSender<PutReq>,
    counters: Arc<LiveCounters>,
}

impl std::fmt::Debug for StoreBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreBackend")
            .field("dir", &self.store.dir())
            .finish()
    }
}

fn backend_err(e: StoreError) -> BackendError {
    match e {
        StoreError::QuotaExceeded { needed, free, .. } => BackendError::QuotaFull { needed, free },
        StoreError::Corrupted { cid, reason } => {
            BackendError::Corrupted(format!("{cid}: {reason}"))
        }
        other => BackendError::Io(other.to_string()),
    }
}

impl StoreBackend {
    /// Serves `store`; starts the committer thread, which ends when the backend is dropped.
    pub fn new(store: Arc<Store>) -> Self {
        let (queue, rx) = sync_channel(QUEUE_MAX);
        let s = store.clone();
        std::thread::Builder::new()
            .name("cairn-commit".into())
            .spawn(move || committer(s, rx))
            .expect("spawning a thread succeeds");
        Self {
            store,
            queue,
            counters: Arc::default(),
        }
    }

    /// The store served.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// What it did for peers since it started (see [`LiveCounters::take`]).
    pub fn counters(&self) -> &Arc<LiveCounters> {
        &self.counters
    }
}

fn committer(store: Arc<Store>, rx: Receiver<PutReq>) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut bytes = group[0].data.len();
        while group.len() < GROUP_SHARDS_MAX && bytes < GROUP_BYTES_MAX {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += r.data.len();
                    group.push(r);
                }
                Err(_) => break,
            }
        }
        // Most groups have one owner (one publisher); commit each owner's part together.
        group.sort_by_key(|r| r.owner);
        for part in group.chunk_by(|a, b| a.owner == b.owner) {
            let batch: Vec<(Cid, &[u8])> =
                part.iter().map(|r| (r.cid, r.data.as_slice())).collect();
            match store.put_shards_owned(&batch, Some(part[0].owner)) {
                Ok(_) => part.iter().for_each(|r| {
                    let _ = r.done.send(Ok(()));
                }),
                // The group as a whole did not fit or failed: retry one by one so each PUT gets
                // its own answer (some may fit).
                Err(_) if part.len() > 1 => {
                    for r in part {
                        let res = store
                            .put_shards_owned(&[(r.cid, &r.data)], Some(r.owner))
                            .map(|_| ())
                            .map_err(backend_err);
                        let _ = r.done.send(res);
                    }
                }
                Err(e) => {
                    let _ = part[0].done.send(Err(backend_err(e)));
                }
            }
        }
    }
}

impl ShardBackend for StoreBackend {
    fn put(&self, cid: &Cid, data: &[u8], owner: [u8; 32]) -> Result<(), BackendError> {
        if cid.codec() == CODEC_DAG_CBOR {
            return self
                .store
                .put_manifest(cid, data, owner)
                .map_err(|e| match e {
                    StoreError::BadManifest { reason, .. } => {
                        BackendError::Corrupted(format!("manifest {cid} refused: {reason}"))
                    }
                    other => backend_err(other),
                });
        }
        let (done, wait) = sync_channel(1);
        let req = PutReq {
            cid: *cid,
            data: data.to_vec(),
            owner,
            done,
        };
        match self.queue.try_send(req) {
            Ok(()) => {}
            Err(TrySendError::Full(req)) => {
                self.queue
                    .send(req)
                    .map_err(|_| BackendError::Io("the committer has stopped".into()))?;
            }
            Err(TrySendError::Disconnected(_)) => {
                return Err(BackendError::Io("the committer has stopped".into()));
            }
        }
        wait.recv()
            .map_err(|_| BackendError::Io("the committer has stopped".into()))?
    }

    fn get(&self, cid: &Cid, range: Option<Range<u64>>) -> Result<Option<Vec<u8>>, BackendError> {
        let data = if cid.codec() == CODEC_DAG_CBOR {
            match self.store.get_manifest(cid) {
                Ok(b) => b,
                Err(StoreError::ManifestNotFound(_)) => return Ok(None),
                Err(e) => return Err(backend_err(e)),
            }
        } else {
            match self.store.get_shard(cid) {
                Ok(b) => {
                    let served = range.as_ref().map_or(b.len() as u64, |r| {
                        r.end.min(b.len() as u64).saturating_sub(r.start)
                    });
                    self.counters
                        .bytes_served
                        .fetch_add(served, Ordering::Relaxed);
                    b
                }
                Err(StoreError::ShardNotFound(_)) => return Ok(None),
                Err(e) => return Err(backend_err(e)),
            }
        };
        Ok(Some(match range {
            None => data,
            Some(r) => {
                let end = (r.end.min(data.len() as u64)) as usize;
                let start = (r.start as usize).min(end);
                data[start..end].to_vec()
            }
        }))
    }

    /// `Store::get_shard` and `Store::get_manifest` hash what they read against the CID.
    fn verifies_reads(&self) -> bool {
        true
    }

    fn has(&self, cid: &Cid) -> bool {
        if cid.codec() == CODEC_DAG_CBOR {
            self.store.has_manifest(cid).unwrap_or(false)
        } else {
            self.store.has_shard(cid).unwrap_or(false)
        }
    }

    fn delete(&self, cid: &Cid, requester: [u8; 32]) -> Result<bool, BackendError> {
        if self.store.release(cid, requester).map_err(backend_err)? {
            return Ok(true);
        }
        if self.has(cid) {
            Err(BackendError::NotOwner)
        } else {
            Ok(false)
        }
    }

    fn free_bytes(&self) -> u64 {
        self.store
            .stat()
            .map(|s| s.quota.saturating_sub(s.used))
            .unwrap_or(0)
    }

    /// The store keeps a record only beside its manifest, checked in the same transaction, so a
    /// manifest collected between the server's check and this call still refuses it.
    fn put_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.store
            .put_record(artifact, signed)
            .map_err(|e| match e {
                StoreError::ManifestNotFound(_) => BackendError::UnknownArtifact,
                other => backend_err(other),
            })
    }

    fn get_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        self.store.get_record(artifact).map_err(backend_err)
    }

    fn put_repair_record(&self, artifact: &Cid, signed: &[u8]) -> Result<(), BackendError> {
        self.store
            .put_repair_record(artifact, signed)
            .map_err(|e| match e {
                StoreError::ManifestNotFound(_) => BackendError::UnknownArtifact,
                other => backend_err(other),
            })
    }

    fn get_repair_record(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        self.store.get_repair_record(artifact).map_err(backend_err)
    }

    /// Reads only the challenged groups and the outboard hashes that prove them
    /// (`Store::audit_answer`): an audit costs about 64 KiB of disk reads whatever the shard's
    /// size, so audits from anyone stay cheap; a damaged group is reported corrupted.
    fn audit(&self, cid: &Cid, nonce: &[u8; 32]) -> Result<Option<Vec<u8>>, BackendError> {
        let answer = match self.store.audit_answer(cid, nonce) {
            Ok(answer) => Ok(Some(answer)),
            Err(StoreError::ShardNotFound(_)) => Ok(None),
            Err(e) => Err(backend_err(e)),
        };
        let counter = match &answer {
            Ok(Some(_)) => &self.counters.audits_answered,
            _ => &self.counters.audits_failed,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        answer
    }

    /// The store keeps the later of the stored lease and this one, beside the manifest
    /// (checked in the same transaction, like records).
    fn put_lease(&self, artifact: &Cid, signed: &SignedLease) -> Result<(), BackendError> {
        self.store
            .put_lease(artifact, signed.lease.until_ms, &signed.bytes)
            .map(|_| ())
            .map_err(|e| match e {
                StoreError::ManifestNotFound(_) => BackendError::UnknownArtifact,
                other => backend_err(other),
            })
    }

    fn get_lease(&self, artifact: &Cid) -> Result<Option<Vec<u8>>, BackendError> {
        self.store.get_lease(artifact).map_err(backend_err)
    }

    fn org_claim(&self, org: &str) -> Result<Option<[u8; 32]>, BackendError> {
        self.store.org_claim(org).map_err(backend_err)
    }

    fn get_names(
        &self,
        org: &str,
        kind: NameKind,
        name: &str,
    ) -> Result<Vec<Vec<u8>>, BackendError> {
        self.store
            .net_names(org, crate::names::store_kind(kind), name)
            .map_err(backend_err)
    }

    fn put_name(&self, signed: &SignedName) -> Result<(), BackendError> {
        let r = &signed.record;
        self.store
            .put_net_name(
                (
                    &r.org_lowercase(),
                    crate::names::store_kind(r.kind),
                    &r.name,
                ),
                r.org_key.as_bytes(),
                r.version,
                &signed.bytes,
                NAME_REVISIONS_MAX,
            )
            .map_err(backend_err)
    }

    fn put_receipt(&self, receipt: &SignedReceipt) -> Result<(), BackendError> {
        let r = &receipt.receipt;
        self.store
            .add_receipt(r.time_ms, r.auditor.as_bytes(), &r.nonce, &receipt.bytes)
            .map_err(backend_err)?;
        self.counters.receipts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_artifact::shard_cid;
    use cairn_store::StoreConfig;

    #[test]
    fn concurrent_puts_are_grouped_and_all_answered() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(d.path(), StoreConfig::new(1 << 30)).unwrap());
        let b = Arc::new(StoreBackend::new(store.clone()));
        let handles: Vec<_> = (0..32u8)
            .map(|i| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let data = vec![i; 50_000];
                    b.put(&shard_cid(&data), &data, [i % 2; 32]).unwrap();
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        assert_eq!(store.stat().unwrap().shards, 32);
        let data = vec![7u8; 50_000];
        let c = shard_cid(&data);
        assert_eq!(b.get(&c, Some(10..20)).unwrap().unwrap(), vec![7u8; 10]);
        assert_eq!(b.get(&c, Some(49_990..60_000)).unwrap().unwrap().len(), 10);
        assert!(
            matches!(b.delete(&c, [0; 32]), Err(BackendError::NotOwner)),
            "7 was put by owner 1"
        );
        assert!(b.delete(&c, [1; 32]).unwrap());
        assert_eq!(b.get(&shard_cid(b"none"), None).unwrap(), None);
    }

    /// A peer floods a node with validly signed records of artifacts the node holds nothing of:
    /// every one is refused, none takes quota, and a real shard still fits. A record of an
    /// artifact whose manifest the node does hold is kept, and goes when gc collects the
    /// manifest. Real endpoints on loopback, the real server over the real store.
    #[tokio::test]
    async fn a_record_flood_is_refused_and_takes_no_quota() {
        use cairn_swarm::{
            Error as SwarmError, HolderRecord, Router, SHARD_ALPN, ShardClient, ShardConfig,
            ShardServer, endpoint_offline, generate_secret_key, manifest_cid,
        };
        use std::time::Duration;

        let d = tempfile::tempdir().unwrap();
        let quota = 256 * 1024;
        let store = Arc::new(Store::open(d.path(), StoreConfig::new(quota)).unwrap());
        let backend = Arc::new(StoreBackend::new(store.clone()));
        let loopback = "127.0.0.1:0".parse().unwrap();
        let node = endpoint_offline(generate_secret_key(), loopback)
            .await
            .unwrap();
        let addr = cairn_swarm::EndpointAddr::new(node.endpoint.id())
            .with_ip_addr(node.endpoint.bound_sockets()[0]);
        let router = Router::builder(node.endpoint.clone())
            .accept(
                SHARD_ALPN,
                ShardServer::new(backend, ShardConfig::default()),
            )
            .spawn();
        let key = generate_secret_key();
        let peer = endpoint_offline(key.clone(), loopback).await.unwrap();
        let client = ShardClient::new(peer.endpoint.clone(), ShardConfig::default());
        let step = Duration::from_secs(30);

        // Each record is about 1.1 KiB (eight holders, 100 chunks): 400 of them would be
        // 440 KiB, well over the quota, were they kept.
        let record = |artifact| HolderRecord {
            artifact,
            version: 1,
            k: 3,
            m: 2,
            reduced_durability: false,
            nodes: vec![(key.public(), peer.endpoint.bound_sockets())],
            holders: vec![vec![0; 5]; 100],
        };
        for i in 0..400u32 {
            let signed = record(manifest_cid(&i.to_be_bytes())).sign(&key);
            let result = tokio::time::timeout(step, client.put_record(&addr, &signed))
                .await
                .unwrap();
            assert!(
                matches!(
                    &result,
                    Err(SwarmError::Rejected {
                        status: "UNKNOWN_ARTIFACT",
                        ..
                    })
                ),
                "record {i}: {result:?}"
            );
        }
        assert_eq!(store.stat().unwrap().used, 0, "a refused record took quota");
        let shard = vec![9u8; 200_000];
        tokio::time::timeout(step, client.put(&addr, &shard_cid(&shard), &shard))
            .await
            .unwrap()
            .unwrap();

        // A record of an artifact whose manifest the node holds is kept, and counted.
        let private = cairn_artifact::PrivatePart {
            format: 1,
            name: None,
            files: Vec::new(),
            chunks: Vec::new(),
        };
        let (artifact, manifest) = cairn_artifact::Manifest::seal(
            cairn_erasure::Params::new(3, 2).unwrap(),
            Vec::new(),
            &private,
            &cairn_encryption::ArtifactKey::random(),
        )
        .with_record_signers(&[*key.public().as_bytes()])
        .unwrap()
        .encode();
        tokio::time::timeout(step, client.put(&addr, &artifact, &manifest))
            .await
            .unwrap()
            .unwrap();
        let mut kept = record(artifact);
        kept.holders.clear();
        let signed = kept.sign(&key);
        let before = store.stat().unwrap().used;
        tokio::time::timeout(step, client.put_record(&addr, &signed))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.stat().unwrap().used, before + signed.len() as u64);
        // Once its publisher releases the manifest, gc collects manifest and record together.
        assert!(store.release(&artifact, *key.public().as_bytes()).unwrap());
        let r = store.gc().unwrap();
        assert_eq!((r.manifests, r.records), (1, 1));
        assert_eq!(store.get_record(&artifact).unwrap(), None);

        client.close().await;
        peer.endpoint.close().await;
        router.shutdown().await.unwrap();
    }

    /// A publisher's lease goes over the real server into the real store: kept, never
    /// shortened, read back; once it has ended (no grace here), gc lets the manifest and its
    /// shards go although the publisher never released them.
    #[tokio::test]
    async fn a_lease_reaches_the_store_and_ends_the_artifact() {
        use cairn_swarm::{
            Lease, Router, SHARD_ALPN, ShardClient, ShardConfig, ShardServer, endpoint_offline,
            generate_secret_key,
        };
        use std::time::Duration;

        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(
            Store::open(
                d.path(),
                StoreConfig {
                    quota: 1 << 30,
                    lease_grace: Duration::ZERO,
                },
            )
            .unwrap(),
        );
        let backend = Arc::new(StoreBackend::new(store.clone()));
        let loopback = "127.0.0.1:0".parse().unwrap();
        let node = endpoint_offline(generate_secret_key(), loopback)
            .await
            .unwrap();
        let addr = cairn_swarm::EndpointAddr::new(node.endpoint.id())
            .with_ip_addr(node.endpoint.bound_sockets()[0]);
        let router = Router::builder(node.endpoint.clone())
            .accept(
                SHARD_ALPN,
                ShardServer::new(backend, ShardConfig::default()),
            )
            .spawn();
        let key = generate_secret_key();
        let peer = endpoint_offline(key.clone(), loopback).await.unwrap();
        let client = ShardClient::new(peer.endpoint.clone(), ShardConfig::default());
        let step = Duration::from_secs(30);

        let shards: Vec<Vec<u8>> = (0..5u8).map(|j| vec![j; 1000]).collect();
        let private = cairn_artifact::PrivatePart {
            format: 1,
            name: None,
            files: Vec::new(),
            chunks: Vec::new(),
        };
        let (artifact, manifest) = cairn_artifact::Manifest::seal(
            cairn_erasure::Params::new(3, 2).unwrap(),
            vec![cairn_artifact::ChunkEntry {
                sealed_len: 3000,
                shards: shards.iter().map(|s| shard_cid(s)).collect(),
            }],
            &private,
            &cairn_encryption::ArtifactKey::random(),
        )
        .with_record_signers(&[*key.public().as_bytes()])
        .unwrap()
        .encode();
        tokio::time::timeout(step, client.put(&addr, &artifact, &manifest))
            .await
            .unwrap()
            .unwrap();
        for s in &shards {
            tokio::time::timeout(step, client.put(&addr, &shard_cid(s), s))
                .await
                .unwrap()
                .unwrap();
        }
        let now = cairn_store::now_ms();
        let lease = |until_ms| {
            Lease {
                signer: key.public(),
                artifact,
                until_ms,
                issued_ms: now,
            }
            .try_sign(&key)
            .unwrap()
        };
        let running = lease(now + 1500);
        tokio::time::timeout(step, client.put_lease(&addr, &running))
            .await
            .unwrap()
            .unwrap();
        tokio::time::timeout(step, client.put_lease(&addr, &lease(now + 10)))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(store.lease_until(&artifact).unwrap(), Some(now + 1500));
        let got = tokio::time::timeout(step, client.get_lease(&addr, &artifact))
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(got.bytes, running, "the earlier lease did not shorten it");
        assert_eq!(store.gc().unwrap().manifests, 0, "the lease runs");
        while cairn_store::now_ms() <= now + 1500 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let r = store.gc().unwrap();
        assert_eq!((r.manifests, r.shards, r.leases), (1, 5, 1), "{r:?}");
        assert_eq!(store.stat().unwrap().used, 0);
        assert!(
            tokio::time::timeout(step, client.get_lease(&addr, &artifact))
                .await
                .unwrap()
                .unwrap()
                .is_none()
        );

        client.close().await;
        peer.endpoint.close().await;
        router.shutdown().await.unwrap();
    }

    #[test]
    fn quota_refusal_reaches_the_right_put() {
        let d = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(d.path(), StoreConfig::new(100_000)).unwrap());
        let b = StoreBackend::new(store);
        let small = vec![1u8; 10_000];
        b.put(&shard_cid(&small), &small, [0; 32]).unwrap();
        let big = vec![2u8; 200_000];
        assert!(matches!(
            b.put(&shard_cid(&big), &big, [0; 32]),
            Err(BackendError::QuotaFull { .. })
        ));
        assert!(b.free_bytes() < 100_000);
    }
}

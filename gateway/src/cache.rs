//! Opened chunks kept in memory between requests.
//!
//! A ranged read must fetch, rebuild and open every chunk it touches, whole: AES-GCM
//! authenticates a chunk as one piece. Clients that read a file by ranges (the `datasets`
//! library, `HfFileSystem`, a parquet reader going footer first) touch the same chunks again and
//! again; with chunks of about 1 MiB, a run of 1 MiB ranges touches every chunk twice. The cache
//! keeps opened chunks (verified plaintext) by artifact CID and chunk index, bounded in bytes.
//!
//! Only ranged reads fill it: a whole-file download streams more than the cache holds and
//! would only push out the chunks that ranged readers share. Every read looks in it.
//!
//! Concurrent ranged reads of a chunk nobody holds yet share one fetch: the first reader claims
//! it, the others wait (at most [`FLIGHT_WAIT`]) for it to be inserted; if the first reader
//! fails, the claim is abandoned and each waiter fetches for itself. A thousand clients asking
//! for the same new range at once cost one fetch per chunk, not a thousand.
//!
//! The key is the artifact's CID, which names the manifest and so every chunk's content and
//! key; a request reaches the cache only after it was authorized for that artifact.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use cairn_artifact::{BoxFuture, ChunkCache, Cid, Claim};
use prometheus_client::metrics::counter::Counter;
use quick_cache::sync::Cache;
use quick_cache::{OptionsBuilder, Weighter};
use tokio::sync::watch;

/// Default size of the opened-chunk cache: room for the chunks of a few dozen concurrent
/// ranged readers, while a gateway streaming a large file stays well under 150 MiB in all.
pub const CHUNK_CACHE_BYTES: u64 = 32 * 1024 * 1024;
/// Longest a reader waits for a chunk another reader is opening before it fetches it itself.
pub const FLIGHT_WAIT: Duration = Duration::from_secs(30);
/// Most chunks being opened under a claim at once; past it readers fetch without claiming.
const FLIGHTS_MAX: usize = 4096;

/// A chunk being opened by one reader, waited for by others: None while under way; then the
/// chunk, or None if the claim was abandoned. Waiters hold a receiver, not a thread.
struct Flight {
    done: watch::Sender<Option<Option<Bytes>>>,
}

impl Default for Flight {
    fn default() -> Self {
        Self {
            done: watch::Sender::new(None),
        }
    }
}

impl Flight {
    fn settle(&self, plain: Option<Bytes>) {
        self.done.send_replace(Some(plain));
    }
}

type Key = (Cid, usize);

#[derive(Clone)]
struct ByLen;

impl Weighter<(Cid, usize), Bytes> for ByLen {
    fn weight(&self, _: &(Cid, usize), plain: &Bytes) -> u64 {
        plain.len() as u64
    }
}

/// A byte-bounded cache of opened chunks, shared by every request of a gateway.
pub(crate) struct ChunkLru {
    chunks: Option<Cache<Key, Bytes, ByLen>>,
    flights: Mutex<HashMap<Key, Arc<Flight>>>,
    pub hits: Counter,
    pub misses: Counter,
}

impl ChunkLru {
    /// A cache holding at most `bytes` of plaintext; 0 turns caching off.
    pub fn new(bytes: u64) -> Self {
        let avg = cairn_artifact::CHUNK_AVG as u64;
        Self {
            chunks: (bytes > 0).then(|| {
                // Half the space for chunks seen once: with the default (3 %) a new chunk of a
                // few dozen in the cache is pushed out by the next one before a second reader
                // can hit it. Ranged readers come back soon or not at all.
                let options = OptionsBuilder::new()
                    .estimated_items_capacity((bytes / avg).max(1) as usize)
                    .weight_capacity(bytes)
                    .hot_allocation(0.5)
                    .build()
                    .expect("both capacities are set");
                Cache::with_options(options, ByLen, Default::default(), Default::default())
            }),
            flights: Mutex::default(),
            hits: Counter::default(),
            misses: Counter::default(),
        }
    }

    fn flights(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Arc<Flight>>> {
        self.flights.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Bytes held now.
    #[cfg(test)]
    pub fn weight(&self) -> u64 {
        self.chunks.as_ref().map_or(0, Cache::weight)
    }

    /// A view that looks chunks up but adds none (whole-file reads).
    pub fn lookup_only(self: &Arc<Self>) -> LookupOnly {
        LookupOnly(self.clone())
    }
}

impl ChunkCache for ChunkLru {
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes> {
        let found = self.chunks.as_ref()?.get(&(*artifact, index));
        match found {
            Some(_) => self.hits.inc(),
            None => self.misses.inc(),
        };
        found
    }

    fn insert(&self, artifact: &Cid, index: usize, plain: Bytes) {
        let Some(c) = &self.chunks else { return };
        let key = (*artifact, index);
        c.insert(key, plain.clone());
        if let Some(f) = self.flights().remove(&key) {
            f.settle(Some(plain));
        }
    }

    fn claim(&self, artifact: &Cid, index: usize) -> Claim {
        let Some(c) = &self.chunks else {
            return Claim::Mine;
        };
        let key = (*artifact, index);
        if let Some(plain) = c.get(&key) {
            self.hits.inc();
            return Claim::Hit(plain);
        }
        let mut flights = self.flights();
        // Inserted since the look above? (Inserts settle flights under this lock.)
        if let Some(plain) = c.get(&key) {
            self.hits.inc();
            return Claim::Hit(plain);
        }
        if flights.contains_key(&key) {
            return Claim::Theirs;
        }
        self.misses.inc();
        if flights.len() < FLIGHTS_MAX {
            flights.insert(key, Arc::default());
        }
        Claim::Mine
    }

    fn wait(&self, artifact: &Cid, index: usize) -> BoxFuture<'static, Option<Bytes>> {
        let key = (*artifact, index);
        let flight = self.flights().get(&key).map(|f| f.done.subscribe());
        // Settled between the claim and now: the cache has it, or it was abandoned.
        let settled = self.chunks.as_ref().and_then(|c| c.get(&key));
        let (hits, misses) = (self.hits.clone(), self.misses.clone());
        Box::pin(async move {
            let got = match flight {
                None => settled,
                Some(mut rx) => {
                    match tokio::time::timeout(FLIGHT_WAIT, rx.wait_for(|d| d.is_some())).await {
                        Ok(Ok(done)) => done.clone().flatten(),
                        // Timed out, or the flight was dropped unsettled.
                        _ => None,
                    }
                }
            };
            match got {
                Some(_) => hits.inc(),
                None => misses.inc(),
            };
            got
        })
    }

    fn abandon(&self, artifact: &Cid, index: usize) {
        if let Some(f) = self.flights().remove(&(*artifact, index)) {
            f.settle(None);
        }
    }
}

/// See [`ChunkLru::lookup_only`].
pub(crate) struct LookupOnly(Arc<ChunkLru>);

impl ChunkCache for LookupOnly {
    fn get(&self, artifact: &Cid, index: usize) -> Option<Bytes> {
        self.0.get(artifact, index)
    }

    fn insert(&self, _: &Cid, _: usize, _: Bytes) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cid(n: u8) -> Cid {
        cairn_artifact::shard_cid(&[n])
    }

    #[test]
    fn keeps_what_fits_and_counts_hits() {
        let lru = Arc::new(ChunkLru::new(4 << 20));
        let chunk = Bytes::from(vec![7u8; 1 << 20]);
        assert!(lru.get(&cid(1), 0).is_none());
        lru.insert(&cid(1), 0, chunk.clone());
        assert_eq!(lru.get(&cid(1), 0).as_deref(), Some(&chunk[..]));
        // Another artifact or another index is another entry.
        assert!(lru.get(&cid(2), 0).is_none());
        assert!(lru.get(&cid(1), 1).is_none());
        assert_eq!((lru.hits.get(), lru.misses.get()), (1, 3));
        // The lookup-only view finds it but adds nothing.
        let view = lru.lookup_only();
        assert!(view.get(&cid(1), 0).is_some());
        view.insert(&cid(3), 0, chunk.clone());
        assert!(lru.get(&cid(3), 0).is_none());
    }

    #[test]
    fn stays_within_its_bytes() {
        let lru = ChunkLru::new(8 << 20);
        for i in 0..64 {
            lru.insert(&cid(i), 0, Bytes::from(vec![i; 1 << 20]));
            assert!(lru.weight() <= 8 << 20, "{} bytes held", lru.weight());
        }
        // And what it still holds is what was put there.
        for i in 0..64u8 {
            if let Some(b) = lru.get(&cid(i), 0) {
                assert!(b.iter().all(|&x| x == i));
            }
        }
    }

    #[tokio::test]
    async fn concurrent_readers_share_one_opening() {
        let lru = Arc::new(ChunkLru::new(4 << 20));
        let chunk = Bytes::from(vec![9u8; 1000]);
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Mine));
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Theirs));
        // Waiters are released by the insert.
        let waiters: Vec<_> = (0..4).map(|_| tokio::spawn(lru.wait(&cid(1), 0))).collect();
        tokio::time::sleep(Duration::from_millis(50)).await;
        lru.insert(&cid(1), 0, chunk.clone());
        for w in waiters {
            assert_eq!(w.await.unwrap().as_deref(), Some(&chunk[..]));
        }
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Hit(_)));
        // An abandoned claim releases its waiters empty-handed, and the next reader claims it.
        assert!(matches!(lru.claim(&cid(2), 0), Claim::Mine));
        let waiter = tokio::spawn(lru.wait(&cid(2), 0));
        tokio::time::sleep(Duration::from_millis(50)).await;
        lru.abandon(&cid(2), 0);
        assert!(waiter.await.unwrap().is_none());
        assert!(matches!(lru.claim(&cid(2), 0), Claim::Mine));
    }

    #[tokio::test(start_paused = true)]
    async fn a_wait_for_a_claim_never_settled_ends_at_the_flight_wait() {
        let lru = Arc::new(ChunkLru::new(4 << 20));
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Mine));
        let started = tokio::time::Instant::now();
        assert!(lru.wait(&cid(1), 0).await.is_none());
        assert!(started.elapsed() >= FLIGHT_WAIT);
    }

    #[test]
    fn zero_bytes_caches_nothing() {
        let lru = ChunkLru::new(0);
        lru.insert(&cid(1), 0, Bytes::from_static(b"x"));
        assert!(lru.get(&cid(1), 0).is_none());
        // And never makes anyone wait.
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Mine));
        assert!(matches!(lru.claim(&cid(1), 0), Claim::Mine));
    }
}

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
//! The key is the artifact's CID, which names the manifest and so every chunk's content and
//! key; a request reaches the cache only after it was authorized for that artifact.

use std::sync::Arc;

use bytes::Bytes;
use cairn_store::{ChunkCache, Cid};
use prometheus_client::metrics::counter::Counter;
use quick_cache::Weighter;
use quick_cache::sync::Cache;

/// Default size of the opened-chunk cache.
pub const CHUNK_CACHE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Clone)]
struct ByLen;

impl Weighter<(Cid, usize), Bytes> for ByLen {
    fn weight(&self, _: &(Cid, usize), plain: &Bytes) -> u64 {
        plain.len() as u64
    }
}

/// A byte-bounded cache of opened chunks, shared by every request of a gateway.
pub(crate) struct ChunkLru {
    chunks: Option<Cache<(Cid, usize), Bytes, ByLen>>,
    pub hits: Counter,
    pub misses: Counter,
}

impl ChunkLru {
    /// A cache holding at most `bytes` of plaintext; 0 turns caching off.
    pub fn new(bytes: u64) -> Self {
        let avg = cairn_store::CHUNK_AVG as u64;
        Self {
            chunks: (bytes > 0)
                .then(|| Cache::with_weighter((bytes / avg).max(1) as usize, bytes, ByLen)),
            hits: Counter::default(),
            misses: Counter::default(),
        }
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
        if let Some(c) = &self.chunks {
            c.insert((*artifact, index), plain);
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
        cairn_store::shard_cid(&[n])
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

    #[test]
    fn zero_bytes_caches_nothing() {
        let lru = ChunkLru::new(0);
        lru.insert(&cid(1), 0, Bytes::from_static(b"x"));
        assert!(lru.get(&cid(1), 0).is_none());
    }
}

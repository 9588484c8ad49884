//! Shards kept in memory: a [`ShardSink`] and [`ShardSource`] with no disk and no network, for
//! benchmarks that measure the pipeline alone and for tests of the pipeline.

use std::collections::HashMap;
use std::sync::Mutex;

use cairn_erasure::Params;

use crate::{ChunkEntry, Cid, EncodedChunk, Error, ShardSink, ShardSlots, ShardSource};

/// Every shard handed to it, by CID. Unbounded: meant for artifacts that fit in memory.
#[derive(Default)]
pub struct MemShards {
    shards: Mutex<HashMap<Cid, Vec<u8>>>,
}

impl MemShards {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// How many shards are held.
    pub fn len(&self) -> usize {
        self.shards.lock().expect("not poisoned").len()
    }

    /// Whether no shard is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bytes held in all shards.
    pub fn bytes(&self) -> u64 {
        let m = self.shards.lock().expect("not poisoned");
        m.values().map(|s| s.len() as u64).sum()
    }

    /// Drops a shard (a test's lost holder); whether it was held.
    pub fn remove(&self, cid: &Cid) -> bool {
        self.shards
            .lock()
            .expect("not poisoned")
            .remove(cid)
            .is_some()
    }
}

impl ShardSink for MemShards {
    fn put_window(&self, chunks: Vec<EncodedChunk>) -> Result<(), Error> {
        let mut m = self.shards.lock().expect("not poisoned");
        for c in chunks {
            for (cid, bytes) in c.shards {
                m.insert(cid, bytes);
            }
        }
        Ok(())
    }
}

impl ShardSource for MemShards {
    fn fetch(
        &self,
        artifact: &Cid,
        index: usize,
        chunk: &ChunkEntry,
        params: Params,
    ) -> Result<ShardSlots, Error> {
        crate::fetch_data_first(artifact, index, chunk, params, |cid| {
            let bytes = self
                .shards
                .lock()
                .expect("not poisoned")
                .get(cid)
                .cloned()
                .ok_or(Error::ShardNotFound(*cid))?;
            // The contract of `fetch_data_first`: what `get` returns matches its CID.
            crate::verify_shard(cid, &bytes)?;
            Ok(bytes)
        })
    }
}

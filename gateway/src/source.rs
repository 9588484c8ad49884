//! Where artifacts come from: the local store, or the network.
//!
//! [`ArtifactSource::open`] turns a read capability into an [`OpenArtifact`]: the manifest and
//! its opened private part, plus whatever is needed to fetch shards. [`OpenArtifact::stream`]
//! reads through the async read core ([`read_stream`]): network fetches are futures on the
//! gateway's runtime, a local store's reads and every chunk's rebuilding, decryption and hashing
//! run on the CPU pool, and no thread blocks waiting for either.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cairn_artifact::{
    Artifact, ChunkCache, FileEntry, OnCpuPool, OpenedArtifact, ReadCap, read_stream,
};
use cairn_node::{ClientStats, NetShards, Network};
use cairn_store::Store;
use futures_util::StreamExt;
use futures_util::stream::BoxStream;

use crate::{BoxFuture, Error};

/// An artifact opened for reading.
pub trait OpenArtifact: Send + Sync {
    /// The manifest and its private part.
    fn artifact(&self) -> Artifact<'_>;

    /// The verified bytes `range` of `file`, in order, as pieces sharing the opened chunks'
    /// memory, taking opened chunks from `cache` where it holds them and offering it the others.
    /// An error may come after some pieces; the caller must then not present the output as
    /// complete.
    fn stream<'a>(
        &'a self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &'a dyn ChunkCache,
    ) -> Pieces<'a>;
}

/// What [`OpenArtifact::stream`] yields.
pub type Pieces<'a> = BoxStream<'a, Result<Bytes, cairn_artifact::Error>>;

/// Opens artifacts from read capabilities.
pub trait ArtifactSource: Send + Sync + 'static {
    /// Fetches and opens the manifest `cap` names. Cancel-safe: dropping the future abandons the
    /// attempt and leaves nothing behind.
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>>;

    /// Counts of shard requests and their failures, for a source that fetches over a network.
    fn stats(&self) -> Option<ClientStats> {
        None
    }

    /// The network a source reads from, for resolving names granted to the gateway there.
    fn network(&self) -> Option<Arc<Network>> {
        None
    }
}

/// Artifacts held by a local [`Store`].
#[derive(Clone)]
pub struct LocalSource {
    store: Arc<Store>,
}

impl LocalSource {
    /// Serves artifacts out of `store`.
    pub fn new(store: Arc<Store>) -> Self {
        Self { store }
    }
}

struct LocalArtifact {
    shards: OnCpuPool<Store>,
    opened: OpenedArtifact,
}

impl OpenArtifact for LocalArtifact {
    fn artifact(&self) -> Artifact<'_> {
        self.opened.artifact()
    }

    fn stream<'a>(
        &'a self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &'a dyn ChunkCache,
    ) -> Pieces<'a> {
        read_stream(self.artifact(), &self.shards, cache, file, range).boxed()
    }
}

impl ArtifactSource for LocalSource {
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>> {
        let store = self.store.clone();
        let cap = cap.clone();
        Box::pin(async move {
            // Reading and decrypting a manifest touches the disk: keep it off the workers.
            tokio::task::spawn_blocking(move || -> Result<Arc<dyn OpenArtifact>, Error> {
                let opened = store.open_artifact(&cap)?;
                Ok(Arc::new(LocalArtifact {
                    shards: OnCpuPool(store),
                    opened,
                }))
            })
            .await
            .map_err(|e| Error::Io {
                what: "opening a manifest".into(),
                source: std::io::Error::other(e.to_string()),
            })?
        })
    }
}

/// Artifacts read from their holders over the peer network.
#[derive(Clone)]
pub struct NetworkSource {
    net: Arc<Network>,
}

impl NetworkSource {
    /// Serves artifacts fetched through `net`.
    pub fn new(net: Arc<Network>) -> Self {
        Self { net }
    }
}

struct NetArtifact {
    shards: NetShards,
}

impl OpenArtifact for NetArtifact {
    fn artifact(&self) -> Artifact<'_> {
        self.shards.remote().artifact()
    }

    fn stream<'a>(
        &'a self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &'a dyn ChunkCache,
    ) -> Pieces<'a> {
        read_stream(self.artifact(), &self.shards, cache, file, range).boxed()
    }
}

impl ArtifactSource for NetworkSource {
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>> {
        Box::pin(async move {
            let remote = self.net.open(cap).await?;
            Ok(Arc::new(NetArtifact {
                shards: NetShards::new(self.net.clone(), Arc::new(remote)),
            }) as Arc<dyn OpenArtifact>)
        })
    }

    fn stats(&self) -> Option<ClientStats> {
        Some(self.net.stats())
    }

    fn network(&self) -> Option<Arc<Network>> {
        Some(self.net.clone())
    }
}

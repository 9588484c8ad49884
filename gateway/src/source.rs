//! Where artifacts come from: the local store, or the network.
//!
//! [`ArtifactSource::open`] turns a read capability into an [`OpenArtifact`]: the manifest and
//! its opened private part, plus whatever is needed to fetch shards. [`OpenArtifact::read`] is
//! blocking (the store's read pipeline runs on threads); the gateway calls it from
//! `spawn_blocking`, never from the runtime's worker threads.

use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use cairn_artifact::{Artifact, ChunkCache, FileEntry, OpenedArtifact, ReadCap, read_file_pieces};
use cairn_node::{ClientStats, Network, RemoteArtifact};
use cairn_store::Store;

use crate::{BoxFuture, Error};

/// An artifact opened for reading.
pub trait OpenArtifact: Send + Sync {
    /// The manifest and its private part.
    fn artifact(&self) -> Artifact<'_>;

    /// Hands the verified bytes `range` of `file` to `emit`, in order, taking opened chunks from
    /// `cache` where it holds them and offering it the others. Blocking. An error may come after
    /// some bytes were emitted; the caller must then not present the output as complete.
    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &dyn ChunkCache,
        emit: &mut Emit<'_>,
    ) -> Result<(), cairn_artifact::Error>;
}

/// Where [`OpenArtifact::read`] puts the bytes it read: pieces sharing the opened chunks' memory.
pub type Emit<'a> = dyn FnMut(Bytes) -> std::io::Result<()> + Send + 'a;

/// Opens artifacts from read capabilities.
pub trait ArtifactSource: Send + Sync + 'static {
    /// Fetches and opens the manifest `cap` names. Cancel-safe: dropping the future abandons the
    /// attempt and leaves nothing behind.
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>>;

    /// Counts of shard requests and their failures, for a source that fetches over a network.
    fn stats(&self) -> Option<ClientStats> {
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
    store: Arc<Store>,
    opened: OpenedArtifact,
}

impl OpenArtifact for LocalArtifact {
    fn artifact(&self) -> Artifact<'_> {
        self.opened.artifact()
    }

    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &dyn ChunkCache,
        emit: &mut Emit<'_>,
    ) -> Result<(), cairn_artifact::Error> {
        read_file_pieces(&self.artifact(), &*self.store, cache, file, range, emit)
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
                Ok(Arc::new(LocalArtifact { store, opened }))
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
    net: Arc<Network>,
    remote: RemoteArtifact,
}

impl OpenArtifact for NetArtifact {
    fn artifact(&self) -> Artifact<'_> {
        self.remote.artifact()
    }

    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        cache: &dyn ChunkCache,
        emit: &mut Emit<'_>,
    ) -> Result<(), cairn_artifact::Error> {
        let source = self.net.source(&self.remote);
        read_file_pieces(&self.artifact(), &source, cache, file, range, emit)
    }
}

impl ArtifactSource for NetworkSource {
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>> {
        Box::pin(async move {
            let remote = self.net.open(cap).await?;
            Ok(Arc::new(NetArtifact {
                net: self.net.clone(),
                remote,
            }) as Arc<dyn OpenArtifact>)
        })
    }

    fn stats(&self) -> Option<ClientStats> {
        Some(self.net.stats())
    }
}

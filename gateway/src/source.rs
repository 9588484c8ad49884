//! Where artifacts come from: the local store, or the network.
//!
//! [`ArtifactSource::open`] turns a read capability into an [`OpenArtifact`]: the manifest and
//! its opened private part, plus whatever is needed to fetch shards. [`OpenArtifact::read`] is
//! blocking (the store's read pipeline runs on threads); the gateway calls it from
//! `spawn_blocking`, never from the runtime's worker threads.

use std::io::Write;
use std::ops::Range;
use std::sync::Arc;

use cairn_node::{Network, RemoteArtifact};
use cairn_store::{Artifact, Cid, FileEntry, Manifest, PrivatePart, ReadCap, Store, read_file};

use crate::{BoxFuture, Error};

/// An artifact opened for reading.
pub trait OpenArtifact: Send + Sync {
    /// The manifest and its private part.
    fn artifact(&self) -> Artifact<'_>;

    /// Writes the verified bytes `range` of `file` to `out`. Blocking. An error may come after
    /// some bytes were written; the caller must then not present the output as complete.
    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), cairn_store::Error>;
}

/// Opens artifacts from read capabilities.
pub trait ArtifactSource: Send + Sync + 'static {
    /// Fetches and opens the manifest `cap` names. Cancel-safe: dropping the future abandons the
    /// attempt and leaves nothing behind.
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>>;
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
    cid: Cid,
    manifest: Manifest,
    private: PrivatePart,
}

impl OpenArtifact for LocalArtifact {
    fn artifact(&self) -> Artifact<'_> {
        Artifact {
            cid: self.cid,
            manifest: &self.manifest,
            private: &self.private,
        }
    }

    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), cairn_store::Error> {
        read_file(&self.artifact(), &*self.store, file, range, out, &|_| {})
    }
}

impl ArtifactSource for LocalSource {
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>> {
        let store = self.store.clone();
        let cap = cap.clone();
        Box::pin(async move {
            // Reading and decrypting a manifest touches the disk: keep it off the workers.
            tokio::task::spawn_blocking(move || -> Result<Arc<dyn OpenArtifact>, Error> {
                let bytes = store.get_manifest(&cap.cid)?;
                let manifest = Manifest::decode(&bytes, &cap.cid.to_string())?;
                let private = manifest.open(&cap.cid, &cap.key)?;
                Ok(Arc::new(LocalArtifact {
                    store,
                    cid: cap.cid,
                    manifest,
                    private,
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

/// How long an opened network artifact (holder record, manifest, private part) is reused before
/// it is looked up again: long enough that a burst of range requests pays the lookup once, short
/// enough that a repaired holder record or a holder that came back is noticed soon.
pub const OPEN_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(30);
/// Most opened network artifacts kept; the oldest goes first.
pub const OPEN_CACHE_MAX: usize = 256;

type OpenCache = std::collections::HashMap<[u8; 32], (std::time::Instant, Arc<dyn OpenArtifact>)>;

/// Artifacts read from their holders over the peer network.
#[derive(Clone)]
pub struct NetworkSource {
    net: Arc<Network>,
    /// Opened artifacts by a hash of the whole capability (CID and key: a request can never be
    /// served with an artifact opened under another key).
    cache: Arc<std::sync::Mutex<OpenCache>>,
}

impl NetworkSource {
    /// Serves artifacts fetched through `net`.
    pub fn new(net: Arc<Network>) -> Self {
        Self {
            net,
            cache: Arc::default(),
        }
    }
}

struct NetArtifact {
    net: Arc<Network>,
    remote: RemoteArtifact,
}

impl OpenArtifact for NetArtifact {
    fn artifact(&self) -> Artifact<'_> {
        Artifact {
            cid: self.remote.cid,
            manifest: &self.remote.manifest,
            private: &self.remote.private,
        }
    }

    fn read(
        &self,
        file: &FileEntry,
        range: Range<u64>,
        out: &mut (dyn Write + Send),
    ) -> Result<(), cairn_store::Error> {
        let source = self.net.source(&self.remote);
        read_file(&self.artifact(), &source, file, range, out, &|_| {})
    }
}

impl ArtifactSource for NetworkSource {
    fn open<'a>(&'a self, cap: &'a ReadCap) -> BoxFuture<'a, Result<Arc<dyn OpenArtifact>, Error>> {
        Box::pin(async move {
            let key = *blake3::hash(cap.to_string().as_bytes()).as_bytes();
            let now = std::time::Instant::now();
            {
                let cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
                if let Some((at, open)) = cache.get(&key)
                    && now.duration_since(*at) < OPEN_CACHE_TTL
                {
                    return Ok(open.clone());
                }
            }
            let remote = self.net.open(cap).await?;
            let open = Arc::new(NetArtifact {
                net: self.net.clone(),
                remote,
            }) as Arc<dyn OpenArtifact>;
            let mut cache = self.cache.lock().unwrap_or_else(|p| p.into_inner());
            cache.retain(|_, (at, _)| now.duration_since(*at) < OPEN_CACHE_TTL);
            if cache.len() >= OPEN_CACHE_MAX
                && let Some(oldest) = cache.iter().min_by_key(|(_, (at, _))| *at).map(|(k, _)| *k)
            {
                cache.remove(&oldest);
            }
            cache.insert(key, (now, open.clone()));
            Ok(open)
        })
    }
}

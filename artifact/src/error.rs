use std::path::PathBuf;

use crate::Cid;

/// Errors of the data path: the format, the pipelines, and what a [`ShardSink`](crate::ShardSink)
/// or [`ShardSource`](crate::ShardSource) reports (a disk store's database, quota and format
/// errors are variants here so that they travel through the pipeline unchanged; the disk store
/// converts its database errors into [`Error::Db`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory operation failed.
    #[error("IO error for {path}: {source}")]
    Io {
        /// The path operated on.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The metadata database failed.
    #[error("metadata database error: {0}")]
    Db(String),
    /// Bytes read from disk or a peer do not match their content address. Never returned as data.
    #[error("shard {cid} is corrupted: {reason}")]
    Corrupted {
        /// The shard's CID.
        cid: Cid,
        /// What was wrong.
        reason: String,
    },
    /// A shard is not held by this store.
    #[error("shard {0} is not in the store")]
    ShardNotFound(Cid),
    /// A manifest is not held by this store.
    #[error("artifact {0} is not in the store; check the capability or add the artifact first")]
    ManifestNotFound(Cid),
    /// Fewer than `k` verified shards of a chunk could be had.
    #[error(
        "artifact {artifact}: chunk {chunk} has only {present} of the {k} shards it needs; missing: {}",
        fmt_missing(missing)
    )]
    ShardsUnavailable {
        /// The artifact being read.
        artifact: Cid,
        /// Index of the chunk in the manifest.
        chunk: usize,
        /// Verified shards found.
        present: usize,
        /// Shards needed.
        k: usize,
        /// The shards that could not be had, and why.
        missing: Vec<(Cid, String)>,
    },
    /// Writing would take the store over its quota. Nothing was written.
    #[error(
        "quota exceeded: {needed} more bytes needed, {free} of {quota} free; raise the quota or run `cairn gc`"
    )]
    QuotaExceeded {
        /// Bytes the write needs.
        needed: u64,
        /// Bytes free.
        free: u64,
        /// The quota.
        quota: u64,
    },
    /// A manifest could not be decoded or is inconsistent.
    #[error("manifest {what} is invalid: {reason}")]
    BadManifest {
        /// What was being decoded (a CID or "private part").
        what: String,
        /// What was wrong.
        reason: String,
    },
    /// A read capability string could not be parsed.
    #[error(
        "invalid read capability: {0}; expected `cairn-read1:<manifest cid>:<key>` as printed by `cairn add`"
    )]
    BadCapability(String),
    /// The artifact key does not open the manifest, or a chunk failed authentication.
    #[error("artifact {artifact}: {source}")]
    Crypto {
        /// The artifact.
        artifact: Cid,
        /// The underlying error.
        source: cairn_encryption::Error,
    },
    /// A path in the artifact does not exist.
    #[error("artifact {artifact} has no file {path}; run `cairn ls` to see its files")]
    FileNotFound {
        /// The artifact.
        artifact: Cid,
        /// The path asked for.
        path: String,
    },
    /// An input path cannot be added.
    #[error("cannot add {path}: {reason}")]
    BadInput {
        /// The path.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A shard sink refused a shard (for example a remote holder).
    #[error("storing shard {cid} failed: {reason}")]
    Sink {
        /// The shard.
        cid: Cid,
        /// Why.
        reason: String,
    },
    /// The store's on-disk format is newer or older than this build understands.
    #[error("store at {path} has format version {found}, this build reads version {expected}")]
    FormatVersion {
        /// The data directory.
        path: PathBuf,
        /// Version found (as stored: a u64, never truncated for the message).
        found: u64,
        /// Version supported.
        expected: u64,
    },
    /// An erasure parameter or decoding error.
    #[error(transparent)]
    Erasure(#[from] cairn_erasure::Error),
}

fn fmt_missing(m: &[(Cid, String)]) -> String {
    m.iter()
        .map(|(c, r)| format!("{c} ({r})"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Error {
    /// A mapper from an I/O error on `path` (for `map_err`).
    pub fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
        let path = path.into();
        move |source| Error::Io { path, source }
    }
}
